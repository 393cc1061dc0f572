//! Learning of new snapshots from an upstream gateway (the publisher, or another follower).
//!
//! The feed (`GET <base>/feed`, server-sent events) announces each snapshot the moment it is
//! published, so [`watch`] keeps one subscription open and resumes it after a drop with
//! `Last-Event-ID` (the upstream then replays what was missed). Feeds die quietly behind
//! proxies and NATs, so a connection that delivers no bytes at all (not even the 15 s
//! keep-alive comments) for [`WatchConfig::idle_timeout`] is treated as dead. While the feed
//! is down, [`watch`] polls `GET <base>/api/v1/snapshot/current` instead, so that a
//! follower behind a proxy that breaks streaming still moves forward, only later.
//!
//! Announcements are not trusted here: the caller checks each signature against the
//! publisher's key before acting on it (DESIGN.md, "Trust").

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use eventsource_stream::{EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CACHE_CONTROL};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::feed::SnapshotEvent;

/// Where an announcement came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The `/feed` subscription.
    Feed,
    /// A poll of `/api/v1/snapshot/current` while the feed was down.
    Poll,
}

/// A snapshot some upstream says exists: not yet verified.
#[derive(Debug, Clone)]
pub struct Announcement {
    /// The announcement as received.
    pub event: SnapshotEvent,
    /// How it arrived (for logs and metrics: many polls mean a broken feed).
    pub via: Via,
    /// When it arrived, to measure how far behind the publisher the follower is.
    pub received: Instant,
}

/// What the watcher is doing, for `/metrics` and the status page. Shared with the caller,
/// updated by [`watch`] as it goes.
#[derive(Debug, Default)]
pub struct WatchStatus {
    feed_connected: AtomicBool,
    reconnects: AtomicU64,
    polls: AtomicU64,
    announcements: AtomicU64,
    /// Unix milliseconds; 0 = never.
    last_announcement_ms: AtomicU64,
}

impl WatchStatus {
    /// Whether the feed subscription is open right now (when not, the watcher polls).
    pub fn feed_connected(&self) -> bool {
        self.feed_connected.load(Ordering::Relaxed)
    }

    /// How many times the feed was (re)opened after a failure or a drop.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// How many polls of `/api/v1/snapshot/current` were made.
    pub fn polls(&self) -> u64 {
        self.polls.load(Ordering::Relaxed)
    }

    /// How many announcements were handed to the caller.
    pub fn announcements(&self) -> u64 {
        self.announcements.load(Ordering::Relaxed)
    }

    /// When the last announcement was handed to the caller (Unix milliseconds).
    pub fn last_announcement_unix_ms(&self) -> Option<u64> {
        match self.last_announcement_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(ms),
        }
    }
}

/// Timings of the watcher.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// How often to poll `/api/v1/snapshot/current` while the feed is down.
    pub poll_every: Duration,
    /// The first delay before reopening a failed feed; doubled on each failure in a row.
    pub reconnect_min: Duration,
    /// The longest delay between attempts. A connection that lived at least this long
    /// counts as healthy, and the next delay starts again from `reconnect_min`.
    pub reconnect_max: Duration,
    /// No bytes at all (not even keep-alives) for this long means the feed is dead. Also
    /// the limit on waiting for response headers, of the feed and of each poll.
    pub idle_timeout: Duration,
}

impl Default for WatchConfig {
    /// Keep-alives come every 15 s, so 45 s of silence is three missed in a row.
    fn default() -> Self {
        WatchConfig {
            poll_every: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(45),
        }
    }
}

/// Runs until `cancel`: subscribes to `<base>/feed`, reconnecting with exponential backoff
/// (with jitter) and `Last-Event-ID` = the highest seq received so far (initially `after`,
/// if Some); while the feed is not connected, polls `<base>/api/v1/snapshot/current` every
/// `poll_every`. Sends every announcement on `tx`, unverified (the caller checks
/// signatures). Feed events are passed on as they come, duplicates included; a poll is
/// passed on only when its seq is higher than any seen so far, so that an idle upstream
/// does not announce the same snapshot every `poll_every`. Returns when `tx` is closed or
/// `cancel` fires.
///
/// Polling starts only once the feed has been down for `poll_every`, so that a healthy
/// start or a quick reconnect costs no extra request.
pub async fn watch(
    client: reqwest::Client,
    base: Url,
    after: Option<u64>,
    cfg: WatchConfig,
    status: Arc<WatchStatus>,
    tx: mpsc::Sender<Announcement>,
    cancel: CancellationToken,
) {
    let (feed_url, current_url) = match (
        endpoint(&base, "feed"),
        endpoint(&base, "api/v1/snapshot/current"),
    ) {
        (Ok(f), Ok(c)) => (f, c),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(%base, "cannot follow: not a base URL: {e}");
            return;
        }
    };
    let (connected, connected_rx) = tokio::sync::watch::channel(false);
    let shared = Shared {
        status: &status,
        tx: &tx,
        highest: AtomicU64::new(after.map_or(0, |a| a.saturating_add(1))),
        connected,
    };
    shared.set_connected(false);
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tx.closed() => {}
        _ = follow_feed(&shared, &client, &feed_url, &cfg) => {}
        _ = poll_while_down(&shared, &client, &current_url, &cfg, connected_rx) => {}
    }
    shared.set_connected(false);
}

/// `path` below `base`, whether or not `base` ends with a slash (`http://h/mirror` and
/// `http://h/mirror/` both give `http://h/mirror/feed`).
fn endpoint(base: &Url, path: &str) -> Result<Url, url::ParseError> {
    let mut dir = base.clone();
    if !dir.path().ends_with('/') {
        let with_slash = format!("{}/", dir.path());
        dir.set_path(&with_slash);
    }
    dir.join(path)
}

/// The receiver of announcements is gone: stop.
struct Closed;

/// State the feed and the poller share within one [`watch`].
struct Shared<'a> {
    status: &'a WatchStatus,
    tx: &'a mpsc::Sender<Announcement>,
    /// seq + 1 of the highest seq seen; 0 = none.
    highest: AtomicU64,
    /// Whether the feed is open: the poller sleeps while it is.
    connected: tokio::sync::watch::Sender<bool>,
}

impl Shared<'_> {
    fn highest(&self) -> Option<u64> {
        self.highest.load(Ordering::SeqCst).checked_sub(1)
    }

    /// Notes `seq`; true when it is higher than any seen before.
    fn record(&self, seq: u64) -> bool {
        let v = seq.saturating_add(1);
        self.highest.fetch_max(v, Ordering::SeqCst) < v
    }

    fn set_connected(&self, up: bool) {
        self.status.feed_connected.store(up, Ordering::Relaxed);
        self.connected.send_replace(up);
    }

    async fn announce(&self, event: SnapshotEvent, via: Via) -> Result<(), Closed> {
        tracing::debug!(seq = event.seq, root = %event.root, ?via, "snapshot announced");
        let a = Announcement {
            event,
            via,
            received: Instant::now(),
        };
        self.tx.send(a).await.map_err(|_| Closed)?;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.status
            .last_announcement_ms
            .store(now_ms.max(1), Ordering::Relaxed);
        self.status.announcements.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Keeps the feed open until the receiver goes away, reconnecting with backoff.
async fn follow_feed(sh: &Shared<'_>, client: &reqwest::Client, url: &Url, cfg: &WatchConfig) {
    // Attempts in a row that failed or did not live `reconnect_max`.
    let mut failures: u32 = 0;
    loop {
        let started = Instant::now();
        let last = sh.highest();
        match open_feed(client, url, last, cfg.idle_timeout).await {
            Ok(resp) => {
                tracing::info!(%url, last_event_id = ?last, "feed connected");
                sh.set_connected(true);
                let end = read_feed(sh, resp, cfg.idle_timeout).await;
                sh.set_connected(false);
                match end {
                    Err(Closed) => return,
                    Ok(why) => tracing::warn!(%url, "feed lost: {why}"),
                }
            }
            Err(why) => tracing::warn!(%url, "feed unavailable: {why}"),
        }
        if started.elapsed() >= cfg.reconnect_max {
            failures = 0;
        }
        let delay = backoff(cfg, failures);
        failures = failures.saturating_add(1);
        tracing::debug!(?delay, "reopening the feed after a delay");
        tokio::time::sleep(delay).await;
        sh.status.reconnects.fetch_add(1, Ordering::Relaxed);
    }
}

/// `reconnect_min` doubled `failures` times, capped at `reconnect_max`, then drawn at
/// random from its upper half (but not below `reconnect_min`): followers that lost the
/// same publisher at the same moment must not all come back at the same moment.
fn backoff(cfg: &WatchConfig, failures: u32) -> Duration {
    let factor = 1u32 << failures.min(20);
    let base = cfg
        .reconnect_min
        .saturating_mul(factor)
        .min(cfg.reconnect_max);
    let low = base / 2;
    let jittered = if base > low {
        rand::random_range(low..=base)
    } else {
        base
    };
    jittered.max(cfg.reconnect_min.min(cfg.reconnect_max))
}

/// Sends the subscription request; a non-2xx answer is a failure.
async fn open_feed(
    client: &reqwest::Client,
    url: &Url,
    last: Option<u64>,
    timeout: Duration,
) -> Result<reqwest::Response, String> {
    let mut req = client
        .get(url.clone())
        .header(ACCEPT, "text/event-stream")
        .header(CACHE_CONTROL, "no-cache");
    if let Some(seq) = last {
        req = req.header("last-event-id", seq.to_string());
    }
    let resp = tokio::time::timeout(timeout, req.send())
        .await
        .map_err(|_| format!("no response within {timeout:?}"))?
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    Ok(resp)
}

/// Why a feed connection's byte stream ended early.
#[derive(Debug, thiserror::Error)]
enum FeedError {
    #[error("{0}")]
    Transport(reqwest::Error),
    #[error("no bytes for {0:?}")]
    Idle(Duration),
    #[error("an event of more than {0} bytes")]
    TooLarge(usize),
}

/// Bytes one feed event may have (an announcement is about 1 KB): the event parser keeps
/// an event's lines until the blank line that ends it, so a feed that never sends one
/// would grow the follower's memory without bound.
pub(crate) const MAX_FEED_EVENT: usize = 64 << 10;

/// A feed body as the event parser may read it: every leading UTF-8 byte order mark taken
/// off (eventsource-stream 0.2.3 cuts a leading U+FEFF as if it were one byte and panics,
/// found by the `feed` fuzz target; its fix, the crate's pull request #10, is unmerged
/// since January 2026), and the body cut with `too_large` once one event passes
/// [`MAX_FEED_EVENT`] bytes. Taking off more than one BOM is harmless: the publisher never
/// sends one, and a second would otherwise reach the parser as the first character.
pub(crate) fn guarded<E>(
    body: impl Stream<Item = Result<Bytes, E>>,
    too_large: fn(usize) -> E,
) -> impl Stream<Item = Result<Bytes, E>> {
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    struct State<S> {
        body: S,
        /// The first bytes while they may still be (part of) a BOM; `None` once past.
        head: Option<Vec<u8>>,
        event: EventSize,
        done: bool,
    }
    let state = State {
        body: Box::pin(body),
        head: Some(Vec::new()),
        event: EventSize::default(),
        done: false,
    };
    futures::stream::unfold(state, move |mut st| {
        async move {
            loop {
                if st.done {
                    return None;
                }
                let chunk = match st.body.next().await {
                    Some(Ok(c)) => c,
                    Some(Err(e)) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                    None => {
                        st.done = true;
                        // A body that ends inside what could have been a BOM.
                        let rest = st.head.take().filter(|h| !h.is_empty())?;
                        return Some((Ok(Bytes::from(rest)), st));
                    }
                };
                let chunk = match st.head.as_mut() {
                    None => chunk,
                    Some(head) => {
                        head.extend_from_slice(&chunk);
                        while head.starts_with(BOM) {
                            head.drain(..BOM.len());
                        }
                        if head.is_empty() || BOM.starts_with(head) {
                            continue;
                        }
                        let first = Bytes::from(std::mem::take(head));
                        st.head = None;
                        first
                    }
                };
                if !st.event.add(&chunk) {
                    st.done = true;
                    return Some((Err(too_large(MAX_FEED_EVENT)), st));
                }
                return Some((Ok(chunk), st));
            }
        }
    })
}

/// Bytes of the feed event being read: counted up to the blank line that ends it (a line
/// end is CR, LF or CRLF, as in the event-stream format).
#[derive(Debug, Default)]
struct EventSize {
    bytes: usize,
    at_line_start: bool,
    after_cr: bool,
}

impl EventSize {
    /// Counts `chunk`; false once an event is over [`MAX_FEED_EVENT`].
    fn add(&mut self, chunk: &[u8]) -> bool {
        for &b in chunk {
            if b == b'\n' && self.after_cr {
                self.after_cr = false;
                continue;
            }
            self.after_cr = b == b'\r';
            if b == b'\n' || b == b'\r' {
                if self.at_line_start {
                    self.bytes = 0;
                }
                self.at_line_start = true;
            } else {
                self.at_line_start = false;
                self.bytes += 1;
                if self.bytes > MAX_FEED_EVENT {
                    return false;
                }
            }
        }
        true
    }
}

/// The response body, cut with [`FeedError::Idle`] when no chunk arrives for `idle`. The
/// check is on bytes, not events, so that keep-alive comments count as signs of life.
fn idle_limited(
    resp: reqwest::Response,
    idle: Duration,
) -> impl Stream<Item = Result<Bytes, FeedError>> {
    type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;
    let body: Body = Box::pin(resp.bytes_stream());
    futures::stream::unfold(Some(body), move |state| async move {
        let mut body = state?;
        match tokio::time::timeout(idle, body.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(body))),
            Ok(Some(Err(e))) => Some((Err(FeedError::Transport(e)), None)),
            Ok(None) => None,
            Err(_) => Some((Err(FeedError::Idle(idle)), None)),
        }
    })
}

/// Passes on the events of one open feed connection; returns why it ended.
async fn read_feed(
    sh: &Shared<'_>,
    resp: reqwest::Response,
    idle: Duration,
) -> Result<String, Closed> {
    let body = guarded(idle_limited(resp, idle), FeedError::TooLarge);
    let mut events = std::pin::pin!(body.eventsource());
    while let Some(item) = events.next().await {
        let ev = match item {
            Ok(ev) => ev,
            Err(EventStreamError::Transport(e)) => return Ok(e.to_string()),
            Err(e) => return Ok(format!("not an event stream: {e}")),
        };
        match snapshot_of(&ev) {
            None => tracing::debug!(kind = %ev.event, "ignoring feed event"),
            Some(Ok(snapshot)) => {
                sh.record(snapshot.seq);
                sh.announce(snapshot, Via::Feed).await?;
            }
            Some(Err(e)) => tracing::warn!(id = %ev.id, "skipping malformed feed event: {e}"),
        }
    }
    Ok("closed by the upstream".to_owned())
}

/// The announcement a feed event carries; `None` for an event of another kind.
///
/// feed.rs names its events `snapshot`; unnamed ones (`message`) are accepted for relays
/// that drop names. Other kinds are for other readers.
pub(crate) fn snapshot_of(
    ev: &eventsource_stream::Event,
) -> Option<Result<SnapshotEvent, serde_json::Error>> {
    (ev.event == "snapshot" || ev.event == "message")
        .then(|| serde_json::from_str::<SnapshotEvent>(&ev.data))
}

/// Polls `url` every `poll_every` for as long as the feed is down.
async fn poll_while_down(
    sh: &Shared<'_>,
    client: &reqwest::Client,
    url: &Url,
    cfg: &WatchConfig,
    mut connected: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        // The sender lives in `sh` for as long as this future does: these never fail.
        if connected.wait_for(|up| !*up).await.is_err() {
            return;
        }
        let reconnected = async { connected.wait_for(|up| *up).await.is_ok() };
        tokio::select! {
            _ = tokio::time::sleep(cfg.poll_every) => {}
            _ = reconnected => continue,
        }
        sh.status.polls.fetch_add(1, Ordering::Relaxed);
        match poll_once(client, url, cfg.idle_timeout).await {
            Ok(Some(snapshot)) => {
                if sh.record(snapshot.seq) && sh.announce(snapshot, Via::Poll).await.is_err() {
                    return;
                }
            }
            Ok(None) => tracing::debug!(%url, "upstream has no snapshot yet"),
            Err(why) => tracing::debug!(%url, "poll failed: {why}"),
        }
    }
}

/// A snapshot announcement is a few hundred bytes; anything much longer is not one.
const MAX_CURRENT_BYTES: usize = 64 * 1024;

/// One `GET /api/v1/snapshot/current`; `None` when the upstream has no snapshot yet.
async fn poll_once(
    client: &reqwest::Client,
    url: &Url,
    timeout: Duration,
) -> Result<Option<SnapshotEvent>, String> {
    let mut resp = client
        .get(url.clone())
        .header(CACHE_CONTROL, "no-cache")
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match resp.status() {
        s if s.is_success() => {}
        StatusCode::NOT_FOUND | StatusCode::SERVICE_UNAVAILABLE => return Ok(None),
        s => return Err(format!("HTTP {s}")),
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_CURRENT_BYTES {
            return Err(format!("answer longer than {MAX_CURRENT_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| format!("not a snapshot announcement: {e}"))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Mutex;

    use axum::Router;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::sse::{Event, KeepAlive, Sse};
    use axum::routing::get;
    use futures::stream::BoxStream;
    use tokio::task::JoinHandle;
    use tokio::time::timeout;

    use super::*;

    /// The body `guarded` makes of `chunks`, and the events the parser reads from it.
    async fn read_guarded(chunks: &[&[u8]]) -> (Vec<u8>, Result<Vec<String>, String>) {
        let body = futures::stream::iter(
            chunks
                .iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        let mut out = Vec::new();
        let mut g = std::pin::pin!(guarded(body, |n| std::io::Error::other(format!(
            "over {n}"
        ))));
        while let Some(c) = g.next().await {
            match c {
                Ok(c) => out.extend_from_slice(&c),
                Err(e) => return (out, Err(e.to_string())),
            }
        }
        let parsed = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(out.clone()))]);
        let events: Vec<String> = parsed
            .eventsource()
            .filter_map(|e| async move { e.ok().map(|e| e.data) })
            .collect()
            .await;
        (out, Ok(events))
    }

    /// The fuzz target's crash (a BOM then a NUL) and BOMs cut across chunks: taken off,
    /// no panic, and the events behind them read; a BOM later in the stream stays.
    #[tokio::test]
    async fn byte_order_marks_at_the_start_are_taken_off() {
        let (body, ev) = read_guarded(&[b"\xEF\xBB\xBF\x00"]).await;
        assert_eq!(body, b"\x00");
        assert!(ev.is_ok());
        for chunks in [
            &[&b"\xEF"[..], b"\xBB", b"\xBFdata: a\n\n"][..],
            &[b"\xEF\xBB\xBF\xEF\xBB", b"\xBFdata: a\n\n"],
            &[b"", b"\xEF\xBB\xBFdata: a\n\n"],
        ] {
            let (body, ev) = read_guarded(chunks).await;
            assert_eq!(body, b"data: a\n\n", "{chunks:?}");
            assert_eq!(ev.unwrap(), vec!["a".to_string()], "{chunks:?}");
        }
        let (body, _) = read_guarded(&[b"data: a\n\n\xEF\xBB\xBF"]).await;
        assert!(body.ends_with(b"\xEF\xBB\xBF"));
        // A body that is only part of a BOM is passed on (and is not an event).
        let (body, _) = read_guarded(&[b"\xEF\xBB"]).await;
        assert_eq!(body, b"\xEF\xBB");
    }

    /// One event may not grow past MAX_FEED_EVENT, whether one long line or many short ones;
    /// a stream of small events may go on for ever.
    #[tokio::test]
    async fn an_event_without_end_is_cut() {
        let line = vec![b'x'; MAX_FEED_EVENT + 1];
        let (_, r) = read_guarded(&[b"data: ", &line]).await;
        assert!(r.unwrap_err().contains("over"), "one long line");
        let many: Vec<&[u8]> =
            std::iter::repeat_n(&b"data: abcdefgh\r\n"[..], MAX_FEED_EVENT / 8).collect();
        let (_, r) = read_guarded(&many).await;
        assert!(r.is_err(), "many lines, no blank one");
        let events: Vec<&[u8]> =
            std::iter::repeat_n(&b"data: abcdefgh\r\n\r\n"[..], MAX_FEED_EVENT / 4).collect();
        let (_, r) = read_guarded(&events).await;
        assert_eq!(r.unwrap().len(), MAX_FEED_EVENT / 4, "small events");
    }

    /// Every test finishes well within this; a hang fails instead of blocking the run.
    const WAIT: Duration = Duration::from_secs(3);

    fn snapshot(seq: u64) -> SnapshotEvent {
        SnapshotEvent {
            seq,
            root: format!("bafyroot{seq}"),
            previous: seq.checked_sub(1).map(|p| format!("bafyroot{p}")),
            published_at: "2024-01-01T00:00:00Z".into(),
            signature: "00".repeat(64),
        }
    }

    fn sse(seq: u64) -> Event {
        Event::default()
            .id(seq.to_string())
            .event("snapshot")
            .data(serde_json::to_string(&snapshot(seq)).unwrap())
    }

    type Feed = Sse<BoxStream<'static, Result<Event, Infallible>>>;

    /// `events`, then the connection closes (`open: false`) or stays open silently.
    fn feed_of(events: Vec<Event>, open: bool) -> Feed {
        let s = futures::stream::iter(events.into_iter().map(Ok));
        if open {
            Sse::new(s.chain(futures::stream::pending()).boxed())
        } else {
            Sse::new(s.boxed())
        }
    }

    /// The `Last-Event-ID` of each feed connection, in order.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<Option<String>>>>);

    impl Seen {
        /// Records a connection; returns how many there were, this one included.
        fn record(&self, headers: &HeaderMap) -> usize {
            let last = headers
                .get("last-event-id")
                .map(|v| v.to_str().unwrap().to_owned());
            let mut seen = self.0.lock().unwrap();
            seen.push(last);
            seen.len()
        }

        fn get(&self) -> Vec<Option<String>> {
            self.0.lock().unwrap().clone()
        }
    }

    async fn serve(router: Router) -> Url {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Url::parse(&format!("http://{addr}/")).unwrap()
    }

    fn fast() -> WatchConfig {
        WatchConfig {
            poll_every: Duration::from_secs(60),
            reconnect_min: Duration::from_millis(20),
            reconnect_max: Duration::from_millis(200),
            idle_timeout: Duration::from_secs(5),
        }
    }

    struct Watcher {
        rx: mpsc::Receiver<Announcement>,
        status: Arc<WatchStatus>,
        cancel: CancellationToken,
        task: JoinHandle<()>,
    }

    /// Spawns [`watch`] (which also proves its future is `Send`).
    fn start(base: Url, after: Option<u64>, cfg: WatchConfig) -> Watcher {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let (tx, rx) = mpsc::channel(16);
        let status = Arc::new(WatchStatus::default());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(watch(
            client,
            base,
            after,
            cfg,
            status.clone(),
            tx,
            cancel.clone(),
        ));
        Watcher {
            rx,
            status,
            cancel,
            task,
        }
    }

    impl Watcher {
        async fn next(&mut self) -> Announcement {
            timeout(WAIT, self.rx.recv())
                .await
                .expect("no announcement in time")
                .expect("watcher stopped")
        }

        async fn stop(self) {
            self.cancel.cancel();
            timeout(WAIT, self.task)
                .await
                .expect("watch did not stop on cancel")
                .unwrap();
        }
    }

    #[tokio::test]
    async fn reconnect_resumes_from_the_last_event() {
        let seen = Seen::default();
        let router = Router::new()
            .route(
                "/feed",
                get(|State(seen): State<Seen>, headers: HeaderMap| async move {
                    match seen.record(&headers) {
                        1 => feed_of(vec![sse(1), sse(2)], false),
                        _ => feed_of(vec![sse(3)], true),
                    }
                }),
            )
            .with_state(seen.clone());
        let mut w = start(serve(router).await, None, fast());
        for seq in 1..=3 {
            let a = w.next().await;
            assert_eq!(a.event, snapshot(seq));
            assert_eq!(a.via, Via::Feed);
        }
        assert_eq!(seen.get(), vec![None, Some("2".to_owned())]);
        assert!(w.status.reconnects() >= 1);
        assert!(w.status.feed_connected());
        assert_eq!(w.status.announcements(), 3);
        assert!(w.status.last_announcement_unix_ms().is_some());
        w.stop().await;
    }

    #[tokio::test]
    async fn first_connection_resumes_after_the_given_seq() {
        let seen = Seen::default();
        let router = Router::new()
            .route(
                "/mirror/feed",
                get(|State(seen): State<Seen>, headers: HeaderMap| async move {
                    seen.record(&headers);
                    feed_of(vec![sse(42)], true)
                }),
            )
            .with_state(seen.clone());
        // A base without a trailing slash still means the directory.
        let base = serve(router).await.join("mirror").unwrap();
        let mut w = start(base, Some(41), fast());
        assert_eq!(w.next().await.event.seq, 42);
        assert_eq!(seen.get(), vec![Some("41".to_owned())]);
        w.stop().await;
    }

    #[tokio::test]
    async fn broken_feed_falls_back_to_polling() {
        let router = Router::new()
            .route("/feed", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
            .route(
                "/api/v1/snapshot/current",
                get(|| async { axum::Json(snapshot(7)) }),
            );
        let cfg = WatchConfig {
            poll_every: Duration::from_millis(100),
            reconnect_max: Duration::from_millis(50),
            ..fast()
        };
        let mut w = start(serve(router).await, None, cfg);
        let a = w.next().await;
        assert_eq!((a.event, a.via), (snapshot(7), Via::Poll));
        // Further polls see the same snapshot and stay quiet.
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(w.rx.try_recv().is_err(), "the same seq was announced twice");
        assert!(w.status.polls() >= 2, "polls: {}", w.status.polls());
        assert!(w.status.reconnects() >= 2);
        assert!(!w.status.feed_connected());
        w.stop().await;
    }

    #[tokio::test]
    async fn polling_skips_what_the_caller_already_has() {
        let router = Router::new()
            .route("/feed", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
            .route(
                "/api/v1/snapshot/current",
                get(|| async { axum::Json(snapshot(7)) }),
            );
        let cfg = WatchConfig {
            poll_every: Duration::from_millis(50),
            ..fast()
        };
        let mut w = start(serve(router).await, Some(7), cfg);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(w.status.polls() >= 2);
        assert!(w.rx.try_recv().is_err());
        w.stop().await;
    }

    #[tokio::test]
    async fn malformed_events_are_skipped() {
        let router = Router::new().route(
            "/feed",
            get(|| async {
                feed_of(
                    vec![
                        Event::default().id("4").event("snapshot").data("{not json"),
                        Event::default().event("snapshot").data(r#"{"seq":"x"}"#),
                        Event::default().event("volunteers").data("[]"),
                        sse(5),
                    ],
                    true,
                )
            }),
        );
        let mut w = start(serve(router).await, None, fast());
        let a = w.next().await;
        assert_eq!((a.event, a.via), (snapshot(5), Via::Feed));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(w.rx.try_recv().is_err());
        assert_eq!(
            w.status.reconnects(),
            0,
            "a bad event must not drop the feed"
        );
        w.stop().await;
    }

    #[tokio::test]
    async fn silent_feed_is_reopened_but_keep_alives_hold_it() {
        let seen = Seen::default();
        let router = Router::new()
            .route(
                "/silent/feed",
                get(|State(seen): State<Seen>, headers: HeaderMap| async move {
                    seen.record(&headers);
                    feed_of(vec![sse(1)], true)
                }),
            )
            .route(
                "/alive/feed",
                get(|| async {
                    feed_of(vec![sse(1)], true)
                        .keep_alive(KeepAlive::new().interval(Duration::from_millis(50)))
                }),
            )
            .with_state(seen.clone());
        let base = serve(router).await;
        let cfg = WatchConfig {
            idle_timeout: Duration::from_millis(250),
            ..fast()
        };
        let mut silent = start(base.join("silent/").unwrap(), None, cfg.clone());
        let mut alive = start(base.join("alive/").unwrap(), None, cfg);
        assert_eq!(silent.next().await.event.seq, 1);
        assert_eq!(alive.next().await.event.seq, 1);
        // The silent feed is dropped after 250 ms and reopened from seq 1.
        timeout(WAIT, async {
            while seen.get().len() < 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the silent feed was not reopened");
        assert_eq!(seen.get()[1], Some("1".to_owned()));
        assert!(alive.status.feed_connected());
        assert_eq!(alive.status.reconnects(), 0);
        silent.stop().await;
        alive.stop().await;
    }

    #[tokio::test]
    async fn stops_when_the_receiver_goes_away() {
        let router = Router::new().route("/feed", get(|| async { feed_of(vec![], true) }));
        let w = start(serve(router).await, None, fast());
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(w.rx);
        timeout(WAIT, w.task)
            .await
            .expect("watch did not stop when tx closed")
            .unwrap();
        assert!(!w.status.feed_connected());
    }

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let cfg = WatchConfig::default();
        for failures in [0, 1, 2, 5, 10, 40, u32::MAX] {
            let base = cfg
                .reconnect_min
                .saturating_mul(1 << failures.min(20))
                .min(cfg.reconnect_max);
            for _ in 0..20 {
                let d = backoff(&cfg, failures);
                assert!(
                    d >= cfg.reconnect_min && d >= base / 2 && d <= base,
                    "{d:?}"
                );
            }
        }
        assert!(backoff(&cfg, 40) >= cfg.reconnect_max / 2);
    }
}
