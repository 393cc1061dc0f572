//! Content addressing for cidmirror.
pub mod dir;
mod error;
pub mod hash;
pub mod importer;
pub mod params;
pub mod pb;

pub use error::{Error, Result};
