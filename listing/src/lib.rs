//! cidmirror's published format: what one snapshot looks like as a UnixFS tree, defined
//! once for the publisher that writes it and the followers that rebuild it.
//!
//! A follower holding snapshot N-1 moves to N by applying N's `changes.jsonl` to its copy
//! of the listing and rebuilding the directories itself (DESIGN.md, "Refresh"); that is
//! correct only while both sides agree on every path, name and link, so both call the
//! same code here:
//! - [`layout`]: the paths of the listing (`<repo>/os/<arch>/`, `index/`, `by-sha256/`);
//! - [`Manifest`] (`manifest.json`) and [`ChangeLine`] (`changes.jsonl`);
//! - [`Item`]: one file of a repository directory with its signature, aliases and `desc`;
//! - [`Listing`]: the items of one snapshot, [`Listing::next`] to apply a change list and
//!   [`Listing::build`] to make every directory block; the publisher's [`publish`] writes
//!   the manifest and changes first and then builds the same tree;
//! - [`pacman`]: the `desc` entry and the `<repo>.db` archive.
//!
//! ```
//! use cidmirror_listing::{Listing, Manifest, layout};
//! use cidmirror_store::importer::VecSink;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let m = Manifest::parse(br#"{"format":1,"profile":"unixfs-v1-2025","upstream":"u","repos":[]}"#, "example")?;
//! let entry = |b: &[u8]| cidmirror_store::dir::DirEntry { cid: cidmirror_store::hash::raw_cid(cidmirror_store::hash::HashAlg::Sha2_256, b), tsize: b.len() as u64 };
//! let mut empty = Listing::new(m, entry(b"m"), entry(b"c"), Vec::new())?;
//! let root = empty.build(&mut VecSink::default())?;
//! assert!(layout::is_dir_path("by-sha256"));
//! assert_ne!(root.cid, entry(b"m").cid);
//! # Ok(()) }
//! ```

pub mod aur;
mod build;
pub mod changes;
mod error;
mod item;
pub mod layout;
mod live;
mod manifest;
pub mod pacman;

pub use build::{Facts, Listing, ListingInput, Published, WalkedDesc, publish};
pub use changes::{ChangeLine, Op};
pub use error::{Error, Result};
pub use item::{FileRef, Item, ItemKind, Key};
pub use manifest::{Manifest, RepoSummary};
pub use pacman::DbArchive;
