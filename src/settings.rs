//! The TOML settings file shared by `mirror` and `serve`: the mirror's keys at the top
//! level, the server's under `[serve]`.

use std::path::Path;

use anyhow::Context as _;
use cidmirror_ingest::config::MirrorConfig;
use cidmirror_resolver::config::ServeConfig;

/// Both parts of a settings file.
#[derive(Debug, Default)]
pub struct Settings {
    /// Top-level keys.
    pub mirror: MirrorConfig,
    /// The `[serve]` table.
    pub serve: ServeConfig,
    /// The top-level `store` key (`kubo=http://127.0.0.1:5001`).
    pub store: Option<crate::stores::StoreSpec>,
}

/// Reads a settings file (or nothing, for `None`).
pub fn load(path: Option<&Path>) -> anyhow::Result<Settings> {
    let Some(path) = path else {
        return Ok(Settings::default());
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
    let serve = match table.remove("serve") {
        None => ServeConfig::default(),
        Some(v) => v
            .try_into()
            .with_context(|| format!("{}: [serve]", path.display()))?,
    };
    let store = match table.remove("store") {
        None => None,
        Some(toml::Value::String(s)) => Some(
            s.parse()
                .map_err(|e: String| anyhow::anyhow!("{}: store: {e}", path.display()))?,
        ),
        Some(other) => anyhow::bail!(
            "{}: store: expected a string like \"kubo=http://127.0.0.1:5001\", got {other}",
            path.display()
        ),
    };
    let mirror = MirrorConfig::from_table(table).with_context(|| format!("{}", path.display()))?;
    Ok(Settings {
        mirror,
        serve,
        store,
    })
}
