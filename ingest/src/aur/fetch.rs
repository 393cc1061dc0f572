//! Fetching one AUR source into the store and checking it against its `.SRCINFO`.
//!
//! The bytes stream from the [`SourceFetcher`] straight into the store while [`Hashes`]
//! computes every algorithm the source's checksums use; nothing is known of the size in
//! advance, so a source is cut off past the publisher's limit. The file is kept only if
//! every checksum that is not `SKIP` matches: otherwise the caller publishes nothing of it
//! (what the store holds then is an unnamed blob under the sync's session pin, gone at the
//! next gc).

use std::sync::{Arc, Mutex};
use std::task::Poll;

use cidmirror_store::{Cid, FileSource, PutOptions, Store};
use futures::StreamExt;

use super::{Algo, Hashes, Mismatch, SourceKind, SourceSpec};
use crate::upstream::SourceFetcher;

/// A source fetched, verified and stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    /// The name makepkg saves it under.
    pub file_name: String,
    /// Where it came from.
    pub url: String,
    /// Bytes.
    pub size: u64,
    /// Root CID in the store.
    pub cid: Cid,
    /// Cumulative DAG size (for directory links).
    pub tsize: u64,
    /// SHA-256, SHA-512 and BLAKE2b-512 always (the `by-hash/` names), and every other
    /// algorithm its checksums used.
    pub digests: Vec<(Algo, Vec<u8>)>,
}

/// Why a source was not cached although it should have been.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The bytes fail one or more checksums.
    #[error("{pkgbase}: {file} from {url}: {}", list(.mismatches))]
    Mismatch {
        /// The package base.
        pkgbase: String,
        /// The source's file name.
        file: String,
        /// Its URL.
        url: String,
        /// Every checksum that failed, with expected and actual values.
        mismatches: Vec<Mismatch>,
    },
    /// It could not be fetched (absent, refused, cut off, too large, store error).
    #[error("{pkgbase}: {file} from {url}: {detail}")]
    Fetch {
        /// The package base.
        pkgbase: String,
        /// The source's file name.
        file: String,
        /// Its URL.
        url: String,
        /// What happened.
        detail: String,
    },
}

fn list(m: &[Mismatch]) -> String {
    m.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Fetches `spec` (a remote source that checks: see [`SourceSpec::uncached`]) of `pkgbase`
/// into `store` with `put` (its pin), refusing more than `max` bytes.
pub async fn fetch_source(
    store: &dyn Store,
    fetcher: &SourceFetcher,
    pkgbase: &str,
    spec: &SourceSpec,
    max: u64,
    put: PutOptions,
) -> Result<Cached, SourceError> {
    let SourceKind::Remote(url) = &spec.kind else {
        return Err(SourceError::Fetch {
            pkgbase: pkgbase.to_string(),
            file: spec.file_name.clone(),
            url: spec.entry.clone(),
            detail: "not a file to fetch".into(),
        });
    };
    let fail = |detail: String| SourceError::Fetch {
        pkgbase: pkgbase.to_string(),
        file: spec.file_name.clone(),
        url: url.to_string(),
        detail,
    };
    let dl = fetcher
        .download(url)
        .await
        .map_err(|e| fail(e.to_string()))?
        .ok_or_else(|| fail("not found".into()))?;
    if dl.content_length.is_some_and(|n| n > max) {
        return Err(fail(format!("larger than the {max} bytes allowed")));
    }
    let mut algos = spec.algos();
    algos.extend([Algo::Sha512, Algo::B2]);
    let hashes = Arc::new(Mutex::new(Some(Hashes::new(&algos))));
    let fed = Arc::clone(&hashes);
    let mut seen = 0u64;
    let mut inner = dl.stream;
    let stream = futures::stream::poll_fn(move |cx| match inner.poll_next_unpin(cx) {
        Poll::Ready(Some(Ok(chunk))) => {
            seen += chunk.len() as u64;
            if seen > max {
                return Poll::Ready(Some(Err(std::io::Error::other(format!(
                    "larger than the {max} bytes allowed"
                )))));
            }
            if let Some(h) = fed.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                h.update(&chunk);
            }
            Poll::Ready(Some(Ok(chunk)))
        }
        other => other,
    });
    let f = store
        .put_file(FileSource::Chunks(Box::pin(stream)), put)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let digests = hashes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .map(Hashes::finish)
        .unwrap_or_default();
    // The store hashed the same bytes: a disagreement would be a bug, and is refused.
    let sha = digests.iter().find(|(a, _)| *a == Algo::Sha256);
    if sha.map(|(_, d)| d.as_slice()) != Some(f.sha256.as_bytes()) {
        return Err(fail(
            "the store and the checksums saw different bytes".into(),
        ));
    }
    let mismatches = spec.verify(&digests);
    if !mismatches.is_empty() {
        return Err(SourceError::Mismatch {
            pkgbase: pkgbase.to_string(),
            file: spec.file_name.clone(),
            url: url.to_string(),
            mismatches,
        });
    }
    Ok(Cached {
        file_name: spec.file_name.clone(),
        url: url.to_string(),
        size: f.size,
        cid: f.cid,
        tsize: f.tsize,
        digests,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::Router;
    use axum::routing::get;

    use super::*;
    use crate::aur::testing::{hex_of, serve};
    use crate::aur::{HostPolicy, parse};
    use crate::upstream::FetchOptions;

    fn fetcher(policy: HostPolicy) -> SourceFetcher {
        let opts = FetchOptions {
            stall_timeout: Duration::from_secs(5),
            retries: 1,
            backoff: Duration::from_millis(10),
            ..Default::default()
        };
        SourceFetcher::new(opts, Arc::new(move |ip| policy.allows(ip))).unwrap()
    }

    fn loopback() -> HostPolicy {
        HostPolicy {
            allow: vec!["127.0.0.1".parse().unwrap()],
        }
    }

    #[tokio::test]
    async fn a_source_that_matches_is_stored_and_one_that_does_not_is_refused() {
        let good = b"release tarball bytes".repeat(1000);
        let served = good.clone();
        let addr = serve(
            Router::new()
                .route("/good.tar.gz", get(move || async move { served }))
                .route("/bad.tar.gz", get(|| async { "not what was promised" })),
        )
        .await;
        let text = format!(
            "pkgbase = demo\n\tpkgver = 1\n\tpkgrel = 1\n\tarch = any\n\
             \tsource = http://{addr}/good.tar.gz\n\tsource = http://{addr}/bad.tar.gz\n\
             \tsha256sums = {}\n\tsha256sums = {}\n\tb2sums = {}\n\tb2sums = {}\n\npkgname = demo\n",
            hex_of(Algo::Sha256, &good),
            hex_of(Algo::Sha256, b"not what was promised"),
            hex_of(Algo::B2, &good),
            hex_of(Algo::B2, b"something else"),
        );
        let info = parse(text.as_bytes(), "demo").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = cidmirror_store::EmbeddedStore::open(dir.path()).unwrap();
        let f = fetcher(loopback());
        let c = fetch_source(
            &store,
            &f,
            "demo",
            &info.sources[0],
            1 << 20,
            PutOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(c.size, good.len() as u64);
        assert_eq!(c.file_name, "good.tar.gz");
        let (_, s) = store.read(&c.cid, None).await.unwrap();
        let back: Vec<u8> = s
            .map(|c| c.unwrap().to_vec())
            .collect::<Vec<_>>()
            .await
            .concat();
        assert_eq!(back, good);
        for algo in [Algo::Sha256, Algo::Sha512, Algo::B2] {
            let d = &c.digests.iter().find(|(a, _)| *a == algo).unwrap().1;
            assert_eq!(hex::encode(d), hex_of(algo, &good), "{algo}");
        }

        // The second matches its sha256 but not its b2: refused, both named.
        let e = fetch_source(
            &store,
            &f,
            "demo",
            &info.sources[1],
            1 << 20,
            PutOptions::default(),
        )
        .await
        .unwrap_err();
        let SourceError::Mismatch { mismatches, .. } = &e else {
            panic!("{e}");
        };
        assert_eq!(mismatches.len(), 1, "{e}");
        assert_eq!(mismatches[0].algo, Algo::B2);
        let msg = e.to_string();
        assert!(
            msg.contains("bad.tar.gz")
                && msg.contains(&hex_of(Algo::B2, b"something else"))
                && msg.contains(&hex_of(Algo::B2, b"not what was promised")),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn limits_and_the_host_policy_hold_while_fetching() {
        let addr = serve(
            Router::new()
                .route("/big", get(|| async { vec![7u8; 10_000] }))
                .route(
                    "/hop",
                    get(|| async {
                        axum::response::Redirect::temporary("http://169.254.169.254/latest")
                    }),
                ),
        )
        .await;
        let text = format!(
            "pkgbase = demo\n\tpkgver = 1\n\tpkgrel = 1\n\tarch = any\n\
             \tsource = http://{addr}/big\n\tsource = http://{addr}/hop\n\
             \tsource = http://{addr}/missing\n\
             \tsha256sums = {}\n\tsha256sums = {}\n\tsha256sums = {}\n\npkgname = demo\n",
            hex_of(Algo::Sha256, &[7u8; 10_000]),
            hex_of(Algo::Sha256, b"x"),
            hex_of(Algo::Sha256, b"x"),
        );
        let info = parse(text.as_bytes(), "demo").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = cidmirror_store::EmbeddedStore::open(dir.path()).unwrap();
        let allowed = fetcher(loopback());
        let put = PutOptions::default;

        let e = fetch_source(&store, &allowed, "demo", &info.sources[0], 9_999, put())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("larger than the 9999 bytes"), "{e}");

        let e = fetch_source(&store, &allowed, "demo", &info.sources[1], 1 << 20, put())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("169.254.169.254"), "{e}");

        let e = fetch_source(&store, &allowed, "demo", &info.sources[2], 1 << 20, put())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not found"), "{e}");

        // Without 127.0.0.1 allowed, nothing is sent there at all.
        let denied = fetcher(HostPolicy::default());
        let e = fetch_source(&store, &denied, "demo", &info.sources[0], 1 << 20, put())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not fetched from"), "{e}");
        // Nor through a name that resolves there.
        let by_name = url::Url::parse(&format!("http://localhost:{}/big", addr.port())).unwrap();
        let e = denied.download(&by_name).await.expect_err("refused");
        assert!(e.to_string().contains("resolves only to"), "{e}");
    }
}
