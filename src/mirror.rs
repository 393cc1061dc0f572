//! `cidmirror mirror`: follow an upstream and publish snapshots.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use cidmirror_ingest::config::{MirrorConfig, MirrorOptions};
use cidmirror_ingest::publish::{Outcome, Published, Publisher, SyncProgress};
use cidmirror_schema::text::printable;
use cidmirror_store::Store;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::Context;

/// Exit status when the upstream had nothing new (`--once`).
pub const EXIT_UNCHANGED: u8 = 3;
/// Exit status when the sanity gate held the new upstream state back (`--once`).
pub const EXIT_HELD: u8 = 4;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The upstream mirror: http(s):// URL of its root, file:// URL or a directory.
    #[arg(long)]
    upstream: Option<String>,

    /// A repository to follow (repeat: --repo core --repo extra).
    #[arg(long = "repo", value_name = "REPO")]
    repos: Vec<String>,

    /// An architecture to follow (repeat; default x86_64).
    #[arg(long = "arch", value_name = "ARCH")]
    arches: Vec<String>,

    /// Sync once and exit: 0 published, 3 nothing new, 4 held by the sanity gate, 1 failed.
    #[arg(long, conflicts_with = "interval")]
    once: bool,

    /// Time between syncs (default 5m); failures retry sooner, with backoff.
    #[arg(long)]
    interval: Option<String>,

    /// Downloads at once (default 4).
    #[arg(long)]
    concurrency: Option<usize>,

    /// Settings file (TOML); flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Import profile (default unixfs-v1-2025); fixed once the publisher has published.
    #[arg(long)]
    profile: Option<String>,

    /// Snapshots kept pinned (default 10).
    #[arg(long)]
    keep_snapshots: Option<u32>,

    /// How long files that left upstream stay pinned (default 14days).
    #[arg(long)]
    grace: Option<String>,

    /// A transfer that receives nothing for this long fails (default 30s).
    #[arg(long)]
    stall_timeout: Option<String>,

    /// The sanity gate: a new upstream state in which a repository loses more than this
    /// share of its packages (or all of them) is held, not published (default 25%).
    #[arg(long, value_name = "SHARE")]
    max_shrink: Option<String>,

    /// Publish a held shrink once this many consecutive syncs have seen one (default 12).
    #[arg(long, value_name = "N")]
    shrink_confirm_syncs: Option<u32>,

    /// Publish the shrink the sanity gate holds now (the first sync of this run only).
    #[arg(long)]
    accept_shrink: bool,

    /// An AUR package base whose .SRCINFO and verified sources every snapshot carries
    /// (aur/<pkgbase>/, by-sha256/, by-sha512/, by-b2/); repeatable.
    #[arg(long = "aur-package", value_name = "PKGBASE")]
    aur_packages: Vec<String>,

    /// A file of AUR package bases, one per line (`#` comments).
    #[arg(long = "aur-packages", value_name = "FILE")]
    aur_packages_file: Option<String>,

    /// Where the package bases' git repositories are: a URL (<url>/<pkgbase>.git; default
    /// https://aur.archlinux.org/) or a directory (<dir>/<pkgbase>).
    #[arg(long, value_name = "URL|DIR")]
    aur_repos: Option<String>,

    /// An address AUR sources may be fetched from although it is loopback, private or
    /// link-local (all such addresses are refused otherwise); repeatable.
    #[arg(long = "aur-allow-address", value_name = "IP")]
    aur_allow_addresses: Vec<String>,

    /// No progress bars.
    #[arg(long)]
    no_progress: bool,

    /// Also serve the snapshots over HTTP, in this process (like `cidmirror serve`).
    #[arg(long, conflicts_with = "once")]
    serve: bool,

    /// With a kubo store: the node's key to publish each snapshot root under with IPNS
    /// (created if missing), so plain IPFS users can follow /ipns/<name>/.
    #[arg(long, default_value = "cidmirror", value_name = "KEY")]
    ipns_key: String,

    /// With a kubo store: the TTL of the IPNS record (short: a new snapshot should reach
    /// gateways quickly).
    #[arg(long, default_value = "1m", value_parser = crate::output::parse_duration)]
    ipns_ttl: Duration,

    /// With a kubo store: how long an IPNS record stays valid. Resolvers drop a record
    /// older than this, so it is renewed every --ipns-republish while the mirror runs.
    #[arg(long, default_value = "48h", value_parser = crate::output::parse_duration)]
    ipns_lifetime: Duration,

    /// With a kubo store: how often the running mirror signs the current root's IPNS record
    /// again, new snapshot or not (a quiet upstream must not let the name lapse). A failed
    /// publish is retried sooner, with backoff.
    #[arg(long, default_value = "4h", value_parser = crate::output::parse_duration)]
    ipns_republish: Duration,

    /// With a kubo store: do not publish IPNS records.
    #[arg(long)]
    no_ipns: bool,

    #[command(flatten)]
    serve_args: crate::serve::ServeArgs,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    if args.ipns_republish >= args.ipns_lifetime {
        anyhow::bail!(
            "--ipns-republish {} must be shorter than --ipns-lifetime {}, or the record \
             lapses between renewals",
            humantime::format_duration(args.ipns_republish),
            humantime::format_duration(args.ipns_lifetime)
        );
    }
    let settings = crate::settings::load(args.config.as_deref())?;
    let file = settings.mirror;
    let flags = MirrorConfig {
        upstream: args.upstream,
        repos: args.repos,
        arches: args.arches,
        profile: args.profile,
        interval: args.interval,
        concurrency: args.concurrency,
        keep_snapshots: args.keep_snapshots,
        grace: args.grace,
        stall_timeout: args.stall_timeout,
        max_shrink: args.max_shrink,
        shrink_confirm_syncs: args.shrink_confirm_syncs,
        aur_packages: args.aur_packages,
        aur_packages_file: args.aur_packages_file,
        aur_repos: args.aur_repos,
        aur_allow_addresses: args.aur_allow_addresses,
    };
    let mut opts = MirrorOptions::from_config(file.overridden_by(flags))?;
    opts.gate.accept = args.accept_shrink;
    let opened = ctx.open(settings.store.as_ref()).await?;
    if args.serve {
        opened.embedded("mirror --serve")?;
    }
    let store: Arc<dyn Store> = opened.as_dyn();
    let ipns = match &opened {
        crate::stores::Opened::Kubo(k) if !args.no_ipns => Some(Ipns {
            store: k.clone(),
            key: args.ipns_key.clone(),
            ttl: args.ipns_ttl,
            lifetime: args.ipns_lifetime,
        }),
        _ => None,
    };
    let progress: Arc<dyn SyncProgress> =
        if args.no_progress || !crate::output::stderr_is_terminal() {
            Arc::new(LogProgress)
        } else {
            Arc::new(BarProgress::new())
        };
    let publisher = Publisher::open(&ctx.data_dir, store, opts, progress)?;
    if args.once {
        let outcome = publisher.sync_once().await?;
        let code = report(&outcome);
        if let Some(ipns) = &ipns {
            // Nothing new still renews the current root's record, so a `--once` from cron
            // keeps the name alive through a quiet upstream.
            let target = match &outcome {
                Outcome::Published(p) => Some((p.seq, p.root)),
                Outcome::Unchanged { .. } => publisher.current()?.map(|c| (c.seq, c.root)),
                Outcome::Failed { .. } | Outcome::Held { .. } => None,
            };
            if let Some((seq, root)) = target {
                let name = ipns.publish(seq, &root).await?;
                println!("ipns /ipns/{name} -> /ipfs/{root}");
            }
        }
        return Ok(code);
    }
    let cancel = CancellationToken::new();
    if let Some(ipns) = ipns {
        let current = publisher.current()?.map(|c| (c.seq, c.root));
        tokio::spawn(ipns.keep_published(
            current,
            publisher.published(),
            args.ipns_republish,
            cancel.clone(),
        ));
    }
    let stop = cancel.clone();
    tokio::spawn(async move {
        crate::output::shutdown_signal().await;
        tracing::info!("stopping");
        stop.cancel();
    });
    let server = if args.serve {
        let cfg = settings.serve.overridden_by(args.serve_args.config());
        let state = crate::serve::state(ctx, &cfg, &cancel).await?;
        let c = cancel.clone();
        Some(tokio::spawn(async move {
            crate::serve::run_server(state, &cfg, c).await
        }))
    } else {
        None
    };
    let last = match server {
        None => publisher.run(cancel.clone()).await?,
        Some(mut server) => {
            tokio::select! {
                last = publisher.run(cancel.clone()) => {
                    cancel.cancel();
                    server.await.map_err(|e| anyhow::anyhow!("server task: {e}"))??;
                    last?
                }
                ended = &mut server => {
                    // The server stopped on its own (could not bind, ...): stop all.
                    cancel.cancel();
                    ended.map_err(|e| anyhow::anyhow!("server task: {e}"))??;
                    anyhow::bail!("the server stopped");
                }
            }
        }
    };
    report(&last);
    Ok(ExitCode::SUCCESS)
}

/// Publishes each snapshot root under an IPNS key of the kubo store's node.
struct Ipns {
    store: cidmirror_store::KuboStore,
    key: String,
    ttl: Duration,
    lifetime: Duration,
}

/// The first retry of a failed IPNS publish; it doubles up to the republish period.
const IPNS_RETRY: Duration = Duration::from_secs(30);

impl Ipns {
    /// Points the key's name at `root`; returns the name.
    async fn publish(&self, seq: u64, root: &cidmirror_store::Cid) -> anyhow::Result<String> {
        self.store
            .ensure_key(&self.key)
            .await
            .map_err(|e| anyhow::anyhow!("IPNS key {}: {e}", self.key))?;
        let name = self
            .store
            .publish_name(&self.key, root, self.ttl, self.lifetime)
            .await
            .map_err(|e| anyhow::anyhow!("IPNS for snapshot {seq}: {e}"))?;
        tracing::info!(
            "snapshot {seq} {root} published as /ipns/{name} (valid {})",
            humantime::format_duration(self.lifetime)
        );
        Ok(name)
    }

    /// The running mirror's IPNS task: publishes the current root at once, each new
    /// snapshot as it becomes current, and the current one again every `republish` so the
    /// record never outlives its lifetime. A failure is logged and retried with backoff;
    /// the feed stays the fast path.
    async fn keep_published(
        self,
        mut target: Option<(u64, cidmirror_store::Cid)>,
        mut published: tokio::sync::watch::Receiver<Option<Published>>,
        republish: Duration,
        cancel: CancellationToken,
    ) {
        let mut due = tokio::time::Instant::now();
        let mut retry = IPNS_RETRY.min(republish);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = published.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if let Some(p) = published.borrow_and_update().clone() {
                        target = Some((p.seq, p.root));
                        due = tokio::time::Instant::now();
                    }
                }
                _ = tokio::time::sleep_until(due), if target.is_some() => {
                    let Some((seq, root)) = target else { continue };
                    match self.publish(seq, &root).await {
                        Ok(_) => {
                            due = tokio::time::Instant::now() + republish;
                            retry = IPNS_RETRY.min(republish);
                        }
                        Err(e) => {
                            tracing::warn!(
                                "{e:#}; retrying in {}",
                                humantime::format_duration(retry)
                            );
                            due = tokio::time::Instant::now() + retry;
                            retry = (retry * 2).min(republish);
                        }
                    }
                }
            }
        }
    }
}

fn report(outcome: &Outcome) -> ExitCode {
    match outcome {
        Outcome::Published(p) => {
            println!(
                "published snapshot {} {}: {} packages; fetched {} files ({} bytes); {} changes; {} bytes of new blocks",
                p.seq,
                p.root,
                p.packages,
                p.fetched_files,
                p.fetched_bytes,
                p.changed,
                p.new_block_bytes
            );
            // It is current all the same: exit 0, and say what failed after the switch.
            for w in &p.warnings {
                eprintln!("warning: {}", printable(w));
            }
            ExitCode::SUCCESS
        }
        Outcome::Unchanged { seq, state } => {
            match seq {
                Some(s) => println!(
                    "nothing new: upstream state {} is snapshot {s}",
                    printable(state)
                ),
                None => println!("stopped"),
            }
            ExitCode::from(EXIT_UNCHANGED)
        }
        Outcome::Held {
            reasons,
            syncs,
            needed,
        } => {
            eprintln!(
                "held: the new upstream state is not published ({syncs} of {needed} syncs have \
                 seen this shrink); the previous snapshot stays current:"
            );
            for r in reasons {
                eprintln!("  {}", printable(r));
            }
            eprintln!(
                "publish it now with `cidmirror mirror --accept-shrink`, or it is published \
                 once {needed} consecutive syncs have seen a shrink"
            );
            ExitCode::from(EXIT_HELD)
        }
        Outcome::Failed { problems } => {
            eprintln!(
                "error: sync failed ({} problem{}); the previous snapshot stays current:",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            );
            // Problems quote the upstream (names, versions, archive members): escaped.
            for p in problems {
                for line in p.lines() {
                    eprintln!("  {}", printable(line));
                }
            }
            ExitCode::FAILURE
        }
    }
}

/// Progress as log lines (not a terminal).
struct LogProgress;

impl SyncProgress for LogProgress {
    fn phase(&self, msg: &str) {
        tracing::info!("{msg}");
    }
    fn planned(&self, files: u64, bytes: u64) {
        tracing::info!("{files} files to fetch ({bytes} bytes)");
    }
    fn file_done(&self, name: &str, ok: bool) {
        if ok {
            tracing::debug!("fetched {name}");
        } else {
            tracing::warn!("failed {}", printable(name));
        }
    }
}

/// Progress bars on a terminal: files, and bytes with rate and ETA.
struct BarProgress {
    multi: MultiProgress,
    files: ProgressBar,
    bytes: ProgressBar,
}

impl BarProgress {
    fn new() -> Self {
        let multi = MultiProgress::new();
        let files = multi.add(
            ProgressBar::new(0).with_style(
                ProgressStyle::with_template("{msg:30} {pos}/{len} files")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
        );
        let bytes = multi.add(
            ProgressBar::new(0).with_style(
                ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
        );
        files.enable_steady_tick(Duration::from_millis(250));
        BarProgress {
            multi,
            files,
            bytes,
        }
    }
}

impl SyncProgress for BarProgress {
    fn phase(&self, msg: &str) {
        self.files.set_message(msg.to_string());
        if msg == "published" {
            self.files.finish_and_clear();
            self.bytes.finish_and_clear();
            let _ = self.multi.clear();
        }
    }
    fn planned(&self, files: u64, bytes: u64) {
        self.files.set_length(files);
        self.files.set_position(0);
        self.bytes.set_length(bytes);
        self.bytes.set_position(0);
    }
    fn transferred(&self, bytes: u64) {
        self.bytes.inc(bytes);
    }
    fn file_done(&self, name: &str, ok: bool) {
        self.files.inc(1);
        if !ok {
            self.multi
                .suspend(|| eprintln!("failed: {}", printable(name)));
        }
    }
}
