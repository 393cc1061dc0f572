//! What a follower applies to its view of the previous snapshot: the new `manifest.json`
//! and `changes.jsonl` (the two files of a delta that say what changed), then the rebuild
//! of every directory of the listing from the result.
//!
//! Input: the manifest, a NUL byte, the changes. A manifest that does not parse is
//! replaced by the previous one, so that the changes get fuzzed either way.
#![no_main]

use std::sync::OnceLock;

use cidmirror_listing::Manifest;
use cidmirror_resolver::follow::view::View;
use cidmirror_store::dir::DirEntry;
use libfuzzer_sys::fuzz_target;

fn previous() -> &'static View {
    static VIEW: OnceLock<View> = OnceLock::new();
    VIEW.get_or_init(cidmirror_fuzz::fixtures::previous_view)
}

fuzz_target!(|data: &[u8]| {
    let prev = previous();
    let (manifest, changes) = cidmirror_fuzz::split_at_byte(data, 0);
    let root = prev.root;
    let manifest =
        Manifest::parse(manifest, "manifest.json").unwrap_or_else(|_| prev.manifest().clone());
    let _ = manifest.profile();
    let entry = DirEntry {
        cid: root,
        tsize: data.len() as u64,
    };
    let Ok((view, built, blocks)) = prev.next(root, manifest, entry, entry, changes) else {
        return;
    };
    assert!(
        blocks.iter().any(|(c, _)| *c == built.cid),
        "the root is built"
    );
    // Applied twice: removals of what the first pass added, changes of changed entries.
    if let Ok((again, _, _)) = view.next(root, view.manifest().clone(), entry, entry, changes) {
        for it in again.listing.items().take(8) {
            let _ = again.lookup(&it.repo, &it.arch, &it.filename);
        }
    }
});
