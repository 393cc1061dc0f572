//! `cidmirror serve` with real pacman: a signed repository (makepkg, gpg, repo-add) behind
//! the Rust test upstream, published by `cidmirror mirror`, served by `cidmirror serve` (a
//! separate process on the same data directory, as in production), and used by a private
//! pacman that requires package signatures. Then the upstream moves on, the publisher
//! publishes again, and `pacman -Syu` upgrades through the gateway.

use std::path::Path;

use crate::mirror::fixture::{self, Mirror};
use crate::mirror::server::TestUpstream;
use crate::pacman_client::{Pacman, export_key};
use crate::serve_support::{Server, request};
use crate::support::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn mirror_once(d: &DataDir, upstream: &str) -> String {
    let o = d.run(&[
        "mirror",
        "--upstream",
        upstream,
        "--repo",
        "core",
        "--repo",
        "extra",
        "--once",
        "--no-progress",
    ]);
    assert_eq!(o.status.code(), Some(0), "mirror --once: {}", stderr(&o));
    stdout(&o)
}

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
