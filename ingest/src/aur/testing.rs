//! Helpers of the AUR tests: digests, git repositories and HTTP servers made in the test.

use std::net::SocketAddr;
use std::path::Path;

use super::{Algo, Hashes};

/// Lowercase hex of `algo` over `data`.
pub fn hex_of(algo: Algo, data: &[u8]) -> String {
    let mut h = Hashes::new(&[algo]);
    h.update(data);
    let d = h.finish();
    hex::encode(&d.iter().find(|(a, _)| *a == algo).expect("computed").1)
}

/// Commits `files` to the git repository at `dir` (made on first use); returns the commit.
pub fn repo_with(dir: &Path, files: &[(&str, &[u8])]) -> String {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("git")
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

/// Serves `router` on a free loopback port until the test ends.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = l.local_addr().expect("its address");
    tokio::spawn(async move { axum::serve(l, router).await });
    addr
}
