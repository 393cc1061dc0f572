//! `mirror --store cluster=...` against a real IPFS Cluster (two `ipfs-cluster-service`
//! peers with CRDT consensus, each with its own Kubo; `store/tests/store/support/cluster.rs`),
//! and a volunteer as the collaborative pacman cluster ran them: `ipfs-cluster-follow NAME
//! run --init URL` from the configuration the publisher's `serve --cluster-config` hosts,
//! replicating into its own Kubo, whose gateway then feeds a follower gateway that a real
//! pacman installs from after the publisher and its cluster are gone.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::kubo::get;
use crate::kubo::peers::cluster::{Cluster, Follower};
use crate::mirror::fixture::{change_standard_mirror, standard_mirror};
use crate::pacman_client::Pacman;
use crate::serve_support::Server;
use crate::support::*;

/// The bound on every wait for the cluster to get somewhere.
const WAIT: Duration = Duration::from_secs(90);

/// `mirror --once` of core and extra from `m` with `extra`; the root it published.
fn publish(d: &DataDir, m: &crate::mirror::fixture::Mirror, extra: &[&str]) -> String {
    crate::kubo::publish(d, m, extra).0
}

/// The cluster's pins as `ipfs-cluster-ctl --enc json pin ls` on peer `i` prints them.
fn pins(c: &Cluster, i: usize) -> Vec<Value> {
    c.ctl_json(i, &["pin", "ls"])
}

fn pin_of<'a>(pins: &'a [Value], cid: &str) -> Option<&'a Value> {
    pins.iter().find(|p| p["cid"].as_str() == Some(cid))
}

/// Waits (bounded) for `pred`, polling every 250 ms.
#[track_caller]
fn wait_until(what: &str, mut pred: impl FnMut() -> bool) {
    let start = Instant::now();
    while !pred() {
        assert!(start.elapsed() < WAIT, "{what}: not after {WAIT:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_snapshot_published_into_a_real_cluster_reaches_a_volunteer_that_serves_pacman_alone() {
    let c = Cluster::start(2);
    let t = TestDir::new();
    let m = standard_mirror();
    let spec = format!(
        "cluster={},proxy={},replication-min=-1,replication-max=-1",
        c.peers[0].rest, c.peers[0].proxy
    );
    let d = t.data("publisher");
    let grace = ["--keep-snapshots", "1", "--grace", "8s"];
    let root = publish(&d, &m, &[&["--store", &spec][..], &grace].concat());
    let e = t.data("embedded");
    assert_eq!(
        publish(&e, &m, &[]),
        root,
        "same upstream, same root as the embedded store"
    );

    // Every pin, seen from the other peer, with the name and replication the store set
    // (-1: every peer, followers too, as a collaborative cluster pins); pinned on both.
    let seen = pins(&c, 1);
    let p = pin_of(&seen, &root).unwrap_or_else(|| panic!("the snapshot pin: {seen:?}"));
    assert_eq!(p["name"], "snapshot:1", "{p}");
    assert_eq!(p["replication_factor_min"], -1, "{p}");
    assert_eq!(p["replication_factor_max"], -1, "{p}");
    wait_until("the snapshot pinned on both peers", || {
        let st = c.ctl_json(0, &["status", &root]);
        st.first()
            .and_then(|s| s["peer_map"].as_object())
            .is_some_and(|m| m.len() == 2 && m.values().all(|p| p["status"] == "pinned"))
    });
    for peer in &c.peers {
        for repo in ["core", "extra"] {
            for (file, bytes) in m.files(repo) {
                let url = format!("{}/ipfs/{root}/{repo}/os/x86_64/{file}", peer.kubo.gateway);
                let got = get(&url).unwrap_or_else(|| panic!("GET {url}"));
                assert_same_bytes(&got, &bytes, &url);
            }
        }
    }

    // The next snapshot drops gamma: its files get a grace pin with an expiry the cluster
    // shows, and the cluster itself unpins them when it passes.
    let gamma: Vec<(String, Vec<u8>)> = m
        .files("core")
        .into_iter()
        .filter(|(f, _)| f.starts_with("gamma-"))
        .collect();
    assert!(!gamma.is_empty());
    change_standard_mirror(&m);
    let root2 = publish(&d, &m, &[&["--store", &spec][..], &grace].concat());
    // The CRDT state reaches the other peer a moment later.
    wait_until("snapshot 2 and the grace pins on peer 1", || {
        let now = pins(&c, 1);
        pin_of(&now, &root2).is_some() && now.iter().any(|p| p["name"] == "left-upstream")
    });
    let left: Vec<Value> = pins(&c, 1)
        .into_iter()
        .filter(|p| p["name"] == "left-upstream")
        .collect();
    for p in &left {
        let at = p["expire_at"].as_str().unwrap_or_default();
        let at = humantime::parse_rfc3339(at).unwrap_or_else(|e| panic!("{p}: {e}"));
        let left_for = at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        assert!(left_for <= Duration::from_secs(9), "{p}");
    }
    let text = c.ctl(0, &["pin", "ls"]);
    assert!(
        text.contains("left-upstream") && text.contains("Exp: "),
        "{text}"
    );
    wait_until("the grace pins expired in the cluster", || {
        let now = pins(&c, 0);
        left.iter()
            .all(|p| pin_of(&now, p["cid"].as_str().unwrap_or_default()).is_none())
    });
    let now = pins(&c, 0);
    assert!(pin_of(&now, &root2).is_some(), "the new snapshot stays");
    assert!(
        pin_of(&now, &root).is_none(),
        "snapshot 1 is no longer kept"
    );

    // The follower configuration, written from peer 0's service.json and served by the
    // publisher's gateway.
    let cfg = t.path("follower.json");
    let o = d.run(&[
        "--store",
        &spec,
        "cluster",
        "follower-config",
        "--service",
        s(&c.peers[0].dir.join("service.json")),
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--out",
        s(&cfg),
    ]);
    assert!(o.status.success(), "follower-config: {}", stderr(&o));
    let written: Value = serde_json::from_slice(&std::fs::read(&cfg).expect("written")).unwrap();
    assert_eq!(written["cluster"]["secret"], c.secret.as_str());
    assert_eq!(written["cluster"]["follower_mode"], true);
    assert!(written.get("api").is_none(), "{written}");
    let trusted = written["consensus"]["crdt"]["trusted_peers"].to_string();
    assert!(c.peers.iter().all(|p| trusted.contains(&p.id)), "{trusted}");
    let cfg_arg = format!("pkg={}", s(&cfg));
    let publisher = Server::serve(&d, &["--cluster-config", &cfg_arg]);
    publisher.wait_for_snapshot(2);
    assert!(
        publisher
            .log()
            .contains("embedded store only, not the cluster store"),
        "serve says what it does not serve: {}",
        publisher.log()
    );
    let served = publisher.get("/cluster/pkg/service.json");
    assert_eq!(served.status, 200);
    assert_eq!(served.body, std::fs::read(&cfg).unwrap());
    assert_eq!(publisher.get("/cluster/other/service.json").status, 404);

    // The volunteer: ipfs-cluster-follow from that URL, its own Kubo connected to the
    // cluster's nodes (as the public DHT would find them).
    let kubos: Vec<String> = c
        .peers
        .iter()
        .map(|p| format!("{}/p2p/{}", p.kubo.swarm, p.kubo.peer_id()))
        .collect();
    let url = format!("{}/cluster/pkg/service.json", publisher.base());
    let f = Follower::start("pkg", &url, &kubos);
    let start = Instant::now();
    loop {
        let have = f.pinned();
        let want: Vec<String> = pins(&c, 0)
            .iter()
            .filter_map(|p| p["cid"].as_str().map(str::to_string))
            .collect();
        if want.iter().all(|w| have.contains(w)) {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "the follower's Kubo pinned {have:?}, not all of {want:?}:\n{}",
            f.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(f.pinned().contains(&root2), "{:?}", f.pinned());
    assert!(f.log_text().contains("follower"), "{}", f.log_text());

    // A follower gateway on that Kubo's gateway takes snapshot 2 from the publisher's feed.
    let key = d.ok_text(&["key", "show"]).trim().to_string();
    let gd = t.data("gateway");
    let g = Server::serve(
        &gd,
        &[
            "--follow",
            &publisher.base(),
            "--publisher-key",
            &key,
            "--source",
            &f.kubo.gateway,
            "--no-volunteers",
        ],
    );
    g.wait_for_snapshot(2);

    // The publisher and its whole cluster stop; pacman installs through the follower
    // gateway, every block from the volunteer's Kubo.
    drop(publisher);
    drop(c);
    let pacman = Pacman::new(&t.path("pacman"), &g.base(), &["core", "extra"], "Never");
    let out = pacman.ok(&["-Sy"]);
    assert!(out.contains("core") && out.contains("extra"), "{out}");
    pacman.ok(&["-S", "zeta"]);
    let (zeta, bytes) = m
        .files("core")
        .into_iter()
        .find(|(f, _)| f.starts_with("zeta-") && f.ends_with(".zst"))
        .expect("zeta in core");
    let cached = t.path("pacman").join("cache").join(&zeta);
    let got = std::fs::read(&cached).unwrap_or_else(|e| panic!("{}: {e}", cached.display()));
    assert_same_bytes(&got, &bytes, &zeta);
}

#[test]
fn serve_refuses_a_follower_configuration_that_would_open_the_cluster() {
    let t = TestDir::new();
    let d = t.data("publisher");
    let secret = "ab".repeat(32);
    let cfg = |trusted: &str, extra: &str| {
        format!(
            r#"{{"cluster":{{"secret":"{secret}","follower_mode":true}},
                "consensus":{{"crdt":{{"trusted_peers":[{trusted}]}}}}{extra}}}"#
        )
    };
    let cases = [
        ("open", cfg(r#""*""#, ""), "\"*\""),
        (
            "api",
            cfg(r#""12D3KooWabc""#, r#","api":{"restapi":{}}"#),
            "\"api\"",
        ),
        ("garbage", "{".to_string(), "not JSON"),
    ];
    let serve = |spec: &str| d.run(&["serve", "--listen", "127.0.0.1:0", "--cluster-config", spec]);
    for (name, body, want) in cases {
        let f = t.path(&format!("{name}.json"));
        std::fs::write(&f, body).unwrap();
        let spec = format!("pkg={}", s(&f));
        assert_one_error(&serve(&spec), name, &["--cluster-config pkg", want]);
    }
    assert_one_error(
        &serve("a/b=x"),
        "a bad name",
        &["--cluster-config", "1-64 of"],
    );
}
