//! The cluster store against a real two-peer IPFS Cluster (`support/cluster.rs`), and, for
//! request shapes and failures on cue, against a stand-in for IPFS Cluster's REST API (an
//! axum server on a loopback port that records every request) with a real Kubo in place of
//! the cluster's proxy.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use cidmirror_store::hash::{HashAlg, raw_cid};
use cidmirror_store::{
    Cid, ClusterOptions, ClusterStore, Error, FileSource, GcOptions, PinReason, Profile,
    PutOptions, Store,
};

use crate::support::kubo::Kubo;
use crate::support::kubo::cluster::Cluster;
use crate::support::{drain, pseudo_random};

/// One request as the stand-in saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    auth: Option<String>,
}

impl Seen {
    fn q(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A failure to answer once: the first request with this method and path gets it.
struct Failure {
    method: &'static str,
    path: String,
    status: u16,
    body: String,
}

/// The stand-in's state: a one-peer cluster's pinset, and what it was asked.
#[derive(Default)]
struct Fake {
    seen: Mutex<Vec<Seen>>,
    fail: Mutex<Vec<Failure>>,
    /// CID -> mode, as the cluster would keep them.
    pins: Mutex<BTreeMap<String, String>>,
    /// When set, pins are also made on this IPFS node (`pin/add`, `pin/rm`), as a
    /// cluster peer's pin tracker would.
    ipfs: Mutex<Option<String>>,
}

/// The running stand-in; stops when dropped. It also answers the few proxy calls
/// (`/api/v0/version`, `repo/gc`, `repo/stat`) a store makes when pointed at it.
struct FakeCluster {
    url: String,
    fake: Arc<Fake>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeCluster {
    async fn start() -> FakeCluster {
        let fake = Arc::new(Fake::default());
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeCluster { url, fake, task }
    }

    /// Every request so far.
    fn seen(&self) -> Vec<Seen> {
        self.fake.seen.lock().unwrap().clone()
    }

    /// The requests on `/pins/...` so far, forgetting them.
    fn take_pin_calls(&self) -> Vec<Seen> {
        let mut seen = self.fake.seen.lock().unwrap();
        let (pins, rest): (Vec<Seen>, Vec<Seen>) =
            seen.drain(..).partition(|s| s.path.starts_with("/pins/"));
        *seen = rest;
        pins
    }

    fn fail_once(&self, method: &'static str, path: String, status: u16, body: &str) {
        self.fake.fail.lock().unwrap().push(Failure {
            method,
            path,
            status,
            body: body.to_string(),
        });
    }

    fn options(&self) -> ClusterOptions {
        ClusterOptions {
            rest: self.url.clone(),
            proxy: self.url.clone(),
            replication_min: 2,
            replication_max: 3,
            basic_auth: None,
        }
    }
}

fn json(status: u16, body: impl Into<String>) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        body.into(),
    )
        .into_response()
}

async fn ipfs_call(api: &str, path: &str, cid: &str, recursive: bool) {
    let url = format!("{api}/api/v0/{path}?arg={cid}&recursive={recursive}");
    let r = reqwest::Client::new().post(&url).send().await.unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert!(status.is_success(), "{url}: {status} {body}");
}

async fn handle(
    State(f): State<Arc<Fake>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().to_string();
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let seen = Seen {
        method: method.to_string(),
        path: path.clone(),
        query,
        auth,
    };
    f.seen.lock().unwrap().push(seen.clone());
    {
        let mut fail = f.fail.lock().unwrap();
        if let Some(i) = fail
            .iter()
            .position(|x| x.method == method.as_str() && x.path == path)
        {
            let x = fail.remove(i);
            return json(x.status, x.body);
        }
    }
    match path.as_str() {
        "/version" => return json(200, r#"{"version":"1.1.4"}"#),
        "/api/v0/version" => return json(200, r#"{"Version":"0.0.0-stand-in"}"#),
        "/api/v0/repo/stat" => return json(200, r#"{"RepoSize":0,"NumObjects":0}"#),
        "/api/v0/repo/gc" => return json(200, ""),
        _ => {}
    }
    let Some(cid) = path.strip_prefix("/pins/") else {
        return json(404, r#"{"code":404,"message":"404 page not found"}"#);
    };
    let ipfs = f.ipfs.lock().unwrap().clone();
    if method == Method::POST {
        let mode = seen.q("mode").unwrap_or("recursive").to_string();
        let was = f.pins.lock().unwrap().get(cid).cloned();
        if was.as_deref() == Some("recursive") && mode == "direct" {
            // As cluster.go's setupPin answers.
            return json(
                500,
                r#"{"code":500,"message":"cannot repin a CID which is already pinned in recursive mode (new pin is pinned as direct). Unpin it first."}"#,
            );
        }
        if let Some(api) = ipfs {
            ipfs_call(&api, "pin/add", cid, mode == "recursive").await;
        }
        f.pins.lock().unwrap().insert(cid.to_string(), mode);
        json(200, format!(r#"{{"cid":"{cid}"}}"#))
    } else if method == Method::DELETE {
        let Some(mode) = f.pins.lock().unwrap().remove(cid) else {
            return json(404, r#"{"code":404,"message":"not found"}"#);
        };
        if let Some(api) = ipfs {
            ipfs_call(&api, "pin/rm", cid, mode == "recursive").await;
        }
        json(200, format!(r#"{{"cid":"{cid}"}}"#))
    } else {
        json(405, r#"{"code":405,"message":"method not allowed"}"#)
    }
}

fn cid(n: u8) -> Cid {
    raw_cid(HashAlg::Sha2_256, &[n])
}

fn reason(s: &str) -> PinReason {
    s.parse().unwrap()
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The `expire-at` of a request, in Unix seconds (checking it is RFC 3339 in UTC).
fn expire_at(s: &Seen) -> Option<u64> {
    s.q("expire-at").map(|v| {
        assert!(v.ends_with('Z'), "{v}");
        unix(humantime::parse_rfc3339(v).unwrap_or_else(|e| panic!("{v}: {e}")))
    })
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn connect(fc: &FakeCluster, dir: &tempfile::TempDir) -> ClusterStore {
    ClusterStore::connect(fc.options(), dir.path())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_pin_is_one_post_with_name_mode_replication_expiry_and_reasons() {
    let fc = FakeCluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = connect(&fc, &dir).await;
    let connect_calls = fc.seen();
    assert_eq!(connect_calls[0].method, "GET");
    assert_eq!(connect_calls[0].path, "/version");
    assert!(connect_calls.iter().all(|s| s.auth.is_none()), "no auth");

    let a = cid(1);
    let expiry = SystemTime::now() + Duration::from_secs(14 * 86_400);
    store
        .pin(&a, &reason("left-upstream"), Some(expiry))
        .await
        .unwrap();
    let calls = fc.take_pin_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let c = &calls[0];
    assert_eq!(
        (c.method.as_str(), c.path.clone()),
        ("POST", format!("/pins/{a}"))
    );
    let at = c.q("expire-at").unwrap().to_string();
    assert_eq!(
        c.query,
        pairs(&[
            ("name", "left-upstream"),
            ("mode", "recursive"),
            ("replication-min", "2"),
            ("replication-max", "3"),
            ("expire-at", &at),
            ("meta-reasons", r#"["left-upstream"]"#),
        ])
    );
    assert_eq!(
        expire_at(c),
        Some(unix(expiry)),
        "expire-at is the pin's expiry"
    );
    // Nothing about pins went to the proxy.
    assert!(
        fc.seen().iter().all(|s| !s.path.starts_with("/api/v0/pin")),
        "{:?}",
        fc.seen()
    );
    let pins = store.pins().await.unwrap();
    assert_eq!(pins.len(), 1);
    assert_eq!(pins[0].expires_at.map(unix), Some(unix(expiry)));
}

#[tokio::test]
async fn a_second_reason_repins_and_only_the_last_unpin_deletes() {
    let fc = FakeCluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = connect(&fc, &dir).await;
    let a = cid(2);
    let grace = SystemTime::now() + Duration::from_secs(3 * 86_400);
    store
        .pin(&a, &reason("left-upstream"), Some(grace))
        .await
        .unwrap();
    store.pin(&a, &reason("snapshot:7"), None).await.unwrap();
    let calls = fc.take_pin_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    let second = &calls[1];
    assert_eq!(second.method, "POST");
    assert_eq!(second.q("name"), Some("left-upstream, snapshot:7"));
    assert_eq!(
        second.q("meta-reasons"),
        Some(r#"["left-upstream","snapshot:7"]"#)
    );
    assert_eq!(second.q("mode"), Some("recursive"));
    assert_eq!(
        expire_at(second),
        None,
        "a reason without expiry keeps it forever"
    );

    // Renewing a reason with the same expiry asks nothing of the cluster.
    store.pin(&a, &reason("snapshot:7"), None).await.unwrap();
    assert!(fc.take_pin_calls().is_empty());

    // One of two reasons goes: a re-pin with what is left, no DELETE.
    assert!(store.unpin(&a, &reason("snapshot:7")).await.unwrap());
    let calls = fc.take_pin_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].method, "POST");
    assert_eq!(calls[0].q("name"), Some("left-upstream"));
    assert_eq!(expire_at(&calls[0]), Some(unix(grace)));

    // The last one goes: DELETE.
    assert!(store.unpin(&a, &reason("left-upstream")).await.unwrap());
    let calls = fc.take_pin_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        (calls[0].method.as_str(), calls[0].path.clone()),
        ("DELETE", format!("/pins/{a}"))
    );
    assert!(calls[0].query.is_empty());
    assert!(!store.unpin(&a, &reason("left-upstream")).await.unwrap());
    assert!(fc.take_pin_calls().is_empty(), "nothing to unpin");
    assert!(store.pins().await.unwrap().is_empty());

    // Two expiring reasons: the pin lasts until the later one.
    let b = cid(3);
    let early = SystemTime::now() + Duration::from_secs(3600);
    let late = SystemTime::now() + Duration::from_secs(7200);
    store
        .pin(&b, &reason("grace:core"), Some(late))
        .await
        .unwrap();
    store
        .pin(&b, &reason("grace:extra"), Some(early))
        .await
        .unwrap();
    let calls = fc.take_pin_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(expire_at(&calls[1]), Some(unix(late)));
}

#[tokio::test]
async fn direct_reasons_pin_direct_and_going_back_to_direct_unpins_first() {
    let fc = FakeCluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = connect(&fc, &dir).await;
    let a = cid(4);
    let shallow = PinReason::direct("follow:1");
    let deep = reason("snapshot:1");
    store.pin(&a, &shallow, None).await.unwrap();
    store.pin(&a, &deep, None).await.unwrap();
    store.unpin(&a, &deep).await.unwrap();
    let calls = fc.take_pin_calls();
    let shape: Vec<(&str, Option<&str>)> = calls
        .iter()
        .map(|c| (c.method.as_str(), c.q("mode")))
        .collect();
    assert_eq!(
        shape,
        vec![
            ("POST", Some("direct")),
            ("POST", Some("recursive")),
            // The cluster refuses to re-pin a recursive pin as direct.
            ("DELETE", None),
            ("POST", Some("direct")),
        ],
        "{calls:?}"
    );
    assert_eq!(calls[3].q("name"), Some("direct:follow:1"));
    let mode = || fc.fake.pins.lock().unwrap().get(&a.to_string()).cloned();
    assert_eq!(mode().as_deref(), Some("direct"));

    // Refused half way (unpinned, then the direct pin refused): the recursive pin is
    // put back and the ledger keeps both reasons.
    store.pin(&a, &deep, None).await.unwrap();
    fc.take_pin_calls();
    fc.fail_once(
        "POST",
        format!("/pins/{a}"),
        500,
        r#"{"code":500,"message":"no"}"#,
    );
    store.unpin(&a, &deep).await.unwrap_err();
    let calls = fc.take_pin_calls();
    let shape: Vec<(&str, Option<&str>)> = calls
        .iter()
        .map(|c| (c.method.as_str(), c.q("mode")))
        .collect();
    assert_eq!(
        shape,
        vec![
            ("DELETE", None),
            ("POST", Some("direct")),
            ("POST", Some("recursive")),
        ]
    );
    assert_eq!(mode().as_deref(), Some("recursive"));
    assert_eq!(store.pins().await.unwrap().len(), 2);
}

#[tokio::test]
async fn pin_all_and_unpin_all_touch_each_root_once() {
    let fc = FakeCluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = connect(&fc, &dir).await;
    let r = reason("session:1");
    let roots = [cid(5), cid(6), cid(7)];
    store.pin_all(&roots, &r, None).await.unwrap();
    store.pin(&roots[0], &reason("keep"), None).await.unwrap();
    let calls = fc.take_pin_calls();
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert!(calls.iter().all(|c| c.method == "POST"));
    assert_eq!(store.unpin_all(&r).await.unwrap(), 3);
    let mut calls: Vec<(String, String)> = fc
        .take_pin_calls()
        .into_iter()
        .map(|c| (c.method, c.path))
        .collect();
    calls.sort();
    let mut want = vec![
        ("DELETE".to_string(), format!("/pins/{}", roots[1])),
        ("DELETE".to_string(), format!("/pins/{}", roots[2])),
        ("POST".to_string(), format!("/pins/{}", roots[0])),
    ];
    want.sort();
    assert_eq!(
        calls, want,
        "the root with another reason is re-pinned, not deleted"
    );
}

#[tokio::test]
async fn a_refused_call_is_a_clear_error_and_leaves_the_ledger_as_it_was() {
    let fc = FakeCluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = connect(&fc, &dir).await;
    let a = cid(8);
    store.pin(&a, &reason("one"), None).await.unwrap();
    let before = store.pins().await.unwrap();
    fc.take_pin_calls();

    // A new reason the cluster refuses (5xx with its JSON error).
    fc.fail_once(
        "POST",
        format!("/pins/{a}"),
        500,
        r#"{"code":500,"message":"not enough peers to allocate CID"}"#,
    );
    let err = store.pin(&a, &reason("two"), None).await.unwrap_err();
    match &err {
        Error::Cluster { api, call, message } => {
            assert_eq!(api, &fc.url);
            assert_eq!(call, &format!("POST /pins/{a}"));
            assert!(message.contains("500"), "{message}");
            assert!(
                message.contains("not enough peers to allocate CID"),
                "{message}"
            );
        }
        other => panic!("expected Error::Cluster, got {other:?}"),
    }
    let shown = err.to_string();
    assert!(
        shown.contains(&fc.url) && shown.contains("not enough peers"),
        "{shown}"
    );
    assert_eq!(
        store.pins().await.unwrap(),
        before,
        "the row was taken back"
    );

    // A renewal the cluster refuses (4xx) keeps the old expiry.
    fc.fail_once(
        "POST",
        format!("/pins/{a}"),
        400,
        r#"{"code":400,"message":"expire-at cannot be parsed"}"#,
    );
    let later = SystemTime::now() + Duration::from_secs(600);
    let err = store
        .pin(&a, &reason("one"), Some(later))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("expire-at cannot be parsed"),
        "{err}"
    );
    assert_eq!(store.pins().await.unwrap(), before);

    // An unpin the cluster refuses leaves the pin in the ledger (so it can be retried).
    fc.fail_once("DELETE", format!("/pins/{a}"), 503, "cluster is not ready");
    let err = store.unpin(&a, &reason("one")).await.unwrap_err();
    match &err {
        Error::Cluster { call, message, .. } => {
            assert_eq!(call, &format!("DELETE /pins/{a}"));
            assert!(message.contains("503") && message.contains("cluster is not ready"));
        }
        other => panic!("expected Error::Cluster, got {other:?}"),
    }
    assert_eq!(store.pins().await.unwrap().len(), 1);
    assert!(
        store.unpin(&a, &reason("one")).await.unwrap(),
        "the retry works"
    );

    // Several roots, the second refused: none is kept, and the first is unpinned again.
    // (The store goes through roots in CID order: `c` comes second.)
    let mut two = [cid(9), cid(10)];
    two.sort();
    let [b, c] = two;
    fc.take_pin_calls();
    fc.fail_once(
        "POST",
        format!("/pins/{c}"),
        500,
        r#"{"code":500,"message":"boom"}"#,
    );
    let err = store
        .pin_all(&[b, c], &reason("batch"), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
    assert!(store.pins().await.unwrap().is_empty());
    let calls: Vec<(String, String)> = fc
        .take_pin_calls()
        .into_iter()
        .map(|s| (s.method, s.path))
        .collect();
    assert_eq!(
        calls,
        vec![
            ("POST".to_string(), format!("/pins/{b}")),
            ("POST".to_string(), format!("/pins/{c}")),
            ("DELETE".to_string(), format!("/pins/{b}")),
        ]
    );
    assert!(fc.fake.pins.lock().unwrap().is_empty());
}

#[tokio::test]
async fn basic_auth_goes_with_every_call_when_configured() {
    let fc = FakeCluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let opts = ClusterOptions {
        basic_auth: Some(("cidmirror".into(), "s3cret".into())),
        ..fc.options()
    };
    assert!(
        !format!("{opts:?}").contains("s3cret"),
        "no password in Debug"
    );
    let store = ClusterStore::connect(opts, dir.path()).await.unwrap();
    store.pin(&cid(11), &reason("a"), None).await.unwrap();
    store.unpin(&cid(11), &reason("a")).await.unwrap();
    let rest: Vec<Seen> = fc
        .seen()
        .into_iter()
        .filter(|s| !s.path.starts_with("/api/v0/"))
        .collect();
    assert_eq!(rest.len(), 3, "{rest:?}");
    for s in rest {
        assert_eq!(
            s.auth.as_deref(),
            Some("Basic Y2lkbWlycm9yOnMzY3JldA=="),
            "{s:?}"
        );
    }
}

#[tokio::test]
async fn gc_expires_pins_on_the_cluster_and_collects_through_the_proxy() {
    let fc = FakeCluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = connect(&fc, &dir).await;
    let (a, b) = (cid(12), cid(13));
    let soon = SystemTime::now() + Duration::from_secs(2);
    store
        .pin(&a, &reason("left-upstream"), Some(soon))
        .await
        .unwrap();
    store
        .pin(&b, &reason("left-upstream"), Some(soon))
        .await
        .unwrap();
    store.pin(&b, &reason("snapshot:1"), None).await.unwrap();
    fc.take_pin_calls();
    tokio::time::sleep(Duration::from_millis(3100)).await;

    let rep = store
        .gc(GcOptions {
            grace: Duration::ZERO,
        })
        .await
        .unwrap();
    assert_eq!(rep.pins_expired, 2, "{rep:?}");
    let calls = fc.take_pin_calls();
    let shape: Vec<(&str, String, Option<&str>)> = calls
        .iter()
        .map(|c| (c.method.as_str(), c.path.clone(), c.q("name")))
        .collect();
    let mut want = vec![
        ("DELETE", format!("/pins/{a}"), None),
        ("POST", format!("/pins/{b}"), Some("snapshot:1")),
    ];
    want.sort();
    let mut shape = shape;
    shape.sort();
    assert_eq!(shape, want, "{calls:?}");
    assert!(calls.iter().all(|c| c.q("expire-at").is_none()));
    assert!(
        fc.seen().iter().any(|s| s.path == "/api/v0/repo/gc"),
        "repo/gc through the proxy"
    );
    let pins = store.pins().await.unwrap();
    assert_eq!(pins.len(), 1);
    assert_eq!((pins[0].cid, pins[0].reason.as_str()), (b, "snapshot:1"));
}

#[tokio::test]
async fn a_cluster_that_is_not_there_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let rest = format!("http://127.0.0.1:{port}");
    let opts = ClusterOptions {
        rest: rest.clone(),
        ..Default::default()
    };
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        ClusterStore::connect(opts, dir.path()),
    )
    .await
    .expect("bounded")
    .err()
    .expect("no cluster there");
    match &err {
        Error::Cluster { api, call, .. } => {
            assert_eq!(api, &rest);
            assert_eq!(call, "GET /version");
        }
        other => panic!("expected Error::Cluster, got {other:?}"),
    }
    let bad = ClusterOptions {
        rest: "ftp://x".into(),
        ..Default::default()
    };
    let err = ClusterStore::connect(bad, dir.path()).await.err().unwrap();
    assert!(err.to_string().contains("http://HOST:PORT"), "{err}");
}

/// Whether the node has a pin on `cid` (asked directly, not through the store).
async fn node_pins(node: &Kubo, cid: &Cid) -> bool {
    let url = format!("{}/api/v0/pin/ls?arg={cid}", node.api);
    let r = reqwest::Client::new().post(&url).send().await.unwrap();
    let ok = r.status().is_success();
    let body = r.text().await.unwrap();
    ok && body.contains(&cid.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_go_through_the_proxy_and_pins_through_the_rest_api_on_a_real_node() {
    let node = Kubo::start();
    let fc = FakeCluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let opts = ClusterOptions {
        proxy: node.api.clone(),
        ..fc.options()
    };
    let store = ClusterStore::connect(opts, dir.path()).await.unwrap();

    // The stand-in does not pin on the node yet: any pin there came through the proxy.
    let data = pseudo_random("cluster-put", 900_000);
    let f = store
        .put_file(
            FileSource::Reader(Box::new(std::io::Cursor::new(data.clone()))),
            PutOptions {
                params: Profile::UnixfsV1_2025.params(),
                pin: Some(reason("add")),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let calls = fc.take_pin_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        (calls[0].method.as_str(), calls[0].path.clone()),
        ("POST", format!("/pins/{}", f.cid))
    );
    assert_eq!(calls[0].q("name"), Some("add"));
    assert!(store.has(&f.cid).await.unwrap(), "blocks are on the node");
    let (_, s) = store.read(&f.cid, None).await.unwrap();
    assert_eq!(drain(s).await, data);
    assert!(!node_pins(&node, &f.cid).await, "no pin through the proxy");
    assert_eq!(store.pins().await.unwrap().len(), 1);
    assert!(store.unpin(&f.cid, &reason("add")).await.unwrap());

    // Now the stand-in pins on the node as a one-peer cluster would: the conformance
    // suite holds.
    *fc.fake.ipfs.lock().unwrap() = Some(node.api.clone());
    crate::conformance::run(&store).await;
    let pins = fc.take_pin_calls();
    assert!(
        pins.iter().any(|c| c.method == "POST") && pins.iter().any(|c| c.method == "DELETE"),
        "{pins:?}"
    );
}

/// The cluster's own view of one pin (`ipfs-cluster-ctl pin ls CID`), if it has it.
fn cluster_pin(c: &Cluster, peer: usize, cid: &Cid) -> Option<serde_json::Value> {
    c.ctl_json(peer, &["pin", "ls"])
        .into_iter()
        .find(|p| p["cid"].as_str() == Some(&cid.to_string()))
}

/// Waits (bounded) until `ipfs-cluster-ctl status CID` on `peer` says PINNED on every peer.
fn wait_pinned_everywhere(c: &Cluster, peer: usize, cid: &Cid) {
    let start = std::time::Instant::now();
    loop {
        let st = c.ctl_json(peer, &["status", &cid.to_string()]);
        let peers = st
            .first()
            .and_then(|s| s["peer_map"].as_object().cloned())
            .unwrap_or_default();
        let pinned = peers
            .values()
            .filter(|p| p["status"].as_str() == Some("pinned"))
            .count();
        if pinned == c.peers.len() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{cid} not pinned on every peer: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The real thing: two `ipfs-cluster-service` peers (CRDT), each with its own Kubo. The
/// store conformance suite holds through the proxy and the REST API; `ipfs-cluster-ctl`
/// shows each pin with the name, replication and expiry the store set; the blocks reach
/// the other peer's Kubo; an expiring pin is dropped by the cluster itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_real_two_peer_cluster_pins_carry_name_replication_and_expiry() {
    let c = tokio::task::spawn_blocking(|| Cluster::start(2))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = ClusterOptions {
        rest: c.peers[0].rest.clone(),
        proxy: c.peers[0].proxy.clone(),
        replication_min: 2,
        replication_max: 2,
        basic_auth: None,
    };
    let store = ClusterStore::connect(opts, dir.path()).await.unwrap();
    crate::conformance::run(&store).await;

    let data = pseudo_random("real-cluster", 1_500_000);
    let f = store
        .put_file(
            FileSource::Reader(Box::new(std::io::Cursor::new(data.clone()))),
            PutOptions {
                params: Profile::UnixfsV1_2025.params(),
                pin: Some(reason("snapshot:7")),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let c = Arc::new(c);
    let cc = c.clone();
    let cid = f.cid;
    tokio::task::spawn_blocking(move || wait_pinned_everywhere(&cc, 1, &cid))
        .await
        .unwrap();
    let p = cluster_pin(&c, 1, &f.cid).expect("the pin, seen from the other peer");
    assert_eq!(p["name"], "snapshot:7", "{p}");
    assert_eq!(p["replication_factor_min"], 2, "{p}");
    assert_eq!(p["replication_factor_max"], 2, "{p}");
    assert_eq!(p["mode"], "recursive", "{p}");
    assert!(
        p["expire_at"].is_null() || p["expire_at"].as_str() == Some("0001-01-01T00:00:00Z"),
        "no expiry on a snapshot pin: {p}"
    );
    // The second peer's Kubo has the file (it pinned it: the blocks came over bitswap).
    let other = &c.peers[1].kubo;
    let url = format!("{}/ipfs/{}", other.gateway, f.cid);
    let r = reqwest::get(&url).await.unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    let got = r.bytes().await.unwrap();
    assert!(
        got == data,
        "bytes through peer 1's Kubo gateway ({} bytes)",
        got.len()
    );

    // A grace pin: the cluster itself unpins it when it expires.
    let expiry = SystemTime::now() + Duration::from_secs(6);
    store
        .pin(&f.cid, &reason("left-upstream"), Some(expiry))
        .await
        .unwrap();
    assert!(store.unpin(&f.cid, &reason("snapshot:7")).await.unwrap());
    // CRDT state reaches the other peer a moment later.
    let start = std::time::Instant::now();
    let p = loop {
        let p = cluster_pin(&c, 1, &f.cid).expect("the grace pin");
        if p["name"] == "left-upstream" {
            break p;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let at = p["expire_at"].as_str().expect("an expire_at");
    let at = humantime::parse_rfc3339(at).unwrap_or_else(|e| panic!("{at}: {e}"));
    assert_eq!(unix(at), unix(expiry), "{p}");
    let text = c.ctl(0, &["pin", "ls"]);
    assert!(
        text.contains("left-upstream")
            && text.contains("Repl. Factor: 2--2")
            && text.contains("Exp: "),
        "{text}"
    );
    let start = std::time::Instant::now();
    while cluster_pin(&c, 0, &f.cid).is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the expired pin is still in the cluster: {:?}",
            cluster_pin(&c, 0, &f.cid)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The ledger still holds the expired row until gc drops it, which now finds the cluster
    // pin gone already.
    let report = store
        .gc(GcOptions {
            grace: Duration::ZERO,
        })
        .await
        .unwrap();
    let left = store.pins().await.unwrap();
    assert!(report.pins_expired >= 1, "{report:?} {left:?}");
    assert!(left.iter().all(|p| p.cid != f.cid), "{left:?}");

    // Small files put side by side share one cluster pin (a cover) per batch, with the
    // reason, expiry and replication of theirs; every file is pinned on both peers; the
    // first file to change its pins dissolves its cover and the others get their own.
    let session = reason("sync-in-progress");
    let expiry = SystemTime::now() + Duration::from_secs(3600);
    let files: Vec<Vec<u8>> = (0..24)
        .map(|i| pseudo_random(&format!("cover-{i}"), 2_000 + i * 3_000))
        .collect();
    let put = crate::support::put_side_by_side(&store, &files, &session, Some(expiry)).await;
    let pins = c.ctl_json(0, &["pin", "ls"]);
    let covers: Vec<&serde_json::Value> = pins
        .iter()
        .filter(|p| {
            p["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("sync-in-progress (cover of "))
        })
        .collect();
    assert!(!covers.is_empty(), "covers: {pins:?}");
    assert!(pins.len() < files.len(), "fewer pins than files: {pins:?}");
    for p in &covers {
        assert_eq!(p["replication_factor_min"], 2, "{p}");
        let at = p["expire_at"].as_str().expect("a cover's expiry");
        let at = humantime::parse_rfc3339(at).unwrap_or_else(|e| panic!("{at}: {e}"));
        assert_eq!(unix(at), unix(expiry), "{p}");
    }
    let cc = c.clone();
    let cover_cids: Vec<Cid> = covers
        .iter()
        .map(|p| p["cid"].as_str().unwrap().parse().unwrap())
        .collect();
    tokio::task::spawn_blocking(move || {
        for cid in &cover_cids {
            wait_pinned_everywhere(&cc, 0, cid);
        }
    })
    .await
    .unwrap();
    for (f, data) in put.iter().zip(&files) {
        let url = format!("{}/ipfs/{}", other.gateway, f.cid);
        let got = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
        assert!(got == *data, "{} through peer 1", f.cid);
    }
    // The cluster loses the covers' pins (removed by hand): resync puts them back.
    for p in &covers {
        c.ctl(0, &["pin", "rm", p["cid"].as_str().unwrap()]);
    }
    let gone = c.ctl_json(0, &["pin", "ls"]);
    assert!(gone.len() < pins.len(), "removed by hand: {gone:?}");
    store.resync_pins().await.unwrap();
    let back = c.ctl_json(0, &["pin", "ls"]);
    assert_eq!(
        back.len(),
        pins.len(),
        "resync re-pins the covers: {back:?}"
    );
    // A file under a cover (it has no cluster pin of its own) leaves it.
    let cids_of = |ps: &[serde_json::Value]| -> std::collections::HashSet<String> {
        ps.iter()
            .filter_map(|p| p["cid"].as_str().map(str::to_string))
            .collect()
    };
    let own = cids_of(&pins);
    let leaver = put
        .iter()
        .find(|f| !own.contains(&f.cid.to_string()))
        .expect("a file held by a cover");
    assert!(store.unpin(&leaver.cid, &session).await.unwrap());
    let after = c.ctl_json(0, &["pin", "ls"]);
    let now_own = cids_of(&after);
    assert!(!now_own.contains(&leaver.cid.to_string()), "{after:?}");
    let still_covers = after
        .iter()
        .filter(|p| p["name"].as_str().is_some_and(|n| n.contains("(cover of ")))
        .count();
    assert_eq!(still_covers, covers.len() - 1, "its cover went: {after:?}");
    let survivors: Vec<Cid> = now_own
        .difference(&own)
        .map(|c| c.parse().unwrap())
        .collect();
    assert!(!survivors.is_empty(), "its siblings got pins of their own");
    let cc = c.clone();
    tokio::task::spawn_blocking(move || {
        for cid in &survivors {
            wait_pinned_everywhere(&cc, 0, cid);
        }
    })
    .await
    .unwrap();
    assert_eq!(
        store.unpin_all(&session).await.unwrap(),
        files.len() as u64 - 1
    );
    let last = c.ctl_json(0, &["pin", "ls"]);
    assert!(last.is_empty(), "nothing left pinned: {last:?}");
}
