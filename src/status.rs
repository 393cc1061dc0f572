//! `cidmirror status`: the current snapshot, its age, counts and the last sync.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cidmirror_ingest::keys::PublisherKey;
use cidmirror_ingest::publish::open_state;
use cidmirror_schema::publisher::{held, snapshots, syncs};
use cidmirror_schema::text::printable;

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

/// A follower's status, from the `status.json` the running `serve --follow` writes every
/// two seconds. Its strings come from other machines: they are shown escaped.
fn follower(path: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read(path)?;
    let r: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => printable(s).into_owned(),
        serde_json::Value::Null => "-".into(),
        o => printable(&o.to_string()).into_owned(),
    };
    println!("following      {}", s(&r["publisher"]));
    match r["current"].as_array() {
        Some(c) if c.len() == 2 => println!("current        snapshot {} {}", c[0], s(&c[1])),
        _ => println!("current        none yet"),
    }
    println!(
        "latest seen    {} (lag {} snapshots; feed {})",
        s(&r["latest_seen"]),
        s(&r["lag"]),
        if r["feed_connected"] == true {
            "connected"
        } else {
            "down, polling"
        }
    );
    println!(
        "refreshes      {} by delta, {} by walk, {} failed; last fetched {} bytes; {} announcements refused",
        s(&r["refreshes_delta"]),
        s(&r["refreshes_walk"]),
        s(&r["refreshes_failed"]),
        s(&r["last_refresh_bytes"]),
        s(&r["refused"])
    );
    for src in r["sources"].as_array().into_iter().flatten() {
        let rate = src["recent_success"]
            .as_f64()
            .map_or("-".into(), |f| format!("{:.0}%", f * 100.0));
        println!(
            "source         {}  {} blocks ok ({} bytes), {} missing, {} failed, {} corrupt; recent success {rate}",
            s(&src["url"]),
            s(&src["blocks_ok"]),
            s(&src["bytes"]),
            s(&src["blocks_missing"]),
            s(&src["blocks_failed"]),
            s(&src["blocks_corrupt"])
        );
    }
    let c = &r["cache"];
    println!(
        "cache          {} bytes used of {} budget; {} cached files; {} evicted ({} bytes)",
        s(&c["used"]),
        s(&c["budget"]),
        s(&c["cached_files"]),
        s(&c["evicted_files"]),
        s(&c["evicted_bytes"])
    );
    let t = &r["transfers"];
    println!(
        "transfers      {} started, {} shared, {} completed, {} failed; {} sources dropped; {} fallback bytes, {} fallback files rejected",
        s(&t[0]),
        s(&t[1]),
        s(&t[2]),
        s(&t[3]),
        s(&t[4]),
        s(&t[5]),
        s(&t[6])
    );
    println!("as of          {}", s(&r["at"]));
    Ok(())
}

/// Whether a `mirror` runs on this data directory now: it holds `publisher.lock` for its
/// whole life. Probed by taking the lock shared for an instant (a mirror starting just then
/// waits that instant out); `None` when the probe itself fails.
fn mirror_running(data_dir: &std::path::Path) -> Option<bool> {
    let file = match std::fs::File::open(data_dir.join("publisher.lock")) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(false),
        Err(_) => return None,
    };
    match file.try_lock_shared() {
        Ok(()) => Some(false),
        Err(std::fs::TryLockError::WouldBlock) => Some(true),
        Err(std::fs::TryLockError::Error(_)) => None,
    }
}

pub async fn run(ctx: &Context) -> anyhow::Result<ExitCode> {
    let follow_status = ctx.data_dir.join("follow").join("status.json");
    if follow_status.exists() {
        follower(&follow_status)?;
        integrity(ctx).await?;
        return Ok(ExitCode::SUCCESS);
    }
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
            // The state is the upstream's `lastupdate`: shown escaped, like every string
            // that an upstream wrote.
            println!(
                "upstream       {} (state {})",
                printable(&s.upstream),
                printable(&s.state)
            );
            println!("profile        {}", printable(&s.profile));
            println!(
                "packages       {} ({} bytes new with this snapshot)",
                s.packages, s.new_bytes
            );
            let (bases, sources, bytes, skipped) =
                db.read(|c| cidmirror_schema::publisher::aur::counts(c, s.seq))?;
            if bases > 0 {
                println!(
                    "aur            {bases} package bases, {sources} sources cached ({bytes} \
                     bytes), {skipped} not cached (SKIP, VCS, local, other schemes or hosts)"
                );
            }
            let failed = db
                .read(|c| {
                    cidmirror_schema::publisher::settings::get(
                        c,
                        cidmirror_schema::publisher::aur::FAILED_KEY,
                    )
                })?
                .unwrap_or_default();
            let failed: Vec<&str> = failed.lines().filter(|l| !l.is_empty()).collect();
            if !failed.is_empty() {
                println!("aur failed     {} at the last sync:", failed.len());
                for f in failed.iter().take(10) {
                    println!("  {}", printable(f));
                }
            }
        }
    }
    match db.read(|c| syncs::recent(c, 1))?.first() {
        None => println!("last sync      never"),
        Some(sy) => {
            match sy.finished_at {
                Some(t) => println!("last sync      {} at {}", printable(&sy.outcome), when(t.0)),
                None => match mirror_running(&ctx.data_dir) {
                    Some(true) => {
                        println!("last sync      running, started {}", when(sy.started_at.0));
                    }
                    Some(false) => println!(
                        "last sync      stopped before it finished (started {}; no mirror is \
                         running now: it was killed or could not record its end)",
                        when(sy.started_at.0)
                    ),
                    None => println!(
                        "last sync      did not finish (started {}; still running, or stopped)",
                        when(sy.started_at.0)
                    ),
                },
            }
            if let Some(d) = &sy.detail {
                for line in d.lines() {
                    println!("               {}", printable(line));
                }
            }
        }
    }
    if let Some(h) = db.read(held::get)? {
        println!(
            "held           a shrink, seen by {} consecutive sync{} since {} (last {}); \
             `cidmirror mirror --accept-shrink` publishes it",
            h.syncs,
            if h.syncs == 1 { "" } else { "s" },
            when(h.first_seen.0),
            when(h.last_seen.0)
        );
        for line in h.reasons.lines() {
            println!("               {}", printable(line));
        }
    }
    let store = ctx.open_store()?;
    let st = tokio::task::spawn_blocking(move || store.stats()).await??;
    println!(
        "store          {} files ({} bytes), {} blocks, {} pins",
        st.files, st.file_bytes, st.blocks, st.pins
    );
    integrity(ctx).await?;
    Ok(ExitCode::SUCCESS)
}

/// Corruption the store found and repaired, and what the scrub has yet to re-hash.
async fn integrity(ctx: &Context) -> anyhow::Result<()> {
    let store = ctx.open_store()?;
    let every = cidmirror_store::scrub::ScrubConfig::default().every;
    let i = tokio::task::spawn_blocking(move || {
        let before = cidmirror_schema::UnixTime::now()
            .plus_secs(-i64::try_from(every.as_secs()).unwrap_or(0));
        store.integrity(before)
    })
    .await??;
    println!(
        "integrity      {} corrupt found, {} repaired, {} quarantined; {} files ({} bytes) not re-hashed within {}",
        i.found,
        i.repaired,
        i.quarantined,
        i.unchecked_files,
        i.unchecked_bytes,
        humantime::format_duration(every)
    );
    Ok(())
}
