//! `manifest.json`: what a snapshot is, written by the publisher, read by every follower.

use cidmirror_store::Profile;
use serde::{Deserialize, Serialize};

use crate::layout::{FORMAT_AUR, FORMAT_PACMAN};
use crate::{Error, FileRef, Result};

/// One repository/architecture of a snapshot, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoSummary {
    /// Repository.
    pub repo: String,
    /// Architecture.
    pub arch: String,
    /// Number of packages.
    #[serde(default)]
    pub packages: u64,
    /// Their total size.
    #[serde(default)]
    pub bytes: u64,
    /// The database archive's file name (`core.db.tar.gz`, or `core.db` when upstream has
    /// only that name).
    pub database: String,
    /// The files archive's file name, if upstream has one.
    #[serde(default)]
    pub files: Option<String>,
    /// Whether the database is signed upstream (a `.db.sig` exists): followers then fetch
    /// it verbatim instead of rebuilding it from `index/`.
    #[serde(default)]
    pub signed: bool,
    /// The database archive as published (a follower walking the listing learns its size
    /// and SHA-256 here instead of reading it). Filled by [`crate::publish`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_file: Option<FileRef>,
    /// The files archive as published, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_file: Option<FileRef>,
}

/// `manifest.json`. The publisher writes every field; a reader needs only `format`,
/// `profile`, `upstream` and `repos` (the rest default when absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Listing format version ([`FORMAT_PACMAN`], or [`FORMAT_AUR`] with AUR bases).
    pub format: u32,
    /// The import profile: fixes the CID of every file of the snapshot.
    pub profile: String,
    /// The upstream's canonical URL.
    pub upstream: String,
    /// The upstream's `lastupdate` (or the state derived from its databases).
    #[serde(default)]
    pub lastupdate: String,
    /// `lastupdate` as an RFC 3339 time, when it is a Unix time (never the local clock:
    /// two publishers of one upstream state write the same manifest).
    #[serde(default)]
    pub created: Option<String>,
    /// The repositories, in order.
    pub repos: Vec<RepoSummary>,
    /// The previous snapshot's root.
    #[serde(default)]
    pub previous: Option<String>,
    /// The CID of `changes.jsonl`.
    #[serde(default)]
    pub changes: String,
    /// Its number of lines.
    #[serde(default)]
    pub changed_files: u64,
    /// Number of AUR package bases (absent when there are none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub aur_bases: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Manifest {
    /// Parses a manifest; `what` names it in errors (`manifest.json of <root>`). A format
    /// other than [`FORMAT_PACMAN`] and [`FORMAT_AUR`] is refused.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Manifest> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| Error::invalid(what, e.to_string()))?;
        if m.format != FORMAT_PACMAN && m.format != FORMAT_AUR {
            return Err(Error::invalid(
                what,
                format!(
                    "listing format {} (this version reads formats {FORMAT_PACMAN} and {FORMAT_AUR})",
                    m.format
                ),
            ));
        }
        Ok(m)
    }

    /// The manifest as published: pretty JSON and a final newline.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::invalid("manifest.json", format!("encoding: {e}")))?;
        out.push(b'\n');
        Ok(out)
    }

    /// The profile, checked.
    pub fn profile(&self) -> Result<Profile> {
        self.profile
            .parse()
            .map_err(|e| Error::invalid("manifest profile", format!("{e}")))
    }
}

/// The `created` time of a manifest: the upstream's `lastupdate` when it is a Unix time.
pub(crate) fn created_of(lastupdate: &str) -> Option<String> {
    let secs: u64 = lastupdate.trim().parse().ok()?;
    let t = std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(secs))?;
    Some(humantime::format_rfc3339_seconds(t).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_other_than_1_are_refused_naming_the_file() {
        let err = Manifest::parse(
            br#"{"format":3,"profile":"unixfs-v1-2025","upstream":"u","repos":[]}"#,
            "manifest.json of bafy",
        )
        .unwrap_err();
        assert!(err.to_string().contains("of bafy"), "{err}");
        assert!(err.to_string().contains("format 3"), "{err}");
        let err = Manifest::parse(b"{", "m").unwrap_err();
        assert!(err.to_string().starts_with("m: "), "{err}");
    }

    #[test]
    fn created_is_the_upstream_time() {
        assert_eq!(
            created_of("1700000000").as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert_eq!(created_of("yesterday"), None);
    }
}
