//! One sync: from an upstream state to a published snapshot (DESIGN.md, "Publisher data
//! flow").
//!
//! 1. Read the upstream's `lastupdate`; fetch every followed repository's databases.
//! 2. Unchanged since the current snapshot: done. Otherwise plan: packages already
//!    imported under this profile (same SHA-256) are reused, the rest are fetched, a few at a
//!    time, each streamed straight into the store, which refuses it (nothing kept under its
//!    name) unless its size and SHA-256 are what the database says.
//! 3. Read `lastupdate` again: if it moved, start over on the new state (never mix two).
//! 4. Any failure: report every problem, keep the previous snapshot current (what was
//!    fetched stays, held by a session pin, so a retry does not fetch it again).
//! 5. Build the listing, store its blocks, pin the root, sign it, then in one transaction
//!    record it with its entries, make it current and append it to the feed.
//! 6. Retention: unpin snapshots beyond the newest N; files that left upstream keep a pin
//!    that expires after the grace period.
//!
//! Every step can be repeated: a rerun after a kill at any point computes the same listing
//! from the same upstream state and publishes the same root.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use cid::Cid;
use cidmirror_schema::publisher::{self, Imported, Snapshot, imported, settings, snapshots, syncs};
use cidmirror_schema::{Db, Schema, Sha256, UnixTime};
use cidmirror_store::dir::DirEntry;
use cidmirror_store::importer::{self, VecSink};
use cidmirror_store::{Block, Expected, FileSource, PinReason, PutOptions, Store};
use futures::StreamExt;
use sha2::Digest;
use tokio_util::sync::CancellationToken;

use crate::config::MirrorOptions;
use crate::keys::PublisherKey;
use crate::listing::{self, FileRef, Item, ItemKind, ListingInput, RepoSummary};
use crate::pacman::{self, Arch, Package, RepoName};
use crate::upstream::Upstream;
use crate::{Error, Result};

/// Largest repository database accepted (Arch's `extra.files` is about 60 MB).
const MAX_DB: u64 = 1 << 30;
/// Largest detached signature accepted.
const MAX_SIG: u64 = 64 << 10;
/// Largest `lastupdate` file accepted.
const MAX_LASTUPDATE: u64 = 4096;
/// How often a sync starts over because the upstream changed under it, before giving up.
const MAX_RESTARTS: usize = 3;
/// Pin of files fetched by a sync that has not published yet.
const SESSION_PIN: &str = "sync-in-progress";
/// How long the session pin outlives a publisher that stopped.
const SESSION_PIN_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Pin of files that left upstream, during their grace period.
const LEFT_UPSTREAM_PIN: &str = "left-upstream";

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
    /// Bytes of blocks that were new in the store (listing, index entries, databases).
    pub new_block_bytes: u64,
    /// Lines of `changes.jsonl`.
    pub changed: u64,
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
}

/// The databases of one repository/architecture as fetched.
struct RepoFetch {
    repo: RepoName,
    arch: Arch,
    db: pacman::RepoDb,
    db_file: NamedBytes,
    db_sig: Option<Bytes>,
    files_file: Option<NamedBytes>,
    files_sig: Option<Bytes>,
}

struct NamedBytes {
    bytes: Bytes,
    /// The archive's own name (`core.db.tar.gz`).
    filename: String,
    /// The short name pacman asks for (`core.db`), if it differs.
    alias: Option<String>,
}

fn sha256_of(b: &[u8]) -> Sha256 {
    Sha256(sha2::Sha256::digest(b).into())
}

impl Publisher {
    /// Opens the publisher's state in `data_dir` (database `publisher.sqlite`, key
    /// `publisher.key`, both created on first use).
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
        if lock.try_lock().is_err() {
            return Err(Error::Config(format!(
                "another cidmirror mirror is running on {} (it holds {})",
                data_dir.display(),
                lock_path.display()
            )));
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
        Ok(Publisher {
            _lock: lock,
            store,
            db,
            key,
            upstream,
            opts,
            progress,
        })
    }

    /// The publisher's public key (64 hex digits).
    pub fn public_key(&self) -> String {
        self.key.public_hex()
    }

    /// Syncs once, recording the attempt for `status`.
    pub async fn sync_once(&self) -> Result<Outcome> {
        let url = self.upstream.url();
        let id = self
            .db
            .write(|tx| syncs::start(tx, &url, UnixTime::now()))?;
        let res = self.sync_inner().await;
        let (outcome, state, detail, seq) = match &res {
            Ok((Outcome::Published(p), state)) => (
                "published",
                Some(state.clone()),
                format!(
                    "snapshot {} {}: {} packages, {} files ({} bytes) fetched, {} changes",
                    p.seq, p.root, p.packages, p.fetched_files, p.fetched_bytes, p.changed
                ),
                Some(p.seq),
            ),
            Ok((Outcome::Unchanged { seq, .. }, state)) => (
                "unchanged",
                Some(state.clone()),
                "upstream unchanged".to_string(),
                *seq,
            ),
            Ok((Outcome::Failed { problems }, state)) => {
                ("failed", Some(state.clone()), problems.join("\n"), None)
            }
            Err(e) => ("failed", None, e.to_string(), None),
        };
        self.db.write(|tx| {
            syncs::finish(
                tx,
                id,
                outcome,
                state.as_deref(),
                Some(&detail),
                seq,
                UnixTime::now(),
            )
        })?;
        res.map(|(o, _)| o)
    }

    /// Syncs now, then every `interval` (sooner, with backoff, after a failure) until
    /// `cancel` fires. Returns the last outcome.
    pub async fn run(&self, cancel: CancellationToken) -> Result<Outcome> {
        let mut failures = 0u32;
        loop {
            let outcome = tokio::select! {
                o = self.sync_once() => o,
                () = cancel.cancelled() => return Ok(Outcome::Unchanged { seq: None, state: "stopped".into() }),
            };
            let wait = match &outcome {
                Ok(Outcome::Failed { problems }) => {
                    failures += 1;
                    tracing::warn!(
                        "sync failed ({} problems):\n{}",
                        problems.len(),
                        problems.join("\n")
                    );
                    backoff(failures, self.opts.interval)
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!("sync failed: {e}");
                    backoff(failures, self.opts.interval)
                }
                Ok(o) => {
                    failures = 0;
                    if let Outcome::Published(p) = o {
                        tracing::info!("published snapshot {} {}", p.seq, p.root);
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

    async fn read_lastupdate(&self) -> Result<Option<String>> {
        Ok(self
            .upstream
            .get("lastupdate", MAX_LASTUPDATE)
            .await?
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .filter(|s| !s.is_empty()))
    }

    /// The sync proper; also returns the upstream state it saw.
    async fn sync_inner(&self) -> Result<(Outcome, String)> {
        let mut last_state = String::new();
        for _ in 0..MAX_RESTARTS {
            self.progress.phase("reading upstream state");
            let before = self.read_lastupdate().await?;
            self.progress.phase("fetching repository databases");
            let repos = match self.fetch_repos().await {
                Ok(r) => r,
                Err(problems) => {
                    return Ok((Outcome::Failed { problems }, before.unwrap_or_default()));
                }
            };
            let lastupdate = match &before {
                Some(s) => s.clone(),
                None => derived_state(&repos),
            };
            let state = format!("{lastupdate} {}", self.repo_set());
            last_state = state.clone();
            let current = self.db.read(snapshots::current)?;
            if let Some(cur) = &current
                && cur.state == state
                && cur.upstream == self.upstream.url()
                && cur.profile == self.opts.profile.name()
            {
                return Ok((
                    Outcome::Unchanged {
                        seq: Some(cur.seq),
                        state,
                    },
                    last_state,
                ));
            }
            let prepared = self.prepare(&repos, current.as_ref()).await?;
            // Never mix two upstream states.
            let after = match &before {
                Some(_) => self.read_lastupdate().await?,
                None => match self.fetch_repos().await {
                    Ok(again) => Some(derived_state(&again)),
                    Err(problems) => return Ok((Outcome::Failed { problems }, state)),
                },
            };
            let moved = match (&before, &after) {
                (Some(b), a) => a.as_ref() != Some(b),
                (None, a) => a.as_deref() != Some(lastupdate.as_str()),
            };
            if moved {
                tracing::info!(
                    "upstream changed during the sync ({} -> {}): starting over",
                    lastupdate,
                    after.as_deref().unwrap_or("none")
                );
                continue;
            }
            let (items, stats) = match prepared {
                Ok(p) => p,
                Err(problems) => return Ok((Outcome::Failed { problems }, state)),
            };
            let published = self
                .publish(&repos, &lastupdate, &state, items, current, stats)
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

    fn repo_set(&self) -> String {
        let mut v = Vec::new();
        for r in &self.opts.repos {
            for a in &self.opts.arches {
                v.push(format!("{}/{}", r.as_str(), a.as_str()));
            }
        }
        v.join(",")
    }

    /// Fetches and parses the databases of every followed repository. Errors are problems
    /// for the report.
    async fn fetch_repos(&self) -> Result<Vec<RepoFetch>, Vec<String>> {
        let mut out = Vec::new();
        let mut problems = Vec::new();
        for repo in &self.opts.repos {
            for arch in &self.opts.arches {
                match self.fetch_repo(repo, arch).await {
                    Ok(r) => out.push(r),
                    Err(e) => problems.push(e.to_string()),
                }
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(problems)
        }
    }

    async fn fetch_repo(&self, repo: &RepoName, arch: &Arch) -> Result<RepoFetch> {
        let dir = format!("{}/os/{}", repo.as_str(), arch.as_str());
        let short = format!("{}.db", repo.as_str());
        let rel = format!("{dir}/{short}");
        let bytes = self
            .upstream
            .get(&rel, MAX_DB)
            .await?
            .ok_or_else(|| Error::Db {
                repo: repo.as_str().to_string(),
                file: short.clone(),
                detail: format!("not found upstream at {}{rel}", self.upstream.url()),
            })?;
        let db = pacman::parse_db(repo, &short, &bytes)?;
        let db_file = self.name_archive(&dir, &short, db.compression).await?;
        let db_file = NamedBytes { bytes, ..db_file };
        let db_sig = self.upstream.get(&format!("{rel}.sig"), MAX_SIG).await?;
        let files_short = format!("{}.files", repo.as_str());
        let files_rel = format!("{dir}/{files_short}");
        let (files_file, files_sig) = match self.upstream.get(&files_rel, MAX_DB).await? {
            None => (None, None),
            Some(fb) => {
                let parsed = pacman::parse_files_db(repo, &files_short, &fb)?;
                let named = self
                    .name_archive(&dir, &files_short, parsed.compression)
                    .await?;
                let sig = self
                    .upstream
                    .get(&format!("{files_rel}.sig"), MAX_SIG)
                    .await?;
                (Some(NamedBytes { bytes: fb, ..named }), sig)
            }
        };
        Ok(RepoFetch {
            repo: repo.clone(),
            arch: arch.clone(),
            db,
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

    async fn put_bytes(&self, bytes: Bytes) -> Result<FileRef> {
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

    /// Brings every file of the new state into the store: reused when already imported,
    /// fetched and verified otherwise. Returns the items, or every problem found.
    async fn prepare(
        &self,
        repos: &[RepoFetch],
        current: Option<&Snapshot>,
    ) -> Result<Result<(Vec<Item>, FetchStats), Vec<String>>> {
        let profile = self.opts.profile.name();
        let previous: Vec<Item> = match current {
            Some(c) => Item::from_entries(&self.db.read(|conn| snapshots::entries(conn, c.seq))?),
            None => Vec::new(),
        };
        // A package already published (same name, same bytes) keeps its signature, or its
        // lack of one: upstream is not asked again for every unchanged package.
        let prev_sig: HashMap<(String, String, String, Sha256), Option<FileRef>> = previous
            .iter()
            .filter(|i| i.kind == ItemKind::Package)
            .map(|i| {
                let key = (
                    i.repo.clone(),
                    i.arch.clone(),
                    i.filename.clone(),
                    i.file.sha256,
                );
                (key, i.sig)
            })
            .collect();

        // Plan.
        let mut reuse: HashMap<Sha256, FileRef> = HashMap::new();
        let mut fetch: Vec<(&RepoFetch, &Package)> = Vec::new();
        let mut planned = BTreeMap::new();
        for r in repos {
            for p in &r.db.packages {
                if reuse.contains_key(&p.sha256) || planned.contains_key(&p.sha256) {
                    continue;
                }
                if let Some(imp) = self.db.read(|c| imported::get(c, &p.sha256, profile))? {
                    if self.store.has(&imp.cid).await? {
                        reuse.insert(
                            p.sha256,
                            FileRef {
                                size: imp.size,
                                sha256: imp.sha256,
                                cid: imp.cid,
                                tsize: imp.tsize,
                            },
                        );
                        continue;
                    }
                    self.db
                        .write(|tx| imported::forget(tx, &p.sha256, profile))?;
                }
                planned.insert(p.sha256, ());
                fetch.push((r, p));
            }
        }
        let total: u64 = fetch.iter().map(|(_, p)| p.csize).sum();
        self.progress.planned(fetch.len() as u64, total);
        self.progress.phase("fetching packages");

        // Fetch and verify.
        let results: Vec<(Sha256, std::result::Result<FileRef, String>)> = futures::stream::iter(
            fetch
                .iter()
                .map(|(r, p)| async move { (p.sha256, self.fetch_package(r, p).await) }),
        )
        .buffer_unordered(self.opts.concurrency)
        .collect()
        .await;
        let mut problems = Vec::new();
        let mut stats = FetchStats::default();
        for (sha, res) in results {
            match res {
                Ok(f) => {
                    stats.files += 1;
                    stats.bytes += f.size;
                    reuse.insert(sha, f);
                }
                Err(p) => problems.push(p),
            }
        }

        // Signatures, index entries, databases.
        self.progress.phase("fetching signatures and indexing");
        let mut items = Vec::new();
        let mut desc_blocks = Vec::new();
        let params = self.opts.profile.params();
        for r in repos {
            let (repo, arch) = (r.repo.as_str().to_string(), r.arch.as_str().to_string());
            let dir = format!("{repo}/os/{arch}");
            let sig_jobs = r.db.packages.iter().map(|p| {
                let key = (repo.clone(), arch.clone(), p.filename.to_string(), p.sha256);
                let known = prev_sig.get(&key).copied();
                let dir = &dir;
                async move {
                    match known {
                        Some(sig) => Ok(sig),
                        None => self.fetch_sig(dir, p).await,
                    }
                }
            });
            let sigs: Vec<std::result::Result<Option<FileRef>, String>> =
                futures::stream::iter(sig_jobs)
                    .buffered(self.opts.concurrency * 4)
                    .collect()
                    .await;
            for (p, sig) in r.db.packages.iter().zip(sigs) {
                let sig = match sig {
                    Ok(s) => s,
                    Err(e) => {
                        problems.push(e);
                        None
                    }
                };
                let mut sink = VecSink::default();
                let desc = importer::import(p.desc.raw(), &params, &mut sink)?;
                desc_blocks.extend(sink.0);
                let Some(file) = reuse.get(&p.sha256).copied() else {
                    continue; // its fetch failed: reported above
                };
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
            for (kind, named, sig) in [
                (ItemKind::Database, Some(&r.db_file), r.db_sig.clone()),
                (ItemKind::Files, r.files_file.as_ref(), r.files_sig.clone()),
            ] {
                let Some(named) = named else { continue };
                let file = self.put_bytes(named.bytes.clone()).await?;
                let sig = match sig {
                    Some(s) => Some(self.put_bytes(s).await?),
                    None => None,
                };
                items.push(Item {
                    repo: repo.clone(),
                    arch: arch.clone(),
                    kind,
                    filename: named.filename.clone(),
                    alias: named.alias.clone(),
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
        let written = self
            .store
            .put_blocks(
                desc_blocks
                    .into_iter()
                    .map(|(cid, data)| Block {
                        cid,
                        data: Bytes::from(data),
                    })
                    .collect(),
            )
            .await?;
        stats.new_block_bytes += written.new_bytes;
        Ok(Ok((items, stats)))
    }

    async fn fetch_package(
        &self,
        r: &RepoFetch,
        p: &Package,
    ) -> std::result::Result<FileRef, String> {
        let (repo, arch) = (r.repo.as_str(), r.arch.as_str());
        let rel = format!("{repo}/os/{arch}/{}", p.filename);
        let name = format!("{repo}: {}", p.filename);
        let res: Result<FileRef> = async {
            let dl = self
                .upstream
                .download(&rel, Some(p.csize))
                .await?
                .ok_or_else(|| Error::Transfer {
                    url: format!("{}{rel}", self.upstream.url()),
                    detail: "not found upstream".into(),
                })?;
            let progress = self.progress.clone();
            let stream = dl.stream.inspect(move |c| {
                if let Ok(b) = c {
                    progress.transferred(b.len() as u64);
                }
            });
            let f = self
                .store
                .put_file(
                    FileSource::Chunks(Box::pin(stream)),
                    self.session_put(Some(Expected {
                        size: p.csize,
                        sha256: p.sha256,
                    })),
                )
                .await?;
            let imp = Imported {
                sha256: f.sha256,
                cid: f.cid,
                size: f.size,
                tsize: f.tsize,
            };
            self.db
                .write(|tx| imported::put(tx, &imp, self.opts.profile.name()))?;
            Ok(FileRef {
                size: f.size,
                sha256: f.sha256,
                cid: f.cid,
                tsize: f.tsize,
            })
        }
        .await;
        self.progress.file_done(&name, res.is_ok());
        res.map_err(|e| match e {
            // Verification failures name the repository and file; transfer errors already
            // carry the URL.
            Error::Store(s) => format!("{name}: {s}"),
            other => format!("{name}: {other}"),
        })
    }

    /// The package's detached signature, if upstream has one. It must agree with the
    /// database's `%PGPSIG%` when that is present.
    async fn fetch_sig(
        &self,
        dir: &str,
        p: &Package,
    ) -> std::result::Result<Option<FileRef>, String> {
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
        self.put_bytes(bytes)
            .await
            .map(Some)
            .map_err(|e| format!("{rel}: {e}"))
    }

    async fn publish(
        &self,
        repos: &[RepoFetch],
        lastupdate: &str,
        state: &str,
        mut items: Vec<Item>,
        current: Option<Snapshot>,
        stats: FetchStats,
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
                }
            })
            .collect();
        let previous_items = match &current {
            Some(c) => Item::from_entries(&self.db.read(|conn| snapshots::entries(conn, c.seq))?),
            None => Vec::new(),
        };
        let url = self.upstream.url();
        let listing = listing::build(&ListingInput {
            profile: self.opts.profile,
            upstream: &url,
            lastupdate,
            items: &items,
            repos: &summaries,
            previous: current.as_ref().map(|c| (c.root, &previous_items[..])),
        })?;
        let written = self
            .store
            .put_blocks(
                listing
                    .blocks
                    .into_iter()
                    .map(|(cid, data)| Block {
                        cid,
                        data: Bytes::from(data),
                    })
                    .collect(),
            )
            .await?;
        let root = listing.root.cid;
        let seq = self.db.read(snapshots::next_seq)?;
        let previous = current.as_ref().map(|c| c.root);
        // Durable and pinned before it becomes current.
        let reason = snapshot_pin(seq);
        self.store.pin(&root, &reason, None).await?;
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
            new_bytes: stats.new_block_bytes + written.new_bytes + stats.bytes,
        };
        let entries: Vec<publisher::Entry> = items.iter().flat_map(Item::to_entries).collect();
        self.db
            .write(|tx| snapshots::publish(tx, &snap, &entries))?;
        self.progress.phase("published");

        // Retention, after the switch: failures here do not undo the publish.
        if let Err(e) = self.retain(seq, &previous_items, &items).await {
            tracing::warn!("retention after snapshot {seq}: {e}");
        }
        Ok(Published {
            seq,
            root,
            packages,
            fetched_files: stats.files,
            fetched_bytes: stats.bytes,
            new_block_bytes: stats.new_block_bytes + written.new_bytes,
            changed: listing.changed,
        })
    }

    async fn retain(&self, seq: u64, previous: &[Item], items: &[Item]) -> Result<()> {
        self.store.unpin_all(&pin_reason(SESSION_PIN)).await?;
        let keep = u64::from(self.opts.keep_snapshots);
        for p in self.store.pins().await? {
            if let Some(n) = p.reason.as_str().strip_prefix("snapshot:")
                && let Ok(n) = n.parse::<u64>()
                && n + keep <= seq
            {
                self.store.unpin(&p.cid, &p.reason).await?;
            }
        }
        let still: std::collections::HashSet<Cid> = items
            .iter()
            .flat_map(|i| std::iter::once(i.file.cid).chain(i.sig.map(|s| s.cid)))
            .collect();
        let until = SystemTime::now() + self.opts.grace;
        let reason = pin_reason(LEFT_UPSTREAM_PIN);
        for old in previous {
            for cid in std::iter::once(old.file.cid).chain(old.sig.map(|s| s.cid)) {
                if !still.contains(&cid) {
                    self.store.pin(&cid, &reason, Some(until)).await?;
                }
            }
        }
        Ok(())
    }

    /// The current snapshot, if any.
    pub fn current(&self) -> Result<Option<Snapshot>> {
        Ok(self.db.read(snapshots::current)?)
    }
}

/// Counts of what a sync fetched.
#[derive(Debug, Clone, Copy, Default)]
struct FetchStats {
    files: u64,
    bytes: u64,
    new_block_bytes: u64,
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

/// The state of an upstream without `lastupdate`: the hash of its databases.
fn derived_state(repos: &[RepoFetch]) -> String {
    let mut h = sha2::Sha256::new();
    for r in repos {
        h.update(sha256_of(&r.db_file.bytes).as_bytes());
        if let Some(f) = &r.files_file {
            h.update(sha256_of(&f.bytes).as_bytes());
        }
    }
    format!("sha256:{}", hex::encode(h.finalize()))
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
