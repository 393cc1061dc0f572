//! `cidmirror serve` with real pacman: a signed repository (makepkg, gpg, repo-add) behind
//! the Rust test upstream, published by `cidmirror mirror`, served by `cidmirror serve` (a
//! separate process on the same data directory, as in production), and used by a private
//! pacman that requires package signatures. Then the upstream moves on, the publisher
//! publishes again, and `pacman -Syu` upgrades through the gateway.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::mirror::fixture::{self, Mirror};
use crate::mirror::server::TestUpstream;
use crate::mirror::{mirror_once, runtime};
use crate::pacman_client::{Pacman, export_key};
use crate::serve_support::{Server, request};
use crate::support::*;

/// The server's count of 304 answers on mirror paths, from `/metrics`.
fn mirror_304s(srv: &Server) -> u64 {
    let text = request(srv.addr, "GET", "/metrics", &[]).text();
    text.lines()
        .filter(|l| {
            l.starts_with("cidmirror_http_requests_total{")
                && l.contains("route=\"mirror\"")
                && l.contains("status=\"304\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Body bytes the server sent on a route, from `/metrics`.
fn bytes_sent(srv: &Server, route: &str) -> u64 {
    let text = request(srv.addr, "GET", "/metrics", &[]).text();
    text.lines()
        .filter(|l| {
            l.starts_with("cidmirror_http_response_bytes_total{")
                && l.contains(&format!("route=\"{route}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn pacman_syncs_downloads_installs_and_upgrades_through_the_gateway() {
    let rt = runtime();
    let t = TestDir::in_tmp();
    let pkgs = fixture::packages();
    let m = Mirror::new();
    // core: signed packages, a signed database; extra: a signed and an unsigned package,
    // an unsigned database (pacman asks for extra.db.sig and must get a quick 404).
    m.set_repo(
        "core",
        &[("alpha", "1.0"), ("gamma", "1.0"), ("zeta", "1.0")],
        true,
    );
    m.set_repo("extra", &[("epsilon", "1.0"), ("beta", "1.0")], false);
    m.set_lastupdate(1_700_000_000);
    let up = rt.block_on(TestUpstream::start(m.root()));

    let d = t.data("data");
    mirror_once(&d, &up.url);
    let srv = Server::serve(&d, &[]);
    srv.wait_for_snapshot(1);
    let upstream_requests = up.requests().len();

    let pacman = Pacman::new(
        &t.path("pacman"),
        &srv.base(),
        &["core", "extra"],
        "Required DatabaseOptional",
    );
    let fpr = export_key(&pkgs.gnupg, &t.path("signer.pub"));
    pacman.trust(&t.path("signer.pub"), &fpr);

    // -Sy: both databases, byte for byte what the upstream has.
    let out = pacman.ok(&["-Sy"]);
    assert!(out.contains("core") && out.contains("extra"), "{out}");
    let sync = t.path("pacman/db/sync");
    assert_eq!(
        read(&sync.join("core.db")),
        read(&m.repo_dir("core", "x86_64").join("core.db"))
    );
    assert_eq!(
        read(&sync.join("extra.db")),
        read(&m.repo_dir("extra", "x86_64").join("extra.db"))
    );

    // -Sw: the package lands in the cache, verified by pacman against its signature.
    pacman.ok(&["-Sw", "gamma"]);
    let gamma = pkgs.get("gamma", "1.0");
    assert_eq!(read(&pacman.cache.join(&gamma.filename)), gamma.bytes());

    // -S: installed into the private root.
    pacman.ok(&["-S", "alpha", "epsilon"]);
    assert_eq!(
        read(&pacman.root.join("usr/share/alpha/version")),
        b"alpha 1.0\n"
    );
    assert_eq!(
        read(&pacman.root.join("usr/share/epsilon/version")),
        b"epsilon 1.0\n"
    );

    // Nothing new: the databases and core's signature answer 304 (pacman prints nothing about it when its
    // output is not a terminal; the server counts it) and pacman keeps its copies.
    let before = mirror_304s(&srv);
    pacman.ok(&["-Sy"]);
    assert_eq!(
        mirror_304s(&srv),
        before + 3,
        "core.db, core.db.sig and extra.db unchanged"
    );
    assert_eq!(
        read(&sync.join("core.db")),
        read(&m.repo_dir("core", "x86_64").join("core.db"))
    );

    // Every byte pacman got came from the gateway: the upstream saw no request since the sync.
    assert_eq!(up.requests().len(), upstream_requests);

    // The upstream gains alpha 2.0; the publisher publishes; the server (another process)
    // switches; -Syu upgrades.
    m.set_repo(
        "core",
        &[("alpha", "2.0"), ("gamma", "1.0"), ("zeta", "1.0")],
        true,
    );
    m.set_lastupdate(1_700_003_600);
    let out = mirror_once(&d, &up.url);
    assert!(out.contains("published snapshot 2 "), "{out}");
    srv.wait_for_snapshot(2);
    let out = pacman.ok(&["-Syu"]);
    assert!(out.contains("alpha"), "{out}");
    assert_eq!(
        read(&pacman.root.join("usr/share/alpha/version")),
        b"alpha 2.0\n"
    );
    let q = pacman.ok(&["-Q", "alpha"]);
    assert_eq!(q.trim(), "alpha 2.0-1");
    let alpha2 = pkgs.get("alpha", "2.0");
    assert_eq!(read(&pacman.cache.join(&alpha2.filename)), alpha2.bytes());

    // beta has no signature: with signatures required, pacman refuses it (the gateway's
    // quick 404 for its .sig is what pacman sees), so the keyring really is in force.
    let o = pacman.run(&["-S", "beta"]);
    assert!(!o.status.success(), "pacman installed an unsigned package");
    assert!(
        stderr(&o).contains("beta-1.0-1-x86_64.pkg.tar.zst.sig") && stderr(&o).contains("404"),
        "{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(!pacman.root.join("usr/share/beta").exists());
}

#[test]
fn mirror_with_serve_publishes_and_serves_in_one_process() {
    let rt = runtime();
    let t = TestDir::new();
    let m = fixture::standard_mirror();
    let up = rt.block_on(TestUpstream::start(m.root()));
    let d = t.data("data");
    let srv = Server::spawn(
        &d,
        &[
            "mirror",
            "--upstream",
            &up.url,
            "--repo",
            "core",
            "--repo",
            "extra",
            "--interval",
            "1s",
            "--no-progress",
            "--serve",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    srv.wait_for_snapshot(1);
    let db = srv.get("/core/os/x86_64/core.db");
    assert_eq!(db.status, 200);
    assert_eq!(db.body, read(&m.repo_dir("core", "x86_64").join("core.db")));

    fixture::change_standard_mirror(&m);
    srv.wait_for_snapshot(2);
    let db = srv.get("/core/os/x86_64/core.db");
    assert_eq!(db.status, 200);
    assert_eq!(db.body, read(&m.repo_dir("core", "x86_64").join("core.db")));
    let zeta = fixture::packages().get("zeta", "1.0");
    let r = srv.get(&format!("/core/os/x86_64/{}", zeta.filename));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, zeta.bytes());
    // gamma left upstream, so it left the current snapshot.
    let gamma = fixture::packages().get("gamma", "1.0");
    assert_eq!(
        srv.get(&format!("/core/os/x86_64/{}", gamma.filename))
            .status,
        404
    );
}

/// A published standard mirror and a server over it.
fn published(t: &TestDir) -> (Mirror, DataDir, Server) {
    let m = fixture::standard_mirror();
    let d = t.data("data");
    mirror_once(&d, m.root().to_str().expect("UTF-8 path"));
    let srv = Server::serve(&d, &["--shutdown-grace", "20s"]);
    srv.wait_for_snapshot(1);
    (m, d, srv)
}

fn json(r: &crate::serve_support::Resp) -> serde_json::Value {
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

#[test]
fn lookups_by_hash_and_path_from_the_api_and_the_command_line() {
    let t = TestDir::new();
    let (_m, d, srv) = published(&t);
    let gamma = fixture::packages().get("gamma", "1.0");
    let bytes = gamma.bytes();
    let sha = sha256_hex(&bytes);
    let path = format!("core/os/x86_64/{}", gamma.filename);
    let snap = json(&srv.get("/api/v1/snapshot/current"));

    let by_path = json(&srv.get(&format!("/api/v1/resolve?path={path}")));
    let by_hash = json(&srv.get(&format!("/api/v1/resolve?sha256={sha}")));
    assert_eq!(by_path, by_hash);
    assert_eq!(by_hash["sha256"], sha.as_str());
    assert_eq!(by_hash["size"], bytes.len() as u64);
    assert_eq!(by_hash["snapshot"]["seq"], 1);
    assert_eq!(by_hash["snapshot"]["root"], snap["root"]);
    let paths = by_hash["paths"].as_array().expect("paths");
    assert!(paths.iter().any(|p| p == path.as_str()), "{paths:?}");
    // The CID is the one the gateway serves those bytes under.
    let cid = by_hash["cid"].as_str().expect("cid");
    assert_eq!(srv.get(&format!("/ipfs/{cid}")).body, bytes);

    // /by-hash: the file itself; unknown and malformed hashes are told apart.
    let r = srv.get(&format!("/by-hash/sha256/{sha}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, bytes);
    let absent = sha256_hex(b"not in any snapshot");
    assert_eq!(srv.get(&format!("/by-hash/sha256/{absent}")).status, 404);
    assert_eq!(
        srv.get(&format!("/api/v1/resolve?sha256={absent}")).status,
        404
    );
    for bad in ["xyz", &sha[..63], &format!("{sha}00")] {
        assert_eq!(srv.get(&format!("/by-hash/sha256/{bad}")).status, 400);
        assert_eq!(
            srv.get(&format!("/api/v1/resolve?sha256={bad}")).status,
            400
        );
    }
    assert_eq!(srv.get("/api/v1/resolve").status, 400);
    assert_eq!(
        srv.get("/api/v1/resolve?path=core/os/x86_64/nothing.pkg.tar.zst")
            .status,
        404
    );

    // `cidmirror resolve` prints the same answer (JSON for scripts, lines for people).
    let cli: serde_json::Value =
        serde_json::from_str(&d.ok_text(&["resolve", "--sha256", &sha, "--json"]))
            .expect("resolve --json");
    assert_eq!(cli, by_hash);
    let text = d.ok_text(&["resolve", "--path", &path]);
    assert!(text.contains(&format!("cid       {cid}")), "{text}");
    assert!(text.contains(&format!("path      {path}")), "{text}");
    let o = d.run(&["resolve", "--sha256", &absent]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&absent), "{}", stderr(&o));

    // pacman-conf names the repositories of the current snapshot and the given address.
    let conf = d.ok_text(&["pacman-conf", "--url", &srv.base()]);
    let line = format!("Server = {}/$repo/os/$arch", srv.base());
    assert!(conf.contains(&format!("[core]\n{line}")), "{conf}");
    assert!(conf.contains(&format!("[extra]\n{line}")), "{conf}");
}

#[test]
fn mirror_paths_ranges_heads_and_missing_signatures() {
    let t = TestDir::new();
    let (m, _d, srv) = published(&t);
    let gamma = fixture::packages().get("gamma", "1.0");
    let bytes = gamma.bytes();
    let target = format!("/core/os/x86_64/{}", gamma.filename);

    let r = request(srv.addr, "GET", &target, &[("Range", "bytes=1000-1999")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &bytes[1000..2000]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 1000-1999/{}", bytes.len()).as_str())
    );
    let r = request(srv.addr, "GET", &target, &[("Range", "bytes=-10")]);
    assert_eq!(r.body, &bytes[bytes.len() - 10..]);
    let r = request(srv.addr, "HEAD", &target, &[]);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(
        r.header("content-length"),
        Some(bytes.len().to_string().as_str())
    );
    // Packages are immutable; databases are revalidated.
    assert!(
        r.header("cache-control")
            .is_some_and(|c| c.contains("immutable"))
    );
    let db = srv.get("/core/os/x86_64/core.db");
    assert_eq!(db.header("cache-control"), Some("no-cache"));
    let lm = db.header("last-modified").expect("Last-Modified on a db");
    let etag = db.header("etag").expect("ETag on a db");
    let r = request(
        srv.addr,
        "GET",
        "/core/os/x86_64/core.db",
        &[("If-Modified-Since", lm)],
    );
    assert_eq!((r.status, r.body.len()), (304, 0));
    let r = request(
        srv.addr,
        "GET",
        "/core/os/x86_64/core.db",
        &[("If-None-Match", etag)],
    );
    assert_eq!(r.status, 304);
    // core's db is signed upstream, extra's is not: its .sig is a 404 at once.
    let sig = srv.get("/core/os/x86_64/core.db.sig");
    assert_eq!(
        sig.body,
        read(&m.repo_dir("core", "x86_64").join("core.db.sig"))
    );
    let started = std::time::Instant::now();
    assert_eq!(srv.get("/extra/os/x86_64/extra.db.sig").status, 404);
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    // If-Range: a resume of this version gets the range, a resume of another version
    // gets the whole current file, never a splice of two.
    let r = request(
        srv.addr,
        "GET",
        "/core/os/x86_64/core.db",
        &[("Range", "bytes=10-"), ("If-Range", etag)],
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &db.body[10..]);
    let r = request(
        srv.addr,
        "GET",
        "/core/os/x86_64/core.db",
        &[("Range", "bytes=10-"), ("If-Range", lm)],
    );
    assert_eq!(r.status, 206);
    for other in ["\"bafkqaaa\"", "Thu, 01 Jan 2015 00:00:00 GMT", "W/\"x\""] {
        let r = request(
            srv.addr,
            "GET",
            "/core/os/x86_64/core.db",
            &[("Range", "bytes=10-"), ("If-Range", other)],
        );
        assert_eq!(r.status, 200, "If-Range {other}");
        assert_eq!(r.body, db.body, "If-Range {other}");
    }
    assert_eq!(srv.get("/community/os/x86_64/community.db").status, 404);
    assert_eq!(srv.get("/core/os/aarch64/core.db").status, 404);
}

/// Reads one server-sent event (`id:` and `data:` lines up to a blank line).
fn next_event(r: &mut impl std::io::BufRead) -> (u64, serde_json::Value) {
    let (mut id, mut data) = (None, None);
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).expect("reading the feed");
        assert!(n > 0, "the feed ended");
        let line = line.trim_end();
        if line.is_empty() {
            if let (Some(i), Some(d)) = (id.take(), data.take()) {
                return (i, d);
            }
            continue;
        }
        if let Some(v) = line.strip_prefix("id:") {
            id = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("data:") {
            data = serde_json::from_str(v.trim()).ok();
        }
    }
}

/// Opens `/feed` (with `Last-Event-ID` if given) and returns a reader past the headers.
fn open_feed(srv: &Server, last: Option<u64>) -> std::io::BufReader<std::net::TcpStream> {
    use std::io::{BufRead, Write};
    let mut s = std::net::TcpStream::connect(srv.addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let extra = last
        .map(|l| format!("Last-Event-ID: {l}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET /feed HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{extra}\r\n"
    )
    .expect("send");
    let mut r = std::io::BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).expect("status line");
    assert!(status.contains(" 200 "), "{status}");
    let mut chunked = false;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).expect("header");
        let l = h.to_ascii_lowercase();
        chunked |= l.starts_with("transfer-encoding") && l.contains("chunked");
        if h == "\r\n" {
            break;
        }
    }
    // Chunk-size lines are not `id:`/`data:` lines, and empty lines between events are
    // blank either way: the event reader can skip them.
    let _ = chunked;
    r
}

fn verify_event(ev: &serde_json::Value, public_hex: &str) {
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};
    let key: [u8; 32] = hex::decode(public_hex)
        .expect("hex key")
        .try_into()
        .expect("32-byte key");
    let key = VerifyingKey::from_bytes(&key).expect("ed25519 key");
    let sig: [u8; 64] = hex::decode(ev["signature"].as_str().expect("signature"))
        .expect("hex signature")
        .try_into()
        .expect("64-byte signature");
    let msg = format!(
        "cidmirror-snapshot-v1\nseq {}\nroot {}\nprevious {}\n",
        ev["seq"],
        ev["root"].as_str().expect("root"),
        ev["previous"].as_str().unwrap_or("-")
    );
    key.verify(msg.as_bytes(), &Signature::from_bytes(&sig))
        .unwrap_or_else(|e| panic!("snapshot {} signature: {e}", ev["seq"]));
}

#[test]
fn the_feed_pushes_each_snapshot_and_replays_from_last_event_id() {
    let t = TestDir::new();
    let (m, d, srv) = published(&t);
    let key = d.ok_text(&["key", "show"]).trim().to_string();
    let mut feed = open_feed(&srv, None);
    let (id, first) = next_event(&mut feed);
    assert_eq!(id, 1);
    assert_eq!(first, json(&srv.get("/api/v1/snapshot/current")));
    verify_event(&first, &key);

    fixture::change_standard_mirror(&m);
    let published_at = std::time::Instant::now();
    mirror_once(&d, m.root().to_str().expect("UTF-8 path"));
    let (id, second) = next_event(&mut feed);
    let pushed = published_at.elapsed();
    assert_eq!(id, 2);
    assert_eq!(second["previous"], first["root"]);
    verify_event(&second, &key);
    assert!(
        pushed < std::time::Duration::from_secs(20),
        "pushed after {pushed:?}"
    );

    // A follower that saw 1 gets 2 replayed; one that saw 2 waits for what comes next.
    let mut again = open_feed(&srv, Some(1));
    assert_eq!(next_event(&mut again), (2, second.clone()));

    // The metrics show the snapshot and the work done.
    let metrics = srv.get("/metrics").text();
    assert!(
        metrics.contains("cidmirror_snapshot_sequence 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cidmirror_http_requests_total{"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cidmirror_snapshot_age_seconds"),
        "{metrics}"
    );
}

/// Starts a GET of `target` and reads only its head and `first` body bytes.
fn start_download(
    srv: &Server,
    target: &str,
    first: usize,
) -> (std::net::TcpStream, Vec<u8>, usize) {
    use std::io::{Read, Write};
    // A small receive buffer, so that the server cannot push the whole file into the
    // sockets' buffers: it has to keep streaming from the store while the test acts.
    let rt = runtime();
    let mut s = rt
        .block_on(async {
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.set_recv_buffer_size(16 << 10)?;
            let s = sock.connect(srv.addr).await?;
            s.into_std()
        })
        .expect("connect");
    s.set_nonblocking(false).expect("blocking socket");
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
        if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n")
            && got.len() >= p + 4 + first
        {
            break p + 4;
        }
    };
    (s, got, head_end)
}

#[test]
fn a_download_survives_a_snapshot_switch_and_a_graceful_shutdown() {
    use std::io::Read;
    use std::time::{Duration, Instant};
    let t = TestDir::new();
    let omega = fixture::packages().get("omega", "1.0");
    let size = omega.bytes().len() as u64;
    let m = Mirror::new();
    m.set_repo("core", &[("alpha", "1.0"), ("omega", "1.0")], true);
    m.set_repo("extra", &[("delta", "1.0")], false);
    m.set_lastupdate(1_700_000_000);
    let d = t.data("data");
    let up = m.root().to_str().expect("UTF-8 path");
    mirror_once(&d, up);
    let mut srv = Server::serve(&d, &["--shutdown-grace", "20s"]);
    srv.wait_for_snapshot(1);
    let target = format!("/core/os/x86_64/{}", omega.filename);
    let cid = json(&srv.get(&format!("/api/v1/resolve?path={}", &target[1..])))["cid"]
        .as_str()
        .expect("cid")
        .to_string();

    // omega leaves upstream while a client is downloading it from snapshot 1.
    let sent_before = bytes_sent(&srv, "mirror");
    let (mut s, mut got, head) = start_download(&srv, &target, 1);
    m.set_repo("core", &[("alpha", "1.0")], true);
    m.set_lastupdate(1_700_003_600);
    mirror_once(&d, up);
    srv.wait_for_snapshot(2);
    let sent = bytes_sent(&srv, "mirror") - sent_before;
    assert!(
        sent < size,
        "the download was still running at the switch ({sent} of {size} bytes sent)"
    );
    assert_eq!(srv.get(&target).status, 404, "gone from snapshot 2");
    s.read_to_end(&mut got).expect("the rest of the download");
    assert!(got[head..] == omega.bytes(), "the download finished intact");

    // SIGTERM during a download (of omega by CID: kept for the grace period): the download
    // finishes, new connections are refused, the process exits 0.
    let sent_before = bytes_sent(&srv, "ipfs");
    let (mut s, mut got, head) = start_download(&srv, &format!("/ipfs/{cid}"), 1);
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &srv.pid().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(srv.addr).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    s.read_to_end(&mut got).expect("the rest of the download");
    assert!(got[head..] == omega.bytes(), "the download finished intact");
    let status = srv
        .wait_exit(Duration::from_secs(20))
        .expect("exit after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", srv.log());
    let _ = sent_before;
}

/// A kept file's middle leaves by sendfile (the kernel sends it from the page cache; the
/// first piece and the checked tail are read and sent as bytes): large files come out whole
/// and in ranges (through the middle, from inside the first piece, into the tail; short
/// ones in pieces), one after the other and pipelined on one keep-alive connection, and the
/// metrics count the bytes given to sendfile.
#[test]
fn large_kept_files_go_out_by_sendfile_whole_and_in_ranges_on_one_connection() {
    let t = TestDir::new();
    let d = t.data("data");
    let len = 5 * 1024 * 1024 + 12345;
    let data = crate::support::chacha_bytes("sendfile", len);
    let path = t.write("big.bin", &data);
    let cid = d
        .add(&[], &[s(&path)])
        .into_values()
        .next()
        .expect("one CID");
    let srv = Server::serve(&d, &[]);
    let target = format!("/ipfs/{cid}");
    let before = sendfile_bytes(&srv);
    let ranges: [Option<(usize, usize)>; 7] = [
        None,
        Some((0, len - 1)),
        Some((10, 20_000)),         // short: in pieces
        Some((70_000, 3_000_000)),  // the middle only
        Some((2_000_000, len - 1)), // the middle through the tail
        Some((len - 100, len - 1)), // short: in pieces
        None,
    ];
    let mut conn = std::net::TcpStream::connect(srv.addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
    let ask = |r: &Option<(usize, usize)>| {
        let range = r
            .map(|(a, b)| format!("Range: bytes={a}-{b}\r\n"))
            .unwrap_or_default();
        format!("GET {target} HTTP/1.1\r\nHost: x\r\n{range}\r\n")
    };
    let check = |r: &Option<(usize, usize)>, (status, body): (u16, Vec<u8>)| {
        let (want_status, want) = match r {
            None => (200, &data[..]),
            Some((a, b)) => (206, &data[*a..=*b]),
        };
        assert_eq!(status, want_status, "{r:?}");
        assert!(
            body == want,
            "{r:?}: {} bytes differ from the file's",
            body.len()
        );
    };
    for r in &ranges {
        conn.write_all(ask(r).as_bytes()).unwrap();
        check(r, read_response(&mut reader));
    }
    // Pipelined: every request sent before any answer is read.
    let all: String = ranges.iter().map(ask).collect();
    conn.write_all(all.as_bytes()).unwrap();
    for r in &ranges {
        check(r, read_response(&mut reader));
    }
    let sent = sendfile_bytes(&srv) - before;
    assert!(
        sent >= 8 * (len as u64 - 64 * 1024),
        "sendfile sent {sent} bytes: the whole downloads did not go that way"
    );
}

/// The `cidmirror_sendfile_bytes_total` counter.
fn sendfile_bytes(srv: &Server) -> u64 {
    let text = request(srv.addr, "GET", "/metrics", &[]).text();
    text.lines()
        .find(|l| l.starts_with("cidmirror_sendfile_bytes_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no sendfile counter in {text}"))
}

/// One response of a keep-alive connection: status and body (by Content-Length).
fn read_response(r: &mut impl std::io::BufRead) -> (u16, Vec<u8>) {
    let mut status = 0;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("response head");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(code) = line.strip_prefix("HTTP/1.1 ") {
            status = code[..3].parse().expect("status");
        } else if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().expect("length");
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).expect("body");
    (status, body)
}
