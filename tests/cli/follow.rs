//! Follower gateways (`cidmirror serve --follow URL --publisher-key HEX`) end to end: a
//! publisher (`mirror --once`, then `serve` on the same data directory), followers as
//! separate processes on 127.0.0.1, fault-injecting sources and fallback mirrors written in
//! Rust in this process, and a real pacman that talks only to a follower.
//!
//! A follower writes `D/follow/status.json` every two seconds (and after each switch); the
//! tests read it as `cidmirror status` does.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::mirror::fixture::{self, Mirror};
use crate::mirror::server::{Fault, TestUpstream};
use crate::mirror::{mirror_once, runtime};
use crate::pacman_client::{Pacman, export_key};
use crate::serve_support::{REQUEST_TIMEOUT, Server, request};
use crate::support::*;

/// Indexes into `status.json`'s `transfers` array.
const T_COMPLETED: usize = 2;
const T_FAILED: usize = 3;
const T_SOURCES_DROPPED: usize = 4;
const T_FALLBACK_BYTES: usize = 5;
const T_FALLBACK_REJECTED: usize = 6;

/// The bound on every wait for a follower to get somewhere.
const WAIT: Duration = Duration::from_secs(30);

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn path_of(m: &Mirror) -> &str {
    m.root().to_str().expect("UTF-8 path")
}

/// `key show` on a publisher's data directory.
fn key_of(d: &DataDir) -> String {
    let k = d.ok_text(&["key", "show"]).trim().to_string();
    assert_eq!(k.len(), 64, "a public key in hex: {k:?}");
    k
}

/// A publisher: `mirror --once` of `m` into `d`, then `serve` on it, at snapshot 1.
fn publisher(d: &DataDir, m: &Mirror) -> Server {
    mirror_once(d, path_of(m));
    let srv = Server::serve(d, &[]);
    srv.wait_for_snapshot(1);
    srv
}

/// `serve --follow URL --publisher-key KEY EXTRA...` on `d`.
fn follower(d: &DataDir, follow: &str, key: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--follow", follow, "--publisher-key", key];
    args.extend_from_slice(extra);
    Server::serve(d, &args)
}

/// The follower's `status.json`, if written yet.
fn status_file(d: &DataDir) -> Option<Value> {
    let bytes = std::fs::read(d.dir.join("follow/status.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Waits (bounded) until the follower's `status.json` satisfies `pred`; returns it.
#[track_caller]
fn wait_status(d: &DataDir, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let st = status_file(d);
        if let Some(st) = &st
            && pred(st)
        {
            return st.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{}: status.json never showed {what}:\n{}",
            d.dir.display(),
            st.map(|v| serde_json::to_string_pretty(&v).unwrap_or_default())
                .unwrap_or_else(|| "(not written)".into())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The `sources` entry for the server at `base` (`http://127.0.0.1:PORT`).
fn source<'a>(st: &'a Value, base: &str) -> &'a Value {
    st["sources"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|s| s["url"].as_str().map(|u| u.trim_end_matches('/')) == Some(base))
        })
        .unwrap_or_else(|| panic!("no source {base} in {}", st["sources"]))
}

fn transfers(st: &Value, i: usize) -> u64 {
    num(&st["transfers"][i])
}

/// The sequence `/api/v1/snapshot/current` shows, if any.
fn seq_of(srv: &Server) -> Option<u64> {
    let r = srv.get("/api/v1/snapshot/current");
    if r.status != 200 {
        return None;
    }
    let v: Value = serde_json::from_slice(&r.body).ok()?;
    v["seq"].as_u64()
}

/// Requests the server answered, all routes but the feed, the volunteer list (a follower
/// asks for it on its own schedule) and `/metrics` itself.
fn requests_but_feed(srv: &Server) -> u64 {
    let text = srv.get("/metrics").text();
    text.lines()
        .filter(|l| {
            l.starts_with("cidmirror_http_requests_total{")
                && !l.contains("route=\"feed\"")
                && !l.contains("route=\"volunteers\"")
                && !l.contains("route=\"metrics\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A response read as far as the server sent it, without failing on a cut connection.
struct Partial {
    status: u16,
    content_length: Option<u64>,
    body: Vec<u8>,
    /// The read error that ended it, if it did not end cleanly.
    error: Option<String>,
}

impl Partial {
    /// A complete, successful answer: 200 and every byte the head announced.
    fn complete(&self) -> bool {
        self.status == 200 && self.content_length == Some(self.body.len() as u64)
    }
}

/// `GET target`, tolerating a body cut short (it reports how far it got).
fn get_partial(addr: SocketAddr, target: &str) -> Partial {
    let mut s = std::net::TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT).expect("connect");
    s.set_read_timeout(Some(REQUEST_TIMEOUT)).expect("timeout");
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut error = None;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{target}: no response head ({error:?})"));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{target}: no status in {head:?}"));
    let content_length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    });
    Partial {
        status,
        content_length,
        body: raw[end + 4..].to_vec(),
        error,
    }
}

/// What a proxy in front of a real gateway does to the answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tamper {
    /// Every block from `/ipfs/<cid>?format=raw` comes back with one byte inverted.
    FlipBlocks,
    /// `/feed` answers 500; everything else passes unchanged.
    FeedDown,
}

struct ProxyState {
    target: SocketAddr,
    tamper: Tamper,
    /// Every request target, in order.
    seen: Mutex<Vec<String>>,
    /// Answers it changed.
    tampered: AtomicU64,
}

/// A gateway in front of another (buffering each answer), written for the tests.
struct Proxy {
    base: String,
    state: Arc<ProxyState>,
}

impl Proxy {
    fn start(rt: &tokio::runtime::Runtime, target: SocketAddr, tamper: Tamper) -> Proxy {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(ProxyState {
            target,
            tamper,
            seen: Mutex::default(),
            tampered: AtomicU64::new(0),
        });
        let app = Router::new().fallback(proxied).with_state(state.clone());
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Proxy {
            base: format!("http://{addr}"),
            state,
        }
    }

    fn seen(&self) -> Vec<String> {
        self.state.seen.lock().expect("lock").clone()
    }

    fn tampered(&self) -> u64 {
        self.state.tampered.load(Ordering::Relaxed)
    }
}

async fn proxied(State(p): State<Arc<ProxyState>>, uri: Uri) -> Response {
    let target = uri
        .path_and_query()
        .map_or_else(|| "/".to_string(), |pq| pq.as_str().to_string());
    p.seen.lock().expect("lock").push(target.clone());
    if p.tamper == Tamper::FeedDown && uri.path() == "/feed" {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "feed broken for the test",
        )
            .into_response();
    }
    let to = p.target;
    let t = target.clone();
    let Ok(r) = tokio::task::spawn_blocking(move || request(to, "GET", &t, &[])).await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let mut body = r.body.clone();
    if p.tamper == Tamper::FlipBlocks
        && uri.path().starts_with("/ipfs/")
        && r.status == 200
        && !body.is_empty()
    {
        let mid = body.len() / 2;
        body[mid] ^= 0x5a;
        p.tampered.fetch_add(1, Ordering::Relaxed);
    }
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let ct = r
        .header("content-type")
        .unwrap_or("application/octet-stream")
        .to_string();
    (status, [(header::CONTENT_TYPE, ct)], body).into_response()
}

/// The standard first state with gamma kept through the change, so that the multi-block
/// package a second follower holds is still in snapshot 2.
fn change_keeping_gamma(m: &Mirror) {
    m.set_repo(
        "core",
        &[
            ("alpha", "1.0"),
            ("beta", "2.0"),
            ("gamma", "1.0"),
            ("zeta", "1.0"),
        ],
        true,
    );
    m.set_lastupdate(1_700_003_600);
}

#[test]
fn follower_learns_by_push_and_pacman_syncs_only_from_it() {
    let t = TestDir::in_tmp();
    let pkgs = fixture::packages();
    let gamma = pkgs.get("gamma", "1.0");
    let gamma_bytes = gamma.bytes();
    assert!(
        gamma_bytes.len() as u64 > 2 * CHUNK_V1,
        "gamma spans at least 3 blocks"
    );
    let m = fixture::standard_mirror();
    let pd = t.data("publisher");
    let p = publisher(&pd, &m);
    let key = key_of(&pd);

    // Polling every 30 s: only the feed's push can explain a quick switch.
    let bd = t.data("follower-b");
    let b = follower(&bd, &p.base(), &key, &["--poll-every", "30s"]);
    let ad = t.data("follower-a");
    let a = follower(
        &ad,
        &p.base(),
        &key,
        &["--poll-every", "30s", "--source", &b.base()],
    );
    let snap1 = b.wait_for_snapshot(1);
    assert_eq!(a.wait_for_snapshot(1), snap1);
    assert_eq!(
        snap1,
        p.wait_for_snapshot(1),
        "the publisher's own snapshot"
    );

    // B comes to hold gamma by serving it once.
    let target = format!("/core/os/x86_64/{}", gamma.filename);
    let r = b.get(&target);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == gamma_bytes, "gamma from B is upstream's file");
    wait_status(&bd, "gamma kept", |st| transfers(st, T_COMPLETED) >= 1);

    // Upstream moves on; the publisher publishes 2 (another process) and pushes it.
    change_keeping_gamma(&m);
    let publish = {
        let pd = pd.clone();
        let up = path_of(&m).to_string();
        std::thread::spawn(move || mirror_once(&pd, &up))
    };
    let deadline = Instant::now() + WAIT;
    let mut p_at = None;
    let a_at = loop {
        let now = Instant::now();
        if p_at.is_none() && seq_of(&p) == Some(2) {
            p_at = Some(now);
        }
        if seq_of(&a) == Some(2) {
            break now;
        }
        assert!(Instant::now() < deadline, "A never reached snapshot 2");
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = publish.join().expect("mirror --once thread");
    assert!(out.contains("published snapshot 2 "), "{out}");
    // A may switch between two looks at P: then P showed 2 no later than A did.
    let p_at = p_at.unwrap_or(a_at);
    let lag = a_at.saturating_duration_since(p_at);
    eprintln!("follower A switched to snapshot 2 {lag:?} after the publisher");
    assert!(
        lag < Duration::from_secs(2),
        "A switched {lag:?} after the publisher"
    );
    let st = wait_status(&ad, "snapshot 2 by delta", |st| {
        st["current"][0] == 2 && num(&st["refreshes_delta"]) >= 1
    });
    assert_eq!(st["feed_connected"], true, "{st}");
    assert_eq!(num(&st["refused"]), 0, "{st}");
    assert_eq!(num(&st["lag"]), 0, "{st}");
    let status = ad.ok_text(&["status"]);
    assert!(status.contains("current        snapshot 2 "), "{status}");

    // pacman, with signatures required, syncs from A alone: P answers nothing meanwhile.
    let pacman = Pacman::new(
        &t.path("pacman"),
        &a.base(),
        &["core", "extra"],
        "Required DatabaseOptional",
    );
    let fpr = export_key(&pkgs.gnupg, &t.path("signer.pub"));
    pacman.trust(&t.path("signer.pub"), &fpr);
    let p_before = requests_but_feed(&p);
    let out = pacman.ok(&["-Sy"]);
    assert!(out.contains("core") && out.contains("extra"), "{out}");
    assert_eq!(
        requests_but_feed(&p),
        p_before,
        "the publisher answered requests during pacman -Sy on A"
    );
    let sync = t.path("pacman/db/sync");
    assert_eq!(
        read(&sync.join("core.db")),
        read(&m.repo_dir("core", "x86_64").join("core.db")),
        "core's signed db, byte for byte"
    );
    let core = pacman.ok(&["-Sl", "core"]);
    for want in [
        "core alpha 1.0-1",
        "core beta 2.0-1",
        "core gamma 1.0-1",
        "core zeta 1.0-1",
    ] {
        assert!(core.contains(want), "{want} in:\n{core}");
    }
    let extra = pacman.ok(&["-Sl", "extra"]);
    for want in ["extra delta 1.0-1", "extra epsilon 1.0-1"] {
        assert!(extra.contains(want), "{want} in:\n{extra}");
    }

    // pacman -S gamma: A fetches its blocks from P and from B at once.
    let live = |d: &Server| -> Value {
        let r = d.get("/api/v1/follow/status");
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_slice(&r.body).expect("follow status JSON")
    };
    let before = live(&a);
    let (p_bytes0, b_bytes0) = (
        num(&source(&before, &p.base())["bytes"]),
        num(&source(&before, &b.base())["bytes"]),
    );
    pacman.ok(&["-S", "gamma"]);
    assert_eq!(
        read(&pacman.root.join("usr/share/gamma/version")),
        b"gamma 1.0\n"
    );
    assert!(read(&pacman.cache.join(&gamma.filename)) == gamma_bytes);
    let st = wait_status(&ad, "gamma's blocks counted", |st| {
        let p_got = num(&source(st, &p.base())["bytes"]) - p_bytes0;
        let b_got = num(&source(st, &b.base())["bytes"]) - b_bytes0;
        p_got + b_got >= gamma_bytes.len() as u64
    });
    let p_got = num(&source(&st, &p.base())["bytes"]) - p_bytes0;
    let b_got = num(&source(&st, &b.base())["bytes"]) - b_bytes0;
    eprintln!("gamma through A: {p_got} bytes from P, {b_got} from B");
    assert!(
        p_got > 0 && b_got > 0,
        "gamma came from both sources: {p_got} bytes from P, {b_got} from B:\n{}",
        st["sources"]
    );
    assert!(a.log().lines().all(|l| !l.contains("ERROR")), "{}", a.log());
}

#[test]
fn corrupt_block_source_is_dropped_and_file_arrives_intact() {
    let rt = runtime();
    let t = TestDir::new();
    let omega = fixture::packages().get("omega", "1.0");
    let omega_bytes = omega.bytes();
    let m = Mirror::new();
    m.set_repo("core", &[("alpha", "1.0"), ("omega", "1.0")], true);
    m.set_repo("extra", &[("delta", "1.0")], false);
    m.set_lastupdate(1_700_000_000);
    let pd = t.data("publisher");
    let p = publisher(&pd, &m);
    let key = key_of(&pd);

    let fake = Proxy::start(&rt, p.addr, Tamper::FlipBlocks);
    let fd = t.data("follower");
    let f = follower(&fd, &p.base(), &key, &["--source", &fake.base]);
    f.wait_for_snapshot(1);

    let target = format!("/core/os/x86_64/{}", omega.filename);
    let r = f.get(&target);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body.len(), omega_bytes.len());
    assert!(r.body == omega_bytes, "omega arrived intact");
    assert!(fake.tampered() >= 1, "the fake source was asked for blocks");

    let st = wait_status(&fd, "the corrupt source dropped", |st| {
        transfers(st, T_SOURCES_DROPPED) >= 1 && transfers(st, T_COMPLETED) >= 1
    });
    assert!(
        num(&source(&st, &fake.base)["blocks_corrupt"]) >= 1,
        "{}",
        st["sources"]
    );
    assert_eq!(
        transfers(&st, T_SOURCES_DROPPED),
        1,
        "one source dropped once: {}",
        st["transfers"]
    );
    assert_eq!(
        num(&source(&st, &fake.base)["bytes"]),
        0,
        "no verified byte came from the fake: {}",
        st["sources"]
    );
    let log = f.log();
    assert!(
        log.lines()
            .any(|l| l.contains("dropping source") && l.contains(&fake.base)),
        "the log names the dropped source:\n{log}"
    );
    // Kept: served again from the store, the same bytes.
    let again = f.get(&target);
    assert!(again.status == 200 && again.body == omega_bytes);
}

#[test]
fn fallback_mirror_with_wrong_file_is_cut_and_not_cached() {
    let rt = runtime();
    let t = TestDir::in_tmp();
    let gamma = fixture::packages().get("gamma", "1.0");
    let gamma_bytes = gamma.bytes();
    let gamma_sha = sha256_hex(&gamma_bytes);
    let m = fixture::standard_mirror();
    let rel = format!("core/os/x86_64/{}", gamma.filename);
    // Two plain HTTP mirrors of the upstream: one right, one with gamma's byte 1,000,000
    // inverted (the right size, the wrong bytes).
    let good = rt.block_on(TestUpstream::start(m.root()));
    let bad = rt.block_on(TestUpstream::start(m.root()));
    bad.set_fault(&rel, Fault::FlipByte(1_000_000));

    let pd = t.data("publisher");
    let p = publisher(&pd, &m);
    let key = key_of(&pd);
    let wd = t.data("follower-wrong");
    let w = follower(&wd, &p.base(), &key, &["--fallback-mirror", &bad.url]);
    let gd = t.data("follower-good");
    let g = follower(&gd, &p.base(), &key, &["--fallback-mirror", &good.url]);
    w.wait_for_snapshot(1);
    g.wait_for_snapshot(1);
    // The only block source goes away: package files can come from the mirrors alone.
    drop(p);

    let target = format!("/{rel}");
    let r = get_partial(w.addr, &target);
    assert!(
        !r.complete(),
        "a wrong file was served complete: {} with {} of {:?} bytes",
        r.status,
        r.body.len(),
        r.content_length
    );
    assert!(r.body != gamma_bytes);
    assert!(
        !bad.requests_for(&rel).is_empty(),
        "the follower asked the fallback mirror"
    );
    let st = wait_status(&wd, "the wrong file rejected", |st| {
        transfers(st, T_FALLBACK_REJECTED) >= 1
    });
    assert!(transfers(&st, T_FAILED) >= 1, "{}", st["transfers"]);
    let log = w.log();
    assert!(
        log.contains("SHA-256") && log.contains(&gamma.filename),
        "the log tells why:\n{log}"
    );
    // Not kept: asked again, it fails again (from the mirror again, never from the store).
    let r2 = get_partial(w.addr, &target);
    assert!(!r2.complete(), "the wrong file was kept and served");
    assert!(bad.requests_for(&rel).len() >= 2);
    let flipped_sha = {
        let mut b = gamma_bytes.clone();
        b[1_000_000] ^= 0xff;
        sha256_hex(&b)
    };
    for f in wd.kept_files() {
        let h = sha256_file(&f);
        assert!(
            h != gamma_sha && h != flipped_sha,
            "the follower keeps {} ({h})",
            f.display()
        );
    }
    // Nor is any partial copy left behind.
    let tmp = wd.dir.join("follow/tmp");
    let deadline = Instant::now() + WAIT;
    loop {
        let left: Vec<_> = std::fs::read_dir(&tmp)
            .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        if left.is_empty() && wd.tmp_entries().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: {left:?} {:?}",
            wd.tmp_entries()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The right mirror: the file arrives intact, is kept, and is served again from the
    // store.
    let r = get_partial(g.addr, &target);
    assert!(
        r.complete(),
        "{} {:?} {:?}",
        r.status,
        r.content_length,
        r.error
    );
    assert!(
        r.body == gamma_bytes,
        "gamma from the good fallback is intact"
    );
    let st = wait_status(&gd, "fallback bytes counted", |st| {
        transfers(st, T_FALLBACK_BYTES) >= gamma_bytes.len() as u64
            && transfers(st, T_COMPLETED) >= 1
    });
    assert_eq!(
        transfers(&st, T_FALLBACK_REJECTED),
        0,
        "{}",
        st["transfers"]
    );
    let served = good.requests_for(&rel).len();
    let again = g.get(&target);
    assert!(again.status == 200 && again.body == gamma_bytes);
    assert_eq!(
        good.requests_for(&rel).len(),
        served,
        "served from the store"
    );
    assert!(
        gd.kept_files().iter().any(|f| sha256_file(f) == gamma_sha),
        "the good follower keeps gamma"
    );

    // A real pacman through the follower with only the wrong mirror: the download fails
    // cleanly and nothing lands in its cache.
    let pacman = Pacman::new(&t.path("pacman"), &w.base(), &["core", "extra"], "Never");
    pacman.ok(&["-Sy"]);
    let o = pacman.run(&["-Sw", "gamma"]);
    assert!(
        !o.status.success(),
        "pacman -Sw of a wrong file succeeded:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(
        !pacman.cache.join(&gamma.filename).exists(),
        "a wrong gamma in pacman's cache"
    );
    assert!(
        stderr(&o).contains(&gamma.filename),
        "pacman names the failed file:\n{}",
        stderr(&o)
    );
}

#[test]
fn forged_snapshot_is_refused() {
    let t = TestDir::new();
    let m = fixture::standard_mirror();
    // Two publishers of the same upstream: the same root, each signed with its own key.
    let pd = t.data("publisher");
    let p = publisher(&pd, &m);
    let qd = t.data("impostor");
    let q = publisher(&qd, &m);
    let key = key_of(&pd);
    assert_ne!(key, key_of(&qd));
    assert_eq!(
        p.wait_for_snapshot(1)["root"],
        q.wait_for_snapshot(1)["root"],
        "listings are deterministic"
    );

    // A follower of the impostor, configured with the real publisher's key.
    let xd = t.data("fooled");
    let x = follower(&xd, &q.base(), &key, &[]);
    // And one of the real publisher.
    let yd = t.data("follower");
    let y = follower(&yd, &p.base(), &key, &[]);
    y.wait_for_snapshot(1);

    let st = wait_status(&xd, "the forged snapshot refused", |st| {
        num(&st["refused"]) >= 1
    });
    assert!(st["current"].is_null(), "{st}");
    let r = x.get("/api/v1/snapshot/current");
    assert!(
        r.status == 503 || r.status == 404,
        "{} {}",
        r.status,
        r.text()
    );
    let gamma = fixture::packages().get("gamma", "1.0");
    let r = x.get(&format!("/core/os/x86_64/{}", gamma.filename));
    assert_ne!(r.status, 200, "a file served from a refused snapshot");
    let log = x.log();
    assert!(
        log.lines()
            .any(|l| l.contains("refusing snapshot 1") && l.contains("signature does not verify")),
        "{log}"
    );
    let st = wait_status(&yd, "snapshot 1", |st| st["current"][0] == 1);
    assert_eq!(num(&st["refused"]), 0, "{st}");
}

#[test]
fn feed_down_falls_back_to_polling() {
    let rt = runtime();
    let t = TestDir::new();
    let m = fixture::standard_mirror();
    let pd = t.data("publisher");
    let p = publisher(&pd, &m);
    let key = key_of(&pd);
    let proxy = Proxy::start(&rt, p.addr, Tamper::FeedDown);
    let fd = t.data("follower");
    let f = follower(&fd, &proxy.base, &key, &["--poll-every", "1s"]);
    f.wait_for_snapshot(1);

    fixture::change_standard_mirror(&m);
    let out = mirror_once(&pd, path_of(&m));
    assert!(out.contains("published snapshot 2 "), "{out}");
    let published = Instant::now();
    f.wait_for_snapshot(2);
    let took = published.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "polling every second took {took:?}"
    );
    let st = wait_status(&fd, "snapshot 2", |st| st["current"][0] == 2);
    assert_eq!(st["feed_connected"], false, "{st}");
    assert_eq!(num(&st["refreshes_failed"]), 0, "{st}");
    let seen = proxy.seen();
    assert!(seen.iter().any(|s| s == "/feed"), "{seen:?}");
    assert!(
        seen.iter()
            .filter(|s| s.as_str() == "/api/v1/snapshot/current")
            .count()
            >= 2,
        "{seen:?}"
    );
    // Snapshot 2's new package, through the proxy's blocks.
    let zeta = fixture::packages().get("zeta", "1.0");
    let r = f.get(&format!("/core/os/x86_64/{}", zeta.filename));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == zeta.bytes());
}

/// The follower keeps every desc entry of its snapshots through one recursive pin of each
/// `index/<repo>/<arch>` directory (not one pin per entry): a gc that spares nothing
/// unpinned leaves the whole index in its store, before and after a refresh by delta, while
/// the packages it never fetched are not there.
#[test]
fn a_followers_gc_keeps_the_whole_index_by_its_directory_pins() {
    let t = TestDir::in_tmp();
    let m = fixture::standard_mirror();
    let pd = t.data("publisher");
    let p = publisher(&pd, &m);
    let key = key_of(&pd);
    let fd = t.data("follower");
    let f = follower(&fd, &p.base(), &key, &["--poll-every", "1s"]);
    let root_of = |snap: &Value| snap["root"].as_str().expect("root").to_string();
    let car = t.path("export.car");
    let export = |target: &str| {
        let mut c = fd.cmd(["export", "-o", s(&car), target]);
        c.stdout(std::process::Stdio::null());
        run_cmd(c)
    };
    let one = root_of(&f.wait_for_snapshot(1));
    fd.ok(&["gc", "--grace", "0s"]);
    let o = export(&format!("{one}/index"));
    assert_ok(&o, "export of snapshot 1's index after a gc");
    assert!(
        !export(&one).status.success(),
        "the whole snapshot (packages included) is not held: export should fail"
    );

    change_keeping_gamma(&m);
    mirror_once(&pd, path_of(&m));
    let two = root_of(&f.wait_for_snapshot(2));
    let st = wait_status(&fd, "snapshot 2 by delta", |st| {
        st["current"][0] == 2 && num(&st["refreshes_delta"]) >= 1
    });
    assert_eq!(num(&st["refreshes_walk"]), 1, "{st}");
    fd.ok(&["gc", "--grace", "0s"]);
    for root in [&two, &one] {
        let o = export(&format!("{root}/index"));
        assert_ok(&o, &format!("export of {root}/index after the second gc"));
    }
}
