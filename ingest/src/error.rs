//! The ingest crate's one error type.

use std::path::PathBuf;

/// What can go wrong while following an upstream and publishing snapshots. Messages name
/// the repo, entry, file or URL, and for mismatches both expected and actual values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named local file or directory.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A repository database that cannot be read as a whole (not an archive, bad compression).
    #[error("repo {repo}: database {file}: {detail}")]
    Db {
        /// The repository.
        repo: String,
        /// The database file name.
        file: String,
        /// What is wrong.
        detail: String,
    },
    /// One malformed entry of a repository database.
    #[error("repo {repo}: entry {entry}: field {field}: {detail}")]
    Entry {
        /// The repository.
        repo: String,
        /// The entry (its directory in the database archive, e.g. `foo-1.0-1`).
        entry: String,
        /// The field (`%FILENAME%`, ...), or `desc` for the entry as a whole.
        field: String,
        /// What is wrong.
        detail: String,
    },
    /// An HTTP answer other than success.
    #[error("{url}: HTTP {status}")]
    Http {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// A transfer that failed (connection, TLS, protocol, reset).
    #[error("{url}: {detail}")]
    Transfer {
        /// The URL (or local path).
        url: String,
        /// What happened.
        detail: String,
    },
    /// TLS refused the server (its certificate does not verify, or no protocol in common).
    /// Not retried: waiting does not fix a certificate.
    #[error("{url}: TLS refused the server {host}: {detail}")]
    Tls {
        /// The URL.
        url: String,
        /// The server's host name, as the certificate had to name it.
        host: String,
        /// What TLS said.
        detail: String,
    },
    /// A transfer that sent nothing for too long.
    #[error("{url}: stalled: nothing received for {secs} s")]
    Stalled {
        /// The URL.
        url: String,
        /// The stall timeout that expired.
        secs: u64,
    },
    /// A small upstream file whose content is not what it must be (`lastupdate`).
    #[error("{url}: {detail}")]
    Invalid {
        /// The URL or path.
        url: String,
        /// What is wrong; quoted content is escaped.
        detail: String,
    },
    /// A file larger than allowed for what it is.
    #[error("{url}: larger than the {limit} bytes allowed")]
    TooLarge {
        /// The URL or path.
        url: String,
        /// The limit.
        limit: u64,
    },
    /// An upstream address that cannot be used.
    #[error("invalid upstream {0:?}: use http://, https://, file:// or a directory path")]
    BadUpstream(String),
    /// Configuration that cannot be used.
    #[error("configuration: {0}")]
    Config(String),
    /// The store failed (this includes files that failed verification).
    #[error(transparent)]
    Store(#[from] cidmirror_store::Error),
    /// The publisher's database failed.
    #[error(transparent)]
    Schema(#[from] cidmirror_schema::Error),

    #[error(transparent)]
    Listing(#[from] cidmirror_listing::Error),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
