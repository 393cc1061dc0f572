//! Opening the database and handing out connections.
//!
//! SQLite in WAL mode lets any number of readers run beside one writer, across threads and
//! across processes. [`Db`] keeps one writer connection behind a mutex (so writers in this
//! process queue instead of spinning on `SQLITE_BUSY`) and a pool of at most [`MAX_READERS`]
//! reader connections (opened on demand, kept for reuse; a reader waits for a free one). A
//! small hand-written pool: r2d2 and friends pin older rusqlite versions, and this needs
//! nothing they add.

use std::cell::Cell;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use crate::Error;
use crate::migrations::{self, Schema};

/// How long a statement waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// Reader connections open at once; a reader beyond them waits for one to be free. Without
/// a bound, a burst of requests opened one connection per blocking thread (up to tokio's
/// 512), each parsing the schema and growing its own page cache: 2,000 slow readers of one
/// package left the gateway with 74 MB of SQLite allocations (bench/slow_readers.sh under
/// heaptrack). Reads are short; 16 keep 2 cores busy.
const MAX_READERS: usize = 16;

thread_local! {
    /// Reader connections this thread holds: a read nested in another read (on the same
    /// thread) never waits, as the connection it would wait for may be its own.
    static HOLDING: Cell<usize> = const { Cell::new(0) };
}

/// A migrated SQLite database with a writer and a pool of readers.
pub struct Db {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Readers>,
    /// Signalled when a reader connection is given back.
    freed: Condvar,
}

/// A reader connection in use: given back to the pool when dropped, also when the read
/// panics (a lost one would shrink the pool for good).
struct Lent<'a> {
    db: &'a Db,
    conn: Option<Connection>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        HOLDING.set(HOLDING.get() - 1);
        self.db.give_back(self.conn.take());
    }
}

/// The reader pool: idle connections, and how many are open (idle or in use).
struct Readers {
    idle: Vec<Connection>,
    open: usize,
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
            readers: Mutex::new(Readers {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
        })
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with a reader connection. Reads see the last committed state. Waits while
    /// [`MAX_READERS`] are in use (unless this thread holds one already).
    pub fn read<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let nested = HOLDING.get() > 0;
        let idle = {
            let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(c) = pool.idle.pop() {
                    break Some(c);
                }
                if pool.open < MAX_READERS || nested {
                    pool.open += 1;
                    break None;
                }
                pool = self.freed.wait(pool).unwrap_or_else(|p| p.into_inner());
            }
        };
        // From here on the pool's count is this read's, whatever happens (the guard gives
        // the connection, or the slot of one that failed to open, back).
        let mut lent = Lent {
            db: self,
            conn: None,
        };
        HOLDING.set(HOLDING.get() + 1);
        let conn = match idle {
            Some(c) => lent.conn.insert(c),
            None => lent
                .conn
                .insert(retry_busy(|| open_connection(&self.path))?),
        };
        f(conn)
    }

    /// Returns a reader connection to the pool (`None`: one that failed to open), closing
    /// it if the pool is over its bound (a nested read's extra one).
    fn give_back(&self, conn: Option<Connection>) {
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        match conn {
            Some(c) if pool.open <= MAX_READERS => pool.idle.push(c),
            _ => pool.open -= 1,
        }
        drop(pool);
        self.freed.notify_one();
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

    /// Many threads reading at once never hold more than MAX_READERS connections, and a
    /// read nested in a read on the same thread does not wait for itself.
    #[test]
    fn readers_are_bounded_and_nesting_does_not_deadlock() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&dir.path().join("t.sqlite"), Schema::Store).unwrap());
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let threads: Vec<_> = (0..64)
            .map(|_| {
                let (db, now, most) = (db.clone(), now.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        db.read(|c| {
                            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(n, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_micros(200));
                            let v: i64 = c.query_row("SELECT 1", [], |r| r.get(0))?;
                            now.fetch_sub(1, Ordering::SeqCst);
                            Ok::<_, Error>(v)
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let most = most.load(Ordering::SeqCst);
        assert!(most <= MAX_READERS, "{most} readers at once");
        assert!(most > 1, "reads never overlapped: the test proves nothing");
        // MAX_READERS + 1 nested reads on one thread.
        fn nest(db: &Db, depth: usize) -> Result<usize, Error> {
            db.read(|_| {
                if depth == 0 {
                    Ok(0)
                } else {
                    Ok(nest(db, depth - 1)? + 1)
                }
            })
        }
        assert_eq!(nest(&db, MAX_READERS + 1).unwrap(), MAX_READERS + 1);
        let pool = db.readers.lock().unwrap();
        assert_eq!(pool.open, pool.idle.len());
        assert!(pool.open <= MAX_READERS, "{} kept open", pool.open);
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
