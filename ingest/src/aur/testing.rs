//! Helpers of the AUR tests: digests, git repositories and HTTP servers made in the test.

use std::net::SocketAddr;

use super::{Algo, Hashes};

/// Lowercase hex of `algo` over `data`.
pub fn hex_of(algo: Algo, data: &[u8]) -> String {
    let mut h = Hashes::new(&[algo]);
    h.update(data);
    let d = h.finish();
    hex::encode(&d.iter().find(|(a, _)| *a == algo).expect("computed").1)
}

#[path = "../../tests/ingest/support/git.rs"]
mod git;
pub use git::repo_with;

/// Serves `router` on a free loopback port until the test ends.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = l.local_addr().expect("its address");
    tokio::spawn(async move { axum::serve(l, router).await });
    addr
}
