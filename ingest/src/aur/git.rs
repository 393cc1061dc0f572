//! Reading AUR package bases from their git repositories, with the `git` program.
//!
//! Each package base is a git repository (`https://aur.archlinux.org/<pkgbase>.git`, or
//! any URL or local path the publisher configures). [`GitReader::head`] asks where its
//! `HEAD` points without fetching anything (`git ls-remote`), so a package base whose head
//! did not move costs one small request per sync; [`GitReader::srcinfo`] fetches that one
//! commit (`--depth 1`) into a bare repository kept per package base under the cache
//! directory and reads its `.SRCINFO`, refused past [`super::SRCINFO_MAX`] before it is
//! read.
//!
//! Written on the `git` program rather than a Rust git library: two plumbing commands are
//! all that is needed, git is what makepkg and every AUR helper use to get the same
//! repositories, and libgit2 bindings or gitoxide would add a large tree for them. Git runs
//! without a terminal prompt, without the user's or system's configuration, with a timeout,
//! and every argument that comes from configuration is checked and put after `--`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::SRCINFO_MAX;

/// How long one git command may take.
const GIT_TIMEOUT: Duration = Duration::from_secs(120);
/// The most output read from a git command other than the `.SRCINFO` itself.
const OUTPUT_MAX: usize = 64 << 10;

/// Why a package base could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitError {
    /// Not a name the AUR allows.
    #[error("{0:?} is not a package base name (lowercase letters, digits, @ . _ + -)")]
    BadName(String),
    /// A git command failed.
    #[error("{pkgbase}: git {command} {url}: {detail}")]
    Git {
        /// The package base.
        pkgbase: String,
        /// `ls-remote`, `fetch`, ...
        command: &'static str,
        /// The repository.
        url: String,
        /// What git said (last lines, made printable), or the timeout.
        detail: String,
    },
    /// The commit has no `.SRCINFO`.
    #[error("{pkgbase}: commit {commit} of {url} has no .SRCINFO")]
    NoSrcinfo {
        /// The package base.
        pkgbase: String,
        /// The repository.
        url: String,
        /// The commit.
        commit: String,
    },
    /// The `.SRCINFO` is too large to read.
    #[error("{pkgbase}: .SRCINFO is {size} bytes, more than the {max} allowed")]
    TooLarge {
        /// The package base.
        pkgbase: String,
        /// Its size.
        size: u64,
        /// The limit.
        max: usize,
    },
}

/// Whether `name` is a package base name as the AUR allows them (`[a-z0-9@._+-]`, not
/// starting with `-` or `.`, at most 255 bytes): safe in a path, a URL and an argument.
pub fn valid_pkgbase(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with(['-', '.'])
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"@._+-".contains(&b))
}

/// Where package bases' repositories are: `BASE<pkgbase>.git` for a URL base
/// (`https://aur.archlinux.org/`), `BASE/<pkgbase>` for a local directory.
#[derive(Debug, Clone)]
pub struct RepoBase(String);

impl RepoBase {
    /// The AUR's own.
    pub fn aur() -> RepoBase {
        RepoBase("https://aur.archlinux.org/".into())
    }

    /// A URL (`https://...`, `ssh://...`, `file://...`) or a local directory.
    pub fn new(base: &str) -> Result<RepoBase, String> {
        if base.is_empty() || base.starts_with('-') || base.chars().any(char::is_control) {
            return Err(format!("{base:?} is not a git URL or directory"));
        }
        Ok(RepoBase(base.to_string()))
    }

    /// The repository of `pkgbase` (already checked with [`valid_pkgbase`]).
    pub fn url_of(&self, pkgbase: &str) -> String {
        if self.0.contains("://") {
            format!("{}/{pkgbase}.git", self.0.trim_end_matches('/'))
        } else {
            Path::new(&self.0)
                .join(pkgbase)
                .to_string_lossy()
                .into_owned()
        }
    }
}

/// Runs git for package bases, keeping bare repositories under a cache directory.
#[derive(Debug, Clone)]
pub struct GitReader {
    cache: PathBuf,
    timeout: Duration,
}

/// The last lines of git's error output, printable.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    super::printable(&lines[lines.len().saturating_sub(3)..].join(" / "))
}

impl GitReader {
    /// Bare repositories go under `cache` (created when needed).
    pub fn new(cache: &Path) -> GitReader {
        GitReader {
            cache: cache.to_path_buf(),
            timeout: GIT_TIMEOUT,
        }
    }

    /// A git command with nothing of the user's environment that could change what it
    /// does or make it wait for a person.
    fn git(&self) -> Command {
        let mut c = Command::new("git");
        c.env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_ASKPASS", "/bin/false")
            .env("SSH_ASKPASS", "/bin/false")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// Runs `cmd`; its output (up to `max` bytes) or the failure.
    async fn run(
        &self,
        mut cmd: Command,
        pkgbase: &str,
        command: &'static str,
        url: &str,
        max: usize,
    ) -> Result<Vec<u8>, GitError> {
        let fail = |detail: String| GitError::Git {
            pkgbase: pkgbase.to_string(),
            command,
            url: super::printable(url),
            detail,
        };
        let out = match tokio::time::timeout(self.timeout, cmd.output()).await {
            Err(_) => return Err(fail(format!("no answer within {:?}", self.timeout))),
            Ok(Err(e)) => return Err(fail(format!("cannot run git: {e}"))),
            Ok(Ok(out)) => out,
        };
        if !out.status.success() {
            return Err(fail(format!("{}: {}", out.status, tail(&out.stderr))));
        }
        if out.stdout.len() > max {
            return Err(fail(format!("more than {max} bytes of output")));
        }
        Ok(out.stdout)
    }

    /// The commit `HEAD` of `url` points at (40 or 64 hex digits).
    pub async fn head(&self, pkgbase: &str, url: &str) -> Result<String, GitError> {
        if !valid_pkgbase(pkgbase) {
            return Err(GitError::BadName(pkgbase.to_string()));
        }
        let mut c = self.git();
        c.args(["ls-remote", "--", url, "HEAD"]);
        let out = self.run(c, pkgbase, "ls-remote", url, OUTPUT_MAX).await?;
        let text = String::from_utf8_lossy(&out);
        let commit = text
            .lines()
            .find_map(|l| {
                let (id, name) = l.split_once('\t')?;
                (name == "HEAD").then_some(id)
            })
            .filter(|id| matches!(id.len(), 40 | 64) && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| GitError::Git {
                pkgbase: pkgbase.to_string(),
                command: "ls-remote",
                url: url.to_string(),
                detail: "no HEAD (an empty repository?)".into(),
            })?;
        Ok(commit.to_ascii_lowercase())
    }

    /// The `.SRCINFO` of `commit` (from [`GitReader::head`]) of `url`.
    pub async fn srcinfo(
        &self,
        pkgbase: &str,
        url: &str,
        commit: &str,
    ) -> Result<Vec<u8>, GitError> {
        if !valid_pkgbase(pkgbase) {
            return Err(GitError::BadName(pkgbase.to_string()));
        }
        let repo = self.cache.join(format!("{pkgbase}.git"));
        let io = |e: std::io::Error| GitError::Git {
            pkgbase: pkgbase.to_string(),
            command: "init",
            url: repo.display().to_string(),
            detail: e.to_string(),
        };
        if !repo.join("HEAD").exists() {
            tokio::fs::create_dir_all(&self.cache).await.map_err(io)?;
            let mut c = self.git();
            c.arg("init")
                .arg("--bare")
                .arg("--quiet")
                .arg("--")
                .arg(&repo);
            self.run(c, pkgbase, "init", url, OUTPUT_MAX).await?;
        }
        let at = |c: &mut Command| {
            c.arg("--git-dir").arg(&repo);
        };
        let mut c = self.git();
        at(&mut c);
        c.args([
            "fetch",
            "--quiet",
            "--depth",
            "1",
            "--no-tags",
            "--",
            url,
            "HEAD",
        ]);
        self.run(c, pkgbase, "fetch", url, OUTPUT_MAX).await?;
        let mut c = self.git();
        at(&mut c);
        c.args(["rev-parse", "--verify", "--quiet", "FETCH_HEAD^{commit}"]);
        let fetched = self.run(c, pkgbase, "rev-parse", url, OUTPUT_MAX).await?;
        let fetched = String::from_utf8_lossy(&fetched)
            .trim()
            .to_ascii_lowercase();
        if fetched != commit {
            // HEAD moved between the two calls: read what was fetched next time.
            return Err(GitError::Git {
                pkgbase: pkgbase.to_string(),
                command: "fetch",
                url: url.to_string(),
                detail: format!("HEAD moved from {commit} to {fetched} meanwhile"),
            });
        }
        let object = format!("{commit}:.SRCINFO");
        let mut c = self.git();
        at(&mut c);
        c.args(["cat-file", "-s", &object]);
        let size = match self.run(c, pkgbase, "cat-file", url, OUTPUT_MAX).await {
            Ok(out) => String::from_utf8_lossy(&out).trim().parse::<u64>().ok(),
            Err(_) => None,
        };
        let Some(size) = size else {
            return Err(GitError::NoSrcinfo {
                pkgbase: pkgbase.to_string(),
                url: url.to_string(),
                commit: commit.to_string(),
            });
        };
        if size > SRCINFO_MAX as u64 {
            return Err(GitError::TooLarge {
                pkgbase: pkgbase.to_string(),
                size,
                max: SRCINFO_MAX,
            });
        }
        let mut c = self.git();
        at(&mut c);
        c.args(["cat-file", "blob", &object]);
        self.run(c, pkgbase, "cat-file", url, SRCINFO_MAX).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aur::testing::repo_with;

    #[tokio::test]
    async fn head_and_srcinfo_of_a_local_repository_follow_its_commits() {
        let tmp = tempfile::tempdir().unwrap();
        let base = RepoBase::new(tmp.path().join("repos").to_str().unwrap()).unwrap();
        let url = base.url_of("demo");
        let first = repo_with(Path::new(&url), &[(".SRCINFO", b"pkgbase = demo\n")]);
        let git = GitReader::new(&tmp.path().join("cache"));
        assert_eq!(git.head("demo", &url).await.unwrap(), first);
        assert_eq!(
            git.srcinfo("demo", &url, &first).await.unwrap(),
            b"pkgbase = demo\n"
        );
        let second = repo_with(Path::new(&url), &[(".SRCINFO", b"pkgbase = demo\n# 2\n")]);
        assert_ne!(first, second);
        assert_eq!(git.head("demo", &url).await.unwrap(), second);
        assert_eq!(
            git.srcinfo("demo", &url, &second).await.unwrap(),
            b"pkgbase = demo\n# 2\n"
        );
        // Asking for a commit HEAD no longer points at is refused, not guessed.
        let e = git.srcinfo("demo", &url, &first).await.unwrap_err();
        assert!(e.to_string().contains("moved"), "{e}");
    }

    #[tokio::test]
    async fn missing_repositories_files_and_bad_names_are_clear_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let git = GitReader::new(&tmp.path().join("cache"));
        let base = RepoBase::new(tmp.path().to_str().unwrap()).unwrap();

        let gone = base.url_of("gone");
        let e = git.head("gone", &gone).await.unwrap_err();
        assert!(
            matches!(
                &e,
                GitError::Git {
                    command: "ls-remote",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("gone"), "{e}");

        let url = base.url_of("nosrcinfo");
        let c = repo_with(Path::new(&url), &[("PKGBUILD", b"pkgname=x\n")]);
        let e = git.srcinfo("nosrcinfo", &url, &c).await.unwrap_err();
        assert!(matches!(e, GitError::NoSrcinfo { .. }), "{e}");

        let url = base.url_of("huge");
        let big = vec![b'#'; SRCINFO_MAX + 1];
        let c = repo_with(Path::new(&url), &[(".SRCINFO", &big)]);
        let e = git.srcinfo("huge", &url, &c).await.unwrap_err();
        assert!(matches!(e, GitError::TooLarge { .. }), "{e}");

        for bad in ["../x", "-x", ".x", "Upper", "a/b", "", "x\n"] {
            assert!(!valid_pkgbase(bad), "{bad:?}");
            assert!(matches!(
                git.head(bad, "unused").await.unwrap_err(),
                GitError::BadName(_)
            ));
        }
        assert!(valid_pkgbase("python-foo_bar+2@x.y"));
        assert_eq!(
            RepoBase::aur().url_of("yay"),
            "https://aur.archlinux.org/yay.git"
        );
        assert!(RepoBase::new("--upload-pack=evil").is_err());
    }
}
