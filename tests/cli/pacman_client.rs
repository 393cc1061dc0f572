//! A private pacman (Debian's `pacman-package-manager`, /work/shared/PEERS.md): its own
//! pacman.conf with every directory under a temp dir, a keyring that trusts one signer, and
//! each run bounded by a timeout. pacman runs as root on these machines.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::{finish, s, stderr};

/// pacman-key generates a master key on `--init`: seconds, more on a loaded machine.
const KEYRING_TIMEOUT: Duration = Duration::from_secs(60);
/// One pacman transaction against a gateway on loopback.
const PACMAN_TIMEOUT: Duration = Duration::from_secs(60);

/// One pacman installation rooted in a directory of its own.
pub struct Pacman {
    /// pacman.conf.
    pub conf: PathBuf,
    /// `RootDir`: where packages are installed.
    pub root: PathBuf,
    /// `CacheDir`: where `-Sw` puts packages.
    pub cache: PathBuf,
    /// `GPGDir`: pacman's keyring.
    pub gpgdir: PathBuf,
}

fn run_bounded(mut cmd: Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "{what}: {e}; install pacman: apt-get install -y --no-install-recommends \
             pacman-package-manager makepkg libarchive-tools fakeroot gnupg"
        )
    });
    finish(child, &what, timeout)
}

#[track_caller]
fn ok(o: Output, what: &str) -> Output {
    assert!(
        o.status.success(),
        "{what}: {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    o
}

impl Pacman {
    /// A pacman under `dir` whose `repos` all come from the gateway at `base`
    /// (`http://127.0.0.1:PORT`), with `siglevel` in `[options]`.
    pub fn new(dir: &Path, base: &str, repos: &[&str], siglevel: &str) -> Pacman {
        let p = |rel: &str| dir.join(rel);
        for d in ["root", "db", "cache", "gnupg", "hooks"] {
            std::fs::create_dir_all(p(d)).expect("creating pacman's directories");
        }
        let mut conf = format!(
            "[options]\nRootDir = {}\nDBPath = {}\nCacheDir = {}\nLogFile = {}\nGPGDir = {}\n\
             HookDir = {}\nArchitecture = x86_64\nSigLevel = {siglevel}\n",
            s(&p("root")),
            s(&p("db")),
            s(&p("cache")),
            s(&p("pacman.log")),
            s(&p("gnupg")),
            s(&p("hooks")),
        );
        for r in repos {
            conf.push_str(&format!("\n[{r}]\nServer = {base}/$repo/os/$arch\n"));
        }
        std::fs::write(p("pacman.conf"), conf).expect("writing pacman.conf");
        Pacman {
            conf: p("pacman.conf"),
            root: p("root"),
            cache: p("cache"),
            gpgdir: p("gnupg"),
        }
    }

    fn key_cmd(&self) -> Command {
        let mut c = Command::new("pacman-key");
        c.arg("--config")
            .arg(&self.conf)
            .arg("--gpgdir")
            .arg(&self.gpgdir);
        c
    }

    /// Makes pacman's keyring trust the key `fingerprint` (public key file `public`):
    /// `pacman-key --init`, `--add`, `--lsign-key`.
    pub fn trust(&self, public: &Path, fingerprint: &str) {
        let mut c = self.key_cmd();
        c.arg("--init");
        ok(run_bounded(c, KEYRING_TIMEOUT), "pacman-key --init");
        let mut c = self.key_cmd();
        c.arg("--add").arg(public);
        ok(run_bounded(c, KEYRING_TIMEOUT), "pacman-key --add");
        let mut c = self.key_cmd();
        c.args(["--lsign-key", fingerprint]);
        ok(run_bounded(c, KEYRING_TIMEOUT), "pacman-key --lsign-key");
    }

    /// `pacman --config CONF --noconfirm ARGS`, bounded.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut c = Command::new("pacman");
        c.arg("--config")
            .arg(&self.conf)
            .arg("--noconfirm")
            .args(args);
        run_bounded(c, PACMAN_TIMEOUT)
    }

    /// Like [`Pacman::run`], and it must succeed; returns stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let o = ok(self.run(args), &format!("pacman {}", args.join(" ")));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Pacman {
    fn drop(&mut self) {
        // pacman-key starts a gpg-agent for the keyring; it must not outlive the test.
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&self.gpgdir)
            .args(["--kill", "all"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The public key and fingerprint of the (first) key in `gnupghome`, exported to `out`.
pub fn export_key(gnupghome: &Path, out: &Path) -> String {
    let mut c = Command::new("gpg");
    c.env("GNUPGHOME", gnupghome)
        .args(["--batch", "--yes", "--output"])
        .arg(out)
        .arg("--export");
    ok(run_bounded(c, KEYRING_TIMEOUT), "gpg --export");
    let mut c = Command::new("gpg");
    c.env("GNUPGHOME", gnupghome)
        .args(["--batch", "--with-colons", "--list-keys"]);
    let o = ok(run_bounded(c, KEYRING_TIMEOUT), "gpg --list-keys");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("fpr:"))
        .and_then(|l| l.split(':').find(|f| !f.is_empty()))
        .unwrap_or_else(|| panic!("no fingerprint in gpg --list-keys:\n{text}"))
        .to_string()
}
