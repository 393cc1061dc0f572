//! The delta CAR a follower fetches (`/api/v1/delta/<root>`) and applies to its view of
//! the previous snapshot: read as the follower's store imports it (every block checked
//! against its CID), then once more with every block kept unchecked, so that the
//! follower's reading of the listing (root directory, manifest, changes, rebuild) meets
//! hostile blocks too.
#![no_main]

use std::sync::OnceLock;

use cidmirror_fuzz::{MemStore, block_on};
use cidmirror_listing::Listing;
use cidmirror_resolver::follow::view::View;
use cidmirror_store::car::CarReader;
use cidmirror_store::{Block, Store};
use libfuzzer_sys::fuzz_target;

fn previous() -> &'static View {
    static VIEW: OnceLock<View> = OnceLock::new();
    VIEW.get_or_init(cidmirror_fuzz::fixtures::previous_view)
}

fuzz_target!(|data: &[u8]| {
    let prev = previous();
    block_on(async {
        // As the follower does it: the store imports the CAR (all or nothing), then the
        // CAR's roots must name the announced root (here: its first root).
        if let Ok(reader) = CarReader::new(data, "delta") {
            let roots = reader.roots().to_vec();
            if let Ok(blocks) = reader.collect::<Result<Vec<_>, _>>() {
                let store = MemStore::new();
                let blocks = blocks
                    .into_iter()
                    .map(|(cid, data)| Block {
                        cid,
                        data: data.into(),
                    })
                    .collect();
                store.put_blocks(blocks).await.expect("verified blocks");
                if let Some(&root) = roots.first()
                    && let Ok(view) = cidmirror_resolver::fuzzing::delta(&store, prev, root).await
                {
                    assert_eq!(view.root, root);
                    // Built from scratch, its listing gives the root its delta rebuilt.
                    let l = &view.listing;
                    let fresh = Listing::new(
                        l.manifest.clone(),
                        l.manifest_entry,
                        l.changes_entry,
                        l.items().cloned().collect(),
                    )
                    .and_then(|f| f.with_aur(l.aur().cloned().collect()))
                    .expect("an accepted listing");
                    let (_, built, _) = View::new(root, fresh).expect("an accepted view builds");
                    assert_eq!(built.cid, root, "an accepted view rebuilds to its root");
                }
            }
        }
        let store = MemStore::new();
        let roots = store.insert_car_unchecked(data).unwrap_or_default();
        if let Some(&root) = roots.first() {
            let _ = cidmirror_resolver::fuzzing::delta(&store, prev, root).await;
        }
    });
});
