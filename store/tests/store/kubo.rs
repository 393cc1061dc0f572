//! The kubo store against real Kubo (the version in `scripts/go-peers/versions`).

use std::time::Duration;

use cidmirror_store::{Error, FileSource, KuboStore, PinReason, Profile, PutOptions, Store};

use crate::support::kubo::Kubo;
use crate::support::{drain, pseudo_random};

async fn rpc(node: &Kubo, path: &str) -> (u16, String) {
    // A plain HTTP client, independent of the store's own, to look at the node.
    let url = format!("{}/api/v0/{path}", node.api);
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-m", "20", "-X", "POST", "-w", "\n%{http_code}", &url])
        .output()
        .await
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (code.parse().expect("status"), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubo_store_passes_the_conformance_suite_on_a_real_node() {
    let node = Kubo::start();
    let dir = tempfile::tempdir().unwrap();
    let store = KuboStore::connect(&node.api, dir.path()).await.unwrap();
    crate::conformance::run(&store).await;

    // Pins by reason are one pin on the node, as deep as the deepest reason.
    let data = pseudo_random("kubo-pins", 700_000);
    let f = store
        .put_file(
            FileSource::Reader(Box::new(std::io::Cursor::new(data.clone()))),
            PutOptions {
                params: Profile::UnixfsV1_2025.params(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let deep: PinReason = "snapshot:1".parse().unwrap();
    let shallow = PinReason::direct("follow:1");
    store.pin(&f.cid, &shallow, None).await.unwrap();
    let (_, ls) = rpc(&node, &format!("pin/ls?arg={}", f.cid)).await;
    assert!(ls.contains("direct"), "{ls}");
    store.pin(&f.cid, &deep, None).await.unwrap();
    let (_, ls) = rpc(&node, &format!("pin/ls?arg={}", f.cid)).await;
    assert!(ls.contains("recursive"), "{ls}");
    assert!(store.unpin(&f.cid, &deep).await.unwrap());
    let (_, ls) = rpc(&node, &format!("pin/ls?arg={}", f.cid)).await;
    assert!(ls.contains("direct") && !ls.contains("recursive"), "{ls}");
    // A directories-only pin has no form on a node: refused, nothing recorded.
    let dirs = PinReason::dirs("follow:1");
    let e = store.pin(&f.cid, &dirs, None).await.unwrap_err();
    assert!(e.to_string().contains("dirs:follow:1"), "{e}");
    assert!(store.pins().await.unwrap().iter().all(|p| p.reason != dirs));
    assert_eq!(store.unpin_all(&shallow).await.unwrap(), 1);
    let (code, ls) = rpc(&node, &format!("pin/ls?arg={}", f.cid)).await;
    assert!(
        code != 200 || !ls.contains(&f.cid.to_string()),
        "{code} {ls}"
    );

    // The file reads back through the node's own gateway.
    let url = format!("{}/ipfs/{}", node.gateway, f.cid);
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-f", "-m", "20", &url])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "gateway GET {url}");
    assert_eq!(out.stdout, data, "gateway bytes");
    let (_, s) = store.read(&f.cid, None).await.unwrap();
    assert_eq!(drain(s).await, data);
}

#[tokio::test]
async fn a_node_that_is_not_there_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let api = format!("http://127.0.0.1:{port}");
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        KuboStore::connect(&api, dir.path()),
    )
    .await
    .expect("bounded")
    .err()
    .expect("no node there");
    assert!(matches!(err, Error::Kubo { .. }), "{err}");
    assert!(err.to_string().contains(&api), "{err}");
    let bad = KuboStore::connect("ftp://x", dir.path())
        .await
        .err()
        .unwrap();
    assert!(bad.to_string().contains("http://HOST:PORT"), "{bad}");
}

/// The recursive pins on the node (`pin/ls --type=recursive`), as CID strings, but for
/// the empty directory that a new Kubo repository pins for itself.
async fn recursive_pins(node: &Kubo) -> Vec<String> {
    let (code, body) = rpc(node, "pin/ls?type=recursive").await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("pin/ls JSON");
    let empty_dir = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn";
    v["Keys"]
        .as_object()
        .map(|k| k.keys().filter(|c| *c != empty_dir).cloned().collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_files_put_side_by_side_share_one_import_and_one_pin_per_batch() {
    let node = Kubo::start();
    let dir = tempfile::tempdir().unwrap();
    let store = KuboStore::connect(&node.api, dir.path()).await.unwrap();
    let session: PinReason = "sync-in-progress".parse().unwrap();
    let files: Vec<Vec<u8>> = (0..40)
        .map(|i| pseudo_random(&format!("batch-{i}"), 3_000 + i * 5_000))
        .collect();
    let put = crate::support::put_side_by_side(&store, &files, &session, None).await;

    // Every file is pinned when its put returns: the node holds each DAG under a pin.
    let pins = recursive_pins(&node).await;
    assert!(
        !pins.is_empty() && pins.len() < files.len(),
        "40 files side by side take fewer pins than files: {}",
        pins.len()
    );
    for (f, data) in put.iter().zip(&files) {
        let (code, body) = rpc(&node, &format!("pin/ls?arg={}", f.cid)).await;
        assert_eq!(code, 200, "{} is pinned: {body}", f.cid);
        assert!(
            body.contains("recursive") || body.contains("indirect"),
            "{} is held by a recursive pin: {body}",
            f.cid
        );
        let (_, s) = store.read(&f.cid, None).await.unwrap();
        assert_eq!(drain(s).await, *data);
    }
    // The ledger still has one pin per file, for its reason.
    let ledger = store.pins().await.unwrap();
    assert_eq!(ledger.len(), files.len());
    assert!(ledger.iter().all(|p| p.reason == session));

    // A file leaving its cover keeps the others held; the cover goes with its last file.
    let snapshot: PinReason = "snapshot:1".parse().unwrap();
    store.pin(&put[0].cid, &snapshot, None).await.unwrap();
    assert_eq!(store.unpin_all(&session).await.unwrap(), files.len() as u64);
    let left = recursive_pins(&node).await;
    assert_eq!(left.len(), 1, "one pin holds the snapshot's file: {left:?}");
    // Unpinned files go at the node's gc (after the store's grace for young writes).
    store
        .gc(cidmirror_store::GcOptions {
            grace: Duration::ZERO,
        })
        .await
        .unwrap();
    // Nothing the ledger does not pin is kept: a cover goes with the first file to leave it.
    for f in &put[1..] {
        assert!(!store.has(&f.cid).await.unwrap(), "{} collected", f.cid);
    }
    let (_, s) = store.read(&put[0].cid, None).await.unwrap();
    assert_eq!(drain(s).await, files[0], "the snapshot's file is whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cover_whose_pins_were_never_recorded_is_unpinned_by_gc() {
    let node = Kubo::start();
    let dir = tempfile::tempdir().unwrap();
    let store = KuboStore::connect(&node.api, dir.path()).await.unwrap();
    let session: PinReason = "sync-in-progress".parse().unwrap();
    let f = store
        .put_file(
            FileSource::Reader(Box::new(std::io::Cursor::new(pseudo_random("lost", 9_000)))),
            PutOptions {
                params: Profile::UnixfsV1_2025.params(),
                pin: Some(session.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(recursive_pins(&node).await.len(), 1, "the cover");

    // Files put side by side, their rows lost, then each put again on its own (a rerun)
    // before any gc: every old cover goes as its files move to new ones.
    let files: Vec<Vec<u8>> = (0..10)
        .map(|i| pseudo_random(&format!("rerun-{i}"), 4_000 + i * 100))
        .collect();
    let dir2 = tempfile::tempdir().unwrap();
    let other = KuboStore::connect(&node.api, dir2.path()).await.unwrap();
    let put = crate::support::put_side_by_side(&other, &files, &session, None).await;
    assert!(recursive_pins(&node).await.len() > 1);
    drop(other);
    let db = rusqlite::Connection::open(dir2.path().join("pins.sqlite")).unwrap();
    db.execute("DELETE FROM pins", []).unwrap();
    drop(db);
    let other = KuboStore::connect(&node.api, dir2.path()).await.unwrap();
    for (data, first) in files.iter().zip(&put) {
        let again =
            crate::support::put_side_by_side(&other, std::slice::from_ref(data), &session, None)
                .await;
        assert_eq!(again[0].cid, first.cid);
    }
    assert_eq!(other.unpin_all(&session).await.unwrap(), files.len() as u64);
    let left: Vec<String> = recursive_pins(&node).await;
    assert_eq!(
        left.len(),
        1,
        "only the first store's cover is left: {left:?}"
    );
    drop(other);
    // A crash between the node pinning the cover and the ledger recording the file's pin:
    // the ledger has the cover, no pin row.
    drop(store);
    let db = rusqlite::Connection::open(dir.path().join("pins.sqlite")).unwrap();
    assert_eq!(db.execute("DELETE FROM pins", []).unwrap(), 1);
    drop(db);
    let store = KuboStore::connect(&node.api, dir.path()).await.unwrap();
    store
        .gc(cidmirror_store::GcOptions {
            grace: Duration::ZERO,
        })
        .await
        .unwrap();
    assert!(recursive_pins(&node).await.is_empty(), "the cover is gone");
    assert!(!store.has(&f.cid).await.unwrap(), "and so are its blocks");
    for f in &put {
        assert!(!store.has(&f.cid).await.unwrap(), "{} collected", f.cid);
    }
}
