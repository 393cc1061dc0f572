//! The follower gateway: `cidmirror serve --follow URL`.
//!
//! A follower learns of each snapshot a publisher (or another follower) announces
//! ([`watch`]), checks its signature against the publisher's key, refreshes its copy of the
//! listing by delta ([`view`], [`refresh`]), rebuilds unsigned databases locally
//! ([`pacdb`]) and serves pacman from it: files it does not hold yet are fetched as
//! verified blocks from several sources at once, or whole from an HTTP mirror checked
//! against the snapshot's SHA-256 ([`sources`], [`transfer`]); a cache budget bounds what it
//! keeps ([`cache`]). The volunteers the publisher lists join the sources by themselves
//! ([`volunteers`]).
//!
//! ```no_run
//! # async fn demo(store: cidmirror_store::EmbeddedStore, key: &str) -> Result<(), Box<dyn std::error::Error>> {
//! use cidmirror_resolver::follow::{FollowConfig, Follower};
//! let cfg = FollowConfig::new("http://publisher:7878/".parse()?, key, "/var/lib/cidmirror/follow".into())?;
//! let follower = Follower::new(cfg, store)?;
//! let state = follower.app_state();
//! follower.spawn(tokio_util::sync::CancellationToken::new());
//! # Ok(()) }
//! ```

pub mod cache;
pub(crate) mod refresh;
pub(crate) mod serve;
pub mod sources;
pub mod transfer;
pub mod view;
pub mod volunteers;
pub mod watch;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cidmirror_store::EmbeddedStore;
use ed25519_dalek::VerifyingKey;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::snapshot::Snapshots;
use cache::{Cache, CacheReport};
use sources::{Origin, SourceReport, Sources};
use transfer::Transfers;

/// Errors of the follower.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// Something received is not what it must be.
    #[error("{what}: {detail}")]
    Invalid {
        /// What was being read.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// Fetching failed.
    #[error("{0}")]
    Fetch(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] cidmirror_store::Error),
    /// A listing file is not in the format, or a listing could not be rebuilt.
    #[error(transparent)]
    Listing(#[from] cidmirror_listing::Error),
    /// A local file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// How a follower refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RefreshMode {
    /// Delta (changes.jsonl and new desc entries, rebuilt locally), walking only when the
    /// delta does not reproduce the signed root.
    Delta,
    /// Always walk the listing and fetch the blocks not held (for comparison).
    Walk,
}

/// A follower's settings.
#[derive(Debug, Clone)]
pub struct FollowConfig {
    /// The gateway followed (a publisher or another follower).
    pub follow: url::Url,
    /// The publisher's public key.
    pub key: VerifyingKey,
    /// More trustless gateways to fetch blocks from (the followed one is always first).
    pub sources: Vec<url::Url>,
    /// Plain HTTP mirrors (pacman's layout), last resort for package files.
    pub fallback_mirrors: Vec<url::Url>,
    /// Bytes of files the store may keep (none: no limit).
    pub cache_budget: Option<u64>,
    /// Where the follower keeps its state (`state.json`, `status.json`, temp files).
    pub dir: PathBuf,
    /// Delta or walk.
    pub refresh: RefreshMode,
    /// How often to poll when the feed is down.
    pub poll_every: Duration,
    /// Whether the volunteers the followed gateway lists (`/api/v1/volunteers`) become
    /// block sources.
    pub use_volunteers: bool,
    /// How often to fetch the volunteer list (it is fetched after each new snapshot too).
    pub volunteers_every: Duration,
    /// Volunteer sources used at most (the first ones of the list, by id): each source
    /// gets its own workers in every transfer.
    pub max_volunteer_sources: usize,
    /// This gateway's own URLs (as it may announce itself as a volunteer): never a source.
    pub own_urls: Vec<url::Url>,
}

/// Makes a base URL end with `/` so that joining paths appends to it.
pub fn base_url(mut u: url::Url) -> url::Url {
    if !u.path().ends_with('/') {
        let p = format!("{}/", u.path());
        u.set_path(&p);
    }
    u
}

impl FollowConfig {
    /// Settings with the defaults: no other sources, no fallback mirror, a 20 GiB budget.
    pub fn new(follow: url::Url, key_hex: &str, dir: PathBuf) -> Result<FollowConfig, FollowError> {
        let key = cidmirror_store::sign::parse_public_key(key_hex)?;
        Ok(FollowConfig {
            follow: base_url(follow),
            key,
            sources: Vec::new(),
            fallback_mirrors: Vec::new(),
            cache_budget: Some(20 << 30),
            dir,
            refresh: RefreshMode::Delta,
            poll_every: Duration::from_secs(5),
            use_volunteers: true,
            volunteers_every: Duration::from_secs(30),
            max_volunteer_sources: 32,
            own_urls: Vec::new(),
        })
    }
}

/// What a follower has done, for `status`, `/api/v1/follow/status` and metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FollowReport {
    /// The gateway followed.
    pub publisher: String,
    /// The current snapshot: sequence and root.
    pub current: Option<(u64, String)>,
    /// The newest verified announcement seen.
    pub latest_seen: Option<u64>,
    /// Snapshots the current one is behind the newest seen.
    pub lag: u64,
    /// When the current snapshot was published, and how long after that it became current
    /// here (milliseconds).
    pub switch_delay_ms: Option<u64>,
    /// Whether the feed is connected now.
    pub feed_connected: bool,
    /// Announcements refused (bad signature, going backwards, conflicting).
    pub refused: u64,
    /// Refreshes done by delta, by walk, failed.
    pub refreshes_delta: u64,
    /// Refreshes by walk.
    pub refreshes_walk: u64,
    /// Refreshes that failed.
    pub refreshes_failed: u64,
    /// Bytes the last refresh fetched (delta CAR on the wire, or blocks of a walk).
    pub last_refresh_bytes: u64,
    /// The sources.
    pub sources: Vec<SourceReport>,
    /// The cache.
    pub cache: CacheReport,
    /// Transfers started, joined, completed, failed; sources dropped; fallback bytes and
    /// rejected fallback files.
    pub transfers: [u64; 7],
    /// The volunteer list and what came of it.
    pub volunteers: volunteers::VolunteerReport,
    /// When this report was made (RFC 3339).
    pub at: String,
}

/// Counters the refresh loop keeps.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub latest_seen: AtomicU64,
    pub refused: AtomicU64,
    pub delta: AtomicU64,
    pub walk: AtomicU64,
    pub failed: AtomicU64,
    pub last_bytes: AtomicU64,
    pub switch_delay_ms: AtomicU64,
}

/// Rebuilt databases kept between snapshots: (repo, arch) -> (file name, archive).
pub(crate) type Databases = std::collections::HashMap<
    (String, String),
    (String, cidmirror_listing::pacman::DbArchive<cid::Cid>),
>;

/// A follower gateway.
pub struct Follower {
    pub(crate) cfg: FollowConfig,
    pub(crate) store: EmbeddedStore,
    pub(crate) snapshots: Snapshots,
    pub(crate) transfers: Arc<Transfers>,
    pub(crate) cache: Arc<Cache>,
    pub(crate) counters: Counters,
    pub(crate) watch_status: Arc<watch::WatchStatus>,
    /// The view before the current one (its files are kept too).
    pub(crate) previous: Mutex<Option<Arc<view::View>>>,
    /// The unsigned databases being rebuilt, kept between snapshots (by repository and
    /// architecture: the database's file name and its segments by desc CID).
    pub(crate) databases: Arc<Mutex<Databases>>,
    pub(crate) client: reqwest::Client,
    pub(crate) volunteers: volunteers::VolunteerState,
}

impl Follower {
    /// A follower over `store`, with its state under `cfg.dir`.
    pub fn new(cfg: FollowConfig, store: EmbeddedStore) -> Result<Arc<Follower>, FollowError> {
        std::fs::create_dir_all(&cfg.dir).map_err(|source| FollowError::Io {
            path: cfg.dir.clone(),
            source,
        })?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(32)
            .build()
            .map_err(|e| FollowError::Fetch(format!("HTTP client: {e}")))?;
        let mut urls = vec![(cfg.follow.clone(), Origin::Followed)];
        urls.extend(
            cfg.sources
                .iter()
                .cloned()
                .map(|u| (base_url(u), Origin::Configured)),
        );
        let sources = Sources::with_origins(urls, client.clone());
        let cache = Arc::new(Cache::new(cfg.cache_budget));
        let tmp = cfg.dir.join("tmp");
        // Leftovers of a previous run are never resumed.
        let _ = std::fs::remove_dir_all(&tmp);
        let transfers = Arc::new(Transfers::new(
            store.clone(),
            sources,
            cfg.fallback_mirrors.iter().cloned().map(base_url).collect(),
            tmp,
            Box::new(|_, _| {}),
        ));
        let me = Arc::new(Follower {
            cfg,
            store: store.clone(),
            snapshots: Snapshots::manual(),
            transfers,
            cache,
            counters: Counters::default(),
            watch_status: Arc::default(),
            previous: Mutex::new(None),
            databases: Arc::default(),
            client,
            volunteers: volunteers::VolunteerState::default(),
        });
        Ok(me)
    }

    /// The server state that serves this follower's snapshots (make one per server).
    pub fn app_state(self: &Arc<Self>) -> AppState {
        AppState::follower(self.store.clone(), self.clone())
    }

    /// The snapshots as requests see them.
    pub fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }

    /// The transfers.
    pub fn transfers(&self) -> &Arc<Transfers> {
        &self.transfers
    }

    /// The cache.
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// Restores the last snapshot, then follows until `cancel`.
    pub fn spawn(self: &Arc<Self>, cancel: CancellationToken) {
        let me = self.clone();
        let c = cancel.clone();
        tokio::spawn(async move { me.run(c).await });
        if self.cfg.use_volunteers {
            let me = self.clone();
            let c = cancel.clone();
            tokio::spawn(async move { me.follow_volunteers(c).await });
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.write_status().await;
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                    () = cancel.cancelled() => return,
                }
            }
        });
    }

    /// What it has done.
    pub async fn report(&self) -> FollowReport {
        let c = &self.counters;
        let cur = self.snapshots.current();
        let latest = c.latest_seen.load(Ordering::Relaxed);
        let cur_seq = cur.as_ref().map_or(0, |c| c.seq);
        let t = &self.transfers.stats;
        FollowReport {
            publisher: self.cfg.follow.to_string(),
            current: cur.as_ref().map(|c| (c.seq, c.root.to_string())),
            latest_seen: (latest > 0).then_some(latest),
            lag: latest.saturating_sub(cur_seq),
            switch_delay_ms: cur
                .as_ref()
                .map(|_| c.switch_delay_ms.load(Ordering::Relaxed)),
            feed_connected: self.watch_status.feed_connected(),
            refused: c.refused.load(Ordering::Relaxed),
            refreshes_delta: c.delta.load(Ordering::Relaxed),
            refreshes_walk: c.walk.load(Ordering::Relaxed),
            refreshes_failed: c.failed.load(Ordering::Relaxed),
            last_refresh_bytes: c.last_bytes.load(Ordering::Relaxed),
            sources: self
                .transfers
                .sources()
                .all()
                .iter()
                .map(|s| s.report())
                .collect(),
            cache: self.cache.report(&self.store).await,
            transfers: [
                t.started.load(Ordering::Relaxed),
                t.shared.load(Ordering::Relaxed),
                t.completed.load(Ordering::Relaxed),
                t.failed.load(Ordering::Relaxed),
                t.sources_dropped.load(Ordering::Relaxed),
                t.fallback_bytes.load(Ordering::Relaxed),
                t.fallback_rejected.load(Ordering::Relaxed),
            ],
            volunteers: self.volunteers.report(&self.cfg),
            at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        }
    }

    /// Writes `status.json` (read by `cidmirror status`), atomically.
    pub async fn write_status(&self) {
        let r = self.report().await;
        let path = self.cfg.dir.join("status.json");
        let tmp = self.cfg.dir.join("status.json.tmp");
        let Ok(bytes) = serde_json::to_vec_pretty(&r) else {
            return;
        };
        let res = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = res {
            tracing::debug!("{}: {e}", path.display());
        }
    }
}
