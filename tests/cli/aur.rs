//! AUR package bases through the real binary: `mirror --aur-package` from a git repository
//! the test makes, sources served on 127.0.0.1, then the lookups by hash and by URL of
//! `serve` on the publisher and on a follower gateway (which gets the bases by walk, then
//! by delta).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::mirror::{fixture::standard_mirror, mirror_args, runtime};
#[path = "../../ingest/tests/ingest/support/git.rs"]
mod git;
use crate::serve_support::Server;
use crate::support::*;
use git::{commit_srcinfo, digest};

fn srcinfo(port: u16, rel: &str, sha256: &str, b2: &str) -> String {
    format!(
        "pkgbase = demo\n\tpkgver = {rel}\n\tpkgrel = 1\n\tarch = any\n\
         \tsource = demo-{rel}.tar.gz::http://127.0.0.1:{port}/demo-{rel}.tar.gz\n\
         \tsha256sums = {sha256}\n\tb2sums = {b2}\n\npkgname = demo\n"
    )
}

#[test]
fn aur_sources_are_found_by_every_hash_and_by_url_on_publisher_and_follower() {
    let rt = runtime();
    let v1 = chacha_bytes("aur demo 1.0", 300_000);
    let v2 = chacha_bytes("aur demo 2.0", 200_000);
    let (b1, b2) = (v1.clone(), v2.clone());
    let router = axum::Router::new()
        .route(
            "/demo-1.0.tar.gz",
            axum::routing::get(move || {
                let b = b1.clone();
                async move { b }
            }),
        )
        .route(
            "/demo-2.0.tar.gz",
            axum::routing::get(move || {
                let b = b2.clone();
                async move { b }
            }),
        );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("a port");
    let port = listener.local_addr().expect("address").port();
    rt.spawn(async move { axum::serve(listener, router).await });

    let repos = tempfile::tempdir().expect("temp dir");
    let pkg = repos.path().join("demo");
    commit_srcinfo(
        &pkg,
        &srcinfo(
            port,
            "1.0",
            &digest("sha256sum", &v1),
            &digest("b2sum", &v1),
        ),
    );
    let mirror = standard_mirror();
    let upstream = mirror.root().to_str().expect("UTF-8").to_string();
    let repos_dir = repos.path().to_str().expect("UTF-8").to_string();
    let aur_flags = [
        "--once",
        "--aur-package",
        "demo",
        "--aur-repos",
        repos_dir.as_str(),
        "--aur-allow-address",
        "127.0.0.1",
    ];
    let t = TestDir::new();
    let pubd = t.data("publisher");
    let o = pubd.run(&mirror_args(&upstream, &aur_flags));
    assert_eq!(o.status.code(), Some(0), "mirror --once: {}", stderr(&o));
    let key = pubd.ok_text(&["key", "show"]).trim().to_string();
    let publisher = Server::serve(&pubd, &[]);
    publisher.wait_for_snapshot(1);
    let fold = t.data("follower");
    let base = publisher.base();
    let follower = Server::serve(&fold, &["--follow", &base, "--publisher-key", &key]);
    follower.wait_for_snapshot(1);

    let check = |srv: &Server, bytes: &[u8], file: &str, bodies: bool| {
        let (s256, s512, sb2) = (
            digest("sha256sum", bytes),
            digest("sha512sum", bytes),
            digest("b2sum", bytes),
        );
        for (algo, hex) in [("sha256", &s256), ("sha512", &s512), ("b2", &sb2)] {
            let r = srv.get(&format!("/api/v1/resolve?{algo}={hex}"));
            assert_eq!(r.status, 200, "{algo} on {}: {}", srv.base(), r.text());
            let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
            assert_eq!(v["sha256"], s256.as_str());
            assert_eq!(v["size"].as_u64(), Some(bytes.len() as u64));
            let paths: Vec<&str> = v["paths"]
                .as_array()
                .expect("paths")
                .iter()
                .filter_map(|p| p.as_str())
                .collect();
            assert!(
                paths.contains(&format!("aur/demo/{file}").as_str()),
                "{paths:?}"
            );
            if bodies {
                let r = srv.get(&format!("/by-hash/{algo}/{hex}"));
                assert_eq!(r.status, 200, "/by-hash/{algo}: {}", r.text());
                assert!(r.body == bytes, "/by-hash/{algo}/ gives the source's bytes");
            }
        }
        let url = format!("http://127.0.0.1:{port}/{file}");
        let r = srv.get(&format!("/api/v1/resolve?url={url}"));
        assert_eq!(r.status, 200, "by URL: {}", r.text());
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
        assert_eq!(v["sha256"], s256.as_str());
    };
    check(&publisher, &v1, "demo-1.0.tar.gz", true);
    // `cidmirror resolve` answers the same on the publisher's data directory.
    let printed = pubd.ok_text(&["resolve", "--b2", &digest("b2sum", &v1)]);
    assert!(
        printed.contains(&format!("sha256    {}", digest("sha256sum", &v1)))
            && printed.contains("path      aur/demo/demo-1.0.tar.gz"),
        "{printed}"
    );
    let bad = pubd.run(&["resolve", "--sha512", "abc"]);
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("128 hex digits"), "{}", stderr(&bad));
    let status = pubd.ok_text(&["status"]);
    assert!(
        status.contains(&format!(
            "aur            1 package bases, 1 sources cached ({} bytes), 0 not cached",
            v1.len()
        )),
        "{status}"
    );
    for srv in [&publisher, &follower] {
        let m = srv.get("/metrics").text();
        for want in [
            "cidmirror_aur{what=\"bases\"} 1".to_string(),
            "cidmirror_aur{what=\"sources\"} 1".to_string(),
            format!("cidmirror_aur{{what=\"source_bytes\"}} {}", v1.len()),
        ] {
            assert!(m.contains(&want), "{} /metrics lacks {want}", srv.base());
        }
    }
    check(&follower, &v1, "demo-1.0.tar.gz", true);
    // Bad requests get short answers.
    for srv in [&publisher, &follower] {
        for (target, status, needle) in [
            (
                format!("/by-hash/md5/{}", "0".repeat(32)),
                400,
                "unknown hash algorithm",
            ),
            ("/by-hash/sha512/xyz".to_string(), 400, "128 hex digits"),
            (format!("/by-hash/b2/{}", "0".repeat(128)), 404, "not found"),
            (
                format!("/by-hash/sha256/{}", "0".repeat(63)),
                400,
                "64 hex digits",
            ),
            (
                "/api/v1/resolve?url=http://127.0.0.1:1/nope".to_string(),
                404,
                "no aur source",
            ),
            (
                "/api/v1/resolve?b2=00&sha256=00".to_string(),
                400,
                "exactly one",
            ),
        ] {
            let r = srv.get(&target);
            assert_eq!(r.status, status, "{target} on {}: {}", srv.base(), r.text());
            assert!(
                r.text().len() < 300,
                "{target}: a short message: {}",
                r.text()
            );
            assert!(
                r.text().to_lowercase().contains(needle),
                "{target}: {:?} lacks {needle:?}",
                r.text()
            );
        }
    }

    // A new version: the follower moves by delta, and finds the new source by its hashes.
    commit_srcinfo(
        &pkg,
        &srcinfo(
            port,
            "2.0",
            &digest("sha256sum", &v2),
            &digest("b2sum", &v2),
        ),
    );
    let o = pubd.run(&mirror_args(&upstream, &aur_flags));
    assert_eq!(o.status.code(), Some(0), "mirror --once: {}", stderr(&o));
    publisher.wait_for_snapshot(2);
    follower.wait_for_snapshot(2);
    check(&publisher, &v2, "demo-2.0.tar.gz", true);
    check(&follower, &v2, "demo-2.0.tar.gz", true);
    let gone = digest("b2sum", &v1);
    assert_eq!(
        follower.get(&format!("/api/v1/resolve?b2={gone}")).status,
        404
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let s = std::fs::read(t.path("follower/follow/status.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        if let Some(s) = s.filter(|s| s["refreshes_delta"].as_u64() >= Some(1)) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the follower never moved by delta"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["refreshes_failed"].as_u64(), Some(0), "{status}");
}

/// Runs real makepkg as `nobody` (it refuses root) in `dir` with `conf` and `SRCDEST`.
fn makepkg(dir: &Path, conf: &Path, srcdest: &Path, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "nobody", "--", "env"])
        .arg(format!("HOME={}", dir.display()))
        .arg(format!("SRCDEST={}", srcdest.display()))
        .arg("makepkg")
        .arg("--config")
        .arg(conf)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("makepkg runs")
}

/// A directory `nobody` may write.
fn open_dir(p: &Path) {
    std::fs::create_dir_all(p).expect("directory");
    let mut perm = std::fs::metadata(p).expect("metadata").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o777);
    std::fs::set_permissions(p, perm).expect("chmod");
}

/// What the source server does.
const SERVE: usize = 0;
const OTHER_BYTES: usize = 1;

#[test]
fn makepkg_builds_from_the_gateway_when_the_source_server_changed_its_bytes_or_died() {
    let rt = runtime();
    let tarball = chacha_bytes("makepkg demo 1.0", 150_000);
    let mode = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(SERVE));
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (m, r, t) = (mode.clone(), requests.clone(), tarball.clone());
    let router = axum::Router::new().route(
        "/demo-1.0.tar.gz",
        axum::routing::get(move || {
            r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = if m.load(std::sync::atomic::Ordering::SeqCst) == OTHER_BYTES {
                b"the same URL, other bytes".to_vec()
            } else {
                t.clone()
            };
            async move { body }
        }),
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("a port");
    let port = listener.local_addr().expect("address").port();
    let server = rt.spawn(async move { axum::serve(listener, router).await });

    // The package as its maintainer writes it, and the .SRCINFO makepkg prints for it.
    let t = TestDir::new();
    let build = t.path("build");
    open_dir(&build);
    std::fs::write(
        build.join("PKGBUILD"),
        format!(
            "pkgname=demo\npkgver=1.0\npkgrel=1\narch=(any)\n\
             source=(\"demo-1.0.tar.gz::http://127.0.0.1:{port}/demo-1.0.tar.gz\")\n\
             sha256sums=('{}')\nb2sums=('{}')\npackage() {{ :; }}\n",
            digest("sha256sum", &tarball),
            digest("b2sum", &tarball)
        ),
    )
    .expect("PKGBUILD");
    let conf = t.path("makepkg.conf");
    std::fs::copy("/etc/makepkg.conf", &conf).expect("Debian's makepkg.conf");
    let printed = makepkg(&build, &conf, &build, &["--printsrcinfo"]);
    assert!(
        printed.status.success(),
        "makepkg --printsrcinfo: {printed:?}"
    );
    let repos = t.path("repos");
    commit_srcinfo(
        &repos.join("demo"),
        std::str::from_utf8(&printed.stdout).expect("UTF-8"),
    );

    // Mirrored once, then followed by a gateway.
    let mirror = standard_mirror();
    let upstream = mirror.root().to_str().expect("UTF-8").to_string();
    let repos_s = repos.to_str().expect("UTF-8").to_string();
    let pubd = t.data("publisher");
    let o = pubd.run(&mirror_args(
        &upstream,
        &[
            "--once",
            "--aur-package",
            "demo",
            "--aur-repos",
            &repos_s,
            "--aur-allow-address",
            "127.0.0.1",
        ],
    ));
    assert_eq!(o.status.code(), Some(0), "mirror --once: {}", stderr(&o));
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    let key = pubd.ok_text(&["key", "show"]).trim().to_string();
    let publisher = Server::serve(&pubd, &[]);
    publisher.wait_for_snapshot(1);
    let fold = t.data("follower");
    let follower = Server::serve(
        &fold,
        &["--follow", &publisher.base(), "--publisher-key", &key],
    );
    follower.wait_for_snapshot(1);
    let agent = fold.run(&["aur-conf", "--gateway", &follower.base()]);
    assert!(agent.status.success(), "aur-conf: {}", stderr(&agent));
    let with_agent = t.path("makepkg-agent.conf");
    let mut text = std::fs::read_to_string(&conf).expect("conf");
    text.push_str(&String::from_utf8(agent.stdout).expect("UTF-8"));
    std::fs::write(&with_agent, text).expect("conf with the agent");
    let (verify, requests_now) = (["--verifysource", "--nodeps", "--noconfirm"], || {
        requests.load(std::sync::atomic::Ordering::SeqCst)
    });

    for (case, kill) in [
        ("other bytes at the same URL", false),
        ("the server stopped", true),
    ] {
        if kill {
            server.abort();
            let _ = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), server_gone(port)).await
            });
        } else {
            mode.store(OTHER_BYTES, std::sync::atomic::Ordering::SeqCst);
        }
        let before = requests_now();
        // Without the agent: makepkg downloads from the URL and fails.
        let plain = t.path(&format!("src-plain-{kill}"));
        open_dir(&plain);
        let o = makepkg(&build, &conf, &plain, &verify);
        assert!(
            !o.status.success(),
            "{case}: makepkg without the agent must fail: {o:?}"
        );
        // With it: the verified copy from the follower gateway, and makepkg's own checks pass.
        let cached = t.path(&format!("src-agent-{kill}"));
        open_dir(&cached);
        let o = makepkg(&build, &with_agent, &cached, &verify);
        assert!(
            o.status.success(),
            "{case}: makepkg --verifysource with the agent: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            std::fs::read(cached.join("demo-1.0.tar.gz")).expect("the source in SRCDEST"),
            tarball,
            "{case}"
        );
        let plain_requests = if kill { 0 } else { 1 };
        assert_eq!(
            requests_now() - before,
            plain_requests,
            "{case}: the agent made no request to the source server"
        );
    }
    // Without the agent but with SRCDEST filled beforehand by `aur-prefetch` (from the
    // package directory's .SRCINFO), makepkg finds the source and downloads nothing.
    let pre = t.path("src-prefetched");
    open_dir(&pre);
    std::fs::write(build.join(".SRCINFO"), &printed.stdout).expect(".SRCINFO");
    let o = fold.run(&[
        "aur-prefetch",
        build.to_str().expect("UTF-8"),
        "--srcdest",
        pre.to_str().expect("UTF-8"),
        "--gateway",
        &follower.base(),
    ]);
    assert!(o.status.success(), "aur-prefetch: {}", stderr(&o));
    let o = makepkg(&build, &conf, &pre, &verify);
    assert!(o.status.success(), "makepkg after aur-prefetch: {o:?}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("Found demo-1.0.tar.gz")
            || String::from_utf8_lossy(&o.stderr).contains("Found demo-1.0.tar.gz"),
        "makepkg used the prefetched file: {o:?}"
    );
    // And a whole build, the source server still dead, through the agent.
    let full = t.path("src-full");
    open_dir(&full);
    let o = makepkg(
        &build,
        &with_agent,
        &full,
        &["--nodeps", "--noconfirm", "--force"],
    );
    assert!(
        o.status.success(),
        "a full makepkg with the agent: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let built: Vec<String> = std::fs::read_dir(&build)
        .expect("build dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("demo-1.0-1-any.pkg.tar"))
        .collect();
    assert_eq!(built.len(), 1, "one package built: {built:?}");
    // The agent takes http and https URLs only (nothing curl would read as an option).
    for (url, out) in [
        ("-K/etc/passwd", "x"),
        ("file:///etc/passwd", "x"),
        ("http://127.0.0.1:1/x", "-"),
    ] {
        let o = fold.run(&["dlagent", "--gateway", &follower.base(), "--", url, out]);
        assert_eq!(
            o.status.code(),
            Some(1),
            "dlagent {url} {out}: {}",
            stderr(&o)
        );
    }
    let o = fold.run(&[
        "aur-prefetch",
        "no-such-base",
        "--srcdest",
        pre.to_str().expect("UTF-8"),
        "--gateway",
        &follower.base(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a base the snapshot lacks: {}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("aur/no-such-base: not in the gateway's snapshot"),
        "{}",
        stderr(&o)
    );
}

/// Waits until nothing accepts connections on `port` any more.
async fn server_gone(port: u16) {
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
