//! A follower's model of one snapshot listing: every package with its names and CIDs, the
//! other files of each repository directory, and the manifest.
//!
//! It is what DESIGN.md "Refresh" needs: [`View::apply`] puts the lines of a new
//! snapshot's `changes.jsonl` into a copy of the previous view, and [`View::build`] builds
//! the listing's directories from it exactly as the publisher does (same paths, same
//! entries, the store's deterministic directory and HAMT builder), so the root it computes
//! equals the signed root when the follower got everything right, without fetching a single
//! directory node. It also answers the mirror paths of the snapshot without walking
//! directories (`lookup`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use cid::Cid;
use cidmirror_store::dir::{DirEntry, Tree};
use cidmirror_store::importer::VecSink;
use cidmirror_store::{Profile, Sha256};
use serde::Deserialize;

use super::FollowError;

/// One repository/architecture as the manifest lists it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RepoInfo {
    /// Repository.
    pub repo: String,
    /// Architecture.
    pub arch: String,
    /// The database archive's file name (`core.db.tar.gz`).
    pub database: String,
    /// The files archive's file name.
    #[serde(default)]
    pub files: Option<String>,
    /// Whether upstream signs the database: then it is served verbatim, else rebuilt.
    #[serde(default)]
    pub signed: bool,
}

/// The parts of `manifest.json` a follower uses.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// Listing format version.
    pub format: u32,
    /// The import profile: fixes the CID of every file the follower imports.
    pub profile: String,
    /// The upstream the publisher follows.
    pub upstream: String,
    /// The repositories.
    pub repos: Vec<RepoInfo>,
    /// The previous snapshot's root.
    #[serde(default)]
    pub previous: Option<String>,
}

impl Manifest {
    /// Parses a manifest, naming the snapshot in errors.
    pub fn parse(bytes: &[u8], root: &Cid) -> Result<Manifest, FollowError> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| FollowError::Invalid {
            what: format!("manifest.json of {root}"),
            detail: e.to_string(),
        })?;
        if m.format != 1 {
            return Err(FollowError::Invalid {
                what: format!("manifest.json of {root}"),
                detail: format!("listing format {} (this version reads format 1)", m.format),
            });
        }
        Ok(m)
    }

    /// The profile, checked.
    pub fn profile(&self) -> Result<Profile, FollowError> {
        self.profile.parse().map_err(|e| FollowError::Invalid {
            what: "manifest profile".into(),
            detail: format!("{e}"),
        })
    }
}

/// A package of the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// Package name (its `index/` file name).
    pub name: String,
    /// File size.
    pub size: u64,
    /// SHA-256 of the file.
    pub sha256: Sha256,
    /// The file.
    pub file: DirEntry,
    /// Its `desc` entry.
    pub desc: DirEntry,
    /// Its detached signature, if any.
    pub sig: Option<DirEntry>,
}

/// (repo, arch, file name).
pub type Key = (String, String, String);

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

/// One snapshot listing as a follower holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The listing's root.
    pub root: Cid,
    /// Its manifest.
    pub manifest: Manifest,
    /// `manifest.json` and `changes.jsonl`.
    pub manifest_entry: DirEntry,
    /// `changes.jsonl`.
    pub changes_entry: DirEntry,
    /// Every package.
    pub packages: BTreeMap<Key, Package>,
    /// Every other file of `<repo>/os/<arch>/` (databases, their aliases and signatures),
    /// by path.
    pub others: BTreeMap<String, DirEntry>,
    /// Files the follower made itself and serves instead of the listing's (rebuilt
    /// databases), by path.
    pub local: HashMap<String, Cid>,
    /// For database paths: since when they have had their bytes (for `Last-Modified`).
    pub since: HashMap<String, std::time::SystemTime>,
    /// Package file name -> key, for lookups.
    by_filename: HashMap<(String, String), Key>,
}

/// One line of `changes.jsonl` (see the publisher's `ChangeLine`).
#[derive(Debug, Deserialize)]
struct Change {
    op: String,
    repo: String,
    arch: String,
    kind: String,
    name: Option<String>,
    filename: String,
    alias: Option<String>,
    size: u64,
    sha256: String,
    cid: String,
    tsize: u64,
    desc_cid: Option<String>,
    desc_tsize: Option<u64>,
    sig_cid: Option<String>,
    sig_tsize: Option<u64>,
}

fn cid_of(s: &str, line: usize) -> Result<Cid, FollowError> {
    cidmirror_store::hash::parse_cid(s).map_err(|e| FollowError::Invalid {
        what: format!("changes.jsonl line {line}"),
        detail: e.to_string(),
    })
}

/// Whether `path` (relative to the root) is a directory of the listing layout (format 1).
pub fn is_dir_path(path: &str) -> bool {
    if path.is_empty() {
        return true;
    }
    let parts: Vec<&str> = path.split('/').collect();
    match parts[0] {
        "manifest.json" | "changes.jsonl" if parts.len() == 1 => false,
        "index" => parts.len() <= 3,
        "by-sha256" => parts.len() <= 2,
        _ => parts.len() <= 3,
    }
}

impl View {
    /// An empty view of `root` with its manifest.
    pub fn new(
        root: Cid,
        manifest: Manifest,
        manifest_entry: DirEntry,
        changes_entry: DirEntry,
    ) -> View {
        View {
            root,
            manifest,
            manifest_entry,
            changes_entry,
            packages: BTreeMap::new(),
            others: BTreeMap::new(),
            local: HashMap::new(),
            since: HashMap::new(),
            by_filename: HashMap::new(),
        }
    }

    /// Adds a package (from a walk or a change).
    pub fn insert_package(&mut self, key: Key, p: Package) {
        self.by_filename.insert(
            (format!("{}/os/{}", key.0, key.1), key.2.clone()),
            key.clone(),
        );
        self.packages.insert(key, p);
    }

    fn remove_package(&mut self, key: &Key) {
        self.by_filename
            .remove(&(format!("{}/os/{}", key.0, key.1), key.2.clone()));
        self.packages.remove(key);
    }

    /// What `<repo>/os/<arch>/<file>` is in this snapshot.
    pub fn lookup(&self, repo: &str, arch: &str, file: &str) -> Option<Resolved> {
        let dir = format!("{repo}/os/{arch}");
        let path = format!("{dir}/{file}");
        if let Some(c) = self.local.get(&path) {
            return Some(Resolved::Other(*c));
        }
        if let Some(e) = self.others.get(&path) {
            return Some(Resolved::Other(e.cid));
        }
        if let Some(key) = self.by_filename.get(&(dir.clone(), file.to_string())) {
            let p = self.packages.get(key)?;
            return Some(Resolved::Package {
                cid: p.file.cid,
                size: p.size,
                sha256: p.sha256,
            });
        }
        let base = file.strip_suffix(".sig")?;
        let key = self.by_filename.get(&(dir, base.to_string()))?;
        self.packages.get(key)?.sig.map(|s| Resolved::Other(s.cid))
    }

    /// Applies the lines of a `changes.jsonl` to a copy of this view, giving the view of the
    /// snapshot `root` (whose own manifest and changes entries are given).
    pub fn apply(
        &self,
        changes: &[u8],
        root: Cid,
        manifest: Manifest,
        manifest_entry: DirEntry,
        changes_entry: DirEntry,
    ) -> Result<View, FollowError> {
        let mut v = self.clone();
        v.root = root;
        v.manifest = manifest;
        v.manifest_entry = manifest_entry;
        v.changes_entry = changes_entry;
        v.local.clear();
        for (i, line) in changes.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let n = i + 1;
            let c: Change = serde_json::from_slice(line).map_err(|e| FollowError::Invalid {
                what: format!("changes.jsonl line {n}"),
                detail: e.to_string(),
            })?;
            let file = DirEntry {
                cid: cid_of(&c.cid, n)?,
                tsize: c.tsize,
            };
            let sig = match (&c.sig_cid, c.sig_tsize) {
                (Some(s), Some(t)) => Some(DirEntry {
                    cid: cid_of(s, n)?,
                    tsize: t,
                }),
                _ => None,
            };
            let dir = format!("{}/os/{}", c.repo, c.arch);
            let key = (c.repo.clone(), c.arch.clone(), c.filename.clone());
            let remove = match c.op.as_str() {
                "remove" => true,
                "add" | "change" => false,
                other => {
                    return Err(FollowError::Invalid {
                        what: format!("changes.jsonl line {n}"),
                        detail: format!("unknown op {other:?}"),
                    });
                }
            };
            if c.kind == "package" {
                if remove {
                    v.remove_package(&key);
                    continue;
                }
                let (Some(name), Some(desc), Some(desc_tsize)) =
                    (c.name.clone(), c.desc_cid.as_deref(), c.desc_tsize)
                else {
                    return Err(FollowError::Invalid {
                        what: format!("changes.jsonl line {n}"),
                        detail: "a package without its name or desc".into(),
                    });
                };
                let sha256 = c.sha256.parse().map_err(|e| FollowError::Invalid {
                    what: format!("changes.jsonl line {n}"),
                    detail: format!("sha256: {e}"),
                })?;
                v.insert_package(
                    key,
                    Package {
                        name,
                        size: c.size,
                        sha256,
                        file,
                        desc: DirEntry {
                            cid: cid_of(desc, n)?,
                            tsize: desc_tsize,
                        },
                        sig,
                    },
                );
            } else {
                let names = std::iter::once(&c.filename).chain(c.alias.as_ref());
                for name in names {
                    let path = format!("{dir}/{name}");
                    let sig_path = format!("{path}.sig");
                    if remove {
                        v.others.remove(&path);
                        v.others.remove(&sig_path);
                        continue;
                    }
                    v.others.insert(path, file);
                    match sig {
                        Some(s) => v.others.insert(sig_path, s),
                        None => v.others.remove(&sig_path),
                    };
                }
            }
        }
        Ok(v)
    }

    /// Builds the listing's directories as the publisher does: the root entry and every
    /// directory block.
    pub fn build(&self) -> Result<(DirEntry, Blocks), FollowError> {
        let params = self.manifest.profile()?.params();
        let mut tree = Tree::new();
        tree.insert("manifest.json", self.manifest_entry)?;
        tree.insert("changes.jsonl", self.changes_entry)?;
        for r in &self.manifest.repos {
            tree.mkdir(&format!("{}/os/{}", r.repo, r.arch))?;
            tree.mkdir(&format!("index/{}/{}", r.repo, r.arch))?;
        }
        tree.mkdir("by-sha256")?;
        for ((repo, arch, filename), p) in &self.packages {
            let dir = format!("{repo}/os/{arch}");
            tree.insert(&format!("{dir}/{filename}"), p.file)?;
            if let Some(sig) = p.sig {
                tree.insert(&format!("{dir}/{filename}.sig"), sig)?;
            }
            tree.insert(&format!("index/{repo}/{arch}/{}", p.name), p.desc)?;
            let hex = p.sha256.to_hex();
            match tree.insert(&format!("by-sha256/{}/{hex}", &hex[..2]), p.file) {
                Ok(()) | Err(cidmirror_store::Error::DuplicateName(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        for (path, e) in &self.others {
            tree.insert(path, *e)?;
        }
        let mut sink = VecSink::default();
        let root = tree.build(&params, &mut sink)?;
        Ok((root, sink.0))
    }

    /// Every CID a follower keeps for this snapshot whatever the budget: the desc entries
    /// (the databases are rebuilt from them) and the listing's own files.
    pub fn desc_cids(&self) -> BTreeSet<Cid> {
        self.packages.values().map(|p| p.desc.cid).collect()
    }

    /// The packages of one repository, in name order.
    pub fn packages_of<'a>(
        &'a self,
        repo: &'a str,
        arch: &'a str,
    ) -> impl Iterator<Item = &'a Package> + 'a {
        self.packages
            .iter()
            .filter(move |(k, _)| k.0 == repo && k.1 == arch)
            .map(|(_, p)| p)
    }

    /// Every file CID the snapshot references (packages, signatures, databases).
    pub fn file_cids(&self) -> BTreeSet<Cid> {
        let mut out: BTreeSet<Cid> = self.packages.values().map(|p| p.file.cid).collect();
        out.extend(self.packages.values().filter_map(|p| p.sig.map(|s| s.cid)));
        out.extend(self.others.values().map(|e| e.cid));
        out.extend(self.local.values().copied());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cidmirror_store::hash::{HashAlg, raw_cid};

    fn entry(tag: &str) -> DirEntry {
        DirEntry {
            cid: raw_cid(HashAlg::Sha2_256, tag.as_bytes()),
            tsize: tag.len() as u64,
        }
    }

    fn manifest() -> Manifest {
        Manifest {
            format: 1,
            profile: "unixfs-v1-2025".into(),
            upstream: "http://127.0.0.1:1/".into(),
            repos: vec![RepoInfo {
                repo: "core".into(),
                arch: "x86_64".into(),
                database: "core.db.tar.gz".into(),
                files: None,
                signed: false,
            }],
            previous: None,
        }
    }

    fn pkg(name: &str, ver: &str) -> (Key, Package) {
        let filename = format!("{name}-{ver}-x86_64.pkg.tar.zst");
        let sha: Sha256 =
            Sha256(<sha2::Sha256 as sha2::Digest>::digest(filename.as_bytes()).into());
        (
            ("core".into(), "x86_64".into(), filename.clone()),
            Package {
                name: name.into(),
                size: 10,
                sha256: sha,
                file: entry(&filename),
                desc: entry(&format!("desc {filename}")),
                sig: Some(entry(&format!("{filename}.sig"))),
            },
        )
    }

    fn line(op: &str, k: &Key, p: &Package) -> String {
        serde_json::json!({
            "op": op, "repo": k.0, "arch": k.1, "kind": "package", "name": p.name,
            "filename": k.2, "alias": null, "size": p.size, "sha256": p.sha256.to_hex(),
            "cid": p.file.cid.to_string(), "tsize": p.file.tsize,
            "desc_cid": p.desc.cid.to_string(), "desc_tsize": p.desc.tsize,
            "sig_cid": p.sig.map(|s| s.cid.to_string()), "sig_tsize": p.sig.map(|s| s.tsize),
        })
        .to_string()
    }

    fn view(pkgs: &[(Key, Package)], db: &str, m: &str) -> View {
        let mut v = View::new(
            Cid::default(),
            manifest(),
            entry(m),
            entry(&format!("c{m}")),
        );
        for (k, p) in pkgs {
            v.insert_package(k.clone(), p.clone());
        }
        for name in ["core.db.tar.gz", "core.db"] {
            v.others.insert(format!("core/os/x86_64/{name}"), entry(db));
        }
        v
    }

    #[test]
    fn applying_changes_gives_the_listing_built_from_scratch() {
        let (a, b1, b2, c) = (pkg("a", "1"), pkg("b", "1"), pkg("b", "2"), pkg("c", "1"));
        let old = view(&[a.clone(), b1.clone()], "db1", "m1");
        let want = view(&[b2.clone(), c.clone()], "db2", "m2");
        let db = serde_json::json!({
            "op": "change", "repo": "core", "arch": "x86_64", "kind": "database", "name": null,
            "filename": "core.db.tar.gz", "alias": "core.db", "size": 3, "sha256": "00".repeat(32),
            "cid": entry("db2").cid.to_string(), "tsize": entry("db2").tsize,
            "desc_cid": null, "desc_tsize": null, "sig_cid": null, "sig_tsize": null,
        });
        let changes = [
            line("remove", &a.0, &a.1),
            line("remove", &b1.0, &b1.1),
            line("add", &b2.0, &b2.1),
            line("add", &c.0, &c.1),
            db.to_string(),
        ]
        .join("\n");
        let (built_want, _) = want.build().unwrap();
        let got = old
            .apply(
                changes.as_bytes(),
                built_want.cid,
                manifest(),
                entry("m2"),
                entry("cm2"),
            )
            .unwrap();
        let (built_got, blocks) = got.build().unwrap();
        assert_eq!(built_got, built_want);
        assert!(!blocks.is_empty());
        assert_eq!(got.packages, want.packages);
        assert_eq!(got.others, want.others);
        // Lookups: packages with their size and hash, signatures, both database names.
        assert!(got.lookup("core", "x86_64", &a.0.2).is_none());
        assert!(matches!(
            got.lookup("core", "x86_64", &c.0.2),
            Some(Resolved::Package { size: 10, .. })
        ));
        assert_eq!(
            got.lookup("core", "x86_64", &format!("{}.sig", c.0.2)),
            Some(Resolved::Other(c.1.sig.unwrap().cid))
        );
        assert_eq!(
            got.lookup("core", "x86_64", "core.db"),
            Some(Resolved::Other(entry("db2").cid))
        );
        // A line that is not JSON is an error naming the line.
        let err = old
            .apply(
                b"{\"op\":\"add\"}\nnot json",
                Cid::default(),
                manifest(),
                entry("m"),
                entry("c"),
            )
            .unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn layout_directories() {
        for d in [
            "",
            "core",
            "core/os",
            "core/os/x86_64",
            "index",
            "index/core",
            "index/core/x86_64",
            "by-sha256",
            "by-sha256/ab",
        ] {
            assert!(is_dir_path(d), "{d}");
        }
        for f in [
            "manifest.json",
            "changes.jsonl",
            "core/os/x86_64/core.db",
            "index/core/x86_64/alpha",
            "by-sha256/ab/abcd",
        ] {
            assert!(!is_dir_path(f), "{f}");
        }
    }
}
