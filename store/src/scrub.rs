//! The scrub: a background task that re-hashes the embedded store's kept files over time,
//! oldest check first, at a bounded rate (like garage's block scrub), quarantines the bad
//! ones (see `embedded::integrity`) and asks a [`Repair`] to fetch them again.
//!
//! Each file is re-hashed at least once per [`ScrubConfig::every`]; in between the task
//! sleeps. The rate bounds the disk and CPU it takes from serving. Files that were found
//! bad earlier and are still missing are offered to the repair again on every pass, so a
//! source that was down at the first try is tried later.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cidmirror_schema::{Sha256, UnixTime};
use tokio_util::sync::CancellationToken;

use crate::embedded::{EmbeddedStore, Scrubbed};

/// Fetches a file the store lost to corruption, by its SHA-256 and size, and puts it back
/// into the store (verified against both): from the publisher's upstream, or from
/// gateways by hash.
#[async_trait]
pub trait Repair: Send + Sync + 'static {
    /// Where it fetches from, for logs.
    fn describe(&self) -> String;

    /// Puts the file back; `Ok(false)` when no source has it.
    async fn repair(
        &self,
        store: &EmbeddedStore,
        sha256: Sha256,
        size: u64,
    ) -> Result<bool, String>;
}

/// How the scrub runs.
#[derive(Debug, Clone, Copy)]
pub struct ScrubConfig {
    /// Bytes per second it hashes at most (0: no scrub).
    pub rate: u64,
    /// Every file is re-hashed at least this often.
    pub every: Duration,
}

impl Default for ScrubConfig {
    fn default() -> Self {
        ScrubConfig {
            rate: 16 << 20,
            every: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// How long the scrub sleeps when nothing is due, at most (it looks again then: files
/// imported meanwhile come due at their own time).
const IDLE: Duration = Duration::from_secs(600);

/// Runs the scrub until `cancel`. Errors are logged and retried after a pause; the task
/// never ends a server.
pub async fn run(
    store: EmbeddedStore,
    cfg: ScrubConfig,
    repair: Option<Arc<dyn Repair>>,
    cancel: CancellationToken,
) {
    if cfg.rate == 0 {
        return;
    }
    tracing::info!(
        "scrub: re-hashing kept files every {} at up to {:.1} MiB/s{}",
        humantime::format_duration(cfg.every),
        cfg.rate as f64 / f64::from(1u32 << 20),
        match &repair {
            Some(r) => format!(", repairing from {}", r.describe()),
            None => String::new(),
        }
    );
    let mut repaired_at = None::<Instant>;
    let mut swept_at = None::<Instant>;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        // Files written, replaced or touched on disk since their check first, whenever due.
        if swept_at.is_none_or(|t| t.elapsed() >= IDLE) {
            swept_at = Some(Instant::now());
            sweep_changed(&store, cfg.rate, &cancel).await;
        }
        // Offer what is still missing to the repair now and then.
        if let Some(r) = &repair
            && repaired_at.is_none_or(|t| t.elapsed() >= IDLE)
        {
            repaired_at = Some(Instant::now());
            repair_open(&store, r.as_ref(), &cancel).await;
        }
        let s = store.clone();
        let c = cancel.clone();
        let due = UnixTime::now().plus_secs(-i64::try_from(cfg.every.as_secs()).unwrap_or(0));
        let step = tokio::task::spawn_blocking(move || {
            let mut throttle = Throttle::new(cfg.rate, c);
            s.scrub_next(due, &mut |n| throttle.take(n))
        })
        .await;
        let pause = match step {
            Ok(Ok(Scrubbed::Idle)) => IDLE,
            Ok(Ok(Scrubbed::Good { .. } | Scrubbed::Stopped)) => Duration::ZERO,
            Ok(Ok(Scrubbed::Corrupt { sha256, size, .. })) => {
                if let Some(r) = &repair {
                    repair_one(&store, r.as_ref(), sha256, size).await;
                }
                Duration::ZERO
            }
            Ok(Err(e)) => {
                tracing::warn!("scrub: {e}; trying again in a minute");
                Duration::from_secs(60)
            }
            Err(e) => {
                tracing::warn!("scrub: {e}; trying again in a minute");
                Duration::from_secs(60)
            }
        };
        if !pause.is_zero() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
                // Found by a request (or a block read): repair it now.
                _ = store.corruption_found() => repaired_at = None,
            }
        }
    }
}

/// Hashes every kept file whose on-disk identity changed since its last check.
async fn sweep_changed(store: &EmbeddedStore, rate: u64, cancel: &CancellationToken) {
    let s = store.clone();
    let c = cancel.clone();
    let res = tokio::task::spawn_blocking(move || -> crate::Result<usize> {
        let changed = s.changed_since_check()?;
        let n = changed.len();
        let mut throttle = Throttle::new(rate, c);
        for row in changed {
            if let Scrubbed::Stopped = s.check_file(row, &mut |n| throttle.take(n))? {
                break;
            }
        }
        Ok(n)
    })
    .await;
    match res {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => tracing::info!("scrub: re-hashed {n} files changed on disk since their check"),
        Ok(Err(e)) => tracing::warn!("scrub: {e}"),
        Err(e) => tracing::warn!("scrub: {e}"),
    }
}

/// Offers every corrupt file the store does not hold again to `repair`.
pub async fn repair_open(store: &EmbeddedStore, repair: &dyn Repair, cancel: &CancellationToken) {
    let s = store.clone();
    let open = match tokio::task::spawn_blocking(move || s.to_repair()).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            tracing::warn!("repair: {e}");
            return;
        }
        Err(e) => {
            tracing::warn!("repair: {e}");
            return;
        }
    };
    for (sha, size) in open {
        if cancel.is_cancelled() {
            return;
        }
        repair_one(store, repair, sha, size).await;
    }
}

/// One repair, logged.
pub async fn repair_one(store: &EmbeddedStore, repair: &dyn Repair, sha256: Sha256, size: u64) {
    match repair.repair(store, sha256, size).await {
        Ok(true) => tracing::info!("repaired file {sha256} ({size} bytes)"),
        Ok(false) => tracing::warn!(
            "file {sha256} ({size} bytes) is corrupt here and no source has it now; trying later"
        ),
        Err(e) => tracing::warn!("repairing file {sha256}: {e}; trying later"),
    }
}

/// Keeps hashing under `rate` bytes per second (sleeping on the blocking thread that
/// hashes) and stops when cancelled.
struct Throttle {
    rate: u64,
    start: Instant,
    done: u64,
    cancel: CancellationToken,
}

impl Throttle {
    fn new(rate: u64, cancel: CancellationToken) -> Self {
        Throttle {
            rate,
            start: Instant::now(),
            done: 0,
            cancel,
        }
    }

    fn take(&mut self, n: u64) -> bool {
        self.done += n;
        let due = Duration::from_secs_f64(self.done as f64 / self.rate as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            // In slices, so a cancel is seen within a tenth of a second.
            let mut left = due - elapsed;
            while !left.is_zero() {
                if self.cancel.is_cancelled() {
                    return false;
                }
                let slice = left.min(Duration::from_millis(100));
                std::thread::sleep(slice);
                left -= slice;
            }
        }
        !self.cancel.is_cancelled()
    }
}
