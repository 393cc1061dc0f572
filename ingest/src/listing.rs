//! The snapshot listing: what one published upstream state looks like as a UnixFS tree.
//!
//! ```text
//! <root>/
//!   manifest.json                 format, profile, upstream and its lastupdate, repos with
//!                                 counts, previous snapshot, changes CID
//!   changes.jsonl                 one line per file added, changed or removed since the
//!                                 previous snapshot
//!   <repo>/os/<arch>/             packages, their .sig, the db and files archives under both
//!                                 names pacman uses (core.db and core.db.tar.gz), their .sig
//!   index/<repo>/<arch>/<name>    each package's desc entry, verbatim
//!   by-sha256/<2 hex>/<64 hex>    each package by its SHA-256
//! ```
//! The tree is a pure function of its items, the upstream state and the profile: two
//! publishers of the same upstream state compute the same root. Nothing from the local
//! clock goes in (the manifest's `created` is the upstream's own `lastupdate` time).
//! Unchanged subtrees come out with the same CIDs as before, so storing the new listing
//! writes only the blocks that changed.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Seek, Write};
use std::path::Path;

use cid::Cid;
use cidmirror_schema::Sha256;
use cidmirror_schema::publisher::Entry;
use cidmirror_store::dir::{self, DirEntry, Tree};
use cidmirror_store::importer::{self, BlockSink};
use cidmirror_store::{ImportParams, Profile};
use serde::Serialize;

use crate::Result;

/// Version of the listing layout, written into every manifest.
pub const FORMAT: u32 = 1;

/// A file kept by the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRef {
    /// Size in bytes.
    pub size: u64,
    /// SHA-256.
    pub sha256: Sha256,
    /// Root CID.
    pub cid: Cid,
    /// Cumulative DAG size.
    pub tsize: u64,
}

impl FileRef {
    pub(crate) fn dir_entry(&self) -> DirEntry {
        DirEntry {
            cid: self.cid,
            tsize: self.tsize,
        }
    }
}

/// What an item of `<repo>/os/<arch>/` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ItemKind {
    /// A package.
    Package,
    /// The repository database (`core.db`).
    Database,
    /// The files database (`core.files`).
    Files,
}

impl ItemKind {
    /// The name used in `entries.kind` and `changes.jsonl`.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Package => "package",
            ItemKind::Database => "database",
            ItemKind::Files => "files",
        }
    }

    fn parse(s: &str) -> Option<ItemKind> {
        [ItemKind::Package, ItemKind::Database, ItemKind::Files]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

const SIGNATURE: &str = "signature";

/// One file of `<repo>/os/<arch>/` with its signature, aliases and index entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Repository.
    pub repo: String,
    /// Architecture.
    pub arch: String,
    /// What it is.
    pub kind: ItemKind,
    /// Its file name.
    pub filename: String,
    /// A second name with the same bytes (`core.db` beside `core.db.tar.gz`).
    pub alias: Option<String>,
    /// The file.
    pub file: FileRef,
    /// Its detached signature (`<filename>.sig`, and `<alias>.sig`), if upstream has one.
    pub sig: Option<FileRef>,
    /// Package name and `desc` entry, for packages.
    pub package: Option<(String, DirEntry)>,
}

impl Item {
    fn key(&self) -> (&str, &str, &str) {
        (&self.repo, &self.arch, &self.filename)
    }

    /// The rows this item is recorded as (the file, then its signature).
    pub fn to_entries(&self) -> Vec<Entry> {
        let mut out = vec![Entry {
            repo: self.repo.clone(),
            arch: self.arch.clone(),
            filename: self.filename.clone(),
            kind: self.kind.as_str().to_string(),
            alias: self.alias.clone(),
            package: self.package.as_ref().map(|p| p.0.clone()),
            size: self.file.size,
            sha256: self.file.sha256,
            cid: self.file.cid,
            tsize: self.file.tsize,
            desc_cid: self.package.as_ref().map(|p| p.1.cid),
            desc_tsize: self.package.as_ref().map(|p| p.1.tsize),
        }];
        if let Some(sig) = &self.sig {
            out.push(Entry {
                repo: self.repo.clone(),
                arch: self.arch.clone(),
                filename: format!("{}.sig", self.filename),
                kind: SIGNATURE.to_string(),
                alias: self.alias.as_ref().map(|a| format!("{a}.sig")),
                package: self.package.as_ref().map(|p| p.0.clone()),
                size: sig.size,
                sha256: sig.sha256,
                cid: sig.cid,
                tsize: sig.tsize,
                desc_cid: None,
                desc_tsize: None,
            });
        }
        out
    }

    /// Rebuilds items from recorded rows (signature rows join their file), in order of
    /// repository, architecture and file name. The rows are consumed: their strings move
    /// into the items (a snapshot of 200,000 packages would otherwise be held twice).
    pub fn from_entries(entries: Vec<Entry>) -> Vec<Item> {
        let mut items: Vec<Item> = Vec::with_capacity(entries.len());
        let mut sigs = Vec::new();
        for e in entries {
            let file = FileRef {
                size: e.size,
                sha256: e.sha256,
                cid: e.cid,
                tsize: e.tsize,
            };
            if e.kind == SIGNATURE {
                sigs.push((e.repo, e.arch, e.filename, file));
                continue;
            }
            let Some(kind) = ItemKind::parse(&e.kind) else {
                continue;
            };
            let package = match (e.package, e.desc_cid, e.desc_tsize) {
                (Some(name), Some(cid), Some(tsize)) => Some((name, DirEntry { cid, tsize })),
                _ => None,
            };
            items.push(Item {
                repo: e.repo,
                arch: e.arch,
                kind,
                filename: e.filename,
                alias: e.alias,
                file,
                sig: None,
                package,
            });
        }
        items.shrink_to_fit();
        items.sort_by(|a, b| a.key().cmp(&b.key()));
        items.dedup_by(|b, a| a.key() == b.key());
        for (repo, arch, filename, file) in sigs {
            let Some(base) = filename.strip_suffix(".sig") else {
                continue;
            };
            let key = (repo.as_str(), arch.as_str(), base);
            if let Ok(i) = items.binary_search_by(|it| it.key().cmp(&key)) {
                items[i].sig = Some(file);
            }
        }
        items
    }
}

/// One repository/architecture of a snapshot, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepoSummary {
    /// Repository.
    pub repo: String,
    /// Architecture.
    pub arch: String,
    /// Number of packages.
    pub packages: u64,
    /// Their total size.
    pub bytes: u64,
    /// The database archive's file name.
    pub database: String,
    /// The files archive's file name, if upstream has one.
    pub files: Option<String>,
    /// Whether the database is signed upstream (a `.db.sig` exists): followers then fetch
    /// it verbatim instead of rebuilding it from `index/`.
    pub signed: bool,
}

#[derive(Serialize)]
struct Manifest<'a> {
    format: u32,
    profile: &'a str,
    upstream: &'a str,
    lastupdate: &'a str,
    created: Option<String>,
    repos: &'a [RepoSummary],
    previous: Option<String>,
    changes: String,
    changed_files: u64,
}

/// One line of `changes.jsonl`: everything a follower needs to put the entry into (or take
/// it out of) its copy of the previous listing without fetching anything else: names, CIDs
/// and the cumulative sizes the directory links carry.
#[derive(Serialize)]
struct ChangeLine<'a> {
    op: &'static str,
    repo: &'a str,
    arch: &'a str,
    kind: &'static str,
    name: Option<&'a str>,
    filename: &'a str,
    alias: Option<&'a str>,
    size: u64,
    sha256: String,
    cid: String,
    tsize: u64,
    desc_cid: Option<String>,
    desc_tsize: Option<u64>,
    sig_cid: Option<String>,
    sig_size: Option<u64>,
    sig_sha256: Option<String>,
    sig_tsize: Option<u64>,
}

impl<'a> ChangeLine<'a> {
    fn new(op: &'static str, it: &'a Item) -> Self {
        ChangeLine {
            op,
            repo: &it.repo,
            arch: &it.arch,
            kind: it.kind.as_str(),
            name: it.package.as_ref().map(|p| p.0.as_str()),
            filename: &it.filename,
            alias: it.alias.as_deref(),
            size: it.file.size,
            sha256: it.file.sha256.to_hex(),
            cid: it.file.cid.to_string(),
            tsize: it.file.tsize,
            desc_cid: it.package.as_ref().map(|p| p.1.cid.to_string()),
            desc_tsize: it.package.as_ref().map(|p| p.1.tsize),
            sig_cid: it.sig.map(|s| s.cid.to_string()),
            sig_size: it.sig.map(|s| s.size),
            sig_sha256: it.sig.map(|s| s.sha256.to_hex()),
            sig_tsize: it.sig.map(|s| s.tsize),
        }
    }
}

/// Everything that goes into one listing.
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
    /// A directory for a scratch file (`changes.jsonl` is written there, not kept in
    /// memory: a line per package of a first snapshot).
    pub scratch: &'a Path,
}

/// A built listing (its blocks went to the sink given to [`build`]) and what it says.
pub struct Listing {
    /// The root.
    pub root: DirEntry,
    /// `manifest.json`.
    pub manifest: Vec<u8>,
    /// Lines in `changes.jsonl`.
    pub changed: u64,
}

/// The lines of `changes.jsonl`: removals, changes and additions, sorted by repository,
/// architecture and file name.
pub fn changes(previous: &[Item], items: &[Item]) -> Result<(Vec<u8>, u64)> {
    let mut out = Vec::new();
    let n = changes_into(previous, items, &mut out)?;
    Ok((out, n))
}

/// [`changes`], written to `out`; returns the number of lines.
pub fn changes_into(previous: &[Item], items: &[Item], out: &mut dyn Write) -> Result<u64> {
    let old: BTreeMap<_, &Item> = previous.iter().map(|i| (i.key(), i)).collect();
    let new: BTreeMap<_, &Item> = items.iter().map(|i| (i.key(), i)).collect();
    // Both maps are in key order, and a key has at most one line: one merge walk writes
    // the lines in order without holding them (a first snapshot has one per package).
    let mut count = 0u64;
    let mut emit = |l: ChangeLine<'_>| -> Result<()> {
        serde_json::to_writer(&mut *out, &l)
            .map_err(|e| crate::Error::Config(format!("encoding changes: {e}")))?;
        out.write_all(b"\n")
            .map_err(|e| crate::Error::Config(format!("writing changes: {e}")))?;
        count += 1;
        Ok(())
    };
    let (mut o, mut n) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (o.peek().copied(), n.peek().copied()) {
            (None, None) => break,
            (Some((_, io)), None) => {
                emit(ChangeLine::new("remove", io))?;
                o.next();
            }
            (None, Some((_, inew))) => {
                emit(ChangeLine::new("add", inew))?;
                n.next();
            }
            (Some((ko, io)), Some((kn, inew))) => match ko.cmp(kn) {
                std::cmp::Ordering::Less => {
                    emit(ChangeLine::new("remove", io))?;
                    o.next();
                }
                std::cmp::Ordering::Greater => {
                    emit(ChangeLine::new("add", inew))?;
                    n.next();
                }
                std::cmp::Ordering::Equal => {
                    if inew.file != io.file
                        || inew.sig != io.sig
                        || inew.package != io.package
                        || inew.alias != io.alias
                    {
                        emit(ChangeLine::new("change", inew))?;
                    }
                    o.next();
                    n.next();
                }
            },
        }
    }
    Ok(count)
}

fn import_bytes(params: &ImportParams, bytes: &[u8], sink: &mut dyn BlockSink) -> Result<DirEntry> {
    let f = importer::import(bytes, params, sink)?;
    Ok(DirEntry {
        cid: f.cid,
        tsize: f.tsize,
    })
}

/// The `created` time of a manifest: the upstream's `lastupdate` when it is a Unix time.
fn created_of(lastupdate: &str) -> Option<String> {
    let secs: u64 = lastupdate.trim().parse().ok()?;
    let t = std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(secs))?;
    Some(humantime::format_rfc3339_seconds(t).to_string())
}

/// Builds the listing: every directory node, `manifest.json` and `changes.jsonl`, each
/// block handed to `sink` (not stored yet).
pub fn build(input: &ListingInput<'_>, sink: &mut dyn BlockSink) -> Result<Listing> {
    let params = input.profile.params();
    let scratch_err = |source| crate::Error::Io {
        path: input.scratch.join("(changes.jsonl being written)"),
        source,
    };
    let mut file = tempfile::tempfile_in(input.scratch).map_err(scratch_err)?;
    let changed = {
        let mut w = std::io::BufWriter::new(&mut file);
        let n = changes_into(
            input.previous.map_or(&[][..], |(_, items)| items),
            input.items,
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
        format: FORMAT,
        profile: input.profile.name(),
        upstream: input.upstream,
        lastupdate: input.lastupdate,
        created: created_of(input.lastupdate),
        repos: input.repos,
        previous: input.previous.map(|(c, _)| c.to_string()),
        changes: changes_entry.cid.to_string(),
        changed_files: changed,
    };
    let mut manifest_bytes = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| crate::Error::Config(format!("encoding the manifest: {e}")))?;
    manifest_bytes.push(b'\n');
    let manifest_entry = import_bytes(&params, &manifest_bytes, sink)?;

    let mut tree = Tree::new();
    tree.insert("manifest.json", manifest_entry)?;
    tree.insert("changes.jsonl", changes_entry)?;
    // Every followed repository has its directories, even when empty; they are built here,
    // straight from the items, and go into the tree by CID (see `repo_dirs`).
    let mut keys: BTreeSet<(&str, &str)> = input
        .repos
        .iter()
        .map(|r| (r.repo.as_str(), r.arch.as_str()))
        .collect();
    keys.extend(
        input
            .items
            .iter()
            .map(|i| (i.repo.as_str(), i.arch.as_str())),
    );
    for (repo, arch) in keys {
        let (os, index) = repo_dirs(input.items, repo, arch, &params, sink)?;
        tree.insert(&format!("{repo}/os/{arch}"), os)?;
        tree.insert(&format!("index/{repo}/{arch}"), index)?;
    }
    tree.mkdir("by-sha256")?;
    for it in input.items {
        if it.package.is_some() {
            let hex = it.file.sha256.to_hex();
            let path = format!("by-sha256/{}/{hex}", &hex[..2]);
            // The same package in two repositories is one file.
            match tree.insert(&path, it.file.dir_entry()) {
                Ok(()) | Err(cidmirror_store::Error::DuplicateName(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let root = tree.build(&params, sink)?;
    Ok(Listing {
        root,
        manifest: manifest_bytes,
        changed,
    })
}

/// One repository's `<repo>/os/<arch>` directory (files under their names and aliases,
/// and signatures) and `index/<repo>/<arch>` (each package's desc under its name), built
/// from its items, one after the other, from sorted vectors freed as soon as each is built:
/// held in the [`Tree`]'s maps until the whole listing was built, a repository of 200,000
/// packages took 96 MB (heaptrack, bench/mirror_mem.sh), the largest part of the sync's
/// peak.
fn repo_dirs(
    items: &[Item],
    repo: &str,
    arch: &str,
    params: &ImportParams,
    sink: &mut dyn BlockSink,
) -> Result<(DirEntry, DirEntry)> {
    let mine = || items.iter().filter(|i| i.repo == repo && i.arch == arch);
    let named = |dir: String| {
        move |e: cidmirror_store::Error| match e {
            cidmirror_store::Error::DuplicateName(n) => {
                cidmirror_store::Error::DuplicateName(format!("{dir}/{n}"))
            }
            other => other,
        }
    };
    let os = {
        let mut links: Vec<(Cow<'_, str>, DirEntry)> = Vec::new();
        for it in mine() {
            for n in std::iter::once(&it.filename).chain(it.alias.as_ref()) {
                links.push((Cow::Borrowed(n.as_str()), it.file.dir_entry()));
                if let Some(sig) = &it.sig {
                    links.push((Cow::Owned(format!("{n}.sig")), sig.dir_entry()));
                }
            }
        }
        links.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let refs: Vec<(&str, &DirEntry)> = links.iter().map(|(n, e)| (n.as_ref(), e)).collect();
        dir::build_sorted(&refs, params, sink).map_err(named(format!("{repo}/os/{arch}")))?
    };
    let index = {
        let mut links: Vec<(&str, &DirEntry)> = mine()
            .filter_map(|it| {
                it.package
                    .as_ref()
                    .map(|(name, desc)| (name.as_str(), desc))
            })
            .collect();
        links.sort_unstable_by(|a, b| a.0.cmp(b.0));
        dir::build_sorted(&links, params, sink).map_err(named(format!("index/{repo}/{arch}")))?
    };
    Ok((os, index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cidmirror_store::hash::{HashAlg, raw_cid};

    fn fref(tag: &str) -> FileRef {
        FileRef {
            size: tag.len() as u64,
            sha256: Sha256(<sha2::Sha256 as sha2::Digest>::digest(tag.as_bytes()).into()),
            cid: raw_cid(HashAlg::Sha2_256, tag.as_bytes()),
            tsize: tag.len() as u64,
        }
    }

    fn pkg(name: &str, ver: &str) -> Item {
        let filename = format!("{name}-{ver}-x86_64.pkg.tar.zst");
        Item {
            repo: "core".into(),
            arch: "x86_64".into(),
            kind: ItemKind::Package,
            file: fref(&filename),
            sig: Some(fref(&format!("{filename}.sig"))),
            package: Some((
                name.into(),
                DirEntry {
                    cid: raw_cid(HashAlg::Sha2_256, format!("desc {name} {ver}").as_bytes()),
                    tsize: 10,
                },
            )),
            filename,
            alias: None,
        }
    }

    #[test]
    fn entries_round_trip() {
        let mut db = pkg("db", "x");
        db.kind = ItemKind::Database;
        db.filename = "core.db.tar.gz".into();
        db.alias = Some("core.db".into());
        db.package = None;
        let items = vec![db, pkg("a", "1"), pkg("b", "2")];
        let rows: Vec<Entry> = items.iter().flat_map(Item::to_entries).collect();
        assert_eq!(rows.len(), 6);
        let mut back = Item::from_entries(rows);
        let mut want = items.clone();
        back.sort_by(|a, b| a.filename.cmp(&b.filename));
        want.sort_by(|a, b| a.filename.cmp(&b.filename));
        assert_eq!(back, want);
    }

    #[test]
    fn changes_name_removals_changes_and_additions() {
        let old = vec![pkg("a", "1"), pkg("b", "1"), pkg("c", "1")];
        let mut c2 = pkg("c", "1");
        c2.sig = None; // same file, signature gone
        let new = vec![pkg("a", "1"), pkg("b", "2"), c2, pkg("d", "1")];
        let (bytes, n) = changes(&old, &new).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let ops: Vec<(String, String)> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["op"].as_str().unwrap().into(),
                    v["filename"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(n, 4);
        assert_eq!(
            ops,
            [
                ("remove".into(), "b-1-x86_64.pkg.tar.zst".into()),
                ("add".into(), "b-2-x86_64.pkg.tar.zst".into()),
                ("change".into(), "c-1-x86_64.pkg.tar.zst".into()),
                ("add".into(), "d-1-x86_64.pkg.tar.zst".into()),
            ]
        );
    }

    #[test]
    fn same_input_same_root_and_order_does_not_matter() {
        let items = vec![pkg("a", "1"), pkg("b", "1")];
        let rev: Vec<Item> = items.iter().rev().cloned().collect();
        let repos = vec![RepoSummary {
            repo: "core".into(),
            arch: "x86_64".into(),
            packages: 2,
            bytes: 10,
            database: "core.db.tar.gz".into(),
            files: None,
            signed: false,
        }];
        let mk = |items: &[Item]| {
            build(
                &ListingInput {
                    profile: Profile::UnixfsV1_2025,
                    upstream: "http://127.0.0.1:1/",
                    lastupdate: "1700000000",
                    items,
                    repos: &repos,
                    previous: None,
                    scratch: &std::env::temp_dir(),
                },
                &mut cidmirror_store::importer::VecSink::default(),
            )
            .unwrap()
        };
        let (a, b) = (mk(&items), mk(&rev));
        assert_eq!(a.root, b.root);
        let m: serde_json::Value = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(m["created"], "2023-11-14T22:13:20Z");
        assert_eq!(m["previous"], serde_json::Value::Null);
        assert_eq!(m["changed_files"], 2);
    }
}
