//! AUR package bases in a snapshot: each base's `.SRCINFO` and its verified sources.
//!
//! ```text
//! aur/<pkgbase>/.SRCINFO                  verbatim, as read from the base's git repository
//! aur/<pkgbase>/<file>                    every cached source under its makepkg file name
//! index/aur/<pkgbase>/sources.json        what a follower needs of the base (the AurBase
//!                                         below): commit, sources with URL, size, hashes, CIDs
//! by-sha256/, by-sha512/, by-b2/          every cached source by its digests
//! ```
//! A listing with AUR bases is format 2 (a reader of format 1 refuses it by its manifest);
//! one without is format 1, byte for byte as before.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::layout::{self, is_component};
use crate::{Error, FileRef, Result};

/// The name of the `.SRCINFO` file in `aur/<pkgbase>/`.
pub const SRCINFO: &str = ".SRCINFO";

/// The most sources one base may have (as the publisher's `.SRCINFO` reader allows).
pub const MAX_SOURCES: usize = 1000;

/// The longest source URL kept.
pub const MAX_URL: usize = 4096;

/// A 512-bit digest (SHA-512, BLAKE2b-512), hex in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest512(pub [u8; 64]);

impl Digest512 {
    /// Lowercase hex, as `sha512sum` and `b2sum` print it.
    pub fn to_hex(&self) -> String {
        hex_of(&self.0)
    }

    /// From 128 hex digits.
    pub fn from_hex(s: &str) -> Option<Digest512> {
        if s.len() != 128 {
            return None;
        }
        let mut out = [0u8; 64];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Digest512(out))
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl fmt::Debug for Digest512 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest512({})", self.to_hex())
    }
}

impl Serialize for Digest512 {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest512 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest512::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("not 128 hex digits: {s:?}")))
    }
}

/// One cached source of a base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AurSource {
    /// The name makepkg saves it under (`name::url` gives it, else the URL's last part).
    pub file_name: String,
    /// The URL it was fetched from, as the `.SRCINFO` says.
    pub url: String,
    /// The file: size, SHA-256, CID.
    pub file: FileRef,
    /// Its SHA-512.
    pub sha512: Digest512,
    /// Its BLAKE2b-512 (`b2sum`).
    pub b2: Digest512,
}

/// One AUR package base as a snapshot publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AurBase {
    /// The package base (`aur/<pkgbase>/`).
    pub pkgbase: String,
    /// The git commit its `.SRCINFO` was read at.
    pub commit: String,
    /// The `.SRCINFO` file.
    pub srcinfo: FileRef,
    /// Its cached sources, by file name.
    pub sources: Vec<AurSource>,
}

impl AurBase {
    /// Checks what becomes paths and lookups: the base and every file name one path
    /// component without control characters, no file named `.SRCINFO`, no name twice, at most [`MAX_SOURCES`] sources,
    /// URLs printable and at most [`MAX_URL`] bytes. `what` names the base's origin in errors.
    pub fn check(&self, what: &str) -> Result<()> {
        let bad = |detail: String| Error::invalid(what, detail);
        let plain = |n: &str| is_component(n) && !n.chars().any(char::is_control);
        if !plain(&self.pkgbase) {
            return Err(bad(format!(
                "package base {:?} is not a file name",
                self.pkgbase
            )));
        }
        if self.commit.len() > 64 || !self.commit.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(format!(
                "commit {:?} is not a git object name",
                self.commit
            )));
        }
        if self.sources.len() > MAX_SOURCES {
            return Err(bad(format!(
                "{} sources, more than {MAX_SOURCES}",
                self.sources.len()
            )));
        }
        let mut names = std::collections::HashSet::new();
        for s in &self.sources {
            if !plain(&s.file_name) || s.file_name == SRCINFO {
                return Err(bad(format!(
                    "source file name {:?} is refused",
                    s.file_name
                )));
            }
            if !names.insert(s.file_name.as_str()) {
                return Err(bad(format!("two sources named {:?}", s.file_name)));
            }
            if s.url.len() > MAX_URL || s.url.chars().any(char::is_control) {
                return Err(bad(format!(
                    "the URL of {} is not printable or longer than {MAX_URL} bytes",
                    s.file_name
                )));
            }
        }
        Ok(())
    }

    /// `index/aur/<pkgbase>/sources.json` as published: compact JSON, sources by file name.
    pub fn index_bytes(&self) -> Result<Vec<u8>> {
        let mut sorted = self.clone();
        sorted.sources.sort_by(|a, b| a.file_name.cmp(&b.file_name));
        let mut out = serde_json::to_vec(&sorted)
            .map_err(|e| Error::invalid(index_path(&self.pkgbase), format!("encoding: {e}")))?;
        out.push(b'\n');
        Ok(out)
    }

    /// Reads `index/aur/<pkgbase>/sources.json` back, checked.
    pub fn parse_index(bytes: &[u8], what: &str) -> Result<AurBase> {
        let base: AurBase =
            serde_json::from_slice(bytes).map_err(|e| Error::invalid(what, e.to_string()))?;
        base.check(what)?;
        Ok(base)
    }
}

/// A base with the entry of its `index/aur/<pkgbase>/sources.json`: what a listing holds
/// of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AurEntry {
    /// The base.
    pub base: AurBase,
    /// Its index file.
    pub index: cidmirror_store::dir::DirEntry,
}

impl AurEntry {
    /// The entry of `base`: its index file imported with `params`, blocks to `sink`.
    pub fn import(
        base: AurBase,
        params: &cidmirror_store::ImportParams,
        sink: &mut dyn cidmirror_store::importer::BlockSink,
    ) -> Result<AurEntry> {
        let f = cidmirror_store::importer::import(&base.index_bytes()?[..], params, sink)?;
        Ok(AurEntry {
            base,
            index: cidmirror_store::dir::DirEntry {
                cid: f.cid,
                tsize: f.tsize,
            },
        })
    }
}

/// `aur/<pkgbase>`.
pub fn dir(pkgbase: &str) -> String {
    format!("{}/{pkgbase}", layout::AUR)
}

/// `index/aur/<pkgbase>/sources.json`.
pub fn index_path(pkgbase: &str) -> String {
    format!("{}/{}/{pkgbase}/sources.json", layout::INDEX, layout::AUR)
}

/// `by-<algo>/<2 hex>/<hex>`.
pub fn by_digest(dir: &str, hex: &str) -> String {
    format!("{dir}/{}/{hex}", &hex[..2])
}

#[cfg(test)]
pub(crate) mod testing {
    //! AUR bases for unit tests.
    use super::*;
    use crate::item::testing::fref;

    /// A base with sources named `files`, their bytes derived from `tag`.
    pub fn base(pkgbase: &str, tag: &str, files: &[&str]) -> AurBase {
        AurBase {
            pkgbase: pkgbase.into(),
            commit: "0123abcd".into(),
            srcinfo: fref(&format!("srcinfo {pkgbase} {tag}")),
            sources: files
                .iter()
                .map(|f| {
                    let bytes = format!("{pkgbase} {f} {tag}");
                    AurSource {
                        file_name: f.to_string(),
                        url: format!("https://example.org/{f}"),
                        file: fref(&bytes),
                        sha512: Digest512(
                            <sha2::Sha512 as sha2::Digest>::digest(bytes.as_bytes()).into(),
                        ),
                        b2: Digest512({
                            let mut d = [0u8; 64];
                            d[..32].copy_from_slice(fref(&bytes).sha256.as_bytes());
                            d[32..].copy_from_slice(fref(&bytes).sha256.as_bytes());
                            d
                        }),
                    }
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::base;
    use super::*;

    #[test]
    fn index_round_trips_and_hostile_bases_are_refused() {
        let b = base("foo", "1", &["foo-1.tar.gz", "foo.patch"]);
        let bytes = b.index_bytes().unwrap();
        assert_eq!(AurBase::parse_index(&bytes, "x").unwrap(), b);
        let mut cases: Vec<(AurBase, &str)> = Vec::new();
        let mut c = b.clone();
        c.pkgbase = "../etc".into();
        cases.push((c, "package base"));
        let mut c = b.clone();
        c.sources[0].file_name = "a/b".into();
        cases.push((c, "file name"));
        let mut c = b.clone();
        c.sources[0].file_name = SRCINFO.into();
        cases.push((c, "file name"));
        let mut c = b.clone();
        c.sources[0].file_name = "x\u{1b}[2J".into();
        cases.push((c, "file name"));
        let mut c = b.clone();
        c.sources[1].file_name = c.sources[0].file_name.clone();
        cases.push((c, "two sources"));
        let mut c = b.clone();
        c.sources[0].url = "https://x/\u{1b}[2J".into();
        cases.push((c, "URL"));
        let mut c = b.clone();
        c.commit = "not hex".into();
        cases.push((c, "commit"));
        for (c, want) in cases {
            let err = c.check("aur base").unwrap_err().to_string();
            assert!(err.contains(want) && err.starts_with("aur base: "), "{err}");
        }
        assert!(AurBase::parse_index(b"{}", "idx").is_err());
        let bad = String::from_utf8(bytes)
            .unwrap()
            .replacen("\"sha512\":\"", "\"sha512\":\"zz", 1);
        assert!(AurBase::parse_index(bad.as_bytes(), "idx").is_err());
    }
}
