//! The [`Store`] trait: where blocks live, whatever holds them.
//!
//! Every implementation (embedded today; Kubo and IPFS Cluster later) runs the same
//! conformance suite (`store/tests/store/conformance.rs`).

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::pin::Pin as StdPin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use cid::Cid;
use futures::Stream;
use tokio::io::AsyncRead;

use crate::importer::ImportedFile;
use crate::params::ImportParams;
use crate::{Error, Result};
use cidmirror_schema::Sha256;

/// A block: bytes and the CID that names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The name.
    pub cid: Cid,
    /// The bytes.
    pub data: Bytes,
}

/// A stream of file bytes, in order.
pub type ByteStream = StdPin<Box<dyn Stream<Item = Result<Bytes>> + Send + 'static>>;

/// Where the bytes of a new file come from.
pub enum FileSource {
    /// A local file, read directly.
    Path(PathBuf),
    /// A file already open (e.g. an upstream file checked as it was opened), read directly
    /// on the store's thread: no stream in between. `path` names it in errors.
    Open {
        /// The file, positioned at its start.
        file: std::fs::File,
        /// Its name.
        path: PathBuf,
    },
    /// Any byte stream (an HTTP body, stdin).
    Reader(Box<dyn AsyncRead + Send + Unpin>),
    /// Buffers pushed as they arrive (e.g. the chunks of a download).
    Chunks(ChunkStream),
}

/// Buffers of a file, in order; an error ends the import.
pub type ChunkStream = StdPin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send + 'static>>;

impl FileSource {
    /// The source as an `AsyncRead` (a path is opened lazily by the store instead).
    pub fn into_async_read(self) -> Option<Box<dyn AsyncRead + Send + Unpin>> {
        match self {
            FileSource::Path(_) => None,
            FileSource::Open { file, .. } => Some(Box::new(tokio::fs::File::from_std(file))),
            FileSource::Reader(r) => Some(r),
            FileSource::Chunks(c) => Some(Box::new(tokio_util::io::StreamReader::new(c))),
        }
    }
}

impl fmt::Debug for FileSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileSource::Path(p) => write!(f, "Path({})", p.display()),
            FileSource::Open { path, .. } => write!(f, "Open({})", path.display()),
            FileSource::Reader(_) => f.write_str("Reader(..)"),
            FileSource::Chunks(_) => f.write_str("Chunks(..)"),
        }
    }
}

/// Called with the number of file bytes just imported (a delta; sum them for a total).
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// How to import a file.
#[derive(Clone, Default)]
pub struct PutOptions {
    /// Import parameters (from the publisher's profile).
    pub params: ImportParams,
    /// Pin the root under this reason, atomically with the import.
    pub pin: Option<PinReason>,
    /// When that pin lapses, if ever.
    pub pin_expires_at: Option<SystemTime>,
    /// What the file must be (from a repository index): the import fails, and nothing is
    /// kept under the file's name, if the bytes differ; it stops reading as soon as there
    /// are more bytes than expected.
    pub expect: Option<Expected>,
    /// Progress reports.
    pub progress: Option<Progress>,
}

/// The size and SHA-256 a file must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the whole file.
    pub sha256: Sha256,
}

/// What `put_blocks` added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlocksWritten {
    /// Blocks that were not held before.
    pub new_blocks: u64,
    /// Their bytes.
    pub new_bytes: u64,
}

impl fmt::Debug for PutOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PutOptions")
            .field("params", &self.params)
            .field("pin", &self.pin)
            .field("expect", &self.expect)
            .finish_non_exhaustive()
    }
}

/// Why a DAG is kept (`add`, `snapshot:42`, `grace:core`). 1 to 128 printable characters.
///
/// A pin is recursive (it keeps every block its root reaches) unless its reason starts with
/// [`PinReason::DIRECT_PREFIX`] (`direct:`): a direct pin keeps only the pinned block
/// itself. A follower pins a snapshot's directory nodes that way, so that holding the
/// listing does not mean holding every package file the directories link to. The depth is
/// part of the reason rather than a separate flag so that every store (and the pin table)
/// keeps one key per pin, (root, reason).
///
/// A reason starting with [`PinReason::DIRS_PREFIX`] (`dirs:`) keeps the pinned directory
/// and every directory and HAMT shard under it, but not the files they name: what a
/// follower holds of a snapshot's listing, in one pin instead of one direct pin per
/// directory block (85,000 rows per snapshot at 60,000 packages). Only the embedded store
/// has such pins; the others refuse them ([`Error::UnsupportedPin`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PinReason(String);

impl PinReason {
    /// A reason built by this crate from known-good parts (printable, at most 128 bytes).
    pub(crate) fn from_str_unchecked(s: String) -> Self {
        debug_assert!(!s.is_empty() && s.len() <= 128);
        PinReason(s)
    }

    /// `manual`: the reason of a pin nobody named.
    pub fn default_reason() -> Self {
        PinReason("manual".to_string())
    }

    /// The reason text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What a reason starts with to make its pins direct (block only, links not followed).
    pub const DIRECT_PREFIX: &'static str = "direct:";

    /// A direct pin reason, `direct:<name>`: pins under it keep only the pinned block, not
    /// what it links to (see [`PinReason`]). Infallible so that callers building reasons
    /// from their own names need no error path: control characters in `name` become `_`
    /// and it is cut (at a character boundary) to fit the 128-byte limit.
    pub fn direct(name: &str) -> PinReason {
        Self::prefixed(Self::DIRECT_PREFIX, name)
    }

    fn prefixed(prefix: &str, name: &str) -> PinReason {
        let mut s = String::from(prefix);
        for c in name.chars() {
            let c = if c.is_control() { '_' } else { c };
            if s.len() + c.len_utf8() > 128 {
                break;
            }
            s.push(c);
        }
        PinReason(s)
    }

    /// What a reason starts with to make its pins keep directories only (see [`PinReason`]).
    pub const DIRS_PREFIX: &'static str = "dirs:";

    /// A directories-only pin reason, `dirs:<name>` (see [`PinReason`]; `name` is treated
    /// as in [`PinReason::direct`]).
    pub fn dirs(name: &str) -> PinReason {
        Self::prefixed(Self::DIRS_PREFIX, name)
    }

    /// Whether pins under this reason keep directories only.
    pub fn is_dirs(&self) -> bool {
        Self::is_dirs_reason(&self.0)
    }

    /// [`PinReason::is_dirs`] for reason text as stored.
    pub(crate) fn is_dirs_reason(reason: &str) -> bool {
        reason.starts_with(Self::DIRS_PREFIX)
    }

    /// Whether pins under this reason are direct: they keep the pinned block only.
    pub fn is_direct(&self) -> bool {
        Self::is_direct_reason(&self.0)
    }

    /// Whether pins under this reason keep the whole DAG below the pinned block (neither
    /// direct nor directories-only).
    pub fn is_recursive(&self) -> bool {
        !self.is_direct() && !self.is_dirs()
    }

    /// [`PinReason::is_direct`] for reason text as stored.
    pub(crate) fn is_direct_reason(reason: &str) -> bool {
        reason.starts_with(Self::DIRECT_PREFIX)
    }
}

impl FromStr for PinReason {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if s.is_empty() || s.len() > 128 || s.chars().any(char::is_control) {
            return Err(Error::InvalidPinReason(s.to_string()));
        }
        Ok(PinReason(s.to_string()))
    }
}

impl fmt::Display for PinReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// Root of the kept DAG.
    pub cid: Cid,
    /// Why.
    pub reason: PinReason,
    /// When it was made.
    pub created_at: SystemTime,
    /// When it stops counting, if ever.
    pub expires_at: Option<SystemTime>,
}

/// Garbage collection settings.
#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// Blocks and files written less than this long ago are kept even if unpinned: they
    /// may belong to an import that has not pinned its root yet (in this or another process).
    pub grace: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            grace: Duration::from_secs(3600),
        }
    }
}

/// What a garbage collection removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Expired pins deleted.
    pub pins_expired: u64,
    /// Blocks no pin reaches any more.
    pub blocks_removed: u64,
    /// Whole files deleted.
    pub files_removed: u64,
    /// Bytes freed on disk (files and inline blocks).
    pub bytes_freed: u64,
    /// Blocks still held.
    pub blocks_kept: u64,
}

/// The result of importing a CAR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarImport {
    /// Roots named in the CAR header.
    pub roots: Vec<Cid>,
    /// Blocks read (all verified).
    pub blocks: u64,
    /// Block bytes read.
    pub bytes: u64,
}

/// Holds blocks, files and pins.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Imports a file under `opts.params`, keeping its blocks (and, optionally, pinning the
    /// root in the same step, so no garbage collection can fall in between).
    async fn put_file(&self, source: FileSource, opts: PutOptions) -> Result<ImportedFile>;

    /// Keeps blocks, each first checked against its CID; all or nothing. Says how many of
    /// them were new.
    async fn put_blocks(&self, blocks: Vec<Block>) -> Result<BlocksWritten>;

    /// Imports a CAR (every block verified), all or nothing, pinning its roots if asked.
    async fn import_car(
        &self,
        car: Box<dyn AsyncRead + Send + Unpin>,
        what: String,
        pin: Option<PinReason>,
    ) -> Result<CarImport>;

    /// A block's bytes, if held.
    async fn get_block(&self, cid: &Cid) -> Result<Option<Bytes>>;

    /// Whether a block is held.
    async fn has(&self, cid: &Cid) -> Result<bool>;

    /// Whether each of many blocks is held, in order (one round trip where the store can).
    async fn has_many(&self, cids: &[Cid]) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(cids.len());
        for c in cids {
            out.push(self.has(c).await?);
        }
        Ok(out)
    }

    /// The bytes of the UnixFS file (or raw block) `cid`, within `range` if given
    /// (clamped to the file; a start past the end is an error). Returns the file's full size.
    async fn read(&self, cid: &Cid, range: Option<Range<u64>>) -> Result<(u64, ByteStream)>;

    /// Pins `cid` for `reason`, until `expires_at` if given: recursively, or only the block
    /// itself if the reason is direct ([`PinReason::direct`]). Re-pinning with the same
    /// reason updates the expiry. By default a [`Store::pin_all`] of one root.
    async fn pin(
        &self,
        cid: &Cid,
        reason: &PinReason,
        expires_at: Option<SystemTime>,
    ) -> Result<()> {
        self.pin_all(std::slice::from_ref(cid), reason, expires_at)
            .await
    }

    /// Pins many roots for one reason in one step (all or nothing).
    async fn pin_all(
        &self,
        cids: &[Cid],
        reason: &PinReason,
        expires_at: Option<SystemTime>,
    ) -> Result<()>;

    /// Removes one pin; true if it existed.
    async fn unpin(&self, cid: &Cid, reason: &PinReason) -> Result<bool>;

    /// Removes every pin with this reason (e.g. the temporary pins of an import session);
    /// returns how many.
    async fn unpin_all(&self, reason: &PinReason) -> Result<u64>;

    /// Every pin, expired or not.
    async fn pins(&self) -> Result<Vec<Pin>>;

    /// Deletes expired pins and everything no remaining pin reaches (a direct pin reaches
    /// only its own block).
    async fn gc(&self, opts: GcOptions) -> Result<GcReport>;

    /// How many `put_file` calls the store would like in flight for each one the caller
    /// would otherwise run: a store that commits files waiting beside each other together
    /// (all of them) does better with more of them. Callers bound their
    /// downloads separately. 1 by default.
    fn put_fanout(&self) -> usize {
        1
    }

    /// A local file that should hold the bytes with this SHA-256, if the store keeps whole
    /// files on this machine: an importer that expects those bytes (a publisher rerun after
    /// a crash) reads them from there instead of fetching them again. Nothing is promised
    /// about the bytes: the caller imports them with [`PutOptions::expect`], which checks
    /// them. Stores that keep only blocks, or keep them elsewhere, answer `None`.
    async fn local_file(&self, _sha256: &Sha256) -> Result<Option<PathBuf>> {
        Ok(None)
    }

    /// Files the store lost to corruption and does not hold again, with their sizes: what a
    /// publisher fetches again from its upstream. A store that checks its own bytes at rest
    /// (the embedded store) first re-hashes the files changed on disk since their last
    /// check, quarantining the bad ones. Others answer nothing: a node verifies its own.
    async fn lost_files(&self) -> Result<Vec<(Sha256, u64)>> {
        Ok(Vec::new())
    }
}
