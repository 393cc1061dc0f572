//! The publisher's ed25519 key and what it signs.
//!
//! A snapshot is signed over (sequence, root CID, previous root CID); the message and its
//! verification live in [`cidmirror_store::sign`] so that followers can check signatures
//! without depending on this crate, and are re-exported here for the publisher's callers.
//! The key file holds the 32-byte secret seed and is created on first use with mode 0600.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use cid::Cid;
use ed25519_dalek::{Signer, SigningKey};

pub use cidmirror_store::sign::{snapshot_message, verify_snapshot};

use crate::{Error, Result};

/// The publisher's signing key.
pub struct PublisherKey {
    key: SigningKey,
    path: PathBuf,
}

impl PublisherKey {
    /// Loads the key at `path`, creating it (mode 0600, written atomically) if absent.
    pub fn load_or_create(path: &Path) -> Result<PublisherKey> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    Error::Config(format!(
                        "{}: a publisher key file holds 32 bytes, this one {}",
                        path.display(),
                        bytes.len()
                    ))
                })?;
                Ok(PublisherKey {
                    key: SigningKey::from_bytes(&seed),
                    path: path.to_path_buf(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(path),
            Err(source) => Err(Error::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn create(path: &Path) -> Result<PublisherKey> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| io(std::io::Error::other(format!("no randomness: {e}"))))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        // A temp name of our own (two first runs at once must not share one), linked into
        // place only if no key is there yet.
        let tmp = path.with_extension(format!(
            "tmp.{}.{}",
            std::process::id(),
            hex::encode(&seed[..4])
        ));
        {
            let mut f = std::fs::File::options()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io)?;
            f.write_all(&seed).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            // A concurrent first run won: use its key.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Self::load_or_create(path);
            }
            Err(e) => return Err(io(e)),
        }
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        tracing::info!("created publisher key {}", path.display());
        Ok(PublisherKey {
            key: SigningKey::from_bytes(&seed),
            path: path.to_path_buf(),
        })
    }

    /// The public key, 64 hex digits (what followers are configured with).
    pub fn public_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    /// Where the key lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Signs a snapshot.
    pub fn sign_snapshot(&self, seq: u64, root: &Cid, previous: Option<&Cid>) -> Vec<u8> {
        self.key
            .sign(&snapshot_message(seq, root, previous))
            .to_bytes()
            .to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_loaded_and_signatures_verify() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys/publisher.key");
        let k = PublisherKey::load_or_create(&p).unwrap();
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&p).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
        let again = PublisherKey::load_or_create(&p).unwrap();
        assert_eq!(k.public_hex(), again.public_hex());
        let root: Cid = "bafkqaaa".parse().unwrap();
        let sig = k.sign_snapshot(3, &root, None);
        assert!(verify_snapshot(&k.public_hex(), 3, &root, None, &sig).unwrap());
        assert!(!verify_snapshot(&k.public_hex(), 4, &root, None, &sig).unwrap());
        assert!(!verify_snapshot(&k.public_hex(), 3, &root, Some(&root), &sig).unwrap());
        let other = PublisherKey::load_or_create(&dir.path().join("other.key")).unwrap();
        assert!(!verify_snapshot(&other.public_hex(), 3, &root, None, &sig).unwrap());
    }

    #[test]
    fn a_damaged_key_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("publisher.key");
        std::fs::write(&p, b"short").unwrap();
        let err = PublisherKey::load_or_create(&p).err().unwrap().to_string();
        assert!(
            err.contains("publisher.key") && err.contains("32 bytes"),
            "{err}"
        );
    }
}
