//! The IPFS trustless gateway over real HTTP: the gateway-conformance CAR fixtures served
//! back block for block and as CARs, paths through directories and HAMT shards, file bytes
//! and ranges, listings, the `bafkqaaa` probe, `HEAD`, content negotiation, `dag-scope` and
//! `entity-bytes`, and what a partial DAG looks like on the wire.

use std::collections::{BTreeSet, HashSet};

use cid::Cid;
use cidmirror_store::dir::{DirEntry, Directory};
use cidmirror_store::hash::{HashAlg, raw_cid};
use cidmirror_store::importer::VecSink;
use cidmirror_store::pb::{self, DataType};
use cidmirror_store::unixfs::{self, links_of};
use cidmirror_store::{Block, EmbeddedStore, Profile, Store};

use crate::gw_support::{Fixture, Gateway, Resp, data_dir, fixture};

const DIR: &str = "bafybeihchr7vmgjaasntayyatmp5sv6xza57iy2h4xj7g46bpjij6yhrmy";
const HAMT: &str = "bafybeidbclfqleg2uojchspzd4bob56dqetqjsj27gy2cq3klkkgxtpn4i";
const THREE_K: &str = "QmYhmPjhFjYFyaoiuNzYv8WGavpSRDwdHWe5B4M5du5Rtk";
const HELLO: &str = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";
const MULTIBLOCK: &str = "bafybeigcisqd7m5nf3qmuvjdbakl5bdnh4ocrmacaqkpuh77qjvggmt2sa";
const IMMUTABLE: &str = "public, max-age=29030400, immutable";
const CAR_TYPE: &str = "application/vnd.ipld.car; version=1; order=dfs; dups=n";

fn lorem() -> Vec<u8> {
    std::fs::read(data_dir().join("lorem.txt")).expect("lorem.txt")
}

fn cid(s: &str) -> Cid {
    Cid::try_from(s).expect("CID")
}

/// The DAG under `root` as `ipfs dag export` walks it: depth-first, link order, each once.
async fn dfs(store: &EmbeddedStore, root: &Cid) -> Vec<Cid> {
    let (mut out, mut seen, mut stack) = (Vec::new(), HashSet::new(), vec![*root]);
    while let Some(c) = stack.pop() {
        if !seen.insert(c) {
            continue;
        }
        let block = unixfs::need_block(store, &c).await.expect("held");
        stack.extend(links_of(&c, &block).expect("links").into_iter().rev());
        out.push(c);
    }
    out
}

/// The CIDs a response's CAR carries, checking the frame around them.
fn car_of(r: &Resp, root: &Cid) -> Vec<Cid> {
    assert_eq!(r.header("content-type"), Some(CAR_TYPE), "{}", r.text());
    let cids = r.car_cids();
    let (roots, _) = r.car().expect("CAR");
    assert_eq!(roots, [*root], "CAR header names the terminal CID");
    let unique: HashSet<_> = cids.iter().collect();
    assert_eq!(unique.len(), cids.len(), "dups=n: no block twice");
    cids
}

/// A store holding exactly what a CAR response carries: what a client could verify.
async fn client_store(r: &Resp) -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path()).expect("client store");
    store
        .import_car(
            Box::new(std::io::Cursor::new(r.body.clone())),
            "response".into(),
            None,
        )
        .await
        .expect("the response imports");
    (dir, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_block_of_every_fixture_comes_back_raw() {
    let (gw, all) = Gateway::with_fixtures().await;
    let mut checked = 0;
    for f in &all {
        for (c, data) in &f.blocks {
            let r = gw.get(&format!("/ipfs/{c}?format=raw")).await;
            assert_eq!(r.status, 200, "{} {c}", f.name);
            assert_eq!(&r.body, data, "{} {c}", f.name);
            assert!(r.complete);
            assert_eq!(r.header("content-type"), Some("application/vnd.ipld.raw"));
            assert_eq!(r.header("etag"), Some(format!("\"{c}.raw\"").as_str()));
            assert_eq!(r.header("cache-control"), Some(IMMUTABLE));
            assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
            assert_eq!(r.header("x-ipfs-path"), Some(format!("/ipfs/{c}").as_str()));
            assert_eq!(r.header("x-ipfs-roots"), Some(c.to_string().as_str()));
            assert_eq!(
                r.header("content-disposition"),
                Some(format!("attachment; filename=\"{c}.bin\"").as_str())
            );
            checked += 1;
        }
    }
    assert!(checked > 250, "{checked} blocks");
    // The same through Accept.
    let r = gw
        .request(
            "GET",
            &format!("/ipfs/{HELLO}"),
            &[("Accept", "application/vnd.ipld.raw")],
        )
        .await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello world\n"));
    assert_eq!(r.header("content-type"), Some("application/vnd.ipld.raw"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_complete_fixture_comes_back_as_the_same_car() {
    let (gw, all) = Gateway::with_fixtures().await;
    for Fixture {
        name,
        roots,
        blocks,
        ..
    } in &all
    {
        if name.starts_with("file-3k") {
            continue; // incomplete on purpose: see below
        }
        let root = roots[0];
        let r = gw.get(&format!("/ipfs/{root}?format=car")).await;
        let got = car_of(&r, &root);
        assert_eq!(
            got,
            dfs(&gw.store, &root).await,
            "{name}: depth-first, link order"
        );
        let a: BTreeSet<_> = got.iter().map(Cid::to_bytes).collect();
        let b: BTreeSet<_> = blocks.iter().map(|(c, _)| c.to_bytes()).collect();
        assert_eq!(a, b, "{name}: the fixture's blocks");
        assert_eq!(r.header("cache-control"), Some(IMMUTABLE));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(
            r.header("content-disposition"),
            Some(format!("attachment; filename=\"{root}.car\"").as_str())
        );
        let etag = r.header("etag").expect("etag");
        assert!(etag.starts_with(&format!("\"{root}.car")), "{etag}");
        // Accept works as well as format=, with or without parameters.
        for accept in [
            "application/vnd.ipld.car",
            "application/vnd.ipld.car; version=1; order=dfs; dups=n",
        ] {
            let r2 = gw
                .request("GET", &format!("/ipfs/{root}"), &[("Accept", accept)])
                .await;
            assert_eq!(r2.body, r.body, "{name} with Accept: {accept}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_dag_gives_a_cut_car_a_complete_range_and_no_file_bytes() {
    let gw = Gateway::start().await;
    gw.import("file-3k-and-3-blocks-missing-block.car").await;
    let f = fixture("file-3k-and-3-blocks-missing-block.car");
    let root = cid(THREE_K);

    // The first KiB is held: a complete, small CAR.
    let r = gw
        .get(&format!("/ipfs/{root}?format=car&entity-bytes=0:1023"))
        .await;
    let got = car_of(&r, &root);
    assert_eq!(got.len(), 2, "the root and the first leaf");
    assert_eq!(got[0], root);
    let (_d, client) = client_store(&r).await;
    let (size, mut bytes) = client.read(&root, Some(0..1024)).await.expect("range");
    assert_eq!(size, 3072);
    let mut first = Vec::new();
    while let Some(b) = futures::StreamExt::next(&mut bytes).await {
        first.extend_from_slice(&b.expect("bytes the CAR proves"));
    }
    assert_eq!(first.len(), 1024);

    // The whole file is not: 200 (the root is there), then the stream is cut.
    // (Or, when the failure comes before hyper flushed the head, no response at all.)
    let r = gw.get(&format!("/ipfs/{root}?format=car")).await;
    assert!(matches!(r.status, 0 | 200), "{}", r.status);
    assert!(!r.complete, "a CAR missing a block must not end cleanly");
    let held: HashSet<Cid> = f.blocks.iter().map(|(c, _)| *c).collect();
    if let Ok((_, blocks)) = r.car() {
        assert!(blocks.len() < 4);
        assert!(blocks.iter().all(|(c, _)| held.contains(c)));
    }
    // So is a range over the missing block, and the file's bytes.
    let r = gw
        .get(&format!("/ipfs/{root}?format=car&entity-bytes=0:*"))
        .await;
    assert!(matches!(r.status, 0 | 200) && !r.complete);
    // The file's bytes: a clean 503 before any byte, since not every block is held.
    let r = gw.get(&format!("/ipfs/{root}")).await;
    assert_eq!(r.status, 503, "file bytes of a partial DAG");
    assert!(r.complete && !r.body.is_empty(), "an error text, whole");
    // dag-scope=block needs the root only.
    let r = gw
        .get(&format!("/ipfs/{root}?format=car&dag-scope=block"))
        .await;
    assert_eq!(car_of(&r, &root), [root]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_not_held_is_404() {
    let (gw, _) = Gateway::with_fixtures().await;
    let absent = raw_cid(HashAlg::Sha2_256, b"never stored");
    let absent_dir = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354";
    for target in [
        format!("/ipfs/{absent}?format=raw"),
        format!("/ipfs/{absent}?format=car"),
        format!("/ipfs/{absent}"),
        format!("/ipfs/{absent_dir}/a.txt?format=car"),
        format!("/ipfs/{absent_dir}/"),
        format!("/ipfs/{DIR}/no-such-file.txt"),
        format!("/ipfs/{DIR}/no-such-file.txt?format=car"),
        format!("/ipfs/{DIR}/hello.txt/below-a-file"),
        format!("/ipfs/{HAMT}/1001.txt?format=raw"),
    ] {
        let r = gw.get(&target).await;
        assert_eq!(r.status, 404, "{target}: {}", r.text());
        let r = gw.request("HEAD", &target, &[]).await;
        assert_eq!(r.status, 404, "HEAD {target}");
        assert!(r.body.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_by_path_with_ranges_and_headers() {
    let gw = Gateway::start().await;
    gw.import("dir-with-files.car").await;

    let r = gw.get(&format!("/ipfs/{DIR}/hello.txt")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello world\n"));
    assert!(r.complete);
    assert_eq!(r.header("etag"), Some(format!("\"{HELLO}\"").as_str()));
    assert_eq!(r.header("cache-control"), Some(IMMUTABLE));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(
        r.header("x-ipfs-path"),
        Some(format!("/ipfs/{DIR}/hello.txt").as_str())
    );
    assert_eq!(
        r.header("x-ipfs-roots"),
        Some(format!("{DIR},{HELLO}").as_str())
    );

    let lorem = lorem();
    let r = gw.get(&format!("/ipfs/{DIR}/multiblock.txt")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, lorem, "five blocks in order");
    assert_eq!(r.header("etag"), Some(format!("\"{MULTIBLOCK}\"").as_str()));

    // Ranges: inside one block, across blocks, the tail, open-ended.
    let len = lorem.len();
    for (range, want) in [
        ("bytes=6-10", 6..11),
        ("bytes=250-600", 250..601),
        ("bytes=-10", len - 10..len),
        ("bytes=1000-", 1000..len),
        ("bytes=0-0", 0..1),
    ] {
        let r = gw
            .request(
                "GET",
                &format!("/ipfs/{DIR}/multiblock.txt"),
                &[("Range", range)],
            )
            .await;
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(r.body, &lorem[want.clone()], "{range}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {}-{}/{len}", want.start, want.end - 1).as_str())
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    }
    let r = gw
        .request(
            "GET",
            &format!("/ipfs/{DIR}/hello.txt"),
            &[("Range", "bytes=6-10")],
        )
        .await;
    assert_eq!((r.status, r.text().as_str()), (206, "world"));
    let r = gw
        .request(
            "GET",
            &format!("/ipfs/{DIR}/hello.txt"),
            &[("Range", "bytes=12-")],
        )
        .await;
    assert_eq!(r.status, 416);

    // A file straight by its CID.
    let r = gw.get(&format!("/ipfs/{MULTIBLOCK}")).await;
    assert_eq!(r.body, lorem);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_through_hamt_shards_carry_the_shards_walked() {
    let gw = Gateway::start().await;
    gw.import("single-layer-hamt-with-multi-block-files.car")
        .await;
    let hamt = cid(HAMT);

    let r = gw.get(&format!("/ipfs/{HAMT}/1000.txt")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, lorem());
    assert_eq!(
        r.header("x-ipfs-roots"),
        Some(format!("{HAMT},{MULTIBLOCK}").as_str())
    );

    // The CAR of the path: the HAMT root, the shard(s) on the way, then the file.
    let r = gw
        .get(&format!("/ipfs/{HAMT}/1000.txt?format=car&dag-scope=block"))
        .await;
    let got = car_of(&r, &cid(MULTIBLOCK));
    assert_eq!(got[0], hamt);
    assert_eq!(*got.last().expect("blocks"), cid(MULTIBLOCK));
    for c in &got[..got.len() - 1] {
        let b = gw.store.get_block(c).await.expect("get").expect("held");
        let node = pb::decode_node(&b).expect("dag-pb");
        let u = pb::decode_unixfs(node.data.expect("data")).expect("unixfs");
        assert_eq!(u.typ, Some(DataType::HamtShard), "{c} is a shard");
    }
    // ... which is enough for a client to follow the path itself.
    let (_d, client) = client_store(&r).await;
    assert_eq!(
        unixfs::resolve(&client, &hamt, "1000.txt")
            .await
            .expect("path proved"),
        cid(MULTIBLOCK)
    );

    // A deeper HAMT (fanout 16, 3000 names): several shard levels, each proved.
    let mut dir = Directory::new();
    for i in 0..3000 {
        let e = DirEntry {
            cid: cid(HELLO),
            tsize: 12,
        };
        dir.insert(&format!("file-{i}.txt"), e).expect("insert");
    }
    let params = cidmirror_store::ImportParams {
        hamt_threshold: 0,
        hamt_fanout: 16,
        ..Profile::UnixfsV1_2025.params()
    };
    let mut sink = VecSink::default();
    let deep = dir.build(&params, &mut sink).expect("build").cid;
    let mut blocks: Vec<Block> = sink
        .0
        .into_iter()
        .map(|(cid, data)| Block {
            cid,
            data: data.into(),
        })
        .collect();
    blocks.push(Block {
        cid: cid(HELLO),
        data: "hello world\n".into(),
    });
    gw.store.put_blocks(blocks).await.expect("put");
    for name in ["file-0.txt", "file-1234.txt", "file-2999.txt"] {
        let r = gw.get(&format!("/ipfs/{deep}/{name}")).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "hello world\n"),
            "{name}"
        );
        let r = gw
            .get(&format!("/ipfs/{deep}/{name}?format=car&dag-scope=block"))
            .await;
        let got = car_of(&r, &cid(HELLO));
        assert!(
            got.len() >= 4,
            "{name}: root, >= 2 sub-shards, the file: {got:?}"
        );
        let (_d, client) = client_store(&r).await;
        assert_eq!(
            unixfs::resolve(&client, &deep, name).await.expect("proved"),
            cid(HELLO)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_redirect_then_list() {
    let (gw, _) = Gateway::with_fixtures().await;

    let r = gw.get(&format!("/ipfs/{DIR}")).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some(format!("/ipfs/{DIR}/").as_str()));
    let r = gw.get(&format!("/ipfs/{DIR}?a=1&b=2")).await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some(format!("/ipfs/{DIR}/?a=1&b=2").as_str())
    );
    let sub = "bafybeietjm63oynimmv5yyqay33nui4y4wx6u3peezwetxgiwvfmelutzu";
    let r = gw.get(&format!("/ipfs/{sub}/subdir")).await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some(format!("/ipfs/{sub}/subdir/").as_str())
    );

    let r = gw.get(&format!("/ipfs/{DIR}/")).await;
    assert_eq!(r.status, 200);
    assert!(r.complete);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let html = r.text();
    for name in ["hello.txt", "multiblock.txt", "ascii.txt", "ascii-copy.txt"] {
        assert!(
            html.contains(&format!("href=\"./{name}\"")),
            "{name} in {html}"
        );
    }
    assert!(html.contains(HELLO) && html.contains(MULTIBLOCK));
    assert!(!html.contains("href=\"../\""), "no parent above a root");

    let r = gw.get(&format!("/ipfs/{sub}/subdir/")).await;
    assert!(r.text().contains("href=\"../\""));

    // A HAMT directory: every entry, once.
    let r = gw.get(&format!("/ipfs/{HAMT}/")).await;
    assert_eq!(r.status, 200);
    let html = r.text();
    let entries = unixfs::list(&gw.store, &cid(HAMT)).await.expect("list");
    assert_eq!(entries.len(), 1000);
    assert_eq!(html.matches("<tr><td><a href=\"./").count(), 1000);
    for e in &entries {
        assert!(
            html.contains(&format!("href=\"./{}\"", e.name)),
            "{}",
            e.name
        );
    }

    // Names are escaped in the page and percent-encoded in links.
    let pct = "bafybeig675grnxcmshiuzdaz2xalm6ef4thxxds6o6ypakpghm5kghpc34";
    let html = gw.get(&format!("/ipfs/{pct}/")).await.text();
    let href = "Portugal%252C%2BEspa%C3%B1a%3DPeninsula%20Ib%C3%A9rica.txt";
    assert!(html.contains(&format!("href=\"./{href}\"")), "{html}");
    let r = gw.get(&format!("/ipfs/{pct}/{href}")).await;
    assert_eq!(r.status, 200, "the link leads to the file");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));

    let mut dir = Directory::new();
    let e = DirEntry {
        cid: cid(HELLO),
        tsize: 12,
    };
    dir.insert("<script>alert('x')<\\script>&\".txt", e)
        .expect("insert");
    let mut sink = VecSink::default();
    let evil = dir
        .build(&Profile::UnixfsV1_2025.params(), &mut sink)
        .expect("build")
        .cid;
    let blocks = sink
        .0
        .into_iter()
        .map(|(cid, data)| Block {
            cid,
            data: data.into(),
        })
        .collect();
    gw.store.put_blocks(blocks).await.expect("put");
    let html = gw.get(&format!("/ipfs/{evil}/")).await.text();
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;\\script&gt;&amp;&quot;.txt"));
    assert!(html.contains("href=\"./%3Cscript%3Ealert%28%27x%27%29%3C%5Cscript%3E%26%22.txt\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_and_reserved_path_segments() {
    let gw = Gateway::start().await;
    gw.import("fixtures.car").await;
    let f = fixture("fixtures.car");
    let root = f.roots[0];
    // /ą/ę/file-źł.txt, percent-encoded as a client sends it.
    let r = gw
        .get(&format!("/ipfs/{root}/%C4%85/%C4%99/file-%C5%BA%C5%82.txt"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let roots: Vec<&str> = r
        .header("x-ipfs-roots")
        .expect("roots")
        .split(',')
        .collect();
    assert_eq!(roots.len(), 4, "one CID per segment");
    assert_eq!(roots[0], root.to_string());
    let file = cid(roots[3]);
    let data = &f.blocks.iter().find(|(c, _)| *c == file).expect("block").1;
    assert_eq!(&r.body, data);
    // Directories named like the gateway's own routes are just names.
    for d in ["ipfs", "ipns", "api"] {
        let r = gw.get(&format!("/ipfs/{root}/{d}/file.txt")).await;
        assert_eq!(r.status, 200, "{d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_probe_bafkqaaa() {
    let gw = Gateway::start().await;
    for target in ["/ipfs/bafkqaaa", "/ipfs/bafkqaaa?format=raw"] {
        let r = gw.get(target).await;
        assert_eq!(r.status, 200, "{target}");
        assert!(r.body.is_empty() && r.complete, "{target}");
    }
    let r = gw
        .request(
            "GET",
            "/ipfs/bafkqaaa",
            &[("Accept", "application/vnd.ipld.raw")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/vnd.ipld.raw"));
    // A CAR must be a valid CAR: the header, naming bafkqaaa, and no identity block.
    let r = gw.get("/ipfs/bafkqaaa?format=car").await;
    assert!(car_of(&r, &cid("bafkqaaa")).is_empty());
    for target in [
        "/ipfs/bafkqaaa",
        "/ipfs/bafkqaaa?format=raw",
        "/ipfs/bafkqaaa?format=car",
    ] {
        let r = gw.request("HEAD", target, &[]).await;
        assert_eq!(r.status, 200, "HEAD {target}");
        assert!(r.body.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_sends_the_headers_without_a_body() {
    let (gw, _) = Gateway::with_fixtures().await;
    let cases = [
        (format!("/ipfs/{DIR}/multiblock.txt"), Some("1026")),
        (format!("/ipfs/{DIR}/hello.txt?format=raw"), Some("12")),
        (format!("/ipfs/{DIR}/?format=car"), None),
        (format!("/ipfs/{DIR}/"), None),
        (format!("/ipfs/{THREE_K}?format=car"), None),
    ];
    for (target, length) in cases {
        let get = gw.get(&target).await;
        let head = gw.request("HEAD", &target, &[]).await;
        assert_eq!(head.status, 200, "{target}");
        assert!(head.body.is_empty(), "{target}: no body");
        assert_eq!(head.header("content-length"), length, "{target}");
        if get.status == 0 {
            // THREE_K lacks a block: the GET's body fails, and under load hyper can drop
            // the connection before its head was flushed (see gw_support). HEAD has no body
            // and must still say everything a GET's head would.
            assert!(
                target.contains(THREE_K),
                "{target}: GET cut before its head"
            );
            assert!(
                head.header("content-type")
                    .is_some_and(|t| t.starts_with("application/vnd.ipld.car")),
                "{target}: {:?}",
                head.headers
            );
            for h in ["etag", "cache-control", "x-ipfs-roots"] {
                assert!(head.header(h).is_some(), "{target}: {h}");
            }
            continue;
        }
        for h in ["content-type", "etag", "cache-control", "x-ipfs-roots"] {
            assert_eq!(head.header(h), get.header(h), "{target}: {h}");
        }
    }
    let head = gw
        .request(
            "HEAD",
            &format!("/ipfs/{DIR}/multiblock.txt"),
            &[("Range", "bytes=0-9")],
        )
        .await;
    assert_eq!(head.status, 206);
    assert_eq!(head.header("content-length"), Some("10"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_400_and_unproducible_cars_406() {
    let (gw, _) = Gateway::with_fixtures().await;
    for target in [
        "/ipfs/not-a-cid".to_string(),
        "/ipfs/bafy!!".into(),
        "/ipfs/Qm".into(),
        "/ipfs/QmQmQmQm/hello.txt".into(),
        "/ipfs/not-a-cid?format=raw".into(),
        "/ipfs/not-a-cid?format=car".into(),
        format!("/ipfs/{DIR}/%FF"),
        format!("/ipfs/{DIR}?format=zip"),
        format!("/ipfs/{DIR}?format=car&dag-scope=most"),
        format!("/ipfs/{DIR}?format=car&entity-bytes=1-2"),
        format!("/ipfs/{DIR}?format=car&entity-bytes=5:4"),
        format!("/ipfs/{DIR}?format=car&entity-bytes=a:*"),
    ] {
        let r = gw.get(&target).await;
        assert_eq!(r.status, 400, "{target}: {}", r.text());
    }
    for (target, accept) in [
        (format!("/ipfs/{DIR}?format=car&car-version=2"), ""),
        (format!("/ipfs/{DIR}?format=car&car-dups=y"), ""),
        (format!("/ipfs/{DIR}?format=car&car-order=random"), ""),
        (
            format!("/ipfs/{DIR}"),
            "application/vnd.ipld.car; version=2",
        ),
        (format!("/ipfs/{DIR}"), "application/vnd.ipld.car; dups=y"),
        (
            format!("/ipfs/{DIR}?format=car"),
            "application/vnd.ipld.car;dups=y",
        ),
    ] {
        let headers: Vec<(&str, &str)> = if accept.is_empty() {
            vec![]
        } else {
            vec![("Accept", accept)]
        };
        let r = gw.request("GET", &target, &headers).await;
        assert_eq!(r.status, 406, "{target} {accept}: {}", r.text());
    }
    // order=unk accepts the depth-first order this gateway sends.
    let r = gw
        .request(
            "GET",
            &format!("/ipfs/{HELLO}"),
            &[("Accept", "application/vnd.ipld.car; order=unk")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(CAR_TYPE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_query_wins_over_accept() {
    let gw = Gateway::start().await;
    gw.import("dir-with-files.car").await;
    let path = format!("/ipfs/{DIR}/hello.txt");
    let car = [("Accept", "application/vnd.ipld.car")];
    let raw = [("Accept", "application/vnd.ipld.raw")];
    let r = gw.request("GET", &format!("{path}?format=raw"), &car).await;
    assert_eq!(r.header("content-type"), Some("application/vnd.ipld.raw"));
    let r = gw.request("GET", &format!("{path}?format=car"), &raw).await;
    assert_eq!(r.header("content-type"), Some(CAR_TYPE));
    let r = gw
        .request("GET", &path, &[("Accept", "text/html,*/*;q=0.8")])
        .await;
    assert_eq!(r.text(), "hello world\n");
    let r = gw
        .request(
            "GET",
            &path,
            &[(
                "Accept",
                "application/vnd.ipld.raw;q=0.5, application/vnd.ipld.car",
            )],
        )
        .await;
    assert_eq!(r.header("content-type"), Some(CAR_TYPE), "higher q wins");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dag_scope_and_entity_bytes_choose_the_blocks() {
    let (gw, _) = Gateway::with_fixtures().await;
    let (dir, hamt, file) = (cid(DIR), cid(HAMT), cid(MULTIBLOCK));
    let car = |q: String| {
        let gw = &gw;
        async move { gw.get(&q).await }
    };
    let file_blocks = dfs(&gw.store, &file).await;
    assert_eq!(file_blocks.len(), 6, "a root and five 256-byte leaves");
    let leaves = &file_blocks[1..];
    let mut etags = HashSet::new();

    // A basic directory.
    let r = car(format!("/ipfs/{DIR}?format=car&dag-scope=block")).await;
    assert_eq!(car_of(&r, &dir), [dir]);
    etags.insert(r.header("etag").map(str::to_string));
    let r = car(format!("/ipfs/{DIR}?format=car&dag-scope=entity")).await;
    assert_eq!(car_of(&r, &dir), [dir], "a basic directory is one block");
    etags.insert(r.header("etag").map(str::to_string));
    let r = car(format!("/ipfs/{DIR}?format=car&dag-scope=all")).await;
    assert_eq!(car_of(&r, &dir), dfs(&gw.store, &dir).await);
    etags.insert(r.header("etag").map(str::to_string));
    let r = car(format!("/ipfs/{DIR}?format=car&entity-bytes=0:10")).await;
    assert_eq!(
        car_of(&r, &dir),
        [dir],
        "entity-bytes on a directory: entity"
    );

    // A HAMT directory: entity is every shard and no entry.
    let r = car(format!("/ipfs/{HAMT}?format=car&dag-scope=block")).await;
    assert_eq!(car_of(&r, &hamt), [hamt]);
    let r = car(format!("/ipfs/{HAMT}?format=car&dag-scope=entity")).await;
    let shards = car_of(&r, &hamt);
    let all = dfs(&gw.store, &hamt).await;
    assert_eq!(shards.len(), all.len() - file_blocks.len(), "shards only");
    assert!(shards.iter().all(|c| !file_blocks.contains(c)));
    let (_d, client) = client_store(&r).await;
    assert_eq!(
        unixfs::list(&client, &hamt).await.expect("listable").len(),
        1000
    );
    let r = car(format!("/ipfs/{HAMT}?format=car")).await;
    assert_eq!(car_of(&r, &hamt), all);

    // A file under a directory: the directory proves the path, then the file.
    let base = format!("/ipfs/{DIR}/multiblock.txt?format=car");
    let r = car(format!("{base}&dag-scope=block")).await;
    assert_eq!(car_of(&r, &file), [dir, file]);
    etags.insert(r.header("etag").map(str::to_string));
    for scope in ["entity", "all"] {
        let r = car(format!("{base}&dag-scope={scope}")).await;
        let mut want = vec![dir];
        want.extend(&file_blocks);
        assert_eq!(car_of(&r, &file), want, "{scope}");
        etags.insert(r.header("etag").map(str::to_string));
    }
    let lorem = lorem();
    for (bytes, want_leaves, range) in [
        ("0:0", &leaves[..1], 0..1),
        ("0:255", &leaves[..1], 0..256),
        ("255:256", &leaves[..2], 255..257),
        ("256:511", &leaves[1..2], 256..512),
        ("-1:*", &leaves[4..], 1025..1026),
        ("-300:*", &leaves[2..], 726..1026),
        ("500:-500", &leaves[1..3], 500..527),
        ("0:*", leaves, 0..1026),
        ("0:99999", leaves, 0..1026),
        ("2000:*", &leaves[..0], 0..0),
        ("-5:-10", &leaves[..0], 0..0),
    ] {
        let r = car(format!("{base}&entity-bytes={bytes}")).await;
        let mut want = vec![dir, file];
        want.extend(want_leaves);
        assert_eq!(car_of(&r, &file), want, "entity-bytes={bytes}");
        etags.insert(r.header("etag").map(str::to_string));
        if range.is_empty() {
            continue;
        }
        // The client can read exactly that range from what it got.
        let (_d, client) = client_store(&r).await;
        let (_, mut s) = client
            .read(&file, Some(range.clone()))
            .await
            .expect("range readable");
        let mut got = Vec::new();
        while let Some(b) = futures::StreamExt::next(&mut s).await {
            got.extend_from_slice(&b.expect("bytes"));
        }
        assert_eq!(
            got,
            &lorem[range.start as usize..range.end as usize],
            "entity-bytes={bytes}"
        );
    }
    // Every scope and range had its own Etag.
    assert_eq!(etags.len(), 6 + 11);
    assert!(etags.iter().all(Option::is_some));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_are_served_as_their_target_text() {
    let gw = Gateway::start().await;
    gw.import("symlink.car").await;
    let root = fixture("symlink.car").roots[0];
    let r = gw.get(&format!("/ipfs/{root}/bar")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "foo"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    let r = gw.get(&format!("/ipfs/{root}/foo")).await;
    assert_eq!(r.status, 200);
    // As a CAR, a symlink is its one block.
    let r = gw.get(&format!("/ipfs/{root}/bar?format=car")).await;
    let link = cid(r
        .header("x-ipfs-roots")
        .expect("roots")
        .split(',')
        .nth(1)
        .expect("2"));
    assert_eq!(car_of(&r, &link), [root, link]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_requests_get_304() {
    let gw = Gateway::start().await;
    gw.import("dir-with-files.car").await;
    for target in [
        format!("/ipfs/{DIR}/hello.txt"),
        format!("/ipfs/{DIR}/hello.txt?format=raw"),
        format!("/ipfs/{DIR}/multiblock.txt?format=car&dag-scope=entity"),
        format!("/ipfs/{DIR}/"),
    ] {
        let r = gw.get(&target).await;
        let etag = r.header("etag").expect("etag").to_string();
        let r = gw
            .request("GET", &target, &[("If-None-Match", &etag)])
            .await;
        assert_eq!(r.status, 304, "{target}");
        assert!(r.body.is_empty());
        let r = gw
            .request("GET", &target, &[("If-None-Match", "\"something-else\"")])
            .await;
        assert_eq!(r.status, 200, "{target}");
    }
}
