//! The publisher's volunteer tracker (`/api/v1/volunteers`) and followers using it: announces
//! register and renew volunteers, silent ones expire after the TTL, bad announces are 400s
//! naming the field, too many are 429s (per client, behind a trusted proxy per forwarded
//! client), a full table is a 503, a follower gateway has no
//! tracker; and a follower adds the listed volunteers to its block sources, fetches a
//! verified block from one, skips itself, and drops a volunteer that left the list while the
//! configured sources stay.
//!
//! Everything runs over real HTTP on 127.0.0.1, with waits bounded by [`WAIT`].

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use cidmirror_resolver::follow::{FollowConfig, Follower};
use cidmirror_resolver::snapshot::Snapshots;
use cidmirror_resolver::tracker::{TrackerConfig, VolunteerList};
use cidmirror_resolver::{AppState, Limits, router, serve};
use cidmirror_store::{EmbeddedStore, FileSource, Profile, PutOptions, Store};
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The longest any condition below is waited for.
const WAIT: Duration = Duration::from_secs(15);

/// A server on 127.0.0.1:0; stops when dropped.
struct Server {
    url: url::Url,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(state: AppState) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        serve(listener, state, Limits::default(), async move {
            s.cancelled().await
        })
        .await
        .expect("serve");
    });
    Server {
        url: format!("http://{addr}/").parse().expect("url"),
        stop,
    }
}

/// A publisher with an empty store and no snapshot, its tracker limited by `cfg`.
async fn publisher(cfg: TrackerConfig) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(&dir.path().join("store")).expect("store");
    let state = AppState::publisher(store, Snapshots::manual(), cfg);
    (start(state).await, dir)
}

fn unlimited(ttl: Duration) -> TrackerConfig {
    TrackerConfig {
        ttl,
        announces_per_minute: 0,
        lists_per_minute: 0,
        ..TrackerConfig::default()
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(WAIT)
        .build()
        .expect("client")
}

fn api(base: &url::Url) -> url::Url {
    base.join("api/v1/volunteers").expect("url")
}

async fn announce(base: &url::Url, id: &str, url: &str) -> reqwest::Response {
    client()
        .post(api(base))
        .header(header::CONTENT_TYPE, "application/json")
        .body(serde_json::json!({"id": id, "url": url, "budget": 1u64 << 30}).to_string())
        .send()
        .await
        .expect("announce")
}

async fn list(base: &url::Url) -> VolunteerList {
    let resp = client().get(api(base)).send().await.expect("list");
    assert_eq!(resp.status(), StatusCode::OK);
    json(resp).await
}

async fn json(resp: reqwest::Response) -> VolunteerList {
    let bytes = resp.bytes().await.expect("body");
    serde_json::from_slice(&bytes).expect("a volunteer list")
}

fn ids(l: &VolunteerList) -> Vec<&str> {
    l.volunteers.iter().map(|v| v.id.as_str()).collect()
}

/// Waits until `cond` holds, at most [`WAIT`].
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < WAIT, "not within {WAIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Announces `id` every 200 ms until the token is cancelled.
fn heartbeat(base: &url::Url, id: &str, url: &str) -> CancellationToken {
    let stop = CancellationToken::new();
    let (s, base, id, url) = (stop.clone(), base.clone(), id.to_string(), url.to_string());
    tokio::spawn(async move {
        loop {
            let resp = announce(&base, &id, &url).await;
            assert_eq!(resp.status(), StatusCode::OK, "heartbeat of {id}");
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
                () = s.cancelled() => return,
            }
        }
    });
    stop
}

async fn metrics(base: &url::Url) -> String {
    client()
        .get(base.join("metrics").expect("url"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

#[tokio::test]
async fn announces_are_listed_sorted_and_silent_volunteers_expire() {
    let (p, _dir) = publisher(unlimited(Duration::from_secs(2))).await;
    assert_eq!(
        list(&p.url).await,
        VolunteerList {
            volunteers: vec![],
            ttl_secs: 2
        }
    );
    let resp = announce(&p.url, "vol-b", "http://b.example:7878/").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()[header::CACHE_CONTROL],
        "no-store",
        "an announce's answer is not cached"
    );
    // The answer is the list: a volunteer learns the set from its own heartbeat.
    let answer: VolunteerList = json(resp).await;
    assert_eq!(ids(&answer), ["vol-b"]);
    let keep = heartbeat(&p.url, "vol-a", "https://a.example/gw");
    eventually("vol-a listed", || async {
        ids(&list(&p.url).await) == ["vol-a", "vol-b"]
    })
    .await;
    let resp = client().get(api(&p.url)).send().await.expect("list");
    let cc = resp.headers()[header::CACHE_CONTROL]
        .to_str()
        .expect("ascii");
    assert!(cc.contains("max-age=5"), "{cc}");
    let l: VolunteerList = json(resp).await;
    assert_eq!(l.ttl_secs, 2);
    assert_eq!(l.volunteers[0].url, "https://a.example/gw");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(l.volunteers.iter().all(|v| (now - v.last_seen).abs() <= 5));

    // vol-b said nothing more: gone after the TTL; vol-a's heartbeat keeps it.
    eventually("vol-b expired", || async {
        ids(&list(&p.url).await) == ["vol-a"]
    })
    .await;
    let m = metrics(&p.url).await;
    assert!(m.contains("cidmirror_volunteers_live 1"), "{m}");
    assert!(
        m.contains("cidmirror_volunteer_announces_total{outcome=\"new\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("cidmirror_volunteer_announces_total{outcome=\"renewed\"}"),
        "{m}"
    );
    assert!(
        m.contains("cidmirror_volunteers_budget_bytes 1073741824"),
        "{m}"
    );
    keep.cancel();
    eventually("vol-a expired", || async {
        list(&p.url).await.volunteers.is_empty()
    })
    .await;
}

/// `POST /api/v1/volunteers` with `body` through the router: status and text.
async fn post(state: &AppState, body: &str) -> (StatusCode, String) {
    let req = Request::post("/api/v1/volunteers")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    let resp = router(state.clone()).oneshot(req).await.expect("answer");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn bad_announces_are_400_naming_the_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(&dir.path().join("store")).expect("store");
    let state = AppState::publisher(
        store,
        Snapshots::manual(),
        unlimited(Duration::from_secs(90)),
    );
    let long_url = format!("http://example.org/{}", "a".repeat(2048));
    let long_id = "x".repeat(65);
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "bad request: body:"),
        (r#"{"url":"http://h/"}"#.into(), "missing field `id`"),
        (r#"{"id":"v1"}"#.into(), "missing field `url`"),
        (r#"{"id":"","url":"http://h/"}"#.into(), "invalid id: empty"),
        (
            r#"{"id":"a/b","url":"http://h/"}"#.into(),
            "invalid id: \"a/b\": character '/'",
        ),
        (
            r#"{"id":"..","url":"http://h/"}"#.into(),
            "invalid id: \"..\" is not a name",
        ),
        (
            format!(r#"{{"id":"{long_id}","url":"http://h/"}}"#),
            "invalid id: 65 characters",
        ),
        (r#"{"id":"v1","url":"h"}"#.into(), "invalid url"),
        (
            r#"{"id":"v1","url":"ftp://h/"}"#.into(),
            "invalid url: \"ftp://h/\": scheme \"ftp\"",
        ),
        (
            r#"{"id":"v1","url":"http://u:pw@h/"}"#.into(),
            "invalid url: \"http://u:pw@h/\": contains credentials",
        ),
        (
            format!(r#"{{"id":"v1","url":"{long_url}"}}"#),
            "invalid url: longer than 2048",
        ),
        (
            r#"{"id":"v1","url":"http://h/","budget":-1}"#.into(),
            "bad request: body:",
        ),
    ];
    for (body, want) in &cases {
        let (status, text) = post(&state, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
        assert!(text.contains(want), "{body}: {text:?} lacks {want:?}");
    }
    let huge = format!(
        r#"{{"id":"v1","url":"http://h/","x":"{}"}}"#,
        "a".repeat(100_000)
    );
    assert_eq!(post(&state, &huge).await.0, StatusCode::BAD_REQUEST);
    let (status, text) = post(&state, r#"{"id":"v1","url":"http://h/"}"#).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let m = state.metrics().encode();
    let invalid = format!(
        "cidmirror_volunteer_announces_total{{outcome=\"invalid\"}} {}",
        cases.len() + 1
    );
    assert!(m.contains(&invalid), "{m}");
}

#[tokio::test]
async fn too_many_requests_from_one_address_are_429() {
    let (p, _dir) = publisher(TrackerConfig {
        announces_per_minute: 3,
        lists_per_minute: 2,
        ..TrackerConfig::default()
    })
    .await;
    for i in 0..3 {
        let resp = announce(&p.url, &format!("v{i}"), "http://v.example/").await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let resp = announce(&p.url, "v9", "http://v.example/").await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()[header::RETRY_AFTER]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    // One token every 20 s.
    assert!((1..=20).contains(&retry), "Retry-After: {retry}");
    // Lists have their own budget.
    for _ in 0..2 {
        assert_eq!(ids(&list(&p.url).await), ["v0", "v1", "v2"]);
    }
    let resp = client().get(api(&p.url)).send().await.expect("list");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key(header::RETRY_AFTER));
    let m = metrics(&p.url).await;
    assert!(
        m.contains("cidmirror_volunteer_announces_total{outcome=\"rate_limited\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("cidmirror_http_requests_total{route=\"volunteers\",status=\"429\"} 2"),
        "{m}"
    );
}

/// An announce from `base` that says it was forwarded for `client`.
async fn announce_for(base: &url::Url, id: &str, client_ip: &str) -> StatusCode {
    client()
        .post(api(base))
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-forwarded-for", client_ip)
        .body(serde_json::json!({"id": id, "url": "http://v.example/"}).to_string())
        .send()
        .await
        .expect("announce")
        .status()
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let limited = TrackerConfig {
        announces_per_minute: 1,
        lists_per_minute: 0,
        ..TrackerConfig::default()
    };
    // 127.0.0.1 (the test client) is the reverse proxy.
    let (p, _dir) = publisher(TrackerConfig {
        trusted_proxies: vec!["127.0.0.0/8".parse().expect("net")],
        ..limited.clone()
    })
    .await;
    assert_eq!(
        announce_for(&p.url, "a", "203.0.113.1").await,
        StatusCode::OK
    );
    assert_eq!(
        announce_for(&p.url, "b", "203.0.113.2").await,
        StatusCode::OK
    );
    assert_eq!(
        announce_for(&p.url, "c", "203.0.113.1").await,
        StatusCode::TOO_MANY_REQUESTS,
        "the same client again"
    );
    // A client can't escape its limit by writing the header itself: the proxy appends.
    assert_eq!(
        announce_for(&p.url, "d", "198.51.100.7, 203.0.113.2").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Without trusted proxies the header is ignored: everyone here is 127.0.0.1.
    let (q, _dir) = publisher(limited).await;
    assert_eq!(
        announce_for(&q.url, "a", "203.0.113.1").await,
        StatusCode::OK
    );
    assert_eq!(
        announce_for(&q.url, "b", "203.0.113.2").await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn a_full_table_refuses_newcomers_with_503_but_renews() {
    let (p, _dir) = publisher(TrackerConfig {
        max_volunteers: 2,
        ..unlimited(Duration::from_secs(90))
    })
    .await;
    for id in ["a", "b"] {
        assert_eq!(
            announce(&p.url, id, "http://v/").await.status(),
            StatusCode::OK
        );
    }
    let resp = announce(&p.url, "c", "http://v/").await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry: u64 = resp.headers()[header::RETRY_AFTER]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(
        (80..=90).contains(&retry),
        "until the oldest entry expires: {retry}"
    );
    assert!(resp.text().await.expect("text").contains("full"));
    assert_eq!(
        announce(&p.url, "a", "http://a/").await.status(),
        StatusCode::OK
    );
    assert_eq!(ids(&list(&p.url).await), ["a", "b"]);
}

fn key_hex() -> String {
    hex::encode(
        ed25519_dalek::SigningKey::from_bytes(&[7; 32])
            .verifying_key()
            .as_bytes(),
    )
}

#[tokio::test]
async fn a_follower_or_plain_gateway_has_no_tracker() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(&dir.path().join("store")).expect("store");
    let cfg = FollowConfig::new(
        "http://127.0.0.1:9/".parse().expect("url"),
        &key_hex(),
        dir.path().join("follow"),
    )
    .expect("config");
    let follower = Follower::new(cfg, store).expect("follower");
    let state = follower.app_state();
    let (status, text) = post(&state, r#"{"id":"v1","url":"http://h/"}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    let req = Request::get("/api/v1/volunteers")
        .body(Body::empty())
        .expect("request");
    let resp = router(state).oneshot(req).await.expect("answer");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // Nor does a plain gateway (a volunteer's own).
    let plain = AppState::gateway(
        EmbeddedStore::open(&dir.path().join("plain")).expect("store"),
        Snapshots::manual(),
    );
    assert_eq!(
        post(&plain, r#"{"id":"v1","url":"http://h/"}"#).await.0,
        StatusCode::NOT_FOUND
    );
}

/// A gateway serving one small file from its own store: (server, the file's CID, store dir).
async fn volunteer_gateway(data: &[u8]) -> (Server, cidmirror_store::Cid, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(&dir.path().join("store")).expect("store");
    let f = store
        .put_file(
            FileSource::Reader(Box::new(std::io::Cursor::new(data.to_vec()))),
            PutOptions {
                params: Profile::UnixfsV1_2025.params(),
                ..Default::default()
            },
        )
        .await
        .expect("put");
    let server = start(AppState::new(store, Snapshots::manual())).await;
    (server, f.cid, dir)
}

/// The follower's sources as (URL, origin).
fn sources(f: &Follower) -> Vec<(String, &'static str)> {
    f.transfers()
        .sources()
        .all()
        .iter()
        .map(|s| (s.url.to_string(), s.origin.as_str()))
        .collect()
}

#[tokio::test]
async fn a_follower_fetches_from_listed_volunteers_and_drops_those_that_leave() {
    let (p, _pdir) = publisher(unlimited(Duration::from_secs(2))).await;
    // A configured source (`--source`), with nothing in it.
    let (configured, _, _cdir) = volunteer_gateway(b"").await;
    let data = b"a block only the volunteer has";
    let (vol, cid, _vdir) = volunteer_gateway(data).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(&dir.path().join("store")).expect("store");
    let mut cfg =
        FollowConfig::new(p.url.clone(), &key_hex(), dir.path().join("follow")).expect("config");
    cfg.sources.push(configured.url.clone());
    cfg.volunteers_every = Duration::from_millis(100);
    let me: url::Url = "http://127.0.0.1:1/me/".parse().expect("url");
    cfg.own_urls.push(me.clone());
    let follower = Follower::new(cfg, store).expect("follower");
    let cancel = CancellationToken::new();
    follower.spawn(cancel.clone());
    let _stop = cancel.clone().drop_guard();

    let beat = heartbeat(&p.url, "vol-1", vol.url.as_str());
    // The follower itself, announced as a volunteer: never its own source.
    let self_beat = heartbeat(&p.url, "me", me.as_str());
    eventually("the volunteer becomes a source", || async {
        sources(&follower).len() == 3
    })
    .await;
    assert_eq!(
        sources(&follower),
        [
            (p.url.to_string(), "followed"),
            (configured.url.to_string(), "configured"),
            (vol.url.to_string(), "volunteer"),
        ]
    );
    // Neither the publisher nor the configured source has the block: the volunteer does.
    let block = follower
        .transfers()
        .sources()
        .block_any(&cid)
        .await
        .expect("a verified block from the volunteer");
    assert_eq!(&block[..], &data[..]);

    // Visible in the follower's status and metrics.
    let app = follower.app_state();
    let req = Request::get("/api/v1/follow/status")
        .body(Body::empty())
        .expect("request");
    let resp = router(app.clone()).oneshot(req).await.expect("answer");
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let status: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    let vs = &status["volunteers"];
    assert_eq!(vs["enabled"], true);
    assert_eq!(vs["listed"], 2, "{vs}");
    assert_eq!(vs["used"], 1, "{vs}");
    assert_eq!(vs["skipped"], 1, "itself: {vs}");
    assert_eq!(vs["list_url"], api(&p.url).to_string());
    let srcs = status["sources"].as_array().expect("sources");
    let v = srcs
        .iter()
        .find(|s| s["origin"] == "volunteer")
        .expect("a volunteer source");
    assert_eq!(v["volunteer"], "vol-1");
    assert_eq!(v["url"], vol.url.to_string());
    assert_eq!(v["blocks_ok"], 1);
    let req = Request::get("/metrics")
        .body(Body::empty())
        .expect("request");
    let resp = router(app).oneshot(req).await.expect("answer");
    let m = resp.into_body().collect().await.expect("body").to_bytes();
    let m = String::from_utf8_lossy(&m);
    assert!(
        m.contains("cidmirror_follow_sources{origin=\"volunteer\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("cidmirror_follow_sources{origin=\"configured\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("cidmirror_follow{what=\"volunteers_listed\"} 2"),
        "{m}"
    );

    // The volunteer stops its heartbeat: it expires from the list, then from the sources;
    // the followed gateway and the configured source stay.
    beat.cancel();
    self_beat.cancel();
    eventually("the volunteer is dropped", || async {
        sources(&follower).len() == 2
    })
    .await;
    assert_eq!(
        sources(&follower),
        [
            (p.url.to_string(), "followed"),
            (configured.url.to_string(), "configured"),
        ]
    );
    let err = follower
        .transfers()
        .sources()
        .block_any(&cid)
        .await
        .expect_err("no source has it now");
    assert!(err.contains("missing"), "{err}");
}

#[tokio::test]
async fn use_volunteers_off_keeps_the_configured_sources_only() {
    let (p, _pdir) = publisher(unlimited(Duration::from_secs(90))).await;
    assert_eq!(
        announce(&p.url, "vol-1", "http://127.0.0.1:1/")
            .await
            .status(),
        StatusCode::OK
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(&dir.path().join("store")).expect("store");
    let mut cfg =
        FollowConfig::new(p.url.clone(), &key_hex(), dir.path().join("follow")).expect("config");
    cfg.use_volunteers = false;
    cfg.volunteers_every = Duration::from_millis(50);
    let follower = Follower::new(cfg, store).expect("follower");
    let cancel = CancellationToken::new();
    follower.spawn(cancel.clone());
    let _stop = cancel.drop_guard();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sources(&follower), [(p.url.to_string(), "followed")]);
    let r = follower.report().await;
    assert!(!r.volunteers.enabled);
    assert_eq!(r.volunteers.fetches_ok, 0);
    let err = follower
        .refresh_volunteers()
        .await
        .expect_err("switched off");
    assert!(err.contains("use_volunteers"), "{err}");
    assert_eq!(sources(&follower).len(), 1);
}
