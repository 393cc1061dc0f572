//! `cidmirror cat`: print a file's bytes.

use std::process::ExitCode;

use anyhow::Context as _;
use cidmirror_store::{Store, unixfs};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::Context;
use crate::output::{is_broken_pipe, parse_cid_path};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// `CID` or `CID/path/inside`.
    #[arg(value_name = "CID[/PATH]")]
    target: String,

    /// First byte to print.
    #[arg(long, default_value_t = 0)]
    offset: u64,

    /// Number of bytes to print (default: to the end).
    #[arg(long)]
    length: Option<u64>,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let (root, path) = parse_cid_path(&args.target)?;
    let store = ctx.open_store()?;
    let cid = unixfs::resolve(&store, &root, &path).await?;
    let range = match (args.offset, args.length) {
        (0, None) => None,
        (o, None) => Some(o..u64::MAX),
        (o, Some(l)) => Some(o..o.saturating_add(l)),
    };
    let (_, mut stream) = store.read(&cid, range).await?;
    let mut out = tokio::io::stdout();
    let res: anyhow::Result<()> = async {
        while let Some(chunk) = stream.next().await {
            out.write_all(&chunk?).await.context("writing to stdout")?;
        }
        out.flush().await.context("writing to stdout")?;
        Ok(())
    }
    .await;
    match res {
        Err(e) if is_broken_pipe(&e) => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e),
        Ok(()) => Ok(ExitCode::SUCCESS),
    }
}
