//! `cidmirror cluster follower-config`: the file IPFS Cluster volunteers start from
//! (`ipfs-cluster-follow NAME run --init URL`), written from the publisher's cluster peer
//! configuration and its REST API, for `serve --cluster-config NAME=FILE` to host. What the
//! file must be is in `cidmirror_resolver::cluster`.
//!
//! From the peer's `service.json` it keeps the cluster secret, the CRDT settings (the
//! cluster name and the trusted peers, which must be listed, not `*`), the pin tracker,
//! monitor, informer, allocator and datastore sections; it drops `api` (REST credentials
//! live there; a follower uses a local socket) and `observations`, and sets what a follower
//! needs: `follower_mode`, no peer name, Cluster's default listen addresses (or
//! `--listen`), its local Kubo at the default address, and `peer_addresses` (where to
//! bootstrap) from the REST API's `GET /peers`: every address of every trusted peer.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::Context;
use crate::stores::StoreSpec;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Write the follower configuration of the cluster that `--store cluster=...` names
    /// (or --rest), from one of its peers' service.json.
    FollowerConfig(FollowerArgs),
}

#[derive(clap::Args, Debug)]
pub struct FollowerArgs {
    /// The `service.json` of one of the publisher's cluster peers.
    #[arg(long, value_name = "FILE")]
    service: PathBuf,

    /// The cluster's REST API, if not the one `--store cluster=URL` names.
    #[arg(long, value_name = "URL")]
    rest: Option<String>,

    /// A listen address for followers (repeatable; default Cluster's own,
    /// /ip4/0.0.0.0/tcp/9096 and /ip4/0.0.0.0/udp/9096/quic).
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<String>,

    /// Write here (replaced whole, never left half-written) instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// A service.json is a few KiB; a REST answer about the peers of a big cluster, a few MiB.
const SERVICE_MAX: usize = 1 << 20;
const PEERS_MAX: usize = 8 << 20;

pub async fn run(ctx: &Context, cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::FollowerConfig(a) => follower_config(ctx, a).await,
    }
}

async fn follower_config(ctx: &Context, a: FollowerArgs) -> anyhow::Result<ExitCode> {
    let (rest, auth) = match (&a.rest, &ctx.store) {
        (Some(r), _) => (r.clone(), None),
        (None, Some(StoreSpec::Cluster(o))) => (o.rest.clone(), o.basic_auth.clone()),
        _ => bail!("which cluster? give --store cluster=http://HOST:9094 or --rest URL"),
    };
    let service = read_service(&a.service)?;
    let peers = fetch_peers(&rest, auth.as_ref()).await?;
    let cfg =
        build(&service, &peers, &a.listen).with_context(|| format!("{}", a.service.display()))?;
    let mut bytes = serde_json::to_vec_pretty(&cfg)?;
    bytes.push(b'\n');
    cidmirror_resolver::cluster::check(&bytes)
        .map_err(|e| anyhow::anyhow!("the configuration written would be refused: {e}"))?;
    match &a.out {
        None => std::io::stdout().write_all(&bytes)?,
        Some(path) => {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let mut tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("creating a file in {}", dir.display()))?;
            tmp.write_all(&bytes)?;
            tmp.as_file().sync_all()?;
            tmp.persist(path)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "wrote {}: serve it with `cidmirror serve --cluster-config NAME={}`",
                path.display(),
                path.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_service(p: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let buf = cidmirror_resolver::cluster::read_bounded(p, SERVICE_MAX)
        .with_context(|| format!("reading {}", p.display()))?;
    if buf.len() > SERVICE_MAX {
        bail!("{}: larger than {SERVICE_MAX} bytes", p.display());
    }
    serde_json::from_slice(&buf).with_context(|| format!("{}: not JSON", p.display()))
}

/// `GET /peers`: Cluster streams one JSON object per peer (older versions, one array).
async fn fetch_peers(
    rest: &str,
    auth: Option<&(String, String)>,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let url = format!("{}/peers", rest.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut req = client.get(&url);
    if let Some((u, p)) = auth {
        req = req.basic_auth(u, Some(p));
    }
    let mut resp = req
        .send()
        .await
        .with_context(|| format!("asking the cluster for its peers: GET {url}"))?;
    if !resp.status().is_success() {
        bail!("GET {url}: {}", resp.status());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .with_context(|| format!("GET {url}: reading the answer"))?
    {
        if body.len() + chunk.len() > PEERS_MAX {
            bail!("GET {url}: more than {PEERS_MAX} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    let mut out = Vec::new();
    for v in serde_json::Deserializer::from_slice(&body).into_iter::<serde_json::Value>() {
        match v.with_context(|| format!("GET {url}: not JSON"))? {
            serde_json::Value::Array(a) => out.extend(a),
            o => out.push(o),
        }
    }
    Ok(out)
}

/// The follower configuration from a peer's `service.json` and the cluster's peers.
fn build(
    service: &serde_json::Value,
    peers: &[serde_json::Value],
    listen: &[String],
) -> anyhow::Result<serde_json::Value> {
    let mut cfg = service.clone();
    let obj = cfg.as_object_mut().context("not a JSON object")?;
    if obj.contains_key("source") {
        bail!("this service.json only points to a source; give the peer's own configuration");
    }
    obj.remove("api");
    obj.remove("observations");
    let trusted: Vec<String> = cfg["consensus"]["crdt"]["trusted_peers"]
        .as_array()
        .context("no consensus.crdt.trusted_peers: followers need a CRDT cluster")?
        .iter()
        .filter_map(|p| p.as_str().map(str::to_string))
        .collect();
    if trusted.iter().any(|p| p == "*") || trusted.is_empty() {
        bail!(
            "consensus.crdt.trusted_peers is {:?}: with \"*\" (or none) every follower could pin \
             and unpin for the whole cluster; list the publisher's peer ids there first",
            trusted
        );
    }
    let mut addrs = Vec::new();
    for p in peers {
        let Some(id) = p["id"].as_str() else { continue };
        if !trusted.iter().any(|t| t == id) {
            continue;
        }
        for a in p["addresses"].as_array().into_iter().flatten() {
            let Some(a) = a.as_str() else { continue };
            let full = if a.contains("/p2p/") {
                a.to_string()
            } else {
                format!("{a}/p2p/{id}")
            };
            if !addrs.contains(&full) {
                addrs.push(full);
            }
        }
    }
    if addrs.is_empty() {
        bail!(
            "none of the trusted peers ({}) answered with an address in GET /peers: \
             followers would have nowhere to bootstrap from",
            trusted.join(", ")
        );
    }
    let listen: Vec<String> = if listen.is_empty() {
        vec![
            "/ip4/0.0.0.0/tcp/9096".into(),
            "/ip4/0.0.0.0/udp/9096/quic".into(),
        ]
    } else {
        listen.to_vec()
    };
    let c = &mut cfg["cluster"];
    if !c.is_object() {
        bail!("no cluster section");
    }
    c["peername"] = "".into();
    c["follower_mode"] = true.into();
    c["listen_multiaddress"] = serde_json::json!(listen);
    c["peer_addresses"] = serde_json::json!(addrs);
    if cfg["ipfs_connector"]["ipfshttp"].is_object() {
        cfg["ipfs_connector"]["ipfshttp"]["node_multiaddress"] = "/ip4/127.0.0.1/tcp/5001".into();
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> serde_json::Value {
        serde_json::json!({
            "cluster": {"secret": "cd".repeat(32), "peername": "pub1",
                        "listen_multiaddress": ["/ip4/10.0.0.1/tcp/9096"]},
            "consensus": {"crdt": {"cluster_name": "pkg", "trusted_peers": ["12D3KooWA"]}},
            "api": {"restapi": {"basic_auth_credentials": {"admin": "hunter2"}}},
            "observations": {},
            "ipfs_connector": {"ipfshttp": {"node_multiaddress": "/dns4/ipfs/tcp/5001"}},
        })
    }

    fn peers() -> Vec<serde_json::Value> {
        vec![
            serde_json::json!({"id": "12D3KooWA", "addresses": ["/ip4/10.0.0.1/tcp/9096/p2p/12D3KooWA"]}),
            serde_json::json!({"id": "12D3KooWX", "addresses": ["/ip4/10.0.0.9/tcp/9096/p2p/12D3KooWX"]}),
        ]
    }

    #[test]
    fn a_follower_configuration_keeps_the_secret_and_drops_the_credentials() {
        let cfg = build(&service(), &peers(), &[]).unwrap();
        let text = serde_json::to_string(&cfg).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(cfg.get("api").is_none());
        assert_eq!(cfg["cluster"]["secret"], "cd".repeat(32));
        assert_eq!(cfg["cluster"]["follower_mode"], true);
        assert_eq!(cfg["cluster"]["peername"], "");
        assert_eq!(
            cfg["cluster"]["peer_addresses"],
            serde_json::json!(["/ip4/10.0.0.1/tcp/9096/p2p/12D3KooWA"]),
            "only the trusted peers"
        );
        assert_eq!(
            cfg["ipfs_connector"]["ipfshttp"]["node_multiaddress"],
            "/ip4/127.0.0.1/tcp/5001"
        );
        let bytes = serde_json::to_vec(&cfg).unwrap();
        assert!(cidmirror_resolver::cluster::check(&bytes).is_ok());
    }

    #[test]
    fn an_open_cluster_or_one_without_addresses_is_refused() {
        let mut s = service();
        s["consensus"]["crdt"]["trusted_peers"] = serde_json::json!(["*"]);
        let e = build(&s, &peers(), &[]).unwrap_err().to_string();
        assert!(e.contains("\"*\""), "{e}");
        let e = build(&service(), &peers()[1..], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("nowhere to bootstrap"), "{e}");
        let e = build(&serde_json::json!({"source": "http://x"}), &peers(), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("source"), "{e}");
    }
}
