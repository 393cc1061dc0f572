//! `mirror --store kubo=...` against a real IPFS node (js-ipfs 0.66.1 with Kubo's RPC API,
//! installed and started by the harness): the snapshot is readable byte for byte through
//! the node's own gateway, its IPNS name follows each snapshot, and the root CID is the
//! one the embedded store gives for the same upstream.

use std::process::Command;

use crate::mirror::fixture::{Mirror, standard_mirror};
use crate::support::*;

#[path = "../../store/tests/store/support/jsipfs.rs"]
pub mod jsipfs;

/// `mirror --once` of core and extra; returns (root, IPNS name if printed).
fn publish(d: &DataDir, m: &Mirror, extra: &[&str]) -> (String, Option<String>) {
    let mut args = vec![
        "mirror",
        "--upstream",
        s(m.root()),
        "--repo",
        "core",
        "--repo",
        "extra",
        "--no-progress",
        "--once",
    ];
    args.extend_from_slice(extra);
    let o = d.run(&args);
    assert_eq!(o.status.code(), Some(0), "mirror --once: {}", stderr(&o));
    let out = stdout(&o);
    let root = out
        .lines()
        .find_map(|l| l.strip_prefix("published snapshot "))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(|r| r.trim_end_matches(':').to_string())
        .unwrap_or_else(|| panic!("no publish line in {out:?}"));
    let name = out
        .lines()
        .find_map(|l| l.strip_prefix("ipns /ipns/"))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string);
    (root, name)
}

/// GET through curl (a client independent of ours), bounded; the body on 200.
fn get(url: &str) -> Option<Vec<u8>> {
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
    let node = jsipfs::JsIpfs::start();
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
