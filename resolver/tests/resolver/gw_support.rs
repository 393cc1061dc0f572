//! The gateway tests' harness: a server on 127.0.0.1:0 over a store in a temp dir, the
//! gateway-conformance CAR fixtures, and a minimal HTTP/1.1 client that shows exactly what
//! came over the wire (including a chunked body cut before its last chunk).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cid::Cid;
use cidmirror_resolver::snapshot::Snapshots;
use cidmirror_resolver::{AppState, Limits, serve};
use cidmirror_store::car::CarReader;
use cidmirror_store::{EmbeddedStore, Store};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Blocks with their bytes, in order.
pub type Blocks = Vec<(Cid, Vec<u8>)>;

/// A fixture: file name, roots, blocks in file order.
pub struct Fixture {
    pub name: String,
    pub roots: Vec<Cid>,
    pub blocks: Blocks,
}

/// Where the store crate keeps its test data.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../store/tests/data")
}

/// Every `*.car` fixture, read and verified.
pub fn fixtures() -> Vec<Fixture> {
    let dir = data_dir().join("car");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("fixture dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".car"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no fixtures in {}", dir.display());
    names.into_iter().map(|n| fixture(&n)).collect()
}

/// One fixture by file name.
pub fn fixture(name: &str) -> Fixture {
    let bytes = std::fs::read(data_dir().join("car").join(name)).expect("fixture");
    let r = CarReader::new(&bytes[..], name).expect("fixture header");
    let roots = r.roots().to_vec();
    let blocks = r.collect::<Result<Vec<_>, _>>().expect("fixture blocks");
    Fixture {
        name: name.to_string(),
        roots,
        blocks,
    }
}

/// A running gateway over its own store.
pub struct Gateway {
    pub addr: SocketAddr,
    pub store: EmbeddedStore,
    stop: Option<oneshot::Sender<()>>,
    _dir: TempDir,
}

impl Gateway {
    /// An empty store, served.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(&dir.path().join("store")).expect("store");
        let state = AppState::new(store.clone(), Snapshots::manual());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let stop = async {
                let _ = rx.await;
            };
            serve(listener, state, Limits::default(), stop)
                .await
                .expect("serve");
        });
        Gateway {
            addr,
            store,
            stop: Some(tx),
            _dir: dir,
        }
    }

    /// Every fixture imported, served.
    pub async fn with_fixtures() -> (Self, Vec<Fixture>) {
        let gw = Gateway::start().await;
        let all = fixtures();
        for f in &all {
            gw.import(&f.name).await;
        }
        (gw, all)
    }

    /// Imports one fixture.
    pub async fn import(&self, name: &str) {
        let bytes = std::fs::read(data_dir().join("car").join(name)).expect("fixture");
        self.store
            .import_car(
                Box::new(std::io::Cursor::new(bytes)),
                name.to_string(),
                None,
            )
            .await
            .expect("import");
    }

    /// `GET target`.
    pub async fn get(&self, target: &str) -> Resp {
        self.request("GET", target, &[]).await
    }

    /// Any request, on a fresh connection (`Connection: close`).
    pub async fn request(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut s = TcpStream::connect(self.addr).await.expect("connect");
        s.write_all(req.as_bytes()).await.expect("send request");
        let mut raw = Vec::new();
        let read = async {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => raw.extend_from_slice(&buf[..n]),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .expect("response within 60 s");
        Resp::parse(&raw, method == "HEAD")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A response as it came over the wire.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
    /// Whether the body ended as its framing says it must (last chunk, or Content-Length
    /// bytes); false for a cut stream.
    pub complete: bool,
}

impl Resp {
    fn parse(raw: &[u8], head: bool) -> Resp {
        // A connection closed before the head was sent (hyper drops the connection when a
        // body fails before its buffered head was flushed): status 0, never complete.
        if raw.is_empty() {
            return Resp {
                status: 0,
                headers: Vec::new(),
                body: Vec::new(),
                complete: false,
            };
        }
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
        let text = std::str::from_utf8(&raw[..end]).expect("ASCII headers");
        let mut lines = text.split("\r\n");
        let status_line = lines.next().expect("status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let rest = &raw[end + 4..];
        let mut r = Resp {
            status,
            headers,
            body: Vec::new(),
            complete: true,
        };
        if head {
            r.body = rest.to_vec();
        } else if r.header("transfer-encoding") == Some("chunked") {
            (r.body, r.complete) = dechunk(rest);
        } else if let Some(len) = r.header("content-length") {
            let len: usize = len.parse().expect("content-length");
            r.complete = rest.len() == len;
            r.body = rest.to_vec();
        } else {
            r.body = rest.to_vec();
        }
        r
    }

    /// A header's value (the first, if repeated).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body read back as a CAR, every block verified: roots and blocks in order.
    pub fn car(&self) -> cidmirror_store::Result<(Vec<Cid>, Blocks)> {
        let r = CarReader::new(&self.body[..], "response")?;
        let roots = r.roots().to_vec();
        let blocks = r.collect::<Result<Vec<_>, _>>()?;
        Ok((roots, blocks))
    }

    /// Only the CIDs of a complete, valid CAR body.
    pub fn car_cids(&self) -> Vec<Cid> {
        assert_eq!(self.status, 200, "{}", self.text());
        assert!(self.complete, "CAR cut");
        let (_, blocks) = self.car().expect("valid CAR");
        blocks.into_iter().map(|(c, _)| c).collect()
    }
}

/// A chunked body decoded; false if it stops before the last (empty) chunk.
fn dechunk(mut rest: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return (body, false);
        };
        let size_text = std::str::from_utf8(&rest[..eol]).unwrap_or("");
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return (body, false);
        };
        rest = &rest[eol + 2..];
        if size == 0 {
            return (body, true);
        }
        if rest.len() < size + 2 {
            body.extend_from_slice(&rest[..size.min(rest.len())]);
            return (body, false);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}
