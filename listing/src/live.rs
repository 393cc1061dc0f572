//! The large directories of a listing, kept between snapshots: every `<repo>/os/<arch>`,
//! `index/<repo>/<arch>` and `by-sha256/<xx>`, as [`LiveDir`]s. A follower applies a
//! snapshot's changes to a copy of the previous snapshot's (which shares every shard that
//! did not change) and a build re-encodes only the shards the changes touched; the
//! publisher fills them from scratch. Both then build the rest of the tree (the root, the
//! AUR directories) around them in [`crate::build`].

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use cidmirror_store::ImportParams;
use cidmirror_store::dir::{DirEntry, LiveDir};
use cidmirror_store::importer::BlockSink;

use crate::aur::AurEntry;
use crate::{Item, Result, layout};

/// The repository and hash directories of one listing.
#[derive(Debug, Clone)]
pub(crate) struct LiveDirs {
    params: ImportParams,
    /// `<repo>/os/<arch>` and `index/<repo>/<arch>`, by (repo, arch).
    repos: BTreeMap<(String, String), (LiveDir, LiveDir)>,
    /// `by-sha256/<xx>`, by that path; one reference per package or AUR source naming
    /// the file.
    by_sha256: BTreeMap<String, LiveDir>,
}

/// `path` split into its directory and its last name.
fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// A duplicate name reported with the directory it is in.
fn in_dir(dir: &str) -> impl Fn(cidmirror_store::Error) -> cidmirror_store::Error + '_ {
    move |e| match e {
        cidmirror_store::Error::DuplicateName(n) => {
            cidmirror_store::Error::DuplicateName(format!("{dir}/{n}"))
        }
        other => other,
    }
}

impl LiveDirs {
    /// No directory yet, built under `params`.
    pub(crate) fn new(params: &ImportParams) -> Result<LiveDirs> {
        params.validate()?;
        Ok(LiveDirs {
            params: *params,
            repos: BTreeMap::new(),
            by_sha256: BTreeMap::new(),
        })
    }

    /// Links `it`: its names and signatures in its `os` directory, its desc under its
    /// package name in `index/`, its file under `by-sha256/`.
    pub(crate) fn add(&mut self, it: &Item) -> Result<()> {
        let (os, index) = match self.repos.entry((it.repo.clone(), it.arch.clone())) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                e.insert((LiveDir::new(&self.params)?, LiveDir::new(&self.params)?))
            }
        };
        let os_path = layout::os_dir(&it.repo, &it.arch);
        for n in it.names() {
            os.insert(n, it.file.dir_entry())
                .map_err(in_dir(&os_path))?;
            if let Some(sig) = &it.sig {
                os.insert(&format!("{n}.sig"), sig.dir_entry())
                    .map_err(in_dir(&os_path))?;
            }
        }
        if let Some((name, desc)) = &it.package {
            index
                .insert(name, *desc)
                .map_err(in_dir(&layout::index_dir(&it.repo, &it.arch)))?;
            self.add_sha256(&it.file.sha256, it.file.dir_entry())?;
        }
        Ok(())
    }

    /// Unlinks `it` (which [`LiveDirs::add`] linked).
    pub(crate) fn remove(&mut self, it: &Item) {
        if let Some((os, index)) = self.repos.get_mut(&(it.repo.clone(), it.arch.clone())) {
            for n in it.names() {
                os.remove(n);
                if it.sig.is_some() {
                    os.remove(&format!("{n}.sig"));
                }
            }
            if let Some((name, _)) = &it.package {
                index.remove(name);
                self.remove_sha256(&it.file.sha256);
            }
        }
    }

    /// Links the sources of an AUR base under `by-sha256/`.
    pub(crate) fn add_aur(&mut self, e: &AurEntry) -> Result<()> {
        for s in &e.base.sources {
            self.add_sha256(&s.file.sha256, s.file.dir_entry())?;
        }
        Ok(())
    }

    /// Unlinks what [`LiveDirs::add_aur`] linked.
    pub(crate) fn remove_aur(&mut self, e: &AurEntry) {
        for s in &e.base.sources {
            self.remove_sha256(&s.file.sha256);
        }
    }

    fn add_sha256(&mut self, sha256: &cidmirror_schema::Sha256, link: DirEntry) -> Result<()> {
        let path = layout::by_sha256(sha256);
        let (dir, name) = split(&path);
        let d = match self.by_sha256.entry(dir.to_string()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(LiveDir::new(&self.params)?),
        };
        d.add_ref(name, link).map_err(in_dir(dir))?;
        Ok(())
    }

    fn remove_sha256(&mut self, sha256: &cidmirror_schema::Sha256) {
        let path = layout::by_sha256(sha256);
        let (dir, name) = split(&path);
        if let Some(d) = self.by_sha256.get_mut(dir) {
            d.remove(name);
        }
    }

    /// Every (repo, arch) that has a file.
    pub(crate) fn keys(&self) -> impl Iterator<Item = (&str, &str)> {
        self.repos
            .iter()
            .filter(|(_, (os, _))| !os.is_empty())
            .map(|((r, a), _)| (r.as_str(), a.as_str()))
    }

    /// Builds `<repo>/os/<arch>` and `index/<repo>/<arch>` (empty ones for a repository
    /// without files), writing the blocks encoded since their last build to `sink`.
    pub(crate) fn build_repo(
        &mut self,
        repo: &str,
        arch: &str,
        sink: &mut dyn BlockSink,
    ) -> Result<(DirEntry, DirEntry)> {
        match self.repos.get_mut(&(repo.to_string(), arch.to_string())) {
            Some((os, index)) => Ok((os.build(sink)?, index.build(sink)?)),
            None => {
                let mut empty = LiveDir::new(&self.params)?;
                let e = empty.build(sink)?;
                Ok((e, e))
            }
        }
    }

    /// Builds every non-empty `by-sha256/<xx>`: (its path, its entry).
    pub(crate) fn build_by_sha256(
        &mut self,
        sink: &mut dyn BlockSink,
    ) -> Result<Vec<(&str, DirEntry)>> {
        let mut out = Vec::with_capacity(self.by_sha256.len());
        for (path, d) in &mut self.by_sha256 {
            if !d.is_empty() {
                out.push((path.as_str(), d.build(sink)?));
            }
        }
        Ok(out)
    }
}
