//! Following one AUR package base: read its `.SRCINFO` when its git head moved, fetch and
//! verify every source that a checksum checks, and say what was skipped and why.
//!
//! A package base is all or nothing: if any source that should be cached fails (a
//! mismatch, a dead server), the new version is refused as a whole with every failure
//! listed, and the caller keeps publishing the previous version. Sources that the previous
//! version already cached with the same URL and checksums are reused without a request
//! (a `pkgrel` bump costs no download), provided the store still holds them.

use cidmirror_store::{PutOptions, Store};

use super::fetch::{Cached, SourceError, fetch_source};
use super::git::{GitError, GitReader, RepoBase};
use super::{Algo, HostPolicy, SrcinfoError, Uncached, parse};
use crate::upstream::SourceFetcher;
use cidmirror_listing::FileRef;
use cidmirror_listing::aur::{AurBase, AurSource, Digest512};

/// The default limit on one source's size.
pub const SOURCE_MAX: u64 = 4 << 30;

/// One version of a package base, every cached source verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AurPackage {
    /// `pkgbase`.
    pub pkgbase: String,
    /// The git commit it was read from.
    pub commit: String,
    /// `[epoch:]pkgver-pkgrel`.
    pub version: String,
    /// The `.SRCINFO`, verbatim.
    pub srcinfo: String,
    /// The cached sources, in the `.SRCINFO`'s order (one per file name).
    pub sources: Vec<Cached>,
    /// The sources not cached: (file name or entry, why).
    pub skipped: Vec<(String, Uncached)>,
}

/// The published version of a package base, as [`AurFollower::read`] compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Previous {
    /// Its commit.
    pub commit: String,
    /// Its cached sources.
    pub sources: Vec<Cached>,
}

impl Previous {
    /// What a published base says.
    pub fn of(base: &AurBase) -> Previous {
        Previous {
            commit: base.commit.clone(),
            sources: base
                .sources
                .iter()
                .map(|s| Cached {
                    file_name: s.file_name.clone(),
                    url: s.url.clone(),
                    size: s.file.size,
                    cid: s.file.cid,
                    tsize: s.file.tsize,
                    digests: vec![
                        (Algo::Sha256, s.file.sha256.as_bytes().to_vec()),
                        (Algo::Sha512, s.sha512.0.to_vec()),
                        (Algo::B2, s.b2.0.to_vec()),
                    ],
                })
                .collect(),
        }
    }
}

impl AurPackage {
    /// What the next [`AurFollower::read`] compares with, had this version been published.
    pub fn as_previous(&self) -> Previous {
        Previous {
            commit: self.commit.clone(),
            sources: self.sources.clone(),
        }
    }

    /// The base as a snapshot publishes it, its `.SRCINFO` stored as `srcinfo`. A source
    /// without its SHA-256, SHA-512 or BLAKE2b-512 (which [`fetch_source`] always
    /// computes) is an error naming it.
    pub fn to_base(&self, srcinfo: FileRef) -> Result<AurBase, String> {
        let mut sources = Vec::with_capacity(self.sources.len());
        for c in &self.sources {
            let digest = |a: Algo| {
                c.digests
                    .iter()
                    .find(|(x, _)| *x == a)
                    .map(|(_, d)| d.as_slice())
                    .ok_or_else(|| {
                        format!("{}: {}: no {} digest", self.pkgbase, c.file_name, a.name())
                    })
            };
            let wide = |a: Algo| -> Result<Digest512, String> {
                let d: [u8; 64] = digest(a)?.try_into().map_err(|_| {
                    format!(
                        "{}: {}: a {} digest of the wrong length",
                        self.pkgbase,
                        c.file_name,
                        a.name()
                    )
                })?;
                Ok(Digest512(d))
            };
            let sha256: [u8; 32] = digest(Algo::Sha256)?.try_into().map_err(|_| {
                format!(
                    "{}: {}: a sha256 digest of the wrong length",
                    self.pkgbase, c.file_name
                )
            })?;
            sources.push(AurSource {
                file_name: c.file_name.clone(),
                url: c.url.clone(),
                file: FileRef {
                    size: c.size,
                    sha256: cidmirror_store::Sha256(sha256),
                    cid: c.cid,
                    tsize: c.tsize,
                },
                sha512: wide(Algo::Sha512)?,
                b2: wide(Algo::B2)?,
            });
        }
        sources.sort_by(|a, b| a.file_name.cmp(&b.file_name));
        Ok(AurBase {
            pkgbase: self.pkgbase.clone(),
            commit: self.commit.clone(),
            srcinfo,
            sources,
        })
    }
}

/// Why a new version of a package base is not published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AurProblem {
    /// Its repository could not be read.
    #[error(transparent)]
    Git(#[from] GitError),
    /// Its `.SRCINFO` is refused.
    #[error(transparent)]
    Srcinfo(#[from] SrcinfoError),
    /// The `.SRCINFO` names another package base.
    #[error("{pkgbase}: its .SRCINFO says pkgbase = {found}")]
    OtherName {
        /// The package base followed.
        pkgbase: String,
        /// What its `.SRCINFO` says.
        found: String,
    },
    /// Sources that should be cached failed.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Sources(Vec<SourceError>),
}

/// Reads package bases and caches their sources.
#[derive(Debug, Clone)]
pub struct AurFollower {
    /// Where repositories are.
    pub repos: RepoBase,
    /// Runs git.
    pub git: GitReader,
    /// Fetches sources.
    pub fetcher: SourceFetcher,
    /// Which hosts sources are fetched from.
    pub policy: HostPolicy,
    /// The largest source fetched.
    pub source_max: u64,
}

impl AurFollower {
    /// The package base's new version, or `None` when its head is still `previous`'s
    /// commit (nothing else is asked then). `previous` is the published version (its
    /// commit and cached sources: one with the same file name, URL and sums is reused if
    /// the store still holds it). Sources go into `store` with `put`.
    pub async fn read(
        &self,
        store: &dyn Store,
        pkgbase: &str,
        previous: Option<&Previous>,
        put: &PutOptions,
    ) -> Result<Option<AurPackage>, AurProblem> {
        let url = self.repos.url_of(pkgbase);
        let commit = self.git.head(pkgbase, &url).await?;
        if previous.is_some_and(|p| p.commit == commit) {
            return Ok(None);
        }
        let text = self.git.srcinfo(pkgbase, &url, &commit).await?;
        let info = parse(&text, pkgbase)?;
        if info.pkgbase != pkgbase {
            return Err(AurProblem::OtherName {
                pkgbase: pkgbase.to_string(),
                found: super::printable(&info.pkgbase),
            });
        }
        let mut sources: Vec<Cached> = Vec::new();
        let mut skipped = Vec::new();
        let mut failed = Vec::new();
        for spec in &info.sources {
            if let Some(why) = spec.uncached(&self.policy) {
                let name = if spec.file_name.is_empty() {
                    spec.entry.clone()
                } else {
                    spec.file_name.clone()
                };
                skipped.push((name, why));
                continue;
            }
            if sources.iter().any(|c| c.file_name == spec.file_name) {
                continue; // listed twice (the parser checked they are the same)
            }
            let url = match &spec.kind {
                super::SourceKind::Remote(u) => u.to_string(),
                _ => continue,
            };
            let reuse = match previous.and_then(|p| {
                p.sources
                    .iter()
                    .find(|c| c.file_name == spec.file_name && c.url == url)
            }) {
                Some(c) if spec.verify(&c.digests).is_empty() => match store.has(&c.cid).await {
                    Ok(true) => Some(c.clone()),
                    _ => None,
                },
                _ => None,
            };
            if let Some(c) = reuse {
                sources.push(c);
                continue;
            }
            match fetch_source(
                store,
                &self.fetcher,
                pkgbase,
                spec,
                self.source_max,
                put.clone(),
            )
            .await
            {
                Ok(c) => sources.push(c),
                Err(e) => failed.push(e),
            }
        }
        if !failed.is_empty() {
            return Err(AurProblem::Sources(failed));
        }
        Ok(Some(AurPackage {
            pkgbase: pkgbase.to_string(),
            commit,
            version: info.version,
            srcinfo: info.text,
            sources,
            skipped,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use axum::Router;
    use axum::routing::get;

    use super::*;
    use crate::aur::Algo;
    use crate::aur::testing::{hex_of, repo_with, serve};

    fn commit(dir: &Path, srcinfo: &str) {
        repo_with(dir, &[(".SRCINFO", srcinfo.as_bytes())]);
    }
    use crate::upstream::FetchOptions;

    #[tokio::test]
    async fn a_package_is_read_once_per_head_and_all_or_nothing() {
        let tarball = b"upstream release".repeat(500);
        let served = tarball.clone();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&requests);
        let router = Router::new()
            .route(
                "/demo-1.tar.gz",
                get(move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let served = served.clone();
                    async move { served }
                }),
            )
            .route("/changed", get(|| async { "changed upstream" }));
        let addr = serve(router).await;

        let tmp = tempfile::tempdir().unwrap();
        let repos = RepoBase::new(tmp.path().join("repos").to_str().unwrap()).unwrap();
        let fetcher = SourceFetcher::new(
            FetchOptions {
                stall_timeout: Duration::from_secs(5),
                retries: 0,
                ..Default::default()
            },
            Arc::new(|ip: std::net::IpAddr| ip.is_loopback()),
        )
        .unwrap();
        let follower = AurFollower {
            repos: repos.clone(),
            git: GitReader::new(&tmp.path().join("cache")),
            fetcher,
            policy: HostPolicy {
                allow: vec!["127.0.0.1".parse().unwrap()],
            },
            source_max: SOURCE_MAX,
        };
        let store = cidmirror_store::EmbeddedStore::open(&tmp.path().join("store")).unwrap();
        let sha = hex_of(Algo::Sha256, &tarball);
        let srcinfo = |rel: u32, extra: &str| {
            format!(
                "pkgbase = demo\n\tpkgver = 1\n\tpkgrel = {rel}\n\tarch = any\n\
                 \tsource = http://{addr}/demo-1.tar.gz\n\tsource = git+https://example.org/x.git\n{extra}\
                 \tsha256sums = {sha}\n\tsha256sums = SKIP\n\npkgname = demo\n"
            )
        };
        let dir = Path::new(&repos.url_of("demo")).to_path_buf();
        commit(&dir, &srcinfo(1, ""));
        let put = PutOptions::default();
        let first = follower
            .read(&store, "demo", None, &put)
            .await
            .unwrap()
            .expect("a first version");
        assert_eq!(first.version, "1-1");
        assert_eq!(first.sources.len(), 1);
        assert_eq!(first.sources[0].file_name, "demo-1.tar.gz");
        assert_eq!(first.skipped.len(), 1, "{:?}", first.skipped);
        assert_eq!(first.skipped[0].1, Uncached::Vcs);
        assert_eq!(requests.load(Ordering::SeqCst), 1);

        // Head unchanged: nothing asked, not even the source server.
        let again = follower
            .read(&store, "demo", Some(&first.as_previous()), &put)
            .await
            .unwrap();
        assert!(again.is_none());
        // A pkgrel bump with the same source: read, but the source is reused.
        commit(&dir, &srcinfo(2, ""));
        let second = follower
            .read(&store, "demo", Some(&first.as_previous()), &put)
            .await
            .unwrap()
            .expect("a new version");
        assert_eq!(second.version, "1-2");
        assert_eq!(second.sources, first.sources);
        assert_eq!(requests.load(Ordering::SeqCst), 1, "no new request");

        // A new version whose second source fails its checksum: refused as a whole.
        let bad = format!(
            "pkgbase = demo\n\tpkgver = 2\n\tpkgrel = 1\n\tarch = any\n\
             \tsource = http://{addr}/demo-1.tar.gz\n\tsource = new.txt::http://{addr}/changed\n\
             \tsha256sums = {sha}\n\tsha256sums = {}\n\npkgname = demo\n",
            hex_of(Algo::Sha256, b"what the maintainer checked")
        );
        commit(&dir, &bad);
        let e = follower
            .read(&store, "demo", Some(&second.as_previous()), &put)
            .await
            .unwrap_err();
        let AurProblem::Sources(failures) = &e else {
            panic!("{e}");
        };
        assert_eq!(failures.len(), 1, "{e}");
        assert!(e.to_string().contains("new.txt"), "{e}");
        assert!(
            e.to_string()
                .contains(&hex_of(Algo::Sha256, b"what the maintainer checked")),
            "{e}"
        );

        // A .SRCINFO naming another package base is refused.
        commit(
            &dir,
            &srcinfo(3, "").replace("pkgbase = demo", "pkgbase = other"),
        );
        let e = follower
            .read(&store, "demo", Some(&second.as_previous()), &put)
            .await
            .unwrap_err();
        assert!(matches!(e, AurProblem::OtherName { .. }), "{e}");
    }
}
