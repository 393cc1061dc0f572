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
//!   by-sha256/<2 hex>/<64 hex>    each package by its SHA-256
//! ```

use cidmirror_schema::Sha256;

/// Version of the listing layout, written into every manifest.
pub const FORMAT: u32 = 1;

/// The manifest's name at the root.
pub const MANIFEST: &str = "manifest.json";
/// The change list's name at the root.
pub const CHANGES: &str = "changes.jsonl";
/// The directory of `desc` entries.
pub const INDEX: &str = "index";
/// The directory of packages by SHA-256.
pub const BY_SHA256: &str = "by-sha256";

/// Names at the root that are not repositories: no repository may be called so.
pub const RESERVED: &[&str] = &[INDEX, BY_SHA256, MANIFEST, CHANGES];

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
        BY_SHA256 => parts.len() <= 2,
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
        ] {
            assert!(is_dir_path(d), "{d}");
        }
        for f in [
            "manifest.json",
            "changes.jsonl",
            "core/os/x86_64/core.db",
            "index/core/x86_64/alpha",
            "by-sha256/ab/abcd",
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
