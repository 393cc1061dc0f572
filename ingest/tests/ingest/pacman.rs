//! pacman databases: the desc parser, the name rules, real databases written by `repo-add`
//! from packages built by `makepkg`, and hand-made hostile ones.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use cidmirror_ingest::Error;
use cidmirror_ingest::pacman::{
    Arch, Compression, Desc, MAX_DESC_SIZE, PkgFilename, RepoDb, RepoName, parse_db,
    parse_db_limited, parse_files_db,
};
use sha2::Digest as _;

use crate::support::fixture::{self, run};

const ALL: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Zstd,
    Compression::Xz,
    Compression::Bzip2,
];

fn repo() -> RepoName {
    "core".parse().expect("valid repo name")
}

// ---------------------------------------------------------------------------------------------
// Compression detection

#[test]
fn compression_is_detected_from_magic_bytes_not_names() {
    let mut ustar = vec![0u8; 512];
    ustar[257..263].copy_from_slice(b"ustar\0");
    let mut gnu = vec![0u8; 512];
    gnu[257..265].copy_from_slice(b"ustar  \0");
    let cases: &[(&str, &[u8], Option<Compression>)] = &[
        ("gzip", &[0x1f, 0x8b, 0x08, 0x00], Some(Compression::Gzip)),
        (
            "zstd",
            &[0x28, 0xb5, 0x2f, 0xfd, 0x04],
            Some(Compression::Zstd),
        ),
        (
            "xz",
            &[0xfd, b'7', b'z', b'X', b'Z', 0x00, 0x00],
            Some(Compression::Xz),
        ),
        ("bzip2", b"BZh91AY&SY", Some(Compression::Bzip2)),
        ("posix tar", &ustar, Some(Compression::None)),
        ("gnu tar", &gnu, Some(Compression::None)),
        ("empty tar", &[0u8; 1024], Some(Compression::None)),
        ("one zero block", &[0u8; 512], None),
        ("html", b"<html>404</html>", None),
        ("nothing", b"", None),
        ("xz magic cut short", &[0xfd, b'7', b'z', b'X', b'Z'], None),
        ("zstd magic cut short", &[0x28, 0xb5, 0x2f], None),
        ("lz4", &[0x04, 0x22, 0x4d, 0x18], None),
    ];
    for (what, head, want) in cases {
        assert_eq!(Compression::detect(head), *want, "{what}");
    }
}

#[test]
fn archive_suffixes_are_repo_adds() {
    let want = [".tar", ".tar.gz", ".tar.zst", ".tar.xz", ".tar.bz2"];
    for (c, s) in ALL.iter().zip(want) {
        assert_eq!(c.archive_suffix(), s, "{c:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// desc files

#[test]
fn desc_parser_accepts_what_pacman_writes_and_reads() {
    type Fields = &'static [(&'static str, &'static [&'static str])];
    let cases: &[(&str, &str, Fields)] = &[
        (
            "repo-add style with multi-line lists",
            "%FILENAME%\nfoo-1.0-1-any.pkg.tar.zst\n\n%NAME%\nfoo\n\n%LICENSE%\nMIT\nGPL\n\n\
             %DEPENDS%\nbar>=2\nbaz\nlibx++.so=1-64\n\n",
            &[
                ("FILENAME", &["foo-1.0-1-any.pkg.tar.zst"]),
                ("NAME", &["foo"]),
                ("LICENSE", &["MIT", "GPL"]),
                ("DEPENDS", &["bar>=2", "baz", "libx++.so=1-64"]),
            ],
        ),
        (
            "unknown fields kept in order",
            "%XDATA%\npkgtype=pkg\n\n%NAME%\nfoo\n\n%FUTURE_2%\na\nb\n\n",
            &[
                ("XDATA", &["pkgtype=pkg"]),
                ("NAME", &["foo"]),
                ("FUTURE_2", &["a", "b"]),
            ],
        ),
        (
            "no blank line after the last section",
            "%NAME%\nfoo\n\n%VERSION%\n1-1\n",
            &[("NAME", &["foo"]), ("VERSION", &["1-1"])],
        ),
        (
            "no final newline",
            "%NAME%\nfoo\n\n%VERSION%\n1-1",
            &[("NAME", &["foo"]), ("VERSION", &["1-1"])],
        ),
        (
            "extra blank lines between sections",
            "\n%NAME%\nfoo\n\n\n\n%VERSION%\n1-1\n\n\n",
            &[("NAME", &["foo"]), ("VERSION", &["1-1"])],
        ),
        (
            "values with spaces, colons, percent signs and UTF-8",
            "%OPTDEPENDS%\nbaz: for baz things\n%NAME%\n\n%DESC%\nÜbersetzungen für ✓\n\n",
            &[
                ("OPTDEPENDS", &["baz: for baz things", "%NAME%"]),
                ("DESC", &["Übersetzungen für ✓"]),
            ],
        ),
    ];
    for (what, text, want) in cases {
        let desc = Desc::parse(text.as_bytes().to_vec())
            .unwrap_or_else(|e| panic!("{what}: refused: {e}"));
        let got: Vec<(&str, Vec<&str>)> = desc.fields().collect();
        let want: Vec<(&str, Vec<&str>)> = want.iter().map(|(n, v)| (*n, v.to_vec())).collect();
        assert_eq!(got, want, "{what}");
        assert_eq!(desc.raw(), text.as_bytes(), "{what}: raw bytes changed");
    }
}

#[test]
fn desc_lookups_by_field_name() {
    let text = "%NAME%\nfoo\n\n%DEPENDS%\nbar\nbaz\n\n";
    let desc = Desc::parse(text.as_bytes().to_vec()).expect("valid desc");
    assert_eq!(desc.one("NAME"), Some("foo"));
    assert_eq!(desc.one("DEPENDS"), Some("bar"));
    assert_eq!(desc.get("DEPENDS"), Some(vec!["bar", "baz"]));
    assert_eq!(desc.get("%NAME%"), None, "names are given without % signs");
    assert_eq!(desc.get("name"), None, "names are case-sensitive");
    assert_eq!(desc.one("VERSION"), None);
}

#[test]
fn desc_parser_refuses_malformed_files() {
    let cases: &[(&str, &[u8], &str)] = &[
        ("empty file", b"", "no fields"),
        ("only blank lines", b"\n\n\n", "no fields"),
        (
            "value before any header",
            b"foo\n%NAME%\nfoo\n",
            "before any %FIELD% header",
        ),
        (
            "stray value between sections",
            b"%NAME%\nfoo\n\nstray\n",
            "line 4: expected a %FIELD% header, found \"stray\"",
        ),
        (
            "duplicate field",
            b"%NAME%\nfoo\n\n%NAME%\nbar\n",
            "%NAME% given twice",
        ),
        (
            "header with no values",
            b"%NAME%\nfoo\n\n%DEPENDS%\n\n%VERSION%\n1\n",
            "%DEPENDS% on line 4 has no values",
        ),
        (
            "header with no values at the end",
            b"%NAME%\n",
            "%NAME% on line 1 has no values",
        ),
        (
            "header with no values, no newline",
            b"%NAME%",
            "%NAME% on line 1 has no values",
        ),
        ("empty header", b"%%\nfoo\n", "before any %FIELD% header"),
        (
            "header with a space",
            b"%NA ME%\nfoo\n",
            "before any %FIELD% header",
        ),
        (
            "half a header",
            b"%NAME\nfoo\n",
            "before any %FIELD% header",
        ),
        (
            "CRLF line ends",
            b"%NAME%\r\nfoo\r\n\r\n",
            "carriage return on line 1",
        ),
        ("NUL byte", b"%NAME%\nfoo\0bar\n", "NUL byte on line 2"),
        ("not UTF-8", b"%NAME%\nfo\xffo\n", "not UTF-8"),
    ];
    for (what, raw, want) in cases {
        match Desc::parse(raw.to_vec()) {
            Ok(d) => panic!("{what}: accepted: {d:?}"),
            Err(e) => assert!(e.contains(want), "{what}: error {e:?} lacks {want:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Names

#[test]
fn package_file_names_cannot_leave_their_directory() {
    let long = "a".repeat(256);
    let max = format!("{}.pkg.tar.zst", "a".repeat(255 - 12));
    let ok = [
        "foo-1.0-1-x86_64.pkg.tar.zst",
        "bar-1:2.3-4-any.pkg.tar.xz",
        "libx++-0.1-1-any.pkg.tar.zst",
        "a",
        "foo.bar-1.0-1-any.pkg.tar.zst.sig",
        max.as_str(),
    ];
    for name in ok {
        let f: PkgFilename = name.parse().unwrap_or_else(|e| panic!("{name:?}: {e}"));
        assert_eq!(f.as_str(), name);
        assert_eq!(f.to_string(), name);
        assert_eq!(AsRef::<str>::as_ref(&f), name);
    }
    let bad: &[(&str, &str)] = &[
        ("../../etc/passwd", "contains \"..\""),
        ("..", "contains \"..\""),
        (".", "starts with '.'"),
        ("foo..pkg.tar.zst", "contains \"..\""),
        ("a/b", "contains '/'"),
        ("/etc/passwd", "contains '/'"),
        (".hidden", "starts with '.'"),
        ("foo\0.pkg.tar.zst", "NUL"),
        ("foo\n.pkg.tar.zst", "control character"),
        ("foo\x7f", "control character"),
        ("", "empty"),
        (long.as_str(), "256 bytes long"),
    ];
    for (name, rule) in bad {
        let err = name
            .parse::<PkgFilename>()
            .expect_err(&format!("{name:?} accepted"));
        let msg = err.to_string();
        assert!(msg.contains(rule), "{name:?}: {msg:?} lacks {rule:?}");
        assert!(msg.contains("package file name"), "{msg}");
        assert_eq!(err.value, *name);
    }
}

#[test]
fn repository_names_and_architectures() {
    let long = "a".repeat(65);
    let max = "a".repeat(64);
    for name in [
        "core",
        "extra",
        "multilib-testing",
        "core.staging",
        "x86_64",
        "aarch64",
        "any",
        "i686+v2",
        "A0",
        max.as_str(),
    ] {
        let r: RepoName = name
            .parse()
            .unwrap_or_else(|e| panic!("repo {name:?}: {e}"));
        assert_eq!(r.to_string(), name);
        let a: Arch = name
            .parse()
            .unwrap_or_else(|e| panic!("arch {name:?}: {e}"));
        assert_eq!(a.as_ref(), name);
    }
    let bad: &[(&str, &str)] = &[
        ("", "empty"),
        (long.as_str(), "65 bytes long"),
        ("../core", "contains '/'"),
        ("a/b", "contains '/'"),
        ("..", "starts with '.'"),
        (".hidden", "starts with '.'"),
        ("-v", "starts with '.' or '-'"),
        ("co re", "contains ' '"),
        ("core\0", "contains '\\0'"),
        ("kern@l", "contains '@'"),
        ("ünicode", "contains 'ü'"),
    ];
    for (name, rule) in bad {
        let e = name
            .parse::<RepoName>()
            .expect_err(&format!("repo {name:?} accepted"));
        assert!(e.to_string().contains(rule), "{name:?}: {e}");
        assert!(e.to_string().contains("repository name"), "{e}");
        let e = name
            .parse::<Arch>()
            .expect_err(&format!("arch {name:?} accepted"));
        assert!(e.to_string().contains(rule), "{name:?}: {e}");
        assert!(e.to_string().contains("architecture"), "{e}");
    }
}

#[test]
fn names_go_through_serde_with_the_same_rules() {
    let r: RepoName = serde_json::from_str("\"core\"").expect("valid");
    assert_eq!(serde_json::to_string(&r).expect("serialises"), "\"core\"");
    let e = serde_json::from_str::<PkgFilename>("\"../../etc/passwd\"").expect_err("accepted");
    assert!(e.to_string().contains("contains \"..\""), "{e}");
    assert!(serde_json::from_str::<Arch>("\"x86/64\"").is_err());
}

// ---------------------------------------------------------------------------------------------
// Real databases, written by repo-add from packages built by makepkg

/// A package file built by makepkg.
struct Built {
    name: &'static str,
    version: &'static str,
    filename: String,
    bytes: Vec<u8>,
    /// Its detached signature, if it was signed (then repo-add writes %PGPSIG%).
    sig: Option<Vec<u8>>,
}

/// The databases repo-add wrote for one compression.
struct Dbs {
    compression: Compression,
    db: Vec<u8>,
    files: Vec<u8>,
    empty_db: Vec<u8>,
    empty_files: Vec<u8>,
}

struct Fixtures {
    packages: Vec<Built>,
    dbs: Vec<Dbs>,
    /// `repo-add --sign` output: the database, and its detached signature.
    signed_db: (Vec<u8>, Vec<u8>),
}

impl Fixtures {
    fn package(&self, name: &str) -> &Built {
        self.packages
            .iter()
            .find(|b| b.name == name)
            .unwrap_or_else(|| panic!("no built package {name}"))
    }
}

/// What each test package is: name, version as %VERSION% shows it, PKGBUILD, PKGEXT, signed.
const PACKAGES: &[(&str, &str, &str, &str, bool)] = &[
    (
        "foo",
        "1.0-1",
        r#"pkgname=foo
pkgver=1.0
pkgrel=1
pkgdesc="cidmirror test package"
arch=(any)
license=(MIT GPL)
depends=(bar baz)
options=(!strip !debug)
package() { mkdir -p "$pkgdir/usr/share/foo"; echo hello > "$pkgdir/usr/share/foo/hello"; }
"#,
        ".pkg.tar.zst",
        false,
    ),
    (
        "bar",
        "1:2.3-4",
        r#"pkgname=bar
epoch=1
pkgver=2.3
pkgrel=4
pkgdesc="cidmirror test package with an epoch"
arch=(any)
license=(MIT)
optdepends=('baz: for baz things')
options=(!strip !debug)
package() { mkdir -p "$pkgdir/usr/share/bar"; seq 1 20000 > "$pkgdir/usr/share/bar/numbers"; }
"#,
        ".pkg.tar.xz",
        false,
    ),
    (
        "libx++",
        "0.1-1",
        r#"pkgname=libx++
pkgver=0.1
pkgrel=1
pkgdesc="cidmirror test package, signed"
arch=(any)
license=(BSD)
options=(!strip !debug)
package() { mkdir -p "$pkgdir/usr/lib"; echo lib > "$pkgdir/usr/lib/libx++.so.1"; }
"#,
        ".pkg.tar.zst",
        true,
    ),
];

fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(build_fixtures)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn build_fixtures() -> Fixtures {
    fixture::require_tools(&["makepkg", "repo-add", "bsdtar", "fakeroot", "gpg"]);
    let tmp = tempfile::tempdir().expect("temp dir");
    let top = tmp.path();
    let build = top.join("build");
    let pkgs = top.join("pkgs");
    let gnupg = top.join("gnupg");
    for d in [&build, &pkgs] {
        std::fs::create_dir(d).expect("mkdir");
    }
    for (name, _, pkgbuild, _, _) in PACKAGES {
        let dir = build.join(name);
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("PKGBUILD"), pkgbuild).expect("write PKGBUILD");
    }
    for (name, _, _, ext, _) in PACKAGES {
        fixture::makepkg(&build, &[build.join(name)], ext);
    }

    // A key to sign the package that should carry %PGPSIG%, and `repo-add --sign`.
    let gpg = |args: &[&str]| fixture::gpg(&gnupg, args);
    fixture::new_signing_key(&gnupg);

    let mut packages = Vec::new();
    for (name, version, _, ext, signed) in PACKAGES {
        let filename = format!("{name}-{version}-any{ext}");
        let built = build.join(name).join(&filename);
        let dest = pkgs.join(&filename);
        std::fs::copy(&built, &dest)
            .unwrap_or_else(|e| panic!("makepkg did not write {}: {e}", built.display()));
        let sig = signed.then(|| {
            let sig_path = pkgs.join(format!("{filename}.sig"));
            gpg(&[
                "--detach-sign",
                "--no-armor",
                "--output",
                sig_path.to_str().expect("UTF-8 path"),
                dest.to_str().expect("UTF-8 path"),
            ]);
            read(&sig_path)
        });
        packages.push(Built {
            name,
            version,
            filename,
            bytes: read(&dest),
            sig,
        });
    }
    let pkg_paths: Vec<_> = packages.iter().map(|b| pkgs.join(&b.filename)).collect();

    let mut dbs = Vec::new();
    for compression in ALL {
        let suffix = compression.archive_suffix();
        let full = top.join(format!("full{suffix}"));
        let empty = top.join(format!("empty{suffix}"));
        for d in [&full, &empty] {
            std::fs::create_dir(d).expect("mkdir");
        }
        run(Command::new("repo-add")
            .arg("--quiet")
            .arg(full.join(format!("x.db{suffix}")))
            .args(&pkg_paths));
        // repo-add with no package at all writes empty databases.
        run(Command::new("repo-add")
            .arg("--quiet")
            .arg(empty.join(format!("x.db{suffix}"))));
        dbs.push(Dbs {
            compression,
            db: read(&full.join(format!("x.db{suffix}"))),
            files: read(&full.join(format!("x.files{suffix}"))),
            empty_db: read(&empty.join(format!("x.db{suffix}"))),
            empty_files: read(&empty.join(format!("x.files{suffix}"))),
        });
    }

    let signed = top.join("signed");
    std::fs::create_dir(&signed).expect("mkdir");
    run(Command::new("repo-add")
        .env("GNUPGHOME", &gnupg)
        .args(["--quiet", "--sign"])
        .arg(signed.join("x.db.tar.gz"))
        .args(&pkg_paths));
    let signed_db = (
        read(&signed.join("x.db.tar.gz")),
        read(&signed.join("x.db.tar.gz.sig")),
    );

    // Stop the agent gpg started for this GNUPGHOME before the directory goes away.
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", &gnupg)
        .args(["--kill", "gpg-agent"])
        .output();
    Fixtures {
        packages,
        dbs,
        signed_db,
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Checks that `db` lists exactly the built packages with their true size and hash.
fn check_lists_built_packages(fx: &Fixtures, db: &RepoDb, what: &str) {
    let names: Vec<&str> = db.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["bar", "foo", "libx++"], "{what}: sorted by name");
    for p in &db.packages {
        let built = fx.package(&p.name);
        assert_eq!(p.version, built.version, "{what}");
        assert_eq!(
            p.entry,
            format!("{}-{}", built.name, built.version),
            "{what}"
        );
        assert_eq!(p.filename.as_str(), built.filename, "{what}");
        assert_eq!(
            p.csize,
            built.bytes.len() as u64,
            "{what}: %CSIZE% of {}",
            p.name
        );
        assert_eq!(
            p.sha256.to_hex(),
            sha256_hex(&built.bytes),
            "{what}: {}",
            p.name
        );
        assert_eq!(p.pgpsig, built.sig, "{what}: %PGPSIG% of {}", p.name);
        assert_eq!(p.desc.one("NAME"), Some(p.name.as_str()), "{what}");
        let first: Vec<&str> = p.desc.fields().map(|(n, _)| n).take(2).collect();
        assert_eq!(first, ["FILENAME", "NAME"], "{what}: field order");
        assert!(p.desc.raw().starts_with(b"%FILENAME%\n"), "{what}");
        assert!(p.desc.raw().ends_with(b"\n\n"), "{what}");
    }
    let foo_pkg = &db.packages[1];
    assert_eq!(foo_pkg.desc.get("DEPENDS"), Some(vec!["bar", "baz"]));
    assert_eq!(foo_pkg.desc.get("LICENSE"), Some(vec!["MIT", "GPL"]));
    assert_eq!(foo_pkg.desc.one("DESC"), Some("cidmirror test package"));
    let bar = &db.packages[0];
    assert_eq!(bar.desc.one("OPTDEPENDS"), Some("baz: for baz things"));
    assert_eq!(bar.desc.get("PGPSIG"), None);
}

#[test]
fn repo_add_databases_parse_with_every_compression() {
    let fx = fixtures();
    for d in &fx.dbs {
        let file = format!("x.db{}", d.compression.archive_suffix());
        let db = parse_db(&repo(), &file, &d.db).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(db.compression, d.compression, "{file}");
        check_lists_built_packages(fx, &db, &file);
    }
}

#[test]
fn repo_add_files_databases_list_the_same_packages() {
    let fx = fixtures();
    for d in &fx.dbs {
        let suffix = d.compression.archive_suffix();
        let file = format!("x.files{suffix}");
        let files = parse_files_db(&repo(), &file, &d.files).unwrap_or_else(|e| panic!("{e}"));
        check_lists_built_packages(fx, &files, &file);
        let db = parse_db(&repo(), "x.db", &d.db).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(files, db, "{file}: the same entries, byte for byte");
        // A .files database read as a plain database is fine too.
        let as_db = parse_db(&repo(), &file, &d.files).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(as_db, db);
        // The other way round is not: a .db has no file lists.
        let err = parse_files_db(&repo(), "x.db", &d.db).expect_err("a .db as .files");
        assert_entry_error(&err, "bar-1:2.3-4", "files", "no files list");
    }
}

#[test]
fn desc_bytes_are_kept_verbatim() {
    let fx = fixtures();
    let plain = fx
        .dbs
        .iter()
        .find(|d| d.compression == Compression::None)
        .expect("plain tar database");
    let db = parse_db(&repo(), "x.db.tar", &plain.db).unwrap_or_else(|e| panic!("{e}"));
    let mut archive = tar::Archive::new(plain.db.as_slice());
    let mut seen = 0;
    for member in archive.entries().expect("tar") {
        let mut member = member.expect("tar member");
        let path = member.path().expect("path").to_string_lossy().into_owned();
        let Some(entry) = path.strip_suffix("/desc") else {
            continue;
        };
        let mut bytes = Vec::new();
        member.read_to_end(&mut bytes).expect("read desc");
        let p = db
            .packages
            .iter()
            .find(|p| p.entry == entry)
            .unwrap_or_else(|| panic!("entry {entry} missing"));
        assert_eq!(p.desc.raw(), bytes.as_slice(), "{entry}");
        seen += 1;
    }
    assert_eq!(seen, 3);
}

#[test]
fn repo_add_empty_databases_have_no_packages() {
    let fx = fixtures();
    for d in &fx.dbs {
        let suffix = d.compression.archive_suffix();
        for (file, bytes) in [("x.db", &d.empty_db), ("x.files", &d.empty_files)] {
            let file = format!("{file}{suffix}");
            let db = parse_db(&repo(), &file, bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(db.compression, d.compression, "{file}");
            assert!(db.packages.is_empty(), "{file}");
            let files = parse_files_db(&repo(), &file, bytes).unwrap_or_else(|e| panic!("{e}"));
            assert!(files.packages.is_empty(), "{file}");
        }
    }
    // The uncompressed one is nothing but zeros: the end-of-archive marker and padding.
    let plain = &fx.dbs[0];
    assert_eq!(plain.compression, Compression::None);
    assert!(plain.empty_db.iter().all(|&b| b == 0));
    assert_eq!(plain.empty_db.len() % 512, 0);
}

#[test]
fn repo_add_sign_signs_the_archive_not_the_entries() {
    let fx = fixtures();
    let (db, sig) = &fx.signed_db;
    assert!(!sig.is_empty());
    let db = parse_db(&repo(), "x.db.tar.gz", db).unwrap_or_else(|e| panic!("{e}"));
    check_lists_built_packages(fx, &db, "signed x.db.tar.gz");
    // %PGPSIG% comes only from the package's own .sig file.
    let signed: Vec<&str> = db
        .packages
        .iter()
        .filter(|p| p.pgpsig.is_some())
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(signed, ["libx++"]);
}

#[test]
fn truncated_or_corrupt_compressed_databases_are_refused() {
    let fx = fixtures();
    for d in fx.dbs.iter().filter(|d| d.compression != Compression::None) {
        let file = format!("x.db{}", d.compression.archive_suffix());
        let n = d.db.len();
        let mut flipped = d.db.clone();
        flipped[n - 5] ^= 0x55;
        let cases: [(&str, &[u8]); 4] = [
            ("half", &d.db[..n / 2]),
            ("last byte missing", &d.db[..n - 1]),
            ("trailer missing", &d.db[..n - 8]),
            ("trailer corrupt", &flipped),
        ];
        for (what, bytes) in cases {
            let err =
                parse_db(&repo(), &file, bytes).expect_err(&format!("{file} {what}: accepted"));
            assert!(matches!(err, Error::Db { .. }), "{file} {what}: {err}");
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("repo core: database {file}: ")),
                "{msg}"
            );
        }
    }
}

#[test]
fn decompression_is_bounded() {
    let fx = fixtures();
    for d in &fx.dbs {
        let file = format!("x.db{}", d.compression.archive_suffix());
        let err = parse_db_limited(&repo(), &file, &d.db, 2048).expect_err("over the limit");
        assert_db_error(&err, "decompresses to more than 2048 bytes");
        // The same archive with room to spare is fine.
        parse_db_limited(&repo(), &file, &d.db, 10240).unwrap_or_else(|e| panic!("{e}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-made hostile databases

/// A tar archive of `members` (`path`, content; a path ending in `/` is a directory). Paths
/// are written raw, so that `..` and absolute paths can be made.
fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in members {
        let mut header = tar::Header::new_ustar();
        let name = &mut header.as_old_mut().name;
        assert!(path.len() <= name.len(), "test path too long");
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_entry_type(if path.ends_with('/') {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        header.set_cksum();
        builder.append(&header, *data).expect("append");
    }
    builder.into_inner().expect("finish tar")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

const SHA: &str = "1a850be83504c45466ccd3e9c41dcd0f12e41fdaee52d29650dada4c5382cca7";

/// A desc as repo-add writes it, with `over` replacing (or, with an empty value, removing)
/// fields.
fn desc(name: &str, version: &str, over: &[(&str, &str)]) -> Vec<u8> {
    let filename = format!("{name}-{version}-x86_64.pkg.tar.zst");
    let mut fields = vec![
        ("FILENAME", filename.as_str()),
        ("NAME", name),
        ("VERSION", version),
        ("CSIZE", "1097"),
        ("SHA256SUM", SHA),
        ("ARCH", "x86_64"),
    ];
    for (field, value) in over {
        match fields.iter_mut().find(|(f, _)| f == field) {
            Some(slot) => slot.1 = value,
            None => fields.push((field, value)),
        }
    }
    let mut out = String::new();
    for (field, value) in fields.iter().filter(|(_, v)| !v.is_empty()) {
        out.push_str(&format!("%{field}%\n{value}\n\n"));
    }
    out.into_bytes()
}

fn assert_entry_error(err: &Error, entry: &str, field: &str, detail_has: &str) {
    match err {
        Error::Entry {
            repo,
            entry: e,
            field: f,
            detail,
        } => {
            assert_eq!(repo, "core", "{err}");
            assert_eq!(e, entry, "{err}");
            assert_eq!(f, field, "{err}");
            assert!(detail.contains(detail_has), "{err}: lacks {detail_has:?}");
        }
        other => panic!("expected an entry error, got {other:?}"),
    }
}

fn assert_db_error(err: &Error, detail_has: &str) {
    match err {
        Error::Db { repo, detail, .. } => {
            assert_eq!(repo, "core", "{err}");
            assert!(detail.contains(detail_has), "{err}: lacks {detail_has:?}");
        }
        other => panic!("expected a database error, got {other:?}"),
    }
}

#[test]
fn hand_made_database_is_read() {
    let db = gzip(&tar_of(&[
        ("foo-1.0-1/", b""),
        (
            "foo-1.0-1/desc",
            &desc("foo", "1.0-1", &[("PGPSIG", "aGVsbG8=")]),
        ),
        ("foo-1.0-1/files", b"%FILES%\nusr/\n"),
        (
            "bar-2-1/desc",
            &desc("bar", "2-1", &[("SHA256SUM", &SHA.to_uppercase())]),
        ),
        ("README", b"not an entry"),
        ("foo-1.0-1/install", b"not a desc"),
    ]));
    let got = parse_db(&repo(), "core.db", &db).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.compression, Compression::Gzip);
    let names: Vec<&str> = got.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["bar", "foo"]);
    assert_eq!(
        got.packages[0].sha256.to_string(),
        SHA,
        "lowercase-normalised"
    );
    assert_eq!(got.packages[1].pgpsig.as_deref(), Some(&b"hello"[..]));
    assert_eq!(got.packages[1].csize, 1097);
}

#[test]
fn malformed_entries_are_refused_naming_repo_entry_and_field() {
    // (what, members, entry, field, detail)
    type Case = (
        &'static str,
        Vec<(&'static str, Vec<u8>)>,
        &'static str,
        &'static str,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "path traversal in %FILENAME%",
            vec![(
                "evil-1-1/desc",
                desc("evil", "1-1", &[("FILENAME", "../../etc/passwd")]),
            )],
            "evil-1-1",
            "%FILENAME%",
            "contains \"..\"",
        ),
        (
            "a path in %FILENAME%",
            vec![(
                "evil-1-1/desc",
                desc("evil", "1-1", &[("FILENAME", "sub/evil.pkg")]),
            )],
            "evil-1-1",
            "%FILENAME%",
            "contains '/'",
        ),
        (
            "hidden %FILENAME%",
            vec![(
                "evil-1-1/desc",
                desc("evil", "1-1", &[("FILENAME", ".evil.pkg")]),
            )],
            "evil-1-1",
            "%FILENAME%",
            "starts with '.'",
        ),
        (
            "missing %FILENAME%",
            vec![("foo-1-1/desc", desc("foo", "1-1", &[("FILENAME", "")]))],
            "foo-1-1",
            "%FILENAME%",
            "missing",
        ),
        (
            "two %FILENAME% values",
            vec![(
                "foo-1-1/desc",
                desc("foo", "1-1", &[("FILENAME", "a.pkg\nb.pkg")]),
            )],
            "foo-1-1",
            "%FILENAME%",
            "2 values, expected one",
        ),
        (
            "bad %SHA256SUM%",
            vec![(
                "foo-1-1/desc",
                desc("foo", "1-1", &[("SHA256SUM", &SHA[..63])]),
            )],
            "foo-1-1",
            "%SHA256SUM%",
            "64 hex digits",
        ),
        (
            "non-hex %SHA256SUM%",
            vec![(
                "foo-1-1/desc",
                desc("foo", "1-1", &[("SHA256SUM", &"g".repeat(64))]),
            )],
            "foo-1-1",
            "%SHA256SUM%",
            "sha256",
        ),
        (
            "missing %SHA256SUM%",
            vec![("foo-1-1/desc", desc("foo", "1-1", &[("SHA256SUM", "")]))],
            "foo-1-1",
            "%SHA256SUM%",
            "missing",
        ),
        (
            "non-numeric %CSIZE%",
            vec![("foo-1-1/desc", desc("foo", "1-1", &[("CSIZE", "12kB")]))],
            "foo-1-1",
            "%CSIZE%",
            "not a decimal size",
        ),
        (
            "signed %CSIZE%",
            vec![("foo-1-1/desc", desc("foo", "1-1", &[("CSIZE", "+12")]))],
            "foo-1-1",
            "%CSIZE%",
            "not a decimal size",
        ),
        (
            "%CSIZE% beyond u64",
            vec![(
                "foo-1-1/desc",
                desc("foo", "1-1", &[("CSIZE", "18446744073709551616")]),
            )],
            "foo-1-1",
            "%CSIZE%",
            "not a decimal size",
        ),
        (
            "missing %CSIZE%",
            vec![("foo-1-1/desc", desc("foo", "1-1", &[("CSIZE", "")]))],
            "foo-1-1",
            "%CSIZE%",
            "missing",
        ),
        (
            "missing %NAME%",
            vec![("foo-1-1/desc", desc("foo", "1-1", &[("NAME", "")]))],
            "foo-1-1",
            "%NAME%",
            "missing",
        ),
        (
            "%NAME% with a slash",
            vec![("x-1-1/desc", desc("a/b", "1-1", &[("FILENAME", "ab.pkg")]))],
            "x-1-1",
            "%NAME%",
            "contains '/'",
        ),
        (
            "missing %VERSION%",
            vec![("foo-1-1/desc", desc("foo", "1-1", &[("VERSION", "")]))],
            "foo-1-1",
            "%VERSION%",
            "missing",
        ),
        (
            "bad %PGPSIG%",
            vec![(
                "foo-1-1/desc",
                desc("foo", "1-1", &[("PGPSIG", "not base64!")]),
            )],
            "foo-1-1",
            "%PGPSIG%",
            "not valid base64",
        ),
        (
            "entry directory not %NAME%-%VERSION%",
            vec![("foo-9-9/desc", desc("foo", "1-1", &[]))],
            "foo-9-9",
            "desc",
            "does not match %NAME%-%VERSION% (foo-1-1)",
        ),
        (
            "desc that does not parse",
            vec![("foo-1-1/desc", b"%NAME%\nfoo\n\n%NAME%\nfoo\n".to_vec())],
            "foo-1-1",
            "desc",
            "given twice",
        ),
        (
            "entry with files but no desc",
            vec![("foo-1-1/files", b"%FILES%\n".to_vec())],
            "foo-1-1",
            "desc",
            "no desc",
        ),
        (
            "duplicate %NAME%",
            vec![
                ("foo-1-1/desc", desc("foo", "1-1", &[])),
                ("foo-2-1/desc", desc("foo", "2-1", &[])),
            ],
            "foo-2-1",
            "%NAME%",
            "duplicate package name \"foo\": also in entry foo-1-1",
        ),
        (
            "duplicate %FILENAME%",
            vec![
                (
                    "foo-1-1/desc",
                    desc("foo", "1-1", &[("FILENAME", "same.pkg.tar.zst")]),
                ),
                (
                    "bar-1-1/desc",
                    desc("bar", "1-1", &[("FILENAME", "same.pkg.tar.zst")]),
                ),
            ],
            "bar-1-1",
            "%FILENAME%",
            "duplicate package file name",
        ),
    ];
    for (what, members, entry, field, detail) in cases {
        let members: Vec<(&str, &[u8])> = members.iter().map(|(p, d)| (*p, d.as_slice())).collect();
        let db = gzip(&tar_of(&members));
        let err = parse_db(&repo(), "core.db", &db).expect_err(&format!("{what}: accepted"));
        assert_entry_error(&err, entry, field, detail);
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("repo core: entry {entry}: field {field}: ")),
            "{what}: {msg}"
        );
    }
}

#[test]
fn broken_archives_are_refused_as_a_whole() {
    let good = desc("foo", "1-1", &[]);
    let plain = tar_of(&[("foo-1-1/desc", &good)]);
    let gz = gzip(&plain);
    let big = vec![b'a'; (MAX_DESC_SIZE + 1) as usize];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "an HTML error page",
            b"<html>404</html>".to_vec(),
            "not a pacman database: neither a tar archive nor gzip/zstd/xz/bzip2 compressed",
        ),
        ("an empty file", Vec::new(), "not a pacman database"),
        (
            "truncated gzip",
            gz[..gz.len() / 2].to_vec(),
            "reading the archive",
        ),
        (
            "gzip without its trailer",
            gz[..gz.len() - 4].to_vec(),
            "reading the archive",
        ),
        (
            "gzip of garbage",
            gzip(b"this is not a tar archive at all"),
            "reading the archive",
        ),
        (
            "a member leading out with ..",
            gzip(&tar_of(&[("../evil/desc", &good)])),
            "leads out of the archive",
        ),
        (
            "a .. in the middle",
            gzip(&tar_of(&[("foo-1-1/../../desc", &good)])),
            "leads out of the archive",
        ),
        (
            "an absolute member",
            gzip(&tar_of(&[("/etc/foo-1-1/desc", &good)])),
            "leads out of the archive",
        ),
        (
            "a traversing member that is not a desc",
            gzip(&tar_of(&[
                ("foo-1-1/desc", &good),
                ("../../etc/cron.d/x", b""),
            ])),
            "leads out of the archive",
        ),
        (
            "a desc not at <entry>/desc",
            gzip(&tar_of(&[("./foo-1-1/desc", &good)])),
            "pacman expects <entry>/desc at the top level",
        ),
        (
            "a desc at the top",
            gzip(&tar_of(&[("desc", &good)])),
            "pacman expects <entry>/desc",
        ),
        (
            "a desc twice",
            gzip(&tar_of(&[("foo-1-1/desc", &good), ("foo-1-1/desc", &good)])),
            "appears twice",
        ),
        (
            "a desc over the size limit",
            gzip(&tar_of(&[("foo-1-1/desc", &big)])),
            "more than the 262144 allowed for a desc file",
        ),
    ];
    for (what, bytes, detail) in cases {
        let err = parse_db(&repo(), "core.db", &bytes).expect_err(&format!("{what}: accepted"));
        assert_db_error(&err, detail);
        let msg = err.to_string();
        assert!(
            msg.starts_with("repo core: database core.db: "),
            "{what}: {msg}"
        );
    }
    // The untouched archive, plain and compressed, is fine.
    for bytes in [&plain, &gz] {
        let db = parse_db(&repo(), "core.db", bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(db.packages.len(), 1);
    }
}

#[test]
fn a_symlinked_desc_is_refused() {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    builder
        .append_link(&mut header, "foo-1-1/desc", "/etc/passwd")
        .expect("append symlink");
    let db = builder.into_inner().expect("finish tar");
    let err = parse_db(&repo(), "core.db", &db).expect_err("symlink accepted");
    assert_db_error(&err, "not a regular file");
}

/// Issue 12, defect 5: 3,000 entries of 1 MB each in a few MB of gzip drove the publisher
/// to 9 GB. Each desc is bounded, and so is their sum, with an error naming the database.
#[test]
fn desc_files_that_add_up_to_too_much_are_refused() {
    use cidmirror_ingest::pacman::MAX_DESCS_TOTAL;
    let filler = "x".repeat((MAX_DESC_SIZE - 1024) as usize);
    let per = MAX_DESC_SIZE - 512;
    let count = MAX_DESCS_TOTAL / per + 2;
    let names: Vec<String> = (0..count).map(|i| format!("p{i}")).collect();
    let descs: Vec<Vec<u8>> = names
        .iter()
        .map(|n| desc(n, "1-1", &[("DESC", filler.as_str())]))
        .collect();
    assert!(descs.iter().all(|d| (d.len() as u64) < MAX_DESC_SIZE));
    let paths: Vec<String> = names.iter().map(|n| format!("{n}-1-1/desc")).collect();
    let members: Vec<(&str, &[u8])> = paths
        .iter()
        .zip(&descs)
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    let db = gzip(&tar_of(&members));
    assert!(db.len() < 2 << 20, "a small download: {} bytes", db.len());
    let err = parse_db(&repo(), "core.db", &db).unwrap_err().to_string();
    assert!(
        err.contains("core.db") && err.contains("add up to more than the 134217728 bytes"),
        "{err}"
    );
    // One entry fewer than the bound is a database like any other.
    let fits = (MAX_DESCS_TOTAL / per) as usize - 1;
    let db = gzip(&tar_of(&members[..fits]));
    assert_eq!(
        parse_db(&repo(), "core.db", &db).unwrap().packages.len(),
        fits
    );
}
