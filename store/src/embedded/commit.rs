//! Group commit of imported files: the embedded store's writers share fsyncs and index
//! transactions.
//!
//! A file is imported into `tmp/` by its own thread (hashing, writing); it then queues its
//! commit. Whoever finds no commit under way takes everything queued (up to a limit) and
//! commits it as one batch, while the files queued meanwhile wait for the next one:
//!
//! 1. under `gc.lock` (shared) and in one index transaction, each file is renamed to its
//!    final name (unless a known-good copy is there);
//! 2. their bytes and names are made durable: one file by an fsync of it and of its shard
//!    directory, several by one `syncfs` of the store's filesystem (a file of at least
//!    [`SELF_SYNC_BYTES`] was fsynced by its own thread already: its cost is its bytes,
//!    best spent in parallel);
//! 3. every row is written and the transaction commits.
//!
//! So the rows that mention a file are never durable before its bytes and name, exactly
//! as with one commit per file. A crash leaves at most unindexed temp or whole files (a
//! whole file possibly short, if its rename reached the disk before its bytes), which the
//! next open or `gc` removes, and which a rerun re-hashes before using (nothing trusts a
//! kept file without its row). A 15,000-file first sync went from three fsyncs and one transaction per file
//! to a few per batch. A batch that fails is retried file by file, so each file gets its
//! own error and one bad file does not fail its neighbours. Hand-written: a leader/follower
//! queue over two mutexes; the async [`crate::batch::GroupCommit`] of the node stores
//! answers with strings and needs a runtime, and these commits run on blocking threads.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use cidmirror_schema::blocks::InsertLocation;
use cidmirror_schema::{UnixTime, blocks, files, pins, roots};

use super::{EmbeddedStore, SinkRow, TempFile, integrity, sync_dir};
use crate::api::PinReason;
use crate::importer::ImportedFile;
use crate::ledger::to_unix;
use crate::{Error, Result};

/// Files at least this long are fsynced by the thread that wrote them.
pub(super) const SELF_SYNC_BYTES: u64 = 1 << 20;
/// `put_file` calls worth having in flight per download slot: enough to fill a batch
/// while the one before it commits.
pub(super) const PUT_FANOUT: usize = 32;
/// At most this many files in one batch (bounds one transaction and the wait behind it).
const MAX_BATCH: usize = 512;

/// A file written to `tmp/` and hashed, waiting to be committed.
pub(super) struct Pending {
    pub tmp: TempFile,
    pub imported: ImportedFile,
    pub rows: Vec<SinkRow>,
    pub pin: Option<(PinReason, Option<SystemTime>)>,
    /// Its bytes are durable already (fsynced by its writer).
    pub synced: bool,
}

/// The queue of commits and the turn to run one.
#[derive(Default)]
pub(super) struct Committer {
    queue: Mutex<Vec<(Pending, Arc<Slot>)>>,
    turn: Mutex<()>,
}

/// Where a queued file learns how its commit went.
#[derive(Default)]
struct Slot(Mutex<State>);

#[derive(Default)]
enum State {
    #[default]
    Queued,
    /// In a batch under way (seen only if its committer panicked).
    Taken,
    Done(Result<()>),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl EmbeddedStore {
    /// Commits `p` together with whatever other files are waiting (blocking); returns once
    /// `p`'s rows are committed, with `p`'s own error if not.
    pub(super) fn commit_pending(&self, p: Pending) -> Result<()> {
        let c = &self.inner.committer;
        let slot = Arc::new(Slot::default());
        lock(&c.queue).push((p, Arc::clone(&slot)));
        loop {
            let _turn = lock(&c.turn);
            match std::mem::take(&mut *lock(&slot.0)) {
                State::Done(r) => return r,
                State::Taken => {
                    return Err(Error::Task("the batch holding this file failed".into()));
                }
                State::Queued => {}
            }
            let batch: Vec<(Pending, Arc<Slot>)> = {
                let mut q = lock(&c.queue);
                let n = q.len().min(MAX_BATCH);
                q.drain(..n).collect()
            };
            let (mut pendings, slots): (Vec<Pending>, Vec<Arc<Slot>>) = batch.into_iter().unzip();
            for s in &slots {
                *lock(&s.0) = State::Taken;
            }
            let results = self.commit_batch(&mut pendings);
            for (s, r) in slots.iter().zip(results) {
                *lock(&s.0) = State::Done(r);
            }
        }
    }

    /// Commits the batch in one transaction, or (if that fails and it holds more than one
    /// file) each file alone. One result per file.
    fn commit_batch(&self, batch: &mut [Pending]) -> Vec<Result<()>> {
        match self.commit_together(batch) {
            Ok(()) => batch.iter().map(|_| Ok(())).collect(),
            Err(e) => retry_alone(batch, e, |p| self.commit_batch(std::slice::from_mut(p))),
        }
    }

    fn commit_together(&self, batch: &mut [Pending]) -> Result<()> {
        let _lock = self.writing()?;
        let now = UnixTime::now();
        self.inner.db.write(|tx| -> Result<()> {
            // Final names first, then bytes and names made durable, then the rows that
            // mention them.
            let mut stamps = Vec::with_capacity(batch.len());
            let mut moved: Vec<(usize, PathBuf)> = Vec::new();
            for (i, p) in batch.iter_mut().enumerate() {
                let final_path = self.file_path(&p.imported.sha256);
                // The kept copy is kept only if provably unchanged since it last hashed to
                // its name; otherwise (absent, never checked, changed on disk) the copy
                // just verified replaces it: a bad copy is repaired, never trusted.
                let keep = files::get(tx, &p.imported.sha256)?
                    .is_some_and(|row| row.size == p.imported.size && self.known_good(&row));
                if keep {
                    stamps.push(None);
                    continue;
                }
                let parent = final_path
                    .parent()
                    .unwrap_or(&self.inner.root)
                    .to_path_buf();
                if !p.tmp.renamed {
                    if !parent.exists() {
                        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
                    }
                    p.tmp.rename_to(&final_path)?;
                }
                let m = std::fs::metadata(&final_path).map_err(|e| Error::io(&final_path, e))?;
                stamps.push(Some(integrity::stamp_of(&m)));
                moved.push((i, final_path));
            }
            self.make_durable(batch, &moved)?;
            for (p, stamp) in batch.iter().zip(&stamps) {
                files::touch(tx, &p.imported.sha256, now)?;
                let id = files::upsert(tx, &p.imported.sha256, p.imported.size, now)?;
                if let Some(stamp) = stamp {
                    files::set_checked(tx, id, stamp, now)?;
                }
                for row in &p.rows {
                    let loc = match &row.inline {
                        Some(block) => InsertLocation::Inline(block),
                        None if row.pb_leaf => InsertLocation::PbFileLeaf {
                            file: id,
                            offset: row.offset,
                            length: row.length,
                        },
                        None => InsertLocation::Raw {
                            file: id,
                            offset: row.offset,
                            length: row.length,
                        },
                    };
                    blocks::insert(tx, &row.cid, loc, now)?;
                }
                roots::insert(tx, &p.imported.cid, id)?;
                if let Some((reason, exp)) = &p.pin {
                    pins::add(tx, &p.imported.cid, reason.as_str(), now, exp.map(to_unix))?;
                }
            }
            Ok(())
        })
    }

    /// Makes the bytes and the new names of the files moved into place durable: for one
    /// file, an fsync of it (unless its writer did) and of its shard directory (and, once
    /// per shard and process, of the shard's entry in `files/`: an earlier, failed commit
    /// may have created it unsynced); for several, one `syncfs`.
    fn make_durable(&self, batch: &[Pending], moved: &[(usize, PathBuf)]) -> Result<()> {
        match moved {
            [] => Ok(()),
            [(one, path)] => {
                let p = &batch[*one];
                if !p.synced {
                    p.tmp.file.sync_all().map_err(|e| Error::io(path, e))?;
                }
                let parent = path.parent().unwrap_or(&self.inner.root);
                sync_dir(parent)?;
                self.shard_durable(parent)
            }
            _ => {
                let files = self.inner.root.join("files");
                let dir = File::open(&files).map_err(|e| Error::io(&files, e))?;
                syncfs(&dir, &files)?;
                let mut known = lock(&self.inner.durable_shards);
                for (_, path) in moved {
                    if let Some(parent) = path.parent() {
                        known.insert(parent.to_path_buf());
                    }
                }
                Ok(())
            }
        }
    }
}

/// After a failed batch of several files, each file alone (each then gets its own error);
/// a batch of one keeps the error it got.
fn retry_alone(
    batch: &mut [Pending],
    err: Error,
    mut alone: impl FnMut(&mut Pending) -> Vec<Result<()>>,
) -> Vec<Result<()>> {
    if batch.len() == 1 {
        return vec![Err(err)];
    }
    tracing::debug!(files = batch.len(), error = %err, "a batch commit failed; committing its files one by one");
    batch
        .iter_mut()
        .map(|p| alone(p).pop().unwrap_or(Ok(())))
        .collect()
}

/// Flushes everything written to the filesystem holding `file` (data and metadata); since
/// Linux 5.8 it also reports write-back errors of that filesystem.
fn syncfs(file: &File, path: &Path) -> Result<()> {
    rustix::fs::syncfs(file).map_err(|e| Error::io(path, std::io::Error::from(e)))
}
