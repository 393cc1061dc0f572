//! `cidmirror import`: import CAR files.

use std::path::PathBuf;
use std::process::ExitCode;

use cidmirror_store::{PinReason, Store, unixfs};

use crate::Context;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// CAR files to import (`-` for stdin).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,

    /// Do not pin the CARs' roots.
    #[arg(long)]
    no_pin: bool,

    /// Pin roots under this reason.
    #[arg(long, default_value = "import", conflicts_with = "no_pin")]
    pin_reason: PinReason,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let store = ctx.open_store()?;
    let pin = (!args.no_pin).then(|| args.pin_reason.clone());
    let mut failed = 0;
    for file in &args.files {
        let what = file.display().to_string();
        let reader: Box<dyn tokio::io::AsyncRead + Send + Unpin> = if what == "-" {
            Box::new(tokio::io::stdin())
        } else {
            match tokio::fs::File::open(file).await {
                Ok(f) => Box::new(tokio::io::BufReader::with_capacity(1 << 20, f)),
                Err(e) => {
                    eprintln!("error: {what}: {e}");
                    failed += 1;
                    continue;
                }
            }
        };
        match store.import_car(reader, what.clone(), pin.clone()).await {
            Ok(imp) => {
                for root in &imp.roots {
                    match unixfs::missing_blocks(&store, root).await {
                        Ok(0) => {}
                        Ok(missing) => eprintln!(
                            "warning: {what}: root {root} is incomplete: {missing} blocks of its DAG are not held"
                        ),
                        Err(e) => {
                            eprintln!("error: {what}: checking root {root}: {e}");
                            failed += 1;
                        }
                    }
                    println!("{root} {what}");
                }
                eprintln!(
                    "imported {what}: {} blocks, {} bytes",
                    imp.blocks, imp.bytes
                );
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
