//! cidmirror's HTTP server: what pacman, IPFS clients, scripts and followers talk to.
//!
//! One axum [`router`] serves the current snapshot under pacman's mirror paths
//! (`/<repo>/os/<arch>/<file>`), any held content as an IPFS trustless gateway (`/ipfs/...`),
//! files by SHA-256 (`/by-hash/sha256/<hex>`, `/api/v1/resolve`), the snapshot feed
//! (`/feed`, `/api/v1/snapshot/current`), the volunteer tracker (`/api/v1/volunteers`, on a
//! publisher; [`tracker`]) and `/metrics`. [`serve`] runs it on a listener
//! the caller bound, with a cap on connections, header timeouts and a bounded graceful
//! shutdown (servers don't bind themselves: tests bind port 0).
//!
//! ```no_run
//! # async fn demo(store: cidmirror_store::EmbeddedStore, db: std::sync::Arc<cidmirror_schema::Db>) -> std::io::Result<()> {
//! use cidmirror_resolver::{AppState, Limits, serve, snapshot::Snapshots};
//! let state = AppState::new(store, Snapshots::from_db(db));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7878").await?;
//! serve(listener, state, Limits::default(), std::future::pending()).await
//! # }
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cidmirror_store::EmbeddedStore;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub mod body;
pub mod cluster;
pub mod config;
mod delta;
pub mod error;
mod feed;
pub mod follow;
pub mod gateway;
pub mod lookup;
pub mod metrics;
mod mirror;
mod sendfile;
pub mod snapshot;
pub mod tracker;

pub use error::{ApiError, ApiResult};

/// Entry points for the fuzz targets in `fuzz/` (see the README, "Fuzzing"): the private
/// parts of the server and the follower that read outside bytes, callable without a
/// network or a follower around them. Not an API: hidden from the docs, changes with the
/// fuzz targets.
#[doc(hidden)]
pub mod fuzzing {
    use bytes::Bytes;
    use cid::Cid;
    use cidmirror_store::Store;
    use ed25519_dalek::VerifyingKey;
    use eventsource_stream::Eventsource;
    use futures::StreamExt;

    use crate::follow::FollowError;
    use crate::follow::view::View;

    /// What a follower makes of one feed connection whose body arrives in `chunks`: each
    /// snapshot announcement as the watcher parses it and the refresh loop checks it
    /// (fields and signature against `key`; not the sequence, which depends on what is
    /// current). `Err` for a malformed or refused announcement, or a broken stream (which
    /// ends the list, as it ends the connection).
    pub async fn feed(
        chunks: Vec<Bytes>,
        key: &VerifyingKey,
    ) -> Vec<Result<crate::feed::SnapshotEvent, String>> {
        let body = futures::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
        let body = crate::follow::watch::guarded(body, |n| {
            std::io::Error::other(format!("an event of more than {n} bytes"))
        });
        let mut events = std::pin::pin!(body.eventsource());
        let mut out = Vec::new();
        while let Some(item) = events.next().await {
            let ev = match item {
                Ok(ev) => ev,
                Err(e) => {
                    out.push(Err(format!("not an event stream: {e}")));
                    break;
                }
            };
            match crate::follow::watch::snapshot_of(&ev) {
                None => {}
                Some(Err(e)) => out.push(Err(e.to_string())),
                Some(Ok(snapshot)) => out.push(
                    crate::follow::refresh::Announced::check(&snapshot, key).map(|_| snapshot),
                ),
            }
        }
        out
    }

    /// A delta refresh to `root` from `prev`, once the delta CAR's blocks are in `store`:
    /// the follower's own code from there on (manifest, `changes.jsonl`, rebuild, root check).
    pub async fn delta<S: Store + Clone>(
        store: &S,
        prev: &View,
        root: Cid,
    ) -> Result<View, FollowError> {
        crate::follow::refresh::apply_delta(store, prev, root, 0)
            .await
            .map(|(view, _)| view)
    }
}
use metrics::Metrics;
use snapshot::{Current, Snapshots};

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

struct StateInner {
    store: EmbeddedStore,
    snapshots: Snapshots,
    metrics: Metrics,
    cache: mirror::PathCache,
    /// Set on a follower gateway.
    follower: Option<Arc<follow::Follower>>,
    /// The volunteer tracker: a publisher's only.
    tracker: Option<tracker::Tracker>,
    /// IPFS Cluster follower configurations this server hosts.
    cluster_configs: std::sync::OnceLock<cluster::FollowerConfigs>,
}

impl AppState {
    /// State over a store and a source of snapshots, with a volunteer tracker of the
    /// default limits.
    pub fn new(store: EmbeddedStore, snapshots: Snapshots) -> Self {
        AppState::publisher(store, snapshots, tracker::TrackerConfig::default())
    }

    /// State of a publisher: a store, its snapshots, and the volunteer tracker's limits.
    pub fn publisher(
        store: EmbeddedStore,
        snapshots: Snapshots,
        tracker: tracker::TrackerConfig,
    ) -> Self {
        AppState::with_tracker(store, snapshots, Some(tracker::Tracker::new(tracker)))
    }

    /// State of a gateway that serves what it holds but is no publisher (a volunteer's
    /// own): `/api/v1/volunteers` answers 404 there.
    pub fn gateway(store: EmbeddedStore, snapshots: Snapshots) -> Self {
        AppState::with_tracker(store, snapshots, None)
    }

    fn with_tracker(
        store: EmbeddedStore,
        snapshots: Snapshots,
        tracker: Option<tracker::Tracker>,
    ) -> Self {
        AppState {
            inner: Arc::new(StateInner {
                store,
                snapshots,
                metrics: Metrics::new(),
                cache: mirror::PathCache::default(),
                follower: None,
                tracker,
                cluster_configs: Default::default(),
            }),
        }
    }

    /// State of a follower gateway: its snapshots are the ones it verified and fetched.
    pub fn follower(store: EmbeddedStore, follower: Arc<follow::Follower>) -> Self {
        AppState {
            inner: Arc::new(StateInner {
                store,
                snapshots: follower.snapshots().clone(),
                metrics: Metrics::new(),
                cache: mirror::PathCache::default(),
                follower: Some(follower),
                tracker: None,
                cluster_configs: Default::default(),
            }),
        }
    }

    /// The follower, on a follower gateway.
    pub fn follow(&self) -> Option<&Arc<follow::Follower>> {
        self.inner.follower.as_ref()
    }

    /// The volunteer tracker, on a publisher.
    pub fn tracker(&self) -> Option<&tracker::Tracker> {
        self.inner.tracker.as_ref()
    }

    /// Hosts these follower configurations at `/cluster/<name>/service.json` (once: a
    /// second call is an error).
    pub fn host_cluster_configs(&self, c: cluster::FollowerConfigs) -> Result<(), String> {
        self.inner
            .cluster_configs
            .set(c)
            .map_err(|_| "the cluster configurations are set already".to_string())
    }

    /// The follower configurations hosted, if any were set.
    pub fn cluster_configs(&self) -> Option<&cluster::FollowerConfigs> {
        self.inner.cluster_configs.get()
    }

    /// The store.
    pub fn store(&self) -> &EmbeddedStore {
        &self.inner.store
    }

    /// Where the current snapshot comes from.
    pub fn snapshots(&self) -> &Snapshots {
        &self.inner.snapshots
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    fn cache(&self) -> &mirror::PathCache {
        &self.inner.cache
    }

    /// The current snapshot, for one request.
    pub fn current(&self) -> ApiResult<Arc<Current>> {
        self.inner.snapshots.current().ok_or(ApiError::NoSnapshot)
    }
}

/// Limits of the server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections open at once; more are closed at once.
    pub max_connections: usize,
    /// Time a client has to send a request's headers (a slow-loris client is dropped).
    pub header_timeout: Duration,
    /// On shutdown, how long running downloads may go on.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// The route label of a request path, for metrics.
fn route_of(path: &str) -> &'static str {
    if path.starts_with("/ipfs/") || path == "/ipfs" {
        "ipfs"
    } else if path.starts_with("/by-hash/") {
        "by-hash"
    } else if path.starts_with("/api/v1/resolve") {
        "resolve"
    } else if path.starts_with("/api/v1/snapshot") {
        "snapshot"
    } else if path.starts_with("/api/v1/delta") {
        "delta"
    } else if path == tracker::API_PATH {
        "volunteers"
    } else if path == "/feed" {
        "feed"
    } else if path == "/metrics" {
        "metrics"
    } else if path.starts_with("/cluster/") {
        "cluster"
    } else if path.contains("/os/") {
        "mirror"
    } else {
        "other"
    }
}

async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = route_of(req.uri().path());
    let resp = next.run(req).await;
    state.metrics().request(route, resp.status().as_u16());
    resp
}

/// A 304 carries no body, but axum gives the empty one a `Content-Length: 0`, which hyper
/// passes on in answer to `HEAD`: a length the representation does not have (the 304 to
/// `GET` has none). A body of unknown length gets no such header.
async fn unsized_not_modified(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    if resp.status() == StatusCode::NOT_MODIFIED {
        *resp.body_mut() = Body::from_stream(futures::stream::empty::<
            Result<bytes::Bytes, std::convert::Infallible>,
        >());
    }
    resp
}

async fn not_found() -> Response {
    ApiError::NotFound("no such route".into()).into_response()
}

/// Every route.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(feed::metrics))
        .route("/feed", get(feed::feed))
        .route("/api/v1/snapshot/current", get(feed::current))
        .route("/api/v1/delta/{root}", get(delta::delta))
        .route("/api/v1/follow/status", get(feed::follow_status))
        .route(
            tracker::API_PATH,
            get(tracker::list).merge(post(tracker::announce)),
        )
        .route("/api/v1/resolve", get(lookup::resolve_api))
        .route("/by-hash/{algo}/{hex}", get(lookup::by_hash))
        .route("/cluster/{name}/service.json", get(cluster::service_json))
        .merge(gateway::routes())
        .route("/{repo}/os/{arch}/{file}", get(mirror::file))
        .fallback(not_found)
        .layer(middleware::from_fn(unsized_not_modified))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// Bytes a connection's socket may hold that the kernel has not sent yet
/// (`TCP_NOTSENT_LOWAT`): past them the socket stops taking bytes until the client reads.
/// Without it the kernel grows a slow reader's send buffer to megabytes (4 MiB at most,
/// `net.ipv4.tcp_wmem`), all of it kernel memory: 2,000 slow readers of a large package
/// held 1.6 GB of send buffers (815 KB each; 127 KB with it, bench/slow_readers.sh and
/// `ss`). Bytes in flight (sent, not yet acknowledged) are not limited by it, so a fast
/// client on a long link still fills its window.
const UNSENT_MAX: u32 = 128 << 10;

/// What hyper buffers per HTTP/1 connection, reading a request or queueing a response's
/// pieces before the socket takes them (hyper's default is 400 KiB): a slow reader holds
/// at most this much plus one piece (body.rs). A request's head must fit in it: 16 KiB is
/// twice nginx's default buffer for one header line (`large_client_header_buffers`).
const HTTP1_BUF_MAX: usize = 16 << 10;

/// Serves `state` on `listener` until `shutdown` resolves, then lets running requests
/// finish for at most `limits.shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let app = router(state.clone());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Connections still waiting for their first byte: not hyper's yet, so not graceful's.
    let stopping = CancellationToken::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(HTTP1_BUF_MAX)
        // Body chunks queued as they are, never copied together: what lets markers
        // through to SendfileIo (see sendfile.rs). Never add `pipeline_flush(true)` here:
        // it makes hyper copy bodies into one buffer.
        .writev(true)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("connection limit reached: closing a new connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Best effort: a connection is served without it.
        let _ = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(UNSENT_MAX);
        let metrics = state.metrics().clone();
        metrics.connection(1);
        let (builder, app, watcher) = (builder.clone(), app.clone(), graceful.watcher());
        let (header_timeout, stopping) = (limits.header_timeout, stopping.clone());
        tokio::spawn(async move {
            if first_byte(&stream, header_timeout, &stopping).await {
                // Handlers that limit per client (the tracker) read the peer address.
                let app = tower::util::MapRequest::new(
                    app,
                    move |mut req: Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(ConnectInfo(peer));
                        req
                    },
                );
                // Whole files go out by sendfile on HTTP/1 (see sendfile.rs).
                let queue = Arc::new(sendfile::SendQueue::default());
                let io = sendfile::SendfileIo::new(stream, Arc::clone(&queue));
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(app))
                    .into_owned();
                if let Err(e) = sendfile::with_queue(queue, watcher.watch(conn)).await {
                    tracing::debug!("connection ended: {e}");
                }
            } else {
                tracing::debug!("connection closed: nothing sent within {header_timeout:?}");
            }
            metrics.connection(-1);
            drop(slot);
        });
    }
    stopping.cancel();
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!("shutdown: downloads still running after {:?} were cut", limits.shutdown_grace);
        }
    }
    Ok(())
}

/// Waits until the client sends something (or hangs up), at most `timeout`; false if it did
/// not or the server is stopping. hyper's header timeout only starts once the first bytes
/// have told `auto::Builder` the protocol, so without this a client that connects and sends
/// nothing would hold its connection slot forever.
async fn first_byte(stream: &TcpStream, timeout: Duration, stopping: &CancellationToken) -> bool {
    let mut byte = [0u8; 1];
    tokio::select! {
        r = tokio::time::timeout(timeout, stream.peek(&mut byte)) => matches!(r, Ok(Ok(_))),
        () = stopping.cancelled() => false,
    }
}
