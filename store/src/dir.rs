//! UnixFS directories and HAMT shards, exactly as Kubo (boxo) builds them.
//!
//! [`Directory`] is one directory level: entries sorted bytewise by name, turned into a
//! basic directory node, or into a HAMT when the profile's size estimate is above the
//! threshold. [`Tree`] builds nested paths (`core/os/x86_64/foo.pkg.tar.zst`) bottom-up and
//! accepts whole subtrees by CID, so an unchanged part of a listing is reused as is.
//! Both depend only on the set of entries, never on insertion order.
//!
//! HAMT facts (UNIXFS.md): murmur3-x64-128 of the name, first 64-bit word big-endian, level
//! L uses the L-th group of log2(fanout) bits; a bucket with one entry links the entry under
//! `%02X` + name, a bucket with more links a sub-shard under `%02X`.

use std::collections::BTreeMap;

use cid::Cid;

use crate::importer::{BlockSink, node_cid};
use crate::params::{HamtEstimate, ImportParams};
use crate::pb::{self, DataType, Unixfs};
use crate::{Error, Result};

mod live;
pub use live::LiveDir;

/// Multihash code of murmur3-x64-64, written into every shard.
pub const HAMT_HASH_MURMUR3: u64 = 0x22;

/// A link target inside a directory: a CID and the cumulative size of its DAG.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DirEntry {
    /// Root of the entry.
    pub cid: Cid,
    /// Cumulative DAG size (Tsize).
    pub tsize: u64,
}

/// Checks that `name` can be a UnixFS directory entry.
pub fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "empty"
    } else if name == "." || name == ".." {
        "reserved"
    } else if name.contains('/') {
        "contains '/'"
    } else if name.contains('\0') {
        "contains NUL"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        name: name.to_string(),
        reason,
    })
}

/// One directory level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directory {
    // `String`'s ordering is bytewise on UTF-8, which is Kubo's link order.
    entries: BTreeMap<String, DirEntry>,
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry; a name may appear once.
    pub fn insert(&mut self, name: &str, entry: DirEntry) -> Result<()> {
        validate_name(name)?;
        if self.entries.contains_key(name) {
            return Err(Error::DuplicateName(name.to_string()));
        }
        self.entries.insert(name.to_string(), entry);
        Ok(())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether this directory would be written as a HAMT under `params`.
    pub fn is_sharded(&self, params: &ImportParams) -> bool {
        is_sharded(&self.links(), params)
    }

    /// Writes the directory's blocks to `sink`; returns its root.
    pub fn build(&self, params: &ImportParams, sink: &mut dyn BlockSink) -> Result<DirEntry> {
        build_links(&self.links(), params, sink)
    }

    fn links(&self) -> Vec<(&str, &DirEntry)> {
        self.entries.iter().map(|(n, e)| (n.as_str(), e)).collect()
    }
}

/// Writes one directory of `links` to `sink` and returns its root, for a caller that has
/// its entries sorted already (bytewise by name: `str`'s order) and need not hold them in
/// a [`Directory`] or [`Tree`] map. Every name is checked; a name given twice is
/// [`Error::DuplicateName`], names out of order an [`Error::InvalidName`].
pub fn build_sorted(
    links: &[(&str, &DirEntry)],
    params: &ImportParams,
    sink: &mut dyn BlockSink,
) -> Result<DirEntry> {
    for (name, _) in links {
        validate_name(name)?;
    }
    for w in links.windows(2) {
        match w[0].0.cmp(w[1].0) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => return Err(Error::DuplicateName(w[1].0.to_string())),
            std::cmp::Ordering::Greater => {
                return Err(Error::InvalidName {
                    name: w[1].0.to_string(),
                    reason: "out of order (after a later name)",
                });
            }
        }
    }
    build_links(links, params, sink)
}

/// Whether a directory of `links` (sorted bytewise by name, names unique) would be written
/// as a HAMT under `params`.
fn is_sharded(links: &[(&str, &DirEntry)], params: &ImportParams) -> bool {
    let links: u64 = links.iter().map(|(n, e)| link_estimate(params, n, e)).sum();
    base_estimate(params) + links > params.hamt_threshold
}

/// What one link adds to the size estimate that decides whether a directory is a HAMT.
fn link_estimate(params: &ImportParams, name: &str, e: &DirEntry) -> u64 {
    match params.hamt_estimate {
        HamtEstimate::Links => (name.len() + e.cid.encoded_len()) as u64,
        HamtEstimate::Block => pb::link_len(e.cid.encoded_len(), name.len(), e.tsize) as u64,
    }
}

/// The estimate of an empty directory: `0a 02 08 01`, the Data field of a basic
/// directory, for the block estimate.
fn base_estimate(params: &ImportParams) -> u64 {
    match params.hamt_estimate {
        HamtEstimate::Links => 0,
        HamtEstimate::Block => 4,
    }
}

/// Writes a directory of `links` (sorted bytewise by name, names unique) to `sink`.
fn build_links(
    links: &[(&str, &DirEntry)],
    params: &ImportParams,
    sink: &mut dyn BlockSink,
) -> Result<DirEntry> {
    params.validate()?;
    if is_sharded(links, params) {
        build_hamt(links, params, sink)
    } else {
        build_basic(links, params, sink)
    }
}

fn build_basic(
    links: &[(&str, &DirEntry)],
    params: &ImportParams,
    sink: &mut dyn BlockSink,
) -> Result<DirEntry> {
    let mut block = Vec::with_capacity(links.len() * 60 + 4);
    let mut tsize = 0u64;
    for (name, e) in links {
        pb::put_link(&mut block, &e.cid, name.as_bytes(), e.tsize);
        tsize += e.tsize;
    }
    pb::put_data(
        &mut block,
        &Unixfs {
            typ: Some(DataType::Directory),
            ..Default::default()
        }
        .encode(),
    );
    emit(params, sink, block, tsize)
}

fn build_hamt(
    links: &[(&str, &DirEntry)],
    params: &ImportParams,
    sink: &mut dyn BlockSink,
) -> Result<DirEntry> {
    let mut items: Vec<HamtItem<'_>> = links
        .iter()
        .map(|&(name, entry)| HamtItem {
            hash: murmur64(name.as_bytes()),
            name,
            entry,
        })
        .collect();
    let shape = HamtShape::new(params.hamt_fanout);
    // Sorting by hash groups every bucket of every level together.
    items.sort_unstable_by(|a, b| a.hash.cmp(&b.hash).then_with(|| a.name.cmp(b.name)));
    shard(params, &shape, &items, 0, sink)
}

struct HamtItem<'a> {
    hash: u64,
    name: &'a str,
    entry: &'a DirEntry,
}

struct HamtShape {
    fanout: u32,
    bits: u32,
    max_depth: u32,
    pad: usize,
}

impl HamtShape {
    fn new(fanout: u32) -> Self {
        let bits = fanout.trailing_zeros();
        HamtShape {
            fanout,
            bits,
            max_depth: 64 / bits,
            pad: format!("{:X}", fanout - 1).len(),
        }
    }

    fn bucket(&self, hash: u64, depth: u32) -> u32 {
        let shift = 64 - self.bits * (depth + 1);
        ((hash >> shift) & u64::from(self.fanout - 1)) as u32
    }

    /// Appends the bucket's link-name prefix (`%0*X`, uppercase hex).
    fn put_prefix(&self, buf: &mut Vec<u8>, bucket: u32) {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        for i in (0..self.pad).rev() {
            buf.push(HEX[((bucket >> (4 * i)) & 0xf) as usize]);
        }
    }
}

/// murmur3-x64-128 (seed 0) of `data`, first 64-bit word: boxo's HAMT hash.
pub fn murmur64(data: &[u8]) -> u64 {
    // Reading from a slice cannot fail.
    let h = murmur3::murmur3_x64_128(&mut &data[..], 0).unwrap_or(0);
    h as u64
}

fn shard(
    params: &ImportParams,
    shape: &HamtShape,
    items: &[HamtItem<'_>],
    depth: u32,
    sink: &mut dyn BlockSink,
) -> Result<DirEntry> {
    if depth >= shape.max_depth {
        let (a, b) = (items[0].name, items.get(1).map_or("", |i| i.name));
        return Err(Error::HashCollision(a.to_string(), b.to_string()));
    }
    let mut w = ShardWriter::new(shape, items.len());
    let mut i = 0;
    while i < items.len() {
        let bucket = shape.bucket(items[i].hash, depth);
        let mut j = i + 1;
        while j < items.len() && shape.bucket(items[j].hash, depth) == bucket {
            j += 1;
        }
        if j - i == 1 {
            let it = &items[i];
            w.link(bucket, it.name, it.entry);
        } else {
            let child = shard(params, shape, &items[i..j], depth + 1, sink)?;
            w.link(bucket, "", &child);
        }
        i = j;
    }
    w.finish(params, sink)
}

/// One HAMT shard node being encoded: links in bucket order, then the bitfield.
struct ShardWriter<'s> {
    shape: &'s HamtShape,
    bitfield: Vec<u8>,
    block: Vec<u8>,
    tsize: u64,
    name: Vec<u8>,
}

impl<'s> ShardWriter<'s> {
    fn new(shape: &'s HamtShape, links: usize) -> Self {
        ShardWriter {
            shape,
            bitfield: vec![0u8; (shape.fanout as usize).div_ceil(8)],
            block: Vec::with_capacity(links.min(shape.fanout as usize) * 60 + 48),
            tsize: 0,
            name: Vec::with_capacity(64),
        }
    }

    /// Links `entry` in `bucket` (buckets in increasing order): an entry under the
    /// bucket's prefix + `name`, a sub-shard (`name` empty) under the prefix alone.
    fn link(&mut self, bucket: u32, name: &str, entry: &DirEntry) {
        // Bit `bucket` of a big-endian integer.
        let byte = self.bitfield.len() - 1 - (bucket as usize / 8);
        self.bitfield[byte] |= 1 << (bucket % 8);
        self.name.clear();
        self.shape.put_prefix(&mut self.name, bucket);
        self.name.extend_from_slice(name.as_bytes());
        pb::put_link(&mut self.block, &entry.cid, &self.name, entry.tsize);
        self.tsize += entry.tsize;
    }

    fn finish(mut self, params: &ImportParams, sink: &mut dyn BlockSink) -> Result<DirEntry> {
        let first = self
            .bitfield
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(self.bitfield.len());
        let data = Unixfs {
            typ: Some(DataType::HamtShard),
            data: Some(&self.bitfield[first..]),
            hash_type: Some(HAMT_HASH_MURMUR3),
            fanout: Some(u64::from(self.shape.fanout)),
            ..Default::default()
        }
        .encode();
        pb::put_data(&mut self.block, &data);
        emit(params, sink, self.block, self.tsize)
    }
}

fn emit(
    params: &ImportParams,
    sink: &mut dyn BlockSink,
    block: Vec<u8>,
    links_tsize: u64,
) -> Result<DirEntry> {
    let cid = node_cid(params, params.hash.digest(&block))?;
    sink.node(&cid, &block)?;
    Ok(DirEntry {
        cid,
        tsize: links_tsize + block.len() as u64,
    })
}

/// A tree of nested directories built from paths.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    root: TreeDir,
}

#[derive(Debug, Clone, Default)]
struct TreeDir {
    children: BTreeMap<String, TreeNode>,
}

#[derive(Debug, Clone)]
enum TreeNode {
    Entry(DirEntry),
    Dir(TreeDir),
}

impl Tree {
    /// An empty tree (it builds to the empty directory).
    pub fn new() -> Self {
        Self::default()
    }

    fn parent_of<'t>(&'t mut self, path: &str) -> Result<(&'t mut TreeDir, String)> {
        let parts: Vec<&str> = path.split('/').collect();
        for p in &parts {
            validate_name(p)?;
        }
        let (last, dirs) = parts.split_last().ok_or(Error::InvalidName {
            name: path.to_string(),
            reason: "empty",
        })?;
        let mut cur = &mut self.root;
        let mut walked = String::new();
        for d in dirs {
            if !walked.is_empty() {
                walked.push('/');
            }
            walked.push_str(d);
            let node = cur
                .children
                .entry((*d).to_string())
                .or_insert_with(|| TreeNode::Dir(TreeDir::default()));
            cur = match node {
                TreeNode::Dir(dir) => dir,
                TreeNode::Entry(_) => return Err(Error::NotADirectory(walked)),
            };
        }
        Ok((cur, (*last).to_string()))
    }

    /// Places a finished entry (a file, or a whole subtree by CID) at `path`.
    pub fn insert(&mut self, path: &str, entry: DirEntry) -> Result<()> {
        let (dir, name) = self.parent_of(path)?;
        if dir.children.contains_key(&name) {
            return Err(Error::DuplicateName(path.to_string()));
        }
        dir.children.insert(name, TreeNode::Entry(entry));
        Ok(())
    }

    /// Makes sure a (possibly empty) directory exists at `path`.
    pub fn mkdir(&mut self, path: &str) -> Result<()> {
        let (dir, name) = self.parent_of(path)?;
        match dir
            .children
            .entry(name)
            .or_insert_with(|| TreeNode::Dir(TreeDir::default()))
        {
            TreeNode::Dir(_) => Ok(()),
            TreeNode::Entry(_) => Err(Error::NotADirectory(path.to_string())),
        }
    }

    /// Writes every directory block (children before parents) and returns the root. The
    /// tree is consumed: its names move into the directories being encoded instead of being
    /// copied (a snapshot listing has hundreds of thousands).
    pub fn build(self, params: &ImportParams, sink: &mut dyn BlockSink) -> Result<DirEntry> {
        build_dir(self.root, params, sink)
    }
}

/// Builds `dir` bottom-up, consuming it: its map's nodes are freed as its entries move into
/// a vector (in the map's order, so sorted), instead of being copied into a [`Directory`]
/// beside it (a listing's directory of 200,000 packages was two 48 MB maps at once).
fn build_dir(dir: TreeDir, params: &ImportParams, sink: &mut dyn BlockSink) -> Result<DirEntry> {
    let mut entries: Vec<(String, DirEntry)> = Vec::with_capacity(dir.children.len());
    for (name, node) in dir.children {
        let entry = match node {
            TreeNode::Entry(e) => e,
            TreeNode::Dir(sub) => build_dir(sub, params, sink)?,
        };
        entries.push((name, entry));
    }
    let links: Vec<(&str, &DirEntry)> = entries.iter().map(|(n, e)| (n.as_str(), e)).collect();
    build_links(&links, params, sink)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory built from sorted links is the one a `Directory` of the same entries
    /// builds, basic and sharded; unsorted or repeated names are refused.
    #[test]
    fn build_sorted_matches_directory_and_checks_its_input() {
        use crate::importer::VecSink;
        let params = crate::params::Profile::UnixfsV1_2025.params();
        let e = |i: u32| DirEntry {
            cid: crate::hash::raw_cid(crate::hash::HashAlg::Sha2_256, &i.to_be_bytes()),
            tsize: u64::from(i),
        };
        for n in [3u32, 5_000] {
            let mut d = Directory::new();
            let names: Vec<String> = (0..n).map(|i| format!("pkg-{i}.pkg.tar.zst")).collect();
            for (i, name) in names.iter().enumerate() {
                d.insert(name, e(i as u32)).unwrap();
            }
            let mut links: Vec<(&str, DirEntry)> = names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.as_str(), e(i as u32)))
                .collect();
            links.sort_by(|a, b| a.0.cmp(b.0));
            let refs: Vec<(&str, &DirEntry)> = links.iter().map(|(n, e)| (*n, e)).collect();
            let (mut a, mut b) = (VecSink(Vec::new()), VecSink(Vec::new()));
            let want = d.build(&params, &mut a).unwrap();
            assert_eq!(
                build_sorted(&refs, &params, &mut b).unwrap(),
                want,
                "{n} entries"
            );
            assert_eq!(d.is_sharded(&params), n > 3, "{n} entries: sharded");
        }
        let (x, y) = (e(1), e(2));
        let mut sink = VecSink(Vec::new());
        assert!(matches!(
            build_sorted(&[("a", &x), ("a", &y)], &params, &mut sink),
            Err(Error::DuplicateName(n)) if n == "a"
        ));
        assert!(matches!(
            build_sorted(&[("b", &x), ("a", &y)], &params, &mut sink),
            Err(Error::InvalidName { .. })
        ));
        assert!(matches!(
            build_sorted(&[("a/b", &x)], &params, &mut sink),
            Err(Error::InvalidName { .. })
        ));
    }
    use crate::importer::{NullSink, VecSink};
    use crate::params::Profile;

    #[test]
    fn murmur_check_values() {
        // UNIXFS.md: "a" -> 85555565f6597889, "file.txt" -> b53875c83534fe3e.
        assert_eq!(murmur64(b"a"), 0x8555_5565_f659_7889);
        assert_eq!(murmur64(b"file.txt"), 0xb538_75c8_3534_fe3e);
    }

    #[test]
    fn empty_directory_cids() {
        let d = Directory::new();
        let v0 = d
            .build(&Profile::UnixfsV0_2015.params(), &mut NullSink)
            .unwrap();
        assert_eq!(
            v0.cid.to_string(),
            "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
        );
        assert_eq!(v0.tsize, 4);
    }

    #[test]
    fn insertion_order_does_not_matter() {
        let params = ImportParams {
            hamt_threshold: 1,
            ..Profile::UnixfsV1_2025.params()
        };
        let e = DirEntry {
            cid: crate::hash::raw_cid(crate::hash::HashAlg::Sha2_256, b"x"),
            tsize: 1,
        };
        let names: Vec<String> = (0..3000).map(|i| format!("n{i}")).collect();
        let mut a = Directory::new();
        let mut b = Directory::new();
        for n in &names {
            a.insert(n, e).unwrap();
        }
        for n in names.iter().rev() {
            b.insert(n, e).unwrap();
        }
        let (mut sa, mut sb) = (VecSink::default(), VecSink::default());
        assert_eq!(
            a.build(&params, &mut sa).unwrap(),
            b.build(&params, &mut sb).unwrap()
        );
        assert_eq!(sa.0, sb.0);
    }

    #[test]
    fn names_are_validated() {
        let e = DirEntry {
            cid: crate::hash::raw_cid(crate::hash::HashAlg::Sha2_256, b""),
            tsize: 0,
        };
        let mut d = Directory::new();
        for bad in ["", ".", "..", "a/b", "nul\0"] {
            assert!(d.insert(bad, e).is_err(), "{bad:?}");
        }
        d.insert("ok", e).unwrap();
        assert!(matches!(d.insert("ok", e), Err(Error::DuplicateName(_))));
        let mut t = Tree::new();
        t.insert("a/b", e).unwrap();
        assert!(t.insert("a/b/c", e).is_err());
        assert!(t.insert("a/../b", e).is_err());
        assert!(t.insert("a//b", e).is_err());
    }
}
