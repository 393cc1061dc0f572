//! One sync: from an upstream state to a published snapshot (DESIGN.md, "Publisher data
//! flow").
//!
//! 1. Catch up on retention a crash may have skipped; read the upstream's `lastupdate`: the
//!    state of the current snapshot means nothing new, without fetching anything else.
//! 2. Fetch every followed repository's databases (`.db` and `.files` must list the same
//!    packages) and check that no two files of a directory would share a name.
//!    The sanity gate: a repository that lost more than `max_shrink` of the current
//!    snapshot's packages, or all of them, holds the state back (outcome "held") until
//!    `confirm_syncs` consecutive syncs have seen a shrink or the operator accepts it.
//! 3. Plan: packages already imported under this profile (same SHA-256, and the size the
//!    database gives) are pinned for the sync and reused if still complete in the store; a
//!    file the store holds without a record (a sync killed before recording it) is read
//!    back from the store and verified again; the rest are fetched, a few at a time, each
//!    streamed straight into the store, which refuses it (nothing kept under its name)
//!    unless its size and SHA-256 are what the database says.
//! 4. Read `lastupdate` again: if it moved, start over on the new state (never mix two).
//! 5. Any failure: report every problem, keep the previous snapshot current (what was
//!    fetched stays, held by a session pin, so a retry does not fetch it again).
//! 6. Build the listing, store its blocks, pin the root, sign it, then in one transaction
//!    record it with its entries, make it current, append it to the feed and record the
//!    sync as published: whatever fails after this is a warning, never a failed sync.
//! 7. Retention: files that left upstream get a pin that expires after the grace period,
//!    then snapshots beyond the newest N are unpinned and the session pin dropped. A
//!    crash before this step is caught up at the start of the next sync.
//!
//! Every step can be repeated: a rerun after a kill at any point computes the same listing
//! from the same upstream state and publishes the same root.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use cid::Cid;
use cidmirror_schema::publisher::{Imported, Snapshot, held, imported, settings, snapshots, syncs};
use cidmirror_schema::text::printable;
use cidmirror_schema::{Db, Schema, Sha256, UnixTime};
use cidmirror_store::dir::DirEntry;
use cidmirror_store::importer::{self, BlockSink};
use cidmirror_store::{Expected, FileSource, PinReason, PutOptions, Store, unixfs};
use futures::StreamExt;
use sha2::Digest;
use tokio_util::sync::CancellationToken;

use crate::config::MirrorOptions;
use crate::keys::PublisherKey;
use crate::pacman::{self, Arch, Package, RepoName};
use crate::spool::Spool;
use crate::upstream::{self, Upstream};
use crate::{Error, Result};
use cidmirror_listing::aur::AurBase;
use cidmirror_listing::{self as listing, FileRef, Item, ItemKind, ListingInput, RepoSummary};
use cidmirror_schema::publisher::{AurSourceRow, aur as aur_rows};

use crate::aur::follow::{AurFollower, Previous};
use crate::aur::git::GitReader;

/// Largest repository database accepted (Arch's `extra.files` is about 60 MB).
const MAX_DB: u64 = 1 << 30;
/// Largest detached signature accepted.
const MAX_SIG: u64 = 64 << 10;
/// Largest `lastupdate` file accepted (a Unix time and a newline take 11 bytes).
const MAX_LASTUPDATE: u64 = 64;
/// Attempts at the data directory's lock, 10 ms apart, before another publisher is assumed.
const LOCK_TRIES: u32 = 20;
/// How often a sync starts over because the upstream changed under it, before giving up.
const MAX_RESTARTS: usize = 3;
/// Pin of files a sync fetched or reuses, until it has published.
const SESSION_PIN: &str = "sync-in-progress";
/// How long the session pin outlives a publisher that stopped.
const SESSION_PIN_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Pin of files that left upstream, during their grace period.
const LEFT_UPSTREAM_PIN: &str = "left-upstream";
/// Setting: the last snapshot whose retention step has run.
const RETAINED_THROUGH: &str = "retained_through";
/// Imports recorded per transaction while packages arrive...
const IMPORT_BATCH: usize = 128;
/// ...or sooner, once the oldest unrecorded one has waited this long.
const IMPORT_RECORD_DELAY: Duration = Duration::from_secs(1);
/// Upstream states derived from databases (no `lastupdate`) start with this.
const DERIVED: &str = "sha256:";

/// Reports progress of a sync (a terminal progress bar, or log lines).
pub trait SyncProgress: Send + Sync {
    /// A new phase starts.
    fn phase(&self, _msg: &str) {}
    /// Files and bytes that will be downloaded.
    fn planned(&self, _files: u64, _bytes: u64) {}
    /// Bytes received.
    fn transferred(&self, _bytes: u64) {}
    /// A file is in (or failed).
    fn file_done(&self, _name: &str, _ok: bool) {}
}

/// Progress that goes nowhere.
pub struct NoProgress;
impl SyncProgress for NoProgress {}

/// How a sync ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new snapshot is current.
    Published(Published),
    /// The upstream state is the one of the current snapshot.
    Unchanged {
        /// The current snapshot.
        seq: Option<u64>,
        /// The upstream state.
        state: String,
    },
    /// Something did not verify or could not be fetched; the previous snapshot stays.
    Failed {
        /// One line per problem, naming the repository and file, expected and actual.
        problems: Vec<String>,
    },
    /// The sanity gate held the new upstream state back: a repository lost more of its
    /// packages than allowed. The previous snapshot stays until the shrink persists for
    /// `needed` consecutive syncs or the operator accepts it (`mirror --accept-shrink`).
    Held {
        /// One line per repository that shrank too much.
        reasons: Vec<String>,
        /// Consecutive syncs that held a shrink, this one included.
        syncs: u64,
        /// Syncs after which it is published anyway.
        needed: u64,
    },
}

/// What a published snapshot took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Its sequence number.
    pub seq: u64,
    /// Its root.
    pub root: Cid,
    /// Packages in it.
    pub packages: u64,
    /// Files downloaded for it.
    pub fetched_files: u64,
    /// Bytes downloaded for it.
    pub fetched_bytes: u64,
    /// Bytes of blocks that were new in the store (listing, index entries, signatures,
    /// databases).
    pub new_block_bytes: u64,
    /// Lines of `changes.jsonl`.
    pub changed: u64,
    /// The one-line summary `status` shows.
    pub detail: String,
    /// What failed after the snapshot became current (it stays current): retention, or
    /// recording these warnings. Retried by the next sync.
    pub warnings: Vec<String>,
}

/// A publisher: one upstream, one profile, one store, one data directory.
pub struct Publisher {
    /// Held (flock) for the publisher's lifetime: one publisher per data directory.
    _lock: std::fs::File,
    store: Arc<dyn Store>,
    db: Db,
    key: PublisherKey,
    upstream: Upstream,
    opts: MirrorOptions,
    progress: Arc<dyn SyncProgress>,
    /// The last snapshot this publisher made current, for whoever acts on each one
    /// (IPNS, pinning services).
    published: tokio::sync::watch::Sender<Option<Published>>,
    /// Where the publisher's state is (spooled blocks go there too).
    data_dir: std::path::PathBuf,
    /// `--accept-shrink`, until one sync used it: the operator confirms the shrink held
    /// now, not every shrink to come.
    accept_shrink: std::sync::atomic::AtomicBool,
    /// The AUR package bases followed, and what reads them.
    aur: Option<(AurFollower, Vec<String>)>,
}

/// The AUR side of one sync.
#[derive(Debug, Default)]
struct AurSync {
    /// The bases the new snapshot carries (a base whose new version failed keeps its
    /// previous one).
    bases: Vec<AurBase>,
    /// The current snapshot's bases.
    previous: Vec<AurBase>,
    /// What failed, for the outcome's warnings.
    warnings: Vec<String>,
    /// Sources not cached, by base.
    skipped: HashMap<String, u64>,
}

/// AUR bases read at once.
const AUR_AT_ONCE: usize = 4;

/// The databases of one repository/architecture as fetched.
struct RepoFetch {
    repo: RepoName,
    arch: Arch,
    /// The packages; their descs are released once spooled (see `descs`).
    db: pacman::RepoDb,
    /// Each package's desc as an entry of the index, in the order of `db.packages`: its
    /// blocks are in the sync's spool.
    descs: Vec<DirEntry>,
    db_file: NamedBytes,
    db_sig: Option<Bytes>,
    /// Stored as it was checked, never held whole.
    files_file: Option<NamedFile>,
    files_sig: Option<Bytes>,
}

impl RepoFetch {
    fn label(&self) -> String {
        format!("{}/{}", self.repo.as_str(), self.arch.as_str())
    }
}

struct NamedBytes {
    bytes: Bytes,
    /// The archive's own name (`core.db.tar.gz`).
    filename: String,
    /// The short name pacman asks for (`core.db`), if it differs.
    alias: Option<String>,
}

/// A `.files` archive, in the store already.
struct NamedFile {
    file: FileRef,
    /// As in [`NamedBytes`].
    filename: String,
    alias: Option<String>,
}

/// What the sanity gate decided.
enum Gate {
    /// No repository shrank too much.
    Pass,
    /// One did, but it persisted or was accepted: publish, with this note for `status`.
    Publish(String),
    /// One did: hold the state back (an [`Outcome::Held`]).
    Hold(Outcome),
}

/// The row of `syncs` a sync records itself in, and when it started.
struct SyncRecord {
    id: i64,
    started: Instant,
}

/// Counts of what a sync fetched and wrote.
#[derive(Debug, Clone, Copy, Default)]
struct FetchStats {
    files: u64,
    bytes: u64,
    new_block_bytes: u64,
}

fn sha256_of(b: &[u8]) -> Sha256 {
    Sha256(sha2::Sha256::digest(b).into())
}

impl Publisher {
    /// Opens the publisher's state in `data_dir` (database `publisher.sqlite`, key
    /// `publisher.key`, both created on first use). One publisher per data directory.
    pub fn open(
        data_dir: &Path,
        store: Arc<dyn Store>,
        opts: MirrorOptions,
        progress: Arc<dyn SyncProgress>,
    ) -> Result<Publisher> {
        std::fs::create_dir_all(data_dir).map_err(|source| Error::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let lock_path = data_dir.join("publisher.lock");
        let lock = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| Error::Io {
                path: lock_path.clone(),
                source,
            })?;
        // `status` takes the lock shared for an instant to see whether a mirror runs: a
        // few short tries keep such a probe from refusing this publisher.
        let mut tries = 0;
        let locked = loop {
            match lock.try_lock() {
                Err(std::fs::TryLockError::WouldBlock) if tries < LOCK_TRIES => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => break other,
            }
        };
        match locked {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Config(format!(
                    "another cidmirror mirror is running on {} (it holds {})",
                    data_dir.display(),
                    lock_path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(Error::Io {
                    path: lock_path,
                    source,
                });
            }
        }
        let db = Db::open(&data_dir.join("publisher.sqlite"), Schema::Publisher)?;
        let key = PublisherKey::load_or_create(&data_dir.join("publisher.key"))?;
        let upstream = Upstream::parse(&opts.upstream, opts.fetch.clone())?;
        let profile = opts.profile.name();
        match db.read(|c| settings::get(c, "profile"))? {
            Some(p) if p != profile => {
                return Err(Error::Config(format!(
                    "this publisher publishes with profile {p}; changing it to {profile} would \
                     change every CID (use a new data directory for a new profile)"
                )));
            }
            Some(_) => {}
            None => db.write(|tx| settings::set(tx, "profile", profile))?,
        }
        let aur = match &opts.aur {
            None => None,
            Some(a) => {
                let fetcher = crate::upstream::SourceFetcher::new(opts.fetch.clone(), {
                    let policy = a.policy.clone();
                    Arc::new(move |ip| policy.allows(ip))
                })?;
                let follower = AurFollower {
                    repos: a.repos.clone(),
                    git: GitReader::new(&data_dir.join("aur-git")),
                    fetcher,
                    policy: a.policy.clone(),
                    source_max: crate::aur::follow::SOURCE_MAX,
                };
                Some((follower, a.packages.clone()))
            }
        };
        Ok(Publisher {
            aur,
            _lock: lock,
            store,
            db,
            key,
            upstream,
            data_dir: data_dir.to_path_buf(),
            accept_shrink: std::sync::atomic::AtomicBool::new(opts.gate.accept),
            opts,
            progress,
            published: tokio::sync::watch::Sender::new(None),
        })
    }

    /// Each snapshot this publisher makes current, as it happens (`None` before the first).
    pub fn published(&self) -> tokio::sync::watch::Receiver<Option<Published>> {
        self.published.subscribe()
    }

    /// The publisher's public key (64 hex digits).
    pub fn public_key(&self) -> String {
        self.key.public_hex()
    }

    /// The current snapshot, if any.
    pub fn current(&self) -> Result<Option<Snapshot>> {
        Ok(self.db.read(snapshots::current)?)
    }

    /// Syncs once, recording the attempt for `status`. A published snapshot is recorded as
    /// published by the transaction that makes it current, so that nothing failing after
    /// the switch (retention, a full disk) can make the record or the result say otherwise:
    /// such failures come back as [`Published::warnings`].
    pub async fn sync_once(&self) -> Result<Outcome> {
        let url = self.upstream.url();
        let record = SyncRecord {
            id: self
                .db
                .write(|tx| syncs::start(tx, &url, UnixTime::now()))?,
            started: Instant::now(),
        };
        let mut res = self.sync_inner(&record).await;
        let (outcome, state, detail, seq) = match &mut res {
            Ok((Outcome::Published(p), state)) => {
                self.published.send_replace(Some(p.clone()));
                if p.warnings.is_empty() {
                    return res.map(|(o, _)| o);
                }
                // Already recorded as published: only the warnings are added.
                let detail = format!("{}\nwarning: {}", p.detail, p.warnings.join("\nwarning: "));
                let noted = self.db.write(|tx| {
                    syncs::finish(
                        tx,
                        record.id,
                        "published",
                        Some(state),
                        Some(&detail),
                        Some(p.seq),
                        UnixTime::now(),
                    )
                });
                if let Err(e) = noted {
                    let w = format!("recording these warnings for `status`: {e}");
                    tracing::warn!("snapshot {}: {w}", p.seq);
                    p.warnings.push(w);
                }
                return res.map(|(o, _)| o);
            }
            Ok((Outcome::Unchanged { seq, .. }, state)) => (
                "unchanged",
                Some(state.clone()),
                "upstream unchanged".to_string(),
                *seq,
            ),
            Ok((Outcome::Failed { problems }, state)) => {
                ("failed", Some(state.clone()), problems.join("\n"), None)
            }
            Ok((
                Outcome::Held {
                    reasons,
                    syncs,
                    needed,
                },
                state,
            )) => (
                "held",
                Some(state.clone()),
                format!(
                    "{}\nheld by the sanity gate ({syncs} of {needed} syncs; `cidmirror mirror \
                     --accept-shrink` publishes it now)",
                    reasons.join("\n")
                ),
                None,
            ),
            Err(e) => ("failed", None, e.to_string(), None),
        };
        let recorded = self.db.write(|tx| {
            // Back to the current snapshot's state: no shrink is held any more.
            if outcome == "unchanged" {
                held::clear(tx)?;
            }
            syncs::finish(
                tx,
                record.id,
                outcome,
                state.as_deref(),
                Some(&detail),
                seq,
                UnixTime::now(),
            )
        });
        // The outcome stands whether or not it could be recorded (`status` then tells a
        // sync that did not record its end from one still running).
        if let Err(e) = recorded {
            tracing::warn!("recording the sync's outcome ({outcome}) for `status`: {e}");
        }
        res.map(|(o, _)| o)
    }

    /// Syncs now, then every `interval` (sooner, with backoff, after a failure) until
    /// `cancel` fires. Returns the last outcome.
    pub async fn run(&self, cancel: CancellationToken) -> Result<Outcome> {
        let mut failures = 0u32;
        loop {
            let outcome = tokio::select! {
                o = self.sync_once() => o,
                () = cancel.cancelled() => {
                    return Ok(Outcome::Unchanged { seq: None, state: "stopped".into() });
                }
            };
            let wait = match &outcome {
                Ok(Outcome::Failed { problems }) => {
                    failures += 1;
                    let shown: Vec<_> = problems.iter().map(|p| printable(p)).collect();
                    tracing::warn!(
                        "sync failed ({} problems):\n{}",
                        problems.len(),
                        shown.join("\n")
                    );
                    backoff(failures, self.opts.interval)
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!("sync failed: {}", printable(&e.to_string()));
                    backoff(failures, self.opts.interval)
                }
                Ok(Outcome::Held {
                    reasons,
                    syncs,
                    needed,
                }) => {
                    failures = 0;
                    let shown: Vec<_> = reasons.iter().map(|p| printable(p)).collect();
                    tracing::warn!(
                        "new upstream state held by the sanity gate ({syncs} of {needed} syncs), \
                         the previous snapshot stays current:\n{}",
                        shown.join("\n")
                    );
                    self.opts.interval
                }
                Ok(o) => {
                    failures = 0;
                    if let Outcome::Published(p) = o {
                        tracing::info!("published snapshot {} {}", p.seq, p.root);
                        for w in &p.warnings {
                            tracing::warn!("{}", printable(w));
                        }
                    }
                    self.opts.interval
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = cancel.cancelled() => return outcome,
            }
        }
    }

    /// The upstream's `lastupdate`, if it has one: the decimal Unix time Arch's mirror
    /// scripts write (`date +%s`). It goes into the signed manifest and onto terminals, so
    /// anything else is refused, naming the file.
    async fn read_lastupdate(&self) -> Result<Option<String>> {
        let Some(bytes) = self.upstream.get("lastupdate", MAX_LASTUPDATE).await? else {
            return Ok(None);
        };
        parse_lastupdate(&bytes)
            .map(|t| Some(t.to_string()))
            .map_err(|detail| Error::Invalid {
                url: format!("{}lastupdate", self.upstream.url()),
                detail,
            })
    }

    /// The state recorded for a snapshot: the upstream state and the followed repositories.
    /// The state a snapshot records: the upstream's, the repositories followed, and the
    /// AUR bases' commits when any are followed (a moved head is a new state).
    fn state_of(&self, lastupdate: &str, aur: &AurSync) -> String {
        let mut v = Vec::new();
        for r in &self.opts.repos {
            for a in &self.opts.arches {
                v.push(format!("{}/{}", r.as_str(), a.as_str()));
            }
        }
        let mut state = format!("{lastupdate} {}", v.join(","));
        if self.aur.is_some() {
            let mut h = sha2::Sha256::new();
            for b in &aur.bases {
                h.update(format!("{} {}\n", b.pkgbase, b.commit).as_bytes());
            }
            state.push_str(&format!(" aur:{}", &hex::encode(h.finalize())[..16]));
        }
        state
    }

    /// Reads every followed AUR base whose head moved since the current snapshot, caching
    /// its sources. A base whose new version fails keeps the published one (a warning says
    /// why); one not published yet is left out until it reads.
    async fn sync_aur(&self, current: Option<&Snapshot>) -> Result<AurSync> {
        let Some((follower, packages)) = &self.aur else {
            return Ok(AurSync::default());
        };
        self.progress.phase("reading AUR package bases");
        let previous: Vec<(AurBase, u64)> = match current {
            None => Vec::new(),
            Some(c) => self
                .db
                .read(|conn| aur_rows::bases(conn, c.seq))?
                .into_iter()
                .map(|(name, body, skipped)| {
                    let b = AurBase::parse_index(
                        body.as_bytes(),
                        &format!("the record of aur/{name}"),
                    )?;
                    Ok((b, skipped))
                })
                .collect::<std::result::Result<Vec<_>, cidmirror_listing::Error>>()?,
        };
        let before_skipped: HashMap<String, u64> = previous
            .iter()
            .map(|(b, s)| (b.pkgbase.clone(), *s))
            .collect();
        let previous: Vec<AurBase> = previous.into_iter().map(|(b, _)| b).collect();
        let put = self.session_put(None);
        let read: Vec<_> = futures::stream::iter(packages)
            .map(|name| {
                let prev = previous.iter().find(|b| &b.pkgbase == name);
                let put = &put;
                async move {
                    let p = prev.map(Previous::of);
                    let r = follower
                        .read(self.store.as_ref(), name, p.as_ref(), put)
                        .await;
                    (name, prev, r)
                }
            })
            .buffered(AUR_AT_ONCE)
            .collect()
            .await;
        let mut out = AurSync::default();
        for (name, prev, r) in read {
            let kept_skipped = before_skipped.get(name).copied().unwrap_or(0);
            let kept = || {
                if prev.is_some() {
                    "the published version stays"
                } else {
                    "not published"
                }
            };
            match r {
                Ok(None) => {
                    out.bases.extend(prev.cloned());
                    out.skipped.insert(name.clone(), kept_skipped);
                }
                Ok(Some(pkg)) => {
                    for (what, why) in &pkg.skipped {
                        tracing::info!("aur/{name}: {} not cached: {why}", printable(what));
                    }
                    out.skipped.insert(name.clone(), pkg.skipped.len() as u64);
                    let srcinfo = self.put_archive(Bytes::from(pkg.srcinfo.clone())).await?;
                    match pkg.to_base(srcinfo) {
                        Ok(b) => out.bases.push(b),
                        Err(e) => {
                            out.warnings.push(format!("aur/{name}: {e}; {}", kept()));
                            out.bases.extend(prev.cloned());
                            out.skipped.insert(name.clone(), kept_skipped);
                        }
                    }
                }
                Err(problem) => {
                    let w = format!("aur/{name}: {problem}; {}", kept());
                    tracing::warn!("{w}");
                    out.warnings.push(w);
                    out.bases.extend(prev.cloned());
                    out.skipped.insert(name.clone(), kept_skipped);
                }
            }
        }
        out.previous = previous;
        // What failed this sync, for `status` and /metrics, whatever the outcome.
        let failed = out.warnings.join("\n");
        self.db
            .write(|tx| settings::set(tx, aur_rows::FAILED_KEY, &failed))?;
        Ok(out)
    }

    fn is_current(&self, current: Option<&Snapshot>, state: &str) -> Option<u64> {
        current
            .filter(|c| {
                c.state == state
                    && c.upstream == self.upstream.url()
                    && c.profile == self.opts.profile.name()
            })
            .map(|c| c.seq)
    }

    /// Puts back what the store lost to corruption (files changed on disk since their last
    /// check are re-hashed first): fetched again from the upstream, verified, whether or
    /// not the upstream has anything new. Failures are logged; the next sync tries again.
    async fn repair_store(&self) {
        let lost = match self.store.lost_files().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("checking the store for corrupt files: {e}");
                return;
            }
        };
        for (sha, size) in lost {
            let res = crate::repair::refetch(
                &self.db,
                &self.upstream,
                self.opts.profile,
                self.store.as_ref(),
                sha,
                size,
            )
            .await;
            match res {
                Ok(true) => tracing::info!("repaired file {sha} ({size} bytes) from the upstream"),
                Ok(false) => {
                    tracing::warn!("file {sha} ({size} bytes) is corrupt here and not upstream")
                }
                Err(e) => tracing::warn!(
                    "repairing file {sha}: {}",
                    cidmirror_schema::text::printable(&e)
                ),
            }
        }
    }

    /// The sync proper; also returns the upstream state it saw.
    async fn sync_inner(&self, record: &SyncRecord) -> Result<(Outcome, String)> {
        self.catch_up_retention().await?;
        self.repair_store().await;
        let mut last_state = String::new();
        // The gate counts a sync once, however often the upstream moves under it.
        let mut counted: Option<u64> = None;
        // `--accept-shrink` is for the first sync of the run (the shrink held now), not for
        // every shrink to come.
        let accepted = self
            .accept_shrink
            .swap(false, std::sync::atomic::Ordering::SeqCst);
        // The AUR bases once per sync: a restart for a moving upstream does not read them
        // again.
        let aur = {
            let current = self.db.read(snapshots::current)?;
            self.sync_aur(current.as_ref()).await?
        };
        for _ in 0..MAX_RESTARTS {
            self.progress.phase("reading upstream state");
            let before = self.read_lastupdate().await?;
            let current = self.db.read(snapshots::current)?;
            match &before {
                Some(lu) => {
                    let state = self.state_of(lu, &aur);
                    if let Some(seq) = self.is_current(current.as_ref(), &state) {
                        // Nothing new: not even the databases are fetched.
                        return Ok((
                            Outcome::Unchanged {
                                seq: Some(seq),
                                state: state.clone(),
                            },
                            state,
                        ));
                    }
                }
                None => {
                    if let Some(c) = &current
                        && !c.state.starts_with(DERIVED)
                    {
                        return Ok((
                            Outcome::Failed {
                                problems: vec![format!(
                                    "{}lastupdate: missing upstream (it had one); retrying later",
                                    self.upstream.url()
                                )],
                            },
                            c.state.clone(),
                        ));
                    }
                }
            }
            self.progress.phase("fetching repository databases");
            let (mut repos, spool) = match self.fetch_repos().await {
                Ok(r) => r,
                Err(problems) => {
                    return Ok((Outcome::Failed { problems }, before.unwrap_or_default()));
                }
            };
            let lastupdate = match &before {
                Some(s) => s.clone(),
                None => derived_state(&repos),
            };
            let state = self.state_of(&lastupdate, &aur);
            last_state = state.clone();
            if let Some(seq) = self.is_current(current.as_ref(), &state) {
                return Ok((
                    Outcome::Unchanged {
                        seq: Some(seq),
                        state,
                    },
                    last_state,
                ));
            }
            let collisions = name_collisions(&repos);
            if !collisions.is_empty() {
                return Ok((
                    Outcome::Failed {
                        problems: collisions,
                    },
                    state,
                ));
            }
            let shrink_note =
                match self.gate(&repos, current.as_ref(), &state, accepted, &mut counted)? {
                    Gate::Pass => None,
                    Gate::Publish(note) => Some(note),
                    Gate::Hold(held) => return Ok((held, state)),
                };
            let prepared = self.prepare(&repos, current.as_ref(), spool).await?;
            // Never mix two upstream states.
            let after = match &before {
                Some(_) => self.read_lastupdate().await?,
                None => match self.fetch_derived_state().await {
                    Ok(again) => Some(again),
                    Err(problems) => return Ok((Outcome::Failed { problems }, state)),
                },
            };
            if after.as_deref() != Some(lastupdate.as_str()) {
                tracing::info!(
                    "upstream changed during the sync ({} -> {}): starting over",
                    lastupdate,
                    after.as_deref().unwrap_or("none")
                );
                continue;
            }
            let (items, sidecar, stats, previous_items) = match prepared {
                Ok(p) => p,
                Err(problems) => return Ok((Outcome::Failed { problems }, state)),
            };
            // The parsed entries and archive bytes are in the items and the store now:
            // free them before the listing is built (a large repository's are hundreds of
            // MB). What the listing's summary needs (names, signatures) stays.
            for r in &mut repos {
                r.db.packages = Vec::new();
                // Their CIDs are in the items.
                r.descs = Vec::new();
                r.db_file.bytes = Bytes::new();
            }
            let published = self
                .publish(
                    &repos,
                    &lastupdate,
                    &state,
                    items,
                    sidecar,
                    (current, previous_items),
                    stats,
                    record,
                    shrink_note,
                    &aur,
                )
                .await?;
            return Ok((Outcome::Published(published), last_state));
        }
        Ok((
            Outcome::Failed {
                problems: vec![format!(
                    "{}: the upstream changed {MAX_RESTARTS} times during the sync; retrying later",
                    self.upstream.url()
                )],
            },
            last_state,
        ))
    }

    /// Fetches and parses the databases of every followed repository. Errors are problems
    /// for the report.
    async fn fetch_repos(&self) -> Result<(Vec<RepoFetch>, Spool), Vec<String>> {
        let mut out = Vec::new();
        let mut problems = Vec::new();
        let mut spool = Spool::new(&self.data_dir).map_err(|e| vec![e.to_string()])?;
        for repo in &self.opts.repos {
            for arch in &self.opts.arches {
                match self.fetch_repo(repo, arch, &mut spool).await {
                    Ok(r) => out.push(r),
                    Err(e) => problems.push(format!("{}/{}: {e}", repo.as_str(), arch.as_str())),
                }
            }
        }
        if problems.is_empty() {
            Ok((out, spool))
        } else {
            Err(problems)
        }
    }

    /// The upstream's state now for one without `lastupdate` ([`derived_state`]): its
    /// databases fetched and hashed, not parsed (the check after such a sync used to fetch
    /// the whole state again, parsing every desc and spooling its block, to throw it away).
    async fn fetch_derived_state(&self) -> std::result::Result<String, Vec<String>> {
        let mut hashes = Vec::new();
        let mut problems = Vec::new();
        for repo in &self.opts.repos {
            for arch in &self.opts.arches {
                let dir = format!("{}/os/{}", repo.as_str(), arch.as_str());
                let got = async {
                    let db = self.get_db(repo, &dir).await?;
                    let files = format!("{dir}/{}.files", repo.as_str());
                    Ok::<_, Error>((db, self.hash_download(&files, MAX_DB).await?))
                };
                match got.await {
                    Ok((db, files)) => {
                        hashes.push(sha256_of(&db));
                        hashes.extend(files);
                    }
                    Err(e) => problems.push(format!("{}/{}: {e}", repo.as_str(), arch.as_str())),
                }
            }
        }
        if problems.is_empty() {
            Ok(derived_of(&hashes))
        } else {
            Err(problems)
        }
    }

    /// The SHA-256 of an upstream file of at most `max` bytes, hashed as it arrives (a
    /// `.files` archive is never held whole); `None` when it does not exist.
    async fn hash_download(&self, rel: &str, max: u64) -> Result<Option<Sha256>> {
        let Some(mut dl) = self.upstream.download(rel, None).await? else {
            return Ok(None);
        };
        let mut h = sha2::Sha256::new();
        let mut seen = 0u64;
        while let Some(chunk) = dl.stream.next().await {
            let chunk = chunk.map_err(|e| Error::Transfer {
                url: dl.url.clone(),
                detail: e.to_string(),
            })?;
            seen += chunk.len() as u64;
            if seen > max {
                return Err(Error::TooLarge {
                    url: dl.url,
                    limit: max,
                });
            }
            h.update(&chunk);
        }
        Ok(Some(Sha256(h.finalize().into())))
    }

    /// `<dir>/<repo>.db` from the upstream; a missing one is an error naming it.
    async fn get_db(&self, repo: &RepoName, dir: &str) -> Result<Bytes> {
        let short = format!("{}.db", repo.as_str());
        let rel = format!("{dir}/{short}");
        self.upstream
            .get(&rel, MAX_DB)
            .await?
            .ok_or_else(|| Error::Db {
                repo: repo.as_str().to_string(),
                file: short,
                detail: format!("not found upstream at {}{rel}", self.upstream.url()),
            })
    }

    /// Fetches and parses one repository's databases. Each entry's desc goes into `spool`
    /// as a file of the index at once and is released from memory: a database's descs are
    /// most of its size, and nothing else reads them.
    async fn fetch_repo(
        &self,
        repo: &RepoName,
        arch: &Arch,
        spool: &mut Spool,
    ) -> Result<RepoFetch> {
        let dir = format!("{}/os/{}", repo.as_str(), arch.as_str());
        let short = format!("{}.db", repo.as_str());
        let rel = format!("{dir}/{short}");
        let bytes = self.get_db(repo, &dir).await?;
        let mut named: Vec<(String, DirEntry)> = Vec::new();
        let db = pacman::parse_db_each(repo, &short, &bytes, &mut |p| {
            let f = self.small_file(p.desc.raw(), spool)?;
            named.push((p.name.clone(), f.dir_entry()));
            p.desc.release();
            Ok(())
        })?;
        // The database's order (by name; names are unique).
        named.sort_by(|a, b| a.0.cmp(&b.0));
        // A vector of its own, exactly this long: collected in place, it would keep the
        // pairs' allocation (44 MB for 200,000 entries, against 21 MB).
        let mut descs = Vec::with_capacity(named.len());
        descs.extend(named.drain(..).map(|(_, d)| d));
        drop(named);
        let db_file = self.name_archive(&dir, &short, db.compression).await?;
        let db_file = NamedBytes { bytes, ..db_file };
        let db_sig = self.upstream.get(&format!("{rel}.sig"), MAX_SIG).await?;
        let files_short = format!("{}.files", repo.as_str());
        let files_rel = format!("{dir}/{files_short}");
        let (files_file, files_sig) = match self.upstream.download(&files_rel, None).await? {
            None => (None, None),
            Some(dl) => {
                // Stored and parsed as it arrives. Only its list of packages is compared
                // with the .db's: descs go at once.
                let (repo_name, file) = (repo.clone(), files_short.clone());
                let (stored, parsed) = crate::tee::store_and_read(
                    &self.store,
                    dl,
                    MAX_DB,
                    self.session_put(None),
                    move |input| {
                        pacman::parse_files_db_from(&repo_name, &file, input, &mut |p| {
                            p.desc.release();
                            Ok(())
                        })
                    },
                )
                .await
                .map_err(|e| match e {
                    e @ (Error::Db { .. } | Error::Entry { .. }) => e,
                    other => Error::Db {
                        repo: repo.as_str().to_string(),
                        file: files_short.clone(),
                        detail: other.to_string(),
                    },
                })?;
                same_packages(repo, &short, &db, &files_short, &parsed)?;
                let compression = parsed.compression;
                drop(parsed);
                let named = self.name_archive(&dir, &files_short, compression).await?;
                let sig = self
                    .upstream
                    .get(&format!("{files_rel}.sig"), MAX_SIG)
                    .await?;
                let file = FileRef::from(stored);
                let NamedBytes {
                    filename, alias, ..
                } = named;
                (
                    Some(NamedFile {
                        file,
                        filename,
                        alias,
                    }),
                    sig,
                )
            }
        };
        Ok(RepoFetch {
            repo: repo.clone(),
            arch: arch.clone(),
            db,
            descs,
            db_file,
            db_sig,
            files_file,
            files_sig,
        })
    }

    /// The archive name behind `core.db`: the symlink's target for a local upstream,
    /// otherwise the name repo-add gives an archive of that compression, if upstream has it.
    async fn name_archive(
        &self,
        dir: &str,
        short: &str,
        compression: pacman::Compression,
    ) -> Result<NamedBytes> {
        let target = match self
            .upstream
            .symlink_target(&format!("{dir}/{short}"))
            .await?
        {
            Some(t) => Some(t),
            None => {
                let guess = format!("{short}{}", compression.archive_suffix());
                self.upstream
                    .exists(&format!("{dir}/{guess}"))
                    .await?
                    .then_some(guess)
            }
        };
        Ok(match target {
            Some(t) if t != short && !t.contains('/') => NamedBytes {
                bytes: Bytes::new(),
                filename: t,
                alias: Some(short.to_string()),
            },
            _ => NamedBytes {
                bytes: Bytes::new(),
                filename: short.to_string(),
                alias: None,
            },
        })
    }

    fn session_put(&self, expect: Option<Expected>) -> PutOptions {
        PutOptions {
            params: self.opts.profile.params(),
            pin: Some(pin_reason(SESSION_PIN)),
            pin_expires_at: Some(SystemTime::now() + SESSION_PIN_LIFETIME),
            expect,
            progress: None,
        }
    }

    /// A database archive: kept as a whole file, held by the session pin.
    async fn put_archive(&self, bytes: Bytes) -> Result<FileRef> {
        let size = bytes.len() as u64;
        let f = self
            .store
            .put_file(
                FileSource::Reader(Box::new(std::io::Cursor::new(bytes))),
                self.session_put(None),
            )
            .await?;
        Ok(FileRef {
            size,
            sha256: f.sha256,
            cid: f.cid,
            tsize: f.tsize,
        })
    }

    /// A small file (signature, index entry) imported into blocks collected in `sink`.
    fn small_file(&self, bytes: &[u8], sink: &mut dyn BlockSink) -> Result<FileRef> {
        let f = importer::import(bytes, &self.opts.profile.params(), sink)?;
        Ok(FileRef::from(f))
    }

    /// Brings every file of the new state into the store: reused when already imported
    /// and still complete, fetched and verified otherwise. Returns the items and the small
    /// blocks (index entries, signatures) still to store, or every problem found.
    #[allow(clippy::type_complexity)]
    async fn prepare(
        &self,
        repos: &[RepoFetch],
        current: Option<&Snapshot>,
        mut sidecar: Spool,
    ) -> Result<std::result::Result<(Vec<Item>, Spool, FetchStats, Vec<Item>), Vec<String>>> {
        let profile = self.opts.profile.name();
        let previous: Vec<Item> = match current {
            Some(c) => Item::from_entries(self.db.read(|conn| snapshots::entries(conn, c.seq))?),
            None => Vec::new(),
        };
        // A package already published (same name, same bytes) keeps its signature. One
        // published without a signature is asked again: upstream may have added it since.
        let mut prev_sig: HashMap<(String, String, String, Sha256), FileRef> = previous
            .iter()
            .filter(|i| i.kind == ItemKind::Package)
            .filter_map(|i| {
                let key = (
                    i.repo.clone(),
                    i.arch.clone(),
                    i.filename.clone(),
                    i.file.sha256,
                );
                i.sig.map(|s| (key, s))
            })
            .collect();

        // Plan: every distinct package once.
        let known: HashMap<Sha256, Imported> = self
            .db
            .read(|c| imported::all(c, profile))?
            .into_iter()
            .map(|i| (i.sha256, i))
            .collect();
        let mut wanted: Vec<(&RepoFetch, &Package)> = Vec::new();
        let mut seen = HashSet::new();
        for r in repos {
            for p in &r.db.packages {
                if seen.insert(p.sha256) {
                    wanted.push((r, p));
                }
            }
        }
        // Hold what may be reused before checking it is still there: a gc running now
        // either finishes first (and the check below sees it) or waits for the pin.
        let reusable: Vec<Cid> = wanted
            .iter()
            .filter_map(|(_, p)| known.get(&p.sha256).map(|i| i.cid))
            .chain(prev_sig.values().map(|s| s.cid))
            .collect();
        self.store
            .pin_all(
                &reusable,
                &pin_reason(SESSION_PIN),
                Some(SystemTime::now() + SESSION_PIN_LIFETIME),
            )
            .await?;
        // A signature gone from the store is fetched again like a new one.
        let sig_keys: Vec<_> = prev_sig.keys().cloned().collect();
        let sig_cids: Vec<Cid> = sig_keys.iter().map(|k| prev_sig[k].cid).collect();
        for (k, present) in sig_keys
            .into_iter()
            .zip(self.store.has_many(&sig_cids).await?)
        {
            if !present {
                prev_sig.remove(&k);
            }
        }
        // Single-block files are complete when their one block is there: one batched
        // lookup; larger ones are walked.
        let roots: Vec<Cid> = wanted
            .iter()
            .filter_map(|(_, p)| known.get(&p.sha256).map(|i| i.cid))
            .collect();
        let present: HashMap<Cid, bool> = roots
            .iter()
            .copied()
            .zip(self.store.has_many(&roots).await?)
            .collect();
        let mut files: HashMap<Sha256, FileRef> = HashMap::new();
        let mut fetch: Vec<(&RepoFetch, &Package)> = Vec::new();
        let mut problems = Vec::new();
        for (r, p) in wanted {
            // The bytes with this SHA-256 have the size recorded when they were imported:
            // an entry that says otherwise is wrong, and fetching cannot make it right.
            if let Some(imp) = known.get(&p.sha256)
                && imp.size != p.csize
            {
                problems.push(csize_mismatch(r, p, imp.size));
                continue;
            }
            let complete = match known.get(&p.sha256) {
                None => false,
                Some(imp) if !present.get(&imp.cid).copied().unwrap_or(false) => false,
                Some(imp) if imp.cid.codec() == cidmirror_store::hash::RAW => true,
                Some(imp) => unixfs::complete(self.store.as_ref(), &imp.cid).await?,
            };
            match known.get(&p.sha256) {
                Some(imp) if complete => {
                    files.insert(
                        p.sha256,
                        FileRef {
                            size: imp.size,
                            sha256: imp.sha256,
                            cid: imp.cid,
                            tsize: imp.tsize,
                        },
                    );
                }
                Some(_) => {
                    self.db
                        .write(|tx| imported::forget(tx, &p.sha256, profile))?;
                    fetch.push((r, p));
                }
                None => fetch.push((r, p)),
            }
        }
        let total: u64 = fetch.iter().map(|(_, p)| p.csize).sum();
        self.progress.planned(fetch.len() as u64, total);
        self.progress.phase("fetching packages");

        // Fetch and verify, recording imports in batches as they arrive (a crash loses at
        // most the last second of records, and the files behind them are still found in
        // the store: see `fetch_package`).
        // At most `concurrency` downloads at once; a store that commits files together
        // gets more of them in flight, each holding a download slot only while its bytes
        // arrive.
        let slots = Arc::new(tokio::sync::Semaphore::new(self.opts.concurrency));
        let slots = &slots;
        let mut results = futures::stream::iter(
            fetch
                .iter()
                .map(|(r, p)| async move { (p.sha256, self.fetch_package(r, p, slots).await) }),
        )
        .buffer_unordered(self.opts.concurrency * self.store.put_fanout().max(1));
        let mut stats = FetchStats::default();
        let mut batch: Vec<Imported> = Vec::new();
        let mut oldest = Instant::now();
        while let Some((sha, res)) = results.next().await {
            match res {
                Ok((f, how)) => {
                    if how == Arrived::Downloaded {
                        stats.files += 1;
                        stats.bytes += f.size;
                    }
                    if batch.is_empty() {
                        oldest = Instant::now();
                    }
                    batch.push(Imported {
                        sha256: f.sha256,
                        cid: f.cid,
                        size: f.size,
                        tsize: f.tsize,
                    });
                    files.insert(sha, f);
                }
                Err(p) => problems.push(p),
            }
            if batch.len() >= IMPORT_BATCH
                || (!batch.is_empty() && oldest.elapsed() >= IMPORT_RECORD_DELAY)
            {
                self.record_imports(&mut batch)?;
            }
        }
        drop(results);
        self.record_imports(&mut batch)?;

        // Signatures, index entries, databases. Index entries and signatures the previous
        // snapshot already holds are not stored again (15,000 rewrites per resync otherwise).
        self.progress.phase("fetching signatures and indexing");
        // Still there? (A gc may have taken an unpinned old snapshot's blocks.)
        let candidates: Vec<Cid> = previous
            .iter()
            .flat_map(|i| {
                i.package
                    .as_ref()
                    .map(|p| p.1.cid)
                    .into_iter()
                    .chain(i.sig.map(|s| s.cid))
            })
            .collect();
        let held: HashSet<Cid> = candidates
            .iter()
            .copied()
            .zip(self.store.has_many(&candidates).await?)
            .filter_map(|(c, present)| present.then_some(c))
            .collect();
        // Sized once: doubling a vector of 200,000 items would hold up to twice that.
        let mut items =
            Vec::with_capacity(repos.iter().map(|r| r.db.packages.len() + 2).sum::<usize>());
        // The previous snapshot's index entries and signatures are not stored again.
        sidecar.skip(held);
        for r in repos {
            let (repo, arch) = (r.repo.as_str().to_string(), r.arch.as_str().to_string());
            let dir = format!("{repo}/os/{arch}");
            let sig_jobs = r.db.packages.iter().map(|p| {
                let key = (repo.clone(), arch.clone(), p.filename.to_string(), p.sha256);
                let known = prev_sig.get(&key).copied();
                let dir = &dir;
                async move {
                    match known {
                        Some(sig) => Ok(SigState::Known(sig)),
                        None => self.fetch_sig(dir, p).await.map(SigState::Fetched),
                    }
                }
            });
            // Taken as they come (in order), not collected: one answer per package at once
            // would be held otherwise.
            let mut sigs =
                std::pin::pin!(futures::stream::iter(sig_jobs).buffered(self.opts.concurrency * 4));
            for (i, p) in r.db.packages.iter().enumerate() {
                let Some(sig) = sigs.next().await else {
                    break; // one answer per package: not reached
                };
                let sig = match sig {
                    Ok(SigState::Known(s)) => Some(s),
                    Ok(SigState::Fetched(Some(bytes))) => {
                        Some(self.small_file(&bytes, &mut sidecar)?)
                    }
                    Ok(SigState::Fetched(None)) => None,
                    Err(e) => {
                        problems.push(e);
                        None
                    }
                };
                let desc = r.descs[i];
                let Some(file) = files.get(&p.sha256).copied() else {
                    continue; // its fetch failed: reported above
                };
                // Another entry with the same SHA-256 brought these bytes in.
                if file.size != p.csize {
                    problems.push(csize_mismatch(r, p, file.size));
                    continue;
                }
                items.push(Item {
                    repo: repo.clone(),
                    arch: arch.clone(),
                    kind: ItemKind::Package,
                    filename: p.filename.to_string(),
                    alias: None,
                    file,
                    sig,
                    package: Some((
                        p.name.clone(),
                        DirEntry {
                            cid: desc.cid,
                            tsize: desc.tsize,
                        },
                    )),
                });
            }
            if !problems.is_empty() {
                continue; // no point storing databases of a sync that will not publish
            }
            let db_file = self.put_archive(r.db_file.bytes.clone()).await?;
            let files_file = r.files_file.as_ref();
            for (kind, named, sig) in [
                (
                    ItemKind::Database,
                    Some((db_file, &r.db_file.filename, &r.db_file.alias)),
                    r.db_sig.as_ref(),
                ),
                (
                    ItemKind::Files,
                    files_file.map(|f| (f.file, &f.filename, &f.alias)),
                    r.files_sig.as_ref(),
                ),
            ] {
                let Some((file, filename, alias)) = named else {
                    continue;
                };
                let sig = match sig {
                    Some(s) => Some(self.small_file(s, &mut sidecar)?),
                    None => None,
                };
                items.push(Item {
                    repo: repo.clone(),
                    arch: arch.clone(),
                    kind,
                    filename: filename.clone(),
                    alias: alias.clone(),
                    file,
                    sig,
                    package: None,
                });
            }
        }
        if !problems.is_empty() {
            problems.sort();
            return Ok(Err(problems));
        }
        Ok(Ok((items, sidecar, stats, previous)))
    }

    fn record_imports(&self, batch: &mut Vec<Imported>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let profile = self.opts.profile.name();
        self.db.write(|tx| -> Result<(), cidmirror_schema::Error> {
            for imp in batch.iter() {
                imported::put(tx, imp, profile)?;
            }
            Ok(())
        })?;
        batch.clear();
        Ok(())
    }

    /// Brings one package into the store: from the store's own copy when it has one that
    /// verifies (a file imported by a sync that died before recording it), otherwise
    /// downloaded and verified on the way in.
    async fn fetch_package(
        &self,
        r: &RepoFetch,
        p: &Package,
        slots: &Arc<tokio::sync::Semaphore>,
    ) -> std::result::Result<(FileRef, Arrived), String> {
        let (repo, arch) = (r.repo.as_str(), r.arch.as_str());
        let rel = format!("{repo}/os/{arch}/{}", p.filename);
        let name = format!("{}: {}", r.label(), p.filename);
        let expect = Some(Expected {
            size: p.csize,
            sha256: p.sha256,
        });
        // A local upstream is read as fast as a stored copy would be: no need to look.
        let local = if self.upstream.is_local() {
            Ok(None)
        } else {
            self.store.local_file(&p.sha256).await
        };
        let local = match local {
            Ok(local) => local,
            Err(e) => {
                tracing::warn!("{}: looking for a stored copy: {e}", printable(&name));
                None
            }
        };
        if let Some(path) = local {
            // Read and hashed again: a copy that does not verify is fetched instead.
            match self
                .store
                .put_file(FileSource::Path(path), self.session_put(expect))
                .await
            {
                Ok(f) => {
                    self.progress.transferred(f.size);
                    self.progress.file_done(&name, true);
                    let file = FileRef::from(f);
                    return Ok((file, Arrived::FromStore));
                }
                Err(e) => tracing::warn!(
                    "{}: the stored copy does not verify ({}); fetching it again",
                    printable(&name),
                    printable(&e.to_string())
                ),
            }
        }
        let res: Result<FileRef> = async {
            if self.upstream.is_local() {
                return self.put_local(&rel, expect, slots).await;
            }
            // Held until the last byte (or an error) arrives, not while the store commits.
            let mut slot = Some(self.download_slot(&rel, slots).await?);
            let dl = self
                .upstream
                .download(&rel, Some(p.csize))
                .await?
                .ok_or_else(|| self.transfer_error(&rel, "not found upstream"))?;
            let progress = self.progress.clone();
            let mut inner = dl.stream;
            let stream = futures::stream::poll_fn(move |cx| {
                let next = inner.as_mut().poll_next(cx);
                match &next {
                    std::task::Poll::Ready(Some(Ok(b))) => progress.transferred(b.len() as u64),
                    std::task::Poll::Ready(_) => drop(slot.take()),
                    std::task::Poll::Pending => {}
                }
                next
            });
            let f = self
                .store
                .put_file(
                    FileSource::Chunks(Box::pin(stream)),
                    self.session_put(expect),
                )
                .await?;
            Ok(FileRef::from(f))
        }
        .await;
        self.progress.file_done(&name, res.is_ok());
        res.map(|f| (f, Arrived::Downloaded))
            .map_err(|e| format!("{name}: {e}"))
    }

    /// One of the download slots (a closed semaphore is an error naming the file).
    async fn download_slot(
        &self,
        rel: &str,
        slots: &Arc<tokio::sync::Semaphore>,
    ) -> Result<tokio::sync::OwnedSemaphorePermit> {
        slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| self.transfer_error(rel, "download slots closed"))
    }

    /// A transfer problem with the upstream's file `rel`.
    fn transfer_error(&self, rel: &str, detail: &str) -> Error {
        Error::Transfer {
            url: format!("{}{rel}", self.upstream.url()),
            detail: detail.into(),
        }
    }

    /// A package of a local upstream: the file opened and checked here, then read by the
    /// store directly (no stream in between: one blocking trip to open, one to import).
    /// The stall timeout holds as for a stream: no byte imported for that long fails it.
    async fn put_local(
        &self,
        rel: &str,
        expect: Option<Expected>,
        slots: &Arc<tokio::sync::Semaphore>,
    ) -> Result<FileRef> {
        let slot = self.download_slot(rel, slots).await?;
        let expected_len = expect.map(|e| e.size);
        let local = self
            .upstream
            .open_local(rel, expected_len)
            .await?
            .ok_or_else(|| self.transfer_error(rel, "not found upstream"))?;
        let upstream::LocalFile {
            name,
            path,
            file,
            len,
            stall_timeout,
        } = local;
        // The slot is given back once every byte is read, not while the store commits.
        let moved = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let slot = std::sync::Mutex::new(Some(slot));
        let progress = self.progress.clone();
        let counter = Arc::clone(&moved);
        let mut opts = self.session_put(expect);
        opts.progress = Some(Arc::new(move |n| {
            progress.transferred(n);
            let total = counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
            if total >= len {
                drop(slot.lock().ok().and_then(|mut s| s.take()));
            }
        }));
        let put = self.store.put_file(FileSource::Open { file, path }, opts);
        tokio::pin!(put);
        let mut seen = 0;
        let f = loop {
            tokio::select! {
                f = &mut put => break f?,
                () = tokio::time::sleep(stall_timeout) => {
                    // Every byte read: what is left is the store's commit, not a read.
                    let now = moved.load(std::sync::atomic::Ordering::Relaxed);
                    if now == seen && now < len {
                        return Err(Error::Stalled {
                            url: name,
                            secs: stall_timeout.as_secs_f64().ceil() as u64,
                        });
                    }
                    seen = now;
                }
            }
        };
        Ok(FileRef::from(f))
    }

    /// The package's detached signature, if upstream has one. It must agree with the
    /// database's `%PGPSIG%` when that is present.
    async fn fetch_sig(
        &self,
        dir: &str,
        p: &Package,
    ) -> std::result::Result<Option<Bytes>, String> {
        let rel = format!("{dir}/{}.sig", p.filename);
        let bytes = match self.upstream.get(&rel, MAX_SIG).await {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        if let Some(embedded) = &p.pgpsig
            && embedded[..] != bytes[..]
        {
            return Err(format!(
                "{rel}: the signature file differs from the database's %PGPSIG% for {}",
                p.name
            ));
        }
        Ok(Some(bytes))
    }

    #[allow(clippy::too_many_arguments)]
    async fn publish(
        &self,
        repos: &[RepoFetch],
        lastupdate: &str,
        state: &str,
        mut items: Vec<Item>,
        mut sidecar: Spool,
        // The current snapshot and its items (`prepare` read them).
        (current, previous_items): (Option<Snapshot>, Vec<Item>),
        mut stats: FetchStats,
        record: &SyncRecord,
        shrink_note: Option<String>,
        aur: &AurSync,
    ) -> Result<Published> {
        self.progress.phase("building the snapshot");
        items.sort_by(|a, b| (&a.repo, &a.arch, &a.filename).cmp(&(&b.repo, &b.arch, &b.filename)));
        let summaries: Vec<RepoSummary> = repos
            .iter()
            .map(|r| {
                let (repo, arch) = (r.repo.as_str(), r.arch.as_str());
                let pkgs = items
                    .iter()
                    .filter(|i| i.repo == repo && i.arch == arch && i.kind == ItemKind::Package);
                RepoSummary {
                    repo: repo.to_string(),
                    arch: arch.to_string(),
                    packages: pkgs.clone().count() as u64,
                    bytes: pkgs.map(|i| i.file.size).sum(),
                    database: r.db_file.filename.clone(),
                    files: r.files_file.as_ref().map(|f| f.filename.clone()),
                    signed: r.db_sig.is_some(),
                    // Filled from the items by the listing builder.
                    database_file: None,
                    files_file: None,
                }
            })
            .collect();
        let url = self.upstream.url();
        let listing = listing::publish(
            &ListingInput {
                profile: self.opts.profile,
                upstream: &url,
                lastupdate,
                items: &items,
                repos: &summaries,
                previous: current.as_ref().map(|c| (c.root, &previous_items[..])),
                aur: &aur.bases,
                previous_aur: &aur.previous,
                scratch: &self.data_dir,
            },
            &mut sidecar,
        )?;
        drop(previous_items);
        // Index entries and signatures, then the listing's own nodes, from the spool.
        stats.new_block_bytes += sidecar.store_into(self.store.as_ref()).await?;
        let root = listing.root.cid;
        let seq = self.db.read(snapshots::next_seq)?;
        let previous = current.as_ref().map(|c| c.root);
        // Durable and pinned before it becomes current.
        self.store.pin(&root, &snapshot_pin(seq), None).await?;
        let signature = self.key.sign_snapshot(seq, &root, previous.as_ref());
        let packages = summaries.iter().map(|s| s.packages).sum();
        let snap = Snapshot {
            seq,
            root,
            previous,
            upstream: url.clone(),
            state: state.to_string(),
            profile: self.opts.profile.name().to_string(),
            manifest: listing.manifest,
            signature,
            published_at: UnixTime::now(),
            packages,
            new_bytes: stats.new_block_bytes + stats.bytes,
        };
        let mut published = Published {
            seq,
            root,
            packages,
            fetched_files: stats.files,
            fetched_bytes: stats.bytes,
            new_block_bytes: stats.new_block_bytes,
            changed: listing.changed,
            detail: String::new(),
            warnings: aur.warnings.clone(),
        };
        published.detail = format!(
            "snapshot {seq} {root}: {packages} packages, {} files ({} bytes) fetched, {} changes, \
             in {:.1} s",
            published.fetched_files,
            published.fetched_bytes,
            published.changed,
            record.started.elapsed().as_secs_f64()
        );
        if let Some(note) = &shrink_note {
            published.detail = format!("{}\n{note}", published.detail);
        }
        let mut aur_bodies = Vec::with_capacity(aur.bases.len());
        let mut aur_sources = Vec::new();
        for b in &aur.bases {
            let body = String::from_utf8(b.index_bytes()?)
                .map_err(|e| Error::Config(format!("aur/{}: {e}", b.pkgbase)))?;
            let skipped = aur.skipped.get(&b.pkgbase).copied().unwrap_or(0);
            aur_bodies.push((b.pkgbase.clone(), body, skipped));
            aur_sources.extend(b.sources.iter().map(|s| AurSourceRow {
                pkgbase: b.pkgbase.clone(),
                file_name: s.file_name.clone(),
                url: s.url.clone(),
                size: s.file.size,
                sha256: s.file.sha256,
                sha512: s.sha512.0,
                b2: s.b2.0,
                cid: s.file.cid,
            }));
        }
        // The switch and the record that says so, in one transaction (the record first);
        // whatever shrink was held is now published or gone.
        self.db.write(|tx| -> Result<(), cidmirror_schema::Error> {
            held::clear(tx)?;
            syncs::finish(
                tx,
                record.id,
                "published",
                Some(state),
                Some(&published.detail),
                Some(seq),
                UnixTime::now(),
            )?;
            // Written as they are made: 200,000 rows collected first were 105 MB at the
            // first sync's peak (heaptrack, bench/mirror_mem.sh).
            snapshots::publish(tx, &snap, items.iter().flat_map(Item::to_entries))?;
            aur_rows::put(tx, seq, &aur_bodies, &aur_sources)
        })?;
        self.progress.phase("published");

        // Retention, after the switch: failures here do not undo the publish, and the
        // next sync catches up on them.
        if let Err(e) = self.retain(seq).await {
            let w =
                format!("retention after snapshot {seq} failed (retried at the next sync): {e}");
            tracing::warn!("{w}");
            published.warnings.push(w);
        }
        Ok(published)
    }

    /// The sanity gate: a followed repository that lost more than `max_shrink` of the
    /// current snapshot's packages (or all of them) holds the new state back, until
    /// `confirm_syncs` consecutive syncs have seen a shrink or the operator accepts it. A
    /// repository the current snapshot does not have is not compared.
    fn gate(
        &self,
        repos: &[RepoFetch],
        current: Option<&Snapshot>,
        state: &str,
        accepted: bool,
        counted: &mut Option<u64>,
    ) -> Result<Gate> {
        let before = match current {
            Some(c) => self
                .db
                .read(|conn| snapshots::package_counts(conn, c.seq))?,
            None => Vec::new(),
        };
        let max = self.opts.gate.max_shrink;
        let mut reasons = Vec::new();
        for r in repos {
            let Some(&(_, _, was)) = before
                .iter()
                .find(|(repo, arch, _)| repo == r.repo.as_str() && arch == r.arch.as_str())
            else {
                continue;
            };
            let now = r.db.packages.len() as u64;
            if was == 0 || now >= was {
                continue;
            }
            let share = (was - now) as f64 / was as f64;
            if now == 0 {
                reasons.push(format!(
                    "{}: would drop from {was} packages to none (the repository empties)",
                    r.label()
                ));
            } else if share > max {
                reasons.push(format!(
                    "{}: would drop from {was} packages to {now} ({:.1}% fewer; at most {}% \
                     may leave at once, --max-shrink)",
                    r.label(),
                    share * 100.0,
                    max * 100.0
                ));
            }
        }
        if reasons.is_empty() {
            if self.db.read(held::get)?.is_some() {
                self.db.write(held::clear)?;
            }
            return Ok(Gate::Pass);
        }
        let lines = reasons.join("\n");
        let syncs = match *counted {
            Some(n) => n,
            None => {
                let n = self
                    .db
                    .write(|tx| held::hold(tx, state, &lines, UnixTime::now()))?;
                *counted = Some(n);
                n
            }
        };
        let needed = u64::from(self.opts.gate.confirm_syncs);
        if accepted {
            return Ok(Gate::Publish(format!(
                "published a shrink the operator accepted (--accept-shrink):\n{lines}"
            )));
        }
        if syncs >= needed {
            return Ok(Gate::Publish(format!(
                "published a shrink that {syncs} consecutive syncs saw:\n{lines}"
            )));
        }
        Ok(Gate::Hold(Outcome::Held {
            reasons,
            syncs,
            needed,
        }))
    }

    /// Runs the retention step of every published snapshot that has not had it (a crash
    /// between publishing and retention).
    async fn catch_up_retention(&self) -> Result<()> {
        let Some(current) = self.db.read(snapshots::current)? else {
            return Ok(());
        };
        let done: u64 = self
            .db
            .read(|c| settings::get(c, RETAINED_THROUGH))?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        for seq in done + 1..=current.seq {
            if self.db.read(|c| snapshots::get(c, seq))?.is_some() {
                self.retain(seq).await?;
            }
        }
        Ok(())
    }

    /// Retention after snapshot `seq`: grace pins for files that left upstream with it,
    /// first; then unpin snapshots beyond the newest N and drop the session pin.
    async fn retain(&self, seq: u64) -> Result<()> {
        // Packages (and their signatures) only: old databases are held by the snapshots
        // still pinned, and would otherwise pile up for the whole grace period.
        let left: Vec<Cid> = match seq.checked_sub(1) {
            Some(p) if p > 0 => self.db.read(|c| snapshots::packages_left(c, p, seq))?,
            _ => Vec::new(),
        };
        if !left.is_empty() {
            self.store
                .pin_all(
                    &left,
                    &pin_reason(LEFT_UPSTREAM_PIN),
                    Some(SystemTime::now() + self.opts.grace),
                )
                .await?;
        }
        let keep = u64::from(self.opts.keep_snapshots);
        for p in self.store.pins().await? {
            if let Some(n) = p.reason.as_str().strip_prefix("snapshot:")
                && let Ok(n) = n.parse::<u64>()
                && n + keep <= seq
            {
                self.store.unpin(&p.cid, &p.reason).await?;
            }
        }
        self.store.unpin_all(&pin_reason(SESSION_PIN)).await?;
        // Entries of snapshots retention is done with (it reads only seq and seq - 1) go:
        // the snapshot rows stay for the feed and `status`.
        self.db.write(|tx| -> Result<(), cidmirror_schema::Error> {
            snapshots::prune_entries(tx, seq.saturating_sub(keep.max(1)))?;
            settings::set(tx, RETAINED_THROUGH, &seq.to_string())
        })?;
        Ok(())
    }
}

/// Where a package's bytes came from in this sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrived {
    /// From the upstream.
    Downloaded,
    /// From the store's own copy, imported by an earlier sync that did not record it.
    FromStore,
}

/// A package signature: the one already published, or what upstream answered now.
enum SigState {
    Known(FileRef),
    Fetched(Option<Bytes>),
}

/// `.db` and `.files` of one repository must list the same packages (same names,
/// versions, files and hashes): otherwise they come from two different upstream states.
fn same_packages(
    repo: &RepoName,
    db_name: &str,
    db: &pacman::RepoDb,
    files_name: &str,
    files: &pacman::RepoDb,
) -> Result<()> {
    let key = |p: &Package| {
        (
            p.name.clone(),
            p.version.clone(),
            p.filename.to_string(),
            p.sha256,
        )
    };
    let a: BTreeSet<_> = db.packages.iter().map(key).collect();
    let b: BTreeSet<_> = files.packages.iter().map(key).collect();
    if let Some(first) = a.symmetric_difference(&b).next() {
        return Err(Error::Db {
            repo: repo.as_str().to_string(),
            file: files_name.to_string(),
            detail: format!(
                "lists other packages than {db_name} (first difference: {} {} {}); the two \
                 databases come from different upstream states",
                first.0, first.1, first.2
            ),
        });
    }
    Ok(())
}

/// The problem of an entry whose `%CSIZE%` is not the size of the bytes its `%SHA256SUM%`
/// names.
fn csize_mismatch(r: &RepoFetch, p: &Package, actual: u64) -> String {
    Error::Entry {
        repo: r.label(),
        entry: p.entry.clone(),
        field: "%CSIZE%".into(),
        detail: format!(
            "{} says {} bytes, but the file with its %SHA256SUM% {} has {actual} bytes",
            p.filename, p.csize, p.sha256
        ),
    }
    .to_string()
}

/// Every pair of files that would share a name in a `<repo>/os/<arch>/` directory.
fn name_collisions(repos: &[RepoFetch]) -> Vec<String> {
    let mut problems = Vec::new();
    for r in repos {
        let mut reserved: BTreeSet<String> = BTreeSet::new();
        let names = std::iter::once((&r.db_file.filename, &r.db_file.alias))
            .chain(r.files_file.as_ref().map(|f| (&f.filename, &f.alias)));
        for (filename, alias) in names {
            for n in std::iter::once(filename).chain(alias.as_ref()) {
                reserved.insert(n.clone());
                reserved.insert(format!("{n}.sig"));
            }
        }
        let packages: BTreeSet<&str> = r.db.packages.iter().map(|p| p.filename.as_str()).collect();
        for p in &r.db.packages {
            let f = p.filename.as_str();
            let clash = if reserved.contains(f) || reserved.contains(&format!("{f}.sig")) {
                Some("a repository database".to_string())
            } else {
                f.strip_suffix(".sig")
                    .filter(|base| packages.contains(base))
                    .map(|base| format!("the signature of {base}"))
            };
            if let Some(what) = clash {
                problems.push(
                    Error::Entry {
                        repo: r.label(),
                        entry: p.entry.clone(),
                        field: "%FILENAME%".into(),
                        detail: format!("{f} has the name of {what}"),
                    }
                    .to_string(),
                );
            }
        }
    }
    problems
}

fn snapshot_pin(seq: u64) -> PinReason {
    pin_reason(&format!("snapshot:{seq}"))
}

/// A pin reason made here from short printable text, so it always parses.
fn pin_reason(s: &str) -> PinReason {
    match s.parse() {
        Ok(r) => r,
        // Unreachable for the constants above; keep a valid reason rather than panic.
        Err(_) => PinReason::default_reason(),
    }
}

/// A `lastupdate` file: decimal digits (at most 19: any u64 time) and at most one trailing
/// newline; no sign, no spaces.
fn parse_lastupdate(bytes: &[u8]) -> std::result::Result<u64, String> {
    let digits = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let valid = !digits.is_empty() && digits.len() <= 19 && digits.iter().all(u8::is_ascii_digit);
    let shown = || {
        let head = &bytes[..bytes.len().min(40)];
        let more = if bytes.len() > head.len() { "..." } else { "" };
        format!(
            "\"{}\"{more}",
            cidmirror_schema::text::printable_bytes(head)
        )
    };
    if !valid {
        return Err(format!(
            "not a Unix time (decimal digits and a newline, as `date +%s` writes): {} ({} bytes)",
            shown(),
            bytes.len()
        ));
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| format!("not a Unix time: {}", shown()))
}

/// The state of an upstream without `lastupdate`: the hash of its databases.
/// The state of an upstream without `lastupdate`: a hash of its databases' hashes, in the
/// order they are fetched ([`Publisher::fetch_derived_state`] computes the same from the
/// bytes alone).
fn derived_state(repos: &[RepoFetch]) -> String {
    let mut hashes = Vec::new();
    for r in repos {
        hashes.push(sha256_of(&r.db_file.bytes));
        hashes.extend(r.files_file.as_ref().map(|f| f.file.sha256));
    }
    derived_of(&hashes)
}

/// The derived state of databases with these SHA-256s, in order.
fn derived_of(hashes: &[Sha256]) -> String {
    let mut h = sha2::Sha256::new();
    for d in hashes {
        h.update(d.as_bytes());
    }
    format!("{DERIVED}{}", hex::encode(h.finalize()))
}

fn backoff(failures: u32, interval: Duration) -> Duration {
    let base = Duration::from_secs(30);
    base.saturating_mul(1 << failures.min(10))
        .min(interval.max(base))
}

/// Reads a publisher's state without opening an upstream (for `status`).
pub fn open_state(data_dir: &Path) -> Result<Db> {
    Ok(Db::open(
        &data_dir.join("publisher.sqlite"),
        Schema::Publisher,
    )?)
}
