//! Blocks on their way to the store, kept in an unnamed temporary file rather than in
//! memory: a sync of a repository of 200,000 packages makes 200,000 index entries and a
//! listing of about 150 MB, all stored in one batch at the end (so that nothing of a sync
//! that does not publish reaches the store, and everything is written within minutes of the
//! root's pin, well inside the store's gc grace). Each block's CID goes to the file too;
//! only its place stays in memory (16 bytes a block).
//!
//! Written here because it is a few lines over `tempfile` and `pread`; no crate offers
//! a block spool for a [`BlockSink`].

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use cid::Cid;
use cidmirror_store::importer::{BlockSink, Leaf};
use cidmirror_store::{Block, Store};

use crate::{Error, Result};

/// Bytes of blocks handed to the store at once.
const BATCH_BYTES: usize = 8 << 20;

/// Blocks written to a temporary file in `dir`, in arrival order: each its CID's bytes,
/// then its data.
pub struct Spool {
    dir: PathBuf,
    file: std::io::BufWriter<File>,
    index: Vec<Record>,
    len: u64,
    /// Blocks not to hand to the store after all (it holds them already).
    skip: std::collections::HashSet<Cid>,
}

/// Where one block is in the file.
struct Record {
    at: u64,
    data_len: u32,
    cid_len: u8,
}

impl Spool {
    /// A spool whose file lives in `dir` (unnamed: gone with the process, whatever happens).
    pub fn new(dir: &Path) -> Result<Spool> {
        let file = tempfile::tempfile_in(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Spool {
            dir: dir.to_path_buf(),
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            index: Vec::new(),
            len: 0,
            skip: Default::default(),
        })
    }

    /// Blocks held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// No block held.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Blocks `store_into` leaves out: the store has them (checked just before).
    pub fn skip(&mut self, held: std::collections::HashSet<Cid>) {
        self.skip = held;
    }

    fn path(&self) -> PathBuf {
        self.dir.join("(spooled blocks)")
    }

    fn push(&mut self, cid: &Cid, data: &[u8]) -> cidmirror_store::Result<()> {
        // Captures the field, not `self`: the file is written below.
        let io = |source| cidmirror_store::Error::Io {
            path: self.dir.join("(spooled blocks)"),
            source,
        };
        let data_len = u32::try_from(data.len()).map_err(|_| {
            io(std::io::Error::other(format!(
                "block {cid} of {} bytes",
                data.len()
            )))
        })?;
        let cid_bytes = cid.to_bytes();
        let cid_len = u8::try_from(cid_bytes.len())
            .map_err(|_| io(std::io::Error::other(format!("CID {cid} too long"))))?;
        self.file.write_all(&cid_bytes).map_err(io)?;
        self.file.write_all(data).map_err(io)?;
        self.index.push(Record {
            at: self.len,
            data_len,
            cid_len,
        });
        self.len += u64::from(cid_len) + u64::from(data_len);
        Ok(())
    }

    /// Hands every block to `store`, a batch at a time; returns the bytes of blocks that
    /// were new there.
    pub async fn store_into(self, store: &dyn Store) -> Result<u64> {
        let path = self.path();
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let file = self.file.into_inner().map_err(|e| io(e.into_error()))?;
        let mut new_bytes = 0;
        let mut batch: Vec<Block> = Vec::new();
        let mut batch_bytes = 0usize;
        for r in &self.index {
            let cid_len = usize::from(r.cid_len);
            let mut rec = vec![0; cid_len + r.data_len as usize];
            file.read_exact_at(&mut rec, r.at).map_err(io)?;
            let cid = Cid::try_from(&rec[..cid_len])
                .map_err(|e| io(std::io::Error::other(format!("a spooled CID: {e}"))))?;
            if self.skip.contains(&cid) {
                continue;
            }
            let data = Bytes::from(rec).slice(cid_len..);
            batch_bytes += data.len();
            batch.push(Block { cid, data });
            if batch_bytes >= BATCH_BYTES {
                new_bytes += store
                    .put_blocks(std::mem::take(&mut batch))
                    .await?
                    .new_bytes;
                batch_bytes = 0;
            }
        }
        if !batch.is_empty() {
            new_bytes += store.put_blocks(batch).await?.new_bytes;
        }
        Ok(new_bytes)
    }
}

impl BlockSink for Spool {
    fn leaf(&mut self, leaf: &Leaf<'_>) -> cidmirror_store::Result<()> {
        self.push(leaf.cid, &leaf.block())
    }

    fn node(&mut self, cid: &Cid, block: &[u8]) -> cidmirror_store::Result<()> {
        self.push(cid, block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blocks_come_back_as_they_went_in() {
        use cidmirror_store::EmbeddedStore;
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("store")).unwrap();
        let mut spool = Spool::new(dir.path()).unwrap();
        let mut want = Vec::new();
        for i in 0..3000u32 {
            // Sizes across the batch bound, some blocks the same.
            let data = vec![(i % 251) as u8; (i as usize % 7) * 1500 + 1];
            let f = cidmirror_store::importer::import(
                &data[..],
                &cidmirror_store::Profile::UnixfsV1_2025.params(),
                &mut spool,
            )
            .unwrap();
            want.push((f.cid, data));
        }
        assert_eq!(spool.len(), 3000);
        let new = spool.store_into(&store).await.unwrap();
        assert!(new > 0);
        for (cid, data) in want {
            let got = store.get_block(&cid).await.unwrap().expect("stored");
            assert_eq!(&got[..], &data[..], "{cid}");
        }
    }
}
