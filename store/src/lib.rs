//! Content addressing for cidmirror: bytes in, the CIDs Kubo would give out, blocks kept.
//!
//! - [`importer`] turns a byte stream into UnixFS blocks exactly as `ipfs add` does under a
//!   [`Profile`] (default `unixfs-v1-2025`), computing the file's SHA-256 in the same pass;
//! - [`dir`] builds directories and HAMT shards as Kubo does, from any set of entries;
//! - [`car`] reads (verifying every block) and writes CAR v1;
//! - [`Store`] is where blocks live; [`EmbeddedStore`] keeps them in a local directory with
//!   no daemon, each package once as a whole file; [`unixfs`] reads files and paths back
//!   from any store;
//! - [`sign`] builds and checks the publisher's snapshot signatures (shared by the publisher
//!   and its followers, so neither depends on the other).
//!
//! ```no_run
//! use cidmirror_store::{EmbeddedStore, FileSource, Profile, PutOptions, Store};
//! # async fn demo() -> cidmirror_store::Result<()> {
//! let store = EmbeddedStore::open(std::path::Path::new("/var/lib/cidmirror/store"))?;
//! let opts = PutOptions { params: Profile::UnixfsV1_2025.params(), ..Default::default() };
//! let f = store.put_file(FileSource::Path("foo-1.0-1-x86_64.pkg.tar.zst".into()), opts).await?;
//! println!("{} {} bytes sha256 {}", f.cid, f.size, f.sha256);
//! # Ok(()) }
//! ```

pub mod add;
mod api;
mod batch;
pub mod car;
mod cluster;
pub mod dir;
mod embedded;
mod error;
pub mod export;
pub mod hash;
pub mod importer;
mod kubo;
mod ledger;
pub mod params;
pub mod pb;
pub mod scrub;
pub mod sign;
pub mod unixfs;
pub mod volunteers;

pub use api::{
    Block, BlocksWritten, ByteStream, CarImport, ChunkStream, Expected, FileSource, GcOptions,
    GcReport, Pin, PinReason, Progress, PutOptions, Store,
};
pub use cid::Cid;
pub use cidmirror_schema::Sha256;
pub use cluster::{ClusterOptions, ClusterStore};
pub use embedded::{
    EmbeddedStore, IntegrityStats, Scrubbed, StoreStats, TrustedFile, VerifyReport,
};
pub use error::{Error, Result};
pub use importer::ImportedFile;
pub use kubo::KuboStore;
pub use params::{ImportParams, Profile};
