//! `add` prints the CIDs Kubo prints; `cat` gives back exactly the bytes that went in.

use crate::support::*;

const HELLO: &[u8] = b"hello world";
const HELLO_V1: &str = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e";
const HELLO_V0: &str = "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD";
const MARS: &[u8] = b"Hello Mars!\n";
const VENUS: &[u8] = b"Hello Venus!\n";
const PLANETS_V1: &str = "bafybeih7e5dmkyk25up5vxug4q3hrg2fxbzf23dfrac2fns5h7z4aa7ioi";
const PLANETS_V0: &str = "QmWSgS32xQEcXMeqd3YPJLrNBLSdsfYCep2U7CFkyrjXwY";
// Kubo test/sharness/t0040-add-and-cat.sh (MARS, VENUS).
const MARS_V0: &str = "QmPrrHqJzto9m7SyiRzarwkqPcCSsKR2EB1AyqJfe8L8tN";
const VENUS_V0: &str = "QmU5kp3BH3B8tnWUU2Pikdb2maksBNkb92FHRr56hyghh4";

fn planets(t: &TestDir) {
    t.write("planets/mars.txt", MARS);
    t.write("planets/venus.txt", VENUS);
}

#[test]
fn add_file_prints_the_published_cid_for_each_profile() {
    let t = TestDir::new();
    t.write("hello.txt", HELLO);
    let d = t.data("data");
    assert_eq!(
        d.ok_text(&["add", "--no-progress", "hello.txt"]),
        format!("{HELLO_V1} hello.txt\n")
    );
    assert_eq!(
        d.ok_text(&[
            "add",
            "--no-progress",
            "--profile",
            "unixfs-v0-2015",
            "hello.txt"
        ]),
        format!("{HELLO_V0} hello.txt\n")
    );
    // The raw CID is also what the cid crate computes for those bytes.
    assert_eq!(raw_cid(HELLO), HELLO_V1);
    // -Q prints only the root.
    assert_eq!(
        d.ok_text(&["add", "-Q", "hello.txt"]),
        format!("{HELLO_V1}\n")
    );
}

#[test]
fn add_directory_prints_its_files_then_the_directory() {
    let t = TestDir::new();
    planets(&t);
    let d = t.data("data");
    for (profile, dir_cid, mars, venus) in [
        ("unixfs-v1-2025", PLANETS_V1, raw_cid(MARS), raw_cid(VENUS)),
        (
            "unixfs-v0-2015",
            PLANETS_V0,
            MARS_V0.to_string(),
            VENUS_V0.to_string(),
        ),
    ] {
        let out = d.ok_text(&["add", "--no-progress", "--profile", profile, "planets"]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{profile}: {out}");
        let mut files = lines[..2].to_vec();
        files.sort();
        assert_eq!(
            files,
            [
                format!("{mars} planets/mars.txt"),
                format!("{venus} planets/venus.txt")
            ],
            "{profile}: {out}"
        );
        assert_eq!(lines[2], format!("{dir_cid} planets"), "{profile}: {out}");
    }
}

#[test]
fn add_matches_published_cids_at_chunk_boundaries() {
    // IPIP-499 fixtures (Kubo test/cli/cid_profiles_test.go) and the empty file
    // (Kubo t0040-add-and-cat.sh ZEROHASH): a file of exactly one chunk, one byte more,
    // and nothing at all, under each profile.
    let cases: &[(&str, &str, u64, &str)] = &[
        (
            "unixfs-v1-2025",
            "chunk-v1-seed",
            CHUNK_V1,
            "bafkreiacndfy443ter6qr2tmbbdhadvxxheowwf75s6zehscklu6ezxmta",
        ),
        (
            "unixfs-v1-2025",
            "chunk-v1-seed",
            CHUNK_V1 + 1,
            "bafybeigmix7t42i6jacydtquhet7srwvgpizfg7gjbq7627d35mjomtu64",
        ),
        (
            "unixfs-v0-2015",
            "chunk-v0-seed",
            CHUNK_V0,
            "QmWmRj3dFDZdb6ABvbmKhEL6TmPbAfBZ1t5BxsEyJrcZhE",
        ),
        (
            "unixfs-v0-2015",
            "chunk-v0-seed",
            CHUNK_V0 + 1,
            "QmYyLxtzZyW22zpoVAtKANLRHpDjZtNeDjQdJrcQNWoRkJ",
        ),
        (
            "unixfs-v1-2025",
            "",
            0,
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
        ),
        (
            "unixfs-v0-2015",
            "",
            0,
            "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH",
        ),
    ];
    let t = TestDir::new();
    let d = t.data("data");
    for (i, &(profile, seed, len, want)) in cases.iter().enumerate() {
        let name = format!("f{i}.bin");
        let sha = write_chacha_file(&t.path(&name), seed, len);
        let got = d.add(&["--profile", profile], &[&name]);
        assert_eq!(got[&name], want, "{profile} {seed} {len} bytes");
        let (st, cat_sha, cat_len, err) = d.cat_sha256(want);
        assert!(st.success(), "cat {want}: {err}");
        assert_eq!((cat_sha, cat_len), (sha, len), "cat {want}");
    }
}

#[test]
fn add_matches_published_cids_around_max_links() {
    // IPIP-499: 174 chunks of 256 KiB fill one v0 node; one byte more needs a second level
    // (root with two links: a full node and a node with one leaf).
    let t = TestDir::new();
    let d = t.data("data");
    let n = 174 * CHUNK_V0;
    write_chacha_file(&t.path("at.bin"), "v0-seed", n);
    let at = d.ok_text(&["add", "-n", "-Q", "--profile", "unixfs-v0-2015", "at.bin"]);
    assert_eq!(at.trim(), "QmUbBALi174SnogsUzLpYbD4xPiBSFANF4iztWCsHbMKh2");
    let sha = write_chacha_file(&t.path("over.bin"), "v0-seed", n + 1);
    let over = d.add(&["--profile", "unixfs-v0-2015"], &["over.bin"]);
    let cid = &over["over.bin"];
    assert_eq!(cid, "QmV81WL765sC8DXsRhE5fJv2rwhS4icHRaf3J9Zk5FdRnW");
    let (st, cat_sha, cat_len, err) = d.cat_sha256(cid);
    assert!(st.success(), "cat {cid}: {err}");
    assert_eq!((cat_sha, cat_len), (sha, n + 1));
    // The last byte lives alone in the second subtree.
    let tail = d.ok(&["cat", "--offset", &(n - 1).to_string(), cid]);
    let all = std::fs::read(t.path("over.bin")).expect("reading over.bin");
    assert_eq!(tail, &all[(n - 1) as usize..]);
}

#[test]
fn only_hash_prints_the_same_cids_and_stores_nothing() {
    let t = TestDir::new();
    t.write("hello.txt", HELLO);
    planets(&t);
    let stored = t.data("stored");
    let hashed = t.data("hashed");
    for profile in ["unixfs-v1-2025", "unixfs-v0-2015"] {
        let a = stored.ok_text(&[
            "add",
            "--no-progress",
            "--profile",
            profile,
            "hello.txt",
            "planets",
        ]);
        let n = hashed.ok_text(&["add", "-n", "--profile", profile, "hello.txt", "planets"]);
        assert_eq!(n, a, "{profile}");
        let long = hashed.ok_text(&["add", "--only-hash", "--profile", profile, "hello.txt"]);
        assert_eq!(long, a.lines().next().unwrap().to_string() + "\n");
    }
    assert!(stored.kept_files().len() >= 3, "the normal add kept files");
    assert!(
        hashed.kept_files().is_empty(),
        "--only-hash kept files: {:?}",
        hashed.kept_files()
    );
    if hashed.store().join("index.sqlite").exists() {
        let blocks: i64 = hashed
            .index()
            .query_row("SELECT count(*) FROM blocks", [], |r| r.get(0))
            .expect("counting blocks");
        assert_eq!(blocks, 0, "--only-hash indexed blocks");
    }
    // And the CID is indeed not there to cat.
    let o = hashed.run(&["cat", HELLO_V1]);
    assert_one_error(&o, "cat after --only-hash", &[HELLO_V1]);
}

#[test]
fn cat_gives_exact_bytes_paths_and_ranges() {
    let t = TestDir::new();
    t.write("hello.txt", HELLO);
    planets(&t);
    let d = t.data("data");
    d.add(&[], &["hello.txt", "planets"]);
    d.add(&["--profile", "unixfs-v0-2015"], &["hello.txt", "planets"]);
    for (target, want) in [
        (HELLO_V1.to_string(), HELLO),
        (HELLO_V0.to_string(), HELLO),
        (format!("{PLANETS_V1}/mars.txt"), MARS),
        (format!("{PLANETS_V1}/venus.txt"), VENUS),
        (format!("/ipfs/{PLANETS_V1}/venus.txt"), VENUS),
        (format!("{PLANETS_V0}/mars.txt"), MARS),
        (format!("{PLANETS_V0}/venus.txt"), VENUS),
    ] {
        assert_eq!(d.ok(&["cat", &target]), want, "cat {target}");
    }
    for cid in [HELLO_V1, HELLO_V0] {
        for (offset, length, want) in [
            ("0", Some("5"), &b"hello"[..]),
            ("6", None, b"world"),
            ("3", Some("4"), b"lo w"),
            ("10", Some("1"), b"d"),
            ("0", Some("11"), HELLO),
            ("4", Some("100"), b"o world"),
        ] {
            let mut args = vec!["cat", "--offset", offset];
            if let Some(l) = length {
                args.extend(["--length", l]);
            }
            args.push(cid);
            assert_eq!(d.ok(&args), want, "{args:?}");
        }
    }
}

#[test]
fn large_file_round_trips_with_ranges_at_chunk_boundaries() {
    let t = TestDir::new();
    let len = (5 << 20) + 777;
    let data = chacha_bytes("cli-large-file", len);
    t.write("large.bin", &data);
    let d = t.data("data");
    let v1 = d.add(&[], &["large.bin"])["large.bin"].clone();
    let v0 = d.add(&["--profile", "unixfs-v0-2015"], &["large.bin"])["large.bin"].clone();
    assert!(v1.starts_with("bafybei"), "a multi-chunk v1 root: {v1}");
    assert!(v0.starts_with("Qm"), "a v0 root: {v0}");
    for (cid, chunk) in [(&v1, CHUNK_V1), (&v0, CHUNK_V0)] {
        assert_same_bytes(&d.ok(&["cat", cid]), &data, &format!("cat {cid}"));
        assert_ranges(&d, cid, &data, chunk);
    }
    // Both DAGs are served from one kept copy of the file.
    let kept = d.kept_files();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        kept[0].file_name().unwrap().to_str().unwrap(),
        sha256_hex(&data)
    );
    d.assert_verify(true);
}

#[test]
fn adding_twice_gives_the_same_cid_and_keeps_one_copy() {
    let t = TestDir::new();
    let data = chacha_bytes("cli-twice", (2 << 20) + 5);
    t.write("twice.bin", &data);
    t.write("copy/twice-copy.bin", &data);
    let d = t.data("data");
    let first = d.add(&[], &["twice.bin"]);
    let second = d.add(&[], &["twice.bin"]);
    let copy = d.add(&[], &["copy/twice-copy.bin"]);
    assert_eq!(first["twice.bin"], second["twice.bin"]);
    assert_eq!(first["twice.bin"], copy["copy/twice-copy.bin"]);
    let kept = d.kept_files();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(sha256_file(&kept[0]), sha256_hex(&data));
    let files: i64 = d
        .index()
        .query_row("SELECT count(*) FROM files", [], |r| r.get(0))
        .expect("counting files");
    assert_eq!(files, 1);
    assert_same_bytes(&d.ok(&["cat", &first["twice.bin"]]), &data, "cat");
    d.assert_verify(true);
}

#[test]
fn data_dir_defaults_to_xdg_data_home() {
    let t = TestDir::new();
    t.write("hello.txt", HELLO);
    let xdg = t.path("xdg");
    let home = t.path("home");
    std::fs::create_dir_all(&xdg).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    let mut c = cidmirror();
    c.current_dir(t.root())
        .env("XDG_DATA_HOME", &xdg)
        .env("HOME", &home)
        .args(["add", "--no-progress", "hello.txt"]);
    let o = run_cmd(c);
    assert_ok(&o, "add with XDG_DATA_HOME");
    assert_eq!(stdout(&o), format!("{HELLO_V1} hello.txt\n"));
    assert!(
        xdg.join("cidmirror/store/index.sqlite").is_file(),
        "no store under $XDG_DATA_HOME/cidmirror"
    );
    assert!(
        !home.join(".local/share/cidmirror").exists(),
        "used ~/.local/share although XDG_DATA_HOME is set"
    );
    // And it is found there again: cat without any data-dir setting.
    let mut c = cidmirror();
    c.current_dir(t.root())
        .env("XDG_DATA_HOME", &xdg)
        .env("HOME", &home)
        .args(["cat", HELLO_V1]);
    let o = run_cmd(c);
    assert_ok(&o, "cat with XDG_DATA_HOME");
    assert_eq!(o.stdout, HELLO);
}

#[test]
fn data_dir_flag_overrides_the_environment() {
    let t = TestDir::new();
    t.write("hello.txt", HELLO);
    let xdg = t.path("xdg");
    let env_dir = t.path("from-env");
    let flag_dir = t.path("from-flag");
    let run = |args: &[&str]| {
        let mut c = cidmirror();
        c.current_dir(t.root())
            .env("XDG_DATA_HOME", &xdg)
            .env("HOME", t.path("home"))
            .env("CIDMIRROR_DATA_DIR", &env_dir)
            .args(args);
        run_cmd(c)
    };
    let o = run(&[
        "--data-dir",
        s(&flag_dir),
        "add",
        "--no-progress",
        "hello.txt",
    ]);
    assert_ok(&o, "add --data-dir");
    assert!(flag_dir.join("store/index.sqlite").is_file());
    assert!(
        !env_dir.exists(),
        "CIDMIRROR_DATA_DIR used despite --data-dir"
    );
    assert!(!xdg.exists(), "XDG_DATA_HOME used despite --data-dir");
    // The flag also works after the subcommand.
    let o = run(&["cat", HELLO_V1, "--data-dir", s(&flag_dir)]);
    assert_ok(&o, "cat --data-dir");
    assert_eq!(o.stdout, HELLO);
    // Without the flag the environment variable wins over XDG_DATA_HOME: that store is
    // empty, so the CID is not found there.
    let o = run(&["cat", HELLO_V1]);
    assert_one_error(&o, "cat with CIDMIRROR_DATA_DIR", &[HELLO_V1]);
    assert!(env_dir.join("store/index.sqlite").is_file());
    assert!(
        !xdg.exists(),
        "XDG_DATA_HOME used despite CIDMIRROR_DATA_DIR"
    );
}
