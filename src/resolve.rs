//! `cidmirror resolve`: a file by SHA-256 or by mirror path, as `/api/v1/resolve` answers.

use std::process::ExitCode;
use std::str::FromStr;

use cidmirror_resolver::lookup::{Lookup, resolve};
use tokio_util::sync::CancellationToken;

use crate::Context;

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["sha256", "path"])))]
pub struct Args {
    /// The file's SHA-256 (64 hex digits).
    #[arg(long)]
    sha256: Option<String>,

    /// A mirror path: <repo>/os/<arch>/<file>.
    #[arg(long)]
    path: Option<String>,

    /// Print JSON (for scripts).
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let lookup = match (args.sha256, args.path) {
        (Some(h), _) => Lookup::Sha256(cidmirror_store::Sha256::from_str(&h)?),
        (None, Some(p)) => Lookup::Path(p),
        (None, None) => anyhow::bail!("give --sha256 or --path"),
    };
    let cancel = CancellationToken::new();
    let state = crate::serve::state(ctx, &Default::default(), &cancel).await?;
    cancel.cancel();
    let r = resolve(&state, lookup).await.map_err(|e| {
        let (_, msg) = e.status_and_message();
        anyhow::anyhow!(msg)
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("cid       {}", r.cid);
        println!("size      {}", r.size);
        println!("sha256    {}", r.sha256.as_deref().unwrap_or("unknown"));
        match &r.snapshot {
            Some(s) => println!("snapshot  {} {}", s.seq, s.root),
            None => println!("snapshot  none (kept from an earlier snapshot)"),
        }
        for p in &r.paths {
            println!("path      {p}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
