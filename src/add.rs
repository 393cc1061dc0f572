//! `cidmirror add`: import files and directories into the store (or only hash them).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use cidmirror_store::add::{AddOptions, add_path};
use cidmirror_store::{EmbeddedStore, PinReason, Profile};

use crate::Context;
use crate::output::progress_bar;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Files and directories to add (directories recursively).
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,

    /// Import profile (unixfs-v1-2025 or unixfs-v0-2015); every CID depends on it.
    #[arg(long, default_value = "unixfs-v1-2025")]
    profile: Profile,

    /// Compute the CIDs without storing anything.
    #[arg(short = 'n', long)]
    only_hash: bool,

    /// Print only the root CID of each path.
    #[arg(short = 'Q', long)]
    quiet: bool,

    /// Include files and directories whose name starts with a dot.
    #[arg(short = 'H', long)]
    hidden: bool,

    /// Do not pin what is added (it can then be garbage-collected).
    #[arg(long)]
    no_pin: bool,

    /// Pin under this reason.
    #[arg(long, default_value = "add", conflicts_with = "no_pin")]
    pin_reason: PinReason,

    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let store = if args.only_hash {
        None
    } else {
        Some(ctx.open_store()?)
    };
    let total: Option<u64> = match args.paths.as_slice() {
        [one] => std::fs::metadata(one)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len()),
        _ => None,
    };
    let bar = progress_bar(total, args.no_progress);
    let bar2 = bar.clone();
    let opts = AddOptions {
        params: args.profile.params(),
        hidden: args.hidden,
        pin: (!args.no_pin).then(|| args.pin_reason.clone()),
        progress: Some(Arc::new(move |n| bar2.inc(n))),
    };
    let mut failed = 0usize;
    for path in &args.paths {
        let quiet = args.quiet;
        let b = bar.clone();
        let mut print = |a: &cidmirror_store::add::Added| {
            if !quiet {
                b.suspend(|| println!("{} {}", a.cid, a.path.display()));
            }
        };
        let res = add_path::<EmbeddedStore>(store.as_ref(), path, &opts, &mut print).await;
        match res {
            Ok(root) => {
                if args.quiet {
                    bar.suspend(|| println!("{}", root.cid));
                }
            }
            Err(e) => {
                failed += 1;
                bar.suspend(|| eprintln!("error: {e}"));
            }
        }
    }
    bar.finish_and_clear();
    if failed > 0 {
        if args.paths.len() > 1 {
            eprintln!("{failed} of {} paths failed", args.paths.len());
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
