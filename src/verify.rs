//! `cidmirror verify`: check the store.

use std::process::ExitCode;

use crate::Context;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only compare sizes and ranges with the index (fast); by default every file and block
    /// is re-hashed.
    #[arg(long, conflicts_with = "full")]
    quick: bool,

    /// Re-hash everything (the default; kept for scripts).
    #[arg(long)]
    full: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let store = ctx.open_store()?;
    let full = !args.quick;
    let rep = tokio::task::spawn_blocking(move || store.verify(full)).await??;
    for c in &rep.cleaned {
        eprintln!("{c}");
    }
    for p in &rep.problems {
        println!("problem: {p}");
    }
    println!(
        "checked {} files and {} blocks{}: {}",
        rep.files,
        rep.blocks,
        if full {
            ", every byte re-hashed"
        } else {
            " (sizes only)"
        },
        if rep.problems.is_empty() {
            "consistent".to_string()
        } else {
            format!("{} problems", rep.problems.len())
        }
    );
    Ok(if rep.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
