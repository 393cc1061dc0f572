//! Volunteers (`cidmirror pin --follow URL --publisher-key KEY --budget SIZE`) end to end:
//! a publisher with a generated repository of 40 packages, volunteers as separate
//! processes that find each other through the publisher's volunteer list, a follower
//! gateway that learns of them from the same list, and a sampler that reads each
//! volunteer's store from disk every 50 ms to check the budget at every moment.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::serve_support::Server;
use crate::support::*;

/// The bound on every wait for volunteers to settle.
const WAIT: Duration = Duration::from_secs(90);

/// The generated repository: `bench/gen_repo.py` (deterministic).
struct Repo {
    up: PathBuf,
    state: PathBuf,
}

fn gen_repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/gen_repo.py")
}

impl Repo {
    /// `extra` with `packages` packages of `kib` (min, max) KiB, from `seed`.
    fn init(t: &TestDir, packages: u32, kib: (u32, u32), seed: &str) -> Repo {
        let r = Repo {
            up: t.path("upstream"),
            state: t.path("state.json"),
        };
        let mut c = std::process::Command::new("python3");
        c.arg(gen_repo())
            .args(["init", "--upstream", s(&r.up), "--state", s(&r.state)])
            .args(["--repo", "extra", "--packages", &packages.to_string()])
            .args([
                "--min-kib",
                &kib.0.to_string(),
                "--max-kib",
                &kib.1.to_string(),
            ])
            .args(["--seed", seed]);
        assert_ok(&run_cmd(c), "gen_repo init");
        r
    }

    fn remove(&self, n: usize) {
        let mut c = std::process::Command::new("python3");
        c.arg(gen_repo())
            .args([
                "remove",
                "--upstream",
                s(&self.up),
                "--state",
                s(&self.state),
            ])
            .args(["--count", &n.to_string()]);
        assert_ok(&run_cmd(c), "gen_repo remove");
    }

    fn dir(&self) -> PathBuf {
        self.up.join("extra/os/x86_64")
    }

    /// Package files upstream: name -> bytes.
    fn packages(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for e in std::fs::read_dir(self.dir()).expect("repo dir") {
            let e = e.expect("entry");
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".pkg.tar.zst") {
                out.insert(name, std::fs::read(e.path()).expect("package"));
            }
        }
        out
    }
}

fn publish(d: &DataDir, r: &Repo) {
    let o = d.run(&[
        "mirror",
        "--upstream",
        s(&r.up),
        "--repo",
        "extra",
        "--no-progress",
        "--once",
        // The small test repository loses packages on purpose: not a shrink to hold.
        "--max-shrink",
        "100%",
    ]);
    assert_eq!(o.status.code(), Some(0), "mirror --once: {}", stderr(&o));
}

/// Bytes of the files a store keeps (`store/files`), read from disk.
fn store_bytes(data: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        let Ok(rd) = std::fs::read_dir(p) else {
            return 0;
        };
        rd.flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => walk(&e.path()),
                Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => 0,
            })
            .sum()
    }
    walk(&data.join("store/files"))
}

/// Samples a volunteer's disk every 50 ms; remembers the largest value.
struct Sampler {
    max: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    samples: Arc<AtomicU64>,
}

impl Sampler {
    fn start(data: PathBuf) -> Sampler {
        let s = Sampler {
            max: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            samples: Arc::new(AtomicU64::new(0)),
        };
        let (max, stop, n) = (s.max.clone(), s.stop.clone(), s.samples.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                max.fetch_max(store_bytes(&data), Ordering::Relaxed);
                n.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        s
    }

    fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Volunteer {
    d: DataDir,
    srv: Server,
    sampler: Sampler,
}

fn volunteer(t: &TestDir, id: &str, publisher: &str, key: &str, budget: u64) -> Volunteer {
    let d = t.data(id);
    let sampler = Sampler::start(d.dir.clone());
    let budget = budget.to_string();
    let srv = Server::spawn(
        &d,
        &[
            "pin",
            "--follow",
            publisher,
            "--publisher-key",
            key,
            "--budget",
            &budget,
            "--replication",
            "1",
            "--keep-days",
            "0.00005",
            "--id",
            id,
            "--listen",
            "127.0.0.1:0",
            "--heartbeat",
            "1s",
            "--replan-every",
            "1s",
        ],
    );
    Volunteer { d, srv, sampler }
}

/// The CIDs a volunteer holds for its share (`pin ls`, reason `volunteer`).
fn held(v: &Volunteer) -> BTreeSet<String> {
    let o = v.d.run(&["pin", "ls"]);
    assert_ok(&o, "pin ls on a volunteer");
    stdout(&o)
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("volunteer"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn status(v: &Volunteer) -> Value {
    let o = v.d.run(&["pin", "status", "--json"]);
    assert_ok(&o, "pin status");
    serde_json::from_slice(&o.stdout).expect("status JSON")
}

/// Package file name -> CID, from the publisher's resolve API.
fn package_cids(p: &Server, r: &Repo) -> BTreeMap<String, String> {
    r.packages()
        .into_keys()
        .map(|f| {
            let resp = p.get(&format!("/api/v1/resolve?path=extra/os/x86_64/{f}"));
            assert_eq!(resp.status, 200, "resolve {f}: {}", resp.text());
            let v: Value = serde_json::from_slice(&resp.body).expect("resolve JSON");
            let cid = v["cid"].as_str().expect("cid").to_string();
            (f, cid)
        })
        .collect()
}

/// Waits until `f` holds for a while (the volunteers' pins stop moving), bounded.
#[track_caller]
fn settle(vs: &[&Volunteer], what: &str, ok: impl Fn(&[BTreeSet<String>]) -> bool) {
    let deadline = Instant::now() + WAIT;
    let mut last: Option<Vec<BTreeSet<String>>> = None;
    let mut stable = 0;
    loop {
        let now: Vec<BTreeSet<String>> = vs.iter().map(|v| held(v)).collect();
        if ok(&now) && last.as_ref() == Some(&now) {
            stable += 1;
            if stable >= 3 {
                return;
            }
        } else {
            stable = 0;
        }
        last = Some(now);
        if Instant::now() > deadline {
            let logs: Vec<String> = vs.iter().map(|v| v.srv.log()).collect();
            panic!(
                "{what}: not within {WAIT:?}; held {last:?}\nlogs:\n{}",
                logs.join("\n---\n")
            );
        }
        std::thread::sleep(Duration::from_millis(700));
    }
}

fn coverage(held: &[BTreeSet<String>], pkgs: &BTreeMap<String, String>) -> f64 {
    let all: BTreeSet<&String> = held.iter().flatten().collect();
    let n = pkgs.values().filter(|c| all.contains(c)).count();
    n as f64 / pkgs.len() as f64
}

#[test]
fn volunteers_share_a_repository_within_their_budgets_and_followers_fetch_from_them() {
    let t = TestDir::new();
    let r = Repo::init(&t, 40, (1100, 2000), "volunteers");
    let pd = t.data("publisher");
    publish(&pd, &r);
    // Volunteers and the follower all come from 127.0.0.1: the tracker's per-address
    // limits must let a test's heartbeats through.
    let cfg = t.write(
        "publisher.toml",
        b"[serve]\nvolunteer_announces_per_minute = 6000\nvolunteer_lists_per_minute = 6000\n",
    );
    let p = Server::serve(&pd, &["--config", s(&cfg)]);
    p.wait_for_snapshot(1);
    let key = pd.ok_text(&["key", "show"]).trim().to_string();
    let pkgs = package_cids(&p, &r);
    let upstream = r.packages();
    let total: u64 = std::fs::read_dir(r.dir())
        .expect("repo dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".pkg.tar.zst"))
        .map(|e| e.metadata().expect("meta").len())
        .sum();
    let budget = total * 40 / 100;

    let a = volunteer(&t, "vol-a", &p.base(), &key, budget);
    let b = volunteer(&t, "vol-b", &p.base(), &key, budget);
    settle(&[&a, &b], "two volunteers cover 75%", |h| {
        coverage(h, &pkgs) >= 0.75
    });
    let two = [held(&a), held(&b)];
    assert!(
        two[0].is_disjoint(&two[1]),
        "replication 1: one holder each"
    );
    let cov = coverage(&two, &pkgs);
    for v in [&a, &b] {
        let st = status(v);
        assert_eq!(st["budget"].as_u64(), Some(budget), "{st}");
        assert!(st["used"].as_u64().expect("used") <= budget, "{st}");
        assert_eq!(st["volunteers"].as_u64(), Some(2), "{st}");
        assert!(st["pinned"]["volunteer"].as_u64().unwrap_or(0) > 0, "{st}");
    }
    let text = a.d.ok_text(&["pin", "status"]);
    assert!(
        text.contains("budget") && text.contains("volunteer"),
        "{text}"
    );

    // A follower that was told nothing but the publisher finds both in its list and
    // fetches from them; every package comes out intact.
    let fd = t.data("follower");
    let f = Server::serve(&fd, &["--follow", &p.base(), "--publisher-key", &key]);
    let deadline = Instant::now() + WAIT;
    loop {
        let st: Value = std::fs::read(fd.dir.join("follow/status.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let text = st.to_string();
        if text.contains(&a.srv.base()) && text.contains(&b.srv.base()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "follower never listed both volunteers: {st}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Volunteers are listed before the first snapshot is in place (a loaded machine shows
    // it: 503 "no snapshot" otherwise).
    f.wait_for_snapshot(1);
    let served_before: u64 = [&a, &b].iter().map(|v| blocks_served(v)).sum();
    for (name, bytes) in &upstream {
        let resp = f.get(&format!("/extra/os/x86_64/{name}"));
        assert_eq!(resp.status, 200, "{name} through the follower");
        assert_same_bytes(&resp.body, bytes, name);
    }
    let served_after: u64 = [&a, &b].iter().map(|v| blocks_served(v)).sum();
    assert!(
        served_after > served_before,
        "the volunteers served blocks to the follower ({served_before} -> {served_after})"
    );
    // The follower's own account: verified bytes from sources it found in the list.
    let from_volunteers = wait_volunteer_bytes(&fd);
    assert!(from_volunteers > 0, "verified bytes from volunteers");

    // A third volunteer: the assignment spreads over three, each within its budget.
    let c = volunteer(&t, "vol-c", &p.base(), &key, budget);
    settle(&[&a, &b, &c], "three volunteers rebalance", |h| {
        !h[2].is_empty() && coverage(h, &pkgs) >= cov
    });
    let three = [held(&a), held(&b), held(&c)];
    assert!(
        !two[0].is_subset(&three[0]) || !two[1].is_subset(&three[1]),
        "some of the first two volunteers' packages moved to the third"
    );
    for (i, h) in three.iter().enumerate() {
        for (j, g) in three.iter().enumerate() {
            assert!(i == j || h.is_disjoint(g), "replication 1");
        }
    }

    // Upstream removes packages; after the (short) grace the volunteers' disks shrink.
    let before: u64 = [&a, &b, &c].iter().map(|v| store_bytes(&v.d.dir)).sum();
    let gone_pkgs = {
        let old = r.packages();
        r.remove(15);
        let now = r.packages();
        old.keys()
            .filter(|k| !now.contains_key(*k))
            .map(|k| pkgs[k].clone())
            .collect::<BTreeSet<String>>()
    };
    let removed_bytes: u64 = upstream
        .iter()
        .filter(|(k, _)| gone_pkgs.contains(&pkgs[*k]))
        .map(|(_, b)| b.len() as u64)
        .sum();
    publish(&pd, &r);
    p.wait_for_snapshot(2);
    settle(&[&a, &b, &c], "removed packages unpinned", |h| {
        h.iter().all(|s| s.is_disjoint(&gone_pkgs))
    });
    let after: u64 = [&a, &b, &c].iter().map(|v| store_bytes(&v.d.dir)).sum();
    assert!(
        after + removed_bytes / 2 < before,
        "disks shrink after removal: {before} -> {after} bytes ({removed_bytes} removed upstream)"
    );

    eprintln!(
        "volunteers: budget {budget} of {total} bytes each; two cover {cov:.3} of packages \
         ({} + {} held); three hold {} + {} + {}; blocks served to the follower {} ({from_volunteers} bytes by its account); disks \
         {before} -> {after} bytes after {removed_bytes} left upstream; max on disk {:?}",
        two[0].len(),
        two[1].len(),
        three[0].len(),
        three[1].len(),
        three[2].len(),
        served_after - served_before,
        [&a, &b, &c].map(|v| v.sampler.max()),
    );
    for v in [&a, &b, &c] {
        let max = v.sampler.max();
        assert!(
            v.sampler.samples.load(Ordering::Relaxed) > 20,
            "the sampler ran"
        );
        assert!(
            max <= budget,
            "{}: {max} bytes on disk at most, budget {budget}",
            v.d.dir.display()
        );
    }
}

/// Verified bytes the follower got from sources with origin `volunteer` (its status.json,
/// rewritten every 2 s: waits, bounded, for a non-zero value).
fn wait_volunteer_bytes(fd: &DataDir) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st: Value = std::fs::read(fd.dir.join("follow/status.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let mut bytes = 0;
        let mut stack = vec![&st];
        while let Some(v) = stack.pop() {
            match v {
                Value::Object(m) => {
                    if m.get("origin").and_then(Value::as_str) == Some("volunteer") {
                        bytes += m.get("bytes").and_then(Value::as_u64).unwrap_or(0);
                    } else {
                        stack.extend(m.values());
                    }
                }
                Value::Array(a) => stack.extend(a.iter()),
                _ => {}
            }
        }
        if bytes > 0 || Instant::now() > deadline {
            return bytes;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Blocks a volunteer's gateway has served (`/metrics`), summed over outcomes.
fn blocks_served(v: &Volunteer) -> u64 {
    let m = v.srv.get("/metrics").text();
    m.lines()
        .filter(|l| l.starts_with("cidmirror_http_requests_total") && l.contains("ipfs"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn a_volunteer_with_its_own_ipfs_node_pins_its_share_there() {
    let node = crate::kubo::peers::Kubo::start();
    let t = TestDir::new();
    let r = Repo::init(&t, 6, (200, 1500), "kubo-volunteer");
    let pd = t.data("publisher");
    publish(&pd, &r);
    let p = Server::serve(&pd, &[]);
    p.wait_for_snapshot(1);
    let key = pd.ok_text(&["key", "show"]).trim().to_string();
    let pkgs = package_cids(&p, &r);
    let kubo = format!("kubo={}", node.api);

    let d = t.data("vol-k");
    let srv = Server::spawn(
        &d,
        &[
            "--store",
            &kubo,
            "pin",
            "--follow",
            &p.base(),
            "--publisher-key",
            &key,
            "--budget",
            "1G",
            "--id",
            "vol-k",
            "--public-url",
            &format!("{}/", node.gateway),
            "--listen",
            "127.0.0.1:0",
            "--heartbeat",
            "1s",
            "--replan-every",
            "1s",
        ],
    );
    // Alone in the list, it holds everything; in the node, not in its own store.
    let deadline = Instant::now() + WAIT;
    loop {
        let o = d.run(&["--store", &kubo, "pin", "ls"]);
        assert_ok(&o, "pin ls on the node's ledger");
        let held: BTreeSet<String> = stdout(&o)
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("volunteer"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        if pkgs.values().all(|c| held.contains(c)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the share never reached the node: {held:?}\n{}",
            srv.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for (name, bytes) in r.packages() {
        let url = format!("{}/ipfs/{}", node.gateway, pkgs[&name]);
        let o = std::process::Command::new("curl")
            .args(["-s", "-f", "-m", "30", &url])
            .output()
            .expect("curl");
        assert!(o.status.success(), "{url}");
        assert_same_bytes(&o.stdout, &bytes, &url);
    }
    let total: u64 = r.packages().values().map(|b| b.len() as u64).sum();
    let deadline = Instant::now() + WAIT;
    while store_bytes(&d.dir) >= total / 2 {
        assert!(
            Instant::now() < deadline,
            "the embedded copies stay: {} bytes",
            store_bytes(&d.dir)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let st = status_of(&d, &kubo);
    assert!(st["pinned"]["volunteer"].as_u64().unwrap_or(0) >= 6, "{st}");
    assert!(st["used"].as_u64().unwrap_or(0) >= total, "{st}");
}

fn status_of(d: &DataDir, store: &str) -> Value {
    let o = d.run(&["--store", store, "pin", "status", "--json"]);
    assert_ok(&o, "pin status");
    serde_json::from_slice(&o.stdout).expect("status JSON")
}
