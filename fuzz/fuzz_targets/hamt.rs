//! Reading directories and files from hostile blocks: whatever a store holds (a corrupt
//! copy, a source's answer that was not what it should be) goes through path lookup in
//! basic and HAMT-sharded directories, listing, stat and file reads without a panic, an
//! endless loop or an allocation the blocks do not pay for.
//!
//! Input: one byte `n`, a name of `n` bytes to look up, then a CAR whose blocks are kept
//! unchecked (the first root is the directory).
#![no_main]

use cidmirror_fuzz::{MemStore, block_on};
use cidmirror_store::unixfs;
use futures::StreamExt;
use libfuzzer_sys::fuzz_target;

/// Chunks read from a file at most: a hostile DAG can link one block many times and so
/// describe a file far larger than the blocks behind it.
const MAX_CHUNKS: usize = 256;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n).min(rest.len());
    let (name, car) = rest.split_at(n);
    let Ok(name) = std::str::from_utf8(name) else {
        return;
    };
    let store = MemStore::new();
    let Some(roots) = store.insert_car_unchecked(car) else {
        return;
    };
    let Some(&root) = roots.first() else { return };
    block_on(async {
        let mut trail = Vec::new();
        if let Ok(Some(link)) = unixfs::lookup_traced(&store, &root, name, &mut trail).await {
            assert_eq!(link.name, name);
            assert_eq!(
                trail.first(),
                Some(&root),
                "the trail starts at the directory"
            );
            read_some(&store, &link.cid).await;
        }
        if let Ok(entries) = unixfs::list(&store, &root).await {
            // (A hostile shard may list names under buckets their hash does not lead
            // to: a lookup need not find them, only survive them.)
            for e in entries.iter().take(16) {
                let _ = unixfs::lookup(&store, &root, &e.name).await;
            }
        }
        let _ = unixfs::resolve(&store, &root, &format!("{name}/{name}")).await;
        let _ = unixfs::stat(&store, &root).await;
        let _ = unixfs::missing_blocks(&store, &root).await;
        read_some(&store, &root).await;
    });
});

async fn read_some(store: &MemStore, cid: &cidmirror_store::Cid) {
    let Ok((size, stream)) = unixfs::read(store, cid, None).await else {
        return;
    };
    let mut got = 0u64;
    let mut stream = stream.take(MAX_CHUNKS);
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => got += c.len() as u64,
            Err(_) => return,
        }
    }
    assert!(got <= size, "read {got} bytes of a file of {size}");
}
