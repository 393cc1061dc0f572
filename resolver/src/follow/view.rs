//! A follower's model of one snapshot: the [`Listing`] (the publisher's own format and
//! builder, from `cidmirror-listing`), what the follower serves instead of the listing's
//! files (rebuilt databases), and the mirror paths of the snapshot answered without
//! walking directories ([`View::lookup`]).

use std::collections::{BTreeSet, HashMap};

use cid::Cid;
use cidmirror_listing::{Item, ItemKind, Key, Listing, Manifest, layout};
use cidmirror_store::Sha256;
use cidmirror_store::dir::DirEntry;
use cidmirror_store::importer::VecSink;

use super::FollowError;

/// Blocks built, with their CIDs.
pub type Blocks = Vec<(Cid, Vec<u8>)>;

/// What a mirror path of the snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// A package file: its size and SHA-256 are known from the index.
    Package {
        /// The file.
        cid: Cid,
        /// Size.
        size: u64,
        /// SHA-256.
        sha256: Sha256,
    },
    /// Any other file (signatures, databases).
    Other(Cid),
}

impl Resolved {
    /// The file's CID.
    pub fn cid(&self) -> Cid {
        match self {
            Resolved::Package { cid, .. } | Resolved::Other(cid) => *cid,
        }
    }
}

/// One snapshot as a follower holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The listing's root.
    pub root: Cid,
    /// The listing.
    pub listing: Listing,
    /// Files the follower made itself and serves instead of the listing's (rebuilt
    /// databases), by path.
    pub local: HashMap<String, Cid>,
    /// For database paths: since when they have had their bytes (for `Last-Modified`).
    pub since: HashMap<String, std::time::SystemTime>,
    /// The listing's `index/<repo>/<arch>` directories (each holds a repository's desc
    /// entries).
    pub index_dirs: Vec<Cid>,
    /// The file name of each alias, by (repo, arch, alias).
    aliases: HashMap<Key, String>,
}

impl View {
    /// The view of snapshot `root` whose listing is `listing`, with the root the listing
    /// builds to (the caller compares it with the signed root) and the directory blocks
    /// encoded for it: all of them for a listing never built, only those its changes
    /// touched for one [`View::next`] made.
    pub fn new(root: Cid, mut listing: Listing) -> Result<(View, DirEntry, Blocks), FollowError> {
        let mut sink = VecSink::default();
        let (built, index_dirs) = listing.build_indexed(&mut sink)?;
        // Aliases are few (a database's second name): the rest is looked up in the listing.
        let aliases = listing
            .items()
            .filter_map(|it| {
                let alias = it.alias.clone()?;
                Some((
                    (it.repo.clone(), it.arch.clone(), alias),
                    it.filename.clone(),
                ))
            })
            .collect();
        let view = View {
            root,
            listing,
            local: HashMap::new(),
            since: HashMap::new(),
            index_dirs,
            aliases,
        };
        Ok((view, built, sink.0))
    }

    /// The snapshot's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.listing.manifest
    }

    /// What `<repo>/os/<arch>/<file>` is in this snapshot (the follower's own file first).
    pub fn lookup(&self, repo: &str, arch: &str, file: &str) -> Option<Resolved> {
        self.resolve(&format!("{}/{file}", layout::os_dir(repo, arch)))
    }

    /// What a path of a repository directory (`core/os/x86_64/core.db`) is: a file by its
    /// name or alias, or the signature of one (`<name>.sig`).
    pub fn resolve(&self, path: &str) -> Option<Resolved> {
        if let Some(c) = self.local.get(path) {
            return Some(Resolved::Other(*c));
        }
        let (dir, file) = path.rsplit_once('/')?;
        let (repo, arch) = dir.split_once("/os/")?;
        if let Some(it) = self.item(repo, arch, file) {
            return Some(match it.kind {
                ItemKind::Package => Resolved::Package {
                    cid: it.file.cid,
                    size: it.file.size,
                    sha256: it.file.sha256,
                },
                ItemKind::Database | ItemKind::Files => Resolved::Other(it.file.cid),
            });
        }
        let it = self.item(repo, arch, file.strip_suffix(".sig")?)?;
        Some(Resolved::Other(it.sig?.cid))
    }

    /// The item named `name` (its file name or alias) in `<repo>/os/<arch>/`.
    fn item(&self, repo: &str, arch: &str, name: &str) -> Option<&Item> {
        self.listing.get(repo, arch, name).or_else(|| {
            let key = (repo.to_string(), arch.to_string(), name.to_string());
            self.listing.get(repo, arch, self.aliases.get(&key)?)
        })
    }

    /// The view of the next snapshot `root`: its `changes.jsonl` applied to this one's
    /// listing, with its own manifest and entries; built as [`View::new`] builds.
    pub fn next(
        &self,
        root: Cid,
        manifest: Manifest,
        manifest_entry: DirEntry,
        changes_entry: DirEntry,
        changes: &[u8],
    ) -> Result<(View, DirEntry, Blocks), FollowError> {
        let listing = self
            .listing
            .next(manifest, manifest_entry, changes_entry, changes)?;
        View::new(root, listing)
    }

    /// Every file CID the snapshot references (packages, signatures, databases, and the
    /// follower's own rebuilt databases).
    pub fn file_cids(&self) -> BTreeSet<Cid> {
        let mut out = BTreeSet::new();
        for it in self.listing.items() {
            out.insert(it.file.cid);
            out.extend(it.sig.map(|s| s.cid));
        }
        out.extend(self.local.values().copied());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cidmirror_listing::{FileRef, Item, RepoSummary};
    use cidmirror_store::hash::{HashAlg, raw_cid};

    fn fref(tag: &str) -> FileRef {
        FileRef {
            size: tag.len() as u64,
            sha256: Sha256(<sha2::Sha256 as sha2::Digest>::digest(tag.as_bytes()).into()),
            cid: raw_cid(HashAlg::Sha2_256, tag.as_bytes()),
            tsize: tag.len() as u64,
        }
    }

    #[test]
    fn lookups_answer_names_aliases_signatures_and_local_files() {
        let manifest = Manifest {
            format: 1,
            profile: "unixfs-v1-2025".into(),
            upstream: "http://127.0.0.1:1/".into(),
            lastupdate: String::new(),
            created: None,
            repos: vec![RepoSummary {
                repo: "core".into(),
                arch: "x86_64".into(),
                packages: 1,
                bytes: 1,
                database: "core.db.tar.gz".into(),
                files: None,
                signed: false,
                database_file: None,
                files_file: None,
            }],
            previous: None,
            changes: String::new(),
            changed_files: 0,
            aur_bases: 0,
        };
        let pkg = Item {
            repo: "core".into(),
            arch: "x86_64".into(),
            kind: ItemKind::Package,
            filename: "a-1-1-x86_64.pkg.tar.zst".into(),
            alias: None,
            file: fref("a"),
            sig: Some(fref("a sig")),
            package: Some(("a".into(), fref("a desc").dir_entry())),
        };
        let db = Item {
            kind: ItemKind::Database,
            filename: "core.db.tar.gz".into(),
            alias: Some("core.db".into()),
            file: fref("db"),
            sig: None,
            package: None,
            ..pkg.clone()
        };
        let listing = Listing::new(
            manifest,
            fref("m").dir_entry(),
            fref("c").dir_entry(),
            vec![pkg, db],
        )
        .unwrap();
        let (mut v, _, blocks) = View::new(Cid::default(), listing).unwrap();
        assert_eq!(
            v.lookup("core", "x86_64", "a-1-1-x86_64.pkg.tar.zst"),
            Some(Resolved::Package {
                cid: fref("a").cid,
                size: 1,
                sha256: fref("a").sha256
            })
        );
        assert_eq!(
            v.lookup("core", "x86_64", "a-1-1-x86_64.pkg.tar.zst.sig"),
            Some(Resolved::Other(fref("a sig").cid))
        );
        for name in ["core.db", "core.db.tar.gz"] {
            assert_eq!(
                v.lookup("core", "x86_64", name),
                Some(Resolved::Other(fref("db").cid))
            );
        }
        assert_eq!(v.lookup("core", "x86_64", "core.db.sig"), None);
        assert_eq!(v.lookup("extra", "x86_64", "core.db"), None);
        v.local
            .insert("core/os/x86_64/core.db".into(), fref("rebuilt").cid);
        assert_eq!(
            v.lookup("core", "x86_64", "core.db"),
            Some(Resolved::Other(fref("rebuilt").cid))
        );
        assert_eq!(v.file_cids().len(), 4);
        // What the follower pins for the desc entries: the one index directory.
        assert_eq!(v.index_dirs.len(), 1);
        assert!(blocks.iter().any(|b| b.0 == v.index_dirs[0]));
    }
}
