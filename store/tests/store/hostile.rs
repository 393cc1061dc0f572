//! Blocks made by someone else: DAGs whose sizes lie, HAMTs with broken names or repeated
//! shards, dag-pb blocks that do not decode. Each must give an error, never a panic, a hang
//! or bytes that were not asked for.

use bytes::Bytes;
use cid::Cid;
use cidmirror_store::hash::{DAG_PB, HashAlg, raw_cid};
use cidmirror_store::pb::{self, DataType, Unixfs};
use cidmirror_store::{Block, Error, Store, unixfs};

use crate::support::temp_store;

fn v1_pb(block: &[u8]) -> Cid {
    Cid::new_v1(DAG_PB, HashAlg::Sha2_256.digest(block))
}

fn file_node(children: &[(Cid, u64)], filesize: u64) -> Vec<u8> {
    let mut b = Vec::new();
    for (c, _) in children {
        pb::put_link(&mut b, c, b"", 0);
    }
    let data = Unixfs {
        typ: Some(DataType::File),
        filesize: Some(filesize),
        blocksizes: children.iter().map(|(_, s)| *s).collect(),
        ..Default::default()
    }
    .encode();
    pb::put_data(&mut b, &data);
    b
}

async fn put<S: Store>(store: &S, blocks: &[(Cid, Vec<u8>)]) {
    store
        .put_blocks(
            blocks
                .iter()
                .map(|(c, d)| Block {
                    cid: *c,
                    data: Bytes::from(d.clone()),
                })
                .collect(),
        )
        .await
        .unwrap();
}

async fn read_all<S: Store>(store: &S, cid: &Cid) -> Result<Vec<u8>, Error> {
    use futures::StreamExt;
    let (_, mut s) = store.read(cid, None).await?;
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c?);
    }
    Ok(out)
}

#[tokio::test]
async fn a_file_whose_sizes_lie_is_an_error_not_extra_bytes() {
    let (_d, store) = temp_store();
    let a = vec![b'a'; 10];
    let b = vec![b'b'; 10];
    let (ca, cb) = (
        raw_cid(HashAlg::Sha2_256, &a),
        raw_cid(HashAlg::Sha2_256, &b),
    );
    // Parent says 5 + 5 = 10 bytes, the leaves hold 10 each.
    let root = file_node(&[(ca, 5), (cb, 5)], 10);
    let rc = v1_pb(&root);
    put(&store, &[(ca, a), (cb, b), (rc, root)]).await;
    let err = read_all(&store, &rc).await.unwrap_err();
    assert!(matches!(err, Error::Malformed { .. }), "{err}");
    assert!(err.to_string().contains("parent says 5"), "{err}");

    // filesize that disagrees with the blocksizes.
    let bad = file_node(&[(ca, 10), (cb, 10)], 15);
    let bc = v1_pb(&bad);
    put(&store, &[(bc, bad)]).await;
    assert!(matches!(
        unixfs::stat(&store, &bc).await,
        Err(Error::Malformed { .. })
    ));
}

#[tokio::test]
async fn sizes_that_overflow_are_an_error_not_a_panic() {
    let (_d, store) = temp_store();
    let a = b"x".to_vec();
    let ca = raw_cid(HashAlg::Sha2_256, &a);
    let mut root = Vec::new();
    pb::put_link(&mut root, &ca, b"", 1);
    pb::put_link(&mut root, &ca, b"", 1);
    let data = Unixfs {
        typ: Some(DataType::File),
        blocksizes: vec![u64::MAX, 2],
        ..Default::default()
    }
    .encode();
    pb::put_data(&mut root, &data);
    let rc = v1_pb(&root);
    put(&store, &[(ca, a), (rc, root)]).await;
    let err = read_all(&store, &rc).await.unwrap_err();
    assert!(err.to_string().contains("overflow"), "{err}");
}

fn shard(links: &[(&[u8], Cid)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (name, c) in links {
        pb::put_link(&mut b, c, name, 1);
    }
    let data = Unixfs {
        typ: Some(DataType::HamtShard),
        data: Some(&[0xff]),
        hash_type: Some(0x22),
        fanout: Some(256),
        ..Default::default()
    }
    .encode();
    pb::put_data(&mut b, &data);
    b
}

#[tokio::test]
async fn hamt_names_split_inside_a_character_are_an_error() {
    let (_d, store) = temp_store();
    let f = raw_cid(HashAlg::Sha2_256, b"f");
    // "A" + "é": the two-character bucket prefix would end inside the é.
    let s = shard(&[("Aé".as_bytes(), f)]);
    let sc = v1_pb(&s);
    put(&store, &[(f, b"f".to_vec()), (sc, s)]).await;
    let err = unixfs::list(&store, &sc).await.unwrap_err();
    assert!(matches!(err, Error::Malformed { .. }), "{err}");
}

#[tokio::test]
async fn a_hamt_that_links_one_shard_many_times_is_refused_quickly() {
    let (_d, store) = temp_store();
    let f = raw_cid(HashAlg::Sha2_256, b"f");
    let mut blocks = vec![(f, b"f".to_vec())];
    // 8 levels, each linking the level below from all 256 buckets: 256^8 paths if walked.
    let mut below = {
        let leaf = shard(&[(b"00x", f)]);
        let c = v1_pb(&leaf);
        blocks.push((c, leaf));
        c
    };
    for _ in 0..8 {
        let names: Vec<String> = (0..256).map(|i| format!("{i:02X}")).collect();
        let links: Vec<(&[u8], Cid)> = names.iter().map(|n| (n.as_bytes(), below)).collect();
        let s = shard(&links);
        below = v1_pb(&s);
        blocks.push((below, s));
    }
    put(&store, &blocks).await;
    let t = std::time::Instant::now();
    let err = unixfs::list(&store, &below).await.unwrap_err();
    assert!(err.to_string().contains("linked twice"), "{err}");
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
}

#[tokio::test]
async fn undecodable_dag_pb_is_refused_at_the_door() {
    let (_d, store) = temp_store();
    let junk = b"\xff\xff\xff not protobuf".to_vec();
    let c = v1_pb(&junk);
    let err = store
        .put_blocks(vec![Block {
            cid: c,
            data: Bytes::from(junk.clone()),
        }])
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&c.to_string()), "{err}");
    assert!(!store.has(&c).await.unwrap());
    let mut car = Vec::new();
    {
        let mut w = cidmirror_store::car::CarWriter::new(&mut car, &[c]).unwrap();
        w.write_block(&c, &junk).unwrap();
        w.finish().unwrap();
    }
    let err = store
        .import_car(Box::new(std::io::Cursor::new(car)), "junk.car".into(), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("junk.car"), "{err}");
    assert!(!store.has(&c).await.unwrap());
}
