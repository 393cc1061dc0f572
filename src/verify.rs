//! `cidmirror verify`: check the store, and with `--repair` put bad files right.

use std::process::ExitCode;

use cidmirror_store::scrub::Repair;

use crate::Context;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Compare sizes and ranges with the index and re-hash only the files changed on disk
    /// since their last check (fast); by default every file and block is re-hashed.
    #[arg(long, conflicts_with = "full")]
    quick: bool,

    /// Re-hash everything (the default; kept for scripts).
    #[arg(long)]
    full: bool,

    /// Move bad files aside (store/quarantine/) and fetch them again: from the upstream of
    /// the publisher's current snapshot (on a publisher's data directory). Files found bad
    /// earlier and not yet repaired are fetched too.
    #[arg(long)]
    repair: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let store = ctx.open_store()?;
    let full = !args.quick;
    let s = store.clone();
    let repair = args.repair;
    let rep = tokio::task::spawn_blocking(move || s.verify(full, repair)).await??;
    for c in &rep.cleaned {
        eprintln!("{c}");
    }
    for p in &rep.problems {
        println!("problem: {p}");
    }
    println!(
        "checked {} files and {} blocks, {}: {}",
        rep.files,
        rep.blocks,
        if full {
            "every byte re-hashed".to_string()
        } else {
            format!(
                "sizes only, {} files re-hashed (changed on disk since their last check)",
                rep.hashed
            )
        },
        if rep.problems.is_empty() {
            "consistent".to_string()
        } else {
            format!("{} problems", rep.problems.len())
        }
    );
    if !args.repair {
        return Ok(if rep.problems.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let s = store.clone();
    let open = tokio::task::spawn_blocking(move || s.to_repair()).await??;
    if open.is_empty() {
        return Ok(if rep.problems.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let Some(source) = cidmirror_ingest::repair::UpstreamRepair::open(
        &ctx.data_dir,
        cidmirror_ingest::upstream::FetchOptions::default(),
    )?
    else {
        println!(
            "{} bad files moved aside; nothing to fetch them from (no published snapshot here: a follower fetches them again when asked)",
            open.len()
        );
        return Ok(ExitCode::FAILURE);
    };
    let mut missing = 0usize;
    for (sha, size) in &open {
        match source.repair(&store, *sha, *size).await {
            Ok(true) => println!(
                "repaired: file {sha} ({size} bytes) from {}",
                source.describe()
            ),
            Ok(false) => {
                missing += 1;
                println!(
                    "not repaired: file {sha} ({size} bytes): no snapshot path of it is upstream"
                );
            }
            Err(e) => {
                missing += 1;
                println!("not repaired: file {sha} ({size} bytes): {e}");
            }
        }
    }
    Ok(if missing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
