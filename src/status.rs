//! `cidmirror status`: the current snapshot, its age, counts and the last sync.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cidmirror_ingest::keys::PublisherKey;
use cidmirror_ingest::publish::open_state;
use cidmirror_schema::publisher::{snapshots, syncs};

use crate::Context;

fn when(t: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(t.max(0).unsigned_abs());
    let age = SystemTime::now()
        .duration_since(at)
        .map(|d| Duration::from_secs(d.as_secs()))
        .unwrap_or_default();
    format!(
        "{} ({} ago)",
        humantime::format_rfc3339_seconds(at),
        humantime::format_duration(age)
    )
}

pub async fn run(ctx: &Context) -> anyhow::Result<ExitCode> {
    let key_path = ctx.data_dir.join("publisher.key");
    if key_path.exists() {
        println!(
            "publisher key  {}",
            PublisherKey::load_or_create(&key_path)?.public_hex()
        );
    }
    if !ctx.data_dir.join("publisher.sqlite").exists() {
        println!(
            "current        none (no publisher state in {} yet)",
            ctx.data_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let db = open_state(&ctx.data_dir)?;
    match db.read(snapshots::current)? {
        None => println!("current        none (nothing published yet)"),
        Some(s) => {
            println!("current        snapshot {} {}", s.seq, s.root);
            println!("published      {}", when(s.published_at.0));
            println!("upstream       {} (state {})", s.upstream, s.state);
            println!("profile        {}", s.profile);
            println!(
                "packages       {} ({} bytes new with this snapshot)",
                s.packages, s.new_bytes
            );
        }
    }
    match db.read(|c| syncs::recent(c, 1))?.first() {
        None => println!("last sync      never"),
        Some(sy) => {
            let end = sy.finished_at.map_or_else(
                || "did not finish (still running, or stopped)".to_string(),
                |t| when(t.0),
            );
            println!("last sync      {} at {end}", sy.outcome);
            if let Some(d) = &sy.detail {
                for line in d.lines() {
                    println!("               {line}");
                }
            }
        }
    }
    let store = ctx.open_store()?;
    let st = tokio::task::spawn_blocking(move || store.stats()).await??;
    println!(
        "store          {} files ({} bytes), {} blocks, {} pins",
        st.files, st.file_bytes, st.blocks, st.pins
    );
    Ok(ExitCode::SUCCESS)
}
