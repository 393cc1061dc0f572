//! [`Item`]: one file of a repository directory as the listing links it.

use cid::Cid;
use cidmirror_schema::Sha256;
use cidmirror_schema::publisher::Entry;
use cidmirror_store::dir::DirEntry;

/// (repo, arch, file name): where an item is, and its identity across snapshots.
pub type Key = (String, String, String);

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

impl From<cidmirror_store::ImportedFile> for FileRef {
    fn from(f: cidmirror_store::ImportedFile) -> Self {
        FileRef {
            size: f.size,
            sha256: f.sha256,
            cid: f.cid,
            tsize: f.tsize,
        }
    }
}

/// How a [`FileRef`] reads in JSON: `{"size", "sha256" (hex), "cid" (string), "tsize"}`.
#[derive(serde::Serialize, serde::Deserialize)]
struct FileRefJson {
    size: u64,
    sha256: String,
    cid: String,
    tsize: u64,
}

impl serde::Serialize for FileRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        FileRefJson {
            size: self.size,
            sha256: self.sha256.to_hex(),
            cid: self.cid.to_string(),
            tsize: self.tsize,
        }
        .serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for FileRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let j = FileRefJson::deserialize(d)?;
        Ok(FileRef {
            size: j.size,
            sha256: j
                .sha256
                .parse()
                .map_err(|e| D::Error::custom(format!("sha256: {e}")))?,
            cid: cidmirror_store::hash::parse_cid(&j.cid)
                .map_err(|e| D::Error::custom(format!("cid: {e}")))?,
            tsize: j.tsize,
        })
    }
}

impl FileRef {
    /// The link a directory holds to it.
    pub fn dir_entry(&self) -> DirEntry {
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

    /// The kind named `s` (as [`ItemKind::as_str`] writes it).
    pub fn parse(s: &str) -> Option<ItemKind> {
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
    /// (repo, arch, file name), borrowed.
    pub fn key(&self) -> (&str, &str, &str) {
        (&self.repo, &self.arch, &self.filename)
    }

    /// Its [`Key`].
    pub fn owned_key(&self) -> Key {
        (self.repo.clone(), self.arch.clone(), self.filename.clone())
    }

    /// The names it has in `<repo>/os/<arch>/`: its file name, then its alias.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.filename.as_str()).chain(self.alias.as_deref())
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

#[cfg(test)]
pub(crate) mod testing {
    //! Items for unit tests: every CID and hash derived from a tag.
    use super::*;
    use cidmirror_store::hash::{HashAlg, raw_cid};

    /// A file whose bytes are `tag`.
    pub fn fref(tag: &str) -> FileRef {
        FileRef {
            size: tag.len() as u64,
            sha256: Sha256(<sha2::Sha256 as sha2::Digest>::digest(tag.as_bytes()).into()),
            cid: raw_cid(HashAlg::Sha2_256, tag.as_bytes()),
            tsize: tag.len() as u64,
        }
    }

    /// Package `name` at `ver` in core/x86_64, signed.
    pub fn pkg(name: &str, ver: &str) -> Item {
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

    /// core's database, `core.db.tar.gz` with the alias `core.db`, with bytes `tag`.
    pub fn db(tag: &str) -> Item {
        Item {
            repo: "core".into(),
            arch: "x86_64".into(),
            kind: ItemKind::Database,
            filename: "core.db.tar.gz".into(),
            alias: Some("core.db".into()),
            file: fref(tag),
            sig: None,
            package: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn entries_round_trip() {
        let items = vec![db("db"), pkg("a", "1"), pkg("b", "2")];
        let rows: Vec<Entry> = items.iter().flat_map(Item::to_entries).collect();
        assert_eq!(rows.len(), 5);
        let mut back = Item::from_entries(rows);
        let mut want = items.clone();
        back.sort_by(|a, b| a.filename.cmp(&b.filename));
        want.sort_by(|a, b| a.filename.cmp(&b.filename));
        assert_eq!(back, want);
    }
}
