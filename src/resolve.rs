//! `cidmirror resolve`: a file by hash (SHA-256; SHA-512 or BLAKE2b-512 for AUR sources),
//! by mirror path or by an AUR source's URL, as `/api/v1/resolve` answers.

use std::process::ExitCode;

use cidmirror_resolver::lookup::{Lookup, parse_hash, resolve};
use tokio_util::sync::CancellationToken;

use crate::Context;

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["sha256", "sha512", "b2", "path", "url"])))]
pub struct Args {
    /// The file's SHA-256 (64 hex digits).
    #[arg(long)]
    sha256: Option<String>,

    /// An AUR source's SHA-512 (128 hex digits).
    #[arg(long)]
    sha512: Option<String>,

    /// An AUR source's BLAKE2b-512, as `b2sum` prints it (128 hex digits).
    #[arg(long)]
    b2: Option<String>,

    /// An AUR source by the URL its .SRCINFO gives.
    #[arg(long)]
    url: Option<String>,

    /// A mirror path: <repo>/os/<arch>/<file>.
    #[arg(long)]
    path: Option<String>,

    /// Print JSON (for scripts).
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let hashed = [
        ("sha256", args.sha256),
        ("sha512", args.sha512),
        ("b2", args.b2),
    ]
    .into_iter()
    .find_map(|(a, h)| h.map(|h| (a, h)));
    let lookup = match (hashed, args.path, args.url) {
        (Some((algo, h)), _, _) => parse_hash(algo, &h).map_err(|e| {
            let (_, msg) = e.status_and_message();
            anyhow::anyhow!(msg)
        })?,
        (None, Some(p), _) => Lookup::Path(p),
        (None, None, Some(u)) => Lookup::Url(u),
        (None, None, None) => anyhow::bail!("give --sha256, --sha512, --b2, --path or --url"),
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
            println!("path      {}", cidmirror_schema::text::printable(p));
        }
    }
    Ok(ExitCode::SUCCESS)
}
