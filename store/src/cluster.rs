//! [`ClusterStore`]: blocks in an IPFS Cluster, so that every peer following the cluster
//! (the publisher's own, and volunteers running `ipfs-cluster-follow`) replicates them, and
//! old content expires on the cluster by itself.
//!
//! - **Blocks** go through the cluster's Kubo-compatible proxy (`ipfsproxy`, port 9095),
//!   which forwards `dag/import`, `block/get`, `block/stat`, `refs/local` and `version`
//!   unchanged to its IPFS daemon: a [`KuboStore`] pointed at the proxy does all of that,
//!   so CIDs are cidmirror's own, exactly as in the kubo store. It is never asked to pin:
//!   the proxy would turn `pin/add` into a cluster pin without cidmirror's options.
//! - **Pins** go through the cluster's REST API (port 9094), one cluster pin per root:
//!   `POST /pins/{cid}?name=..&mode=recursive|direct&replication-min=..&replication-max=..`
//!   `[&expire-at=RFC3339]&meta-reasons=[..]` to pin or re-pin with new options, and
//!   `DELETE /pins/{cid}` when no reason is left (a 404 there means already gone). As in
//!   the kubo store, a local [`Ledger`] (`pins.sqlite` in the store's directory) keeps
//!   every (root, reason, expiry); the cluster pin of a root follows its live reasons:
//!   recursive if any reason is not direct; `expire-at` the latest expiry among them, none
//!   if one of them never expires, so the cluster itself drops package pins that left
//!   upstream when their grace period ends; `name` the reasons (the first one and a count
//!   when they do not fit), `meta-reasons` all of them as a JSON array. The cluster refuses
//!   to turn a recursive pin into a direct one, so that change is a DELETE then a POST.
//! - **Covers.** Small files put side by side are pinned together: their blocks go in
//!   batches through the kubo store, and the roots of one batch that the cluster holds no
//!   pin for yet are linked from one dag-pb node (a cover, see [`crate::kubo`]) which gets
//!   the one cluster pin (name `REASONS (cover of N)`, the latest expiry among them): one
//!   CRDT operation, which every follower replays, per batch instead of per file. A cover
//!   lasts until the first of its members changes its pins; then its other members still
//!   pinned get cluster pins of their own and the cover is unpinned.
//! - A refused call takes back the ledger rows it changed, and the cluster pins already
//!   changed in the same call are put back as they were (best effort): what the ledger
//!   says is what was asked of the cluster. [`ClusterStore::resync_pins`] re-sends every
//!   pin after the cluster's state was lost. (A row taken back after a refused unpin gets
//!   a new creation time. Each pin change reads the whole ledger twice to see what it
//!   changed: fine for the ledger's tens of thousands of rows.)
//! - `gc` drops expired ledger pins (re-pinning or unpinning their roots on the cluster,
//!   although the cluster will usually have expired them already), then runs `repo/gc`
//!   through the proxy as the kubo store does (with its grace period): the proxy turns it
//!   into a garbage collection of every peer's IPFS daemon. The cluster's pin tracker only
//!   pins and unpins; without this, unpinned blocks stay on disk until each daemon's own
//!   automatic gc. The proxy also answers `repo/stat` for the whole cluster without a
//!   block count, so the report's `bytes_freed` and `blocks_kept` may read 0.
//!
//! The request shapes follow IPFS Cluster's REST API documentation and source: the
//! endpoint table at <https://ipfscluster.io/documentation/reference/api/>
//! (ipfs-cluster-website `content/documentation/reference/api.md`), the Go client
//! (`api/rest/client/methods.go`: `Pin` is `POST /pins/{cid}?{PinOptions.ToQuery()}`,
//! `Unpin` is `DELETE /pins/{cid}`), `api/types.go` (`PinOptions.ToQuery`/`FromQuery`: the
//! query names, `expire-at` parsed with Go's `time.UnmarshalText`, i.e. RFC 3339, `meta-`
//! prefix), `cluster.go` (`setupPin`: an `expire-at` in the past and a recursive-to-direct
//! re-pin are refused), `api/common/api.go` (`SendResponse`: errors are
//! `{"code":..,"message":..}`, "not found" is a 404) and `api/ipfsproxy/ipfsproxy.go`
//! (which calls are hijacked: pin/*, add, repo/stat, repo/gc, block/put and dag/put with
//! `pin=true`; `dag/import` is not). The tests run it against a real two-peer IPFS Cluster
//! 1.1.6 (CRDT consensus, each peer with its own Kubo 0.43; the version file is
//! `scripts/go-peers/versions`): the store conformance suite, names, replication and
//! `expire-at` as `ipfs-cluster-ctl` shows them, the cluster expiring a grace pin itself;
//! and, for the failures a real cluster cannot be made to produce on cue, against a
//! stand-in REST server written in Rust that records every request.
//!
//! Found on the real cluster: its state is eventually consistent (CRDT), so a pin just made
//! through one peer shows on another a moment later; a pin with a replication factor above
//! the peers whose free-space metric has arrived is refused ("not enough peers to
//! allocate"), which is what happens right after peers start; and followers
//! (`ipfs-cluster-follow`) only pin what is allocated to everyone: a collaborative cluster
//! wants `replication-min=-1,replication-max=-1`.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use cid::Cid;
use reqwest::Method;
use tokio::io::AsyncRead;

use crate::api::{
    Block, BlocksWritten, ByteStream, CarImport, FileSource, GcOptions, GcReport, Pin, PinReason,
    PutOptions, Store,
};
use crate::batch::GroupCommit;
use crate::hash::identity_data;
use crate::importer::ImportedFile;
use crate::kubo::{KuboStore, cover_node};
use crate::ledger::{Ledger, to_unix};
use crate::{Error, Result};

/// How long one REST call may take (a pin is accepted, not waited for, so this is generous).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for a TCP connection to the REST API.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Reasons joined into a pin's `name` up to this length; past it, the first and a count.
const NAME_MAX: usize = 128;

/// Where the cluster is and how its pins are replicated.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    /// The REST API, `http://127.0.0.1:9094`.
    pub rest: String,
    /// The Kubo-compatible proxy, `http://127.0.0.1:9095`.
    pub proxy: String,
    /// Peers that must hold each pin; -1 (with `replication_max` -1) means every peer, as
    /// in the cluster's own configuration, so that every volunteer following it replicates.
    pub replication_min: i32,
    /// Peers that should hold each pin at most; -1 means every peer.
    pub replication_max: i32,
    /// User and password, when the REST API asks for HTTP basic authentication.
    pub basic_auth: Option<(String, String)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            rest: "http://127.0.0.1:9094".into(),
            proxy: "http://127.0.0.1:9095".into(),
            replication_min: -1,
            replication_max: -1,
            basic_auth: None,
        }
    }
}

impl std::fmt::Debug for ClusterOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("ClusterOptions")
            .field("rest", &self.rest)
            .field("proxy", &self.proxy)
            .field("replication_min", &self.replication_min)
            .field("replication_max", &self.replication_max)
            .field("basic_auth_user", &self.basic_auth.as_ref().map(|(u, _)| u))
            .finish()
    }
}

/// Blocks through an IPFS Cluster's proxy, pins by reason through its REST API.
#[derive(Clone)]
pub struct ClusterStore {
    inner: Arc<Inner>,
}

struct Inner {
    blocks: KuboStore,
    http: reqwest::Client,
    /// The REST API's URL, without a trailing `/`.
    rest: String,
    opts: ClusterOptions,
    ledger: Ledger,
    /// Pins change one at a time, so the ledger and the cluster agree.
    pinning: tokio::sync::Mutex<()>,
    /// Files waiting to be pinned together under a cover.
    batches: GroupCommit<ToPin>,
}

/// A file just put, waiting for its pin.
struct ToPin {
    cid: Cid,
    tsize: u64,
    reason: PinReason,
    expires: Option<SystemTime>,
}

/// Roots per cover, at most.
const COVER_MAX: usize = 512;

/// The cluster pin a root needs, from its reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wanted {
    /// Every reason is direct: the root block only.
    direct: bool,
    /// The latest expiry, in Unix seconds; none if some reason never expires.
    expire_at: Option<i64>,
    /// The reasons, sorted.
    reasons: Vec<String>,
    /// For a cover: how many roots it holds.
    cover_of: Option<usize>,
}

impl Wanted {
    /// What `rows` (the pins of one root) ask of the cluster: all of them, or only those
    /// still in force at `live_at` (Unix seconds).
    fn of(rows: &[&Pin], live_at: Option<i64>) -> Option<Wanted> {
        let rows: Vec<&&Pin> = rows
            .iter()
            .filter(|p| match (live_at, p.expires_at) {
                (Some(now), Some(e)) => to_unix(e).0 > now,
                _ => true,
            })
            .collect();
        if rows.is_empty() {
            return None;
        }
        let mut reasons: Vec<String> = rows.iter().map(|p| p.reason.to_string()).collect();
        reasons.sort();
        reasons.dedup();
        let expire_at = rows
            .iter()
            .map(|p| p.expires_at.map(|e| to_unix(e).0))
            .collect::<Option<Vec<i64>>>()
            .and_then(|v| v.into_iter().max());
        Some(Wanted {
            direct: rows.iter().all(|p| p.reason.is_direct()),
            expire_at,
            reasons,
            cover_of: None,
        })
    }

    fn name(&self) -> String {
        let joined = self.reasons.join(", ");
        let name = if joined.len() <= NAME_MAX || self.reasons.len() == 1 {
            joined
        } else {
            format!("{} (+{} more)", self.reasons[0], self.reasons.len() - 1)
        };
        match self.cover_of {
            Some(n) => format!("{name} (cover of {n})"),
            None => name,
        }
    }
}

/// One REST call that changes a cluster pin.
enum Step {
    Pin(Cid, Wanted),
    Unpin(Cid),
}

/// The calls that take the cluster pin of `cid` from `from` to `to`.
fn steps(cid: Cid, from: Option<&Wanted>, to: Option<&Wanted>) -> Vec<Step> {
    match (from, to) {
        (_, None) => vec![Step::Unpin(cid)],
        // The cluster refuses to re-pin a recursive pin as direct ("Unpin it first").
        (Some(f), Some(t)) if !f.direct && t.direct => {
            vec![Step::Unpin(cid), Step::Pin(cid, t.clone())]
        }
        (_, Some(t)) => vec![Step::Pin(cid, t.clone())],
    }
}

/// The pins of each root in `rows`.
fn by_cid(rows: &[Pin]) -> BTreeMap<Cid, Vec<&Pin>> {
    let mut out: BTreeMap<Cid, Vec<&Pin>> = BTreeMap::new();
    for p in rows {
        out.entry(p.cid).or_default().push(p);
    }
    out
}

/// (reason, expiry) of each pin, to see whether a root's pins changed.
fn keys(rows: Option<&Vec<&Pin>>) -> Vec<(String, Option<i64>)> {
    let mut k: Vec<_> = rows
        .map(|r| {
            r.iter()
                .map(|p| (p.reason.to_string(), p.expires_at.map(|e| to_unix(e).0)))
                .collect()
        })
        .unwrap_or_default();
    k.sort();
    k
}

fn now_secs() -> i64 {
    to_unix(SystemTime::now()).0
}

/// An error and its sources, one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// The message of a REST error answer (`{"code": 500, "message": "..."}`), or the body.
fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ApiError {
        message: String,
    }
    match serde_json::from_slice::<ApiError>(body) {
        Ok(e) => e.message,
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    }
}

impl ClusterStore {
    /// Connects to the cluster's REST API and proxy, keeping the pin ledger in `dir`
    /// (`pins.sqlite`) and the block path's temporary CARs in `dir/proxy`. Fails unless
    /// the REST API answers `GET /version` and the proxy answers `version`.
    pub async fn connect(opts: ClusterOptions, dir: &Path) -> Result<ClusterStore> {
        let rest = opts.rest.trim_end_matches('/').to_string();
        let bad = |message: String| Error::Cluster {
            api: rest.clone(),
            call: "connect".into(),
            message,
        };
        let parsed = url::Url::parse(&rest).map_err(|e| bad(format!("not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(bad("expected http://HOST:PORT".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(|e| bad(chain(&e)))?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let ledger = Ledger::open(&dir.join("pins.sqlite"))?;
        // The REST API first: a wrong or missing cluster is the likelier mistake.
        let version = Self::rest_call(
            &http,
            &rest,
            &opts,
            Method::GET,
            "/version".into(),
            &[],
            false,
        )
        .await?;
        let version = serde_json::from_slice::<serde_json::Value>(&version)
            .ok()
            .and_then(|v| v["version"].as_str().map(str::to_string))
            .unwrap_or_default();
        let blocks = KuboStore::connect(&opts.proxy, &dir.join("proxy")).await?;
        tracing::info!(rest = %rest, proxy = %opts.proxy, %version, "IPFS Cluster");
        Ok(ClusterStore {
            inner: Arc::new(Inner {
                blocks,
                http,
                rest,
                opts,
                ledger,
                pinning: tokio::sync::Mutex::new(()),
                batches: GroupCommit::new(COVER_MAX, usize::MAX),
            }),
        })
    }

    /// The REST API's URL.
    pub fn api(&self) -> &str {
        &self.inner.rest
    }

    /// The block path: the [`KuboStore`] that talks to the cluster's proxy.
    pub fn blocks(&self) -> &KuboStore {
        &self.inner.blocks
    }

    /// One REST call; the answer's body, or the cluster's error message. With
    /// `absent_ok`, a 404 counts as success (unpinning what the cluster no longer has).
    async fn rest_call(
        http: &reqwest::Client,
        rest: &str,
        opts: &ClusterOptions,
        method: Method,
        path: String,
        query: &[(&str, String)],
        absent_ok: bool,
    ) -> Result<Bytes> {
        let call = format!("{method} {path}");
        let err = |message: String| Error::Cluster {
            api: rest.to_string(),
            call: call.clone(),
            message,
        };
        let mut url =
            url::Url::parse(&format!("{rest}{path}")).map_err(|e| err(format!("bad URL: {e}")))?;
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        tracing::debug!(%url, %method, "IPFS Cluster REST call");
        let mut req = http.request(method, url);
        if let Some((user, pass)) = &opts.basic_auth {
            req = req.basic_auth(user, Some(pass));
        }
        let resp = req.send().await.map_err(|e| err(chain(&e)))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| err(chain(&e)))?;
        if status.is_success() || (absent_ok && status == reqwest::StatusCode::NOT_FOUND) {
            return Ok(body);
        }
        Err(err(format!("{status}: {}", error_message(&body))))
    }

    async fn call(
        &self,
        method: Method,
        path: String,
        query: &[(&str, String)],
        absent_ok: bool,
    ) -> Result<Bytes> {
        let i = &self.inner;
        Self::rest_call(&i.http, &i.rest, &i.opts, method, path, query, absent_ok).await
    }

    /// The query of `POST /pins/{cid}` for `w` (names as in the cluster's
    /// `PinOptions.ToQuery`).
    fn pin_query(&self, w: &Wanted) -> Vec<(&'static str, String)> {
        let o = &self.inner.opts;
        let mut q = vec![
            ("name", w.name()),
            ("mode", if w.direct { "direct" } else { "recursive" }.into()),
            ("replication-min", o.replication_min.to_string()),
            ("replication-max", o.replication_max.to_string()),
        ];
        if let Some(t) = w.expire_at {
            let t = crate::ledger::from_unix(cidmirror_schema::UnixTime(t));
            q.push((
                "expire-at",
                humantime::format_rfc3339_seconds(t).to_string(),
            ));
        }
        let reasons = serde_json::to_string(&w.reasons).unwrap_or_default();
        q.push(("meta-reasons", reasons));
        if let Some(n) = w.cover_of {
            q.push(("meta-cover-of", n.to_string()));
        }
        q
    }

    async fn run(&self, step: &Step) -> Result<()> {
        match step {
            Step::Pin(cid, w) => {
                let q = self.pin_query(w);
                self.call(Method::POST, format!("/pins/{cid}"), &q, false)
                    .await?;
            }
            Step::Unpin(cid) => {
                self.call(Method::DELETE, format!("/pins/{cid}"), &[], true)
                    .await?;
            }
        }
        Ok(())
    }

    /// Brings the cluster's pins of the roots whose ledger rows went from `before` to
    /// `after` in line. On failure, puts back (best effort) the pins already changed.
    async fn sync(&self, before: &[Pin], after: &[Pin]) -> Result<()> {
        self.sync_covered(before, after, &HashSet::new()).await
    }

    /// [`Self::sync`], where the roots of `just_covered` were just put under a cover (which
    /// the cluster already pins) and need no pin of their own.
    async fn sync_covered(
        &self,
        before: &[Pin],
        after: &[Pin],
        just_covered: &HashSet<Cid>,
    ) -> Result<()> {
        let now = now_secs();
        let b = by_cid(before);
        let a = by_cid(after);
        let mut roots: Vec<Cid> = b.keys().chain(a.keys()).copied().collect();
        roots.sort();
        roots.dedup();
        // Roots held by a cover have no cluster pin of their own: one whose pins changed
        // dissolves its cover (after its siblings got pins of their own).
        let covered: HashSet<Cid> = self
            .inner
            .ledger
            .covered()?
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        let leaving: Vec<Cid> = roots
            .iter()
            .filter(|c| covered.contains(c) && !just_covered.contains(c))
            .filter(|c| keys(b.get(c)) != keys(a.get(c)))
            .copied()
            .collect();
        let plan = self.inner.ledger.dissolution(&leaving)?;
        let mut touched: Vec<(Cid, Option<Wanted>, Option<Wanted>)> = Vec::new();
        for cid in &plan.own {
            let to = a.get(cid).and_then(|r| Wanted::of(r, Some(now)));
            if let Some(w) = &to
                && let Err(e) = self.run(&Step::Pin(*cid, w.clone())).await
            {
                self.undo(&touched).await;
                return Err(e);
            }
            touched.push((*cid, to, None));
        }
        let mut own = plan.own.clone();
        for cid in roots {
            let (rb, ra) = (b.get(&cid), a.get(&cid));
            if keys(rb) == keys(ra) || just_covered.contains(&cid) {
                continue;
            }
            // What was asked of the cluster: every earlier pin (the cluster drops expired
            // ones itself); what to ask now: the pins still in force. A root leaving its
            // cover had none of its own.
            let leaves = plan.covered.contains(&cid);
            let from = rb.filter(|_| !leaves).and_then(|r| Wanted::of(r, None));
            let to = ra.and_then(|r| Wanted::of(r, Some(now)));
            if leaves && to.is_some() {
                own.push(cid);
            }
            if from == to {
                continue;
            }
            let was = rb
                .filter(|_| !leaves)
                .and_then(|r| Wanted::of(r, Some(now)));
            for (i, s) in steps(cid, from.as_ref(), to.as_ref()).iter().enumerate() {
                if let Err(e) = self.run(s).await {
                    if i > 0 {
                        // Half done (unpinned, not re-pinned yet): put it back too.
                        touched.push((cid, to.clone(), was.clone()));
                    }
                    self.undo(&touched).await;
                    return Err(e);
                }
            }
            touched.push((cid, to, was));
        }
        // Everything asked is done: the members with pins of their own leave their covers,
        // and the covers go (a refused unpin is left to the next gc, not undone).
        self.inner.ledger.uncover_members(&own)?;
        self.unpin_covers(&plan.covers).await;
        Ok(())
    }

    /// Unpins covers whose members left or have pins of their own, and forgets them. One
    /// the cluster refuses to unpin keeps the rows of its members that left, so the next
    /// gc tries again.
    async fn unpin_covers(&self, covers: &[Cid]) {
        for c in covers {
            let done = match self.run(&Step::Unpin(*c)).await {
                Ok(()) => self.inner.ledger.drop_cover(c),
                Err(e) => Err(e),
            };
            if let Err(e) = done {
                tracing::warn!(cover = %c, error = %e, "a cover stays pinned until the next gc");
            }
        }
    }

    /// Pins a batch of files just put: those the cluster holds no pin for yet under one
    /// cover (when there are two or more), then records every file's pin.
    async fn pin_batch(&self, batch: Vec<ToPin>) -> Result<()> {
        let _g = self.inner.pinning.lock().await;
        let before = self.inner.ledger.all()?;
        let held: HashSet<Cid> = before.iter().map(|p| p.cid).collect();
        let mut seen = HashSet::new();
        let members: Vec<&ToPin> = batch
            .iter()
            .filter(|t| !held.contains(&t.cid) && seen.insert(t.cid))
            .collect();
        let member_cids: Vec<Cid> = members.iter().map(|t| t.cid).collect();
        // A root no pin holds may still be in a cover a crash or a refusal left behind:
        // that cover goes first (its other members get pins of their own).
        self.dissolve(&member_cids, &before).await?;
        let rows: Vec<(Cid, &PinReason, Option<SystemTime>)> = batch
            .iter()
            .map(|t| (t.cid, &t.reason, t.expires))
            .collect();
        self.inner.ledger.add_each(&rows)?;
        let after = self.inner.ledger.all()?;
        let mut just_covered = HashSet::new();
        if members.len() >= 2 {
            let done = self.pin_cover(&members, &after).await;
            if let Err(e) = done {
                if let Err(r) = self.restore(&before) {
                    tracing::error!(error = %r, "could not take back the pin ledger's rows");
                }
                return Err(e);
            }
            just_covered.extend(member_cids.iter().copied());
        }
        if let Err(e) = self.sync_covered(&before, &after, &just_covered).await {
            if let Err(r) = self.restore(&before) {
                tracing::error!(error = %r, "could not take back the pin ledger's rows");
            }
            return Err(e);
        }
        Ok(())
    }

    /// Puts a cover of `members` on the proxy's node and pins it in the cluster with what
    /// the ledger's rows (`all`) ask for them together.
    async fn pin_cover(&self, members: &[&ToPin], all: &[Pin]) -> Result<()> {
        let links: Vec<(Cid, u64)> = members.iter().map(|t| (t.cid, t.tsize)).collect();
        let (cover, block) = cover_node(&links);
        self.inner
            .blocks
            .put_blocks(vec![Block {
                cid: cover,
                data: Bytes::from(block.clone()),
            }])
            .await?;
        let list: Vec<Cid> = members.iter().map(|t| t.cid).collect();
        let mine: HashSet<Cid> = list.iter().copied().collect();
        let rows: Vec<&Pin> = all.iter().filter(|p| mine.contains(&p.cid)).collect();
        let Some(mut w) = Wanted::of(&rows, None) else {
            return Ok(());
        };
        w.cover_of = Some(members.len());
        // Recorded first, and kept if the pin fails (a timeout may hide a success): a
        // cover whose members are not pinned is unpinned by the next gc.
        self.inner.ledger.cover(&cover, &block, &list)?;
        self.run(&Step::Pin(cover, w)).await
    }

    /// Dissolves the covers of `members`: their other members still pinned recursively
    /// get cluster pins of their own (from the ledger's rows, `all`), then the covers go.
    async fn dissolve(&self, members: &[Cid], all: &[Pin]) -> Result<()> {
        let plan = self.inner.ledger.dissolution(members)?;
        if plan.covers.is_empty() {
            return Ok(());
        }
        let now = now_secs();
        let rows = by_cid(all);
        for cid in &plan.own {
            if let Some(w) = rows.get(cid).and_then(|r| Wanted::of(r, Some(now))) {
                self.run(&Step::Pin(*cid, w)).await?;
            }
        }
        self.inner.ledger.uncover_members(&plan.own)?;
        self.unpin_covers(&plan.covers).await;
        Ok(())
    }

    /// Dissolves the covers holding members no longer pinned recursively (a crash
    /// between pinning a cover and recording its members' pins, an unpin refused earlier).
    async fn sweep_covers(&self) -> Result<()> {
        let _g = self.inner.pinning.lock().await;
        let stale = self.inner.ledger.stale_members()?;
        let all = self.inner.ledger.all()?;
        self.dissolve(&stale, &all).await
    }

    /// Puts back the cluster pins of `touched` (root, as just asked, as it was).
    async fn undo(&self, touched: &[(Cid, Option<Wanted>, Option<Wanted>)]) {
        for (cid, now, was) in touched.iter().rev() {
            if now == was {
                continue;
            }
            for s in steps(*cid, now.as_ref(), was.as_ref()) {
                if let Err(e) = self.run(&s).await {
                    tracing::warn!(%cid, error = %e, "could not put back a cluster pin");
                }
            }
        }
    }

    /// Takes the ledger back to `before` for every root whose rows differ from it now.
    fn restore(&self, before: &[Pin]) -> Result<()> {
        let now = self.inner.ledger.all()?;
        let (b, a) = (by_cid(before), by_cid(&now));
        let roots: HashSet<Cid> = b.keys().chain(a.keys()).copied().collect();
        for cid in roots {
            let (rb, ra) = (b.get(&cid), a.get(&cid));
            if keys(rb) == keys(ra) {
                continue;
            }
            for p in ra.into_iter().flatten() {
                if !rb.is_some_and(|r| r.iter().any(|q| q.reason == p.reason)) {
                    self.inner.ledger.remove(&cid, &p.reason)?;
                }
            }
            for p in rb.into_iter().flatten() {
                // Upserting keeps the row's creation time when it is still there.
                self.inner.ledger.add(&[cid], &p.reason, p.expires_at)?;
            }
        }
        Ok(())
    }

    /// Changes the ledger with `change`, then the cluster; if the cluster refuses, the
    /// ledger is taken back. Returns what `change` returned.
    async fn change<T>(&self, change: impl FnOnce(&Ledger) -> Result<T>) -> Result<T> {
        let _g = self.inner.pinning.lock().await;
        let before = self.inner.ledger.all()?;
        let out = change(&self.inner.ledger)?;
        let after = self.inner.ledger.all()?;
        if let Err(e) = self.sync(&before, &after).await {
            if let Err(r) = self.restore(&before) {
                tracing::error!(error = %r, "could not take back the pin ledger's rows");
            }
            return Err(e);
        }
        Ok(out)
    }

    /// Re-sends every root's pin to the cluster (after its state was lost or reset);
    /// returns how many roots it pinned.
    pub async fn resync_pins(&self) -> Result<usize> {
        let _g = self.inner.pinning.lock().await;
        let now = now_secs();
        let all = self.inner.ledger.all()?;
        let rows = by_cid(&all);
        let mut covers: BTreeMap<Cid, Vec<&Pin>> = BTreeMap::new();
        let mut covered = HashSet::new();
        for (member, cover) in self.inner.ledger.covered()? {
            covered.insert(member);
            let of = covers.entry(cover).or_default();
            of.extend(rows.get(&member).into_iter().flatten().copied());
        }
        let mut n = 0;
        for (cid, rows) in &rows {
            if covered.contains(cid) {
                continue;
            }
            if let Some(w) = Wanted::of(rows, Some(now)) {
                self.run(&Step::Pin(*cid, w)).await?;
                n += 1;
            }
        }
        for (cover, rows) in covers {
            let members: HashSet<Cid> = rows.iter().map(|p| p.cid).collect();
            // The node may have lost the cover's block with the rest.
            if let Some(block) = self.inner.ledger.cover_block(&cover)? {
                self.inner
                    .blocks
                    .put_blocks(vec![Block {
                        cid: cover,
                        data: Bytes::from(block),
                    }])
                    .await?;
            }
            if let Some(mut w) = Wanted::of(&rows, Some(now)) {
                w.cover_of = Some(members.len());
                self.run(&Step::Pin(cover, w)).await?;
                n += members.len();
            }
        }
        Ok(n)
    }
}

#[async_trait]
impl Store for ClusterStore {
    /// Imports through the proxy without pinning there, then pins the root through the
    /// REST API (the kubo store's grace period keeps gc off the fresh blocks meanwhile).
    async fn put_file(&self, source: FileSource, mut opts: PutOptions) -> Result<ImportedFile> {
        let pin = opts.pin.take();
        let expires = opts.pin_expires_at.take();
        let f = self.inner.blocks.put_file(source, opts).await?;
        match pin {
            Some(reason) if reason.is_recursive() && identity_data(&f.cid).is_none() => {
                let item = ToPin {
                    cid: f.cid,
                    tsize: f.tsize,
                    reason,
                    expires,
                };
                let answer = self
                    .inner
                    .batches
                    .submit(item, 1, |batch: Vec<ToPin>| {
                        let s = self.clone();
                        async move { s.pin_batch(batch).await.map_err(|e| e.to_string()) }
                    })
                    .await;
                let failed = |message: String| Error::Cluster {
                    api: self.inner.rest.clone(),
                    call: "POST /pins (a batch)".into(),
                    message,
                };
                match answer {
                    Some(Ok(())) => {}
                    Some(Err(m)) => return Err(failed(m)),
                    None => return Err(failed("the batch was dropped unsent".into())),
                }
            }
            Some(reason) => self.pin(&f.cid, &reason, expires).await?,
            None => {}
        }
        Ok(f)
    }

    async fn put_blocks(&self, blocks: Vec<Block>) -> Result<BlocksWritten> {
        self.inner.blocks.put_blocks(blocks).await
    }

    async fn import_car(
        &self,
        car: Box<dyn AsyncRead + Send + Unpin>,
        what: String,
        pin: Option<PinReason>,
    ) -> Result<CarImport> {
        let imported = self.inner.blocks.import_car(car, what, None).await?;
        if let Some(reason) = pin {
            self.pin_all(&imported.roots, &reason, None).await?;
        }
        Ok(imported)
    }

    fn put_fanout(&self) -> usize {
        self.inner.blocks.put_fanout()
    }

    async fn get_block(&self, cid: &Cid) -> Result<Option<Bytes>> {
        self.inner.blocks.get_block(cid).await
    }

    async fn has(&self, cid: &Cid) -> Result<bool> {
        self.inner.blocks.has(cid).await
    }

    async fn has_many(&self, cids: &[Cid]) -> Result<Vec<bool>> {
        self.inner.blocks.has_many(cids).await
    }

    async fn read(&self, cid: &Cid, range: Option<Range<u64>>) -> Result<(u64, ByteStream)> {
        self.inner.blocks.read(cid, range).await
    }

    async fn pin_all(
        &self,
        cids: &[Cid],
        reason: &PinReason,
        expires_at: Option<SystemTime>,
    ) -> Result<()> {
        self.change(|l| l.add(cids, reason, expires_at).map(drop))
            .await
    }

    async fn unpin(&self, cid: &Cid, reason: &PinReason) -> Result<bool> {
        self.change(|l| Ok(l.remove(cid, reason)?.1)).await
    }

    async fn unpin_all(&self, reason: &PinReason) -> Result<u64> {
        self.change(|l| Ok(l.remove_reason(reason)?.1)).await
    }

    async fn pins(&self) -> Result<Vec<Pin>> {
        self.inner.ledger.all()
    }

    /// Drops expired pins (on the cluster too), then garbage-collects the cluster's IPFS
    /// daemons through the proxy's `repo/gc`, unless something was written through this
    /// store within `opts.grace` (see [`KuboStore`]'s `gc`).
    async fn gc(&self, opts: GcOptions) -> Result<GcReport> {
        let pins_expired = self.change(|l| Ok(l.expire()?.1)).await?;
        self.sweep_covers().await?;
        let mut report = self.inner.blocks.gc(opts).await?;
        report.pins_expired = pins_expired;
        Ok(report)
    }
}
