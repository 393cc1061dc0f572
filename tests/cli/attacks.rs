//! Attacks on `cidmirror serve`, each a test (the gateway acceptance): path traversal in
//! every encoding, a 50 GB range, 2,000 idle connections, slow-loris headers, malformed
//! CIDs, and HEAD on every route. Each runs the real binary on 127.0.0.1 over a published
//! snapshot of the standard mirror; the long ones keep a client downloading and checking a
//! package meanwhile, the heavy ones measure the server's memory, and all of them check at
//! the end that it is still alive, still serves a package byte for byte, and never logged a
//! 5xx or a panic.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cid::Cid;

use crate::mirror::fixture::standard_mirror;
use crate::serve_support::{Resp, Server, request};
use crate::support::*;

/// The header timeout every server here runs with.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// No download of a test package may take longer, whatever else is going on.
const DOWNLOAD_BOUND: Duration = Duration::from_secs(5);
/// Slack on top of the header timeout before a connection counts as never closed.
const CLOSE_SLACK: Duration = Duration::from_secs(3);
const ARCH_DIR: &str = "core/os/x86_64";

/// A published snapshot of the standard mirror (plus the conformance fixture
/// `dir-with-files.car`, whose `multiblock.txt` is read block by block rather than from a
/// kept file), served with `--header-timeout 2s`.
struct Published {
    t: TestDir,
    d: DataDir,
    srv: Server,
    /// The snapshot's root CID.
    root: String,
    /// `alpha` (20 KB): name and bytes.
    alpha: (String, Vec<u8>),
    /// `gamma` (2.5 MB): name and bytes.
    gamma: (String, Vec<u8>),
    /// Root of the imported fixture.
    fixture_root: String,
}

impl Published {
    fn new() -> Published {
        let t = TestDir::new();
        let m = standard_mirror();
        let d = t.data("data");
        crate::mirror::mirror_once(&d, s(m.root()));
        let out = d.ok_text(&["import", s(&fixture("dir-with-files.car"))]);
        let fixture_root = out
            .split_whitespace()
            .next()
            .expect("import prints the root")
            .to_string();
        let core = m.files("core");
        let pkg = |name: &str| {
            core.iter()
                .find(|(f, _)| f.starts_with(&format!("{name}-")) && f.ends_with(".pkg.tar.zst"))
                .map(|(f, b)| (f.clone(), b.clone()))
                .unwrap_or_else(|| panic!("no {name} package in the standard mirror"))
        };
        let (alpha, gamma) = (pkg("alpha"), pkg("gamma"));
        assert!(gamma.1.len() > 2_000_000, "gamma is the big package");
        let srv = Server::serve(&d, &["--header-timeout", "2s"]);
        let snap = srv.wait_for_snapshot(1);
        let root = snap["root"].as_str().expect("root CID").to_string();
        Published {
            t,
            d,
            srv,
            root,
            alpha,
            gamma,
            fixture_root,
        }
    }

    fn mirror_path(&self, file: &str) -> String {
        format!("/{ARCH_DIR}/{file}")
    }

    /// `/api/v1/resolve?path=core/os/x86_64/FILE`: (cid, sha256).
    fn resolve(&self, file: &str) -> (String, String) {
        let r = self
            .srv
            .get(&format!("/api/v1/resolve?path={ARCH_DIR}/{file}"));
        assert_eq!(r.status, 200, "resolve {file}: {}", r.text());
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("resolve JSON");
        (
            v["cid"].as_str().expect("cid").to_string(),
            v["sha256"].as_str().expect("sha256").to_string(),
        )
    }

    /// The end of every test: the server is still up and still serves a package exactly.
    #[track_caller]
    fn assert_still_serving(&mut self) {
        assert!(self.srv.alive(), "the server died:\n{}", self.srv.log());
        let r = self.srv.get(&self.mirror_path(&self.alpha.0));
        assert_eq!(r.status, 200, "alpha after the attack: {}", r.text());
        assert_same_bytes(&r.body, &self.alpha.1, "alpha after the attack");
        let log = self.srv.log();
        assert!(!log.contains("panicked"), "the server panicked:\n{log}");
        // Every 5xx is logged (as a warning, which the server shows by default).
        assert!(
            !log.contains("cidmirror_resolver::error: 5"),
            "the server answered with a 5xx:\n{log}"
        );
    }

    /// A client on another thread downloading and checking both packages until stopped.
    fn downloader(&self) -> Downloader {
        let targets = vec![
            (self.mirror_path(&self.alpha.0), self.alpha.1.clone()),
            (self.mirror_path(&self.gamma.0), self.gamma.1.clone()),
        ];
        Downloader::start(self.srv.addr, targets)
    }
}

// ---------------------------------------------------------------------------------------
// A well-behaved client meanwhile

/// What the background client saw.
#[derive(Debug)]
struct Downloads {
    count: usize,
    slowest: Duration,
}

/// A background client: GETs each target in turn, checks every byte and the time each
/// download took, until stopped (at most [`Downloader::MAX_RUN`]).
struct Downloader {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Downloads>,
}

impl Downloader {
    const MAX_RUN: Duration = Duration::from_secs(60);

    fn start(addr: SocketAddr, targets: Vec<(String, Vec<u8>)>) -> Downloader {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let want: Vec<(String, Vec<u8>, String)> = targets
            .into_iter()
            .map(|(p, b)| {
                let sha = sha256_hex(&b);
                (p, b, sha)
            })
            .collect();
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let mut seen = Downloads {
                count: 0,
                slowest: Duration::ZERO,
            };
            while !flag.load(Ordering::Relaxed) && started.elapsed() < Self::MAX_RUN {
                for (path, bytes, sha) in &want {
                    let t0 = Instant::now();
                    let r = request(addr, "GET", path, &[]);
                    let took = t0.elapsed();
                    assert_eq!(r.status, 200, "meanwhile, GET {path}: {}", r.text());
                    assert_eq!(r.body.len(), bytes.len(), "meanwhile, GET {path}: length");
                    assert_eq!(&sha256_hex(&r.body), sha, "meanwhile, GET {path}: bytes");
                    assert!(
                        took < DOWNLOAD_BOUND,
                        "meanwhile, GET {path} took {took:?} (bound {DOWNLOAD_BOUND:?})"
                    );
                    seen.count += 1;
                    seen.slowest = seen.slowest.max(took);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        });
        Downloader { stop, handle }
    }

    /// Stops it and returns what it saw (its panic, if it had one, becomes this test's).
    fn finish(self) -> Downloads {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.join() {
            Ok(d) => d,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Raw sockets

/// What the server did with a connection, seen without blocking.
#[derive(Debug, PartialEq)]
enum Peer {
    /// Still open, nothing sent.
    Open,
    /// Closed (end of stream or reset), after sending these bytes (usually none).
    Closed(Vec<u8>),
    /// Sent these bytes and is still open.
    Sent(Vec<u8>),
}

/// Looks at `s` without blocking (it is left non-blocking).
fn peer_state(s: &mut TcpStream) -> Peer {
    s.set_nonblocking(true).expect("non-blocking socket");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Bounded: a server that keeps sending is reported after 64 reads.
    for _ in 0..64 {
        match s.read(&mut buf) {
            Ok(0) => return Peer::Closed(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return Peer::Closed(got),
        }
    }
    if got.is_empty() {
        Peer::Open
    } else {
        Peer::Sent(got)
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// Connections the server holds (its `cidmirror_http_connections` gauge), this one
/// included.
fn open_connections(srv: &Server) -> usize {
    let r = srv.get("/metrics");
    assert_eq!(r.status, 200, "/metrics");
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix("cidmirror_http_connections "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the connections gauge in /metrics")
}

/// Resident memory of the server, in MiB.
fn rss_mib(srv: &Server) -> f64 {
    srv.rss_kib() as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------
// 1. Path traversal

/// Spellings of `../` (and of `..` followed by a separator), as they would appear in a URL.
const UP: &[&str] = &[
    "../",
    "%2e%2e/",
    "%2E%2E/",
    ".%2e/",
    "%2e./",
    "%2e%2e%2f",
    "%2E%2E%2F",
    "..%2f",
    "..%2F",
    "%252e%252e%252f",
    "..%252f",
    "..\\",
    "..%5c",
    "%2e%2e%5c",
    "%c0%ae%c0%ae/",
    "%c0%ae%c0%ae%c0%af",
    "%e0%80%ae%e0%80%ae/",
    "..%c0%af",
    "..%00/",
    "..%00%2f",
    "....//",
    "..;/",
    ".../",
    "%u002e%u002e/",
    "%2e%2e%2f%2e%2e%2f",
];

/// Whether any of `secrets` (or a password file) is in `body`.
fn leaks(body: &[u8], secrets: &[Vec<u8>]) -> Option<String> {
    let has = |needle: &[u8]| !needle.is_empty() && body.windows(needle.len()).any(|w| w == needle);
    if has(b"root:x:0:0") || has(b"root:*:0:0") {
        return Some("/etc/passwd".into());
    }
    if has(b"SQLite format 3") {
        return Some("an SQLite database".into());
    }
    secrets
        .iter()
        .find(|s| has(s))
        .map(|s| format!("{:?}", String::from_utf8_lossy(&s[..s.len().min(40)])))
}

#[test]
fn path_traversal_in_every_encoding_on_every_route_is_refused() {
    let mut p = Published::new();
    // Files outside the store a traversal could aim at: a canary beside the data directory,
    // one inside it, and the publisher's secret key.
    let canary = format!(
        "cidmirror-canary-{}-{:?}",
        std::process::id(),
        Instant::now()
    );
    let outside = p.t.write("canary.txt", canary.as_bytes());
    let inside = p.d.dir.join("canary.txt");
    std::fs::write(&inside, canary.as_bytes()).expect("canary in the data directory");
    let key_path = p.d.dir.join("publisher.key");
    let key = std::fs::read(&key_path).expect("the publisher key");
    assert!(key.len() >= 32, "publisher key of {} bytes", key.len());
    let secrets = vec![canary.clone().into_bytes(), key];

    // Where a traversal may start, and what it may aim at.
    let (alpha_cid, alpha_sha) = p.resolve(&p.alpha.0);
    let starts = [
        format!("/{ARCH_DIR}/"),
        "/core/os/".to_string(),
        "/core/".to_string(),
        "/".to_string(),
        format!("/ipfs/{}/", p.root),
        format!("/ipfs/{}/{ARCH_DIR}/", p.root),
        format!("/ipfs/{alpha_cid}/"),
        format!("/ipfs/{}/", p.fixture_root),
        "/by-hash/sha256/".to_string(),
        format!("/by-hash/sha256/{alpha_sha}/"),
        "/api/v1/resolve?path=".to_string(),
        format!("/api/v1/resolve?path={ARCH_DIR}/"),
        "/api/v1/resolve?sha256=".to_string(),
    ];
    let abs = |path: &std::path::Path| s(path).trim_start_matches('/').to_string();
    let aims = [
        "etc/passwd".to_string(),
        abs(&outside),
        abs(&inside),
        abs(&key_path),
        abs(&p.d.store().join("index.sqlite")),
    ];
    let mut targets = Vec::new();
    for start in &starts {
        for up in UP {
            // Enough steps up to reach / from anywhere in the temp dir, then the absolute
            // path; also the bare file names relative to the data directory.
            for aim in &aims {
                targets.push(format!("{start}{}{aim}", up.repeat(12)));
            }
            targets.push(format!("{start}{up}canary.txt"));
            targets.push(format!("{start}{up}{up}canary.txt"));
            targets.push(format!("{start}{up}publisher.key"));
            targets.push(format!("{start}{}", up.trim_end_matches('/')));
            // Separators encoded all the way, for servers that decode once too often.
            let enc = aims[1].replace('/', "%2f");
            targets.push(format!("{start}{}{enc}", up.repeat(12)));
        }
        // Absolute paths and NUL.
        for aim in &aims {
            targets.push(format!("{start}/{aim}"));
            targets.push(format!("{start}%2f{}", aim.replace('/', "%2f")));
            targets.push(format!("{start}{aim}%00"));
            targets.push(format!("{start}{aim}%00.pkg.tar.zst"));
        }
        targets.push(format!("{start}%00"));
        targets.push(format!("{start}\0"));
        targets.push(format!("{start}..\0/etc/passwd"));
    }
    for aim in &aims {
        targets.push(format!("//{aim}"));
        targets.push(format!("///{aim}"));
        targets.push(format!("/ipfs//{aim}"));
        targets.push(format!("/ipfs/{}//{aim}", p.root));
        targets.push(format!("http://127.0.0.1/{aim}"));
        targets.push(format!("file:///{aim}"));
    }
    for t in [
        format!("/ipfs/{}/../../etc/passwd", p.root),
        format!("/ipfs/{alpha_cid}/../../etc/passwd"),
        "/ipfs/../etc/passwd".to_string(),
        "/ipfs/%2e%2e/etc/passwd".to_string(),
        "/../../../../etc/passwd".to_string(),
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd".to_string(),
        "/core/os/x86_64/..".to_string(),
        "/core/os/../x86_64/core.db".to_string(),
        "/core/os/%2e%2e/x86_64/core.db".to_string(),
        "/core/%2e%2e/core/os/x86_64/core.db".to_string(),
        "/%2e%2e/os/x86_64/core.db".to_string(),
        "/core/os/x86_64/.".to_string(),
        "/core/os/x86_64/%2e".to_string(),
        "/core/os/x86_64/%2fetc%2fpasswd".to_string(),
        "/core/os/x86_64/%5cetc%5cpasswd".to_string(),
        "/api/v1/resolve?path=/etc/passwd".to_string(),
        "/api/v1/resolve?path=%2fetc%2fpasswd".to_string(),
        "/api/v1/resolve?path=core/os/x86_64/..%2f..%2f..%2fetc%2fpasswd".to_string(),
        "/api/v1/resolve?path=core/os/..%2f..%2fetc/passwd".to_string(),
        "/api/v1/resolve?path=core%00/os/x86_64/core.db".to_string(),
        "/api/v1/resolve?path=core/os/x86_64/core.db%00".to_string(),
        "/api/v1/resolve?path=..%5c..%5cetc%5cpasswd/os/x/y".to_string(),
    ] {
        targets.push(t);
    }

    let started = Instant::now();
    let rss_before = rss_mib(&p.srv);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for target in &targets {
        let r = request(p.srv.addr, "GET", target, &[]);
        *statuses.entry(r.status).or_default() += 1;
        assert!(
            (400..500).contains(&r.status),
            "GET {target:?}: {} (only a 4xx will do): {}",
            r.status,
            r.text()
        );
        if let Some(what) = leaks(&r.body, &secrets) {
            panic!("GET {target:?}: the body holds {what}");
        }
    }
    // HEAD takes the same routes: a sample of them.
    for target in targets.iter().step_by(7) {
        let r = request(p.srv.addr, "HEAD", target, &[]);
        assert!(
            (400..500).contains(&r.status),
            "HEAD {target:?}: {}",
            r.status
        );
        assert!(r.body.is_empty(), "HEAD {target:?} sent a body");
    }
    let rss_after = rss_mib(&p.srv);
    eprintln!(
        "{} traversal targets in {:?}: statuses {statuses:?}; RSS {rss_before:.1} -> {rss_after:.1} MiB",
        targets.len(),
        started.elapsed(),
    );
    assert!(
        rss_after - rss_before < 64.0,
        "RSS grew from {rss_before:.1} to {rss_after:.1} MiB over refused requests"
    );
    p.assert_still_serving();
}

// ---------------------------------------------------------------------------------------
// 2. A 50 GB range

const FIFTY_GB: u64 = 50 << 30;

#[test]
fn a_fifty_gigabyte_range_gets_the_file_and_nothing_more() {
    let mut p = Published::new();
    let (gamma_cid, gamma_sha) = p.resolve(&p.gamma.0);
    let lorem = lorem();
    // One kept file four ways, and a file read block by block.
    let targets: Vec<(String, &[u8])> = vec![
        (p.mirror_path(&p.gamma.0), &p.gamma.1),
        (format!("/ipfs/{gamma_cid}"), &p.gamma.1),
        (
            format!("/ipfs/{}/{ARCH_DIR}/{}", p.root, p.gamma.0),
            &p.gamma.1,
        ),
        (format!("/by-hash/sha256/{gamma_sha}"), &p.gamma.1),
        (format!("/ipfs/{}/multiblock.txt", p.fixture_root), &lorem),
    ];
    // Warm up before measuring memory.
    for (t, _) in &targets {
        assert_eq!(p.srv.get(t).status, 200, "GET {t}");
    }
    let rss_before = rss_mib(&p.srv);
    let started = Instant::now();
    for (t, want) in &targets {
        let size = want.len() as u64;
        let get = |range: &str| request(p.srv.addr, "GET", t, &[("Range", range)]);
        let whole = |r: &Resp, what: &str| {
            assert!(
                r.status == 200 || r.status == 206,
                "{t} {what}: {} {}",
                r.status,
                r.text()
            );
            assert_same_bytes(&r.body, want, &format!("{t} {what}"));
            if r.status == 206 {
                assert_eq!(
                    r.header("content-range"),
                    Some(format!("bytes 0-{}/{size}", size - 1).as_str()),
                    "{t} {what}"
                );
            }
        };
        let unsatisfiable = |r: &Resp, what: &str| {
            assert_eq!(r.status, 416, "{t} {what}: {}", r.text());
            assert_eq!(
                r.header("content-range"),
                Some(format!("bytes */{size}").as_str()),
                "{t} {what}"
            );
            assert!(r.body.len() < 512, "{t} {what}: a short error");
        };

        // 50 GB from the start: exactly the file.
        let r = get(&format!("bytes=0-{}", FIFTY_GB - 1));
        assert_eq!(r.status, 206, "{t} 50 GB range: {}", r.text());
        whole(&r, "bytes=0-50GB");
        assert_eq!(r.header("content-length"), Some(size.to_string().as_str()));
        // HEAD of the same: the length of the file, not of the range.
        let h = request(
            p.srv.addr,
            "HEAD",
            t,
            &[("Range", &format!("bytes=0-{}", FIFTY_GB - 1))],
        );
        assert_eq!(h.status, 206, "HEAD {t} 50 GB range");
        assert_eq!(
            h.header("content-length"),
            Some(size.to_string().as_str()),
            "HEAD {t} 50 GB range"
        );
        assert!(h.body.is_empty(), "HEAD {t} sent a body");
        // The last 50 GB: the whole file.
        whole(&get(&format!("bytes=-{FIFTY_GB}")), "bytes=-50GB");
        // Starting at 50 GB (or anywhere past the end): 416 with the size.
        unsatisfiable(&get(&format!("bytes={FIFTY_GB}-")), "bytes=50GB-");
        unsatisfiable(
            &get(&format!("bytes={}-{}", FIFTY_GB - 1, FIFTY_GB - 1)),
            "bytes=50GB-1-50GB-1",
        );
        unsatisfiable(&get(&format!("bytes={size}-")), "bytes=SIZE-");
        unsatisfiable(&get("bytes=-0"), "bytes=-0");
        unsatisfiable(&get(&format!("bytes={}-", u64::MAX)), "bytes=u64::MAX-");
        // Numbers beyond u64, multi-range, backwards, garbage: the whole file (a server may
        // ignore a Range it does not serve) or 416, never an error or a partial body.
        for range in [
            "bytes=99999999999999999999-".to_string(),
            "bytes=0-99999999999999999999".to_string(),
            "bytes=-99999999999999999999".to_string(),
            format!("bytes=0-0,{FIFTY_GB}-"),
            format!("bytes=0-{},0-{}", FIFTY_GB, FIFTY_GB),
            format!("bytes={}", vec!["0-0"; 2000].join(",")),
            "bytes=1000-999".to_string(),
            "bytes=--1".to_string(),
            "bytes=0x10-0x20".to_string(),
            "bytes= 0 - 10 0".to_string(),
            "bits=0-10".to_string(),
            "bytes=".to_string(),
            "bytes=-".to_string(),
        ] {
            let r = get(&range);
            let short = &range[..range.len().min(40)];
            match r.status {
                416 => unsatisfiable(&r, short),
                _ => whole(&r, short),
            }
        }
        // And an ordinary range still works.
        let r = get("bytes=10-109");
        assert_eq!(r.status, 206, "{t} bytes=10-109");
        assert_same_bytes(&r.body, &want[10..110], &format!("{t} bytes=10-109"));
    }
    // Many clients at once asking for 50 GB: each gets the file, memory stays put.
    let addr = p.srv.addr;
    let path = p.mirror_path(&p.gamma.0);
    let sha = sha256_hex(&p.gamma.1);
    let range = format!("bytes=0-{}", FIFTY_GB - 1);
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (path, sha, range) = (path.clone(), sha.clone(), range.clone());
            std::thread::spawn(move || {
                for _ in 0..3 {
                    let r = request(addr, "GET", &path, &[("Range", &range)]);
                    assert_eq!(r.status, 206, "concurrent 50 GB range");
                    assert_eq!(sha256_hex(&r.body), sha, "concurrent 50 GB range: bytes");
                }
            })
        })
        .collect();
    for c in clients {
        if let Err(e) = c.join() {
            std::panic::resume_unwind(e);
        }
    }
    let rss_after = rss_mib(&p.srv);
    eprintln!(
        "ranges in {:?}; RSS {rss_before:.1} -> {rss_after:.1} MiB",
        started.elapsed()
    );
    // 16 clients x 3 downloads of 2.5 MB: even a server that buffered each whole file
    // would stay under 64 MiB more; one that sized a buffer by the range would not.
    assert!(
        rss_after - rss_before < 64.0,
        "RSS grew from {rss_before:.1} to {rss_after:.1} MiB over 50 GB ranges"
    );
    p.assert_still_serving();
}

// ---------------------------------------------------------------------------------------
// 3. 2,000 idle connections

const IDLE: usize = 2_000;

#[test]
fn two_thousand_idle_connections_are_closed_after_the_header_timeout() {
    // Our own descriptors: 2,000 sockets plus the test harness's (the server raises its own).
    let want_fds = (IDLE + 1_000) as u64;
    let fds = rlimit::increase_nofile_limit(want_fds).expect("raising RLIMIT_NOFILE");
    assert!(
        fds >= want_fds,
        "RLIMIT_NOFILE is {fds}: {IDLE} sockets need {want_fds}"
    );
    let mut p = Published::new();
    let addr = p.srv.addr;
    let meanwhile = p.downloader();
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = rss_mib(&p.srv);

    let opening = Instant::now();
    let mut idle: Vec<(TcpStream, Instant)> = Vec::with_capacity(IDLE);
    while idle.len() < IDLE {
        // In batches the server has accepted before the next: its listen backlog is 128
        // (std's default), and a full accept queue drops SYNs, which clients retry only a
        // second later.
        for _ in 0..100.min(IDLE - idle.len()) {
            idle.push((connect(addr), Instant::now()));
        }
        let until = Instant::now() + HEADER_TIMEOUT;
        while open_connections(&p.srv) < idle.len() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // A few more that make one request and then sit idle on the kept-alive connection.
    let mut kept: Vec<(TcpStream, Instant)> = Vec::new();
    for _ in 0..10 {
        let mut s = connect(addr);
        s.write_all(b"GET /api/v1/snapshot/current HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .expect("request on a kept-alive connection");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
            s.read_exact(&mut byte).expect("response head");
            head.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 200"), "{text}");
        let len: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("content-length");
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).expect("response body");
        kept.push((s, Instant::now()));
    }
    let opened = opening.elapsed();
    // All of them held by the server at once, and none refused for lack of slots or
    // descriptors.
    let held = open_connections(&p.srv);
    assert!(
        held > IDLE + 10,
        "the server holds {held} connections after {IDLE} + 10 idle ones were opened in \
         {opened:?}"
    );
    for (i, (s, _)) in idle.iter_mut().chain(kept.iter_mut()).enumerate() {
        assert_eq!(
            peer_state(s),
            Peer::Open,
            "connection {i} right after opening"
        );
    }
    let rss_during = rss_mib(&p.srv);
    // A request on a fresh connection while they are open.
    let r = p.srv.get(&p.mirror_path(&p.gamma.0));
    assert_eq!(r.status, 200);
    assert_same_bytes(
        &r.body,
        &p.gamma.1,
        "gamma with 2,000 idle connections open",
    );

    // Each must be closed by the server around the header timeout.
    let deadline = opening + opened + HEADER_TIMEOUT + CLOSE_SLACK;
    let mut open: Vec<(usize, TcpStream, Instant)> = idle
        .into_iter()
        .chain(kept)
        .enumerate()
        .map(|(i, (s, t))| (i, s, t))
        .collect();
    let mut earliest = Duration::MAX;
    let mut latest = Duration::ZERO;
    while !open.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let mut left = Vec::with_capacity(open.len());
        for (i, mut s, since) in open {
            match peer_state(&mut s) {
                Peer::Open => left.push((i, s, since)),
                Peer::Closed(bytes) => {
                    let after = since.elapsed();
                    earliest = earliest.min(after);
                    latest = latest.max(after);
                    assert!(
                        bytes.is_empty() || !bytes.starts_with(b"HTTP/1.1 2"),
                        "idle connection {i} got {:?}",
                        String::from_utf8_lossy(&bytes)
                    );
                }
                Peer::Sent(bytes) => panic!(
                    "idle connection {i}: the server sent {:?} and kept it open",
                    String::from_utf8_lossy(&bytes)
                ),
            }
        }
        open = left;
    }
    assert!(
        open.is_empty(),
        "{} of {} idle connections still open {:?} after the header timeout ({HEADER_TIMEOUT:?})",
        open.len(),
        IDLE + 10,
        CLOSE_SLACK
    );
    assert!(
        earliest >= HEADER_TIMEOUT - Duration::from_millis(300),
        "an idle connection was closed after {earliest:?}, before the header timeout"
    );
    std::thread::sleep(Duration::from_millis(200));
    let rss_after = rss_mib(&p.srv);
    let seen = meanwhile.finish();
    eprintln!(
        "{IDLE} idle: opened in {opened:?}, closed after {earliest:?}..{latest:?}; RSS \
         {rss_before:.1} / {rss_during:.1} / {rss_after:.1} MiB; {} downloads meanwhile, \
         slowest {:?}",
        seen.count, seen.slowest
    );
    assert!(seen.count >= 10, "only {} downloads meanwhile", seen.count);
    // An idle connection costs the server a socket and a small task (hyper's buffers come
    // with the first byte): 2,000 of them at 32 KiB each would be 62.5 MiB.
    for (when, rss) in [("with them open", rss_during), ("after", rss_after)] {
        assert!(
            rss - rss_before < 64.0,
            "RSS {when}: {rss:.1} MiB, from {rss_before:.1} MiB"
        );
    }
    p.assert_still_serving();
}

// ---------------------------------------------------------------------------------------
// 3b. Slow readers

const SLOW_READERS: usize = 500;

/// Bytes each of the server's established connections on `port` to one of the client
/// ports `peers` holds in its socket and the kernel has not had acknowledged (`tx_queue` of
/// /proc/net/tcp).
fn send_queues(port: u16, peers: &std::collections::HashSet<u16>) -> Vec<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("reading /proc/net/tcp");
    // Keyed by the peer's port: the kernel writes the table in pieces while connections
    // come and go (the downloads meanwhile), so one socket can be listed twice.
    let by_peer: std::collections::HashMap<u16, u64> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let hex_port = |i: usize| u16::from_str_radix(f.get(i)?.rsplit(':').next()?, 16).ok();
            let (local, remote) = (hex_port(1)?, hex_port(2)?);
            let established = *f.get(3)? == "01";
            let tx = u64::from_str_radix(f.get(4)?.split(':').next()?, 16).ok()?;
            (local == port && peers.contains(&remote) && established).then_some((remote, tx))
        })
        .collect();
    by_peer.into_values().collect()
}

/// Slow readers (a 4 KiB receive buffer, nothing read after the first bytes) of the big
/// package: each costs the server a bounded piece of memory and of kernel send buffer, not
/// what the kernel would let it queue (megabytes per socket), and a normal client is served
/// meanwhile. Before pieces were read with `pread` and sockets had `TCP_NOTSENT_LOWAT`,
/// each held 0.6-0.9 MiB of mapped file pages and up to 4 MiB of send buffer.
#[test]
fn slow_readers_cost_the_server_a_bounded_buffer_each() {
    let want_fds = (SLOW_READERS + 1_000) as u64;
    let fds = rlimit::increase_nofile_limit(want_fds).expect("raising RLIMIT_NOFILE");
    assert!(fds >= want_fds, "RLIMIT_NOFILE is {fds}: {want_fds} needed");
    let mut p = Published::new();
    let addr = p.srv.addr;
    // The server's baseline with its runtime warm.
    for _ in 0..3 {
        let r = p.srv.get(&p.mirror_path(&p.gamma.0));
        assert_eq!(r.status, 200);
    }
    let rss_before = rss_mib(&p.srv);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        p.mirror_path(&p.gamma.0)
    );
    let mut slow = Vec::with_capacity(SLOW_READERS);
    while slow.len() < SLOW_READERS {
        // In batches below the listen backlog (see the idle connections' test).
        for _ in 0..100.min(SLOW_READERS - slow.len()) {
            let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("socket");
            sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
            sock.connect_timeout(&addr.into(), Duration::from_secs(5))
                .expect("connect");
            let mut s: TcpStream = sock.into();
            s.write_all(request.as_bytes()).expect("request");
            slow.push(s);
        }
        let until = Instant::now() + DOWNLOAD_BOUND;
        while open_connections(&p.srv) < slow.len() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    for (i, s) in slow.iter_mut().enumerate() {
        s.set_read_timeout(Some(DOWNLOAD_BOUND)).expect("timeout");
        let mut head = [0u8; 12];
        s.read_exact(&mut head).expect("first bytes");
        assert_eq!(&head, b"HTTP/1.1 200", "slow reader {i}");
    }
    let meanwhile = p.downloader();
    // Every socket has filled what it will take by now (loopback moves gigabytes a second).
    std::thread::sleep(Duration::from_secs(1));
    let rss_during = rss_mib(&p.srv);
    let ports: std::collections::HashSet<u16> = slow
        .iter()
        .map(|s| s.local_addr().expect("local address").port())
        .collect();
    let queues = send_queues(addr.port(), &ports);
    let seen = meanwhile.finish();
    let per_reader_kib = (rss_during - rss_before) * 1024.0 / SLOW_READERS as f64;
    let (most, total) = (
        queues.iter().copied().max().unwrap_or(0),
        queues.iter().sum::<u64>(),
    );
    eprintln!(
        "{SLOW_READERS} slow readers: RSS {rss_before:.1} -> {rss_during:.1} MiB \
         ({per_reader_kib:.0} KiB each); send queues of {} sockets: at most {most} bytes, \
         {total} in all; {} downloads meanwhile, slowest {:?}",
        queues.len(),
        seen.count,
        seen.slowest
    );
    // A 16 KiB piece (a slow reader's never grow), hyper's 16 KiB buffer, its read buffer
    // and a task.
    assert!(
        per_reader_kib < 128.0,
        "{per_reader_kib:.0} KiB of server memory per slow reader"
    );
    // 128 KiB not sent (TCP_NOTSENT_LOWAT) plus what is in flight to a 4 KiB window.
    assert!(
        most <= 256 << 10,
        "a slow reader's socket holds {most} bytes of the server's"
    );
    assert!(
        queues.len() == SLOW_READERS,
        "{} established sockets seen",
        queues.len()
    );
    assert!(seen.count >= 5, "only {} downloads meanwhile", seen.count);
    drop(slow);
    p.assert_still_serving();
}

// ---------------------------------------------------------------------------------------
// 4. Slow-loris

const LORIS: usize = 20;
const DRIP: Duration = Duration::from_millis(200);

#[test]
fn slow_loris_clients_are_cut_off_at_the_header_timeout() {
    let mut p = Published::new();
    let meanwhile = p.downloader();
    let request_head = format!(
        "GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow-loris\r\nX-Padding: {}\r\n\r\n",
        p.mirror_path(&p.alpha.0),
        "a".repeat(100)
    )
    .into_bytes();
    // At one byte per 200 ms these headers would take this long to arrive.
    let full = DRIP * request_head.len() as u32;
    assert!(full > HEADER_TIMEOUT * 10, "{full:?}");

    struct Loris {
        s: TcpStream,
        sent: usize,
        since: Instant,
        closed: Option<Duration>,
    }
    let mut clients: Vec<Loris> = (0..LORIS)
        .map(|_| Loris {
            s: connect(p.srv.addr),
            sent: 0,
            since: Instant::now(),
            closed: None,
        })
        .collect();
    let started = Instant::now();
    let deadline = started + HEADER_TIMEOUT + CLOSE_SLACK;
    while clients.iter().any(|c| c.closed.is_none()) && Instant::now() < deadline {
        for (i, c) in clients.iter_mut().enumerate() {
            if c.closed.is_some() {
                continue;
            }
            match peer_state(&mut c.s) {
                Peer::Open => {}
                Peer::Closed(bytes) | Peer::Sent(bytes) => {
                    assert!(
                        !bytes.starts_with(b"HTTP/1.1 2"),
                        "slow client {i} was answered: {:?}",
                        String::from_utf8_lossy(&bytes)
                    );
                    c.closed = Some(c.since.elapsed());
                    continue;
                }
            }
            if c.sent < request_head.len() {
                let byte = &request_head[c.sent..c.sent + 1];
                match c.s.write(byte) {
                    Ok(1) => c.sent += 1,
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => c.closed = Some(c.since.elapsed()),
                }
            }
        }
        std::thread::sleep(DRIP);
    }
    let seen = meanwhile.finish();
    for (i, c) in clients.iter().enumerate() {
        let Some(after) = c.closed else {
            panic!(
                "slow client {i} still connected after {:?} ({} of {} bytes sent)",
                c.since.elapsed(),
                c.sent,
                request_head.len()
            );
        };
        assert!(
            after >= HEADER_TIMEOUT - Duration::from_millis(300)
                && after <= HEADER_TIMEOUT + CLOSE_SLACK,
            "slow client {i} cut after {after:?} (header timeout {HEADER_TIMEOUT:?})"
        );
        assert!(
            c.sent < request_head.len() / 2,
            "slow client {i} sent {} of {} bytes before being cut",
            c.sent,
            request_head.len()
        );
    }
    let times: Vec<Duration> = clients.iter().filter_map(|c| c.closed).collect();
    eprintln!(
        "{LORIS} slow clients cut after {:?}..{:?} (their headers needed {full:?}); {} \
         downloads meanwhile, slowest {:?}",
        times.iter().min(),
        times.iter().max(),
        seen.count,
        seen.slowest
    );
    assert!(seen.count >= 10, "only {} downloads meanwhile", seen.count);
    p.assert_still_serving();
}

// ---------------------------------------------------------------------------------------
// 5. Malformed CIDs

fn varint(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// RFC 4648 base32, lower case, no padding: multibase `b`.
fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in data {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// A CIDv1 string from its parts, written by hand (so it may break the rules: a digest
/// longer than any multihash allows, a length that lies).
fn cid_v1(codec: u64, hash: u64, declared_len: u64, digest: &[u8]) -> String {
    let mut b = vec![1];
    varint(codec, &mut b);
    varint(hash, &mut b);
    varint(declared_len, &mut b);
    b.extend_from_slice(digest);
    format!("b{}", base32(&b))
}

/// The bytes of a CIDv1 (for links inside hand-made blocks).
fn cid_bytes(codec: u64, hash: u64, digest: &[u8]) -> Vec<u8> {
    let mut b = vec![1];
    varint(codec, &mut b);
    varint(hash, &mut b);
    varint(digest.len() as u64, &mut b);
    b.extend_from_slice(digest);
    b
}

/// A length-delimited protobuf field.
fn pb_field(field: u64, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    varint((field << 3) | 2, &mut b);
    varint(data.len() as u64, &mut b);
    b.extend_from_slice(data);
    b
}

const RAW: u64 = 0x55;
const DAG_PB: u64 = 0x70;
const DAG_CBOR: u64 = 0x71;
const SHA2_256: u64 = 0x12;
const IDENTITY: u64 = 0x00;

#[test]
fn malformed_cids_get_a_short_client_error() {
    let mut p = Published::new();
    let digest = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(
        b"not in the store",
    ));
    let good_absent = Cid::new_v1(
        RAW,
        cid::multihash::Multihash::<64>::wrap(SHA2_256, &digest).expect("multihash"),
    )
    .to_string();
    let root_tail = &p.root[1..];
    // Blocks carried in identity CIDs: whatever is wrong with them is the client's doing.
    let garbage_pb = cid_v1(DAG_PB, IDENTITY, 3, &[0xff, 0xff, 0xff]);
    let mut huge_file = vec![0x08, 0x02, 0x18];
    varint(FIFTY_GB, &mut huge_file);
    let huge_file = cid_v1(
        DAG_PB,
        IDENTITY,
        pb_field(1, &huge_file).len() as u64,
        &pb_field(1, &huge_file),
    );
    let bad_hamt = pb_field(1, &[0x08, 0x05, 0x30, 0x03, 0x28, 0x22]);
    let bad_hamt = cid_v1(DAG_PB, IDENTITY, bad_hamt.len() as u64, &bad_hamt);
    let cbor_child = cid_bytes(DAG_CBOR, IDENTITY, b"a");
    let mut dir = pb_field(2, &[pb_field(1, &cbor_child), pb_field(2, b"x")].concat());
    dir.extend(pb_field(1, &[0x08, 0x01]));
    let dir_cbor_child = cid_v1(DAG_PB, IDENTITY, dir.len() as u64, &dir);

    // (the CID part of the path, allowed statuses, what the message must mention)
    let cases: Vec<(String, &[u16], &str)> = vec![
        (n("notacid"), &[400], "invalid CID"),
        (n("Qm"), &[400], "invalid CID"),
        (n("QmJunkJunkJunk!!!"), &[400], "invalid CID"),
        (format!("Qm{}", "1".repeat(44)), &[400, 404], ""),
        (
            n("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbd"),
            &[400],
            "invalid CID",
        ),
        (n("bafy"), &[400], "invalid CID"),
        (n("bafy0189"), &[400], "invalid CID"),
        (n("bafy!!!!"), &[400], "invalid CID"),
        (
            format!("{}0189", &p.root[..p.root.len() - 4]),
            &[400],
            "invalid CID",
        ),
        (
            p.root[..p.root.len() - 1].to_string(),
            &[400],
            "invalid CID",
        ),
        (format!("{}aa", p.root), &[400], "invalid CID"),
        (format!("junk%2Fipfs%2F{}", p.root), &[400], "invalid CID"),
        (format!("Y{root_tail}"), &[400], "invalid CID"),
        (format!("%21{root_tail}"), &[400], "invalid CID"),
        (format!("~{root_tail}"), &[400], "invalid CID"),
        (format!("b{}", "a".repeat(10_000)), &[400], "invalid CID"),
        (format!("Qm{}", "z".repeat(10_000)), &[400], "invalid CID"),
        (format!("z{}", "Z".repeat(10_000)), &[400], "invalid CID"),
        // A CIDv0 multihash spelled as CIDv1.
        (format!("bciq{}", &root_tail[8..]), &[400], "invalid CID"),
        // Well formed, but nothing here can ever have them.
        (cid_v1(0x9999, SHA2_256, 32, &digest), &[400, 404], "bagm"),
        (cid_v1(RAW, 0x9999, 32, &digest), &[400, 404], "bafk"),
        (
            cid_v1(RAW, SHA2_256, 20, &digest[..20]),
            &[400, 404],
            "bafk",
        ),
        (good_absent.clone(), &[404], "not found"),
        // A length that lies, a varint that never ends.
        (
            cid_v1(RAW, SHA2_256, 32, &digest[..10]),
            &[400],
            "invalid CID",
        ),
        (cid_v1(RAW, SHA2_256, 300, &digest), &[400], "invalid CID"),
        (
            format!(
                "b{}",
                base32(&[
                    1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
                ])
            ),
            &[400],
            "invalid CID",
        ),
        // Identity hashes of absurd length.
        (
            cid_v1(RAW, IDENTITY, 1000, &[b'x'; 1000]),
            &[400],
            "invalid CID",
        ),
        (
            cid_v1(RAW, IDENTITY, 100_000, &[b'x'; 10]),
            &[400],
            "invalid CID",
        ),
        // Bytes that are not UTF-8, and NUL.
        (n("%ff"), &[400], "not UTF-8"),
        (n("%c0%ae%c0%ae"), &[400], "not UTF-8"),
        (format!("{}%ff", p.root), &[400], "not UTF-8"),
        (format!("{}/%ff", p.root), &[400], "not UTF-8"),
        (n("%00"), &[400], "invalid CID"),
        (format!("{}%00", p.root), &[400], "invalid CID"),
    ];
    // Identity CIDs carrying broken blocks: as a raw block (or a CAR, when the damage is
    // only found on the way down a path) they are fine; what reads them must say 4xx.
    let carried: Vec<(String, u16, &str, &[&str])> = vec![
        (garbage_pb, 400, "not valid dag-pb", &["?format=raw"]),
        (huge_file, 400, "not valid UnixFS file", &["?format=raw"]),
        (format!("{bad_hamt}/x"), 400, "not valid HAMT shard", &[]),
        (
            format!("{dir_cbor_child}/x"),
            406,
            "codec 0x71",
            &["?format=raw", "?format=car"],
        ),
    ];
    let mut table: Vec<(String, Vec<u16>, &str)> = Vec::new();
    for (cid, allowed, needle) in &cases {
        for q in ["", "?format=raw", "?format=car"] {
            table.push((format!("/ipfs/{cid}{q}"), allowed.to_vec(), needle));
        }
    }
    for (cid, status, needle, fine) in &carried {
        for q in ["", "?format=raw", "?format=car"] {
            let allowed = if fine.contains(&q) {
                vec![200]
            } else {
                vec![*status]
            };
            table.push((format!("/ipfs/{cid}{q}"), allowed, needle));
        }
    }
    let started = Instant::now();
    for (target, allowed, needle) in &table {
        let shown = &target[..target.len().min(120)];
        for method in ["GET", "HEAD"] {
            let r = request(p.srv.addr, method, target, &[]);
            assert!(
                allowed.contains(&r.status),
                "{method} {shown}: {} (want one of {allowed:?}): {}",
                r.status,
                r.text()
            );
            if r.status < 400 {
                continue;
            }
            assert_eq!(
                r.header("content-type"),
                Some("text/plain; charset=utf-8"),
                "{method} {shown}: the error is text"
            );
            if method == "HEAD" {
                assert!(r.body.is_empty(), "HEAD {shown} sent a body");
                continue;
            }
            let text = r.text();
            assert!(
                text.len() < 512,
                "{method} {shown}: a {}-byte error is not short: {text}",
                text.len()
            );
            assert!(
                text.contains(needle),
                "{method} {shown}: the error does not say {needle:?}: {text}"
            );
        }
    }
    // The same root in upper-case base32 is the same CID: served, which shows the checks
    // above can tell success apart.
    let upper = format!("B{}", root_tail.to_uppercase());
    let r = p.srv.get(&format!("/ipfs/{upper}/"));
    assert_eq!(r.status, 200, "/ipfs/{upper}/: {}", r.text());
    // A well-formed identity CID is served (the checks above can tell success apart).
    let hello = cid_v1(RAW, IDENTITY, 5, b"hello");
    let r = p.srv.get(&format!("/ipfs/{hello}"));
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    eprintln!(
        "{} malformed-CID requests in {:?}",
        table.len() * 2,
        started.elapsed()
    );
    p.assert_still_serving();
}

// ---------------------------------------------------------------------------------------
// 6. HEAD on everything

/// A request target, its request headers, and the status GET must get.
type HeadCase<'a> = (String, Vec<(&'a str, &'a str)>, u16);

#[test]
fn head_matches_get_on_every_route() {
    let mut p = Published::new();
    let (alpha_cid, alpha_sha) = p.resolve(&p.alpha.0);
    let (gamma_cid, _) = p.resolve(&p.gamma.0);
    let alpha = p.mirror_path(&p.alpha.0);
    let gamma = p.mirror_path(&p.gamma.0);
    let etag = request(p.srv.addr, "GET", &alpha, &[])
        .header("etag")
        .expect("etag")
        .to_string();
    let db_since = request(p.srv.addr, "GET", "/core/os/x86_64/core.db", &[])
        .header("last-modified")
        .expect("last-modified on a database")
        .to_string();
    let root = &p.root;
    let fx = &p.fixture_root;
    let cases: Vec<HeadCase> = vec![
        (n("/core/os/x86_64/core.db"), vec![], 200),
        (n("/core/os/x86_64/core.db.sig"), vec![], 200),
        (n("/core/os/x86_64/core.files"), vec![], 200),
        (n("/extra/os/x86_64/extra.db"), vec![], 200),
        (n("/extra/os/x86_64/extra.db.sig"), vec![], 404),
        (
            n("/core/os/x86_64/core.db"),
            vec![("If-Modified-Since", &db_since)],
            304,
        ),
        (alpha.clone(), vec![], 200),
        (format!("{alpha}.sig"), vec![], 200),
        (alpha.clone(), vec![("If-None-Match", &etag)], 304),
        (gamma.clone(), vec![("Range", "bytes=100-199")], 206),
        (gamma.clone(), vec![("Range", "bytes=53687091200-")], 416),
        (
            n("/core/os/x86_64/nope-1.0-1-x86_64.pkg.tar.zst"),
            vec![],
            404,
        ),
        (n("/core/os/x86_64/%2e%2e"), vec![], 400),
        (format!("/ipfs/{root}"), vec![], 301),
        (format!("/ipfs/{root}/"), vec![], 200),
        (format!("/ipfs/{root}/{ARCH_DIR}/"), vec![], 200),
        (
            format!("/ipfs/{root}/{ARCH_DIR}/{}", p.alpha.0),
            vec![],
            200,
        ),
        (format!("/ipfs/{root}?format=raw"), vec![], 200),
        (format!("/ipfs/{root}/core?format=car"), vec![], 200),
        (
            format!("/ipfs/{root}/core?format=car&dag-scope=block"),
            vec![],
            200,
        ),
        (format!("/ipfs/{alpha_cid}"), vec![], 200),
        (format!("/ipfs/{alpha_cid}?format=raw"), vec![], 200),
        (format!("/ipfs/{gamma_cid}?format=car"), vec![], 200),
        (
            format!("/ipfs/{gamma_cid}"),
            vec![("Range", "bytes=0-53687091199")],
            206,
        ),
        (
            format!("/ipfs/{root}"),
            vec![("Accept", "application/vnd.ipld.raw")],
            200,
        ),
        (
            format!("/ipfs/{root}"),
            vec![("Accept", "application/vnd.ipld.car")],
            200,
        ),
        (
            format!("/ipfs/{root}?format=car"),
            vec![("Accept", "application/vnd.ipld.car;version=2")],
            406,
        ),
        (format!("/ipfs/{fx}/multiblock.txt"), vec![], 200),
        (
            format!("/ipfs/{fx}/multiblock.txt"),
            vec![("Range", "bytes=-100")],
            206,
        ),
        (format!("/ipfs/{fx}/nope.txt"), vec![], 404),
        (
            format!("/ipfs/{}", cid_v1(RAW, IDENTITY, 5, b"hello")),
            vec![],
            200,
        ),
        (n("/ipfs/notacid"), vec![], 400),
        (format!("/ipfs/{root}?format=tar"), vec![], 400),
        (format!("/by-hash/sha256/{alpha_sha}"), vec![], 200),
        (format!("/by-hash/sha256/{}", "0".repeat(64)), vec![], 404),
        (n("/by-hash/sha256/xyz"), vec![], 400),
        (format!("/api/v1/resolve?sha256={alpha_sha}"), vec![], 200),
        (
            format!("/api/v1/resolve?path={ARCH_DIR}/{}", p.alpha.0),
            vec![],
            200,
        ),
        (n("/api/v1/resolve"), vec![], 400),
        (n("/api/v1/resolve?path=core/os/x86_64/nope"), vec![], 404),
        (n("/api/v1/snapshot/current"), vec![], 200),
        (n("/metrics"), vec![], 200),
        (n("/"), vec![], 404),
        (n("/nope"), vec![], 404),
    ];
    let same = [
        "content-type",
        "content-range",
        "etag",
        "last-modified",
        "cache-control",
        "location",
        "accept-ranges",
        "x-ipfs-roots",
    ];
    for (target, headers, want) in &cases {
        let get = request(p.srv.addr, "GET", target, headers);
        let head = request(p.srv.addr, "HEAD", target, headers);
        let what = format!("{target} {headers:?}");
        assert_eq!(get.status, *want, "GET {what}: {}", get.text());
        assert_eq!(head.status, get.status, "HEAD {what}: status");
        assert!(
            head.body.is_empty(),
            "HEAD {what}: {} body bytes",
            head.body.len()
        );
        for h in same {
            assert_eq!(head.header(h), get.header(h), "HEAD {what}: {h}");
        }
        let get_len = get.header("content-length");
        let head_len = head.header("content-length");
        if target == "/metrics" {
            // The counters move between the two requests: only the presence must match.
            assert_eq!(head_len.is_some(), get_len.is_some(), "HEAD {what}: length");
        } else if let Some(len) = get_len {
            assert_eq!(head_len, Some(len), "HEAD {what}: content-length");
            assert_eq!(get.body.len().to_string(), len, "GET {what}: body length");
        } else {
            // A streamed GET: HEAD must not claim a length (none is known, and 0 would be
            // a lie).
            assert_eq!(
                head_len, None,
                "HEAD {what}: content-length of a streamed body"
            );
        }
    }
    // The feed: GET streams forever, HEAD answers at once without a body.
    let started = Instant::now();
    let head = request(p.srv.addr, "HEAD", "/feed", &[]);
    assert_eq!(head.status, 200, "HEAD /feed");
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert!(head.body.is_empty(), "HEAD /feed sent a body");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "HEAD /feed hung"
    );
    p.assert_still_serving();
}

fn n(s: &str) -> String {
    s.to_string()
}
