//! Requests to the gateway, from anyone: the whole router of `cidmirror serve` (mirror
//! paths, `/ipfs/<cid>/<path>` with its formats and CAR parameters, `/by-hash`,
//! `/api/v1/resolve`, `/api/v1/delta`, the volunteer tracker) over an embedded store that
//! holds a snapshot, a HAMT directory and a multi-level file. Every request gets an
//! answer; none panics a handler or names a path outside the store.
//!
//! Input: `METHOD TARGET`, header lines (`name: value`), an empty line, the body.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use cidmirror_fuzz::{block_on, fixtures};
use cidmirror_resolver::snapshot::{Current, Snapshots};
use cidmirror_resolver::tracker::TrackerConfig;
use cidmirror_resolver::{AppState, router};
use cidmirror_store::{Block, EmbeddedStore, Store};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

/// Body bytes read from an answer at most (the largest file here is 5000 bytes; a listing
/// or CAR of everything is a few KiB).
const MAX_BODY: usize = 1 << 20;

fn app() -> &'static Router {
    static APP: OnceLock<Router> = OnceLock::new();
    APP.get_or_init(|| {
        // Under $TMPDIR (bench/fuzz.sh points it into its work directory); kept for the
        // life of the process.
        let dir = tempfile::tempdir().expect("a temporary directory").keep();
        let store = EmbeddedStore::open(&dir).expect("open the embedded store");
        let content = fixtures::gateway_content();
        let blocks = content
            .blocks()
            .into_iter()
            .map(|(cid, data)| Block {
                cid,
                data: data.into(),
            })
            .collect();
        block_on(store.put_blocks(blocks)).expect("store the fixture");
        let snapshots = Snapshots::manual();
        snapshots.set(Current {
            seq: 1,
            root: content.snapshot.root(),
            previous: None,
            published_at: SystemTime::UNIX_EPOCH,
            signature: vec![0; 64],
            follow: None,
        });
        // No rate limits (every input comes from one address), and 127.0.0.0/8 a trusted
        // proxy, so that `X-Forwarded-For` is read.
        let tracker = TrackerConfig {
            announces_per_minute: 0,
            lists_per_minute: 0,
            trusted_proxies: vec!["127.0.0.0/8".parse().expect("a network")],
            ..TrackerConfig::default()
        };
        router(AppState::publisher(store, snapshots, tracker))
    })
}

/// The request the input describes, if it is one `http` can represent.
fn request(data: &[u8]) -> Option<Request<Body>> {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split('\n');
    let first = lines.next()?;
    let (method, target) = first.split_once(' ').unwrap_or(("GET", first));
    let mut b = Request::builder().method(method).uri(target);
    for line in lines {
        let (k, v) = line.split_once(':')?;
        b = b.header(k.trim(), v.trim_start());
    }
    let mut req = b.body(Body::from(body.to_vec())).ok()?;
    let peer: SocketAddr = ([127, 0, 0, 1], 40000).into();
    req.extensions_mut().insert(ConnectInfo(peer));
    Some(req)
}

fuzz_target!(|data: &[u8]| {
    let Some(req) = request(data) else { return };
    // The feed is a stream that stays open for the next snapshot: no answer to wait for.
    if req.uri().path().starts_with("/feed") {
        return;
    }
    let app = app().clone();
    block_on(async {
        let resp = app.oneshot(req).await.expect("the router is infallible");
        let status = resp.status();
        assert!(
            status != StatusCode::INTERNAL_SERVER_ERROR,
            "a request from outside is never our fault"
        );
        let limited = http_body_util::Limited::new(resp.into_body(), MAX_BODY);
        let _ = limited.collect().await;
    });
});
