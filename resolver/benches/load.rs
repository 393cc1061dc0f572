//! HTTP load generator for `bench/serve.sh` (a `harness = false` bench target).
//!
//!     load --base http://127.0.0.1:PORT/extra/os/x86_64/ --dir UPSTREAM/extra/os/x86_64 \
//!          [--clients 64] [--requests 40] [--big-fraction 0.1] [--big-min 1048576] \
//!          [--seed 1] [--threads 1] [--warm] [--timeout 120]
//!
//! The files are the `*.pkg.tar.zst` of `--dir` (their names, sizes and first bytes are read
//! from there); files of at least `--big-min` bytes are "big", the others "small". Every
//! client holds one keep-alive HTTP/1.1 connection (reopened only if the server closes it)
//! and downloads `--requests` files one after the other: exactly round(requests *
//! big-fraction) big ones at seeded random positions, each file drawn uniformly from its
//! class. The sequence is a pure function of `--seed`, the client's number and the file list,
//! so every server gets the same requests. `--warm` instead downloads every file once, the
//! files dealt out over the clients (to fill a cache, or just the page cache).
//!
//! Every response is checked: status 200, `Content-Length` and the bytes received equal the
//! file's size, and the body has the file's bytes at its start, middle and end (16 each). A failed request is counted
//! (and its bytes are not), the client reconnects and goes on. A request whose reused
//! connection the server closed before answering (an idle keep-alive connection closed as
//! the request went out) is sent once more on a new connection, as curl and pacman do, and
//! counted as a retry.
//!
//! Per request it records the time to the response headers, to the first body byte ("TTFB")
//! and to the last byte. It prints `key value` lines on stdout (times in milliseconds,
//! MB = 10^6 bytes) and one human line on stderr. Bodies are discarded frame by frame as
//! hyper hands them over (no copies); by default everything runs on one thread, to leave the
//! other cores to the server under test.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Bytes of each file compared with the start of its body.
const PREFIX: usize = 16;

#[derive(Debug, Clone)]
struct Args {
    addr: SocketAddr,
    host: String,
    prefix: String,
    dir: PathBuf,
    clients: usize,
    requests: usize,
    big_fraction: f64,
    big_min: u64,
    seed: u64,
    threads: usize,
    warm: bool,
    timeout: Duration,
}

fn usage() -> ! {
    eprintln!(
        "usage: load --base http://HOST:PORT/PATH/ --dir DIR [--clients N] [--requests N] \
         [--big-fraction F] [--big-min BYTES] [--seed N] [--threads N] [--warm] [--timeout SECS]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut base = None;
    let mut dir = None;
    let mut a = Args {
        addr: "127.0.0.1:0".parse().unwrap(),
        host: String::new(),
        prefix: String::new(),
        dir: PathBuf::new(),
        clients: 64,
        requests: 40,
        big_fraction: 0.1,
        big_min: 1 << 20,
        seed: 1,
        threads: 1,
        warm: false,
        timeout: Duration::from_secs(120),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        // `cargo bench` passes `--bench` to harness = false targets.
        if k == "--bench" {
            continue;
        }
        if k == "--warm" {
            a.warm = true;
            continue;
        }
        let Some(v) = it.next() else { usage() };
        let num = |v: &str| v.parse::<u64>().unwrap_or_else(|_| usage());
        match k.as_str() {
            "--base" => base = Some(v),
            "--dir" => dir = Some(PathBuf::from(v)),
            "--clients" => a.clients = num(&v) as usize,
            "--requests" => a.requests = num(&v) as usize,
            "--big-fraction" => a.big_fraction = v.parse().unwrap_or_else(|_| usage()),
            "--big-min" => a.big_min = num(&v),
            "--seed" => a.seed = num(&v),
            "--threads" => a.threads = num(&v) as usize,
            "--timeout" => a.timeout = Duration::from_secs(num(&v)),
            _ => usage(),
        }
    }
    let (Some(base), Some(dir)) = (base, dir) else {
        usage()
    };
    let rest = base.strip_prefix("http://").unwrap_or_else(|| usage());
    let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
    a.addr = hostport.parse().unwrap_or_else(|_| {
        eprintln!("--base: the host must be IP:PORT");
        usage()
    });
    a.host = hostport.to_string();
    a.prefix = format!("/{}", path.trim_end_matches('/'));
    if !a.prefix.ends_with('/') {
        a.prefix.push('/');
    }
    a.dir = dir;
    if a.clients == 0 || a.threads == 0 || !(0.0..=1.0).contains(&a.big_fraction) {
        usage()
    }
    a
}

struct File {
    name: String,
    size: u64,
    /// (offset, bytes there): the start, the middle and the end of the file.
    samples: Vec<(u64, Vec<u8>)>,
}

fn list_files(dir: &std::path::Path) -> std::io::Result<Vec<File>> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".pkg.tar.zst") {
            continue;
        }
        let size = e.metadata()?.len();
        use std::os::unix::fs::FileExt as _;
        let file = std::fs::File::open(e.path())?;
        let len = PREFIX.min(size as usize);
        let mut samples = Vec::new();
        for at in [0, size / 2, size - len as u64] {
            let mut bytes = vec![0; len];
            file.read_exact_at(&mut bytes, at)?;
            samples.push((at, bytes));
        }
        files.push(File {
            name,
            size,
            samples,
        });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// SplitMix64: a small, well-mixed deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The indexes of the files client `c` downloads, in order.
fn sequence(a: &Args, files: &[File], c: usize) -> Vec<usize> {
    if a.warm {
        return (c..files.len()).step_by(a.clients).collect();
    }
    let small: Vec<usize> = (0..files.len())
        .filter(|&i| files[i].size < a.big_min)
        .collect();
    let big: Vec<usize> = (0..files.len())
        .filter(|&i| files[i].size >= a.big_min)
        .collect();
    let mut rng = Rng(a.seed ^ (c as u64 + 1).wrapping_mul(0xd1b5_4a32_d192_ed03));
    let mut nbig = (a.requests as f64 * a.big_fraction).round() as usize;
    if big.is_empty() {
        nbig = 0;
    } else if small.is_empty() {
        nbig = a.requests;
    }
    let mut is_big: Vec<bool> = (0..a.requests).map(|i| i < nbig).collect();
    for i in (1..is_big.len()).rev() {
        let j = rng.below(i + 1);
        is_big.swap(i, j);
    }
    is_big
        .into_iter()
        .map(|b| {
            let class = if b { &big } else { &small };
            class[rng.below(class.len())]
        })
        .collect()
}

/// One request's outcome.
struct Sample {
    file: usize,
    head: Duration,
    first: Duration,
    total: Duration,
}

#[derive(Default)]
struct ClientResult {
    samples: Vec<Sample>,
    failed: usize,
    errors: Vec<String>,
    reconnects: usize,
    /// Requests sent again on a new connection after the server closed a reused one.
    retries: usize,
}

type Sender = http1::SendRequest<Empty<Bytes>>;

async fn connect(a: &Args) -> Result<Sender, String> {
    let stream = TcpStream::connect(a.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", a.addr))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Why a download failed.
enum Failure {
    /// The connection closed before any of the response came: a server closing an idle
    /// keep-alive connection just as the request went out. Clients (curl, pacman) retry
    /// such a request once on a new connection.
    Closed(String),
    Other(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::Other(s)
    }
}

/// Downloads one file on `sender`: (headers, first body byte, last byte) after sending.
async fn fetch(
    a: &Args,
    sender: &mut Sender,
    f: &File,
) -> Result<(Duration, Duration, Duration), Failure> {
    let req = Request::get(format!("{}{}", a.prefix, f.name))
        .header(header::HOST, &a.host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let resp = sender.send_request(req).await.map_err(|e| {
        let msg = format!("{}: {e}", f.name);
        if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
            Failure::Closed(msg)
        } else {
            Failure::Other(msg)
        }
    })?;
    let head = t0.elapsed();
    if resp.status() != StatusCode::OK {
        return Err(format!("{}: status {}", f.name, resp.status()).into());
    }
    let len = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if len != Some(f.size) {
        return Err(format!("{}: Content-Length {len:?}, expected {}", f.name, f.size).into());
    }
    let mut body = resp.into_body();
    let mut n = 0u64;
    let mut first = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("{}: body after {n} bytes: {e}", f.name))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if first.is_none() {
            first = Some(t0.elapsed());
        }
        // The samples this frame covers (in part, if a sample spans frames).
        let end = n + data.len() as u64;
        for (at, want) in &f.samples {
            let (a, b) = ((*at).max(n), (at + want.len() as u64).min(end));
            if a < b
                && data[(a - n) as usize..(b - n) as usize]
                    != want[(a - at) as usize..(b - at) as usize]
            {
                return Err(format!("{}: wrong bytes at offset {a}", f.name).into());
            }
        }
        n = end;
    }
    if n != f.size {
        return Err(format!("{}: got {n} bytes, expected {}", f.name, f.size).into());
    }
    let total = t0.elapsed();
    Ok((head, first.unwrap_or(total), total))
}

async fn client(
    a: std::sync::Arc<Args>,
    files: std::sync::Arc<Vec<File>>,
    seq: Vec<usize>,
) -> ClientResult {
    let mut r = ClientResult::default();
    let mut sender: Option<Sender> = None;
    // Requests completed on the current connection.
    let mut used = 0usize;
    let mut queue: std::collections::VecDeque<(usize, bool)> =
        seq.into_iter().map(|i| (i, false)).collect();
    while let Some((i, retried)) = queue.pop_front() {
        if let Some(s) = &mut sender
            && s.ready().await.is_err()
        {
            sender = None;
        }
        if sender.is_none() {
            match connect(&a).await {
                Ok(s) => {
                    if !r.samples.is_empty() || r.failed > 0 {
                        r.reconnects += 1;
                    }
                    sender = Some(s);
                    used = 0;
                }
                Err(e) => {
                    r.failed += 1;
                    r.errors.push(e);
                    continue;
                }
            }
        }
        let s = sender.as_mut().unwrap();
        match tokio::time::timeout(a.timeout, fetch(&a, s, &files[i])).await {
            Ok(Ok((head, first, total))) => {
                used += 1;
                r.samples.push(Sample {
                    file: i,
                    head,
                    first,
                    total,
                })
            }
            Ok(Err(Failure::Closed(_))) if used > 0 && !retried => {
                r.retries += 1;
                sender = None;
                queue.push_front((i, true));
            }
            Ok(Err(Failure::Closed(e) | Failure::Other(e))) => {
                r.failed += 1;
                r.errors.push(e);
                sender = None;
            }
            Err(_) => {
                r.failed += 1;
                r.errors.push(format!(
                    "{}: no answer within {:?}",
                    files[i].name, a.timeout
                ));
                sender = None;
            }
        }
    }
    r
}

/// Nearest-rank percentile in milliseconds.
fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let k = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[k - 1].as_secs_f64() * 1e3
}

fn main() -> ExitCode {
    // `cargo test --all-targets` and `cargo bench` run every bench target without
    // arguments: nothing to measure without a server, and not a failure.
    if std::env::args().skip(1).all(|a| a == "--bench") {
        eprintln!("load: no --base given, nothing to do (bench/serve.sh runs this generator)");
        return ExitCode::SUCCESS;
    }
    let a = parse_args();
    let files = match list_files(&a.dir) {
        Ok(f) if !f.is_empty() => f,
        Ok(_) => {
            eprintln!("no *.pkg.tar.zst files in {}", a.dir.display());
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("{}: {e}", a.dir.display());
            return ExitCode::from(2);
        }
    };
    let rt = if a.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(a.threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    let seqs: Vec<Vec<usize>> = (0..a.clients).map(|c| sequence(&a, &files, c)).collect();
    let a = std::sync::Arc::new(a);
    let files = std::sync::Arc::new(files);
    let (results, wall) = rt.block_on(async {
        let t0 = Instant::now();
        let tasks: Vec<_> = seqs
            .into_iter()
            .map(|seq| tokio::spawn(client(a.clone(), files.clone(), seq)))
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.expect("client task"));
        }
        (results, t0.elapsed())
    });

    let mut ttfb = Vec::new();
    let mut head = Vec::new();
    let mut small_total = Vec::new();
    let mut big_total = Vec::new();
    let (mut bytes, mut failed, mut reconnects, mut retries) = (0u64, 0usize, 0usize, 0usize);
    let mut errors = Vec::new();
    for r in &results {
        for s in &r.samples {
            let f = &files[s.file];
            bytes += f.size;
            ttfb.push(s.first);
            head.push(s.head);
            if f.size >= a.big_min {
                big_total.push(s.total);
            } else {
                small_total.push(s.total);
            }
        }
        failed += r.failed;
        reconnects += r.reconnects;
        retries += r.retries;
        errors.extend(r.errors.iter().cloned());
    }
    for v in [&mut ttfb, &mut head, &mut small_total, &mut big_total] {
        v.sort();
    }
    let ok = ttfb.len();
    let secs = wall.as_secs_f64();
    let out = [
        ("requests", ok as f64),
        ("failed", failed as f64),
        ("small_requests", small_total.len() as f64),
        ("big_requests", big_total.len() as f64),
        ("bytes", bytes as f64),
        ("wall_s", secs),
        ("mb_s", bytes as f64 / secs / 1e6),
        ("req_s", ok as f64 / secs),
        ("ttfb_p50_ms", pct(&ttfb, 0.50)),
        ("ttfb_p99_ms", pct(&ttfb, 0.99)),
        ("head_p50_ms", pct(&head, 0.50)),
        ("head_p99_ms", pct(&head, 0.99)),
        ("small_total_p50_ms", pct(&small_total, 0.50)),
        ("small_total_p99_ms", pct(&small_total, 0.99)),
        ("big_total_p50_ms", pct(&big_total, 0.50)),
        ("big_total_p99_ms", pct(&big_total, 0.99)),
        ("reconnects", reconnects as f64),
        ("retries", retries as f64),
    ];
    for (k, v) in out {
        if v.fract() == 0.0 && !k.ends_with("_s") && !k.ends_with("_ms") {
            println!("{k} {v}");
        } else {
            println!("{k} {v:.3}");
        }
    }
    eprintln!(
        "{ok} requests ({failed} failed, {retries} retried), {:.1} MB in {secs:.2} s: {:.1} MB/s, {:.0} req/s, TTFB p50 {:.2} ms p99 {:.2} ms",
        bytes as f64 / 1e6,
        bytes as f64 / secs / 1e6,
        ok as f64 / secs,
        pct(&ttfb, 0.5),
        pct(&ttfb, 0.99)
    );
    for e in errors.iter().take(5) {
        eprintln!("  failed: {e}");
    }
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
