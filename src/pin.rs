//! `cidmirror pin`: add, remove and list pins.

use std::process::ExitCode;
use std::time::SystemTime;

use cidmirror_store::PinReason;

use crate::Context;
use crate::output::{parse_cid_path, parse_duration};
use crate::stores::Opened;

/// `cidmirror pin`: manage pins, or volunteer (`--follow ... --budget ...`).
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    volunteer: crate::volunteer::VolunteerArgs,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Keep a DAG for a reason (recursively).
    Add {
        /// The root (`CID` or `CID/path`).
        #[arg(value_name = "CID[/PATH]")]
        target: String,
        /// Why it is kept.
        #[arg(long, default_value = "manual")]
        reason: PinReason,
        /// Let the pin lapse after this long (e.g. `14days`).
        #[arg(long, value_parser = parse_duration)]
        expire_in: Option<std::time::Duration>,
    },
    /// Remove one pin.
    Rm {
        /// The pinned root.
        cid: String,
        /// The reason it was pinned for.
        #[arg(long, default_value = "manual")]
        reason: PinReason,
    },
    /// List pins: `CID REASON [expires TIME]`.
    Ls,
    /// Re-apply every pin cidmirror recorded to the IPFS node or cluster (kubo and cluster
    /// stores), after the node lost its pins: repository replaced or restored from a backup,
    /// pins removed by hand.
    Resync,
    /// A volunteer's budget, use, share, pins by reason and next expiries.
    Status {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

impl Args {
    /// Whether this runs a volunteer (no subcommand) rather than a pin command.
    pub fn is_volunteer(&self) -> bool {
        self.command.is_none()
    }
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let cmd = match args.command {
        None => return crate::volunteer::run(ctx, args.volunteer).await,
        Some(Command::Status { json }) => return crate::volunteer::status(ctx, json),
        Some(Command::Resync) => return resync(ctx).await,
        Some(c) => c,
    };
    let store = ctx.open(None).await?.as_dyn();
    match cmd {
        Command::Add {
            target,
            reason,
            expire_in,
        } => {
            let (root, path) = parse_cid_path(&target)?;
            let cid = cidmirror_store::unixfs::resolve(&*store, &root, &path).await?;
            let exp = match expire_in {
                Some(d) => Some(
                    SystemTime::now()
                        .checked_add(d)
                        .ok_or_else(|| anyhow::anyhow!("--expire-in {d:?} is too far away"))?,
                ),
                None => None,
            };
            store.pin(&cid, &reason, exp).await?;
            println!("{cid} {reason}");
        }
        Command::Rm { cid, reason } => {
            let cid = cidmirror_store::hash::parse_cid(&cid)?;
            if !store.unpin(&cid, &reason).await? {
                anyhow::bail!("{cid} is not pinned for reason {reason:?}");
            }
        }
        Command::Status { json } => return crate::volunteer::status(ctx, json),
        Command::Resync => return resync(ctx).await,
        Command::Ls => {
            for p in store.pins().await? {
                match p.expires_at {
                    Some(t) => println!(
                        "{} {} expires {}",
                        p.cid,
                        p.reason,
                        humantime::format_rfc3339_seconds(t)
                    ),
                    None => println!("{} {}", p.cid, p.reason),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `pin resync`: the store's ledger is the truth; the node or cluster is told it again.
async fn resync(ctx: &Context) -> anyhow::Result<ExitCode> {
    let (n, to) = match ctx.open(None).await? {
        Opened::Kubo(k) => (k.resync_pins().await?, format!("kubo={}", k.api())),
        Opened::Cluster(c) => (c.resync_pins().await?, format!("cluster={}", c.api())),
        Opened::Embedded(_) => {
            anyhow::bail!(
                "pin resync is for the kubo and cluster stores: the embedded store keeps its \
                 pins and blocks in one place (choose one with --store)"
            )
        }
    };
    println!("{n} pinned roots re-applied to {to}");
    Ok(ExitCode::SUCCESS)
}
