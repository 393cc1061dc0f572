//! The one listing builder: the publisher builds a new snapshot's tree with [`publish`], a
//! follower rebuilds it from the previous one with [`Listing::next`] and
//! [`Listing::build`]; both end in the same function, so their roots agree whenever their
//! items do.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{Seek, Write};
use std::path::Path;
use std::sync::Arc;

use cid::Cid;
use cidmirror_schema::Sha256;
use cidmirror_store::dir::{DirEntry, Tree};
use cidmirror_store::importer::{self, BlockSink};
use cidmirror_store::{ImportParams, Profile};

use crate::aur::{self, AurBase, AurEntry};
use crate::changes::{self, Changed, Op};
use crate::layout::{self, FORMAT_AUR, FORMAT_PACMAN};
use crate::live::LiveDirs;
use crate::manifest::created_of;
use crate::{Error, FileRef, Item, ItemKind, Key, Manifest, RepoSummary, Result};

/// Everything that goes into a new snapshot's listing on the publisher.
pub struct ListingInput<'a> {
    /// The profile (fixes every CID).
    pub profile: Profile,
    /// The upstream's canonical URL.
    pub upstream: &'a str,
    /// Its `lastupdate` (or the state derived from its databases).
    pub lastupdate: &'a str,
    /// Every item of every followed repository.
    pub items: &'a [Item],
    /// The repositories, in order.
    pub repos: &'a [RepoSummary],
    /// The previous snapshot: its root and items.
    pub previous: Option<(Cid, &'a [Item])>,
    /// Every AUR package base followed (none: a format 1 listing, as before AUR).
    pub aur: &'a [AurBase],
    /// The previous snapshot's AUR bases.
    pub previous_aur: &'a [AurBase],
    /// A directory for a scratch file (`changes.jsonl` is written there, not kept in
    /// memory: a line per package of a first snapshot).
    pub scratch: &'a Path,
}

/// A listing [`publish`] built (its blocks went to the sink it was given).
pub struct Published {
    /// The root.
    pub root: DirEntry,
    /// `manifest.json`, as published.
    pub manifest: Vec<u8>,
    /// Its entry in the root.
    pub manifest_entry: DirEntry,
    /// The entry of `changes.jsonl`.
    pub changes_entry: DirEntry,
    /// Lines in `changes.jsonl`.
    pub changed: u64,
}

/// Builds a new snapshot's listing on the publisher: `changes.jsonl` against the previous
/// items, `manifest.json`, then every directory, each block handed to `sink` (not stored
/// yet). The tree is a pure function of the items, the upstream state and the profile:
/// nothing from the local clock goes in.
pub fn publish(input: &ListingInput<'_>, sink: &mut dyn BlockSink) -> Result<Published> {
    let params = input.profile.params();
    let scratch_err = |source| Error::Io {
        path: input.scratch.join("(changes.jsonl being written)"),
        source,
    };
    let mut aur = Vec::with_capacity(input.aur.len());
    for b in input.aur {
        b.check(&aur::dir(&b.pkgbase))?;
        aur.push(AurEntry::import(b.clone(), &params, sink)?);
    }
    // The previous bases' entries, for their removal lines: computed again, not stored.
    let mut previous_aur = Vec::with_capacity(input.previous_aur.len());
    for b in input.previous_aur {
        let discard = &mut importer::VecSink::default();
        previous_aur.push(AurEntry::import(b.clone(), &params, discard)?);
    }
    let mut file = tempfile::tempfile_in(input.scratch).map_err(scratch_err)?;
    let changed = {
        let mut w = std::io::BufWriter::new(&mut file);
        let n = changes::write(
            input.previous.map_or(&[][..], |(_, items)| items),
            input.items,
            &previous_aur,
            &aur,
            &mut w,
        )?;
        w.flush().map_err(scratch_err)?;
        n
    };
    file.seek(std::io::SeekFrom::Start(0))
        .map_err(scratch_err)?;
    let f = importer::import(std::io::BufReader::new(file), &params, sink)?;
    let changes_entry = DirEntry {
        cid: f.cid,
        tsize: f.tsize,
    };
    let manifest = Manifest {
        format: if aur.is_empty() {
            FORMAT_PACMAN
        } else {
            FORMAT_AUR
        },
        profile: input.profile.name().to_string(),
        upstream: input.upstream.to_string(),
        lastupdate: input.lastupdate.to_string(),
        created: created_of(input.lastupdate),
        repos: input
            .repos
            .iter()
            .map(|r| {
                let archive = |kind: ItemKind, name: Option<&String>| {
                    let name = name?;
                    input
                        .items
                        .iter()
                        .find(|i| {
                            i.kind == kind
                                && i.repo == r.repo
                                && i.arch == r.arch
                                && &i.filename == name
                        })
                        .map(|i| i.file)
                };
                RepoSummary {
                    database_file: archive(ItemKind::Database, Some(&r.database)),
                    files_file: archive(ItemKind::Files, r.files.as_ref()),
                    ..r.clone()
                }
            })
            .collect(),
        previous: input.previous.map(|(c, _)| c.to_string()),
        changes: changes_entry.cid.to_string(),
        changed_files: changed,
        aur_bases: aur.len() as u64,
    };
    let manifest_bytes = manifest.to_bytes()?;
    let f = importer::import(&manifest_bytes[..], &params, sink)?;
    let manifest_entry = DirEntry {
        cid: f.cid,
        tsize: f.tsize,
    };
    let mut live = LiveDirs::new(&params)?;
    for it in input.items {
        live.add(it)?;
    }
    for e in &aur {
        live.add_aur(e)?;
    }
    let aur_refs: Vec<&AurEntry> = aur.iter().collect();
    let root = tree(
        manifest_entry,
        changes_entry,
        input.repos,
        &mut live,
        &aur_refs,
        &params,
        sink,
        &mut Vec::new(),
    )?;
    Ok(Published {
        root,
        manifest: manifest_bytes,
        manifest_entry,
        changes_entry,
        changed,
    })
}

/// The tree of a listing: the root with `manifest.json` and `changes.jsonl`, every
/// repository's `<repo>/os/<arch>` and `index/<repo>/<arch>` (even when empty),
/// `by-sha256/`, and with AUR bases `aur/`, `index/aur/`, `by-sha512/` and `by-b2/`.
/// The repository and `by-sha256/` directories come from `live` (only what changed since
/// its last build is encoded again); the rest is small and built here each time.
/// Every `index/<repo>/<arch>` directory's CID is added to `index_dirs`.
#[allow(clippy::too_many_arguments)]
fn tree(
    manifest: DirEntry,
    changes: DirEntry,
    repos: &[RepoSummary],
    live: &mut LiveDirs,
    aur: &[&AurEntry],
    params: &ImportParams,
    sink: &mut dyn BlockSink,
    index_dirs: &mut Vec<Cid>,
) -> Result<DirEntry> {
    let mut t = Tree::new();
    t.insert(layout::MANIFEST, manifest)?;
    t.insert(layout::CHANGES, changes)?;
    let mut keys: BTreeSet<(String, String)> = repos
        .iter()
        .map(|r| (r.repo.clone(), r.arch.clone()))
        .collect();
    keys.extend(live.keys().map(|(r, a)| (r.to_string(), a.to_string())));
    for (repo, arch) in keys {
        let (os, index) = live.build_repo(&repo, &arch, sink)?;
        index_dirs.push(index.cid);
        t.insert(&layout::os_dir(&repo, &arch), os)?;
        t.insert(&layout::index_dir(&repo, &arch), index)?;
    }
    t.mkdir(layout::BY_SHA256)?;
    for (path, e) in live.build_by_sha256(sink)? {
        t.insert(path, e)?;
    }
    if !aur.is_empty() {
        t.mkdir(layout::AUR)?;
        t.mkdir(layout::BY_SHA512)?;
        t.mkdir(layout::BY_B2)?;
    }
    // The same bytes under two names or in two bases are one file.
    let once = |r: std::result::Result<(), cidmirror_store::Error>| match r {
        Ok(()) | Err(cidmirror_store::Error::DuplicateName(_)) => Ok(()),
        Err(e) => Err(e),
    };
    for e in aur {
        let b = &e.base;
        let dir = aur::dir(&b.pkgbase);
        t.insert(&format!("{dir}/{}", aur::SRCINFO), b.srcinfo.dir_entry())?;
        t.insert(&aur::index_path(&b.pkgbase), e.index)?;
        for s in &b.sources {
            let link = s.file.dir_entry();
            t.insert(&format!("{dir}/{}", s.file_name), link)?;
            once(t.insert(&aur::by_digest(layout::BY_SHA512, &s.sha512.to_hex()), link))?;
            once(t.insert(&aur::by_digest(layout::BY_B2, &s.b2.to_hex()), link))?;
        }
    }
    Ok(t.build(params, sink)?)
}

/// A file's size and SHA-256.
pub type Facts = (u64, Sha256);

/// What a follower read of one package's `desc` while walking a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkedDesc {
    /// `%FILENAME%`.
    pub filename: String,
    /// `%CSIZE%`.
    pub csize: u64,
    /// `%SHA256SUM%`.
    pub sha256: Sha256,
}

/// The items of one snapshot as a follower holds them, with the manifest and the entries
/// of `manifest.json` and `changes.jsonl`: enough to rebuild every directory of the
/// listing and to answer its mirror paths. It keeps its large directories between builds
/// (see the `live` module): the listing [`Listing::next`] makes shares them with this one,
/// and its build encodes only the directory blocks that its changes touched.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The manifest.
    pub manifest: Manifest,
    /// `manifest.json`.
    pub manifest_entry: DirEntry,
    /// `changes.jsonl`.
    pub changes_entry: DirEntry,
    /// Shared between the listings [`Listing::next`] makes: a copy of the map costs a
    /// reference count per item, not its strings.
    items: BTreeMap<Arc<Key>, Arc<Item>>,
    aur: BTreeMap<String, AurEntry>,
    /// The repository and hash directories, a function of `items` and `aur`.
    live: LiveDirs,
}

/// Two listings are equal when they list the same: their directories follow.
impl PartialEq for Listing {
    fn eq(&self, other: &Listing) -> bool {
        self.manifest == other.manifest
            && self.manifest_entry == other.manifest_entry
            && self.changes_entry == other.changes_entry
            && self.items == other.items
            && self.aur == other.aur
    }
}

impl Eq for Listing {}

impl Listing {
    /// A listing of `items` (two with one key are refused).
    pub fn new(
        manifest: Manifest,
        manifest_entry: DirEntry,
        changes_entry: DirEntry,
        items: Vec<Item>,
    ) -> Result<Listing> {
        let mut live = LiveDirs::new(&manifest.profile()?.params())?;
        let mut map = BTreeMap::new();
        for it in items {
            let key = it.owned_key();
            if map.contains_key(&key) {
                return Err(Error::invalid(
                    "listing",
                    format!("{}/{} given twice", layout::os_dir(&key.0, &key.1), key.2),
                ));
            }
            live.add(&it)?;
            map.insert(Arc::new(key), Arc::new(it));
        }
        Ok(Listing {
            manifest,
            manifest_entry,
            changes_entry,
            items: map,
            aur: BTreeMap::new(),
            live,
        })
    }

    /// This listing with the AUR bases `aur` (two with one package base are refused).
    pub fn with_aur(mut self, aur: Vec<AurEntry>) -> Result<Listing> {
        for e in aur {
            e.base.check(&aur::dir(&e.base.pkgbase))?;
            let name = e.base.pkgbase.clone();
            if self.aur.contains_key(&name) {
                return Err(Error::invalid(aur::dir(&name), "given twice"));
            }
            self.live.add_aur(&e)?;
            self.aur.insert(name, e);
        }
        Ok(self)
    }

    /// Every AUR base, by package base.
    pub fn aur(&self) -> impl Iterator<Item = &AurEntry> {
        self.aur.values()
    }

    /// Every item, by (repo, arch, file name).
    pub fn items(&self) -> impl Iterator<Item = &Item> {
        self.items.values().map(|i| &**i)
    }

    /// The item `filename` of `<repo>/os/<arch>/` (by its file name, not an alias).
    pub fn get(&self, repo: &str, arch: &str, filename: &str) -> Option<&Item> {
        self.items
            .get(&(repo.to_string(), arch.to_string(), filename.to_string()))
            .map(|i| &**i)
    }

    /// The packages of one repository, in file name order.
    pub fn packages_of<'a>(
        &'a self,
        repo: &'a str,
        arch: &'a str,
    ) -> impl Iterator<Item = &'a Item> {
        self.items()
            .filter(move |i| i.repo == repo && i.arch == arch && i.kind == ItemKind::Package)
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there is no item.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The listing of the next snapshot: `changes` (its `changes.jsonl`) applied to a copy
    /// of this one, with its own manifest and entries. A line that removes or changes an
    /// item this listing does not have, or adds one it has, is refused: the follower's
    /// copy and the publisher's disagree, and a rebuild could only fail.
    pub fn next(
        &self,
        manifest: Manifest,
        manifest_entry: DirEntry,
        changes_entry: DirEntry,
        changes: &[u8],
    ) -> Result<Listing> {
        manifest.profile()?;
        let mut items = self.items.clone();
        let mut aur_bases = self.aur.clone();
        // What leaves and what comes, applied to the directories once every line is read
        // (a package's new version may be listed before its old one goes).
        let (mut gone, mut came): (Vec<Arc<Item>>, Vec<Key>) = (Vec::new(), Vec::new());
        let (mut gone_aur, mut came_aur): (Vec<AurEntry>, Vec<String>) = (Vec::new(), Vec::new());
        for changes::Change { line, op, what } in changes::parse(changes)? {
            let item = match what {
                Changed::File(item) => item,
                Changed::Aur(e) => {
                    let name = e.base.pkgbase.clone();
                    let held = aur_bases.contains_key(&name);
                    let what = format!("changes.jsonl line {line}");
                    match (op, held) {
                        (Op::Remove, true) => {
                            gone_aur.extend(aur_bases.remove(&name));
                        }
                        (Op::Add, false) | (Op::Change, true) => {
                            came_aur.push(name.clone());
                            gone_aur.extend(aur_bases.insert(name, e));
                        }
                        (Op::Add, true) => {
                            return Err(Error::invalid(
                                what,
                                format!("adds {}, which the previous listing has", aur::dir(&name)),
                            ));
                        }
                        (Op::Remove | Op::Change, false) => {
                            return Err(Error::invalid(
                                what,
                                format!(
                                    "{op:?}s {}, which the previous listing does not have",
                                    aur::dir(&name)
                                )
                                .to_lowercase(),
                            ));
                        }
                    }
                    continue;
                }
            };
            let key = item.owned_key();
            let held = items.contains_key(&key);
            let what = || format!("changes.jsonl line {line}");
            let path = || format!("{}/{}", layout::os_dir(&key.0, &key.1), key.2);
            match op {
                Op::Remove if held => {
                    gone.extend(items.remove(&key));
                }
                Op::Add | Op::Change if held == (op == Op::Change) => {
                    came.push(key.clone());
                    gone.extend(items.insert(Arc::new(key), Arc::new(item)));
                }
                Op::Add => {
                    return Err(Error::invalid(
                        what(),
                        format!("adds {}, which the previous listing has", path()),
                    ));
                }
                Op::Remove | Op::Change => {
                    return Err(Error::invalid(
                        what(),
                        format!(
                            "{op:?}s {}, which the previous listing does not have",
                            path()
                        )
                        .to_lowercase(),
                    ));
                }
            }
        }
        let mut live = self.live.clone();
        for it in &gone {
            live.remove(it);
        }
        for e in &gone_aur {
            live.remove_aur(e);
        }
        for it in came.iter().filter_map(|k| items.get(k)) {
            live.add(it)?;
        }
        for e in came_aur.iter().filter_map(|n| aur_bases.get(n)) {
            live.add_aur(e)?;
        }
        Ok(Listing {
            manifest,
            manifest_entry,
            changes_entry,
            items,
            aur: aur_bases,
            live,
        })
    }

    /// Builds the listing's directories and returns the root. The blocks handed to `sink`
    /// are those encoded since this listing (or the one it was made from by
    /// [`Listing::next`]) was last built: every block the first time, then only the
    /// directory blocks the changes touched plus the root's small directories.
    pub fn build(&mut self, sink: &mut dyn BlockSink) -> Result<DirEntry> {
        Ok(self.build_indexed(sink)?.0)
    }

    /// [`Listing::build`], with the CID of every `index/<repo>/<arch>` directory (what holds
    /// all the repository's desc entries: a follower pins those, not each entry).
    pub fn build_indexed(&mut self, sink: &mut dyn BlockSink) -> Result<(DirEntry, Vec<Cid>)> {
        let params = self.manifest.profile()?.params();
        let aur: Vec<&AurEntry> = self.aur.values().collect();
        let mut index_dirs = Vec::new();
        let root = tree(
            self.manifest_entry,
            self.changes_entry,
            &self.manifest.repos,
            &mut self.live,
            &aur,
            &params,
            sink,
            &mut index_dirs,
        )?;
        Ok((root, index_dirs))
    }

    /// The listing a follower reads back from a walk of its directories: `leaves` is every
    /// file link by path (relative to the root), `descs` what each `index/` entry says of its
    /// package, by the entry's path, and `facts` the size and SHA-256 of every other file of
    /// the repository directories (signatures and archives; see [`Listing::walk_facts`]),
    /// and `aur` every AUR base read from its `index/aur/<pkgbase>/sources.json`.
    /// A file of a repository directory that no item explains is refused: the listing is
    /// not in the layout this version reads.
    pub fn from_walk(
        manifest: Manifest,
        manifest_entry: DirEntry,
        changes_entry: DirEntry,
        leaves: &HashMap<String, DirEntry>,
        descs: &HashMap<String, WalkedDesc>,
        facts: &HashMap<Cid, Facts>,
        aur: Vec<AurBase>,
    ) -> Result<Listing> {
        let mut used: HashSet<&str> = HashSet::new();
        let mut items = Vec::new();
        let fref = |path: &str, e: DirEntry| -> Result<FileRef> {
            let (size, sha256) = facts
                .get(&e.cid)
                .copied()
                .ok_or_else(|| Error::invalid(path, "its size and SHA-256 are not known"))?;
            Ok(FileRef {
                size,
                sha256,
                cid: e.cid,
                tsize: e.tsize,
            })
        };
        for (path, d) in descs {
            let parts: Vec<&str> = path.split('/').collect();
            let [layout::INDEX, repo, arch, name] = parts[..] else {
                return Err(Error::invalid(path.as_str(), "not an index entry"));
            };
            let Some(desc) = leaves.get(path).copied() else {
                return Err(Error::invalid(path.as_str(), "not in the listing"));
            };
            let file_path = format!("{}/{}", layout::os_dir(repo, arch), d.filename);
            let Some((fp, file)) = leaves.get_key_value(&file_path) else {
                return Err(Error::invalid(
                    path.as_str(),
                    format!("names {file_path}, which is not in the listing"),
                ));
            };
            used.insert(fp);
            let sig_path = format!("{file_path}.sig");
            let sig = match leaves.get_key_value(&sig_path) {
                Some((sp, e)) => {
                    used.insert(sp);
                    Some(fref(sp, *e)?)
                }
                None => None,
            };
            items.push(Item {
                repo: repo.to_string(),
                arch: arch.to_string(),
                kind: ItemKind::Package,
                filename: d.filename.clone(),
                alias: None,
                file: FileRef {
                    size: d.csize,
                    sha256: d.sha256,
                    cid: file.cid,
                    tsize: file.tsize,
                },
                sig,
                package: Some((name.to_string(), desc)),
            });
        }
        for r in &manifest.repos {
            let dir = layout::os_dir(&r.repo, &r.arch);
            let archives = [
                (ItemKind::Database, Some(&r.database)),
                (ItemKind::Files, r.files.as_ref()),
            ];
            let own: Vec<&String> = archives.iter().filter_map(|a| a.1).collect();
            for (kind, name) in archives {
                let Some(name) = name else { continue };
                let path = format!("{dir}/{name}");
                let Some((p, e)) = leaves.get_key_value(&path) else {
                    continue;
                };
                used.insert(p);
                // The alias: the other name of the same bytes in that directory.
                let alias = leaves
                    .iter()
                    .filter(|(ap, ae)| {
                        ae.cid == e.cid
                            && !used.contains(ap.as_str())
                            && ap.strip_prefix(&format!("{dir}/")).is_some_and(|n| {
                                !n.contains('/')
                                    && !n.ends_with(".sig")
                                    && !own.contains(&&n.to_string())
                            })
                    })
                    .map(|(ap, _)| ap)
                    .min();
                let mut sig = None;
                for n in std::iter::once(p).chain(alias) {
                    used.insert(n);
                    if let Some((sp, se)) = leaves.get_key_value(&format!("{n}.sig")) {
                        used.insert(sp);
                        sig = Some(fref(sp, *se)?);
                    }
                }
                let stated = match kind {
                    ItemKind::Files => r.files_file,
                    _ => r.database_file,
                };
                let file = match stated {
                    Some(f) if f.cid == e.cid && f.tsize == e.tsize => f,
                    _ => fref(p, *e)?,
                };
                items.push(Item {
                    repo: r.repo.clone(),
                    arch: r.arch.clone(),
                    kind,
                    filename: name.clone(),
                    alias: alias.and_then(|a| a.rsplit('/').next()).map(str::to_string),
                    file,
                    sig,
                    package: None,
                });
            }
        }
        let mut aur_entries = Vec::with_capacity(aur.len());
        for b in aur {
            let index_path = aur::index_path(&b.pkgbase);
            let Some(index) = leaves.get(&index_path).copied() else {
                return Err(Error::invalid(index_path, "not in the listing"));
            };
            let dir = aur::dir(&b.pkgbase);
            for name in
                std::iter::once(aur::SRCINFO).chain(b.sources.iter().map(|s| s.file_name.as_str()))
            {
                let path = format!("{dir}/{name}");
                match leaves.get_key_value(&path) {
                    Some((p, _)) => {
                        used.insert(p);
                    }
                    None => {
                        return Err(Error::invalid(
                            path,
                            "named by the base's index, not in the listing",
                        ));
                    }
                }
            }
            aur_entries.push(AurEntry { base: b, index });
        }
        let mut unexplained: Vec<&String> = leaves
            .keys()
            .filter(|p| !used.contains(p.as_str()) && !Self::outside_repos(p))
            .collect();
        unexplained.sort();
        if let Some(p) = unexplained.first() {
            return Err(Error::invalid(
                p.as_str(),
                format!(
                    "not explained by the index or the manifest ({} such files; not in the layout this version reads?)",
                    unexplained.len()
                ),
            ));
        }
        Listing::new(manifest, manifest_entry, changes_entry, items)?.with_aur(aur_entries)
    }

    /// The files of a walk's repository directories whose size and SHA-256
    /// [`Listing::from_walk`] needs (every file that is not a package named by an index
    /// entry, nor an archive the manifest states), and for each the facts already known
    /// from its CID (a single raw block hashed with SHA-256, which every signature is under
    /// the default profile); the others must be read.
    pub fn walk_facts<'a>(
        manifest: &Manifest,
        leaves: &'a HashMap<String, DirEntry>,
        descs: &HashMap<String, WalkedDesc>,
    ) -> Vec<(&'a str, DirEntry, Option<Facts>)> {
        let stated: HashSet<Cid> = manifest
            .repos
            .iter()
            .flat_map(|r| r.database_file.iter().chain(&r.files_file))
            .map(|f| f.cid)
            .collect();
        let packages: HashSet<String> = descs
            .iter()
            .filter_map(|(p, d)| {
                let parts: Vec<&str> = p.split('/').collect();
                (parts.len() == 4)
                    .then(|| format!("{}/{}", layout::os_dir(parts[1], parts[2]), d.filename))
            })
            .collect();
        let mut out: Vec<_> = leaves
            .iter()
            .filter(|(p, e)| {
                !Self::outside_repos(p)
                    && !p.starts_with(&format!("{}/", layout::AUR))
                    && !packages.contains(p.as_str())
                    && !stated.contains(&e.cid)
            })
            .map(|(p, e)| (p.as_str(), *e, raw_sha256(e)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(b.0));
        out
    }

    /// Whether a path of the listing is outside every repository directory.
    fn outside_repos(path: &str) -> bool {
        let top = path.split('/').next().unwrap_or_default();
        matches!(
            top,
            layout::INDEX | layout::BY_SHA256 | layout::BY_SHA512 | layout::BY_B2
        ) || path == layout::MANIFEST
            || path == layout::CHANGES
    }
}

/// The size and SHA-256 of a file that is one raw block named with SHA-256: its CID's
/// digest is the file's hash and its link's cumulative size is its size.
fn raw_sha256(e: &DirEntry) -> Option<Facts> {
    const RAW: u64 = 0x55;
    const SHA2_256: u64 = 0x12;
    let mh = e.cid.hash();
    if e.cid.codec() != RAW || mh.code() != SHA2_256 {
        return None;
    }
    let digest: [u8; 32] = mh.digest().try_into().ok()?;
    Some((e.tsize, Sha256(digest)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::testing::{db, fref, pkg};
    use cidmirror_store::importer::VecSink;
    use proptest::prelude::*;

    fn summary(repo: &str) -> RepoSummary {
        RepoSummary {
            repo: repo.into(),
            arch: "x86_64".into(),
            packages: 0,
            bytes: 0,
            database: format!("{repo}.db.tar.gz"),
            files: None,
            signed: false,
            database_file: None,
            files_file: None,
        }
    }

    /// Publishes `items` after `previous`; returns what a follower reads of it: the
    /// manifest, its entry, the changes entry and bytes, and the root.
    fn published(
        items: &[Item],
        repos: &[RepoSummary],
        previous: Option<(Cid, &[Item])>,
    ) -> (Published, Vec<u8>) {
        published_with_aur(items, &[], repos, previous, &[])
    }

    fn entries(aur: &[AurBase]) -> Vec<AurEntry> {
        let params = Profile::UnixfsV1_2025.params();
        aur.iter()
            .map(|b| AurEntry::import(b.clone(), &params, &mut VecSink::default()).unwrap())
            .collect()
    }

    fn published_with_aur(
        items: &[Item],
        aur: &[AurBase],
        repos: &[RepoSummary],
        previous: Option<(Cid, &[Item])>,
        previous_aur: &[AurBase],
    ) -> (Published, Vec<u8>) {
        let p = publish(
            &ListingInput {
                profile: Profile::UnixfsV1_2025,
                upstream: "http://127.0.0.1:1/",
                lastupdate: "1700000000",
                items,
                repos,
                previous,
                aur,
                previous_aur,
                scratch: &std::env::temp_dir(),
            },
            &mut VecSink::default(),
        )
        .unwrap();
        let mut changes = Vec::new();
        changes::write(
            previous.map_or(&[][..], |p| p.1),
            items,
            &entries(previous_aur),
            &entries(aur),
            &mut changes,
        )
        .unwrap();
        (p, changes)
    }

    #[test]
    fn same_input_same_root_and_order_does_not_matter() {
        let items = vec![pkg("a", "1"), pkg("b", "1"), db("db")];
        let rev: Vec<Item> = items.iter().rev().cloned().collect();
        let repos = [summary("core")];
        let (a, _) = published(&items, &repos, None);
        let (b, _) = published(&rev, &repos, None);
        assert_eq!(a.root, b.root);
        let m = Manifest::parse(&a.manifest, "m").unwrap();
        assert_eq!(m.created.as_deref(), Some("2023-11-14T22:13:20Z"));
        assert_eq!(m.previous, None);
        assert_eq!(m.changed_files, 3);
        // A follower's listing of the same items builds the same root.
        let mut l = Listing::new(m, a.manifest_entry, a.changes_entry, items).unwrap();
        assert_eq!(l.build(&mut VecSink::default()).unwrap(), a.root);
    }

    #[test]
    fn changes_that_do_not_fit_the_previous_listing_are_refused() {
        let repos = [summary("core")];
        let (p, _) = published(&[pkg("a", "1")], &repos, None);
        let m = Manifest::parse(&p.manifest, "m").unwrap();
        let l = Listing::new(
            m.clone(),
            p.manifest_entry,
            p.changes_entry,
            vec![pkg("a", "1")],
        )
        .unwrap();
        for (op, it, want) in [
            (Op::Add, pkg("a", "1"), "adds core/os/x86_64/a-1"),
            (Op::Remove, pkg("b", "1"), "removes core/os/x86_64/b-1"),
            (Op::Change, pkg("c", "1"), "changes core/os/x86_64/c-1"),
        ] {
            let line = serde_json::to_string(&crate::ChangeLine::new(op, &it)).unwrap();
            let err = l
                .next(
                    m.clone(),
                    p.manifest_entry,
                    p.changes_entry,
                    line.as_bytes(),
                )
                .unwrap_err()
                .to_string();
            assert!(err.contains(want) && err.contains("line 1"), "{err}");
        }
    }

    #[test]
    fn a_walk_reads_the_listing_back() {
        let mut core_db = db("db");
        core_db.sig = Some(fref("db sig"));
        let items = vec![pkg("a", "1"), pkg("b", "2"), core_db];
        let repos = [summary("core")];
        let bases = vec![crate::aur::testing::base(
            "foo",
            "1",
            &["foo.tar.gz", "fix.patch"],
        )];
        let (p, _) = published_with_aur(&items, &bases, &repos, None, &[]);
        let m = Manifest::parse(&p.manifest, "m").unwrap();
        assert_eq!((m.format, m.aur_bases), (2, 1));
        let mut leaves = HashMap::new();
        let mut descs = HashMap::new();
        for e in entries(&bases) {
            leaves.insert(crate::aur::index_path("foo"), e.index);
            leaves.insert("aur/foo/.SRCINFO".into(), e.base.srcinfo.dir_entry());
            for src in &e.base.sources {
                let link = src.file.dir_entry();
                leaves.insert(format!("aur/foo/{}", src.file_name), link);
                leaves.insert(layout::by_sha256(&src.file.sha256), link);
                leaves.insert(format!("by-b2/00/{}", src.b2.to_hex()), link);
            }
        }
        for it in &items {
            for n in it.names() {
                leaves.insert(format!("core/os/x86_64/{n}"), it.file.dir_entry());
                if let Some(s) = it.sig {
                    leaves.insert(format!("core/os/x86_64/{n}.sig"), s.dir_entry());
                }
            }
            if let Some((name, desc)) = &it.package {
                let path = format!("index/core/x86_64/{name}");
                leaves.insert(path.clone(), *desc);
                leaves.insert(layout::by_sha256(&it.file.sha256), it.file.dir_entry());
                descs.insert(
                    path,
                    WalkedDesc {
                        filename: it.filename.clone(),
                        csize: it.file.size,
                        sha256: it.file.sha256,
                    },
                );
            }
        }
        let needed = Listing::walk_facts(&m, &leaves, &descs);
        // Two package signatures and the database's signature under both names (the
        // manifest states the database itself).
        assert_eq!(needed.len(), 4, "{needed:?}");
        // Single raw SHA-256 blocks (all of them here): known from the CID.
        let facts: HashMap<Cid, Facts> =
            needed.iter().map(|(_, e, f)| (e.cid, f.unwrap())).collect();
        let mut l = Listing::from_walk(
            m.clone(),
            p.manifest_entry,
            p.changes_entry,
            &leaves,
            &descs,
            &facts,
            bases.clone(),
        )
        .unwrap();
        assert_eq!(l.aur().map(|e| e.base.clone()).collect::<Vec<_>>(), bases);
        assert_eq!(l.items().cloned().collect::<Vec<_>>(), {
            let mut v = items.clone();
            v.sort_by(|a, b| a.key().cmp(&b.key()));
            v
        });
        assert_eq!(l.build(&mut VecSink::default()).unwrap(), p.root);
        // A source the index names but the listing lacks is refused.
        let mut lacking = leaves.clone();
        lacking.remove("aur/foo/fix.patch");
        let err = Listing::from_walk(
            m.clone(),
            p.manifest_entry,
            p.changes_entry,
            &lacking,
            &descs,
            &facts,
            bases.clone(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("aur/foo/fix.patch"), "{err}");
        // A file nothing explains is refused (in a repository or an AUR base).
        let mut stray = leaves.clone();
        stray.insert("aur/foo/stray".into(), fref("x").dir_entry());
        let err = Listing::from_walk(
            m.clone(),
            p.manifest_entry,
            p.changes_entry,
            &stray,
            &descs,
            &facts,
            bases.clone(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("aur/foo/stray"), "{err}");
        leaves.insert("core/os/x86_64/stray".into(), fref("x").dir_entry());
        let err = Listing::from_walk(
            m,
            p.manifest_entry,
            p.changes_entry,
            &leaves,
            &descs,
            &facts,
            bases,
        )
        .unwrap_err();
        assert!(err.to_string().contains("core/os/x86_64/stray"), "{err}");
    }

    /// One snapshot's state: per repository, per package slot, the version and whether it
    /// is signed (or absent), and the database's bytes; per AUR base slot, its version (or
    /// absent).
    type State = (Vec<(Vec<Option<(u8, bool)>>, u8)>, Vec<Option<u8>>);

    fn aur_of(state: &State) -> Vec<AurBase> {
        state
            .1
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let v = (*v)?;
                // Two bases share a source file (same bytes): one file under by-*.
                let files: &[&str] = if i % 2 == 0 {
                    &["a.tar.gz", "shared.patch"]
                } else {
                    &["shared.patch"]
                };
                let mut b = crate::aur::testing::base(&format!("b{i}"), &v.to_string(), files);
                if let Some(s) = b.sources.iter_mut().find(|s| s.file_name == "shared.patch") {
                    *s = crate::aur::testing::base("shared", "1", &["shared.patch"])
                        .sources
                        .remove(0);
                }
                Some(b)
            })
            .collect()
    }

    fn items_of(state: &State) -> Vec<Item> {
        let mut out = Vec::new();
        for (r, (slots, db_tag)) in state.0.iter().enumerate() {
            let repo = ["core", "extra"][r];
            for (i, slot) in slots.iter().enumerate() {
                let Some((ver, signed)) = slot else { continue };
                let mut it = pkg(&format!("p{i}"), &ver.to_string());
                it.repo = repo.into();
                if !signed {
                    it.sig = None;
                }
                out.push(it);
            }
            let mut d = db(&format!("{repo} db {db_tag}"));
            d.repo = repo.into();
            d.filename = format!("{repo}.db.tar.gz");
            d.alias = Some(format!("{repo}.db"));
            out.push(d);
        }
        out
    }

    fn state() -> impl Strategy<Value = State> {
        let slots = prop::collection::vec(prop::option::of((1u8..4, any::<bool>())), 12);
        let aur = prop::collection::vec(prop::option::of(1u8..4), 4);
        (prop::collection::vec((slots, 0u8..3), 2), aur)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A follower that starts from the first snapshot and applies every published
        /// `changes.jsonl` holds, at each step, the listing built from scratch: same items,
        /// same root as the publisher's.
        #[test]
        fn applying_every_delta_gives_the_listing_built_from_scratch(states in prop::collection::vec(state(), 1..7)) {
            let repos = [summary("core"), summary("extra")];
            let mut follower: Option<Listing> = None;
            let mut prev: Option<(Cid, Vec<Item>, Vec<AurBase>)> = None;
            for s in &states {
                let (items, aur) = (items_of(s), aur_of(s));
                let (p, changes) = published_with_aur(
                    &items,
                    &aur,
                    &repos,
                    prev.as_ref().map(|(c, i, _)| (*c, &i[..])),
                    prev.as_ref().map_or(&[][..], |p| &p.2[..]),
                );
                let m = Manifest::parse(&p.manifest, "m").unwrap();
                prop_assert_eq!(m.format, if aur.is_empty() { 1 } else { 2 });
                let scratch = Listing::new(m.clone(), p.manifest_entry, p.changes_entry, items.clone())
                    .unwrap()
                    .with_aur(entries(&aur))
                    .unwrap();
                let mut next = match &follower {
                    None => scratch.clone(),
                    Some(l) => l.next(m.clone(), p.manifest_entry, p.changes_entry, &changes).unwrap(),
                };
                prop_assert_eq!(&next, &scratch);
                prop_assert_eq!(next.build(&mut VecSink::default()).unwrap(), p.root);
                follower = Some(next);
                prev = Some((p.root.cid, items, aur));
            }
        }
    }
}
