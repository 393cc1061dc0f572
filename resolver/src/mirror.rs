//! pacman's mirror paths: `GET`/`HEAD /<repo>/os/<arch>/<file>` from the current snapshot.
//!
//! Packages are immutable (a long cache lifetime); databases answer conditional requests:
//! their `Last-Modified` is the publication of the first snapshot, among those still
//! recorded, from which the database had these bytes, so an unchanged `pacman -Sy` costs a
//! 304 even when another repository changed. A missing file (a `.db.sig` upstream did not
//! have) is a 404 at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use cid::Cid;
use cidmirror_schema::publisher::snapshots;
use cidmirror_store::unixfs;

use crate::AppState;
use crate::body::{FileMeta, file_response};
use crate::error::{ApiError, ApiResult};
use crate::snapshot::Current;

/// Resolved paths of the current snapshot (cleared when it changes): a request for a known
/// file costs no directory walk.
#[derive(Default)]
pub(crate) struct PathCache {
    inner: Mutex<(u64, HashMap<String, Resolved>)>,
}

/// A resolved path: the file, and for databases when their bytes last changed.
type Resolved = (Cid, Option<SystemTime>);

/// Entries kept per snapshot before the cache starts over.
const CACHE_MAX: usize = 200_000;

impl PathCache {
    fn get(&self, seq: u64, path: &str) -> Option<Resolved> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (g.0 == seq).then(|| g.1.get(path).copied()).flatten()
    }

    fn put(&self, seq: u64, path: String, v: Resolved) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 != seq || g.1.len() >= CACHE_MAX {
            *g = (seq, HashMap::new());
        }
        g.1.insert(path, v);
    }
}

/// A path segment from a URL (already percent-decoded): a plain name, nothing that could
/// step out of a directory.
pub(crate) fn check_segment(s: &str) -> ApiResult<()> {
    let bad = s.is_empty()
        || s == "."
        || s == ".."
        || s.contains('/')
        || s.contains('\\')
        || s.chars().any(|c| c.is_control());
    if bad {
        return Err(ApiError::BadRequest(format!("invalid path segment {s:?}")));
    }
    Ok(())
}

/// Whether `file` is one of the repository's databases or their signatures.
fn is_database(repo: &str, file: &str) -> bool {
    let f = file.strip_suffix(".sig").unwrap_or(file);
    [".db", ".files"].iter().any(|kind| {
        f.strip_prefix(repo)
            .and_then(|rest| rest.strip_prefix(kind))
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(".tar"))
    })
}

/// When the database at this path got its current bytes, as far as the publisher's records
/// go back.
async fn database_since(
    state: &AppState,
    cur: &Current,
    repo: &str,
    arch: &str,
    file: &str,
    cid: Cid,
) -> Option<SystemTime> {
    let db = state.snapshots().db()?.clone();
    let (repo, arch, file) = (repo.to_string(), arch.to_string(), file.to_string());
    let seq = cur.seq;
    let since = tokio::task::spawn_blocking(move || -> Option<SystemTime> {
        let mut first = None;
        let mut s = seq;
        while s > 0 {
            let e = db
                .read(|c| snapshots::entry_at(c, s, &repo, &arch, &file))
                .ok()
                .flatten();
            match e {
                Some(e) if e.cid == cid => first = Some(s),
                _ => break,
            }
            s -= 1;
        }
        let first = first?;
        let snap = db.read(|c| snapshots::get(c, first)).ok().flatten()?;
        Some(crate::snapshot::Current::from(&snap).published_at)
    })
    .await
    .ok()
    .flatten();
    since.or(Some(cur.published_at))
}

/// `GET`/`HEAD /<repo>/os/<arch>/<file>`.
pub async fn file(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path((repo, arch, file)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    for s in [&repo, &arch, &file] {
        check_segment(s)?;
    }
    let cur = state.current()?;
    if let Some(view) = cur.follow.clone() {
        return crate::follow::serve::file(
            &state,
            &cur,
            &view,
            &method,
            &headers,
            (&repo, &arch, &file),
        )
        .await;
    }
    let path = format!("{repo}/os/{arch}/{file}");
    let (cid, since) = match state.cache().get(cur.seq, &path) {
        Some(hit) => hit,
        None => {
            let cid = unixfs::resolve(state.store(), &cur.root, &path)
                .await
                .map_err(|e| match e {
                    cidmirror_store::Error::PathNotFound { .. }
                    | cidmirror_store::Error::NotADirectory(_) => {
                        ApiError::NotFound(format!("{path} is not in snapshot {}", cur.seq))
                    }
                    other => other.into(),
                })?;
            let since = if is_database(&repo, &file) {
                database_since(&state, &cur, &repo, &arch, &file, cid).await
            } else {
                None
            };
            state.cache().put(cur.seq, path.clone(), (cid, since));
            (cid, since)
        }
    };
    let database = since.is_some();
    let meta = FileMeta {
        cid,
        content_type: "application/octet-stream",
        etag: cid.to_string(),
        last_modified: since,
        cache_control: Some(if database {
            "no-cache"
        } else {
            "public, max-age=31536000, immutable"
        }),
    };
    file_response(&state, &method, &headers, meta, "mirror").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments() {
        for ok in [
            "core",
            "x86_64",
            "foo-1.0-1-x86_64.pkg.tar.zst",
            "core.db",
            "a b",
        ] {
            check_segment(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a\\b", "nul\0", "line\n"] {
            assert!(check_segment(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn databases() {
        for yes in [
            "core.db",
            "core.db.sig",
            "core.db.tar.gz",
            "core.db.tar.zst.sig",
            "core.files",
            "core.files.tar.gz",
        ] {
            assert!(is_database("core", yes), "{yes}");
        }
        for no in [
            "core.dbx",
            "foo-1-1-any.pkg.tar.zst",
            "extra.db",
            "core.database",
        ] {
            assert!(!is_database("core", no), "{no}");
        }
    }
}
