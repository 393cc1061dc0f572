//! `cidmirror gc`: garbage collection.

use std::process::ExitCode;
use std::time::Duration;

use cidmirror_store::GcOptions;

use crate::Context;
use crate::output::parse_duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Spare anything written less than this long ago (an import in another process may not
    /// have pinned it yet). `0s` collects everything unpinned.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    grace: Duration,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let store = ctx.open(None).await?.as_dyn();
    let r = store.gc(GcOptions { grace: args.grace }).await?;
    println!(
        "removed {} blocks and {} files ({} bytes), {} expired pins; {} blocks kept",
        r.blocks_removed, r.files_removed, r.bytes_freed, r.pins_expired, r.blocks_kept
    );
    Ok(ExitCode::SUCCESS)
}
