//! `--store`: which store a command works on.
//!
//! `embedded` (default) keeps blocks under the data directory; `kubo=URL` puts them in a
//! Kubo node (or any node with Kubo's RPC API) and keeps the pin ledger under
//! `<data>/kubo/`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use cidmirror_store::{EmbeddedStore, KuboStore, Store};

use crate::Context;

/// A store as named on the command line or in the settings file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreSpec {
    /// Blocks under the data directory.
    #[default]
    Embedded,
    /// A Kubo node's RPC API, `http://127.0.0.1:5001`.
    Kubo(String),
}

impl FromStr for StoreSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            None if s == "embedded" => Ok(StoreSpec::Embedded),
            Some(("kubo", url)) if url.starts_with("http://") || url.starts_with("https://") => {
                Ok(StoreSpec::Kubo(url.trim_end_matches('/').to_string()))
            }
            Some(("kubo", url)) => Err(format!(
                "kubo={url}: the node's RPC API as http://HOST:PORT (e.g. kubo=http://127.0.0.1:5001)"
            )),
            _ => Err(format!(
                "unknown store {s:?}: use `embedded` or `kubo=http://HOST:PORT`"
            )),
        }
    }
}

impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreSpec::Embedded => f.write_str("embedded"),
            StoreSpec::Kubo(url) => write!(f, "kubo={url}"),
        }
    }
}

/// An open store of any kind.
#[derive(Clone)]
pub enum Opened {
    /// The embedded store.
    Embedded(EmbeddedStore),
    /// A Kubo node.
    Kubo(KuboStore),
}

impl Opened {
    /// The store behind the trait.
    pub fn as_dyn(&self) -> Arc<dyn Store> {
        match self {
            Opened::Embedded(s) => Arc::new(s.clone()),
            Opened::Kubo(s) => Arc::new(s.clone()),
        }
    }

    /// The embedded store, or an error saying that `what` needs it.
    pub fn embedded(&self, what: &str) -> anyhow::Result<&EmbeddedStore> {
        match self {
            Opened::Embedded(s) => Ok(s),
            Opened::Kubo(k) => anyhow::bail!(
                "{what} works on the embedded store only (this is kubo={}; its node serves \
                 /ipfs/ itself)",
                k.api()
            ),
        }
    }
}

impl Context {
    /// Opens the store `spec` names (`--store` wins over the settings file's `store`).
    pub async fn open(&self, settings: Option<&StoreSpec>) -> anyhow::Result<Opened> {
        let spec = self
            .store
            .as_ref()
            .or(settings)
            .cloned()
            .unwrap_or_default();
        match spec {
            StoreSpec::Embedded => Ok(Opened::Embedded(self.open_store()?)),
            StoreSpec::Kubo(url) => {
                let dir = self.data_dir.join("kubo");
                let s = KuboStore::connect(&url, &dir)
                    .await
                    .map_err(|e| anyhow::anyhow!("opening the kubo store: {e}"))?;
                Ok(Opened::Kubo(s))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_back() {
        for (s, want) in [
            ("embedded", Some(StoreSpec::Embedded)),
            (
                "kubo=http://127.0.0.1:5001/",
                Some(StoreSpec::Kubo("http://127.0.0.1:5001".into())),
            ),
            ("kubo=127.0.0.1:5001", None),
            ("ipfs", None),
            ("", None),
        ] {
            let got = s.parse::<StoreSpec>();
            assert_eq!(got.clone().ok(), want, "{s}: {got:?}");
            if let Ok(spec) = got {
                assert_eq!(spec.to_string().parse::<StoreSpec>(), Ok(spec));
            }
        }
    }
}
