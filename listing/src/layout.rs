//! The paths of a snapshot listing (format 1).
//!
//! ```text
//! <root>/
//!   manifest.json                 format, profile, upstream and its lastupdate, repos with
//!                                 counts, previous snapshot, changes CID
//!   changes.jsonl                 one line per file added, changed or removed since the
//!                                 previous snapshot
//!   <repo>/os/<arch>/             packages, their .sig, the db and files archives under both
//!                                 names pacman uses (core.db and core.db.tar.gz), their .sig
//!   index/<repo>/<arch>/<name>    each package's desc entry, verbatim
//!   by-sha256/<2 hex>/<64 hex>    each package (and AUR source) by its SHA-256
//!   by-sha512/, by-b2/            AUR sources by SHA-512 and BLAKE2b-512
//!   aur/<pkgbase>/                an AUR base's .SRCINFO and cached sources (format 2)
//!   index/aur/<pkgbase>/sources.json  what a follower needs of that base
//! ```

use cidmirror_schema::Sha256;

/// Version of the listing layout a listing without AUR bases is written in (one with them
/// is [`FORMAT_AUR`]; this version reads both).
pub const FORMAT: u32 = FORMAT_PACMAN;

/// The manifest's name at the root.
pub const MANIFEST: &str = "manifest.json";
/// The change list's name at the root.
pub const CHANGES: &str = "changes.jsonl";
/// The directory of `desc` entries.
pub const INDEX: &str = "index";
/// The directory of packages (and AUR sources) by SHA-256.
pub const BY_SHA256: &str = "by-sha256";
/// The directory of AUR sources by SHA-512.
pub const BY_SHA512: &str = "by-sha512";
/// The directory of AUR sources by BLAKE2b-512.
pub const BY_B2: &str = "by-b2";
/// The directory of AUR package bases (see [`crate::aur`]).
pub const AUR: &str = "aur";

/// Names at the root that are not repositories: no repository may be called so.
pub const RESERVED: &[&str] = &[INDEX, BY_SHA256, BY_SHA512, BY_B2, AUR, MANIFEST, CHANGES];

/// The listing format without AUR bases.
pub const FORMAT_PACMAN: u32 = 1;
/// The listing format with AUR bases (`aur/`, `by-sha512/`, `by-b2/`, AUR change lines).
pub const FORMAT_AUR: u32 = 2;

/// `<repo>/os/<arch>`: the repository directory exactly as upstream has it.
pub fn os_dir(repo: &str, arch: &str) -> String {
    format!("{repo}/os/{arch}")
}

/// `index/<repo>/<arch>`: the `desc` entries of one repository.
pub fn index_dir(repo: &str, arch: &str) -> String {
    format!("{INDEX}/{repo}/{arch}")
}

/// `by-sha256/<2 hex>/<64 hex>`: a package by its SHA-256.
pub fn by_sha256(sha256: &Sha256) -> String {
    let hex = sha256.to_hex();
    format!("{BY_SHA256}/{}/{hex}", &hex[..2])
}

/// Whether `path` (relative to the root, no leading or trailing `/`) is a directory of
/// the layout.
pub fn is_dir_path(path: &str) -> bool {
    if path.is_empty() {
        return true;
    }
    let parts: Vec<&str> = path.split('/').collect();
    match parts[0] {
        MANIFEST | CHANGES if parts.len() == 1 => false,
        INDEX => parts.len() <= 3,
        BY_SHA256 | BY_SHA512 | BY_B2 | AUR => parts.len() <= 2,
        _ => parts.len() <= 3,
    }
}

/// Whether `name` can be one component of a listing path: not empty, not `.` or `..`, no
/// `/` and no NUL. Everything a change line names is checked with this before it becomes
/// a path.
pub fn is_component(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_directories() {
        for d in [
            "",
            "core",
            "core/os",
            "core/os/x86_64",
            "index",
            "index/core",
            "index/core/x86_64",
            "by-sha256",
            "by-sha256/ab",
            "by-b2/ab",
            "aur/foo",
            "index/aur/foo",
        ] {
            assert!(is_dir_path(d), "{d}");
        }
        for f in [
            "manifest.json",
            "changes.jsonl",
            "core/os/x86_64/core.db",
            "index/core/x86_64/alpha",
            "by-sha256/ab/abcd",
            "by-sha512/ab/abcd",
            "aur/foo/.SRCINFO",
            "index/aur/foo/sources.json",
        ] {
            assert!(!is_dir_path(f), "{f}");
        }
    }

    #[test]
    fn components() {
        for ok in ["core", "a.b", "x86_64", "foo-1:2-3-x86_64.pkg.tar.zst"] {
            assert!(is_component(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "/", "a\0b"] {
            assert!(!is_component(bad), "{bad:?}");
        }
    }
}
