//! `cidmirror pacman-conf`: the pacman.conf lines for this gateway.

use std::path::PathBuf;
use std::process::ExitCode;

use cidmirror_schema::publisher::snapshots;

use crate::Context;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The gateway's address as pacman reaches it (default: the configured listen address).
    #[arg(long)]
    url: Option<String>,

    /// Settings file (TOML; its [serve] listen address is used).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let settings = crate::settings::load(args.config.as_deref())?;
    let base = match args.url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => format!(
            "http://{}",
            settings.serve.listen().map_err(anyhow::Error::msg)?
        ),
    };
    let mut repos: Vec<String> = Vec::new();
    if ctx.data_dir.join("publisher.sqlite").exists() {
        let db = cidmirror_ingest::publish::open_state(&ctx.data_dir)?;
        if let Some(s) = db.read(snapshots::current)? {
            let m: serde_json::Value = serde_json::from_slice(&s.manifest)?;
            for r in m["repos"].as_array().into_iter().flatten() {
                if let Some(name) = r["repo"].as_str()
                    && !repos.iter().any(|x| x == name)
                {
                    repos.push(name.to_string());
                }
            }
        }
    }
    let server = format!("Server = {base}/$repo/os/$arch");
    if repos.is_empty() {
        println!("# no snapshot published yet: one section per repository, e.g.");
        repos.push("core".into());
    } else {
        println!("# /etc/pacman.conf: the repositories of the current snapshot");
    }
    for r in &repos {
        println!("[{r}]\n{server}\n");
    }
    println!("# or, first in /etc/pacman.d/mirrorlist:\n{server}");
    Ok(ExitCode::SUCCESS)
}
