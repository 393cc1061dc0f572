//! Files by SHA-256 or by path: `/by-hash/sha256/<hex>` (the bytes) and
//! `/api/v1/resolve?sha256=<hex>` or `?path=<repo>/os/<arch>/<file>` (JSON), which
//! `cidmirror resolve` prints too. AUR helpers and scripts find a package by its checksum
//! without any index.

use std::str::FromStr;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use cid::Cid;
use cidmirror_schema::Sha256;
use cidmirror_schema::publisher::{imported, settings, snapshots};
use cidmirror_store::{hash, unixfs};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::body::{FileMeta, file_response};
use crate::error::{ApiError, ApiResult};
use crate::mirror::check_segment;

/// What a lookup asks for.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// A file by its SHA-256.
    Sha256(Sha256),
    /// A mirror path, `<repo>/os/<arch>/<file>`.
    Path(String),
}

/// The snapshot an answer comes from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotRef {
    /// Sequence number.
    pub seq: u64,
    /// Root CID.
    pub root: String,
}

/// The answer of a lookup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Resolved {
    /// The file's CID.
    pub cid: String,
    /// Its size.
    pub size: u64,
    /// Its SHA-256, when known.
    pub sha256: Option<String>,
    /// The snapshot it is in (none for a file only kept from an earlier one).
    pub snapshot: Option<SnapshotRef>,
    /// Where it is in that snapshot.
    pub paths: Vec<String>,
}

fn sha256_of_raw(cid: &Cid) -> Option<String> {
    (cid.codec() == hash::RAW && cid.hash().code() == 0x12)
        .then(|| hex::encode(cid.hash().digest()))
}

/// The mirror paths of the entries of snapshot `seq` with this SHA-256 (a file and its
/// aliases, in every repository that lists it).
async fn entry_paths(
    db: Option<std::sync::Arc<cidmirror_schema::Db>>,
    seq: u64,
    sha: cidmirror_store::Sha256,
) -> ApiResult<Vec<String>> {
    let Some(db) = db else {
        return Ok(Vec::new());
    };
    let entries = tokio::task::spawn_blocking(move || {
        db.read(|c| snapshots::entries_with_sha256(c, seq, &sha))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    let mut paths = Vec::new();
    for e in entries {
        let dir = format!("{}/os/{}", e.repo, e.arch);
        paths.push(format!("{dir}/{}", e.filename));
        if let Some(a) = e.alias {
            paths.push(format!("{dir}/{a}"));
        }
    }
    Ok(paths)
}

/// Answers a lookup from the current snapshot (and, by SHA-256, from files the publisher
/// imported earlier that the store still holds).
pub async fn resolve(state: &AppState, q: Lookup) -> ApiResult<Resolved> {
    let cur = state.current()?;
    let snap = SnapshotRef {
        seq: cur.seq,
        root: cur.root.to_string(),
    };
    let db = state.snapshots().db().cloned();
    match q {
        Lookup::Sha256(sha) => {
            let hexs = sha.to_hex();
            let by_path = format!("by-sha256/{}/{hexs}", &hexs[..2]);
            match unixfs::resolve(state.store(), &cur.root, &by_path).await {
                Ok(cid) => {
                    let size = unixfs::stat(state.store(), &cid).await?.size;
                    let mut paths = entry_paths(db, cur.seq, sha).await?;
                    paths.push(by_path);
                    Ok(Resolved {
                        cid: cid.to_string(),
                        size,
                        sha256: Some(hexs),
                        snapshot: Some(snap),
                        paths,
                    })
                }
                Err(cidmirror_store::Error::PathNotFound { .. }) => {
                    // Not in the current snapshot: maybe imported earlier and still held.
                    let Some(db) = db else {
                        return Err(ApiError::NotFound(format!("sha256 {hexs}")));
                    };
                    let found = tokio::task::spawn_blocking(move || {
                        let profile = db.read(|c| settings::get(c, "profile"))?;
                        match profile {
                            Some(p) => db.read(|c| imported::get(c, &sha, &p)),
                            None => Ok(None),
                        }
                    })
                    .await
                    .map_err(|e| ApiError::Internal(e.to_string()))??;
                    match found {
                        Some(imp) if unixfs::complete(state.store(), &imp.cid).await? => {
                            Ok(Resolved {
                                cid: imp.cid.to_string(),
                                size: imp.size,
                                sha256: Some(hexs),
                                snapshot: None,
                                paths: Vec::new(),
                            })
                        }
                        _ => Err(ApiError::NotFound(format!("sha256 {hexs}"))),
                    }
                }
                Err(e) => Err(e.into()),
            }
        }
        Lookup::Path(path) => {
            let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
            let [repo, "os", arch, file] = parts[..] else {
                return Err(ApiError::BadRequest(format!(
                    "path {path:?} is not <repo>/os/<arch>/<file>"
                )));
            };
            for s in [repo, arch, file] {
                check_segment(s)?;
            }
            let clean = format!("{repo}/os/{arch}/{file}");
            let cid = unixfs::resolve(state.store(), &cur.root, &clean)
                .await
                .map_err(|e| match e {
                    cidmirror_store::Error::PathNotFound { .. }
                    | cidmirror_store::Error::NotADirectory(_) => ApiError::NotFound(clean.clone()),
                    other => other.into(),
                })?;
            let size = unixfs::stat(state.store(), &cid).await?.size;
            let mut sha256 = sha256_of_raw(&cid);
            if let Some(db) = db {
                let (seq, r, a, f) = (
                    cur.seq,
                    repo.to_string(),
                    arch.to_string(),
                    file.to_string(),
                );
                let reader = db.clone();
                let entry = tokio::task::spawn_blocking(move || {
                    reader.read(|c| snapshots::entry_at(c, seq, &r, &a, &f))
                })
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))??;
                if let Some(e) = entry {
                    sha256 = Some(e.sha256.to_hex());
                    // The same answer as a lookup by that hash: every path of the file.
                    let mut paths = entry_paths(Some(db), cur.seq, e.sha256).await?;
                    let hexs = e.sha256.to_hex();
                    let by_path = format!("by-sha256/{}/{hexs}", &hexs[..2]);
                    if unixfs::resolve(state.store(), &cur.root, &by_path)
                        .await
                        .is_ok()
                    {
                        paths.push(by_path);
                    }
                    if !paths.contains(&clean) {
                        paths.insert(0, clean);
                    }
                    return Ok(Resolved {
                        cid: cid.to_string(),
                        size,
                        sha256,
                        snapshot: Some(snap),
                        paths,
                    });
                }
            }
            Ok(Resolved {
                cid: cid.to_string(),
                size,
                sha256,
                snapshot: Some(snap),
                paths: vec![clean],
            })
        }
    }
}

/// Query of `/api/v1/resolve`.
#[derive(Debug, Deserialize)]
pub struct ResolveQuery {
    sha256: Option<String>,
    path: Option<String>,
}

/// `GET /api/v1/resolve?sha256=<hex>` or `?path=<repo>/os/<arch>/<file>`.
pub async fn resolve_api(
    State(state): State<AppState>,
    Query(q): Query<ResolveQuery>,
) -> ApiResult<Json<Resolved>> {
    let lookup = match (q.sha256, q.path) {
        (Some(h), None) => {
            Lookup::Sha256(Sha256::from_str(&h).map_err(|e| ApiError::BadRequest(e.to_string()))?)
        }
        (None, Some(p)) => Lookup::Path(p),
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of ?sha256=<64 hex digits> or ?path=<repo>/os/<arch>/<file>"
                    .into(),
            ));
        }
    };
    Ok(Json(resolve(&state, lookup).await?))
}

/// `GET`/`HEAD /by-hash/sha256/<hex>`: the file with that SHA-256.
pub async fn by_hash(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(hex): Path<String>,
) -> ApiResult<Response> {
    let sha = Sha256::from_str(&hex).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let r = resolve(&state, Lookup::Sha256(sha)).await?;
    let cid = hash::parse_cid(&r.cid)?;
    let meta = FileMeta {
        cid,
        content_type: "application/octet-stream",
        etag: cid.to_string(),
        last_modified: None,
        cache_control: Some("public, max-age=31536000, immutable"),
    };
    file_response(&state, &method, &headers, meta, "by-hash").await
}
