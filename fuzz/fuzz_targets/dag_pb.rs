//! One dag-pb block and its UnixFS `Data`, as a peer or a store hands it out: the decoders
//! must refuse garbage without panicking, and what they accept must encode back to the
//! same values.
#![no_main]

use cidmirror_store::Cid;
use cidmirror_store::hash::{DAG_PB, HashAlg};
use cidmirror_store::pb;
use cidmirror_store::unixfs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cid = Cid::new_v1(DAG_PB, HashAlg::Sha2_256.digest(data));
    let _ = unixfs::links_of(&cid, data);
    let Ok(node) = pb::decode_node(data) else {
        assert!(unixfs::decode(&cid, data).is_err());
        return;
    };
    // Encoded again as Go writes it (links, then Data), it decodes to the same node.
    let mut enc = Vec::new();
    for l in &node.links {
        let before = enc.len();
        pb::put_link(&mut enc, &l.cid, &l.name, l.tsize);
        assert_eq!(
            enc.len() - before,
            pb::link_len(l.cid.encoded_len(), l.name.len(), l.tsize),
            "the HAMT size estimate of a link is its encoded size"
        );
    }
    if let Some(d) = node.data {
        pb::put_data(&mut enc, d);
    }
    let again = pb::decode_node(&enc).expect("a re-encoded node decodes");
    assert_eq!(again, node);

    let Some(d) = node.data else { return };
    let Ok(u) = pb::decode_unixfs(d) else { return };
    let enc = u.encode();
    let back = pb::decode_unixfs(&enc).expect("re-encoded UnixFS data decodes");
    assert_eq!(back, u);
    if let Ok((_, u)) = unixfs::decode(&cid, data) {
        let _ = unixfs::hamt_shape(&cid, &u);
    }
});
