//! AUR package bases in the publisher's snapshots: real git repositories made by the test,
//! sources served over HTTP on 127.0.0.1, the digests computed by coreutils' own tools.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::get;
use cidmirror_ingest::config::{MirrorConfig, MirrorOptions};
use cidmirror_ingest::publish::{NoProgress, Outcome, Publisher};
use cidmirror_store::{EmbeddedStore, unixfs};

use crate::publish::cat;
use crate::support::fixture::standard_mirror;
use crate::support::git::{commit_srcinfo, digest};

fn srcinfo(port: u16, sha256: &str, b2: &str) -> String {
    format!(
        "pkgbase = demo\n\tpkgver = 1.0\n\tpkgrel = 1\n\tarch = x86_64\n\
         \tsource = demo-1.0.tar.gz::http://127.0.0.1:{port}/download/v1.0\n\
         \tsource = http://127.0.0.1:{port}/notes.txt\n\
         \tsource = git+https://example.org/demo.git\n\
         \tsha256sums = {sha256}\n\tsha256sums = SKIP\n\tsha256sums = SKIP\n\
         \tb2sums = {b2}\n\tb2sums = SKIP\n\tb2sums = SKIP\n\
         \tsource_x86_64 = demo-x86_64.bin::http://127.0.0.1:{port}/arch.bin\n\
         \tsha256sums_x86_64 = {ARCH_SHA256}\n\
         \npkgname = demo\n"
    )
}

/// The bytes of the x86_64-only source, and their SHA-256 (`printf ... | sha256sum`).
const ARCH_BYTES: &[u8] = b"an x86_64-only helper binary";
const ARCH_SHA256: &str = "10cc65ae60c5a72b0e16dc9948aaa2f9cd901f1a3387ae5bd6bbe3fdabcf68c3";

#[tokio::test]
async fn aur_bases_are_published_with_their_verified_sources_and_kept_when_a_new_one_fails() {
    let tarball = b"demo release tarball\n".repeat(3000);
    let served = Arc::new(std::sync::Mutex::new(tarball.clone()));
    let requests = Arc::new(AtomicUsize::new(0));
    let (s2, r2) = (Arc::clone(&served), Arc::clone(&requests));
    let router = Router::new()
        .route(
            "/download/v1.0",
            get(move || {
                r2.fetch_add(1, Ordering::SeqCst);
                let body = s2.lock().unwrap().clone();
                async move { body }
            }),
        )
        .route("/notes.txt", get(|| async { "not cached: SKIP" }))
        .route("/arch.bin", get(|| async { ARCH_BYTES }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await });

    let repos = tempfile::tempdir().unwrap();
    let sha256 = digest("sha256sum", &tarball);
    let b2 = digest("b2sum", &tarball);
    commit_srcinfo(&repos.path().join("demo"), &srcinfo(port, &sha256, &b2));

    let mirror = standard_mirror();
    let data = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&data.path().join("store")).unwrap();
    let opts = MirrorOptions::from_config(MirrorConfig {
        upstream: Some(mirror.root().display().to_string()),
        repos: vec!["core".into(), "extra".into()],
        aur_packages: vec!["demo".into()],
        aur_repos: Some(repos.path().display().to_string()),
        aur_allow_addresses: vec!["127.0.0.1".into()],
        ..Default::default()
    })
    .unwrap();
    let publisher = Publisher::open(
        data.path(),
        Arc::new(store.clone()),
        opts,
        Arc::new(NoProgress),
    )
    .unwrap();

    let first = match publisher.sync_once().await.unwrap() {
        Outcome::Published(p) => p,
        other => panic!("expected a publish, got {other:?}"),
    };
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);
    let root = first.root;
    assert_eq!(
        cat(&store, &root, "aur/demo/.SRCINFO").await,
        srcinfo(port, &sha256, &b2).into_bytes(),
        ".SRCINFO verbatim"
    );
    assert_eq!(
        cat(&store, &root, "aur/demo/demo-1.0.tar.gz").await,
        tarball
    );
    let sha512 = digest("sha512sum", &tarball);
    for path in [
        format!("by-sha256/{}/{sha256}", &sha256[..2]),
        format!("by-sha512/{}/{sha512}", &sha512[..2]),
        format!("by-b2/{}/{b2}", &b2[..2]),
    ] {
        assert_eq!(cat(&store, &root, &path).await, tarball, "{path}");
    }
    // Only what a checksum checks is cached: not the SKIP source, not the git one.
    let dir = unixfs::resolve(&store, &root, "aur/demo").await.unwrap();
    let names: Vec<String> = unixfs::list(&store, &dir)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, [".SRCINFO", "demo-1.0.tar.gz", "demo-x86_64.bin"]);
    assert_eq!(
        cat(&store, &root, "aur/demo/demo-x86_64.bin").await,
        ARCH_BYTES
    );
    assert_eq!(digest("sha256sum", ARCH_BYTES), ARCH_SHA256);
    let manifest: serde_json::Value =
        serde_json::from_slice(&cat(&store, &root, "manifest.json").await).unwrap();
    assert_eq!(
        (manifest["format"].as_u64(), manifest["aur_bases"].as_u64()),
        (Some(2), Some(1))
    );
    let changes = String::from_utf8(cat(&store, &root, "changes.jsonl").await).unwrap();
    let aur_line: serde_json::Value = changes
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["kind"] == "aur")
        .expect("an aur line");
    assert_eq!(aur_line["op"], "add");
    assert_eq!(aur_line["sources"][0]["sha512"], sha512.as_str());
    let index = cat(&store, &root, "index/aur/demo/sources.json").await;
    let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
    assert_eq!(
        index["sources"][0]["url"],
        format!("http://127.0.0.1:{port}/download/v1.0")
    );
    assert_eq!(requests.load(Ordering::SeqCst), 1);

    // Nothing moved: unchanged, and not one source request.
    match publisher.sync_once().await.unwrap() {
        Outcome::Unchanged { .. } => {}
        other => panic!("expected unchanged, got {other:?}"),
    }
    assert_eq!(
        requests.load(Ordering::SeqCst),
        1,
        "an unmoved head costs no source request"
    );

    // A new version whose tarball fails one of its two sums: refused, the published
    // version stays (the snapshot does not change), nothing else is fetched twice.
    *served.lock().unwrap() = b"the same URL, other bytes".to_vec();
    let bumped = srcinfo(port, &sha256, &b2)
        .replace("pkgrel = 1", "pkgrel = 2")
        .replace(
            &format!("sha256sums = {sha256}"),
            &format!(
                "sha256sums = {}",
                digest("sha256sum", b"the same URL, other bytes")
            ),
        );
    commit_srcinfo(&repos.path().join("demo"), &bumped);
    match publisher.sync_once().await.unwrap() {
        Outcome::Unchanged { seq, .. } => assert_eq!(seq, Some(first.seq)),
        other => panic!("expected the published version to stay, got {other:?}"),
    }
    assert_eq!(publisher.current().unwrap().unwrap().root, root);
    assert_eq!(requests.load(Ordering::SeqCst), 2);
    // `status` and /metrics read what failed, and what the snapshot does not cache (the
    // SKIP source and the git one), from the publisher's records.
    let db = cidmirror_ingest::publish::open_state(data.path()).unwrap();
    let failed = db
        .read(|c| {
            cidmirror_schema::publisher::settings::get(
                c,
                cidmirror_schema::publisher::aur::FAILED_KEY,
            )
        })
        .unwrap()
        .unwrap_or_default();
    assert!(
        failed.starts_with("aur/demo: ")
            && failed.contains(&format!(
                "b2: expected {b2}, got {}",
                digest("b2sum", b"the same URL, other bytes")
            ))
            && failed.contains("the published version stays"),
        "{failed}"
    );
    let seq = first.seq;
    let counts = db
        .read(|c| cidmirror_schema::publisher::aur::counts(c, seq))
        .unwrap();
    assert_eq!(counts, (1, 2, (tarball.len() + ARCH_BYTES.len()) as u64, 2));
}
