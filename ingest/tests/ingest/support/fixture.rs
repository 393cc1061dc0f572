//! Real pacman mirrors for tests: packages built by `makepkg`, signed with a throwaway gpg
//! key, indexed by `repo-add --sign`, laid out as `<root>/<repo>/os/<arch>/`.
//!
//! Building packages takes seconds, so they are built once and cached in cargo's target
//! temp dir (`CARGO_TARGET_TMPDIR`), keyed by a hash of their PKGBUILDs; a lock file keeps
//! concurrent test processes from building the same set twice. The set must fail loudly, not
//! skip, when the tools are missing (`.ci/run` installs them).
//!
//! Shared by the ingest tests and, through `#[path]`, the command-line tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub const INSTALL_HINT: &str = "install pacman's tools: apt-get install -y --no-install-recommends \
     pacman-package-manager makepkg libarchive-tools fakeroot gnupg";

/// One test package: name, pkgver, payload size in bytes, signed.
pub const PACKAGES: &[(&str, &str, usize, bool)] = &[
    ("alpha", "1.0", 20_000, true),
    ("alpha", "2.0", 21_000, true),
    ("beta", "1.0", 3_000, false),
    ("beta", "2.0", 3_100, false),
    ("gamma", "1.0", 2_500_000, true),
    ("delta", "1.0", 40_000, false),
    ("epsilon", "1.0", 1_500_000, true),
    ("zeta", "1.0", 5_000, true),
    // Bigger than the sockets' buffers on loopback: a download of it is still running
    // while a test does something else.
    ("omega", "1.0", 12_000_000, true),
];

/// A built package file.
#[derive(Debug, Clone)]
pub struct Built {
    pub name: String,
    pub pkgver: String,
    pub filename: String,
    pub path: PathBuf,
    pub sig: Option<PathBuf>,
}

impl Built {
    pub fn bytes(&self) -> Vec<u8> {
        fs::read(&self.path).expect("package file")
    }
}

pub struct Packages {
    pub dir: PathBuf,
    pub gnupg: PathBuf,
    pub built: Vec<Built>,
}

impl Packages {
    pub fn get(&self, name: &str, pkgver: &str) -> &Built {
        self.built
            .iter()
            .find(|b| b.name == name && b.pkgver == pkgver)
            .unwrap_or_else(|| panic!("no package {name} {pkgver} in the fixture"))
    }
}

/// Runs `cmd`, failing the test with its output if it cannot start or fails.
pub fn run(cmd: &mut Command) {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}; {INSTALL_HINT}"));
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pkgbuild(name: &str, pkgver: &str, size: usize) -> String {
    // The payload is generated deterministically from the name (no /dev/urandom), big
    // enough for multi-chunk packages where asked.
    format!(
        r#"pkgname={name}
pkgver={pkgver}
pkgrel=1
pkgdesc="cidmirror test package {name} {pkgver}"
arch=(x86_64)
license=(MIT)
options=(!strip !debug)
package() {{
  mkdir -p "$pkgdir/usr/share/{name}"
  echo "{name} {pkgver}" > "$pkgdir/usr/share/{name}/version"
  openssl enc -aes-128-ctr -nosalt -pass pass:{name}{pkgver} -pbkdf2 < /dev/zero 2>/dev/null \
    | head -c {size} > "$pkgdir/usr/share/{name}/payload" || true
}}
"#
    )
}

/// The package set, built on first use (in this or an earlier test process).
pub fn packages() -> &'static Packages {
    static P: OnceLock<Packages> = OnceLock::new();
    P.get_or_init(build_or_load)
}

fn build_or_load() -> Packages {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for (n, v, s, signed) in PACKAGES {
        h.update(pkgbuild(n, v, *s).as_bytes());
        h.update([u8::from(*signed)]);
    }
    let key = hex::encode(&h.finalize()[..8]);
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pacman-fixture");
    fs::create_dir_all(&base).expect("fixture cache dir");
    let lock = fs::File::create(base.join("lock")).expect("lock file");
    lock.lock().expect("locking the fixture cache");
    let dir = base.join(&key);
    let done = dir.join("done");
    if !done.exists() {
        let _ = fs::remove_dir_all(&dir);
        build_into(&dir);
        fs::write(&done, b"ok").expect("marking the fixture built");
    }
    let gnupg = dir.join("gnupg");
    let built = PACKAGES
        .iter()
        .map(|(name, pkgver, _, signed)| {
            let filename = format!("{name}-{pkgver}-1-x86_64.pkg.tar.zst");
            let path = dir.join("pkgs").join(&filename);
            assert!(path.is_file(), "fixture lacks {}", path.display());
            Built {
                name: name.to_string(),
                pkgver: pkgver.to_string(),
                sig: signed.then(|| dir.join("pkgs").join(format!("{filename}.sig"))),
                filename,
                path,
            }
        })
        .collect();
    Packages { dir, gnupg, built }
}

/// `gpg` on the keyring `gnupg`, never asking for a passphrase.
pub fn gpg(gnupg: &Path, args: &[&str]) {
    run(Command::new("gpg")
        .env("GNUPGHOME", gnupg)
        .args([
            "--batch",
            "--quiet",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ])
        .args(args));
}

/// Fails the test, with the install hint, unless pacman's tools are on PATH.
pub fn require_tools(tools: &[&str]) {
    for tool in tools {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        assert!(found, "{tool} not found on PATH; {INSTALL_HINT}");
    }
}

/// Runs makepkg in each of `dirs` (each holding a PKGBUILD) with `PKGEXT=pkgext`, `HOME`
/// at `build`. makepkg refuses root: as root it runs as nobody, who is given `build` and
/// the way to it.
pub fn makepkg(build: &Path, dirs: &[PathBuf], pkgext: &str) {
    // /proc/self belongs to this process's effective user.
    let as_root = fs::metadata("/proc/self").expect("stat /proc/self").uid() == 0;
    if as_root {
        run(Command::new("chown").args(["-R", "nobody"]).arg(build));
        let mut p = build.to_path_buf();
        loop {
            let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o755));
            if !p.pop() || p.as_os_str().is_empty() || p == Path::new("/") {
                break;
            }
            if fs::metadata(&p)
                .map(|m| m.mode() & 0o001 != 0)
                .unwrap_or(true)
            {
                break;
            }
        }
    }
    for d in dirs {
        let mut cmd = if as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "nobody", "--", "makepkg"]);
            c
        } else {
            Command::new("makepkg")
        };
        cmd.args(["--nodeps", "--noconfirm"])
            .current_dir(d)
            .env("HOME", build)
            .env("PKGEXT", pkgext)
            .env("PACKAGER", "cidmirror tests <tests@cidmirror.invalid>");
        run(&mut cmd);
    }
}

/// A fresh keyring in `gnupg` (mode 0700) with one ed25519 signing key.
pub fn new_signing_key(gnupg: &Path) {
    fs::create_dir_all(gnupg).expect("mkdir gnupg");
    fs::set_permissions(gnupg, fs::Permissions::from_mode(0o700)).expect("chmod gnupg");
    gpg(
        gnupg,
        &[
            "--quick-gen-key",
            "cidmirror tests <tests@cidmirror.invalid>",
            "ed25519",
            "sign",
            "never",
        ],
    );
}

fn build_into(dir: &Path) {
    require_tools(&[
        "makepkg", "repo-add", "bsdtar", "fakeroot", "gpg", "openssl",
    ]);
    let build = dir.join("build");
    let pkgs = dir.join("pkgs");
    let gnupg = dir.join("gnupg");
    for d in [&build, &pkgs] {
        fs::create_dir_all(d).expect("mkdir");
    }
    let mut dirs = Vec::new();
    for (name, pkgver, size, _) in PACKAGES {
        let d = build.join(format!("{name}-{pkgver}"));
        fs::create_dir_all(&d).expect("mkdir");
        fs::write(d.join("PKGBUILD"), pkgbuild(name, pkgver, *size)).expect("PKGBUILD");
        dirs.push(d);
    }
    makepkg(&build, &dirs, ".pkg.tar.zst");
    new_signing_key(&gnupg);
    for (name, pkgver, _, signed) in PACKAGES {
        let filename = format!("{name}-{pkgver}-1-x86_64.pkg.tar.zst");
        let from = build.join(format!("{name}-{pkgver}")).join(&filename);
        let to = pkgs.join(&filename);
        fs::copy(&from, &to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
        if *signed {
            let sig = pkgs.join(format!("{filename}.sig"));
            gpg(
                &gnupg,
                &[
                    "--detach-sign",
                    "--no-armor",
                    "--output",
                    sig.to_str().unwrap(),
                    to.to_str().unwrap(),
                ],
            );
        }
    }
    let _ = fs::remove_dir_all(&build);
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", &gnupg)
        .args(["--kill", "gpg-agent"])
        .output();
}

/// A mirror directory (`<root>/lastupdate`, `<root>/<repo>/os/<arch>/...`) whose content
/// tests change between syncs.
pub struct Mirror {
    pub tmp: tempfile::TempDir,
}

impl Mirror {
    pub fn new() -> Mirror {
        Mirror {
            tmp: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    pub fn repo_dir(&self, repo: &str, arch: &str) -> PathBuf {
        self.root().join(repo).join("os").join(arch)
    }

    pub fn set_lastupdate(&self, v: u64) {
        fs::write(self.root().join("lastupdate"), format!("{v}\n")).expect("lastupdate");
    }

    /// Makes `<repo>/os/x86_64` hold exactly `pkgs` (name, pkgver) with their signatures and
    /// a fresh database made by repo-add (signed with `--sign` when `sign_db`).
    pub fn set_repo(&self, repo: &str, pkgs: &[(&str, &str)], sign_db: bool) {
        let p = packages();
        let dir = self.repo_dir(repo, "x86_64");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("mkdir repo dir");
        let mut files = Vec::new();
        for (name, ver) in pkgs {
            let b = p.get(name, ver);
            let to = dir.join(&b.filename);
            fs::copy(&b.path, &to).expect("copy package");
            if let Some(sig) = &b.sig {
                fs::copy(sig, dir.join(format!("{}.sig", b.filename))).expect("copy sig");
            }
            files.push(to);
        }
        let mut cmd = Command::new("repo-add");
        cmd.env("GNUPGHOME", &p.gnupg).arg("--quiet");
        if sign_db {
            cmd.arg("--sign");
        }
        cmd.arg(dir.join(format!("{repo}.db.tar.gz"))).args(&files);
        run(&mut cmd);
    }

    /// Leaves `<repo>/os/x86_64` with a database of no entries and no `.files` database:
    /// what a mirror caught mid-rsync can look like.
    pub fn empty_repo(&self, repo: &str) {
        let dir = self.repo_dir(repo, "x86_64");
        for f in [format!("{repo}.files"), format!("{repo}.files.tar.gz")] {
            fs::remove_file(dir.join(f)).expect("remove the files database");
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        tar::Builder::new(&mut gz).finish().expect("empty tar");
        let empty = gz.finish().expect("gzip");
        fs::write(dir.join(format!("{repo}.db.tar.gz")), empty).expect("write the database");
    }

    /// Every file of `<repo>/os/x86_64` (following symlinks), name -> bytes.
    pub fn files(&self, repo: &str) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for e in fs::read_dir(self.repo_dir(repo, "x86_64")).expect("repo dir") {
            let e = e.expect("entry");
            let name = e.file_name().to_string_lossy().into_owned();
            out.insert(name, fs::read(e.path()).expect("read"));
        }
        out
    }
}

/// The standard two-repository mirror, first state: core = alpha, beta 1.0, gamma (db
/// signed), extra = delta, epsilon.
pub fn standard_mirror() -> Mirror {
    let m = Mirror::new();
    m.set_repo(
        "core",
        &[("alpha", "1.0"), ("beta", "1.0"), ("gamma", "1.0")],
        true,
    );
    m.set_repo("extra", &[("delta", "1.0"), ("epsilon", "1.0")], false);
    m.set_lastupdate(1_700_000_000);
    m
}

/// The standard change: beta upgraded to 2.0, gamma removed, zeta added; extra unchanged.
pub fn change_standard_mirror(m: &Mirror) {
    m.set_repo(
        "core",
        &[("alpha", "1.0"), ("beta", "2.0"), ("zeta", "1.0")],
        true,
    );
    m.set_lastupdate(1_700_003_600);
}
