//! The IPFS trustless gateway: `/ipfs/{cid}[/{path}]` for anyone who speaks IPFS over HTTP.
//!
//! - `?format=raw` (or `Accept: application/vnd.ipld.raw`): the block at the end of the path;
//! - `?format=car` (or `Accept: application/vnd.ipld.car`): a CAR v1 stream, `order=dfs`,
//!   `dups=n`: first the blocks that prove the path (directories and the HAMT shards walked),
//!   then the terminal entity depth-first in link order, limited by `dag-scope` and
//!   `entity-bytes`;
//! - no format: what a browser or `curl` wants: a file's bytes (with `Range`), a directory
//!   listing (after a 301 to the path with a trailing `/`), a symlink's target as text.
//!
//! Everything streams one block at a time. A block missing at the root or on the path is a
//! 404 before any byte is sent; one missing later cuts the CAR (the connection ends without
//! the final chunk), so a client never mistakes a partial DAG for a complete one.
//!
//! Deliberate limits: no `index.html` and no `text/html` (or other active content types) for
//! stored files: this origin also serves the mirror and its API, and a path gateway without
//! per-CID origins must not let stored pages script it. Stored HTML comes back as
//! `application/octet-stream` with `nosniff`. Non-UnixFS blocks (dag-cbor, ...) are served
//! as `raw` or `car` only; without a format they are 406.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::ops::Range;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use cid::Cid;
use cidmirror_store::car::{encode_header, encode_section};
use cidmirror_store::hash::{DAG_PB, HashAlg, RAW, identity_data, parse_cid};
use cidmirror_store::pb::DataType;
use cidmirror_store::unixfs::{self, Kind, links_of, need_block};
use cidmirror_store::{EmbeddedStore, Error as StoreError, Store};
use futures::{Stream, StreamExt};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::AppState;
use crate::body::{FileMeta, file_response, header_value};
use crate::error::{ApiError, ApiResult};

/// Route label for metrics.
const ROUTE: &str = "ipfs";
/// Content addressed: the answer for a CID never changes.
const IMMUTABLE: &str = "public, max-age=29030400, immutable";
/// A listing is our rendering of immutable data: cached, but not forever (the HTML may
/// change with a new version of cidmirror).
const LISTING_CACHE: &str = "public, max-age=604800";
const RAW_TYPE: &str = "application/vnd.ipld.raw";
const CAR_TYPE: &str = "application/vnd.ipld.car";
/// What every CAR from here is: the walk is depth-first and never repeats a block.
const CAR_CONTENT_TYPE: &str = "application/vnd.ipld.car; version=1; order=dfs; dups=n";
const X_IPFS_PATH: HeaderName = HeaderName::from_static("x-ipfs-path");
const X_IPFS_ROOTS: HeaderName = HeaderName::from_static("x-ipfs-roots");
/// Characters left as they are in the links of a listing (RFC 3986 unreserved).
const HREF: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The gateway's routes (`GET` and, through axum, `HEAD`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ipfs/{cid}", get(ipfs))
        .route("/ipfs/{cid}/", get(ipfs))
        .route("/ipfs/{cid}/{*path}", get(ipfs))
}

// ---------------------------------------------------------------------------------------
// The request

/// An `/ipfs/...` request path, decoded.
#[derive(Debug)]
struct ContentPath {
    /// The CID the path starts at.
    root: Cid,
    /// Path segments below it, percent-decoded, empty ones dropped.
    segments: Vec<String>,
    /// Whether the path ends with `/` (a directory listing rather than a redirect).
    trailing_slash: bool,
}

impl ContentPath {
    fn parse(path: &str) -> ApiResult<Self> {
        let rest = path
            .strip_prefix("/ipfs/")
            .ok_or_else(|| ApiError::BadRequest("not an /ipfs/ path".into()))?;
        let mut parts = rest.split('/');
        let cid_part = decode_segment(parts.next().unwrap_or_default())?;
        let root = parse_cid(&cid_part)?;
        let segments = parts
            .filter(|p| !p.is_empty())
            .map(decode_segment)
            .collect::<ApiResult<Vec<_>>>()?;
        Ok(ContentPath {
            root,
            segments,
            trailing_slash: rest.contains('/') && rest.ends_with('/'),
        })
    }

    /// `/ipfs/<root>/<path>`, decoded, for people.
    fn display(&self) -> String {
        let mut s = format!("/ipfs/{}", self.root);
        for seg in &self.segments {
            s.push('/');
            s.push_str(seg);
        }
        s
    }
}

fn decode_segment(s: &str) -> ApiResult<String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| ApiError::BadRequest(format!("path segment {s:?} is not UTF-8")))
}

/// The query's `key=value` pairs, form-decoded.
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// How much of the DAG below the path a CAR carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The terminal block only.
    Block,
    /// What it takes to read the terminal file or list the terminal directory.
    Entity,
    /// Everything below the terminal.
    All,
}

impl Scope {
    fn parse(s: &str) -> ApiResult<Self> {
        match s {
            "block" => Ok(Scope::Block),
            "entity" => Ok(Scope::Entity),
            "all" => Ok(Scope::All),
            _ => Err(ApiError::BadRequest(format!(
                "dag-scope {s:?} is not block, entity or all"
            ))),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scope::Block => "block",
            Scope::Entity => "entity",
            Scope::All => "all",
        }
    }
}

/// `entity-bytes=from:to`: inclusive offsets, negative ones from the end, `*` for the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EntityBytes {
    from: i64,
    /// `None` for `*`.
    to: Option<i64>,
}

impl EntityBytes {
    fn parse(s: &str) -> ApiResult<Self> {
        let bad = |why: &str| ApiError::BadRequest(format!("entity-bytes {s:?}: {why}"));
        let (a, b) = s.split_once(':').ok_or_else(|| bad("not from:to"))?;
        let from: i64 = a.parse().map_err(|_| bad("from is not an integer"))?;
        let to = match b {
            "*" => None,
            _ => Some(
                b.parse::<i64>()
                    .map_err(|_| bad("to is neither an integer nor *"))?,
            ),
        };
        if let Some(t) = to
            && from >= 0
            && t >= 0
            && t < from
        {
            return Err(bad("to is before from"));
        }
        Ok(EntityBytes { from, to })
    }

    /// The half-open byte range this asks for in a file of `size` bytes, clamped to the
    /// file; empty when it asks for nothing inside it.
    fn range(self, size: u64) -> Range<u64> {
        let size = i128::from(size);
        let at = |v: i64| {
            let v = i128::from(v);
            if v < 0 { size + v } else { v }
        };
        let start = at(self.from).clamp(0, size);
        let end = match self.to {
            None => size,
            Some(t) => (at(t) + 1).clamp(0, size),
        };
        if end <= start {
            return 0..0;
        }
        // Both lie in 0..=size, which came from a u64.
        start as u64..end as u64
    }
}

impl std::fmt::Display for EntityBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to {
            Some(t) => write!(f, "{}:{t}", self.from),
            None => write!(f, "{}:*", self.from),
        }
    }
}

/// A CAR request's parameters.
#[derive(Debug, Clone, Copy)]
struct CarParams {
    scope: Scope,
    bytes: Option<EntityBytes>,
}

/// What the client asked for.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// The deserialized form: file bytes, listing, symlink target.
    Plain,
    /// One block.
    Raw,
    /// A CAR stream.
    Car(CarParams),
}

/// Whether CAR media-type parameters (from `Accept` or the `car-*` query parameters) ask
/// for something this gateway produces: version 1, depth-first (or any) order, no
/// duplicates.
fn car_param_ok(key: &str, value: &str) -> bool {
    match key {
        "version" => value == "1",
        "order" => matches!(value, "dfs" | "unk"),
        "dups" => value == "n",
        _ => true,
    }
}

/// What the `Accept` header prefers among the types served here.
#[derive(Debug, Default)]
struct AcceptPick {
    best: Option<(f32, Want)>,
    /// A CAR was asked for, but only in variants not produced here.
    car_refused: bool,
    /// A CAR was asked for in a variant produced here.
    car_ok: bool,
}

fn parse_accept(headers: &HeaderMap) -> AcceptPick {
    let mut pick = AcceptPick::default();
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let mime = parts.next().unwrap_or_default().to_ascii_lowercase();
            let mut q = 1.0f32;
            let mut car_ok = true;
            for p in parts {
                let Some((k, v)) = p.split_once('=') else {
                    continue;
                };
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().trim_matches('"'));
                if k == "q" {
                    q = v.parse().unwrap_or(1.0);
                } else if !car_param_ok(&k, v) {
                    car_ok = false;
                }
            }
            let want = match mime.as_str() {
                RAW_TYPE => Want::Raw,
                CAR_TYPE if car_ok => {
                    pick.car_ok = true;
                    Want::Car(CarParams {
                        scope: Scope::All,
                        bytes: None,
                    })
                }
                CAR_TYPE => {
                    pick.car_refused = true;
                    continue;
                }
                _ => continue,
            };
            if q > 0.0 && pick.best.as_ref().is_none_or(|(bq, _)| q > *bq) {
                pick.best = Some((q, want));
            }
        }
    }
    pick
}

/// The CAR parameters in the query (`dag-scope`, `entity-bytes`, `car-version`,
/// `car-order`, `car-dups`).
fn car_params(pairs: &[(String, String)]) -> ApiResult<CarParams> {
    for (key, value) in pairs {
        if let Some(k) = key.strip_prefix("car-")
            && !car_param_ok(k, value)
        {
            return Err(ApiError::NotAcceptable(format!(
                "{key}={value}: this gateway sends CAR version=1, order=dfs, dups=n"
            )));
        }
    }
    Ok(CarParams {
        scope: param(pairs, "dag-scope").map_or(Ok(Scope::All), Scope::parse)?,
        bytes: param(pairs, "entity-bytes")
            .map(EntityBytes::parse)
            .transpose()?,
    })
}

/// Content negotiation: the `format` query parameter wins over `Accept`.
fn negotiate(pairs: &[(String, String)], headers: &HeaderMap) -> ApiResult<Want> {
    let accept = parse_accept(headers);
    let refused = || {
        ApiError::NotAcceptable(
            "Accept asks for a CAR variant not produced here (version=1, order=dfs, dups=n are)"
                .into(),
        )
    };
    match param(pairs, "format").filter(|f| !f.is_empty()) {
        Some("raw") => Ok(Want::Raw),
        Some("car") => {
            if accept.car_refused && !accept.car_ok {
                return Err(refused());
            }
            Ok(Want::Car(car_params(pairs)?))
        }
        Some(other) => Err(ApiError::BadRequest(format!(
            "format {other:?} is not raw or car"
        ))),
        None => match accept.best {
            Some((_, Want::Car(_))) => Ok(Want::Car(car_params(pairs)?)),
            Some((_, w)) => Ok(w),
            None if accept.car_refused => Err(refused()),
            None => Ok(Want::Plain),
        },
    }
}

// ---------------------------------------------------------------------------------------
// Path resolution

/// Where a content path leads, and what was read to get there.
#[derive(Debug)]
struct Walked {
    /// The node at the end of the path.
    terminal: Cid,
    /// The node of each path segment, the root first (`X-Ipfs-Roots`).
    roots: Vec<Cid>,
    /// Every block read on the way (each directory, and the HAMT shards walked inside it),
    /// in order: a CAR for the path carries them so the client can check every step.
    trail: Vec<Cid>,
}

/// Follows `path` from `root` (as [`unixfs::resolve`] does), recording the blocks read.
async fn walk_path(store: &EmbeddedStore, root: &Cid, path: &[String]) -> ApiResult<Walked> {
    let mut walked = Walked {
        terminal: *root,
        roots: vec![*root],
        trail: Vec::new(),
    };
    for (i, name) in path.iter().enumerate() {
        let here = || {
            std::iter::once(root.to_string())
                .chain(path[..i].iter().cloned())
                .collect::<Vec<_>>()
                .join("/")
        };
        let dir = walked.terminal;
        match unixfs::lookup_traced(store, &dir, name, &mut walked.trail).await {
            Ok(Some(link)) => {
                walked.roots.push(link.cid);
                walked.terminal = link.cid;
            }
            Ok(None) => {
                return Err(StoreError::PathNotFound {
                    root: Box::new(*root),
                    path: path[..=i].join("/"),
                }
                .into());
            }
            Err(StoreError::NotADirectory(_)) => {
                return Err(StoreError::NotADirectory(here()).into());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(walked)
}

// ---------------------------------------------------------------------------------------
// The handler

async fn ipfs(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Response> {
    let path = ContentPath::parse(uri.path())?;
    let pairs = query_pairs(uri.query());
    let want = negotiate(&pairs, &headers)?;
    let walked = walk_path(state.store(), &path.root, &path.segments).await?;
    let mut resp = match want {
        Want::Raw => raw_block(&state, &method, &headers, &walked).await?,
        Want::Car(p) => car(&state, &method, &headers, &path, &walked, p).await?,
        Want::Plain => plain(&state, &method, &headers, &uri, &path, &walked).await?,
    };
    let h = resp.headers_mut();
    h.insert(X_IPFS_PATH, header_value(uri.path()));
    let roots: Vec<String> = walked.roots.iter().map(Cid::to_string).collect();
    h.insert(X_IPFS_ROOTS, header_value(&roots.join(",")));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.append(header::VARY, HeaderValue::from_static("Accept"));
    Ok(resp)
}

/// Whether `If-None-Match` names `etag` (quoted).
fn client_has(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

fn build(b: axum::http::response::Builder, body: Body) -> ApiResult<Response> {
    b.body(body).map_err(|e| ApiError::Internal(e.to_string()))
}

/// A body for `HEAD`: nothing, and of unknown length, so that no `Content-Length: 0`
/// contradicts what `GET` would send.
fn no_body() -> Body {
    Body::from_stream(futures::stream::empty::<Result<Bytes, std::io::Error>>())
}

fn not_modified(b: axum::http::response::Builder) -> ApiResult<Response> {
    build(b.status(StatusCode::NOT_MODIFIED), Body::empty())
}

/// A stream of body pieces, counted in the metrics.
fn counted<S>(state: &AppState, s: S) -> Body
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    let metrics = state.metrics().clone();
    Body::from_stream(s.inspect(move |r| {
        if let Ok(b) = r {
            metrics.bytes_served(ROUTE, b.len() as u64);
        }
    }))
}

/// `?format=raw`: the terminal block.
async fn raw_block(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    walked: &Walked,
) -> ApiResult<Response> {
    let cid = walked.terminal;
    let data = need_block(state.store(), &cid).await?;
    let etag = format!("\"{cid}.raw\"");
    let b = Response::builder()
        .header(header::CONTENT_TYPE, RAW_TYPE)
        .header(header::CACHE_CONTROL, IMMUTABLE)
        .header(header::ETAG, header_value(&etag))
        .header(
            header::CONTENT_DISPOSITION,
            header_value(&format!("attachment; filename=\"{cid}.bin\"")),
        );
    if client_has(headers, &etag) {
        return not_modified(b);
    }
    let b = b
        .status(StatusCode::OK)
        .header(header::CONTENT_LENGTH, data.len());
    if method == Method::HEAD {
        return build(b, Body::empty());
    }
    build(
        b,
        counted(state, futures::stream::once(async move { Ok(data) })),
    )
}

/// `?format=car`: the path's blocks, then the terminal entity as far as the scope goes.
async fn car(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    path: &ContentPath,
    walked: &Walked,
    params: CarParams,
) -> ApiResult<Response> {
    let store = state.store();
    let cid = walked.terminal;
    // The terminal block must be there before a 200 goes out.
    let (kind, size) = if cid.codec() == RAW {
        if !store.has(&cid).await? {
            return Err(StoreError::not_found(&cid).into());
        }
        (Kind::Raw, 0)
    } else {
        let st = unixfs::stat(store, &cid).await?;
        (st.kind, st.size)
    };
    let first = match (params.bytes, &kind) {
        (Some(eb), Kind::File) => {
            let want = eb.range(size);
            if want.is_empty() {
                Visit::Leaf(cid)
            } else {
                Visit::FilePart {
                    cid,
                    start: 0,
                    len: size,
                    want,
                }
            }
        }
        // entity-bytes on anything else means dag-scope=entity.
        (Some(_), _) => entity_visit(cid, &kind),
        (None, _) => match params.scope {
            Scope::Block => Visit::Leaf(cid),
            Scope::All => Visit::All(cid),
            Scope::Entity => entity_visit(cid, &kind),
        },
    };
    // Stable for one request, different for every scope, byte range and path.
    let key = format!(
        "{}|{}|{}",
        path.display(),
        params.scope.name(),
        params.bytes.map(|b| b.to_string()).unwrap_or_default()
    );
    let digest = HashAlg::Sha2_256.digest(key.as_bytes());
    let etag = format!("\"{cid}.car.{}\"", hex::encode(&digest.digest()[..8]));
    let b = Response::builder()
        .header(header::CONTENT_TYPE, CAR_CONTENT_TYPE)
        .header(header::CACHE_CONTROL, IMMUTABLE)
        .header(header::ETAG, header_value(&etag))
        .header(
            header::CONTENT_DISPOSITION,
            header_value(&format!("attachment; filename=\"{cid}.car\"")),
        );
    if client_has(headers, &etag) {
        return not_modified(b);
    }
    let b = b.status(StatusCode::OK);
    if method == Method::HEAD {
        return build(b, no_body());
    }
    // The stack pops from the end: the path first, root first; then the entity.
    let mut stack = vec![first];
    stack.extend(walked.trail.iter().rev().map(|c| Visit::Leaf(*c)));
    let walk = CarWalk {
        store: store.clone(),
        stack,
        sent: HashSet::new(),
        covered: HashSet::new(),
    };
    let header = Bytes::from(encode_header(&[cid]));
    let blocks = futures::stream::try_unfold(walk, move |mut w| async move {
        match w.next_section().await {
            Ok(Some(s)) => Ok(Some((s, w))),
            Ok(None) => Ok(None),
            Err(e) => {
                // The status is sent: all that is left is to cut the stream, so the client
                // sees an incomplete CAR rather than a complete-looking one.
                match &e {
                    StoreError::BlockNotFound(_) => tracing::debug!("CAR of {cid} cut: {e}"),
                    _ => tracing::warn!("CAR of {cid} cut: {e}"),
                }
                Err(std::io::Error::other(e.to_string()))
            }
        }
    });
    let body = futures::stream::once(async move { Ok(header) }).chain(blocks);
    build(b, counted(state, body))
}

/// The first visit of `dag-scope=entity` for a terminal of this kind.
fn entity_visit(cid: Cid, kind: &Kind) -> Visit {
    match kind {
        // A file's DAG is the file.
        Kind::File => Visit::All(cid),
        // Every shard, none of the entries: what it takes to list the directory.
        Kind::HamtShard => Visit::Shard(cid),
        Kind::Raw | Kind::Directory | Kind::Symlink(_) | Kind::Other(_) => Visit::Leaf(cid),
    }
}

/// One step of a CAR walk.
#[derive(Debug, Clone)]
enum Visit {
    /// Send the block, nothing below it.
    Leaf(Cid),
    /// Send the block and the whole DAG below it.
    All(Cid),
    /// A shard of the terminal HAMT directory: send it and its sub-shards, not the entries.
    Shard(Cid),
    /// A node of the terminal file, holding bytes `start..start + len` of it: send it and
    /// the children that overlap `want`.
    FilePart {
        cid: Cid,
        start: u64,
        len: u64,
        want: Range<u64>,
    },
}

impl Visit {
    fn cid(&self) -> Cid {
        match self {
            Visit::Leaf(c) | Visit::All(c) | Visit::Shard(c) => *c,
            Visit::FilePart { cid, .. } => *cid,
        }
    }
}

/// A depth-first CAR walk: memory holds one block, the stack of what is left to visit and
/// the set of CIDs sent (`dups=n` needs it).
struct CarWalk {
    store: EmbeddedStore,
    stack: Vec<Visit>,
    /// Blocks already in the CAR.
    sent: HashSet<Cid>,
    /// File nodes whose whole subtree has been queued (a repeated node needs no second
    /// walk unless an earlier visit only took part of it).
    covered: HashSet<Cid>,
}

impl CarWalk {
    /// The next CAR section, `None` at the end.
    async fn next_section(&mut self) -> Result<Option<Bytes>, StoreError> {
        while let Some(v) = self.stack.pop() {
            let cid = v.cid();
            let fresh = !self.sent.contains(&cid);
            let descend = match &v {
                // Part of a file: the same node elsewhere in the file may have been sent
                // with different children wanted.
                Visit::FilePart {
                    start, len, want, ..
                } => {
                    let whole = want.start <= *start && start.saturating_add(*len) <= want.end;
                    cid.codec() == DAG_PB
                        && !self.covered.contains(&cid)
                        && (!whole || self.covered.insert(cid))
                }
                Visit::Leaf(_) => false,
                Visit::All(_) | Visit::Shard(_) => fresh,
            };
            if !fresh && !descend {
                continue;
            }
            let block = need_block(&self.store, &cid).await?;
            if descend {
                self.queue_children(&v, &block)?;
            }
            if fresh {
                self.sent.insert(cid);
                // Identity blocks are in their CIDs already: never sent.
                if identity_data(&cid).is_none() {
                    return Ok(Some(Bytes::from(encode_section(&cid, &block))));
                }
            }
        }
        Ok(None)
    }

    fn queue_children(&mut self, v: &Visit, block: &[u8]) -> Result<(), StoreError> {
        let mut children = Vec::new();
        match v {
            Visit::Leaf(_) => {}
            Visit::All(cid) => {
                children.extend(links_of(cid, block)?.into_iter().map(Visit::All));
            }
            Visit::Shard(cid) => {
                let (node, u) = unixfs::decode(cid, block)?;
                let (_, pad) = unixfs::hamt_shape(cid, &u)?;
                children.extend(
                    node.links
                        .iter()
                        .filter(|l| l.name.len() == pad)
                        .map(|l| Visit::Shard(l.cid)),
                );
            }
            Visit::FilePart {
                cid,
                start,
                len,
                want,
            } => {
                let (node, u) = unixfs::decode(cid, block)?;
                if !matches!(u.typ, Some(DataType::File | DataType::Raw))
                    || node.links.len() != u.blocksizes.len()
                {
                    return Err(StoreError::malformed(
                        cid,
                        "UnixFS file",
                        "not a file node with one blocksize per link",
                    ));
                }
                let mut offset = start.saturating_add(u.data.map_or(0, |d| d.len() as u64));
                for (l, &size) in node.links.iter().zip(&u.blocksizes) {
                    let end = offset
                        .checked_add(size)
                        .filter(|e| *e <= start.saturating_add(*len))
                        .ok_or_else(|| {
                            StoreError::malformed(cid, "UnixFS file", "blocksizes exceed filesize")
                        })?;
                    if offset < want.end && end > want.start {
                        children.push(Visit::FilePart {
                            cid: l.cid,
                            start: offset,
                            len: size,
                            want: want.clone(),
                        });
                    }
                    offset = end;
                }
            }
        }
        self.stack.extend(children.into_iter().rev());
        Ok(())
    }
}

/// No format: file bytes, a directory listing (or the redirect to it), a symlink target.
async fn plain(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    uri: &Uri,
    path: &ContentPath,
    walked: &Walked,
) -> ApiResult<Response> {
    let cid = walked.terminal;
    let kind = if cid.codec() == RAW {
        // file_response finds out whether it is held, without reading it twice.
        Kind::Raw
    } else {
        unixfs::stat(state.store(), &cid).await?.kind
    };
    match kind {
        Kind::Raw | Kind::File => {
            let name = path.segments.last().map_or("", String::as_str);
            let meta = FileMeta {
                cid,
                content_type: content_type_for(name),
                etag: cid.to_string(),
                last_modified: None,
                cache_control: Some(IMMUTABLE),
            };
            file_response(state, method, headers, meta, ROUTE).await
        }
        Kind::Directory | Kind::HamtShard if !path.trailing_slash => {
            let mut to = format!("{}/", uri.path());
            if let Some(q) = uri.query() {
                to.push('?');
                to.push_str(q);
            }
            build(
                Response::builder()
                    .status(StatusCode::MOVED_PERMANENTLY)
                    .header(header::LOCATION, header_value(&to)),
                Body::empty(),
            )
        }
        Kind::Directory | Kind::HamtShard => listing(state, method, headers, path, cid),
        Kind::Symlink(target) => {
            let etag = format!("\"{cid}\"");
            let b = Response::builder()
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .header(header::CACHE_CONTROL, IMMUTABLE)
                .header(header::ETAG, header_value(&etag));
            if client_has(headers, &etag) {
                return not_modified(b);
            }
            let b = b
                .status(StatusCode::OK)
                .header(header::CONTENT_LENGTH, target.len());
            if method == Method::HEAD {
                return build(b, Body::empty());
            }
            build(b, Body::from(target))
        }
        Kind::Other(codec) => Err(ApiError::NotAcceptable(format!(
            "codec 0x{codec:x} has no deserialized form here: ask for ?format=raw or ?format=car"
        ))),
    }
}

/// `Content-Type` of a stored file, from its name. Passive types only (see the module
/// documentation): everything else is `application/octet-stream`.
fn content_type_for(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "text" | "log" | "asc" | "md" | "csv" => "text/plain; charset=utf-8",
        "json" => "application/json",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        "gz" | "tgz" => "application/gzip",
        "xz" => "application/x-xz",
        "zst" => "application/zstd",
        "bz2" => "application/x-bzip2",
        "tar" => "application/x-tar",
        "zip" => "application/zip",
        "sig" => "application/pgp-signature",
        "iso" => "application/x-iso9660-image",
        "mp4" => "video/mp4",
        "mp3" => "audio/mpeg",
        _ => "application/octet-stream",
    }
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An HTML listing of a directory, streamed block by block (a HAMT directory in shard
/// order, which is not sorted by name: sorting would hold the whole listing in memory).
fn listing(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    path: &ContentPath,
    cid: Cid,
) -> ApiResult<Response> {
    let etag = format!("\"DirIndex-{cid}\"");
    let b = Response::builder()
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, LISTING_CACHE)
        .header(header::ETAG, header_value(&etag));
    if client_has(headers, &etag) {
        return not_modified(b);
    }
    let b = b.status(StatusCode::OK);
    if method == Method::HEAD {
        return build(b, no_body());
    }
    let title = html_escape(&format!("{}/", path.display()));
    let mut head = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
         <body><h1>Index of {title}</h1>\n<table>\n\
         <tr><th>Name</th><th>CID</th><th>Size (DAG)</th></tr>\n"
    );
    if !path.segments.is_empty() {
        head.push_str("<tr><td><a href=\"../\">..</a></td><td></td><td></td></tr>\n");
    }
    let walk = ListWalk {
        store: state.store().clone(),
        stack: vec![cid],
        seen: HashSet::new(),
    };
    let rows = futures::stream::try_unfold(walk, move |mut w| async move {
        match w.next_rows().await {
            Ok(Some(r)) => Ok(Some((r, w))),
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::debug!("listing of {cid} cut: {e}");
                Err(std::io::Error::other(e.to_string()))
            }
        }
    });
    let body = futures::stream::once(async move { Ok(Bytes::from(head)) })
        .chain(rows)
        .chain(futures::stream::once(async {
            Ok(Bytes::from_static(b"</table>\n</body></html>\n"))
        }));
    build(b, counted(state, body))
}

/// The blocks of a directory, read one at a time for its listing.
struct ListWalk {
    store: EmbeddedStore,
    stack: Vec<Cid>,
    seen: HashSet<Cid>,
}

impl ListWalk {
    /// The rows of the next block that has entries; `None` at the end.
    async fn next_rows(&mut self) -> Result<Option<Bytes>, StoreError> {
        while let Some(c) = self.stack.pop() {
            if !self.seen.insert(c) {
                return Err(StoreError::malformed(
                    &c,
                    "HAMT shard",
                    "sub-shard linked twice",
                ));
            }
            let block = need_block(&self.store, &c).await?;
            let (node, u) = unixfs::decode(&c, &block)?;
            let pad = match u.typ {
                Some(DataType::Directory) => 0,
                Some(DataType::HamtShard) => unixfs::hamt_shape(&c, &u)?.1,
                _ => return Err(StoreError::NotADirectory(c.to_string())),
            };
            let mut rows = String::new();
            let mut shards = Vec::new();
            for l in &node.links {
                if pad > 0 && l.name.len() == pad {
                    shards.push(l.cid);
                    continue;
                }
                let name = String::from_utf8_lossy(l.name.get(pad..).unwrap_or_default());
                let _ = writeln!(
                    rows,
                    "<tr><td><a href=\"./{href}\">{name}</a></td>\
                     <td><a href=\"/ipfs/{cid}\">{cid}</a></td><td>{size}</td></tr>",
                    href = utf8_percent_encode(&name, HREF),
                    name = html_escape(&name),
                    cid = l.cid,
                    size = l.tsize,
                );
            }
            self.stack.extend(shards.into_iter().rev());
            if !rows.is_empty() {
                return Ok(Some(Bytes::from(rows)));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_bytes_table() {
        let r = |s: &str, size: u64| EntityBytes::parse(s).unwrap().range(size);
        assert_eq!(r("0:*", 100), 0..100);
        assert_eq!(r("0:0", 100), 0..1);
        assert_eq!(r("0:1023", 3072), 0..1024);
        assert_eq!(r("10:19", 100), 10..20);
        assert_eq!(r("-10:*", 100), 90..100);
        assert_eq!(r("-1000:*", 100), 0..100);
        assert_eq!(r("5:-10", 100), 5..91);
        assert_eq!(r("0:5000", 100), 0..100);
        assert_eq!(r("100:*", 100), 0..0);
        assert_eq!(r("200:300", 100), 0..0);
        assert_eq!(r("-5:-10", 100), 0..0);
        assert_eq!(r("0:*", 0), 0..0);
        assert_eq!(r(&format!("{}:*", i64::MIN), 10), 0..10);
        assert_eq!(r(&format!("0:{}", i64::MAX), u64::MAX), 0..1 << 63);
        for bad in ["", "0", "a:1", "1:b", "5:4", "0:**", ":5", "1.5:2"] {
            assert!(EntityBytes::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn content_paths() {
        let p = ContentPath::parse("/ipfs/bafkqaaa").unwrap();
        assert!(p.segments.is_empty() && !p.trailing_slash);
        let p = ContentPath::parse("/ipfs/bafkqaaa/").unwrap();
        assert!(p.segments.is_empty() && p.trailing_slash);
        let p = ContentPath::parse("/ipfs/bafkqaaa/a%20b//c%2Fd/").unwrap();
        assert_eq!(p.segments, ["a b", "c/d"]);
        assert!(p.trailing_slash);
        assert!(matches!(
            ContentPath::parse("/ipfs/not-a-cid"),
            Err(ApiError::Store(StoreError::InvalidCid { .. }))
        ));
        assert!(matches!(
            ContentPath::parse("/ipfs/bafkqaaa/%ff"),
            Err(ApiError::BadRequest(_))
        ));
    }

    fn accept(v: &str) -> ApiResult<Want> {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        negotiate(&[], &h)
    }

    #[test]
    fn negotiation_table() {
        let q = |s: &str| query_pairs(Some(s));
        let none = HeaderMap::new();
        assert!(matches!(negotiate(&q(""), &none), Ok(Want::Plain)));
        assert!(matches!(negotiate(&q("format=raw"), &none), Ok(Want::Raw)));
        assert!(matches!(
            negotiate(&q("format=car"), &none),
            Ok(Want::Car(_))
        ));
        assert!(matches!(
            negotiate(&q("format=tar"), &none),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(accept(RAW_TYPE), Ok(Want::Raw)));
        assert!(matches!(accept(CAR_TYPE), Ok(Want::Car(_))));
        assert!(matches!(
            accept("application/vnd.ipld.car; version=1; order=dfs; dups=n"),
            Ok(Want::Car(_))
        ));
        assert!(matches!(accept("text/html, */*"), Ok(Want::Plain)));
        for refused in [
            "application/vnd.ipld.car; version=2",
            "application/vnd.ipld.car;dups=y",
            "application/vnd.ipld.car;order=foo",
        ] {
            assert!(
                matches!(accept(refused), Err(ApiError::NotAcceptable(_))),
                "{refused}"
            );
        }
        assert!(matches!(
            accept("application/vnd.ipld.car;dups=y, application/vnd.ipld.car;dups=n;q=0.5"),
            Ok(Want::Car(_))
        ));
        assert!(matches!(
            accept("application/vnd.ipld.raw;q=0.5, application/vnd.ipld.car"),
            Ok(Want::Car(_))
        ));
        // format= wins over Accept.
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static(CAR_TYPE));
        assert!(matches!(negotiate(&q("format=raw"), &h), Ok(Want::Raw)));
        assert!(matches!(
            negotiate(&q("format=car&car-dups=y"), &none),
            Err(ApiError::NotAcceptable(_))
        ));
        assert!(matches!(
            negotiate(&q("format=car&dag-scope=most"), &none),
            Err(ApiError::BadRequest(_))
        ));
        let Ok(Want::Car(p)) = negotiate(&q("format=car&dag-scope=entity&entity-bytes=0:*"), &none)
        else {
            panic!("not a CAR")
        };
        assert_eq!(p.scope, Scope::Entity);
        assert_eq!(p.bytes, Some(EntityBytes { from: 0, to: None }));
    }

    #[test]
    fn listing_escapes() {
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(
            utf8_percent_encode("a b/ü?#%", HREF).to_string(),
            "a%20b%2F%C3%BC%3F%23%25"
        );
    }
}
