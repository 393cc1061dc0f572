//! Numbered schema migrations, tracked in SQLite's `user_version`.
//!
//! Migration N (1-based) takes the schema from version N-1 to N. They run in one
//! `BEGIN IMMEDIATE` transaction, so two processes opening a fresh database at once do not
//! both apply them. A database newer than this build is refused rather than guessed at.
//! (Hand-written: `rusqlite_migration` does not support the current rusqlite, and this is
//! the whole of what it would do here.)

use rusqlite::{Connection, TransactionBehavior};

use crate::Error;

/// The migrations, in order. Never edit one that has shipped: add a new one.
pub const MIGRATIONS: &[&str] = &[
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
];

/// Brings the database up to the newest version.
pub(crate) fn apply(conn: &mut Connection) -> Result<(), Error> {
    let known = u32::try_from(MIGRATIONS.len()).unwrap_or(u32::MAX);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > known {
        return Err(Error::TooNew { found, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
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
