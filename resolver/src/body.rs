//! Sending files: byte ranges, conditional requests, and bodies streamed straight from the
//! embedded store's kept files (or block by block from any store).

use std::ops::Range;
use std::time::SystemTime;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use cid::Cid;
use cidmirror_store::{Store, unixfs};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// Pieces a kept file is read in.
const PIECE: usize = 256 << 10;

/// The single byte range a `Range` header asks for, clamped to `size`; `None` for the whole
/// file (no header, a header that is not a single `bytes=` range: RFC 9110 lets a server
/// ignore those). A range starting at or past the end is an error.
pub fn parse_range(headers: &HeaderMap, size: u64) -> ApiResult<Option<Range<u64>>> {
    let Some(v) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let Ok(v) = v.to_str() else { return Ok(None) };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        // The last N bytes.
        let Ok(n) = b.parse::<u64>() else {
            return Ok(None);
        };
        if n == 0 {
            return Err(ApiError::RangeNotSatisfiable { size });
        }
        size.saturating_sub(n)..size
    } else {
        let Ok(start) = a.parse::<u64>() else {
            return Ok(None);
        };
        let end = if b.is_empty() {
            size
        } else {
            match b.parse::<u64>() {
                Ok(last) if last >= start => last.saturating_add(1).min(size),
                _ => return Ok(None),
            }
        };
        if start >= size {
            return Err(ApiError::RangeNotSatisfiable { size });
        }
        start..end
    };
    Ok(Some(range))
}

/// How to present a file.
#[derive(Debug, Clone)]
pub struct FileMeta {
    /// The file.
    pub cid: Cid,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// `ETag` (quoted by this function).
    pub etag: String,
    /// `Last-Modified`, and the time `If-Modified-Since` is compared with.
    pub last_modified: Option<SystemTime>,
    /// `Cache-Control`.
    pub cache_control: Option<&'static str>,
}

/// Whether conditional headers say the client's copy is current.
fn not_modified(headers: &HeaderMap, meta: &FileMeta, etag: &str) -> bool {
    if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        return inm
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.trim_start_matches("W/") == etag);
    }
    if let (Some(lm), Some(ims)) = (
        meta.last_modified,
        headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok()),
    ) {
        // HTTP dates have whole seconds.
        let lm_secs = lm
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let ims_secs = ims
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        return lm_secs <= ims_secs;
    }
    false
}

/// A full `GET`/`HEAD` answer for a file: 200, 206 or 304, streamed.
pub async fn file_response(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    meta: FileMeta,
    route: &'static str,
) -> ApiResult<Response> {
    let store = state.store().clone();
    let cid = meta.cid;
    let whole = tokio::task::spawn_blocking(move || store.whole_file(&cid))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let size = match &whole {
        Some((_, size)) => {
            state.metrics().store_hit();
            *size
        }
        None => {
            let st = unixfs::stat(state.store(), &cid).await;
            match st {
                Ok(st) if matches!(st.kind, unixfs::Kind::File | unixfs::Kind::Raw) => st.size,
                Ok(st) if st.kind.is_dir() => {
                    return Err(ApiError::NotFound(format!("{cid} is a directory")));
                }
                Ok(_) => return Err(ApiError::NotFound(format!("{cid} is not a file"))),
                Err(e) => {
                    state.metrics().store_miss();
                    return Err(e.into());
                }
            }
        }
    };
    let etag = format!("\"{}\"", meta.etag);
    let mut b = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, meta.content_type);
    if let Some(lm) = meta.last_modified {
        b = b.header(header::LAST_MODIFIED, httpdate::fmt_http_date(lm));
    }
    if let Some(cc) = meta.cache_control {
        b = b.header(header::CACHE_CONTROL, cc);
    }
    if not_modified(headers, &meta, &etag) {
        return b
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .map_err(|e| ApiError::Internal(e.to_string()));
    }
    let range = parse_range(headers, size)?;
    let (status, span) = match &range {
        Some(r) => {
            b = b.header(
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{size}", r.start, r.end.saturating_sub(1)),
            );
            (StatusCode::PARTIAL_CONTENT, r.clone())
        }
        None => (StatusCode::OK, 0..size),
    };
    b = b
        .status(status)
        .header(header::CONTENT_LENGTH, span.end - span.start);
    if method == Method::HEAD {
        return b
            .body(Body::empty())
            .map_err(|e| ApiError::Internal(e.to_string()));
    }
    let metrics = state.metrics().clone();
    let body = match whole {
        Some((path, _)) => {
            let mut f = tokio::fs::File::open(&path)
                .await
                .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?;
            if span.start > 0 {
                f.seek(std::io::SeekFrom::Start(span.start))
                    .await
                    .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?;
            }
            let stream = ReaderStream::with_capacity(f.take(span.end - span.start), PIECE).inspect(
                move |c| {
                    if let Ok(b) = c {
                        metrics.bytes_served(route, b.len() as u64);
                    }
                },
            );
            Body::from_stream(stream)
        }
        None => {
            let (_, stream) = state.store().read(&cid, Some(span)).await?;
            let stream = stream.map(move |c| {
                c.inspect(|b: &Bytes| metrics.bytes_served(route, b.len() as u64))
                    .map_err(|e| std::io::Error::other(e.to_string()))
            });
            Body::from_stream(stream)
        }
    };
    b.body(body).map_err(|e| ApiError::Internal(e.to_string()))
}

/// A header value from text that is known to be valid (CIDs, numbers).
pub fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(h: &str, size: u64) -> ApiResult<Option<Range<u64>>> {
        let mut m = HeaderMap::new();
        m.insert(header::RANGE, HeaderValue::from_str(h).unwrap());
        parse_range(&m, size)
    }

    #[test]
    fn ranges_table() {
        assert_eq!(range("bytes=0-0", 10).unwrap(), Some(0..1));
        assert_eq!(range("bytes=2-5", 10).unwrap(), Some(2..6));
        assert_eq!(range("bytes=5-", 10).unwrap(), Some(5..10));
        assert_eq!(range("bytes=-3", 10).unwrap(), Some(7..10));
        assert_eq!(range("bytes=-30", 10).unwrap(), Some(0..10));
        assert_eq!(range("bytes=8-50000000000", 10).unwrap(), Some(8..10));
        assert_eq!(range("bytes=0-53687091200", 10).unwrap(), Some(0..10));
        assert!(matches!(
            range("bytes=10-", 10),
            Err(ApiError::RangeNotSatisfiable { size: 10 })
        ));
        assert!(matches!(
            range("bytes=53687091200-", 10),
            Err(ApiError::RangeNotSatisfiable { .. })
        ));
        assert!(range("bytes=-0", 10).is_err());
        // Not a single bytes range: the whole file.
        for h in [
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=5-2",
            "bytes=a-b",
            "bytes=",
            "bytes=-",
        ] {
            assert_eq!(range(h, 10).unwrap(), None, "{h}");
        }
    }
}
