//! The follower configuration of an IPFS Cluster, served at
//! `GET /cluster/<name>/service.json` for `ipfs-cluster-follow <name> run --init <URL>`.
//!
//! This is how the collaborative clusters (the pacman one among them) took volunteers: the
//! operators host one `service.json` without API sections, with the cluster's secret, its
//! `trusted_peers` (the only peers whose pins the followers accept) and the addresses to
//! bootstrap from; `ipfs-cluster-follow` keeps only `{"source": URL}` on disk and fetches
//! the file again at every start (IPFS Cluster `config/config.go`,
//! `LoadJSONFromHTTPSource`; `cmd/ipfs-cluster-follow/commands.go`, `initCluster` and
//! `runCmd`, which also replaces the REST API with a local socket and forces
//! `follower_mode`). The file is public by design: the secret only keeps other libp2p
//! networks out, and what protects the cluster's content is the list of trusted peers.
//!
//! [`check`] is what `cidmirror cluster follower-config` promises of its output and what
//! `serve --cluster-config NAME=FILE` refuses to start without: a JSON object of at most
//! [`MAX_BYTES`] with a 32-byte hex secret, a non-empty `trusted_peers` that is not `*`
//! (with `*` every follower could pin and unpin for everyone) and no `api` section (where
//! REST credentials live; a follower ignores it anyway).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::{ApiError, AppState};

/// A follower configuration's size limit (Cluster's own are a few KiB).
pub const MAX_BYTES: usize = 256 << 10;

/// Whether `name` may name a cluster in a URL path: 1-64 of `A-Z a-z 0-9 . _ -`, not
/// starting with a dot.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Checks a follower configuration (see the module doc); the error says what is wrong.
pub fn check(bytes: &[u8]) -> Result<serde_json::Value, String> {
    if bytes.len() > MAX_BYTES {
        return Err(format!(
            "{} bytes, more than the {MAX_BYTES} a follower configuration may have",
            bytes.len()
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    if obj.contains_key("api") {
        return Err(
            "it has an \"api\" section (REST credentials live there, and a follower \
             ignores it): remove it"
                .into(),
        );
    }
    if obj.contains_key("source") {
        return Err("it points to another source; serve the configuration itself".into());
    }
    let secret = v["cluster"]["secret"].as_str().ok_or("no cluster.secret")?;
    if secret.len() != 64 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("cluster.secret is not 64 hex digits".into());
    }
    let trusted = v["consensus"]["crdt"]["trusted_peers"]
        .as_array()
        .ok_or("no consensus.crdt.trusted_peers (followers need CRDT consensus)")?;
    if trusted.is_empty() {
        return Err("consensus.crdt.trusted_peers is empty: followers would accept no pins".into());
    }
    for p in trusted {
        match p.as_str() {
            Some("*") => {
                return Err(
                    "consensus.crdt.trusted_peers is \"*\": every follower could pin \
                     and unpin for the whole cluster; list the publisher's peer ids"
                        .into(),
                );
            }
            Some(id)
                if !id.is_empty()
                    && id.len() <= 128
                    && id.bytes().all(|b| b.is_ascii_alphanumeric()) => {}
            _ => {
                return Err(format!(
                    "consensus.crdt.trusted_peers: {p} is not a peer id"
                ));
            }
        }
    }
    if v["cluster"]["follower_mode"].as_bool() != Some(true) {
        return Err("cluster.follower_mode is not true".into());
    }
    Ok(v)
}

/// The follower configurations a server hosts, by cluster name.
#[derive(Clone, Debug, Default)]
pub struct FollowerConfigs(BTreeMap<String, Bytes>);

impl FollowerConfigs {
    /// Reads and checks `NAME=FILE` specs; the error names the spec and the file.
    pub fn load(specs: &[String]) -> Result<Self, String> {
        let mut out = BTreeMap::new();
        for spec in specs {
            let (name, file) = spec.split_once('=').ok_or_else(|| {
                format!("--cluster-config (cluster_configs) {spec:?}: expected NAME=FILE")
            })?;
            if !valid_name(name) {
                return Err(format!(
                    "--cluster-config (cluster_configs) {spec:?}: the name must be 1-64 of A-Z a-z 0-9 . _ - \
                     (it becomes /cluster/NAME/service.json)"
                ));
            }
            let bytes = read_bounded(std::path::Path::new(file), MAX_BYTES)
                .map_err(|e| format!("--cluster-config {name}: {file}: {e}"))?;
            check(&bytes).map_err(|e| format!("--cluster-config {name}: {file}: {e}"))?;
            if out.insert(name.to_string(), Bytes::from(bytes)).is_some() {
                return Err(format!("--cluster-config: {name} is given twice"));
            }
        }
        Ok(FollowerConfigs(out))
    }

    /// The names served.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    fn get(&self, name: &str) -> Option<&Bytes> {
        self.0.get(name)
    }
}

/// The first `max + 1` bytes of the file at `p` (more than `max` means too long), so that
/// a huge file or `/dev/zero` costs no more than that.
pub fn read_bounded(p: &std::path::Path, max: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(p)?
        .take(max as u64 + 1)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// `GET /cluster/{name}/service.json`.
pub(crate) async fn service_json(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Response {
    match state.cluster_configs().and_then(|c| c.get(&name)) {
        Some(b) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            b.clone(),
        )
            .into_response(),
        None => ApiError::NotFound(if valid_name(&name) {
            format!("no follower configuration for cluster {name}")
        } else {
            "no such cluster".into()
        })
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> serde_json::Value {
        serde_json::json!({
            "cluster": {"secret": "ab".repeat(32), "follower_mode": true, "peer_addresses": []},
            "consensus": {"crdt": {"cluster_name": "c", "trusted_peers": ["12D3KooWabc"]}},
        })
    }

    fn with(f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut v = good();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn follower_configurations_are_checked() {
        assert!(check(&with(|_| {})).is_ok());
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"[]".to_vec(), "not a JSON object"),
            (b"{".to_vec(), "not JSON"),
            (with(|v| v["api"] = serde_json::json!({})), "\"api\""),
            (with(|v| v["source"] = "http://x".into()), "another source"),
            (with(|v| v["cluster"]["secret"] = "xyz".into()), "64 hex"),
            (
                with(|v| v["consensus"]["crdt"]["trusted_peers"] = serde_json::json!(["*"])),
                "\"*\"",
            ),
            (
                with(|v| v["consensus"]["crdt"]["trusted_peers"] = serde_json::json!([])),
                "empty",
            ),
            (
                with(|v| v["consensus"]["crdt"]["trusted_peers"] = serde_json::json!(["a/b"])),
                "not a peer id",
            ),
            (
                with(|v| v["cluster"]["follower_mode"] = false.into()),
                "follower_mode",
            ),
            (vec![b' '; MAX_BYTES + 1], "more than"),
        ];
        for (bytes, want) in cases {
            let err = check(&bytes).unwrap_err();
            assert!(err.contains(want), "{err:?} should say {want:?}");
        }
    }

    #[test]
    fn names_fit_a_path_segment() {
        for ok in ["pkg.pacman.store", "arch_x86-64", "a"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "a b", "é", &"x".repeat(65), ".."] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
