//! Shared pieces of cidmirror's fuzz targets (`fuzz_targets/`): a block store in memory
//! that holds whatever it is given (hostile blocks included), the CAR-like input format
//! that fills it, and the fixtures the targets and the seed generator
//! (`examples/make_corpus.rs`) build from the real publisher code.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use cidmirror_store::car::CarReader;
use cidmirror_store::{
    Block, BlocksWritten, ByteStream, CarImport, Cid, Error, FileSource, GcOptions, GcReport,
    ImportedFile, Pin, PinReason, PutOptions, Result, Store, unixfs,
};

pub mod fixtures;

/// Blocks in a map, served back as they are: no hash check on the way in, so that a
/// target can hand the readers blocks that do not match their CIDs (as a corrupt store or
/// a buggy source would). Only the reading side of [`Store`] works; the rest says so.
#[derive(Clone, Default)]
pub struct MemStore {
    blocks: Arc<Mutex<HashMap<Cid, Bytes>>>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps `data` under `cid`, unchecked.
    pub fn insert(&self, cid: Cid, data: impl Into<Bytes>) {
        self.lock().insert(cid, data.into());
    }

    /// Every section of a CAR stream, unchecked (a truncated or malformed stream keeps
    /// what came before the fault). The roots, if the header parsed.
    pub fn insert_car_unchecked(&self, car: &[u8]) -> Option<Vec<Cid>> {
        let reader = CarReader::new(car, "fuzz input").ok()?.trusted();
        let roots = reader.roots().to_vec();
        for (cid, data) in reader.map_while(|b| b.ok()) {
            self.insert(cid, data);
        }
        Some(roots)
    }

    /// Number of blocks held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Cid, Bytes>> {
        self.blocks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn unsupported(what: &'static str) -> Error {
    Error::InvalidParams(format!("the fuzzing MemStore does not {what}"))
}

#[async_trait]
impl Store for MemStore {
    async fn put_file(&self, _source: FileSource, _opts: PutOptions) -> Result<ImportedFile> {
        Err(unsupported("import files"))
    }

    async fn put_blocks(&self, blocks: Vec<Block>) -> Result<BlocksWritten> {
        let mut w = BlocksWritten::default();
        for b in blocks {
            cidmirror_store::hash::verify_block(&b.cid, &b.data)?;
            w.new_blocks += 1;
            w.new_bytes += b.data.len() as u64;
            self.insert(b.cid, b.data);
        }
        Ok(w)
    }

    async fn import_car(
        &self,
        _car: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
        _what: String,
        _pin: Option<PinReason>,
    ) -> Result<CarImport> {
        Err(unsupported("import CARs (use CarReader and put_blocks)"))
    }

    async fn get_block(&self, cid: &Cid) -> Result<Option<Bytes>> {
        Ok(self.lock().get(cid).cloned())
    }

    async fn has(&self, cid: &Cid) -> Result<bool> {
        Ok(self.lock().contains_key(cid))
    }

    async fn read(&self, cid: &Cid, range: Option<Range<u64>>) -> Result<(u64, ByteStream)> {
        unixfs::read(self, cid, range).await
    }

    async fn pin_all(
        &self,
        _cids: &[Cid],
        _reason: &PinReason,
        _expires_at: Option<SystemTime>,
    ) -> Result<()> {
        Err(unsupported("pin"))
    }

    async fn unpin(&self, _cid: &Cid, _reason: &PinReason) -> Result<bool> {
        Err(unsupported("pin"))
    }

    async fn unpin_all(&self, _reason: &PinReason) -> Result<u64> {
        Err(unsupported("pin"))
    }

    async fn pins(&self) -> Result<Vec<Pin>> {
        Ok(Vec::new())
    }

    async fn gc(&self, _opts: GcOptions) -> Result<GcReport> {
        Err(unsupported("collect garbage"))
    }
}

/// Runs a future to its end on a runtime of the calling thread (every store call of the
/// targets completes without waiting on anything outside).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread tokio runtime");
    }
    RT.with(|rt| rt.block_on(f))
}

/// Splits `data` at its first byte equal to `sep`: (before, after); all of it and nothing
/// when there is none.
pub fn split_at_byte(data: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == sep) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}
