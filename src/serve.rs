//! `cidmirror serve`: the HTTP server over this data directory.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use cidmirror_resolver::config::ServeConfig;
use cidmirror_resolver::snapshot::Snapshots;
use cidmirror_resolver::{AppState, serve};
use tokio_util::sync::CancellationToken;

use crate::Context;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// Address and port to listen on (default 127.0.0.1:7878).
    #[arg(long)]
    pub listen: Option<String>,

    /// Connections open at once (default 4096).
    #[arg(long)]
    pub max_connections: Option<usize>,

    /// Time a client has to send its request headers (default 10s).
    #[arg(long)]
    pub header_timeout: Option<String>,

    /// On SIGTERM, how long running downloads may finish (default 30s).
    #[arg(long)]
    pub shutdown_grace: Option<String>,

    /// A publisher: how long a volunteer stays listed after its last heartbeat (default 90s).
    #[arg(long, value_name = "DURATION")]
    pub volunteer_ttl: Option<String>,

    /// A reverse proxy in front of this server (an address or a network such as
    /// 10.0.0.0/8; repeatable): requests from it are rate-limited by the client its
    /// X-Forwarded-For names.
    #[arg(long = "trusted-proxy", value_name = "ADDR")]
    pub trusted_proxies: Vec<String>,

    /// Bytes per second the background scrub re-hashes stored files at, e.g. 16M (the
    /// default); 0 turns it off.
    #[arg(long, value_name = "SIZE")]
    pub scrub_rate: Option<String>,

    /// Every stored file is re-hashed at least this often (default 7d).
    #[arg(long, value_name = "DURATION")]
    pub scrub_every: Option<String>,

    /// Host an IPFS Cluster follower configuration (repeatable): NAME=FILE is served at
    /// /cluster/NAME/service.json for `ipfs-cluster-follow NAME run --init URL`.
    /// `cidmirror cluster follower-config` writes the file.
    #[arg(long = "cluster-config", value_name = "NAME=FILE")]
    pub cluster_configs: Vec<String>,
}

impl ServeArgs {
    pub fn config(&self) -> ServeConfig {
        ServeConfig {
            listen: self.listen.clone(),
            max_connections: self.max_connections,
            header_timeout: self.header_timeout.clone(),
            shutdown_grace: self.shutdown_grace.clone(),
            volunteer_ttl: self.volunteer_ttl.clone(),
            trusted_proxies: self.trusted_proxies.clone(),
            scrub_rate: self.scrub_rate.clone(),
            scrub_every: self.scrub_every.clone(),
            cluster_configs: self.cluster_configs.clone(),
            ..ServeConfig::default()
        }
    }
}

/// Options of a follower gateway (`serve` only).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct FollowArgs {
    /// Follow this gateway (a publisher's or another follower's) instead of serving a local
    /// publisher's snapshots: snapshots arrive by its feed, verified with --publisher-key.
    #[arg(long, value_name = "URL")]
    pub follow: Option<String>,

    /// The publisher's public key, 64 hex digits (`cidmirror key show` on the publisher).
    #[arg(long, value_name = "HEX")]
    pub publisher_key: Option<String>,

    /// Another trustless gateway to fetch blocks from (repeatable): followers, volunteers,
    /// a local Kubo gateway.
    #[arg(long = "source", value_name = "URL")]
    pub sources: Vec<String>,

    /// A plain HTTP mirror in pacman's layout, the last resort for package files, checked
    /// against the snapshot's SHA-256 (repeatable).
    #[arg(long = "fallback-mirror", value_name = "URL")]
    pub fallback_mirrors: Vec<String>,

    /// Bytes of files the follower keeps, e.g. 20G (default 20G; `none` for no limit).
    #[arg(long, value_name = "SIZE")]
    pub cache_budget: Option<String>,

    /// How a follower refreshes: delta (default) or walk (fetch every listing block not held).
    #[arg(long, value_name = "MODE")]
    pub refresh: Option<String>,

    /// How often a follower polls while the feed is down (default 5s).
    #[arg(long, value_name = "DURATION")]
    pub poll_every: Option<String>,

    /// Do not fetch from the volunteers the followed publisher lists.
    #[arg(long)]
    pub no_volunteers: bool,

    /// This gateway's public URL (never taken as a source when a volunteer list names it).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
}

impl FollowArgs {
    /// `cfg` with every option given here set.
    fn apply(&self, cfg: ServeConfig) -> ServeConfig {
        ServeConfig {
            follow: self.follow.clone(),
            publisher_key: self.publisher_key.clone(),
            sources: self.sources.clone(),
            fallback_mirrors: self.fallback_mirrors.clone(),
            cache_budget: self.cache_budget.clone(),
            refresh: self.refresh.clone(),
            poll_every: self.poll_every.clone(),
            use_volunteers: self.no_volunteers.then_some(false).or(cfg.use_volunteers),
            public_url: self.public_url.clone().or(cfg.public_url),
            ..cfg
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    serve: ServeArgs,

    #[command(flatten)]
    follow: FollowArgs,

    /// Settings file (TOML; the server reads its [serve] section).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// The server's state over the data directory: the embedded store and the publisher's
/// snapshots, followed by polling, and the volunteer tracker configured in `cfg`.
pub async fn state(
    ctx: &Context,
    cfg: &ServeConfig,
    cancel: &CancellationToken,
) -> anyhow::Result<AppState> {
    warn_other_stores(ctx);
    let store = ctx.open_store()?;
    let db = cidmirror_ingest::publish::open_state(&ctx.data_dir)?;
    let snapshots = Snapshots::from_db(Arc::new(db));
    snapshots.refresh().await?;
    snapshots.spawn_poller(Duration::from_millis(500), cancel.clone());
    let tracker = cfg.tracker().map_err(anyhow::Error::msg)?;
    spawn_scrub(ctx, &store, cfg, true, cancel)?;
    Ok(AppState::publisher(store, snapshots, tracker))
}

/// `serve` reads the data directory's embedded store only. A publisher that mirrors into
/// a Kubo node or a cluster (`--store`, whose pin ledger lives in `<data>/kubo` or
/// `<data>/cluster`) gets its feed and lookups served from here, but the blocks are on the
/// nodes: say so, with what followers then need.
fn warn_other_stores(ctx: &Context) {
    let others: Vec<&str> = ["kubo", "cluster"]
        .into_iter()
        .filter(|d| ctx.data_dir.join(d).is_dir())
        .collect();
    let named = ctx
        .store
        .as_ref()
        .filter(|s| !matches!(s, crate::stores::StoreSpec::Embedded))
        .map(|s| s.to_string());
    if others.is_empty() && named.is_none() {
        return;
    }
    let what = named.unwrap_or_else(|| others.join(" and "));
    let msg = format!(
        "serve reads this data directory's embedded store only, not the {what} store: the \
         signed feed and lookups are served, but blocks published into {what} are not; \
         follower gateways need that store's IPFS gateways as --source"
    );
    tracing::warn!("{msg}");
    eprintln!("warning: {msg}");
}

/// Starts the store's scrub: on a publisher's data directory it repairs from the upstream
/// of the current snapshot; a follower fetches a lost file again when it is asked for.
pub fn spawn_scrub(
    ctx: &Context,
    store: &cidmirror_store::EmbeddedStore,
    cfg: &ServeConfig,
    publisher: bool,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let scrub = cfg.scrub().map_err(anyhow::Error::msg)?;
    let repair: Option<Arc<dyn cidmirror_store::scrub::Repair>> = if publisher {
        cidmirror_ingest::repair::UpstreamRepair::open(&ctx.data_dir, Default::default())?
            .map(|r| Arc::new(r) as Arc<dyn cidmirror_store::scrub::Repair>)
    } else {
        None
    };
    tokio::spawn(cidmirror_store::scrub::run(
        store.clone(),
        scrub,
        repair,
        cancel.clone(),
    ));
    Ok(())
}

/// Connections the kernel queues before `accept`: the default of 128 overflows when
/// many clients connect at once (each overflowed one waits a second to retry).
const LISTEN_BACKLOG: u32 = 1024;

fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Binds and serves until `cancel`.
pub async fn run_server(
    state: AppState,
    cfg: &ServeConfig,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let (listener, limits) = bind(cfg)?;
    serve_on(listener, limits, state, cancel).await
}

/// Binds the configured address (port 0: any free port; `local_addr` says which).
pub fn bind(
    cfg: &ServeConfig,
) -> anyhow::Result<(tokio::net::TcpListener, cidmirror_resolver::Limits)> {
    let addr = cfg.listen().map_err(anyhow::Error::msg)?;
    let mut limits = cfg.limits().map_err(anyhow::Error::msg)?;
    fit_connections_to_fd_limit(&mut limits);
    let listener = listen(addr).with_context(|| format!("listening on {addr}"))?;
    Ok((listener, limits))
}

/// Serves on a bound listener until `cancel`.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    limits: cidmirror_resolver::Limits,
    state: AppState,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    tracing::info!("serving on http://{local}/");
    eprintln!("serving on http://{local}/");
    serve(
        listener,
        state,
        limits,
        async move { cancel.cancelled().await },
    )
    .await
    .context("serving")?;
    Ok(())
}

/// File descriptors kept back from connections: the store's files, the database, logs.
const FD_RESERVE: u64 = 256;

/// Raises this process's soft limit on open files to its hard limit (many systems start
/// programs at 1024, fewer than the default connection cap), then lowers the connection
/// cap if it still would not fit, so that running out of descriptors never stops `accept`
/// or the store's reads.
fn fit_connections_to_fd_limit(limits: &mut cidmirror_resolver::Limits) {
    let fds = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("cannot read or raise the open-files limit: {e}");
            return;
        }
    };
    let room = usize::try_from(fds.saturating_sub(FD_RESERVE).max(16)).unwrap_or(usize::MAX);
    if limits.max_connections > room {
        tracing::warn!(
            "open-files limit {fds}: serving at most {room} connections instead of {}",
            limits.max_connections
        );
        limits.max_connections = room;
    }
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let settings = crate::settings::load(args.config.as_deref())?;
    let cfg = settings
        .serve
        .overridden_by(args.follow.apply(args.serve.config()));
    let cancel = CancellationToken::new();
    let follow = cfg
        .follow(ctx.data_dir.join("follow"))
        .map_err(anyhow::Error::msg)?;
    // Checked before anything starts: a refused file stops serve with nothing running.
    let clusters = cidmirror_resolver::cluster::FollowerConfigs::load(&cfg.cluster_configs)
        .map_err(anyhow::Error::msg)?;
    let state = match follow {
        Some(f) => {
            let store = ctx.open_store()?;
            spawn_scrub(ctx, &store, &cfg, false, &cancel)?;
            tracing::info!("following {}", f.follow);
            let follower = cidmirror_resolver::follow::Follower::new(f, store)?;
            follower.spawn(cancel.clone());
            follower.app_state()
        }
        None => state(ctx, &cfg, &cancel).await?,
    };
    for name in clusters.names() {
        tracing::info!(
            "hosting the follower configuration of cluster {name} at /cluster/{name}/service.json"
        );
    }
    state
        .host_cluster_configs(clusters)
        .map_err(anyhow::Error::msg)?;
    let stop = cancel.clone();
    tokio::spawn(async move {
        crate::output::shutdown_signal().await;
        tracing::info!("stopping: letting running downloads finish");
        stop.cancel();
    });
    run_server(state, &cfg, cancel).await?;
    Ok(ExitCode::SUCCESS)
}
