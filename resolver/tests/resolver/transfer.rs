//! A follower's transfers against block sources that misbehave: a source that stalls (the
//! transfer hedges around it), one that corrupts blocks (dropped, the file still arrives
//! intact), one that has nothing (the fallback mirror is used, and its file is checked
//! against the SHA-256), and two clients asking at once (one transfer).
//!
//! The sources are trustless-gateway servers written here, on 127.0.0.1, serving blocks of
//! a file imported into a real embedded store: the faults (a stall, flipped bytes) are
//! what a real gateway cannot be made to do.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cidmirror_resolver::follow::sources::Sources;
use cidmirror_resolver::follow::transfer::{Transfers, Want};
use cidmirror_store::{
    Cid, EmbeddedStore, Expected, FileSource, Profile, PutOptions, Sha256, Store, unixfs,
};
use futures::StreamExt;
use sha2::Digest;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Good,
    Stall,
    Corrupt,
    Empty,
}

struct Src {
    blocks: HashMap<String, Bytes>,
    mode: Mode,
    requests: AtomicU64,
}

async fn block(State(s): State<Arc<Src>>, Path(cid): Path<String>) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    match s.mode {
        Mode::Empty => StatusCode::NOT_FOUND.into_response(),
        Mode::Stall => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::NOT_FOUND.into_response()
        }
        Mode::Good | Mode::Corrupt => match s.blocks.get(&cid) {
            None => StatusCode::NOT_FOUND.into_response(),
            Some(b) => {
                let mut v = b.to_vec();
                // Roots stay intact (the transfer must get as far as the leaves).
                if s.mode == Mode::Corrupt && v.len() > 4096 {
                    v[100] ^= 0x55;
                }
                v.into_response()
            }
        },
    }
}

async fn serve(app: axum::Router) -> url::Url {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}/").parse().unwrap()
}

async fn source(blocks: &HashMap<String, Bytes>, mode: Mode) -> (url::Url, Arc<Src>) {
    let s = Arc::new(Src {
        blocks: blocks.clone(),
        mode,
        requests: AtomicU64::new(0),
    });
    let app = axum::Router::new()
        .route("/ipfs/{cid}", axum::routing::get(block))
        .with_state(s.clone());
    (serve(app).await, s)
}

/// A mirror serving `body` at every path.
async fn mirror(body: Vec<u8>) -> url::Url {
    let body = Bytes::from(body);
    let app = axum::Router::new().fallback(move || {
        let b = body.clone();
        async move { b }
    });
    serve(app).await
}

struct Fixture {
    leaves: u64,
    data: Vec<u8>,
    cid: Cid,
    sha256: Sha256,
    blocks: HashMap<String, Bytes>,
    _dir: tempfile::TempDir,
}

/// A 5.5 MiB file imported into a store: its bytes, CID and blocks (the root and at least
/// three leaves).
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("src")).unwrap();
    // No two chunks alike (a repeating pattern would make leaves share CIDs).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..(11u64 << 19))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
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
    let mut blocks = HashMap::new();
    let root = store.get_block(&f.cid).await.unwrap().unwrap();
    let (node, _) = unixfs::decode(&f.cid, &root).unwrap();
    for l in &node.links {
        let b = store.get_block(&l.cid).await.unwrap().unwrap();
        blocks.insert(l.cid.to_string(), b);
    }
    assert!(blocks.len() >= 3, "the fixture has {} leaves", blocks.len());
    let leaves = blocks.len() as u64;
    blocks.insert(f.cid.to_string(), root);
    Fixture {
        leaves,
        sha256: Sha256(sha2::Sha256::digest(&data).into()),
        data,
        cid: f.cid,
        blocks,
        _dir: dir,
    }
}

struct Follower {
    store: EmbeddedStore,
    transfers: Arc<Transfers>,
    _dir: tempfile::TempDir,
}

fn follower(sources: &[url::Url], fallbacks: Vec<url::Url>) -> Follower {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("store")).unwrap();
    let mut s = Sources::new(sources, reqwest::Client::new());
    s.block_timeout = Duration::from_secs(30);
    let transfers = Arc::new(Transfers::new(
        store.clone(),
        s,
        fallbacks,
        dir.path().join("tmp"),
        Box::new(|_, _| {}),
    ));
    Follower {
        store,
        transfers,
        _dir: dir,
    }
}

fn want(fx: &Fixture) -> Want {
    Want {
        cid: fx.cid,
        expected: Some(Expected {
            size: fx.data.len() as u64,
            sha256: fx.sha256,
        }),
        path: "core/os/x86_64/big-1-1-any.pkg.tar.zst".into(),
        params: Profile::UnixfsV1_2025.params(),
    }
}

/// Reads a transfer's whole body: the bytes, and the error that ended it early, if any.
async fn read(f: &Follower, w: Want) -> (Vec<u8>, Option<String>) {
    let t = f.transfers.get(w).unwrap();
    let size = t.size().await.unwrap();
    let mut s = Box::pin(t.stream(0..size));
    let mut out = Vec::new();
    let res = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(c) = s.next().await {
            match c {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return Some(e.to_string()),
            }
        }
        None
    })
    .await
    .expect("the transfer ends within 30 s");
    (out, res)
}

/// Waits until the store holds `cid` whole (the transfer imports after the last byte).
async fn wait_kept(store: &EmbeddedStore, cid: &Cid) -> bool {
    for _ in 0..200 {
        if store.whole_file(cid).unwrap().is_some() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

#[tokio::test]
async fn a_stalling_source_is_hedged_around() {
    let fx = fixture().await;
    let (stall, stall_src) = source(&fx.blocks, Mode::Stall).await;
    let (good, good_src) = source(&fx.blocks, Mode::Good).await;
    // The stalling source comes first: it is dealt half the leaves and never answers.
    let f = follower(&[stall, good], Vec::new());
    let (bytes, err) = read(&f, want(&fx)).await;
    assert_eq!(err, None);
    assert!(bytes == fx.data, "the file arrives intact");
    assert!(
        stall_src.requests.load(Ordering::SeqCst) >= 1,
        "the stalling source was asked"
    );
    // Every leaf came from the good source (plus the root).
    assert!(good_src.requests.load(Ordering::SeqCst) > fx.leaves);
    assert!(wait_kept(&f.store, &fx.cid).await, "the file is kept");
}

#[tokio::test]
async fn a_corrupting_source_is_dropped_and_the_file_arrives_intact() {
    let fx = fixture().await;
    let (bad, bad_src) = source(&fx.blocks, Mode::Corrupt).await;
    let (good, _) = source(&fx.blocks, Mode::Good).await;
    let f = follower(&[bad.clone(), good], Vec::new());
    let (bytes, err) = read(&f, want(&fx)).await;
    assert_eq!(err, None);
    assert!(bytes == fx.data, "the file arrives intact");
    let stats = &f.transfers.stats;
    assert_eq!(
        stats.sources_dropped.load(Ordering::Relaxed),
        1,
        "dropped once"
    );
    let report = f.transfers.sources().all()[0].report();
    assert_eq!(report.url, bad.to_string());
    assert!(report.blocks_corrupt >= 1, "{report:?}");
    assert!(
        report.blocks_ok <= 1,
        "no leaf of the bad source was used (the root may be): {report:?}"
    );
    // Dropped at its first corrupt leaf: its other workers stop after their block.
    assert!(
        bad_src.requests.load(Ordering::SeqCst) <= 5,
        "asked {} times",
        bad_src.requests.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn two_clients_share_one_transfer() {
    let fx = fixture().await;
    let (good, good_src) = source(&fx.blocks, Mode::Good).await;
    let f = follower(&[good], Vec::new());
    let (a, b) = tokio::join!(read(&f, want(&fx)), read(&f, want(&fx)));
    assert!(a.0 == fx.data && b.0 == fx.data);
    assert_eq!(f.transfers.stats.started.load(Ordering::Relaxed), 1);
    assert_eq!(f.transfers.stats.shared.load(Ordering::Relaxed), 1);
    assert_eq!(
        good_src.requests.load(Ordering::SeqCst),
        fx.leaves + 1,
        "each block once"
    );
}

#[tokio::test]
async fn a_fallback_mirror_with_the_wrong_file_is_cut_and_not_kept() {
    let fx = fixture().await;
    let (empty, _) = source(&fx.blocks, Mode::Empty).await;
    let mut wrong = fx.data.clone();
    let last = wrong.len() - 1;
    wrong[last] ^= 1;
    let m = mirror(wrong).await;
    let f = follower(&[empty], vec![m]);
    let (bytes, err) = read(&f, want(&fx)).await;
    let err = err.expect("the body ends with an error");
    assert!(err.contains("SHA-256"), "{err}");
    assert!(
        bytes.len() < fx.data.len(),
        "never completed: {} of {} bytes",
        bytes.len(),
        fx.data.len()
    );
    assert!(
        bytes[..] == fx.data[..bytes.len()],
        "what went out was right"
    );
    assert_eq!(
        f.transfers.stats.fallback_rejected.load(Ordering::Relaxed),
        1
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(f.store.whole_file(&fx.cid).unwrap().is_none(), "not kept");
}

#[tokio::test]
async fn a_good_fallback_mirror_fills_in_when_no_source_has_the_blocks() {
    let fx = fixture().await;
    let (empty, _) = source(&fx.blocks, Mode::Empty).await;
    let m = mirror(fx.data.clone()).await;
    let f = follower(&[empty], vec![m]);
    let (bytes, err) = read(&f, want(&fx)).await;
    assert_eq!(err, None);
    assert!(bytes == fx.data);
    assert_eq!(
        f.transfers.stats.fallback_bytes.load(Ordering::Relaxed),
        fx.data.len() as u64
    );
    assert!(wait_kept(&f.store, &fx.cid).await, "kept under its CID");
}
