//! The store conformance suite: every `Store` implementation must pass [`run`].
//!
//! The suite expects an empty store. It uses only the `Store` trait, so the Kubo and
//! Cluster stores run exactly the same checks.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use cidmirror_store::hash::{HashAlg, raw_cid};
use cidmirror_store::importer::{self, VecSink};
use cidmirror_store::unixfs;
use cidmirror_store::{
    Block, Error, FileSource, GcOptions, ImportParams, PinReason, Profile, PutOptions, Store,
};
use sha2::Digest;

use crate::support::{data_path, drain, pseudo_random};

/// Runs every check against `store`, which must start empty.
pub async fn run<S: Store + Clone>(store: &S) {
    put_file_matches_an_independent_import(store).await;
    reads_and_ranges(store).await;
    put_blocks_verifies_all_or_nothing(store).await;
    expected_size_and_hash_are_enforced(store).await;
    unknown_and_identity_blocks(store).await;
    pins_by_reason(store).await;
    gc_keeps_what_pins_reach(store).await;
    import_car_is_all_or_nothing(store).await;
    directories_are_not_files(store).await;
    concurrent_puts(store).await;
}

fn opts(params: ImportParams) -> PutOptions {
    PutOptions {
        params,
        ..Default::default()
    }
}

fn reader(data: Vec<u8>) -> FileSource {
    FileSource::Reader(Box::new(std::io::Cursor::new(data)))
}

fn small_params() -> ImportParams {
    // Small chunks and fanout so a few KiB make a three-level tree.
    ImportParams {
        chunk_size: 1000,
        max_links: 3,
        ..Profile::UnixfsV1_2025.params()
    }
}

async fn put_file_matches_an_independent_import<S: Store>(store: &S) {
    for params in [
        Profile::UnixfsV1_2025.params(),
        Profile::UnixfsV0_2015.params(),
        small_params(),
    ] {
        let data = pseudo_random("conformance-put", 2_500_000);
        let mut blocks = VecSink::default();
        let expected = importer::import(&data[..], &params, &mut blocks).unwrap();
        let got = store
            .put_file(reader(data.clone()), opts(params))
            .await
            .unwrap();
        assert_eq!(got, expected, "{params:?}");
        assert_eq!(got.size, data.len() as u64);
        assert_eq!(
            got.sha256.to_hex(),
            hex::encode(sha2::Sha256::digest(&data))
        );
        for (cid, block) in &blocks.0 {
            assert!(store.has(cid).await.unwrap(), "{cid} held");
            let b = store.get_block(cid).await.unwrap().expect("block held");
            assert_eq!(&b[..], &block[..], "block {cid}");
        }
    }
}

async fn reads_and_ranges<S: Store>(store: &S) {
    let params = small_params();
    let data = pseudo_random("conformance-read", 10_007);
    let f = store
        .put_file(reader(data.clone()), opts(params))
        .await
        .unwrap();
    let (size, s) = store.read(&f.cid, None).await.unwrap();
    assert_eq!(size, data.len() as u64);
    assert_eq!(drain(s).await, data);
    let n = data.len() as u64;
    for (a, b) in [
        (0, 1),
        (999, 1001),
        (1000, 1000),
        (2999, 3001),
        (5000, n),
        (n - 1, n),
        (3, n + 50),
    ] {
        let (_, s) = store.read(&f.cid, Some(a..b)).await.unwrap();
        let end = b.min(n) as usize;
        assert_eq!(drain(s).await, &data[a as usize..end], "range {a}..{b}");
    }
    assert!(matches!(
        store.read(&f.cid, Some(n..n + 1)).await,
        Err(Error::RangeNotSatisfiable { .. })
    ));
    // The same bytes pushed in uneven buffers give the same file.
    let pieces: Vec<std::io::Result<Bytes>> = data
        .chunks(777)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let pushed = store
        .put_file(
            FileSource::Chunks(Box::pin(futures::stream::iter(pieces))),
            opts(params),
        )
        .await
        .unwrap();
    assert_eq!(pushed, f);
    // A stream that fails mid-way is an error, not a shorter file.
    let failing: Vec<std::io::Result<Bytes>> = vec![
        Ok(Bytes::from_static(b"first part")),
        Err(std::io::Error::other("connection reset by upstream")),
    ];
    let err = store
        .put_file(
            FileSource::Chunks(Box::pin(futures::stream::iter(failing))),
            opts(params),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("connection reset"), "{err}");
    // The same bytes from a path give the same file.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    std::fs::write(&p, &data).unwrap();
    let g = store
        .put_file(FileSource::Path(p), opts(params))
        .await
        .unwrap();
    assert_eq!(g, f);
}

async fn put_blocks_verifies_all_or_nothing<S: Store>(store: &S) {
    let good = Bytes::from_static(b"a good block for the conformance suite");
    let good_cid = raw_cid(HashAlg::Sha2_256, &good);
    let bad_cid = raw_cid(HashAlg::Sha2_256, b"what the CID says");
    let err = store
        .put_blocks(vec![
            Block {
                cid: good_cid,
                data: good.clone(),
            },
            Block {
                cid: bad_cid,
                data: Bytes::from_static(b"something else"),
            },
        ])
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&bad_cid.to_string()), "{err}");
    assert!(
        !store.has(&good_cid).await.unwrap(),
        "nothing of a bad batch is kept"
    );
    let one = || {
        vec![Block {
            cid: good_cid,
            data: good.clone(),
        }]
    };
    let w = store.put_blocks(one()).await.unwrap();
    assert_eq!((w.new_blocks, w.new_bytes), (1, good.len() as u64));
    let again = store.put_blocks(one()).await.unwrap();
    assert_eq!(again.new_blocks, 0, "a held block is not new");
    assert_eq!(store.get_block(&good_cid).await.unwrap(), Some(good));
}

async fn expected_size_and_hash_are_enforced<S: Store + Clone>(store: &S) {
    use cidmirror_store::Expected;
    let params = small_params();
    let data = pseudo_random("conformance-expected", 20_000);
    let sha = cidmirror_store::Sha256(sha2::Sha256::digest(&data).into());
    let mut blocks = VecSink::default();
    let cid = importer::import(&data[..], &params, &mut blocks)
        .unwrap()
        .cid;
    let with = |expect: Expected| PutOptions {
        params,
        expect: Some(expect),
        ..Default::default()
    };
    // A flipped byte: same size, other hash.
    let mut flipped = data.clone();
    flipped[12_345] ^= 1;
    let err = store
        .put_file(
            reader(flipped),
            with(Expected {
                size: 20_000,
                sha256: sha,
            }),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Mismatch { .. }), "{err}");
    assert!(err.to_string().contains(&sha.to_hex()), "{err}");
    // Short.
    let err = store
        .put_file(
            reader(data[..19_999].to_vec()),
            with(Expected {
                size: 20_000,
                sha256: sha,
            }),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("19999 bytes"), "{err}");
    // Longer than expected: reading stops at once, it does not drain the source.
    let pulled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = pulled.clone();
    let endless = futures::stream::repeat_with(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Bytes::from(vec![7u8; 1000]))
    });
    let err = store
        .put_file(
            FileSource::Chunks(Box::pin(endless)),
            with(Expected {
                size: 20_000,
                sha256: sha,
            }),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooLong {
                expected_size: 20_000
            }
        ),
        "{err}"
    );
    assert!(pulled.load(std::sync::atomic::Ordering::Relaxed) < 100);
    for (c, _) in &blocks.0 {
        assert!(
            !store.has(c).await.unwrap(),
            "nothing of a failed import is kept: {c}"
        );
    }
    // The right bytes pass.
    let ok = store
        .put_file(
            reader(data),
            with(Expected {
                size: 20_000,
                sha256: sha,
            }),
        )
        .await
        .unwrap();
    assert_eq!(ok.cid, cid);
}

async fn unknown_and_identity_blocks<S: Store>(store: &S) {
    let unknown = raw_cid(HashAlg::Sha2_256, b"never stored anywhere");
    assert!(!store.has(&unknown).await.unwrap());
    assert_eq!(store.get_block(&unknown).await.unwrap(), None);
    let empty_identity = cidmirror_store::hash::parse_cid("bafkqaaa").unwrap();
    let held = raw_cid(HashAlg::Sha2_256, b"a good block for the conformance suite");
    assert_eq!(
        store
            .has_many(&[unknown, held, empty_identity, unknown])
            .await
            .unwrap(),
        vec![false, true, true, false]
    );
    assert_eq!(
        store.get_block(&empty_identity).await.unwrap(),
        Some(Bytes::new())
    );
}

async fn pins_by_reason<S: Store>(store: &S) {
    let f = store
        .put_file(
            reader(b"pinned twice".to_vec()),
            opts(Profile::default().params()),
        )
        .await
        .unwrap();
    let a: PinReason = "conformance-a".parse().unwrap();
    let b: PinReason = "conformance-b".parse().unwrap();
    store.pin(&f.cid, &a, None).await.unwrap();
    let later = SystemTime::now() + Duration::from_secs(86_400);
    store.pin(&f.cid, &b, Some(later)).await.unwrap();
    let pins = store.pins().await.unwrap();
    let mine: Vec<_> = pins.iter().filter(|p| p.cid == f.cid).collect();
    assert_eq!(mine.len(), 2, "{pins:?}");
    let pb = mine.iter().find(|p| p.reason == b).unwrap();
    let exp = pb.expires_at.expect("expiry kept");
    assert!(exp.duration_since(later).unwrap_or_else(|e| e.duration()) < Duration::from_secs(2));
    assert!(store.unpin(&f.cid, &a).await.unwrap());
    assert!(
        !store.unpin(&f.cid, &a).await.unwrap(),
        "second unpin finds nothing"
    );
    assert!(store.unpin(&f.cid, &b).await.unwrap());
    assert!("".parse::<PinReason>().is_err());
    assert!("tab\there".parse::<PinReason>().is_err());
}

async fn gc_keeps_what_pins_reach<S: Store + Clone>(store: &S) {
    let params = small_params();
    let keep_data = pseudo_random("conformance-keep", 7_000);
    let drop_data = pseudo_random("conformance-drop", 7_000);
    let expire_data = pseudo_random("conformance-expire", 3_000);
    let reason: PinReason = "conformance-gc".parse().unwrap();
    let keep = store
        .put_file(
            reader(keep_data.clone()),
            PutOptions {
                params,
                pin: Some(reason.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let gone = store
        .put_file(reader(drop_data.clone()), opts(params))
        .await
        .unwrap();
    let expiring = store
        .put_file(reader(expire_data), opts(params))
        .await
        .unwrap();
    store
        .pin(
            &expiring.cid,
            &reason,
            Some(SystemTime::now() - Duration::from_secs(1)),
        )
        .await
        .unwrap();
    let mut gone_blocks = VecSink::default();
    importer::import(&drop_data[..], &params, &mut gone_blocks).unwrap();

    // Within the grace period nothing unpinned goes.
    let graceful = store
        .gc(GcOptions {
            grace: Duration::from_secs(3600),
        })
        .await
        .unwrap();
    assert!(
        store.has(&gone.cid).await.unwrap(),
        "young content survives a graceful gc"
    );
    assert!(
        store.has(&expiring.cid).await.unwrap(),
        "also when its pin expired"
    );
    assert!(
        graceful.pins_expired >= 1,
        "expired pins go at once: {graceful:?}"
    );

    let rep = store
        .gc(GcOptions {
            grace: Duration::ZERO,
        })
        .await
        .unwrap();
    assert!(rep.blocks_removed > 0, "{rep:?}");
    for (cid, _) in &gone_blocks.0 {
        assert!(!store.has(cid).await.unwrap(), "unpinned {cid} collected");
    }
    assert!(
        !store.has(&expiring.cid).await.unwrap(),
        "expired pin no longer keeps"
    );
    let (_, s) = store.read(&keep.cid, None).await.unwrap();
    assert_eq!(drain(s).await, keep_data, "pinned file intact after gc");
    assert_eq!(unixfs::missing_blocks(store, &keep.cid).await.unwrap(), 0);
    assert!(store.unpin(&keep.cid, &reason).await.unwrap());
}

async fn import_car_is_all_or_nothing<S: Store + Clone>(store: &S) {
    let car = std::fs::read(data_path("car/dir-with-files.car")).unwrap();
    let mut bad = car.clone();
    let n = bad.len();
    bad[n - 10] ^= 0x55;
    let err = store
        .import_car(Box::new(std::io::Cursor::new(bad)), "bad.car".into(), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    let root = cidmirror_store::hash::parse_cid(
        "bafybeihchr7vmgjaasntayyatmp5sv6xza57iy2h4xj7g46bpjij6yhrmy",
    )
    .unwrap();
    assert!(
        !store.has(&root).await.unwrap(),
        "a bad CAR imports nothing"
    );
    let cut = store
        .import_car(
            Box::new(std::io::Cursor::new(car[..car.len() / 2].to_vec())),
            "cut.car".into(),
            None,
        )
        .await
        .unwrap_err();
    assert!(cut.to_string().contains("truncated"), "{cut}");
    assert!(
        !store.has(&root).await.unwrap(),
        "a truncated CAR imports nothing"
    );

    let reason: PinReason = "conformance-car".parse().unwrap();
    let imp = store
        .import_car(
            Box::new(std::io::Cursor::new(car)),
            "ok.car".into(),
            Some(reason.clone()),
        )
        .await
        .unwrap();
    assert_eq!(imp.roots, vec![root]);
    assert!(
        store
            .pins()
            .await
            .unwrap()
            .iter()
            .any(|p| p.cid == root && p.reason == reason)
    );
    let hello = unixfs::resolve(store, &root, "hello.txt").await.unwrap();
    let (_, s) = store.read(&hello, None).await.unwrap();
    assert_eq!(drain(s).await, b"hello world\n");
    assert!(store.unpin(&root, &reason).await.unwrap());
}

async fn directories_are_not_files<S: Store + Clone>(store: &S) {
    let root = cidmirror_store::hash::parse_cid(
        "bafybeihchr7vmgjaasntayyatmp5sv6xza57iy2h4xj7g46bpjij6yhrmy",
    )
    .unwrap();
    if !store.has(&root).await.unwrap() {
        let car = std::fs::read(data_path("car/dir-with-files.car")).unwrap();
        store
            .import_car(Box::new(std::io::Cursor::new(car)), "ok.car".into(), None)
            .await
            .unwrap();
    }
    assert!(matches!(
        store.read(&root, None).await,
        Err(Error::IsADirectory(_))
    ));
    assert!(matches!(
        unixfs::resolve(store, &root, "nope.txt").await,
        Err(Error::PathNotFound { .. })
    ));
    assert!(matches!(
        unixfs::resolve(store, &root, "hello.txt/deeper").await,
        Err(Error::NotADirectory(_))
    ));
}

async fn concurrent_puts<S: Store + Clone>(store: &S) {
    let params = Profile::UnixfsV0_2015.params();
    let shared = pseudo_random("conformance-shared", 600_000);
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let s = store.clone();
        let data = if i % 2 == 0 {
            shared.clone()
        } else {
            pseudo_random(&format!("conformance-own-{i}"), 300_000 + usize::from(i))
        };
        tasks.push(tokio::spawn(async move {
            let f = s
                .put_file(reader(data.clone()), opts(params))
                .await
                .unwrap();
            let (_, st) = s.read(&f.cid, None).await.unwrap();
            assert_eq!(drain(st).await, data);
            f.cid
        }));
    }
    let mut cids = Vec::new();
    for t in tasks {
        cids.push(t.await.unwrap());
    }
    assert!(
        cids.iter().step_by(2).all(|c| *c == cids[0]),
        "same bytes, same CID"
    );
}
