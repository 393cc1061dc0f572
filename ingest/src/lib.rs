//! cidmirror's publisher: follow a pacman repository upstream, verify every file, publish
//! each upstream state as one signed, immutable snapshot.
//!
//! - [`aur`] reads what an AUR package base's `.SRCINFO` says to fetch, and checks it;
//! - [`upstream`] reads an upstream mirror (HTTP(S) or a local directory) with stall
//!   timeouts, retries and resumed downloads;
//! - [`pacman`] parses and validates repository databases;
//! - [`listing`] lays a snapshot out as a UnixFS tree (packages, index, by-sha256,
//!   manifest, changes);
//! - [`publish::Publisher`] runs a sync end to end and records snapshots;
//! - [`keys`] signs them;
//! - [`repair::UpstreamRepair`] fetches a kept file found corrupt again from the upstream.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn cidmirror_store::Store>) -> cidmirror_ingest::Result<()> {
//! use cidmirror_ingest::config::{MirrorConfig, MirrorOptions};
//! use cidmirror_ingest::publish::{NoProgress, Outcome, Publisher};
//! let opts = MirrorOptions::from_config(MirrorConfig {
//!     upstream: Some("https://geo.mirror.pkgbuild.com/".into()),
//!     repos: vec!["core".into()],
//!     ..Default::default()
//! })?;
//! let p = Publisher::open("/var/lib/cidmirror".as_ref(), store, opts, std::sync::Arc::new(NoProgress))?;
//! if let Outcome::Published(s) = p.sync_once().await? {
//!     println!("snapshot {} is {}", s.seq, s.root);
//! }
//! # Ok(()) }
//! ```

pub mod aur;
pub mod config;
mod error;
pub mod keys;
pub mod pacman;
pub mod publish;
pub mod repair;
pub mod spool;
mod tee;
pub mod upstream;

pub use error::{Error, Result};
