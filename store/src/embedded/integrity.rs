//! Integrity on read: no byte leaves the embedded store unless it matches its hash.
//!
//! - **Blocks** are checked against their CID every time they are read
//!   ([`EmbeddedStore::get_block_sync`]): the trustless routes, CAR export and every block a
//!   follower or volunteer fetches go through that.
//! - **Whole files** are served straight from their kept file (memory-mapped, or one day by
//!   `sendfile`), which leaves no room for hashing on the way out at the speed we serve: on
//!   2 cores SHA-256 costs more CPU than the copy to the socket. So a file is served
//!   without hashing only while it is provably unchanged since its bytes last hashed to its
//!   name: the check records the file's *stamp* (device, inode, size, mtime and ctime, all
//!   from one `fstat`), and a request whose `fstat` shows another stamp (the file was
//!   written, replaced, touched, restored from a backup) hashes it first
//!   ([`EmbeddedStore::trusted_file`]). What a stamp cannot see (bits rotting on the disk
//!   under an unchanged inode) is the scrub's job: it re-hashes every file, oldest check
//!   first, at a bounded rate ([`EmbeddedStore::scrub_next`]), and block reads catch it on
//!   the trustless routes. A download also re-checks size and times when it ends and is cut
//!   before its last byte if the file changed while it was being sent.
//! - **A bad file is quarantined**: moved to `quarantine/`, its rows forgotten (the store
//!   no longer holds it, so a follower fetches it again on demand and a publisher's repair
//!   re-downloads it), and the finding recorded in `corruptions`, where it counts as
//!   repaired once the store holds the file again.
//! - **Importing a file the store already has** puts the freshly verified copy in place
//!   unless the kept one is provably unchanged since it last verified: `add`, `import` and
//!   `mirror` replace a bad copy instead of trusting it.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cid::Cid;
use cidmirror_schema::blocks::Location;
use cidmirror_schema::corruptions::{self, Counts, Found, Kind};
use cidmirror_schema::files::FileRow;
use cidmirror_schema::{Sha256, UnixTime, blocks, files, roots};

use super::EmbeddedStore;
use crate::{Error, Result};

/// Bytes hashed per read while checking a file.
const CHECK_PIECE: usize = 1 << 20;

/// A file's on-disk identity: it changes whenever the file's bytes are written (mtime,
/// size), its inode is replaced (dev, ino) or its metadata is touched (ctime, which no
/// user-space call can set back).
pub(crate) fn stamp_of(m: &Metadata) -> String {
    format!(
        "{}:{}:{}:{}.{:09}:{}.{:09}",
        m.dev(),
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    )
}

/// What must not change while a checked file is being sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Written {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Written {
    fn of(m: &Metadata) -> Self {
        Written {
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// A kept file whose bytes hashed to its name since it last changed on disk, opened.
#[derive(Debug)]
pub struct TrustedFile {
    /// The open file (read from this, not from the path: the path may be replaced).
    pub file: File,
    /// Where it is kept.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    written: Written,
}

impl TrustedFile {
    /// Whether the open file is still what was checked: same size and times. A download
    /// asks before it releases its last byte.
    pub fn unchanged(&self) -> bool {
        self.file
            .metadata()
            .is_ok_and(|m| Written::of(&m) == self.written)
    }
}

/// What [`EmbeddedStore::scrub_next`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scrubbed {
    /// Nothing was due.
    Idle,
    /// The file hashed to its name.
    Good {
        /// The file.
        sha256: Sha256,
        /// Its size.
        size: u64,
    },
    /// The file did not, and was quarantined.
    Corrupt {
        /// The file.
        sha256: Sha256,
        /// Its size.
        size: u64,
        /// What was wrong.
        detail: String,
    },
    /// The check was stopped before the end (the throttle said so).
    Stopped,
}

/// Corruption found and repaired, for `status` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IntegrityStats {
    /// Corrupt files and blocks found, ever.
    pub found: u64,
    /// Of those, held again (good).
    pub repaired: u64,
    /// Found and not repaired yet (quarantined or dropped).
    pub quarantined: u64,
    /// Files whose last check is older than the scrub period (or that were never checked).
    pub unchecked_files: u64,
    /// Their bytes.
    pub unchecked_bytes: u64,
}

impl From<Counts> for IntegrityStats {
    fn from(c: Counts) -> Self {
        IntegrityStats {
            found: c.found,
            repaired: c.repaired,
            quarantined: c.found.saturating_sub(c.repaired),
            ..Default::default()
        }
    }
}

/// One checker per file at a time: concurrent requests for a file that needs hashing wait
/// for the first one's answer instead of hashing it again.
#[derive(Default)]
pub(crate) struct CheckGates(Mutex<HashMap<Sha256, Arc<Mutex<()>>>>);

impl CheckGates {
    fn gate(&self, sha: Sha256) -> Arc<Mutex<()>> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Forget gates nobody holds (bounded by the checks running at once).
        m.retain(|_, g| Arc::strong_count(g) > 1);
        m.entry(sha).or_default().clone()
    }
}

/// What a check does with a file that fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnBad {
    /// Move it aside and forget it (it is no longer held).
    Quarantine,
    /// Only say so (`verify` without `--repair`).
    Report,
}

/// Outcome of hashing a file.
enum Hashed {
    Good,
    Bad(String),
    Stopped,
}

/// Hashes `file` (whose metadata is `meta`) and compares it with the row. `throttle` is
/// told the bytes of each piece and says whether to go on.
fn hash_file(
    file: &File,
    path: &Path,
    meta: &Metadata,
    row: &FileRow,
    throttle: &mut dyn FnMut(u64) -> bool,
) -> Result<Hashed> {
    use sha2::Digest;
    if meta.len() != row.size {
        return Ok(Hashed::Bad(format!(
            "{} bytes on disk, the index says {}",
            meta.len(),
            row.size
        )));
    }
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; CHECK_PIECE];
    let mut off = 0u64;
    while off < row.size {
        let n = CHECK_PIECE.min(usize::try_from(row.size - off).unwrap_or(CHECK_PIECE));
        match file.read_exact_at(&mut buf[..n], off) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Ok(Hashed::Bad(format!("shorter than its {} bytes", row.size)));
            }
            Err(e) => return Err(Error::io(path, e)),
        }
        h.update(&buf[..n]);
        off += n as u64;
        if !throttle(n as u64) {
            return Ok(Hashed::Stopped);
        }
    }
    let got = Sha256(h.finalize().into());
    if got == row.sha256 {
        Ok(Hashed::Good)
    } else {
        Ok(Hashed::Bad(format!("content hashes to {got}")))
    }
}

impl EmbeddedStore {
    /// The kept file whose DAG is `cid`, opened, if the store has it and its bytes are what
    /// its name says: checked now unless provably unchanged since its last check. A file
    /// that fails is quarantined and `None` returned, as for a file not held: the caller
    /// then serves the DAG block by block (each block checked) or fetches it elsewhere.
    pub fn trusted_file(&self, cid: &Cid) -> Result<Option<TrustedFile>> {
        let Some(row) = self.inner.db.read(|c| roots::get(c, cid))? else {
            return Ok(None);
        };
        self.trusted(row, "serve")
    }

    fn trusted(&self, row: FileRow, by: &str) -> Result<Option<TrustedFile>> {
        let path = self.file_path(&row.sha256);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.quarantine(&row, None, by, "the kept file is missing")?;
                return Ok(None);
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let meta = file.metadata().map_err(|e| Error::io(&path, e))?;
        let stamp = stamp_of(&meta);
        let trusted = |file: File| TrustedFile {
            file,
            path: path.clone(),
            size: row.size,
            written: Written::of(&meta),
        };
        if row.stamp.as_deref() == Some(stamp.as_str()) && meta.len() == row.size {
            return Ok(Some(trusted(file)));
        }
        // Changed (or never checked) since its last check: hash it, once for all waiting.
        let gate = self.inner.checks.gate(row.sha256);
        let _held = gate.lock().unwrap_or_else(|e| e.into_inner());
        let Some(now_row) = self.inner.db.read(|c| files::get(c, &row.sha256))? else {
            return Ok(None); // quarantined by the checker before us
        };
        if now_row.stamp.as_deref() == Some(stamp.as_str()) {
            return Ok(Some(trusted(file)));
        }
        match hash_file(&file, &path, &meta, &now_row, &mut |_| true)? {
            Hashed::Good => {
                self.inner
                    .db
                    .write(|tx| files::set_checked(tx, now_row.id, &stamp, UnixTime::now()))?;
                Ok(Some(trusted(file)))
            }
            Hashed::Bad(detail) => {
                self.quarantine(&now_row, Some(&stamp), by, &detail)?;
                Ok(None)
            }
            Hashed::Stopped => Ok(None),
        }
    }

    /// Checks the file due next for the scrub (never checked, or checked longest ago and
    /// before `due_before`): hashes it, feeding `throttle` each piece's length (it sleeps to
    /// keep the rate and says whether to go on), then records the check or quarantines it.
    pub fn scrub_next(
        &self,
        due_before: UnixTime,
        throttle: &mut dyn FnMut(u64) -> bool,
    ) -> Result<Scrubbed> {
        let Some(row) = self
            .inner
            .db
            .read(|c| files::next_to_check(c, due_before))?
        else {
            return Ok(Scrubbed::Idle);
        };
        self.check_row(row, "scrub", OnBad::Quarantine, throttle)
    }

    /// Hashes one kept file now, whatever its stamp says; records a good check, and
    /// quarantines a bad file or only reports it.
    pub(crate) fn check_row(
        &self,
        row: FileRow,
        by: &str,
        on_bad: OnBad,
        throttle: &mut dyn FnMut(u64) -> bool,
    ) -> Result<Scrubbed> {
        let (sha256, size) = (row.sha256, row.size);
        let path = self.file_path(&sha256);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let detail = "the kept file is missing".to_string();
                if on_bad == OnBad::Quarantine {
                    self.quarantine(&row, None, by, &detail)?;
                }
                return Ok(Scrubbed::Corrupt {
                    sha256,
                    size,
                    detail,
                });
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let meta = file.metadata().map_err(|e| Error::io(&path, e))?;
        let stamp = stamp_of(&meta);
        let gate = self.inner.checks.gate(sha256);
        let _held = gate.lock().unwrap_or_else(|e| e.into_inner());
        match hash_file(&file, &path, &meta, &row, throttle)? {
            Hashed::Good => {
                self.inner
                    .db
                    .write(|tx| files::set_checked(tx, row.id, &stamp, UnixTime::now()))?;
                Ok(Scrubbed::Good { sha256, size })
            }
            Hashed::Bad(detail) => {
                if on_bad == OnBad::Quarantine {
                    self.quarantine(&row, Some(&stamp), by, &detail)?;
                }
                Ok(Scrubbed::Corrupt {
                    sha256,
                    size,
                    detail,
                })
            }
            Hashed::Stopped => Ok(Scrubbed::Stopped),
        }
    }

    /// Whether the kept file with this SHA-256 is provably unchanged since its bytes last
    /// hashed to its name (a cheap `stat`, no hashing).
    pub(crate) fn known_good(&self, row: &FileRow) -> bool {
        fs::metadata(self.file_path(&row.sha256)).is_ok_and(|m| {
            m.len() == row.size && row.stamp.as_deref() == Some(stamp_of(&m).as_str())
        })
    }

    /// Moves a bad kept file aside and forgets it and its blocks, unless the file on disk is
    /// no longer the one that was found bad (`hashed`: its stamp then; a concurrent import
    /// may have put a good copy in place meanwhile).
    fn quarantine(
        &self,
        row: &FileRow,
        hashed: Option<&str>,
        by: &str,
        detail: &str,
    ) -> Result<()> {
        let path = self.file_path(&row.sha256);
        let hex = row.sha256.to_hex();
        let qdir = self.inner.root.join("quarantine");
        let _lock = self.writing()?;
        let moved = self
            .inner
            .db
            .write(|tx| -> Result<Option<Option<PathBuf>>> {
                if files::get(tx, &row.sha256)?.is_none_or(|r| r.id != row.id) {
                    return Ok(None); // forgotten or replaced meanwhile
                }
                let on_disk = fs::metadata(&path).ok();
                if let (Some(h), Some(m)) = (hashed, &on_disk)
                    && stamp_of(m) != h
                {
                    return Ok(None); // a new copy was put in place meanwhile
                }
                let now = UnixTime::now();
                let kept = match on_disk {
                    Some(_) => {
                        fs::create_dir_all(&qdir).map_err(|e| Error::io(&qdir, e))?;
                        let to = qdir.join(format!("{hex}.{}", now.0));
                        fs::rename(&path, &to).map_err(|e| Error::io(&to, e))?;
                        Some(to)
                    }
                    None => None,
                };
                files::forget(tx, row.id)?;
                let q = kept.as_ref().map(|p| p.display().to_string());
                corruptions::record(
                    tx,
                    &Found {
                        kind: Kind::File,
                        key: row.sha256.as_bytes(),
                        size: row.size,
                        found_by: by,
                        detail,
                        quarantine: q.as_deref(),
                    },
                    now,
                )?;
                Ok(Some(kept))
            })?;
        if let Some(kept) = moved {
            self.inner.corruption_found.notify_one();
            tracing::error!(
                "corrupt file {hex} ({} bytes, found by {by}): {detail}; {}",
                row.size,
                match kept {
                    Some(p) => format!("moved to {}", p.display()),
                    None => "forgotten".to_string(),
                }
            );
        }
        Ok(())
    }

    /// A block read did not match its CID: a block held inline is dropped; a block in a kept
    /// file means the file is bad (checked whole, then quarantined). Afterwards the store
    /// no longer holds the block.
    pub(crate) fn block_corrupt(&self, cid: &Cid, loc: &Location, detail: &str) -> Result<()> {
        match loc {
            Location::Inline(d) => {
                let _lock = self.writing()?;
                let key = cid.to_bytes();
                self.inner.db.write(|tx| -> Result<()> {
                    blocks::delete(tx, cid)?;
                    corruptions::record(
                        tx,
                        &Found {
                            kind: Kind::Block,
                            key: &key,
                            size: d.len() as u64,
                            found_by: "read",
                            detail,
                            quarantine: None,
                        },
                        UnixTime::now(),
                    )?;
                    Ok(())
                })?;
                tracing::error!("corrupt block {cid} (held inline): {detail}; dropped");
            }
            Location::Raw(r) | Location::PbFileLeaf(r) => {
                let Some(row) = self.inner.db.read(|c| files::get(c, &r.sha256))? else {
                    return Ok(());
                };
                let checked = self.check_row(row, "read", OnBad::Quarantine, &mut |_| true)?;
                if let Scrubbed::Good { .. } = checked {
                    // The file is good, so the row describing this block is not.
                    let _lock = self.writing()?;
                    self.inner.db.write(|tx| blocks::delete(tx, cid))?;
                    tracing::error!(
                        "block {cid}: {detail}, although its file {} is good; row dropped",
                        r.sha256
                    );
                }
            }
        }
        Ok(())
    }

    /// Corruption found and repaired, and what the scrub has still to look at
    /// (`scrub_before`: checks older than this count as due).
    pub fn integrity(&self, scrub_before: UnixTime) -> Result<IntegrityStats> {
        let counts = self.inner.db.read(corruptions::counts)?;
        let (n, bytes) = self.inner.db.read(|c| files::unchecked(c, scrub_before))?;
        Ok(IntegrityStats {
            unchecked_files: n,
            unchecked_bytes: bytes,
            ..IntegrityStats::from(counts)
        })
    }

    /// Kept files whose on-disk identity changed since their last check (one `stat` each, no
    /// hashing): the scrub hashes these first, whenever they are due.
    pub fn changed_since_check(&self) -> Result<Vec<FileRow>> {
        let all = self.inner.db.read(files::all)?;
        Ok(all.into_iter().filter(|r| !self.known_good(r)).collect())
    }

    /// Hashes the kept file with this row now (see [`EmbeddedStore::changed_since_check`]),
    /// quarantining it if bad.
    pub fn check_file(
        &self,
        row: FileRow,
        throttle: &mut dyn FnMut(u64) -> bool,
    ) -> Result<Scrubbed> {
        self.check_row(row, "scrub", OnBad::Quarantine, throttle)
    }

    /// Resolves once a corrupt file has been quarantined since the last call (by any check
    /// in this process).
    pub async fn corruption_found(&self) {
        self.inner.corruption_found.notified().await;
    }

    /// Corrupt files not held again yet (SHA-256, size): what a repair should fetch.
    pub fn to_repair(&self) -> Result<Vec<(Sha256, u64)>> {
        Ok(self.inner.db.read(corruptions::open_files)?)
    }
}
