//! `GET /api/v1/delta/{root}`: one CAR with what a follower holding the previous snapshot
//! needs to rebuild snapshot `root` itself (DESIGN.md, "Refresh").
//!
//! Walking a new listing block by block would fetch a large share of the HAMT shards of
//! `index/` even for 1% churn; instead the follower takes this CAR, applies
//! `changes.jsonl` to its copy of the previous listing, rebuilds it and checks the root it
//! computes against the signed one. The CAR (header roots = `[root]`, each block once)
//! holds:
//! - the root block, and the HAMT shards walked inside it if it is sharded (what proves
//!   the two names below);
//! - every block of `manifest.json` and `changes.jsonl`;
//! - every block of the `desc` file named by each `add` or `change` line.
//!
//! A delta is small (kilobytes to a few megabytes), so it is built in memory on a blocking
//! thread and compressed as a whole: zstd if the client accepts it, else gzip, else none.
//! Anything not held is a 404 naming the missing piece: the follower then walks instead.

use std::collections::HashSet;
use std::io::Write;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cid::Cid;
use cidmirror_listing::Op;
use cidmirror_listing::changes::Changed;
use cidmirror_store::car::{encode_header, encode_section};
use cidmirror_store::hash::{DAG_PB, RAW, identity_data, parse_cid};
use cidmirror_store::pb::DataType;
use cidmirror_store::unixfs::{self, DirLink};
use cidmirror_store::{EmbeddedStore, Error as StoreError};

use crate::{ApiError, ApiResult, AppState};

/// Media type of the answer.
const CAR_TYPE: &str = "application/vnd.ipld.car";
/// The delta of a root never changes (every block is named by its hash).
const IMMUTABLE: &str = "public, max-age=29030400, immutable";
/// Route label in the metrics.
const ROUTE: &str = "delta";
/// Largest `changes.jsonl` read into memory: past this a delta is no saving over a walk.
pub(crate) const MAX_CHANGES: u64 = 64 << 20;
/// Largest CAR built (before compression): the manifest and `desc` files are small, so
/// only a listing that is not ours gets here.
const MAX_CAR: usize = 256 << 20;
/// Most blocks visited while reading one file: bounds the work a DAG that links one block
/// many times can cause.
const MAX_VISITS: usize = 1 << 20;

/// The two files of a listing the delta carries whole.
const MANIFEST: &str = "manifest.json";
const CHANGES: &str = "changes.jsonl";

/// `GET /api/v1/delta/{root}`.
pub(crate) async fn delta(
    State(state): State<AppState>,
    Path(root): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut resp = match answer(&state, &root, &headers).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    // The body depends on Accept-Encoding, errors included (caches must not mix them up).
    resp.headers_mut()
        .append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    resp
}

async fn answer(state: &AppState, root: &str, headers: &HeaderMap) -> ApiResult<Response> {
    let root = parse_cid(root)?;
    let store = state.store();
    // The path to both files, through HAMT shards if the root is sharded.
    let mut trail = Vec::new();
    let manifest = find(store, &root, MANIFEST, &mut trail).await?;
    let changes = find(store, &root, CHANGES, &mut trail).await?;
    let encoding = Encoding::pick(headers);
    let store = store.clone();
    let body = tokio::task::spawn_blocking(move || -> ApiResult<Vec<u8>> {
        let car = build(&store, &root, &trail, &manifest, &changes)?;
        encoding.encode(car)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("building the delta: {e}")))??;
    state.metrics().bytes_served(ROUTE, body.len() as u64);
    let mut b = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, CAR_TYPE)
        .header(header::CACHE_CONTROL, IMMUTABLE)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if let Some(name) = encoding.name() {
        b = b.header(header::CONTENT_ENCODING, name);
    }
    b.body(Body::from(body))
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// The entry `name` of the listing `root`, recording the blocks walked to it in `trail`.
async fn find(
    store: &EmbeddedStore,
    root: &Cid,
    name: &str,
    trail: &mut Vec<Cid>,
) -> ApiResult<DirLink> {
    unixfs::lookup_traced(store, root, name, trail)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("{root} has no {name}: not a snapshot listing")))
}

/// The CAR under construction: each block once, identity CIDs left out (they carry their
/// bytes in the CID itself).
struct Car {
    out: Vec<u8>,
    seen: HashSet<Cid>,
}

impl Car {
    fn new(root: &Cid) -> Self {
        Car {
            out: encode_header(&[*root]),
            seen: HashSet::new(),
        }
    }

    fn add(&mut self, cid: &Cid, data: &[u8]) -> ApiResult<()> {
        if identity_data(cid).is_none() && self.seen.insert(*cid) {
            self.out.extend_from_slice(&encode_section(cid, data));
            if self.out.len() > MAX_CAR {
                return Err(ApiError::NotFound(format!(
                    "the delta of this snapshot is larger than {} MiB: walk it instead",
                    MAX_CAR >> 20
                )));
            }
        }
        Ok(())
    }
}

/// The uncompressed CAR of the delta of `root` (blocking: reads the store).
fn build(
    store: &EmbeddedStore,
    root: &Cid,
    trail: &[Cid],
    manifest: &DirLink,
    changes: &DirLink,
) -> ApiResult<Vec<u8>> {
    let mut car = Car::new(root);
    for c in std::iter::once(root).chain(trail) {
        let data = need(store, c, "the listing's root")?;
        car.add(c, &data)?;
    }
    add_file(store, &mut car, &manifest.cid, MANIFEST, None)?;
    let mut text = Vec::new();
    add_file(store, &mut car, &changes.cid, CHANGES, Some(&mut text))?;
    for (line_no, desc) in desc_cids(&changes.cid, &text)? {
        add_file(
            store,
            &mut car,
            &desc,
            &format!("the file named by {CHANGES} line {line_no}"),
            None,
        )?;
    }
    Ok(car.out)
}

/// A block that must be held; `what` names it for the follower if it is not.
fn need(store: &EmbeddedStore, cid: &Cid, what: &str) -> ApiResult<Vec<u8>> {
    store
        .get_block_sync(cid)?
        .ok_or_else(|| ApiError::NotFound(format!("block {cid} of {what} is not held")))
}

/// Adds every block of the UnixFS file `cid` to `car`; with `content`, also collects the
/// file's bytes there (at most [`MAX_CHANGES`]).
fn add_file(
    store: &EmbeddedStore,
    car: &mut Car,
    cid: &Cid,
    what: &str,
    mut content: Option<&mut Vec<u8>>,
) -> ApiResult<()> {
    let too_large = |size: u64| {
        ApiError::NotFound(format!(
            "{what} is {size} bytes, more than the {} MiB a delta carries: walk it instead",
            MAX_CHANGES >> 20
        ))
    };
    // Depth first, links in order: the order of the file's bytes.
    let mut stack = vec![*cid];
    let mut visits = 0usize;
    while let Some(c) = stack.pop() {
        visits += 1;
        if visits > MAX_VISITS {
            return Err(StoreError::malformed(cid, "UnixFS file", "too many blocks").into());
        }
        // Without content to collect, a block met again adds nothing.
        if content.is_none() && car.seen.contains(&c) {
            continue;
        }
        let data = need(store, &c, what)?;
        match c.codec() {
            RAW => {
                if let Some(buf) = content.as_deref_mut() {
                    buf.extend_from_slice(&data);
                }
            }
            DAG_PB => {
                let (node, u) = unixfs::decode(&c, &data)?;
                match u.typ {
                    Some(DataType::File | DataType::Raw) => {}
                    _ => return Err(ApiError::NotFound(format!("{what} is not a file"))),
                }
                if c == *cid
                    && content.is_some()
                    && let Some(size) = u.filesize
                    && size > MAX_CHANGES
                {
                    return Err(too_large(size));
                }
                if let Some(buf) = content.as_deref_mut() {
                    buf.extend_from_slice(u.data.unwrap_or_default());
                }
                stack.extend(node.links.iter().rev().map(|l| l.cid));
            }
            _ => return Err(ApiError::NotFound(format!("{what} is not a file"))),
        }
        if let Some(buf) = content.as_deref()
            && buf.len() as u64 > MAX_CHANGES
        {
            return Err(too_large(buf.len() as u64));
        }
        car.add(&c, &data)?;
    }
    Ok(())
}

/// The small files an `add` or `change` line of `changes.jsonl` names (with its 1-based
/// line number), each CID once, in order: a package's `desc`, an AUR base's index and
/// `.SRCINFO`.
fn desc_cids(changes: &Cid, text: &[u8]) -> ApiResult<Vec<(usize, Cid)>> {
    let lines = cidmirror_listing::changes::parse(text)
        .map_err(|e| StoreError::malformed(changes, "changes.jsonl", e.to_string()))?;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for c in lines.into_iter().filter(|c| c.op != Op::Remove) {
        let cids = match c.what {
            Changed::File(item) => item.package.map(|(_, desc)| desc.cid).into_iter().collect(),
            // An AUR base: its index file and its .SRCINFO (the sources are files, fetched
            // on demand like packages).
            Changed::Aur(e) => vec![e.index.cid, e.base.srcinfo.cid],
        };
        out.extend(
            cids.into_iter()
                .filter(|c| seen.insert(*c))
                .map(|cid| (c.line, cid)),
        );
    }
    Ok(out)
}

/// How the body travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Zstd,
    Gzip,
    Identity,
}

impl Encoding {
    /// The best coding `Accept-Encoding` allows: zstd (smallest, fastest to decode), gzip
    /// (what every client has), or none. A coding is allowed if it is named with a
    /// quality above 0, or `*` is; with no header at all, only identity is assumed.
    fn pick(headers: &HeaderMap) -> Encoding {
        let mut named: Vec<(String, bool)> = Vec::new();
        for v in headers.get_all(header::ACCEPT_ENCODING) {
            let Ok(v) = v.to_str() else { continue };
            for item in v.split(',') {
                let mut parts = item.split(';');
                let coding = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
                if coding.is_empty() {
                    continue;
                }
                let mut ok = true;
                for p in parts {
                    if let Some((k, q)) = p.split_once('=')
                        && k.trim().eq_ignore_ascii_case("q")
                    {
                        ok = q.trim().parse::<f32>().is_ok_and(|q| q > 0.0);
                    }
                }
                named.push((coding, ok));
            }
        }
        let allowed = |names: &[&str]| {
            let explicit = named
                .iter()
                .filter(|(c, _)| names.contains(&c.as_str()))
                .map(|(_, ok)| *ok)
                .next_back();
            explicit.unwrap_or_else(|| named.iter().any(|(c, ok)| c == "*" && *ok))
        };
        if allowed(&["zstd"]) {
            Encoding::Zstd
        } else if allowed(&["gzip", "x-gzip"]) {
            Encoding::Gzip
        } else {
            Encoding::Identity
        }
    }

    /// The `Content-Encoding` value, if any.
    fn name(self) -> Option<&'static str> {
        match self {
            Encoding::Zstd => Some("zstd"),
            Encoding::Gzip => Some("gzip"),
            Encoding::Identity => None,
        }
    }

    fn encode(self, body: Vec<u8>) -> ApiResult<Vec<u8>> {
        let failed = |e: std::io::Error| ApiError::Internal(format!("compressing the delta: {e}"));
        match self {
            Encoding::Zstd => zstd::bulk::compress(&body, 3).map_err(failed),
            Encoding::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(
                    Vec::with_capacity(body.len() / 4),
                    flate2::Compression::default(),
                );
                gz.write_all(&body).map_err(failed)?;
                gz.finish().map_err(failed)
            }
            Encoding::Identity => Ok(body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(values: &[&str]) -> Encoding {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        Encoding::pick(&h)
    }

    #[test]
    fn accept_encoding_picks_zstd_then_gzip_then_identity() {
        use Encoding::*;
        let table: &[(&[&str], Encoding)] = &[
            (&[], Identity),
            (&["identity"], Identity),
            (&["zstd"], Zstd),
            (&["gzip, deflate, br, zstd"], Zstd),
            (&["gzip"], Gzip),
            (&["GZIP;q=0.5"], Gzip),
            (&["x-gzip"], Gzip),
            (&["zstd;q=0, gzip"], Gzip),
            (&["zstd; q=0.000, gzip;q=0"], Identity),
            (&["*"], Zstd),
            (&["*;q=0"], Identity),
            (&["*, zstd;q=0"], Gzip),
            (&["br", "gzip"], Gzip),
            (&["zstd;q=nonsense, gzip"], Gzip),
            (&[",,;"], Identity),
        ];
        for (values, want) in table {
            assert_eq!(pick(values), *want, "{values:?}");
        }
    }

    #[test]
    fn desc_cids_of_added_and_changed_lines_only() {
        use cidmirror_listing::{ChangeLine, FileRef, Item, ItemKind};
        use cidmirror_store::hash::{HashAlg, raw_cid};
        let fref = |tag: &str| FileRef {
            size: 1,
            sha256: cidmirror_store::Sha256([7; 32]),
            cid: raw_cid(HashAlg::Sha2_256, tag.as_bytes()),
            tsize: 1,
        };
        let pkg = |name: &str, desc: &str| Item {
            repo: "core".into(),
            arch: "x86_64".into(),
            kind: ItemKind::Package,
            filename: format!("{name}.pkg.tar.zst"),
            alias: None,
            file: fref(name),
            sig: None,
            package: Some((name.into(), fref(desc).dir_entry())),
        };
        let mut db = pkg("core.db", "");
        db.kind = ItemKind::Database;
        db.package = None;
        let line = |op, it: &Item| serde_json::to_string(&ChangeLine::new(op, it)).unwrap();
        let text = [
            line(Op::Add, &pkg("a", "d1")),
            line(Op::Remove, &pkg("b", "d2")),
            String::new(),
            line(Op::Change, &db),
            line(Op::Change, &pkg("c", "d1")),
            line(Op::Change, &pkg("e", "d3")),
        ]
        .join("\n");
        let changes: Cid = "bafkqaaa".parse().unwrap();
        let got = desc_cids(&changes, text.as_bytes()).unwrap();
        assert_eq!(got, vec![(1, fref("d1").cid), (6, fref("d3").cid)]);
        for bad in ["not json", "{\"op\":\"add\"}"] {
            let err = desc_cids(&changes, bad.as_bytes()).unwrap_err();
            assert!(err.to_string().contains("line 1"), "{bad}: {err}");
        }
    }
}
