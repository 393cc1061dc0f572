//! Integrity on read: a kept file whose bytes changed is never served as valid, is
//! quarantined, counted, and repaired by an import of the good bytes (file or CAR) or found
//! by the scrub.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use cidmirror_schema::UnixTime;
use cidmirror_store::importer::{self, VecSink};
use cidmirror_store::{EmbeddedStore, Profile, PutOptions, Scrubbed, Store};

use crate::support::{drain, pseudo_random, temp_store};

fn put(store: &EmbeddedStore, data: &[u8]) -> cidmirror_store::ImportedFile {
    store
        .put_reader(
            data,
            &PutOptions {
                params: Profile::UnixfsV1_2025.params(),
                ..Default::default()
            },
        )
        .unwrap()
}

/// Flips one bit of the kept file at `offset`, as bit rot or a careless operator would.
fn flip(path: &std::path::Path, offset: usize) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = fs::read(path).unwrap();
    bytes[offset] ^= 1;
    fs::write(path, &bytes).unwrap();
}

fn blocks_of(data: &[u8]) -> Vec<(cid::Cid, Vec<u8>)> {
    let mut sink = VecSink::default();
    importer::import(data, &Profile::UnixfsV1_2025.params(), &mut sink).unwrap();
    sink.0
}

fn quarantined(store: &EmbeddedStore) -> Vec<std::path::PathBuf> {
    match fs::read_dir(store.path().join("quarantine")) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn a_fresh_import_is_trusted_without_hashing_again() {
    let (_dir, store) = temp_store();
    let data = pseudo_random("trusted", 3 << 20);
    let f = put(&store, &data);
    let t = store.trusted_file(&f.cid).unwrap().expect("trusted");
    assert_eq!(t.size, data.len() as u64);
    assert!(t.unchanged());
    let stats = store.integrity(UnixTime::now().plus_secs(-60)).unwrap();
    assert_eq!(stats.unchecked_files, 0, "checked on import: {stats:?}");
    assert_eq!(stats.found, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_is_never_served_and_the_file_is_quarantined() {
    let (_dir, store) = temp_store();
    let data = pseudo_random("flipped", 3 << 20);
    let f = put(&store, &data);
    let blocks = blocks_of(&data);
    let path = store.whole_file(&f.cid).unwrap().unwrap().0;
    flip(&path, (1 << 20) + 17);

    // The whole file is not trusted: it is hashed, found bad and moved aside.
    assert!(store.trusted_file(&f.cid).unwrap().is_none());
    assert!(!path.exists(), "moved out of files/");
    let q = quarantined(&store);
    assert_eq!(q.len(), 1, "{q:?}");
    assert!(
        q[0].file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&f.sha256.to_hex())
    );
    // None of its leaves is held any more; the root node still is (it is good).
    for (cid, _) in &blocks[..blocks.len() - 1] {
        assert_eq!(store.get_block(cid).await.unwrap(), None, "{cid}");
    }
    // Reading the file fails rather than giving other bytes.
    let read = match store.read(&f.cid, None).await {
        Ok((_, s)) => Some(futures::StreamExt::collect::<Vec<_>>(s).await),
        Err(_) => None,
    };
    if let Some(pieces) = read {
        assert!(pieces.iter().any(|p| p.is_err()), "a read must fail");
    }
    let stats = store.integrity(UnixTime::now()).unwrap();
    assert_eq!((stats.found, stats.repaired, stats.quarantined), (1, 0, 1));
    assert_eq!(store.to_repair().unwrap(), vec![(f.sha256, f.size)]);

    // Adding the good bytes again repairs it.
    let again = put(&store, &data);
    assert_eq!(again.cid, f.cid);
    let t = store.trusted_file(&f.cid).unwrap().expect("repaired");
    assert_eq!(t.size, data.len() as u64);
    let (_, s) = store.read(&f.cid, None).await.unwrap();
    assert_eq!(drain(s).await, data);
    let stats = store.integrity(UnixTime::now()).unwrap();
    assert_eq!((stats.found, stats.repaired, stats.quarantined), (1, 1, 0));
    assert!(store.to_repair().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_block_is_refused_on_the_block_route() {
    let (_dir, store) = temp_store();
    let data = pseudo_random("block-route", 3 << 20);
    let f = put(&store, &data);
    let blocks = blocks_of(&data);
    let path = store.whole_file(&f.cid).unwrap().unwrap().0;
    flip(&path, 5);
    // The first leaf, asked for directly (as ?format=raw, a CAR or a follower would).
    let (leaf, good) = &blocks[0];
    assert_eq!(store.get_block(leaf).await.unwrap(), None);
    assert!(!path.exists(), "the whole file is quarantined");
    // A good leaf of the same file is no longer served either (its file is gone).
    assert_eq!(store.get_block(&blocks[1].0).await.unwrap(), None);
    assert_eq!(store.integrity(UnixTime::now()).unwrap().found, 1);
    // A verified copy of the block, put one by one, is held again.
    store
        .put_blocks(vec![cidmirror_store::Block {
            cid: *leaf,
            data: good.clone().into(),
        }])
        .await
        .unwrap();
    assert_eq!(store.get_block(leaf).await.unwrap().unwrap(), good[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_a_good_car_replaces_a_bad_kept_file() {
    let (_dir, store) = temp_store();
    let data = pseudo_random("car-repair", 3 << 20);
    let f = put(&store, &data);
    let path = store.whole_file(&f.cid).unwrap().unwrap().0;
    flip(&path, (2 << 20) + 3);
    // Nothing has read it yet: the import compares what it holds with what arrives.
    let blocks = blocks_of(&data);
    let mut car = cidmirror_store::car::encode_header(&[f.cid]);
    for (cid, b) in blocks.iter().rev() {
        car.extend(cidmirror_store::car::encode_section(cid, b));
    }
    store.import_car_sync(&car[..], "good.car", None).unwrap();
    assert_eq!(quarantined(&store).len(), 1);
    let (_, s) = store.read(&f.cid, None).await.unwrap();
    assert_eq!(
        drain(s).await,
        data,
        "the good bytes, from the CAR's blocks"
    );
    let stats = store.integrity(UnixTime::now()).unwrap();
    assert_eq!(stats.found, 1);
}

#[test]
fn the_scrub_finds_what_changed_and_what_was_never_checked() {
    let (_dir, store) = temp_store();
    let a = pseudo_random("scrub-a", 1 << 20);
    let b = pseudo_random("scrub-b", 2 << 20);
    let fa = put(&store, &a);
    let fb = put(&store, &b);
    // Nothing is due yet: both were checked on import.
    let before = UnixTime::now().plus_secs(-3600);
    assert_eq!(
        store.scrub_next(before, &mut |_| true).unwrap(),
        Scrubbed::Idle
    );
    let pb = store.whole_file(&fb.cid).unwrap().unwrap().0;
    flip(&pb, 100);
    // Everything checked before now is due (times are whole seconds): both files, b bad.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let due = UnixTime::now();
    let mut seen = Vec::new();
    let mut fed = 0u64;
    loop {
        match store.scrub_next(due, &mut |n| {
            fed += n;
            true
        }) {
            Ok(Scrubbed::Idle) => break,
            Ok(s) => seen.push(s),
            Err(e) => panic!("{e}"),
        }
        assert!(seen.len() <= 2, "{seen:?}");
    }
    assert!(seen.contains(&Scrubbed::Good {
        sha256: fa.sha256,
        size: fa.size
    }));
    assert!(
        seen.iter()
            .any(|s| matches!(s, Scrubbed::Corrupt { sha256, .. } if *sha256 == fb.sha256)),
        "{seen:?}"
    );
    assert_eq!(fed, fa.size + fb.size, "the throttle saw every byte hashed");
    assert!(store.trusted_file(&fb.cid).unwrap().is_none());
    // A throttle that says stop stops the check, recording nothing.
    let c = put(&store, &pseudo_random("scrub-c", 3 << 20));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(
        store.scrub_next(UnixTime::now(), &mut |_| false).unwrap(),
        Scrubbed::Stopped
    );
    assert!(store.trusted_file(&c.cid).unwrap().is_some());
    assert_eq!(store.integrity(UnixTime::now()).unwrap().found, 1);
}

#[test]
fn verify_quick_rehashes_changed_files_and_repair_quarantines() {
    let (_dir, store) = temp_store();
    let data = pseudo_random("verify", 1 << 20);
    let f = put(&store, &data);
    let path = store.whole_file(&f.cid).unwrap().unwrap().0;
    flip(&path, 9);
    let quick = store.verify(false, false).unwrap();
    assert_eq!(quick.hashed, 1, "changed since its check: re-hashed");
    assert!(
        quick.problems.iter().any(|p| p.contains("hashes to")),
        "{:?}",
        quick.problems
    );
    assert!(path.exists(), "reporting moves nothing");
    let rep = store.verify(false, true).unwrap();
    assert_eq!(rep.quarantined, vec![(f.sha256, f.size)]);
    assert!(!path.exists());
    let after = store.verify(true, false).unwrap();
    assert!(after.problems.is_empty(), "{:?}", after.problems);
}

#[test]
fn a_file_changed_while_open_is_seen() {
    let (_dir, store) = temp_store();
    let f = put(&store, &pseudo_random("while-open", 100_000));
    let t = store.trusted_file(&f.cid).unwrap().unwrap();
    assert!(t.unchanged());
    flip(&t.path, 50);
    assert!(!t.unchanged(), "a write through the same inode is seen");
}
