//! Where a follower gets blocks: trustless gateways (the publisher, other followers,
//! volunteers, a local Kubo gateway, any gateway that answers `?format=raw`), each asked
//! for one block at a time and every answer checked against the CID before it is used.
//!
//! Each source keeps counters (blocks fetched, failed, corrupt, bytes) and its last 100
//! outcomes, which order the sources for listing fetches and show in `status`.
//!
//! The set changes while the follower runs: volunteers from the publisher's list come and go
//! ([`Sources::set_volunteers`]). Work in progress keeps the set it started with.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use serde::Serialize;

/// Outcomes remembered per source for its recent success rate.
const RECENT: usize = 100;

/// How long one source may take for a block before the next source is asked as well.
pub const HEDGE_AFTER: Duration = Duration::from_millis(500);

/// How one block fetch from one source ended.
#[derive(Debug)]
pub enum BlockError {
    /// The source does not have it (404, 410) or timed out.
    Missing(String),
    /// The source sent bytes that do not hash to the CID.
    Corrupt(String),
    /// Anything else (connection refused, 5xx, a cut body).
    Failed(String),
}

impl std::fmt::Display for BlockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlockError::Missing(s) => write!(f, "missing: {s}"),
            BlockError::Corrupt(s) => write!(f, "corrupt: {s}"),
            BlockError::Failed(s) => write!(f, "failed: {s}"),
        }
    }
}

/// Where a follower learned of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The gateway followed.
    Followed,
    /// Given in the settings (`--source`).
    Configured,
    /// The publisher's volunteer list, under this volunteer id.
    Volunteer(String),
}

impl Origin {
    /// `followed`, `configured` or `volunteer`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Origin::Followed => "followed",
            Origin::Configured => "configured",
            Origin::Volunteer(_) => "volunteer",
        }
    }
}

/// One trustless gateway.
#[derive(Debug)]
pub struct Source {
    /// Its base URL (`http://host:port/`).
    pub url: url::Url,
    /// Where it came from.
    pub origin: Origin,
    ok: AtomicU64,
    missing: AtomicU64,
    failed: AtomicU64,
    corrupt: AtomicU64,
    bytes: AtomicU64,
    recent: Mutex<VecDeque<bool>>,
}

/// A source's counters, for `status` and metrics.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SourceReport {
    /// Base URL.
    pub url: String,
    /// `followed`, `configured` (`--source`) or `volunteer` (the publisher's list).
    pub origin: &'static str,
    /// The volunteer's id, for a source from the volunteer list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volunteer: Option<String>,
    /// Blocks received and verified.
    pub blocks_ok: u64,
    /// Blocks it did not have.
    pub blocks_missing: u64,
    /// Requests that failed.
    pub blocks_failed: u64,
    /// Blocks that did not match their CID.
    pub blocks_corrupt: u64,
    /// Verified bytes received.
    pub bytes: u64,
    /// Share of the last 100 requests that gave a verified block.
    pub recent_success: Option<f64>,
}

impl Source {
    /// A configured source at `url`.
    pub fn new(url: url::Url) -> Source {
        Source::with_origin(url, Origin::Configured)
    }

    /// A source at `url` learned of from `origin`.
    pub fn with_origin(url: url::Url, origin: Origin) -> Source {
        Source {
            url,
            origin,
            ok: AtomicU64::new(0),
            missing: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    fn outcome(&self, good: bool) {
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if r.len() == RECENT {
            r.pop_front();
        }
        r.push_back(good);
    }

    /// Share of recent requests that succeeded (1.0 when there were none).
    pub fn success_rate(&self) -> f64 {
        let r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_empty() {
            return 1.0;
        }
        r.iter().filter(|g| **g).count() as f64 / r.len() as f64
    }

    /// Its counters.
    pub fn report(&self) -> SourceReport {
        let recent = {
            let r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            (!r.is_empty()).then(|| r.iter().filter(|g| **g).count() as f64 / r.len() as f64)
        };
        SourceReport {
            url: self.url.to_string(),
            origin: self.origin.as_str(),
            volunteer: match &self.origin {
                Origin::Volunteer(id) => Some(id.clone()),
                _ => None,
            },
            blocks_ok: self.ok.load(Ordering::Relaxed),
            blocks_missing: self.missing.load(Ordering::Relaxed),
            blocks_failed: self.failed.load(Ordering::Relaxed),
            blocks_corrupt: self.corrupt.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            recent_success: recent,
        }
    }

    /// Verified bytes received from it.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Fetches one block (`GET /ipfs/<cid>?format=raw`) and checks it against `cid`.
    pub async fn block(
        &self,
        client: &reqwest::Client,
        cid: &Cid,
        timeout: Duration,
    ) -> Result<Bytes, BlockError> {
        let res = self.block_inner(client, cid, timeout).await;
        match &res {
            Ok(b) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                self.outcome(true);
            }
            Err(e) => {
                let c = match e {
                    BlockError::Missing(_) => &self.missing,
                    BlockError::Corrupt(_) => &self.corrupt,
                    BlockError::Failed(_) => &self.failed,
                };
                c.fetch_add(1, Ordering::Relaxed);
                self.outcome(false);
            }
        }
        res
    }

    async fn block_inner(
        &self,
        client: &reqwest::Client,
        cid: &Cid,
        timeout: Duration,
    ) -> Result<Bytes, BlockError> {
        let url = self
            .url
            .join(&format!("ipfs/{cid}?format=raw"))
            .map_err(|e| BlockError::Failed(e.to_string()))?;
        let fut = async {
            let resp = client
                .get(url)
                .header("accept", "application/vnd.ipld.raw")
                .send()
                .await
                .map_err(|e| BlockError::Failed(format!("{}: {e}", self.url)))?;
            let status = resp.status();
            if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
                return Err(BlockError::Missing(format!("{}: {status}", self.url)));
            }
            if !status.is_success() {
                return Err(BlockError::Failed(format!("{}: {status}", self.url)));
            }
            resp.bytes()
                .await
                .map_err(|e| BlockError::Failed(format!("{}: {e}", self.url)))
        };
        let data = match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(BlockError::Missing(format!(
                    "{}: no answer within {timeout:?}",
                    self.url
                )));
            }
        };
        cidmirror_store::hash::verify_block(cid, &data)
            .map_err(|e| BlockError::Corrupt(format!("{}: {e}", self.url)))?;
        Ok(data)
    }
}

/// The sources of a follower, in the order given (the followed gateway first, volunteers
/// last). Clones share the set.
#[derive(Debug, Clone)]
pub struct Sources {
    list: Arc<RwLock<Arc<Vec<Arc<Source>>>>>,
    client: reqwest::Client,
    /// Time one block may take from one source before it counts as missing there.
    pub block_timeout: Duration,
}

impl Sources {
    /// Configured sources at these URLs (duplicates dropped).
    pub fn new(urls: &[url::Url], client: reqwest::Client) -> Sources {
        let list: Vec<(url::Url, Origin)> = urls
            .iter()
            .map(|u| (u.clone(), Origin::Configured))
            .collect();
        Sources::with_origins(list, client)
    }

    /// Sources at these URLs, each with where it came from (duplicates dropped: the first
    /// one stays).
    pub fn with_origins(urls: Vec<(url::Url, Origin)>, client: reqwest::Client) -> Sources {
        let mut list: Vec<Arc<Source>> = Vec::new();
        for (u, origin) in urls {
            if !list.iter().any(|s| s.url == u) {
                list.push(Arc::new(Source::with_origin(u, origin)));
            }
        }
        Sources {
            list: Arc::new(RwLock::new(Arc::new(list))),
            client,
            block_timeout: Duration::from_secs(20),
        }
    }

    /// Every source now: a snapshot of the set, which later changes do not affect.
    pub fn all(&self) -> Arc<Vec<Arc<Source>>> {
        self.list.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes the first `max` of `volunteers` (id and base URL, in order) the volunteer
    /// sources, replacing the previous ones; the others stay. A volunteer whose URL is
    /// already a source, or is in `own` (this gateway itself), or repeats an earlier
    /// volunteer's, is skipped. A volunteer that stays keeps its counters. Returns what
    /// changed.
    pub fn set_volunteers(
        &self,
        volunteers: &[(String, url::Url)],
        own: &[url::Url],
        max: usize,
    ) -> VolunteerChange {
        let mut guard = self.list.write().unwrap_or_else(|e| e.into_inner());
        let old = guard.clone();
        let mut next: Vec<Arc<Source>> = old
            .iter()
            .filter(|s| !matches!(s.origin, Origin::Volunteer(_)))
            .cloned()
            .collect();
        let fixed = next.len();
        let mut change = VolunteerChange::default();
        for (id, url) in volunteers {
            if next.len() - fixed >= max {
                change.over_cap += 1;
                continue;
            }
            if own.contains(url) {
                change.skipped_own += 1;
                continue;
            }
            if next.iter().any(|s| s.url == *url) {
                change.skipped_duplicate += 1;
                continue;
            }
            let origin = Origin::Volunteer(id.clone());
            let kept = old
                .iter()
                .find(|s| s.url == *url && s.origin == origin)
                .cloned();
            match kept {
                Some(s) => next.push(s),
                None => {
                    change.added.push(url.to_string());
                    next.push(Arc::new(Source::with_origin(url.clone(), origin)));
                }
            }
        }
        change.removed = old
            .iter()
            .filter(|s| matches!(s.origin, Origin::Volunteer(_)))
            .filter(|s| !next.iter().any(|n| Arc::ptr_eq(n, s)))
            .map(|s| s.url.to_string())
            .collect();
        change.used = next.len() - fixed;
        *guard = Arc::new(next);
        change
    }

    /// The HTTP client.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// One block from whichever source has it, best recent success rate first; a source
    /// that has not answered within [`HEDGE_AFTER`] gets company from the next one, and the
    /// first verified answer wins. Errors list what each source said.
    pub async fn block_any(&self, cid: &Cid) -> Result<Bytes, String> {
        use futures::stream::{FuturesUnordered, StreamExt};
        let list = self.all();
        let mut order: Vec<&Arc<Source>> = list.iter().collect();
        order.sort_by(|a, b| b.success_rate().total_cmp(&a.success_rate()));
        let mut next = order.into_iter();
        let mut running = FuturesUnordered::new();
        let mut why = Vec::new();
        let start = |s: &Arc<Source>| {
            let s = s.clone();
            let client = self.client.clone();
            let timeout = self.block_timeout;
            let cid = *cid;
            async move { s.block(&client, &cid, timeout).await }
        };
        match next.next() {
            Some(s) => running.push(start(s)),
            None => return Err(format!("block {cid}: no sources")),
        }
        loop {
            tokio::select! {
                r = running.next() => match r {
                    Some(Ok(b)) => return Ok(b),
                    Some(Err(e)) => {
                        if let BlockError::Corrupt(m) = &e {
                            tracing::warn!("source sent a corrupt block {cid}: {m}");
                        }
                        why.push(e.to_string());
                        match next.next() {
                            Some(s) => running.push(start(s)),
                            None if running.is_empty() => break,
                            None => {}
                        }
                    }
                    None => break,
                },
                () = tokio::time::sleep(HEDGE_AFTER), if next.len() > 0 => {
                    if let Some(s) = next.next() {
                        running.push(start(s));
                    }
                }
            }
        }
        Err(format!("block {cid}: {}", why.join("; ")))
    }
}

/// What [`Sources::set_volunteers`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolunteerChange {
    /// URLs of volunteers that became sources.
    pub added: Vec<String>,
    /// URLs of volunteers that are sources no more.
    pub removed: Vec<String>,
    /// Volunteer sources in use now.
    pub used: usize,
    /// Volunteers skipped for being this gateway itself.
    pub skipped_own: usize,
    /// Volunteers skipped because their URL is a source already.
    pub skipped_duplicate: usize,
    /// Volunteers skipped because `max` were in use.
    pub over_cap: usize,
}
