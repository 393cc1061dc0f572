//! Repairing the embedded store from the upstream: a kept file found corrupt (by the
//! scrub, a serve-time check or `verify --repair`) is fetched again from where the
//! publisher took it, verified against its size and SHA-256 as on the first import.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use cidmirror_schema::Db;
use cidmirror_schema::publisher::snapshots;
use cidmirror_store::scrub::Repair;
use cidmirror_store::{EmbeddedStore, Expected, FileSource, Profile, PutOptions, Sha256, Store};

use crate::upstream::{FetchOptions, Upstream};
use crate::{Error, Result};

/// Snapshots looked through, newest first, for a path of the file to repair.
const SNAPSHOTS_SEARCHED: u32 = 16;

/// Re-fetches lost files from the upstream of the publisher's current snapshot.
pub struct UpstreamRepair {
    db: Arc<Db>,
    upstream: Upstream,
    profile: Profile,
}

impl UpstreamRepair {
    /// The repair for a publisher's data directory: `None` if it has published nothing yet
    /// (there is no upstream to ask).
    pub fn open(data_dir: &Path, opts: FetchOptions) -> Result<Option<UpstreamRepair>> {
        let db = Arc::new(crate::publish::open_state(data_dir)?);
        Self::from_db(db, opts)
    }

    /// As [`UpstreamRepair::open`], over an open publisher database.
    pub fn from_db(db: Arc<Db>, opts: FetchOptions) -> Result<Option<UpstreamRepair>> {
        let Some(cur) = db.read(snapshots::current)? else {
            return Ok(None);
        };
        let profile: Profile = cur
            .profile
            .parse()
            .map_err(|e: cidmirror_store::Error| Error::Config(e.to_string()))?;
        let upstream = Upstream::parse(&cur.upstream, opts)?;
        Ok(Some(UpstreamRepair {
            db,
            upstream,
            profile,
        }))
    }
}

#[async_trait]
impl Repair for UpstreamRepair {
    fn describe(&self) -> String {
        format!("upstream {}", self.upstream.url())
    }

    async fn repair(
        &self,
        store: &EmbeddedStore,
        sha256: Sha256,
        size: u64,
    ) -> std::result::Result<bool, String> {
        let db = self.db.clone();
        let paths = tokio::task::spawn_blocking(move || -> Result<Vec<String>> {
            let mut out = Vec::new();
            for s in db.read(|c| snapshots::recent(c, SNAPSHOTS_SEARCHED))? {
                for e in db.read(|c| snapshots::entries_with_sha256(c, s.seq, &sha256))? {
                    let rel = format!("{}/os/{}/{}", e.repo, e.arch, e.filename);
                    if !out.contains(&rel) {
                        out.push(rel);
                    }
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        let mut last = None;
        for rel in paths {
            let dl = match self.upstream.download(&rel, Some(size)).await {
                Ok(Some(dl)) => dl,
                Ok(None) => continue,
                Err(e) => {
                    last = Some(e.to_string());
                    continue;
                }
            };
            let opts = PutOptions {
                params: self.profile.params(),
                expect: Some(Expected { size, sha256 }),
                ..Default::default()
            };
            match store.put_file(FileSource::Chunks(dl.stream), opts).await {
                Ok(_) => return Ok(true),
                Err(e) => last = Some(format!("{}: {e}", dl.url)),
            }
        }
        match last {
            Some(e) => Err(e),
            None => Ok(false),
        }
    }
}
