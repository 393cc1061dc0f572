//! Benchmark: building directories of 100,000 entries (a snapshot's `index/` and
//! `by-sha256/` are of this size), flat and nested, under both profiles.
//!
//! Prints the median of 7 runs of each build and, as a same-run reference, the time SHA-256
//! needs for the bytes the build produced (the build must at least hash its blocks).
//! Run with `cargo bench -p cidmirror-store --bench dir`.

use std::time::{Duration, Instant};

use cidmirror_store::dir::{DirEntry, Directory, Tree};
use cidmirror_store::hash::{HashAlg, raw_cid};
use cidmirror_store::importer::VecSink;
use cidmirror_store::{ImportParams, Profile};

const N: usize = 100_000;
const RUNS: usize = 7;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn entries() -> Vec<(String, DirEntry)> {
    (0..N)
        .map(|i| {
            let name = format!("package-number-{i:06}-1.0.{}-1-x86_64.pkg.tar.zst", i % 97);
            let cid = raw_cid(HashAlg::Sha2_256, name.as_bytes());
            (
                name,
                DirEntry {
                    cid,
                    tsize: 1000 + i as u64,
                },
            )
        })
        .collect()
}

fn bench(label: &str, params: &ImportParams, build: impl Fn(&mut VecSink) -> DirEntry) {
    let mut times = Vec::new();
    let mut produced = 0usize;
    let mut blocks = 0usize;
    for _ in 0..RUNS {
        let mut sink = VecSink::default();
        let t = Instant::now();
        let root = build(&mut sink);
        times.push(t.elapsed());
        std::hint::black_box(root);
        produced = sink.0.iter().map(|(_, b)| b.len()).sum();
        blocks = sink.0.len();
    }
    let reference: Vec<u8> = vec![0x5a; produced];
    let mut ref_times = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        std::hint::black_box(params.hash.digest(&reference));
        ref_times.push(t.elapsed());
    }
    let m = median(times);
    let r = median(ref_times);
    println!(
        "{label:<44} {:>8.1} ms  ({blocks} blocks, {:.1} MiB; sha256 of those bytes {:.1} ms, ratio {:.1})  {}",
        m.as_secs_f64() * 1e3,
        produced as f64 / (1 << 20) as f64,
        r.as_secs_f64() * 1e3,
        m.as_secs_f64() / r.as_secs_f64().max(1e-9),
        if m < Duration::from_millis(250) {
            "ok (< 250 ms)"
        } else {
            "SLOW"
        }
    );
}

fn main() {
    let e = entries();
    for profile in [Profile::UnixfsV1_2025, Profile::UnixfsV0_2015] {
        let params = profile.params();
        bench(
            &format!("{profile}: flat dir of {N} (HAMT)"),
            &params,
            |sink| {
                let mut d = Directory::new();
                for (n, x) in &e {
                    d.insert(n, *x).unwrap();
                }
                d.build(&params, sink).unwrap()
            },
        );
        bench(
            &format!("{profile}: {N} paths in 256 dirs"),
            &params,
            |sink| {
                let mut t = Tree::new();
                for (i, (n, x)) in e.iter().enumerate() {
                    t.insert(&format!("index/{:02x}/{n}", i % 256), *x).unwrap();
                }
                t.build(&params, sink).unwrap()
            },
        );
    }
}
