//! Sending files: byte ranges, conditional requests, and bodies sent straight from the
//! embedded store's kept files (or block by block from any store).
//!
//! On an HTTP/1 connection that `serve` accepted, the middle of a long span goes out by
//! `sendfile` (see [`crate::sendfile`]): its first piece is read as below, then the kernel
//! sends the file from the page cache in spans of up to 1 MiB, and the last [`TAIL`] bytes
//! are read and sent only after all of those went out and the file is still unchanged.
//! bench/serve.sh (64 clients, 2 cores, medians of 5 rounds in one run, against the build
//! before): server CPU per GB 0.25 s against 0.42 s, p99 time to first byte 17 against
//! 29 ms, the same throughput (0.98x; on loopback the kernel's receive work moves to the
//! client: server plus client CPU per run 2.77 against 3.15 s). Everything else (HTTP/2, short spans, handlers called without a socket) is sent
//! in pieces:
//!
//! A kept file is immutable and named by its hash. Its span is read with `pread` into
//! pieces that hyper writes to the socket and then frees, so what a download holds is the
//! piece it is on (and what hyper buffers, `HTTP1_BUF_MAX` in lib.rs), however slowly the
//! client reads. Pieces start at [`PIECE_MIN`] bytes and grow to [`PIECE_MAX`] while the
//! client keeps up (see [`Pace`]): small pieces cost a slow reader little memory, big ones
//! cost a fast client fewer system calls. The file is looked up, opened and its first piece
//! read in one trip to the blocking pool; the kernel is asked to read [`AHEAD`] bytes ahead
//! of the download, so a piece's `pread` rarely waits for the disk.
//!
//! Why not memory-map the file (as this module did): on Linux 6.x the page cache holds
//! large folios, and the first touch of a mapped folio maps all of it, so every slow reader
//! kept up to a whole mapped window resident (1.4 GB RSS for 2,000 slow readers of one
//! package), and mapping and unmapping per window cost more CPU than the copy `pread`
//! makes: bench/serve.sh, 64 clients, medians of 3 rounds in one run, 2,125 MB/s with
//! 64 KiB `pread` pieces against 1,498 MB/s with 1 MiB mapped windows in 64 KiB pieces
//! (0.62 against 0.86 CPU seconds per GB).

use std::ops::Range;
use std::path::{Path, PathBuf};
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

/// Spans of a kept file up to this size are read whole when the file is opened (and held
/// until sent: small).
const READ_MAX: u64 = PIECE_MIN as u64;

/// Bytes the kernel is asked to read ahead of a download (`POSIX_FADV_WILLNEED`), renewed
/// when half of them have been sent.
const AHEAD: u64 = 2 << 20;

/// The pieces a kept file's span is read and handed to hyper in (and counted in the
/// metrics): a download starts with pieces of `PIECE_MIN` bytes and goes up to `PIECE_MAX`
/// while its client keeps up. bench/slow_readers.sh, 2,000 slow readers of a 64 MiB
/// package: 235 MB RSS with 64 KiB pieces throughout, 103 MB with 16 KiB; bench/serve.sh
/// (64 clients, medians of 5 rounds in one run, against 2f1b062, from before kept files
/// were checked on read): 0.90x its throughput with pieces up to 64 KiB, 0.99x with pieces
/// up to 256 KiB. A client that kept up and then stalls holds one piece of up to
/// `PIECE_MAX` until it reads again.
const PIECE_MIN: usize = 16 << 10;
const PIECE_MAX: usize = 256 << 10;

/// Bytes of a download sent before its pieces may grow: more than a slow reader's socket
/// takes before it stops taking (`UNSENT_MAX` in lib.rs plus a small receive window), so
/// the burst every connection starts with does not pass for a fast client.
const GROW_AFTER: u64 = 1 << 20;

/// A piece asked for within this time of the one before means the client keeps up: the
/// pieces double (up to `PIECE_MAX`). 16 KiB in 5 ms is 3.3 MB/s.
const FAST_GAP: std::time::Duration = std::time::Duration::from_millis(5);

/// A piece asked for this long after the one before means the client fell behind: the
/// pieces go back to `PIECE_MIN`.
const SLOW_GAP: std::time::Duration = std::time::Duration::from_millis(100);

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
            if let Some(queue) = crate::sendfile::current_queue()
                && kept.can_sendfile()
            {
                let body = SendfileBody { kept, queue };
                return b
                    .body(Body::from_stream(body.into_stream(metrics, route)))
                    .map_err(|e| ApiError::Internal(e.to_string()));
            }
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

/// The span of a kept file being sent, piece by piece. The last piece goes out only if the
/// file is still what was checked.
struct Kept {
    /// The file, while pieces remain to be read or its last piece is held back.
    file: Option<std::sync::Arc<TrustedFile>>,
    path: PathBuf,
    /// Bytes read already (a short span, or a long one's first piece).
    short: Bytes,
    /// Where the next piece starts, and where the span ends.
    pos: u64,
    end: u64,
    /// Where the kernel has been asked to read ahead to.
    ahead: u64,
    pace: Pace,
}

/// How fast a download's client takes its pieces, and so how big the next one is.
#[derive(Debug)]
struct Pace {
    size: usize,
    sent: u64,
    last: std::time::Instant,
}

impl Pace {
    fn new() -> Pace {
        Pace {
            size: PIECE_MIN,
            sent: 0,
            last: std::time::Instant::now(),
        }
    }

    /// The size of the next piece, asked for at `now`, after `sent` bytes of the span.
    fn next(&mut self, now: std::time::Instant) -> usize {
        let gap = now.saturating_duration_since(self.last);
        self.last = now;
        if gap >= SLOW_GAP {
            self.size = PIECE_MIN;
        } else if gap < FAST_GAP && self.sent >= GROW_AFTER {
            self.size = (self.size * 2).min(PIECE_MAX);
        }
        self.size
    }
}

impl Kept {
    /// Opens `span` of the kept file (blocking): reads it when short, else its first piece,
    /// and asks the kernel to read the next [`AHEAD`] bytes into the page cache, here on the
    /// blocking pool rather than in the first piece read by the download's task.
    fn open(trusted: TrustedFile, span: Range<u64>) -> ApiResult<Kept> {
        use std::os::unix::fs::FileExt;
        let path = trusted.path.clone();
        let path = path.as_path();
        let f = &trusted.file;
        let len = span.end - span.start;
        let first = len.min(READ_MAX);
        let mut buf = vec![0; first as usize];
        f.read_exact_at(&mut buf, span.start)
            .map_err(|e| io_error(path, e))?;
        let mut kept = Kept {
            file: None,
            path: path.to_path_buf(),
            short: Bytes::from(buf),
            pos: span.start + first,
            end: span.end,
            ahead: span.start + first,
            pace: Pace::new(),
        };
        if kept.pos == kept.end {
            if !trusted.unchanged() {
                return Err(ApiError::Internal(format!(
                    "{}: changed on disk while being read",
                    path.display()
                )));
            }
            return Ok(kept);
        }
        kept.file = Some(std::sync::Arc::new(trusted));
        kept.read_ahead();
        Ok(kept)
    }

    /// Keeps the kernel's reading [`AHEAD`] bytes in front of the next piece (a hint: a
    /// piece whose pages are not cached yet is read from disk by its `pread`).
    fn read_ahead(&mut self) {
        let Some(t) = &self.file else { return };
        if self.ahead >= self.end || self.ahead - self.pos > AHEAD / 2 {
            return;
        }
        let to = (self.pos + AHEAD).min(self.end);
        if let Some(len) = std::num::NonZeroU64::new(to - self.ahead) {
            let _ =
                rustix::fs::fadvise(&t.file, self.ahead, Some(len), rustix::fs::Advice::WillNeed);
        }
        self.ahead = to;
    }

    fn done(&self) -> bool {
        self.short.is_empty() && self.pos >= self.end
    }

    /// Ends the span early (after an error).
    fn stop(&mut self) {
        self.short = Bytes::new();
        self.pos = self.end;
        self.file = None;
    }

    /// The next piece (its size set by [`Pace`]); call only while not [`done`](Self::done).
    fn piece(&mut self) -> std::io::Result<Bytes> {
        use std::os::unix::fs::FileExt;
        let size = self.pace.next(std::time::Instant::now());
        let piece = if !self.short.is_empty() {
            let n = size.min(self.short.len());
            self.short.split_to(n)
        } else {
            let Some(t) = &self.file else {
                return Ok(Bytes::new());
            };
            let n = (size as u64).min(self.end - self.pos);
            let mut buf = vec![0; n as usize];
            t.file.read_exact_at(&mut buf, self.pos).map_err(|e| {
                std::io::Error::new(e.kind(), format!("{}: {e}", self.path.display()))
            })?;
            self.pos += n;
            self.read_ahead();
            Bytes::from(buf)
        };
        self.pace.sent += piece.len() as u64;
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

/// The end of a span sent with `sendfile` is read and sent as a piece, after every byte
/// before it went out, so that the file is checked unchanged before its last byte leaves
/// (as for a span sent in pieces).
const TAIL: u64 = PIECE_MIN as u64;

/// Spans whose middle (after the first piece, before [`TAIL`]) is shorter than this are
/// sent in pieces: a `sendfile` would not pay for its bookkeeping.
const SENDFILE_MIN: u64 = 64 << 10;

impl Kept {
    /// Whether the rest of the span is long enough to go by `sendfile`.
    fn can_sendfile(&self) -> bool {
        self.file.is_some() && self.end.saturating_sub(self.pos) >= TAIL + SENDFILE_MIN
    }
}

/// A span of a kept file sent by the kernel (see [`crate::sendfile`]): its first piece (read
/// when it was opened), then markers standing for up to 1 MiB of the file each, then its
/// tail, read and checked once every marker's span went out.
struct SendfileBody {
    kept: Kept,
    queue: std::sync::Arc<crate::sendfile::SendQueue>,
}

impl SendfileBody {
    /// The next chunk: the first piece, a marker, or the tail.
    async fn next(&mut self) -> Option<std::io::Result<Bytes>> {
        if !self.kept.short.is_empty() {
            return Some(Ok(std::mem::take(&mut self.kept.short)));
        }
        let tail_at = self.kept.end.saturating_sub(TAIL);
        if self.kept.pos < tail_at
            && let Some(file) = &self.kept.file
        {
            let len = (tail_at - self.kept.pos).min(crate::sendfile::MARKER_MAX as u64) as usize;
            self.queue
                .push(std::sync::Arc::clone(file), self.kept.pos, len);
            self.kept.pos += len as u64;
            self.kept.read_ahead();
            return Some(Ok(crate::sendfile::marker(len)));
        }
        if self.kept.done() {
            return None;
        }
        std::future::poll_fn(|cx| self.queue.poll_drained(cx)).await;
        // The tail, with the check that the file is unchanged (the piece is the tail whole:
        // pieces are at least PIECE_MIN = TAIL bytes).
        Some(self.kept.piece())
    }

    fn into_stream(
        self,
        metrics: crate::metrics::Metrics,
        route: &'static str,
    ) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        futures::stream::unfold(
            (self, metrics, 0usize),
            move |(mut body, metrics, mut turn)| async move {
                // At most TURN bytes per turn: see TURN.
                if turn >= TURN {
                    tokio::task::yield_now().await;
                    turn = 0;
                }
                let item = body.next().await?;
                match &item {
                    Ok(b) => {
                        metrics.bytes_served(route, b.len() as u64);
                        if crate::sendfile::is_marker(b) {
                            metrics.sendfile_bytes(b.len() as u64);
                        }
                        turn += b.len();
                    }
                    Err(_) => body.kept.stop(),
                }
                Some((item, (body, metrics, turn)))
            },
        )
    }
}

impl Drop for SendfileBody {
    fn drop(&mut self) {
        // Ended early, markers it announced will not come (its connection is failing: the
        // socket then fails on them, never sends another span). Ended normally: the queue
        // is empty already.
        self.queue.clear();
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

    /// A client that takes pieces quickly gets bigger ones, but only after the first
    /// `GROW_AFTER` bytes (a slow reader's socket takes a burst at first); one that falls
    /// behind goes back to small ones.
    #[test]
    fn pieces_grow_with_a_fast_client_and_shrink_with_a_slow_one() {
        use std::time::{Duration, Instant};
        let t0 = Instant::now();
        let mut pace = Pace {
            size: PIECE_MIN,
            sent: 0,
            last: t0,
        };
        let mut now = t0;
        let mut step = |pace: &mut Pace, gap: Duration| {
            now += gap;
            let n = pace.next(now);
            pace.sent += n as u64;
            n
        };
        // The burst at the start: fast, but small pieces throughout.
        while pace.sent < GROW_AFTER {
            assert_eq!(step(&mut pace, Duration::from_micros(10)), PIECE_MIN);
        }
        // Keeping up past it: doubling up to the largest.
        assert_eq!(step(&mut pace, Duration::from_micros(10)), 2 * PIECE_MIN);
        for _ in 0..10 {
            step(&mut pace, Duration::from_micros(10));
        }
        assert_eq!(pace.size, PIECE_MAX);
        // Neither fast nor slow: stays.
        assert_eq!(step(&mut pace, Duration::from_millis(20)), PIECE_MAX);
        // A stall: back to the smallest, and a slow reader stays there.
        assert_eq!(step(&mut pace, SLOW_GAP), PIECE_MIN);
        for _ in 0..10 {
            assert_eq!(step(&mut pace, Duration::from_secs(1)), PIECE_MIN);
        }
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
