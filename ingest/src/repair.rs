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
        refetch(&self.db, &self.upstream, self.profile, store, sha256, size).await
    }
}

/// Fetches the file with this SHA-256 and size again from `upstream`, at a path where one
/// of the recent snapshots recorded in `db` had it, into `store` (verified against both).
/// `Ok(false)` if no snapshot path of it is upstream any more.
pub async fn refetch(
    db: &Db,
    upstream: &Upstream,
    profile: Profile,
    store: &dyn Store,
    sha256: Sha256,
    size: u64,
) -> std::result::Result<bool, String> {
    // A few small reads: not worth a trip to the blocking pool.
    let mut paths = Vec::new();
    let recent = db
        .read(|c| snapshots::recent(c, SNAPSHOTS_SEARCHED))
        .map_err(|e: cidmirror_schema::Error| e.to_string())?;
    for s in recent {
        let entries = db
            .read(|c| snapshots::entries_with_sha256(c, s.seq, &sha256))
            .map_err(|e: cidmirror_schema::Error| e.to_string())?;
        for e in entries {
            let rel = format!("{}/os/{}/{}", e.repo, e.arch, e.filename);
            if !paths.contains(&rel) {
                paths.push(rel);
            }
        }
    }
    let mut last = None;
    for rel in paths {
        let dl = match upstream.download(&rel, Some(size)).await {
            Ok(Some(dl)) => dl,
            Ok(None) => continue,
            Err(e) => {
                last = Some(e.to_string());
                continue;
            }
        };
        let opts = PutOptions {
            params: profile.params(),
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
