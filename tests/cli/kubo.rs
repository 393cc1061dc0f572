//! `mirror --store kubo=...` against real Kubo (built and started by the harness,
//! `store/tests/store/support/kubo.rs`): the snapshot is readable byte for byte through
//! the node's own gateway, its IPNS name follows each snapshot, and the root CID is the
//! one the embedded store gives for the same upstream.

use std::process::Command;

use crate::mirror::fixture::{Mirror, standard_mirror};
use crate::support::*;

#[path = "../../store/tests/store/support/kubo.rs"]
pub mod peers;

/// `mirror` of core and extra from `m`, then `extra`.
fn mirror_args<'a>(m: &'a Mirror, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "mirror",
        "--upstream",
        s(m.root()),
        "--repo",
        "core",
        "--repo",
        "extra",
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    args
}

/// The IPNS name `mirror --once` printed, if any.
fn ipns_name(out: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.strip_prefix("ipns /ipns/"))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string)
}

/// `mirror --once` of core and extra; returns (root, IPNS name if printed).
pub fn publish(d: &DataDir, m: &Mirror, extra: &[&str]) -> (String, Option<String>) {
    let mut once = vec!["--once"];
    once.extend_from_slice(extra);
    let o = d.run(&mirror_args(m, &once));
    assert_eq!(o.status.code(), Some(0), "mirror --once: {}", stderr(&o));
    let out = stdout(&o);
    let root = out
        .lines()
        .find_map(|l| l.strip_prefix("published snapshot "))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(|r| r.trim_end_matches(':').to_string())
        .unwrap_or_else(|| panic!("no publish line in {out:?}"));
    (root, ipns_name(&out))
}

/// GET through curl (a client independent of ours), bounded; the body on 200.
pub fn get(url: &str) -> Option<Vec<u8>> {
    let o = Command::new("curl")
        .args(["-s", "-f", "-m", "30", url])
        .output()
        .expect("curl runs");
    o.status.success().then_some(o.stdout)
}

fn resolve_name(api: &str, name: &str) -> String {
    let o = Command::new("curl")
        .args([
            "-s",
            "-m",
            "30",
            "-X",
            "POST",
            &format!("{api}/api/v0/name/resolve?arg=/ipns/{name}"),
        ])
        .output()
        .expect("curl runs");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("name/resolve: {}", String::from_utf8_lossy(&o.stdout)));
    v["Path"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_snapshot_mirrored_into_a_real_ipfs_node_reads_back_through_its_gateway_and_ipns() {
    let node = peers::Kubo::start();
    let t = TestDir::new();
    let m = standard_mirror();
    let kubo = format!("kubo={}", node.api);

    let k = t.data("kubo");
    let (root, name) = publish(&k, &m, &["--store", &kubo]);
    let name = name.expect("an IPNS name printed in kubo mode");
    let e = t.data("embedded");
    let (embedded_root, none) = publish(&e, &m, &[]);
    assert_eq!(
        root, embedded_root,
        "same upstream, same root, whatever the store"
    );
    assert!(none.is_none(), "no IPNS without a node");

    for repo in ["core", "extra"] {
        let files = m.files(repo);
        assert!(files.len() >= 4, "{repo}: {files:?}");
        for (file, bytes) in &files {
            let url = format!("{}/ipfs/{root}/{repo}/os/x86_64/{file}", node.gateway);
            let got = get(&url).unwrap_or_else(|| panic!("gateway GET {url}"));
            assert_same_bytes(&got, bytes, &url);
        }
    }
    assert_eq!(resolve_name(&node.api, &name), format!("/ipfs/{root}"));
    let (file, bytes) = m.files("core").into_iter().next().expect("a core file");
    let url = format!("{}/ipns/{name}/core/os/x86_64/{file}", node.gateway);
    let got = get(&url).unwrap_or_else(|| panic!("gateway GET {url}"));
    assert_same_bytes(&got, &bytes, &url);

    // The next snapshot moves the name; the ledger holds the publisher's pins by reason.
    crate::mirror::fixture::change_standard_mirror(&m);
    let (root2, name2) = publish(&k, &m, &["--store", &kubo]);
    assert_ne!(root2, root);
    assert_eq!(name2.as_deref(), Some(name.as_str()), "one key, one name");
    assert_eq!(resolve_name(&node.api, &name), format!("/ipfs/{root2}"));
    let pins = k.ok_text(&["--store", &kubo, "pin", "ls"]);
    assert!(
        pins.lines()
            .any(|l| l.starts_with(&root2) && l.contains("snapshot:2")),
        "{pins}"
    );
    // The files went in batches held by cover pins during each sync; none outlives it:
    // every recursive pin on the node is a root the ledger pins (or the empty directory a
    // new Kubo repository pins for itself).
    let ledger: std::collections::HashSet<&str> = pins
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let on_node = node_pinned(&node.api);
    let keys: serde_json::Value = serde_json::from_str(&on_node).expect("pin/ls JSON");
    for cid in keys["Keys"].as_object().expect("Keys").keys() {
        assert!(
            ledger.contains(cid.as_str())
                || cid == "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354",
            "{cid} is pinned on the node but not in the ledger:\n{pins}"
        );
    }
    let zeta = m
        .files("core")
        .into_keys()
        .find(|f| f.starts_with("zeta-") && f.ends_with(".zst"))
        .expect("zeta in core");
    let url = format!("{}/ipns/{name}/core/os/x86_64/{zeta}", node.gateway);
    assert!(get(&url).is_some(), "{url}");

    // gc on the node keeps what the pins reach.
    let out = k.ok_text(&["--store", &kubo, "gc", "--grace", "0s"]);
    assert!(out.starts_with("removed "), "{out}");
    for (file, bytes) in m.files("core") {
        let url = format!("{}/ipfs/{root2}/core/os/x86_64/{file}", node.gateway);
        let got = get(&url).unwrap_or_else(|| panic!("after gc: {url}"));
        assert_same_bytes(&got, &bytes, &url);
    }

    // The node loses its pin (removed by hand); `pin resync` puts the ledger's pins back.
    assert!(node_pinned(&node.api).contains(&root2));
    rpc(&node.api, &format!("pin/rm?arg={root2}&recursive=true"));
    assert!(!node_pinned(&node.api).contains(&root2), "unpinned by hand");
    let out = k.ok_text(&["--store", &kubo, "pin", "resync"]);
    assert!(
        out.contains("pinned roots re-applied to kubo="),
        "pin resync: {out}"
    );
    assert!(node_pinned(&node.api).contains(&root2), "pinned again");
    assert_one_error(
        &k.run(&["pin", "resync"]),
        "pin resync on the embedded store",
        &["kubo and cluster stores"],
    );

    // Nothing new upstream still renews the record (a cron job of `--once` keeps the name
    // alive): a fresh key gets its name pointed at the current root.
    let o = k.run(&mirror_args(
        &m,
        &["--once", "--store", &kubo, "--ipns-key", "quiet"],
    ));
    assert_eq!(o.status.code(), Some(3), "nothing new: {}", stderr(&o));
    let quiet = ipns_name(&stdout(&o)).unwrap_or_else(|| panic!("no ipns line: {}", stdout(&o)));
    assert_ne!(quiet, name, "another key, another name");
    assert_eq!(resolve_name(&node.api, &quiet), format!("/ipfs/{root2}"));

    // The running mirror publishes the current root at start and renews it every
    // --ipns-republish while upstream stays quiet.
    let log = t.path("daemon.log");
    let mut child = k
        .cmd(mirror_args(
            &m,
            &[
                "--interval",
                "1h",
                "--store",
                &kubo,
                "--ipns-key",
                "daemon",
                "--ipns-republish",
                "1s",
            ],
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawning mirror");
    let renewals = |text: &str| {
        text.lines()
            .filter(|l| l.contains(&format!("snapshot 2 {root2} published as /ipns/")))
            .count()
    };
    let start = std::time::Instant::now();
    let mut text = String::new();
    while start.elapsed() < std::time::Duration::from_secs(60) {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if renewals(&text) >= 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    wait_timeout(&mut child, std::time::Duration::from_secs(30)).expect("mirror stops");
    assert!(
        renewals(&text) >= 3,
        "three publishes of snapshot 2:\n{text}"
    );
    let daemon = text
        .lines()
        .find_map(|l| l.split("published as /ipns/").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .expect("a name in the log");
    assert_eq!(resolve_name(&node.api, daemon), format!("/ipfs/{root2}"));

    // A renewal period as long as the record's life would let the name lapse.
    assert_one_error(
        &k.run(&mirror_args(
            &m,
            &["--once", "--store", &kubo, "--ipns-republish", "2d"],
        )),
        "republish period longer than the lifetime",
        &["--ipns-republish", "--ipns-lifetime"],
    );
}

/// POSTs an RPC call through curl; its body.
fn rpc(api: &str, call: &str) -> String {
    let o = Command::new("curl")
        .args([
            "-s",
            "-m",
            "30",
            "-X",
            "POST",
            &format!("{api}/api/v0/{call}"),
        ])
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The node's recursive pins, as its `pin/ls` prints them.
fn node_pinned(api: &str) -> String {
    rpc(api, "pin/ls?type=recursive&cid-base=base32")
}

#[test]
fn a_kubo_store_that_is_not_running_is_a_clear_error() {
    let t = TestDir::new();
    let m = standard_mirror();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = t.data("d");
    let spec = format!("kubo=http://127.0.0.1:{port}");
    let o = d.run(&[
        "mirror",
        "--upstream",
        s(m.root()),
        "--repo",
        "core",
        "--once",
        "--store",
        &spec,
    ]);
    assert_one_error(
        &o,
        "mirror into a dead node",
        &[&format!("127.0.0.1:{port}")],
    );
    let o = d.run(&["--store", "kubo=localhost:5001", "gc"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("http://HOST:PORT"), "{}", stderr(&o));
}
