//! Writes the seed corpora of the fuzz targets (`fuzz/corpus/<target>/`), a handful of
//! small valid inputs each, built with the real code so that they stay valid as it
//! changes: `cargo run --example make_corpus` in `fuzz/` (stable is enough).
//!
//! Old seeds are replaced: every file this writes is named for what it is.

use std::path::{Path, PathBuf};

use cidmirror_fuzz::fixtures::{self, FIRST};
use cidmirror_resolver::follow::pacdb;
use cidmirror_store::Cid;
use cidmirror_store::hash::{HashAlg, raw_cid};

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("create a corpus directory");
    std::fs::write(d.join(name), bytes).expect("write a seed");
}

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("remove the old seeds");
    }

    // pacman_desc: entries as repo-add writes them, and the tolerated variants.
    let desc = fixtures::desc_text("bash", "5.2.037-1");
    write(&dir, "pacman_desc", "repo-add", desc.as_bytes());
    write(
        &dir,
        "pacman_desc",
        "epoch-no-final-blank",
        fixtures::desc_text("linux", "1:6.12.1-1")
            .trim_end()
            .as_bytes(),
    );
    write(
        &dir,
        "pacman_desc",
        "pgpsig",
        format!("{desc}%PGPSIG%\niHUEABYKAB0WIQQ=\n\n").as_bytes(),
    );
    write(
        &dir,
        "pacman_desc",
        "minimal",
        b"%FILENAME%\na-1-1-any.pkg.tar.zst\n\n%NAME%\na\n\n%VERSION%\n1-1\n\n%CSIZE%\n1\n\n\
          %SHA256SUM%\n0000000000000000000000000000000000000000000000000000000000000000\n",
    );

    // pacman_db: the follower's own database builder lays out what repo-add does, in
    // every compression pacman reads.
    let entries: Vec<(pacdb::Desc, Vec<u8>)> = [("acl", "2.3-1"), ("bash", "5.2-1")]
        .iter()
        .map(|(n, v)| {
            let text = fixtures::desc_text(n, v).into_bytes();
            (pacdb::parse_desc(&text).expect("a valid desc"), text)
        })
        .collect();
    for name in [
        "core.db.tar",
        "core.db.tar.gz",
        "core.db.tar.zst",
        "core.db.tar.xz",
        "core.db.tar.bz2",
    ] {
        let db = pacdb::build_db(&entries, name).expect("build a database");
        write(&dir, "pacman_db", name, &db);
    }
    write(&dir, "pacman_db", "empty.db.tar", &[0u8; 1024]);

    // car, hamt, dag_pb: a HAMT directory, a file of several levels, a listing.
    let (hamt_root, hamt_blocks) = fixtures::hamt_directory(40, 16);
    let (file_root, file_blocks) = fixtures::chunked_file(3000, 256, 4);
    let hamt_car = fixtures::car_of(&[hamt_root], &hamt_blocks);
    let file_car = fixtures::car_of(&[file_root], &file_blocks);
    let first = fixtures::snapshot(FIRST, None);
    write(&dir, "car", "hamt", &hamt_car);
    write(&dir, "car", "file", &file_car);
    write(&dir, "car", "listing", &first.car());
    let hello = b"hello world".to_vec();
    write(
        &dir,
        "car",
        "one-raw-block",
        &fixtures::car_of(
            &[raw_cid(HashAlg::Sha2_256, &hello)],
            &[(raw_cid(HashAlg::Sha2_256, &hello), hello)],
        ),
    );
    let with_name = |name: &str, car: &[u8]| {
        let mut out = vec![name.len() as u8];
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(car);
        out
    };
    write(&dir, "hamt", "hamt-hit", &with_name("file-7", &hamt_car));
    write(&dir, "hamt", "hamt-miss", &with_name("nothing", &hamt_car));
    write(&dir, "hamt", "file", &with_name("", &file_car));
    write(
        &dir,
        "hamt",
        "listing",
        &with_name("manifest.json", &first.car()),
    );
    let mut pb_blocks: Vec<&(Cid, Vec<u8>)> = hamt_blocks
        .iter()
        .chain(&file_blocks)
        .filter(|(c, _)| c.codec() == cidmirror_store::hash::DAG_PB)
        .collect();
    pb_blocks.sort_by_key(|(_, b)| b.len());
    pb_blocks.dedup_by_key(|(_, b)| b.len() / 64);
    for (i, (_, b)) in pb_blocks.iter().take(6).enumerate() {
        write(&dir, "dag_pb", &format!("block-{i}"), b);
    }
    write(
        &dir,
        "dag_pb",
        "leaf",
        &cidmirror_store::pb::file_leaf_block(b"hello world"),
    );

    // cid: the forms a CID string takes (v0, v1 base32, base36, identity), each
    // optionally followed by a newline and the bytes of a block.
    for (name, s) in [
        (
            "v0",
            "QmWATWQ7fVPP2EFGu71UkfnqhYXDYH566qy47CnJDgvs8u".to_string(),
        ),
        ("v1", raw_cid(HashAlg::Sha2_256, b"hello world").to_string()),
        ("identity", "bafkqaaa".to_string()),
        ("dag-pb", hamt_root.to_string()),
        ("blake2b", raw_cid(HashAlg::Blake2b256, b"x").to_string()),
    ] {
        write(&dir, "cid", name, s.as_bytes());
    }
    write(
        &dir,
        "cid",
        "with-block",
        format!(
            "{}\nhello world",
            raw_cid(HashAlg::Sha2_256, b"hello world")
        )
        .as_bytes(),
    );

    // gateway: requests over the gateway target's content.
    let g = fixtures::gateway_content();
    let (dir_cid, hamt_cid, file_cid) = (g.dir.0, g.hamt.0, g.file.0);
    let pkg = "acl-2.3-1-x86_64.pkg.tar.zst";
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(pkg.as_bytes()));
    let root = g.snapshot.root();
    let requests: Vec<(&str, Vec<u8>)> = vec![
        (
            "mirror-package",
            fixtures::request_text(
                "GET",
                &format!("/core/os/x86_64/{pkg}"),
                &[("range", "bytes=2-9")],
                b"",
            ),
        ),
        (
            "mirror-db",
            fixtures::request_text(
                "HEAD",
                "/core/os/x86_64/core.db",
                &[("if-modified-since", "Thu, 01 Jan 1970 00:00:00 GMT")],
                b"",
            ),
        ),
        (
            "ipfs-hamt-path",
            fixtures::request_text("GET", &format!("/ipfs/{dir_cid}/hamt/file-3"), &[], b""),
        ),
        (
            "ipfs-listing",
            fixtures::request_text("GET", &format!("/ipfs/{hamt_cid}/"), &[], b""),
        ),
        (
            "ipfs-car-range",
            fixtures::request_text(
                "GET",
                &format!("/ipfs/{file_cid}?format=car&dag-scope=entity&entity-bytes=100:-200"),
                &[],
                b"",
            ),
        ),
        (
            "ipfs-raw-accept",
            fixtures::request_text(
                "GET",
                &format!("/ipfs/{dir_cid}/file.bin"),
                &[(
                    "accept",
                    "application/vnd.ipld.raw;q=0.9, application/vnd.ipld.car;version=1;order=dfs;dups=n",
                )],
                b"",
            ),
        ),
        (
            "ipfs-etag",
            fixtures::request_text(
                "GET",
                &format!("/ipfs/{root}/index/core/x86_64/bash"),
                &[("if-none-match", &format!("\"{root}\""))],
                b"",
            ),
        ),
        (
            "by-hash",
            fixtures::request_text("GET", &format!("/by-hash/sha256/{sha}"), &[], b""),
        ),
        (
            "resolve-sha",
            fixtures::request_text("GET", &format!("/api/v1/resolve?sha256={sha}"), &[], b""),
        ),
        (
            "resolve-path",
            fixtures::request_text(
                "GET",
                &format!("/api/v1/resolve?path=core/os/x86_64/{pkg}"),
                &[],
                b"",
            ),
        ),
        (
            "delta",
            fixtures::request_text(
                "GET",
                &format!("/api/v1/delta/{root}"),
                &[("accept-encoding", "zstd, gzip")],
                b"",
            ),
        ),
        (
            "snapshot",
            fixtures::request_text("GET", "/api/v1/snapshot/current", &[], b""),
        ),
        (
            "volunteer-announce",
            fixtures::request_text(
                "POST",
                "/api/v1/volunteers",
                &[
                    ("content-type", "application/json"),
                    ("x-forwarded-for", "10.0.0.1"),
                ],
                br#"{"id":"a1b2c3","url":"http://10.0.0.7:7878/","budget":5000000}"#,
            ),
        ),
        (
            "volunteer-list",
            fixtures::request_text("GET", "/api/v1/volunteers", &[], b""),
        ),
        (
            "encoded-segment",
            fixtures::request_text("GET", "/core/os/x86_64/%2e%2e", &[], b""),
        ),
    ];
    for (name, r) in requests {
        write(&dir, "gateway", name, &r);
    }
    // Its dictionary: the routes, parameters and headers, and the CIDs the store holds.
    let mut dict = String::from("# written by examples/make_corpus.rs\n");
    for token in [
        "GET ",
        "HEAD ",
        "POST ",
        "OPTIONS ",
        "/ipfs/",
        "/os/",
        "/core/os/x86_64/",
        "/by-hash/sha256/",
        "/api/v1/resolve?sha256=",
        "/api/v1/resolve?path=",
        "/api/v1/delta/",
        "/api/v1/volunteers",
        "/api/v1/snapshot/current",
        "/api/v1/follow/status",
        "/metrics",
        "?format=raw",
        "?format=car",
        "&format=",
        "dag-scope=block",
        "dag-scope=entity",
        "dag-scope=all",
        "entity-bytes=",
        ":*",
        "car-version=1",
        "car-order=dfs",
        "car-dups=n",
        "accept: ",
        "range: bytes=",
        "if-none-match: ",
        "if-modified-since: ",
        "if-range: ",
        "accept-encoding: ",
        "x-forwarded-for: ",
        "content-type: ",
        "application/vnd.ipld.raw",
        "application/vnd.ipld.car",
        ";version=1",
        ";order=dfs",
        ";dups=y",
        ";q=0",
        "%2F",
        "%2f",
        "%00",
        "%2e%2e",
        "%5C",
        "..",
        "//",
        "core.db",
        "core.db.sig",
        ".pkg.tar.zst",
        "\\\"id\\\":",
        "\\\"url\\\":",
        "\\\"budget\\\":",
    ] {
        dict.push_str(&format!("\"{token}\"\n"));
    }
    for c in [dir_cid, hamt_cid, file_cid, root] {
        dict.push_str(&format!("\"{c}\"\n"));
    }
    dict.push_str(&format!("\"{sha}\"\n"));
    let dict_path = dir
        .parent()
        .expect("fuzz/")
        .join("dict")
        .join("gateway.dict");
    std::fs::write(dict_path, dict).expect("write the gateway dictionary");

    // follow_changes and follow_delta: the second snapshot after the first, as the
    // publisher builds it.
    let second = fixtures::snapshot(
        &[("acl", "2.3-2"), ("bash", "5.2-1"), ("curl", "8.11-1")],
        Some(&first),
    );
    let changes = {
        let store = cidmirror_fuzz::MemStore::new();
        for (c, d) in second.blocks() {
            store.insert(*c, d.clone());
        }
        cidmirror_fuzz::block_on(async {
            let links = cidmirror_store::unixfs::list(&store, &second.root())
                .await
                .expect("a listing");
            let c = links
                .iter()
                .find(|l| l.name == "changes.jsonl")
                .expect("changes.jsonl");
            let (_, s) = cidmirror_store::Store::read(&store, &c.cid, None)
                .await
                .expect("read changes");
            let parts: Vec<bytes::Bytes> = futures::TryStreamExt::try_collect(s)
                .await
                .expect("changes");
            parts.concat()
        })
    };
    let mut input = second.listing.manifest.clone();
    input.push(0);
    input.extend_from_slice(&changes);
    write(&dir, "follow_changes", "second", &input);
    let mut removal = vec![0u8];
    removal.extend(
        changes
            .split(|&b| b == b'\n')
            .find(|l| l.starts_with(br#"{"op":"remove""#))
            .unwrap_or_default(),
    );
    write(&dir, "follow_changes", "one-removal", &removal);
    write(&dir, "follow_delta", "second", &second.car());
    write(&dir, "follow_delta", "first", &first.car());

    // feed: what the publisher's /feed sends, with a keep-alive comment between events.
    let a = fixtures::snapshot_event_json(1, &first.root(), None);
    let b = fixtures::snapshot_event_json(2, &second.root(), Some(&first.root()));
    let body = format!(
        "\x10id: 1\nevent: snapshot\ndata: {a}\n\n:\n\nid: 2\nevent: snapshot\ndata: {b}\n\n"
    );
    write(&dir, "feed", "two-events", body.as_bytes());
    write(
        &dir,
        "feed",
        "message-crlf",
        format!("\x03data: {b}\r\n\r\n").as_bytes(),
    );

    // settings: the documented examples.
    write(
        &dir,
        "settings",
        "mirror",
        b"upstream = \"https://geo.mirror.pkgbuild.com/\"\nrepos = [\"core\", \"extra\"]\n\
          arches = [\"x86_64\"]\ninterval = \"5m\"\nconcurrency = 4\nprofile = \"unixfs-v1-2025\"\n\
          keep_snapshots = 10\ngrace = \"14days\"\nstall_timeout = \"30s\"\nstore = \"embedded\"\n",
    );
    write(
        &dir,
        "settings",
        "serve-follow",
        b"[serve]\nlisten = \"127.0.0.1:7878\"\nmax_connections = 4096\nheader_timeout = \"10s\"\n\
          shutdown_grace = \"30s\"\nfollow = \"http://publisher.example:7878/\"\n\
          publisher_key = \"ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c\"\n\
          sources = [\"http://peer.lan:7878/\"]\nfallback_mirrors = [\"https://geo.mirror.pkgbuild.com/\"]\n\
          cache_budget = \"20G\"\nuse_volunteers = true\npublic_url = \"http://me.example:7878/\"\n",
    );
    write(
        &dir,
        "settings",
        "serve-tracker",
        b"[serve]\nvolunteer_ttl = \"90s\"\nvolunteer_max = 10000\nvolunteer_announces_per_minute = 30\n\
          volunteer_lists_per_minute = 60\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\n",
    );
    println!("seeds written to {}", dir.display());
}
