//! `export` and `import`: CARs move DAGs between stores; the conformance fixtures import and
//! read back with their published contents.

use std::process::Stdio;

use crate::support::*;

const ASCII: &[u8] = b"hello application/vnd.ipld.car\n";
const HELLO_NL: &[u8] = b"hello world\n";

enum Content {
    Bytes(&'static [u8]),
    Lorem,
}

struct Fixture {
    car: &'static str,
    root: &'static str,
    files: &'static [(&'static str, Content)],
}

/// gateway-conformance@22c76440 fixtures, with the contents their README and
/// /work/shared/vectors/unixfs.json give.
const FIXTURES: &[Fixture] = &[
    Fixture {
        car: "dir-with-files.car",
        root: "bafybeihchr7vmgjaasntayyatmp5sv6xza57iy2h4xj7g46bpjij6yhrmy",
        files: &[
            ("ascii.txt", Content::Bytes(ASCII)),
            ("ascii-copy.txt", Content::Bytes(ASCII)),
            ("hello.txt", Content::Bytes(HELLO_NL)),
            ("multiblock.txt", Content::Lorem),
        ],
    },
    Fixture {
        car: "subdir-with-mixed-block-files.car",
        root: "bafybeidh6k2vzukelqtrjsmd4p52cpmltd2ufqrdtdg6yigi73in672fwu",
        files: &[
            ("subdir/hello.txt", Content::Bytes(HELLO_NL)),
            ("subdir/ascii.txt", Content::Bytes(ASCII)),
            ("subdir/multiblock.txt", Content::Lorem),
        ],
    },
    Fixture {
        car: "subdir-with-two-single-block-files.car",
        root: "bafybeietjm63oynimmv5yyqay33nui4y4wx6u3peezwetxgiwvfmelutzu",
        files: &[
            ("subdir/ascii.txt", Content::Bytes(ASCII)),
            ("subdir/hello.txt", Content::Bytes(HELLO_NL)),
        ],
    },
    Fixture {
        car: "dag-pb.car",
        root: "bafybeiegxwlgmoh2cny7qlolykdf7aq7g6dlommarldrbm7c4hbckhfcke",
        files: &[
            ("foo/bar.txt", Content::Bytes(b"Hello, world!\n")),
            ("foo.txt", Content::Bytes(b"Hello, IPFS!\n")),
        ],
    },
    Fixture {
        car: "dir-with-percent-encoded-filename.car",
        root: "bafybeig675grnxcmshiuzdaz2xalm6ef4thxxds6o6ypakpghm5kghpc34",
        files: &[(
            "Portugal%2C+España=Peninsula Ibérica.txt",
            Content::Bytes(b"hello from a percent encoded filename\n"),
        )],
    },
    Fixture {
        car: "fixtures.car",
        root: "bafybeig6ka5mlwkl4subqhaiatalkcleo4jgnr3hqwvpmsqfca27cijp3i",
        files: &[
            (
                "ą/ę/file-źł.txt",
                Content::Bytes(b"I am a txt file on path with utf8\n"),
            ),
            (
                "api/file.txt",
                Content::Bytes(b"I am a txt file in confusing /api dir\n"),
            ),
        ],
    },
    Fixture {
        car: "single-layer-hamt-with-multi-block-files.car",
        root: "bafybeidbclfqleg2uojchspzd4bob56dqetqjsj27gy2cq3klkkgxtpn4i",
        files: &[
            ("1.txt", Content::Lorem),
            ("500.txt", Content::Lorem),
            ("1000.txt", Content::Lorem),
        ],
    },
    Fixture {
        car: "symlink.car",
        root: "QmWvY6FaqFMS89YAQ9NAPjVP4WZKA1qbHbicc9HeSKQTgt",
        files: &[("foo", Content::Bytes(b"content\n"))],
    },
];

#[test]
fn conformance_fixtures_import_and_cat_their_files() {
    let t = TestDir::new();
    let lorem = lorem();
    assert_eq!(lorem.len(), 1026, "lorem.txt is the 1026-byte fixture text");
    for (i, fx) in FIXTURES.iter().enumerate() {
        // A fresh store per fixture: fixtures that share blocks cannot cover for each other.
        let d = t.data(&format!("data-{i}"));
        let car = fixture(fx.car);
        let out = d.ok_text(&["import", s(&car)]);
        assert_eq!(
            out,
            format!("{} {}\n", fx.root, car.display()),
            "import {}",
            fx.car
        );
        for (path, content) in fx.files {
            let want: &[u8] = match content {
                Content::Bytes(b) => b,
                Content::Lorem => &lorem,
            };
            let target = format!("{}/{path}", fx.root);
            assert_eq!(d.ok(&["cat", &target]), want, "cat {target}");
        }
        d.assert_verify(true);
    }
    // A single-block file is also reachable by its own (raw) CID, computed independently.
    let d = t.data("data-0");
    assert_eq!(d.ok(&["cat", &raw_cid(HELLO_NL)]), HELLO_NL);
    // A name the HAMT does not hold is an error naming the path.
    let d = t.data("data-6");
    let target = format!("{}/1001.txt", FIXTURES[6].root);
    let o = d.run(&["cat", &target]);
    assert_one_error(&o, "cat of a name not in the HAMT", &["1001.txt"]);
}

const FILE_3K: &str = "QmYhmPjhFjYFyaoiuNzYv8WGavpSRDwdHWe5B4M5du5Rtk";
/// The first and last 1024-byte leaves of the 3k file (gateway-conformance README); the
/// middle one is missing from the CAR.
const FILE_3K_FIRST: &str = "QmPKt7ptM2ZYSGPUc8PmPT2VBkLDK3iqpG9TBJY7PCE9rF";
const FILE_3K_LAST: &str = "QmWXY482zQdwecnfBsj78poUUuPXvyw2JAFAEMw4tzTavV";

#[test]
fn incomplete_dag_cats_the_ranges_it_holds_and_names_the_missing_block() {
    // The helper that encodes dag-pb leaves reproduces a published CID.
    assert_eq!(
        pb_leaf_cid_v0(b"hello world"),
        "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"
    );
    let t = TestDir::new();
    let d = t.data("data");
    let car = fixture("file-3k-and-3-blocks-missing-block.car");
    let o = d.run(&["import", s(&car)]);
    assert_ok(&o, "import of the 3k fixture");
    assert_eq!(stdout(&o), format!("{FILE_3K} {}\n", car.display()));

    let o = d.run(&["cat", FILE_3K]);
    let line = assert_one_error(&o, "cat of an incomplete file", &["not found"]);
    let named: Vec<&str> = line
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.starts_with("Qm") && cid::Cid::try_from(*w).is_ok())
        .collect();
    assert_eq!(named.len(), 1, "one missing block named: {line}");
    assert!(
        ![FILE_3K, FILE_3K_FIRST, FILE_3K_LAST].contains(&named[0]),
        "the block named missing is one the CAR holds: {line}"
    );

    let first = d.ok(&["cat", "--offset", "0", "--length", "1024", FILE_3K]);
    assert_eq!(first.len(), 1024);
    assert_eq!(pb_leaf_cid_v0(&first), FILE_3K_FIRST, "first chunk's bytes");
    let last = d.ok(&["cat", "--offset", "2048", "--length", "1024", FILE_3K]);
    assert_eq!(last.len(), 1024);
    assert_eq!(pb_leaf_cid_v0(&last), FILE_3K_LAST, "last chunk's bytes");
    let o = d.run(&["cat", "--offset", "1024", "--length", "1", FILE_3K]);
    assert_one_error(&o, "cat inside the missing chunk", &[named[0], "not found"]);
}

#[test]
fn export_then_import_into_a_fresh_store_round_trips() {
    let t = TestDir::new();
    let len = (5 << 20) + 4321;
    let data = chacha_bytes("cli-export", len);
    t.write("large.bin", &data);
    t.write("planets/mars.txt", b"Hello Mars!\n");
    t.write("planets/venus.txt", b"Hello Venus!\n");
    let src = t.data("source");
    let v1 = src.add(&[], &["large.bin", "planets"]);
    let v0 = src.add(&["--profile", "unixfs-v0-2015"], &["large.bin", "planets"]);
    assert_eq!(
        v1["planets"],
        "bafybeih7e5dmkyk25up5vxug4q3hrg2fxbzf23dfrac2fns5h7z4aa7ioi"
    );
    assert_eq!(
        v0["planets"],
        "QmWSgS32xQEcXMeqd3YPJLrNBLSdsfYCep2U7CFkyrjXwY"
    );

    for (label, cids, chunk) in [("v1", &v1, CHUNK_V1), ("v0", &v0, CHUNK_V0)] {
        for (name, cid) in [
            ("large.bin", &cids["large.bin"]),
            ("planets", &cids["planets"]),
        ] {
            let to_file = t.path(&format!("{label}-{name}-o.car"));
            let to_stdout = t.path(&format!("{label}-{name}-stdout.car"));
            src.ok(&["export", "-o", s(&to_file), cid]);
            let mut c = src.cmd(["export", cid.as_str()]);
            c.stdout(std::fs::File::create(&to_stdout).expect("creating the CAR file"))
                .stderr(Stdio::piped());
            let o = finish(
                c.spawn().expect("spawning export"),
                "export > file",
                TIMEOUT,
            );
            assert_ok(&o, "export to stdout");
            let a = std::fs::read(&to_file).expect("reading the -o CAR");
            let b = std::fs::read(&to_stdout).expect("reading the stdout CAR");
            assert!(a == b, "{label} {name}: -o and stdout exports differ");
            let secs = assert_car_blocks_verify(&a, &format!("{label} {name}"));
            assert!(
                secs.iter().any(|s| s.cid.to_string() == *cid),
                "{label} {name}: the CAR lacks its root block"
            );

            for (how, car) in [("-o", &to_file), ("stdout", &to_stdout)] {
                let dst = t.data(&format!("dst-{label}-{name}-{how}"));
                let out = dst.ok_text(&["import", s(car)]);
                assert_eq!(out, format!("{cid} {}\n", car.display()));
                if name == "large.bin" {
                    assert_same_bytes(
                        &dst.ok(&["cat", cid]),
                        &data,
                        &format!("{label} cat after import ({how})"),
                    );
                } else {
                    assert_eq!(
                        dst.ok(&["cat", &format!("{cid}/mars.txt")]),
                        b"Hello Mars!\n"
                    );
                    assert_eq!(
                        dst.ok(&["cat", &format!("{cid}/venus.txt")]),
                        b"Hello Venus!\n"
                    );
                }
            }
            if name == "large.bin" {
                // The imported copy is read block by block: check ranges at chunk
                // boundaries there too.
                let dst = t.data(&format!("dst-{label}-{name}--o"));
                assert_ranges(&dst, cid, &data, chunk);
                dst.assert_verify(true);
            }
        }
    }
}

/// `export -o` onto a pipe (or a device such as `/dev/null`) writes into it: the atomic
/// temp-file-and-rename of a regular file would replace the pipe or device with a file (a
/// root `export -o /dev/null` once turned the machine's `/dev/null` into a regular file).
#[test]
fn export_into_a_fifo_writes_through_it_and_leaves_it_a_fifo() {
    use std::os::unix::fs::FileTypeExt;
    let t = TestDir::new();
    t.write("planets/mars.txt", b"Hello Mars!\n");
    let src = t.data("source");
    let cid = src.add(&[], &["planets"])["planets"].clone();
    let fifo = t.path("out.fifo");
    let c_path = std::ffi::CString::new(s(&fifo)).expect("path");
    // SAFETY: mkfifo on a NUL-terminated path this test owns.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    // The reader blocks in open() until a writer comes: bounded by the channel's timeout
    // (a replaced FIFO never gets one; the blocked thread then ends with the test binary).
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let fifo = fifo.clone();
        std::thread::spawn(move || tx.send(std::fs::read(&fifo)));
    }
    src.ok(&["export", "-o", s(&fifo), &cid]);
    let got = rx
        .recv_timeout(TIMEOUT)
        .expect("nothing came through the FIFO")
        .expect("reading the FIFO");
    assert!(
        std::fs::symlink_metadata(&fifo)
            .expect("still there")
            .file_type()
            .is_fifo(),
        "the FIFO was replaced"
    );
    let secs = assert_car_blocks_verify(&got, "export into a FIFO");
    assert!(
        secs.iter().any(|s| s.cid.to_string() == cid),
        "the CAR lacks its root"
    );
    let entries: Vec<_> = std::fs::read_dir(t.root())
        .expect("test dir")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .contains(".cidmirror-export-")
        })
        .collect();
    assert!(entries.is_empty(), "temp files left: {entries:?}");
}
