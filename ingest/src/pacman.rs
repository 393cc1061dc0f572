//! pacman repository databases: the `<repo>.db` and `<repo>.files` archives that `repo-add`
//! writes and pacman downloads.
//!
//! The publisher needs three things from a database: the list of package files to fetch, the
//! size and SHA-256 to verify each of them against, and every entry's `desc` file byte for byte
//! (it is published verbatim under `index/<repo>/<arch>/<pkgname>`). Everything here comes from
//! an upstream that is not trusted: compression is recognised by its magic bytes, never by the
//! file name; decompression is bounded; archive member paths and `%FILENAME%` values are
//! checked before any of them can become a path.
//!
//! - [`parse_db`] and [`parse_files_db`] read a whole database into a [`RepoDb`];
//! - [`Desc`] is one entry's `desc` file: its raw bytes and its `%FIELD%` sections;
//! - [`Package`] is a validated entry; [`PkgFilename`], [`RepoName`] and [`Arch`] are the names
//!   that end up in paths.
//!
//! ```
//! use cidmirror_ingest::pacman::{Compression, RepoName, parse_db};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let repo: RepoName = "core".parse()?;
//! // What `repo-add` writes when no packages remain: an empty tar archive.
//! let db = parse_db(&repo, "core.db", &[0u8; 10240])?;
//! assert_eq!(db.compression, Compression::None);
//! assert!(db.packages.is_empty());
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use base64::Engine as _;
use cidmirror_schema::Sha256;
use serde::{Deserialize, Serialize};

pub use cidmirror_listing::pacman::{Compression, Desc, MAX_DESC_SIZE};

use crate::{Error, Result};

/// The most a database may decompress to. Arch's largest, `extra.files`, unpacks to a few
/// hundred MiB; anything near this bound is a decompression bomb, not a repository.
pub const MAX_DB_UNPACKED: u64 = 4 << 30;

/// The most all `desc` files of one database may add up to. They are held in memory for the
/// whole sync (they are published byte for byte). Arch's `extra.db` has about 14,000
/// entries of 1-2 KiB; 128 MiB is 200,000 ordinary entries with room to spare, and keeps
/// a database of 3,000 entries of 1 MB each (a few MB compressed) from taking gigabytes.
pub const MAX_DESCS_TOTAL: u64 = 128 << 20;

/// Why a name was refused: which kind of name, the value, and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {rule}")]
pub struct NameError {
    /// What the name was meant to be ("package file name", "repository name", ...).
    pub what: &'static str,
    /// The refused value.
    pub value: String,
    /// The rule it breaks.
    pub rule: String,
}

/// The file name of a package (`%FILENAME%`): it becomes a path under the snapshot and in
/// the store, so it must be one plain file name that cannot lead anywhere else: not empty,
/// at most 255 bytes, no `/`, no `..`, no NUL or other control character, no leading dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PkgFilename(String);

impl PkgFilename {
    /// The file name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn check(s: &str) -> Option<String> {
        if s.is_empty() {
            Some("empty".into())
        } else if s.len() > 255 {
            Some(format!("{} bytes long, more than the 255 allowed", s.len()))
        } else if s.contains('\0') {
            Some("contains a NUL byte".into())
        } else if s.chars().any(char::is_control) {
            Some("contains a control character".into())
        } else if s.contains("..") {
            Some("contains \"..\": a file name must not lead out of its directory".into())
        } else if s.contains('/') {
            Some("contains '/': a file name, not a path, is expected".into())
        } else if s.starts_with('.') {
            Some("starts with '.': hidden files are not package files".into())
        } else {
            None
        }
    }
}

/// A repository name (`core`, `extra`, `multilib-testing`): it becomes a directory of the
/// snapshot. Non-empty, at most 64 bytes of `A-Z a-z 0-9 . _ + -`, not starting with `.`
/// or `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepoName(String);

impl RepoName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An architecture (`x86_64`, `aarch64`, `any`): a directory of the snapshot, with the same
/// rules as [`RepoName`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Arch(String);

impl Arch {
    /// The architecture.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The rules shared by [`RepoName`] and [`Arch`].
fn check_short_name(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("empty".into());
    }
    if s.len() > 64 {
        return Some(format!("{} bytes long, more than the 64 allowed", s.len()));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-')))
    {
        return Some(format!(
            "contains {c:?}: only A-Z a-z 0-9 . _ + - are allowed"
        ));
    }
    if s.starts_with(['.', '-']) {
        return Some("starts with '.' or '-'".into());
    }
    None
}

/// The rules makepkg applies to `pkgname`: `A-Z a-z 0-9 @ . _ + -`, not starting with `.`
/// or `-`. The name becomes a file name under `index/`.
fn check_pkgname(s: &str) -> Option<String> {
    if s.len() > 255 {
        return Some(format!("{} bytes long, more than the 255 allowed", s.len()));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '@' | '.' | '_' | '+' | '-')))
    {
        return Some(format!(
            "contains {c:?}: only A-Z a-z 0-9 @ . _ + - are allowed"
        ));
    }
    if s.starts_with(['.', '-']) {
        return Some("starts with '.' or '-'".into());
    }
    None
}

/// The rules makepkg applies to a version, `[epoch:]pkgver-pkgrel`: the epoch a number,
/// pkgver not empty and without `:`, `/`, `-`, whitespace or control characters, pkgrel a
/// number with at most one `.` part (`1`, `1.1`). The version is half of the entry's
/// directory (`<name>-<version>`) in the database a follower rebuilds, so it must be
/// usable there as it is usable here.
fn check_version(s: &str) -> Option<String> {
    let number = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let rest = match s.split_once(':') {
        Some((epoch, _)) if !number(epoch) => {
            return Some(format!("epoch {epoch:?} is not a number"));
        }
        Some((_, rest)) => rest,
        None => s,
    };
    let Some((pkgver, pkgrel)) = rest.rsplit_once('-') else {
        return Some("no -pkgrel: expected [epoch:]pkgver-pkgrel".into());
    };
    if pkgver.is_empty() {
        return Some("empty pkgver".into());
    }
    if let Some(c) = pkgver
        .chars()
        .find(|&c| matches!(c, ':' | '/' | '-') || c.is_whitespace() || c.is_control())
    {
        return Some(format!("pkgver {pkgver:?} contains {c:?}"));
    }
    let release = match pkgrel.split_once('.') {
        Some((major, minor)) => number(major) && number(minor),
        None => number(pkgrel),
    };
    if !release {
        return Some(format!("pkgrel {pkgrel:?} is not a number like 1 or 1.1"));
    }
    None
}

macro_rules! name_newtype {
    ($ty:ident, $what:literal, $check:expr) => {
        impl FromStr for $ty {
            type Err = NameError;

            fn from_str(s: &str) -> std::result::Result<Self, NameError> {
                match $check(s) {
                    Some(rule) => Err(NameError {
                        what: $what,
                        value: s.to_owned(),
                        rule,
                    }),
                    None => Ok($ty(s.to_owned())),
                }
            }
        }

        impl TryFrom<String> for $ty {
            type Error = NameError;

            fn try_from(s: String) -> std::result::Result<Self, NameError> {
                match $check(&s) {
                    Some(rule) => Err(NameError {
                        what: $what,
                        value: s,
                        rule,
                    }),
                    None => Ok($ty(s)),
                }
            }
        }

        impl From<$ty> for String {
            fn from(v: $ty) -> String {
                v.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_newtype!(PkgFilename, "package file name", PkgFilename::check);
name_newtype!(RepoName, "repository name", check_short_name);
name_newtype!(Arch, "architecture", check_short_name);

/// One package of a database, validated: what the publisher fetches and verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// The entry's directory in the database archive (`foo-1.0-1`, always `%NAME%-%VERSION%`).
    pub entry: String,
    /// `%NAME%`.
    pub name: String,
    /// `%VERSION%` (`[epoch:]pkgver-pkgrel`).
    pub version: String,
    /// `%FILENAME%`: the package file next to the database.
    pub filename: PkgFilename,
    /// `%CSIZE%`: the size of that file.
    pub csize: u64,
    /// `%SHA256SUM%`: its SHA-256.
    pub sha256: Sha256,
    /// `%PGPSIG%`, base64-decoded: the package's detached signature, when the database
    /// carries it instead of (or as well as) a `.sig` file.
    pub pgpsig: Option<Vec<u8>>,
    /// The whole `desc` file.
    pub desc: Desc,
}

impl Package {
    /// Validates one entry (`entry` is its directory in the archive). Errors are
    /// [`Error::Entry`] naming the field (`%FILENAME%`, ...) or `desc` for the entry as a
    /// whole.
    pub fn from_desc(repo: &RepoName, entry: &str, desc: Desc) -> Result<Package> {
        let err = |field: &str, detail: String| Error::Entry {
            repo: repo.to_string(),
            entry: entry.to_owned(),
            field: field.to_owned(),
            detail,
        };
        let single = |name: &str| -> Result<Option<&str>> {
            match desc.get(name).as_deref() {
                None => Ok(None),
                Some(&[one]) => Ok(Some(one)),
                Some(many) => Err(err(
                    &format!("%{name}%"),
                    format!("{} values, expected one", many.len()),
                )),
            }
        };
        let required = |name: &str| -> Result<&str> {
            single(name)?.ok_or_else(|| err(&format!("%{name}%"), "missing".into()))
        };

        let filename: PkgFilename = required("FILENAME")?
            .parse()
            .map_err(|e: NameError| err("%FILENAME%", e.to_string()))?;
        let name = required("NAME")?;
        if let Some(rule) = check_pkgname(name) {
            return Err(err(
                "%NAME%",
                format!("invalid package name {name:?}: {rule}"),
            ));
        }
        let version = required("VERSION")?;
        if let Some(rule) = check_version(version) {
            return Err(err(
                "%VERSION%",
                format!("invalid version {version:?}: {rule}"),
            ));
        }
        let csize_text = required("CSIZE")?;
        let csize = cidmirror_listing::pacman::decimal_size(csize_text).ok_or_else(|| {
            err(
                "%CSIZE%",
                format!("{csize_text:?} is not a decimal size in bytes"),
            )
        })?;
        let sha256: Sha256 = required("SHA256SUM")?
            .parse()
            .map_err(|e: cidmirror_schema::Error| err("%SHA256SUM%", e.to_string()))?;
        let pgpsig = single("PGPSIG")?
            .map(|s| base64::engine::general_purpose::STANDARD.decode(s))
            .transpose()
            .map_err(|e| err("%PGPSIG%", format!("not valid base64: {e}")))?;
        let expected_entry = format!("{name}-{version}");
        if entry != expected_entry {
            return Err(err(
                "desc",
                format!("entry directory does not match %NAME%-%VERSION% ({expected_entry})"),
            ));
        }

        Ok(Package {
            entry: entry.to_owned(),
            name: name.to_owned(),
            version: version.to_owned(),
            filename,
            csize,
            sha256,
            pgpsig,
            desc,
        })
    }
}

/// A whole repository database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoDb {
    /// How the archive was compressed (to rebuild it the same way).
    pub compression: Compression,
    /// Every package, sorted by name (names are unique).
    pub packages: Vec<Package>,
}

/// Reads a `<repo>.db` database (`file` is its name, for messages): every `<entry>/desc`
/// member, parsed and validated. Other members (directories, `files` lists) are skipped. A
/// database that cannot be read as a whole is [`Error::Db`]; a bad entry, or two entries with
/// the same `%NAME%` or `%FILENAME%`, is [`Error::Entry`].
pub fn parse_db(repo: &RepoName, file: &str, bytes: &[u8]) -> Result<RepoDb> {
    parse_db_limited(repo, file, bytes, MAX_DB_UNPACKED)
}

/// [`parse_db`] with a smaller bound on the decompressed size than [`MAX_DB_UNPACKED`].
pub fn parse_db_limited(
    repo: &RepoName,
    file: &str,
    bytes: &[u8],
    max_unpacked: u64,
) -> Result<RepoDb> {
    parse_archive(repo, file, bytes, max_unpacked, false, &mut |_| Ok(()))
}

/// [`parse_db`], calling `each` on every package as soon as its entry is read, before the
/// next one is: the publisher stores each desc there and releases it
/// ([`Desc::release`]), so that a large database never has all its descs in memory at once.
pub fn parse_db_each(
    repo: &RepoName,
    file: &str,
    bytes: &[u8],
    each: &mut dyn FnMut(&mut Package) -> Result<()>,
) -> Result<RepoDb> {
    parse_archive(repo, file, bytes, MAX_DB_UNPACKED, false, each)
}

/// Reads a `<repo>.files` database: as [`parse_db`], and every entry must also have its
/// `files` list (which is not read). The publisher compares the result with the `.db` to
/// check that both list the same packages.
pub fn parse_files_db(repo: &RepoName, file: &str, bytes: &[u8]) -> Result<RepoDb> {
    parse_archive(repo, file, bytes, MAX_DB_UNPACKED, true, &mut |_| Ok(()))
}

/// [`parse_files_db`], calling `each` on every package as it is read (see
/// [`parse_db_each`]).
pub fn parse_files_db_each(
    repo: &RepoName,
    file: &str,
    bytes: &[u8],
    each: &mut dyn FnMut(&mut Package) -> Result<()>,
) -> Result<RepoDb> {
    parse_archive(repo, file, bytes, MAX_DB_UNPACKED, true, each)
}

/// [`parse_files_db_each`] of an archive read from a stream, never held whole (Arch's
/// `extra.files` is about 60 MB): memory stays at the decoder's buffers and the parsed
/// packages.
pub fn parse_files_db_from(
    repo: &RepoName,
    file: &str,
    mut input: impl Read,
    each: &mut dyn FnMut(&mut Package) -> Result<()>,
) -> Result<RepoDb> {
    // Enough to recognise every format (a plain tar's magic is at 257, an empty one is
    // 1024 zero bytes).
    let mut head = Vec::with_capacity(1024);
    (&mut input)
        .take(1024)
        .read_to_end(&mut head)
        .map_err(|e| Error::Db {
            repo: repo.to_string(),
            file: file.to_owned(),
            detail: format!("reading the archive: {e}"),
        })?;
    let stream = io::BufReader::new(io::Cursor::new(head.clone()).chain(input));
    parse_stream(repo, file, &head, stream, MAX_DB_UNPACKED, true, each)
}

/// The members of one entry directory, in archive order.
struct RawEntry {
    name: String,
    /// Its desc, parsed as soon as it was read.
    desc: Option<Package>,
    has_files: bool,
}

/// A reader that fails once more than `limit` bytes came through.
struct Bounded<R> {
    inner: R,
    count: u64,
    limit: u64,
    exceeded: bool,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.limit {
            self.exceeded = true;
            return Err(io::Error::other("decompressed size limit exceeded"));
        }
        Ok(n)
    }
}

fn parse_archive(
    repo: &RepoName,
    file: &str,
    bytes: &[u8],
    limit: u64,
    want_files: bool,
    each: &mut dyn FnMut(&mut Package) -> Result<()>,
) -> Result<RepoDb> {
    parse_stream(repo, file, bytes, bytes, limit, want_files, each)
}

/// Reads a database archive: `head` is its first bytes (for the compression), `archive`
/// all of it from the start.
fn parse_stream(
    repo: &RepoName,
    file: &str,
    head: &[u8],
    archive: impl io::BufRead,
    limit: u64,
    want_files: bool,
    each: &mut dyn FnMut(&mut Package) -> Result<()>,
) -> Result<RepoDb> {
    let db_err = |detail: String| Error::Db {
        repo: repo.to_string(),
        file: file.to_owned(),
        detail,
    };
    let compression = Compression::detect(head).ok_or_else(|| {
        db_err(
            "not a pacman database: neither a tar archive nor gzip/zstd/xz/bzip2 compressed".into(),
        )
    })?;
    let decoder = compression
        .decoder_of(archive)
        .map_err(|e| db_err(format!("cannot start decompression: {e}")))?;
    let mut input = Bounded {
        inner: decoder,
        count: 0,
        limit,
        exceeded: false,
    };
    let too_large = || db_err(format!("decompresses to more than {limit} bytes"));

    let mut parse = |entry: &str, raw: Vec<u8>| -> Result<Package> {
        let desc = Desc::parse(raw).map_err(|detail| Error::Entry {
            repo: repo.to_string(),
            entry: entry.to_owned(),
            field: "desc".to_owned(),
            detail,
        })?;
        let mut pkg = Package::from_desc(repo, entry, desc)?;
        each(&mut pkg)?;
        Ok(pkg)
    };
    let entries = read_members(&mut input, &db_err, &mut parse);
    if input.exceeded {
        return Err(too_large());
    }
    let entries = entries?;
    // The tar reader stops at the end-of-archive marker; read the rest so that truncated or
    // corrupt compressed data (checked at the end of the stream) is noticed.
    if let Err(e) = io::copy(&mut input, &mut io::sink()) {
        return Err(if input.exceeded {
            too_large()
        } else {
            db_err(format!("reading the archive: {e}"))
        });
    }

    let entry_err = |entry: &str, field: &str, detail: String| Error::Entry {
        repo: repo.to_string(),
        entry: entry.to_owned(),
        field: field.to_owned(),
        detail,
    };
    let mut packages: Vec<Package> = Vec::with_capacity(entries.len());
    let mut by_name: HashMap<String, usize> = HashMap::new();
    let mut by_filename: HashMap<PkgFilename, usize> = HashMap::new();
    for raw in entries {
        let Some(pkg) = raw.desc else {
            return Err(entry_err(
                &raw.name,
                "desc",
                "entry has no desc file".into(),
            ));
        };
        if want_files && !raw.has_files {
            return Err(entry_err(
                &raw.name,
                "files",
                "entry has no files list (is this a .db rather than a .files database?)".into(),
            ));
        }
        if let Some(&other) = by_name.get(&pkg.name) {
            return Err(entry_err(
                &pkg.entry,
                "%NAME%",
                format!(
                    "duplicate package name {:?}: also in entry {}",
                    pkg.name, packages[other].entry
                ),
            ));
        }
        if let Some(&other) = by_filename.get(&pkg.filename) {
            return Err(entry_err(
                &pkg.entry,
                "%FILENAME%",
                format!(
                    "duplicate package file name {:?}: also in entry {}",
                    pkg.filename.as_str(),
                    packages[other].entry
                ),
            ));
        }
        by_name.insert(pkg.name.clone(), packages.len());
        by_filename.insert(pkg.filename.clone(), packages.len());
        packages.push(pkg);
    }
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(RepoDb {
        compression,
        packages,
    })
}

/// Reads the tar stream: collects every `<entry>/desc` (bounded) and notes every
/// `<entry>/files`; refuses member paths that are absolute or contain `..`.
fn read_members(
    input: &mut dyn Read,
    db_err: &dyn Fn(String) -> Error,
    parse: &mut dyn FnMut(&str, Vec<u8>) -> Result<Package>,
) -> Result<Vec<RawEntry>> {
    let io_err = |e: io::Error| db_err(format!("reading the archive: {e}"));
    let mut archive = tar::Archive::new(input);
    let mut entries: Vec<RawEntry> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut total: u64 = 0;
    for member in archive.entries().map_err(io_err)? {
        let mut member = member.map_err(io_err)?;
        let path = member.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&path).into_owned();
        if path.first() == Some(&b'/') || path.split(|&b| b == b'/').any(|c| c == b"..") {
            return Err(db_err(format!(
                "member {shown:?} leads out of the archive (absolute path or \"..\")"
            )));
        }
        let kind = member.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        let trimmed = path.strip_suffix(b"/").unwrap_or(&path);
        let leaf = trimmed.rsplit(|&b| b == b'/').next().unwrap_or_default();
        if leaf != b"desc" && leaf != b"files" {
            continue;
        }
        let dir = match trimmed.split(|&b| b == b'/').collect::<Vec<_>>().as_slice() {
            [dir, _] if !dir.is_empty() => *dir,
            _ => {
                return Err(db_err(format!(
                    "member {shown:?}: pacman expects <entry>/{} at the top level",
                    String::from_utf8_lossy(leaf)
                )));
            }
        };
        if !kind.is_file() {
            return Err(db_err(format!("member {shown:?} is not a regular file")));
        }
        let dir = std::str::from_utf8(dir)
            .map_err(|_| db_err(format!("member {shown:?}: entry name is not UTF-8")))?;
        let at = *index.entry(dir.to_owned()).or_insert_with(|| {
            entries.push(RawEntry {
                name: dir.to_owned(),
                desc: None,
                has_files: false,
            });
            entries.len() - 1
        });
        let raw = &mut entries[at];
        if leaf == b"files" {
            if raw.has_files {
                return Err(db_err(format!("member {shown:?} appears twice")));
            }
            raw.has_files = true;
            continue;
        }
        if raw.desc.is_some() {
            return Err(db_err(format!("member {shown:?} appears twice")));
        }
        let size = member.size();
        if size > MAX_DESC_SIZE {
            return Err(db_err(format!(
                "member {shown:?} is {size} bytes, more than the {MAX_DESC_SIZE} allowed for a desc file"
            )));
        }
        let mut desc = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        (&mut member)
            .take(MAX_DESC_SIZE + 1)
            .read_to_end(&mut desc)
            .map_err(io_err)?;
        if desc.len() as u64 > MAX_DESC_SIZE {
            return Err(db_err(format!(
                "member {shown:?} is more than the {MAX_DESC_SIZE} bytes allowed for a desc file"
            )));
        }
        total += desc.len() as u64;
        if total > MAX_DESCS_TOTAL {
            return Err(db_err(format!(
                "its desc files add up to more than the {MAX_DESCS_TOTAL} bytes allowed (at \
                 member {shown:?}, entry {}): not a repository database this publisher \
                 will hold in memory",
                entries.len()
            )));
        }
        raw.desc = Some(parse(&raw.name, desc)?);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc_with_version(version: &str) -> Desc {
        let text = format!(
            "%FILENAME%\nbash-x86_64.pkg.tar.zst\n\n%NAME%\nbash\n\n%VERSION%\n{version}\n\n\
             %CSIZE%\n33\n\n%SHA256SUM%\n{}\n",
            "0".repeat(64)
        );
        Desc::parse(text.into_bytes()).expect("a well-formed desc")
    }

    /// Found by the `pacman_desc` fuzz target: `5.2.03/-1` was published, and followers,
    /// which lay out the database they rebuild by `<name>-<version>`, refused the entry
    /// (and with it every refresh of the snapshot).
    #[test]
    fn versions_are_epoch_pkgver_pkgrel_as_makepkg_writes_them() {
        let repo: RepoName = "core".parse().unwrap();
        for good in [
            "1-1",
            "5.2.037-1",
            "1:6.12.1-1",
            "20240101.r5.gabc_d+e~f-2.1",
        ] {
            let p = Package::from_desc(&repo, &format!("bash-{good}"), desc_with_version(good))
                .unwrap_or_else(|e| panic!("{good:?}: {e}"));
            assert_eq!(p.version, good);
        }
        for (bad, why) in [
            ("5.2.03/-1", "contains '/'"),
            ("..", "no -pkgrel"),
            ("1.0", "no -pkgrel"),
            ("-1", "empty pkgver"),
            ("1.0-", "pkgrel \"\""),
            ("1.0-1a", "pkgrel \"1a\""),
            ("1.0-1.2.3", "pkgrel \"1.2.3\""),
            ("x:1.0-1", "epoch \"x\""),
            ("1:2:3-1", "contains ':'"),
            ("1 0-1", "contains ' '"),
            ("1\u{1b}[31m-1", "contains '\\u{1b}'"),
            ("1-0-1", "contains '-'"),
        ] {
            let err = Package::from_desc(&repo, &format!("bash-{bad}"), desc_with_version(bad))
                .expect_err(bad)
                .to_string();
            assert!(
                err.contains("%VERSION%") && err.contains(why),
                "{bad:?}: {err}"
            );
        }
    }
}
