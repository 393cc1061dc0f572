//! `cidmirror pin --follow URL --publisher-key KEY --budget SIZE`: a volunteer.
//!
//! Wires three parts together (the binary is the only place that may see all of them):
//! a follower gateway (resolver) that follows the publisher's feed, verifies snapshots and
//! serves what this machine holds to anyone (`/ipfs/`, mirror paths); the pinner's policy
//! (pinner crate: rendezvous assignment over the live volunteers, budget, retention); and a
//! heartbeat to the publisher's volunteer list, which is how the volunteers learn of each
//! other and how followers learn of the volunteers.
//!
//! Every round (after each snapshot, each change of the volunteer set, and every
//! `--replan-every`): unpin what the plan no longer holds (lowest scores first) and collect
//! it, then fetch (verified, through the follower's transfers) what it lacks, in priority
//! order, each only if it fits the budget next to what is on disk already.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use cidmirror_listing::layout;
use cidmirror_pinner::{Announce, Expiry, Item, Kind, PinStatus, Policy, Seen, VolunteerList};
use cidmirror_resolver::follow::transfer::{Progress, Want};
use cidmirror_resolver::follow::view::View;
use cidmirror_resolver::follow::{FollowConfig, Follower};
use cidmirror_store::{EmbeddedStore, Expected, GcOptions, PinReason, Store, unixfs};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::Context;

/// Options of `cidmirror pin` when it runs as a volunteer.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct VolunteerArgs {
    /// The publisher (or a follower of it) to follow: its feed, listing and volunteer list.
    #[arg(long, value_name = "URL")]
    pub follow: Option<String>,

    /// The publisher's public key, 64 hex digits (`cidmirror key show` on the publisher).
    #[arg(long, value_name = "HEX")]
    pub publisher_key: Option<String>,

    /// Disk this volunteer gives, e.g. 50G: what it pins never exceeds it.
    #[arg(long, value_name = "SIZE")]
    pub budget: Option<String>,

    /// Only packages of these repositories (repeat; default all).
    #[arg(long = "repo", value_name = "REPO")]
    pub repos: Vec<String>,

    /// How many volunteers hold each package (rendezvous hashing over the live ones).
    #[arg(long, default_value_t = 2)]
    pub replication: usize,

    /// Days a package stays pinned after it left upstream (fractions allowed).
    #[arg(long, default_value_t = 14.0)]
    pub keep_days: f64,

    /// This volunteer's id in the list (default: a random one, kept in the data directory).
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,

    /// The URL others reach this volunteer's gateway at (default: http://LISTEN/).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,

    /// Address and port to serve on (default 127.0.0.1:7879).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// Time between heartbeats to the publisher's volunteer list.
    #[arg(long, default_value = "20s", value_parser = crate::output::parse_duration)]
    pub heartbeat: Duration,

    /// Files fetched at once while filling the share.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub fetches: u16,

    /// Time between two plans when nothing else triggers one.
    #[arg(long, default_value = "60s", value_parser = crate::output::parse_duration)]
    pub replan_every: Duration,
}

/// The reason of a volunteer's pins.
fn volunteer_reason() -> PinReason {
    "volunteer"
        .parse()
        .unwrap_or_else(|_| PinReason::default_reason())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Where the volunteer keeps its own state.
fn pinner_dir(ctx: &Context) -> PathBuf {
    ctx.data_dir.join("pinner")
}

/// `cidmirror pin status`.
pub fn status(ctx: &Context, json: bool) -> anyhow::Result<ExitCode> {
    let p = pinner_dir(ctx).join("status.json");
    let text = std::fs::read(&p).with_context(|| {
        format!(
            "{}: no volunteer status (is `cidmirror pin --follow ...` running on this data directory?)",
            p.display()
        )
    })?;
    let st: PinStatus =
        serde_json::from_slice(&text).with_context(|| format!("{}", p.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        // Reasons and CIDs are read back from a file: escaped on their way to the terminal.
        for line in st.render_text().lines() {
            println!("{}", cidmirror_schema::text::printable(line));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A volunteer's id: given, or kept from an earlier run, or new.
fn load_id(dir: &Path, given: Option<&str>) -> anyhow::Result<String> {
    let p = dir.join("id");
    if let Some(id) = given {
        cidmirror_pinner::volunteers::validate_id(id)?;
        std::fs::write(&p, id).with_context(|| format!("{}", p.display()))?;
        return Ok(id.to_string());
    }
    match std::fs::read_to_string(&p) {
        Ok(s) if cidmirror_pinner::volunteers::validate_id(s.trim()).is_ok() => {
            Ok(s.trim().to_string())
        }
        _ => {
            let id = cidmirror_pinner::volunteers::generate_id();
            std::fs::write(&p, &id).with_context(|| format!("{}", p.display()))?;
            Ok(id)
        }
    }
}

/// Runs the volunteer until SIGINT/SIGTERM.
pub async fn run(ctx: &Context, args: VolunteerArgs) -> anyhow::Result<ExitCode> {
    let follow = args
        .follow
        .as_deref()
        .context("--follow URL is needed to volunteer")?;
    let follow: url::Url = follow
        .parse()
        .with_context(|| format!("--follow {follow}: not a URL"))?;
    let key = args
        .publisher_key
        .as_deref()
        .context("--publisher-key HEX is needed with --follow")?;
    let budget = args
        .budget
        .as_deref()
        .context("--budget SIZE is needed with --follow (e.g. --budget 50G)")?;
    let budget = cidmirror_pinner::parse_size(budget).context("--budget")?;
    anyhow::ensure!(args.replication >= 1, "--replication must be at least 1");
    anyhow::ensure!(
        args.keep_days.is_finite() && args.keep_days >= 0.0,
        "--keep-days must be a number of days, 0 or more"
    );
    let dir = pinner_dir(ctx);
    std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    let id = load_id(&dir, args.id.as_deref())?;

    // The follower (verification, serving) always runs on the embedded store; with
    // `--store kubo=...` the volunteer's share is pinned in that node instead, and the
    // node's own gateway is what others should fetch it from (`--public-url`).
    let kubo = match ctx.open(None).await? {
        crate::stores::Opened::Embedded(_) => None,
        crate::stores::Opened::Kubo(k) => {
            anyhow::ensure!(
                args.public_url.is_some(),
                "pin --follow --store kubo=...: give --public-url, the node's gateway that \
                 others fetch the pinned share from"
            );
            Some(k)
        }
        crate::stores::Opened::Cluster(_) => {
            anyhow::bail!("pin --follow pins in the embedded store or a Kubo node, not a cluster")
        }
    };
    let store = ctx.open_store()?;
    let serve_cfg = cidmirror_resolver::config::ServeConfig {
        listen: Some(
            args.listen
                .clone()
                .unwrap_or_else(|| "127.0.0.1:7879".into()),
        ),
        ..Default::default()
    };
    let (listener, limits) = crate::serve::bind(&serve_cfg)?;
    let local = listener.local_addr()?;
    let public = match &args.public_url {
        Some(u) => u.clone(),
        None => format!("http://{local}/"),
    };
    let public_url = cidmirror_pinner::volunteers::validate_url(&public).context("--public-url")?;
    eprintln!("volunteer {id}: budget {budget} bytes, announced as {public}");

    let mut cfg = FollowConfig::new(follow.clone(), key, ctx.data_dir.join("follow"))?;
    // The pinner decides what stays: nothing is cached beyond its plan.
    cfg.cache_budget = None;
    // Other volunteers are sources; this one is not its own.
    cfg.own_urls.push(public_url);
    cfg.own_urls.push(format!("http://{local}/").parse()?);
    let cancel = CancellationToken::new();
    let follower = Follower::new(cfg, store.clone())?;
    follower.spawn(cancel.clone());

    let stop = cancel.clone();
    tokio::spawn(async move {
        crate::output::shutdown_signal().await;
        tracing::info!("stopping");
        stop.cancel();
    });
    let server = tokio::spawn(crate::serve::serve_on(
        listener,
        limits,
        follower.app_state(),
        cancel.clone(),
    ));

    let v = Arc::new(Volunteer {
        id,
        public,
        budget,
        repos: args.repos.iter().cloned().collect(),
        replication: args.replication,
        fetches: usize::from(args.fetches),
        keep_secs: (args.keep_days * 86_400.0) as i64,
        store,
        kubo,
        follower,
        dir,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        tracker: follow.join("api/v1/volunteers")?,
        volunteers: tokio::sync::watch::Sender::new(Vec::new()),
    });
    let hb = v.clone();
    let hb_cancel = cancel.clone();
    let every = args.heartbeat;
    tokio::spawn(async move { hb.heartbeats(every, hb_cancel).await });
    v.plans(args.replan_every, cancel.clone()).await;
    cancel.cancel();
    server
        .await
        .map_err(|e| anyhow::anyhow!("server task: {e}"))??;
    Ok(ExitCode::SUCCESS)
}

struct Volunteer {
    id: String,
    public: String,
    budget: u64,
    repos: BTreeSet<String>,
    replication: usize,
    /// Files fetched at once.
    fetches: usize,
    keep_secs: i64,
    store: EmbeddedStore,
    /// Where the share is pinned, if not in `store`.
    kubo: Option<cidmirror_store::KuboStore>,
    follower: Arc<Follower>,
    dir: PathBuf,
    http: reqwest::Client,
    tracker: url::Url,
    /// The live volunteers' ids as the publisher last listed them.
    volunteers: tokio::sync::watch::Sender<Vec<String>>,
}

impl Volunteer {
    /// Announces this volunteer every `every`; each answer is the live list.
    async fn heartbeats(&self, every: Duration, cancel: CancellationToken) {
        loop {
            match self.announce().await {
                Ok(ids) => {
                    self.volunteers.send_if_modified(|v| {
                        let changed = *v != ids;
                        *v = ids;
                        changed
                    });
                }
                Err(e) => tracing::warn!("announcing to {}: {e:#}", self.tracker),
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = cancel.cancelled() => return,
            }
        }
    }

    async fn announce(&self) -> anyhow::Result<Vec<String>> {
        let body = Announce {
            id: self.id.clone(),
            url: self.public.clone(),
            budget: Some(self.budget),
        };
        let resp = self
            .http
            .post(self.tracker.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&body)?)
            .send()
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            anyhow::bail!("{status}: {}", text.trim());
        }
        let list: VolunteerList = serde_json::from_slice(&resp.bytes().await?)
            .context("the publisher's volunteer list")?;
        let mut ids = list.ids();
        if !ids.contains(&self.id) {
            ids.push(self.id.clone());
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Plans and applies plans until `cancel`.
    async fn plans(&self, every: Duration, cancel: CancellationToken) {
        let mut snapshots = self.follower.snapshots().subscribe();
        let mut volunteers = self.volunteers.subscribe();
        let mut seen = self.load_seen();
        loop {
            if let Err(e) = self.round(&mut seen, &cancel).await {
                tracing::warn!("pinning round: {e:#}");
            }
            tokio::select! {
                _ = snapshots.changed() => {}
                _ = volunteers.changed() => {}
                () = tokio::time::sleep(every) => {}
                () = cancel.cancelled() => return,
            }
        }
    }

    fn load_seen(&self) -> Seen {
        let p = self.dir.join("seen.json");
        std::fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save_seen(&self, seen: &Seen) -> anyhow::Result<()> {
        write_atomic(&self.dir.join("seen.json"), &serde_json::to_vec(seen)?)
    }

    /// The items of a snapshot: its listing files (kept whatever the plan) and the package
    /// files (and signatures) of the chosen repositories.
    fn items(&self, view: &View) -> (Vec<Item>, BTreeMap<cidmirror_store::Cid, Want>) {
        let params = view
            .manifest()
            .profile()
            .map(|p| p.params())
            .unwrap_or_default();
        let mut items = Vec::new();
        let mut wants = BTreeMap::new();
        for it in view.listing.items() {
            if let Some((_, desc)) = &it.package {
                items.push(Item {
                    cid: desc.cid,
                    size: desc.tsize,
                    kind: Kind::Listing,
                });
                continue;
            }
            // Databases and their signatures.
            for f in std::iter::once(&it.file).chain(&it.sig) {
                items.push(Item {
                    cid: f.cid,
                    size: f.tsize,
                    kind: Kind::Listing,
                });
            }
        }
        for it in view.listing.items().filter(|i| i.package.is_some()) {
            if !self.repos.is_empty() && !self.repos.contains(&it.repo) {
                continue;
            }
            let path = format!("{}/{}", layout::os_dir(&it.repo, &it.arch), it.filename);
            for (f, path) in std::iter::once((&it.file, path.clone()))
                .chain(it.sig.iter().map(|s| (s, format!("{path}.sig"))))
            {
                items.push(Item {
                    cid: f.cid,
                    size: f.size,
                    kind: Kind::Package,
                });
                wants.insert(
                    f.cid,
                    Want {
                        cid: f.cid,
                        expected: Some(Expected {
                            size: f.size,
                            sha256: f.sha256,
                        }),
                        path,
                        params,
                    },
                );
            }
        }
        (items, wants)
    }

    /// The store that holds the share.
    fn share_store(&self) -> Arc<dyn Store> {
        match &self.kubo {
            Some(k) => Arc::new(k.clone()),
            None => Arc::new(self.store.clone()),
        }
    }

    /// Bytes held: the embedded store's files (on disk), plus the share pinned in a Kubo
    /// node (by the sizes the snapshots give).
    async fn used(&self, seen: &Seen) -> anyhow::Result<u64> {
        let mut used = self.store.stats()?.file_bytes;
        if let Some(k) = &self.kubo {
            let reason = volunteer_reason();
            for p in k.pins().await?.iter().filter(|p| p.reason == reason) {
                used += seen.get(&p.cid).map_or(0, |i| i.size);
            }
        }
        Ok(used)
    }

    async fn round(&self, seen: &mut Seen, cancel: &CancellationToken) -> anyhow::Result<()> {
        let Some(view) = self
            .follower
            .snapshots()
            .current()
            .and_then(|c| c.follow.clone())
        else {
            return Ok(());
        };
        let now = unix_now();
        let (items, mut wants) = self.items(&view);
        seen.observe(&items, now);
        seen.forget_expired(now, self.keep_secs);
        self.save_seen(seen)?;
        let retained = seen.retained(now, self.keep_secs);
        let ids = self.volunteers.borrow().clone();
        let ids = if ids.is_empty() {
            vec![self.id.clone()]
        } else {
            ids
        };
        let policy = Policy::new(&self.id, &ids, self.replication, self.budget)?;
        let plan = policy.plan(&retained);
        let reason = volunteer_reason();
        let share = self.share_store();
        let pins = share.pins().await?;
        let pinned: Vec<Item> = pins
            .iter()
            .filter(|p| p.reason == reason)
            .filter_map(|p| {
                seen.get(&p.cid).or(Some(Item {
                    cid: p.cid,
                    size: 0,
                    kind: Kind::Package,
                }))
            })
            .collect();
        let changes = policy.changes(&plan, &pinned);

        // Let go first, so what comes in fits.
        let mut dropped = 0u64;
        for it in &changes.unpin {
            if share.unpin(&it.cid, &reason).await? {
                dropped += 1;
            }
        }
        if dropped > 0
            && let Some(k) = &self.kubo
        {
            k.gc(GcOptions {
                grace: Duration::ZERO,
            })
            .await?;
        }
        let cache = cidmirror_resolver::follow::transfer::cache_reason();
        let cached = self.store.unpin_all(&cache).await?;
        if dropped + cached > 0 {
            let r = self
                .store
                .gc(GcOptions {
                    grace: Duration::ZERO,
                })
                .await?;
            tracing::info!(
                "unpinned {dropped} files (and {cached} cached ones), freed {} bytes",
                r.bytes_freed
            );
        }
        self.write_status(&plan.assigned_bytes, seen).await?;

        // Up to `fetches` at once. Never over the budget: before each fetch, what is on
        // disk plus the sizes of the fetches in flight (a file already on disk but not yet
        // reaped counts twice, which errs on the safe side) must leave room for it; if not,
        // the fetches in flight finish first and it is checked again.
        let mut copied = 0u64;
        let mut reserved = 0u64;
        let mut inflight = futures::stream::FuturesUnordered::new();
        let reason = &reason;
        let mut reap = |(size, path, result): (u64, String, anyhow::Result<()>),
                        reserved: &mut u64| {
            *reserved -= size;
            match result {
                Ok(()) => copied += u64::from(self.kubo.is_some()),
                Err(e) => tracing::warn!("{path}: {e:#}"),
            }
        };
        for it in changes.fetch.iter().filter(|i| i.kind == Kind::Package) {
            if cancel.is_cancelled() {
                break;
            }
            let Some(want) = wants.remove(&it.cid) else {
                // A package of an older snapshot, still in its grace period: whoever holds
                // it keeps it; a volunteer does not fetch what left upstream.
                continue;
            };
            while inflight.len() >= self.fetches {
                if let Some(done) = inflight.next().await {
                    reap(done, &mut reserved);
                }
            }
            loop {
                let used = self.used(seen).await?;
                if used.saturating_add(reserved).saturating_add(it.size) <= self.budget {
                    reserved += it.size;
                    let size = it.size;
                    inflight.push(async move {
                        let path = want.path.clone();
                        (size, path, self.fetch(want, reason).await)
                    });
                    break;
                }
                match inflight.next().await {
                    Some(done) => reap(done, &mut reserved),
                    None => {
                        tracing::debug!(
                            "{}: does not fit ({used} of {} used)",
                            want.path,
                            self.budget
                        );
                        break;
                    }
                }
            }
        }
        while let Some(done) = inflight.next().await {
            reap(done, &mut reserved);
        }
        if copied > 0 {
            // The files went on into the Kubo node: their embedded copies go now.
            self.store
                .gc(GcOptions {
                    grace: Duration::ZERO,
                })
                .await?;
        }
        self.write_status(&plan.assigned_bytes, seen).await?;
        Ok(())
    }

    /// Fetches one file (verified) unless held, and pins it for the volunteer.
    async fn fetch(&self, want: Want, reason: &PinReason) -> anyhow::Result<()> {
        let cid = want.cid;
        if !(self.store.has(&cid).await? && unixfs::complete(&self.store, &cid).await?) {
            let t = self
                .follower
                .transfers()
                .get(want)
                .map_err(anyhow::Error::msg)?;
            let mut rx = t.subscribe();
            loop {
                match &*rx.borrow_and_update() {
                    Progress::Done { .. } => break,
                    Progress::Failed(e) => anyhow::bail!("{e}"),
                    Progress::Running { .. } => {}
                }
                if rx.changed().await.is_err() {
                    break;
                }
            }
            anyhow::ensure!(
                unixfs::complete(&self.store, &cid).await?,
                "fetched but not kept"
            );
        }
        match &self.kubo {
            None => self.store.pin(&cid, reason, None).await?,
            Some(k) => {
                // Into the node as a CAR of the verified blocks, pinned there; the embedded
                // copy goes with the next round's collection.
                let tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
                let mut f = tokio::fs::File::create(tmp.path()).await?;
                cidmirror_store::export::export_car(&self.store, &cid, &mut f).await?;
                tokio::io::AsyncWriteExt::flush(&mut f).await?;
                let f = tokio::fs::File::open(tmp.path()).await?;
                k.import_car(Box::new(f), cid.to_string(), Some(reason.clone()))
                    .await?;
            }
        }
        self.store
            .unpin(&cid, &cidmirror_resolver::follow::transfer::cache_reason())
            .await?;
        Ok(())
    }

    async fn write_status(&self, assigned: &u64, seen: &Seen) -> anyhow::Result<()> {
        let mut pins = self.store.pins().await?;
        if let Some(k) = &self.kubo {
            pins.extend(k.pins().await?);
        }
        let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
        for p in &pins {
            *by_reason.entry(p.reason.to_string()).or_default() += 1;
        }
        let reason = volunteer_reason();
        let mut held = 0u64;
        for p in pins.iter().filter(|p| p.reason == reason) {
            held += seen.get(&p.cid).map_or(0, |i| i.size);
        }
        let next_expiries = seen
            .expiries(self.keep_secs)
            .into_iter()
            .take(10)
            .map(|(cid, at)| Expiry {
                cid: cid.to_string(),
                reason: reason.to_string(),
                at,
            })
            .collect();
        let st = PinStatus {
            budget: self.budget,
            used: self.used(seen).await?,
            assigned: *assigned,
            share: PinStatus::share_of(held, *assigned),
            pinned: by_reason,
            next_expiries,
            volunteers: self.volunteers.borrow().len().max(1),
            replication: self.replication,
            last_plan_at: Some(unix_now()),
        };
        write_atomic(
            &self.dir.join("status.json"),
            &serde_json::to_vec_pretty(&st)?,
        )
    }
}

/// Writes `bytes` to `path` through a temp file and a rename: readers never see half.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).with_context(|| format!("{}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, bytes).with_context(|| format!("{}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.error))?;
    Ok(())
}
