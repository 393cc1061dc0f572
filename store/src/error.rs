//! The store crate's one error type.

use std::path::PathBuf;

use cid::Cid;

/// Everything that can go wrong while importing, storing, reading or moving content.
/// Messages name the thing (file, CID, entry) and, for mismatches, expected and actual.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named file or directory.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// An I/O error on a stream that has no path (stdin, a socket, a pipe).
    #[error("{what}: {source}")]
    Stream {
        /// What was being read or written.
        what: &'static str,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The index database failed.
    #[error(transparent)]
    Db(#[from] cidmirror_schema::Error),
    /// A block that is not held (and, for the embedded store, not reachable from here).
    #[error("block {0} not found")]
    BlockNotFound(Box<Cid>),
    /// A path below a root does not exist.
    #[error("{root}/{path}: no such file or directory")]
    PathNotFound {
        /// Root CID of the lookup.
        root: Box<Cid>,
        /// The path that was looked up.
        path: String,
    },
    /// A directory was expected.
    #[error("{0}: not a directory")]
    NotADirectory(String),
    /// A file was expected.
    #[error("{0}: is a directory, not a file")]
    IsADirectory(String),
    /// A string that is not a CID (or not a CID followed by a path).
    #[error("invalid CID {input:?}: {reason}")]
    InvalidCid {
        /// What was given.
        input: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A block whose bytes do not hash to its CID.
    #[error("block {cid} does not match its CID: its bytes hash to {actual}")]
    HashMismatch {
        /// The CID the block claims.
        cid: Box<Cid>,
        /// Hex digest of the bytes actually received.
        actual: String,
    },
    /// A block that is not valid dag-pb / UnixFS.
    #[error("block {cid}: malformed {what}: {detail}")]
    Malformed {
        /// The block.
        cid: Box<Cid>,
        /// What was being decoded ("dag-pb", "UnixFS data").
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A hash function or codec this build does not handle.
    #[error("unsupported {what} 0x{code:x}")]
    Unsupported {
        /// "hash function" or "codec".
        what: &'static str,
        /// The multicodec code.
        code: u64,
    },
    /// A pin this store cannot keep (a directories-only pin on a Kubo or Cluster store).
    #[error("pin reason {0:?}: directories-only pins are kept by the embedded store only")]
    UnsupportedPin(String),
    /// Import parameters that cannot be used together.
    #[error("invalid import parameters: {0}")]
    InvalidParams(String),
    /// A directory entry name that UnixFS cannot hold.
    #[error("invalid entry name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Two entries of one directory with the same name.
    #[error("duplicate entry {0:?} in directory")]
    DuplicateName(String),
    /// Two names whose HAMT hashes agree in all 64 bits: UnixFS cannot shard them.
    #[error("HAMT: names {0:?} and {1:?} have the same 64-bit hash")]
    HashCollision(String, String),
    /// A CAR stream that is not valid CAR v1.
    #[error("CAR {what}: {detail}")]
    Car {
        /// Which CAR (a path, or "stream").
        what: String,
        /// What is wrong, with the byte offset where it was found.
        detail: String,
    },
    /// A byte range outside a file.
    #[error("range {start}..{end} is outside {cid} of {size} bytes")]
    RangeNotSatisfiable {
        /// The file.
        cid: Box<Cid>,
        /// First byte asked for.
        start: u64,
        /// End (exclusive) asked for.
        end: u64,
        /// The file's size.
        size: u64,
    },
    /// A file whose bytes are not what its index entry says.
    #[error(
        "expected {expected_size} bytes with sha256 {expected_sha256}, got {actual_size} bytes with sha256 {actual_sha256}"
    )]
    Mismatch {
        /// Size the index gives.
        expected_size: u64,
        /// Size received.
        actual_size: u64,
        /// SHA-256 the index gives.
        expected_sha256: String,
        /// SHA-256 of what was received.
        actual_sha256: String,
    },
    /// A file that grew past the size its index entry gives (reading stopped there).
    #[error("more than the expected {expected_size} bytes")]
    TooLong {
        /// Size the index gives.
        expected_size: u64,
    },
    /// A pin reason that is empty or unprintable.
    #[error("invalid pin reason {0:?}: use 1 to 128 printable characters")]
    InvalidPinReason(String),
    /// A publisher public key that cannot be used (not 64 hex digits, not an ed25519
    /// point); the message names the key as given.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A Kubo (or Kubo-compatible) node's RPC API failed or refused a call.
    #[error("IPFS node at {api}: {call}: {message}")]
    Kubo {
        /// The API's URL.
        api: String,
        /// The RPC path (`/dag/import`) or step.
        call: &'static str,
        /// What the node said (or why there was no answer).
        message: String,
    },
    /// An IPFS Cluster's REST API failed or refused a call.
    #[error("IPFS Cluster at {api}: {call}: {message}")]
    Cluster {
        /// The REST API's URL.
        api: String,
        /// The call (`POST /pins/{cid}`).
        call: String,
        /// What the cluster said (or why there was no answer).
        message: String,
    },
    /// A blocking task was cancelled or panicked.
    #[error("background task failed: {0}")]
    Task(String),
}

impl Error {
    /// A block that is not held.
    pub fn not_found(cid: &Cid) -> Self {
        Error::BlockNotFound(Box::new(*cid))
    }

    /// A block that is not valid `what`.
    pub fn malformed(cid: &Cid, what: &'static str, detail: impl Into<String>) -> Self {
        Error::Malformed {
            cid: Box::new(*cid),
            what,
            detail: detail.into(),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
