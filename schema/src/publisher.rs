//! Typed queries on the publisher's database ([`crate::Schema::Publisher`]).

use cid::Cid;
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::{Error, Sha256, UnixTime, WriteTx};

fn cid_of(blob: Vec<u8>, what: &'static str) -> Result<Cid, Error> {
    Cid::try_from(blob.as_slice()).map_err(|e| Error::Invalid {
        what,
        detail: e.to_string(),
    })
}

fn i64_of(v: u64, what: &'static str) -> Result<i64, Error> {
    i64::try_from(v).map_err(|_| Error::Invalid {
        what,
        detail: format!("{v} does not fit in SQLite's INTEGER"),
    })
}

fn u64_of(v: i64, what: &'static str) -> Result<u64, Error> {
    u64::try_from(v).map_err(|_| Error::Invalid {
        what,
        detail: format!("negative value {v}"),
    })
}

/// Fixed choices of the publisher.
pub mod settings {
    use super::*;

    /// A setting's value.
    pub fn get(conn: &Connection, key: &str) -> Result<Option<String>, Error> {
        Ok(conn
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Sets a setting.
    pub fn set(tx: &WriteTx<'_>, key: &str, value: &str) -> Result<(), Error> {
        tx.prepare_cached(
            "INSERT INTO settings (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )?
        .execute(params![key, value])?;
        Ok(())
    }
}

/// A published snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Sequence number (1, 2, ...).
    pub seq: u64,
    /// Root CID of the listing.
    pub root: Cid,
    /// Root of the snapshot before it, if any.
    pub previous: Option<Cid>,
    /// The upstream it mirrors.
    pub upstream: String,
    /// The upstream state (its `lastupdate`).
    pub state: String,
    /// Import profile.
    pub profile: String,
    /// `manifest.json` as published.
    pub manifest: Vec<u8>,
    /// ed25519 signature over (seq, root, previous).
    pub signature: Vec<u8>,
    /// When it became current.
    pub published_at: UnixTime,
    /// Packages in it.
    pub packages: u64,
    /// Bytes of blocks and files that were new with it.
    pub new_bytes: u64,
}

/// One file of a snapshot's `<repo>/os/<arch>/` directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Repository.
    pub repo: String,
    /// Architecture.
    pub arch: String,
    /// File name.
    pub filename: String,
    /// What it is (`package`, `signature`, `database`, ...).
    pub kind: String,
    /// A second name with the same bytes (`core.db` for `core.db.tar.gz`).
    pub alias: Option<String>,
    /// Package name, for packages and their signatures.
    pub package: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256.
    pub sha256: Sha256,
    /// Root CID.
    pub cid: Cid,
    /// Cumulative DAG size.
    pub tsize: u64,
    /// CID of the package's `desc` entry (`index/<repo>/<arch>/<name>`).
    pub desc_cid: Option<Cid>,
    /// Its cumulative size.
    pub desc_tsize: Option<u64>,
}

/// Snapshots, their entries, the current pointer and the feed.
pub mod snapshots {
    use super::*;

    fn row(r: &Row<'_>) -> rusqlite::Result<RawSnapshot> {
        Ok(RawSnapshot {
            seq: r.get(0)?,
            root: r.get(1)?,
            previous: r.get(2)?,
            upstream: r.get(3)?,
            state: r.get(4)?,
            profile: r.get(5)?,
            manifest: r.get(6)?,
            signature: r.get(7)?,
            published_at: r.get(8)?,
            packages: r.get(9)?,
            new_bytes: r.get(10)?,
        })
    }

    struct RawSnapshot {
        seq: i64,
        root: Vec<u8>,
        previous: Option<Vec<u8>>,
        upstream: String,
        state: String,
        profile: String,
        manifest: Vec<u8>,
        signature: Vec<u8>,
        published_at: UnixTime,
        packages: i64,
        new_bytes: i64,
    }

    impl RawSnapshot {
        fn build(self) -> Result<Snapshot, Error> {
            Ok(Snapshot {
                seq: u64_of(self.seq, "snapshot seq")?,
                root: cid_of(self.root, "snapshot root")?,
                previous: self
                    .previous
                    .map(|p| cid_of(p, "previous snapshot root"))
                    .transpose()?,
                upstream: self.upstream,
                state: self.state,
                profile: self.profile,
                manifest: self.manifest,
                signature: self.signature,
                published_at: self.published_at,
                packages: u64_of(self.packages, "package count")?,
                new_bytes: u64_of(self.new_bytes, "new bytes")?,
            })
        }
    }

    const COLUMNS: &str = "s.seq, s.root, s.previous, s.upstream, s.state, s.profile, \
                           s.manifest, s.signature, s.published_at, s.packages, s.new_bytes";

    /// The current snapshot, if any was published.
    pub fn current(conn: &Connection) -> Result<Option<Snapshot>, Error> {
        conn.query_row(
            &format!("SELECT {COLUMNS} FROM current_snapshot c JOIN snapshots s ON s.seq = c.seq"),
            [],
            row,
        )
        .optional()?
        .map(RawSnapshot::build)
        .transpose()
    }

    /// The snapshot with this sequence number.
    pub fn get(conn: &Connection, seq: u64) -> Result<Option<Snapshot>, Error> {
        conn.query_row(
            &format!("SELECT {COLUMNS} FROM snapshots s WHERE s.seq = ?1"),
            [i64_of(seq, "seq")?],
            row,
        )
        .optional()?
        .map(RawSnapshot::build)
        .transpose()
    }

    /// The newest snapshots first, at most `limit`.
    pub fn recent(conn: &Connection, limit: u32) -> Result<Vec<Snapshot>, Error> {
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM snapshots s ORDER BY s.seq DESC LIMIT ?1"
        ))?;
        let rows = stmt.query_map([limit], row)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r?.build()?);
        }
        Ok(out)
    }

    /// Records `snap` with its entries, makes it current and appends it to the feed, in the
    /// caller's transaction.
    pub fn publish<E: std::borrow::Borrow<Entry>>(
        tx: &WriteTx<'_>,
        snap: &Snapshot,
        entries: impl IntoIterator<Item = E>,
    ) -> Result<(), Error> {
        let seq = i64_of(snap.seq, "seq")?;
        tx.prepare_cached(
            "INSERT INTO snapshots (seq, root, previous, upstream, state, profile, manifest,
                                    signature, published_at, packages, new_bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            seq,
            snap.root.to_bytes(),
            snap.previous.map(|p| p.to_bytes()),
            snap.upstream,
            snap.state,
            snap.profile,
            snap.manifest,
            snap.signature,
            snap.published_at,
            i64_of(snap.packages, "package count")?,
            i64_of(snap.new_bytes, "new bytes")?,
        ])?;
        let mut stmt = tx.prepare(
            "INSERT INTO entries (seq, repo, arch, filename, kind, alias, package, size, sha256,
                                  cid, tsize, desc_cid, desc_tsize)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?;
        for e in entries {
            let e = e.borrow();
            stmt.execute(params![
                seq,
                e.repo,
                e.arch,
                e.filename,
                e.kind,
                e.alias,
                e.package,
                i64_of(e.size, "size")?,
                e.sha256,
                e.cid.to_bytes(),
                i64_of(e.tsize, "tsize")?,
                e.desc_cid.map(|c| c.to_bytes()),
                e.desc_tsize.map(|t| i64_of(t, "tsize")).transpose()?,
            ])?;
        }
        tx.prepare_cached(
            "INSERT INTO current_snapshot (id, seq) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq",
        )?
        .execute([seq])?;
        tx.prepare_cached("INSERT INTO feed (seq, published_at) VALUES (?1, ?2)")?
            .execute(params![seq, snap.published_at])?;
        Ok(())
    }

    const ENTRY_COLUMNS: &str = "repo, arch, filename, kind, alias, package, size, sha256, cid, \
                                 tsize, desc_cid, desc_tsize";

    #[allow(clippy::type_complexity)]
    fn entry_row(
        r: &Row<'_>,
    ) -> rusqlite::Result<(
        (
            String,
            String,
            String,
            String,
            Option<String>,
            Option<String>,
        ),
        (i64, Sha256, Vec<u8>, i64, Option<Vec<u8>>, Option<i64>),
    )> {
        Ok((
            (
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ),
            (
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
                r.get(10)?,
                r.get(11)?,
            ),
        ))
    }

    #[allow(clippy::type_complexity)]
    fn build_entry(
        ((repo, arch, filename, kind, alias, package), (size, sha256, cid, tsize, dc, dt)): (
            (
                String,
                String,
                String,
                String,
                Option<String>,
                Option<String>,
            ),
            (i64, Sha256, Vec<u8>, i64, Option<Vec<u8>>, Option<i64>),
        ),
    ) -> Result<Entry, Error> {
        Ok(Entry {
            repo,
            arch,
            filename,
            kind,
            alias,
            package,
            size: u64_of(size, "size")?,
            sha256,
            cid: cid_of(cid, "entry cid")?,
            tsize: u64_of(tsize, "tsize")?,
            desc_cid: dc.map(|c| cid_of(c, "desc cid")).transpose()?,
            desc_tsize: dt.map(|t| u64_of(t, "desc tsize")).transpose()?,
        })
    }

    /// The entries of snapshot `seq`, ordered by repo, arch, file name.
    pub fn entries(conn: &Connection, seq: u64) -> Result<Vec<Entry>, Error> {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS} FROM entries WHERE seq = ?1 ORDER BY repo, arch, filename"
        ))?;
        let rows = stmt.query_map([i64_of(seq, "seq")?], entry_row)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(build_entry(r?)?);
        }
        Ok(out)
    }

    /// The entry of snapshot `seq` at `<repo>/os/<arch>/<name>`, `name` being its file name
    /// or its alias (`core.db` for `core.db.tar.gz`).
    pub fn entry_at(
        conn: &Connection,
        seq: u64,
        repo: &str,
        arch: &str,
        name: &str,
    ) -> Result<Option<Entry>, Error> {
        conn.prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS} FROM entries
             WHERE seq = ?1 AND repo = ?2 AND arch = ?3 AND (filename = ?4 OR alias = ?4)
             LIMIT 1"
        ))?
        .query_row(params![i64_of(seq, "seq")?, repo, arch, name], entry_row)
        .optional()?
        .map(build_entry)
        .transpose()
    }

    /// The entries of snapshot `seq` with this SHA-256.
    pub fn entries_with_sha256(
        conn: &Connection,
        seq: u64,
        sha256: &Sha256,
    ) -> Result<Vec<Entry>, Error> {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS} FROM entries WHERE seq = ?1 AND sha256 = ?2
             ORDER BY repo, arch, filename"
        ))?;
        let rows = stmt.query_map(params![i64_of(seq, "seq")?, sha256], entry_row)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(build_entry(r?)?);
        }
        Ok(out)
    }

    /// How many packages snapshot `seq` has in each repository/architecture, ordered by
    /// repository and architecture.
    pub fn package_counts(
        conn: &Connection,
        seq: u64,
    ) -> Result<Vec<(String, String, u64)>, Error> {
        let mut stmt = conn.prepare_cached(
            "SELECT repo, arch, count(*) FROM entries WHERE seq = ?1 AND kind = 'package'
             GROUP BY repo, arch ORDER BY repo, arch",
        )?;
        let rows = stmt.query_map([i64_of(seq, "seq")?], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (repo, arch, n) = r?;
            out.push((repo, arch, u64_of(n, "package count")?));
        }
        Ok(out)
    }

    /// The files of packages (and their signatures) in snapshot `before` that snapshot
    /// `after` does not have, by CID: what left upstream between the two. Computed by the
    /// database, so that a repository of 200,000 packages is not read into memory twice.
    pub fn packages_left(conn: &Connection, before: u64, after: u64) -> Result<Vec<Cid>, Error> {
        let mut stmt = conn.prepare_cached(
            "SELECT DISTINCT cid FROM entries
             WHERE seq = ?1
               AND (kind = 'package' OR (kind = 'signature' AND package IS NOT NULL))
               AND cid NOT IN (SELECT cid FROM entries WHERE seq = ?2)
             ORDER BY cid",
        )?;
        let rows = stmt.query_map(
            params![i64_of(before, "seq")?, i64_of(after, "seq")?],
            |r| r.get::<_, Vec<u8>>(0),
        )?;
        let mut out = Vec::new();
        for r in rows {
            out.push(cid_of(r?, "cid")?);
        }
        Ok(out)
    }

    /// Deletes the entries of snapshots numbered below `seq` (their rows stay).
    pub fn prune_entries(tx: &WriteTx<'_>, seq: u64) -> Result<usize, Error> {
        let seq = i64_of(seq, "seq")?;
        let mut n = 0;
        for table in ["entries", "aur_bases", "aur_sources"] {
            n += tx
                .prepare_cached(&format!("DELETE FROM {table} WHERE seq < ?1"))?
                .execute([seq])?;
        }
        Ok(n)
    }

    /// The next free sequence number.
    pub fn next_seq(conn: &Connection) -> Result<u64, Error> {
        let max: Option<i64> =
            conn.query_row("SELECT max(seq) FROM snapshots", [], |r| r.get(0))?;
        Ok(max.map_or(Ok(0), |m| u64_of(m, "seq"))? + 1)
    }
}

/// A file imported under a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    /// SHA-256 of the file.
    pub sha256: Sha256,
    /// Root CID under the profile.
    pub cid: Cid,
    /// Size.
    pub size: u64,
    /// Cumulative DAG size.
    pub tsize: u64,
}

/// Files already imported: a package with a known SHA-256 is never downloaded again.
pub mod imported {
    use super::*;

    /// The import of `sha256` under `profile`, if any.
    pub fn get(
        conn: &Connection,
        sha256: &Sha256,
        profile: &str,
    ) -> Result<Option<Imported>, Error> {
        conn.prepare_cached(
            "SELECT cid, size, tsize FROM imported WHERE sha256 = ?1 AND profile = ?2",
        )?
        .query_row(params![sha256, profile], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .optional()?
        .map(|(cid, size, tsize)| {
            Ok(Imported {
                sha256: *sha256,
                cid: cid_of(cid, "imported cid")?,
                size: u64_of(size, "size")?,
                tsize: u64_of(tsize, "tsize")?,
            })
        })
        .transpose()
    }

    /// Records an import.
    pub fn put(tx: &WriteTx<'_>, imp: &Imported, profile: &str) -> Result<(), Error> {
        tx.prepare_cached(
            "INSERT INTO imported (sha256, profile, cid, size, tsize) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (sha256, profile) DO UPDATE SET cid = excluded.cid,
                 size = excluded.size, tsize = excluded.tsize",
        )?
        .execute(params![
            imp.sha256,
            profile,
            imp.cid.to_bytes(),
            i64_of(imp.size, "size")?,
            i64_of(imp.tsize, "tsize")?
        ])?;
        Ok(())
    }

    /// Every import under `profile`.
    pub fn all(conn: &Connection, profile: &str) -> Result<Vec<Imported>, Error> {
        let mut stmt =
            conn.prepare("SELECT sha256, cid, size, tsize FROM imported WHERE profile = ?1")?;
        let rows = stmt.query_map([profile], |r| {
            Ok((
                r.get::<_, Sha256>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (sha256, cid, size, tsize) = r?;
            out.push(Imported {
                sha256,
                cid: cid_of(cid, "imported cid")?,
                size: u64_of(size, "size")?,
                tsize: u64_of(tsize, "tsize")?,
            });
        }
        Ok(out)
    }

    /// Forgets an import (its blocks were found missing).
    pub fn forget(tx: &WriteTx<'_>, sha256: &Sha256, profile: &str) -> Result<(), Error> {
        tx.prepare_cached("DELETE FROM imported WHERE sha256 = ?1 AND profile = ?2")?
            .execute(params![sha256, profile])?;
        Ok(())
    }
}

/// One sync attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sync {
    /// Row id.
    pub id: i64,
    /// When it started.
    pub started_at: UnixTime,
    /// When it ended (None while running, or if the process died).
    pub finished_at: Option<UnixTime>,
    /// The upstream.
    pub upstream: String,
    /// The upstream state it saw.
    pub state: Option<String>,
    /// `running`, `published`, `unchanged` or `failed`.
    pub outcome: String,
    /// What happened, for people.
    pub detail: Option<String>,
    /// The snapshot it published.
    pub seq: Option<u64>,
}

/// Sync attempts, for `status`.
/// A shrink the sanity gate holds back: an upstream state in which a repository lost more
/// of its packages than allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The upstream state last held.
    pub state: String,
    /// Why, one line per repository.
    pub reasons: String,
    /// The first sync that held it.
    pub first_seen: UnixTime,
    /// The last one.
    pub last_seen: UnixTime,
    /// Consecutive syncs that held a shrink.
    pub syncs: u64,
}

/// The shrink held now, if any.
pub mod held {
    use super::*;

    /// What is held.
    pub fn get(conn: &Connection) -> Result<Option<Held>, Error> {
        let row = conn
            .prepare_cached(
                "SELECT state, reasons, first_seen, last_seen, syncs FROM held WHERE id = 1",
            )?
            .query_row([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, UnixTime>(2)?,
                    r.get::<_, UnixTime>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .optional()?;
        row.map(|(state, reasons, first_seen, last_seen, syncs)| {
            Ok(Held {
                state,
                reasons,
                first_seen,
                last_seen,
                syncs: u64_of(syncs, "held syncs")?,
            })
        })
        .transpose()
    }

    /// One more sync holds a shrink (state `state`, for `reasons`): returns how many
    /// consecutive syncs have held one, this one included.
    pub fn hold(tx: &WriteTx<'_>, state: &str, reasons: &str, now: UnixTime) -> Result<u64, Error> {
        tx.prepare_cached(
            "INSERT INTO held (id, state, reasons, first_seen, last_seen, syncs)
             VALUES (1, ?1, ?2, ?3, ?3, 1)
             ON CONFLICT (id) DO UPDATE SET state = ?1, reasons = ?2, last_seen = ?3,
                 syncs = syncs + 1",
        )?
        .execute(params![state, reasons, now])?;
        let n: i64 = tx.query_row("SELECT syncs FROM held WHERE id = 1", [], |r| r.get(0))?;
        u64_of(n, "held syncs")
    }

    /// Nothing is held any more (a sync passed the gate, or published what was held).
    pub fn clear(tx: &WriteTx<'_>) -> Result<(), Error> {
        tx.prepare_cached("DELETE FROM held")?.execute([])?;
        Ok(())
    }
}

pub mod syncs {
    use super::*;

    /// Records the start of a sync; returns its id.
    pub fn start(tx: &WriteTx<'_>, upstream: &str, now: UnixTime) -> Result<i64, Error> {
        tx.prepare_cached(
            "INSERT INTO syncs (started_at, upstream, outcome) VALUES (?1, ?2, 'running')",
        )?
        .execute(params![now, upstream])?;
        Ok(tx.last_insert_rowid())
    }

    /// Records how a sync ended.
    pub fn finish(
        tx: &WriteTx<'_>,
        id: i64,
        outcome: &str,
        state: Option<&str>,
        detail: Option<&str>,
        seq: Option<u64>,
        now: UnixTime,
    ) -> Result<(), Error> {
        tx.prepare_cached(
            "UPDATE syncs SET finished_at = ?2, outcome = ?3, state = ?4, detail = ?5, seq = ?6
             WHERE id = ?1",
        )?
        .execute(params![
            id,
            now,
            outcome,
            state,
            detail,
            seq.map(|s| i64_of(s, "seq")).transpose()?
        ])?;
        Ok(())
    }

    /// How many syncs ended with each outcome.
    pub fn counts(conn: &Connection) -> Result<Vec<(String, u64)>, Error> {
        let mut stmt =
            conn.prepare_cached("SELECT outcome, count(*) FROM syncs GROUP BY outcome")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for r in rows {
            let (o, n) = r?;
            out.push((o, u64_of(n, "sync count")?));
        }
        Ok(out)
    }

    /// The most recent syncs, newest first.
    pub fn recent(conn: &Connection, limit: u32) -> Result<Vec<Sync>, Error> {
        let mut stmt = conn.prepare(
            "SELECT id, started_at, finished_at, upstream, state, outcome, detail, seq
             FROM syncs ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, UnixTime>(1)?,
                r.get::<_, Option<UnixTime>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, Option<i64>>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (id, started_at, finished_at, upstream, state, outcome, detail, seq) = r?;
            out.push(Sync {
                id,
                started_at,
                finished_at,
                upstream,
                state,
                outcome,
                detail,
                seq: seq.map(|s| u64_of(s, "seq")).transpose()?,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Db, Schema};

    fn cid(n: u8) -> Cid {
        let mh = cid::multihash::Multihash::<64>::wrap(0x12, &[n; 32]).unwrap();
        Cid::new_v1(0x70, mh)
    }

    fn snap(seq: u64, prev: Option<Cid>) -> Snapshot {
        Snapshot {
            seq,
            root: cid(seq as u8),
            previous: prev,
            upstream: "http://127.0.0.1/".into(),
            state: format!("{}", 1000 + seq),
            profile: "unixfs-v1-2025".into(),
            manifest: b"{}".to_vec(),
            signature: vec![7; 64],
            published_at: UnixTime(5),
            packages: 2,
            new_bytes: 99,
        }
    }

    fn entry(file: &str) -> Entry {
        Entry {
            repo: "core".into(),
            arch: "x86_64".into(),
            filename: file.into(),
            kind: "package".into(),
            alias: None,
            package: Some("foo".into()),
            size: 10,
            sha256: Sha256([1; 32]),
            cid: cid(9),
            tsize: 10,
            desc_cid: Some(cid(8)),
            desc_tsize: Some(3),
        }
    }

    #[test]
    fn publish_makes_current_and_keeps_entries() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("p.sqlite"), Schema::Publisher).unwrap();
        assert_eq!(db.read(snapshots::current).unwrap(), None);
        assert_eq!(db.read(snapshots::next_seq).unwrap(), 1);
        let s1 = snap(1, None);
        db.write(|tx| snapshots::publish(tx, &s1, &[entry("b.pkg"), entry("a.pkg")]))
            .unwrap();
        let s2 = snap(2, Some(s1.root));
        db.write(|tx| snapshots::publish(tx, &s2, &[entry("c.pkg")]))
            .unwrap();
        assert_eq!(db.read(snapshots::current).unwrap(), Some(s2.clone()));
        assert_eq!(db.read(snapshots::next_seq).unwrap(), 3);
        let e1 = db.read(|c| snapshots::entries(c, 1)).unwrap();
        assert_eq!(
            e1.iter().map(|e| e.filename.as_str()).collect::<Vec<_>>(),
            ["a.pkg", "b.pkg"]
        );
        assert_eq!(e1[0], entry("a.pkg"));
        // A sequence number is used once.
        assert!(db.write(|tx| snapshots::publish(tx, &s2, &[])).is_err());
        assert_eq!(db.read(|c| snapshots::recent(c, 10)).unwrap().len(), 2);
    }

    #[test]
    fn imports_settings_and_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("p.sqlite"), Schema::Publisher).unwrap();
        let imp = Imported {
            sha256: Sha256([3; 32]),
            cid: cid(3),
            size: 5,
            tsize: 5,
        };
        db.write(|tx| imported::put(tx, &imp, "unixfs-v1-2025"))
            .unwrap();
        assert_eq!(
            db.read(|c| imported::get(c, &imp.sha256, "unixfs-v1-2025"))
                .unwrap(),
            Some(imp)
        );
        assert_eq!(
            db.read(|c| imported::get(c, &imp.sha256, "unixfs-v0-2015"))
                .unwrap(),
            None
        );
        db.write(|tx| settings::set(tx, "profile", "unixfs-v1-2025"))
            .unwrap();
        assert_eq!(
            db.read(|c| settings::get(c, "profile")).unwrap().as_deref(),
            Some("unixfs-v1-2025")
        );
        let id = db.write(|tx| syncs::start(tx, "u", UnixTime(1))).unwrap();
        db.write(|tx| syncs::finish(tx, id, "failed", Some("7"), Some("boom"), None, UnixTime(2)))
            .unwrap();
        let last = &db.read(|c| syncs::recent(c, 1)).unwrap()[0];
        assert_eq!(
            (last.outcome.as_str(), last.detail.as_deref()),
            ("failed", Some("boom"))
        );
        assert!(
            db.write(|tx| syncs::finish(tx, id, "bogus", None, None, None, UnixTime(3)))
                .is_err(),
            "outcomes are checked"
        );
        db.write(|tx| syncs::finish(tx, id, "held", None, None, None, UnixTime(3)))
            .unwrap();
    }

    #[test]
    fn a_held_shrink_counts_consecutive_syncs_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("p.sqlite"), Schema::Publisher).unwrap();
        assert_eq!(db.read(held::get).unwrap(), None);
        assert_eq!(
            db.write(|tx| held::hold(tx, "s1", "core: 0", UnixTime(10)))
                .unwrap(),
            1
        );
        assert_eq!(
            db.write(|tx| held::hold(tx, "s2", "core: 1", UnixTime(20)))
                .unwrap(),
            2
        );
        let h = db.read(held::get).unwrap().unwrap();
        assert_eq!(
            (
                h.state.as_str(),
                h.reasons.as_str(),
                h.first_seen,
                h.last_seen,
                h.syncs
            ),
            ("s2", "core: 1", UnixTime(10), UnixTime(20), 2)
        );
        db.write(held::clear).unwrap();
        assert_eq!(db.read(held::get).unwrap(), None);
        assert_eq!(
            db.write(|tx| held::hold(tx, "s3", "x", UnixTime(30)))
                .unwrap(),
            1
        );
    }

    #[test]
    fn packages_left_are_package_files_and_their_signatures_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("p.sqlite"), Schema::Publisher).unwrap();
        let with = |file: &str, kind: &str, package: Option<&str>, n: u8| Entry {
            kind: kind.into(),
            package: package.map(str::to_string),
            cid: cid(n),
            ..entry(file)
        };
        let first = [
            with("a.pkg", "package", Some("a"), 1),
            with("a.pkg.sig", "signature", Some("a"), 2),
            with("b.pkg", "package", Some("b"), 3),
            with("b.pkg.sig", "signature", Some("b"), 4),
            with("core.db", "database", None, 5),
            with("core.db.sig", "signature", None, 6),
            with("moved.pkg", "package", Some("m"), 7),
        ];
        db.write(|tx| snapshots::publish(tx, &snap(1, None), &first))
            .unwrap();
        // b left; the databases changed (not counted); moved.pkg's bytes stay under a new name.
        let second = [
            with("a.pkg", "package", Some("a"), 1),
            with("a.pkg.sig", "signature", Some("a"), 2),
            with("core.db", "database", None, 15),
            with("core.db.sig", "signature", None, 16),
            with("renamed.pkg", "package", Some("m"), 7),
        ];
        db.write(|tx| snapshots::publish(tx, &snap(2, None), &second))
            .unwrap();
        let mut left = db.read(|c| snapshots::packages_left(c, 1, 2)).unwrap();
        left.sort();
        let mut want = vec![cid(3), cid(4)];
        want.sort();
        assert_eq!(left, want);
    }

    #[test]
    fn package_counts_are_per_repository_and_architecture() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("p.sqlite"), Schema::Publisher).unwrap();
        let mut e = vec![
            entry("a-1-1-any.pkg.tar.zst"),
            entry("b-1-1-any.pkg.tar.zst"),
        ];
        let mut extra = entry("c-1-1-any.pkg.tar.zst");
        extra.repo = "extra".into();
        e.push(extra);
        let mut dbfile = entry("core.db.tar.gz");
        dbfile.kind = "database".into();
        dbfile.package = None;
        e.push(dbfile);
        db.write(|tx| snapshots::publish(tx, &snap(1, None), &e))
            .unwrap();
        assert_eq!(
            db.read(|c| snapshots::package_counts(c, 1)).unwrap(),
            [
                ("core".to_string(), "x86_64".to_string(), 2),
                ("extra".to_string(), "x86_64".to_string(), 1)
            ]
        );
    }
}

/// One cached AUR source of a snapshot, as the gateway looks it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AurSourceRow {
    /// The package base.
    pub pkgbase: String,
    /// Its makepkg file name.
    pub file_name: String,
    /// The URL its `.SRCINFO` gives.
    pub url: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256.
    pub sha256: Sha256,
    /// SHA-512.
    pub sha512: [u8; 64],
    /// BLAKE2b-512.
    pub b2: [u8; 64],
    /// Root CID.
    pub cid: Cid,
}

/// The AUR package bases of each snapshot and their sources.
pub mod aur {
    use super::*;

    /// A digest column to look a source up by.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Digest {
        /// `sha256`.
        Sha256,
        /// `sha512`.
        Sha512,
        /// `b2`.
        B2,
    }

    impl Digest {
        fn column(self) -> &'static str {
            match self {
                Digest::Sha256 => "sha256",
                Digest::Sha512 => "sha512",
                Digest::B2 => "b2",
            }
        }
    }

    /// Records the bases of snapshot `seq` (pkgbase, JSON body, sources skipped) and their
    /// sources, in the caller's transaction (the one that publishes the snapshot).
    pub fn put(
        tx: &WriteTx<'_>,
        seq: u64,
        bases: &[(String, String, u64)],
        sources: &[AurSourceRow],
    ) -> Result<(), Error> {
        let seq = i64_of(seq, "seq")?;
        let mut stmt = tx.prepare_cached(
            "INSERT INTO aur_bases (seq, pkgbase, body, skipped) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (pkgbase, body, skipped) in bases {
            stmt.execute(params![seq, pkgbase, body, i64_of(*skipped, "skipped")?])?;
        }
        let mut stmt = tx.prepare_cached(
            "INSERT INTO aur_sources (seq, pkgbase, file_name, url, size, sha256, sha512, b2, cid)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for s in sources {
            stmt.execute(params![
                seq,
                s.pkgbase,
                s.file_name,
                s.url,
                i64_of(s.size, "size")?,
                s.sha256,
                &s.sha512[..],
                &s.b2[..],
                s.cid.to_bytes(),
            ])?;
        }
        Ok(())
    }

    /// Snapshot `seq`'s bases, sources and source bytes, and the sources it does not cache.
    pub fn counts(conn: &Connection, seq: u64) -> Result<(u64, u64, u64, u64), Error> {
        let seq = i64_of(seq, "seq")?;
        let (bases, skipped): (i64, i64) = conn.query_row(
            "SELECT count(*), coalesce(sum(skipped), 0) FROM aur_bases WHERE seq = ?1",
            [seq],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let (sources, bytes): (i64, i64) = conn.query_row(
            "SELECT count(*), coalesce(sum(size), 0) FROM aur_sources WHERE seq = ?1",
            [seq],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok((
            u64_of(bases, "bases")?,
            u64_of(sources, "sources")?,
            u64_of(bytes, "bytes")?,
            u64_of(skipped, "skipped")?,
        ))
    }

    /// The bases of snapshot `seq`: (pkgbase, JSON body, sources skipped), by pkgbase.
    pub fn bases(conn: &Connection, seq: u64) -> Result<Vec<(String, String, u64)>, Error> {
        let mut stmt = conn.prepare_cached(
            "SELECT pkgbase, body, skipped FROM aur_bases WHERE seq = ?1 ORDER BY pkgbase",
        )?;
        let rows = stmt.query_map([i64_of(seq, "seq")?], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        rows.map(|r| {
            let (p, b, s) = r?;
            Ok((p, b, u64_of(s, "skipped")?))
        })
        .collect()
    }

    /// The settings key under which the last sync's AUR failures are kept (one per line).
    pub const FAILED_KEY: &str = "aur_failed";

    const COLUMNS: &str = "pkgbase, file_name, url, size, sha256, sha512, b2, cid";

    /// A row of `aur_sources` as read, in [`COLUMNS`] order.
    type SourceColumns = (
        String,
        String,
        String,
        i64,
        Sha256,
        Vec<u8>,
        Vec<u8>,
        Vec<u8>,
    );

    fn row(r: &Row<'_>) -> rusqlite::Result<SourceColumns> {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
        ))
    }

    fn build(
        (pkgbase, file_name, url, size, sha256, sha512, b2, cid): SourceColumns,
    ) -> Result<AurSourceRow, Error> {
        let wide = |v: Vec<u8>, what: &'static str| -> Result<[u8; 64], Error> {
            v.try_into().map_err(|_| Error::Invalid {
                what,
                detail: "not 64 bytes".into(),
            })
        };
        Ok(AurSourceRow {
            pkgbase,
            file_name,
            url,
            size: u64_of(size, "size")?,
            sha256,
            sha512: wide(sha512, "sha512")?,
            b2: wide(b2, "b2")?,
            cid: cid_of(cid, "aur source cid")?,
        })
    }

    /// The sources of snapshot `seq` with digest `value` of kind `digest` (the same bytes
    /// in several bases give several rows), by base and file name.
    pub fn by_digest(
        conn: &Connection,
        seq: u64,
        digest: Digest,
        value: &[u8],
    ) -> Result<Vec<AurSourceRow>, Error> {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM aur_sources WHERE seq = ?1 AND {} = ?2 ORDER BY pkgbase, file_name",
            digest.column()
        ))?;
        let rows = stmt.query_map(params![i64_of(seq, "seq")?, value], row)?;
        rows.map(|r| build(r?)).collect()
    }

    /// The sources of snapshot `seq` fetched from `url`.
    pub fn by_url(conn: &Connection, seq: u64, url: &str) -> Result<Vec<AurSourceRow>, Error> {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM aur_sources WHERE seq = ?1 AND url = ?2 ORDER BY pkgbase, file_name"
        ))?;
        let rows = stmt.query_map(params![i64_of(seq, "seq")?, url], row)?;
        rows.map(|r| build(r?)).collect()
    }
}
