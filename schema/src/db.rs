//! Opening the database and handing out connections.
//!
//! SQLite in WAL mode lets any number of readers run beside one writer, across threads and
//! across processes. [`Db`] keeps one writer connection behind a mutex (so writers in this
//! process queue instead of spinning on `SQLITE_BUSY`) and a free list of reader connections
//! (opened on demand, returned after use). A small hand-written pool: r2d2 and friends pin
//! older rusqlite versions, and this needs nothing they add.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use crate::Error;
use crate::migrations::{self, Schema};

/// How long a statement waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// Reader connections kept open for reuse; more are opened when needed and closed after.
const MAX_IDLE_READERS: usize = 8;

/// A migrated SQLite database with a writer and a pool of readers.
pub struct Db {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

/// An open write transaction (`BEGIN IMMEDIATE`); queries that change rows take this type,
/// so they cannot run outside a transaction.
pub struct WriteTx<'a>(Transaction<'a>);

impl Deref for WriteTx<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.0
    }
}

impl Db {
    /// Opens (creating if needed) the database at `path` and brings it up to the newest
    /// version of `schema`.
    pub fn open(path: &Path, schema: Schema) -> Result<Db, Error> {
        let mut writer = retry_busy(|| open_connection(path))?;
        retry_busy(|| migrations::apply(&mut writer, schema))?;
        Ok(Db {
            path: path.to_path_buf(),
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with a reader connection. Reads see the last committed state.
    pub fn read<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let conn = {
            let mut idle = self.readers.lock().unwrap_or_else(|p| p.into_inner());
            idle.pop()
        };
        let conn = match conn {
            Some(c) => c,
            None => retry_busy(|| open_connection(&self.path))?,
        };
        let out = f(&conn);
        let mut idle = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        out
    }

    /// Runs `f` inside one `BEGIN IMMEDIATE` transaction: committed if `f` returns `Ok`,
    /// rolled back otherwise.
    pub fn write<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&WriteTx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(Error::from)?;
        let tx = WriteTx(tx);
        let out = f(&tx)?;
        tx.0.commit().map_err(Error::from)?;
        Ok(out)
    }
}

/// Retries `f` while SQLite answers BUSY, up to [`BUSY_TIMEOUT`]. Needed where SQLite
/// returns BUSY without waiting: switching a new database to WAL while another process
/// opens it, and a read lock that cannot be upgraded (the migration check of a database
/// that several processes create at once).
fn retry_busy<T>(mut f: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    let start = std::time::Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        match f() {
            Err(Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && start.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

fn open_connection(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Every hot query uses prepare_cached; keep them all.
    conn.set_prepared_statement_cache_capacity(64);
    // WAL: readers never block the writer; synchronous=FULL: a commit is on disk when it
    // returns, which the publisher relies on before it switches the current snapshot.
    // The journal mode is stored in the file: only the first opener has to switch it.
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        conn.pragma_update(None, "journal_mode", "WAL")?;
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_rolls_back_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.sqlite"), Schema::Store).unwrap();
        let r: Result<(), Error> = db.write(|tx| {
            tx.execute(
                "INSERT INTO files (sha256, size, added_at) VALUES (zeroblob(32), 1, 0)",
                [],
            )?;
            Err(Error::Invalid {
                what: "test",
                detail: "boom".into(),
            })
        });
        assert!(r.is_err());
        let n: i64 = db
            .read(|c| Ok::<_, Error>(c.query_row("SELECT count(*) FROM files", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn reopen_keeps_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.sqlite");
        drop(Db::open(&p, Schema::Store).unwrap());
        let db = Db::open(&p, Schema::Store).unwrap();
        let v: u32 = db
            .read(|c| Ok::<_, Error>(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(v as usize, migrations::STORE.len());
    }
}

#[cfg(test)]
mod open_tests {
    use super::*;

    /// Many openers of one fresh database at once: each gets a migrated database.
    #[test]
    fn concurrent_first_opens_all_succeed() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join(format!("t{round}.sqlite"));
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let p = p.clone();
                    std::thread::spawn(move || {
                        let db = Db::open(&p, Schema::Store)?;
                        db.write(|tx| {
                            tx.execute(
                                "INSERT INTO pins (cid, reason, created_at) VALUES (randomblob(36), 'r', 0)",
                                [],
                            )?;
                            Ok::<_, Error>(())
                        })
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap().unwrap();
            }
        }
    }
}
