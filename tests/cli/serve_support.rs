//! `cidmirror serve` (or `mirror --serve`) as a child process for the tests: started on
//! 127.0.0.1 port 0, its address read from its "serving on" line, killed when dropped, and a
//! minimal blocking HTTP/1.1 client that shows exactly what came over the wire.
//!
//! Shared by several test modules; not each uses every part.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::DataDir;

/// How long the server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// One request's bound.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A running server process.
pub struct Server {
    pub addr: SocketAddr,
    child: Child,
    /// Everything it wrote to stderr so far.
    log: Arc<Mutex<String>>,
}

impl Server {
    /// `cidmirror serve --listen 127.0.0.1:0 EXTRA...` on `d`.
    pub fn serve(d: &DataDir, extra: &[&str]) -> Server {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        Server::spawn(d, &args)
    }

    /// Any command that ends up printing `serving on http://ADDR/` on stderr.
    pub fn spawn(d: &DataDir, args: &[&str]) -> Server {
        Server::spawn_command(d.cmd(args), &format!("{args:?}"))
    }

    /// Like [`Server::spawn`], for a command the caller set up (its environment, say).
    pub fn spawn_command(mut c: std::process::Command, args: &str) -> Server {
        let mut child = c
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting cidmirror serve");
        let err = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("serving on http://")
                    && let Ok(a) = rest.trim_end_matches('/').parse::<SocketAddr>()
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(a);
                }
                let mut l = sink.lock().expect("log lock");
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut s = Server {
            addr: "127.0.0.1:0".parse().expect("address"),
            child,
            log,
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(a) => s.addr = a,
            Err(_) => panic!("cidmirror {args} did not start serving:\n{}", s.log()),
        }
        s
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits (bounded) for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        crate::support::wait_timeout(&mut self.child, timeout)
    }

    /// Resident memory in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("reading the server's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc status")
    }

    /// `GET target`.
    pub fn get(&self, target: &str) -> Resp {
        request(self.addr, "GET", target, &[])
    }

    /// Waits (bounded) until `/api/v1/snapshot/current` shows sequence `seq`.
    pub fn wait_for_snapshot(&self, seq: u64) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.get("/api/v1/snapshot/current");
            if r.status == 200 {
                let v: serde_json::Value = serde_json::from_slice(&r.body).expect("snapshot JSON");
                if v["seq"].as_u64() == Some(seq) {
                    return v;
                }
            }
            assert!(
                Instant::now() < deadline,
                "snapshot {seq} not served within 30 s: {} {}",
                r.status,
                r.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response as it came over the wire.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Resp {
    /// A header's value (the first, if repeated); names are lower case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request on a fresh connection (`Connection: close`), read to the end.
pub fn request(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> Resp {
    try_request(addr, method, target, headers)
        .unwrap_or_else(|| panic!("{method} {target}: the connection closed without a response"))
}

/// Like [`request`], but `None` if the server closed the connection without answering (as
/// hyper may when a streamed body fails before its head is flushed).
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Option<Resp> {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut s = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT).expect("connect");
    s.set_read_timeout(Some(REQUEST_TIMEOUT)).expect("timeout");
    s.set_write_timeout(Some(REQUEST_TIMEOUT)).expect("timeout");
    s.write_all(req.as_bytes()).expect("send request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{method} {target}: reading the response: {e}"));
    (!raw.is_empty()).then(|| parse(&raw, method == "HEAD", target))
}

fn parse(raw: &[u8], head: bool, target: &str) -> Resp {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "{target}: no response head in {:?}",
                String::from_utf8_lossy(raw)
            )
        });
    let text = String::from_utf8_lossy(&raw[..end]);
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{target}: no status in {text:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v == "chunked");
    let body = if head || !chunked {
        rest.to_vec()
    } else {
        dechunk(rest)
    };
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..eol])
            .ok()
            .and_then(|t| usize::from_str_radix(t.split(';').next().unwrap_or("").trim(), 16).ok());
        let Some(size) = size else { break };
        rest = &rest[eol + 2..];
        if size == 0 || rest.len() < size {
            body.extend_from_slice(&rest[..size.min(rest.len())]);
            break;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[(size + 2).min(rest.len())..];
    }
    body
}
