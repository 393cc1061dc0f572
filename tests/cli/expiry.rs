//! Expiry in the embedded publisher, through the real binary: a package that left upstream
//! stays fetchable (by CID, by SHA-256, over HTTP) while its grace pin lasts, even through a
//! `gc`, and the first `gc` after the grace period removes it, every block of it, and nothing
//! that the current snapshot still references.

use std::process::Output;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cid::Cid;

use crate::mirror::fixture::{self, Built, Mirror};
use crate::serve_support::Server;
use crate::support::*;

/// The publisher's grace period in these tests: short, but long enough for one `gc` to run
/// inside it on a loaded machine.
const GRACE: &str = "4s";
const GRACE_SECS: i64 = 4;

/// The pin reason of files that left upstream (ingest/src/publish.rs).
const LEFT_UPSTREAM: &str = "left-upstream";

/// Where the test packages are in the mirror and in every snapshot.
const ARCH_DIR: &str = "core/os/x86_64";

/// `mirror --once` of `core` with one snapshot kept and the short grace; must publish.
/// Returns (sequence, root) from the `published snapshot N ROOT: ...` line.
fn publish(d: &DataDir, m: &Mirror) -> (u64, String) {
    let o = d.run(&[
        "mirror",
        "--upstream",
        s(m.root()),
        "--repo",
        "core",
        "--no-progress",
        "--once",
        "--keep-snapshots",
        "1",
        "--grace",
        GRACE,
        // Packages leave this three-package repository on purpose: not a shrink to hold.
        "--max-shrink",
        "100%",
    ]);
    assert_eq!(o.status.code(), Some(0), "mirror --once: {}", stderr(&o));
    let out = stdout(&o);
    let line = out
        .lines()
        .find(|l| l.starts_with("published snapshot "))
        .unwrap_or_else(|| panic!("no publish line in {out:?}"));
    let mut words = line.split_whitespace().skip(2);
    let seq = words
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no sequence in {line:?}"));
    let root = words
        .next()
        .unwrap_or_else(|| panic!("no root in {line:?}"))
        .trim_end_matches(':')
        .to_string();
    assert!(Cid::try_from(root.as_str()).is_ok(), "not a CID: {line:?}");
    (seq, root)
}

/// What one `gc` reported.
#[derive(Debug)]
struct GcReport {
    blocks_removed: u64,
    files_removed: u64,
    bytes_freed: u64,
    pins_expired: u64,
}

/// `gc --grace 0s` (collect every unpinned block, however young); its parsed report line
/// `removed B blocks and F files (N bytes), P expired pins; K blocks kept`.
fn gc_now(d: &DataDir) -> GcReport {
    let out = d.ok_text(&["gc", "--grace", "0s"]);
    let nums: Vec<u64> = out
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().expect("a number"))
        .collect();
    assert!(
        out.starts_with("removed ") && out.contains("expired pins") && nums.len() == 5,
        "unexpected gc report: {out:?}"
    );
    GcReport {
        blocks_removed: nums[0],
        files_removed: nums[1],
        bytes_freed: nums[2],
        pins_expired: nums[3],
    }
}

/// Every `left-upstream` pin in the index: (CID, expiry in Unix seconds).
fn grace_pins(d: &DataDir) -> Vec<(Cid, Option<i64>)> {
    let db = d.index();
    let mut st = db
        .prepare("SELECT cid, expires_at FROM pins WHERE reason = ?1 ORDER BY cid")
        .expect("pins table");
    st.query_map([LEFT_UPSTREAM], |r| {
        Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Option<i64>>(1)?))
    })
    .expect("reading pins")
    .map(|row| {
        let (cid, exp) = row.expect("pins row");
        (
            Cid::try_from(cid.as_slice()).expect("binary CID in pins"),
            exp,
        )
    })
    .collect()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// `cidmirror resolve --sha256 HEX --json`.
fn resolve_sha256(d: &DataDir, sha: &str) -> Output {
    d.run(&["resolve", "--sha256", sha, "--json"])
}

/// `cat TARGET` gives exactly the bytes of `want`.
#[track_caller]
fn assert_cat(d: &DataDir, target: &str, want: &[u8], what: &str) {
    let (status, sha, len, err) = d.cat_sha256(target);
    assert!(status.success(), "{what}: cat {target} failed: {err}");
    assert_eq!(
        (sha.as_str(), len),
        (sha256_hex(want).as_str(), want.len() as u64),
        "{what}: cat {target} gave other bytes"
    );
}

/// `GET target` answers 200 with exactly the bytes of `want`.
#[track_caller]
fn assert_served(srv: &Server, target: &str, want: &[u8], what: &str) {
    let r = srv.get(target);
    assert_eq!(r.status, 200, "{what}: GET {target}: {}", r.text());
    assert_eq!(
        (sha256_hex(&r.body), r.body.len()),
        (sha256_hex(want), want.len()),
        "{what}: GET {target} gave other bytes"
    );
}

/// The raw leaves of a file under `unixfs-v1-2025` (1 MiB chunks), computed here.
fn leaves(data: &[u8]) -> Vec<Cid> {
    data.chunks(CHUNK_V1 as usize)
        .map(|c| raw_cid(c).parse().expect("raw CID"))
        .collect()
}

/// The package and its signature as (file name, bytes).
fn with_sig(b: &Built) -> Vec<(String, Vec<u8>)> {
    let mut v = vec![(b.filename.clone(), b.bytes())];
    if let Some(sig) = &b.sig {
        let bytes = std::fs::read(sig).unwrap_or_else(|e| panic!("{}: {e}", sig.display()));
        v.push((format!("{}.sig", b.filename), bytes));
    }
    v
}

#[test]
fn a_package_that_left_upstream_is_served_through_its_grace_period_and_collected_after_it() {
    let t = TestDir::new();
    let pkgs = fixture::packages();
    // A: small; B: the one that leaves, several blocks; C: stays, several blocks too.
    let a = pkgs.get("alpha", "1.0");
    let b = pkgs.get("gamma", "1.0");
    let c = pkgs.get("epsilon", "1.0");
    let b_bytes = b.bytes();
    let b_sha = sha256_hex(&b_bytes);
    let b_sig = std::fs::read(b.sig.as_ref().expect("gamma is signed")).expect("gamma's .sig");
    let b_leaves = leaves(&b_bytes);
    assert!(b_leaves.len() >= 3, "B spans several blocks");
    assert!(leaves(&c.bytes()).len() >= 2, "C spans several blocks");

    let m = Mirror::new();
    m.set_repo(
        "core",
        &[("alpha", "1.0"), ("gamma", "1.0"), ("epsilon", "1.0")],
        true,
    );
    m.set_lastupdate(1_700_000_000);
    let d = t.data("data");
    let (seq1, root1) = publish(&d, &m);
    assert_eq!(seq1, 1);
    assert_cat(
        &d,
        &format!("{root1}/{ARCH_DIR}/{}", b.filename),
        &b_bytes,
        "B in snapshot 1",
    );

    // B leaves upstream.
    m.set_repo("core", &[("alpha", "1.0"), ("epsilon", "1.0")], true);
    m.set_lastupdate(1_700_003_600);
    let before_publish = unix_now();
    let (seq2, root2) = publish(&d, &m);
    let after_publish = unix_now();
    assert_eq!(seq2, 2);
    assert_ne!(root1, root2);

    // --- During the grace period: a gc that collects every unpinned block, however young.
    let gc1 = gc_now(&d);
    let gc1_done = unix_now();

    // B (and its signature) are held by grace pins alone, which expire GRACE after the
    // publish: read them after the gc, so that the gc is known to have run before the expiry.
    let pins = grace_pins(&d);
    assert_eq!(pins.len(), 2, "B and its .sig have grace pins: {pins:?}");
    let expires = pins[0].1.expect("a grace pin expires");
    for (cid, exp) in &pins {
        assert_eq!(*exp, Some(expires), "{cid}: both pins expire together");
    }
    assert!(
        (before_publish + GRACE_SECS - 1..=after_publish + GRACE_SECS).contains(&expires),
        "the grace pins expire {GRACE} after the publish ({before_publish}..={after_publish}), \
         not at {expires}"
    );
    assert!(
        gc1_done < expires,
        "the first gc must run inside the grace period (it ended at {gc1_done}, the pins \
         expire at {expires}); the machine is too slow for a {GRACE} grace"
    );
    assert_eq!(gc1.pins_expired, 0, "no pin expired yet: {gc1:?}");
    // Snapshot 1 is no longer pinned (one snapshot kept): the gc took its own listing, so
    // the grace pin is what keeps B.
    let root1_cid: Cid = root1.parse().expect("root CID");
    assert!(
        gc1.blocks_removed > 0 && !d.has_block_row(&root1_cid),
        "snapshot 1's listing is collected: {gc1:?}"
    );
    let listed = d.ok_text(&["pin", "ls"]);
    assert!(
        !listed.contains(&format!("{root1} ")) && listed.contains(&format!("{root2} snapshot:2")),
        "only snapshot 2 stays pinned:\n{listed}"
    );

    // B's CID, from a lookup by its SHA-256: kept from an earlier snapshot.
    let o = resolve_sha256(&d, &b_sha);
    assert_ok(&o, "resolve B by SHA-256 during the grace period");
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("resolve JSON");
    assert!(v["snapshot"].is_null(), "B is in no current snapshot: {v}");
    assert_eq!(v["size"].as_u64(), Some(b_bytes.len() as u64), "{v}");
    let b_cid_s = v["cid"].as_str().expect("a CID").to_string();
    let b_cid: Cid = b_cid_s.parse().expect("B's CID");
    let b_sig_cid: Cid = raw_cid(&b_sig).parse().expect("raw CID");
    let mut pinned: Vec<Cid> = pins.iter().map(|(c, _)| *c).collect();
    pinned.sort();
    let mut expected = vec![b_cid, b_sig_cid];
    expected.sort();
    assert_eq!(pinned, expected, "the grace pins are on B and its .sig");
    assert!(
        listed.contains(&format!("{b_cid_s} {LEFT_UPSTREAM} expires ")),
        "pin ls shows B's grace pin:\n{listed}"
    );
    // Every block of B is still in the store, and its whole file.
    let mut b_blocks = b_leaves.clone();
    b_blocks.push(b_cid);
    b_blocks.push(b_sig_cid);
    for cid in &b_blocks {
        assert!(
            d.has_block_row(cid),
            "block {cid} of B survived the first gc"
        );
    }
    let b_file = |d: &DataDir| d.kept_files().iter().any(|p| p.ends_with(&b_sha));
    assert!(b_file(&d), "B's file is kept");

    // B by CID, from the command line and over HTTP (by CID and by SHA-256).
    assert_cat(&d, &b_cid_s, &b_bytes, "B during the grace period");
    assert_cat(
        &d,
        &b_sig_cid.to_string(),
        &b_sig,
        "B's .sig during the grace period",
    );
    let srv = Server::serve(&d, &[]);
    srv.wait_for_snapshot(2);
    assert_served(
        &srv,
        &format!("/ipfs/{b_cid_s}"),
        &b_bytes,
        "B during the grace period",
    );
    assert_served(
        &srv,
        &format!("/by-hash/sha256/{b_sha}"),
        &b_bytes,
        "B during the grace period",
    );
    // Not in the current snapshot's mirror path any more.
    let r = srv.get(&format!("/{ARCH_DIR}/{}", b.filename));
    assert_eq!(r.status, 404, "B is not in snapshot 2: {}", r.text());
    // A and C are intact.
    for p in [a, c] {
        for (name, bytes) in with_sig(p) {
            assert_cat(
                &d,
                &format!("{root2}/{ARCH_DIR}/{name}"),
                &bytes,
                "during the grace",
            );
            assert_served(
                &srv,
                &format!("/{ARCH_DIR}/{name}"),
                &bytes,
                "during the grace",
            );
        }
    }

    // --- The grace period ends (bounded wait on the pins' own expiry; `gc` drops a pin
    // whose expiry is at or before its clock's whole second).
    let deadline = Instant::now() + Duration::from_secs(GRACE_SECS as u64 + 10);
    while unix_now() < expires {
        assert!(
            Instant::now() < deadline,
            "the clock did not reach {expires} (now {})",
            unix_now()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let gc2 = gc_now(&d);
    assert_eq!(
        gc2.pins_expired, 2,
        "B's and its .sig's pins expired: {gc2:?}"
    );
    assert_eq!(
        gc2.blocks_removed,
        b_blocks.len() as u64,
        "exactly B's blocks (leaves, root, .sig) go: {gc2:?}"
    );
    assert!(
        gc2.files_removed >= 1 && gc2.bytes_freed >= (b_bytes.len() + b_sig.len()) as u64,
        "B's file is removed: {gc2:?}"
    );
    assert!(grace_pins(&d).is_empty(), "no grace pin is left");

    // B is gone: from the index, from disk, from every way of asking for it.
    for cid in &b_blocks {
        assert!(!d.has_block_row(cid), "block {cid} of B is collected");
    }
    assert!(!b_file(&d), "B's file is removed from the store");
    let (status, _, len, err) = d.cat_sha256(&b_cid_s);
    assert!(
        !status.success() && len == 0,
        "cat of B after the grace period: {status:?}, {len} bytes"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("error:") && l.contains(&b_cid_s)),
        "cat names the missing CID: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let o = resolve_sha256(&d, &b_sha);
    assert_one_error(&o, "resolve B by SHA-256 after the grace period", &[&b_sha]);
    for target in [
        format!("/ipfs/{b_cid_s}"),
        format!("/by-hash/sha256/{b_sha}"),
    ] {
        let r = srv.get(&target);
        assert_eq!(
            r.status,
            404,
            "GET {target} after the grace period: {}",
            r.text()
        );
    }

    // What snapshot 2 references is complete and byte-exact: every file of the upstream
    // directory, through the listing and over HTTP, and the whole listing as a CAR.
    for (name, bytes) in m.files("core") {
        assert_cat(
            &d,
            &format!("{root2}/{ARCH_DIR}/{name}"),
            &bytes,
            "after the gc",
        );
        assert_served(&srv, &format!("/{ARCH_DIR}/{name}"), &bytes, "after the gc");
    }
    for p in [a, c] {
        let bytes = p.bytes();
        assert_served(
            &srv,
            &format!("/by-hash/sha256/{}", sha256_hex(&bytes)),
            &bytes,
            "after the gc",
        );
    }
    let car = t.path("snapshot2.car");
    d.ok(&["export", &root2, "-o", s(&car)]);
    let car = std::fs::read(&car).expect("the exported CAR");
    let secs = assert_car_blocks_verify(&car, "snapshot 2 after the gc");
    assert!(
        secs.iter().all(|sec| !b_blocks.contains(&sec.cid)),
        "snapshot 2 does not reference B"
    );
    for cid in leaves(&c.bytes()) {
        assert!(
            secs.iter().any(|sec| sec.cid == cid),
            "snapshot 2's CAR holds C's leaf {cid}"
        );
    }
    d.assert_consistent_on_disk("after the gc");
    d.assert_verify(true);
}
