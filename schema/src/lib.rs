//! cidmirror's SQLite schema: the one place that knows table layouts.
//!
//! Every crate that keeps state in SQLite goes through this crate: [`Db`] opens a database
//! in WAL mode, applies the numbered [`migrations`] and hands out connections; the typed
//! query modules ([`blocks`], [`files`], [`roots`], [`pins`]) are the only code that writes
//! SQL. Values cross the boundary as newtypes ([`Sha256`], [`FileId`], [`cid::Cid`]), never as
//! loose strings or byte vectors. It also holds [`text`], the one rule for showing text
//! from outside on a terminal, since every crate and the binary need it.
//!
//! ```no_run
//! use cidmirror_schema::{Db, Schema, Sha256, files};
//! # fn main() -> Result<(), cidmirror_schema::Error> {
//! let db = Db::open(std::path::Path::new("/var/lib/cidmirror/store.sqlite"), Schema::Store)?;
//! let sha: Sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse()?;
//! let known = db.read(|conn| files::get(conn, &sha))?;
//! println!("{known:?}");
//! # Ok(()) }
//! ```

mod db;
pub mod migrations;
pub mod publisher;
mod queries;
pub mod text;
mod types;

pub use db::{Db, WriteTx};
pub use migrations::Schema;
pub use queries::{blocks, corruptions, covers, files, pins, roots};
/// A connection, as the read queries take it.
pub use rusqlite::Connection;
pub use types::{FileId, Sha256, UnixTime};

/// Errors of the schema layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQLite refused a statement or could not open the database.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was written by a newer cidmirror than this one.
    #[error(
        "database schema version {found} is newer than this cidmirror understands ({known}); upgrade cidmirror"
    )]
    TooNew {
        /// Version recorded in the database.
        found: u32,
        /// Highest version this build knows.
        known: u32,
    },
    /// A value in the database or in an argument does not have the expected form.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// What was being parsed (e.g. "sha256").
        what: &'static str,
        /// Why it was rejected.
        detail: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
