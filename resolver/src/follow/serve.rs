//! pacman's mirror paths on a follower: the file from the store when held, else from a
//! transfer (shared by every client asking meanwhile) streamed as it is verified.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use cidmirror_store::{Expected, Store, unixfs};
use futures::StreamExt;

use super::transfer::{Progress, Want};
use super::view::{Resolved, View};
use crate::AppState;
use crate::body::{
    FileMeta, file_headers, file_response, if_range_holds, not_modified, parse_range,
};
use crate::error::{ApiError, ApiResult};
use crate::snapshot::Current;

/// How long a request waits for a transfer's first verified bytes before answering: a
/// transfer that fails before then gets a clean error status instead of a cut body.
const FIRST_BYTES: Duration = Duration::from_secs(5);

/// `GET`/`HEAD /<repo>/os/<arch>/<file>` on a follower.
pub(crate) async fn file(
    state: &AppState,
    cur: &Current,
    view: &View,
    method: &Method,
    headers: &HeaderMap,
    (repo, arch, file): (&str, &str, &str),
) -> ApiResult<Response> {
    let path = format!("{repo}/os/{arch}/{file}");
    let Some(resolved) = view.lookup(repo, arch, file) else {
        return Err(ApiError::NotFound(format!(
            "{path} is not in snapshot {}",
            cur.seq
        )));
    };
    send(state, view, method, headers, path, resolved, "mirror").await
}

/// Sends a file of the current snapshot (`path` names it in errors and logs): from the
/// store when held, else from a transfer streamed as it is verified (against its CID, and
/// its size and SHA-256 when `resolved` knows them). `route` labels the bytes in metrics.
pub(crate) async fn send(
    state: &AppState,
    view: &View,
    method: &Method,
    headers: &HeaderMap,
    path: String,
    resolved: Resolved,
    route: &'static str,
) -> ApiResult<Response> {
    let Some(follower) = state.follow() else {
        return Err(ApiError::Internal("not a follower".into()));
    };
    let cid = resolved.cid();
    let since = view.since.get(&path).copied();
    let meta = FileMeta {
        cid,
        content_type: "application/octet-stream",
        etag: cid.to_string(),
        last_modified: since,
        cache_control: Some(if since.is_some() {
            "no-cache"
        } else {
            "public, max-age=31536000, immutable"
        }),
    };
    let guard = follower.cache().serving(cid);
    // A kept file found bad here is quarantined and fetched again like one not held.
    let store = state.store().clone();
    let trusted = tokio::task::spawn_blocking(move || store.trusted_file(&cid))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??
        .is_some();
    let held = trusted
        || (state.store().has(&cid).await? && unixfs::complete(state.store(), &cid).await?);
    if held {
        match file_response(state, method, headers, meta.clone(), route).await {
            Ok(resp) => return Ok(keep_while_sending(resp, guard)),
            // Blocks went missing since the look above (found corrupt and quarantined,
            // evicted): fetched again like a file not held.
            Err(ApiError::Unavailable { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let etag = format!("\"{cid}\"");
    let mut b = file_headers(&meta, &etag);
    if not_modified(headers, &meta, &etag) {
        return b
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .map_err(|e| ApiError::Internal(e.to_string()));
    }
    let params = view
        .manifest()
        .profile()
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .params();
    let expected = match resolved {
        Resolved::Package { size, sha256, .. } => Some(Expected { size, sha256 }),
        Resolved::Other(_) => None,
    };
    let t = follower
        .transfers()
        .get(Want {
            cid,
            expected,
            path: path.clone(),
            params,
        })
        .map_err(ApiError::Internal)?;
    let size = match tokio::time::timeout(Duration::from_secs(60), t.size()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(ApiError::Upstream(format!("{path}: {e}"))),
        Err(_) => {
            return Err(ApiError::Upstream(format!(
                "{path}: no source answered within 60 s"
            )));
        }
    };
    let mut ranges = HeaderMap::new();
    if let Some(v) = headers.get(header::RANGE)
        && if_range_holds(headers, &meta, &etag)
    {
        ranges.insert(header::RANGE, v.clone());
    }
    let range = parse_range(&ranges, size)?;
    let span = range.clone().unwrap_or(0..size);
    if let Some(r) = &range {
        b = b.status(StatusCode::PARTIAL_CONTENT).header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{size}", r.start, r.end.saturating_sub(1)),
        );
    }
    b = b.header(header::CONTENT_LENGTH, span.end - span.start);
    if method == Method::HEAD {
        return b
            .body(Body::empty())
            .map_err(|e| ApiError::Internal(e.to_string()));
    }
    // The first verified bytes, or a clean error if the transfer fails before them.
    let mut rx = t.subscribe();
    let waited = tokio::time::timeout(FIRST_BYTES, async {
        loop {
            let p = rx.borrow_and_update().clone();
            match p {
                Progress::Running { ready, .. } if ready > span.start => return Ok(()),
                Progress::Done { .. } => return Ok(()),
                Progress::Failed(e) => return Err(e),
                Progress::Running { .. } => {}
            }
            if rx.changed().await.is_err() {
                return Err("transfer ended".to_string());
            }
        }
    })
    .await;
    if let Ok(Err(e)) = waited {
        return Err(ApiError::Upstream(format!("{path}: {e}")));
    }
    let metrics = state.metrics().clone();
    let stream = t.stream(span).map(move |r| {
        let _keep = &guard;
        if let Ok(b) = &r {
            metrics.bytes_served(route, b.len() as u64);
        }
        r
    });
    b.body(Body::from_stream(stream))
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// Holds `guard` (the file counts as being served) until the body is sent.
fn keep_while_sending(resp: Response, guard: super::cache::Serving) -> Response {
    let (parts, body) = resp.into_parts();
    let stream = body.into_data_stream().map(move |r| {
        let _keep = &guard;
        r
    });
    Response::from_parts(parts, Body::from_stream(stream))
}
