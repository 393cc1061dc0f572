//! The harness: one temp directory per test, the real `cidmirror` binary, every run bounded
//! by a timeout, and independent helpers to look at what the binary left on disk (a CAR
//! parser, a SHA-256 of every kept file, a read-only look at the SQLite index).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use cid::Cid;
use sha2::Digest;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_cidmirror");

/// No single command of these tests should come near this (the slowest, a 200 MiB add in a
/// debug build, takes about a second).
pub const TIMEOUT: Duration = Duration::from_secs(90);

/// Default chunk size of `unixfs-v1-2025`.
pub const CHUNK_V1: u64 = 1 << 20;
/// Chunk size of `unixfs-v0-2015`.
pub const CHUNK_V0: u64 = 256 << 10;

/// A bare command for the binary: no inherited data directory or log settings, stdin closed.
pub fn cidmirror() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("CIDMIRROR_DATA_DIR")
        .env_remove("CIDMIRROR_LOG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    c
}

/// Waits for `child` at most `timeout`; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().expect("waiting for cidmirror") {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Collects a spawned child's piped stdout and stderr and its status, killing it (and
/// failing the test) if it runs longer than `timeout`.
pub fn finish(mut child: Child, what: &str, timeout: Duration) -> Output {
    let out = child.stdout.take();
    let err = child.stderr.take();
    let t_out = std::thread::spawn(move || read_all(out));
    let t_err = std::thread::spawn(move || read_all(err));
    let status = match wait_timeout(&mut child, timeout) {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let err = t_err.join().unwrap_or_default();
            panic!(
                "{what}: still running after {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&err)
            );
        }
    };
    Output {
        status,
        stdout: t_out.join().expect("stdout reader"),
        stderr: t_err.join().expect("stderr reader"),
    }
}

fn read_all(r: Option<impl Read>) -> Vec<u8> {
    let mut v = Vec::new();
    if let Some(mut r) = r {
        let _ = r.read_to_end(&mut v);
    }
    v
}

/// Runs `cmd` with stdout and stderr captured, bounded by [`TIMEOUT`].
pub fn run_cmd(mut cmd: Command) -> Output {
    let what = format!("{cmd:?}");
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
    finish(child, &what, TIMEOUT)
}

/// A path as a `&str` (every path in these tests is UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

/// Stderr as text (lossy).
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Panics with both streams unless `o` succeeded.
#[track_caller]
pub fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        stderr(o)
    );
}

/// The failure contract for bad input: a non-zero exit, no panic, and exactly one line on
/// stderr starting with `error:` that contains every one of `needles`. Returns that line.
#[track_caller]
pub fn assert_one_error(o: &Output, what: &str, needles: &[&str]) -> String {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "{what}: expected failure, got success\nstdout:\n{}\nstderr:\n{err}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(
        o.status.code().map(|c| c != 0),
        Some(true),
        "{what}: expected a non-zero exit code, not a signal: {:?}",
        o.status
    );
    assert!(!err.contains("panicked"), "{what}: panicked:\n{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(
        errors.len(),
        1,
        "{what}: expected exactly one `error:` line on stderr, got:\n{err}"
    );
    for n in needles {
        assert!(
            errors[0].contains(n),
            "{what}: the error line does not name {n:?}: {}",
            errors[0]
        );
    }
    errors[0].to_string()
}

/// SHA-256 of `data`, hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&sha2::Sha256::digest(data))
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// SHA-256 of a file, streamed, hex.
pub fn sha256_file(p: &Path) -> String {
    let mut f = std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex(&h.finalize())
}

/// The CIDv1 of a raw block: what `unixfs-v1-2025` gives any file of at most one chunk
/// (computed here with the `cid` crate, not by the code under test).
pub fn raw_cid(data: &[u8]) -> String {
    let digest = sha2::Sha256::digest(data);
    let mh = cid::multihash::Multihash::<64>::wrap(0x12, &digest).expect("sha2-256 multihash");
    Cid::new_v1(0x55, mh).to_string()
}

/// Kubo's deterministic test data (`DeterministicRandomReaderBytes`): the ChaCha20 keystream
/// (RFC 8439, zero 96-bit nonce, counter 0) keyed with SHA-256(seed), first `len` bytes.
pub struct ChaChaStream {
    cipher: ChaCha20,
    left: u64,
}

impl ChaChaStream {
    pub fn new(seed: &str, len: u64) -> Self {
        let key: [u8; 32] = sha2::Sha256::digest(seed.as_bytes()).into();
        let nonce = [0u8; 12];
        ChaChaStream {
            cipher: ChaCha20::new(&key.into(), &nonce.into()),
            left: len,
        }
    }
}

impl Read for ChaChaStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        buf[..n].fill(0);
        self.cipher.apply_keystream(&mut buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// The first `len` bytes of the ChaCha stream for `seed`.
pub fn chacha_bytes(seed: &str, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    ChaChaStream::new(seed, len as u64)
        .read_to_end(&mut v)
        .expect("keystream");
    v
}

/// Writes the ChaCha stream for `seed` to `path` in 1 MiB pieces; returns its SHA-256 hex.
pub fn write_chacha_file(path: &Path, seed: &str, len: u64) -> String {
    let mut src = ChaChaStream::new(seed, len);
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    );
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = src.read(&mut buf).expect("keystream");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        f.write_all(&buf[..n]).expect("writing test data");
    }
    f.flush().expect("writing test data");
    // On disk before the binary runs: its own fsyncs should not queue behind our writeback.
    f.get_ref().sync_all().expect("syncing test data");
    hex(&h.finalize())
}

/// xorshift64*: a tiny seeded generator for delays and orders.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A fixture CAR of the gateway conformance suite.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("store/tests/data/car")
        .join(name)
}

/// The 1026-byte lorem ipsum text of the conformance fixtures (`multiblock.txt`).
pub fn lorem() -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("store/tests/data/lorem.txt");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// One block section of a CAR v1 file, as found by [`car_sections`].
#[derive(Debug, Clone)]
pub struct Section {
    /// Offset of the section (its length prefix) in the file.
    pub start: usize,
    /// The block's CID.
    pub cid: Cid,
    /// Where the block's bytes are in the file.
    pub data: std::ops::Range<usize>,
}

fn uvarint(b: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = b[*pos];
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return v;
        }
    }
    panic!("varint too long");
}

/// Splits a CAR v1 file into its block sections (an independent reader: the header is
/// skipped by its length prefix, each CID parsed with the `cid` crate).
pub fn car_sections(car: &[u8]) -> Vec<Section> {
    let mut pos = 0;
    let hlen = uvarint(car, &mut pos) as usize;
    pos += hlen;
    let mut out = Vec::new();
    while pos < car.len() {
        let start = pos;
        let len = uvarint(car, &mut pos) as usize;
        let body = &car[pos..pos + len];
        let mut rd = body;
        let cid = Cid::read_bytes(&mut rd).expect("CID in CAR section");
        let cid_len = body.len() - rd.len();
        out.push(Section {
            start,
            cid,
            data: pos + cid_len..pos + len,
        });
        pos += len;
    }
    out
}

/// One temp directory per test.
pub struct TestDir {
    tmp: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> Self {
        TestDir {
            tmp: tempfile::Builder::new()
                .prefix("cidmirror-cli-")
                .tempdir()
                .expect("creating a temp dir"),
        }
    }

    /// Under `/tmp` explicitly (for tests that run the binary as another user).
    pub fn in_tmp() -> Self {
        TestDir {
            tmp: tempfile::Builder::new()
                .prefix("cidmirror-cli-")
                .tempdir_in("/tmp")
                .expect("creating a temp dir in /tmp"),
        }
    }

    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// Writes `bytes` to `rel` (creating parent directories).
    pub fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("creating test dirs");
        }
        std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        p
    }

    /// A data directory `rel` (not created: the binary creates it); commands run in the
    /// test directory, so relative paths print as given.
    pub fn data(&self, rel: &str) -> DataDir {
        DataDir {
            dir: self.path(rel),
            cwd: self.root().to_path_buf(),
        }
    }
}

/// A cidmirror data directory and the commands run against it.
#[derive(Clone)]
pub struct DataDir {
    pub dir: PathBuf,
    pub cwd: PathBuf,
}

impl DataDir {
    /// A command with this data directory set through `CIDMIRROR_DATA_DIR`.
    pub fn cmd<I, A>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = A>,
        A: AsRef<OsStr>,
    {
        let mut c = cidmirror();
        c.env("CIDMIRROR_DATA_DIR", &self.dir)
            .current_dir(&self.cwd)
            .args(args);
        c
    }

    /// Runs a command to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        run_cmd(self.cmd(args))
    }

    /// Runs a command that must succeed; returns its stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> Vec<u8> {
        let o = self.run(args);
        assert_ok(&o, &format!("cidmirror {}", args.join(" ")));
        o.stdout
    }

    /// Like [`DataDir::ok`], stdout as text.
    #[track_caller]
    pub fn ok_text(&self, args: &[&str]) -> String {
        String::from_utf8(self.ok(args)).expect("stdout is UTF-8")
    }

    /// `add` (no progress bar) of each path; returns `path -> CID` from the printed lines.
    #[track_caller]
    pub fn add(&self, extra: &[&str], paths: &[&str]) -> HashMap<String, String> {
        let mut args = vec!["add", "--no-progress"];
        args.extend_from_slice(extra);
        args.extend_from_slice(paths);
        parse_add(&self.ok_text(&args))
    }

    /// `cat` streamed through SHA-256: (status, sha256 hex, length, stderr).
    pub fn cat_sha256(&self, target: &str) -> (ExitStatus, String, u64, String) {
        let mut c = self.cmd(["cat", target]);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawning cat");
        let mut out = child.stdout.take().expect("piped stdout");
        let hasher = std::thread::spawn(move || {
            let mut h = sha2::Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut n_total = 0u64;
            loop {
                let n = out.read(&mut buf).expect("reading cat output");
                if n == 0 {
                    break;
                }
                n_total += n as u64;
                h.update(&buf[..n]);
            }
            (hex(&h.finalize()), n_total)
        });
        let o = finish(child, &format!("cat {target}"), TIMEOUT);
        let (sha, len) = hasher.join().expect("hasher");
        (o.status, sha, len, stderr(&o))
    }

    /// The store directory inside the data directory.
    pub fn store(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// Every entry under `store/files/*/` (kept whole files), sorted.
    pub fn kept_files(&self) -> Vec<PathBuf> {
        let base = self.store().join("files");
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&base) else {
            return out;
        };
        for sub in rd {
            let sub = sub.expect("reading files/").path();
            if sub.is_dir() {
                for f in std::fs::read_dir(&sub).expect("reading files/xx") {
                    out.push(f.expect("reading files/xx").path());
                }
            } else {
                out.push(sub);
            }
        }
        out.sort();
        out
    }

    /// Entries under `store/tmp/` (files being written, or left by a failed write).
    pub fn tmp_entries(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.store().join("tmp")) {
            Ok(rd) => rd.map(|e| e.expect("reading tmp/").path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The index, opened read-only.
    pub fn index(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            self.store().join("index.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .expect("opening index.sqlite read-only")
    }

    /// Whether the index has a row for `cid`.
    pub fn has_block_row(&self, cid: &Cid) -> bool {
        let db = self.index();
        db.query_row(
            "SELECT count(*) FROM blocks WHERE cid = ?1",
            [cid.to_bytes()],
            |r| r.get::<_, i64>(0),
        )
        .expect("querying blocks")
            > 0
    }

    /// Checks the store on disk without the binary: every kept file is named by the
    /// SHA-256 of its content (so no half-written file sits under a final name), and every
    /// index row that points into a file points at an existing `files` row whose file is
    /// on disk with the recorded size, inside that size. Returns the number of kept files.
    #[track_caller]
    pub fn assert_consistent_on_disk(&self, when: &str) -> usize {
        let files = self.kept_files();
        for p in &files {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let parent = p
                .parent()
                .and_then(|d| d.file_name())
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            assert!(
                name.len() == 64 && name.starts_with(parent) && parent.len() == 2,
                "{when}: unexpected entry under files/: {}",
                p.display()
            );
            assert_eq!(
                sha256_file(p),
                name,
                "{when}: {} does not hash to its name (half-written?)",
                p.display()
            );
        }
        if !self.store().join("index.sqlite").exists() {
            return files.len();
        }
        let db = self.index();
        // files rows: sha256 -> size
        let mut rows: HashMap<i64, (String, i64)> = HashMap::new();
        let mut st = db
            .prepare("SELECT id, sha256, size FROM files")
            .expect("files table");
        let it = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .expect("reading files");
        for row in it {
            let (id, sha, size) = row.expect("files row");
            rows.insert(id, (hex(&sha), size));
        }
        let on_disk = |id: i64, what: &str| -> i64 {
            let (sha, size) = rows
                .get(&id)
                .unwrap_or_else(|| panic!("{when}: {what} refers to missing files row {id}"));
            let p = self.store().join("files").join(&sha[..2]).join(sha);
            let len = std::fs::metadata(&p)
                .unwrap_or_else(|e| panic!("{when}: {what}: file {}: {e}", p.display()))
                .len();
            assert_eq!(
                len as i64,
                *size,
                "{when}: {what}: {} has {len} bytes, the index says {size}",
                p.display()
            );
            *size
        };
        let mut st = db
            .prepare("SELECT cid, file_id, offset, length FROM blocks WHERE file_id IS NOT NULL")
            .expect("blocks table");
        let it = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .expect("reading blocks");
        for row in it {
            let (cid, file_id, offset, length) = row.expect("blocks row");
            let cid = Cid::try_from(cid.as_slice()).expect("binary CID in blocks");
            let what = format!("block {cid}");
            let size = on_disk(file_id, &what);
            assert!(
                offset >= 0 && length >= 0 && offset + length <= size,
                "{when}: {what}: range {offset}+{length} is outside {size} bytes"
            );
        }
        let mut st = db
            .prepare("SELECT cid, file_id FROM file_roots")
            .expect("file_roots table");
        let it = st
            .query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))
            .expect("reading file_roots");
        for row in it {
            let (cid, file_id) = row.expect("file_roots row");
            let cid = Cid::try_from(cid.as_slice()).expect("binary CID in file_roots");
            on_disk(file_id, &format!("file root {cid}"));
        }
        files.len()
    }

    /// `verify` (or `verify --full`) must pass and say so.
    #[track_caller]
    pub fn assert_verify(&self, full: bool) {
        let args: &[&str] = if full {
            &["verify", "--full"]
        } else {
            &["verify", "--quick"]
        };
        let o = self.run(args);
        assert_ok(&o, &args.join(" "));
        let out = stdout(&o);
        assert!(
            out.lines().any(|l| l.ends_with(": consistent")) && !out.contains("problem"),
            "{}: {out}",
            args.join(" ")
        );
    }
}

/// Parses `add` output (`CID PATH` lines) into `path -> CID`, checking the shape.
#[track_caller]
pub fn parse_add(out: &str) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for line in out.lines() {
        let (cid, path) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("not a `CID PATH` line: {line:?}"));
        assert!(
            Cid::try_from(cid).is_ok(),
            "not a CID at the start of {line:?}"
        );
        m.insert(path.to_string(), cid.to_string());
    }
    m
}

/// Panics unless `got == want`, describing the difference without dumping megabytes.
#[track_caller]
pub fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: got {} bytes, expected {}; first difference at {first:?}",
            got.len(),
            want.len()
        );
    }
}

/// `cat --offset/--length` of ranges on and around chunk boundaries of `cid` (a file of
/// content `data` cut in chunks of `chunk` bytes) gives exactly those bytes.
#[track_caller]
pub fn assert_ranges(d: &DataDir, cid: &str, data: &[u8], chunk: u64) {
    let n = data.len() as u64;
    let c = chunk;
    assert!(n > 3 * c, "the file should span more than three chunks");
    let cases: &[(u64, Option<u64>)] = &[
        (0, Some(1)),
        (0, Some(c)),
        (c - 1, Some(1)),
        (c - 1, Some(2)),
        (c, Some(c)),
        (c - 1, Some(c + 2)),
        (c + 1, Some(c - 2)),
        (2 * c + 12345, Some(c)),
        (3 * c - 5, Some(10)),
        (1, Some(3 * c)),
        (c, None),
        (n - 1, None),
        (n - 1, Some(1)),
        (n - 100, Some(1000)),
    ];
    for &(off, len) in cases {
        let off_s = off.to_string();
        let len_s = len.map(|l| l.to_string());
        let mut args = vec!["cat", "--offset", &off_s];
        if let Some(l) = &len_s {
            args.extend(["--length", l]);
        }
        args.push(cid);
        let got = d.ok(&args);
        let end = len.map_or(n, |l| (off + l).min(n));
        assert_same_bytes(&got, &data[off as usize..end as usize], &args.join(" "));
    }
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The CIDv0 of a dag-pb UnixFS file leaf holding `chunk` (UNIXFS.md: PBNode with only
/// Data = UnixFS {Type=File, Data=chunk, filesize=len}), encoded here by hand.
pub fn pb_leaf_cid_v0(chunk: &[u8]) -> String {
    let mut unixfs = vec![0x08, 0x02, 0x12];
    put_uvarint(&mut unixfs, chunk.len() as u64);
    unixfs.extend_from_slice(chunk);
    unixfs.push(0x18);
    put_uvarint(&mut unixfs, chunk.len() as u64);
    let mut node = vec![0x0a];
    put_uvarint(&mut node, unixfs.len() as u64);
    node.extend_from_slice(&unixfs);
    let digest = sha2::Sha256::digest(&node);
    let mh = cid::multihash::Multihash::<64>::wrap(0x12, &digest).expect("sha2-256 multihash");
    Cid::new_v0(mh).expect("CIDv0").to_string()
}

/// Every block of a CAR hashes (sha2-256) to the digest in its CID.
#[track_caller]
pub fn assert_car_blocks_verify(car: &[u8], what: &str) -> Vec<Section> {
    let secs = car_sections(car);
    assert!(!secs.is_empty(), "{what}: no blocks");
    for sec in &secs {
        let mh = sec.cid.hash();
        assert_eq!(mh.code(), 0x12, "{what}: {} is not sha2-256", sec.cid);
        assert_eq!(
            mh.digest(),
            sha2::Sha256::digest(&car[sec.data.clone()]).as_slice(),
            "{what}: block {} does not match its CID",
            sec.cid
        );
    }
    secs
}
