//! A fault-injecting upstream mirror for tests.
//!
//! An HTTP server on 127.0.0.1 (port 0) that serves the files of a directory, following
//! symbolic links like a web server would, with `HEAD` and single byte ranges
//! (`bytes=N-`, `bytes=N-M`, `bytes=-N`). A test can set faults per path while it runs,
//! read the request log, and hook an action to the Nth request for a path.
//!
//! ```ignore
//! let up = TestUpstream::start(dir.path()).await;
//! up.set_fault("core/os/x86_64/core.db", Fault::FailTimes(2, 503));
//! // ... point the code under test at `up.url` ...
//! assert_eq!(up.requests().len(), 3);
//! ```

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use bytes::Bytes;
use futures::Stream;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Bodies are sent in pieces of at most this size.
const PIECE: u64 = 16 * 1024;

/// Something wrong with the answers for one path. Offsets count in the file (plus any
/// [`Fault::ExtraBytes`]), whatever range a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Every request gets this status, and no file.
    Status(u16),
    /// The first n requests get this status; later ones the file.
    FailTimes(u32, u16),
    /// The byte at this offset is inverted.
    FlipByte(u64),
    /// Responses announce their full length but stop before this offset, then the
    /// connection is closed.
    Truncate(u64),
    /// These bytes follow the file (they count in Content-Length and in ranges).
    ExtraBytes(Vec<u8>),
    /// Bodies stop before this offset and hang until the client goes away or the server
    /// stops.
    StallAfter(u64),
    /// No Content-Length: a chunked body.
    NoContentLength,
    /// Each response sends at most this many body bytes, then the connection is cut (so
    /// every resumed request makes progress).
    DropAfter(u64),
    /// `Range` is ignored: always 200 and the whole file, no `Accept-Ranges`.
    IgnoreRange,
    /// Bodies are paced to about this rate (in pieces every 50 ms).
    Slow {
        /// The rate.
        bytes_per_sec: u64,
    },
    /// The inner fault, for the first n requests only.
    Times(u32, Box<Fault>),
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The path without its leading `/`, percent-decoded (as given to [`TestUpstream::set_fault`]).
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
}

/// A running test upstream; it stops when dropped (hung bodies are released then).
pub struct TestUpstream {
    /// `http://127.0.0.1:PORT/`.
    pub url: String,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct Shared {
    root: PathBuf,
    state: Mutex<Log>,
    stopped: watch::Receiver<bool>,
}

#[derive(Default)]
struct Log {
    faults: HashMap<String, Vec<Armed>>,
    requests: Vec<LoggedRequest>,
    counts: HashMap<String, usize>,
    hooks: Vec<Hook>,
}

/// A fault and how many requests its count has used up.
struct Armed {
    fault: Fault,
    used: u32,
}

struct Hook {
    path: String,
    after_n: usize,
    action: Arc<dyn Fn() + Send + Sync>,
}

impl TestUpstream {
    /// Serves `root` (which the test keeps alive, e.g. a `TempDir`).
    pub async fn start(root: &Path) -> TestUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            root: root.to_path_buf(),
            state: Mutex::default(),
            stopped,
        });
        let app = Router::new()
            .fallback(serve_file)
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestUpstream {
            url: format!("http://{addr}/"),
            shared,
            stop,
            task,
        }
    }

    /// Makes `fault` the only fault for `path` (relative, e.g. `core/os/x86_64/core.db`).
    pub fn set_fault(&self, path: &str, fault: Fault) {
        let mut log = self.shared.lock();
        log.faults.insert(key(path), vec![Armed { fault, used: 0 }]);
    }

    /// Adds `fault` to those already set for `path` (e.g. `DropAfter` plus `IgnoreRange`).
    pub fn add_fault(&self, path: &str, fault: Fault) {
        let mut log = self.shared.lock();
        log.faults
            .entry(key(path))
            .or_default()
            .push(Armed { fault, used: 0 });
    }

    /// Removes every fault of every path.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Every request so far, in order of arrival.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The requests so far for one path.
    pub fn requests_for(&self, path: &str) -> Vec<LoggedRequest> {
        let path = key(path);
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Runs `action` once, when the `after_n`th request for `path` (counting from 1) has
    /// taken its content: that request still sees the old state, later ones the new (e.g.
    /// rewrite `lastupdate` after the first poll).
    pub fn on_request(&self, path: &str, after_n: usize, action: Box<dyn Fn() + Send + Sync>) {
        self.shared.lock().hooks.push(Hook {
            path: key(path),
            after_n,
            action: Arc::from(action),
        });
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

/// Writes a file under `root`, creating its directories.
pub fn put_file(root: &Path, rel: &str, data: &[u8]) {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create directories");
    }
    std::fs::write(&path, data).expect("write file");
}

fn key(path: &str) -> String {
    path.trim_start_matches('/').to_string()
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Log> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Logs a request; returns what its faults make of it and the hooks it triggers.
    fn arrive(&self, request: LoggedRequest) -> (Plan, Vec<Arc<dyn Fn() + Send + Sync>>) {
        let mut log = self.lock();
        let path = request.path.clone();
        log.requests.push(request);
        let count = log.counts.entry(path.clone()).or_default();
        *count += 1;
        let count = *count;
        let hooks = log
            .hooks
            .iter()
            .filter(|hook| hook.path == path && hook.after_n == count)
            .map(|hook| Arc::clone(&hook.action))
            .collect();
        let mut plan = Plan::default();
        for armed in log.faults.get_mut(&path).into_iter().flatten() {
            let limit = match armed.fault {
                Fault::FailTimes(n, _) | Fault::Times(n, _) => Some(n),
                _ => None,
            };
            if limit.is_none_or(|n| armed.used < n) {
                armed.used += 1;
                plan.apply(&armed.fault);
            }
        }
        (plan, hooks)
    }
}

/// What the faults of one request add up to.
#[derive(Default)]
struct Plan {
    status: Option<u16>,
    flips: Vec<u64>,
    extra: Vec<u8>,
    truncate: Option<u64>,
    stall_after: Option<u64>,
    drop_after: Option<u64>,
    chunked: bool,
    ignore_range: bool,
    rate: Option<u64>,
}

impl Plan {
    fn apply(&mut self, fault: &Fault) {
        match fault {
            Fault::Status(status) | Fault::FailTimes(_, status) => self.status = Some(*status),
            Fault::FlipByte(offset) => self.flips.push(*offset),
            Fault::Truncate(offset) => self.truncate = Some(*offset),
            Fault::ExtraBytes(bytes) => self.extra.extend_from_slice(bytes),
            Fault::StallAfter(offset) => self.stall_after = Some(*offset),
            Fault::NoContentLength => self.chunked = true,
            Fault::DropAfter(n) => self.drop_after = Some(*n),
            Fault::IgnoreRange => self.ignore_range = true,
            Fault::Slow { bytes_per_sec } => self.rate = Some((*bytes_per_sec).max(1)),
            Fault::Times(_, inner) => self.apply(inner),
        }
    }
}

async fn serve_file(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = percent_decode(uri.path().trim_start_matches('/'));
    let range = headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let (plan, hooks) = shared.arrive(LoggedRequest {
        method: method.to_string(),
        path: path.clone(),
        range: range.clone(),
    });
    let response = answer(&shared, &method, &path, range.as_deref(), plan).await;
    for hook in hooks {
        hook();
    }
    response
}

async fn answer(
    shared: &Shared,
    method: &Method,
    path: &str,
    range: Option<&str>,
    plan: Plan,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return status_only(StatusCode::METHOD_NOT_ALLOWED);
    }
    if let Some(status) = plan.status {
        return status_only(StatusCode::from_u16(status).expect("a valid status code"));
    }
    let unsafe_path = path
        .split('/')
        .any(|segment| segment.is_empty() || segment == ".." || segment.contains('\\'));
    if unsafe_path {
        return status_only(StatusCode::NOT_FOUND);
    }
    // Reading a directory fails like a missing file: 404.
    let Ok(mut content) = tokio::fs::read(shared.root.join(path)).await else {
        return status_only(StatusCode::NOT_FOUND);
    };
    for &offset in &plan.flips {
        if let Some(byte) = content.get_mut(offset as usize) {
            *byte ^= 0xff;
        }
    }
    content.extend_from_slice(&plan.extra);
    let content = Bytes::from(content);
    let len = content.len() as u64;

    let requested = range.filter(|_| !plan.ignore_range);
    let (status, start, end) = match requested.map(|value| parse_range(value, len)) {
        None | Some(RangeAnswer::Whole) => (StatusCode::OK, 0, len),
        Some(RangeAnswer::Part(start, end)) => (StatusCode::PARTIAL_CONTENT, start, end),
        Some(RangeAnswer::Unsatisfiable) => {
            return Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .body(Body::empty())
                .expect("a valid response");
        }
    };
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream");
    if !plan.ignore_range {
        response = response.header(header::ACCEPT_RANGES, "bytes");
    }
    if status == StatusCode::PARTIAL_CONTENT {
        response = response.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{len}", end - 1),
        );
    }
    if !plan.chunked {
        response = response.header(header::CONTENT_LENGTH, end - start);
    }
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from_stream(feed(content, start, end, &plan, shared.stopped.clone()))
    };
    response.body(body).expect("a valid response")
}

fn status_only(status: StatusCode) -> Response {
    Response::builder()
        .status(status)
        .body(Body::from(format!("{status}\n")))
        .expect("a valid response")
}

enum RangeAnswer {
    Whole,
    /// Start and end (exclusive).
    Part(u64, u64),
    Unsatisfiable,
}

/// A single range; anything else (several ranges, garbage) is answered with the whole file,
/// as RFC 9110 allows.
fn parse_range(value: &str, len: u64) -> RangeAnswer {
    let Some((first, last)) = value
        .trim()
        .strip_prefix("bytes=")
        .filter(|spec| !spec.contains(','))
        .and_then(|spec| spec.split_once('-'))
    else {
        return RangeAnswer::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        return match last.parse::<u64>() {
            Ok(0) => RangeAnswer::Unsatisfiable,
            Ok(n) if len > 0 => RangeAnswer::Part(len.saturating_sub(n), len),
            Ok(_) => RangeAnswer::Unsatisfiable,
            Err(_) => RangeAnswer::Whole,
        };
    }
    let Ok(start) = first.parse::<u64>() else {
        return RangeAnswer::Whole;
    };
    if start >= len {
        return RangeAnswer::Unsatisfiable;
    }
    if last.is_empty() {
        return RangeAnswer::Part(start, len);
    }
    match last.parse::<u64>() {
        Ok(last) if last >= start => RangeAnswer::Part(start, (last + 1).min(len)),
        _ => RangeAnswer::Whole,
    }
}

/// How a body ends early.
#[derive(Clone, Copy)]
enum Cut {
    Close,
    Hang,
}

struct Feed {
    content: Bytes,
    pos: u64,
    end: u64,
    cut: Option<(u64, Cut)>,
    rate: Option<u64>,
    stopped: watch::Receiver<bool>,
    over: bool,
}

/// The body for `content[start..end]`, shaped by the plan's faults.
fn feed(
    content: Bytes,
    start: u64,
    end: u64,
    plan: &Plan,
    stopped: watch::Receiver<bool>,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let mut cut: Option<(u64, Cut)> = None;
    let candidates = [
        plan.truncate.map(|at| (at, Cut::Close)),
        plan.stall_after.map(|at| (at, Cut::Hang)),
        plan.drop_after
            .map(|n| (start.saturating_add(n), Cut::Close)),
    ];
    for (at, how) in candidates.into_iter().flatten() {
        let at = at.max(start);
        if at < end && cut.is_none_or(|(earlier, _)| at < earlier) {
            cut = Some((at, how));
        }
    }
    let feed = Feed {
        content,
        pos: start,
        end,
        cut,
        rate: plan.rate,
        stopped,
        over: false,
    };
    futures::stream::unfold(feed, |mut feed| async move {
        if feed.over || feed.pos >= feed.end {
            return None;
        }
        if let Some((at, how)) = feed.cut
            && feed.pos >= at
        {
            if let Cut::Hang = how {
                // Until the server stops (or the sender is gone): then the connection ends.
                let _ = feed.stopped.wait_for(|&stop| stop).await;
            }
            // Let the connection flush what was sent before it is cut.
            tokio::time::sleep(Duration::from_millis(20)).await;
            feed.over = true;
            let error = io::Error::new(io::ErrorKind::ConnectionAborted, "injected fault");
            return Some((Err(error), feed));
        }
        let limit = feed.cut.map_or(feed.end, |(at, _)| at);
        let mut n = (limit - feed.pos).min(PIECE);
        if let Some(rate) = feed.rate {
            // One twentieth of the rate every 50 ms (not capped by PIECE, or fast rates
            // would silently become 320 KiB/s).
            n = (limit - feed.pos).min((rate / 20).max(1));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let piece = feed
            .content
            .slice(feed.pos as usize..(feed.pos + n) as usize);
        feed.pos += n;
        Some((Ok(piece), feed))
    })
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| Some(hex(*bytes.get(i + 1)?)? * 16 + hex(*bytes.get(i + 2)?)?))
            .flatten();
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
