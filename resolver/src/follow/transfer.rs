//! Fetching a file the follower does not hold, while pacman waits for it.
//!
//! One [`Transfer`] per file, shared by every client that asks for it meanwhile. It fetches
//! the file's root block, then its leaves from all sources at once: each source has a few
//! workers taking leaves from one plan (a source first takes the leaves dealt to it, so the
//! list is split across sources; then any other pending leaf; then, once nothing is
//! pending, a leaf that has been in flight elsewhere for longer than the hedge delay, so a
//! slow source never holds the file up). Every leaf is checked against its CID before it is
//! written; a source that sends a corrupt block is dropped for the rest of the transfer and
//! its leaf goes back to the others. Leaves are written at their offsets into a temp file,
//! and clients read the verified prefix as it grows, so the first bytes go out as soon as
//! the first leaf arrives.
//!
//! When no source has some leaf, the rest of the file comes from a fallback HTTP mirror
//! (pacman's layout); the whole file is then checked against the SHA-256 of the snapshot's
//! index before its last byte is released: a mismatch ends every client's body early (the
//! connection is cut, never completed) and nothing is kept. A complete file is imported
//! into the store, pinned as cache, and checked to have the CID the snapshot names.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cid::Cid;
use cidmirror_store::pb::DataType;
use cidmirror_store::{
    EmbeddedStore, Expected, FileSource, ImportParams, PinReason, PutOptions, Sha256, Store, unixfs,
};
use futures::Stream;
use sha2::Digest;
use tokio::sync::{Notify, watch};

use super::sources::{BlockError, Source, Sources};

/// Workers per source.
const PER_SOURCE: usize = 4;

/// What a transfer has done so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Still fetching: the file's size once known, and how many bytes from the start are
    /// verified and may be sent.
    Running {
        /// File size, once known.
        size: Option<u64>,
        /// Verified prefix.
        ready: u64,
    },
    /// Complete and verified.
    Done {
        /// File size.
        size: u64,
    },
    /// Failed: clients' bodies end with an error.
    Failed(String),
}

/// What to fetch.
#[derive(Debug, Clone)]
pub struct Want {
    /// The file.
    pub cid: Cid,
    /// Size and SHA-256 from the snapshot's index (packages), if known.
    pub expected: Option<Expected>,
    /// Its mirror path (`core/os/x86_64/foo.pkg.tar.zst`), for fallback mirrors.
    pub path: String,
    /// Import parameters of the snapshot's profile.
    pub params: ImportParams,
}

/// One file being fetched.
pub struct Transfer {
    want: Want,
    tmp: tempfile::NamedTempFile,
    progress: watch::Sender<Progress>,
}

impl Transfer {
    /// Progress, as it changes.
    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// The file.
    pub fn cid(&self) -> Cid {
        self.want.cid
    }

    /// Waits until the size is known (or the transfer failed).
    pub async fn size(&self) -> Result<u64, String> {
        let mut rx = self.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                Progress::Running { size: Some(s), .. } | Progress::Done { size: s } => {
                    return Ok(*s);
                }
                Progress::Failed(e) => return Err(e.clone()),
                Progress::Running { size: None, .. } => {}
            }
            if rx.changed().await.is_err() {
                return Err("transfer ended".into());
            }
        }
    }

    /// The bytes of `span` in order, each sent once verified; an error if the transfer
    /// fails first.
    pub fn stream(
        self: Arc<Self>,
        span: std::ops::Range<u64>,
    ) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        let rx = self.subscribe();
        let file = std::fs::File::open(self.tmp.path());
        futures::stream::unfold(
            (self, rx, file.map(Arc::new), span.start),
            move |(t, mut rx, file, pos)| async move {
                if pos >= span.end {
                    return None;
                }
                let file = match &file {
                    Ok(f) => f.clone(),
                    Err(e) => {
                        let e = std::io::Error::new(e.kind(), e.to_string());
                        return Some((Err(e), (t, rx, file, span.end)));
                    }
                };
                let avail = loop {
                    let p = rx.borrow_and_update().clone();
                    match p {
                        Progress::Running { ready, .. } if ready > pos => break ready,
                        Progress::Done { size } => break size,
                        Progress::Failed(e) => {
                            let err = std::io::Error::other(e);
                            return Some((Err(err), (t, rx, Ok(file), span.end)));
                        }
                        Progress::Running { .. } => {}
                    }
                    if rx.changed().await.is_err() {
                        let err = std::io::Error::other("transfer ended");
                        return Some((Err(err), (t, rx, Ok(file), span.end)));
                    }
                };
                let n = (avail.min(span.end) - pos).min(1 << 20);
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; n as usize];
                    file.read_exact_at(&mut buf, pos)
                        .map(|()| (Bytes::from(buf), file))
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
                match read {
                    Ok((b, file)) => Some((Ok(b), (t, rx, Ok(file), pos + n))),
                    Err(e) => {
                        let f = std::fs::File::open(t.tmp.path()).map(Arc::new);
                        Some((Err(e), (t, rx, f, span.end)))
                    }
                }
            },
        )
    }
}

/// Counters of all transfers, for metrics and `status`.
#[derive(Debug, Default)]
pub struct TransferStats {
    /// Transfers started.
    pub started: std::sync::atomic::AtomicU64,
    /// Requests that joined a running transfer.
    pub shared: std::sync::atomic::AtomicU64,
    /// Transfers that completed.
    pub completed: std::sync::atomic::AtomicU64,
    /// Transfers that failed.
    pub failed: std::sync::atomic::AtomicU64,
    /// Sources dropped in a transfer for a corrupt block.
    pub sources_dropped: std::sync::atomic::AtomicU64,
    /// Bytes from fallback mirrors.
    pub fallback_bytes: std::sync::atomic::AtomicU64,
    /// Files from fallback mirrors whose SHA-256 did not match.
    pub fallback_rejected: std::sync::atomic::AtomicU64,
}

/// The running transfers.
pub struct Transfers {
    running: Mutex<HashMap<Cid, Arc<Transfer>>>,
    store: EmbeddedStore,
    sources: Sources,
    fallbacks: Vec<url::Url>,
    tmp_dir: PathBuf,
    /// Counters.
    pub stats: Arc<TransferStats>,
    /// Called with a file's CID and size when it was imported (the cache's accounting).
    on_kept: Box<dyn Fn(Cid, u64) + Send + Sync>,
}

/// Why files fetched for clients are kept.
pub fn cache_reason() -> PinReason {
    "cache"
        .parse()
        .unwrap_or_else(|_| PinReason::default_reason())
}

impl Transfers {
    /// Transfers into `store`, temp files in `tmp_dir`.
    pub fn new(
        store: EmbeddedStore,
        sources: Sources,
        fallbacks: Vec<url::Url>,
        tmp_dir: PathBuf,
        on_kept: Box<dyn Fn(Cid, u64) + Send + Sync>,
    ) -> Transfers {
        Transfers {
            running: Mutex::new(HashMap::new()),
            store,
            sources,
            fallbacks,
            tmp_dir,
            stats: Arc::default(),
            on_kept,
        }
    }

    /// The sources.
    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// The running transfer of `want.cid`, started if there is none.
    pub fn get(self: &Arc<Self>, want: Want) -> Result<Arc<Transfer>, String> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = running.get(&want.cid) {
            self.stats.shared.fetch_add(1, Relaxed);
            return Ok(t.clone());
        }
        std::fs::create_dir_all(&self.tmp_dir)
            .map_err(|e| format!("{}: {e}", self.tmp_dir.display()))?;
        let tmp = tempfile::NamedTempFile::new_in(&self.tmp_dir)
            .map_err(|e| format!("{}: {e}", self.tmp_dir.display()))?;
        let size = want.expected.map(|e| e.size);
        let (progress, _) = watch::channel(Progress::Running { size, ready: 0 });
        let t = Arc::new(Transfer {
            want,
            tmp,
            progress,
        });
        running.insert(t.want.cid, t.clone());
        self.stats.started.fetch_add(1, Relaxed);
        let me = self.clone();
        let job = t.clone();
        tokio::spawn(async move {
            let res = me.run(&job).await;
            let end = match res {
                Ok(size) => {
                    me.stats.completed.fetch_add(1, Relaxed);
                    Progress::Done { size }
                }
                Err(e) => {
                    me.stats.failed.fetch_add(1, Relaxed);
                    tracing::warn!("fetching {}: {e}", job.want.path);
                    Progress::Failed(e)
                }
            };
            job.progress.send_replace(end);
            me.running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&job.want.cid);
        });
        Ok(t)
    }

    async fn run(&self, t: &Arc<Transfer>) -> Result<u64, String> {
        let cid = t.want.cid;
        let via_blocks = match self.plan(t).await {
            Ok(plan) => self.fetch_leaves(t, plan).await,
            Err(e) => Err((0, e)),
        };
        let size = match via_blocks {
            Ok(size) => size,
            Err((ready, why)) => {
                tracing::info!("{}: {why}; trying fallback mirrors", t.want.path);
                self.fallback(t, ready)
                    .await
                    .map_err(|e| format!("{why}; {e}"))?
            }
        };
        // Keep it: imported under the snapshot's profile it must come out as `cid`.
        let opts = PutOptions {
            params: t.want.params,
            pin: Some(cache_reason()),
            expect: t.want.expected,
            ..Default::default()
        };
        match self
            .store
            .put_file(FileSource::Path(t.tmp.path().to_path_buf()), opts)
            .await
        {
            Ok(f) if f.cid == cid => (self.on_kept)(cid, f.size),
            Ok(f) => {
                tracing::error!(
                    "{}: imported as {} instead of {cid} (profile mismatch?); not kept",
                    t.want.path,
                    f.cid
                );
                let _ = self.store.unpin(&f.cid, &cache_reason()).await;
            }
            Err(e) => tracing::error!("{}: keeping it: {e}", t.want.path),
        }
        Ok(size)
    }

    /// The leaves of the file, in order: (CID, offset, length). Small files whose root
    /// holds the data are written at once (an empty plan).
    async fn plan(&self, t: &Transfer) -> Result<Vec<(Cid, u64, u64)>, String> {
        let cid = t.want.cid;
        let root = self.block(&cid).await?;
        if cid.codec() == cidmirror_store::hash::RAW {
            self.write(t, 0, root.clone()).await?;
            self.set_ready(t, Some(root.len() as u64), root.len() as u64);
            return Ok(Vec::new());
        }
        let (size, mut leaves) = {
            let (node, u) = unixfs::decode(&cid, &root).map_err(|e| e.to_string())?;
            if !matches!(u.typ, Some(DataType::File | DataType::Raw)) {
                return Err(format!("{cid} is not a file"));
            }
            let size = u.filesize.unwrap_or(0);
            if node.links.is_empty() {
                let data = Bytes::copy_from_slice(u.data.unwrap_or_default());
                self.write(t, 0, data.clone()).await?;
                self.set_ready(t, Some(size), data.len() as u64);
                return Ok(Vec::new());
            }
            let mut off = 0;
            let mut out = Vec::new();
            for (i, l) in node.links.iter().enumerate() {
                let len = u.blocksizes.get(i).copied().unwrap_or(0);
                out.push((l.cid, off, len));
                off += len;
            }
            (size, out)
        };
        if let Some(e) = t.want.expected
            && e.size != size
        {
            return Err(format!(
                "{cid}: the root says {size} bytes, the index {}",
                e.size
            ));
        }
        self.set_ready(t, Some(size), 0);
        // Inner nodes (files over one level of links): expand them, in order.
        while leaves
            .iter()
            .any(|l| l.0.codec() != cidmirror_store::hash::RAW)
        {
            let mut next = Vec::with_capacity(leaves.len());
            for (c, off, len) in leaves {
                if c.codec() == cidmirror_store::hash::RAW {
                    next.push((c, off, len));
                    continue;
                }
                let b = self.block(&c).await?;
                let (node, u) = unixfs::decode(&c, &b).map_err(|e| e.to_string())?;
                if node.links.is_empty() {
                    // A dag-pb leaf: its data is the payload.
                    let data = Bytes::copy_from_slice(u.data.unwrap_or_default());
                    self.write(t, off, data).await?;
                    next.push((c, off, 0));
                    continue;
                }
                let mut o = off;
                for (i, l) in node.links.iter().enumerate() {
                    let n = u.blocksizes.get(i).copied().unwrap_or(0);
                    next.push((l.cid, o, n));
                    o += n;
                }
            }
            leaves = next;
        }
        Ok(leaves
            .into_iter()
            .filter(|l| l.0.codec() == cidmirror_store::hash::RAW)
            .collect())
    }

    async fn block(&self, cid: &Cid) -> Result<Bytes, String> {
        if let Ok(Some(b)) = self.store.get_block(cid).await {
            return Ok(b);
        }
        self.sources.block_any(cid).await
    }

    async fn write(&self, t: &Transfer, offset: u64, data: Bytes) -> Result<(), String> {
        let f = t.tmp.as_file().try_clone().map_err(|e| e.to_string())?;
        let path = t.tmp.path().display().to_string();
        tokio::task::spawn_blocking(move || f.write_all_at(&data, offset))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{path}: {e}"))
    }

    fn set_ready(&self, t: &Transfer, size: Option<u64>, ready: u64) {
        t.progress.send_modify(|p| {
            if let Progress::Running { size: s, ready: r } = p {
                if size.is_some() {
                    *s = size;
                }
                *r = ready.max(*r);
            }
        });
    }

    /// Fetches `leaves` from every source; the file's size, or how far the verified
    /// prefix got and why the rest could not be fetched.
    async fn fetch_leaves(
        &self,
        t: &Arc<Transfer>,
        leaves: Vec<(Cid, u64, u64)>,
    ) -> Result<u64, (u64, String)> {
        let size = leaves.last().map_or(0, |l| l.1 + l.2);
        let size = match &*t.progress.borrow() {
            Progress::Running { size: Some(s), .. } => *s,
            _ => size,
        };
        if leaves.is_empty() {
            return Ok(size);
        }
        let sources: Vec<Arc<Source>> = self.sources.all().to_vec();
        let plan = Arc::new(Plan::new(leaves, sources.len()));
        let mut workers = tokio::task::JoinSet::new();
        for (s, src) in sources.iter().enumerate() {
            for _ in 0..PER_SOURCE {
                let (plan, src, t2) = (plan.clone(), src.clone(), t.clone());
                let client = self.sources.client().clone();
                let timeout = self.sources.block_timeout;
                let stats = self.stats.clone();
                workers.spawn(async move {
                    worker(s, &src, &client, timeout, &plan, &t2, &stats).await;
                });
            }
        }
        // Until every leaf is written (or the plan failed): then fetches still running on
        // slow sources (hedged elsewhere) are abandoned, not waited for.
        loop {
            // Registered before the check, so a wake-up in between is not lost.
            let notified = plan.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let settled = {
                let st = plan.state.lock().unwrap_or_else(|e| e.into_inner());
                st.failure.is_some() || st.done.iter().all(|d| *d)
            };
            if settled {
                workers.abort_all();
                break;
            }
            tokio::select! {
                r = workers.join_next() => if r.is_none() { break },
                () = notified => {}
            }
        }
        let st = plan.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.done.iter().all(|d| *d) {
            return Ok(size);
        }
        Err((
            st.ready,
            st.failure
                .clone()
                .unwrap_or_else(|| "no source has every block".into()),
        ))
    }

    /// Fetches the file from the fallback mirrors, from byte `from` on (the prefix before
    /// it is verified already), and checks the whole file's SHA-256.
    async fn fallback(&self, t: &Transfer, from: u64) -> Result<u64, String> {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(expected) = t.want.expected else {
            return Err("no fallback: the index gives no SHA-256 for this file".into());
        };
        if self.fallbacks.is_empty() {
            return Err("no fallback mirror configured".into());
        }
        let mut why = Vec::new();
        for m in &self.fallbacks {
            match self.fallback_one(t, m, from, expected).await {
                Ok(()) => return Ok(expected.size),
                Err(Fatal(e)) => {
                    self.stats.fallback_rejected.fetch_add(1, Relaxed);
                    return Err(e);
                }
                Err(Retry(e)) => why.push(e),
            }
        }
        Err(why.join("; "))
    }

    async fn fallback_one(
        &self,
        t: &Transfer,
        mirror: &url::Url,
        from: u64,
        expected: Expected,
    ) -> Result<(), FallbackError> {
        use futures::StreamExt;
        use std::sync::atomic::Ordering::Relaxed;
        let url = mirror
            .join(&t.want.path)
            .map_err(|e| Retry(format!("{mirror}: {e}")))?;
        let mut req = self.sources.client().get(url.clone());
        if from > 0 {
            req = req.header("range", format!("bytes={from}-"));
        }
        let resp = req.send().await.map_err(|e| Retry(format!("{url}: {e}")))?;
        let status = resp.status();
        let mut skip = match status.as_u16() {
            206 => 0,
            200 => from,
            _ => return Err(Retry(format!("{url}: {status}"))),
        };
        let mut pos = from;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(|e| Retry(format!("{url}: {e}")))?;
            if skip > 0 {
                let n = skip.min(chunk.len() as u64);
                let _ = chunk.split_to(n as usize);
                skip -= n;
            }
            if chunk.is_empty() {
                continue;
            }
            if pos + chunk.len() as u64 > expected.size {
                return Err(Fatal(format!(
                    "{url}: more than the {} bytes the index says; not kept",
                    expected.size
                )));
            }
            let n = chunk.len() as u64;
            self.write(t, pos, chunk).await.map_err(Fatal)?;
            self.stats.fallback_bytes.fetch_add(n, Relaxed);
            pos += n;
            // The last byte waits for the hash check.
            self.set_ready(t, Some(expected.size), pos.min(expected.size - 1));
        }
        if pos != expected.size {
            return Err(Retry(format!(
                "{url}: {pos} bytes, the index says {}",
                expected.size
            )));
        }
        let f = t
            .tmp
            .as_file()
            .try_clone()
            .map_err(|e| Fatal(e.to_string()))?;
        let actual = tokio::task::spawn_blocking(move || -> std::io::Result<Sha256> {
            let mut h = sha2::Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut off = 0;
            loop {
                let n = f.read_at(&mut buf, off)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                off += n as u64;
            }
            Ok(Sha256(h.finalize().into()))
        })
        .await
        .map_err(|e| Fatal(e.to_string()))?
        .map_err(|e| Fatal(e.to_string()))?;
        if actual != expected.sha256 {
            return Err(Fatal(format!(
                "{url}: SHA-256 {actual}, the snapshot's index says {}; not kept, download cut",
                expected.sha256
            )));
        }
        self.set_ready(t, Some(expected.size), expected.size);
        Ok(())
    }
}

enum FallbackError {
    /// Try the next mirror.
    Retry(String),
    /// Stop: bytes that may have gone out already are wrong.
    Fatal(String),
}
use FallbackError::{Fatal, Retry};

/// The leaves of one transfer and who is fetching what.
struct Plan {
    leaves: Vec<(Cid, u64, u64)>,
    sources: usize,
    state: Mutex<PlanState>,
    wake: Notify,
    hedge_after: Duration,
}

struct PlanState {
    done: Vec<bool>,
    /// Per leaf: (source, started) of each fetch in flight.
    inflight: Vec<Vec<(usize, Instant)>>,
    /// Per leaf: sources that do not have it.
    lacking: Vec<Vec<bool>>,
    dropped: Vec<bool>,
    /// The verified prefix: leaves before `next` are done.
    next: usize,
    ready: u64,
    failure: Option<String>,
}

enum Pick {
    Leaf(usize),
    Wait,
    Stop,
}

impl Plan {
    fn new(leaves: Vec<(Cid, u64, u64)>, sources: usize) -> Plan {
        let n = leaves.len();
        Plan {
            leaves,
            sources,
            state: Mutex::new(PlanState {
                done: vec![false; n],
                inflight: vec![Vec::new(); n],
                lacking: vec![vec![false; sources]; n],
                dropped: vec![false; sources],
                next: 0,
                ready: 0,
                failure: None,
            }),
            wake: Notify::new(),
            hedge_after: super::sources::HEDGE_AFTER,
        }
    }

    fn pick(&self, s: usize) -> Pick {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.dropped[s] || st.failure.is_some() || st.done.iter().all(|d| *d) {
            return Pick::Stop;
        }
        let n = self.leaves.len();
        let pending = |st: &PlanState, i: usize| {
            !st.done[i] && st.inflight[i].is_empty() && !st.lacking[i][s]
        };
        // Leaves dealt to this source, lowest offset first; then one dealt to a source that
        // cannot take it now (dropped, lacking it, or with every worker busy).
        let mine = (st.next..n).find(|&i| i % self.sources == s && pending(&st, i));
        let busy = |o: usize| {
            st.inflight
                .iter()
                .filter(|f| f.iter().any(|(x, _)| *x == o))
                .count()
                >= PER_SOURCE
        };
        let any = || {
            (st.next..n).find(|&i| {
                let owner = i % self.sources;
                pending(&st, i) && (st.dropped[owner] || st.lacking[i][owner] || busy(owner))
            })
        };
        if let Some(i) = mine.or_else(any) {
            st.inflight[i].push((s, Instant::now()));
            return Pick::Leaf(i);
        }
        // Hedge: the oldest fetch running elsewhere for longer than the hedge delay.
        let now = Instant::now();
        let hedge = (st.next..n)
            .filter(|&i| {
                !st.done[i]
                    && !st.lacking[i][s]
                    && st.inflight[i].len() == 1
                    && st.inflight[i][0].0 != s
                    && now.duration_since(st.inflight[i][0].1) >= self.hedge_after
            })
            .min_by_key(|&i| st.inflight[i][0].1);
        if let Some(i) = hedge {
            st.inflight[i].push((s, now));
            return Pick::Leaf(i);
        }
        // Nothing left this source can do: is anything still possible at all?
        let stuck = (st.next..n).find(|&i| {
            !st.done[i]
                && st.inflight[i].is_empty()
                && (0..self.sources).all(|o| st.dropped[o] || st.lacking[i][o])
        });
        if let Some(i) = stuck {
            st.failure = Some(format!("no source has block {}", self.leaves[i].0));
            self.wake.notify_waiters();
            return Pick::Stop;
        }
        if (st.next..n).all(|i| st.done[i] || st.lacking[i][s]) {
            return Pick::Stop;
        }
        Pick::Wait
    }

    /// Records how fetching leaf `i` from source `s` ended; true if this dropped the
    /// source (the first corrupt block it sent in this transfer).
    fn finish(&self, i: usize, s: usize, outcome: Outcome) -> bool {
        let mut newly_dropped = false;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.inflight[i].retain(|(o, _)| *o != s);
        match outcome {
            Outcome::Written => {
                st.done[i] = true;
                while st.next < self.leaves.len() && st.done[st.next] {
                    let (_, off, len) = self.leaves[st.next];
                    st.ready = off + len;
                    st.next += 1;
                }
            }
            Outcome::Missing => st.lacking[i][s] = true,
            Outcome::Dropped | Outcome::Corrupt(_) => {
                newly_dropped = !st.dropped[s];
                st.dropped[s] = true;
            }
            Outcome::Failed(e) => st.failure = Some(e),
        }
        self.wake.notify_waiters();
        newly_dropped
    }
}

enum Outcome {
    Written,
    Missing,
    /// A block of the wrong size.
    Dropped,
    /// A block that fails its CID.
    Corrupt(String),
    Failed(String),
}

async fn worker(
    s: usize,
    src: &Source,
    client: &reqwest::Client,
    timeout: Duration,
    plan: &Plan,
    t: &Transfer,
    stats: &TransferStats,
) {
    loop {
        let i = match plan.pick(s) {
            Pick::Leaf(i) => i,
            Pick::Stop => return,
            Pick::Wait => {
                let _ =
                    tokio::time::timeout(Duration::from_millis(100), plan.wake.notified()).await;
                continue;
            }
        };
        let (cid, off, len) = plan.leaves[i];
        let outcome = match src.block(client, &cid, timeout).await {
            Ok(data) if data.len() as u64 != len => {
                tracing::debug!(
                    "{}: block {cid} has {} bytes, its parent says {len}",
                    src.url,
                    data.len()
                );
                Outcome::Dropped
            }
            Ok(data) => {
                let already = plan.state.lock().map(|st| st.done[i]).unwrap_or(true);
                if already {
                    Outcome::Written
                } else {
                    let f = t.tmp.as_file().try_clone();
                    let w = match f {
                        Ok(f) => tokio::task::spawn_blocking(move || f.write_all_at(&data, off))
                            .await
                            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string()))),
                        Err(e) => Err(e),
                    };
                    match w {
                        Ok(()) => Outcome::Written,
                        Err(e) => Outcome::Failed(format!("{}: {e}", t.tmp.path().display())),
                    }
                }
            }
            Err(BlockError::Corrupt(m)) => Outcome::Corrupt(m),
            Err(BlockError::Missing(_)) | Err(BlockError::Failed(_)) => Outcome::Missing,
        };
        let corrupt = match &outcome {
            Outcome::Corrupt(m) => Some(m.clone()),
            _ => None,
        };
        if plan.finish(i, s, outcome) {
            tracing::warn!(
                "dropping source {} for this transfer: {}",
                src.url,
                corrupt.as_deref().unwrap_or("a block of the wrong size")
            );
            stats
                .sources_dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let ready = plan.state.lock().map(|st| st.ready).unwrap_or(0);
        t.progress.send_modify(|p| {
            if let Progress::Running { ready: r, .. } = p {
                *r = ready.max(*r);
            }
        });
    }
}
