//! Reading from an upstream mirror: HTTP against the fault-injecting test server, and local
//! directories.

use std::future::Future;
use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cidmirror_ingest::Error;
use cidmirror_ingest::upstream::{Download, FetchOptions, Upstream};
use futures::StreamExt;
use tempfile::TempDir;

use crate::support::server::{Fault, TestUpstream, put_file};

const PKG: &str = "core/os/x86_64/foo-1:2.0-1-x86_64.pkg.tar.zst";
const STALL: Duration = Duration::from_millis(300);

fn opts() -> FetchOptions {
    FetchOptions {
        stall_timeout: STALL,
        retries: 4,
        backoff: Duration::from_millis(20),
        ..FetchOptions::default()
    }
}

fn opts_with_retries(retries: u32) -> FetchOptions {
    FetchOptions { retries, ..opts() }
}

/// Deterministic, incompressible test bytes.
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A mirror directory with `lastupdate` and one package of `len` bytes.
fn mirror(len: usize) -> (TempDir, Vec<u8>) {
    let dir = TempDir::new().expect("temp dir");
    let pkg = content(len, len as u64);
    put_file(dir.path(), "lastupdate", b"1700000000\n");
    put_file(dir.path(), PKG, &pkg);
    (dir, pkg)
}

async fn serve(len: usize) -> (TempDir, Vec<u8>, TestUpstream, Upstream) {
    serve_with(len, opts()).await
}

async fn serve_with(len: usize, opts: FetchOptions) -> (TempDir, Vec<u8>, TestUpstream, Upstream) {
    let (dir, pkg) = mirror(len);
    let server = TestUpstream::start(dir.path()).await;
    let up = Upstream::parse(&server.url, opts).expect("valid upstream");
    (dir, pkg, server, up)
}

/// Fails the test instead of hanging.
async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .unwrap_or_else(|_| panic!("{what}: still running after 10 s"))
}

async fn read_all(download: Download) -> io::Result<Vec<u8>> {
    let mut stream = download.stream;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// Downloads a file that must exist.
async fn fetch(up: &Upstream, rel: &str, expected_len: Option<u64>) -> io::Result<Vec<u8>> {
    let download = bounded("download", up.download(rel, expected_len))
        .await
        .expect("download starts")
        .expect("file exists");
    bounded("reading the stream", read_all(download)).await
}

#[tokio::test]
async fn http_get_and_download() {
    let (_dir, pkg, server, up) = serve(3 << 20).await;
    assert_eq!(up.url(), server.url);
    let lastupdate = up.get("lastupdate", 64).await.expect("get");
    assert_eq!(lastupdate.as_deref(), Some(&b"1700000000\n"[..]));

    let download = up
        .download(PKG, Some(pkg.len() as u64))
        .await
        .expect("download")
        .expect("exists");
    assert_eq!(download.content_length, Some(pkg.len() as u64));
    assert!(
        download
            .url
            .ends_with("/core/os/x86_64/foo-1:2.0-1-x86_64.pkg.tar.zst")
    );
    let stats = download.stats.clone();
    let body = bounded("download", read_all(download)).await.expect("body");
    assert!(body == pkg, "downloaded bytes differ");
    assert_eq!(stats.bytes.load(Ordering::Relaxed), pkg.len() as u64);
    assert_eq!(stats.resumes.load(Ordering::Relaxed), 0);

    let log = server.requests();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[1].path, PKG);
    assert_eq!(log[1].range, None);
}

#[tokio::test]
async fn http_missing_file_is_none() {
    let (_dir, _pkg, server, up) = serve(1000).await;
    assert_eq!(
        up.get("core/os/x86_64/core.db", 1000).await.expect("get"),
        None
    );
    assert!(up.download("nope", None).await.expect("download").is_none());
    assert!(!up.exists("nope").await.expect("exists"));

    server.set_fault("lastupdate", Fault::Status(410));
    assert_eq!(up.get("lastupdate", 1000).await.expect("get"), None);
    // Absent is an answer, not a failure: no retries.
    assert_eq!(server.requests_for("lastupdate").len(), 1);
}

#[tokio::test]
async fn http_exists_uses_head() {
    let (_dir, _pkg, server, up) = serve(1000).await;
    assert!(up.exists(PKG).await.expect("exists"));
    assert!(up.exists("lastupdate").await.expect("exists"));
    let log = server.requests();
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|r| r.method == "HEAD"), "{log:?}");
}

#[tokio::test]
async fn http_5xx_is_retried_until_it_succeeds() {
    let (_dir, pkg, server, up) = serve(50_000).await;
    server.set_fault("lastupdate", Fault::FailTimes(2, 500));
    let got = bounded("get", up.get("lastupdate", 64)).await.expect("get");
    assert_eq!(got.as_deref(), Some(&b"1700000000\n"[..]));
    assert_eq!(server.requests_for("lastupdate").len(), 3);

    server.set_fault(PKG, Fault::FailTimes(3, 429));
    let body = fetch(&up, PKG, None).await.expect("body");
    assert!(body == pkg);
    assert_eq!(server.requests_for(PKG).len(), 4);
}

#[tokio::test]
async fn http_persistent_500_is_an_error_naming_the_url() {
    let (_dir, _pkg, server, up) = serve(1000).await;
    server.set_fault(PKG, Fault::Status(500));
    let err = bounded("get", up.get(PKG, 10_000)).await.unwrap_err();
    match &err {
        Error::Http { url, status } => {
            assert_eq!(*status, 500);
            assert!(url.starts_with(&server.url) && url.ends_with(PKG), "{url}");
        }
        other => panic!("expected Error::Http, got {other:?}"),
    }
    assert!(err.to_string().contains("HTTP 500"), "{err}");
    // The first attempt and four retries.
    assert_eq!(server.requests_for(PKG).len(), 5);

    let err = bounded("download", up.download(PKG, None))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Http { status: 500, .. }), "{err:?}");
}

#[tokio::test]
async fn http_client_errors_are_not_retried() {
    let (_dir, _pkg, server, up) = serve(1000).await;
    server.set_fault("lastupdate", Fault::Status(403));
    let err = up.get("lastupdate", 64).await.unwrap_err();
    assert!(matches!(err, Error::Http { status: 403, .. }), "{err:?}");
    assert_eq!(server.requests().len(), 1);
    server.clear_faults();
    assert!(up.get("lastupdate", 64).await.expect("get").is_some());
}

#[tokio::test]
async fn http_stall_mid_body_fails_fast_naming_the_url() {
    let (_dir, pkg, server, up) = serve_with(1 << 20, opts_with_retries(0)).await;
    server.set_fault(PKG, Fault::StallAfter(100_000));
    let started = Instant::now();
    let err = fetch(&up, PKG, Some(pkg.len() as u64)).await.unwrap_err();
    let took = started.elapsed();
    let message = err.to_string();
    assert!(message.contains("stalled"), "{message}");
    assert!(
        message.contains(&format!("{}{PKG}", server.url)),
        "{message}"
    );
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert!(took >= STALL && took < STALL * 4, "took {took:?}");
}

#[tokio::test]
async fn http_stall_is_retried_then_gives_up_in_bounded_time() {
    let (_dir, pkg, server, up) = serve_with(200_000, opts_with_retries(2)).await;
    server.set_fault(PKG, Fault::StallAfter(100_000));
    let started = Instant::now();
    let err = fetch(&up, PKG, Some(pkg.len() as u64)).await.unwrap_err();
    let took = started.elapsed();
    assert!(err.to_string().contains("stalled"), "{err}");
    assert!(err.to_string().contains("3 attempts"), "{err}");
    // Three stalls plus two short backoffs.
    assert!(took < STALL * 6, "took {took:?}");
    let ranges: Vec<_> = server
        .requests_for(PKG)
        .into_iter()
        .map(|r| r.range)
        .collect();
    assert_eq!(ranges[0], None);
    assert!(
        ranges[1..]
            .iter()
            .all(|r| r.as_deref() == Some("bytes=100000-")),
        "{ranges:?}"
    );
}

#[tokio::test]
async fn http_stall_before_the_headers_is_an_error() {
    // A server that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("address"));
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let up = Upstream::parse(&url, opts_with_retries(1)).expect("valid upstream");
    let started = Instant::now();
    let err = bounded("get", up.get("lastupdate", 64)).await.unwrap_err();
    assert!(matches!(err, Error::Stalled { .. }), "{err:?}");
    assert!(err.to_string().contains("stalled"), "{err}");
    assert!(
        started.elapsed() < STALL * 4,
        "took {:?}",
        started.elapsed()
    );
    silent.abort();
}

#[tokio::test]
async fn http_slow_but_steady_transfer_is_not_a_stall() {
    let (_dir, pkg, server, up) = serve(60_000).await;
    // About 0.6 s in all, much longer than the stall timeout, but a piece every 50 ms.
    server.set_fault(
        PKG,
        Fault::Slow {
            bytes_per_sec: 100_000,
        },
    );
    let started = Instant::now();
    let body = fetch(&up, PKG, None).await.expect("body");
    assert!(body == pkg);
    assert!(
        started.elapsed() > STALL,
        "not slow: {:?}",
        started.elapsed()
    );
    assert_eq!(server.requests_for(PKG).len(), 1);
}

#[tokio::test]
async fn http_dropped_connection_resumes_with_range() {
    let (_dir, pkg, server, up) = serve(64 * 1024).await;
    server.set_fault(PKG, Fault::DropAfter(20_000));
    let download = up
        .download(PKG, Some(pkg.len() as u64))
        .await
        .expect("download")
        .expect("exists");
    let stats = download.stats.clone();
    let body = bounded("download", read_all(download)).await.expect("body");
    assert!(body == pkg, "resumed download differs");
    let ranges: Vec<_> = server
        .requests_for(PKG)
        .into_iter()
        .map(|r| r.range)
        .collect();
    assert_eq!(ranges[0], None);
    assert!(
        ranges.contains(&Some("bytes=20000-".to_string())),
        "{ranges:?}"
    );
    assert_eq!(
        stats.resumes.load(Ordering::Relaxed) as usize,
        ranges.len() - 1
    );
    assert_eq!(stats.bytes.load(Ordering::Relaxed), pkg.len() as u64);
}

#[tokio::test]
async fn http_resume_keeps_going_while_each_attempt_makes_progress() {
    // 17 interruptions, far more than the two retries: each one brings new bytes.
    let (_dir, pkg, server, up) = serve_with(140_000, opts_with_retries(2)).await;
    server.set_fault(PKG, Fault::DropAfter(8_000));
    let body = fetch(&up, PKG, Some(pkg.len() as u64)).await.expect("body");
    assert!(body == pkg);
    assert_eq!(server.requests_for(PKG).len(), 18);
}

#[tokio::test]
async fn http_restarts_and_skips_when_the_server_ignores_range() {
    let (_dir, pkg, server, up) = serve(64 * 1024).await;
    server.set_fault(PKG, Fault::Times(1, Box::new(Fault::DropAfter(20_000))));
    server.add_fault(PKG, Fault::IgnoreRange);
    let download = up
        .download(PKG, None)
        .await
        .expect("download")
        .expect("exists");
    let stats = download.stats.clone();
    let body = bounded("download", read_all(download)).await.expect("body");
    assert!(body == pkg, "restarted download differs");
    let log = server.requests_for(PKG);
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[1].range.as_deref(), Some("bytes=20000-"));
    // Skipped bytes are not counted twice.
    assert_eq!(stats.bytes.load(Ordering::Relaxed), pkg.len() as u64);
}

#[tokio::test]
async fn http_extra_bytes_are_refused() {
    let (_dir, pkg, server, up) = serve(100_000).await;
    let expected = Some(pkg.len() as u64);

    // Announced: refused before any body is read.
    server.set_fault(PKG, Fault::ExtraBytes(vec![0; 10]));
    let err = up.download(PKG, expected).await.unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { limit: 100_000, .. }),
        "{err:?}"
    );

    // Not announced: the stream fails as soon as it sees too much, without reading the
    // rest (which here would hang until the stall timeout).
    server.set_fault(PKG, Fault::ExtraBytes(vec![0; 1 << 20]));
    server.add_fault(PKG, Fault::NoContentLength);
    server.add_fault(PKG, Fault::StallAfter(pkg.len() as u64 + 100_000));
    let started = Instant::now();
    let err = fetch(&up, PKG, expected).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("more than the expected 100000 bytes"),
        "{err}"
    );
    assert!(!err.to_string().contains("stalled"), "{err}");
    assert!(started.elapsed() < STALL, "took {:?}", started.elapsed());
}

#[tokio::test]
async fn http_truncated_body_is_an_error_not_a_short_file() {
    let (_dir, pkg, server, up) = serve_with(64 * 1024, opts_with_retries(2)).await;
    server.set_fault(PKG, Fault::Truncate(10_000));
    for expected in [None, Some(pkg.len() as u64)] {
        let err = fetch(&up, PKG, expected).await.unwrap_err();
        let message = err.to_string();
        assert!(message.contains(PKG), "{message}");
        assert!(message.contains("at byte 10000 of 65536"), "{message}");
    }
}

#[tokio::test]
async fn http_chunked_body_without_content_length() {
    let (_dir, pkg, server, up) = serve(300_000).await;
    server.set_fault(PKG, Fault::NoContentLength);
    server.set_fault("lastupdate", Fault::NoContentLength);
    let download = up
        .download(PKG, Some(pkg.len() as u64))
        .await
        .expect("download")
        .expect("exists");
    assert_eq!(download.content_length, None);
    let body = bounded("download", read_all(download)).await.expect("body");
    assert!(body == pkg);
    let got = up.get("lastupdate", 64).await.expect("get");
    assert_eq!(got.as_deref(), Some(&b"1700000000\n"[..]));

    // Short against the expected length: an error, even without a length to compare.
    let err = fetch(&up, PKG, Some(pkg.len() as u64 + 1))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("ended after 300000 bytes, expected 300001"),
        "{err}"
    );
}

#[tokio::test]
async fn http_get_refuses_files_larger_than_allowed() {
    let (_dir, _pkg, server, up) = serve(100_000).await;
    let err = up.get(PKG, 1000).await.unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { limit: 1000, .. }),
        "{err:?}"
    );
    server.set_fault(PKG, Fault::NoContentLength);
    let err = up.get(PKG, 1000).await.unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { limit: 1000, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(PKG), "{err}");
    // Exactly the limit is fine.
    assert!(up.get(PKG, 100_000).await.expect("get").is_some());
}

#[tokio::test]
async fn http_flipped_byte_is_passed_on_for_the_verifier_to_catch() {
    let (_dir, pkg, server, up) = serve(5000).await;
    server.set_fault(PKG, Fault::FlipByte(1234));
    let body = fetch(&up, PKG, Some(pkg.len() as u64)).await.expect("body");
    let differing: Vec<_> = (0..pkg.len()).filter(|&i| body[i] != pkg[i]).collect();
    assert_eq!(differing, [1234]);
}

#[tokio::test]
async fn http_on_request_hook_changes_the_mirror_between_requests() {
    let (dir, _pkg, server, up) = serve(1000).await;
    let root = dir.path().to_path_buf();
    server.on_request(
        "lastupdate",
        1,
        Box::new(move || put_file(&root, "lastupdate", b"1700000099\n")),
    );
    let first = up.get("lastupdate", 64).await.expect("get");
    let second = up.get("lastupdate", 64).await.expect("get");
    assert_eq!(first.as_deref(), Some(&b"1700000000\n"[..]));
    assert_eq!(second.as_deref(), Some(&b"1700000099\n"[..]));
}

#[tokio::test]
async fn unsafe_paths_are_refused_before_any_request() {
    let (dir, _pkg, server, http) = serve(1000).await;
    let local = Upstream::parse(dir.path().to_str().expect("utf-8 path"), opts()).expect("local");
    for up in [&http, &local] {
        for rel in [
            "../x",
            "/etc/passwd",
            "a\\b",
            "core/../../x",
            "a//b",
            "",
            "a\0b",
        ] {
            let err = up.get(rel, 100).await.unwrap_err();
            assert!(
                err.to_string().contains("refusing unsafe path"),
                "{rel:?}: {err}"
            );
            assert!(up.download(rel, None).await.is_err(), "{rel:?}");
            assert!(up.exists(rel).await.is_err(), "{rel:?}");
            assert!(up.symlink_target(rel).await.is_err(), "{rel:?}");
        }
    }
    assert_eq!(server.requests(), []);
}

#[tokio::test]
async fn parse_accepts_http_file_urls_and_paths() {
    let (dir, _pkg) = mirror(10);
    let path = dir.path().canonicalize().expect("canonical temp dir");
    let path = path.to_str().expect("utf-8 path");
    let file_url = format!("file://{path}/");
    for (given, canonical) in [
        ("http://mirror.example/arch", "http://mirror.example/arch/"),
        ("http://mirror.example/arch/", "http://mirror.example/arch/"),
        ("https://mirror.example", "https://mirror.example/"),
        (
            "HTTPS://user:secret@mirror.example:8443/a/b",
            "https://mirror.example:8443/a/b/",
        ),
        (&format!("file://{path}"), &file_url),
        (&file_url, &file_url),
        (path, &file_url),
        (&format!("{path}/"), &file_url),
    ] {
        let up = Upstream::parse(given, opts()).unwrap_or_else(|e| panic!("{given}: {e}"));
        assert_eq!(up.url(), canonical, "{given}");
        assert_eq!(up.is_local(), canonical.starts_with("file:"), "{given}");
    }
    for bad in [
        "",
        "ftp://mirror.example/",
        "rsync://mirror.example/arch",
        "http://",
        "http://mirror.example/?x=1",
        "file://remote.host/srv",
    ] {
        let err = Upstream::parse(bad, opts()).unwrap_err();
        assert!(matches!(err, Error::BadUpstream(_)), "{bad:?}: {err:?}");
    }
    let missing = dir.path().join("missing");
    let err = Upstream::parse(missing.to_str().expect("utf-8"), opts()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    let file = dir.path().join("lastupdate");
    let err = Upstream::parse(file.to_str().expect("utf-8"), opts()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
}

/// A server whose certificate does not verify (self-signed: an unknown issuer) is refused at
/// the first attempt, naming the host: waiting and asking again does not fix a certificate
/// (issue 12, defect 9). The server counts the connections it accepts.
#[tokio::test]
async fn https_certificate_errors_fail_at_once_naming_the_host() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
        .expect("self-signed certificate");
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key.into())
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let server = tokio::spawn({
        let accepted = Arc::clone(&accepted);
        async move {
            while let Ok((socket, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                // The client refuses the certificate: the handshake ends with its alert.
                tokio::spawn(async move { acceptor.accept(socket).await.map(drop) });
            }
        }
    });
    let up = Upstream::parse(&format!("https://127.0.0.1:{port}/"), opts()).expect("upstream");

    let err = bounded("get", up.get("lastupdate", 64)).await.unwrap_err();
    match &err {
        Error::Tls { host, url, .. } => {
            assert_eq!(host, "127.0.0.1");
            assert!(url.ends_with("/lastupdate"), "{url}");
        }
        other => panic!("expected Error::Tls, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("TLS refused the server 127.0.0.1") && message.contains("certificate"),
        "{message}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one attempt, no retry");

    // The same for a download and a HEAD.
    let err = bounded("download", up.download(PKG, None))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "one attempt, no retry");
    let err = bounded("exists", up.exists(PKG)).await.unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 3, "one attempt, no retry");
    server.abort();
}

#[tokio::test]
async fn local_get_and_download_by_file_url_and_path() {
    let (dir, pkg) = mirror(3 << 20);
    let path = dir.path().to_str().expect("utf-8 path");
    for given in [format!("file://{path}"), path.to_string()] {
        let up = Upstream::parse(&given, opts()).expect("local upstream");
        let lastupdate = up.get("lastupdate", 64).await.expect("get");
        assert_eq!(lastupdate.as_deref(), Some(&b"1700000000\n"[..]));
        assert_eq!(
            up.get("core/os/x86_64/core.db", 64).await.expect("get"),
            None
        );
        assert_eq!(up.get("lastupdate/x", 64).await.expect("get"), None);
        assert!(up.exists(PKG).await.expect("exists"));
        assert!(
            !up.exists("core/os").await.expect("exists"),
            "a directory is not a file"
        );
        assert!(!up.exists("nope").await.expect("exists"));
        assert!(up.download("nope", None).await.expect("download").is_none());

        let download = up
            .download(PKG, Some(pkg.len() as u64))
            .await
            .expect("download")
            .expect("exists");
        assert_eq!(download.content_length, Some(pkg.len() as u64));
        let stats = download.stats.clone();
        let mut stream = download.stream;
        let mut body = Vec::new();
        let mut chunks = 0;
        while let Some(chunk) = stream.next().await {
            body.extend_from_slice(&chunk.expect("chunk"));
            chunks += 1;
        }
        assert!(body == pkg);
        assert_eq!(chunks, 3, "1 MiB chunks");
        assert_eq!(stats.bytes.load(Ordering::Relaxed), pkg.len() as u64);

        let err = up.get(PKG, 1 << 20).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooLarge {
                    limit: 1_048_576,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = up.download(PKG, Some(1000)).await.unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { limit: 1000, .. }),
            "{err:?}"
        );
        assert!(up.download(PKG, Some(pkg.len() as u64 + 1)).await.is_err());
        assert_eq!(up.symlink_target(PKG).await.expect("symlink_target"), None);
    }
}

#[tokio::test]
async fn local_symlinks_inside_the_root_are_followed_and_reported() {
    let (dir, _pkg) = mirror(10);
    let repo = dir.path().join("core/os/x86_64");
    std::fs::write(repo.join("core.db.tar.gz"), b"database").expect("write");
    std::os::unix::fs::symlink("core.db.tar.gz", repo.join("core.db")).expect("symlink");
    // A link to a sibling directory of the tree is fine too.
    std::os::unix::fs::symlink("../../../lastupdate", repo.join("up")).expect("symlink");

    let up = Upstream::parse(dir.path().to_str().expect("utf-8"), opts()).expect("local");
    let db = "core/os/x86_64/core.db";
    assert_eq!(
        up.symlink_target(db).await.expect("target").as_deref(),
        Some("core.db.tar.gz")
    );
    assert_eq!(
        up.symlink_target("core/os/x86_64/core.db.tar.gz")
            .await
            .expect("target"),
        None
    );
    assert_eq!(
        up.symlink_target("core/os/x86_64/up")
            .await
            .expect("target"),
        None
    );
    assert_eq!(
        up.symlink_target("core/os/x86_64/nope")
            .await
            .expect("target"),
        None
    );
    assert_eq!(
        up.get(db, 100).await.expect("get").as_deref(),
        Some(&b"database"[..])
    );
    assert_eq!(
        up.get("core/os/x86_64/up", 100)
            .await
            .expect("get")
            .as_deref(),
        Some(&b"1700000000\n"[..])
    );

    // Over HTTP there are no links to report.
    let server = TestUpstream::start(dir.path()).await;
    let http = Upstream::parse(&server.url, opts()).expect("http");
    assert_eq!(http.symlink_target(db).await.expect("target"), None);
    assert_eq!(
        http.get(db, 100).await.expect("get").as_deref(),
        Some(&b"database"[..])
    );
}

#[tokio::test]
async fn local_symlinks_out_of_the_root_are_refused() {
    let (dir, _pkg) = mirror(10);
    let outside = TempDir::new().expect("temp dir");
    put_file(outside.path(), "secret", b"secret");
    put_file(outside.path(), "sub/file", b"secret");
    let repo = dir.path().join("core/os/x86_64");
    std::os::unix::fs::symlink(outside.path().join("secret"), repo.join("evil")).expect("symlink");
    std::os::unix::fs::symlink(outside.path(), dir.path().join("extra")).expect("symlink");

    let up = Upstream::parse(dir.path().to_str().expect("utf-8"), opts()).expect("local");
    for rel in ["core/os/x86_64/evil", "extra/sub/file"] {
        let err = up.get(rel, 100).await.unwrap_err();
        assert!(
            err.to_string().contains("refusing a symbolic link out of"),
            "{rel}: {err}"
        );
        assert!(up.download(rel, None).await.is_err(), "{rel}");
        assert!(up.exists(rel).await.is_err(), "{rel}");
    }
    // Not a link to a sibling; and a directory outside the root is not looked into.
    assert_eq!(
        up.symlink_target("core/os/x86_64/evil")
            .await
            .expect("target"),
        None
    );
    assert!(up.symlink_target("extra/sub/file").await.is_err());
}

/// Makes a FIFO at `path`; dropping it opens the FIFO for writing, so that a reader stuck in
/// `open` (the bug this guards against) is let go and the test fails instead of hanging.
pub struct Fifo(std::path::PathBuf);

impl Fifo {
    pub fn make(path: std::path::PathBuf) -> Fifo {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
        Fifo(path)
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.0);
    }
}

/// Only regular files are read from a local upstream: a FIFO (whose open waits for a writer
/// forever), a socket or a directory where a file should be is refused at once, naming it
/// (issue 12, defect 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_fifos_sockets_and_directories_are_refused_naming_the_file() {
    let (dir, _pkg) = mirror(10);
    let repo = dir.path().join("core/os/x86_64");
    let _fifo = Fifo::make(repo.join("fifo-1-1-x86_64.pkg.tar.zst"));
    let _socket =
        std::os::unix::net::UnixListener::bind(repo.join("socket-1-1-x86_64.pkg.tar.zst"))
            .expect("bind a unix socket");
    std::fs::create_dir(repo.join("dir-1-1-x86_64.pkg.tar.zst")).expect("mkdir");
    // Through a link too.
    std::os::unix::fs::symlink("fifo-1-1-x86_64.pkg.tar.zst", repo.join("link.db"))
        .expect("symlink");
    let up = Upstream::parse(dir.path().to_str().expect("utf-8"), opts()).expect("local");
    for (file, what) in [
        ("fifo-1-1-x86_64.pkg.tar.zst", "a FIFO"),
        ("socket-1-1-x86_64.pkg.tar.zst", "a socket"),
        ("dir-1-1-x86_64.pkg.tar.zst", "a directory"),
        ("link.db", "a FIFO"),
    ] {
        let rel = format!("core/os/x86_64/{file}");
        let check = |err: Error| {
            let message = err.to_string();
            assert!(
                message.contains(&rel)
                    && message.contains(what)
                    && message.contains("not a regular file"),
                "{rel}: {message}"
            );
        };
        check(bounded("get", up.get(&rel, 100)).await.unwrap_err());
        check(
            bounded("download", up.download(&rel, Some(10)))
                .await
                .unwrap_err(),
        );
        assert!(!bounded("exists", up.exists(&rel)).await.expect("exists"));
    }
    // The regular file next to them is fine.
    assert!(
        bounded("get", up.get(PKG, 100))
            .await
            .expect("get")
            .is_some()
    );
}
