//! The refresh loop: announcements in, verified snapshots switched to.
//!
//! Each announcement is checked (signature against the publisher's key, sequence not going
//! backwards, no second root for one sequence), then the new listing is brought in: by
//! delta when the follower holds the announced snapshot's predecessor (one CAR of the
//! manifest, `changes.jsonl` and the new desc entries, applied to the previous view and
//! rebuilt; accepted only if the root computed equals the signed root), by a walk of the
//! listing otherwise (fetching the directory blocks and desc entries not held). Databases
//! upstream signs are fetched verbatim; unsigned ones are rebuilt from `index/`. Only then
//! does the snapshot become current, in one step. A failed refresh is retried with backoff.

use std::collections::{BTreeSet, HashMap};
use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use cid::Cid;
use cidmirror_store::dir::DirEntry;
use cidmirror_store::hash::{DAG_PB, RAW};
use cidmirror_store::pb::DataType;
use cidmirror_store::{Block, FileSource, PinReason, PutOptions, Store, unixfs};
use ed25519_dalek::VerifyingKey;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use cidmirror_listing::aur::AurBase;
use cidmirror_listing::pacman::{self, Desc};
use cidmirror_listing::{Facts, ItemKind, Listing, Manifest, WalkedDesc, layout};

use super::view::View;
use super::watch::{Announcement, Via, WatchConfig};
use super::{FollowError, Follower, RefreshMode};
use crate::feed::SnapshotEvent;
use crate::snapshot::Current;

/// The largest `manifest.json` or `changes.jsonl` read.
const META_MAX: u64 = 256 << 20;

/// Blocks fetched at once in a walk.
const WALK_PARALLEL: usize = 16;

/// A verified announcement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Announced {
    pub seq: u64,
    pub root: Cid,
    pub previous: Option<Cid>,
    /// Unix seconds.
    pub published_at: u64,
    #[serde(with = "hex_bytes")]
    pub signature: Vec<u8>,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

impl Announced {
    fn published(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(self.published_at)
    }

    /// Reads an announcement as received (root, previous root, hex signature, publication
    /// time) and checks its signature against the publisher's `key`; the error says why it
    /// is refused. Whether its sequence fits the current one is the caller's question.
    pub(crate) fn check(e: &SnapshotEvent, key: &VerifyingKey) -> Result<Announced, String> {
        let root =
            cidmirror_store::hash::parse_cid(&e.root).map_err(|err| format!("root: {err}"))?;
        let previous = e
            .previous
            .as_deref()
            .map(cidmirror_store::hash::parse_cid)
            .transpose()
            .map_err(|err| format!("previous: {err}"))?;
        let signature =
            hex::decode(e.signature.trim()).map_err(|_| "the signature is not hex".to_string())?;
        if !cidmirror_store::sign::verify_snapshot_with(
            key,
            e.seq,
            &root,
            previous.as_ref(),
            &signature,
        ) {
            return Err("its signature does not verify against the publisher key".into());
        }
        let published_at = humantime::parse_rfc3339(&e.published_at)
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        Ok(Announced {
            seq: e.seq,
            root,
            previous,
            published_at,
            signature,
        })
    }
}

fn fetch_err(e: impl std::fmt::Display) -> FollowError {
    FollowError::Fetch(e.to_string())
}

impl Follower {
    /// Restores the last snapshot, then follows announcements until `cancel`.
    pub(crate) async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let after = match self.restore().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("not restoring the last snapshot: {e}");
                None
            }
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let cfg = WatchConfig {
            poll_every: self.cfg.poll_every,
            ..WatchConfig::default()
        };
        tokio::spawn(super::watch::watch(
            self.client.clone(),
            self.cfg.follow.clone(),
            after,
            cfg,
            self.watch_status.clone(),
            tx,
            cancel.clone(),
        ));
        let mut retry: Option<Announced> = None;
        let mut backoff = Duration::from_secs(1);
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            let wait_retry = async {
                match &retry {
                    Some(_) => tokio::time::sleep(backoff).await,
                    None => std::future::pending().await,
                }
            };
            let ev = tokio::select! {
                m = rx.recv() => match m {
                    Some(a) => match self.accept(&a) {
                        Some(ev) => ev,
                        None => continue,
                    },
                    None => return,
                },
                () = wait_retry => match retry.take() {
                    Some(ev) => ev,
                    None => continue,
                },
                _ = tick.tick() => {
                    self.enforce_budget().await;
                    continue;
                }
                () = cancel.cancelled() => return,
            };
            // A newer announcement replaces a retry.
            retry = None;
            let started = Instant::now();
            match self.refresh_to(&ev, started).await {
                Ok(()) => backoff = Duration::from_secs(1),
                Err(e) => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        "refreshing to snapshot {} ({}): {e}; retrying in {backoff:?}",
                        ev.seq,
                        ev.root
                    );
                    retry = Some(ev);
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
    }

    fn refuse(&self, a: &Announcement, why: &str) {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        let via = match a.via {
            Via::Feed => "feed",
            Via::Poll => "poll",
        };
        tracing::warn!(
            "refusing snapshot {} ({}) from the {via} of {}: {why}",
            a.event.seq,
            a.event.root,
            self.cfg.follow
        );
    }

    /// Checks an announcement: a valid signature by the publisher's key, and a sequence
    /// after the current one. `None` if it is refused or already current.
    fn accept(&self, a: &Announcement) -> Option<Announced> {
        let checked = match Announced::check(&a.event, &self.cfg.key) {
            Ok(c) => c,
            Err(why) => {
                self.refuse(a, &why);
                return None;
            }
        };
        let e = &a.event;
        if let Some(cur) = self.snapshots.current() {
            if e.seq < cur.seq {
                self.refuse(
                    a,
                    &format!("sequence goes backwards (current is {})", cur.seq),
                );
                return None;
            }
            if e.seq == cur.seq {
                if checked.root != cur.root {
                    self.refuse(
                        a,
                        &format!(
                            "a second root for sequence {} (current {})",
                            e.seq, cur.root
                        ),
                    );
                }
                return None;
            }
        }
        self.counters
            .latest_seen
            .fetch_max(e.seq, Ordering::Relaxed);
        Some(checked)
    }

    /// Brings snapshot `ev` in and makes it current.
    async fn refresh_to(&self, ev: &Announced, started: Instant) -> Result<(), FollowError> {
        let cur = self.snapshots.current();
        let cur_view = cur.as_ref().and_then(|c| c.follow.clone());
        let chained = cur_view
            .as_ref()
            .filter(|v| Some(v.root) == ev.previous && self.cfg.refresh == RefreshMode::Delta);
        let (view, by_delta, bytes) = match chained {
            Some(prev) => match self.delta(ev, prev).await {
                Ok((v, b)) => (v, true, b),
                Err(e) => {
                    tracing::info!(
                        "delta to snapshot {} failed ({e}); walking the listing",
                        ev.seq
                    );
                    let (v, b) = self.walk(ev.root).await?;
                    (v, false, b)
                }
            },
            None => {
                let (v, b) = self.walk(ev.root).await?;
                (v, false, b)
            }
        };
        let listed = started.elapsed();
        let db_bytes = AtomicU64::new(0);
        let view = self
            .prepare_databases(view, cur_view.as_deref(), ev, &db_bytes)
            .await?;
        let bytes = bytes + db_bytes.load(Ordering::Relaxed);
        let databases = started.elapsed();
        self.switch(ev, view, cur_view).await?;
        // Volunteers follow the new snapshot too: ask who is there now.
        self.volunteers.wake();
        let c = &self.counters;
        if by_delta { &c.delta } else { &c.walk }.fetch_add(1, Ordering::Relaxed);
        c.last_bytes.store(bytes, Ordering::Relaxed);
        c.switch_delay_ms
            .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let ms = |d: Duration| d.as_millis();
        tracing::info!(
            "snapshot {} ({}) is current: {} in {} ms (listing {} ms; databases {} ms; \
             pins and switch {} ms), {bytes} bytes fetched",
            ev.seq,
            ev.root,
            if by_delta { "delta" } else { "walk" },
            ms(started.elapsed()),
            ms(listed),
            ms(databases - listed),
            ms(started.elapsed() - databases),
        );
        self.enforce_budget().await;
        self.write_status().await;
        trim_heap();
        Ok(())
    }

    /// Pins the listing of `ev`, makes it current, records it, drops older pins.
    async fn switch(
        &self,
        ev: &Announced,
        view: View,
        old: Option<Arc<View>>,
    ) -> Result<(), FollowError> {
        self.pin_listing(ev.seq, &view).await?;
        let keep_prev = self.snapshots.current().map(|c| c.seq);
        self.snapshots.set(Current {
            seq: ev.seq,
            root: ev.root,
            previous: ev.previous,
            published_at: ev.published(),
            signature: ev.signature.clone(),
            follow: Some(Arc::new(view)),
        });
        *self.previous.lock().unwrap_or_else(|e| e.into_inner()) = old;
        let state = self.cfg.dir.join("state.json");
        let tmp = self.cfg.dir.join("state.json.tmp");
        let bytes = serde_json::to_vec_pretty(ev).map_err(fetch_err)?;
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &state))
            .map_err(|source| FollowError::Io {
                path: state.clone(),
                source,
            })?;
        // Keep the pins of this snapshot and the one before.
        let keep: BTreeSet<u64> = std::iter::once(ev.seq).chain(keep_prev).collect();
        // One unpin per reason (`direct:follow:` pins: one per directory block, as kept
        // before directories-only pins).
        let store = self.store.clone();
        let reasons = tokio::task::spawn_blocking(move || store.pin_reasons())
            .await
            .map_err(fetch_err)??;
        let stale: Vec<PinReason> = reasons
            .into_iter()
            .filter(|r| {
                let s = r.as_str();
                s.strip_prefix("dirs:follow:")
                    .or_else(|| s.strip_prefix("direct:follow:"))
                    .or_else(|| s.strip_prefix("follow:"))
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| !keep.contains(&n))
            })
            .collect();
        for r in stale {
            self.store.unpin_all(&r).await?;
        }
        Ok(())
    }

    /// Pins what the follower keeps of a snapshot whatever the budget: the directories
    /// (one directories-only pin of the root, so that no package they name is kept by
    /// them), each repository's `index/<repo>/<arch>` (one recursive pin for all its desc
    /// entries), the manifest, changes and the databases.
    async fn pin_listing(&self, seq: u64, view: &View) -> Result<(), FollowError> {
        let dirs = PinReason::dirs(&format!("follow:{seq}"));
        self.store.pin(&view.root, &dirs, None).await?;
        let l = &view.listing;
        let mut keep = vec![l.manifest_entry.cid, l.changes_entry.cid];
        keep.extend(view.index_dirs.iter().copied());
        for e in l.aur() {
            keep.push(e.index.cid);
            keep.push(e.base.srcinfo.cid);
        }
        for r in l.manifest.repos.iter().filter(|r| r.signed) {
            for it in l
                .items()
                .filter(|i| i.repo == r.repo && i.arch == r.arch && i.kind != ItemKind::Package)
            {
                keep.push(it.file.cid);
                keep.extend(it.sig.map(|s| s.cid));
            }
        }
        keep.extend(view.local.values().copied());
        keep.sort();
        keep.dedup();
        self.store
            .pin_all(&keep, &reason(&format!("follow:{seq}"))?, None)
            .await?;
        Ok(())
    }

    /// Delta refresh: one CAR of what changed, applied to `prev` and rebuilt.
    async fn delta(&self, ev: &Announced, prev: &View) -> Result<(View, u64), FollowError> {
        let url = self
            .cfg
            .follow
            .join(&format!("api/v1/delta/{}", ev.root))
            .map_err(fetch_err)?;
        let resp = self
            .client
            .get(url.clone())
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .map_err(|e| fetch_err(format!("{url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(fetch_err(format!("{url}: {}", resp.status())));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| fetch_err(format!("{url}: {e}")))?;
        let n = body.len() as u64;
        let car = self
            .store
            .import_car(
                Box::new(Cursor::new(body)),
                format!("delta of {}", ev.root),
                None,
            )
            .await?;
        if !car.roots.contains(&ev.root) {
            return Err(FollowError::Invalid {
                what: format!("{url}"),
                detail: "the CAR's roots do not name the snapshot".into(),
            });
        }
        let (view, blocks) = apply_delta(&self.store, prev, ev.root, ev.seq).await?;
        let blocks = blocks
            .into_iter()
            .map(|(cid, data)| Block {
                cid,
                data: Bytes::from(data),
            })
            .collect();
        self.store.put_blocks(blocks).await?;
        Ok((view, n))
    }

    /// The manifest and the entries of `manifest.json` and `changes.jsonl` of `root`
    /// (fetching what is not held when `fetched` is given).
    async fn manifest_of(
        &self,
        root: Cid,
        fetched: Option<&AtomicU64>,
    ) -> Result<(Manifest, DirEntry, DirEntry), FollowError> {
        if let Some(f) = fetched {
            self.ensure_dir(root, f).await?;
        }
        let (m, c) = listing_files(&self.store, &root).await?;
        if let Some(f) = fetched {
            self.ensure_file(m.cid, f).await?;
            self.ensure_file(c.cid, f).await?;
        }
        let manifest = Manifest::parse(
            &read_all(&self.store, &m.cid).await?,
            &format!("manifest.json of {root}"),
        )?;
        Ok((manifest, m, c))
    }

    /// A block from the store, or fetched from the sources and kept.
    async fn block(&self, cid: &Cid, fetched: &AtomicU64) -> Result<Bytes, FollowError> {
        if let Some(b) = self.store.get_block(cid).await? {
            return Ok(b);
        }
        let b = self
            .transfers
            .sources()
            .block_any(cid)
            .await
            .map_err(FollowError::Fetch)?;
        fetched.fetch_add(b.len() as u64, Ordering::Relaxed);
        self.store
            .put_blocks(vec![Block {
                cid: *cid,
                data: b.clone(),
            }])
            .await?;
        Ok(b)
    }

    /// Many blocks (from the store, or fetched and kept), [`WALK_PARALLEL`] at a time.
    async fn blocks(
        &self,
        cids: Vec<Cid>,
        fetched: &AtomicU64,
    ) -> Result<Vec<(Cid, Bytes)>, FollowError> {
        futures::stream::iter(cids)
            .map(|c| async move { self.block(&c, fetched).await.map(|b| (c, b)) })
            .buffer_unordered(WALK_PARALLEL)
            .try_collect()
            .await
    }

    /// Makes sure a directory's node and all its HAMT shards are held.
    async fn ensure_dir(&self, cid: Cid, fetched: &AtomicU64) -> Result<(), FollowError> {
        let mut level = vec![cid];
        while !level.is_empty() {
            let blocks = self.blocks(std::mem::take(&mut level), fetched).await?;
            for (c, b) in blocks {
                if c.codec() != DAG_PB {
                    return Err(FollowError::Invalid {
                        what: format!("directory {c}"),
                        detail: "not a dag-pb node".into(),
                    });
                }
                let (node, u) = unixfs::decode(&c, &b)?;
                if u.typ == Some(DataType::HamtShard) {
                    let (_, width) = unixfs::hamt_shape(&c, &u)?;
                    level.extend(
                        node.links
                            .iter()
                            .filter(|l| l.name.len() == width)
                            .map(|l| l.cid),
                    );
                }
            }
        }
        Ok(())
    }

    /// Makes sure every block of a file is held.
    async fn ensure_file(&self, cid: Cid, fetched: &AtomicU64) -> Result<(), FollowError> {
        let mut level = vec![cid];
        while !level.is_empty() {
            let blocks = self.blocks(std::mem::take(&mut level), fetched).await?;
            for (c, b) in blocks {
                if c.codec() == RAW || cidmirror_store::hash::identity_data(&c).is_some() {
                    continue;
                }
                let (node, _) = unixfs::decode(&c, &b)?;
                level.extend(node.links.iter().map(|l| l.cid));
            }
        }
        Ok(())
    }

    /// Walks the listing of `root`, fetching the directory blocks, manifest, changes and
    /// desc entries not held. Returns the view and the bytes fetched.
    pub(crate) async fn walk(&self, root: Cid) -> Result<(View, u64), FollowError> {
        let fetched = AtomicU64::new(0);
        let (manifest, m_entry, c_entry) = self.manifest_of(root, Some(&fetched)).await?;
        let mut frontier: Vec<(String, Cid)> = vec![(String::new(), root)];
        let mut leaves: HashMap<String, DirEntry> = HashMap::new();
        while !frontier.is_empty() {
            let fetched = &fetched;
            let listed: Vec<(String, Vec<unixfs::DirLink>)> =
                futures::stream::iter(frontier.drain(..))
                    .map(|(path, c)| async move {
                        self.ensure_dir(c, fetched).await?;
                        let links = unixfs::list(&self.store, &c).await?;
                        Ok::<_, FollowError>((path, links))
                    })
                    .buffer_unordered(WALK_PARALLEL)
                    .try_collect()
                    .await?;
            for (path, links) in listed {
                for l in links {
                    let child = if path.is_empty() {
                        l.name.clone()
                    } else {
                        format!("{path}/{}", l.name)
                    };
                    if layout::is_dir_path(&child) {
                        frontier.push((child, l.cid));
                    } else {
                        leaves.insert(
                            child,
                            DirEntry {
                                cid: l.cid,
                                tsize: l.tsize,
                            },
                        );
                    }
                }
            }
        }
        // The desc entries: fetched and parsed, they name each package's file.
        let paths: Vec<(String, DirEntry)> = leaves
            .iter()
            .filter(|(p, _)| {
                let parts: Vec<&str> = p.split('/').collect();
                parts.len() == 4 && parts[0] == layout::INDEX && parts[1] != layout::AUR
            })
            .map(|(p, e)| (p.clone(), *e))
            .collect();
        let aur_paths: Vec<(String, DirEntry)> = leaves
            .iter()
            .filter(|(p, _)| {
                p.strip_prefix(&format!("{}/{}/", layout::INDEX, layout::AUR))
                    .and_then(|rest| rest.strip_suffix("/sources.json"))
                    .is_some_and(|base| !base.contains('/'))
            })
            .map(|(p, e)| (p.clone(), *e))
            .collect();
        let fetched_ref = &fetched;
        let descs: HashMap<String, WalkedDesc> = futures::stream::iter(paths)
            .map(|(p, e)| async move {
                self.ensure_file(e.cid, fetched_ref).await?;
                let bytes = read_all(&self.store, &e.cid).await?;
                let invalid = |detail: String| FollowError::Invalid {
                    what: p.clone(),
                    detail,
                };
                let d = Desc::parse(bytes.to_vec()).map_err(invalid)?;
                let f = d.entry().map_err(invalid)?;
                let walked = WalkedDesc {
                    filename: f.filename.to_string(),
                    csize: f.csize,
                    sha256: f.sha256,
                };
                Ok::<_, FollowError>((p, walked))
            })
            .buffer_unordered(WALK_PARALLEL * 2)
            .try_collect()
            .await?;
        // Signatures and archives: their size and SHA-256, from the CID when it says, else
        // read (archives; signatures under a profile without raw leaves).
        let needed: Vec<(String, DirEntry, Option<Facts>)> =
            Listing::walk_facts(&manifest, &leaves, &descs)
                .into_iter()
                .map(|(p, e, f)| (p.to_string(), e, f))
                .collect();
        let facts: HashMap<Cid, Facts> = futures::stream::iter(needed)
            .map(|(_, e, known)| async move {
                match known {
                    Some(f) => Ok((e.cid, f)),
                    None => self.facts_of(e.cid, fetched_ref).await.map(|f| (e.cid, f)),
                }
            })
            .buffer_unordered(WALK_PARALLEL)
            .try_collect()
            .await?;
        let aur: Vec<AurBase> = futures::stream::iter(aur_paths)
            .map(|(p, e)| async move {
                self.ensure_file(e.cid, fetched_ref).await?;
                let bytes = read_all(&self.store, &e.cid).await?;
                Ok::<_, FollowError>(AurBase::parse_index(&bytes, &p)?)
            })
            .buffer_unordered(WALK_PARALLEL)
            .try_collect()
            .await?;
        let listing = Listing::from_walk(manifest, m_entry, c_entry, &leaves, &descs, &facts, aur)?;
        let (view, built, _) = View::new(root, listing)?;
        if built.cid != root {
            return Err(FollowError::Invalid {
                what: format!("walk of {root}"),
                detail: format!(
                    "the listing rebuilds to {} (not in the layout this version reads?)",
                    built.cid
                ),
            });
        }
        Ok((view, fetched.load(Ordering::Relaxed)))
    }

    /// The size and SHA-256 of a file, fetching what is not held.
    async fn facts_of(&self, cid: Cid, fetched: &AtomicU64) -> Result<Facts, FollowError> {
        self.ensure_file(cid, fetched).await?;
        let (_, mut stream) = self.store.read(&cid, None).await?;
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        let mut n = 0u64;
        while let Some(chunk) = stream.try_next().await? {
            n += chunk.len() as u64;
            sha2::Digest::update(&mut h, &chunk);
        }
        Ok((n, cidmirror_store::Sha256(sha2::Digest::finalize(h).into())))
    }

    /// Databases: upstream-signed ones fetched verbatim (with their `.sig`), unsigned
    /// ones rebuilt from `index/` and served from the follower's own copy.
    async fn prepare_databases(
        &self,
        mut view: View,
        prev: Option<&View>,
        ev: &Announced,
        fetched: &AtomicU64,
    ) -> Result<View, FollowError> {
        let params = view.manifest().profile()?.params();
        for r in view.manifest().repos.clone() {
            let dir = layout::os_dir(&r.repo, &r.arch);
            let Some(db) = view.listing.get(&r.repo, &r.arch, &r.database).cloned() else {
                tracing::warn!(
                    "snapshot {}: {dir}/{} is not in the listing",
                    ev.seq,
                    r.database
                );
                continue;
            };
            let names: Vec<String> = db.names().map(|n| format!("{dir}/{n}")).collect();
            if r.signed {
                self.ensure_file(db.file.cid, fetched).await?;
                if let Some(sig) = db.sig {
                    self.ensure_file(sig.cid, fetched).await?;
                }
            } else {
                let archive = self
                    .rebuild_database(&view, &r.repo, &r.arch, &r.database)
                    .await?;
                let f = self
                    .store
                    .put_file(
                        FileSource::Reader(Box::new(Cursor::new(archive))),
                        PutOptions {
                            params,
                            pin: Some(reason(&format!("follow:{}", ev.seq))?),
                            ..Default::default()
                        },
                    )
                    .await?;
                for n in &names {
                    view.local.insert(n.clone(), f.cid);
                }
            }
            for n in &names {
                let now = view.local.get(n).copied().unwrap_or(db.file.cid);
                let before = prev.and_then(|p| {
                    let c = p.resolve(n)?.cid();
                    (c == now).then(|| p.since.get(n).copied()).flatten()
                });
                view.since
                    .insert(n.clone(), before.unwrap_or(ev.published()));
            }
        }
        Ok(view)
    }

    /// Rebuilds the unsigned database `file_name` of a repository from its packages'
    /// `desc` entries, reading and compressing only the entries the archive kept from the
    /// previous snapshot lacks.
    async fn rebuild_database(
        &self,
        view: &View,
        repo: &str,
        arch: &str,
        file_name: &str,
    ) -> Result<Vec<u8>, FollowError> {
        let pkgs = || {
            view.listing
                .packages_of(repo, arch)
                .filter_map(|p| p.package.as_ref())
        };
        let keys: Vec<Cid> = pkgs().map(|(_, d)| d.cid).collect();
        let db_path = format!("{}/{file_name}", layout::os_dir(repo, arch));
        let io = |source: std::io::Error| FollowError::Io {
            path: db_path.clone().into(),
            source,
        };
        let missing: Vec<(String, Cid)> = {
            let mut dbs = self.databases.lock().unwrap_or_else(|e| e.into_inner());
            let key = (repo.to_string(), arch.to_string());
            if dbs.get(&key).is_none_or(|(name, _)| name != file_name) {
                dbs.insert(
                    key.clone(),
                    (
                        file_name.to_string(),
                        pacman::DbArchive::new(file_name).map_err(io)?,
                    ),
                );
            }
            let (_, db) = &dbs[&key];
            // Names copied only for what is read (a few per refresh, not every package).
            pkgs()
                .filter(|(_, d)| !db.contains(&d.cid))
                .map(|(n, d)| (n.clone(), d.cid))
                .collect()
        };
        let descs: Vec<(Cid, Desc)> = futures::stream::iter(missing)
            .map(|(name, cid)| async move {
                let bytes = read_all(&self.store, &cid).await?;
                let d = Desc::parse(bytes.to_vec()).map_err(|detail| FollowError::Invalid {
                    what: format!("{}/{name}", layout::index_dir(repo, arch)),
                    detail,
                })?;
                Ok::<_, FollowError>((cid, d))
            })
            .buffer_unordered(WALK_PARALLEL * 2)
            .try_collect()
            .await?;
        let dbs = self.databases.clone();
        let key = (repo.to_string(), arch.to_string());
        tokio::task::spawn_blocking(move || {
            let mut dbs = dbs.lock().unwrap_or_else(|e| e.into_inner());
            let Some((_, db)) = dbs.get_mut(&key) else {
                return Err(std::io::Error::other(
                    "the database being rebuilt went away",
                ));
            };
            for (cid, d) in &descs {
                db.add(*cid, d)?;
            }
            db.build(&keys)
        })
        .await
        .map_err(fetch_err)?
        .map_err(io)
    }

    /// Restores the snapshot recorded in `state.json` (verified again, its listing walked
    /// in the local store). Returns its sequence.
    async fn restore(&self) -> Result<Option<u64>, FollowError> {
        let path = self.cfg.dir.join("state.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(FollowError::Io { path, source }),
        };
        let ev: Announced = serde_json::from_slice(&bytes).map_err(|e| FollowError::Invalid {
            what: path.display().to_string(),
            detail: e.to_string(),
        })?;
        if !cidmirror_store::sign::verify_snapshot_with(
            &self.cfg.key,
            ev.seq,
            &ev.root,
            ev.previous.as_ref(),
            &ev.signature,
        ) {
            return Err(FollowError::Invalid {
                what: path.display().to_string(),
                detail: "its signature does not verify against the publisher key".into(),
            });
        }
        let started = Instant::now();
        self.refresh_to(&ev, started).await?;
        Ok(Some(ev.seq))
    }

    /// Evicts cached files over the budget, keeping those being served.
    pub(crate) async fn enforce_budget(&self) {
        let kept = || {
            let mut kept = BTreeSet::new();
            if let Some(v) = self.snapshots.current().and_then(|c| c.follow.clone()) {
                kept.extend(v.file_cids());
            }
            if let Some(v) = self
                .previous
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
            {
                kept.extend(v.file_cids());
            }
            kept
        };
        if let Err(e) = self.cache.enforce(&self.store, kept).await {
            tracing::warn!("enforcing the cache budget: {e}");
        }
    }
}

/// Gives the heap's free pages back to the system after a refresh: a walk of a whole
/// listing frees far more than the follower keeps, and glibc keeps freed memory of its
/// arenas resident unless asked.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn reason(s: &str) -> Result<PinReason, FollowError> {
    Ok(s.parse()?)
}

/// The entries of `manifest.json` and `changes.jsonl` in the listing `root`.
async fn listing_files<S: Store + ?Sized>(
    store: &S,
    root: &Cid,
) -> Result<(DirEntry, DirEntry), FollowError> {
    let links = unixfs::list(store, root).await?;
    let entry = |name: &str| {
        links
            .iter()
            .find(|l| l.name == name)
            .map(|l| DirEntry {
                cid: l.cid,
                tsize: l.tsize,
            })
            .ok_or_else(|| FollowError::Invalid {
                what: format!("snapshot {root}"),
                detail: format!("no {name}"),
            })
    };
    Ok((entry("manifest.json")?, entry("changes.jsonl")?))
}

/// The second half of a delta refresh, once the delta's blocks are in `store`: snapshot
/// `root`'s manifest and `changes.jsonl`, applied to `prev` and rebuilt. The view and the
/// directory blocks it built, only if they rebuild to `root` (the signed root of `seq`).
pub(crate) async fn apply_delta<S: Store + Clone>(
    store: &S,
    prev: &View,
    root: Cid,
    seq: u64,
) -> Result<(View, super::view::Blocks), FollowError> {
    let (m_entry, c_entry) = listing_files(store, &root).await?;
    let manifest = Manifest::parse(
        &read_all(store, &m_entry.cid).await?,
        &format!("manifest.json of {root}"),
    )?;
    let changes = read_all(store, &c_entry.cid).await?;
    // Only the directory blocks the changes touched are encoded (and need storing).
    let (view, built, blocks) = prev.next(root, manifest, m_entry, c_entry, &changes)?;
    if built.cid != root {
        return Err(FollowError::Invalid {
            what: format!("delta of snapshot {seq}"),
            detail: format!("rebuilds to {}, the signed root is {root}", built.cid),
        });
    }
    Ok((view, blocks))
}

/// The whole of a (small) file held in the store.
async fn read_all<S: Store + Clone>(store: &S, cid: &Cid) -> Result<Bytes, FollowError> {
    let (size, stream) = store.read(cid, None).await?;
    if size > META_MAX {
        return Err(FollowError::Invalid {
            what: cid.to_string(),
            detail: format!("{size} bytes, more than the {META_MAX} a listing file may have"),
        });
    }
    let parts: Vec<Bytes> = stream.try_collect().await?;
    Ok(parts.concat().into())
}
