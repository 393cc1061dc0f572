//! The listing crate's one error type.

use std::path::PathBuf;

/// Why a listing could not be read or built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Building blocks failed (a name given twice, an encoding error).
    #[error(transparent)]
    Store(#[from] cidmirror_store::Error),
    /// Something a listing file says is not in the format: `what` names the file and line.
    #[error("{what}: {detail}")]
    Invalid {
        /// The file (and line) at fault.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// A scratch file could not be written or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn invalid(what: impl Into<String>, detail: impl Into<String>) -> Error {
        Error::Invalid {
            what: what.into(),
            detail: detail.into(),
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
