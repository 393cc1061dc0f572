//! `GET /api/v1/delta/{root}`: exactly the blocks a follower needs to rebuild a snapshot
//! from its predecessor (root, the path to and the blocks of `manifest.json` and
//! `changes.jsonl`, the new `desc` files), compressed as the client accepts, and a 404
//! naming what is missing when the store does not hold all of it.

use std::collections::HashSet;
use std::io::Read;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use cid::Cid;
use cidmirror_listing::{ChangeLine, FileRef, Item, ItemKind, Op};
use cidmirror_resolver::snapshot::Snapshots;
use cidmirror_resolver::{AppState, router};
use cidmirror_store::car::CarReader;
use cidmirror_store::dir::{DirEntry, Tree};
use cidmirror_store::hash::{DAG_PB, HashAlg, verify_block};
use cidmirror_store::importer::{self, VecSink};
use cidmirror_store::pb::{self, DataType};
use cidmirror_store::{Block, EmbeddedStore, ImportParams, Profile, Store, unixfs};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// A file imported under `params`: its entry and every block of it.
struct File {
    entry: DirEntry,
    blocks: Vec<(Cid, Vec<u8>)>,
}

impl File {
    fn new(data: &[u8], params: &ImportParams) -> File {
        let mut sink = VecSink::default();
        let f = importer::import(data, params, &mut sink).expect("import");
        File {
            entry: DirEntry {
                cid: f.cid,
                tsize: f.tsize,
            },
            blocks: sink.0,
        }
    }

    fn cids(&self) -> HashSet<Cid> {
        self.blocks.iter().map(|(c, _)| *c).collect()
    }
}

/// A snapshot listing built by hand, as the publisher lays it out.
struct Listing {
    root: Cid,
    manifest: File,
    changes: File,
    /// `desc` of the two added packages (`bar`'s spans several blocks).
    foo_desc: File,
    bar_desc: File,
    /// `desc` of the removed package (still held from the previous snapshot).
    old_desc: File,
    /// Unchanged package's `desc`, and the package files.
    others: Vec<File>,
    /// Directory (and HAMT shard) blocks.
    dirs: Vec<(Cid, Vec<u8>)>,
}

impl Listing {
    fn build(params: &ImportParams) -> Listing {
        let file = |data: &[u8]| File::new(data, params);
        let foo_pkg = file(b"foo package bytes");
        let bar_pkg = file(b"bar package bytes");
        let baz_pkg = file(b"baz package bytes, unchanged");
        let foo_desc = file(b"%FILENAME%\nfoo-1.0-1-x86_64.pkg.tar.zst\n\n%NAME%\nfoo\n");
        // Larger than one chunk: several blocks.
        let mut big = b"%FILENAME%\nbar-2.0-1-x86_64.pkg.tar.zst\n\n%DESC%\n".to_vec();
        big.resize(params.chunk_size * 2 + 100, b'x');
        let bar_desc = file(&big);
        let baz_desc = file(b"%FILENAME%\nbaz-1.0-1-x86_64.pkg.tar.zst\n\n%NAME%\nbaz\n");
        let old_desc = file(b"%FILENAME%\nold-0.1-1-x86_64.pkg.tar.zst\n\n%NAME%\nold\n");
        let fref = |f: &File| FileRef {
            size: 17,
            sha256: cidmirror_store::Sha256([0; 32]),
            cid: f.entry.cid,
            tsize: f.entry.tsize,
        };
        let line = |op: Op, name: &str, pkg: &File, desc: &File| {
            let it = Item {
                repo: "core".into(),
                arch: "x86_64".into(),
                kind: ItemKind::Package,
                filename: format!("{name}-1.0-1-x86_64.pkg.tar.zst"),
                alias: None,
                file: fref(pkg),
                sig: None,
                package: Some((name.into(), desc.entry)),
            };
            serde_json::to_string(&ChangeLine::new(op, &it)).expect("a line") + "\n"
        };
        // A database line: no desc file.
        let db = Item {
            repo: "core".into(),
            arch: "x86_64".into(),
            kind: ItemKind::Database,
            filename: "core.db".into(),
            alias: None,
            file: fref(&baz_pkg),
            sig: None,
            package: None,
        };
        let changes_text = [
            line(Op::Remove, "old", &baz_pkg, &old_desc),
            line(Op::Add, "bar", &bar_pkg, &bar_desc),
            line(Op::Add, "foo", &foo_pkg, &foo_desc),
            serde_json::to_string(&ChangeLine::new(Op::Change, &db)).expect("a line") + "\n",
        ]
        .concat();
        let changes = file(changes_text.as_bytes());
        let manifest = file(b"{\"format\":1,\"profile\":\"unixfs-v1-2025\",\"previous\":null}\n");

        let mut tree = Tree::new();
        let put = |tree: &mut Tree, path: &str, f: &File| tree.insert(path, f.entry).expect(path);
        put(&mut tree, "manifest.json", &manifest);
        put(&mut tree, "changes.jsonl", &changes);
        put(
            &mut tree,
            "core/os/x86_64/foo-1.0-1-x86_64.pkg.tar.zst",
            &foo_pkg,
        );
        put(
            &mut tree,
            "core/os/x86_64/bar-2.0-1-x86_64.pkg.tar.zst",
            &bar_pkg,
        );
        put(
            &mut tree,
            "core/os/x86_64/baz-1.0-1-x86_64.pkg.tar.zst",
            &baz_pkg,
        );
        put(&mut tree, "index/core/x86_64/foo", &foo_desc);
        put(&mut tree, "index/core/x86_64/bar", &bar_desc);
        put(&mut tree, "index/core/x86_64/baz", &baz_desc);
        let mut sink = VecSink::default();
        let root = tree.build(params, &mut sink).expect("build").cid;
        Listing {
            root,
            manifest,
            changes,
            foo_desc,
            bar_desc,
            old_desc,
            others: vec![foo_pkg, bar_pkg, baz_pkg, baz_desc],
            dirs: sink.0,
        }
    }

    /// Every block, except those in `leave_out`.
    fn blocks(&self, leave_out: &HashSet<Cid>) -> Vec<Block> {
        let files = [
            &self.manifest,
            &self.changes,
            &self.foo_desc,
            &self.bar_desc,
            &self.old_desc,
        ];
        files
            .into_iter()
            .chain(&self.others)
            .flat_map(|f| f.blocks.iter())
            .chain(&self.dirs)
            .filter(|(c, _)| !leave_out.contains(c))
            .map(|(cid, data)| Block {
                cid: *cid,
                data: data.clone().into(),
            })
            .collect()
    }

    /// What the delta must carry, the root's HAMT shards aside.
    fn expected(&self) -> HashSet<Cid> {
        let mut want = HashSet::from([self.root]);
        for f in [
            &self.manifest,
            &self.changes,
            &self.foo_desc,
            &self.bar_desc,
        ] {
            want.extend(f.cids());
        }
        want
    }
}

/// A gateway state over a fresh store holding `blocks`.
async fn state_with(blocks: Vec<Block>) -> (tempfile::TempDir, AppState) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(&dir.path().join("store")).expect("store");
    store.put_blocks(blocks).await.expect("put");
    (dir, AppState::new(store, Snapshots::manual()))
}

struct Answer {
    status: StatusCode,
    encoding: Option<String>,
    vary: Vec<String>,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// `GET target` through the router, without a socket.
async fn get(state: &AppState, target: &str, accept_encoding: Option<&str>) -> Answer {
    let mut req = Request::get(target);
    if let Some(ae) = accept_encoding {
        req = req.header(header::ACCEPT_ENCODING, ae);
    }
    let req = req.body(Body::empty()).expect("request");
    let resp = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        router(state.clone()).oneshot(req),
    )
    .await
    .expect("answer within 60 s")
    .expect("infallible");
    let h = resp.headers();
    let text = |name: header::HeaderName| {
        h.get(name)
            .map(|v| v.to_str().expect("ASCII header").to_string())
    };
    let (encoding, content_type) = (text(header::CONTENT_ENCODING), text(header::CONTENT_TYPE));
    let vary = h
        .get_all(header::VARY)
        .iter()
        .map(|v| v.to_str().expect("ASCII header").to_string())
        .collect();
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    Answer {
        status,
        encoding,
        vary,
        content_type,
        body,
    }
}

/// The delta's CAR, decompressed as its `Content-Encoding` says.
fn car_bytes(a: &Answer) -> Vec<u8> {
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(a.content_type.as_deref(), Some("application/vnd.ipld.car"));
    assert!(
        a.vary
            .iter()
            .any(|v| v.eq_ignore_ascii_case("accept-encoding")),
        "{:?}",
        a.vary
    );
    match a.encoding.as_deref() {
        None => a.body.clone(),
        Some("zstd") => zstd::decode_all(&a.body[..]).expect("zstd"),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&a.body[..])
                .read_to_end(&mut out)
                .expect("gzip");
            out
        }
        Some(other) => panic!("unexpected Content-Encoding {other}"),
    }
}

/// Roots and blocks of a CAR, each block checked against its CID; no block twice.
fn parse_car(car: &[u8]) -> (Vec<Cid>, Vec<(Cid, Vec<u8>)>) {
    let mut r = CarReader::new(car, "delta").expect("CAR header");
    let roots = r.roots().to_vec();
    let mut blocks = Vec::new();
    while let Some((cid, data)) = r.next_block().expect("a verified block") {
        verify_block(&cid, &data).expect("block matches its CID");
        blocks.push((cid, data));
    }
    let unique: HashSet<Cid> = blocks.iter().map(|(c, _)| *c).collect();
    assert_eq!(unique.len(), blocks.len(), "no block twice");
    (roots, blocks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_carries_exactly_root_manifest_changes_and_new_descs() {
    let params = Profile::UnixfsV1_2025.params();
    let l = Listing::build(&params);
    assert!(
        l.bar_desc.blocks.len() > 1,
        "bar's desc spans several blocks"
    );
    let (_dir, state) = state_with(l.blocks(&HashSet::new())).await;
    let target = format!("/api/v1/delta/{}", l.root);

    let zstd = get(&state, &target, Some("gzip, zstd")).await;
    assert_eq!(zstd.encoding.as_deref(), Some("zstd"));
    let car = car_bytes(&zstd);
    let (roots, blocks) = parse_car(&car);
    assert_eq!(roots, [l.root]);
    assert_eq!(blocks[0].0, l.root, "the root comes first");
    let got: HashSet<Cid> = blocks.iter().map(|(c, _)| *c).collect();
    assert_eq!(got, l.expected());
    for c in l.old_desc.cids() {
        assert!(
            !got.contains(&c),
            "the removed package's desc {c} is not sent"
        );
    }
    for f in &l.others {
        assert!(!got.contains(&f.entry.cid), "{} is not sent", f.entry.cid);
    }

    // The same CAR under gzip and with no compression.
    let gzip = get(&state, &target, Some("gzip;q=1.0, zstd;q=0")).await;
    assert_eq!(gzip.encoding.as_deref(), Some("gzip"));
    assert_eq!(car_bytes(&gzip), car);
    let plain = get(&state, &target, None).await;
    assert_eq!(plain.encoding, None);
    assert_eq!(plain.body, car);
    assert!(zstd.body.len() < car.len(), "compressed");

    // What a follower can do with it: read both files from the root.
    let dir = tempfile::tempdir().expect("temp dir");
    let client = EmbeddedStore::open(dir.path()).expect("client store");
    client
        .import_car(Box::new(std::io::Cursor::new(car)), "delta".into(), None)
        .await
        .expect("the delta imports");
    let changes = unixfs::resolve(&client, &l.root, "changes.jsonl")
        .await
        .expect("changes.jsonl is reachable from the root");
    assert_eq!(changes, l.changes.entry.cid);
    for f in [&l.manifest, &l.changes, &l.foo_desc, &l.bar_desc] {
        assert!(unixfs::complete(&client, &f.entry.cid).await.expect("walk"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_root_brings_the_shards_walked() {
    let params = ImportParams {
        hamt_threshold: 0,
        hamt_fanout: 16,
        ..Profile::UnixfsV1_2025.params()
    };
    let l = Listing::build(&params);
    let (_dir, state) = state_with(l.blocks(&HashSet::new())).await;
    let a = get(&state, &format!("/api/v1/delta/{}", l.root), Some("zstd")).await;
    let (roots, blocks) = parse_car(&car_bytes(&a));
    assert_eq!(roots, [l.root]);
    let got: HashSet<Cid> = blocks.iter().map(|(c, _)| *c).collect();
    let want = l.expected();
    assert!(want.is_subset(&got), "missing {:?}", want.difference(&got));
    let shard = |data: &[u8]| {
        let node = pb::decode_node(data).expect("dag-pb");
        pb::decode_unixfs(node.data.expect("data"))
            .expect("unixfs")
            .typ
    };
    assert_eq!(
        shard(&blocks[0].1),
        Some(DataType::HamtShard),
        "the root is a shard"
    );
    for (c, data) in &blocks {
        if !want.contains(c) {
            assert_eq!(c.codec(), DAG_PB, "{c}");
            assert_eq!(
                shard(data),
                Some(DataType::HamtShard),
                "{c} is a shard walked"
            );
        }
    }
    // The shards carried prove both names.
    let dir = tempfile::tempdir().expect("temp dir");
    let client = EmbeddedStore::open(dir.path()).expect("client store");
    let car = car_bytes(&a);
    client
        .import_car(Box::new(std::io::Cursor::new(car)), "delta".into(), None)
        .await
        .expect("imports");
    for (name, f) in [
        ("manifest.json", &l.manifest),
        ("changes.jsonl", &l.changes),
    ] {
        let c = unixfs::resolve(&client, &l.root, name).await.expect(name);
        assert_eq!(c, f.entry.cid, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_not_held_is_404_naming_it_and_bad_roots_400() {
    let params = Profile::UnixfsV1_2025.params();
    let l = Listing::build(&params);

    // A new package's desc missing.
    let gone = l.foo_desc.entry.cid;
    let (_d1, state) = state_with(l.blocks(&HashSet::from([gone]))).await;
    let a = get(&state, &format!("/api/v1/delta/{}", l.root), Some("zstd")).await;
    let text = String::from_utf8_lossy(&a.body).to_string();
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{text}");
    assert!(text.contains(&gone.to_string()), "{text}");
    assert!(
        a.vary.iter().any(|v| v == "Accept-Encoding"),
        "{:?}",
        a.vary
    );

    // One block of changes.jsonl missing.
    let (_d2, state) = state_with(l.blocks(&HashSet::from([l.changes.entry.cid]))).await;
    let a = get(&state, &format!("/api/v1/delta/{}", l.root), None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&a.body).contains(&l.changes.entry.cid.to_string()));

    // The root itself not held; a root that is no listing; a CID that does not parse.
    let (_d3, state) = state_with(l.blocks(&HashSet::from([l.root]))).await;
    let a = get(&state, &format!("/api/v1/delta/{}", l.root), None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&a.body).contains(&l.root.to_string()));
    let sub = l.dirs[0].0; // a directory deeper down, without manifest.json
    let a = get(&state, &format!("/api/v1/delta/{sub}"), None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&a.body).contains("manifest.json"));
    for bad in ["not-a-cid", "bafkqaaa%2Fx"] {
        let a = get(&state, &format!("/api/v1/delta/{bad}"), None).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
    }

    // The metrics count the route under its own label.
    let m = get(&state, "/metrics", None).await;
    let text = String::from_utf8_lossy(&m.body).to_string();
    assert!(text.contains("route=\"delta\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changes_file_over_64_mib_is_refused_before_it_is_read() {
    let params = Profile::UnixfsV1_2025.params();
    // A file root that declares 65 MiB, linking to a leaf that is not even held.
    let size = 65u64 << 20;
    let leaf = cidmirror_store::hash::raw_cid(HashAlg::Sha2_256, b"not held");
    let mut node = Vec::new();
    pb::put_link(&mut node, &leaf, b"", size);
    let u = pb::Unixfs {
        typ: Some(DataType::File),
        filesize: Some(size),
        blocksizes: vec![size],
        ..Default::default()
    };
    pb::put_data(&mut node, &u.encode());
    let changes = Cid::new_v1(DAG_PB, HashAlg::Sha2_256.digest(&node));
    let manifest = File::new(b"{}", &params);
    let mut tree = Tree::new();
    tree.insert("manifest.json", manifest.entry)
        .expect("insert");
    let e = DirEntry {
        cid: changes,
        tsize: size + node.len() as u64,
    };
    tree.insert("changes.jsonl", e).expect("insert");
    let mut sink = VecSink::default();
    let root = tree.build(&params, &mut sink).expect("build").cid;
    let mut blocks: Vec<Block> = sink
        .0
        .into_iter()
        .chain(manifest.blocks)
        .map(|(cid, data)| Block {
            cid,
            data: data.into(),
        })
        .collect();
    blocks.push(Block {
        cid: changes,
        data: node.into(),
    });
    let (_d, state) = state_with(blocks).await;
    let a = get(&state, &format!("/api/v1/delta/{root}"), None).await;
    let text = String::from_utf8_lossy(&a.body).to_string();
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{text}");
    assert!(
        text.contains("changes.jsonl") && text.contains("64 MiB"),
        "{text}"
    );
}
