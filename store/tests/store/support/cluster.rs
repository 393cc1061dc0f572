//! Real IPFS Cluster for tests: `ipfs-cluster-service` peers (CRDT consensus), each with its
//! own online Kubo, on loopback ports, and `ipfs-cluster-follow` followers, all built by
//! `scripts/install-go-peers.sh` at the version in `scripts/go-peers/versions`.
//!
//! What keeps a peer on 127.0.0.1 and quick: every listen address is a free loopback port,
//! MDNS is off (`mdns_interval` 0), the trusted peers are the peers started here (not `*`,
//! as a public collaborative cluster has it), the peers know each other through
//! `peer_addresses`, and the intervals that matter to a test (metrics, state sync, which is
//! what unpins an expired pin; the CRDT rebroadcast, which is how a new follower learns the
//! state) are seconds instead of minutes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Kubo, Mode, free_port, program, stop};

/// How long a peer may take to say it is ready.
const READY: Duration = Duration::from_secs(90);

/// The line both programs print when the peer is up.
const READY_LINE: &str = "IPFS Cluster is READY";

/// One `ipfs-cluster-service` peer and its Kubo; both stopped when dropped (the peer first).
pub struct Peer {
    child: Child,
    /// The REST API, `http://127.0.0.1:PORT`.
    pub rest: String,
    /// The REST API as a multiaddress, for `ipfs-cluster-ctl --host`.
    pub rest_maddr: String,
    /// The IPFS proxy API, `http://127.0.0.1:PORT`.
    pub proxy: String,
    /// The cluster peer id.
    pub id: String,
    /// The peer's cluster swarm address with `/p2p/ID`.
    pub addr: String,
    /// The configuration folder (`service.json`, `identity.json`).
    pub dir: PathBuf,
    log: PathBuf,
    /// The peer's own Kubo (dropped after the peer: fields drop in order).
    pub kubo: Kubo,
    _tmp: tempfile::TempDir,
}

/// A running cluster of `ipfs-cluster-service` peers.
pub struct Cluster {
    pub peers: Vec<Peer>,
    /// The cluster secret (hex), which followers need too.
    pub secret: String,
}

/// 32 random bytes in hex.
fn random_hex() -> String {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("/dev/urandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn read_json(p: &Path) -> serde_json::Value {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn write_json(p: &Path, v: &serde_json::Value) {
    std::fs::write(p, serde_json::to_vec_pretty(v).expect("json"))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
}

fn tcp(port: u16) -> String {
    format!("/ip4/127.0.0.1/tcp/{port}")
}

/// The TCP port of a Kubo URL `http://127.0.0.1:PORT`.
fn port_of(url: &str) -> &str {
    url.rsplit(':').next().expect("a port")
}

/// Waits (bounded) for `READY_LINE` in `log`; panics with the log if the child exits first.
fn wait_ready(child: &mut Child, log: &Path, what: &str) {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(READY_LINE) {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}):\n{text}");
        }
        assert!(
            start.elapsed() < READY,
            "{what} not ready after {READY:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// GET through curl, bounded; the body (panics unless 2xx).
fn curl_get(url: &str) -> String {
    let o = Command::new("curl")
        .args(["-s", "-f", "-m", "30", url])
        .output()
        .expect("curl runs");
    assert!(o.status.success(), "GET {url}: curl {}", o.status);
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Settings every peer and follower here gets, on top of Cluster's defaults.
fn tune(cfg: &mut serde_json::Value) {
    let c = &mut cfg["cluster"];
    c["mdns_interval"] = "0s".into();
    c["monitor_ping_interval"] = "2s".into();
    c["peer_watch_interval"] = "2s".into();
    c["state_sync_interval"] = "2s".into();
    c["pin_recover_interval"] = "10s".into();
    c["dial_peer_timeout"] = "2s".into();
    // A new follower learns the cluster's state when the trusted peers rebroadcast their
    // CRDT heads (every minute by default).
    cfg["consensus"]["crdt"]["rebroadcast_interval"] = "2s".into();
    cfg["ipfs_connector"]["ipfshttp"]["connect_swarms_delay"] = "1s".into();
    cfg["informer"]["disk"]["metric_ttl"] = "5s".into();
    cfg["informer"]["pinqueue"]["metric_ttl"] = "5s".into();
    cfg["informer"]["tags"]["metric_ttl"] = "5s".into();
    cfg["monitor"]["pubsubmon"]["check_interval"] = "2s".into();
    // A test's datastore needs no 1 GiB cache.
    cfg["datastore"]["pebble"]["pebble_options"]["cache_size_bytes"] = (16u64 << 20).into();
}

impl Cluster {
    /// `n` peers, each with its own online Kubo, the Kubos connected to each other; returns
    /// once every peer sees the others and has a free-space metric from each (until then
    /// a pin with replication n fails to allocate).
    pub fn start(n: usize) -> Cluster {
        assert!(n >= 1);
        let secret = random_hex();
        struct Prepared {
            tmp: tempfile::TempDir,
            dir: PathBuf,
            kubo: Kubo,
            id: String,
            rest: u16,
            proxy: u16,
            swarm: u16,
        }
        let mut prepared = Vec::new();
        for _ in 0..n {
            let kubo = Kubo::start_with(Mode::Online, &[]);
            let tmp = tempfile::tempdir().expect("temp dir");
            let dir = tmp.path().join("cluster");
            let out = Command::new(program("ipfs-cluster-service"))
                .arg("--config")
                .arg(&dir)
                .args(["init", "--consensus", "crdt"])
                .output()
                .expect("ipfs-cluster-service init runs");
            assert!(
                out.status.success(),
                "ipfs-cluster-service init: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let id = read_json(&dir.join("identity.json"))["id"]
                .as_str()
                .expect("an id in identity.json")
                .to_string();
            prepared.push(Prepared {
                tmp,
                dir,
                kubo,
                id,
                rest: free_port(),
                proxy: free_port(),
                swarm: free_port(),
            });
        }
        let ids: Vec<String> = prepared.iter().map(|p| p.id.clone()).collect();
        let addrs: Vec<String> = prepared
            .iter()
            .map(|p| format!("{}/p2p/{}", tcp(p.swarm), p.id))
            .collect();
        let mut peers = Vec::new();
        for (i, p) in prepared.into_iter().enumerate() {
            let path = p.dir.join("service.json");
            let mut cfg = read_json(&path);
            tune(&mut cfg);
            let node = tcp(port_of(&p.kubo.api).parse().expect("a port"));
            cfg["cluster"]["secret"] = secret.clone().into();
            cfg["cluster"]["peername"] = format!("peer{i}").into();
            cfg["cluster"]["listen_multiaddress"] = serde_json::json!([tcp(p.swarm)]);
            let others: Vec<&String> = addrs.iter().filter(|a| !a.ends_with(&p.id)).collect();
            cfg["cluster"]["peer_addresses"] = serde_json::json!(others);
            cfg["consensus"]["crdt"]["trusted_peers"] = serde_json::json!(ids);
            cfg["api"]["restapi"]["http_listen_multiaddress"] = tcp(p.rest).into();
            cfg["api"]["ipfsproxy"]["listen_multiaddress"] = tcp(p.proxy).into();
            cfg["api"]["ipfsproxy"]["node_multiaddress"] = node.clone().into();
            cfg["api"]["pinsvcapi"]["http_listen_multiaddress"] = tcp(free_port()).into();
            cfg["ipfs_connector"]["ipfshttp"]["node_multiaddress"] = node.into();
            cfg["observations"]["metrics"]["prometheus_endpoint"] = tcp(free_port()).into();
            write_json(&path, &cfg);
            let log = p.tmp.path().join("cluster.log");
            let out = std::fs::File::create(&log).expect("log file");
            let err = out.try_clone().expect("log file");
            let mut child = Command::new(program("ipfs-cluster-service"))
                .arg("--config")
                .arg(&p.dir)
                .arg("daemon")
                .stdout(out)
                .stderr(err)
                .stdin(Stdio::null())
                .spawn()
                .expect("ipfs-cluster-service daemon starts");
            wait_ready(&mut child, &log, &format!("cluster peer{i}"));
            peers.push(Peer {
                child,
                rest: format!("http://127.0.0.1:{}", p.rest),
                rest_maddr: tcp(p.rest),
                proxy: format!("http://127.0.0.1:{}", p.proxy),
                id: p.id,
                addr: addrs[i].clone(),
                dir: p.dir,
                log,
                kubo: p.kubo,
                _tmp: p.tmp,
            });
        }
        // Block exchange between the peers' nodes does not wait for the connector.
        for a in &peers {
            for b in &peers {
                if a.id != b.id {
                    a.kubo.cli(&[
                        "swarm",
                        "connect",
                        &format!("{}/p2p/{}", b.kubo.swarm, b.kubo.peer_id()),
                    ]);
                }
            }
        }
        let c = Cluster { peers, secret };
        c.wait_metrics(n);
        c
    }

    /// Waits (bounded) until the first peer has a live free-space metric from `n` peers.
    pub fn wait_metrics(&self, n: usize) {
        let start = Instant::now();
        loop {
            let body = curl_get(&format!("{}/monitor/metrics/freespace", self.peers[0].rest));
            let live = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.as_array().map(|a| a.len()))
                .unwrap_or(0);
            if live >= n {
                return;
            }
            assert!(
                start.elapsed() < READY,
                "only {live} of {n} peers report free space after {READY:?}: {body}\n{}",
                self.peers[0].log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `ipfs-cluster-ctl --host <peer i's REST> --enc json ARGS`, parsed; panics unless it
    /// succeeds. `ipfs-cluster-ctl` prints one JSON value per line for lists.
    pub fn ctl_json(&self, i: usize, args: &[&str]) -> Vec<serde_json::Value> {
        let text = self.ctl(i, &[&["--enc", "json"], args].concat());
        let mut out = Vec::new();
        for v in serde_json::Deserializer::from_str(&text).into_iter::<serde_json::Value>() {
            out.push(v.unwrap_or_else(|e| panic!("ipfs-cluster-ctl {args:?}: {e}: {text}")));
        }
        out
    }

    /// `ipfs-cluster-ctl --host <peer i's REST> ARGS`; stdout; panics unless it succeeds.
    pub fn ctl(&self, i: usize, args: &[&str]) -> String {
        let out = Command::new(program("ipfs-cluster-ctl"))
            .args(["--host", &self.peers[i].rest_maddr])
            .args(args)
            .output()
            .expect("ipfs-cluster-ctl runs");
        assert!(
            out.status.success(),
            "ipfs-cluster-ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Peer {
    /// What the peer printed so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// An `ipfs-cluster-follow NAME run --init URL` process with its own online Kubo; both
/// stopped when dropped.
pub struct Follower {
    child: Child,
    log: PathBuf,
    /// The follower's Kubo (its gateway is what a follower gateway takes as `--source`).
    pub kubo: Kubo,
    _tmp: tempfile::TempDir,
}

impl Follower {
    /// Starts a follower of cluster `name` from the configuration at `url`, with a fresh
    /// Kubo connected to `connect` (swarm addresses with `/p2p/`), as a volunteer would:
    /// only the node address and the listen address are set here, by the environment
    /// variables Cluster reads; everything else comes from `url`.
    pub fn start(name: &str, url: &str, connect: &[String]) -> Follower {
        let kubo = Kubo::start_with(Mode::Online, &[]);
        for a in connect {
            kubo.cli(&["swarm", "connect", a]);
        }
        let tmp = tempfile::tempdir().expect("temp dir");
        let log = tmp.path().join("follow.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let node = tcp(port_of(&kubo.api).parse().expect("a port"));
        let mut child = Command::new(program("ipfs-cluster-follow"))
            .arg("--config")
            .arg(tmp.path().join("follow"))
            .args([name, "run", "--init", url])
            .env("HOME", tmp.path())
            .env("CLUSTER_IPFSHTTP_NODEMULTIADDRESS", &node)
            .env("CLUSTER_LISTENMULTIADDRESS", tcp(free_port()))
            .env("CLUSTER_MDNSINTERVAL", "0s")
            .stdout(out)
            .stderr(err)
            .stdin(Stdio::null())
            .spawn()
            .expect("ipfs-cluster-follow starts");
        wait_ready(&mut child, &log, "ipfs-cluster-follow");
        Follower {
            child,
            log,
            kubo,
            _tmp: tmp,
        }
    }

    /// What the follower printed so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The CIDs the follower's Kubo has pinned recursively.
    pub fn pinned(&self) -> Vec<String> {
        self.kubo
            .cli(&["pin", "ls", "--type", "recursive", "--quiet"])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}
