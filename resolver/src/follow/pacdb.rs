//! Rebuilding a pacman repository database (`<repo>.db`) from `desc` entries.
//!
//! Upstream databases that carry a detached signature are fetched verbatim so that the
//! signature holds; the unsigned ones (Arch's own) are cheaper to rebuild locally than to
//! transfer: a follower already holds every package's `desc` entry, verbatim as repo-add
//! wrote it, under the snapshot's `index/<repo>/<arch>/<name>`. [`build_db`] lays them out
//! the way repo-add does (one `<name>-<version>/desc` per package in a tar archive,
//! compressed as the file name says) and deterministically, so that every follower serving
//! one snapshot serves the same bytes. [`parse_desc`] reads the few fields a follower needs
//! from an entry without touching the rest.

use std::collections::HashSet;
use std::io::{self, Write};

/// What a follower needs from a package's `desc` entry: where the entry goes in the
/// database (name, version), which file it describes, and how to check that file when it
/// comes from an HTTP mirror instead of a CID (size and SHA-256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desc {
    /// `%NAME%`.
    pub name: String,
    /// `%VERSION%` (`[epoch:]pkgver-pkgrel`).
    pub version: String,
    /// `%FILENAME%`: the package file's name in the repository directory.
    pub filename: String,
    /// `%CSIZE%`: the package file's size in bytes, when the entry states it.
    pub csize: Option<u64>,
    /// `%SHA256SUM%`, normalised to 64 lowercase hex digits, when the entry states it.
    pub sha256: Option<String>,
}

impl Desc {
    /// The entry's directory in the database, as repo-add names it.
    fn entry_dir(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }
}

/// Parses the fields a follower needs from a desc (pacman's "%FIELD%\nvalue\n...\n\n"
/// format); errors name the missing field.
///
/// Reads the way pacman's own database reader does: a `%FIELD%` line starts a section
/// whose values run to the next empty line, single-valued fields take the first value,
/// unknown fields and stray lines are ignored, a trailing `\r` is dropped. The values are
/// checked to be usable as one path component each, since the follower builds paths and
/// archive member names from them.
pub fn parse_desc(bytes: &[u8]) -> Result<Desc, String> {
    let fields = sections(bytes);
    let name = text(&fields, "NAME")?.ok_or("desc has no %NAME%")?;
    let version = text(&fields, "VERSION")?.ok_or("desc has no %VERSION%")?;
    let filename = text(&fields, "FILENAME")?.ok_or("desc has no %FILENAME%")?;
    for (field, value) in [
        ("NAME", &name),
        ("VERSION", &version),
        ("FILENAME", &filename),
    ] {
        if value.contains(['/', '\0']) || value == "." || value == ".." {
            return Err(format!("%{field}% {value:?} is not a valid path component"));
        }
    }
    let csize = match text(&fields, "CSIZE")? {
        None => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|e| format!("%CSIZE% {s:?} is not a size: {e}"))?,
        ),
    };
    let sha256 = match text(&fields, "SHA256SUM")? {
        None => None,
        Some(s) if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(s.to_ascii_lowercase())
        }
        Some(s) => return Err(format!("%SHA256SUM% {s:?} is not 64 hex digits")),
    };
    Ok(Desc {
        name,
        version,
        filename,
        csize,
        sha256,
    })
}

/// Splits a desc into `(field, values)` sections, first occurrence of each field only.
fn sections(bytes: &[u8]) -> Vec<(&[u8], Vec<&[u8]>)> {
    let mut out: Vec<(&[u8], Vec<&[u8]>)> = Vec::new();
    let mut current: Option<usize> = None;
    for line in bytes.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            current = None;
            continue;
        }
        match current {
            Some(i) => out[i].1.push(line),
            None => {
                let header = line
                    .strip_prefix(b"%")
                    .and_then(|l| l.strip_suffix(b"%"))
                    .filter(|f| !f.is_empty());
                // A repeated field's values are skipped: the first one counts.
                if let Some(field) = header
                    && out.iter().all(|(f, _)| *f != field)
                {
                    out.push((field, Vec::new()));
                    current = Some(out.len() - 1);
                }
            }
        }
    }
    out
}

/// The first value of `field` as text; `None` when the field is absent or empty.
fn text(fields: &[(&[u8], Vec<&[u8]>)], field: &str) -> Result<Option<String>, String> {
    let Some(value) = fields
        .iter()
        .find(|(f, _)| *f == field.as_bytes())
        .and_then(|(_, values)| values.first())
    else {
        return Ok(None);
    };
    std::str::from_utf8(value)
        .map(|s| Some(s.to_owned()))
        .map_err(|_| format!("%{field}% is not UTF-8"))
}

/// How a database archive is compressed, from its file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    Gzip,
    Zstd,
    Xz,
    Bzip2,
    None,
}

impl Compression {
    /// repo-add picks the compressor from the suffix (`compress_as` in makepkg's
    /// `util/compress.sh`); `.db` and `.files` are the names pacman downloads, which repo-add
    /// makes links to the `.tar.gz` archives by default.
    fn from_file_name(file_name: &str) -> io::Result<Self> {
        let suffixes = [
            (".tar.gz", Compression::Gzip),
            (".db", Compression::Gzip),
            (".files", Compression::Gzip),
            (".tar.zst", Compression::Zstd),
            (".tar.xz", Compression::Xz),
            (".tar.bz2", Compression::Bzip2),
            (".tar", Compression::None),
        ];
        suffixes
            .iter()
            .find(|(suffix, _)| file_name.ends_with(suffix))
            .map(|&(_, c)| c)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{file_name:?}: not a pacman database name (.db, .tar[.gz|.zst|.xz|.bz2])"
                    ),
                )
            })
    }

    /// Compresses a whole tar archive. The levels are those of the command-line tools
    /// repo-add falls back to (`gzip -n` = 6, `zstd` = 3, `xz` = 6, `bzip2` = 9): zstd's 19
    /// would make the archive a few percent smaller at a hundred times the CPU, and a
    /// follower rebuilds its databases on every snapshot.
    fn compress(self, tar: Vec<u8>) -> io::Result<Vec<u8>> {
        match self {
            Compression::None => Ok(tar),
            Compression::Gzip => {
                // No file name and mtime 0 in the header, like `gzip -n`: the same entries
                // must give the same bytes whenever and wherever they are built.
                let mut enc = flate2::GzBuilder::new()
                    .mtime(0)
                    .write(Vec::new(), flate2::Compression::new(6));
                enc.write_all(&tar)?;
                enc.finish()
            }
            Compression::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3)?;
                enc.include_checksum(true)?;
                enc.set_pledged_src_size(Some(tar.len() as u64))?;
                enc.include_contentsize(true)?;
                enc.write_all(&tar)?;
                enc.finish()
            }
            Compression::Xz => {
                let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 6);
                enc.write_all(&tar)?;
                enc.finish()
            }
            Compression::Bzip2 => {
                let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
                enc.write_all(&tar)?;
                enc.finish()
            }
        }
    }
}

/// A tar header as repo-add's `bsdtar -cf` run as root leaves it, minus the clock: ustar,
/// owner root:root (0:0), mtime 0 so that the archive depends on the entries alone.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> io::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_username("root")?;
    h.set_groupname("root")?;
    Ok(h)
}

/// The database archive pacman downloads as `<repo>.db`: a tar with one
/// `<name>-<version>/` directory (mode 0755) holding `desc` (mode 0644) per package, in
/// order of directory name (bytewise, as repo-add's glob in the C locale and
/// bench/gen_repo.py sort them), compressed as `file_name` says (`.tar.gz`, `.db` and
/// `.files`: gzip; `.tar.zst`: zstd; `.tar.xz`: xz; `.tar.bz2`: bzip2; `.tar`: none).
/// Deterministic: the same entries, in any order, give the same bytes.
///
/// Two entries for one package name are refused (`InvalidInput`): pacman would keep one
/// of them at random, so they can only come from a bug in the caller's index.
pub fn build_db(entries: &[(Desc, Vec<u8>)], file_name: &str) -> io::Result<Vec<u8>> {
    let compression = Compression::from_file_name(file_name)?;
    let mut names = HashSet::with_capacity(entries.len());
    for (desc, _) in entries {
        if !names.insert(desc.name.as_str()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("two entries for package {:?}", desc.name),
            ));
        }
    }
    let mut sorted: Vec<(String, &[u8])> = entries
        .iter()
        .map(|(desc, bytes)| (desc.entry_dir(), bytes.as_slice()))
        .collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));

    let desc_total: usize = sorted.iter().map(|(_, b)| b.len() + 1536).sum();
    let mut tar = tar::Builder::new(Vec::with_capacity(desc_total + 1024));
    for (dir, desc) in &sorted {
        let mut h = header(tar::EntryType::Directory, 0o755, 0)?;
        tar.append_data(&mut h, format!("{dir}/"), io::empty())?;
        let mut h = header(tar::EntryType::Regular, 0o644, desc.len() as u64)?;
        tar.append_data(&mut h, format!("{dir}/desc"), *desc)?;
    }
    compression.compress(tar.into_inner()?)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::process::Command;

    use super::*;

    /// A desc laid out as repo-add (and bench/gen_repo.py) writes it.
    fn desc_text(name: &str, version: &str) -> String {
        format!(
            "%FILENAME%\n{name}-{version}-x86_64.pkg.tar.zst\n\n\
             %NAME%\n{name}\n\n\
             %BASE%\n{name}\n\n\
             %VERSION%\n{version}\n\n\
             %DESC%\nSmall simple library for the protocol\n\n\
             %GROUPS%\nqt6\n\n\
             %CSIZE%\n20480\n\n\
             %ISIZE%\n61440\n\n\
             %MD5SUM%\n0123456789abcdef0123456789abcdef\n\n\
             %SHA256SUM%\nE3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855\n\n\
             %PGPSIG%\niQIzBAABCAAdFiEE\n\n\
             %URL%\nhttps://gnokra.org/{name}\n\n\
             %LICENSE%\nMIT\nGPL-3.0-or-later\n\n\
             %ARCH%\nx86_64\n\n\
             %BUILDDATE%\n1697408000\n\n\
             %PACKAGER%\nAlice Maintainer <alice@archlinux.org>\n\n\
             %DEPENDS%\nglibc\nzlib>=1.2\n\n\
             %OPTDEPENDS%\npython: command line bindings\n\n\
             %MAKEDEPENDS%\ncmake\nninja\n\n"
        )
    }

    fn entry(name: &str, version: &str) -> (Desc, Vec<u8>) {
        let bytes = desc_text(name, version).into_bytes();
        (parse_desc(&bytes).unwrap(), bytes)
    }

    #[test]
    fn parses_a_repo_add_desc() {
        let d = parse_desc(desc_text("libgnokra", "1:2.3.4-1").as_bytes()).unwrap();
        assert_eq!(
            d,
            Desc {
                name: "libgnokra".into(),
                version: "1:2.3.4-1".into(),
                filename: "libgnokra-1:2.3.4-1-x86_64.pkg.tar.zst".into(),
                csize: Some(20480),
                sha256: Some(
                    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into()
                ),
            }
        );
    }

    #[test]
    fn optional_fields_may_be_absent_and_crlf_is_tolerated() {
        let d = parse_desc(b"%NAME%\r\nfoo\r\n\r\n%VERSION%\r\n1-1\r\n\r\n%FILENAME%\r\nf\r\n")
            .unwrap();
        assert_eq!((d.name.as_str(), d.version.as_str()), ("foo", "1-1"));
        assert_eq!((d.csize, d.sha256), (None, None));
    }

    #[test]
    fn bad_descs_are_refused_naming_the_field() {
        let ok = desc_text("foo", "1-1");
        let cases: &[(String, &str)] = &[
            (ok.replace("%NAME%\nfoo\n\n", ""), "%NAME%"),
            (ok.replace("%NAME%\nfoo\n", "%NAME%\n"), "%NAME%"),
            (ok.replace("%VERSION%\n1-1\n\n", ""), "%VERSION%"),
            (ok.replace("%FILENAME%\n", "%FILENAMES%\n"), "%FILENAME%"),
            (ok.replace("%CSIZE%\n20480", "%CSIZE%\n20k"), "%CSIZE%"),
            (
                ok.replace("%SHA256SUM%\nE3B0", "%SHA256SUM%\nB0"),
                "%SHA256SUM%",
            ),
            (ok.replace("%NAME%\nfoo", "%NAME%\n../foo"), "%NAME%"),
            (
                ok.replace("%FILENAME%\nfoo-1-1-x86_64.pkg.tar.zst", "%FILENAME%\n.."),
                "%FILENAME%",
            ),
            (String::new(), "%NAME%"),
        ];
        for (text, field) in cases {
            let err = parse_desc(text.as_bytes()).unwrap_err();
            assert!(err.contains(field), "{field}: got {err:?}");
        }
        let mut latin1 = b"%NAME%\nf".to_vec();
        latin1.push(0xf6);
        latin1.extend_from_slice(b"o\n\n%VERSION%\n1-1\n\n%FILENAME%\nx\n\n");
        let err = parse_desc(&latin1).unwrap_err();
        assert!(err.contains("%NAME%") && err.contains("UTF-8"), "{err}");
    }

    /// Every (path, type, mode, bytes) in a plain tar, checking the fixed header fields.
    fn members(tar_bytes: &[u8]) -> Vec<(String, tar::EntryType, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut ar = tar::Archive::new(tar_bytes);
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let h = e.header().clone();
            assert_eq!(h.mtime().unwrap(), 0);
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
            assert_eq!(h.username().unwrap(), Some("root"));
            let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.push((path, h.entry_type(), h.mode().unwrap(), data));
        }
        out
    }

    fn decompress(name: &str, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match name.rsplit('.').next().unwrap() {
            "gz" | "db" => {
                assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
                // mtime 0 and no FNAME flag, as `gzip -n` writes.
                assert_eq!(&bytes[4..8], &[0, 0, 0, 0]);
                assert_eq!(bytes[3] & 0x08, 0);
                flate2::read::GzDecoder::new(bytes)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            "zst" => {
                zstd::stream::read::Decoder::new(bytes)
                    .unwrap()
                    .read_to_end(&mut out)
                    .unwrap();
            }
            "xz" => {
                liblzma::read::XzDecoder::new(bytes)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            "bz2" => {
                bzip2::read::BzDecoder::new(bytes)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            "tar" => out = bytes.to_vec(),
            other => panic!("unexpected suffix {other}"),
        }
        out
    }

    const NAMES: [&str; 6] = [
        "extra.db",
        "extra.db.tar.gz",
        "extra.db.tar.zst",
        "extra.db.tar.xz",
        "extra.db.tar.bz2",
        "extra.db.tar",
    ];

    #[test]
    fn build_is_deterministic_and_order_independent() {
        let entries = vec![
            entry("zlib", "1.3-1"),
            entry("acl", "2.3-2"),
            entry("gtk3", "1:3.24-1"),
        ];
        let mut reversed = entries.clone();
        reversed.reverse();
        for name in NAMES {
            let a = build_db(&entries, name).unwrap();
            let b = build_db(&entries, name).unwrap();
            let c = build_db(&reversed, name).unwrap();
            assert_eq!(a, b, "{name}");
            assert_eq!(a, c, "{name}");
        }
    }

    #[test]
    fn archive_holds_one_desc_per_package_in_name_order() {
        // Sorted by directory name, bytewise, as repo-add's C-locale glob sorts them.
        let entries = vec![
            entry("foo", "2.0-1"),
            entry("foo-bar", "1.0-3"),
            entry("a", "0.1-1"),
            entry("python-zen", "3.1-1"),
        ];
        let mut expected = [
            ("a-0.1-1", &entries[2].1),
            ("foo-2.0-1", &entries[0].1),
            ("foo-bar-1.0-3", &entries[1].1),
            ("python-zen-3.1-1", &entries[3].1),
        ];
        expected.sort_by_key(|(dir, _)| *dir);
        for name in NAMES {
            let archive = build_db(&entries, name).unwrap();
            let got = members(&decompress(name, &archive));
            assert_eq!(got.len(), 2 * expected.len(), "{name}");
            for ((dir, desc), pair) in expected.iter().zip(got.chunks(2)) {
                assert_eq!(pair[0].0, format!("{dir}/"));
                assert_eq!(pair[0].1, tar::EntryType::Directory);
                assert_eq!(pair[0].2, 0o755);
                assert!(pair[0].3.is_empty());
                assert_eq!(pair[1].0, format!("{dir}/desc"));
                assert_eq!(pair[1].1, tar::EntryType::Regular);
                assert_eq!(pair[1].2, 0o644);
                assert_eq!(&pair[1].3, *desc, "{name}: {dir}/desc");
            }
        }
    }

    #[test]
    fn empty_database_and_bad_input() {
        for name in NAMES {
            let archive = build_db(&[], name).unwrap();
            assert!(members(&decompress(name, &archive)).is_empty(), "{name}");
        }
        let err = build_db(&[entry("a", "1-1")], "extra.db.zip").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let err = build_db(&[entry("a", "1-1"), entry("a", "2-1")], "extra.db").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn bsdtar_lists_the_archive() {
        if Command::new("bsdtar").arg("--version").output().is_err() {
            println!("bsdtar is not on PATH: skipping the check against libarchive");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let entries = vec![entry("zlib", "1.3-1"), entry("acl", "2.3-2")];
        for name in NAMES {
            let path = dir.path().join(name);
            std::fs::write(&path, build_db(&entries, name).unwrap()).unwrap();
            let out = Command::new("bsdtar")
                .arg("-tf")
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                String::from_utf8(out.stdout).unwrap(),
                "acl-2.3-2/\nacl-2.3-2/desc\nzlib-1.3-1/\nzlib-1.3-1/desc\n",
                "{name}"
            );
            let out = Command::new("bsdtar")
                .arg("-xOf")
                .arg(&path)
                .arg("zlib-1.3-1/desc")
                .output()
                .unwrap();
            assert_eq!(out.stdout, entries[0].1, "{name}");
        }
    }
}
