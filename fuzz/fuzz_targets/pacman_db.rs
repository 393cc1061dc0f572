//! A whole `<repo>.db` archive as an upstream serves it (any compression, any tar): the
//! publisher's reader, bounded to 8 MiB unpacked here so that a bomb costs milliseconds.
//! What it accepts, the follower's database builder must lay out so that the publisher's
//! reader finds the same packages again.
#![no_main]

use cidmirror_ingest::pacman::{RepoName, parse_db_limited};
use cidmirror_listing::pacman::build_db;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let repo: RepoName = "core".parse().expect("a valid repository name");
    let Ok(db) = parse_db_limited(&repo, "core.db", data, 8 << 20) else {
        return;
    };
    for p in &db.packages {
        p.desc
            .entry()
            .unwrap_or_else(|e| panic!("entry {}: the follower refuses it: {e}", p.entry));
    }
    let entries: Vec<_> = db.packages.iter().map(|p| &p.desc).collect();
    let rebuilt = build_db(&entries, "core.db.tar").expect("build a database");
    let again = parse_db_limited(&repo, "core.db", &rebuilt, 64 << 20)
        .expect("the follower's rebuilt database reads back");
    assert_eq!(again.packages, db.packages);
});
