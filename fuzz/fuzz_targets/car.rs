//! A CAR v1 stream (`import`, `?format=car` answers, a follower's delta): the reader that
//! checks every block against its CID. What it accepts must survive a rewrite.
#![no_main]

use cidmirror_store::car::{CarReader, CarWriter};
use cidmirror_store::hash::verify_block;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(reader) = CarReader::new(data, "fuzz input") else {
        return;
    };
    let roots = reader.roots().to_vec();
    let mut blocks = Vec::new();
    for b in reader {
        match b {
            Ok(b) => blocks.push(b),
            Err(_) => break,
        }
    }
    for (cid, block) in &blocks {
        verify_block(cid, block).expect("the reader hands out verified blocks only");
    }
    let mut w = CarWriter::new(Vec::new(), &roots).expect("CAR into a Vec");
    for (cid, block) in &blocks {
        w.write_block(cid, block).expect("CAR into a Vec");
    }
    let out = w.finish().expect("CAR into a Vec");
    let back = CarReader::new(&out[..], "rewritten").expect("a rewritten header reads");
    assert_eq!(back.roots(), &roots[..]);
    let again: Vec<_> = back
        .collect::<Result<_, _>>()
        .expect("a rewritten CAR reads");
    assert_eq!(again, blocks);
});
