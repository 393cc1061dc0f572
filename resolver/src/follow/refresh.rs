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

use super::view::{Manifest, Package, View, is_dir_path};
use super::watch::{Announcement, Via, WatchConfig};
use super::{FollowError, Follower, RefreshMode, pacdb};
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
        let db_bytes = AtomicU64::new(0);
        let view = self
            .prepare_databases(view, cur_view.as_deref(), ev, &db_bytes)
            .await?;
        let bytes = bytes + db_bytes.load(Ordering::Relaxed);
        self.switch(ev, view, cur_view).await?;
        // Volunteers follow the new snapshot too: ask who is there now.
        self.volunteers.wake();
        let c = &self.counters;
        if by_delta { &c.delta } else { &c.walk }.fetch_add(1, Ordering::Relaxed);
        c.last_bytes.store(bytes, Ordering::Relaxed);
        c.switch_delay_ms
            .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        tracing::info!(
            "snapshot {} ({}) is current: {} in {:?}, {bytes} bytes fetched",
            ev.seq,
            ev.root,
            if by_delta { "delta" } else { "walk" },
            started.elapsed()
        );
        self.enforce_budget().await;
        self.write_status().await;
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
        // One unpin per reason (a snapshot's pins are thousands of rows under one reason).
        let stale: BTreeSet<cidmirror_store::PinReason> = self
            .store
            .pins()
            .await?
            .into_iter()
            .map(|p| p.reason)
            .filter(|r| {
                let s = r.as_str();
                s.strip_prefix("direct:follow:")
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
    /// (direct pins, so that no package they name is kept by them), `index/`, the
    /// manifest, changes and the databases.
    async fn pin_listing(&self, seq: u64, view: &View) -> Result<(), FollowError> {
        let (_, blocks) = view.build()?;
        let dirs: Vec<Cid> = blocks.iter().map(|b| b.0).collect();
        let direct = reason(&format!("direct:follow:{seq}"))?;
        self.store.pin_all(&dirs, &direct, None).await?;
        let mut keep = vec![view.manifest_entry.cid, view.changes_entry.cid];
        keep.extend(view.desc_cids());
        for r in &view.manifest.repos {
            if r.signed {
                let dir = format!("{}/os/{}/", r.repo, r.arch);
                keep.extend(
                    view.others
                        .iter()
                        .filter(|(p, _)| p.starts_with(&dir) && is_database_name(&r.repo, p))
                        .map(|(_, e)| e.cid),
                );
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
        let manifest = Manifest::parse(&read_all(&self.store, &m.cid).await?, &root)?;
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
                    if is_dir_path(&child) {
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
        let descs: Vec<(String, DirEntry)> = leaves
            .iter()
            .filter(|(p, _)| p.starts_with("index/"))
            .map(|(p, e)| (p.clone(), *e))
            .collect();
        let fetched_ref = &fetched;
        let parsed: Vec<(String, DirEntry, pacdb::Desc)> = futures::stream::iter(descs)
            .map(|(p, e)| async move {
                self.ensure_file(e.cid, fetched_ref).await?;
                let bytes = read_all(&self.store, &e.cid).await?;
                let d = pacdb::parse_desc(&bytes).map_err(|detail| FollowError::Invalid {
                    what: p.clone(),
                    detail,
                })?;
                Ok::<_, FollowError>((p, e, d))
            })
            .buffer_unordered(WALK_PARALLEL * 2)
            .try_collect()
            .await?;
        let mut view = View::new(root, manifest, m_entry, c_entry);
        let mut used: BTreeSet<String> = BTreeSet::new();
        for (path, desc, d) in parsed {
            let parts: Vec<&str> = path.split('/').collect();
            let (repo, arch) = (parts[1].to_string(), parts[2].to_string());
            let file_path = format!("{repo}/os/{arch}/{}", d.filename);
            let Some(file) = leaves.get(&file_path).copied() else {
                return Err(FollowError::Invalid {
                    what: path,
                    detail: format!("names {file_path}, which is not in the listing"),
                });
            };
            let (Some(size), Some(sha)) = (d.csize, d.sha256.as_deref()) else {
                return Err(FollowError::Invalid {
                    what: path,
                    detail: "no %CSIZE% or %SHA256SUM%".into(),
                });
            };
            let sha256 = sha.parse().map_err(|e| FollowError::Invalid {
                what: path.clone(),
                detail: format!("%SHA256SUM%: {e}"),
            })?;
            let sig_path = format!("{file_path}.sig");
            let sig = leaves.get(&sig_path).copied();
            used.insert(file_path);
            used.insert(sig_path);
            view.insert_package(
                (repo, arch, d.filename.clone()),
                Package {
                    name: parts[3].to_string(),
                    size,
                    sha256,
                    file,
                    desc,
                    sig,
                },
            );
        }
        for (p, e) in &leaves {
            let top = p.split('/').next().unwrap_or_default();
            let special = matches!(top, "index" | "by-sha256")
                || p == "manifest.json"
                || p == "changes.jsonl";
            if !special && !used.contains(p) {
                view.others.insert(p.clone(), *e);
            }
        }
        let (built, _) = view.build()?;
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

    /// Databases: upstream-signed ones fetched verbatim (with their `.sig`), unsigned
    /// ones rebuilt from `index/` and served from the follower's own copy.
    async fn prepare_databases(
        &self,
        mut view: View,
        prev: Option<&View>,
        ev: &Announced,
        fetched: &AtomicU64,
    ) -> Result<View, FollowError> {
        let params = view.manifest.profile()?.params();
        for r in view.manifest.repos.clone() {
            let dir = format!("{}/os/{}", r.repo, r.arch);
            let db_path = format!("{dir}/{}", r.database);
            let Some(db) = view.others.get(&db_path).copied() else {
                tracing::warn!("snapshot {}: {db_path} is not in the listing", ev.seq);
                continue;
            };
            let names: Vec<String> = view
                .others
                .iter()
                .filter(|(p, e)| p.starts_with(&format!("{dir}/")) && e.cid == db.cid)
                .map(|(p, _)| p.clone())
                .collect();
            if r.signed {
                self.ensure_file(db.cid, fetched).await?;
                for n in &names {
                    if let Some(sig) = view.others.get(&format!("{n}.sig")).copied() {
                        self.ensure_file(sig.cid, fetched).await?;
                    }
                }
            } else {
                let pkgs: Vec<Package> = view.packages_of(&r.repo, &r.arch).cloned().collect();
                let entries: Vec<(pacdb::Desc, Vec<u8>)> = futures::stream::iter(pkgs)
                    .map(|p| {
                        let r = &r;
                        async move {
                            let bytes = read_all(&self.store, &p.desc.cid).await?;
                            let d = pacdb::parse_desc(&bytes).map_err(|detail| {
                                FollowError::Invalid {
                                    what: format!("index/{}/{}/{}", r.repo, r.arch, p.name),
                                    detail,
                                }
                            })?;
                            Ok::<_, FollowError>((d, bytes.to_vec()))
                        }
                    })
                    .buffered(WALK_PARALLEL * 2)
                    .try_collect()
                    .await?;
                let file_name = r.database.clone();
                let archive =
                    tokio::task::spawn_blocking(move || pacdb::build_db(&entries, &file_name))
                        .await
                        .map_err(fetch_err)?
                        .map_err(|source| FollowError::Io {
                            path: db_path.clone().into(),
                            source,
                        })?;
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
                let now = view.local.get(n).copied().unwrap_or(db.cid);
                let before = prev.and_then(|p| {
                    let c = p.local.get(n).copied().or(p.others.get(n).map(|e| e.cid))?;
                    (c == now).then(|| p.since.get(n).copied()).flatten()
                });
                view.since
                    .insert(n.clone(), before.unwrap_or(ev.published()));
            }
        }
        Ok(view)
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
        if let Err(e) = self.cache.enforce(&self.store, &kept).await {
            tracing::warn!("enforcing the cache budget: {e}");
        }
    }
}

fn reason(s: &str) -> Result<PinReason, FollowError> {
    Ok(s.parse()?)
}

/// Whether a path of `<repo>/os/<arch>/` is one of the repository's databases or their
/// signatures.
fn is_database_name(repo: &str, path: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or_default();
    let f = file.strip_suffix(".sig").unwrap_or(file);
    [".db", ".files"].iter().any(|kind| {
        f.strip_prefix(repo)
            .and_then(|rest| rest.strip_prefix(kind))
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(".tar"))
    })
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
    let manifest = Manifest::parse(&read_all(store, &m_entry.cid).await?, &root)?;
    let changes = read_all(store, &c_entry.cid).await?;
    let view = prev.apply(&changes, root, manifest, m_entry, c_entry)?;
    let (built, blocks) = view.build()?;
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
