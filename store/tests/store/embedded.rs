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
    let rep = store.verify(true).unwrap();
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
    let rep = store.verify(false).unwrap();
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
    let rep = store.verify(false).unwrap();
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    assert!(!orphan.exists());
    assert_eq!(rep.cleaned.len(), 1, "{:?}", rep.cleaned);
}

#[test]
fn verify_finds_damaged_files() {
    let (_dir, store) = temp_store();
    let data = pseudo_random("damaged", 100_000);
    let f = put(&store, &data, Profile::UnixfsV1_2025);
    assert!(store.verify(true).unwrap().problems.is_empty());
    let path = store.whole_file(&f.cid).unwrap().unwrap().0;
    let mode = fs::metadata(&path).unwrap().permissions();
    assert!(mode.readonly(), "kept files are read-only");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = fs::read(&path).unwrap();
    bytes[500] ^= 1;
    fs::write(&path, &bytes).unwrap();
    assert!(
        store.verify(false).unwrap().problems.is_empty(),
        "sizes still agree"
    );
    let full = store.verify(true).unwrap();
    assert!(
        full.problems.iter().any(|p| p.contains(&f.sha256.to_hex())),
        "{:?}",
        full.problems
    );
    fs::write(&path, &bytes[..1000]).unwrap();
    let quick = store.verify(false).unwrap();
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
