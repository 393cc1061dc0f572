//! Git repositories made by the AUR tests (the unit tests in `ingest/src/aur/` and the
//! integration tests of `ingest` and of the binary share this file through `#[path]`), and
//! digests by coreutils' own tools.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// Commits `files` to the git repository at `dir` (made on first use); returns the commit.
pub fn repo_with(dir: &Path, files: &[(&str, &[u8])]) -> String {
    let run = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.org")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.org")
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    if !dir.join(".git").exists() {
        std::fs::create_dir_all(dir).expect("repository directory");
        run(&["init", "--quiet", "-b", "master"]);
    }
    for (name, data) in files {
        std::fs::write(dir.join(name), data).expect("file written");
    }
    run(&["add", "-A"]);
    run(&["commit", "--quiet", "--allow-empty", "-m", "change"]);
    run(&["rev-parse", "HEAD"]).trim().to_string()
}

/// Commits a `.SRCINFO` (and nothing else changes) to the repository at `dir`.
pub fn commit_srcinfo(dir: &Path, text: &str) -> String {
    repo_with(dir, &[(".SRCINFO", text.as_bytes())])
}

/// `<tool> FILE`'s digest of `data` (`sha256sum`, `sha512sum`, `b2sum`).
pub fn digest(tool: &str, data: &[u8]) -> String {
    let tmp = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(tmp.path(), data).expect("write");
    let out = Command::new(tool).arg(tmp.path()).output().expect(tool);
    assert!(out.status.success(), "{tool}: {out:?}");
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    text.split_whitespace()
        .next()
        .expect("a digest")
        .to_string()
}
