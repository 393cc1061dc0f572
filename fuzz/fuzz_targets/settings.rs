//! The TOML settings file, read as `cidmirror mirror`/`serve --config` reads it
//! (`src/settings.rs`): the mirror's keys at the top level, `[serve]` for the server,
//! each then validated with defaults applied.
#![no_main]

use cidmirror_ingest::config::{MirrorConfig, MirrorOptions};
use cidmirror_resolver::config::ServeConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut table) = toml::from_str::<toml::Table>(text) else {
        return;
    };
    if let Some(serve) = table.remove("serve")
        && let Ok(serve) = serve.try_into::<ServeConfig>()
    {
        let _ = serve.listen();
        let _ = serve.limits();
        let _ = serve.tracker();
        let _ = serve.follow(std::path::PathBuf::from("follow"));
        let merged = ServeConfig::default().overridden_by(serve.clone());
        assert_eq!(merged, serve);
    }
    // The binary's `store = "..."` key is read there (src/stores.rs), not in a library.
    table.remove("store");
    if let Ok(mirror) = MirrorConfig::from_table(table) {
        let merged = MirrorConfig::default().overridden_by(mirror.clone());
        assert_eq!(merged, mirror);
        if let Ok(o) = MirrorOptions::from_config(mirror) {
            assert!(!o.repos.is_empty() && !o.arches.is_empty());
            assert!((1..=256).contains(&o.concurrency));
        }
    }
});
