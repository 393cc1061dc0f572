//! Files by hash, path or URL: `/by-hash/<sha256|sha512|b2>/<hex>` (the bytes) and
//! `/api/v1/resolve?sha256=<hex>` (or `sha512=`, `b2=`), `?path=<repo>/os/<arch>/<file>`
//! or `?url=<an AUR source's URL>` (JSON), which `cidmirror resolve` prints too. AUR
//! helpers and scripts find a package or a source by its checksum without any index:
//! SHA-256 names packages and AUR sources, SHA-512 and BLAKE2b-512 AUR sources.

use std::str::FromStr;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use cid::Cid;
use cidmirror_schema::Sha256;
use cidmirror_schema::publisher::{aur as aur_rows, imported, settings, snapshots};
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
    /// An AUR source by a 512-bit digest.
    Wide(Wide, [u8; 64]),
    /// A mirror path, `<repo>/os/<arch>/<file>`.
    Path(String),
    /// An AUR source by the URL its `.SRCINFO` gives.
    Url(String),
}

/// The 512-bit digests AUR sources are published by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wide {
    /// SHA-512 (`by-sha512/`).
    Sha512,
    /// BLAKE2b-512, as `b2sum` prints it (`by-b2/`).
    B2,
}

impl Wide {
    fn dir(self) -> &'static str {
        match self {
            Wide::Sha512 => cidmirror_listing::layout::BY_SHA512,
            Wide::B2 => cidmirror_listing::layout::BY_B2,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Wide::Sha512 => "sha512",
            Wide::B2 => "b2",
        }
    }
}

/// A hash named by its algorithm, parsed: `("b2", "<128 hex>")`. Errors are short and say
/// what is expected.
pub fn parse_hash(algo: &str, hex: &str) -> ApiResult<Lookup> {
    let bad =
        |what: &str, n: usize| ApiError::BadRequest(format!("{what}: expected {n} hex digits"));
    match algo {
        "sha256" => Ok(Lookup::Sha256(
            Sha256::from_str(hex).map_err(|_| bad("sha256", 64))?,
        )),
        "sha512" | "b2" => {
            let kind = if algo == "b2" { Wide::B2 } else { Wide::Sha512 };
            let mut out = [0u8; 64];
            if hex.len() != 128 {
                return Err(bad(algo, 128));
            }
            hex::decode_to_slice(hex, &mut out).map_err(|_| bad(algo, 128))?;
            Ok(Lookup::Wide(kind, out))
        }
        _ => Err(ApiError::BadRequest(
            "unknown hash algorithm: use sha256, sha512 or b2".into(),
        )),
    }
}

/// The AUR sources of the current snapshot with `pick` true, with their paths: from the
/// publisher's records, or a follower's view of the listing.
async fn aur_sources(
    state: &AppState,
    cur: &crate::snapshot::Current,
    by: AurBy,
) -> ApiResult<Vec<(Cid, u64, Sha256, String)>> {
    if let Some(view) = &cur.follow {
        let mut out = Vec::new();
        for e in view.listing.aur() {
            for src in &e.base.sources {
                let hit = match &by {
                    AurBy::Wide(Wide::Sha512, d) => src.sha512.0 == *d,
                    AurBy::Wide(Wide::B2, d) => src.b2.0 == *d,
                    AurBy::Url(u) => src.url == *u,
                    AurBy::Sha256(h) => src.file.sha256 == *h,
                };
                if hit {
                    out.push((
                        src.file.cid,
                        src.file.size,
                        src.file.sha256,
                        format!(
                            "{}/{}",
                            cidmirror_listing::aur::dir(&e.base.pkgbase),
                            src.file_name
                        ),
                    ));
                }
            }
        }
        return Ok(out);
    }
    let Some(db) = state.snapshots().db().cloned() else {
        return Ok(Vec::new());
    };
    let seq = cur.seq;
    let rows = tokio::task::spawn_blocking(move || {
        db.read(|c| match &by {
            AurBy::Wide(w, d) => {
                let digest = match w {
                    Wide::Sha512 => aur_rows::Digest::Sha512,
                    Wide::B2 => aur_rows::Digest::B2,
                };
                aur_rows::by_digest(c, seq, digest, d)
            }
            AurBy::Url(u) => aur_rows::by_url(c, seq, u),
            AurBy::Sha256(h) => aur_rows::by_digest(c, seq, aur_rows::Digest::Sha256, h.as_bytes()),
        })
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.cid,
                r.size,
                r.sha256,
                format!(
                    "{}/{}",
                    cidmirror_listing::aur::dir(&r.pkgbase),
                    r.file_name
                ),
            )
        })
        .collect())
}

/// How an AUR source is looked up.
enum AurBy {
    Wide(Wide, [u8; 64]),
    Url(String),
    Sha256(Sha256),
}

/// The answer for AUR sources found (one file, maybe under several names).
fn aur_answer(
    found: Vec<(Cid, u64, Sha256, String)>,
    snap: SnapshotRef,
    extra: Option<String>,
    what: String,
) -> ApiResult<Resolved> {
    let Some((cid, size, sha256, _)) = found.first().cloned() else {
        return Err(ApiError::NotFound(what));
    };
    let mut paths: Vec<String> = found
        .into_iter()
        .filter(|f| f.0 == cid)
        .map(|f| f.3)
        .collect();
    paths.extend(extra);
    Ok(Resolved {
        cid: cid.to_string(),
        size,
        sha256: Some(sha256.to_hex()),
        snapshot: Some(snap),
        paths,
    })
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
        Lookup::Wide(kind, digest) => {
            let hexs = hex::encode(digest);
            let by_path = cidmirror_listing::aur::by_digest(kind.dir(), &hexs);
            // The listing says whether the snapshot has it; the records say where.
            match unixfs::resolve(state.store(), &cur.root, &by_path).await {
                Ok(_) => {}
                Err(cidmirror_store::Error::PathNotFound { .. }) => {
                    return Err(ApiError::NotFound(format!("{} {hexs}", kind.name())));
                }
                Err(e) => return Err(e.into()),
            }
            let found = aur_sources(state, &cur, AurBy::Wide(kind, digest)).await?;
            aur_answer(
                found,
                snap,
                Some(by_path),
                format!("{} {hexs}", kind.name()),
            )
        }
        Lookup::Url(url) => {
            if url.len() > cidmirror_listing::aur::MAX_URL {
                return Err(ApiError::BadRequest("url: too long".into()));
            }
            let found = aur_sources(state, &cur, AurBy::Url(url.clone())).await?;
            aur_answer(
                found,
                snap,
                None,
                format!(
                    "no AUR source from {}",
                    cidmirror_schema::text::printable(&url)
                ),
            )
        }
        Lookup::Sha256(sha) => {
            let hexs = sha.to_hex();
            let by_path = format!("by-sha256/{}/{hexs}", &hexs[..2]);
            match unixfs::resolve(state.store(), &cur.root, &by_path).await {
                Ok(cid) => {
                    let aur = aur_sources(state, &cur, AurBy::Sha256(sha)).await?;
                    // A follower need not hold the file: its listing knows the size.
                    let known = aur.iter().find(|f| f.0 == cid).map(|f| f.1).or_else(|| {
                        cur.follow.as_ref().and_then(|v| {
                            v.listing
                                .items()
                                .find(|i| i.file.cid == cid)
                                .map(|i| i.file.size)
                        })
                    });
                    let size = match known {
                        Some(s) => s,
                        None => unixfs::stat(state.store(), &cid).await?.size,
                    };
                    let mut paths = entry_paths(db, cur.seq, sha).await?;
                    paths.extend(aur.into_iter().map(|f| f.3));
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
    sha512: Option<String>,
    b2: Option<String>,
    path: Option<String>,
    url: Option<String>,
}

/// `GET /api/v1/resolve?sha256=<hex>` or `?path=<repo>/os/<arch>/<file>`.
pub async fn resolve_api(
    State(state): State<AppState>,
    Query(q): Query<ResolveQuery>,
) -> ApiResult<Json<Resolved>> {
    let given: Vec<(&str, String)> = [
        ("sha256", q.sha256),
        ("sha512", q.sha512),
        ("b2", q.b2),
        ("path", q.path),
        ("url", q.url),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    let lookup = match &given[..] {
        [("path", p)] => Lookup::Path(p.clone()),
        [("url", u)] => Lookup::Url(u.clone()),
        [(algo, h)] => parse_hash(algo, h)?,
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of ?sha256=, ?sha512=, ?b2=, ?path=<repo>/os/<arch>/<file> \
                 or ?url="
                    .into(),
            ));
        }
    };
    Ok(Json(resolve(&state, lookup).await?))
}

/// `GET`/`HEAD /by-hash/<sha256|sha512|b2>/<hex>`: the file with that hash.
pub async fn by_hash(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path((algo, hex)): Path<(String, String)>,
) -> ApiResult<Response> {
    let r = resolve(&state, parse_hash(&algo, &hex)?).await?;
    let cid = hash::parse_cid(&r.cid)?;
    // A follower fetches what it does not hold from its sources, verified.
    let cur = state.current()?;
    if let (Some(_), Some(view), Some(sha)) = (
        state.follow(),
        cur.follow.as_ref(),
        r.sha256.as_deref().and_then(|h| Sha256::from_str(h).ok()),
    ) {
        let path = r
            .paths
            .first()
            .cloned()
            .unwrap_or_else(|| format!("by-hash/{algo}/{hex}"));
        let resolved = crate::follow::view::Resolved::Package {
            cid,
            size: r.size,
            sha256: sha,
        };
        return crate::follow::serve::send(
            &state, view, &method, &headers, path, resolved, "by-hash",
        )
        .await;
    }
    let meta = FileMeta {
        cid,
        content_type: "application/octet-stream",
        etag: cid.to_string(),
        last_modified: None,
        cache_control: Some("public, max-age=31536000, immutable"),
    };
    file_response(&state, &method, &headers, meta, "by-hash").await
}
