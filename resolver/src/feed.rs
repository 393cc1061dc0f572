//! The snapshot feed: `/feed` (server-sent events, one per snapshot, replayed from
//! `Last-Event-ID`), `/api/v1/snapshot/current` for pollers, and `/metrics`.

use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cidmirror_schema::publisher::{held, snapshots, syncs};
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::snapshot::Current;

/// One snapshot as the feed and `/api/v1/snapshot/current` announce it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotEvent {
    /// Sequence number.
    pub seq: u64,
    /// Root CID.
    pub root: String,
    /// The previous snapshot's root.
    pub previous: Option<String>,
    /// When it was published (RFC 3339).
    pub published_at: String,
    /// ed25519 signature over (seq, root, previous), hex.
    pub signature: String,
}

impl From<&Current> for SnapshotEvent {
    fn from(c: &Current) -> Self {
        SnapshotEvent {
            seq: c.seq,
            root: c.root.to_string(),
            previous: c.previous.map(|p| p.to_string()),
            published_at: humantime::format_rfc3339_seconds(c.published_at).to_string(),
            signature: hex::encode(&c.signature),
        }
    }
}

fn event(e: &SnapshotEvent) -> Event {
    Event::default()
        .id(e.seq.to_string())
        .event("snapshot")
        .data(serde_json::to_string(e).unwrap_or_default())
}

/// `GET /api/v1/snapshot/current`.
pub async fn current(State(state): State<AppState>) -> ApiResult<Response> {
    let cur = state.current()?;
    let mut resp = Json(SnapshotEvent::from(cur.as_ref())).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

/// Snapshots after `after` recorded in the publisher's database, oldest first.
async fn recorded_after(state: &AppState, after: u64, upto: u64) -> Vec<SnapshotEvent> {
    let Some(db) = state.snapshots().db().cloned() else {
        return Vec::new();
    };
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for seq in after + 1..=upto {
            if let Ok(Some(s)) = db.read(|c| snapshots::get(c, seq)) {
                out.push(SnapshotEvent::from(&Current::from(&s)));
            }
        }
        out
    })
    .await
    .unwrap_or_default()
}

/// `GET /feed`: every snapshot after `Last-Event-ID` (none: from the current one), then
/// each new one as it is published.
pub async fn feed(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let last: Option<u64> = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let rx = state.snapshots().subscribe();
    Sse::new(snapshot_events(state, last, rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn snapshot_events(
    state: AppState,
    last: Option<u64>,
    rx: tokio::sync::watch::Receiver<Option<std::sync::Arc<Current>>>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(
        (
            state,
            last,
            rx,
            std::collections::VecDeque::<SnapshotEvent>::new(),
            true,
        ),
        |(state, mut sent, mut rx, mut queue, mut first)| async move {
            loop {
                if let Some(e) = queue.pop_front() {
                    sent = Some(e.seq);
                    return Some((Ok(event(&e)), (state, sent, rx, queue, first)));
                }
                let cur = rx.borrow_and_update().clone();
                if let Some(c) = cur {
                    match sent {
                        Some(s) if c.seq > s => {
                            // Replay what was missed, from the records when there are any.
                            let mut missed = recorded_after(&state, s, c.seq).await;
                            if missed.last().is_none_or(|m| m.seq != c.seq) {
                                missed.retain(|m| m.seq < c.seq);
                                missed.push(SnapshotEvent::from(c.as_ref()));
                            }
                            queue.extend(missed);
                            continue;
                        }
                        None if first => {
                            queue.push_back(SnapshotEvent::from(c.as_ref()));
                            first = false;
                            continue;
                        }
                        _ => {}
                    }
                }
                first = false;
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        },
    )
}

/// `GET /api/v1/follow/status`: a follower's report (what `cidmirror status` prints).
pub async fn follow_status(State(state): State<AppState>) -> ApiResult<Response> {
    let Some(f) = state.follow() else {
        return Err(ApiError::NotFound(
            "this gateway follows no publisher".into(),
        ));
    };
    let mut resp = Json(f.report().await).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    if let Some(c) = state.snapshots().current() {
        let age = SystemTime::now()
            .duration_since(c.published_at)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        state.metrics().snapshot(c.seq, age);
    }
    if let Some(f) = state.follow() {
        state.metrics().follow(&f.report().await);
    }
    if let Some(t) = state.tracker() {
        state.metrics().volunteers(t.live());
    }
    let store = state.store().clone();
    let scrub_period = cidmirror_store::scrub::ScrubConfig::default().every;
    let integrity = tokio::task::spawn_blocking(move || {
        let before = cidmirror_schema::UnixTime::now()
            .plus_secs(-i64::try_from(scrub_period.as_secs()).unwrap_or(0));
        store.integrity(before)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    state.metrics().integrity(&integrity);
    if let Some(db) = state.snapshots().db().cloned() {
        let (counts, held) = tokio::task::spawn_blocking(move || {
            Ok::<_, cidmirror_schema::Error>((db.read(syncs::counts)?, db.read(held::get)?))
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
        for (outcome, n) in counts {
            state.metrics().syncs(&outcome, n);
        }
        state.metrics().sync_held(held.map_or(0, |h| h.syncs));
    }
    if let Some(cur) = state.snapshots().current() {
        use cidmirror_schema::publisher::{aur, settings};
        let counts = match (&cur.follow, state.snapshots().db().cloned()) {
            (Some(view), _) => {
                let (b, n, s) = view.listing.aur().fold((0, 0, 0), |(b, n, s), e| {
                    (
                        b + 1,
                        n + e.base.sources.len() as u64,
                        s + e.base.sources.iter().map(|x| x.file.size).sum::<u64>(),
                    )
                });
                crate::metrics::AurCounts {
                    bases: b,
                    sources: n,
                    bytes: s,
                    skipped: None,
                    failed: None,
                }
            }
            (None, Some(db)) => {
                let seq = cur.seq;
                let (c, failed) = tokio::task::spawn_blocking(move || {
                    Ok::<_, cidmirror_schema::Error>((
                        db.read(|c| aur::counts(c, seq))?,
                        db.read(|c| settings::get(c, aur::FAILED_KEY))?,
                    ))
                })
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))??;
                crate::metrics::AurCounts {
                    bases: c.0,
                    sources: c.1,
                    bytes: c.2,
                    skipped: Some(c.3),
                    failed: Some(
                        failed
                            .unwrap_or_default()
                            .lines()
                            .filter(|l| !l.is_empty())
                            .count() as u64,
                    ),
                }
            }
            (None, None) => crate::metrics::AurCounts::default(),
        };
        state.metrics().aur(&counts);
    }
    let mut resp = state.metrics().encode().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(resp)
}
