//! [`KuboStore`]: blocks in a Kubo node (or anything speaking Kubo's HTTP RPC API, such as
//! IPFS Cluster's Kubo proxy), reached over its HTTP RPC API with `reqwest`.
//!
//! - Writes never let the node chunk anything: cidmirror imports a file itself (so its CIDs
//!   never depend on the node's import settings), writes the blocks into a CAR and sends it
//!   with `dag/import`. A file that fails its expected size or hash is never sent.
//! - Reads use `block/get` and `block/stat` (`offline`, with a short timeout, because a node
//!   asked for a block it lacks goes looking for it on the network, and some nodes ignore
//!   `offline` and wait for it); files are put back together from blocks by [`crate::unixfs`].
//! - Pins keep cidmirror's reasons and expiries in a local [`Ledger`]; the node holds one
//!   pin per root, as deep as the deepest reason ([`crate::ledger::Depth`]).
//! - Small files (a CAR up to 1 MiB) put side by side go to the node together: one
//!   `dag/import` per batch ([`GroupCommit`]), and the roots of the batch to be pinned
//!   recursively that the node holds no pin for are linked from one dag-pb node without
//!   data, a *cover*, which that import pins. Kubo flushes its pin set after every pin
//!   (3 to 4 ms each here), and `ipfs add -r` pins one root for a whole tree: one pin per
//!   file made the kubo store 3 to 4 times slower than `add -r` of the same files. Each
//!   `put_file` still returns only when its file is on the node and pinned. The ledger
//!   records which cover holds which root; a cover pins everything it links, so the first
//!   of its roots whose depth changes dissolves it (the others still pinned recursively get
//!   pins of their own, then the cover is unpinned), and a cover whose roots no pin names
//!   (a crash between the import and the ledger's rows) is dissolved by the next `gc`.
//! - IPNS: [`KuboStore::publish_name`] points a key at a snapshot root.
//! - Never MFS: earlier IPFS mirrors built their trees with `files/*` and did not survive
//!   their size.
//!
//! Written by hand on `reqwest`: the RPC API is one `POST /api/v0/<command>?arg=...` per call,
//! and the only Rust client of it, `ipfs-api-backend-hyper` 0.6 (unreleased since 2022), lacks
//! `dag/import`'s options and pulls `multihash 0.17 -> core2 0.4`, whose every version is
//! yanked, so a fresh `cargo generate-lockfile` failed with it. [`Rpc`] is one call.

use std::collections::HashSet;
use std::io::{BufWriter, Seek, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use cid::Cid;
use futures::{StreamExt, TryStreamExt};
use reqwest::multipart::{Form, Part};
use tokio::io::AsyncRead;
use tokio_util::io::SyncIoBridge;

use crate::api::{
    Block, BlocksWritten, ByteStream, CarImport, FileSource, GcOptions, GcReport, Pin, PinReason,
    PutOptions, Store,
};
use crate::batch::GroupCommit;
use crate::car::{CarReader, CarWriter};
use crate::embedded::blocking;
use crate::hash::identity_data;
use crate::importer::{self, BlockSink, ImportedFile, Leaf};
use crate::ledger::{Change, Depth, Ledger};
use crate::{Error, Result, unixfs};

/// How long a call that moves no bulk data may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for a block the node may not have. Kubo answers at once with
/// `offline=true`; a node that ignores `offline` (js-ipfs did; tolerated for other RPC servers) waits until this timeout,
/// after which the node's list of local blocks settles it (so a slow answer is never taken
/// for a miss).
const MISS_TIMEOUT: Duration = Duration::from_millis(300);
/// Roots per `pin/add` or `pin/rm` call.
const PIN_BATCH: usize = 200;
/// Files up to this size (as a CAR) are pinned by their `dag/import` itself, the CAR held
/// in memory for the upload; larger ones are pinned by a `pin/add` after it.
const PIN_IN_IMPORT_MAX: u64 = 16 << 20;
/// Files up to this size (as a CAR) are sent with the others waiting beside them in one
/// `dag/import` (a group commit) and held by one pin on a node linking them (a cover).
const BATCH_FILE_MAX: usize = 1 << 20;
/// `put_file` calls wanted in flight per caller slot ([`Store::put_fanout`]): at the
/// publisher's default of 4 downloads, up to 64 small files wait for a batch together
/// (at most 64 MiB of their CARs in memory, plus the batch being sent; larger files take
/// one of [`UPLOADS_AT_ONCE`] slots).
pub(crate) const PUT_FANOUT: usize = 16;
/// Files larger than [`BATCH_FILE_MAX`] imported and uploaded at once.
const UPLOADS_AT_ONCE: usize = 4;
/// At most this many files in one batch.
const BATCH_FILES: usize = 512;
/// At most this many bytes of CAR in one batch.
const BATCH_BYTES: usize = 32 << 20;
/// At least this many CIDs in one `has_many`: list the node's blocks once instead.
const LIST_LOCAL_FROM: usize = 16;
/// The longest answer read from the node (`refs/local` of a few million blocks).
const ANSWER_MAX: usize = 512 << 20;

/// Why an answer could not be read.
enum ReadError {
    Http(reqwest::Error),
    TooLong,
}

impl From<reqwest::Error> for ReadError {
    fn from(e: reqwest::Error) -> Self {
        ReadError::Http(e)
    }
}

/// The body of `response`, refused past `max` bytes (before reading it when the node says
/// its length).
async fn read_bounded(
    mut response: reqwest::Response,
    max: usize,
) -> std::result::Result<Bytes, ReadError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(ReadError::TooLong);
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max {
            return Err(ReadError::TooLong);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// An HTTP error with its causes (reqwest's own message is only the outermost one).
fn error_chain(e: &reqwest::Error) -> String {
    crate::cluster::chain(e)
}

/// Blocks in a Kubo node, pins by reason in a local ledger.
#[derive(Clone)]
pub struct KuboStore {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// `http://HOST:PORT` without a trailing slash.
    api: String,
    dir: PathBuf,
    ledger: Ledger,
    /// Pins change one at a time, so the ledger and the node agree.
    pinning: tokio::sync::Mutex<()>,
    /// Small files waiting to be sent together.
    batches: GroupCommit<SmallFile>,
    /// Larger files imported and sent at once: however many `put_file` calls a caller
    /// runs ([`Store::put_fanout`]), at most this many temp CARs (and CARs read into
    /// memory for their upload) exist.
    uploads: Arc<tokio::sync::Semaphore>,
}

/// A small file's blocks, verified, waiting to be sent with others.
struct SmallFile {
    /// The file's blocks as CAR sections (no header).
    sections: Vec<u8>,
    root: Cid,
    tsize: u64,
    /// The pin `put_file` was asked for, and its expiry.
    pin: Option<(PinReason, Option<SystemTime>)>,
}

/// CAR bytes in memory while they fit in [`BATCH_FILE_MAX`], then in a temp file in `dir`.
struct Spool {
    mem: Vec<u8>,
    file: Option<BufWriter<tempfile::NamedTempFile>>,
    dir: PathBuf,
}

impl Spool {
    fn new(dir: PathBuf) -> Spool {
        Spool {
            mem: Vec::new(),
            file: None,
            dir,
        }
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() && self.mem.len() + buf.len() <= BATCH_FILE_MAX {
            self.mem.extend_from_slice(buf);
            return Ok(());
        }
        let f = match &mut self.file {
            Some(f) => f,
            None => {
                let mut f = BufWriter::new(temp_car_in(&self.dir)?);
                f.write_all(&std::mem::take(&mut self.mem))?;
                self.file.insert(f)
            }
        };
        f.write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

/// A temp file for a CAR in `dir`, removed when dropped.
fn temp_car_in(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix("car-")
        .suffix(".part")
        .tempfile_in(dir)
}

/// Where an imported file's CAR ended up.
enum Spooled {
    Mem(Vec<u8>),
    File(tempfile::NamedTempFile, u64),
}

/// One call of the RPC API: a path below `/api/v0` and its query (repeated `arg`s allowed).
struct Rpc {
    path: &'static str,
    query: Vec<(&'static str, String)>,
}

impl Rpc {
    fn new(path: &'static str) -> Rpc {
        Rpc {
            path,
            query: Vec::new(),
        }
    }

    fn arg(mut self, k: &'static str, v: impl ToString) -> Rpc {
        self.query.push((k, v.to_string()));
        self
    }
}

/// The message of an RPC error answer (`{"Message": ..., "Type": "error"}`), or the body.
fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ApiError {
        #[serde(rename = "Message")]
        message: String,
    }
    match serde_json::from_slice::<ApiError>(body) {
        Ok(e) => e.message,
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    }
}

/// Whether an error says the block is not there (Kubo offline: "not found"; other RPC
/// servers, such as the retired js-ipfs: their timeout).
fn means_missing(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("not found") || m.contains("timed out") || m.contains("timeout")
}

/// A sink that writes every block into a CAR file.
struct CarSink<'a, W: Write> {
    car: CarWriter<W>,
    progress: Option<&'a (dyn Fn(u64) + Send + Sync)>,
}

impl<W: Write> BlockSink for CarSink<'_, W> {
    fn leaf(&mut self, leaf: &Leaf<'_>) -> Result<()> {
        self.car.write_block(leaf.cid, &leaf.block())?;
        if let Some(p) = self.progress {
            p(leaf.data.len() as u64);
        }
        Ok(())
    }
    fn node(&mut self, cid: &Cid, block: &[u8]) -> Result<()> {
        self.car.write_block(cid, block)
    }
}

/// The root a CAR of loose blocks names: dag/import wants at least one, and the empty
/// identity CID costs nothing (roots are never pinned by the import: `pin-roots=false`).
fn placeholder_root() -> Result<Cid> {
    crate::hash::parse_cid("bafkqaaa")
}

impl KuboStore {
    /// Connects to the RPC API at `api` (`http://127.0.0.1:5001`) and keeps the pin ledger
    /// and temporary CARs in `dir`. Fails unless the node answers `version`.
    pub async fn connect(api: &str, dir: &Path) -> Result<KuboStore> {
        let parsed = url::Url::parse(api).map_err(|e| Error::Kubo {
            api: api.to_string(),
            call: "connect",
            message: format!("not a URL: {e}"),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(Error::Kubo {
                api: api.to_string(),
                call: "connect",
                message: "expected http://HOST:PORT".into(),
            });
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("cidmirror/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Kubo {
                api: api.to_string(),
                call: "connect",
                message: format!("HTTP client: {e}"),
            })?;
        std::fs::create_dir_all(dir.join("tmp")).map_err(|e| Error::io(dir.join("tmp"), e))?;
        let ledger = Ledger::open(&dir.join("pins.sqlite"))?;
        let s = KuboStore {
            inner: Arc::new(Inner {
                http,
                api: api.trim_end_matches('/').to_string(),
                dir: dir.to_path_buf(),
                ledger,
                pinning: tokio::sync::Mutex::new(()),
                batches: GroupCommit::new(BATCH_FILES, BATCH_BYTES),
                uploads: Arc::new(tokio::sync::Semaphore::new(UPLOADS_AT_ONCE)),
            }),
        };
        s.call(Rpc::new("/version"), None, CALL_TIMEOUT).await?;
        Ok(s)
    }

    /// The RPC API's URL.
    pub fn api(&self) -> &str {
        &self.inner.api
    }

    fn err(&self, call: &'static str, message: impl Into<String>) -> Error {
        Error::Kubo {
            api: self.inner.api.clone(),
            call,
            message: message.into(),
        }
    }

    /// One call; the answer's body, or the node's error message. The whole call (sending
    /// the form, reading the answer) is bounded by `limit`; an answer is read up to
    /// [`ANSWER_MAX`].
    async fn call(&self, rpc: Rpc, form: Option<Form>, limit: Duration) -> Result<Bytes> {
        let path = rpc.path;
        let started = std::time::Instant::now();
        let mut url = format!("{}/api/v0{}", self.inner.api, path);
        for (i, (k, v)) in rpc.query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(k);
            url.push('=');
            url.extend(url::form_urlencoded::byte_serialize(v.as_bytes()));
        }
        let mut request = self.inner.http.post(&url);
        if let Some(form) = form {
            request = request.multipart(form);
        }
        let sent = async {
            let response = request.send().await?;
            let status = response.status();
            let body = read_bounded(response, ANSWER_MAX).await?;
            Ok::<_, ReadError>((status, body))
        };
        let answer = tokio::time::timeout(limit, sent).await;
        tracing::debug!(
            call = path,
            took_ms = started.elapsed().as_millis() as u64,
            "kubo rpc"
        );
        let (status, body) = match answer {
            Err(_) => return Err(self.err(path, format!("no answer within {limit:?}"))),
            Ok(Err(ReadError::Http(e))) => return Err(self.err(path, error_chain(&e))),
            Ok(Err(ReadError::TooLong)) => {
                return Err(self.err(path, format!("answer longer than {ANSWER_MAX} bytes")));
            }
            Ok(Ok(r)) => r,
        };
        if !status.is_success() {
            return Err(self.err(path, format!("{status}: {}", error_message(&body))));
        }
        // Streaming commands report late errors as a JSON object in the body.
        if body.starts_with(b"{") {
            for line in body.split(|b| *b == b'\n') {
                if line.windows(15).any(|w| w == b"\"Type\":\"error\"") {
                    return Err(self.err(path, error_message(line)));
                }
            }
        }
        Ok(body)
    }

    /// Records that something was just written (see [`Store::gc`]).
    fn touch(&self) -> Result<()> {
        let p = self.inner.dir.join("last-write");
        std::fs::write(&p, b"").map_err(|e| Error::io(&p, e))
    }

    /// When something was last written through any store on this ledger directory.
    fn last_write(&self) -> Option<SystemTime> {
        std::fs::metadata(self.inner.dir.join("last-write"))
            .and_then(|m| m.modified())
            .ok()
    }

    /// Sends a CAR file (already verified) with `dag/import`, pinning nothing.
    /// Sends a CAR file written with the placeholder root (already verified) with
    /// `dag/import`. With `pin_root`, the header sent names that root instead and the node
    /// pins it recursively in the same call (one request per file instead of two).
    async fn send_car(
        &self,
        mut file: std::fs::File,
        size: u64,
        pin_root: Option<Cid>,
        path: &Path,
    ) -> Result<()> {
        let length = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let (part, pin) = match pin_root {
            None => {
                let file = tokio::fs::File::from_std(file);
                let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
                (Part::stream_with_length(body, length), false)
            }
            Some(root) => {
                // The CAR in memory with its real header (the caller keeps this to small
                // files).
                let skip = crate::car::encode_header(&[placeholder_root()?]).len() as u64;
                file.seek(std::io::SeekFrom::Start(skip))
                    .map_err(|e| Error::io(path, e))?;
                let mut car = crate::car::encode_header(&[root]);
                std::io::Read::read_to_end(&mut file, &mut car).map_err(|e| Error::io(path, e))?;
                (Part::bytes(car), true)
            }
        };
        self.import_part(part, size, pin).await
    }

    /// One `dag/import` of the CAR in `part` (`size` bytes); `pin` pins the roots its
    /// header names.
    async fn import_part(&self, part: Part, size: u64, pin: bool) -> Result<()> {
        let part = part
            .file_name("blocks.car")
            .mime_str("application/octet-stream")
            .map_err(|e| self.err("/dag/import", e.to_string()))?;
        let form = Form::new().part("file", part);
        // Bulk data: allow a slow node 1 s per 8 MiB on top of the usual limit.
        let limit = CALL_TIMEOUT + Duration::from_secs(size / (8 << 20));
        let body = self
            .call(
                Rpc::new("/dag/import")
                    .arg("pin-roots", pin)
                    .arg("silent", "true"),
                Some(form),
                limit,
            )
            .await?;
        // A root Kubo could not pin is reported in a successful answer, one JSON line
        // per root (`silent` quiets only the text encoding).
        if pin {
            pin_errors(&body).map_err(|m| self.err("/dag/import", m))?;
        }
        Ok(())
    }

    /// One of the [`UPLOADS_AT_ONCE`] slots for a larger file.
    async fn upload_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.inner.uploads)
            .acquire_owned()
            .await
            .map_err(|_| Error::Task("the kubo store's upload slots are closed".into()))
    }

    /// A temp file for a CAR, removed when dropped.
    fn temp_car(&self) -> Result<tempfile::NamedTempFile> {
        let dir = self.inner.dir.join("tmp");
        temp_car_in(&dir).map_err(|e| Error::io(&dir, e))
    }

    /// Brings the node's pins in line with ledger changes.
    async fn apply(&self, changes: &[Change]) -> Result<()> {
        let mut rm_rec = Vec::new();
        let mut rm_direct = Vec::new();
        let mut add_rec = Vec::new();
        let mut add_direct = Vec::new();
        // Roots leaving or entering a recursive pin may be held by a cover instead of a
        // pin of their own: one leaving has no pin to remove (its cover goes once it holds
        // nothing), one entering gets its own pin and leaves its cover.
        let crossing: Vec<Cid> = changes
            .iter()
            .filter(|c| (c.before == Depth::Recursive) != (c.after == Depth::Recursive))
            .map(|c| c.cid)
            .collect();
        let uncovered = self.inner.ledger.dissolution(&crossing)?;
        add_rec.extend(uncovered.own.iter().copied());
        for c in changes {
            if c.before == Depth::Recursive && uncovered.covered.contains(&c.cid) {
                if c.after == Depth::Direct {
                    add_direct.push(c.cid);
                }
                continue;
            }
            match (c.before, c.after) {
                (a, b) if a == b => {}
                (Depth::None, Depth::Recursive) | (Depth::Direct, Depth::Recursive) => {
                    // Kubo turns a direct pin into a recursive one; so did js-ipfs.
                    add_rec.push(c.cid)
                }
                (Depth::None, Depth::Direct) => add_direct.push(c.cid),
                (Depth::Recursive, Depth::Direct) => {
                    rm_rec.push(c.cid);
                    add_direct.push(c.cid);
                }
                (Depth::Recursive, Depth::None) => rm_rec.push(c.cid),
                (Depth::Direct, Depth::None) => rm_direct.push(c.cid),
                _ => {}
            }
        }
        self.pin_call("/pin/rm", &rm_rec, true).await?;
        self.pin_call("/pin/rm", &rm_direct, false).await?;
        self.pin_call("/pin/add", &add_rec, true).await?;
        self.pin_call("/pin/add", &add_direct, false).await?;
        // Members that have pins of their own now are no longer covered, whatever happens
        // to their covers next.
        let mut own = uncovered.own.clone();
        own.extend(
            changes
                .iter()
                .filter(|c| c.after == Depth::Recursive && uncovered.covered.contains(&c.cid))
                .map(|c| c.cid),
        );
        self.inner.ledger.uncover_members(&own)?;
        self.unpin_covers(&uncovered.covers).await
    }

    /// Unpins covers whose members have left or have pins of their own, and forgets them.
    /// Refused, a cover keeps the rows of the members that left (no longer pinned
    /// recursively), so the next `gc` finds it again.
    async fn unpin_covers(&self, covers: &[Cid]) -> Result<()> {
        self.pin_call("/pin/rm", covers, true).await?;
        for c in covers {
            self.inner.ledger.drop_cover(c)?;
        }
        Ok(())
    }

    /// Dissolves the covers of `members`: their other members still pinned recursively get
    /// pins of their own, then the covers go.
    async fn dissolve(&self, members: &[Cid]) -> Result<()> {
        let plan = self.inner.ledger.dissolution(members)?;
        if plan.covers.is_empty() {
            return Ok(());
        }
        self.pin_call("/pin/add", &plan.own, true).await?;
        self.inner.ledger.uncover_members(&plan.own)?;
        self.unpin_covers(&plan.covers).await
    }

    async fn pin_call(&self, path: &'static str, cids: &[Cid], recursive: bool) -> Result<()> {
        for batch in cids.chunks(PIN_BATCH) {
            let mut rpc = Rpc::new(path).arg("recursive", recursive);
            for c in batch {
                rpc = rpc.arg("arg", c);
            }
            match self.call(rpc, None, CALL_TIMEOUT * 5).await {
                Ok(_) => {}
                // Unpinning what the node no longer pins (its repo was reset, or a pin
                // was removed by hand) reaches the wanted state anyway: retry one by one.
                Err(Error::Kubo { message, .. })
                    if path == "/pin/rm" && message.contains("not pinned") =>
                {
                    for c in batch {
                        let one = Rpc::new(path).arg("recursive", recursive).arg("arg", c);
                        match self.call(one, None, CALL_TIMEOUT).await {
                            Ok(_) => {}
                            Err(Error::Kubo { message, .. }) if message.contains("not pinned") => {
                                tracing::debug!(cid = %c, "not pinned on the node");
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Creates the IPNS key `name` if the node lacks it; returns its IPNS name (peer id).
    pub async fn ensure_key(&self, name: &str) -> Result<String> {
        #[derive(serde::Deserialize)]
        struct Key {
            #[serde(rename = "Name")]
            name: String,
            #[serde(rename = "Id")]
            id: String,
        }
        #[derive(serde::Deserialize)]
        struct Keys {
            #[serde(rename = "Keys")]
            keys: Vec<Key>,
        }
        let body = self.call(Rpc::new("/key/list"), None, CALL_TIMEOUT).await?;
        let keys: Keys = serde_json::from_slice(&body)
            .map_err(|e| self.err("/key/list", format!("unexpected answer: {e}")))?;
        if let Some(k) = keys.keys.into_iter().find(|k| k.name == name) {
            return Ok(k.id);
        }
        let body = self
            .call(
                Rpc::new("/key/gen").arg("arg", name).arg("type", "ed25519"),
                None,
                CALL_TIMEOUT,
            )
            .await?;
        let k: Key = serde_json::from_slice(&body)
            .map_err(|e| self.err("/key/gen", format!("unexpected answer: {e}")))?;
        Ok(k.id)
    }

    /// Points the IPNS name of key `key` at `/ipfs/<root>` (`allow-offline`, so a node
    /// without peers publishes too) with a record valid for `lifetime` that resolvers may
    /// cache for `ttl`; returns the name. Publishing the same root again renews the record.
    pub async fn publish_name(
        &self,
        key: &str,
        root: &Cid,
        ttl: Duration,
        lifetime: Duration,
    ) -> Result<String> {
        #[derive(serde::Deserialize)]
        struct Published {
            #[serde(rename = "Name")]
            name: String,
        }
        let body = self
            .call(
                Rpc::new("/name/publish")
                    .arg("arg", format!("/ipfs/{root}"))
                    .arg("key", key)
                    .arg("ttl", format!("{}s", ttl.as_secs().max(1)))
                    .arg("lifetime", format!("{}s", lifetime.as_secs().max(1)))
                    .arg("allow-offline", "true"),
                None,
                CALL_TIMEOUT,
            )
            .await?;
        let p: Published = serde_json::from_slice(&body)
            .map_err(|e| self.err("/name/publish", format!("unexpected answer: {e}")))?;
        Ok(p.name)
    }

    /// Every block the node holds, by multihash (`refs/local`).
    async fn local_hashes(&self) -> Result<HashSet<Vec<u8>>> {
        #[derive(serde::Deserialize)]
        struct Ref {
            #[serde(rename = "Ref")]
            r: String,
            #[serde(rename = "Err", default)]
            err: String,
        }
        let body = self
            .call(Rpc::new("/refs/local"), None, CALL_TIMEOUT * 5)
            .await?;
        let mut out = HashSet::new();
        for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let r: Ref = serde_json::from_slice(line)
                .map_err(|e| self.err("/refs/local", format!("unexpected answer: {e}")))?;
            if !r.err.is_empty() {
                return Err(self.err("/refs/local", r.err));
            }
            let c = crate::hash::parse_cid(&r.r)?;
            out.insert(c.hash().to_bytes());
        }
        Ok(out)
    }

    /// Whether the node's own list of local blocks has `cid` (the answer when a lookup
    /// timed out: js-ipfs waits for missing blocks instead of saying so).
    async fn held_locally(&self, cid: &Cid) -> Result<bool> {
        Ok(self.local_hashes().await?.contains(&cid.hash().to_bytes()))
    }

    /// Re-applies every ledger pin to the node (after its pins were lost: a repository
    /// replaced or restored, pins removed by hand); returns how many roots it pinned. A
    /// recursive pin fetches what the node lacks from its peers, within the call timeout.
    pub async fn resync_pins(&self) -> Result<usize> {
        let _g = self.inner.pinning.lock().await;
        let changes: Vec<Change> = self
            .inner
            .ledger
            .depths()?
            .into_iter()
            .map(|(cid, d)| Change {
                cid,
                before: Depth::None,
                after: d,
            })
            .collect();
        self.apply(&changes).await?;
        Ok(changes.len())
    }

    /// Imports a file into a CAR (blocking), in memory if small, else in a temp file;
    /// nothing is sent yet.
    fn import_to_car(
        &self,
        reader: impl std::io::Read + Send,
        opts: &PutOptions,
    ) -> Result<(ImportedFile, Spooled)> {
        let tmp_dir = self.inner.dir.join("tmp");
        let mut sink = CarSink {
            car: CarWriter::new(Spool::new(tmp_dir.clone()), &[placeholder_root()?])?,
            progress: opts.progress.as_deref(),
        };
        let imported = importer::import_expecting(reader, &opts.params, opts.expect, &mut sink)?;
        let spool = sink.car.finish()?;
        let spooled = match spool.file {
            None => Spooled::Mem(spool.mem),
            Some(f) => {
                let tmp = f
                    .into_inner()
                    .map_err(|e| Error::io(&tmp_dir, e.into_error()))?;
                let size = tmp
                    .as_file()
                    .metadata()
                    .map_err(|e| Error::io(tmp.path(), e))?
                    .len();
                Spooled::File(tmp, size)
            }
        };
        Ok((imported, spooled))
    }

    async fn upload(
        &self,
        tmp: tempfile::NamedTempFile,
        size: u64,
        pin_root: Option<Cid>,
    ) -> Result<()> {
        let mut f = tmp.reopen().map_err(|e| Error::io(tmp.path(), e))?;
        f.rewind().map_err(|e| Error::io(tmp.path(), e))?;
        self.touch()?;
        let r = self.send_car(f, size, pin_root, tmp.path()).await;
        drop(tmp);
        r
    }

    async fn pin_changes(&self, changes: Vec<Change>) -> Result<()> {
        self.apply(&changes).await
    }

    /// Sends a small file's blocks with the others waiting ([`GroupCommit`]), and returns
    /// once they are on the node and, with `pin`, pinned there.
    async fn put_batched(&self, part: SmallFile) -> Result<()> {
        let bytes = part.sections.len();
        let answer = self
            .inner
            .batches
            .submit(part, bytes, |batch: Vec<SmallFile>| {
                let s = self.clone();
                async move { s.send_batch(&batch).await.map_err(|e| e.to_string()) }
            })
            .await;
        match answer {
            Some(Ok(())) => Ok(()),
            Some(Err(message)) => Err(self.err("/dag/import", message)),
            None => Err(self.err("/dag/import", "the batch was dropped unsent")),
        }
    }

    /// One `dag/import` of every file in `batch`. The roots to be pinned recursively that
    /// the node holds no pin for yet are linked from one dag-pb node (the cover), which the
    /// import pins: one pin for the batch instead of one per file (each pin costs the node
    /// a flush). The ledger records each file's pin and which cover holds it.
    async fn send_batch(&self, batch: &[SmallFile]) -> Result<()> {
        let _g = self.inner.pinning.lock().await;
        let mut members: Vec<(Cid, u64)> = Vec::new();
        let mut seen = HashSet::new();
        for q in batch {
            let deep = q.pin.as_ref().is_some_and(|(r, _)| r.is_recursive());
            if deep
                && identity_data(&q.root).is_none()
                && seen.insert(q.root)
                && self.inner.ledger.depth(&q.root)? == Depth::None
            {
                members.push((q.root, q.tsize));
            }
        }
        let member_cids: HashSet<Cid> = members.iter().map(|(c, _)| *c).collect();
        // A root no pin holds may still be in a cover that a crash or a refusal left behind:
        // that cover goes first (its other members keep their pins).
        let list: Vec<Cid> = member_cids.iter().copied().collect();
        self.dissolve(&list).await?;
        let cover = (!members.is_empty()).then(|| cover_node(&members));
        let len: usize = batch.iter().map(|q| q.sections.len()).sum();
        let mut car = crate::car::encode_header(&[match &cover {
            Some((c, _)) => *c,
            None => placeholder_root()?,
        }]);
        car.reserve(len + cover.as_ref().map_or(0, |(_, b)| b.len() + 64));
        for q in batch {
            car.extend_from_slice(&q.sections);
        }
        if let Some((c, block)) = &cover {
            car.extend_from_slice(&crate::car::encode_section(c, block));
            // Recorded before it is sent, and kept if the send fails (a timeout may hide a
            // success): a cover whose members no pin names is unpinned by the next gc.
            self.inner.ledger.cover(c, block, &list)?;
        }
        self.touch()?;
        self.send_bytes(car, cover.is_some()).await?;
        let rows: Vec<(Cid, &PinReason, Option<SystemTime>)> = batch
            .iter()
            .filter_map(|q| q.pin.as_ref().map(|(r, e)| (q.root, r, *e)))
            .collect();
        let changes = self.inner.ledger.add_each(&rows)?;
        let left: Vec<Change> = changes
            .into_iter()
            .filter(|c| !(member_cids.contains(&c.cid) && c.after == Depth::Recursive))
            .collect();
        self.apply(&left).await
    }

    /// Sends a CAR held in memory with `dag/import`; `pin` pins the roots its header names.
    async fn send_bytes(&self, car: Vec<u8>, pin: bool) -> Result<()> {
        let size = car.len() as u64;
        self.import_part(Part::bytes(car), size, pin).await
    }
}

/// The first root a `dag/import` answer says it could not pin, as a message.
fn pin_errors(body: &[u8]) -> std::result::Result<(), String> {
    #[derive(serde::Deserialize)]
    struct Root {
        #[serde(rename = "Cid")]
        cid: serde_json::Value,
        #[serde(rename = "PinErrorMsg", default)]
        pin_error: String,
    }
    #[derive(serde::Deserialize)]
    struct Line {
        #[serde(rename = "Root")]
        root: Option<Root>,
    }
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(Line { root: Some(r) }) = serde_json::from_slice::<Line>(line) else {
            continue;
        };
        if !r.pin_error.is_empty() {
            let cid = r.cid["/"].as_str().unwrap_or("?").to_string();
            return Err(format!("could not pin {cid}: {}", r.pin_error));
        }
    }
    Ok(())
}

/// A dag-pb node that links every `(root, tsize)` (no data: it is no UnixFS node, only
/// something for one recursive pin to hold them all by), and its CID.
pub(crate) fn cover_node(members: &[(Cid, u64)]) -> (Cid, Vec<u8>) {
    let mut block = Vec::with_capacity(members.len() * 48);
    for (c, tsize) in members {
        crate::pb::put_link(&mut block, c, b"", *tsize);
    }
    let cid = Cid::new_v1(
        crate::hash::DAG_PB,
        crate::hash::HashAlg::Sha2_256.digest(&block),
    );
    (cid, block)
}

#[async_trait]
impl Store for KuboStore {
    async fn put_file(&self, source: FileSource, opts: PutOptions) -> Result<ImportedFile> {
        let s = self.clone();
        let pin = opts.pin.clone();
        let expires = opts.pin_expires_at;
        // A file known to be large takes an upload slot before its import (its CAR goes to
        // a temp file); one found large only by importing takes it before its upload.
        let mut slot = None;
        if opts.expect.is_some_and(|e| e.size > BATCH_FILE_MAX as u64) {
            slot = Some(self.upload_slot().await?);
        }
        let (imported, spooled) = match source {
            FileSource::Path(p) => {
                blocking(move || importer::from_path(&p, |f| s.import_to_car(f, &opts))).await?
            }
            FileSource::Open { file, path } => {
                blocking(move || importer::from_file(file, &path, |f| s.import_to_car(f, &opts)))
                    .await?
            }
            other => {
                let r = other
                    .into_async_read()
                    .ok_or_else(|| Error::Task("file source has no reader".into()))?;
                let bridge = SyncIoBridge::new(r);
                blocking(move || s.import_to_car(bridge, &opts)).await?
            }
        };
        let (tmp, size) = match spooled {
            Spooled::Mem(mut sections) => {
                // Small: sent with whatever else is waiting, pinned when it returns.
                let skip = crate::car::encode_header(&[placeholder_root()?]).len();
                sections.drain(..skip.min(sections.len()));
                self.put_batched(SmallFile {
                    sections,
                    root: imported.cid,
                    tsize: imported.tsize,
                    pin: pin.map(|r| (r, expires)),
                })
                .await?;
                return Ok(imported);
            }
            Spooled::File(tmp, size) => (tmp, size),
        };
        if slot.is_none() {
            slot = Some(self.upload_slot().await?);
        }
        // Uploads run side by side; only the ledger step is one at a time. A recursive
        // reason is pinned by the import itself; a `gc` before the ledger records it spares
        // the blocks anyway (no collection within the grace period after a write).
        let deep = size <= PIN_IN_IMPORT_MAX && pin.as_ref().is_some_and(|r| r.is_recursive());
        self.upload(tmp, size, deep.then_some(imported.cid)).await?;
        drop(slot);
        if let Some(reason) = pin {
            let _g = self.inner.pinning.lock().await;
            let changes = self.inner.ledger.add(&[imported.cid], &reason, expires)?;
            let left: Vec<Change> = changes
                .into_iter()
                .filter(|c| !(deep && c.after == Depth::Recursive))
                .collect();
            self.pin_changes(left).await?;
        }
        Ok(imported)
    }

    async fn put_blocks(&self, blocks: Vec<Block>) -> Result<BlocksWritten> {
        for b in &blocks {
            crate::embedded::check_block(&b.cid, &b.data)?;
        }
        let blocks: Vec<Block> = blocks
            .into_iter()
            .filter(|b| identity_data(&b.cid).is_none())
            .collect();
        if blocks.is_empty() {
            return Ok(BlocksWritten::default());
        }
        let cids: Vec<Cid> = blocks.iter().map(|b| b.cid).collect();
        let held = self.has_many(&cids).await?;
        let mut written = BlocksWritten::default();
        let mut seen = HashSet::new();
        let s = self.clone();
        let (tmp, size) = {
            let fresh: Vec<Block> = blocks
                .into_iter()
                .zip(held)
                .filter(|(b, h)| !h && seen.insert(b.cid))
                .map(|(b, _)| b)
                .collect();
            if fresh.is_empty() {
                return Ok(written);
            }
            for b in &fresh {
                written.new_blocks += 1;
                written.new_bytes += b.data.len() as u64;
            }
            blocking(move || {
                let tmp = s.temp_car()?;
                let mut car =
                    CarWriter::new(BufWriter::new(tmp.as_file()), &[placeholder_root()?])?;
                for b in &fresh {
                    car.write_block(&b.cid, &b.data)?;
                }
                let size = car.written();
                car.finish()?
                    .flush()
                    .map_err(|e| Error::io(tmp.path(), e))?;
                Ok((tmp, size))
            })
            .await?
        };
        self.upload(tmp, size, None).await?;
        Ok(written)
    }

    async fn import_car(
        &self,
        car: Box<dyn AsyncRead + Send + Unpin>,
        what: String,
        pin: Option<PinReason>,
    ) -> Result<CarImport> {
        let s = self.clone();
        let bridge = SyncIoBridge::new(car);
        // Read and verify all of it first: a bad or cut CAR sends nothing.
        let (roots, blocks, bytes, tmp, size) = blocking(move || {
            let mut car = CarReader::new(bridge, what.clone())?;
            let roots = car.roots().to_vec();
            let tmp = s.temp_car()?;
            let mut out = CarWriter::new(BufWriter::new(tmp.as_file()), &[placeholder_root()?])?;
            let (mut n, mut bytes) = (0u64, 0u64);
            while let Some((cid, data)) = car.next_block()? {
                crate::embedded::check_block(&cid, &data).map_err(|e| Error::Car {
                    what: what.clone(),
                    detail: e.to_string(),
                })?;
                n += 1;
                bytes += data.len() as u64;
                if identity_data(&cid).is_none() {
                    out.write_block(&cid, &data)?;
                }
            }
            let size = out.written();
            out.finish()?
                .flush()
                .map_err(|e| Error::io(tmp.path(), e))?;
            Ok((roots, n, bytes, tmp, size))
        })
        .await?;
        self.upload(tmp, size, None).await?;
        if let Some(reason) = pin {
            let _g = self.inner.pinning.lock().await;
            let changes = self.inner.ledger.add(&roots, &reason, None)?;
            self.pin_changes(changes).await?;
        }
        Ok(CarImport {
            roots,
            blocks,
            bytes,
        })
    }

    fn put_fanout(&self) -> usize {
        PUT_FANOUT
    }

    async fn get_block(&self, cid: &Cid) -> Result<Option<Bytes>> {
        if let Some(d) = identity_data(cid) {
            return Ok(Some(Bytes::copy_from_slice(d)));
        }
        let rpc = Rpc::new("/block/get")
            .arg("arg", cid)
            .arg("offline", "true")
            .arg("timeout", format!("{}ms", MISS_TIMEOUT.as_millis()));
        match self.call(rpc, None, MISS_TIMEOUT + CALL_TIMEOUT).await {
            Ok(data) => {
                // Trust no one: the node's bytes must hash to the CID asked for.
                crate::hash::verify_block(cid, &data)?;
                Ok(Some(data))
            }
            Err(Error::Kubo { message, .. }) if means_missing(&message) => {
                if !self.held_locally(cid).await? {
                    return Ok(None);
                }
                // Held after all (the node was slow): ask again, patiently.
                let rpc = Rpc::new("/block/get").arg("arg", cid);
                let data = self.call(rpc, None, CALL_TIMEOUT).await?;
                crate::hash::verify_block(cid, &data)?;
                Ok(Some(data))
            }
            Err(e) => Err(e),
        }
    }

    async fn has(&self, cid: &Cid) -> Result<bool> {
        if identity_data(cid).is_some() {
            return Ok(true);
        }
        let rpc = Rpc::new("/block/stat")
            .arg("arg", cid)
            .arg("offline", "true")
            .arg("timeout", format!("{}ms", MISS_TIMEOUT.as_millis()));
        match self.call(rpc, None, MISS_TIMEOUT + CALL_TIMEOUT).await {
            Ok(_) => Ok(true),
            Err(Error::Kubo { message, .. }) if means_missing(&message) => {
                self.held_locally(cid).await
            }
            Err(e) => Err(e),
        }
    }

    async fn has_many(&self, cids: &[Cid]) -> Result<Vec<bool>> {
        if cids.len() < LIST_LOCAL_FROM {
            let checks = futures::stream::iter(cids.to_vec())
                .map(|c| {
                    let s = self.clone();
                    async move { s.has(&c).await }
                })
                .buffered(8)
                .try_collect::<Vec<bool>>();
            return checks.await;
        }
        let local = self.local_hashes().await?;
        Ok(cids
            .iter()
            .map(|c| identity_data(c).is_some() || local.contains(&c.hash().to_bytes()))
            .collect())
    }

    async fn read(&self, cid: &Cid, range: Option<Range<u64>>) -> Result<(u64, ByteStream)> {
        unixfs::read(self, cid, range).await
    }

    async fn pin_all(
        &self,
        cids: &[Cid],
        reason: &PinReason,
        expires_at: Option<SystemTime>,
    ) -> Result<()> {
        let _g = self.inner.pinning.lock().await;
        let changes = self.inner.ledger.add(cids, reason, expires_at)?;
        if let Err(e) = self.apply(&changes).await {
            // The node refused (it lacks the blocks, say): take the ledger rows back.
            for c in cids {
                let _ = self.inner.ledger.remove(c, reason);
            }
            return Err(e);
        }
        Ok(())
    }

    async fn unpin(&self, cid: &Cid, reason: &PinReason) -> Result<bool> {
        let _g = self.inner.pinning.lock().await;
        let (changes, existed) = self.inner.ledger.remove(cid, reason)?;
        self.apply(&changes).await?;
        Ok(existed)
    }

    async fn unpin_all(&self, reason: &PinReason) -> Result<u64> {
        let _g = self.inner.pinning.lock().await;
        let (changes, n) = self.inner.ledger.remove_reason(reason)?;
        self.apply(&changes).await?;
        Ok(n)
    }

    async fn pins(&self) -> Result<Vec<Pin>> {
        self.inner.ledger.all()
    }

    /// Drops expired pins (on the node too), then runs the node's `repo/gc`, unless
    /// something was written within `opts.grace`: the node's collector cannot spare young
    /// blocks one by one, so it waits until nothing unpinned can be part of an import that
    /// has not pinned its root yet.
    async fn gc(&self, opts: GcOptions) -> Result<GcReport> {
        let mut report = GcReport::default();
        {
            let _g = self.inner.pinning.lock().await;
            let (changes, n) = self.inner.ledger.expire()?;
            self.apply(&changes).await?;
            report.pins_expired = n;
            // Covers left by a crash between sending them and recording their pins.
            let stale = self.inner.ledger.stale_members()?;
            self.dissolve(&stale).await?;
        }
        let young = self
            .last_write()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < opts.grace);
        if young {
            tracing::info!(
                grace = ?opts.grace,
                "something was written within the grace period: the node's gc waits"
            );
            return Ok(report);
        }
        let before = self.repo_stat().await?;
        let body = self
            .call(Rpc::new("/repo/gc"), None, CALL_TIMEOUT * 10)
            .await?;
        report.blocks_removed = body
            .split(|b| *b == b'\n')
            .filter(|l| l.windows(5).any(|w| w == b"\"Key\""))
            .count() as u64;
        let after = self.repo_stat().await?;
        report.bytes_freed = before.0.saturating_sub(after.0);
        report.blocks_kept = after.1;
        Ok(report)
    }
}

impl KuboStore {
    /// (repository bytes, blocks) as the node counts them.
    async fn repo_stat(&self) -> Result<(u64, u64)> {
        let body = self
            .call(Rpc::new("/repo/stat"), None, CALL_TIMEOUT)
            .await?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| self.err("/repo/stat", format!("unexpected answer: {e}")))?;
        // Kubo answers numbers, other RPC servers (js-ipfs) strings: both are read.
        let num = |k: &str| match &v[k] {
            serde_json::Value::Number(n) => n.as_u64().unwrap_or(0),
            serde_json::Value::String(s) => s.parse().unwrap_or(0),
            _ => 0,
        };
        Ok((num("RepoSize"), num("NumObjects")))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_root_kubo_could_not_pin_is_an_error() {
        let ok = br#"{"Root":{"Cid":{"/":"bafyok"},"PinErrorMsg":""}}"#;
        assert_eq!(super::pin_errors(ok), Ok(()));
        let bad = b"{\"Root\":{\"Cid\":{\"/\":\"bafyok\"},\"PinErrorMsg\":\"\"}}\n{\"Root\":{\"Cid\":{\"/\":\"bafybad\"},\"PinErrorMsg\":\"block not found\"}}\n";
        assert_eq!(
            super::pin_errors(bad),
            Err("could not pin bafybad: block not found".to_string())
        );
        assert_eq!(super::pin_errors(b""), Ok(()), "silent, nothing pinned");
    }
}
