//! Typed queries, one module per table. Reads take any `&Connection`; writes take a
//! [`WriteTx`] so they always run inside a transaction.

use cid::Cid;
use rusqlite::{Connection, OptionalExtension, params};

use crate::{Error, FileId, Sha256, UnixTime, WriteTx};

fn cid_from_blob(blob: Vec<u8>) -> Result<Cid, Error> {
    Cid::try_from(blob.as_slice()).map_err(|e| Error::Invalid {
        what: "cid in database",
        detail: e.to_string(),
    })
}

fn to_i64(v: u64, what: &'static str) -> Result<i64, Error> {
    i64::try_from(v).map_err(|_| Error::Invalid {
        what,
        detail: format!("{v} does not fit in SQLite's INTEGER"),
    })
}

fn to_u64(v: i64, what: &'static str) -> Result<u64, Error> {
    u64::try_from(v).map_err(|_| Error::Invalid {
        what,
        detail: format!("negative value {v}"),
    })
}

/// Whole files kept by the embedded store.
pub mod files {
    use super::*;

    /// A kept file.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct FileRow {
        /// Row id.
        pub id: FileId,
        /// SHA-256 of the content; also its name on disk.
        pub sha256: Sha256,
        /// Length in bytes.
        pub size: u64,
        /// When it was added or last re-added (garbage collection spares young files).
        pub added_at: UnixTime,
        /// When its bytes last hashed to its name (on import, by a serve-time check or the
        /// scrub); `None` if never since it was recorded.
        pub checked_at: Option<UnixTime>,
        /// Its on-disk identity at that check (see [`set_checked`]).
        pub stamp: Option<String>,
    }

    /// The columns [`row`] reads, as `f.<column>`.
    pub(crate) const COLUMNS: &str = "f.id, f.sha256, f.size, f.added_at, f.checked_at, f.stamp";

    type Raw = (i64, Sha256, i64, UnixTime, Option<UnixTime>, Option<String>);

    pub(crate) fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Raw> {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
        ))
    }

    pub(crate) fn build(
        (id, sha256, size, added_at, checked_at, stamp): Raw,
    ) -> Result<FileRow, Error> {
        Ok(FileRow {
            id: FileId(id),
            sha256,
            size: to_u64(size, "file size")?,
            added_at,
            checked_at,
            stamp,
        })
    }

    /// The file with this SHA-256, if kept.
    pub fn get(conn: &Connection, sha256: &Sha256) -> Result<Option<FileRow>, Error> {
        conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM files f WHERE f.sha256 = ?1"
        ))?
        .query_row([sha256], row)
        .optional()?
        .map(build)
        .transpose()
    }

    /// Records that the file's bytes hashed to its name at `at`, when its on-disk identity
    /// was `stamp`; false if the file is no longer recorded.
    pub fn set_checked(
        tx: &WriteTx<'_>,
        id: FileId,
        stamp: &str,
        at: UnixTime,
    ) -> Result<bool, Error> {
        let n = tx
            .prepare_cached("UPDATE files SET checked_at = ?2, stamp = ?3 WHERE id = ?1")?
            .execute(params![id, at, stamp])?;
        Ok(n > 0)
    }

    /// The file whose last check is the oldest (never-checked files first), if that check
    /// is older than `before`: what the scrub hashes next.
    pub fn next_to_check(conn: &Connection, before: UnixTime) -> Result<Option<FileRow>, Error> {
        conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM files f WHERE f.checked_at IS NULL OR f.checked_at < ?1
             ORDER BY f.checked_at IS NOT NULL, f.checked_at, f.id LIMIT 1"
        ))?
        .query_row([before], row)
        .optional()?
        .map(build)
        .transpose()
    }

    /// Files never checked or last checked before `before`, and their total size.
    pub fn unchecked(conn: &Connection, before: UnixTime) -> Result<(u64, u64), Error> {
        let (n, bytes): (i64, i64) = conn
            .prepare_cached(
                "SELECT count(*), coalesce(sum(size), 0) FROM files
                 WHERE checked_at IS NULL OR checked_at < ?1",
            )?
            .query_row([before], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok((to_u64(n, "file count")?, to_u64(bytes, "file bytes")?))
    }

    /// Forgets a file and every block that lives in it and every root that names it (its
    /// bytes were found corrupt and moved aside): the store no longer holds them. Returns
    /// the number of block rows removed.
    pub fn forget(tx: &WriteTx<'_>, id: FileId) -> Result<u64, Error> {
        let blocks = tx
            .prepare_cached("DELETE FROM blocks WHERE file_id = ?1")?
            .execute([id])?;
        tx.prepare_cached("DELETE FROM file_roots WHERE file_id = ?1")?
            .execute([id])?;
        tx.prepare_cached("DELETE FROM files WHERE id = ?1")?
            .execute([id])?;
        Ok(blocks as u64)
    }

    /// Records a file (or refreshes `added_at` of one already known) and returns its id.
    pub fn upsert(
        tx: &WriteTx<'_>,
        sha256: &Sha256,
        size: u64,
        now: UnixTime,
    ) -> Result<FileId, Error> {
        let size = to_i64(size, "file size")?;
        let id: i64 = tx
            .prepare_cached(
                "INSERT INTO files (sha256, size, added_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (sha256) DO UPDATE SET added_at = max(added_at, excluded.added_at)
             RETURNING id",
            )?
            .query_row(params![sha256, size, now], |r| r.get(0))?;
        Ok(FileId(id))
    }

    /// Marks a known file as just used, so a concurrent garbage collection keeps it.
    /// Returns false if the file is not (or no longer) recorded.
    pub fn touch(tx: &WriteTx<'_>, sha256: &Sha256, now: UnixTime) -> Result<bool, Error> {
        let n = tx
            .prepare_cached("UPDATE files SET added_at = max(added_at, ?2) WHERE sha256 = ?1")?
            .execute(params![sha256, now])?;
        Ok(n > 0)
    }

    /// Number of kept files and their bytes.
    pub fn totals(conn: &Connection) -> Result<(u64, u64), Error> {
        let (n, bytes): (i64, i64) = conn
            .prepare_cached("SELECT count(*), coalesce(sum(size), 0) FROM files")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok((to_u64(n, "file count")?, to_u64(bytes, "file bytes")?))
    }

    /// Every kept file.
    pub fn all(conn: &Connection) -> Result<Vec<FileRow>, Error> {
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM files f ORDER BY f.id"))?;
        let rows = stmt.query_map([], row)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(build(r?)?);
        }
        Ok(out)
    }

    /// Files that no block and no root refers to any more, added before `before`.
    pub fn unreferenced(conn: &Connection, before: UnixTime) -> Result<Vec<FileRow>, Error> {
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM files f
             WHERE f.added_at < ?1
               AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.file_id = f.id)
               AND NOT EXISTS (SELECT 1 FROM file_roots r WHERE r.file_id = f.id)"
        ))?;
        let rows = stmt.query_map([before], row)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(build(r?)?);
        }
        Ok(out)
    }

    /// Deletes a file row if it is still unreferenced and older than `before`; true if it was.
    pub fn delete_if_unreferenced(
        tx: &WriteTx<'_>,
        id: FileId,
        before: UnixTime,
    ) -> Result<bool, Error> {
        let n = tx
            .prepare_cached(
                "DELETE FROM files WHERE id = ?1 AND added_at < ?2
               AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.file_id = ?1)
               AND NOT EXISTS (SELECT 1 FROM file_roots r WHERE r.file_id = ?1)",
            )?
            .execute(params![id, before])?;
        Ok(n > 0)
    }
}

/// Blocks by CID and where their bytes are.
pub mod blocks {
    use super::*;

    /// Where a block's bytes are.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Location {
        /// The block itself, stored in the row.
        Inline(Vec<u8>),
        /// A raw leaf: exactly bytes `offset..offset+length` of a kept file.
        Raw(Range),
        /// A dag-pb UnixFS file leaf (`{Type=File, Data=range, filesize=length}`) whose data
        /// is bytes `offset..offset+length` of a kept file.
        PbFileLeaf(Range),
    }

    /// A byte range of a kept file.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Range {
        /// The file.
        pub file: FileId,
        /// Its SHA-256 (its name on disk).
        pub sha256: Sha256,
        /// First byte.
        pub offset: u64,
        /// Number of bytes.
        pub length: u64,
    }

    /// One block of the index, without its data (what garbage collection scans).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Entry {
        /// The block's CID.
        pub cid: Cid,
        /// The kept file it lives in, if not inline.
        pub file: Option<FileId>,
        /// When it was written.
        pub added_at: UnixTime,
    }

    const KIND_INLINE: i64 = 0;
    const KIND_RAW: i64 = 1;
    const KIND_PB_FILE_LEAF: i64 = 2;

    /// Records a block; a block already known keeps its first location. Returns true if the
    /// row is new.
    pub fn insert(
        tx: &WriteTx<'_>,
        cid: &Cid,
        location: InsertLocation<'_>,
        now: UnixTime,
    ) -> Result<bool, Error> {
        let key = cid.to_bytes();
        let n = match location {
            InsertLocation::Inline(data) => tx
                .prepare_cached(
                    "INSERT INTO blocks (cid, kind, data, added_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (cid) DO NOTHING",
                )?
                .execute(params![key, KIND_INLINE, data, now])?,
            InsertLocation::Raw {
                file,
                offset,
                length,
            }
            | InsertLocation::PbFileLeaf {
                file,
                offset,
                length,
            } => {
                let kind = if matches!(location, InsertLocation::Raw { .. }) {
                    KIND_RAW
                } else {
                    KIND_PB_FILE_LEAF
                };
                tx.prepare_cached(
                    "INSERT INTO blocks (cid, kind, file_id, offset, length, added_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (cid) DO NOTHING",
                )?
                .execute(params![
                    key,
                    kind,
                    file,
                    to_i64(offset, "block offset")?,
                    to_i64(length, "block length")?,
                    now
                ])?
            }
        };
        if n == 0 {
            // Known already: mark it as just written, so a gc's grace period covers it.
            tx.prepare_cached("UPDATE blocks SET added_at = max(added_at, ?2) WHERE cid = ?1")?
                .execute(params![key, now])?;
        }
        Ok(n > 0)
    }

    /// Where a new block's bytes are, for [`insert`].
    #[derive(Debug, Clone, Copy)]
    pub enum InsertLocation<'a> {
        /// Keep these bytes in the row.
        Inline(&'a [u8]),
        /// A raw leaf over a range of a kept file.
        Raw {
            /// The file.
            file: FileId,
            /// First byte.
            offset: u64,
            /// Number of bytes.
            length: u64,
        },
        /// A dag-pb UnixFS file leaf over a range of a kept file.
        PbFileLeaf {
            /// The file.
            file: FileId,
            /// First byte.
            offset: u64,
            /// Number of bytes.
            length: u64,
        },
    }

    /// Where the block with this CID is, if held.
    pub fn get(conn: &Connection, cid: &Cid) -> Result<Option<Location>, Error> {
        let row = conn
            .prepare_cached(
                "SELECT b.kind, b.data, b.offset, b.length, b.file_id, f.sha256
                 FROM blocks b LEFT JOIN files f ON f.id = b.file_id
                 WHERE b.cid = ?1",
            )?
            .query_row([cid.to_bytes()], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<Vec<u8>>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<Sha256>>(5)?,
                ))
            })
            .optional()?;
        let Some((kind, data, offset, length, file, sha256)) = row else {
            return Ok(None);
        };
        let bad = |detail: &str| Error::Invalid {
            what: "block row",
            detail: format!("{cid}: {detail}"),
        };
        if kind == KIND_INLINE {
            return Ok(Some(Location::Inline(
                data.ok_or_else(|| bad("inline without data"))?,
            )));
        }
        let range = Range {
            file: FileId(file.ok_or_else(|| bad("no file"))?),
            sha256: sha256.ok_or_else(|| bad("file row missing"))?,
            offset: to_u64(offset.ok_or_else(|| bad("no offset"))?, "block offset")?,
            length: to_u64(length.ok_or_else(|| bad("no length"))?, "block length")?,
        };
        match kind {
            KIND_RAW => Ok(Some(Location::Raw(range))),
            KIND_PB_FILE_LEAF => Ok(Some(Location::PbFileLeaf(range))),
            other => Err(bad(&format!("unknown kind {other}"))),
        }
    }

    /// Whether the block is held.
    pub fn has(conn: &Connection, cid: &Cid) -> Result<bool, Error> {
        Ok(conn
            .prepare_cached("SELECT 1 FROM blocks WHERE cid = ?1")?
            .query_row([cid.to_bytes()], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Every block (without data), in CID byte order.
    pub fn all(conn: &Connection) -> Result<Vec<Entry>, Error> {
        let mut stmt = conn.prepare("SELECT cid, file_id, added_at FROM blocks ORDER BY cid")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, UnixTime>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (cid, file, added_at) = r?;
            out.push(Entry {
                cid: cid_from_blob(cid)?,
                file: file.map(FileId),
                added_at,
            });
        }
        Ok(out)
    }

    /// Number of blocks held.
    pub fn count(conn: &Connection) -> Result<u64, Error> {
        let n: i64 = conn.query_row("SELECT count(*) FROM blocks", [], |r| r.get(0))?;
        to_u64(n, "block count")
    }

    /// Deletes a block row whatever its age (it was found corrupt); true if it existed.
    pub fn delete(tx: &WriteTx<'_>, cid: &Cid) -> Result<bool, Error> {
        let n = tx
            .prepare_cached("DELETE FROM blocks WHERE cid = ?1")?
            .execute([cid.to_bytes()])?;
        Ok(n > 0)
    }

    /// Deletes a block row if it was added before `before`; true if it was.
    pub fn delete_if_older(tx: &WriteTx<'_>, cid: &Cid, before: UnixTime) -> Result<bool, Error> {
        let n = tx
            .prepare_cached("DELETE FROM blocks WHERE cid = ?1 AND added_at < ?2")?
            .execute(params![cid.to_bytes(), before])?;
        Ok(n > 0)
    }
}

/// Root CIDs whose DAG is exactly one kept file.
pub mod roots {
    use super::*;

    /// Records that `cid` is the root of the DAG of `file`.
    pub fn insert(tx: &WriteTx<'_>, cid: &Cid, file: FileId) -> Result<(), Error> {
        tx.prepare_cached(
            "INSERT INTO file_roots (cid, file_id) VALUES (?1, ?2) ON CONFLICT (cid) DO NOTHING",
        )?
        .execute(params![cid.to_bytes(), file])?;
        Ok(())
    }

    /// The kept file whose DAG has this root, if any.
    pub fn get(conn: &Connection, cid: &Cid) -> Result<Option<super::files::FileRow>, Error> {
        conn.prepare_cached(&format!(
            "SELECT {} FROM file_roots r
             JOIN files f ON f.id = r.file_id WHERE r.cid = ?1",
            super::files::COLUMNS
        ))?
        .query_row([cid.to_bytes()], super::files::row)
        .optional()?
        .map(super::files::build)
        .transpose()
    }

    /// Every (root, file) pair.
    pub fn all(conn: &Connection) -> Result<Vec<(Cid, FileId)>, Error> {
        let mut stmt = conn.prepare("SELECT cid, file_id FROM file_roots")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for r in rows {
            let (cid, file) = r?;
            out.push((cid_from_blob(cid)?, FileId(file)));
        }
        Ok(out)
    }

    /// Forgets that `cid` is a whole-file root.
    pub fn delete(tx: &WriteTx<'_>, cid: &Cid) -> Result<(), Error> {
        tx.execute("DELETE FROM file_roots WHERE cid = ?1", [cid.to_bytes()])?;
        Ok(())
    }
}

/// Pins: named reasons to keep a DAG.
pub mod pins {
    use super::*;

    /// One pin.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Pin {
        /// Root of the kept DAG.
        pub cid: Cid,
        /// Why it is kept (e.g. `snapshot:42`, `add`, `grace`).
        pub reason: String,
        /// When the pin was made.
        pub created_at: UnixTime,
        /// When it stops counting, if ever.
        pub expires_at: Option<UnixTime>,
    }

    /// Adds (or renews) a pin.
    pub fn add(
        tx: &WriteTx<'_>,
        cid: &Cid,
        reason: &str,
        now: UnixTime,
        expires_at: Option<UnixTime>,
    ) -> Result<(), Error> {
        tx.prepare_cached(
            "INSERT INTO pins (cid, reason, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (cid, reason) DO UPDATE SET expires_at = excluded.expires_at",
        )?
        .execute(params![cid.to_bytes(), reason, now, expires_at])?;
        Ok(())
    }

    /// Removes a pin; true if it existed.
    pub fn remove(tx: &WriteTx<'_>, cid: &Cid, reason: &str) -> Result<bool, Error> {
        let n = tx
            .prepare_cached("DELETE FROM pins WHERE cid = ?1 AND reason = ?2")?
            .execute(params![cid.to_bytes(), reason])?;
        Ok(n > 0)
    }

    /// Removes every pin with this reason; returns how many.
    pub fn remove_reason(tx: &WriteTx<'_>, reason: &str) -> Result<usize, Error> {
        Ok(tx.execute("DELETE FROM pins WHERE reason = ?1", [reason])?)
    }

    /// Every reason some pin has, expired or not, in order (one row each, however many
    /// pins share it: a follower drops old snapshots' pins by reason).
    pub fn reasons(conn: &Connection) -> Result<Vec<String>, Error> {
        let mut stmt = conn.prepare_cached("SELECT DISTINCT reason FROM pins ORDER BY reason")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Number of pins, and of those with `reason`, expired or not.
    pub fn count(conn: &Connection, reason: &str) -> Result<(u64, u64), Error> {
        let (all, with): (i64, i64) = conn
            .prepare_cached("SELECT count(*), count(*) FILTER (WHERE reason = ?1) FROM pins")?
            .query_row([reason], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok((to_u64(all, "pin count")?, to_u64(with, "pin count")?))
    }

    /// Every pin, expired or not, ordered by reason then CID.
    pub fn all(conn: &Connection) -> Result<Vec<Pin>, Error> {
        let mut stmt = conn
            .prepare("SELECT cid, reason, created_at, expires_at FROM pins ORDER BY reason, cid")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, UnixTime>(2)?,
                r.get::<_, Option<UnixTime>>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (cid, reason, created_at, expires_at) = r?;
            out.push(Pin {
                cid: cid_from_blob(cid)?,
                reason,
                created_at,
                expires_at,
            });
        }
        Ok(out)
    }

    /// Roots of the pins still in force at `now`.
    pub fn live_roots(conn: &Connection, now: UnixTime) -> Result<Vec<Cid>, Error> {
        let mut stmt = conn
            .prepare("SELECT DISTINCT cid FROM pins WHERE expires_at IS NULL OR expires_at > ?1")?;
        let rows = stmt.query_map([now], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(cid_from_blob(r?)?);
        }
        Ok(out)
    }

    /// The pins still in force at `now`, as (root, reason), one row per pin: garbage
    /// collection needs the reason, which says how deep a pin keeps (see the store's
    /// direct pins).
    pub fn live(conn: &Connection, now: UnixTime) -> Result<Vec<(Cid, String)>, Error> {
        let mut stmt = conn
            .prepare("SELECT cid, reason FROM pins WHERE expires_at IS NULL OR expires_at > ?1")?;
        let rows = stmt.query_map([now], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (cid, reason) = r?;
            out.push((cid_from_blob(cid)?, reason));
        }
        Ok(out)
    }

    /// The reasons `cid` is pinned for, expired or not.
    pub fn reasons_of(conn: &Connection, cid: &Cid) -> Result<Vec<String>, Error> {
        let mut stmt = conn.prepare_cached("SELECT reason FROM pins WHERE cid = ?1")?;
        let rows = stmt.query_map([cid.to_bytes()], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The roots pinned for `reason`.
    pub fn roots_of(conn: &Connection, reason: &str) -> Result<Vec<Cid>, Error> {
        let mut stmt = conn.prepare_cached("SELECT cid FROM pins WHERE reason = ?1")?;
        let rows = stmt.query_map([reason], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(cid_from_blob(r?)?);
        }
        Ok(out)
    }

    /// The pins that expired at or before `now`, as (root, reason).
    pub fn expired(conn: &Connection, now: UnixTime) -> Result<Vec<(Cid, String)>, Error> {
        let mut stmt = conn.prepare(
            "SELECT cid, reason FROM pins WHERE expires_at IS NOT NULL AND expires_at <= ?1",
        )?;
        let rows = stmt.query_map([now], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (cid, reason) = r?;
            out.push((cid_from_blob(cid)?, reason));
        }
        Ok(out)
    }

    /// Deletes pins that expired before `now`; returns how many.
    pub fn delete_expired(tx: &WriteTx<'_>, now: UnixTime) -> Result<usize, Error> {
        Ok(tx
            .prepare_cached("DELETE FROM pins WHERE expires_at IS NOT NULL AND expires_at <= ?1")?
            .execute([now])?)
    }
}

/// Roots held on a node by a cover's pin instead of their own (the pin ledger of the kubo
/// and cluster stores).
pub mod covers {
    use super::*;

    /// Keeps a cover's block.
    pub fn put_block(tx: &WriteTx<'_>, cover: &Cid, block: &[u8]) -> Result<(), Error> {
        tx.prepare_cached(
            "INSERT INTO cover_blocks (cover, block) VALUES (?1, ?2)
             ON CONFLICT (cover) DO NOTHING",
        )?
        .execute(params![cover.to_bytes(), block])?;
        Ok(())
    }

    /// A cover's block, if kept.
    pub fn block(conn: &Connection, cover: &Cid) -> Result<Option<Vec<u8>>, Error> {
        Ok(conn
            .prepare_cached("SELECT block FROM cover_blocks WHERE cover = ?1")?
            .query_row([cover.to_bytes()], |r| r.get(0))
            .optional()?)
    }

    /// Records that `members` are held by `cover` (replacing what held them before).
    pub fn add(tx: &WriteTx<'_>, cover: &Cid, members: &[Cid]) -> Result<(), Error> {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO covers (member, cover) VALUES (?1, ?2)
             ON CONFLICT (member) DO UPDATE SET cover = excluded.cover",
        )?;
        let c = cover.to_bytes();
        for m in members {
            stmt.execute(params![m.to_bytes(), c])?;
        }
        Ok(())
    }

    /// The cover holding `member`, if any.
    pub fn cover_of(conn: &Connection, member: &Cid) -> Result<Option<Cid>, Error> {
        let cover: Option<Vec<u8>> = conn
            .prepare_cached("SELECT cover FROM covers WHERE member = ?1")?
            .query_row([member.to_bytes()], |r| r.get(0))
            .optional()?;
        cover.map(cid_from_blob).transpose()
    }

    /// Every (member, cover).
    pub fn all(conn: &Connection) -> Result<Vec<(Cid, Cid)>, Error> {
        let mut stmt = conn.prepare("SELECT member, cover FROM covers")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (m, c) = r?;
            out.push((cid_from_blob(m)?, cid_from_blob(c)?));
        }
        Ok(out)
    }

    /// The members of `cover`.
    pub fn members(conn: &Connection, cover: &Cid) -> Result<Vec<Cid>, Error> {
        let mut stmt = conn.prepare_cached("SELECT member FROM covers WHERE cover = ?1")?;
        let rows = stmt.query_map([cover.to_bytes()], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(cid_from_blob(r?)?);
        }
        Ok(out)
    }

    /// Forgets every member of `cover`, and its block.
    pub fn drop_cover(tx: &WriteTx<'_>, cover: &Cid) -> Result<usize, Error> {
        tx.prepare_cached("DELETE FROM cover_blocks WHERE cover = ?1")?
            .execute([cover.to_bytes()])?;
        Ok(tx
            .prepare_cached("DELETE FROM covers WHERE cover = ?1")?
            .execute([cover.to_bytes()])?)
    }

    /// Forgets that `member` is covered (it has a pin of its own now).
    pub fn remove_member(tx: &WriteTx<'_>, member: &Cid) -> Result<(), Error> {
        tx.prepare_cached("DELETE FROM covers WHERE member = ?1")?
            .execute([member.to_bytes()])?;
        Ok(())
    }
}

/// Corrupt files and blocks the embedded store found (and moved aside or dropped).
pub mod corruptions {
    use super::*;

    /// What was corrupt.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Kind {
        /// A kept file (key: its SHA-256).
        File,
        /// A block held inline (key: its binary CID).
        Block,
    }

    impl Kind {
        fn as_str(self) -> &'static str {
            match self {
                Kind::File => "file",
                Kind::Block => "block",
            }
        }
    }

    /// One corruption found.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Found<'a> {
        /// A file or a block.
        pub kind: Kind,
        /// The file's SHA-256 or the block's binary CID.
        pub key: &'a [u8],
        /// Its size in bytes.
        pub size: u64,
        /// Which check found it (`serve`, `scrub`, `verify`, `read`, `import`).
        pub found_by: &'a str,
        /// What was wrong, for people.
        pub detail: &'a str,
        /// Where the bad bytes were moved, if kept.
        pub quarantine: Option<&'a str>,
    }

    /// Records a corruption.
    pub fn record(tx: &WriteTx<'_>, f: &Found<'_>, now: UnixTime) -> Result<(), Error> {
        tx.prepare_cached(
            "INSERT INTO corruptions (kind, key, size, found_at, found_by, detail, quarantine)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            f.kind.as_str(),
            f.key,
            to_i64(f.size, "corrupt size")?,
            now,
            f.found_by,
            f.detail,
            f.quarantine
        ])?;
        Ok(())
    }

    /// Counts of corruptions found and of those the store holds again (repaired).
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Counts {
        /// Corrupt files and blocks found, ever.
        pub found: u64,
        /// Of those, the ones the store holds again, good.
        pub repaired: u64,
        /// Bytes of the ones not repaired.
        pub open_bytes: u64,
        /// When the last one was found.
        pub last_found_at: Option<UnixTime>,
    }

    /// Derived, not kept: a corruption is repaired once the store holds its file or block
    /// again (a kept file is only ever recorded after its bytes hashed to its name).
    pub fn counts(conn: &Connection) -> Result<Counts, Error> {
        let (found, repaired, open_bytes, last): (i64, i64, i64, Option<UnixTime>) = conn
            .prepare_cached(
                "WITH c AS (
                   SELECT size, found_at, CASE kind
                     WHEN 'file' THEN EXISTS (SELECT 1 FROM files f WHERE f.sha256 = key)
                     ELSE EXISTS (SELECT 1 FROM blocks b WHERE b.cid = key) END AS back
                   FROM corruptions)
                 SELECT count(*), coalesce(sum(back), 0),
                        coalesce(sum(CASE WHEN back THEN 0 ELSE size END), 0), max(found_at)
                 FROM c",
            )?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        Ok(Counts {
            found: to_u64(found, "corruption count")?,
            repaired: to_u64(repaired, "corruption count")?,
            open_bytes: to_u64(open_bytes, "corruption bytes")?,
            last_found_at: last,
        })
    }

    /// SHA-256s of corrupt files the store does not hold again yet, with their sizes: what
    /// a repair fetches.
    pub fn open_files(conn: &Connection) -> Result<Vec<(Sha256, u64)>, Error> {
        let mut stmt = conn.prepare(
            "SELECT key, max(size) FROM corruptions c WHERE kind = 'file'
               AND NOT EXISTS (SELECT 1 FROM files f WHERE f.sha256 = c.key)
             GROUP BY key ORDER BY min(found_at)",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, Sha256>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for r in rows {
            let (sha, size) = r?;
            out.push((sha, to_u64(size, "corrupt size")?));
        }
        Ok(out)
    }
}
