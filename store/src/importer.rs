//! The streaming UnixFS file importer: bytes in, Kubo-identical blocks out.
//!
//! [`import`] pulls fixed-size chunks from any [`Read`] (an `AsyncRead` goes through
//! `tokio_util::io::SyncIoBridge` on a blocking thread), hands each finished block to a
//! [`BlockSink`] as soon as it exists (leaves in file order, each internal node right after
//! its last child), and returns the root with the file's size and SHA-256.
//!
//! Memory stays bounded whatever the file size: the chunk being hashed, the few chunks
//! queued for the whole-file hasher, and one partial node per tree level (at most
//! `max_links` links each). The whole-file SHA-256 and the per-chunk hashes are independent,
//! so from the second chunk on the whole-file hash runs on its own thread: on two cores a
//! file is imported in about the time of one SHA-256 pass, which is the physical limit.

use std::borrow::Cow;
use std::io::Read;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::{Scope, ScopedJoinHandle};

use cid::{Cid, Version};
use cidmirror_schema::Sha256;
use sha2::Digest;

use crate::hash::{DAG_PB, Hasher, Multihash, RAW};
use crate::params::{ImportParams, Layout, LeafKind};
use crate::pb::{self, DataType, Mtime, Unixfs};
use crate::{Error, Result};

/// What an import produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportedFile {
    /// Root CID.
    pub cid: Cid,
    /// File size in bytes.
    pub size: u64,
    /// SHA-256 of the whole file.
    pub sha256: Sha256,
    /// Cumulative size of the DAG (what a parent directory's link carries).
    pub tsize: u64,
}

/// How a leaf block is made from its file bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafForm<'a> {
    /// The block is the bytes.
    Raw,
    /// The block is a dag-pb UnixFS File node whose Data is the bytes
    /// ([`pb::file_leaf_block`]); it can be rebuilt from the bytes alone.
    PbFile,
    /// Any other encoding (trickle leaves, leaves with metadata): the whole block.
    Encoded(&'a [u8]),
}

/// A finished leaf block.
#[derive(Debug, Clone, Copy)]
pub struct Leaf<'a> {
    /// Its CID.
    pub cid: &'a Cid,
    /// Where its bytes start in the file.
    pub offset: u64,
    /// The file bytes it holds.
    pub data: &'a [u8],
    /// How the block is made from them.
    pub form: LeafForm<'a>,
}

impl<'a> Leaf<'a> {
    /// The block bytes (borrowed for raw and pre-encoded leaves).
    pub fn block(&self) -> Cow<'a, [u8]> {
        match self.form {
            LeafForm::Raw => Cow::Borrowed(self.data),
            LeafForm::PbFile => Cow::Owned(pb::file_leaf_block(self.data)),
            LeafForm::Encoded(b) => Cow::Borrowed(b),
        }
    }
}

/// Receives blocks as the importer and the directory builder finish them.
pub trait BlockSink {
    /// A leaf, in file order. Every file byte arrives in exactly one leaf.
    fn leaf(&mut self, leaf: &Leaf<'_>) -> Result<()>;
    /// An internal node (file node, directory, shard, symlink).
    fn node(&mut self, cid: &Cid, block: &[u8]) -> Result<()>;
}

/// A sink that keeps nothing (`--only-hash`).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl BlockSink for NullSink {
    fn leaf(&mut self, _: &Leaf<'_>) -> Result<()> {
        Ok(())
    }
    fn node(&mut self, _: &Cid, _: &[u8]) -> Result<()> {
        Ok(())
    }
}

/// A sink that keeps every block in memory, in emission order (tests, small DAGs).
#[derive(Debug, Default, Clone)]
pub struct VecSink(pub Vec<(Cid, Vec<u8>)>);

impl BlockSink for VecSink {
    fn leaf(&mut self, leaf: &Leaf<'_>) -> Result<()> {
        self.0.push((*leaf.cid, leaf.block().into_owned()));
        Ok(())
    }
    fn node(&mut self, cid: &Cid, block: &[u8]) -> Result<()> {
        self.0.push((*cid, block.to_vec()));
        Ok(())
    }
}

/// Optional UnixFS metadata. Kubo writes it only when asked (`--mode`, `--mtime`);
/// cidmirror never does, but reproducing such CIDs needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileMeta {
    /// POSIX mode bits.
    pub mode: Option<u32>,
    /// Modification time.
    pub mtime: Option<Mtime>,
}

impl FileMeta {
    fn is_empty(&self) -> bool {
        self.mode.is_none() && self.mtime.is_none()
    }
}

/// A link to a finished subtree of a file.
#[derive(Debug, Clone, Copy)]
struct Child {
    cid: Cid,
    tsize: u64,
    filesize: u64,
}

/// Imports a whole file from `reader`.
pub fn import<R: Read + Send>(
    reader: R,
    params: &ImportParams,
    sink: &mut dyn BlockSink,
) -> Result<ImportedFile> {
    import_with_meta(reader, params, &FileMeta::default(), sink)
}

/// Imports a whole file with UnixFS metadata on its root.
pub fn import_with_meta<R: Read + Send>(
    reader: R,
    params: &ImportParams,
    meta: &FileMeta,
    sink: &mut dyn BlockSink,
) -> Result<ImportedFile> {
    import_sized(reader, params, meta, sink, None)
}

/// [`import_with_meta`], told how large the file must be (when known): reading fails with
/// `FileTooLarge` as soon as there are more bytes, and a large file's chunks are aligned
/// from the first one on.
fn import_sized<R: Read + Send>(
    reader: R,
    params: &ImportParams,
    meta: &FileMeta,
    sink: &mut dyn BlockSink,
    size: Option<u64>,
) -> Result<ImportedFile> {
    params.validate()?;
    std::thread::scope(|scope| {
        let mut chunks = Chunker::new(reader, params.chunk_size, scope);
        chunks.align_first = size.is_some_and(|s| s >= 2 * params.chunk_size as u64);
        chunks.left = size;
        let mut b = Builder {
            params,
            meta,
            sink,
            chunks,
        };
        let root = match params.layout {
            Layout::Balanced => b.balanced()?,
            Layout::Trickle => b.trickle_root()?,
        };
        let (sha256, size) = b.chunks.finish()?;
        Ok(ImportedFile {
            cid: root.cid,
            size,
            sha256,
            tsize: root.tsize,
        })
    })
}

/// Imports a file that must match `expect` (when given): reading stops as soon as there
/// are more bytes than expected ([`Error::TooLong`]), and a size or SHA-256 that differs
/// at the end is [`Error::Mismatch`]. Shared by every store, so each refuses bad bytes
/// the same way; the sink has seen the blocks by then, and the caller keeps nothing of
/// them under a final name when this fails.
pub(crate) fn import_expecting<R: Read + Send>(
    reader: R,
    params: &ImportParams,
    expect: Option<crate::Expected>,
    sink: &mut dyn BlockSink,
) -> Result<ImportedFile> {
    let size = expect.map(|e| e.size);
    let imported =
        import_sized(reader, params, &FileMeta::default(), sink, size).map_err(|e| match e {
            Error::Stream { source, .. } if source.kind() == std::io::ErrorKind::FileTooLarge => {
                Error::TooLong {
                    expected_size: expect.map_or(0, |x| x.size),
                }
            }
            other => other,
        })?;
    if let Some(exp) = expect
        && (exp.size != imported.size || exp.sha256 != imported.sha256)
    {
        return Err(Error::Mismatch {
            expected_size: exp.size,
            actual_size: imported.size,
            expected_sha256: exp.sha256.to_hex(),
            actual_sha256: imported.sha256.to_hex(),
        });
    }
    Ok(imported)
}

/// Runs `import` on the file at `path`: refuses a directory, and names the file in a read
/// error (the importer only knows it read a stream).
pub(crate) fn from_path<T>(
    path: &std::path::Path,
    import: impl FnOnce(std::fs::File) -> Result<T>,
) -> Result<T> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    from_file(f, path, import)
}

/// [`from_path`] for a file already open.
pub(crate) fn from_file<T>(
    f: std::fs::File,
    path: &std::path::Path,
    import: impl FnOnce(std::fs::File) -> Result<T>,
) -> Result<T> {
    let meta = f.metadata().map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::IsADirectory(path.display().to_string()));
    }
    import(f).map_err(|e| match e {
        Error::Stream { source, .. } => Error::io(path, source),
        other => other,
    })
}

/// The CID of a dag-pb node under `params`.
pub(crate) fn node_cid(params: &ImportParams, mh: Multihash) -> Result<Cid> {
    match params.cid_version {
        Version::V0 => Cid::new_v0(mh).map_err(|e| Error::InvalidParams(e.to_string())),
        Version::V1 => Ok(Cid::new_v1(DAG_PB, mh)),
    }
}

/// A UnixFS symlink node pointing at `target`.
pub fn symlink_node(params: &ImportParams, target: &[u8]) -> Result<(Cid, Vec<u8>)> {
    let data = Unixfs {
        typ: Some(DataType::Symlink),
        data: Some(target),
        ..Default::default()
    }
    .encode();
    let mut block = Vec::with_capacity(data.len() + 4);
    pb::put_data(&mut block, &data);
    let cid = node_cid(params, params.hash.digest(&block))?;
    Ok((cid, block))
}

struct Builder<'a, 'scope, 'env, R> {
    params: &'a ImportParams,
    meta: &'a FileMeta,
    sink: &'a mut dyn BlockSink,
    chunks: Chunker<'scope, 'env, R>,
}

impl<'scope, 'env, R: Read + Send> Builder<'_, 'scope, 'env, R> {
    fn balanced(&mut self) -> Result<Child> {
        let Some(first) = self.chunks.next()? else {
            // The empty file is one empty leaf.
            return self.leaf(&Chunk::empty(), LeafType::Balanced, true);
        };
        if !self.meta.is_empty() && self.chunks.peek()?.is_none() {
            let leaf = self.leaf(&first, LeafType::Balanced, true);
            self.chunks.recycle(first);
            return leaf;
        }
        let mut levels: Vec<Vec<Child>> = vec![Vec::with_capacity(self.params.max_links)];
        let leaf = self.leaf(&first, LeafType::Balanced, false)?;
        self.chunks.recycle(first);
        self.push(&mut levels, 0, leaf)?;
        while let Some(chunk) = self.chunks.next()? {
            let leaf = self.leaf(&chunk, LeafType::Balanced, false)?;
            self.chunks.recycle(chunk);
            self.push(&mut levels, 0, leaf)?;
        }
        // Close every level bottom-up; the first level that is alone at the top with one
        // link holds the root. A single-child node below the top is not collapsed (Kubo).
        let mut level = 0;
        loop {
            let top = levels[level + 1..].iter().all(Vec::is_empty);
            let links = std::mem::take(&mut levels[level]);
            match (top, links.len()) {
                (true, 1) => return Ok(links[0]),
                (_, 0) => {}
                (top, _) => {
                    let node = self.file_node(&links, top)?;
                    self.push(&mut levels, level + 1, node)?;
                }
            }
            level += 1;
        }
    }

    /// Adds a link at `level`, first closing the level into a node if it is full.
    fn push(&mut self, levels: &mut Vec<Vec<Child>>, level: usize, child: Child) -> Result<()> {
        if levels.len() == level {
            levels.push(Vec::with_capacity(self.params.max_links));
        }
        if levels[level].len() == self.params.max_links {
            let links = std::mem::take(&mut levels[level]);
            let node = self.file_node(&links, false)?;
            self.push(levels, level + 1, node)?;
        }
        levels[level].push(child);
        Ok(())
    }

    fn trickle_root(&mut self) -> Result<Child> {
        self.trickle(None)
    }

    /// Kubo's trickle layout: a layer of leaves, then up to 4 subtrees of each growing depth.
    fn trickle(&mut self, max_depth: Option<usize>) -> Result<Child> {
        const DEPTH_REPEAT: usize = 4;
        let mut links = Vec::new();
        while links.len() < self.params.max_links {
            let Some(chunk) = self.chunks.next()? else {
                break;
            };
            links.push(self.leaf(&chunk, LeafType::Trickle, false)?);
            self.chunks.recycle(chunk);
        }
        let mut depth = 1;
        while max_depth.is_none_or(|m| depth < m) {
            if self.chunks.peek()?.is_none() {
                break;
            }
            for _ in 0..DEPTH_REPEAT {
                if self.chunks.peek()?.is_none() {
                    break;
                }
                links.push(self.trickle(Some(depth))?);
            }
            depth += 1;
        }
        self.file_node(&links, max_depth.is_none())
    }

    fn leaf(&mut self, chunk: &Chunk, ty: LeafType, root: bool) -> Result<Child> {
        let data = chunk.bytes();
        let len = data.len() as u64;
        let with_meta = root && !self.meta.is_empty();
        let hash = self.params.hash;
        if self.params.leaves == LeafKind::Raw && !with_meta {
            let cid = Cid::new_v1(RAW, hash.digest(data));
            self.sink.leaf(&Leaf {
                cid: &cid,
                offset: chunk.offset,
                data,
                form: LeafForm::Raw,
            })?;
            return Ok(Child {
                cid,
                tsize: len,
                filesize: len,
            });
        }
        if ty == LeafType::Balanced && !with_meta {
            // Hash prefix || data || suffix without building the block.
            let (prefix, suffix) = pb::leaf_frame(DataType::File, data.len());
            let mut h: Hasher = hash.hasher();
            h.update(&prefix);
            h.update(data);
            h.update(&suffix);
            let cid = node_cid(self.params, h.finish())?;
            self.sink.leaf(&Leaf {
                cid: &cid,
                offset: chunk.offset,
                data,
                form: LeafForm::PbFile,
            })?;
            return Ok(Child {
                cid,
                tsize: (prefix.len() + data.len() + suffix.len()) as u64,
                filesize: len,
            });
        }
        let unixfs = Unixfs {
            typ: Some(if ty == LeafType::Trickle {
                DataType::Raw
            } else {
                DataType::File
            }),
            data: (!data.is_empty()).then_some(data),
            filesize: Some(len),
            mode: self.meta.mode.filter(|_| with_meta),
            mtime: self.meta.mtime.filter(|_| with_meta),
            ..Default::default()
        }
        .encode();
        let mut block = Vec::with_capacity(unixfs.len() + 8);
        pb::put_data(&mut block, &unixfs);
        let cid = node_cid(self.params, hash.digest(&block))?;
        self.sink.leaf(&Leaf {
            cid: &cid,
            offset: chunk.offset,
            data,
            form: LeafForm::Encoded(&block),
        })?;
        Ok(Child {
            cid,
            tsize: block.len() as u64,
            filesize: len,
        })
    }

    fn file_node(&mut self, links: &[Child], root: bool) -> Result<Child> {
        let filesize: u64 = links.iter().map(|l| l.filesize).sum();
        let unixfs = Unixfs {
            typ: Some(DataType::File),
            filesize: Some(filesize),
            blocksizes: links.iter().map(|l| l.filesize).collect(),
            mode: self.meta.mode.filter(|_| root),
            mtime: self.meta.mtime.filter(|_| root),
            ..Default::default()
        }
        .encode();
        let mut block = Vec::with_capacity(links.len() * 44 + unixfs.len() + 8);
        let mut tsize = 0u64;
        for l in links {
            pb::put_link(&mut block, &l.cid, b"", l.tsize);
            tsize += l.tsize;
        }
        pb::put_data(&mut block, &unixfs);
        let cid = node_cid(self.params, self.params.hash.digest(&block))?;
        self.sink.node(&cid, &block)?;
        Ok(Child {
            cid,
            tsize: tsize + block.len() as u64,
            filesize,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeafType {
    Balanced,
    Trickle,
}

/// From a file's second chunk on, a chunk's bytes start at a multiple of this in memory, so
/// that a sink can hand them to the kernel for direct I/O (`O_DIRECT`) without a copy.
pub(crate) const IO_ALIGN: usize = 4096;

/// One chunk of the file, shared with the whole-file hasher thread: `buf[start..]`.
struct Chunk {
    buf: Arc<Vec<u8>>,
    start: usize,
    offset: u64,
}

impl Chunk {
    fn empty() -> Chunk {
        Chunk {
            buf: Arc::new(Vec::new()),
            start: 0,
            offset: 0,
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// Chunks the input does not need at once are kept here for reuse.
type Pool = Arc<Mutex<Vec<Vec<u8>>>>;
const POOL_MAX: usize = 8;
/// Chunks queued for the whole-file hasher (bounds memory to a few chunks).
const HASH_QUEUE: usize = 3;

fn give_back(pool: &Pool, buf: Arc<Vec<u8>>) {
    if let Ok(v) = Arc::try_unwrap(buf) {
        let mut p = pool.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() < POOL_MAX {
            p.push(v);
        }
    }
}

enum WholeHash<'scope> {
    Inline(sha2::Sha256),
    Thread {
        tx: SyncSender<(Arc<Vec<u8>>, usize)>,
        handle: ScopedJoinHandle<'scope, sha2::Sha256>,
    },
    Done,
}

/// Reads fixed-size chunks and feeds the whole-file SHA-256 (inline for the first chunk,
/// on a helper thread from the second on).
struct Chunker<'scope, 'env, R> {
    reader: R,
    chunk_size: usize,
    offset: u64,
    eof: bool,
    count: u64,
    peeked: Option<Chunk>,
    whole: WholeHash<'scope>,
    scope: &'scope Scope<'scope, 'env>,
    pool: Pool,
    /// Align the first chunk too (the file is known to be large).
    align_first: bool,
    /// Bytes the file may still have, when bounded. Checked here rather than by a wrapping
    /// reader: a wrapper without `read_buf` would make every read zero its buffer first.
    left: Option<u64>,
}

impl<'scope, 'env, R: Read> Chunker<'scope, 'env, R> {
    fn new(reader: R, chunk_size: usize, scope: &'scope Scope<'scope, 'env>) -> Self {
        Chunker {
            reader,
            chunk_size,
            offset: 0,
            eof: false,
            count: 0,
            peeked: None,
            whole: WholeHash::Inline(sha2::Sha256::new()),
            scope,
            pool: Arc::new(Mutex::new(Vec::new())),
            align_first: false,
            left: None,
        }
    }

    fn next(&mut self) -> Result<Option<Chunk>> {
        if let Some(c) = self.peeked.take() {
            return Ok(Some(c));
        }
        self.read_chunk()
    }

    fn peek(&mut self) -> Result<Option<&Chunk>> {
        if self.peeked.is_none() {
            self.peeked = self.read_chunk()?;
        }
        Ok(self.peeked.as_ref())
    }

    fn recycle(&self, chunk: Chunk) {
        give_back(&self.pool, chunk.buf);
    }

    fn read_chunk(&mut self) -> Result<Option<Chunk>> {
        if self.eof {
            return Ok(None);
        }
        let mut buf = {
            let mut p = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            p.pop().unwrap_or_default()
        };
        // read_to_end fills spare capacity without zeroing it first: a 2 KiB file costs
        // 2 KiB, not a 1 MiB memset.
        buf.clear();
        // A file with a second chunk is large: its chunks start aligned (a few bytes of
        // padding first), for sinks that write large files with direct I/O.
        let mut start = 0;
        if self.count >= 1 || self.align_first {
            buf.reserve_exact(self.chunk_size + IO_ALIGN);
            start = buf.as_ptr().align_offset(IO_ALIGN);
            if start >= IO_ALIGN {
                start = 0;
            }
            buf.resize(start, 0);
        }
        // Asked for one byte more than allowed, so a longer input is noticed at once.
        let want = match self.left {
            Some(left) => left.saturating_add(1).min(self.chunk_size as u64),
            None => self.chunk_size as u64,
        };
        if let Err(source) = (&mut self.reader).take(want).read_to_end(&mut buf) {
            return Err(Error::Stream {
                what: "reading input",
                source,
            });
        }
        let filled = buf.len() - start;
        if let Some(left) = &mut self.left {
            *left = left
                .checked_sub(filled as u64)
                .ok_or_else(|| Error::Stream {
                    what: "reading input",
                    source: std::io::Error::new(
                        std::io::ErrorKind::FileTooLarge,
                        "more bytes than expected",
                    ),
                })?;
        }
        if filled < self.chunk_size {
            self.eof = true;
        }
        if filled == 0 {
            return Ok(None);
        }
        let chunk = Chunk {
            buf: Arc::new(buf),
            start,
            offset: self.offset,
        };
        self.offset += filled as u64;
        self.count += 1;
        self.hash_whole(&chunk.buf, start)?;
        Ok(Some(chunk))
    }

    fn hash_whole(&mut self, buf: &Arc<Vec<u8>>, start: usize) -> Result<()> {
        if self.count == 2 {
            // A second chunk: the file is large enough to give the whole-file hash a core.
            if let WholeHash::Inline(h) = std::mem::replace(&mut self.whole, WholeHash::Done) {
                let (tx, rx) = sync_channel::<(Arc<Vec<u8>>, usize)>(HASH_QUEUE);
                let pool = self.pool.clone();
                let handle = self.scope.spawn(move || {
                    let mut h = h;
                    for (b, start) in rx {
                        h.update(&b[start..]);
                        give_back(&pool, b);
                    }
                    h
                });
                self.whole = WholeHash::Thread { tx, handle };
            }
        }
        match &mut self.whole {
            WholeHash::Inline(h) => h.update(&buf[start..]),
            WholeHash::Thread { tx, .. } => tx
                .send((buf.clone(), start))
                .map_err(|_| Error::Task("whole-file hasher stopped".into()))?,
            WholeHash::Done => return Err(Error::Task("whole-file hash already finished".into())),
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(Sha256, u64)> {
        let h = match std::mem::replace(&mut self.whole, WholeHash::Done) {
            WholeHash::Inline(h) => h,
            WholeHash::Thread { tx, handle } => {
                drop(tx);
                handle
                    .join()
                    .map_err(|_| Error::Task("whole-file hasher panicked".into()))?
            }
            WholeHash::Done => return Err(Error::Task("whole-file hash finished twice".into())),
        };
        let digest: [u8; 32] = h.finalize().into();
        Ok((Sha256(digest), self.offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Profile;

    fn cid_of(data: &[u8], params: &ImportParams) -> ImportedFile {
        import(data, params, &mut NullSink).unwrap()
    }

    #[test]
    fn hello_world_both_profiles() {
        let f = cid_of(b"hello world", &Profile::UnixfsV1_2025.params());
        assert_eq!(
            f.cid.to_string(),
            "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
        );
        assert_eq!(f.size, 11);
        assert_eq!(
            f.sha256.to_string(),
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        let f = cid_of(b"hello world", &Profile::UnixfsV0_2015.params());
        assert_eq!(
            f.cid.to_string(),
            "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"
        );
    }

    #[test]
    fn blocks_come_out_leaves_first_and_every_byte_once() {
        let params = ImportParams {
            chunk_size: 3,
            max_links: 2,
            ..Profile::UnixfsV1_2025.params()
        };
        let data: Vec<u8> = (0..20u8).collect();
        let mut sink = VecSink::default();
        let f = import(&data[..], &params, &mut sink).unwrap();
        // 7 leaves; levels 4 + 2 + 1 nodes = root at the end.
        assert_eq!(sink.0.last().unwrap().0, f.cid);
        let raw: Vec<u8> = sink
            .0
            .iter()
            .filter(|(c, _)| c.codec() == RAW)
            .flat_map(|(_, b)| b.clone())
            .collect();
        assert_eq!(raw, data);
        for (cid, block) in &sink.0 {
            crate::hash::verify_block(cid, block).unwrap();
        }
    }

    #[test]
    fn read_errors_are_reported() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::other("disk on fire"));
                }
                let n = buf.len().min(self.0);
                self.0 -= n;
                Ok(n)
            }
        }
        let params = ImportParams {
            chunk_size: 4,
            ..Profile::UnixfsV1_2025.params()
        };
        let err = import(Failing(10), &params, &mut NullSink).unwrap_err();
        assert!(err.to_string().contains("disk on fire"), "{err}");
    }
}
