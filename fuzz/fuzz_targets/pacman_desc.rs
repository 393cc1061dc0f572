//! One `desc` entry of a pacman database, as an upstream serves it: the one strict reader
//! (`Desc::parse`), the publisher's validation (`Package::from_desc`) and the fields a
//! follower reads (`Desc::entry`), which must agree on every entry the publisher accepts
//! (the follower reads the entries the publisher published verbatim).
#![no_main]

use cidmirror_ingest::pacman::{Desc, Package, RepoName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(desc) = Desc::parse(data.to_vec()) else {
        return;
    };
    assert_eq!(desc.raw(), data, "a desc is kept verbatim");
    for (name, values) in desc.fields() {
        assert!(!values.is_empty(), "%{name}% kept without values");
        assert_eq!(desc.get(name), Some(values));
    }
    let repo: RepoName = "core".parse().expect("a valid repository name");
    let entry = format!(
        "{}-{}",
        desc.one("NAME").unwrap_or_default(),
        desc.one("VERSION").unwrap_or_default()
    );
    let Ok(pkg) = Package::from_desc(&repo, &entry, desc.clone()) else {
        return;
    };
    let f = pkg.filename.as_str();
    assert!(!f.is_empty() && !f.contains('/') && f != "." && f != "..");
    let follower = desc.entry().unwrap_or_else(|e| {
        panic!("the publisher accepts this entry, the follower refuses it: {e}")
    });
    assert_eq!(follower.name, pkg.name);
    assert_eq!(follower.version, pkg.version);
    assert_eq!(follower.filename, pkg.filename.as_str());
    assert_eq!(follower.csize, pkg.csize);
    assert_eq!(follower.sha256, pkg.sha256);
});
