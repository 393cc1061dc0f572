//! Real Kubo for tests: `ipfs` built by `scripts/install-go-peers.sh` (the version is in
//! `scripts/go-peers/versions`), started here with its own repo on loopback ports and killed
//! when dropped. Also the place that finds the other Go-built programs (IPFS Cluster).
//! Shared with the CLI tests through `#[path]`.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A free loopback port (another process could take it before it is used: good enough on a
/// test machine, and every start checks the daemon came up).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The workspace root (where `scripts/` is).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|p| p.join("scripts/install-go-peers.sh").exists())
        .expect("the workspace root")
        .to_path_buf()
}

/// Where the Go-built programs are: `$CIDMIRROR_GO_PEERS/bin` or `<workspace>/target/go-peers/bin`,
/// building them there first if needed (the script does nothing when they are in place).
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Command::new(workspace().join("scripts/install-go-peers.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("running scripts/install-go-peers.sh");
        assert!(
            out.status.success(),
            "scripts/install-go-peers.sh failed: Kubo and IPFS Cluster are needed for these tests"
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

/// The path of the Go-built program `name` (`ipfs`, `ipfs-cluster-service`, ...).
pub fn program(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(p.exists(), "{} is missing", p.display());
    p
}

/// The version line of Kubo (`ipfs version`), for messages.
pub fn kubo_version() -> String {
    let out = Command::new(program("ipfs"))
        .arg("version")
        .output()
        .expect("ipfs version");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs `ipfs ARGS` with `IPFS_PATH=repo`; panics unless it succeeds; returns stdout.
pub fn ipfs_in(repo: &Path, args: &[&str]) -> String {
    let out = Command::new(program("ipfs"))
        .args(args)
        .env("IPFS_PATH", repo)
        .output()
        .expect("ipfs runs");
    assert!(
        out.status.success(),
        "ipfs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// How a node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `ipfs daemon --offline`: no block exchange; a lone node.
    Offline,
    /// Block exchange over loopback with the peers it is connected to, no routing, no
    /// bootstrap: a cluster peer's node.
    Online,
}

/// A running Kubo daemon; killed when dropped.
pub struct Kubo {
    child: Child,
    /// The RPC API, `http://127.0.0.1:PORT`.
    pub api: String,
    /// The gateway, `http://127.0.0.1:PORT`.
    pub gateway: String,
    /// The swarm address, `/ip4/127.0.0.1/tcp/PORT`.
    pub swarm: String,
    /// `IPFS_PATH`.
    pub repo: PathBuf,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Kubo {
    /// A lone node (`--offline`).
    pub fn start() -> Kubo {
        Kubo::start_with(Mode::Offline, &[])
    }

    /// Initialises a repo with the `test` profile (loopback only, no bootstrap, no MDNS,
    /// no AutoTLS, no AutoConf), applies `profiles` (e.g. `unixfs-v1-2025`), sets free ports
    /// and `Routing.Type=none`, and starts the daemon; waits (bounded) until it is ready.
    pub fn start_with(mode: Mode, profiles: &[&str]) -> Kubo {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = dir.path().join("ipfs");
        let ipfs = |args: &[&str]| {
            let mut c = Command::new(program("ipfs"));
            c.args(args).env("IPFS_PATH", &repo);
            c
        };
        let mut profile = String::from("test");
        for p in profiles {
            profile.push(',');
            profile.push_str(p);
        }
        let init = ipfs(&["init", "--empty-repo", "--profile", &profile])
            .output()
            .expect("ipfs init runs");
        assert!(
            init.status.success(),
            "ipfs init: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let (api, gw, swarm) = (free_port(), free_port(), free_port());
        let cfg_path = repo.join("config");
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&cfg_path).expect("config")).expect("json");
        let swarm_addr = format!("/ip4/127.0.0.1/tcp/{swarm}");
        cfg["Addresses"]["Swarm"] = serde_json::json!([swarm_addr]);
        cfg["Addresses"]["API"] = serde_json::json!(format!("/ip4/127.0.0.1/tcp/{api}"));
        cfg["Addresses"]["Gateway"] = serde_json::json!(format!("/ip4/127.0.0.1/tcp/{gw}"));
        cfg["Addresses"]["Announce"] = serde_json::json!([swarm_addr]);
        cfg["Routing"]["Type"] = serde_json::json!("none");
        // Nothing to announce to: no provider records, no reprovider work.
        cfg["Provide"]["Enabled"] = serde_json::json!(false);
        // Loopback peers would otherwise be filtered as "private" by the resource manager
        // on some setups; keep the defaults otherwise.
        cfg["Swarm"]["ResourceMgr"]["Enabled"] = serde_json::json!(false);
        std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).expect("json")).expect("config");
        let log = dir.path().join("daemon.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut args = vec!["daemon"];
        if mode == Mode::Offline {
            args.push("--offline");
        }
        let child = ipfs(&args)
            .stdout(out)
            .stderr(err)
            .stdin(Stdio::null())
            .spawn()
            .expect("ipfs daemon starts");
        let mut n = Kubo {
            child,
            api: format!("http://127.0.0.1:{api}"),
            gateway: format!("http://127.0.0.1:{gw}"),
            swarm: swarm_addr,
            repo,
            _dir: dir,
            log,
        };
        n.wait_ready(Duration::from_secs(60));
        n
    }

    fn wait_ready(&mut self, limit: Duration) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("ipfs daemon exited ({status}):\n{}", self.log_text());
            }
            if self.log_text().contains("Daemon is ready") {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "ipfs daemon not ready after {limit:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `ipfs ARGS` against this node's repo (the CLI talks to the running daemon);
    /// panics unless it succeeds; returns stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        ipfs_in(&self.repo, args)
    }

    /// The node's peer id.
    pub fn peer_id(&self) -> String {
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.repo.join("config")).expect("config"))
                .expect("json");
        cfg["Identity"]["PeerID"]
            .as_str()
            .expect("a peer id")
            .to_string()
    }

    /// What the daemon printed so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Kubo {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Stops a daemon: SIGTERM first (Kubo and Cluster close their datastores cleanly), SIGKILL
/// if it lingers past 5 s.
pub fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// IPFS Cluster peers and followers, each on a Kubo from here.
#[path = "cluster.rs"]
pub mod cluster;
