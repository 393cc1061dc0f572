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

    /// Write to this file (atomically: a failed export leaves no file) instead of stdout. A
    /// device or pipe that exists (`/dev/null`, a FIFO) is written to, never replaced.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let (root, path) = parse_cid_path(&args.target)?;
    let store = ctx.open_store()?;
    let cid = unixfs::resolve(&store, &root, &path).await?;
    match args.output {
        Some(out) => export_to_file(&store, &cid, &out).await?,
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

/// Writes the CAR to a unique temp file beside `out`, fsyncs it and renames it into place:
/// a failed or concurrent export never leaves a partial file under `out`. When `out` is a
/// device or a pipe, the CAR is written into it instead (renaming over `/dev/null` would
/// replace the device with a file).
async fn export_to_file(
    store: &cidmirror_store::EmbeddedStore,
    cid: &cidmirror_store::Cid,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    match std::fs::metadata(out) {
        Ok(m) if m.is_dir() => anyhow::bail!("{}: is a directory", out.display()),
        Ok(m) if !m.is_file() => {
            let f = tokio::fs::OpenOptions::new()
                .write(true)
                .open(out)
                .await
                .with_context(|| format!("opening {}", out.display()))?;
            let mut w = tokio::io::BufWriter::new(f);
            export_car(store, cid, &mut w)
                .await
                .with_context(|| format!("exporting {cid} to {}", out.display()))?;
            return w
                .flush()
                .await
                .with_context(|| format!("writing {}", out.display()));
        }
        _ => {}
    }
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".cidmirror-export-")
        .suffix(".part")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(&dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    let (std_file, tmp_path) = tmp.into_parts();
    let mut w = tokio::io::BufWriter::new(tokio::fs::File::from_std(std_file));
    export_car(store, cid, &mut w)
        .await
        .with_context(|| format!("exporting {cid} to {}", out.display()))?;
    w.flush()
        .await
        .with_context(|| format!("writing {}", out.display()))?;
    w.get_ref()
        .sync_all()
        .await
        .with_context(|| format!("writing {}", out.display()))?;
    tmp_path
        .persist(out)
        .with_context(|| format!("renaming into {}", out.display()))?;
    Ok(())
}
