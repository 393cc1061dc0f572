//! The embedded store: cidmirror's own block store, no IPFS daemon needed.
//!
//! On disk, under one directory:
//! ```text
//! index.sqlite        blocks, files, whole-file roots, pins (WAL)
//! files/ab/ab12...    whole files named by SHA-256, immutable, each kept once
//! tmp/                files being written (each locked by its writer)
//! gc.lock             writers hold it shared while they commit; gc holds it exclusively
//! ```
//! A package is kept once, as a whole file; its leaves are rows mapping the leaf CID to a
//! byte range (raw leaves) or to a range wrapped in the UnixFS leaf encoding (dag-pb leaves),
//! so serving the package is a plain file read and serving a block is a `pread`. Internal
//! nodes and blocks that arrive one by one (CAR import) are kept inline in SQLite.
//!
//! Durability and crash safety: a file is written to `tmp/`, fsynced, renamed to its final
//! name and the directory fsynced before the index rows that mention it are committed. A
//! crash leaves at most an unindexed temp or whole file, which the next open or `gc`
//! removes; it never leaves a row that points at missing bytes. Several processes may use
//! one store at once: SQLite serialises the index, renames are atomic, and flocks keep
//! garbage collection away from in-flight writes.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use cid::Cid;
use cidmirror_schema::blocks::{InsertLocation, Location};
use cidmirror_schema::{Db, Sha256, UnixTime, blocks, files, pins, roots};
use futures::StreamExt;
use tokio::io::AsyncRead;
use tokio_util::io::SyncIoBridge;

use crate::api::{
    Block, BlocksWritten, ByteStream, CarImport, FileSource, GcOptions, GcReport, Pin, PinReason,
    PutOptions, Store,
};
use crate::car::CarReader;
use crate::hash::{DAG_PB, identity_data, verify_block};
use crate::importer::{self, BlockSink, ImportedFile, Leaf, LeafForm};
use crate::ledger::to_unix;
use crate::pb;
use crate::unixfs;
use crate::{Error, Result};

mod commit;
mod integrity;
pub use integrity::{IntegrityStats, Scrubbed, TrustedFile};

/// Empty, unlocked temp files younger than this are left alone unless their writer is
/// known to be dead: a live writer may have created the file and not yet locked it.
const TEMP_MIN_AGE: Duration = Duration::from_secs(10);
/// Reads of kept files are streamed in pieces of this size.
const READ_PIECE: u64 = 256 << 10;
/// Block bytes committed per transaction when importing a CAR: bounds how long other
/// writers wait for the index.
const COMMIT_BYTES: u64 = 64 << 20;

/// A block store in a local directory. Cheap to clone; all clones share one index.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    db: Db,
    /// Shard directories (`files/ab`) whose entry in `files/` this process made durable.
    durable_shards: std::sync::Mutex<HashSet<PathBuf>>,
    /// Files being hashed now (see [`integrity`]).
    checks: integrity::CheckGates,
    /// Woken when a corrupt file is quarantined (the scrub then repairs it at once).
    corruption_found: tokio::sync::Notify,
    /// Imported files waiting to be committed together.
    committer: commit::Committer,
}

/// What [`EmbeddedStore::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Files checked.
    pub files: u64,
    /// Blocks checked.
    pub blocks: u64,
    /// Files re-hashed (all of them with `full`, else those changed since their check).
    pub hashed: u64,
    /// Problems, one line each (empty when the store is consistent).
    pub problems: Vec<String>,
    /// Bad files moved aside (with `repair`): SHA-256 and size, for a repair to fetch.
    pub quarantined: Vec<(Sha256, u64)>,
    /// Leftovers cleaned up (temp files of dead writers, unindexed files).
    pub cleaned: Vec<String>,
}

/// Counts of what the store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Whole files kept.
    pub files: u64,
    /// Their total size.
    pub file_bytes: u64,
    /// Blocks indexed.
    pub blocks: u64,
    /// Pins (including expired ones not yet collected).
    pub pins: u64,
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir`, and removes temp files left by writers
    /// that died.
    pub fn open(dir: &Path) -> Result<Self> {
        for sub in ["files", "tmp"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(|e| Error::io(&p, e))?;
        }
        sync_dir(dir)?;
        let db = Db::open(&dir.join("index.sqlite"), cidmirror_schema::Schema::Store)?;
        let s = EmbeddedStore {
            inner: Arc::new(Inner {
                root: dir.to_path_buf(),
                db,
                durable_shards: std::sync::Mutex::new(HashSet::new()),
                checks: Default::default(),
                corruption_found: tokio::sync::Notify::new(),
                committer: Default::default(),
            }),
        };
        s.clean_temp()?;
        Ok(s)
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.inner.root
    }

    fn tmp_dir(&self) -> PathBuf {
        self.inner.root.join("tmp")
    }

    fn shard_durable(&self, shard: &Path) -> Result<()> {
        let mut known = self
            .inner
            .durable_shards
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !known.contains(shard) {
            sync_dir(&self.inner.root.join("files"))?;
            known.insert(shard.to_path_buf());
        }
        Ok(())
    }

    fn file_path(&self, sha: &Sha256) -> PathBuf {
        let hex = sha.to_hex();
        self.inner.root.join("files").join(&hex[..2]).join(hex)
    }

    fn gc_lock(&self) -> Result<File> {
        let p = self.inner.root.join("gc.lock");
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| Error::io(&p, e))
    }

    /// Holds `gc.lock` shared: every write that adds rows or pins runs under it, so it
    /// happens wholly before or wholly after a garbage collection (which holds it
    /// exclusively from its mark to its sweep) and is never half-seen by one.
    fn writing(&self) -> Result<File> {
        let lock = self.gc_lock()?;
        lock.lock_shared()
            .map_err(|e| Error::io(self.inner.root.join("gc.lock"), e))?;
        Ok(lock)
    }

    /// Holds `gc.lock` exclusively: no writer commits meanwhile.
    fn collecting(&self) -> Result<File> {
        let lock = self.gc_lock()?;
        lock.lock()
            .map_err(|e| Error::io(self.inner.root.join("gc.lock"), e))?;
        Ok(lock)
    }

    // -----------------------------------------------------------------------------------
    // Writing

    /// Imports a file from a reader (blocking). Its commit is shared with the files that
    /// other threads are committing at the same time (see [`commit`]).
    pub fn put_reader(&self, reader: impl Read + Send, opts: &PutOptions) -> Result<ImportedFile> {
        let tmp = TempFile::create(&self.tmp_dir())?;
        let large = opts.expect.is_some_and(|e| e.size >= DIRECT_MIN);
        let mut sink = FileSink {
            file: &tmp.file,
            path: &tmp.path,
            rows: Vec::new(),
            written: 0,
            progress: opts.progress.as_deref(),
            direct: if large { Direct::Wanted } else { Direct::Never },
        };
        let imported = importer::import_expecting(reader, &opts.params, opts.expect, &mut sink)?;
        let rows = sink.rows;
        // Kept files never change: make that visible to anyone with a shell.
        tmp.file
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o444))
            .map_err(|e| Error::io(&tmp.path, e))?;
        let synced = imported.size >= commit::SELF_SYNC_BYTES;
        if synced {
            tmp.file.sync_all().map_err(|e| Error::io(&tmp.path, e))?;
        }
        self.commit_pending(commit::Pending {
            tmp,
            imported,
            rows,
            pin: opts.pin.clone().map(|r| (r, opts.pin_expires_at)),
            synced,
        })?;
        Ok(imported)
    }

    /// Imports a local file (blocking).
    pub fn put_path(&self, path: &Path, opts: &PutOptions) -> Result<ImportedFile> {
        importer::from_path(path, |f| self.put_reader(f, opts))
    }

    /// Keeps blocks inline after checking each against its CID (blocking).
    pub fn put_blocks_sync(&self, blocks: &[Block]) -> Result<BlocksWritten> {
        let mut suspects = HashSet::new();
        for b in blocks {
            check_block(&b.cid, &b.data)?;
            self.compare_held(&b.cid, &b.data, &mut suspects)?;
        }
        self.check_suspects(suspects, "import")?;
        let _lock = self.writing()?;
        let now = UnixTime::now();
        self.inner.db.write(|tx| -> Result<BlocksWritten> {
            let mut w = BlocksWritten::default();
            for b in blocks {
                if identity_data(&b.cid).is_none()
                    && blocks::insert(tx, &b.cid, InsertLocation::Inline(&b.data), now)?
                {
                    w.new_blocks += 1;
                    w.new_bytes += b.data.len() as u64;
                }
            }
            Ok(w)
        })
    }

    /// Imports a CAR stream (blocking): nothing is kept unless every block verified and the
    /// stream ended cleanly. Verified blocks are staged in a temp file first, so a slow
    /// stream never holds the index's write lock; they are then committed in transactions
    /// of bounded size, the roots' pins in the last one (a crash in between leaves only
    /// unpinned, verified blocks, which gc removes).
    pub fn import_car_sync(
        &self,
        reader: impl Read,
        what: &str,
        pin: Option<&PinReason>,
    ) -> Result<CarImport> {
        let mut car = CarReader::new(reader, what)?;
        let roots = car.roots().to_vec();
        let staged = TempFile::create(&self.tmp_dir())?;
        let mut count = 0u64;
        let mut bytes = 0u64;
        let mut suspects = HashSet::new();
        {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, &staged.file);
            w.write_all(&crate::car::encode_header(&roots))
                .map_err(|e| Error::io(&staged.path, e))?;
            while let Some((cid, data)) = car.next_block()? {
                check_block(&cid, &data).map_err(|e| Error::Car {
                    what: what.to_string(),
                    detail: e.to_string(),
                })?;
                self.compare_held(&cid, &data, &mut suspects)?;
                count += 1;
                bytes += data.len() as u64;
                w.write_all(&crate::car::encode_section(&cid, &data))
                    .map_err(|e| Error::io(&staged.path, e))?;
            }
            w.flush().map_err(|e| Error::io(&staged.path, e))?;
        }
        // A verified copy of a block whose kept file has other bytes there: that file is
        // bad (checked whole, then moved aside) and the copy offered takes its place.
        self.check_suspects(suspects, "import")?;
        let f = File::open(&staged.path).map_err(|e| Error::io(&staged.path, e))?;
        // Our own staging file, verified as it was written: no second hashing.
        let mut back =
            CarReader::new(std::io::BufReader::with_capacity(1 << 20, f), what)?.trusted();
        let _lock = self.writing()?;
        let now = UnixTime::now();
        loop {
            let mut batch_bytes = 0u64;
            let done = self.inner.db.write(|tx| -> Result<bool> {
                while batch_bytes < COMMIT_BYTES {
                    let Some((cid, data)) = back.next_block()? else {
                        if let Some(reason) = pin {
                            for r in &roots {
                                pins::add(tx, r, reason.as_str(), now, None)?;
                            }
                        }
                        return Ok(true);
                    };
                    batch_bytes += data.len() as u64;
                    if identity_data(&cid).is_none() {
                        blocks::insert(tx, &cid, InsertLocation::Inline(&data), now)?;
                    }
                }
                Ok(false)
            })?;
            if done {
                break;
            }
        }
        drop(staged);
        Ok(CarImport {
            roots,
            blocks: count,
            bytes,
        })
    }

    // -----------------------------------------------------------------------------------
    // Reading

    /// A block's bytes, if held (blocking).
    pub fn get_block_sync(&self, cid: &Cid) -> Result<Option<Vec<u8>>> {
        if let Some(d) = identity_data(cid) {
            return Ok(Some(d.to_vec()));
        }
        let Some(loc) = self.inner.db.read(|c| blocks::get(c, cid))? else {
            return Ok(None);
        };
        let data = match &loc {
            Location::Inline(d) => Ok(d.clone()),
            Location::Raw(r) => self.read_range(&r.sha256, r.offset, r.length),
            Location::PbFileLeaf(r) => self
                .read_range(&r.sha256, r.offset, r.length)
                .map(|d| pb::file_leaf_block(&d)),
        };
        // Nothing leaves the store unchecked: a block that does not hash to its CID (or a
        // kept file gone short or missing) is corrupt, dropped, and not held any more.
        let bad = match &data {
            Ok(d) => verify_block(cid, d).err().map(|e| e.to_string()),
            Err(Error::Io { source, .. })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                Some(source.to_string())
            }
            Err(_) => None,
        };
        if let Some(detail) = bad {
            self.block_corrupt(cid, &loc, &detail)?;
            return Ok(None);
        }
        data.map(Some)
    }

    /// Notes the kept file of a block already held there when its stored bytes differ from
    /// `data` (which verified against the CID).
    fn compare_held(&self, cid: &Cid, data: &[u8], suspects: &mut HashSet<Sha256>) -> Result<()> {
        if let Some(loc @ (Location::Raw(_) | Location::PbFileLeaf(_))) =
            self.inner.db.read(|c| blocks::get(c, cid))?
            && self.stored_block(&loc).ok().as_deref() != Some(data)
            && let Location::Raw(r) | Location::PbFileLeaf(r) = loc
        {
            suspects.insert(r.sha256);
        }
        Ok(())
    }

    /// Hashes each suspect kept file whole and quarantines those that are bad.
    fn check_suspects(&self, suspects: HashSet<Sha256>, by: &str) -> Result<()> {
        for sha in suspects {
            if let Some(row) = self.inner.db.read(|c| files::get(c, &sha))? {
                self.check_row(row, by, integrity::OnBad::Quarantine, &mut |_| true)?;
            }
        }
        Ok(())
    }

    /// The bytes of a block as stored, unchecked (to compare them with a copy offered).
    fn stored_block(&self, loc: &Location) -> Result<Vec<u8>> {
        match loc {
            Location::Inline(d) => Ok(d.clone()),
            Location::Raw(r) => self.read_range(&r.sha256, r.offset, r.length),
            Location::PbFileLeaf(r) => self
                .read_range(&r.sha256, r.offset, r.length)
                .map(|d| pb::file_leaf_block(&d)),
        }
    }

    fn read_range(&self, sha: &Sha256, offset: u64, length: u64) -> Result<Vec<u8>> {
        let p = self.file_path(sha);
        let f = File::open(&p).map_err(|e| Error::io(&p, e))?;
        let len = usize::try_from(length)
            .map_err(|_| Error::io(&p, std::io::Error::other("range too large")))?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, offset)
            .map_err(|e| Error::io(&p, e))?;
        Ok(buf)
    }

    /// The kept file whose DAG is `cid` and its size, if there is one: lets a server send
    /// the whole file with `sendfile` instead of walking blocks.
    pub fn whole_file(&self, cid: &Cid) -> Result<Option<(PathBuf, u64)>> {
        let row = self.inner.db.read(|c| roots::get(c, cid))?;
        Ok(row.map(|r| (self.file_path(&r.sha256), r.size)))
    }

    /// Whether the block is held (blocking).
    pub fn has_sync(&self, cid: &Cid) -> Result<bool> {
        if identity_data(cid).is_some() {
            return Ok(true);
        }
        Ok(self.inner.db.read(|c| blocks::has(c, cid))?)
    }

    /// Counts of what the store holds.
    /// Counted by the index (a follower's status asks every 2 s; loading the rows was most
    /// of its CPU at 60,000 packages).
    pub fn stats(&self) -> Result<StoreStats> {
        let (files, file_bytes) = self.inner.db.read(files::totals)?;
        let blocks = self.inner.db.read(blocks::count)?;
        let (pins, _) = self.inner.db.read(|c| pins::count(c, ""))?;
        Ok(StoreStats {
            files,
            file_bytes,
            blocks,
            pins,
        })
    }

    /// Number of pins with `reason`, expired or not.
    pub fn pins_with(&self, reason: &PinReason) -> Result<u64> {
        Ok(self.inner.db.read(|c| pins::count(c, reason.as_str()))?.1)
    }

    /// Every reason some pin has (one each, however many pins share it).
    pub fn pin_reasons(&self) -> Result<Vec<PinReason>> {
        let rows = self.inner.db.read(pins::reasons)?;
        rows.into_iter().map(|r| r.parse()).collect()
    }

    // -----------------------------------------------------------------------------------
    // Pins and garbage collection

    /// Adds or renews a pin (blocking).
    pub fn pin_sync(
        &self,
        cid: &Cid,
        reason: &PinReason,
        expires_at: Option<SystemTime>,
    ) -> Result<()> {
        let exp = expires_at.map(to_unix);
        let _lock = self.writing()?;
        Ok(self
            .inner
            .db
            .write(|tx| pins::add(tx, cid, reason.as_str(), UnixTime::now(), exp))?)
    }

    /// Pins many roots for one reason in one transaction (blocking).
    pub fn pin_all_sync(
        &self,
        cids: &[Cid],
        reason: &PinReason,
        expires_at: Option<SystemTime>,
    ) -> Result<()> {
        let exp = expires_at.map(to_unix);
        let _lock = self.writing()?;
        let now = UnixTime::now();
        Ok(self
            .inner
            .db
            .write(|tx| -> Result<(), cidmirror_schema::Error> {
                for c in cids {
                    pins::add(tx, c, reason.as_str(), now, exp)?;
                }
                Ok(())
            })?)
    }

    /// Removes every pin with this reason (blocking); returns how many.
    pub fn unpin_all_sync(&self, reason: &PinReason) -> Result<u64> {
        Ok(self
            .inner
            .db
            .write(|tx| pins::remove_reason(tx, reason.as_str()))? as u64)
    }

    /// Removes a pin (blocking).
    pub fn unpin_sync(&self, cid: &Cid, reason: &PinReason) -> Result<bool> {
        Ok(self
            .inner
            .db
            .write(|tx| pins::remove(tx, cid, reason.as_str()))?)
    }

    /// Every pin (blocking).
    pub fn pins_sync(&self) -> Result<Vec<Pin>> {
        let rows = self.inner.db.read(pins::all)?;
        rows.into_iter().map(crate::ledger::pin_of).collect()
    }

    /// Garbage collection (blocking): drop expired pins, mark everything live pins reach,
    /// sweep the rest (sparing anything younger than the grace period).
    pub fn gc_sync(&self, opts: GcOptions) -> Result<GcReport> {
        // Exclusive from before the mark to after the sweep: a pin or import that commits
        // meanwhile would otherwise be swept although it succeeded.
        let lock = self.collecting()?;
        let now = UnixTime::now();
        // Rows written at or before `now - grace` may go (times are whole seconds).
        let grace = i64::try_from(opts.grace.as_secs()).unwrap_or(i64::MAX / 2);
        let cutoff = now.plus_secs(1 - grace);
        let mut report = GcReport {
            pins_expired: self.inner.db.write(|tx| pins::delete_expired(tx, now))? as u64,
            ..Default::default()
        };
        // Mark: recursive pins keep their whole DAG, direct pins only their own block
        // (added after the walk, so a block both pin kinds name is still walked).
        let live = self.inner.db.read(|c| pins::live(c, now))?;
        let (direct, rest): (Vec<_>, Vec<_>) = live
            .into_iter()
            .partition(|(_, reason)| PinReason::is_direct_reason(reason));
        let (dirs, recursive): (Vec<_>, Vec<_>) = rest
            .into_iter()
            .partition(|(_, reason)| PinReason::is_dirs_reason(reason));
        // A dag-pb node's bytes (inline in the index; leaves have no links, and blocks not
        // held have nothing to keep).
        let node = |c: &Cid| -> Result<Option<Vec<u8>>> {
            if c.codec() != DAG_PB {
                return Ok(None);
            }
            Ok(match identity_data(c) {
                Some(d) => Some(d.to_vec()),
                None => match self.inner.db.read(|conn| blocks::get(conn, c))? {
                    Some(Location::Inline(d)) => Some(d),
                    Some(_) | None => None,
                },
            })
        };
        let mut marked: HashSet<Cid> = HashSet::new();
        let mut stack: Vec<Cid> = recursive.into_iter().map(|(c, _)| c).collect();
        while let Some(c) = stack.pop() {
            if !marked.insert(c) {
                continue;
            }
            let Some(data) = node(&c)? else { continue };
            match unixfs::links_of(&c, &data) {
                Ok(links) => stack.extend(links),
                Err(e) => tracing::warn!("gc: {e}; keeping it, without following its links"),
            }
        }
        // Directories-only pins: a directory (or shard) is kept with its links followed;
        // what is not a directory is neither kept nor followed (a file it names).
        let mut stack: Vec<Cid> = dirs.into_iter().map(|(c, _)| c).collect();
        let mut not_dirs: HashSet<Cid> = HashSet::new();
        while let Some(c) = stack.pop() {
            if marked.contains(&c) || not_dirs.contains(&c) {
                continue;
            }
            let Some(data) = node(&c)? else {
                not_dirs.insert(c);
                continue;
            };
            let is_dir = unixfs::decode(&c, &data).is_ok_and(|(_, u)| {
                matches!(
                    u.typ,
                    Some(pb::DataType::Directory | pb::DataType::HamtShard)
                )
            });
            if !is_dir {
                not_dirs.insert(c);
                continue;
            }
            marked.insert(c);
            match unixfs::links_of(&c, &data) {
                Ok(links) => stack.extend(links),
                Err(e) => tracing::warn!("gc: {e}; keeping it, without following its links"),
            }
        }
        // A direct pin on a whole file's root keeps that node, not the file: forget that it
        // is the file's root, so that the file goes with its leaves.
        let mut direct_only = Vec::new();
        for (c, _) in direct {
            if marked.insert(c) && c.codec() == DAG_PB {
                direct_only.push(c);
            }
        }
        for chunk in direct_only.chunks(1000) {
            self.inner.db.write(|tx| -> Result<()> {
                for c in chunk {
                    roots::delete(tx, c)?;
                }
                Ok(())
            })?;
        }
        // Sweep.
        let all = self.inner.db.read(blocks::all)?;
        let mut dead: Vec<&blocks::Entry> = all
            .iter()
            .filter(|e| !marked.contains(&e.cid) && e.added_at < cutoff)
            .collect();
        // Nodes before the leaves they link to: a sweep killed half-way leaves orphaned
        // leaves (garbage for the next run), never a root that looks held without them.
        dead.sort_by_key(|e| (e.file.is_some(), e.cid.codec() != DAG_PB));
        report.blocks_kept = (all.len() - dead.len()) as u64;
        for chunk in dead.chunks(1000) {
            self.inner.db.write(|tx| -> Result<()> {
                for e in chunk {
                    if e.file.is_none()
                        && let Some(Location::Inline(d)) = blocks::get(tx, &e.cid)?
                    {
                        report.bytes_freed += d.len() as u64;
                    }
                    if blocks::delete_if_older(tx, &e.cid, cutoff)? {
                        report.blocks_removed += 1;
                        roots::delete(tx, &e.cid)?;
                    }
                }
                Ok(())
            })?;
        }
        for f in self.inner.db.read(|c| files::unreferenced(c, cutoff))? {
            if self
                .inner
                .db
                .write(|tx| files::delete_if_unreferenced(tx, f.id, cutoff))?
            {
                let p = self.file_path(&f.sha256);
                match fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(&p, e)),
                }
                report.files_removed += 1;
                report.bytes_freed += f.size;
            }
        }
        self.remove_unindexed_files(cutoff, &mut Vec::new())?;
        drop(lock);
        self.clean_temp()?;
        Ok(report)
    }

    /// Deletes files under `files/` that no row names (left by a crash between rename and
    /// commit), if older than `cutoff`. Call with the gc lock held exclusively.
    fn remove_unindexed_files(&self, cutoff: UnixTime, cleaned: &mut Vec<String>) -> Result<()> {
        let known: HashSet<String> = self
            .inner
            .db
            .read(files::all)?
            .into_iter()
            .map(|f| f.sha256.to_hex())
            .collect();
        let base = self.inner.root.join("files");
        for sub in read_dir(&base)? {
            if !sub.is_dir() {
                continue;
            }
            for p in read_dir(&sub)? {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                if known.contains(name) {
                    continue;
                }
                let old = fs::metadata(&p)
                    .and_then(|m| m.modified())
                    .map(to_unix)
                    .map_or(true, |t| t < cutoff);
                if old {
                    fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
                    cleaned.push(format!("removed unindexed file {}", p.display()));
                }
            }
        }
        Ok(())
    }

    /// Removes temp files whose writer is gone. Returns what was removed.
    fn clean_temp(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let now = SystemTime::now();
        for p in read_dir(&self.tmp_dir())? {
            // Read-only: a crashed writer may have made it read-only already, and flock
            // works on any descriptor.
            let Ok(f) = File::open(&p) else {
                continue;
            };
            if f.try_lock().is_err() {
                continue; // a live writer holds it
            }
            let Ok(meta) = f.metadata() else { continue };
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            if meta.len() > 0 || age >= TEMP_MIN_AGE || !writer_alive(&p) {
                match fs::remove_file(&p) {
                    Ok(()) => out.push(format!("removed stale temp file {}", p.display())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(&p, e)),
                }
            }
        }
        Ok(out)
    }

    /// Checks the store: every file row has its file with the right size and SHA-256 (with
    /// `full` every file is re-hashed; otherwise only those changed on disk since their last
    /// check); every block row points inside a kept file or holds bytes that match its CID;
    /// no file is left without a row. Files that hash right are recorded as checked; with
    /// `repair`, bad ones are quarantined (see [`integrity`]) and listed in
    /// [`VerifyReport::quarantined`] for a repair to fetch. Also removes leftovers of
    /// crashed writers (temp files, unindexed files).
    pub fn verify(&self, full: bool, repair: bool) -> Result<VerifyReport> {
        let mut rep = VerifyReport {
            cleaned: self.clean_temp()?,
            ..Default::default()
        };
        {
            let _lock = self.collecting()?;
            self.remove_unindexed_files(UnixTime::now().plus_secs(1), &mut rep.cleaned)?;
        }
        // Shared: no gc removes anything while we look (writers may still add, so a block
        // whose file is not in our list is looked up again before it is reported).
        let _lock = self.writing()?;
        let all_files = self.inner.db.read(files::all)?;
        let mut sizes = std::collections::HashMap::new();
        let on_bad = if repair {
            integrity::OnBad::Quarantine
        } else {
            integrity::OnBad::Report
        };
        for f in &all_files {
            rep.files += 1;
            let p = self.file_path(&f.sha256);
            let hash = match fs::metadata(&p) {
                Err(e) => {
                    rep.problems
                        .push(format!("file {} ({}): {e}", f.sha256, p.display()));
                    true
                }
                Ok(m) if m.len() != f.size => {
                    rep.problems.push(format!(
                        "file {}: size {} on disk, {} in the index",
                        f.sha256,
                        m.len(),
                        f.size
                    ));
                    sizes.insert(f.id, m.len());
                    repair
                }
                Ok(_) => {
                    sizes.insert(f.id, f.size);
                    full || !self.known_good(f)
                }
            };
            if !hash {
                continue;
            }
            rep.hashed += 1;
            match self.check_row(f.clone(), "verify", on_bad, &mut |_| true)? {
                Scrubbed::Corrupt { detail, .. } => {
                    if !rep.problems.iter().any(|p| p.contains(&f.sha256.to_hex())) {
                        rep.problems.push(format!("file {}: {detail}", f.sha256));
                    }
                    if repair {
                        rep.quarantined.push((f.sha256, f.size));
                        sizes.remove(&f.id);
                    }
                }
                Scrubbed::Good { .. } | Scrubbed::Idle | Scrubbed::Stopped => {}
            }
        }
        for e in self.inner.db.read(blocks::all)? {
            rep.blocks += 1;
            let loc = self.inner.db.read(|c| blocks::get(c, &e.cid));
            let loc = match loc {
                Ok(Some(l)) => l,
                Ok(None) => continue, // deleted meanwhile
                Err(err) => {
                    rep.problems.push(format!("block {}: {err}", e.cid));
                    continue;
                }
            };
            match &loc {
                Location::Inline(d) => {
                    if let Err(err) = verify_block(&e.cid, d) {
                        rep.problems.push(err.to_string());
                    }
                }
                Location::Raw(r) | Location::PbFileLeaf(r) => {
                    let size = match sizes.get(&r.file) {
                        Some(s) => Some(*s),
                        // Added after we listed the files?
                        None => fs::metadata(self.file_path(&r.sha256))
                            .ok()
                            .map(|m| m.len()),
                    };
                    match size {
                        None => rep
                            .problems
                            .push(format!("block {}: its file {} is missing", e.cid, r.sha256)),
                        Some(s) if r.offset + r.length > s => rep.problems.push(format!(
                            "block {}: range {}..{} is past the end of file {} ({s} bytes on disk)",
                            e.cid,
                            r.offset,
                            r.offset + r.length,
                            r.sha256
                        )),
                        // Read as stored: reporting must not move anything aside.
                        Some(_) if full => match self.stored_block(&loc) {
                            Ok(d) => {
                                if let Err(err) = verify_block(&e.cid, &d) {
                                    rep.problems.push(err.to_string());
                                }
                            }
                            Err(err) => rep.problems.push(format!("block {}: {err}", e.cid)),
                        },
                        Some(_) => {}
                    }
                }
            }
        }
        Ok(rep)
    }
}

/// Whether the process named in a temp file's name (`put-<pid>-<rand>.part`) still runs.
/// A dead writer's empty file can go at once; an unknown name counts as alive (the age
/// rule then applies).
fn writer_alive(temp: &Path) -> bool {
    let pid = temp
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("put-"))
        .and_then(|n| n.split('-').next())
        .and_then(|p| p.parse::<u32>().ok());
    match pid {
        Some(pid) if pid == std::process::id() => true,
        Some(pid) => Path::new("/proc").join(pid.to_string()).exists(),
        None => true,
    }
}

/// A block is acceptable if it hashes to its CID and, for dag-pb, decodes: an undecodable
/// dag-pb block would otherwise be pinned and then stop every walk over its DAG.
pub(crate) fn check_block(cid: &Cid, data: &[u8]) -> Result<()> {
    verify_block(cid, data)?;
    if cid.codec() == DAG_PB {
        pb::decode_node(data).map_err(|e| Error::malformed(cid, "dag-pb", e.0))?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut out = Vec::new();
    for e in rd {
        out.push(e.map_err(|e| Error::io(dir, e))?.path());
    }
    out.sort();
    Ok(out)
}

/// A file under `tmp/`, locked by its writer for its whole life, removed when dropped
/// unless it was renamed into place.
struct TempFile {
    file: File,
    path: PathBuf,
    renamed: bool,
}

impl TempFile {
    fn create(dir: &Path) -> Result<Self> {
        for _ in 0..16 {
            let name = format!("put-{}-{:016x}.part", std::process::id(), rand_u64());
            let path = dir.join(name);
            match File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    let temp = TempFile {
                        file,
                        path,
                        renamed: false,
                    };
                    // Blocking: a cleaner may hold the lock for a moment while it looks at
                    // this (young, empty, so kept) file.
                    temp.file.lock().map_err(|e| {
                        Error::io(&temp.path, std::io::Error::other(format!("locking: {e}")))
                    })?;
                    return Ok(temp);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Err(Error::io(
            dir,
            std::io::Error::other("could not create a unique temp file"),
        ))
    }

    /// Moves the file to `to` (it is then no longer removed on drop).
    fn rename_to(&mut self, to: &Path) -> Result<()> {
        fs::rename(&self.path, to).map_err(|e| Error::io(to, e))?;
        self.renamed = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.renamed {
            // Best effort: a leftover is removed by the next open or gc.
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

struct SinkRow {
    cid: Cid,
    offset: u64,
    length: u64,
    pb_leaf: bool,
    inline: Option<Vec<u8>>,
}

/// Files expected to be at least this large are written with direct I/O where they can be.
const DIRECT_MIN: u64 = 4 << 20;

/// Whether the temp file's bytes go to the disk directly (`O_DIRECT`): no copy into the
/// page cache, which for large files cost more CPU than one of their two SHA-256 passes.
/// Only whole aligned chunks go that way (the importer aligns a large file's chunks in
/// memory); the first chunk and the tail are written through the page cache, and anything
/// the filesystem refuses (tmpfs has no direct I/O) falls back to it for good. The commit's
/// fsync covers both kinds of write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direct {
    /// Small or unknown size, or refused: through the page cache.
    Never,
    /// Large: direct for the next aligned chunk.
    Wanted,
    /// The file descriptor has `O_DIRECT` set.
    On,
}

/// Writes file bytes to the temp file and remembers where each block is.
struct FileSink<'a> {
    file: &'a File,
    path: &'a Path,
    rows: Vec<SinkRow>,
    written: u64,
    progress: Option<&'a (dyn Fn(u64) + Send + Sync)>,
    direct: Direct,
}

impl FileSink<'_> {
    /// Sets or clears `O_DIRECT` on the file; a refusal means never again for this file.
    fn set_direct(&mut self, on: bool) {
        use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
        let set = fcntl_getfl(self.file).and_then(|flags| {
            let flags = if on {
                flags | OFlags::DIRECT
            } else {
                flags - OFlags::DIRECT
            };
            fcntl_setfl(self.file, flags)
        });
        self.direct = match (set, on) {
            (Ok(()), true) => Direct::On,
            (Ok(()), false) => Direct::Wanted,
            (Err(e), _) => {
                // Not clearable (never seen): an unaligned write then fails, loudly.
                tracing::debug!(path = %self.path.display(), on, error = %e, "O_DIRECT not changed");
                Direct::Never
            }
        };
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        let aligned = data.as_ptr().align_offset(importer::IO_ALIGN) == 0
            && data.len().is_multiple_of(importer::IO_ALIGN)
            && self.written.is_multiple_of(importer::IO_ALIGN as u64);
        match (self.direct, aligned) {
            (Direct::Wanted, true) => self.set_direct(true),
            (Direct::On, false) => self.set_direct(false),
            _ => {}
        }
        match self.file.write_all_at(data, self.written) {
            Ok(()) => Ok(()),
            Err(e)
                if self.direct == Direct::On
                    && e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) =>
            {
                // Stricter alignment than assumed: the page cache for the rest.
                self.set_direct(false);
                self.direct = Direct::Never;
                self.file
                    .write_all_at(data, self.written)
                    .map_err(|e| Error::io(self.path, e))
            }
            Err(e) => Err(Error::io(self.path, e)),
        }
    }
}

impl BlockSink for FileSink<'_> {
    fn leaf(&mut self, leaf: &Leaf<'_>) -> Result<()> {
        self.write(leaf.data)?;
        self.written += leaf.data.len() as u64;
        let (pb_leaf, inline) = match leaf.form {
            LeafForm::Raw => (false, None),
            LeafForm::PbFile => (true, None),
            LeafForm::Encoded(b) => (false, Some(b.to_vec())),
        };
        self.rows.push(SinkRow {
            cid: *leaf.cid,
            offset: leaf.offset,
            length: leaf.data.len() as u64,
            pb_leaf,
            inline,
        });
        if let Some(p) = self.progress {
            p(leaf.data.len() as u64);
        }
        Ok(())
    }

    fn node(&mut self, cid: &Cid, block: &[u8]) -> Result<()> {
        self.rows.push(SinkRow {
            cid: *cid,
            offset: 0,
            length: 0,
            pb_leaf: false,
            inline: Some(block.to_vec()),
        });
        Ok(())
    }
}

/// Runs blocking work (file and SQLite I/O) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn put_file(&self, source: FileSource, opts: PutOptions) -> Result<ImportedFile> {
        let s = self.clone();
        match source {
            FileSource::Path(p) => blocking(move || s.put_path(&p, &opts)).await,
            FileSource::Open { file, path } => {
                blocking(move || importer::from_file(file, &path, |f| s.put_reader(f, &opts))).await
            }
            other => {
                let r = other
                    .into_async_read()
                    .ok_or_else(|| Error::Task("file source has no reader".into()))?;
                let bridge = SyncIoBridge::new(r);
                blocking(move || s.put_reader(bridge, &opts)).await
            }
        }
    }

    async fn put_blocks(&self, blocks: Vec<Block>) -> Result<BlocksWritten> {
        let s = self.clone();
        blocking(move || s.put_blocks_sync(&blocks)).await
    }

    /// Files committed together share their fsyncs and transaction (see [`commit`]).
    fn put_fanout(&self) -> usize {
        commit::PUT_FANOUT
    }

    async fn import_car(
        &self,
        car: Box<dyn AsyncRead + Send + Unpin>,
        what: String,
        pin: Option<PinReason>,
    ) -> Result<CarImport> {
        let s = self.clone();
        let bridge = SyncIoBridge::new(car);
        blocking(move || s.import_car_sync(bridge, &what, pin.as_ref())).await
    }

    async fn get_block(&self, cid: &Cid) -> Result<Option<Bytes>> {
        let s = self.clone();
        let cid = *cid;
        Ok(blocking(move || s.get_block_sync(&cid))
            .await?
            .map(Bytes::from))
    }

    async fn has(&self, cid: &Cid) -> Result<bool> {
        let s = self.clone();
        let cid = *cid;
        blocking(move || s.has_sync(&cid)).await
    }

    async fn has_many(&self, cids: &[Cid]) -> Result<Vec<bool>> {
        let s = self.clone();
        let cids = cids.to_vec();
        blocking(move || {
            s.inner.db.read(|c| {
                cids.iter()
                    .map(|cid| {
                        if identity_data(cid).is_some() {
                            Ok(true)
                        } else {
                            Ok(blocks::has(c, cid)?)
                        }
                    })
                    .collect::<Result<Vec<bool>>>()
            })
        })
        .await
    }

    async fn read(&self, cid: &Cid, range: Option<Range<u64>>) -> Result<(u64, ByteStream)> {
        let s = self.clone();
        let c = *cid;
        // A kept file only once it is known good (else block by block, each checked).
        let whole = blocking(move || s.trusted_file(&c)).await?;
        let Some(trusted) = whole else {
            return unixfs::read(self, cid, range).await;
        };
        let size = trusted.size;
        let want = unixfs::clamp_range(cid, size, range)?;
        let end = want.end;
        let trusted = Arc::new(trusted);
        let pieces = (want.start..want.end)
            .step_by(READ_PIECE as usize)
            .map(move |off| (off, READ_PIECE.min(want.end - off)));
        let stream = futures::stream::iter(pieces).then(move |(off, len)| {
            let t = trusted.clone();
            async move {
                blocking(move || {
                    let mut buf = vec![0u8; len as usize];
                    t.file
                        .read_exact_at(&mut buf, off)
                        .map_err(|e| Error::io(&t.path, e))?;
                    // Changed while being read: the last piece is never released.
                    if off + len == end && !t.unchanged() {
                        return Err(Error::io(
                            &t.path,
                            std::io::Error::other("changed on disk while being read"),
                        ));
                    }
                    Ok(Bytes::from(buf))
                })
                .await
            }
        });
        Ok((size, Box::pin(stream)))
    }

    async fn pin(
        &self,
        cid: &Cid,
        reason: &PinReason,
        expires_at: Option<SystemTime>,
    ) -> Result<()> {
        let s = self.clone();
        let (cid, reason) = (*cid, reason.clone());
        blocking(move || s.pin_sync(&cid, &reason, expires_at)).await
    }

    async fn pin_all(
        &self,
        cids: &[Cid],
        reason: &PinReason,
        expires_at: Option<SystemTime>,
    ) -> Result<()> {
        let s = self.clone();
        let (cids, reason) = (cids.to_vec(), reason.clone());
        blocking(move || s.pin_all_sync(&cids, &reason, expires_at)).await
    }

    async fn unpin(&self, cid: &Cid, reason: &PinReason) -> Result<bool> {
        let s = self.clone();
        let (cid, reason) = (*cid, reason.clone());
        blocking(move || s.unpin_sync(&cid, &reason)).await
    }

    async fn unpin_all(&self, reason: &PinReason) -> Result<u64> {
        let s = self.clone();
        let reason = reason.clone();
        blocking(move || s.unpin_all_sync(&reason)).await
    }

    async fn pins(&self) -> Result<Vec<Pin>> {
        let s = self.clone();
        blocking(move || s.pins_sync()).await
    }

    async fn gc(&self, opts: GcOptions) -> Result<GcReport> {
        let s = self.clone();
        blocking(move || s.gc_sync(opts)).await
    }

    async fn local_file(&self, sha256: &Sha256) -> Result<Option<PathBuf>> {
        let path = self.file_path(sha256);
        let kept = tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file());
        Ok(kept.then_some(path))
    }

    async fn lost_files(&self) -> Result<Vec<(Sha256, u64)>> {
        let s = self.clone();
        blocking(move || {
            for row in s.changed_since_check()? {
                s.check_file(row, &mut |_| true)?;
            }
            s.to_repair()
        })
        .await
    }
}
