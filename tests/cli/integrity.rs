//! Integrity on read, through the real binary: one flipped byte in a stored package and
//! every route refuses it (pacman path, by-hash, `?format=raw`, CAR, `cat`, `export`), the
//! corruption is counted in `status` and `/metrics`, and the scrub, `verify --repair` or
//! an `add` of the good bytes repairs it (the first two from the upstream).
//!
//! Each case works on its own copy of one published data directory, so that each route
//! meets the corruption first (the first check quarantines the file).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::mirror::fixture::{self, Mirror};
use crate::serve_support::{Resp, Server, request, try_request};
use crate::support::*;
use sha2::Digest;

/// The 2.5 MB package of the fixture: three 1 MiB leaves under `unixfs-v1-2025`.
const PKG: (&str, &str) = ("gamma", "1.0");
const CHUNK: usize = 1 << 20;
/// Where the byte is flipped: inside the second leaf.
const FLIP_AT: usize = CHUNK + 4242;

struct Published {
    t: TestDir,
    _m: Mirror,
    template: DataDir,
    filename: String,
    bytes: Vec<u8>,
    sha: String,
    cid: String,
}

fn publish() -> Published {
    let t = TestDir::in_tmp();
    let m = Mirror::new();
    m.set_repo("core", &[("alpha", "1.0"), PKG], false);
    m.set_lastupdate(1_700_000_000);
    let template = t.data("template");
    let o = template.run(&[
        "mirror",
        "--upstream",
        s(m.root()),
        "--repo",
        "core",
        "--no-progress",
        "--once",
    ]);
    assert_eq!(o.status.code(), Some(0), "mirror --once: {}", stderr(&o));
    let b = fixture::packages().get(PKG.0, PKG.1).clone();
    let bytes = b.bytes();
    assert!(bytes.len() > 2 * CHUNK, "gamma spans three leaves");
    let sha = sha256_hex(&bytes);
    let v: serde_json::Value =
        serde_json::from_slice(&template.ok(&["resolve", "--sha256", &sha, "--json"]))
            .expect("resolve JSON");
    let cid = v["cid"].as_str().expect("cid").to_string();
    Published {
        t,
        _m: m,
        template,
        filename: b.filename,
        bytes,
        sha,
        cid,
    }
}

impl Published {
    /// A copy of the published data directory with one bit of the package flipped.
    fn corrupted(&self, name: &str) -> DataDir {
        let d = self.t.data(name);
        let st = Command::new("cp")
            .arg("-a")
            .arg(&self.template.dir)
            .arg(&d.dir)
            .status()
            .expect("cp");
        assert!(st.success());
        flip(&self.kept(&d), FLIP_AT);
        d
    }

    fn kept(&self, d: &DataDir) -> PathBuf {
        d.store().join("files").join(&self.sha[..2]).join(&self.sha)
    }

    fn pkg_path(&self) -> String {
        format!("/core/os/x86_64/{}", self.filename)
    }

    /// The bytes as served but with the flipped bit: what must never go out.
    fn bad_bytes(&self) -> Vec<u8> {
        let mut b = self.bytes.clone();
        b[FLIP_AT] ^= 1;
        b
    }
}

fn flip(path: &Path, at: usize) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut b = std::fs::read(path).expect("read kept file");
    b[at] ^= 1;
    std::fs::write(path, &b).expect("write kept file");
}

/// The store's integrity gauge `what` from `/metrics`.
fn integrity_gauge(srv: &Server, what: &str) -> Option<u64> {
    let text = request(srv.addr, "GET", "/metrics", &[]).text();
    text.lines()
        .find(|l| {
            l.starts_with("cidmirror_store_integrity{") && l.contains(&format!("what=\"{what}\""))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A response that must not deliver the bad bytes: no success status with a whole body.
fn assert_refused(r: &Resp, bad: &[u8], what: &str) {
    let complete = r
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .is_none_or(|n| n == r.body.len());
    assert!(
        !((r.status == 200 || r.status == 206) && complete),
        "{what}: answered {} with a whole body of {} bytes",
        r.status,
        r.body.len()
    );
    assert!(
        r.body
            .windows(64)
            .all(|w| w != &bad[FLIP_AT - 32..FLIP_AT + 32]),
        "{what}: the flipped byte went out"
    );
}

#[test]
fn a_flipped_byte_is_refused_on_every_route() {
    let p = publish();
    let bad = p.bad_bytes();
    let leaf = raw_cid(&p.bytes[CHUNK..2 * CHUNK]);

    let routes: Vec<(&str, String)> = vec![
        ("pacman path", p.pkg_path()),
        ("by-hash", format!("/by-hash/sha256/{}", p.sha)),
        ("raw leaf", format!("/ipfs/{leaf}?format=raw")),
        ("CAR", format!("/ipfs/{}?format=car", p.cid)),
    ];
    for (i, (what, target)) in routes.iter().enumerate() {
        let d = p.corrupted(&format!("route{i}"));
        let srv = Server::serve(&d, &["--scrub-rate", "0"]);
        let check = |r: Option<Resp>| {
            // Closed without an answer: refused.
            let Some(r) = r else { return };
            if *what == "CAR" && r.status == 200 {
                // A CAR is streamed (no length): it is cut where the bad block would be.
                // What went out verifies, and it is not the whole DAG (root, three leaves).
                // (Possibly none: cut right after the header.)
                let secs = car_sections(&r.body);
                for sec in &secs {
                    assert_eq!(
                        sec.cid.hash().digest(),
                        sha2::Sha256::digest(&r.body[sec.data.clone()]).as_slice(),
                        "{what}: block {} does not match its CID",
                        sec.cid
                    );
                }
                assert!(secs.len() < 4, "{what}: {} blocks went out", secs.len());
                assert!(secs.iter().all(|s| s.cid.to_string() != leaf));
            } else {
                assert_refused(&r, &bad, what);
            }
        };
        check(try_request(srv.addr, "GET", target, &[]));
        // The file was found, counted, moved aside; a second request is refused too.
        assert_eq!(
            integrity_gauge(&srv, "found"),
            Some(1),
            "{what}: {}",
            srv.log()
        );
        assert_eq!(integrity_gauge(&srv, "quarantined"), Some(1), "{what}");
        assert!(!p.kept(&d).exists(), "{what}: still under files/");
        assert!(
            std::fs::read_dir(d.store().join("quarantine"))
                .expect("quarantine dir")
                .count()
                == 1
        );
        check(try_request(srv.addr, "GET", target, &[]));
        // The log names the file (read from stderr by a thread: give it a moment).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !srv.log().contains(&format!("corrupt file {}", p.sha)) {
            assert!(Instant::now() < deadline, "{what}: {}", srv.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(srv);
        let status = d.ok_text(&["status"]);
        assert!(
            status.contains("1 corrupt found, 0 repaired, 1 quarantined"),
            "{what}: {status}"
        );
    }

    // cat and export of the file refuse too.
    for (i, args) in [["cat", p.cid.as_str()], ["export", p.cid.as_str()]]
        .iter()
        .enumerate()
    {
        let d = p.corrupted(&format!("cmd{i}"));
        let o = d.run(&args[..]);
        assert_ne!(o.status.code(), Some(0), "{args:?} must fail");
        assert!(
            o.stdout
                .windows(64)
                .all(|w| w != &bad[FLIP_AT - 32..FLIP_AT + 32]),
            "{args:?}: the flipped byte went out"
        );
    }
}

#[test]
fn the_scrub_repairs_a_flipped_byte_from_the_upstream() {
    let p = publish();
    let d = p.corrupted("scrubbed");
    let srv = Server::serve(&d, &["--scrub-rate", "64M"]);
    // It notices the changed file by itself (no request needed) and fetches it again.
    let deadline = Instant::now() + Duration::from_secs(60);
    while integrity_gauge(&srv, "repaired") != Some(1) {
        assert!(
            Instant::now() < deadline,
            "not repaired within 60 s: {}",
            srv.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(integrity_gauge(&srv, "found"), Some(1));
    assert_eq!(integrity_gauge(&srv, "quarantined"), Some(0));
    let r = request(srv.addr, "GET", &p.pkg_path(), &[]);
    assert_eq!(r.status, 200);
    assert_same_bytes(&r.body, &p.bytes, "the repaired package");
    assert_eq!(sha256_file(&p.kept(&d)), p.sha);
    drop(srv);
    d.assert_verify(true);
}

#[test]
fn verify_repair_and_add_put_a_flipped_byte_right() {
    let p = publish();
    // verify (reporting) finds it without moving anything; --quick too, since the file
    // changed on disk since its last check.
    let d = p.corrupted("verified");
    for args in [&["verify"][..], &["verify", "--quick"][..]] {
        let o = d.run(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stdout(&o));
        assert!(stdout(&o).contains(&p.sha), "{args:?}: {}", stdout(&o));
        assert!(p.kept(&d).exists(), "reporting moves nothing");
    }
    let o = d.run(&["verify", "--repair"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("repaired: file"), "{}", stdout(&o));
    assert_eq!(sha256_file(&p.kept(&d)), p.sha);
    d.assert_verify(true);
    assert!(
        d.ok_text(&["status"])
            .contains("1 corrupt found, 1 repaired, 0 quarantined")
    );

    // `mirror` with nothing new upstream still re-hashes what changed on disk and fetches
    // the bad file again from the upstream.
    let d = p.corrupted("mirrored");
    let o = d.run(&[
        "mirror",
        "--upstream",
        s(p._m.root()),
        "--repo",
        "core",
        "--no-progress",
        "--once",
    ]);
    assert_eq!(o.status.code(), Some(3), "nothing new: {}", stderr(&o));
    assert!(stderr(&o).contains("corrupt file"), "{}", stderr(&o));
    assert_eq!(sha256_file(&p.kept(&d)), p.sha, "the bad copy was replaced");
    d.assert_verify(true);

    // `add` of the good file replaces the bad copy instead of trusting it.
    let d = p.corrupted("added");
    let good = p.t.write("good.pkg", &p.bytes);
    d.add(&[], &[s(&good)]);
    assert_eq!(sha256_file(&p.kept(&d)), p.sha, "the bad copy was replaced");
    let (status, sha, size, _) = d.cat_sha256(&p.cid);
    assert!(status.success());
    assert_eq!((sha.as_str(), size), (p.sha.as_str(), p.bytes.len() as u64));
}
