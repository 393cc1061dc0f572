//! Test support: deterministic input streams from the vectors' recipes, and small helpers.

pub mod gorand;
pub mod kubo;

use std::io::Read;

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use sha2::Digest;

/// The ChaCha20 keystream (RFC 8439, 96-bit zero nonce, counter 0) keyed by SHA-256(seed),
/// first `len` bytes: Kubo's `DeterministicRandomReaderBytes`.
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

    /// Bytes `offset..offset+len` of the stream (the stream position moves there).
    pub fn bytes_at(&mut self, offset: u64, len: usize) -> Vec<u8> {
        self.cipher.seek(offset);
        self.next_bytes(len)
    }

    /// The next `n` bytes of the stream.
    pub fn next_bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.cipher.apply_keystream(&mut v);
        v
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

/// Go's `math/rand` v1 `Read` stream for `seed`, first `len` bytes.
pub struct GoRandStream {
    rng: gorand::GoRand,
    left: u64,
}

impl GoRandStream {
    pub fn new(seed: i64, len: u64) -> Self {
        GoRandStream {
            rng: gorand::GoRand::new(seed),
            left: len,
        }
    }
}

impl Read for GoRandStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        self.rng.fill(&mut buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// Path of a file under `store/tests/data`.
pub fn data_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// `len` bytes of a fixed ChaCha stream, for size tables and stores.
pub fn pseudo_random(seed: &str, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    ChaChaStream::new(seed, len as u64)
        .read_exact(&mut v)
        .expect("in-memory stream");
    v
}

#[test]
fn gorand_streams_match_their_published_sha1() {
    // Checksums from the vectors' recipes (sha1 multihash 0x11 0x14 ...).
    let mut s = GoRandStream::new(41, 5_242_880);
    let mut h = sha1::Sha1::new();
    std::io::copy(&mut s, &mut HashWriter(&mut h)).unwrap();
    assert_eq!(
        hex::encode(h.finalize()),
        "5b8c4bc8f87ea2fcfc3d55708b8cac2aadf12862"
    );
}

struct HashWriter<'a>(&'a mut sha1::Sha1);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A fresh embedded store in a temp dir (kept alive by the returned guard).
pub fn temp_store() -> (tempfile::TempDir, cidmirror_store::EmbeddedStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store =
        cidmirror_store::EmbeddedStore::open(&dir.path().join("store")).expect("open store");
    (dir, store)
}

/// Collects a byte stream, hashing it: (length, SHA-256 hex).
pub async fn drain_sha256(mut s: cidmirror_store::ByteStream) -> (u64, String) {
    use futures::StreamExt;
    let mut h = sha2::Sha256::new();
    let mut n = 0u64;
    while let Some(c) = s.next().await {
        let c = c.expect("stream chunk");
        n += c.len() as u64;
        h.update(&c);
    }
    (n, hex::encode(h.finalize()))
}

/// Collects a byte stream into memory.
pub async fn drain(mut s: cidmirror_store::ByteStream) -> Vec<u8> {
    use futures::StreamExt;
    let mut v = Vec::new();
    while let Some(c) = s.next().await {
        v.extend_from_slice(&c.expect("stream chunk"));
    }
    v
}

/// Puts every file at once (side by side, as a publisher does), each pinned for `reason`
/// until `expires`; returns what each put returned, in order.
pub async fn put_side_by_side<S: cidmirror_store::Store + Clone + 'static>(
    store: &S,
    files: &[Vec<u8>],
    reason: &cidmirror_store::PinReason,
    expires: Option<std::time::SystemTime>,
) -> Vec<cidmirror_store::ImportedFile> {
    let puts = files.iter().map(|data| {
        let (store, reason, data) = (store.clone(), reason.clone(), data.clone());
        async move {
            store
                .put_file(
                    cidmirror_store::FileSource::Reader(Box::new(std::io::Cursor::new(data))),
                    cidmirror_store::PutOptions {
                        params: cidmirror_store::Profile::UnixfsV1_2025.params(),
                        pin: Some(reason),
                        pin_expires_at: expires,
                        ..Default::default()
                    },
                )
                .await
                .unwrap()
        }
    });
    futures::future::join_all(puts).await
}
