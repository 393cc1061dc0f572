//! `--store`: which store a command works on.
//!
//! `embedded` (default) keeps blocks under the data directory; `kubo=URL` puts them in a
//! Kubo node (or any node with Kubo's RPC API) and keeps the pin ledger under
//! `<data>/kubo/`; `cluster=REST[,proxy=URL][,replication-min=N][,replication-max=N]`
//! pins through an IPFS Cluster's REST API (user and password in the REST URL, if it
//! asks for them) and moves blocks through its Kubo-compatible proxy (default: the REST
//! host, port 9095), pin ledger under `<data>/cluster/`.

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
    /// An IPFS Cluster.
    Cluster(cidmirror_store::ClusterOptions),
}

fn http_url(what: &str, s: &str) -> Result<url::Url, String> {
    let u: url::Url = s
        .parse()
        .map_err(|e| format!("{what} {s:?}: {e} (expected http://HOST:PORT)"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(format!("{what} {s:?}: expected http://HOST:PORT"));
    }
    Ok(u)
}

fn parse_cluster(spec: &str) -> Result<cidmirror_store::ClusterOptions, String> {
    let mut parts = spec.split(',');
    let rest = http_url("cluster", parts.next().unwrap_or_default())?;
    let mut opts = cidmirror_store::ClusterOptions::default();
    if !rest.username().is_empty() {
        opts.basic_auth = Some((
            rest.username().to_string(),
            rest.password().unwrap_or_default().to_string(),
        ));
    }
    let mut plain = rest.clone();
    let _ = plain.set_username("");
    let _ = plain.set_password(None);
    opts.rest = plain.as_str().trim_end_matches('/').to_string();
    let mut proxy = plain.clone();
    let _ = proxy.set_port(Some(9095));
    opts.proxy = proxy.as_str().trim_end_matches('/').to_string();
    for part in parts {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("cluster option {part:?}: expected KEY=VALUE"))?;
        let num = || {
            v.parse::<i32>()
                .map_err(|_| format!("cluster option {k}={v}: expected a number (-1: every peer)"))
        };
        match k {
            "proxy" => {
                opts.proxy = http_url("cluster proxy", v)?
                    .as_str()
                    .trim_end_matches('/')
                    .to_string()
            }
            "replication-min" => opts.replication_min = num()?,
            "replication-max" => opts.replication_max = num()?,
            _ => {
                return Err(format!(
                    "unknown cluster option {k:?}: use proxy, replication-min, replication-max"
                ));
            }
        }
    }
    Ok(opts)
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
            Some(("cluster", spec)) => Ok(StoreSpec::Cluster(parse_cluster(spec)?)),
            _ => Err(format!(
                "unknown store {s:?}: use `embedded`, `kubo=http://HOST:PORT` or \
                 `cluster=http://HOST:9094[,proxy=URL]`"
            )),
        }
    }
}

impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreSpec::Embedded => f.write_str("embedded"),
            StoreSpec::Kubo(url) => write!(f, "kubo={url}"),
            StoreSpec::Cluster(o) => write!(
                f,
                "cluster={},proxy={},replication-min={},replication-max={}",
                o.rest, o.proxy, o.replication_min, o.replication_max
            ),
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
    /// An IPFS Cluster.
    Cluster(cidmirror_store::ClusterStore),
}

impl Opened {
    /// The store behind the trait.
    pub fn as_dyn(&self) -> Arc<dyn Store> {
        match self {
            Opened::Embedded(s) => Arc::new(s.clone()),
            Opened::Kubo(s) => Arc::new(s.clone()),
            Opened::Cluster(s) => Arc::new(s.clone()),
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
            Opened::Cluster(c) => anyhow::bail!(
                "{what} works on the embedded store only (this is cluster={}; its peers \
                 serve /ipfs/ themselves)",
                c.api()
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
            StoreSpec::Cluster(opts) => {
                let dir = self.data_dir.join("cluster");
                let s = cidmirror_store::ClusterStore::connect(opts, &dir)
                    .await
                    .map_err(|e| anyhow::anyhow!("opening the cluster store: {e}"))?;
                Ok(Opened::Cluster(s))
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
            ("cluster=ftp://x", None),
            ("cluster=http://127.0.0.1:9094,shards=3", None),
            ("cluster=http://127.0.0.1:9094,replication-min=x", None),
            ("", None),
        ] {
            let got = s.parse::<StoreSpec>();
            assert_eq!(got.clone().ok(), want, "{s}: {got:?}");
            if let Ok(spec) = got {
                assert_eq!(spec.to_string().parse::<StoreSpec>(), Ok(spec));
            }
        }
        let StoreSpec::Cluster(o) =
            "cluster=http://u:pw@10.0.0.1:9094/,replication-min=2,replication-max=3"
                .parse::<StoreSpec>()
                .unwrap()
        else {
            panic!("a cluster spec")
        };
        assert_eq!(o.rest, "http://10.0.0.1:9094");
        assert_eq!(o.proxy, "http://10.0.0.1:9095");
        assert_eq!((o.replication_min, o.replication_max), (2, 3));
        assert_eq!(o.basic_auth, Some(("u".into(), "pw".into())));
        let StoreSpec::Cluster(o) = "cluster=http://h:1,proxy=http://p:2"
            .parse::<StoreSpec>()
            .unwrap()
        else {
            panic!("a cluster spec")
        };
        assert_eq!(o.proxy, "http://p:2");
    }
}
