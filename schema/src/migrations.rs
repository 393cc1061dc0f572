//! Numbered schema migrations, tracked in SQLite's `user_version`.
//!
//! There are two databases, each with its own list: the embedded store's index
//! ([`Schema::Store`]: blocks, files, pins) and the publisher's ([`Schema::Publisher`]:
//! snapshots, their entries, imports, syncs, the feed). They are separate files because the
//! store may be a Kubo node instead, and the publisher's state must not depend on which.
//!
//! Migration N (1-based) takes the schema from version N-1 to N. They run in one
//! `BEGIN IMMEDIATE` transaction, so two processes opening a fresh database at once do not
//! both apply them. A database newer than this build is refused rather than guessed at.
//! (Hand-written: `rusqlite_migration` does not support the current rusqlite, and this is
//! the whole of what it would do here.)

use rusqlite::{Connection, TransactionBehavior};

use crate::Error;

/// Which database a [`crate::Db`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// The embedded store's index.
    Store,
    /// The publisher's snapshots and bookkeeping.
    Publisher,
}

impl Schema {
    /// The migrations of this database, in order.
    pub fn migrations(self) -> &'static [&'static str] {
        match self {
            Schema::Store => STORE,
            Schema::Publisher => PUBLISHER,
        }
    }
}

/// The embedded store's migrations. Never edit one that has shipped: add a new one.
pub const STORE: &[&str] = &[
    // 1: the embedded store.
    r#"
    -- Whole files kept by the embedded store, named on disk by their SHA-256.
    CREATE TABLE files (
        id        INTEGER PRIMARY KEY,
        sha256    BLOB    NOT NULL UNIQUE CHECK (length(sha256) = 32),
        size      INTEGER NOT NULL CHECK (size >= 0),
        added_at  INTEGER NOT NULL
    );

    -- Every block the store can serve, by binary CID. A block is either held inline
    -- (dag-pb nodes, blocks put one by one) or is a byte range of a kept file: a raw leaf
    -- (kind 1) or a dag-pb UnixFS file leaf wrapped around that range (kind 2).
    CREATE TABLE blocks (
        cid       BLOB    PRIMARY KEY,
        kind      INTEGER NOT NULL CHECK (kind IN (0, 1, 2)),
        file_id   INTEGER REFERENCES files(id),
        offset    INTEGER,
        length    INTEGER,
        data      BLOB,
        added_at  INTEGER NOT NULL,
        CHECK ((kind = 0 AND data IS NOT NULL AND file_id IS NULL)
            OR (kind > 0 AND data IS NULL AND file_id IS NOT NULL
                AND offset >= 0 AND length >= 0))
    ) WITHOUT ROWID;
    CREATE INDEX blocks_by_file ON blocks(file_id) WHERE file_id IS NOT NULL;

    -- Root CIDs that are a whole kept file: served straight from the file.
    CREATE TABLE file_roots (
        cid       BLOB    PRIMARY KEY,
        file_id   INTEGER NOT NULL REFERENCES files(id)
    ) WITHOUT ROWID;
    CREATE INDEX file_roots_by_file ON file_roots(file_id);

    -- Reasons to keep a DAG: one row per (root, reason). Expired rows no longer count.
    CREATE TABLE pins (
        cid        BLOB    NOT NULL,
        reason     TEXT    NOT NULL CHECK (length(reason) > 0),
        created_at INTEGER NOT NULL,
        expires_at INTEGER,
        PRIMARY KEY (cid, reason)
    ) WITHOUT ROWID;
    "#,
    // 2: integrity on read. A file is served without re-hashing only while its on-disk
    // identity (`stamp`: device, inode, size, mtime, ctime) is the one it had when its bytes
    // last hashed to its name (`checked_at`); the scrub re-hashes the oldest checks first.
    // Every corrupt file or block found is recorded; it counts as repaired once the store
    // holds that file (or block) again.
    r#"
    ALTER TABLE files ADD COLUMN checked_at INTEGER;
    ALTER TABLE files ADD COLUMN stamp TEXT;
    CREATE INDEX files_by_check ON files(checked_at);

    CREATE TABLE corruptions (
        id         INTEGER PRIMARY KEY,
        kind       TEXT    NOT NULL CHECK (kind IN ('file', 'block')),
        key        BLOB    NOT NULL,
        size       INTEGER NOT NULL,
        found_at   INTEGER NOT NULL,
        found_by   TEXT    NOT NULL,
        detail     TEXT    NOT NULL,
        quarantine TEXT
    );
    CREATE INDEX corruptions_by_key ON corruptions(key);
    "#,
    // 3: the pin ledger of the kubo and cluster stores. Small files sent to the node
    // together are held there by one recursive pin on a node linking them all (a cover)
    // instead of one pin each: a member's row says its recursive pin is that cover's.
    r#"
    CREATE TABLE covers (
        member     BLOB    PRIMARY KEY,
        cover      BLOB    NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX covers_by_cover ON covers(cover);
    -- Each cover's block (a few KiB), to put it back on a node that lost it.
    CREATE TABLE cover_blocks (
        cover      BLOB    PRIMARY KEY,
        block      BLOB    NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 4: blocks in a rowid table. A WITHOUT ROWID table keeps at most ~1,000 bytes of a row
    // in its B-tree page and the rest in an overflow page of its own, so every inline block
    // of 1-4 KiB (a desc entry, a directory node) took a whole 4 KiB page beside its part:
    // 100 MB of index for 35 MB of blocks after a 15,000-package first sync. A rowid table
    // keeps up to ~4,000 bytes in the leaf, packed; the CID stays unique through its index.
    r#"
    CREATE TABLE blocks_rowid (
        id        INTEGER PRIMARY KEY,
        cid       BLOB    NOT NULL UNIQUE,
        kind      INTEGER NOT NULL CHECK (kind IN (0, 1, 2)),
        file_id   INTEGER REFERENCES files(id),
        offset    INTEGER,
        length    INTEGER,
        data      BLOB,
        added_at  INTEGER NOT NULL,
        CHECK ((kind = 0 AND data IS NOT NULL AND file_id IS NULL)
            OR (kind > 0 AND data IS NULL AND file_id IS NOT NULL
                AND offset >= 0 AND length >= 0))
    );
    INSERT INTO blocks_rowid (cid, kind, file_id, offset, length, data, added_at)
        SELECT cid, kind, file_id, offset, length, data, added_at FROM blocks;
    DROP INDEX blocks_by_file;
    DROP TABLE blocks;
    ALTER TABLE blocks_rowid RENAME TO blocks;
    CREATE INDEX blocks_by_file ON blocks(file_id) WHERE file_id IS NOT NULL;
    "#,
];

/// The publisher's migrations. Never edit one that has shipped: add a new one.
pub const PUBLISHER: &[&str] = &[
    // 1: snapshots and what the publisher knows.
    r#"
    -- Fixed choices of this publisher (profile, upstream): changing them changes every CID.
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;

    -- Every published snapshot. The signature covers (seq, root, previous).
    CREATE TABLE snapshots (
        seq          INTEGER PRIMARY KEY CHECK (seq > 0),
        root         BLOB    NOT NULL,
        previous     BLOB,
        upstream     TEXT    NOT NULL,
        state        TEXT    NOT NULL,
        profile      TEXT    NOT NULL,
        manifest     BLOB    NOT NULL,
        signature    BLOB    NOT NULL CHECK (length(signature) = 64),
        published_at INTEGER NOT NULL,
        packages     INTEGER NOT NULL,
        new_bytes    INTEGER NOT NULL
    );

    -- The current snapshot: one row, switched in the transaction that publishes.
    CREATE TABLE current_snapshot (
        id  INTEGER PRIMARY KEY CHECK (id = 1),
        seq INTEGER NOT NULL REFERENCES snapshots(seq)
    );

    -- Every file of every snapshot's <repo>/os/<arch>/ directory.
    CREATE TABLE entries (
        seq        INTEGER NOT NULL REFERENCES snapshots(seq) ON DELETE CASCADE,
        repo       TEXT    NOT NULL,
        arch       TEXT    NOT NULL,
        filename   TEXT    NOT NULL,
        kind       TEXT    NOT NULL,
        alias      TEXT,
        package    TEXT,
        size       INTEGER NOT NULL,
        sha256     BLOB    NOT NULL CHECK (length(sha256) = 32),
        cid        BLOB    NOT NULL,
        tsize      INTEGER NOT NULL,
        desc_cid   BLOB,
        desc_tsize INTEGER,
        PRIMARY KEY (seq, repo, arch, filename)
    ) WITHOUT ROWID;

    -- Files already imported under a profile: never downloaded again.
    CREATE TABLE imported (
        sha256  BLOB    NOT NULL CHECK (length(sha256) = 32),
        profile TEXT    NOT NULL,
        cid     BLOB    NOT NULL,
        size    INTEGER NOT NULL,
        tsize   INTEGER NOT NULL,
        PRIMARY KEY (sha256, profile)
    ) WITHOUT ROWID;

    -- One row per sync attempt: what `status` reports.
    CREATE TABLE syncs (
        id          INTEGER PRIMARY KEY,
        started_at  INTEGER NOT NULL,
        finished_at INTEGER,
        upstream    TEXT    NOT NULL,
        state       TEXT,
        outcome     TEXT    NOT NULL
            CHECK (outcome IN ('running', 'published', 'unchanged', 'failed')),
        detail      TEXT,
        seq         INTEGER
    );

    -- The feed: snapshots in the order they were announced.
    CREATE TABLE feed (
        seq          INTEGER PRIMARY KEY REFERENCES snapshots(seq),
        published_at INTEGER NOT NULL
    );
    "#,
    // 2: lookups of a snapshot's files by SHA-256 (the gateway's /api/v1/resolve).
    r#"
    CREATE INDEX entries_by_sha256 ON entries(seq, sha256);
    "#,
    // 3: the sanity gate. A sync can end 'held' (a repository lost too many packages), and
    // the shrink being held is remembered across syncs until it publishes or goes away.
    r#"
    CREATE TABLE syncs_3 (
        id          INTEGER PRIMARY KEY,
        started_at  INTEGER NOT NULL,
        finished_at INTEGER,
        upstream    TEXT    NOT NULL,
        state       TEXT,
        outcome     TEXT    NOT NULL
            CHECK (outcome IN ('running', 'published', 'unchanged', 'failed', 'held')),
        detail      TEXT,
        seq         INTEGER
    );
    INSERT INTO syncs_3 SELECT id, started_at, finished_at, upstream, state, outcome, detail, seq
        FROM syncs;
    DROP TABLE syncs;
    ALTER TABLE syncs_3 RENAME TO syncs;

    -- At most one row: the shrink held now, since when, by how many consecutive syncs.
    CREATE TABLE held (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        state      TEXT    NOT NULL,
        reasons    TEXT    NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen  INTEGER NOT NULL,
        syncs      INTEGER NOT NULL CHECK (syncs >= 1)
    );
    "#,
    // 4: AUR package bases of each snapshot, as `index/aur/<pkgbase>/sources.json` says them
    // (JSON written by the listing crate: what the next sync compares and carries over),
    // and their sources by digest and URL for the gateway's lookups.
    r#"
    CREATE TABLE aur_bases (
        seq     INTEGER NOT NULL REFERENCES snapshots(seq),
        pkgbase TEXT    NOT NULL,
        body    TEXT    NOT NULL,
        -- Sources not cached: SKIP-only, ck-only, VCS, local files, other schemes or hosts.
        skipped INTEGER NOT NULL DEFAULT 0 CHECK (skipped >= 0),
        PRIMARY KEY (seq, pkgbase)
    ) WITHOUT ROWID;
    CREATE TABLE aur_sources (
        seq       INTEGER NOT NULL REFERENCES snapshots(seq),
        pkgbase   TEXT    NOT NULL,
        file_name TEXT    NOT NULL,
        url       TEXT    NOT NULL,
        size      INTEGER NOT NULL CHECK (size >= 0),
        sha256    BLOB    NOT NULL CHECK (length(sha256) = 32),
        sha512    BLOB    NOT NULL CHECK (length(sha512) = 64),
        b2        BLOB    NOT NULL CHECK (length(b2) = 64),
        cid       BLOB    NOT NULL,
        PRIMARY KEY (seq, pkgbase, file_name)
    ) WITHOUT ROWID;
    CREATE INDEX aur_sources_by_sha256 ON aur_sources(seq, sha256);
    CREATE INDEX aur_sources_by_sha512 ON aur_sources(seq, sha512);
    CREATE INDEX aur_sources_by_b2 ON aur_sources(seq, b2);
    CREATE INDEX aur_sources_by_url ON aur_sources(seq, url);
    "#,
];

/// Brings the database up to the newest version of its schema.
pub(crate) fn apply(conn: &mut Connection, schema: Schema) -> Result<(), Error> {
    let migrations = schema.migrations();
    let known = u32::try_from(migrations.len()).unwrap_or(u32::MAX);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > known {
        return Err(Error::TooNew { found, known });
    }
    for (i, sql) in migrations.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(i + 1).unwrap_or(i64::MAX),
        )?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store index made by a build before migration 4 keeps every block, and its blocks
    /// table is a rowid table afterwards.
    #[test]
    fn blocks_move_to_a_rowid_table_with_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let mut conn = Connection::open(&path).unwrap();
        for sql in &STORE[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute_batch(
            "INSERT INTO files (id, sha256, size, added_at) VALUES (7, zeroblob(32), 10, 1);
             INSERT INTO blocks (cid, kind, data, added_at) VALUES (x'01', 0, x'aabb', 5);
             INSERT INTO blocks (cid, kind, file_id, offset, length, added_at)
                 VALUES (x'02', 1, 7, 0, 10, 6);",
        )
        .unwrap();
        apply(&mut conn, Schema::Store).unwrap();
        let version: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version as usize, STORE.len());
        type Row = (Vec<u8>, i64, Option<i64>, Option<Vec<u8>>, i64);
        let rows: Vec<Row> = conn
            .prepare("SELECT cid, kind, file_id, data, added_at FROM blocks ORDER BY cid")
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![
                (vec![1], 0, None, Some(vec![0xaa, 0xbb]), 5),
                (vec![2], 1, Some(7), None, 6)
            ]
        );
        let sql: String = conn
            .query_row(
                "SELECT sql FROM sqlite_schema WHERE name = 'blocks'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(!sql.contains("WITHOUT ROWID"), "{sql}");
        // Still one row per CID, and the index by file is back.
        let dup = conn.execute(
            "INSERT INTO blocks (cid, kind, data, added_at) VALUES (x'01', 0, x'00', 9)",
            [],
        );
        assert!(dup.is_err());
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'blocks_by_file'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1);
    }
}
