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

/// Writes the lines from `previous` to `items` to `out`: removals, changes and additions,
/// sorted by repository, architecture and file name (a removal before an addition of the
/// same key). Returns the number of lines.
pub fn write(previous: &[Item], items: &[Item], out: &mut dyn Write) -> Result<u64> {
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
    /// To which item.
    pub item: Item,
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
        let l: ChangeLine =
            serde_json::from_slice(line).map_err(|e| Error::invalid(&what, e.to_string()))?;
        out.push(Change {
            line: i + 1,
            op: l.op,
            item: l.item(&what)?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::testing::pkg;

    #[test]
    fn lines_name_removals_changes_and_additions() {
        let old = vec![pkg("a", "1"), pkg("b", "1"), pkg("c", "1")];
        let mut c2 = pkg("c", "1");
        c2.sig = None; // same file, signature gone
        let new = vec![pkg("a", "1"), pkg("b", "2"), c2.clone(), pkg("d", "1")];
        let mut bytes = Vec::new();
        let n = write(&old, &new, &mut bytes).unwrap();
        assert_eq!(n, 4);
        let got: Vec<(Op, Item)> = parse(&bytes)
            .unwrap()
            .into_iter()
            .map(|c| (c.op, c.item))
            .collect();
        assert_eq!(
            got,
            [
                (Op::Remove, pkg("b", "1")),
                (Op::Add, pkg("b", "2")),
                (Op::Change, c2),
                (Op::Add, pkg("d", "1")),
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
