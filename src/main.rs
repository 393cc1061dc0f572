//! `cidmirror`: Linux package repositories as content-addressed snapshots on IPFS.
//!
//! This file only parses arguments, starts logging and hands each subcommand to its module;
//! the work is done in the library crates.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod add;
mod cat;
mod cluster;
mod dlagent;
mod export;
mod gc;
mod import;
mod key;
mod mirror;
mod output;
mod pacman_conf;
mod pin;
mod resolve;
mod serve;
mod settings;
mod status;
mod stores;
mod verify;
mod volunteer;

/// Turn Linux package repositories into content-addressed data on IPFS.
#[derive(Parser, Debug)]
#[command(name = "cidmirror", version, about, propagate_version = true)]
struct Cli {
    /// Data directory (default: $XDG_DATA_HOME/cidmirror, i.e. ~/.local/share/cidmirror).
    #[arg(long, global = true, env = "CIDMIRROR_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// The store: `embedded` (default, under the data directory) or `kubo=http://HOST:PORT`
    /// (a Kubo node's RPC API). `mirror` also reads `store` from its settings file.
    #[arg(long, global = true, env = "CIDMIRROR_STORE", value_name = "STORE")]
    store: Option<stores::StoreSpec>,

    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Add files and directories; prints `CID PATH` for each entry, like `ipfs add -r`.
    Add(add::Args),
    /// Print a file's bytes: `cidmirror cat CID[/PATH]`.
    Cat(cat::Args),
    /// Write the DAG under a CID as a CAR v1 stream.
    Export(export::Args),
    /// Import CAR files (every block is verified; a bad CAR imports nothing).
    Import(import::Args),
    /// Manage pins (named reasons to keep content), or volunteer: `pin --follow URL
    /// --publisher-key KEY --budget 50G` keeps a share of a publisher's packages.
    Pin(pin::Args),
    /// Remove expired pins and everything no pin reaches.
    Gc(gc::Args),
    /// Check the store: re-hash every file and block, report corruption.
    Verify(verify::Args),
    /// Follow a pacman repository upstream and publish snapshots.
    Mirror(mirror::Args),
    /// The current snapshot, its age and counts, and the last sync's outcome.
    Status,
    /// The publisher's signing key.
    #[command(subcommand)]
    Key(key::Command),
    /// Serve the current snapshot to pacman, the IPFS trustless gateway, lookups and the feed.
    Serve(serve::Args),
    /// Print the pacman.conf lines that make pacman use this gateway.
    PacmanConf(pacman_conf::Args),
    /// Find a file by hash (SHA-256, or SHA-512 / BLAKE2b-512 for AUR sources), mirror path
    /// or AUR source URL (what /api/v1/resolve answers).
    Resolve(resolve::Args),
    /// makepkg's download agent: `cidmirror dlagent %u %o` fetches an AUR source from the
    /// gateway by the hashes it mirrored, and falls back to curl.
    Dlagent(dlagent::Args),
    /// Print the makepkg.conf DLAGENTS lines that install `cidmirror dlagent`.
    AurConf(dlagent::ConfArgs),
    /// Fill makepkg's SRCDEST with the cached sources of AUR package bases, from the gateway.
    AurPrefetch(dlagent::PrefetchArgs),
    /// IPFS Cluster helpers: `cluster follower-config` writes the file volunteers running
    /// `ipfs-cluster-follow` start from.
    #[command(subcommand)]
    Cluster(cluster::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The publisher is a long-running job: its progress goes to the log by default.
    let base = u8::from(matches!(
        cli.command,
        Command::Mirror(_) | Command::Serve(_)
    ));
    init_logging(cli.verbose.saturating_add(base));
    let data_dir = match cli.data_dir.clone().or_else(default_data_dir) {
        Some(d) => d,
        None => {
            eprintln!(
                "error: no data directory: set --data-dir, CIDMIRROR_DATA_DIR or XDG_DATA_HOME"
            );
            return ExitCode::from(2);
        }
    };
    if !cli.command.is_service() {
        die_quietly_on_broken_pipe();
    }
    fewer_malloc_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ctx = Context {
        data_dir,
        store: cli.store.clone(),
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Add(a) => add::run(&ctx, a).await,
            Command::Cat(a) => cat::run(&ctx, a).await,
            Command::Export(a) => export::run(&ctx, a).await,
            Command::Import(a) => import::run(&ctx, a).await,
            Command::Pin(c) => pin::run(&ctx, c).await,
            Command::Gc(a) => gc::run(&ctx, a).await,
            Command::Verify(a) => verify::run(&ctx, a).await,
            Command::Mirror(a) => mirror::run(&ctx, a).await,
            Command::Status => status::run(&ctx).await,
            Command::Key(c) => key::run(&ctx, c).await,
            Command::Serve(a) => serve::run(&ctx, a).await,
            Command::PacmanConf(a) => pacman_conf::run(&ctx, a).await,
            Command::Resolve(a) => resolve::run(&ctx, a).await,
            Command::Dlagent(a) => dlagent::run(a).await,
            Command::AurConf(a) => dlagent::conf(a),
            Command::AurPrefetch(a) => dlagent::prefetch(a).await,
            Command::Cluster(c) => cluster::run(&ctx, c).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            // Errors quote what came from outside (upstream files, peers): one escaped line.
            eprintln!(
                "error: {}",
                cidmirror_schema::text::printable(&format!("{e:#}"))
            );
            ExitCode::FAILURE
        }
    }
}

/// What every subcommand needs.
pub struct Context {
    /// The data directory.
    pub data_dir: PathBuf,
    /// `--store`, if given.
    pub store: Option<stores::StoreSpec>,
}

impl Context {
    /// Opens the embedded store under the data directory.
    pub fn open_store(&self) -> anyhow::Result<cidmirror_store::EmbeddedStore> {
        let dir = self.data_dir.join("store");
        cidmirror_store::EmbeddedStore::open(&dir)
            .map_err(|e| anyhow::anyhow!("opening the store in {}: {e}", dir.display()))
    }
}

fn default_data_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("cidmirror"))
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CIDMIRROR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

impl Command {
    /// Whether this runs as a long-lived service (server, mirror, volunteer) rather than a
    /// command whose output may go into `head` or `grep -q`.
    fn is_service(&self) -> bool {
        match self {
            Command::Serve(_) | Command::Mirror(_) => true,
            Command::Pin(p) => p.is_volunteer(),
            _ => false,
        }
    }
}

/// glibc gives each thread that allocates under contention its own heap, up to 8 per core,
/// and memory freed into one is not reused by the others: the store's import threads (up
/// to 32 at once) left the publisher's first sync of 15,000 packages at 100 MB peak RSS
/// instead of 83 MB. One heap per core keeps the contention the arenas are for low.
/// `MALLOC_ARENA_MAX` in the environment still decides when set.
fn fewer_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only changes the allocator's tuning; called before any other
        // thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// `cidmirror pin ls | head` ends like `ls | head` does: silently, by SIGPIPE, instead of a
/// panic from `println!` once the reader is gone (Rust ignores SIGPIPE by default). Services
/// keep ignoring it; their sockets report a closed peer as an error either way.
fn die_quietly_on_broken_pipe() {
    // SAFETY: sets the disposition of one signal to its default before any other thread
    // exists; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
