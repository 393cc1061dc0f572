//! The publisher end to end against real mirrors (makepkg + repo-add) served over HTTP on
//! 127.0.0.1 or read from a directory: snapshots, their reuse of unchanged blocks,
//! determinism, every upstream fault, retention.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cidmirror_ingest::config::{MirrorConfig, MirrorOptions, ShrinkGate};
use cidmirror_ingest::keys::verify_snapshot;
use cidmirror_ingest::pacman::{self, RepoName};
use cidmirror_ingest::publish::{NoProgress, Outcome, Published, Publisher};
use cidmirror_schema::publisher::Snapshot;
use cidmirror_store::importer::{self, NullSink};
use cidmirror_store::unixfs;
use cidmirror_store::{Cid, EmbeddedStore, Profile, Store};
use futures::StreamExt;

use crate::support::fixture::{self, Mirror, change_standard_mirror, standard_mirror};
use crate::support::server::{Fault, TestUpstream};

struct Env {
    data: tempfile::TempDir,
    store: EmbeddedStore,
    publisher: Publisher,
}

fn options(upstream: &str, keep: u32) -> MirrorOptions {
    let mut o = MirrorOptions::from_config(MirrorConfig {
        upstream: Some(upstream.to_string()),
        repos: vec!["core".into(), "extra".into()],
        keep_snapshots: Some(keep),
        concurrency: Some(3),
        ..Default::default()
    })
    .unwrap();
    o.fetch.stall_timeout = Duration::from_millis(500);
    o.fetch.retries = 2;
    o.fetch.backoff = Duration::from_millis(20);
    o
}

fn env(upstream: &str) -> Env {
    env_with(upstream, 10)
}

fn env_with(upstream: &str, keep: u32) -> Env {
    env_opts(upstream, keep, |_| {})
}

fn env_opts(upstream: &str, keep: u32, change: impl FnOnce(&mut MirrorOptions)) -> Env {
    let data = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&data.path().join("store")).unwrap();
    let mut opts = options(upstream, keep);
    change(&mut opts);
    let publisher = Publisher::open(
        data.path(),
        Arc::new(store.clone()),
        opts,
        Arc::new(NoProgress),
    )
    .unwrap();
    Env {
        data,
        store,
        publisher,
    }
}

async fn published(e: &Env) -> Published {
    match e.publisher.sync_once().await.unwrap() {
        Outcome::Published(p) => p,
        other => panic!("expected a publish, got {other:?}"),
    }
}

async fn failed(e: &Env) -> Vec<String> {
    match e.publisher.sync_once().await.unwrap() {
        Outcome::Failed { problems } => problems,
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// The bytes of `path` under `root`.
pub async fn cat(store: &EmbeddedStore, root: &Cid, path: &str) -> Vec<u8> {
    let cid = unixfs::resolve(store, root, path)
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let (_, mut s) = store.read(&cid, None).await.unwrap();
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.unwrap());
    }
    out
}

async fn names(store: &EmbeddedStore, root: &Cid, path: &str) -> BTreeMap<String, Cid> {
    let dir = unixfs::resolve(store, root, path).await.unwrap();
    unixfs::list(store, &dir)
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.name, l.cid))
        .collect()
}

/// Every block of the DAG under `root`.
async fn dag(store: &EmbeddedStore, root: &Cid) -> HashSet<Cid> {
    let mut seen = HashSet::new();
    let mut todo = vec![*root];
    while let Some(c) = todo.pop() {
        if !seen.insert(c) {
            continue;
        }
        let b = store.get_block(&c).await.unwrap().expect("block held");
        todo.extend(unixfs::links_of(&c, &b).unwrap());
    }
    seen
}

fn cid_of(bytes: &[u8]) -> Cid {
    importer::import(bytes, &Profile::UnixfsV1_2025.params(), &mut NullSink)
        .unwrap()
        .cid
}

fn current(e: &Env) -> Option<Snapshot> {
    e.publisher.current().unwrap()
}

fn descs(mirror: &Mirror, repo: &str) -> BTreeMap<String, Vec<u8>> {
    let db = std::fs::read(mirror.repo_dir(repo, "x86_64").join(format!("{repo}.db"))).unwrap();
    let repo_name: RepoName = repo.parse().unwrap();
    pacman::parse_db(&repo_name, "db", &db)
        .unwrap()
        .packages
        .into_iter()
        .map(|p| (p.name.clone(), p.desc.raw().to_vec()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_holds_exactly_the_upstream_files_and_their_index() {
    let mirror = standard_mirror();
    let up = TestUpstream::start(mirror.root()).await;
    let e = env(&up.url);
    let p = published(&e).await;
    assert_eq!((p.seq, p.packages), (1, 5));
    let root = p.root;
    for repo in ["core", "extra"] {
        // Every upstream file, under both names where repo-add made a symlink, byte-exact;
        // nothing else.
        let want = mirror.files(repo);
        let got = names(&e.store, &root, &format!("{repo}/os/x86_64")).await;
        assert_eq!(
            got.keys().collect::<BTreeSet<_>>(),
            want.keys().collect::<BTreeSet<_>>(),
            "{repo}/os/x86_64 lists exactly the upstream directory"
        );
        for (name, bytes) in &want {
            assert_eq!(
                &cat(&e.store, &root, &format!("{repo}/os/x86_64/{name}")).await,
                bytes,
                "{repo}/{name}"
            );
        }
        for (name, desc) in descs(&mirror, repo) {
            assert_eq!(
                cat(&e.store, &root, &format!("index/{repo}/x86_64/{name}")).await,
                desc,
                "index/{repo}/{name} is the desc entry verbatim"
            );
        }
    }
    for b in &fixture::packages().built {
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b.bytes()));
        let path = format!("by-sha256/{}/{sha}", &sha[..2]);
        let present = unixfs::resolve(&e.store, &root, &path).await.is_ok();
        let listed = b.pkgver != "2.0" && !["zeta", "omega"].contains(&b.name.as_str());
        assert_eq!(present, listed, "{path} ({} {})", b.name, b.pkgver);
        if present {
            assert_eq!(cat(&e.store, &root, &path).await, b.bytes());
        }
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&cat(&e.store, &root, "manifest.json").await).unwrap();
    assert_eq!(manifest["upstream"], up.url.as_str());
    assert_eq!(manifest["lastupdate"], "1700000000");
    assert_eq!(manifest["profile"], "unixfs-v1-2025");
    assert_eq!(manifest["previous"], serde_json::Value::Null);
    assert_eq!(manifest["repos"][0]["repo"], "core");
    assert_eq!(manifest["repos"][0]["packages"], 3);
    assert_eq!(manifest["repos"][0]["signed"], true);
    assert_eq!(manifest["repos"][1]["signed"], false);
    let changes = cat(&e.store, &root, "changes.jsonl").await;
    let ops: Vec<serde_json::Value> = changes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(ops.len(), 5 + 4, "5 packages and 2 x (db + files) archives");
    assert!(ops.iter().all(|o| o["op"] == "add"));
    assert_eq!(manifest["changes"], cid_of(&changes).to_string());
    // Signed, pinned, current.
    let snap = current(&e).unwrap();
    assert_eq!(snap.root, root);
    assert!(verify_snapshot(&e.publisher.public_key(), 1, &root, None, &snap.signature).unwrap());
    assert!(
        e.store
            .pins()
            .await
            .unwrap()
            .iter()
            .any(|p| p.cid == root && p.reason.as_str() == "snapshot:1")
    );
    // The same state again is nothing new.
    assert!(matches!(
        e.publisher.sync_once().await.unwrap(),
        Outcome::Unchanged { seq: Some(1), .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_fetches_only_new_files_and_reuses_every_unchanged_block() {
    let mirror = standard_mirror();
    let up = TestUpstream::start(mirror.root()).await;
    let e = env(&up.url);
    let first = published(&e).await;
    let before = up.requests().len();
    change_standard_mirror(&mirror);
    let second = published(&e).await;
    assert_eq!(second.seq, 2);

    // Requests: only for the two new packages and their signatures (beta's is asked for and
    // is absent), and for the signature of the one unsigned package already published
    // (delta: upstream may have signed it since); nothing for signed, published packages.
    let pkg_gets: BTreeSet<String> = up.requests()[before..]
        .iter()
        .filter(|r| r.path.contains(".pkg.tar"))
        .map(|r| r.path.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(
        pkg_gets,
        BTreeSet::from([
            "beta-2.0-1-x86_64.pkg.tar.zst".to_string(),
            "beta-2.0-1-x86_64.pkg.tar.zst.sig".to_string(),
            "delta-1.0-1-x86_64.pkg.tar.zst.sig".to_string(),
            "zeta-1.0-1-x86_64.pkg.tar.zst".to_string(),
            "zeta-1.0-1-x86_64.pkg.tar.zst.sig".to_string(),
        ])
    );
    assert_eq!(second.fetched_files, 2);

    // The unchanged repository is the same subtree; index/ changed only where packages did.
    for path in ["extra", "index/extra"] {
        assert_eq!(
            unixfs::resolve(&e.store, &first.root, path).await.unwrap(),
            unixfs::resolve(&e.store, &second.root, path).await.unwrap(),
            "{path} reused"
        );
    }
    let (a, b) = (
        names(&e.store, &first.root, "index/core/x86_64").await,
        names(&e.store, &second.root, "index/core/x86_64").await,
    );
    let differing: BTreeSet<&str> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .map(String::as_str)
        .collect();
    assert_eq!(differing, BTreeSet::from(["beta", "gamma", "zeta"]));

    // New blocks: only those on the path to a change. Everything else is shared.
    let (d1, d2) = (
        dag(&e.store, &first.root).await,
        dag(&e.store, &second.root).await,
    );
    let new: Vec<&Cid> = d2.difference(&d1).collect();
    let mut new_bytes = 0u64;
    for c in &new {
        new_bytes += e.store.get_block(c).await.unwrap().unwrap().len() as u64;
    }
    let changed_files: u64 = [
        "beta-2.0-1-x86_64.pkg.tar.zst",
        "zeta-1.0-1-x86_64.pkg.tar.zst",
    ]
    .iter()
    .map(|f| {
        std::fs::metadata(mirror.repo_dir("core", "x86_64").join(f))
            .unwrap()
            .len()
    })
    .sum();
    let core_dbs: u64 = mirror
        .files("core")
        .iter()
        .filter(|(n, _)| n.starts_with("core.") && !n.ends_with(".sig") && n.contains(".tar"))
        .map(|(_, b)| b.len() as u64)
        .sum();
    assert!(
        new_bytes < changed_files + core_dbs + 64 * 1024,
        "{} new blocks, {new_bytes} bytes, for {changed_files} bytes of new packages and {core_dbs} of databases",
        new.len()
    );
    let changes: Vec<serde_json::Value> = cat(&e.store, &second.root, "changes.jsonl")
        .await
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let summary: BTreeSet<(String, String)> = changes
        .iter()
        .map(|c| {
            (
                c["op"].as_str().unwrap().into(),
                c["filename"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        BTreeSet::from([
            ("remove".into(), "beta-1.0-1-x86_64.pkg.tar.zst".into()),
            ("remove".into(), "gamma-1.0-1-x86_64.pkg.tar.zst".into()),
            ("add".into(), "beta-2.0-1-x86_64.pkg.tar.zst".into()),
            ("add".into(), "zeta-1.0-1-x86_64.pkg.tar.zst".into()),
            ("change".into(), "core.db.tar.gz".into()),
            ("change".into(), "core.files.tar.gz".into()),
        ])
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&cat(&e.store, &second.root, "manifest.json").await).unwrap();
    assert_eq!(manifest["previous"], first.root.to_string());
    let snap = current(&e).unwrap();
    assert!(
        verify_snapshot(
            &e.publisher.public_key(),
            2,
            &second.root,
            Some(&first.root),
            &snap.signature
        )
        .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_fresh_publishers_of_one_upstream_state_agree_on_the_root() {
    let mirror = standard_mirror();
    let up = TestUpstream::start(mirror.root()).await;
    let (a, b) = (env(&up.url), env(&up.url));
    let (ra, rb) = (published(&a).await.root, published(&b).await.root);
    assert_eq!(ra, rb);
    assert_ne!(a.publisher.public_key(), b.publisher.public_key());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_directory_is_an_upstream_too() {
    let mirror = standard_mirror();
    let e = env(mirror.root().to_str().unwrap());
    let p = published(&e).await;
    for (name, bytes) in mirror.files("core") {
        assert_eq!(
            cat(&e.store, &p.root, &format!("core/os/x86_64/{name}")).await,
            bytes
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&cat(&e.store, &p.root, "manifest.json").await).unwrap();
    assert!(
        manifest["upstream"]
            .as_str()
            .unwrap()
            .starts_with("file:///")
    );
    change_standard_mirror(&mirror);
    assert_eq!(published(&e).await.fetched_files, 2);
}

const ZETA: &str = "core/os/x86_64/zeta-1.0-1-x86_64.pkg.tar.zst";

/// A FIFO where a local upstream should have a package fails the sync, naming the file,
/// instead of hanging it (issue 12, defect 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_in_a_local_upstream_fails_the_sync_naming_it() {
    let mirror = standard_mirror();
    let e = env(mirror.root().to_str().unwrap());
    let first = published(&e).await.root;
    change_standard_mirror(&mirror);
    let zeta = mirror.root().join(ZETA);
    std::fs::remove_file(&zeta).unwrap();
    let fifo = crate::upstream::Fifo::make(zeta);
    let problems = tokio::time::timeout(Duration::from_secs(60), failed(&e))
        .await
        .expect("the sync ends");
    assert_problem(&problems, &[ZETA, "a FIFO", "not a regular file"]);
    assert_eq!(current(&e).unwrap().root, first);
    drop(fifo);
}

/// Publishes the first state, changes the mirror, and arms `fault` on the new package.
async fn faulty(fault: Fault) -> (Mirror, TestUpstream, Env, Cid) {
    let mirror = standard_mirror();
    let up = TestUpstream::start(mirror.root()).await;
    let e = env(&up.url);
    let first = published(&e).await.root;
    change_standard_mirror(&mirror);
    up.set_fault(ZETA, fault);
    (mirror, up, e, first)
}

/// After a failed sync: the previous snapshot is current, nothing of the new package is
/// kept, and the next good sync publishes.
async fn recovers(mirror: &Mirror, up: &TestUpstream, e: &Env, first: Cid) {
    let cur = current(e).unwrap();
    assert_eq!(
        (cur.seq, cur.root),
        (1, first),
        "the previous snapshot stays current"
    );
    let zeta = std::fs::read(
        mirror
            .repo_dir("core", "x86_64")
            .join("zeta-1.0-1-x86_64.pkg.tar.zst"),
    )
    .unwrap();
    assert!(
        !e.store.has(&cid_of(&zeta)).await.unwrap(),
        "nothing kept of the bad file"
    );
    assert!(
        e.store.verify(true, false).unwrap().problems.is_empty(),
        "the store is consistent"
    );
    up.clear_faults();
    let p = published(e).await;
    assert_eq!(p.seq, 2);
    assert_eq!(
        cat(&e.store, &p.root, ZETA).await,
        zeta,
        "the next good sync publishes the real file"
    );
}

fn assert_problem(problems: &[String], needles: &[&str]) {
    assert!(
        problems
            .iter()
            .any(|p| needles.iter().all(|n| p.contains(n))),
        "no problem mentions all of {needles:?}: {problems:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_a_flipped_byte_is_caught_by_its_hash() {
    let (mirror, up, e, first) = faulty(Fault::FlipByte(1000)).await;
    let problems = failed(&e).await;
    let zeta = std::fs::read(
        mirror
            .repo_dir("core", "x86_64")
            .join("zeta-1.0-1-x86_64.pkg.tar.zst"),
    )
    .unwrap();
    let mut flipped = zeta.clone();
    flipped[1000] ^= 0xff;
    let (good, bad) = (
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&zeta)),
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&flipped)),
    );
    assert_problem(&problems, &["core", "zeta-1.0-1", &good, &bad]);
    let kept = e.store.path().join("files").join(&bad[..2]).join(&bad);
    assert!(
        !kept.exists(),
        "the corrupt bytes are not kept under any name"
    );
    recovers(&mirror, &up, &e, first).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_a_truncated_package() {
    let (mirror, up, e, first) = faulty(Fault::Truncate(1500)).await;
    let problems = failed(&e).await;
    assert_problem(&problems, &["core", "zeta-1.0-1"]);
    recovers(&mirror, &up, &e, first).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_one_byte_too_long() {
    let (mirror, up, e, first) = faulty(Fault::ExtraBytes(vec![0])).await;
    let problems = failed(&e).await;
    assert_problem(&problems, &["core", "zeta-1.0-1"]);
    recovers(&mirror, &up, &e, first).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_404_and_500_on_a_package() {
    for (status, needle) in [(404u16, "not found"), (500, "500")] {
        let (mirror, up, e, first) = faulty(Fault::Status(status)).await;
        let problems = failed(&e).await;
        assert_problem(&problems, &["zeta-1.0-1", needle]);
        recovers(&mirror, &up, &e, first).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_a_server_that_stalls_mid_body() {
    let (mirror, up, e, first) = faulty(Fault::StallAfter(1000)).await;
    let started = std::time::Instant::now();
    let problems = failed(&e).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the stall is detected"
    );
    assert_problem(&problems, &["zeta-1.0-1", "stalled"]);
    recovers(&mirror, &up, &e, first).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_without_content_length_is_fine() {
    let (_mirror, up, e, _first) = faulty(Fault::NoContentLength).await;
    up.set_fault(
        "core/os/x86_64/beta-2.0-1-x86_64.pkg.tar.zst",
        Fault::NoContentLength,
    );
    assert_eq!(published(&e).await.seq, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lastupdate_changing_during_a_sync_restarts_it_on_the_new_state() {
    let mirror = standard_mirror();
    let up = TestUpstream::start(mirror.root()).await;
    let e = env(&up.url);
    published(&e).await;
    change_standard_mirror(&mirror);
    // While the sync fetches zeta, upstream moves on: beta goes back, lastupdate bumps.
    let root = mirror.root().to_path_buf();
    up.on_request(
        ZETA,
        1,
        Box::new(move || {
            std::fs::write(root.join("lastupdate"), b"1700007200\n").unwrap();
        }),
    );
    let p = published(&e).await;
    let manifest: serde_json::Value =
        serde_json::from_slice(&cat(&e.store, &p.root, "manifest.json").await).unwrap();
    assert_eq!(
        manifest["lastupdate"], "1700007200",
        "published the state it ended on"
    );
    assert!(
        up.requests_for("lastupdate").len() >= 4,
        "read before and after, twice: {:?}",
        up.requests_for("lastupdate")
    );
}

fn tar_gz(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut t = tar::Builder::new(Vec::new());
    for (path, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, path, *data).unwrap();
    }
    let tar = t.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    gz.finish().unwrap()
}

/// Replaces core's database (and the symlinked name) with `db`.
fn replace_core_db(mirror: &Mirror, db: &[u8]) {
    let dir = mirror.repo_dir("core", "x86_64");
    std::fs::write(dir.join("core.db.tar.gz"), db).unwrap();
    let _ = std::fs::remove_file(dir.join("core.db.tar.gz.sig"));
    let _ = std::fs::remove_file(dir.join("core.db.sig"));
    mirror.set_lastupdate(1_700_009_999);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_a_database_entry_that_points_outside_its_directory() {
    let mirror = standard_mirror();
    let up = TestUpstream::start(mirror.root()).await;
    let e = env(&up.url);
    let first = published(&e).await.root;
    let desc = b"%FILENAME%\n../../etc/passwd\n\n%NAME%\nevil\n\n%VERSION%\n1-1\n\n%CSIZE%\n10\n\n\
%SHA256SUM%\n0000000000000000000000000000000000000000000000000000000000000000\n\n";
    replace_core_db(&mirror, &tar_gz(&[("evil-1-1/desc", desc)]));
    let problems = failed(&e).await;
    assert_problem(&problems, &["core", "evil-1-1", "%FILENAME%"]);
    assert!(
        !up.requests().iter().any(|r| r.path.contains("passwd")),
        "nothing was fetched for it"
    );
    assert_eq!(current(&e).unwrap().root, first);
    // A good database again, and it publishes.
    change_standard_mirror(&mirror);
    assert_eq!(published(&e).await.seq, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_a_database_that_is_not_an_archive() {
    let mirror = standard_mirror();
    let up = TestUpstream::start(mirror.root()).await;
    let e = env(&up.url);
    let first = published(&e).await.root;
    replace_core_db(&mirror, b"<html><body>502 Bad Gateway</body></html>");
    let problems = failed(&e).await;
    assert_problem(&problems, &["core", "core.db", "not a pacman database"]);
    assert_eq!(current(&e).unwrap().root, first);
    change_standard_mirror(&mirror);
    assert_eq!(published(&e).await.seq, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_snapshots_are_unpinned_and_files_that_left_upstream_keep_a_grace_pin() {
    let mirror = standard_mirror();
    let up = TestUpstream::start(mirror.root()).await;
    // core goes from 3 packages to 2 below: a shrink the sanity gate would hold.
    let e = env_opts(&up.url, 2, |o| o.gate.max_shrink = 0.5);
    let s1 = published(&e).await;
    let gamma = cid_of(
        &std::fs::read(
            mirror
                .repo_dir("core", "x86_64")
                .join("gamma-1.0-1-x86_64.pkg.tar.zst"),
        )
        .unwrap(),
    );
    change_standard_mirror(&mirror);
    let s2 = published(&e).await;
    mirror.set_repo("core", &[("alpha", "1.0"), ("beta", "2.0")], true);
    mirror.set_lastupdate(1_700_010_000);
    let s3 = published(&e).await;
    let pins = e.store.pins().await.unwrap();
    let reasons: BTreeSet<(String, Cid)> = pins
        .iter()
        .filter(|p| p.reason.as_str().starts_with("snapshot:"))
        .map(|p| (p.reason.to_string(), p.cid))
        .collect();
    assert_eq!(
        reasons,
        BTreeSet::from([
            ("snapshot:2".to_string(), s2.root),
            ("snapshot:3".to_string(), s3.root)
        ]),
        "the newest 2 snapshots stay pinned"
    );
    let grace = pins
        .iter()
        .find(|p| p.cid == gamma && p.reason.as_str() == "left-upstream")
        .expect("gamma left upstream and keeps a grace pin");
    let left = grace
        .expires_at
        .expect("with an expiry")
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(left > Duration::from_secs(13 * 86_400) && left <= Duration::from_secs(14 * 86_400));
    assert!(
        !pins.iter().any(|p| p.reason.as_str() == "sync-in-progress"),
        "no session pin outlives a publish"
    );
    // Collecting now keeps what the snapshots and grace pins hold.
    e.store
        .gc(cidmirror_store::GcOptions {
            grace: Duration::ZERO,
        })
        .await
        .unwrap();
    assert!(e.store.has(&gamma).await.unwrap());
    assert_eq!(unixfs::missing_blocks(&e.store, &s3.root).await.unwrap(), 0);
    assert!(
        unixfs::missing_blocks(&e.store, &s1.root).await.unwrap() > 0,
        "snapshot 1's own listing is gone"
    );
}

#[tokio::test]
async fn a_publisher_refuses_to_change_its_profile() {
    let mirror = standard_mirror();
    let e = env(mirror.root().to_str().unwrap());
    drop(e.publisher);
    let mut o = options(mirror.root().to_str().unwrap(), 10);
    o.profile = Profile::UnixfsV0_2015;
    let err = Publisher::open(
        e.data.path(),
        Arc::new(e.store.clone()),
        o,
        Arc::new(NoProgress),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("unixfs-v1-2025") && err.contains("every CID"),
        "{err}"
    );
}

/// Keeps `Bytes` and `Path` in use for helpers above that some builds do not need.
#[allow(dead_code)]
fn _unused(_: Bytes, _: &Path) {}

#[tokio::test]
async fn one_publisher_per_data_directory() {
    let mirror = standard_mirror();
    let e = env(mirror.root().to_str().unwrap());
    let second = Publisher::open(
        e.data.path(),
        Arc::new(e.store.clone()),
        options(mirror.root().to_str().unwrap(), 10),
        Arc::new(NoProgress),
    );
    let err = second.err().unwrap().to_string();
    assert!(err.contains("another cidmirror mirror is running"), "{err}");
    drop(e.publisher);
    // Once the first is gone, a new one may start.
    Publisher::open(
        e.data.path(),
        Arc::new(e.store.clone()),
        options(mirror.root().to_str().unwrap(), 10),
        Arc::new(NoProgress),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_new_costs_one_request() {
    let mirror = standard_mirror();
    let up = TestUpstream::start(mirror.root()).await;
    let e = env(&up.url);
    published(&e).await;
    let before = up.requests().len();
    assert!(matches!(
        e.publisher.sync_once().await.unwrap(),
        Outcome::Unchanged { seq: Some(1), .. }
    ));
    let paths: Vec<String> = up.requests()[before..]
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        paths,
        ["lastupdate"],
        "no database is fetched to find nothing new"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_files_database_from_another_state_is_refused() {
    let mirror = standard_mirror();
    let up = TestUpstream::start(mirror.root()).await;
    let e = env(&up.url);
    let first = published(&e).await.root;
    // core.files from the first state, core.db from the second: a half-updated upstream.
    let old_files =
        std::fs::read(mirror.repo_dir("core", "x86_64").join("core.files.tar.gz")).unwrap();
    change_standard_mirror(&mirror);
    std::fs::write(
        mirror.repo_dir("core", "x86_64").join("core.files.tar.gz"),
        old_files,
    )
    .unwrap();
    let problems = failed(&e).await;
    assert_problem(
        &problems,
        &["core", "core.files", "different upstream states"],
    );
    assert_eq!(current(&e).unwrap().root, first);
}

/// The `.files` archive is checked as it streams into the store (never held whole): a
/// truncated one, or an error page in its place, fails the sync naming it, and the
/// previous snapshot stays current.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_or_foreign_files_database_is_refused_naming_it() {
    let mirror = standard_mirror();
    let up = TestUpstream::start(mirror.root()).await;
    let e = env(&up.url);
    let first = published(&e).await.root;
    change_standard_mirror(&mirror);
    let path = mirror.repo_dir("core", "x86_64").join("core.files.tar.gz");
    let whole = std::fs::read(&path).unwrap();
    let cases: [(&str, Vec<u8>, &str); 2] = [
        (
            "truncated",
            whole[..whole.len() / 2].to_vec(),
            "reading the archive",
        ),
        (
            "an HTML page",
            b"<html><body>502 Bad Gateway</body></html>".to_vec(),
            "not a pacman database",
        ),
    ];
    for (what, bytes, why) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let problems = failed(&e).await;
        assert_problem(&problems, &["core", "core.files", why]);
        assert_eq!(current(&e).unwrap().root, first, "{what}");
    }
    std::fs::write(&path, &whole).unwrap();
    assert_eq!(published(&e).await.seq, 2, "the good archive publishes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_named_like_a_database_is_refused_before_any_download() {
    let mirror = standard_mirror();
    let up = TestUpstream::start(mirror.root()).await;
    let e = env(&up.url);
    let first = published(&e).await.root;
    let dir = mirror.repo_dir("core", "x86_64");
    for f in [
        "core.files",
        "core.files.tar.gz",
        "core.files.tar.gz.sig",
        "core.files.sig",
    ] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let desc = b"%FILENAME%\ncore.db.sig\n\n%NAME%\nsly\n\n%VERSION%\n1-1\n\n%CSIZE%\n10\n\n\
%SHA256SUM%\n0000000000000000000000000000000000000000000000000000000000000000\n\n";
    replace_core_db(&mirror, &tar_gz(&[("sly-1-1/desc", desc)]));
    let before = up.requests().len();
    let problems = failed(&e).await;
    assert_problem(
        &problems,
        &[
            "core/x86_64",
            "sly-1-1",
            "%FILENAME%",
            "repository database",
        ],
    );
    // core.db.sig is asked for once, as the database's signature; the package of that name
    // is never downloaded.
    let gets = up.requests()[before..]
        .iter()
        .filter(|r| r.method == "GET" && r.path == "core/os/x86_64/core.db.sig")
        .count();
    assert_eq!(gets, 1, "refused before any package download");
    assert_eq!(current(&e).unwrap().root, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lastupdate_that_disappears_is_a_failure_not_a_new_state() {
    let mirror = standard_mirror();
    let up = TestUpstream::start(mirror.root()).await;
    let e = env(&up.url);
    let first = published(&e).await.root;
    std::fs::remove_file(mirror.root().join("lastupdate")).unwrap();
    let problems = failed(&e).await;
    assert_problem(&problems, &["lastupdate", "missing"]);
    assert_eq!(current(&e).unwrap().root, first);
    mirror.set_lastupdate(1_700_000_000);
    assert!(matches!(
        e.publisher.sync_once().await.unwrap(),
        Outcome::Unchanged { .. }
    ));
}

/// An upstream that never had `lastupdate`: its state is the hash of its databases, the
/// same on every sync while they do not change (nothing new), another once one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_without_lastupdate_is_followed_by_its_databases() {
    let mirror = standard_mirror();
    std::fs::remove_file(mirror.root().join("lastupdate")).unwrap();
    let up = TestUpstream::start(mirror.root()).await;
    let e = env(&up.url);
    let first = published(&e).await;
    let state = current(&e).unwrap().state;
    assert!(state.starts_with("sha256:"), "{state}");
    assert!(matches!(
        e.publisher.sync_once().await.unwrap(),
        Outcome::Unchanged { seq: Some(1), .. }
    ));
    change_standard_mirror(&mirror);
    std::fs::remove_file(mirror.root().join("lastupdate")).unwrap();
    let second = published(&e).await;
    assert_ne!(second.root, first.root);
    let now = current(&e).unwrap();
    assert_eq!(now.seq, 2);
    assert!(
        now.state.starts_with("sha256:") && now.state != state,
        "{}",
        now.state
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_skipped_by_a_crash_is_caught_up_by_the_next_sync() {
    let mirror = standard_mirror();
    let up = TestUpstream::start(mirror.root()).await;
    let e = env(&up.url);
    published(&e).await;
    change_standard_mirror(&mirror);
    published(&e).await;
    let gamma = cid_of(&fixture::packages().get("gamma", "1.0").bytes());
    let left: cidmirror_store::PinReason = "left-upstream".parse().unwrap();
    let has_grace =
        |pins: &[cidmirror_store::Pin]| pins.iter().any(|p| p.cid == gamma && p.reason == left);
    assert!(has_grace(&e.store.pins().await.unwrap()));
    // As if the process died between publishing snapshot 2 and its retention step.
    assert!(e.store.unpin_all(&left).await.unwrap() > 0);
    let state = cidmirror_ingest::publish::open_state(e.data.path()).unwrap();
    state
        .write(|tx| cidmirror_schema::publisher::settings::set(tx, "retained_through", "1"))
        .unwrap();
    assert!(!has_grace(&e.store.pins().await.unwrap()));
    assert!(matches!(
        e.publisher.sync_once().await.unwrap(),
        Outcome::Unchanged { .. }
    ));
    assert!(has_grace(&e.store.pins().await.unwrap()), "caught up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_added_upstream_later_is_picked_up() {
    let mirror = standard_mirror();
    let up = TestUpstream::start(mirror.root()).await;
    let e = env(&up.url);
    let first = published(&e).await;
    let sig_rel = "extra/os/x86_64/delta-1.0-1-x86_64.pkg.tar.zst.sig";
    assert!(
        unixfs::resolve(&e.store, &first.root, sig_rel)
            .await
            .is_err()
    );
    std::fs::write(
        mirror.root().join(sig_rel),
        b"a detached signature, added later",
    )
    .unwrap();
    mirror.set_lastupdate(1_700_000_100);
    let second = published(&e).await;
    assert_eq!(
        cat(&e.store, &second.root, sig_rel).await,
        b"a detached signature, added later"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_files_that_vanished_from_the_store_are_fetched_again() {
    let mirror = standard_mirror();
    let up = TestUpstream::start(mirror.root()).await;
    let e = env(&up.url);
    published(&e).await;
    // Everything unpinned and collected: the publisher's import records now point at nothing.
    for p in e.store.pins().await.unwrap() {
        e.store.unpin(&p.cid, &p.reason).await.unwrap();
    }
    e.store
        .gc(cidmirror_store::GcOptions {
            grace: Duration::ZERO,
        })
        .await
        .unwrap();
    mirror.set_lastupdate(1_700_000_200);
    let p = published(&e).await;
    assert_eq!(p.fetched_files, 5, "every package fetched again");
    assert_eq!(unixfs::missing_blocks(&e.store, &p.root).await.unwrap(), 0);
}

/// DESIGN.md "Refresh": a follower holding snapshot N-1 rebuilds snapshot N from its copy of
/// the listing, N's `changes.jsonl` and N's manifest alone, and gets N's root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_jsonl_is_enough_to_rebuild_the_next_listing() {
    use cidmirror_store::dir::{DirEntry, Tree};
    let mirror = standard_mirror();
    let up = TestUpstream::start(mirror.root()).await;
    let e = env(&up.url);
    let first = published(&e).await;
    change_standard_mirror(&mirror);
    let second = published(&e).await;

    // The follower's copy of snapshot 1: every leaf entry by path.
    let mut entries: BTreeMap<String, DirEntry> = BTreeMap::new();
    let mut todo = vec![String::new()];
    while let Some(path) = todo.pop() {
        let dir = unixfs::resolve(&e.store, &first.root, &path).await.unwrap();
        for l in unixfs::list(&e.store, &dir).await.unwrap() {
            let p = if path.is_empty() {
                l.name.clone()
            } else {
                format!("{path}/{}", l.name)
            };
            let st = unixfs::stat(&e.store, &l.cid).await.unwrap();
            if st.kind.is_dir() {
                todo.push(p);
            } else if p != "manifest.json" && p != "changes.jsonl" {
                entries.insert(
                    p,
                    DirEntry {
                        cid: l.cid,
                        tsize: l.tsize,
                    },
                );
            }
        }
    }
    // What it fetches of snapshot 2: the manifest and the changes.
    let manifest = cat(&e.store, &second.root, "manifest.json").await;
    let changes = cat(&e.store, &second.root, "changes.jsonl").await;
    let parse = |s: &serde_json::Value| s.as_str().unwrap().parse::<Cid>().unwrap();
    let lines: Vec<serde_json::Value> = changes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    for op in ["remove", "change", "add"] {
        for c in lines.iter().filter(|c| c["op"] == op) {
            let dir = format!(
                "{}/os/{}",
                c["repo"].as_str().unwrap(),
                c["arch"].as_str().unwrap()
            );
            let mut names = vec![c["filename"].as_str().unwrap().to_string()];
            if let Some(a) = c["alias"].as_str() {
                names.push(a.to_string());
            }
            let sha = c["sha256"].as_str().unwrap();
            let by_sha = format!("by-sha256/{}/{sha}", &sha[..2]);
            let index = c["name"].as_str().map(|n| {
                format!(
                    "index/{}/{}/{n}",
                    c["repo"].as_str().unwrap(),
                    c["arch"].as_str().unwrap()
                )
            });
            for n in &names {
                entries.remove(&format!("{dir}/{n}"));
                entries.remove(&format!("{dir}/{n}.sig"));
            }
            if op == "remove" {
                entries.remove(&by_sha);
                if let Some(i) = &index {
                    entries.remove(i);
                }
                continue;
            }
            let file = DirEntry {
                cid: parse(&c["cid"]),
                tsize: c["tsize"].as_u64().unwrap(),
            };
            for n in &names {
                entries.insert(format!("{dir}/{n}"), file);
                if !c["sig_cid"].is_null() {
                    entries.insert(
                        format!("{dir}/{n}.sig"),
                        DirEntry {
                            cid: parse(&c["sig_cid"]),
                            tsize: c["sig_tsize"].as_u64().unwrap(),
                        },
                    );
                }
            }
            if let Some(i) = index {
                entries.insert(
                    i,
                    DirEntry {
                        cid: parse(&c["desc_cid"]),
                        tsize: c["desc_tsize"].as_u64().unwrap(),
                    },
                );
                entries.insert(by_sha, file);
            }
        }
    }
    let params = Profile::UnixfsV1_2025.params();
    let mut tree = Tree::new();
    for (path, entry) in &entries {
        tree.insert(path, *entry).unwrap();
    }
    for (name, bytes) in [("manifest.json", &manifest), ("changes.jsonl", &changes)] {
        let f = importer::import(&bytes[..], &params, &mut NullSink).unwrap();
        tree.insert(
            name,
            DirEntry {
                cid: f.cid,
                tsize: f.tsize,
            },
        )
        .unwrap();
    }
    let rebuilt = tree.build(&params, &mut NullSink).unwrap();
    assert_eq!(
        rebuilt.cid, second.root,
        "the follower's rebuild gives the signed root"
    );
}

/// Every published entry has the size and the hash its database gives, whatever the store
/// held before: a `%CSIZE%` that is not the size of a file already imported under its
/// `%SHA256SUM%` is refused, as it is on an empty data directory (issue 12, defect 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_csize_is_refused_for_a_file_already_in_the_store() {
    let mirror = standard_mirror();
    let up = TestUpstream::start(mirror.root()).await;
    let e = env(&up.url);
    let first = published(&e).await.root;
    let dir = mirror.repo_dir("core", "x86_64");
    let repo: RepoName = "core".parse().unwrap();
    let db = std::fs::read(dir.join("core.db")).unwrap();
    let entries = pacman::parse_db(&repo, "core.db", &db).unwrap().packages;
    for f in [
        "core.files",
        "core.files.tar.gz",
        "core.files.tar.gz.sig",
        "core.files.sig",
    ] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let real = fixture::packages().get("alpha", "1.0").bytes().len();
    for wrong in [100u64, 1_000_000_000_000_000_000] {
        let descs: Vec<(String, Vec<u8>)> = entries
            .iter()
            .map(|p| {
                let mut desc = String::from_utf8(p.desc.raw().to_vec()).unwrap();
                if p.name == "alpha" {
                    let field = format!("%CSIZE%\n{}\n", p.csize);
                    assert!(desc.contains(&field), "{desc}");
                    desc = desc.replace(&field, &format!("%CSIZE%\n{wrong}\n"));
                }
                (format!("{}/desc", p.entry), desc.into_bytes())
            })
            .collect();
        let members: Vec<(&str, &[u8])> = descs
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        replace_core_db(&mirror, &tar_gz(&members));
        let before = up.requests().len();
        let problems = failed(&e).await;
        assert_problem(
            &problems,
            &[
                "core/x86_64",
                "alpha-1.0-1",
                "%CSIZE%",
                &format!("says {wrong} bytes"),
                &format!("has {real} bytes"),
            ],
        );
        assert_eq!(current(&e).unwrap().root, first, "nothing published");
        assert!(
            !up.requests()[before..]
                .iter()
                .any(|r| r.path.ends_with("alpha-1.0-1-x86_64.pkg.tar.zst")),
            "refused without a download"
        );
        // The same upstream on an empty data directory is refused too.
        let fresh = env(&up.url);
        let problems = failed(&fresh).await;
        assert_problem(&problems, &["core", "alpha-1.0-1"]);
        assert!(current(&fresh).is_none());
    }
}

/// `lastupdate` goes into the signed manifest and onto terminals: only the decimal Unix time
/// Arch writes is taken; anything else (escape sequences, NUL, invalid UTF-8, signs, spaces,
/// more than one line, too long) fails the sync, naming the file, with its content quoted
/// escaped (issue 12, defect 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lastupdate_that_is_not_a_unix_time_is_refused_naming_the_file() {
    let mirror = standard_mirror();
    let up = TestUpstream::start(mirror.root()).await;
    let e = env(&up.url);
    let first = published(&e).await.root;
    change_standard_mirror(&mirror);
    let path = mirror.root().join("lastupdate");
    let long = [b'1'; 64];
    let longer = [b'1'; 65];
    for bad in [
        &b"\x1b[2J\x1b]0;owned\x07\n"[..],
        b"1700000000\0",
        b"17000\xff\xfe\n",
        b"",
        b"\n",
        b"-1\n",
        b"+1700000000\n",
        b" 1700000000\n",
        b"1700000000 \n",
        b"1700000000\r\n",
        b"1700000000\n\n",
        b"1700000000\n1700000001\n",
        b"1e9\n",
        b"99999999999999999999\n",
        &long,
        &longer,
    ] {
        std::fs::write(&path, bad).unwrap();
        let err = e.publisher.sync_once().await.unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(&format!("{}lastupdate", up.url)),
            "{bad:?}: {message}"
        );
        assert!(
            !message.chars().any(char::is_control),
            "{bad:?}: quoted escaped: {message:?}"
        );
        assert_eq!(
            current(&e).unwrap().root,
            first,
            "{bad:?}: nothing published"
        );
    }
    // What Arch writes, with its newline or without.
    for (good, seq) in [(&b"1700003600"[..], 2), (b"1700003601\n", 3)] {
        std::fs::write(&path, good).unwrap();
        let p = published(&e).await;
        assert_eq!(p.seq, seq);
        let manifest: serde_json::Value =
            serde_json::from_slice(&cat(&e.store, &p.root, "manifest.json").await).unwrap();
        assert_eq!(
            manifest["lastupdate"],
            std::str::from_utf8(good).unwrap().trim_end()
        );
    }
}

/// A publisher on `data` (reopened: the previous one must be dropped) with this gate.
fn publisher_with_gate(
    data: &Path,
    store: &EmbeddedStore,
    upstream: &str,
    gate: ShrinkGate,
) -> Publisher {
    let mut o = options(upstream, 10);
    o.gate = gate;
    Publisher::open(data, Arc::new(store.clone()), o, Arc::new(NoProgress)).unwrap()
}

async fn held(p: &Publisher) -> (Vec<String>, u64, u64) {
    match p.sync_once().await.unwrap() {
        Outcome::Held {
            reasons,
            syncs,
            needed,
        } => (reasons, syncs, needed),
        other => panic!("expected the gate to hold, got {other:?}"),
    }
}

fn held_row(data: &Path) -> Option<cidmirror_schema::publisher::Held> {
    let db = cidmirror_ingest::publish::open_state(data).unwrap();
    db.read(cidmirror_schema::publisher::held::get).unwrap()
}

fn last_sync(data: &Path) -> cidmirror_schema::publisher::Sync {
    let db = cidmirror_ingest::publish::open_state(data).unwrap();
    db.read(|c| cidmirror_schema::publisher::syncs::recent(c, 1))
        .unwrap()
        .remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_that_loses_too_many_packages_is_held_until_the_shrink_persists() {
    let mirror = standard_mirror();
    let up = mirror.root().to_str().unwrap().to_string();
    let data = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&data.path().join("store")).unwrap();
    let gate = ShrinkGate {
        confirm_syncs: 3,
        ..ShrinkGate::default()
    };
    let p = publisher_with_gate(data.path(), &store, &up, gate);
    let first = match p.sync_once().await.unwrap() {
        Outcome::Published(p) => p,
        other => panic!("{other:?}"),
    };

    // core loses two of its three packages: 66.7% > 25%.
    mirror.set_repo("core", &[("alpha", "1.0")], true);
    mirror.set_lastupdate(1_700_003_600);
    for n in 1..=2 {
        let (reasons, syncs, needed) = held(&p).await;
        assert_eq!((syncs, needed), (n, 3));
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(
            reasons[0].contains("core/x86_64")
                && reasons[0].contains("from 3 packages to 1")
                && reasons[0].contains("66.7%"),
            "{reasons:?}"
        );
        assert_eq!(
            p.current().unwrap().unwrap().root,
            first.root,
            "nothing published"
        );
        let s = last_sync(data.path());
        assert_eq!(s.outcome, "held");
        assert!(
            s.detail.as_deref().unwrap().contains("--accept-shrink"),
            "{s:?}"
        );
        let h = held_row(data.path()).unwrap();
        assert_eq!(h.syncs, n);
        assert!(h.reasons.contains("core/x86_64"), "{h:?}");
    }
    // The third sync that sees it publishes it, and says so.
    let third = match p.sync_once().await.unwrap() {
        Outcome::Published(p) => p,
        other => panic!("{other:?}"),
    };
    assert_eq!(third.seq, 2);
    assert_eq!(third.packages, 3, "alpha + delta, epsilon");
    assert!(
        third.detail.contains("3 consecutive syncs") && third.detail.contains("core/x86_64"),
        "{}",
        third.detail
    );
    assert_eq!(held_row(data.path()), None);
    // Shrinking by a quarter or less is not held: extra 2 -> 2, core 1 -> 1 plus one.
    mirror.set_repo("core", &[("alpha", "1.0"), ("zeta", "1.0")], true);
    mirror.set_lastupdate(1_700_007_200);
    assert!(matches!(
        p.sync_once().await.unwrap(),
        Outcome::Published(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_repository_is_held_until_the_operator_accepts_it_once() {
    let mirror = standard_mirror();
    let up = mirror.root().to_str().unwrap().to_string();
    let data = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&data.path().join("store")).unwrap();
    // Even with every shrink allowed, a repository that empties is held.
    let lenient = ShrinkGate {
        max_shrink: 1.0,
        ..ShrinkGate::default()
    };
    let p = publisher_with_gate(data.path(), &store, &up, lenient);
    let first = match p.sync_once().await.unwrap() {
        Outcome::Published(p) => p,
        other => panic!("{other:?}"),
    };

    // What a mirror caught mid-rsync can look like: extra's database with no entries.
    mirror.empty_repo("extra");
    mirror.set_lastupdate(1_700_003_600);
    let (reasons, syncs, _) = held(&p).await;
    assert_eq!(syncs, 1);
    assert!(
        reasons.len() == 1 && reasons[0].contains("extra/x86_64") && reasons[0].contains("empties"),
        "{reasons:?}"
    );
    assert_eq!(p.current().unwrap().unwrap().root, first.root);

    // Back to the published state before it persisted: nothing is held any more.
    mirror.set_repo("extra", &[("delta", "1.0"), ("epsilon", "1.0")], false);
    mirror.set_lastupdate(1_700_000_000);
    assert!(matches!(
        p.sync_once().await.unwrap(),
        Outcome::Unchanged { seq: Some(1), .. }
    ));
    assert_eq!(held_row(data.path()), None);

    // It empties again; the operator confirms (`mirror --accept-shrink`): published at once,
    // and the confirmation covers that one sync, not the shrinks after it.
    mirror.empty_repo("extra");
    mirror.set_lastupdate(1_700_007_200);
    drop(p);
    let p = publisher_with_gate(
        data.path(),
        &store,
        &up,
        ShrinkGate {
            accept: true,
            ..lenient
        },
    );
    let accepted = match p.sync_once().await.unwrap() {
        Outcome::Published(p) => p,
        other => panic!("{other:?}"),
    };
    assert_eq!(accepted.packages, 3, "core only");
    assert!(
        accepted.detail.contains("--accept-shrink"),
        "{}",
        accepted.detail
    );
    assert_eq!(held_row(data.path()), None);
    // A run started with the confirmation whose first sync sees no shrink does not keep it
    // for a later one.
    drop(p);
    let p = publisher_with_gate(
        data.path(),
        &store,
        &up,
        ShrinkGate {
            accept: true,
            ..lenient
        },
    );
    assert!(matches!(
        p.sync_once().await.unwrap(),
        Outcome::Unchanged { .. }
    ));
    mirror.set_repo("core", &[("alpha", "1.0")], true);
    mirror.empty_repo("core");
    mirror.set_lastupdate(1_700_010_800);
    let (reasons, syncs, _) = held(&p).await;
    assert!(
        syncs == 1 && reasons[0].contains("core/x86_64"),
        "{reasons:?}"
    );
}
