//! Reading UnixFS DAGs from any [`Store`]: stat, path lookup (through basic directories and
//! HAMT shards), directory listing, and file bytes or byte ranges as a stream.
//!
//! Works block by block through [`Store::get_block`], so it serves as the generic `read` of
//! every store; the embedded store short-cuts whole-file roots to its kept files.

use std::collections::HashSet;
use std::ops::Range;

use bytes::Bytes;
use cid::Cid;
use futures::stream;

use crate::api::{ByteStream, Store};
use crate::dir::murmur64;
use crate::hash::{DAG_PB, RAW, identity_data};
use crate::pb::{self, DataType};
use crate::{Error, Result};

/// What a CID is, as far as UnixFS goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A raw block: a file of one block.
    Raw,
    /// A UnixFS file.
    File,
    /// A basic directory.
    Directory,
    /// A HAMT-sharded directory.
    HamtShard,
    /// A symlink and its target.
    Symlink(Vec<u8>),
    /// Any other codec (dag-cbor, ...): a block, but not UnixFS.
    Other(u64),
}

impl Kind {
    /// Whether this is a directory of either form.
    pub fn is_dir(&self) -> bool {
        matches!(self, Kind::Directory | Kind::HamtShard)
    }
}

/// A CID's kind and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// The CID.
    pub cid: Cid,
    /// What it is.
    pub kind: Kind,
    /// File size for files and raw blocks; block size otherwise.
    pub size: u64,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirLink {
    /// Entry name.
    pub name: String,
    /// Target.
    pub cid: Cid,
    /// Cumulative size of the target.
    pub tsize: u64,
}

/// A block from `store`, or [`Error::BlockNotFound`]. Identity CIDs need no store.
pub async fn need_block<S: Store + ?Sized>(store: &S, cid: &Cid) -> Result<Bytes> {
    if let Some(d) = identity_data(cid) {
        return Ok(Bytes::copy_from_slice(d));
    }
    store
        .get_block(cid)
        .await?
        .ok_or_else(|| Error::not_found(cid))
}

/// Checks a file node's links against its blocksizes and returns the size it declares:
/// its own data plus the blocksizes (which must not overflow, and must agree with
/// `filesize` when that is present).
fn file_node_size(cid: &Cid, node: &pb::Node<'_>, u: &pb::Unixfs<'_>) -> Result<u64> {
    if node.links.len() != u.blocksizes.len() {
        return Err(Error::malformed(
            cid,
            "UnixFS file",
            format!(
                "{} links but {} blocksizes",
                node.links.len(),
                u.blocksizes.len()
            ),
        ));
    }
    let own = u.data.map_or(0, |d| d.len() as u64);
    let sum = u
        .blocksizes
        .iter()
        .try_fold(own, |acc, &b| acc.checked_add(b))
        .ok_or_else(|| Error::malformed(cid, "UnixFS file", "sizes overflow 64 bits"))?;
    match u.filesize {
        Some(f) if f != sum && !node.links.is_empty() => Err(Error::malformed(
            cid,
            "UnixFS file",
            format!("filesize {f} but data and blocksizes add up to {sum}"),
        )),
        Some(f) if node.links.is_empty() && f != own => Err(Error::malformed(
            cid,
            "UnixFS file",
            format!("filesize {f} but the leaf holds {own} bytes"),
        )),
        _ => Ok(sum),
    }
}

pub fn decode<'a>(cid: &Cid, block: &'a [u8]) -> Result<(pb::Node<'a>, pb::Unixfs<'a>)> {
    let node = pb::decode_node(block).map_err(|e| Error::malformed(cid, "dag-pb", e.0))?;
    let data = node
        .data
        .ok_or_else(|| Error::malformed(cid, "UnixFS data", "node has no Data"))?;
    let u = pb::decode_unixfs(data).map_err(|e| Error::malformed(cid, "UnixFS data", e.0))?;
    Ok((node, u))
}

/// The CIDs a block links to (dag-pb links; none for raw and other codecs).
pub fn links_of(cid: &Cid, block: &[u8]) -> Result<Vec<Cid>> {
    if cid.codec() != DAG_PB {
        return Ok(Vec::new());
    }
    let node = pb::decode_node(block).map_err(|e| Error::malformed(cid, "dag-pb", e.0))?;
    Ok(node.links.into_iter().map(|l| l.cid).collect())
}

/// Kind and size of `cid`.
pub async fn stat<S: Store + ?Sized>(store: &S, cid: &Cid) -> Result<Stat> {
    let block = need_block(store, cid).await?;
    stat_block(cid, &block)
}

fn stat_block(cid: &Cid, block: &[u8]) -> Result<Stat> {
    match cid.codec() {
        RAW => {
            return Ok(Stat {
                cid: *cid,
                kind: Kind::Raw,
                size: block.len() as u64,
            });
        }
        DAG_PB => {}
        other => {
            return Ok(Stat {
                cid: *cid,
                kind: Kind::Other(other),
                size: block.len() as u64,
            });
        }
    }
    let (node, u) = decode(cid, block)?;
    let (kind, size) = match u.typ {
        Some(DataType::File | DataType::Raw) => (Kind::File, file_node_size(cid, &node, &u)?),
        Some(DataType::Directory) => (Kind::Directory, block.len() as u64),
        Some(DataType::HamtShard) => (Kind::HamtShard, block.len() as u64),
        Some(DataType::Symlink) => (
            Kind::Symlink(u.data.unwrap_or_default().to_vec()),
            u.data.map_or(0, |d| d.len() as u64),
        ),
        Some(DataType::Metadata) | None => {
            return Err(Error::malformed(
                cid,
                "UnixFS data",
                "unsupported node type",
            ));
        }
    };
    Ok(Stat {
        cid: *cid,
        kind,
        size,
    })
}

/// Shape of a HAMT node: (bits per level, hex width of bucket prefixes).
pub fn hamt_shape(cid: &Cid, u: &pb::Unixfs<'_>) -> Result<(u32, usize)> {
    let fanout = u.fanout.unwrap_or(0);
    if !fanout.is_power_of_two() || !(2..=1024).contains(&fanout) {
        return Err(Error::malformed(
            cid,
            "HAMT shard",
            format!("fanout {fanout} is not a power of two up to 1024"),
        ));
    }
    if u.hash_type != Some(crate::dir::HAMT_HASH_MURMUR3) {
        return Err(Error::malformed(
            cid,
            "HAMT shard",
            format!("hash type {:?} is not murmur3 (0x22)", u.hash_type),
        ));
    }
    Ok((fanout.trailing_zeros(), format!("{:X}", fanout - 1).len()))
}

fn link_name(cid: &Cid, l: &pb::Link) -> Result<String> {
    String::from_utf8(l.name.clone())
        .map_err(|_| Error::malformed(cid, "directory", "entry name is not UTF-8"))
}

/// Looks `name` up in directory `dir`; `None` if there is no such entry.
pub async fn lookup<S: Store + ?Sized>(
    store: &S,
    dir: &Cid,
    name: &str,
) -> Result<Option<DirLink>> {
    lookup_traced(store, dir, name, &mut Vec::new()).await
}

/// [`lookup`], recording in `trail` every block it reads on the way: the directory, and
/// the HAMT shards walked inside it (what a CAR must carry to prove the step).
pub async fn lookup_traced<S: Store + ?Sized>(
    store: &S,
    dir: &Cid,
    name: &str,
    trail: &mut Vec<Cid>,
) -> Result<Option<DirLink>> {
    let block = need_block(store, dir).await?;
    if dir.codec() != DAG_PB {
        return Err(Error::NotADirectory(dir.to_string()));
    }
    trail.push(*dir);
    let found = |l: &pb::Link| DirLink {
        name: name.to_string(),
        cid: l.cid,
        tsize: l.tsize,
    };
    let (node, u) = decode(dir, &block)?;
    match u.typ {
        Some(DataType::Directory) => Ok(node
            .links
            .iter()
            .find(|l| l.name == name.as_bytes())
            .map(found)),
        Some(DataType::HamtShard) => {
            let hash = murmur64(name.as_bytes());
            let mut depth = 0u32;
            let mut shard_cid = *dir;
            let mut shard_block = block;
            loop {
                let (node, u) = decode(&shard_cid, &shard_block)?;
                let (bits, pad) = hamt_shape(&shard_cid, &u)?;
                if bits * (depth + 1) > 64 {
                    return Ok(None);
                }
                let bucket = (hash >> (64 - bits * (depth + 1))) & ((1u64 << bits) - 1);
                let prefix = format!("{bucket:0pad$X}");
                let mut next = None;
                for l in &node.links {
                    if !l.name.starts_with(prefix.as_bytes()) {
                        continue;
                    }
                    if l.name.len() == pad {
                        next = Some(l.cid);
                        break;
                    }
                    if &l.name[pad..] == name.as_bytes() {
                        return Ok(Some(found(l)));
                    }
                }
                let Some(n) = next else {
                    return Ok(None);
                };
                shard_block = need_block(store, &n).await?;
                trail.push(n);
                shard_cid = n;
                depth += 1;
            }
        }
        _ => Err(Error::NotADirectory(dir.to_string())),
    }
}

/// Follows `path` (slash-separated; empty parts ignored) from `root`.
pub async fn resolve<S: Store + ?Sized>(store: &S, root: &Cid, path: &str) -> Result<Cid> {
    let mut cur = *root;
    let mut walked = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        let parent = if walked.is_empty() {
            root.to_string()
        } else {
            format!("{root}/{walked}")
        };
        if !walked.is_empty() {
            walked.push('/');
        }
        walked.push_str(part);
        let st = stat(store, &cur).await?;
        if !st.kind.is_dir() {
            return Err(Error::NotADirectory(parent));
        }
        cur = match lookup(store, &cur, part).await? {
            Some(l) => l.cid,
            None => {
                return Err(Error::PathNotFound {
                    root: Box::new(*root),
                    path: walked,
                });
            }
        };
    }
    Ok(cur)
}

/// Every entry of directory `dir` (HAMT shards flattened), sorted by name.
pub async fn list<S: Store + ?Sized>(store: &S, dir: &Cid) -> Result<Vec<DirLink>> {
    let mut out = Vec::new();
    let mut pending = vec![*dir];
    let mut shards = HashSet::new();
    let mut first = true;
    while let Some(c) = pending.pop() {
        if !shards.insert(c) {
            // A valid HAMT never links one sub-shard twice; a hostile one could make the
            // walk exponential.
            return Err(Error::malformed(&c, "HAMT shard", "sub-shard linked twice"));
        }
        let block = need_block(store, &c).await?;
        if c.codec() != DAG_PB {
            return Err(Error::NotADirectory(dir.to_string()));
        }
        let (node, u) = decode(&c, &block)?;
        match u.typ {
            Some(DataType::Directory) if first => {
                for l in &node.links {
                    out.push(DirLink {
                        name: link_name(&c, l)?,
                        cid: l.cid,
                        tsize: l.tsize,
                    });
                }
            }
            Some(DataType::HamtShard) => {
                let (_, pad) = hamt_shape(&c, &u)?;
                for l in &node.links {
                    let hex = l.name.get(..pad).unwrap_or_default();
                    if hex.len() < pad || !hex.iter().all(u8::is_ascii_hexdigit) {
                        return Err(Error::malformed(
                            &c,
                            "HAMT shard",
                            "link name does not start with the bucket in hex",
                        ));
                    }
                    if l.name.len() == pad {
                        pending.push(l.cid);
                    } else {
                        let name = String::from_utf8(l.name[pad..].to_vec()).map_err(|_| {
                            Error::malformed(&c, "directory", "entry name is not UTF-8")
                        })?;
                        out.push(DirLink {
                            name,
                            cid: l.cid,
                            tsize: l.tsize,
                        });
                    }
                }
            }
            _ => return Err(Error::NotADirectory(c.to_string())),
        }
        first = false;
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Clamps a requested range to a file of `size` bytes.
pub fn clamp_range(cid: &Cid, size: u64, range: Option<Range<u64>>) -> Result<Range<u64>> {
    let Some(r) = range else {
        return Ok(0..size);
    };
    if r.start > r.end || (r.start >= size && !(r.start == 0 && size == 0)) {
        return Err(Error::RangeNotSatisfiable {
            cid: Box::new(*cid),
            start: r.start,
            end: r.end,
            size,
        });
    }
    Ok(r.start..r.end.min(size))
}

/// Reads file `cid` block by block; `Store::read` of stores without a faster path.
pub async fn read<S: Store + Clone>(
    store: &S,
    cid: &Cid,
    range: Option<Range<u64>>,
) -> Result<(u64, ByteStream)> {
    let st = stat(store, cid).await?;
    match st.kind {
        Kind::File | Kind::Raw => {}
        Kind::Directory | Kind::HamtShard => return Err(Error::IsADirectory(cid.to_string())),
        Kind::Symlink(_) | Kind::Other(_) => {
            return Err(Error::malformed(cid, "UnixFS file", "not a file"));
        }
    }
    let want = clamp_range(cid, st.size, range)?;
    Ok((st.size, file_stream(store.clone(), *cid, st.size, want)))
}

struct ReadState<S> {
    store: S,
    want: Range<u64>,
    /// (node, absolute offset of its first byte, the size its parent says it has), next to
    /// visit on top.
    stack: Vec<(Cid, u64, u64)>,
}

/// Streams bytes `want` of file `root` (of `size` bytes, as its root says), visiting only
/// the blocks that overlap `want`. Every node must hold exactly the size its parent gives
/// it, so the stream is never longer or shorter than the range asked for.
pub fn file_stream<S: Store + Clone>(
    store: S,
    root: Cid,
    size: u64,
    want: Range<u64>,
) -> ByteStream {
    let state = ReadState {
        store,
        stack: if want.is_empty() {
            vec![]
        } else {
            vec![(root, 0, size)]
        },
        want,
    };
    Box::pin(stream::try_unfold(state, |mut st| async move {
        while let Some((cid, start, len)) = st.stack.pop() {
            let block = need_block(&st.store, &cid).await?;
            if let Some(out) = visit(&mut st, &cid, start, len, block)? {
                return Ok(Some((out, st)));
            }
        }
        Ok(None)
    }))
}

/// Handles one block of a file: returns its own bytes in range (if any) and queues children.
fn visit<S>(
    st: &mut ReadState<S>,
    cid: &Cid,
    start: u64,
    expected: u64,
    block: Bytes,
) -> Result<Option<Bytes>> {
    let slice_of = |data: &Bytes, data_start: u64| -> Option<Bytes> {
        let end = data_start + data.len() as u64;
        let from = st.want.start.max(data_start);
        let to = st.want.end.min(end);
        (from < to).then(|| data.slice((from - data_start) as usize..(to - data_start) as usize))
    };
    let wrong_size = |got: u64| {
        Error::malformed(
            cid,
            "UnixFS file",
            format!("holds {got} bytes where its parent says {expected}"),
        )
    };
    match cid.codec() {
        RAW => {
            if block.len() as u64 != expected {
                return Err(wrong_size(block.len() as u64));
            }
            return Ok(slice_of(&block, start));
        }
        DAG_PB => {}
        other => {
            return Err(Error::Unsupported {
                what: "codec inside a file",
                code: other,
            });
        }
    }
    let (node, u) = decode(cid, &block)?;
    if !matches!(u.typ, Some(DataType::File | DataType::Raw)) {
        return Err(Error::malformed(
            cid,
            "UnixFS file",
            "child is not a file node",
        ));
    }
    let total = file_node_size(cid, &node, &u)?;
    if total != expected {
        return Err(wrong_size(total));
    }
    let own = match u.data {
        Some(d) if !d.is_empty() => slice_of(&block.slice_ref(d), start),
        _ => None,
    };
    let mut offset = start + u.data.map_or(0, |d| d.len() as u64);
    let mut children = Vec::new();
    for (l, &size) in node.links.iter().zip(&u.blocksizes) {
        // Cannot overflow: file_node_size checked start-relative sums, and start + total
        // is at most the root's size.
        let end = offset + size;
        if offset < st.want.end && end > st.want.start {
            children.push((l.cid, offset, size));
        }
        offset = end;
    }
    st.stack.extend(children.into_iter().rev());
    Ok(own)
}

/// Walks the DAG under `root` through the blocks that are held, counting the ones that are
/// not, and stops at the first missing one if `stop_early`. Raw leaves are only looked up,
/// not read.
async fn count_missing<S: Store + ?Sized>(store: &S, root: &Cid, stop_early: bool) -> Result<u64> {
    let mut seen = HashSet::new();
    let mut stack = vec![*root];
    let mut missing = 0;
    while let Some(c) = stack.pop() {
        if !seen.insert(c) {
            continue;
        }
        let held = if let Some(d) = identity_data(&c) {
            stack.extend(links_of(&c, d)?);
            true
        } else if c.codec() == RAW {
            store.has(&c).await?
        } else {
            match store.get_block(&c).await? {
                Some(b) => {
                    stack.extend(links_of(&c, &b)?);
                    true
                }
                None => false,
            }
        };
        if !held {
            missing += 1;
            if stop_early {
                break;
            }
        }
    }
    Ok(missing)
}

/// Whether every block of the DAG under `root` is held (cheap for a whole package: its
/// raw leaves are only looked up).
pub async fn complete<S: Store + ?Sized>(store: &S, root: &Cid) -> Result<bool> {
    Ok(count_missing(store, root, true).await? == 0)
}

/// Counts the blocks of the DAG under `root` that are not held (walks what is held).
pub async fn missing_blocks<S: Store + ?Sized>(store: &S, root: &Cid) -> Result<u64> {
    count_missing(store, root, false).await
}
