//! A real IPFS node for tests: js-ipfs 0.66.1 (npm `ipfs`, Kubo's HTTP RPC API), installed
//! by `scripts/install-js-ipfs.sh` and started here on loopback ports with its own repo.
//! Shared with the CLI tests through `#[path]`.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running node; killed when dropped.
pub struct JsIpfs {
    child: Child,
    /// The RPC API, `http://127.0.0.1:PORT`.
    pub api: String,
    /// The read-only gateway, `http://127.0.0.1:PORT`.
    pub gateway: String,
    _repo: tempfile::TempDir,
    log: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Where js-ipfs is installed: `$CIDMIRROR_JS_IPFS` or `<workspace>/target/js-ipfs`,
/// installing it there first if needed (the script does nothing when it is in place).
pub fn install_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = root
        .ancestors()
        .find(|p| p.join("scripts/install-js-ipfs.sh").exists())
        .expect("the workspace root")
        .to_path_buf();
    let out = Command::new(root.join("scripts/install-js-ipfs.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("running scripts/install-js-ipfs.sh");
    assert!(
        out.status.success(),
        "scripts/install-js-ipfs.sh failed: js-ipfs is needed for the kubo store tests"
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

impl JsIpfs {
    /// Initialises a repo and starts the daemon; waits (bounded) until the API answers.
    pub fn start() -> JsIpfs {
        let dir = install_dir();
        let cli = dir.join("node_modules/ipfs/src/cli.js");
        let repo = tempfile::tempdir().expect("temp dir");
        let node = |args: &[&str]| {
            let mut c = Command::new("node");
            c.arg(&cli).args(args).env("IPFS_PATH", repo.path());
            c
        };
        let init = node(&["init", "--empty-repo"])
            .output()
            .expect("node (Node.js) runs");
        assert!(
            init.status.success(),
            "ipfs init: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let (api, gw, swarm, rpc) = (free_port(), free_port(), free_port(), free_port());
        let cfg_path = repo.path().join("config");
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&cfg_path).expect("config")).expect("json");
        cfg["Bootstrap"] = serde_json::json!([]);
        cfg["Addresses"]["Swarm"] = serde_json::json!([format!("/ip4/127.0.0.1/tcp/{swarm}")]);
        cfg["Addresses"]["API"] = serde_json::json!(format!("/ip4/127.0.0.1/tcp/{api}"));
        cfg["Addresses"]["Gateway"] = serde_json::json!(format!("/ip4/127.0.0.1/tcp/{gw}"));
        cfg["Addresses"]["RPC"] = serde_json::json!(format!("/ip4/127.0.0.1/tcp/{rpc}"));
        cfg["Addresses"]["Delegates"] = serde_json::json!([]);
        cfg["Discovery"]["MDNS"]["Enabled"] = serde_json::json!(false);
        cfg["Discovery"]["webRTCStar"]["Enabled"] = serde_json::json!(false);
        cfg["Routing"] = serde_json::json!({"Type": "none"});
        std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).expect("json")).expect("config");
        let log = repo.path().join("daemon.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = node(&["daemon", "--enable-preload=false"])
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("ipfs daemon starts");
        let mut n = JsIpfs {
            child,
            api: format!("http://127.0.0.1:{api}"),
            gateway: format!("http://127.0.0.1:{gw}"),
            _repo: repo,
            log,
        };
        n.wait_ready(Duration::from_secs(90));
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
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// What the daemon printed so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for JsIpfs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
