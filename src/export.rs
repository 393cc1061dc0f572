//! `cidmirror export`: write a DAG as a CAR file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use cidmirror_store::export::export_car;
use cidmirror_store::unixfs;
use tokio::io::AsyncWriteExt;

use crate::Context;
use crate::output::{ensure_not_terminal, is_broken_pipe, parse_cid_path};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// `CID` or `CID/path/inside`: the root of the exported DAG.
    #[arg(value_name = "CID[/PATH]")]
    target: String,

    /// Write to this file (atomically: a failed export leaves no file) instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let (root, path) = parse_cid_path(&args.target)?;
    let store = ctx.open_store()?;
    let cid = unixfs::resolve(&store, &root, &path).await?;
    match args.output {
        Some(out) => {
            let tmp = out.with_file_name(format!(
                ".{}.part",
                out.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "export".into())
            ));
            let res: anyhow::Result<()> = async {
                let f = tokio::fs::File::create(&tmp)
                    .await
                    .with_context(|| format!("creating {}", tmp.display()))?;
                let mut w = tokio::io::BufWriter::new(f);
                export_car(&store, &cid, &mut w).await?;
                w.flush().await?;
                w.get_ref().sync_all().await?;
                tokio::fs::rename(&tmp, &out)
                    .await
                    .with_context(|| format!("renaming to {}", out.display()))?;
                Ok(())
            }
            .await;
            if res.is_err() {
                let _ = tokio::fs::remove_file(&tmp).await;
            }
            res?;
        }
        None => {
            ensure_not_terminal("a CAR")?;
            let mut w = tokio::io::BufWriter::new(tokio::io::stdout());
            let res: anyhow::Result<()> = async {
                export_car(&store, &cid, &mut w).await?;
                w.flush().await?;
                Ok(())
            }
            .await;
            match res {
                Err(e) if is_broken_pipe(&e) => {}
                other => other?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
