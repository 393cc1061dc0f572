//! CID strings as they arrive in URLs, announcements and `changes.jsonl` (`parse_cid`): a
//! CID that parses is exactly the string (nothing before or after), and prints back to a
//! string that parses to the same CID.
#![no_main]

use cidmirror_store::Cid;
use cidmirror_store::hash::{identity_data, parse_cid, verify_block};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (text, block) = cidmirror_fuzz::split_at_byte(data, b'\n');
    if let Ok(c) = Cid::try_from(block) {
        assert_eq!(Cid::try_from(c.to_bytes()).ok(), Some(c));
    }
    let Ok(s) = std::str::from_utf8(text) else {
        return;
    };
    let Ok(cid) = parse_cid(s) else { return };
    let printed = cid.to_string();
    assert_eq!(
        parse_cid(&printed).ok(),
        Some(cid),
        "{printed} (from {s:?})"
    );
    assert_eq!(Cid::try_from(cid.to_bytes()).ok(), Some(cid));
    if let Some(d) = identity_data(&cid) {
        verify_block(&cid, d).expect("an identity CID carries its own block");
    }
    let _ = verify_block(&cid, block);
});
