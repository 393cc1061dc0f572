//! A feed connection's body (server-sent events from the followed gateway, which is not
//! trusted): the follower's event parsing and announcement check. How the body is cut
//! into chunks on the way must not change what the follower reads.
//!
//! Input: one byte that picks the chunk size of the second reading, then the body.
#![no_main]

use bytes::Bytes;
use cidmirror_fuzz::{block_on, fixtures};
use cidmirror_resolver::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let key = fixtures::verifying_key();
    let whole = block_on(fuzzing::feed(vec![Bytes::copy_from_slice(body)], &key));
    let size = usize::from(cut % 32) + 1;
    let chunks = body.chunks(size).map(Bytes::copy_from_slice).collect();
    let pieces = block_on(fuzzing::feed(chunks, &key));
    assert_eq!(whole, pieces, "chunks of {size} bytes read differently");
});
