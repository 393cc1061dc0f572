//! Adding local files and directory trees, as `ipfs add -r` does.
//!
//! Files are imported one by one (each through [`Store::put_file`], or hashed only);
//! directories are built bottom-up from their entries in name order; symlinks become UnixFS
//! symlink nodes (a symlink given as a top-level path is followed). Hidden entries (names
//! starting with `.`) inside directories are skipped unless asked for, as in Kubo.
//!
//! While a tree is being added, everything already stored is held by a session pin (with an
//! expiry, in case the process dies), so a garbage collection running meanwhile cannot take
//! the first files of a long import; at the end the root gets its real pin and the session
//! pins go.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cid::Cid;
use futures::future::BoxFuture;

use crate::api::{Block, FileSource, PinReason, Progress, PutOptions, Store};
use crate::dir::{DirEntry, Directory};
use crate::importer::{self, BlockSink, ImportedFile, Leaf, NullSink, VecSink};
use crate::params::ImportParams;
use crate::{Error, Result};

/// How to add.
#[derive(Clone, Default)]
pub struct AddOptions {
    /// Import parameters.
    pub params: ImportParams,
    /// Include entries whose name starts with `.`.
    pub hidden: bool,
    /// Pin each top-level root under this reason.
    pub pin: Option<PinReason>,
    /// Byte progress (deltas).
    pub progress: Option<Progress>,
}

/// What one added entry became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// Path as walked (the top-level path joined with the entry's names).
    pub path: PathBuf,
    /// Its CID.
    pub cid: Cid,
    /// File size (0 for directories and symlinks).
    pub size: u64,
    /// What kind of entry it was.
    pub kind: AddedKind,
}

/// Kinds of added entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddedKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
}

/// Adds `path` (a file or a directory tree) to `store`, or only computes its CIDs when
/// `store` is `None`. `on_added` sees every entry, children before their directory.
pub async fn add_path<S: Store + ?Sized>(
    store: Option<&S>,
    path: &Path,
    opts: &AddOptions,
    on_added: &mut (dyn FnMut(&Added) + Send),
) -> Result<Added> {
    opts.params.validate()?;
    let session = Session::new();
    let res = add_entry(store, path.to_path_buf(), true, opts, &session, on_added).await;
    if let Some(s) = store {
        if let (Ok((entry, added)), Some(reason)) = (&res, &opts.pin)
            && added.kind != AddedKind::File
        {
            s.pin(&entry.cid, reason, None).await?;
        }
        s.unpin_all(&session.reason).await?;
    }
    res.map(|(_, added)| added)
}

/// How long session pins outlive a process that died mid-import.
const SESSION_PIN_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// The temporary pin reason of one `add_path` call.
struct Session {
    reason: PinReason,
    expires_at: SystemTime,
}

impl Session {
    fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let name = format!("add-session:{}-{nanos}", std::process::id());
        Session {
            // The name is printable and short, so it always parses.
            reason: PinReason::from_str_unchecked(name),
            expires_at: SystemTime::now() + SESSION_PIN_LIFETIME,
        }
    }
}

fn add_entry<'a, S: Store + ?Sized>(
    store: Option<&'a S>,
    path: PathBuf,
    top: bool,
    opts: &'a AddOptions,
    session: &'a Session,
    on_added: &'a mut (dyn FnMut(&Added) + Send),
) -> BoxFuture<'a, Result<(DirEntry, Added)>> {
    Box::pin(async move {
        let meta = if top {
            fs::metadata(&path)
        } else {
            fs::symlink_metadata(&path)
        }
        .map_err(|e| Error::io(&path, e))?;
        let ft = meta.file_type();
        let (entry, kind, size) = if ft.is_dir() {
            let mut names = Vec::new();
            for e in fs::read_dir(&path).map_err(|e| Error::io(&path, e))? {
                let e = e.map_err(|e| Error::io(&path, e))?;
                let name = e
                    .file_name()
                    .into_string()
                    .map_err(|n| Error::InvalidName {
                        name: format!("{}/{}", path.display(), n.to_string_lossy()),
                        reason: "not valid UTF-8",
                    })?;
                if !opts.hidden && name.starts_with('.') {
                    continue;
                }
                names.push(name);
            }
            names.sort();
            let mut dir = Directory::new();
            for name in names {
                let (child, _) = add_entry(
                    store,
                    path.join(&name),
                    false,
                    opts,
                    session,
                    &mut *on_added,
                )
                .await?;
                dir.insert(&name, child)?;
            }
            let mut sink = VecSink::default();
            let root = dir.build(&opts.params, &mut sink)?;
            put_nodes(store, sink, &root.cid, session).await?;
            (root, AddedKind::Directory, 0)
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(|e| Error::io(&path, e))?;
            let target = target
                .into_os_string()
                .into_string()
                .map_err(|t| Error::InvalidName {
                    name: t.to_string_lossy().into_owned(),
                    reason: "symlink target is not valid UTF-8",
                })?;
            let (cid, block) = importer::symlink_node(&opts.params, target.as_bytes())?;
            let tsize = block.len() as u64;
            put_nodes(store, VecSink(vec![(cid, block)]), &cid, session).await?;
            (DirEntry { cid, tsize }, AddedKind::Symlink, 0)
        } else if ft.is_file() {
            let f = add_file(store, &path, top, opts, session).await?;
            (
                DirEntry {
                    cid: f.cid,
                    tsize: f.tsize,
                },
                AddedKind::File,
                f.size,
            )
        } else {
            return Err(Error::io(
                &path,
                std::io::Error::other("not a regular file, directory or symlink"),
            ));
        };
        let added = Added {
            path,
            cid: entry.cid,
            size,
            kind,
        };
        on_added(&added);
        Ok((entry, added))
    })
}

async fn add_file<S: Store + ?Sized>(
    store: Option<&S>,
    path: &Path,
    top: bool,
    opts: &AddOptions,
    session: &Session,
) -> Result<ImportedFile> {
    match store {
        Some(s) => {
            // A file on its own gets its real pin at once; a file in a tree is held by the
            // session until the tree's root is pinned.
            let (pin, pin_expires_at) = if top {
                (opts.pin.clone(), None)
            } else {
                (Some(session.reason.clone()), Some(session.expires_at))
            };
            let put = PutOptions {
                params: opts.params,
                pin,
                pin_expires_at,
                progress: opts.progress.clone(),
                expect: None,
            };
            s.put_file(FileSource::Path(path.to_path_buf()), put).await
        }
        None => {
            let (path, params, progress) = (path.to_path_buf(), opts.params, opts.progress.clone());
            tokio::task::spawn_blocking(move || hash_file(&path, &params, progress))
                .await
                .map_err(|e| Error::Task(e.to_string()))?
        }
    }
}

/// Computes a local file's CID, size and SHA-256 without storing anything.
pub fn hash_file(
    path: &Path,
    params: &ImportParams,
    progress: Option<Progress>,
) -> Result<ImportedFile> {
    let f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut sink = ProgressSink { progress };
    importer::import(f, params, &mut sink).map_err(|e| match e {
        Error::Stream { source, .. } => Error::io(path, source),
        other => other,
    })
}

struct ProgressSink {
    progress: Option<Progress>,
}

impl BlockSink for ProgressSink {
    fn leaf(&mut self, leaf: &Leaf<'_>) -> Result<()> {
        if let Some(p) = &self.progress {
            p(leaf.data.len() as u64);
        }
        Ok(())
    }
    fn node(&mut self, cid: &Cid, block: &[u8]) -> Result<()> {
        NullSink.node(cid, block)
    }
}

async fn put_nodes<S: Store + ?Sized>(
    store: Option<&S>,
    sink: VecSink,
    root: &Cid,
    session: &Session,
) -> Result<()> {
    if let Some(s) = store {
        let blocks = sink
            .0
            .into_iter()
            .map(|(cid, data)| Block {
                cid,
                data: Bytes::from(data),
            })
            .collect();
        s.put_blocks(blocks).await?;
        s.pin(root, &session.reason, Some(session.expires_at))
            .await?;
    }
    Ok(())
}
