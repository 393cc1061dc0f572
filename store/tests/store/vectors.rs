//! Every published CID in `tests/data/unixfs.json`, regenerated from its recipe.
//!
//! Each vector names its input recipe in prose; `compute` below turns each recipe into
//! bytes or a directory tree, imports it with the vector's parameters and returns the CID.
//! A vector without a recipe here fails the test, so none is skipped silently.

use std::io::Read;

use cid::{Cid, Version};
use cidmirror_store::dir::{DirEntry, Tree};
use cidmirror_store::hash::{DAG_PB, HashAlg};
use cidmirror_store::importer::{self, FileMeta, NullSink};
use cidmirror_store::params::{HamtEstimate, ImportParams, Layout, LeafKind};
use cidmirror_store::pb::Mtime;
use serde_json::Value;

use crate::support::{ChaChaStream, GoRandStream, data_path};

struct Vector {
    name: String,
    params: ImportParams,
    cid: String,
}

fn vectors() -> Vec<Vector> {
    let text = std::fs::read_to_string(data_path("unixfs.json")).expect("vectors file");
    let all: Vec<Value> = serde_json::from_str(&text).expect("vectors json");
    all.iter()
        .map(|v| {
            let p = &v["params"];
            let chunker = p["chunker"].as_str().unwrap();
            let params = ImportParams {
                cid_version: if p["cid_version"] == 0 {
                    Version::V0
                } else {
                    Version::V1
                },
                leaves: if p["raw_leaves"] == true {
                    LeafKind::Raw
                } else {
                    LeafKind::DagPb
                },
                chunk_size: chunker.strip_prefix("size-").unwrap().parse().unwrap(),
                max_links: p["max_links"].as_u64().unwrap() as usize,
                layout: match p["layout"].as_str().unwrap() {
                    "balanced" => Layout::Balanced,
                    "trickle" => Layout::Trickle,
                    other => panic!("layout {other}"),
                },
                hash: HashAlg::from_name(p["hash"].as_str().unwrap()).unwrap(),
                hamt_threshold: p["hamt_threshold"].as_u64().unwrap(),
                hamt_estimate: match p["hamt_estimation"].as_str().unwrap() {
                    "links" => HamtEstimate::Links,
                    "block" => HamtEstimate::Block,
                    other => panic!("estimate {other}"),
                },
                hamt_fanout: p["fanout"].as_u64().unwrap() as u32,
            };
            Vector {
                name: v["name"].as_str().unwrap().to_string(),
                params,
                cid: v["cid"].as_str().unwrap().to_string(),
            }
        })
        .collect()
}

/// Vectors whose input is hundreds of MiB or more: run by the expensive test only.
fn is_expensive(name: &str) -> bool {
    name.starts_with("ipip499-v1-file-at-maxlinks")
        || name.starts_with("ipip499-v1-file-over-maxlinks")
        || name.starts_with("kubo-256MiB")
        || name.starts_with("gomathrand-v1-100MB")
}

/// The one vector whose input is random bytes nobody kept: checked through its CAR.
const CAR_ONLY: &str = "gateway-file-3k-missing-block";

fn file(params: &ImportParams, r: impl Read + Send) -> DirEntry {
    let f = importer::import(r, params, &mut NullSink).unwrap();
    DirEntry {
        cid: f.cid,
        tsize: f.tsize,
    }
}

fn bytes(params: &ImportParams, b: &[u8]) -> DirEntry {
    file(params, b)
}

fn lorem() -> Vec<u8> {
    std::fs::read(data_path("lorem.txt")).unwrap()
}

/// The lorem file as gateway-conformance adds it: 256-byte chunks, CIDv1 raw leaves.
fn lorem_256(params: &ImportParams) -> DirEntry {
    let p = ImportParams {
        chunk_size: 256,
        ..*params
    };
    bytes(&p, &lorem())
}

fn symlink(params: &ImportParams, target: &str) -> DirEntry {
    let (cid, block) = importer::symlink_node(params, target.as_bytes()).unwrap();
    DirEntry {
        cid,
        tsize: block.len() as u64,
    }
}

/// A directory tree from (path, entry) pairs; paths may be nested.
fn tree(params: &ImportParams, entries: Vec<(String, DirEntry)>) -> DirEntry {
    let mut t = Tree::new();
    for (p, e) in entries {
        t.insert(&p, e).unwrap();
    }
    t.build(params, &mut NullSink).unwrap()
}

fn files(params: &ImportParams, list: &[(&str, &[u8])]) -> DirEntry {
    tree(
        params,
        list.iter()
            .map(|(p, b)| (p.to_string(), bytes(params, b)))
            .collect(),
    )
}

/// A directory of `num` one-byte files named from one ChaCha20 stream.
fn chacha_named_dir(
    params: &ImportParams,
    seed: &str,
    num: usize,
    len: usize,
    last: usize,
) -> DirEntry {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz01234567890-_";
    let mut s = ChaChaStream::new(seed, u64::MAX);
    let x = bytes(params, b"x");
    let entries = (0..num)
        .map(|i| {
            let l = if i == num - 1 { last } else { len };
            let name: String = s
                .next_bytes(l)
                .iter()
                .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
                .collect();
            (name, x)
        })
        .collect();
    tree(params, entries)
}

fn empty_files(params: &ImportParams, prefix: &str, n: usize) -> Vec<(String, DirEntry)> {
    let e = bytes(params, b"");
    (0..n).map(|i| (format!("{prefix}{i:05}"), e)).collect()
}

fn chacha(params: &ImportParams, seed: &str, n: u64) -> DirEntry {
    file(params, ChaChaStream::new(seed, n))
}

fn gorand(params: &ImportParams, seed: i64, n: u64) -> DirEntry {
    file(params, GoRandStream::new(seed, n))
}

/// Computes the CID a vector's recipe gives, or None if the recipe is not known here.
fn compute(name: &str, p: &ImportParams) -> Option<String> {
    let e = match name {
        "hello-world-v0"
        | "hello-world-v1-raw"
        | "hello-world-v1-dagpb-leaves"
        | "hello-world-sha2-512" => bytes(p, b"hello world"),
        "hello-world-nl-v0" | "hello-world-nl-v1-raw" => bytes(p, b"hello world\n"),
        "empty-file-v0" | "empty-file-raw" | "empty-file-v1-dagpb" => bytes(p, b""),
        "hello-worlds-v0" | "hello-worlds-v0-trickle" => bytes(p, b"Hello Worlds!\n"),
        "helloo-worlds-v0" => bytes(p, b"Helloo Worlds!\n"),
        "ipfs-nl-v0" => bytes(p, b"IPFS\n"),
        "hello-jupiter-v0" => bytes(p, b"Hello Jupiter!\n"),
        "neptune-pluton-v0" => bytes(p, b"Hello Neptune!\nHello Pluton!"),
        "base32-test-v0" => bytes(p, b"base32 test\n"),
        "base32-test-v0-as-cidv1-string" => {
            let c = bytes(p, b"base32 test\n").cid;
            return Some(Cid::new_v1(DAG_PB, *c.hash()).to_string());
        }
        "file100-v0" => bytes(p, b"100\n"),
        "world-nl-v0" => bytes(p, b"World\n"),
        "gateway-checker-v1-dagpb" => bytes(p, b"Hello from IPFS Gateway Checker\n"),
        "ascii-car-v1-raw" => bytes(p, b"hello application/vnd.ipld.car\n"),
        "content-nl-v0" => bytes(p, b"content\n"),
        "lorem-1026-size256-v1" => bytes(p, &lorem()),
        "ipip499-v0-file-at-chunk" => chacha(p, "chunk-v0-seed", 262_144),
        "ipip499-v0-file-over-chunk" => chacha(p, "chunk-v0-seed", 262_145),
        "ipip499-v0-file-at-maxlinks" => chacha(p, "v0-seed", 174 * 262_144),
        "ipip499-v0-file-over-maxlinks" => chacha(p, "v0-seed", 174 * 262_144 + 1),
        "ipip499-v1-file-at-chunk" => chacha(p, "chunk-v1-seed", 1_048_576),
        "ipip499-v1-file-over-chunk" => chacha(p, "chunk-v1-seed", 1_048_577),
        "ipip499-v1-file-at-maxlinks" => chacha(p, "v1-2025-seed", 1024 * 1_048_576),
        "ipip499-v1-file-over-maxlinks" => chacha(p, "v1-2025-seed", 1024 * 1_048_576 + 1),
        "kubo-256MiB-maxlinks-1024" => chacha(p, "hello world", 262_144 * 1024),
        "empty-dir-v0" | "empty-dir-v1" => tree(p, vec![]),
        "planets-v0" | "planets-v0-raw-leaves" | "planets-v1" | "planets-v1-dagpb-leaves" => files(
            p,
            &[
                ("mars.txt", b"Hello Mars!\n"),
                ("venus.txt", b"Hello Venus!\n"),
            ],
        ),
        "moons-v0" => files(
            p,
            &[
                ("jupiter/europa.txt", b"Hello Europa!\n"),
                ("saturn/titan.txt", b"Hello Titan!\n"),
                ("mercury.txt", b"hey you are no moon!\n"),
            ],
        ),
        "hey-hello-world-dir-v0" => files(p, &[("hey", b"Hey\n"), ("hello/world", b"World\n")]),
        "symlink-node-v0" => symlink(p, "foo"),
        "symlink-foobar-v0" | "symlink-foobar-v1" => symlink(p, "foobar"),
        "symlink-dir-v0" => tree(
            p,
            vec![
                ("foo".into(), bytes(p, b"content\n")),
                ("bar".into(), symlink(p, "foo")),
            ],
        ),
        "t0260-unsharded-v0" | "t0260-sharded-v0" | "t0260-sharded-v1" => tree(
            p,
            (1..=2000)
                .map(|i| (format!("file{i}"), bytes(p, format!("{i}\n").as_bytes())))
                .collect(),
        ),
        "ipip499-v0-dir-at-threshold" => chacha_named_dir(p, "hamt-unixfs-v0-2015", 4096, 30, 30),
        "ipip499-v0-dir-over-threshold" => chacha_named_dir(p, "hamt-unixfs-v0-2015", 4033, 31, 31),
        "ipip499-v1-dir-at-threshold" => chacha_named_dir(p, "hamt-unixfs-v1-2025", 4766, 11, 21),
        "ipip499-v1-dir-over-threshold" => chacha_named_dir(p, "hamt-unixfs-v1-2025", 4766, 11, 22),
        "dir-with-files-v1" => {
            let ascii = bytes(p, b"hello application/vnd.ipld.car\n");
            tree(
                p,
                vec![
                    ("ascii-copy.txt".into(), ascii),
                    ("ascii.txt".into(), ascii),
                    ("hello.txt".into(), bytes(p, b"hello world\n")),
                    ("multiblock.txt".into(), lorem_256(p)),
                ],
            )
        }
        "subdir-with-two-single-block-files" => files(
            p,
            &[
                ("subdir/ascii.txt", b"hello application/vnd.ipld.car\n"),
                ("subdir/hello.txt", b"hello world\n"),
            ],
        ),
        "subdir-with-mixed-block-files" => tree(
            p,
            vec![
                (
                    "subdir/ascii.txt".into(),
                    bytes(p, b"hello application/vnd.ipld.car\n"),
                ),
                ("subdir/hello.txt".into(), bytes(p, b"hello world\n")),
                ("subdir/multiblock.txt".into(), lorem_256(p)),
            ],
        ),
        "single-layer-hamt-1000" => {
            let l = lorem_256(p);
            assert_eq!(l.tsize, 1271, "recipe says Tsize 1271");
            tree(p, (1..=1000).map(|i| (format!("{i}.txt"), l)).collect())
        }
        "percent-encoded-filename-dir" => files(
            p,
            &[(
                "Portugal%2C+España=Peninsula Ibérica.txt",
                b"hello from a percent encoded filename\n",
            )],
        ),
        "dag-pb-car-dir" => files(
            p,
            &[
                ("foo/bar.txt", b"Hello, world!\n"),
                ("foo.txt", b"Hello, IPFS!\n"),
            ],
        ),
        "utf8-names-dir" => files(
            p,
            &[
                ("api/file.txt", b"I am a txt file in confusing /api dir\n"),
                ("ipfs/file.txt", b"I am a txt file in confusing /ipfs dir\n"),
                ("ipns/file.txt", b"I am a txt file in confusing /ipns dir\n"),
                ("ą/ę/file-źł.txt", b"I am a txt file on path with utf8\n"),
            ],
        ),
        "foobar-c2-v0" | "foobar-c2-v1" => bytes(p, b"foobar\n"),
        "zeros1000-c7-v0" | "zeros1000-c7-v1" => bytes(p, &[0u8; 1000]),
        "a400-c1-v0" | "a400-c1-v1" => bytes(p, &[b'a'; 400]),
        "foobar-mode-mtime-v0" | "foobar-mode-mtime-v1" => {
            let meta = FileMeta {
                mode: Some(0o644),
                mtime: Some(Mtime {
                    seconds: 1_700_000_000,
                    nanos: None,
                }),
            };
            let f = importer::import_with_meta(&b"foobar\n"[..], p, &meta, &mut NullSink).unwrap();
            DirEntry {
                cid: f.cid,
                tsize: f.tsize,
            }
        }
        "small-dir-v0" | "small-dir-v1" => files(p, &[("a.txt", b"a"), ("b.txt", b"bb")]),
        "hamt-6000-empty-files-v0" | "hamt-6000-empty-files-v1" => {
            tree(p, empty_files(p, "file-", 6000))
        }
        "nested-hamt-subdir-v0" | "nested-hamt-subdir-v1" => {
            let mut entries: Vec<(String, DirEntry)> = empty_files(p, "sub/file-", 6000);
            entries.push(("readme.txt".into(), bytes(p, b"hello")));
            tree(p, entries)
        }
        "sibling-6000-dirs-v0" | "sibling-6000-dirs-v1" => {
            let mut entries = empty_files(p, "alpha/a-", 6000);
            entries.extend(empty_files(p, "beta/b-", 6000));
            tree(p, entries)
        }
        n if n.starts_with("gomathrand-v1-5MB-seed41") => gorand(p, 41, 5_242_880),
        n if n.starts_with("gomathrand-v1-100MB-seed42") => gorand(p, 42, 104_857_600),
        _ => return None,
    };
    Some(e.cid.to_string())
}

fn check(expensive: bool) {
    let mut failures = Vec::new();
    let mut checked = 0;
    for v in vectors() {
        if v.name == CAR_ONLY || is_expensive(&v.name) != expensive {
            continue;
        }
        match compute(&v.name, &v.params) {
            None => failures.push(format!("{}: no recipe implemented", v.name)),
            Some(got) if got != v.cid => {
                failures.push(format!("{}: expected {}, got {got}", v.name, v.cid))
            }
            Some(_) => checked += 1,
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 0);
    eprintln!("{checked} vectors match");
}

#[test]
fn every_cheap_vector_matches() {
    check(false);
}

#[test]
#[ignore = "expensive: imports 2.6 GiB of generated data; .ci/run runs it"]
fn every_expensive_vector_matches() {
    check(true);
}

#[test]
fn the_vector_file_is_complete() {
    let v = vectors();
    assert_eq!(v.len(), 84);
    assert_eq!(v.iter().filter(|v| is_expensive(&v.name)).count(), 6);
    assert!(v.iter().any(|v| v.name == CAR_ONLY));
}

/// The 3 KiB vector's bytes are lost, but its CAR holds the root and two of its three
/// 1 KiB leaves: the root must be the vector's CID, and each held leaf must be what
/// importing its 1024 bytes under the vector's parameters gives.
#[test]
fn the_car_only_vector_matches_its_fixture() {
    use cidmirror_store::car::CarReader;
    use cidmirror_store::pb;
    let v = vectors().into_iter().find(|v| v.name == CAR_ONLY).unwrap();
    let car = std::fs::read(data_path("car/file-3k-and-3-blocks-missing-block.car")).unwrap();
    let r = CarReader::new(&car[..], "3k").unwrap();
    assert_eq!(r.roots()[0].to_string(), v.cid);
    let blocks: Vec<_> = r.collect::<Result<_, _>>().unwrap();
    let (_, root_block) = blocks.iter().find(|(c, _)| c.to_string() == v.cid).unwrap();
    let root = pb::decode_node(root_block).unwrap();
    assert_eq!(root.links.len(), 3);
    let mut leaves = 0;
    for (cid, block) in &blocks {
        if cid.to_string() == v.cid {
            continue;
        }
        let node = pb::decode_node(block).unwrap();
        let data = pb::decode_unixfs(node.data.unwrap()).unwrap().data.unwrap();
        assert_eq!(data.len(), 1024);
        assert_eq!(bytes(&v.params, data).cid, *cid);
        assert!(root.links.iter().any(|l| l.cid == *cid));
        leaves += 1;
    }
    assert_eq!(leaves, 2, "the middle leaf is missing on purpose");
}
