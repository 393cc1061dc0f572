//! Sending files: byte ranges, conditional requests, and bodies sent straight from the
//! embedded store's kept files (or block by block from any store).
//!
//! A kept file is immutable and named by its hash: a span of up to [`READ_MAX`] bytes is
//! read into memory at once; a longer one is memory-mapped [`WINDOW`] bytes at a time and
//! handed to hyper as [`PIECE`]-sized slices of the mappings, so its bytes are copied once
//! (page cache to socket), with no read loop on the blocking pool. The file is looked up, opened and its
//! first window loaded in one trip to the blocking pool; the window after the one being
//! sent is mapped ahead with a read-ahead hint, so a file that is not in the page cache
//! rarely makes a worker thread wait for the disk. Garbage collection only unlinks kept
//! files, which leaves a mapping valid on Linux; nothing truncates or rewrites one in
//! place.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use cid::Cid;
use cidmirror_store::{Store, TrustedFile, unixfs};
use futures::StreamExt;

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// Spans of a kept file up to this size are read into memory; longer ones are mapped. A
/// span read whole stays in memory until its slow reader has taken it: small.
const READ_MAX: u64 = 128 << 10;

/// Bytes of a kept file a download maps at once (plus the next window, mapped ahead).
/// Mapped pages count in the server's resident memory once touched; they are let go of
/// piece by piece as hyper finishes with each (see [`Piece`]).
const WINDOW: u64 = 1 << 20;

/// Pieces a kept file's span is handed to hyper in (and counted in the metrics): what a
/// slow reader keeps resident is about one piece (hyper queues a few more, untouched, so
/// not resident). 2,000 slow readers of a large file were 1.8 GB RSS with 1 MiB pieces and
/// the first window populated (bench/slow_readers.sh measures it).
const PIECE: usize = 64 << 10;

/// Bytes a download sends per turn of its task: it yields after them, so a worker thread
/// moves on to other connections: without it, one turn of a download writes until the
/// socket buffer is full (megabytes on loopback), and a new request waits for a turn of
/// every running download first (p50 / p99 time to first byte 53 / 120 ms without yields).
/// The size trades that latency against CPU per byte (every turn is another poll of the
/// connection). bench/serve.sh, 64 clients on 2 cores, medians of 5 rounds, 1 MiB against
/// 256 KiB turns in the same runs: with a one-thread load generator 1.35x nginx's
/// throughput (256 KiB: 1.30x) and p99 TTFB 43 ms (36 ms); with a two-thread one, where the
/// machine is CPU-bound, 0.92x nginx (0.81x) and p99 TTFB 44 ms, nginx's 45 ms (22 ms).
const TURN: usize = 1 << 20;

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

/// Whether a `Range` may be honoured: no `If-Range`, or one that names this version (the
/// strong ETag, or exactly the `Last-Modified` date). A client resuming a database that
/// has changed since must not splice bytes of two versions together.
pub(crate) fn if_range_holds(headers: &HeaderMap, meta: &FileMeta, etag: &str) -> bool {
    let Some(v) = headers.get(header::IF_RANGE) else {
        return true;
    };
    let Ok(v) = v.to_str() else {
        return false;
    };
    let v = v.trim();
    if v.starts_with('"') {
        return v == etag;
    }
    match (meta.last_modified, httpdate::parse_http_date(v)) {
        (Some(lm), Ok(date)) => httpdate::fmt_http_date(lm) == httpdate::fmt_http_date(date),
        _ => false,
    }
}

/// Whether conditional headers say the client's copy is current.
pub(crate) fn not_modified(headers: &HeaderMap, meta: &FileMeta, etag: &str) -> bool {
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

/// The headers every answer about a file carries: `ETag` (already quoted),
/// `Accept-Ranges`, `Content-Type`, and `Last-Modified` and `Cache-Control` when `meta` has
/// them.
pub(crate) fn file_headers(meta: &FileMeta, etag: &str) -> axum::http::response::Builder {
    let mut b = Response::builder()
        .header(header::ETAG, etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, meta.content_type);
    if let Some(lm) = meta.last_modified {
        b = b.header(header::LAST_MODIFIED, httpdate::fmt_http_date(lm));
    }
    if let Some(cc) = meta.cache_control {
        b = b.header(header::CACHE_CONTROL, cc);
    }
    b
}

/// A full `GET`/`HEAD` answer for a file: 200, 206 or 304, streamed.
pub async fn file_response(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    meta: FileMeta,
    route: &'static str,
) -> ApiResult<Response> {
    let etag = format!("\"{}\"", meta.etag);
    let fresh = not_modified(headers, &meta, &etag);
    // A kept file is looked up and, when its bytes will be sent, loaded in one trip to the
    // blocking pool: under load every trip back waits behind the running downloads.
    let want_body = method != Method::HEAD && !fresh;
    // The only header the ranges below are read from: `Range`, unless `If-Range` names
    // another version of the file (then the whole file goes out, RFC 9110 13.1.5).
    let mut range_only = HeaderMap::new();
    if let Some(v) = headers.get(header::RANGE)
        && if_range_holds(headers, &meta, &etag)
    {
        range_only.insert(header::RANGE, v.clone());
    }
    let store = state.store().clone();
    let cid = meta.cid;
    let ranges = range_only.clone();
    let whole = tokio::task::spawn_blocking(move || -> ApiResult<Option<(u64, Option<Kept>)>> {
        // Only a kept file known good since it last changed on disk (checked now if need
        // be); a bad one is quarantined and the DAG read block by block, each block checked.
        let Some(trusted) = store.trusted_file(&cid)? else {
            return Ok(None);
        };
        let size = trusted.size;
        // An unsatisfiable range loads nothing: it is answered below.
        let span = match parse_range(&ranges, size) {
            Ok(r) if want_body => Some(r.unwrap_or(0..size)),
            _ => None,
        };
        let kept = span.map(|span| Kept::open(trusted, span)).transpose()?;
        Ok(Some((size, kept)))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    let size = match &whole {
        Some((size, _)) => {
            state.metrics().store_hit();
            *size
        }
        None => {
            let st = unixfs::stat(state.store(), &cid).await;
            match st {
                // Block by block: answer only if every block is held (a kept file found bad
                // was quarantined and its leaves are gone until it is repaired), so that a
                // client gets a clean status instead of a cut body.
                Ok(st)
                    if matches!(st.kind, unixfs::Kind::File | unixfs::Kind::Raw)
                        && !unixfs::complete(state.store(), &cid).await? =>
                {
                    state.metrics().store_miss();
                    return Err(ApiError::Unavailable {
                        what: format!("{cid}: not all of its blocks are held here"),
                        retry_after: std::time::Duration::from_secs(60),
                    });
                }
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
    let mut b = file_headers(&meta, &etag);
    if fresh {
        return b
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .map_err(|e| ApiError::Internal(e.to_string()));
    }
    let range = parse_range(&range_only, size)?;
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
        Some((_, kept)) => {
            // Opened above for exactly this span (the same headers, the same size).
            let kept = kept.ok_or_else(|| ApiError::Internal("kept file not opened".into()))?;
            let stream = futures::stream::unfold(
                (kept, metrics, 0usize),
                move |(mut kept, metrics, mut turn)| async move {
                    if kept.done() {
                        return None;
                    }
                    // At most TURN bytes per turn: see TURN.
                    if turn >= TURN {
                        tokio::task::yield_now().await;
                        turn = 0;
                    }
                    let piece = kept.piece();
                    match &piece {
                        Ok(b) => {
                            metrics.bytes_served(route, b.len() as u64);
                            turn += b.len();
                        }
                        Err(_) => kept.stop(),
                    }
                    Some((piece, (kept, metrics, turn)))
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

/// The span of a kept file being sent: bytes ready to go, then the rest of the file mapped
/// window by window. The last piece goes out only if the file is still what was checked.
struct Kept {
    /// The file, while windows remain to be mapped or its last piece is held back.
    file: Option<TrustedFile>,
    path: PathBuf,
    /// A short span, read whole.
    short: Bytes,
    /// The window being sent and how far into it.
    cur: Option<(Arc<memmap2::Mmap>, usize)>,
    /// The window after it, mapped ahead.
    ahead: Option<Arc<memmap2::Mmap>>,
    /// Where the next window to map starts, and where the span ends.
    pos: u64,
    end: u64,
}

/// One piece of a mapped window, as hyper holds it. When hyper is done with it (written
/// to the socket), its pages leave this process's page tables: what a slow reader keeps
/// resident is the piece it is on, not every window page it has been sent.
struct Piece {
    map: Arc<memmap2::Mmap>,
    start: usize,
    len: usize,
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.start..self.start + self.len]
    }
}

impl Drop for Piece {
    fn drop(&mut self) {
        // SAFETY: the mapping is read-only and shared, of a file nothing writes (see the
        // module's documentation): dropping its page-table entries loses nothing, and a
        // later read of those pages (a neighbouring piece sharing a page) faults them back
        // in from the page cache.
        let _ = unsafe {
            self.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                self.start,
                self.len,
            )
        };
    }
}

impl Kept {
    /// Opens `span` of the kept file at `path` (blocking): reads it when short, else maps
    /// its first window and reads its pages into the page cache here, on the blocking pool,
    /// not in the first write to the socket (then lets go of them: they are touched again
    /// piece by piece), and maps the second one ahead.
    fn open(trusted: TrustedFile, span: Range<u64>) -> ApiResult<Kept> {
        use std::os::unix::fs::FileExt;
        let path = trusted.path.clone();
        let path = path.as_path();
        let f = &trusted.file;
        let len = span.end - span.start;
        let mut kept = Kept {
            file: None,
            path: path.to_path_buf(),
            short: Bytes::new(),
            cur: None,
            ahead: None,
            pos: span.end,
            end: span.end,
        };
        if len <= READ_MAX {
            let mut buf = vec![0; len as usize];
            f.read_exact_at(&mut buf, span.start)
                .map_err(|e| io_error(path, e))?;
            if !trusted.unchanged() {
                return Err(ApiError::Internal(format!(
                    "{}: changed on disk while being read",
                    path.display()
                )));
            }
            kept.short = Bytes::from(buf);
            return Ok(kept);
        }
        // A mapping past the end of the file would fault (SIGBUS) when read.
        let on_disk = f.metadata().map_err(|e| io_error(path, e))?.len();
        if on_disk < span.end {
            return Err(ApiError::Internal(format!(
                "{}: {on_disk} bytes, the index says at least {}",
                path.display(),
                span.end
            )));
        }
        kept.file = Some(trusted);
        kept.pos = span.start;
        let first = kept.map_window(true).map_err(|e| io_error(path, e))?;
        if let Some(m) = &first {
            // SAFETY: as in `Piece::drop`.
            let _ = unsafe { m.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
        kept.cur = first.map(|m| (m, 0));
        kept.ahead = kept.map_window(false).map_err(|e| io_error(path, e))?;
        Ok(kept)
    }

    /// Maps the next window (`None` at the end of the span).
    fn map_window(&mut self, populate: bool) -> std::io::Result<Option<Arc<memmap2::Mmap>>> {
        let len = WINDOW.min(self.end - self.pos);
        let Some(f) = self.file.as_ref().filter(|_| len > 0).map(|t| &t.file) else {
            return Ok(None);
        };
        let mut opts = memmap2::MmapOptions::new();
        opts.offset(self.pos).len(len as usize);
        if populate {
            opts.populate();
        }
        // SAFETY: kept files are never modified or truncated once renamed into place (see
        // the module's documentation), and `open` checked that the span is in the file.
        let map = unsafe { opts.map(f) }?;
        // Hints only: the kernel reads the window ahead, in order.
        let _ = map.advise(memmap2::Advice::Sequential);
        let _ = map.advise(memmap2::Advice::WillNeed);
        self.pos += len;
        Ok(Some(Arc::new(map)))
    }

    fn done(&self) -> bool {
        self.short.is_empty()
            && self.cur.as_ref().is_none_or(|(m, at)| *at >= m.len())
            && self.ahead.is_none()
    }

    /// Ends the span early (after an error).
    fn stop(&mut self) {
        self.short = Bytes::new();
        self.cur = None;
        self.ahead = None;
        self.file = None;
    }

    /// The next piece of at most [`PIECE`] bytes; call only while not [`done`](Self::done).
    /// The window after the one it starts is mapped ahead.
    fn piece(&mut self) -> std::io::Result<Bytes> {
        if !self.short.is_empty() {
            let n = PIECE.min(self.short.len());
            return Ok(self.short.split_to(n));
        }
        if self.cur.as_ref().is_none_or(|(m, at)| *at >= m.len()) {
            self.cur = self.ahead.take().map(|m| (m, 0));
            self.ahead = self.map_window(false).map_err(|e| {
                std::io::Error::new(e.kind(), format!("{}: {e}", self.path.display()))
            })?;
        }
        let Some((map, at)) = self.cur.as_mut() else {
            return Ok(Bytes::new());
        };
        let n = PIECE.min(map.len() - *at);
        let piece = Bytes::from_owner(Piece {
            map: map.clone(),
            start: *at,
            len: n,
        });
        *at += n;
        // The last piece: only if the file did not change while it was sent (a client
        // then sees a cut transfer, never a complete one with other bytes).
        if self.done()
            && let Some(t) = &self.file
            && !t.unchanged()
        {
            self.stop();
            return Err(std::io::Error::other(format!(
                "{}: changed on disk while being sent",
                self.path.display()
            )));
        }
        Ok(piece)
    }
}

fn io_error(path: &Path, e: std::io::Error) -> ApiError {
    ApiError::Internal(format!("{}: {e}", path.display()))
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
