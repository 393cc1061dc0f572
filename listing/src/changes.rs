//! `changes.jsonl`: one line per file added, changed or removed since the previous
//! snapshot, written by the publisher ([`write`]) and applied by followers ([`parse`]).
//!
//! A line carries everything a follower needs to put the item into (or take it out of) its
//! copy of the previous listing without fetching anything else: names, CIDs, the
//! cumulative sizes the directory links carry, and the sizes and SHA-256 of the file and of
//! its signature.

use std::collections::BTreeMap;
use std::io::Write;

use cid::Cid;
use cidmirror_store::dir::DirEntry;
use serde::{Deserialize, Serialize};

use crate::aur::{AurBase, AurEntry};
use crate::layout::is_component;
use crate::{Error, FileRef, Item, ItemKind, Result};

/// What happened to an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// New in this snapshot.
    Add,
    /// Same (repo, arch, file name), other bytes, signature, alias or desc.
    Change,
    /// Gone from this snapshot.
    Remove,
}

/// One line of `changes.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeLine {
    /// What happened.
    pub op: Op,
    /// Repository.
    pub repo: String,
    /// Architecture.
    pub arch: String,
    /// `package`, `database` or `files` ([`ItemKind::as_str`]).
    pub kind: String,
    /// The package name, for packages.
    pub name: Option<String>,
    /// The file name.
    pub filename: String,
    /// Its second name, if any.
    pub alias: Option<String>,
    /// File size.
    pub size: u64,
    /// File SHA-256, hex.
    pub sha256: String,
    /// File CID.
    pub cid: String,
    /// File cumulative DAG size.
    pub tsize: u64,
    /// The `desc` entry's CID, for packages.
    pub desc_cid: Option<String>,
    /// Its cumulative size.
    pub desc_tsize: Option<u64>,
    /// The signature's CID, if the file has one.
    pub sig_cid: Option<String>,
    /// Its size.
    pub sig_size: Option<u64>,
    /// Its SHA-256, hex.
    pub sig_sha256: Option<String>,
    /// Its cumulative DAG size.
    pub sig_tsize: Option<u64>,
}

impl ChangeLine {
    /// The line saying `op` of `it`.
    pub fn new(op: Op, it: &Item) -> ChangeLine {
        ChangeLine {
            op,
            repo: it.repo.clone(),
            arch: it.arch.clone(),
            kind: it.kind.as_str().to_string(),
            name: it.package.as_ref().map(|p| p.0.clone()),
            filename: it.filename.clone(),
            alias: it.alias.clone(),
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

    /// The item the line describes, every name checked to be one path component and every
    /// CID and hash parsed; `what` names the line in errors.
    pub fn item(&self, what: &str) -> Result<Item> {
        let bad = |detail: String| Error::invalid(what, detail);
        let kind = ItemKind::parse(&self.kind)
            .ok_or_else(|| bad(format!("unknown kind {:?}", self.kind)))?;
        for (field, v) in [
            ("repo", Some(&self.repo)),
            ("arch", Some(&self.arch)),
            ("filename", Some(&self.filename)),
            ("alias", self.alias.as_ref()),
            ("name", self.name.as_ref()),
        ] {
            if let Some(v) = v
                && !is_component(v)
            {
                return Err(bad(format!("{field} {v:?} is not a file name")));
            }
        }
        let cid = |s: &str| -> Result<Cid> {
            cidmirror_store::hash::parse_cid(s).map_err(|e| bad(e.to_string()))
        };
        let sha = |field: &str, s: &str| {
            s.parse()
                .map_err(|e: cidmirror_schema::Error| bad(format!("{field}: {e}")))
        };
        let file = FileRef {
            size: self.size,
            sha256: sha("sha256", &self.sha256)?,
            cid: cid(&self.cid)?,
            tsize: self.tsize,
        };
        let sig = match (
            &self.sig_cid,
            self.sig_size,
            &self.sig_sha256,
            self.sig_tsize,
        ) {
            (None, None, None, None) => None,
            (Some(c), Some(size), Some(s), Some(tsize)) => Some(FileRef {
                size,
                sha256: sha("sig_sha256", s)?,
                cid: cid(c)?,
                tsize,
            }),
            _ => {
                return Err(bad(
                    "a signature without all of its cid, size, sha256 and tsize".into(),
                ));
            }
        };
        let package = match (kind, &self.name, &self.desc_cid, self.desc_tsize) {
            (ItemKind::Package, Some(name), Some(d), Some(tsize)) => Some((
                name.clone(),
                DirEntry {
                    cid: cid(d)?,
                    tsize,
                },
            )),
            (ItemKind::Package, ..) => {
                return Err(bad("a package without its name or desc".into()));
            }
            (_, None, None, None) => None,
            _ => return Err(bad(format!("a {} with a package name or desc", self.kind))),
        };
        Ok(Item {
            repo: self.repo.clone(),
            arch: self.arch.clone(),
            kind,
            filename: self.filename.clone(),
            alias: self.alias.clone(),
            file,
            sig,
            package,
        })
    }
}

/// The line of an AUR base (`"kind": "aur"`): the whole base, and its index file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AurLine {
    /// What happened.
    pub op: Op,
    /// Always `aur`.
    pub kind: String,
    /// The base.
    #[serde(flatten)]
    pub base: AurBase,
    /// The CID of `index/aur/<pkgbase>/sources.json`.
    pub index_cid: String,
    /// Its cumulative size.
    pub index_tsize: u64,
}

/// The `kind` of an AUR base's line.
pub const AUR_KIND: &str = "aur";

impl AurLine {
    /// The line saying `op` of `e`.
    pub fn new(op: Op, e: &AurEntry) -> AurLine {
        AurLine {
            op,
            kind: AUR_KIND.to_string(),
            base: e.base.clone(),
            index_cid: e.index.cid.to_string(),
            index_tsize: e.index.tsize,
        }
    }

    /// The entry the line describes, checked; `what` names the line in errors.
    pub fn entry(self, what: &str) -> Result<AurEntry> {
        self.base.check(what)?;
        let cid = cidmirror_store::hash::parse_cid(&self.index_cid)
            .map_err(|e| Error::invalid(what, format!("index_cid: {e}")))?;
        Ok(AurEntry {
            base: self.base,
            index: DirEntry {
                cid,
                tsize: self.index_tsize,
            },
        })
    }
}

/// What a line changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// A file of a repository directory.
    File(Item),
    /// An AUR base.
    Aur(AurEntry),
}

/// Writes the lines from `previous` to `items` to `out`: removals, changes and additions,
/// sorted by repository, architecture and file name (a removal before an addition of the
/// same key), then those of the AUR bases from `previous_aur` to `aur`, by package base.
/// Returns the number of lines.
pub fn write(
    previous: &[Item],
    items: &[Item],
    previous_aur: &[AurEntry],
    aur: &[AurEntry],
    out: &mut dyn Write,
) -> Result<u64> {
    let mut count = write_files(previous, items, out)?;
    let old: BTreeMap<&str, &AurEntry> = previous_aur
        .iter()
        .map(|e| (e.base.pkgbase.as_str(), e))
        .collect();
    let new: BTreeMap<&str, &AurEntry> = aur.iter().map(|e| (e.base.pkgbase.as_str(), e)).collect();
    let mut keys: Vec<&str> = old.keys().chain(new.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    for k in keys {
        let line = match (old.get(k), new.get(k)) {
            (Some(o), None) => AurLine::new(Op::Remove, o),
            (None, Some(n)) => AurLine::new(Op::Add, n),
            (Some(o), Some(n)) if o != n => AurLine::new(Op::Change, n),
            _ => continue,
        };
        serde_json::to_writer(&mut *out, &line)
            .map_err(|e| Error::invalid("changes.jsonl", format!("encoding: {e}")))?;
        out.write_all(b"\n")
            .map_err(|e| Error::invalid("changes.jsonl", format!("writing: {e}")))?;
        count += 1;
    }
    Ok(count)
}

fn write_files(previous: &[Item], items: &[Item], out: &mut dyn Write) -> Result<u64> {
    let old: BTreeMap<_, &Item> = previous.iter().map(|i| (i.key(), i)).collect();
    let new: BTreeMap<_, &Item> = items.iter().map(|i| (i.key(), i)).collect();
    // Both maps are in key order, and a key has at most one line: one merge walk writes
    // the lines in order without holding them (a first snapshot has one per package).
    let mut count = 0u64;
    let mut emit = |op: Op, it: &Item| -> Result<()> {
        let io = |e: std::io::Error| Error::invalid("changes.jsonl", format!("writing: {e}"));
        serde_json::to_writer(&mut *out, &ChangeLine::new(op, it))
            .map_err(|e| Error::invalid("changes.jsonl", format!("encoding: {e}")))?;
        out.write_all(b"\n").map_err(io)?;
        count += 1;
        Ok(())
    };
    let (mut o, mut n) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (o.peek().copied(), n.peek().copied()) {
            (None, None) => break,
            (Some((_, io)), None) => {
                emit(Op::Remove, io)?;
                o.next();
            }
            (None, Some((_, inew))) => {
                emit(Op::Add, inew)?;
                n.next();
            }
            (Some((ko, io)), Some((kn, inew))) => match ko.cmp(kn) {
                std::cmp::Ordering::Less => {
                    emit(Op::Remove, io)?;
                    o.next();
                }
                std::cmp::Ordering::Greater => {
                    emit(Op::Add, inew)?;
                    n.next();
                }
                std::cmp::Ordering::Equal => {
                    if inew.file != io.file
                        || inew.sig != io.sig
                        || inew.package != io.package
                        || inew.alias != io.alias
                        || inew.kind != io.kind
                    {
                        emit(Op::Change, inew)?;
                    }
                    o.next();
                    n.next();
                }
            },
        }
    }
    Ok(count)
}

/// One line of a `changes.jsonl` as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its line number, from 1.
    pub line: usize,
    /// What happened.
    pub op: Op,
    /// To what.
    pub what: Changed,
}

/// The lines of a `changes.jsonl` (blank lines skipped), each with its item; errors name
/// the line (`changes.jsonl line 3`).
pub fn parse(bytes: &[u8]) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let what = format!("changes.jsonl line {}", i + 1);
        let json = |e: serde_json::Error| Error::invalid(&what, e.to_string());
        #[derive(Deserialize)]
        struct Kind {
            kind: String,
        }
        let kind: Kind = serde_json::from_slice(line).map_err(json)?;
        let (op, changed) = if kind.kind == AUR_KIND {
            let l: AurLine = serde_json::from_slice(line).map_err(json)?;
            (l.op, Changed::Aur(l.entry(&what)?))
        } else {
            let l: ChangeLine = serde_json::from_slice(line).map_err(json)?;
            (l.op, Changed::File(l.item(&what)?))
        };
        out.push(Change {
            line: i + 1,
            op,
            what: changed,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aur::testing::base;
    use crate::item::testing::pkg;

    #[test]
    fn lines_name_removals_changes_and_additions() {
        let old = vec![pkg("a", "1"), pkg("b", "1"), pkg("c", "1")];
        let mut c2 = pkg("c", "1");
        c2.sig = None; // same file, signature gone
        let new = vec![pkg("a", "1"), pkg("b", "2"), c2.clone(), pkg("d", "1")];
        let mut bytes = Vec::new();
        let params = cidmirror_store::Profile::UnixfsV1_2025.params();
        let sink = &mut cidmirror_store::importer::VecSink::default();
        let mut entry = |b| AurEntry::import(b, &params, sink).unwrap();
        let (foo1, foo2, bar) = (
            entry(base("foo", "1", &["foo.tar.gz"])),
            entry(base("foo", "2", &["foo.tar.gz"])),
            entry(base("bar", "1", &["bar.zip", "bar.patch"])),
        );
        let n = write(
            &old,
            &new,
            &[foo1, bar.clone()],
            &[foo2.clone(), bar],
            &mut bytes,
        )
        .unwrap();
        assert_eq!(n, 5);
        let got: Vec<(Op, Changed)> = parse(&bytes)
            .unwrap()
            .into_iter()
            .map(|c| (c.op, c.what))
            .collect();
        assert_eq!(
            got,
            [
                (Op::Remove, Changed::File(pkg("b", "1"))),
                (Op::Add, Changed::File(pkg("b", "2"))),
                (Op::Change, Changed::File(c2)),
                (Op::Add, Changed::File(pkg("d", "1"))),
                (Op::Change, Changed::Aur(foo2)),
            ]
        );
    }

    #[test]
    fn hostile_lines_are_refused_naming_the_line() {
        let good = serde_json::to_string(&ChangeLine::new(Op::Add, &pkg("a", "1"))).unwrap();
        let v: serde_json::Value = serde_json::from_str(&good).unwrap();
        let with = |field: &str, value: serde_json::Value| {
            let mut v = v.clone();
            v[field] = value;
            v.to_string()
        };
        let cases = [
            ("not json".to_string(), "line 2"),
            (with("op", "move".into()), "line 2"),
            (with("filename", "../../etc/passwd".into()), "filename"),
            (with("repo", "a/b".into()), "repo"),
            (with("name", "..".into()), "name"),
            (with("kind", "bomb".into()), "kind"),
            (with("cid", "zzz".into()), "line 2"),
            (with("sha256", "00".into()), "sha256"),
            (with("sig_sha256", serde_json::Value::Null), "signature"),
            (with("desc_cid", serde_json::Value::Null), "desc"),
        ];
        for (line, want) in cases {
            let text = format!("{good}\n{line}\n");
            let err = parse(text.as_bytes()).unwrap_err().to_string();
            assert!(err.contains("line 2"), "{line}: {err}");
            assert!(err.contains(want), "{line}: {err}");
        }
    }
}
