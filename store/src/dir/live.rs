//! A directory kept between builds ([`LiveDir`]): a follower changes 1% of a listing's
//! 60,000 packages, and rebuilding every shard of its directories (52,000 blocks) took
//! most of a refresh. Here the HAMT's shards are kept as a tree of nodes shared between
//! versions (copy-on-write, [`Arc::make_mut`]); an insert or removal copies and marks for
//! re-encoding only the shards on its name's path, and a build encodes only those. The
//! result is the same function of the set of entries as [`super::build_sorted`] (a bucket
//! with one entry holds the entry, with more a sub-shard; a removal that leaves one entry
//! in a sub-shard moves it up), so both give the same CIDs. Hand-written: the shape is
//! boxo's HAMT, which no persistent-map crate reproduces.

use std::sync::Arc;

use super::{
    DirEntry, HamtShape, ShardWriter, base_estimate, build_basic, link_estimate, murmur64,
    validate_name,
};
use crate::importer::BlockSink;
use crate::params::ImportParams;
use crate::{Error, Result};

/// A directory whose entries change between builds; cloning it is cheap (the versions
/// share every shard neither changed).
#[derive(Debug, Clone)]
pub struct LiveDir {
    params: ImportParams,
    root: Arc<Node>,
    len: usize,
    /// The size estimate that decides between a basic directory and a HAMT.
    estimate: u64,
    /// The root built last, unless something changed since.
    built: Option<DirEntry>,
}

/// One shard: its occupied buckets in order.
#[derive(Debug, Clone, Default)]
struct Node {
    slots: Vec<(u32, Slot)>,
    /// This shard encoded, unless something below it changed since.
    built: Option<DirEntry>,
}

#[derive(Debug, Clone)]
enum Slot {
    Entry(Arc<Leaf>),
    Shard(Arc<Node>),
}

#[derive(Debug)]
struct Leaf {
    name: Box<str>,
    hash: u64,
    entry: DirEntry,
    /// How many times the entry was added ([`LiveDir::add_ref`]).
    refs: u32,
}

impl LiveDir {
    /// An empty directory built under `params` (fixed for its life: every CID kept
    /// depends on them).
    pub fn new(params: &ImportParams) -> Result<LiveDir> {
        params.validate()?;
        Ok(LiveDir {
            params: *params,
            root: Arc::default(),
            len: 0,
            estimate: base_estimate(params),
            built: None,
        })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn shape(&self) -> HamtShape {
        HamtShape::new(self.params.hamt_fanout)
    }

    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<DirEntry> {
        let shape = self.shape();
        let hash = murmur64(name.as_bytes());
        let mut node = &self.root;
        for depth in 0..shape.max_depth {
            let bucket = shape.bucket(hash, depth);
            let i = node.slots.binary_search_by_key(&bucket, |s| s.0).ok()?;
            match &node.slots[i].1 {
                Slot::Entry(l) => return (&*l.name == name).then_some(l.entry),
                Slot::Shard(child) => node = child,
            }
        }
        None
    }

    /// Adds an entry; a name may appear once ([`Error::DuplicateName`]).
    pub fn insert(&mut self, name: &str, entry: DirEntry) -> Result<()> {
        self.add(name, entry, false)
    }

    /// Adds a reference to the entry `name -> entry`: the first adds it, later ones (with
    /// the same entry) count; [`LiveDir::remove`] takes one reference. The same entry
    /// reached from several places (one file in two repositories) is one entry. A name
    /// already held with another entry is [`Error::DuplicateName`].
    pub fn add_ref(&mut self, name: &str, entry: DirEntry) -> Result<()> {
        self.add(name, entry, true)
    }

    fn add(&mut self, name: &str, entry: DirEntry, counted: bool) -> Result<()> {
        validate_name(name)?;
        let leaf = Leaf {
            name: name.into(),
            hash: murmur64(name.as_bytes()),
            entry,
            refs: 1,
        };
        let shape = self.shape();
        let added = insert(&mut self.root, &shape, 0, leaf, counted)?;
        self.built = None;
        if added {
            self.len += 1;
            self.estimate += link_estimate(&self.params, name, &entry);
        }
        Ok(())
    }

    /// Takes one reference to `name` (the only one unless [`LiveDir::add_ref`] added
    /// more); the entry goes with its last reference. Returns the entry if it went.
    pub fn remove(&mut self, name: &str) -> Option<DirEntry> {
        self.get(name)?;
        let shape = self.shape();
        let hash = murmur64(name.as_bytes());
        let gone = remove(&mut self.root, &shape, 0, name, hash);
        self.built = None;
        if let Some(e) = gone {
            self.len -= 1;
            self.estimate -= link_estimate(&self.params, name, &e);
        }
        gone
    }

    /// Writes the blocks encoded since the last build to `sink` (all of them the first
    /// time) and returns the root: a basic directory or a HAMT, as
    /// [`super::build_sorted`] would write the same entries.
    pub fn build(&mut self, sink: &mut dyn BlockSink) -> Result<DirEntry> {
        if let Some(e) = self.built {
            return Ok(e);
        }
        let e = if self.estimate > self.params.hamt_threshold {
            build_shard(&self.params, &self.shape(), &mut self.root, sink)?
        } else {
            let mut leaves = Vec::with_capacity(self.len);
            leaves_of(&self.root, &mut leaves);
            leaves.sort_unstable_by(|a, b| a.name.cmp(&b.name));
            let links: Vec<(&str, &DirEntry)> =
                leaves.iter().map(|l| (&*l.name, &l.entry)).collect();
            build_basic(&links, &self.params, sink)?
        };
        self.built = Some(e);
        Ok(e)
    }
}

/// Inserts `leaf` below `node` (at `depth`); whether it is a new entry (not a reference
/// more to one held).
fn insert(
    node: &mut Arc<Node>,
    shape: &HamtShape,
    depth: u32,
    leaf: Leaf,
    counted: bool,
) -> Result<bool> {
    let n = Arc::make_mut(node);
    n.built = None;
    let bucket = shape.bucket(leaf.hash, depth);
    let i = match n.slots.binary_search_by_key(&bucket, |s| s.0) {
        Ok(i) => i,
        Err(i) => {
            n.slots.insert(i, (bucket, Slot::Entry(Arc::new(leaf))));
            return Ok(true);
        }
    };
    match &mut n.slots[i].1 {
        Slot::Shard(child) => insert(child, shape, depth + 1, leaf, counted),
        Slot::Entry(held) if held.name == leaf.name => {
            if !counted || held.entry != leaf.entry {
                return Err(Error::DuplicateName(leaf.name.into()));
            }
            *held = Arc::new(Leaf {
                refs: held.refs + 1,
                ..leaf
            });
            Ok(false)
        }
        Slot::Entry(held) => {
            // Two entries in one bucket: a sub-shard holding both.
            if depth + 1 >= shape.max_depth {
                return Err(Error::HashCollision(
                    held.name.to_string(),
                    leaf.name.into(),
                ));
            }
            let other = Arc::clone(held);
            let child = Node {
                slots: vec![(shape.bucket(other.hash, depth + 1), Slot::Entry(other))],
                built: None,
            };
            let mut child = Arc::new(child);
            insert(&mut child, shape, depth + 1, leaf, counted)?;
            n.slots[i].1 = Slot::Shard(child);
            Ok(true)
        }
    }
}

/// Takes one reference to `name` below `node` (which holds it); the entry if it went.
fn remove(
    node: &mut Arc<Node>,
    shape: &HamtShape,
    depth: u32,
    name: &str,
    hash: u64,
) -> Option<DirEntry> {
    let n = Arc::make_mut(node);
    n.built = None;
    let bucket = shape.bucket(hash, depth);
    let i = n.slots.binary_search_by_key(&bucket, |s| s.0).ok()?;
    match &mut n.slots[i].1 {
        Slot::Entry(held) if &*held.name == name => {
            if held.refs > 1 {
                *held = Arc::new(Leaf {
                    name: held.name.clone(),
                    refs: held.refs - 1,
                    ..**held
                });
                return None;
            }
            let e = held.entry;
            n.slots.remove(i);
            Some(e)
        }
        Slot::Entry(_) => None,
        Slot::Shard(child) => {
            let gone = remove(child, shape, depth + 1, name, hash)?;
            // A sub-shard left with one entry gives it back to its bucket here.
            let last = match &child.slots[..] {
                [(_, Slot::Entry(last))] => Some(Arc::clone(last)),
                _ => None,
            };
            if let Some(last) = last {
                n.slots[i].1 = Slot::Entry(last);
            }
            Some(gone)
        }
    }
}

fn build_shard(
    params: &ImportParams,
    shape: &HamtShape,
    node: &mut Arc<Node>,
    sink: &mut dyn BlockSink,
) -> Result<DirEntry> {
    if let Some(e) = node.built {
        return Ok(e);
    }
    let n = Arc::make_mut(node);
    let mut w = ShardWriter::new(shape, n.slots.len());
    for (bucket, slot) in &mut n.slots {
        match slot {
            Slot::Entry(l) => w.link(*bucket, &l.name, &l.entry),
            Slot::Shard(child) => {
                let c = build_shard(params, shape, child, sink)?;
                w.link(*bucket, "", &c);
            }
        }
    }
    let e = w.finish(params, sink)?;
    n.built = Some(e);
    Ok(e)
}

fn leaves_of<'n>(node: &'n Node, out: &mut Vec<&'n Leaf>) {
    for (_, slot) in &node.slots {
        match slot {
            Slot::Entry(l) => out.push(l),
            Slot::Shard(child) => leaves_of(child, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dir::build_sorted;
    use crate::hash::{HashAlg, raw_cid};
    use crate::importer::VecSink;
    use crate::params::Profile;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn entry(i: u32) -> DirEntry {
        DirEntry {
            cid: raw_cid(HashAlg::Sha2_256, &i.to_be_bytes()),
            tsize: u64::from(i % 7),
        }
    }

    fn scratch(map: &BTreeMap<String, DirEntry>, params: &ImportParams) -> DirEntry {
        let links: Vec<(&str, &DirEntry)> = map.iter().map(|(n, e)| (n.as_str(), e)).collect();
        build_sorted(&links, params, &mut VecSink::default()).unwrap()
    }

    /// The blocks a build writes, by CID: each new one exactly once, none a second time
    /// for an unchanged directory.
    #[test]
    fn a_build_writes_only_what_changed() {
        let params = Profile::UnixfsV1_2025.params();
        let mut d = LiveDir::new(&params).unwrap();
        for i in 0..20_000 {
            d.insert(&format!("pkg-{i:05}.pkg.tar.zst"), entry(i))
                .unwrap();
        }
        let mut all = VecSink::default();
        let root = d.build(&mut all).unwrap();
        assert!(all.0.len() > 1000, "a deep HAMT: {} blocks", all.0.len());
        let mut none = VecSink::default();
        assert_eq!(d.build(&mut none).unwrap(), root);
        assert!(none.0.is_empty());
        // A copy changed in one entry re-encodes the shards on its path only, and the
        // original is untouched.
        let mut next = d.clone();
        assert_eq!(next.remove("pkg-00007.pkg.tar.zst"), Some(entry(7)));
        next.insert("pkg-00007-2.pkg.tar.zst", entry(99_999))
            .unwrap();
        let mut few = VecSink::default();
        let r2 = next.build(&mut few).unwrap();
        assert!(few.0.len() <= 8, "{} blocks", few.0.len());
        assert_ne!(r2, root);
        assert_eq!(d.build(&mut VecSink::default()).unwrap(), root);
        assert_eq!(next.len(), d.len());
        assert_eq!(next.get("pkg-00007.pkg.tar.zst"), None);
        assert_eq!(d.get("pkg-00007.pkg.tar.zst"), Some(entry(7)));
    }

    #[test]
    fn references_count_and_names_are_checked() {
        let params = Profile::UnixfsV1_2025.params();
        let mut d = LiveDir::new(&params).unwrap();
        d.add_ref("a", entry(1)).unwrap();
        d.add_ref("a", entry(1)).unwrap();
        assert!(matches!(d.add_ref("a", entry(2)), Err(Error::DuplicateName(n)) if n == "a"));
        assert!(matches!(
            d.insert("a", entry(1)),
            Err(Error::DuplicateName(_))
        ));
        assert_eq!(d.len(), 1);
        assert_eq!(d.remove("a"), None, "one reference is left");
        assert_eq!(d.get("a"), Some(entry(1)));
        assert_eq!(d.remove("a"), Some(entry(1)));
        assert!(d.is_empty() && d.remove("a").is_none());
        for bad in ["", ".", "..", "a/b", "nul\0"] {
            assert!(d.insert(bad, entry(1)).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// After any sequence of inserts and removals, across the basic/HAMT threshold
        /// and with copies taken on the way, the directory builds to the CID a build
        /// from scratch of the same entries gives (under both profiles, and a small
        /// fanout for deep shards).
        #[test]
        fn any_history_builds_what_a_build_from_scratch_builds(
            ops in prop::collection::vec((any::<bool>(), 0u32..3000, 1usize..400), 1..12),
            profile in 0usize..3,
        ) {
            let params = match profile {
                0 => Profile::UnixfsV1_2025.params(),
                1 => Profile::UnixfsV0_2015.params(),
                _ => ImportParams { hamt_fanout: 16, hamt_threshold: 2000, ..Profile::UnixfsV1_2025.params() },
            };
            let mut d = LiveDir::new(&params).unwrap();
            let mut want: BTreeMap<String, DirEntry> = BTreeMap::new();
            let mut kept = Vec::new();
            for (add, start, count) in ops {
                for i in start..start + count as u32 {
                    let name = format!("p{i}");
                    if add {
                        if want.insert(name.clone(), entry(i)).is_none() {
                            d.insert(&name, entry(i)).unwrap();
                        }
                    } else {
                        prop_assert_eq!(d.remove(&name), want.remove(&name));
                    }
                }
                prop_assert_eq!(d.len(), want.len());
                prop_assert_eq!(d.build(&mut VecSink::default()).unwrap(), scratch(&want, &params));
                kept.push((d.clone(), want.clone()));
            }
            // Older versions were not changed by the later ones.
            for (mut old, map) in kept {
                prop_assert_eq!(old.build(&mut VecSink::default()).unwrap(), scratch(&map, &params));
            }
        }
    }
}
