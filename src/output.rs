//! Shared bits of the command line: CID paths, progress bars, stdout.

use std::io::IsTerminal;

use anyhow::Context as _;
use cidmirror_store::Cid;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Splits `CID[/path]` (an optional `/ipfs/` prefix is accepted).
pub fn parse_cid_path(arg: &str) -> anyhow::Result<(Cid, String)> {
    let s = arg.strip_prefix("/ipfs/").unwrap_or(arg);
    let (cid, path) = match s.split_once('/') {
        Some((c, p)) => (c, p),
        None => (s, ""),
    };
    let cid = cidmirror_store::hash::parse_cid(cid)?;
    Ok((cid, path.to_string()))
}

/// A byte progress bar on stderr, hidden when stderr is not a terminal or when `quiet`.
pub fn progress_bar(total: Option<u64>, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = match total {
        Some(t) => ProgressBar::new(t).with_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    pb.set_draw_target(ProgressDrawTarget::stderr_with_hz(4));
    pb
}

/// Whether an I/O error is the reader of our stdout going away (`cidmirror cat | head`).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Refuses to pour binary data into a terminal.
pub fn ensure_not_terminal(what: &str) -> anyhow::Result<()> {
    if std::io::stdout().is_terminal() {
        anyhow::bail!("refusing to write {what} to a terminal: redirect stdout or use -o FILE");
    }
    Ok(())
}

/// Parses a duration like `90s`, `1h`, `14days`.
pub fn parse_duration(s: &str) -> anyhow::Result<std::time::Duration> {
    humantime::parse_duration(s).with_context(|| format!("invalid duration {s:?}"))
}

/// Whether stderr is a terminal (progress bars) or a log (plain lines).
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
