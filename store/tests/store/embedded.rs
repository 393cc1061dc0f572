//! The embedded store: conformance, and what only it promises (files kept once, named by
//! SHA-256; leftovers of crashed writers cleaned; corruption found by `verify`).

use std::fs;

use cidmirror_store::hash::verify_block;
use cidmirror_store::importer::{self, VecSink};
use cidmirror_store::{EmbeddedStore, FileSource, Profile, PutOptions, Store};
use sha2::Digest;

use crate::support::{drain, pseudo_random, temp_store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_passes_the_conformance_suite() {
    let (_dir, store) = temp_store();
    crate::conformance::run(&store).await;
    let rep = store.verify(true, false).unwrap();
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
}

fn put(store: &EmbeddedStore, data: &[u8], profile: Profile) -> cidmirror_store::ImportedFile {
    store
        .put_reader(
            data,
            &PutOptions {
                params: profile.params(),
                ..Default::default()
            },
        )
        .unwrap()
}

fn kept_files(store: &EmbeddedStore) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for sub in fs::read_dir(store.path().join("files")).unwrap() {
        for f in fs::read_dir(sub.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out
}

#[test]
fn a_file_is_kept_once_named_by_its_sha256_under_every_profile() {
    let (_dir, store) = temp_store();
    let data = pseudo_random("kept-once", 3 << 20);
    let v1 = put(&store, &data, Profile::UnixfsV1_2025);
    let v0 = put(&store, &data, Profile::UnixfsV0_2015);
    assert_ne!(v1.cid, v0.cid);
    let files = kept_files(&store);
    assert_eq!(files.len(), 1, "{files:?}");
    let sha = hex::encode(sha2::Sha256::digest(&data));
    assert_eq!(files[0].file_name().unwrap().to_str().unwrap(), sha);
    assert_eq!(
        files[0]
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap(),
        &sha[..2]
    );
    assert_eq!(fs::read(&files[0]).unwrap(), data);
    // Both DAGs are complete, and their leaves (raw for v1, dag-pb for v0) come from the file:
    // the blocks on disk are no bigger than the file plus the small internal nodes.
    for profile in [Profile::UnixfsV1_2025, Profile::UnixfsV0_2015] {
        let mut sink = VecSink::default();
        importer::import(&data[..], &profile.params(), &mut sink).unwrap();
        for (cid, block) in &sink.0 {
            let got = store.get_block_sync(cid).unwrap().expect("held");
            assert_eq!(&got, block, "{cid}");
            verify_block(cid, &got).unwrap();
        }
    }
    let (path, size) = store.whole_file(&v1.cid).unwrap().expect("whole-file root");
    assert_eq!(path, files[0]);
    assert_eq!(size, data.len() as u64);
    let index = fs::metadata(store.path().join("index.sqlite"))
        .unwrap()
        .len();
    assert!(
        index < (data.len() as u64) / 20,
        "index holds no copy of the data: {index} bytes"
    );
}

#[test]
fn stale_temp_files_are_removed_and_live_ones_kept() {
    let (_dir, store) = temp_store();
    let tmp = store.path().join("tmp");
    let stale = tmp.join("put-1-dead.part");
    fs::write(&stale, b"half a package").unwrap();
    let live = tmp.join("put-2-live.part");
    fs::write(&live, b"being written").unwrap();
    let holder = fs::File::options().write(true).open(&live).unwrap();
    holder.lock().unwrap();
    let rep = store.verify(false, false).unwrap();
    assert!(!stale.exists(), "a dead writer's temp file goes");
    assert!(live.exists(), "a locked temp file stays");
    assert!(
        rep.cleaned.iter().any(|c| c.contains("put-1-dead")),
        "{:?}",
        rep.cleaned
    );
    drop(holder);
    drop(store);
    let _again = EmbeddedStore::open(&_dir.path().join("store")).unwrap();
    assert!(
        !live.exists(),
        "once its writer is gone, reopening cleans it"
    );
}

#[test]
fn an_unindexed_file_left_by_a_crash_is_removed() {
    let (_dir, store) = temp_store();
    let orphan_dir = store.path().join("files/ab");
    fs::create_dir_all(&orphan_dir).unwrap();
    let orphan = orphan_dir.join(format!("ab{}", "0".repeat(62)));
    fs::write(&orphan, b"renamed but never committed").unwrap();
    let rep = store.verify(false, false).unwrap();
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    assert!(!orphan.exists());
    assert_eq!(rep.cleaned.len(), 1, "{:?}", rep.cleaned);
}

#[test]
fn verify_finds_damaged_files() {
    let (_dir, store) = temp_store();
    let data = pseudo_random("damaged", 100_000);
    let f = put(&store, &data, Profile::UnixfsV1_2025);
    assert!(store.verify(true, false).unwrap().problems.is_empty());
    let path = store.whole_file(&f.cid).unwrap().unwrap().0;
    let mode = fs::metadata(&path).unwrap().permissions();
    assert!(mode.readonly(), "kept files are read-only");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = fs::read(&path).unwrap();
    bytes[500] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let quick = store.verify(false, false).unwrap();
    assert!(
        quick
            .problems
            .iter()
            .any(|p| p.contains(&f.sha256.to_hex())),
        "sizes agree, but the file changed since its check: re-hashed {:?}",
        quick.problems
    );
    let full = store.verify(true, false).unwrap();
    assert!(
        full.problems.iter().any(|p| p.contains(&f.sha256.to_hex())),
        "{:?}",
        full.problems
    );
    fs::write(&path, &bytes[..1000]).unwrap();
    let quick = store.verify(false, false).unwrap();
    assert!(
        quick.problems.iter().any(|p| p.contains("size")),
        "{:?}",
        quick.problems
    );
    assert!(
        quick.problems.iter().any(|p| p.contains("past the end")),
        "{:?}",
        quick.problems
    );
}

#[tokio::test]
async fn gc_removes_files_no_pin_reaches() {
    let (_dir, store) = temp_store();
    let data = pseudo_random("gc-file", 2 << 20);
    let f = store
        .put_file(
            FileSource::Reader(Box::new(std::io::Cursor::new(data.clone()))),
            PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(kept_files(&store).len(), 1);
    let rep = store
        .gc(cidmirror_store::GcOptions {
            grace: std::time::Duration::ZERO,
        })
        .await
        .unwrap();
    assert_eq!(rep.files_removed, 1, "{rep:?}");
    assert!(rep.bytes_freed >= data.len() as u64, "{rep:?}");
    assert!(kept_files(&store).is_empty());
    assert!(store.read(&f.cid, None).await.is_err());
    // Adding it again brings it back.
    let g = store
        .put_file(
            FileSource::Reader(Box::new(std::io::Cursor::new(data.clone()))),
            PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(g.cid, f.cid);
    let (_, s) = store.read(&g.cid, None).await.unwrap();
    assert_eq!(drain(s).await, data);
}

/// A garbage collection running all the time never takes anything a finished, pinned put
/// holds (the mark and the sweep see every committed pin, or none of a pending one).
#[test]
fn gc_running_alongside_pinned_puts_never_takes_their_blocks() {
    let (_dir, store) = temp_store();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                store
                    .gc_sync(cidmirror_store::GcOptions {
                        grace: std::time::Duration::ZERO,
                    })
                    .unwrap();
                runs += 1;
            }
            runs
        })
    };
    let reason: cidmirror_store::PinReason = "race".parse().unwrap();
    let params = cidmirror_store::ImportParams {
        chunk_size: 4096,
        max_links: 4,
        ..Profile::UnixfsV1_2025.params()
    };
    for i in 0..40 {
        let data = pseudo_random(&format!("race-{i}"), 50_000);
        store
            .put_reader(
                &data[..],
                &PutOptions {
                    params,
                    pin: Some(reason.clone()),
                    ..Default::default()
                },
            )
            .unwrap();
        let mut sink = VecSink::default();
        importer::import(&data[..], &params, &mut sink).unwrap();
        for (cid, _) in &sink.0 {
            assert!(
                store.has_sync(cid).unwrap(),
                "put {i}: block {cid} of a pinned file gone"
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = collector.join().unwrap();
    assert!(runs > 0);
}

/// `add` of a tree holds what it has stored with a session pin until the root is pinned:
/// a gc in the middle of the walk takes nothing, and no session pin is left afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gc_in_the_middle_of_an_add_takes_nothing() {
    use cidmirror_store::add::{AddOptions, add_path};
    let (dir, store) = temp_store();
    let tree = dir.path().join("tree");
    for sub in ["a", "b", "c"] {
        fs::create_dir_all(tree.join(sub)).unwrap();
        for i in 0..3 {
            fs::write(
                tree.join(sub).join(format!("f{i}")),
                pseudo_random(&format!("tree-{sub}-{i}"), 70_000),
            )
            .unwrap();
        }
    }
    let gc_store = store.clone();
    let mut gcs = 0;
    let mut on_added = |_: &cidmirror_store::add::Added| {
        // A gc with no grace at all, between every two entries.
        tokio::task::block_in_place(|| {
            gc_store
                .gc_sync(cidmirror_store::GcOptions {
                    grace: std::time::Duration::ZERO,
                })
                .unwrap();
        });
        gcs += 1;
    };
    let opts = AddOptions {
        pin: Some("add".parse().unwrap()),
        ..Default::default()
    };
    let root = add_path(Some(&store), &tree, &opts, &mut on_added)
        .await
        .unwrap();
    assert_eq!(gcs, 13, "9 files, 3 directories and the root");
    assert_eq!(
        cidmirror_store::unixfs::missing_blocks(&store, &root.cid)
            .await
            .unwrap(),
        0
    );
    let pins = store.pins().await.unwrap();
    assert_eq!(pins.len(), 1, "{pins:?}");
    assert_eq!(pins[0].cid, root.cid);
    store
        .gc(cidmirror_store::GcOptions {
            grace: std::time::Duration::ZERO,
        })
        .await
        .unwrap();
    assert_eq!(
        cidmirror_store::unixfs::missing_blocks(&store, &root.cid)
            .await
            .unwrap(),
        0,
        "the real pin keeps it all"
    );
}

/// A small dag-pb node inlined in an identity CID (Kubo's `--inline`) is never stored, but
/// what it links to is kept by a pin on it.
#[tokio::test]
async fn gc_follows_links_inside_identity_cids() {
    use cidmirror_store::hash::{DAG_PB, IDENTITY};
    let (_dir, store) = temp_store();
    let data = pseudo_random("behind-identity", 5000);
    let f = store.put_reader(&data[..], &PutOptions::default()).unwrap();
    let mut dir = cidmirror_store::dir::Directory::new();
    dir.insert(
        "x",
        cidmirror_store::dir::DirEntry {
            cid: f.cid,
            tsize: f.tsize,
        },
    )
    .unwrap();
    let mut sink = VecSink::default();
    dir.build(&Profile::UnixfsV1_2025.params(), &mut sink)
        .unwrap();
    let node = &sink.0.last().unwrap().1;
    let mh = cidmirror_store::hash::Multihash::wrap(IDENTITY, node).unwrap();
    let inline = cid::Cid::new_v1(DAG_PB, mh);
    store
        .pin(&inline, &"inline".parse().unwrap(), None)
        .await
        .unwrap();
    store
        .gc(cidmirror_store::GcOptions {
            grace: std::time::Duration::ZERO,
        })
        .await
        .unwrap();
    let x = cidmirror_store::unixfs::resolve(&store, &inline, "x")
        .await
        .unwrap();
    let (_, s) = store.read(&x, None).await.unwrap();
    assert_eq!(drain(s).await, data);
}

/// A directory node holding `name -> file`, its blocks put into `store`.
fn dir_over(store: &EmbeddedStore, name: &str, f: &cidmirror_store::ImportedFile) -> cid::Cid {
    let mut dir = cidmirror_store::dir::Directory::new();
    let e = cidmirror_store::dir::DirEntry {
        cid: f.cid,
        tsize: f.tsize,
    };
    dir.insert(name, e).unwrap();
    let mut sink = VecSink::default();
    let root = dir
        .build(&Profile::UnixfsV1_2025.params(), &mut sink)
        .unwrap()
        .cid;
    put_sunk(store, sink);
    root
}

/// Puts into `store` the blocks a builder wrote to `sink`.
fn put_sunk(store: &EmbeddedStore, sink: VecSink) {
    let blocks: Vec<cidmirror_store::Block> = sink
        .0
        .into_iter()
        .map(|(cid, data)| cidmirror_store::Block {
            cid,
            data: data.into(),
        })
        .collect();
    store.put_blocks_sync(&blocks).unwrap();
}

fn gc_now(store: &EmbeddedStore) -> cidmirror_store::GcReport {
    store
        .gc_sync(cidmirror_store::GcOptions {
            grace: std::time::Duration::ZERO,
        })
        .unwrap()
}

/// A follower pins a snapshot's directory nodes without the package files they link to:
/// a `direct:` pin keeps the pinned block only; any other pin keeps everything below it.
#[test]
fn a_direct_pin_keeps_its_block_but_not_what_it_links_to() {
    use cidmirror_store::PinReason;
    let (_dir, store) = temp_store();
    let data = pseudo_random("direct-pin", 5000);
    let f = store.put_reader(&data[..], &PutOptions::default()).unwrap();
    let dir = dir_over(&store, "pkg", &f);
    assert_ne!(dir, f.cid);

    let direct = PinReason::direct("listing:1");
    assert_eq!(direct.as_str(), "direct:listing:1");
    assert!(direct.is_direct());
    assert!(!"snapshot:1".parse::<PinReason>().unwrap().is_direct());
    store.pin_sync(&dir, &direct, None).unwrap();
    let rep = gc_now(&store);
    assert!(store.has_sync(&dir).unwrap(), "the pinned directory stays");
    assert!(
        !store.has_sync(&f.cid).unwrap(),
        "the file it links to goes"
    );
    assert!(kept_files(&store).is_empty(), "{rep:?}");
    assert_eq!(rep.files_removed, 1, "{rep:?}");

    // The same directory pinned recursively keeps the file, also beside the direct pin.
    let f = store.put_reader(&data[..], &PutOptions::default()).unwrap();
    let recursive: PinReason = "snapshot:1".parse().unwrap();
    store.pin_sync(&dir, &recursive, None).unwrap();
    gc_now(&store);
    assert!(store.has_sync(&dir).unwrap());
    assert!(
        store.has_sync(&f.cid).unwrap(),
        "a recursive pin keeps the file"
    );
    assert_eq!(kept_files(&store).len(), 1);
    assert!(store.unpin_sync(&dir, &direct).unwrap());
    gc_now(&store);
    assert!(
        store.has_sync(&f.cid).unwrap(),
        "the recursive pin alone keeps it too"
    );

    // Without the recursive pin, the file goes again.
    assert!(store.unpin_sync(&dir, &recursive).unwrap());
    store.pin_sync(&dir, &direct, None).unwrap();
    gc_now(&store);
    assert!(store.has_sync(&dir).unwrap());
    assert!(!store.has_sync(&f.cid).unwrap());

    // A direct pin on a multi-block file's root keeps that node, not the file's bytes.
    let big = pseudo_random("direct-pin-big", 3 << 20);
    let g = store.put_reader(&big[..], &PutOptions::default()).unwrap();
    let root = store.get_block_sync(&g.cid).unwrap().unwrap();
    let leaves = cidmirror_store::unixfs::links_of(&g.cid, &root).unwrap();
    assert!(leaves.len() > 1, "a multi-block file");
    store.pin_sync(&g.cid, &direct, None).unwrap();
    gc_now(&store);
    assert_eq!(store.get_block_sync(&g.cid).unwrap(), Some(root));
    for l in &leaves {
        assert!(!store.has_sync(l).unwrap(), "leaf {l} goes");
    }
    assert!(kept_files(&store).is_empty());
    assert!(store.whole_file(&g.cid).unwrap().is_none());
    let rep = store.verify(true, false).unwrap();
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
}

/// What a follower keeps of a listing: a `dirs:` pin keeps every directory and shard under
/// its root, through nested and sharded directories, and none of the files they name.
#[tokio::test]
async fn a_dirs_pin_keeps_every_directory_below_but_no_file() {
    use cidmirror_store::PinReason;
    use cidmirror_store::dir::{DirEntry, Tree};
    let (_dir, store) = temp_store();
    let small = store
        .put_reader(
            &pseudo_random("dirs-pin-small", 900)[..],
            &PutOptions::default(),
        )
        .unwrap();
    let big = store
        .put_reader(
            &pseudo_random("dirs-pin-big", 3 << 20)[..],
            &PutOptions::default(),
        )
        .unwrap();
    let entry = |f: &cidmirror_store::ImportedFile| DirEntry {
        cid: f.cid,
        tsize: f.tsize,
    };
    // `a/` is sharded (thousands of names), `a/b/` basic, both naming the files.
    let mut t = Tree::new();
    for i in 0..8000 {
        t.insert(&format!("a/pkg-{i:05}"), entry(&small)).unwrap();
    }
    t.insert("a/b/big", entry(&big)).unwrap();
    t.insert("a/b/small", entry(&small)).unwrap();
    let mut sink = VecSink::default();
    let params = Profile::UnixfsV1_2025.params();
    let root = t.build(&params, &mut sink).unwrap().cid;
    let dirs: Vec<cid::Cid> = sink.0.iter().map(|b| b.0).collect();
    assert!(dirs.len() > 3, "a sharded directory: {} blocks", dirs.len());
    put_sunk(&store, sink);

    let r = PinReason::dirs("follow:1");
    assert_eq!(r.as_str(), "dirs:follow:1");
    assert!(r.is_dirs() && !r.is_direct());
    assert!(!PinReason::direct("follow:1").is_dirs());
    store.pin_sync(&root, &r, None).unwrap();
    let rep = gc_now(&store);
    for d in &dirs {
        assert!(store.has_sync(d).unwrap(), "directory block {d} stays");
    }
    for f in [&small, &big] {
        assert!(!store.has_sync(&f.cid).unwrap(), "file {} goes", f.cid);
    }
    assert!(kept_files(&store).is_empty(), "{rep:?}");
    assert_eq!(rep.files_removed, 2, "{rep:?}");
    assert_eq!(
        store.pins_with(&r).unwrap(),
        1,
        "one row for the whole tree"
    );
    assert!(store.pin_reasons().unwrap().contains(&r));

    // Beside a recursive pin of a subdirectory, that subdirectory's files stay.
    let small = store
        .put_reader(
            &pseudo_random("dirs-pin-small", 900)[..],
            &PutOptions::default(),
        )
        .unwrap();
    let b = cidmirror_store::unixfs::resolve(&store, &root, "a/b")
        .await
        .unwrap();
    let deep: PinReason = "follow-index:1".parse().unwrap();
    store.pin_sync(&b, &deep, None).unwrap();
    gc_now(&store);
    assert!(store.has_sync(&small.cid).unwrap());
    for d in &dirs {
        assert!(store.has_sync(d).unwrap());
    }
    // Unpinned, everything goes.
    assert_eq!(store.unpin_all_sync(&r).unwrap(), 1);
    assert_eq!(store.unpin_all_sync(&deep).unwrap(), 1);
    gc_now(&store);
    assert!(!store.has_sync(&root).unwrap());
    let rep = store.verify(true, false).unwrap();
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
}

#[test]
fn direct_pin_reasons_are_always_valid() {
    use cidmirror_store::PinReason;
    let r = PinReason::direct("a\nb");
    assert_eq!(r.as_str(), "direct:a_b");
    assert_eq!(r.as_str().parse::<PinReason>().unwrap(), r);
    let long = PinReason::direct(&"\u{e9}".repeat(100));
    assert!(long.as_str().len() <= 128 && long.is_direct());
    assert_eq!(long.as_str().parse::<PinReason>().unwrap(), long);
    assert!(PinReason::direct("").is_direct());
}

#[test]
fn an_empty_temp_file_of_a_dead_writer_goes_at_once() {
    let (_dir, store) = temp_store();
    let tmp = store.path().join("tmp");
    // PID 2^22 + 1 is above Linux's pid_max: no such process.
    let dead = tmp.join("put-4194305-00000000deadbeef.part");
    fs::write(&dead, b"").unwrap();
    let mine = tmp.join(format!("put-{}-00000000000000aa.part", std::process::id()));
    fs::write(&mine, b"").unwrap();
    store.verify(false, false).unwrap();
    assert!(!dead.exists(), "dead writer's empty file removed");
    assert!(mine.exists(), "a live writer's young empty file is kept");
}

/// Files imported by many threads at once are committed in shared batches (one `syncfs`
/// and one transaction each); every one of them ends up kept whole, indexed and pinned,
/// with the same bytes, and survives a reopen; a file imported twice at once is kept once.
#[test]
fn concurrent_imports_are_committed_together_and_each_is_kept() {
    let (dir, store) = temp_store();
    let reason: cidmirror_store::PinReason = "batch".parse().unwrap();
    let datas: Vec<Vec<u8>> = (0..64)
        .map(|i| pseudo_random(&format!("batch-{}", i % 48), 100 + i % 48 * 700))
        .collect();
    let imported: Vec<cidmirror_store::ImportedFile> = std::thread::scope(|s| {
        let handles: Vec<_> = datas
            .iter()
            .map(|d| {
                let (store, reason) = (&store, &reason);
                s.spawn(move || {
                    let opts = PutOptions {
                        pin: Some(reason.clone()),
                        ..PutOptions::default()
                    };
                    store.put_reader(&d[..], &opts).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    drop(store);
    let store = EmbeddedStore::open(&dir.path().join("store")).unwrap();
    for (d, f) in datas.iter().zip(&imported) {
        let sha: [u8; 32] = sha2::Sha256::digest(d).into();
        assert_eq!(f.sha256.0, sha);
        let (path, size) = store.whole_file(&f.cid).unwrap().expect("kept whole");
        assert_eq!(size, d.len() as u64);
        assert_eq!(&fs::read(&path).unwrap(), d, "{}", path.display());
    }
    assert_eq!(kept_files(&store).len(), 48, "each distinct file kept once");
    let pins = store.pins_sync().unwrap();
    assert_eq!(pins.len(), 48, "one pin per distinct root: {pins:?}");
    assert!(store.verify(true, false).unwrap().problems.is_empty());
}

/// Large files (written with direct I/O where the filesystem allows: aligned chunks go
/// past the page cache, the first chunk and the tail through it) are kept byte for byte and
/// give the CIDs of an in-memory import, on a disk filesystem and on tmpfs (which refuses
/// direct I/O, so everything goes through the page cache).
#[test]
fn large_files_are_kept_whole_with_and_without_direct_io() {
    let mut dirs = vec![tempfile::tempdir().unwrap()];
    if std::path::Path::new("/dev/shm").is_dir() {
        dirs.push(tempfile::tempdir_in("/dev/shm").unwrap());
    }
    for dir in &dirs {
        let store = EmbeddedStore::open(&dir.path().join("store")).unwrap();
        for (i, len) in [
            4 << 20,
            (4 << 20) + 1,
            (6 << 20) + 3 * 4096 + 17,
            (5 << 20) - 4096,
        ]
        .into_iter()
        .enumerate()
        {
            for profile in [Profile::UnixfsV1_2025, Profile::UnixfsV0_2015] {
                let data = pseudo_random(&format!("direct-{i}"), len);
                let expect = cidmirror_store::Expected {
                    size: len as u64,
                    sha256: cidmirror_store::Sha256(sha2::Sha256::digest(&data).into()),
                };
                let opts = PutOptions {
                    params: profile.params(),
                    expect: Some(expect),
                    ..Default::default()
                };
                let f = store.put_reader(&data[..], &opts).unwrap();
                let mut sink = VecSink::default();
                let want = importer::import(&data[..], &profile.params(), &mut sink).unwrap();
                assert_eq!(
                    f,
                    want,
                    "{len} bytes, {profile:?}, in {}",
                    dir.path().display()
                );
                let (path, size) = store.whole_file(&f.cid).unwrap().expect("kept whole");
                assert_eq!(size, len as u64);
                assert!(
                    fs::read(&path).unwrap() == data,
                    "{} differs",
                    path.display()
                );
                for (cid, block) in &sink.0 {
                    let held = store
                        .get_block_sync(cid)
                        .unwrap()
                        .expect("every block held");
                    assert!(&held == block, "block {cid} differs");
                }
            }
        }
        let rep = store.verify(true, false).unwrap();
        assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    }
}
