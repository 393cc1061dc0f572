//! Bad input fails loudly and cleanly: a non-zero exit, one `error:` line that names the
//! thing, and nothing half-written left behind.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

use crate::support::*;

#[test]
fn add_of_a_missing_path_names_it() {
    let t = TestDir::new();
    let d = t.data("data");
    let o = d.run(&["add", "--no-progress", "/nonexistent"]);
    assert_one_error(&o, "add /nonexistent", &["/nonexistent"]);
    assert_eq!(
        stderr(&o).lines().count(),
        1,
        "one line in all: {}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty(), "printed: {}", stdout(&o));
    assert!(d.kept_files().is_empty(), "kept: {:?}", d.kept_files());
    assert!(d.tmp_entries().is_empty(), "left: {:?}", d.tmp_entries());
}

#[test]
fn add_keeps_going_after_a_bad_path_and_still_fails() {
    let t = TestDir::new();
    t.write("good.txt", b"good content\n");
    let d = t.data("data");
    let o = d.run(&[
        "add",
        "--no-progress",
        "good.txt",
        "missing.txt",
        "good.txt",
    ]);
    assert_one_error(&o, "add good bad good", &["missing.txt"]);
    let want = format!("{} good.txt\n", raw_cid(b"good content\n"));
    assert_eq!(stdout(&o), want.repeat(2), "the good path is added");
    assert_eq!(
        d.ok(&["cat", &raw_cid(b"good content\n")]),
        b"good content\n"
    );
    // Same with the bad one first.
    let o = d.run(&["add", "--no-progress", "missing.txt", "good.txt"]);
    assert_one_error(&o, "add bad good", &["missing.txt"]);
    assert_eq!(stdout(&o), want);
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|st| {
            st.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

#[test]
fn add_of_an_unreadable_file_says_permission_denied() {
    // Root reads anything: then run the binary as `nobody`, in a tree it can write.
    let root = running_as_root();
    let t = TestDir::in_tmp();
    let secret = t.write("secret.bin", b"you cannot read me\n");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    let data = t.path("data");
    std::fs::create_dir(&data).unwrap();
    if root {
        for p in [t.root(), &data] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
    }
    let mut c = cidmirror();
    c.current_dir(t.root())
        .args(["--data-dir", s(&data), "add", "--no-progress", s(&secret)]);
    if root {
        c.uid(65534).gid(65534);
    }
    let o = run_cmd(c);
    assert_one_error(
        &o,
        "add of a mode-000 file",
        &["Permission denied", s(&secret)],
    );
    assert!(o.stdout.is_empty(), "printed: {}", stdout(&o));
    let d = t.data("data");
    assert!(d.kept_files().is_empty(), "kept: {:?}", d.kept_files());
    assert!(d.tmp_entries().is_empty(), "left: {:?}", d.tmp_entries());
}

/// The section of the biggest block of a CAR.
fn biggest_block(car: &[u8]) -> Section {
    car_sections(car)
        .into_iter()
        .max_by_key(|s| s.data.len())
        .expect("a CAR with blocks")
}

#[test]
fn import_of_a_car_with_a_corrupt_block_names_it_and_imports_nothing() {
    let t = TestDir::new();
    let d = t.data("data");
    // Something already in the store, which must stay.
    let other = fixture("dag-pb.car");
    d.ok(&["import", s(&other)]);
    let other_blocks = car_sections(&std::fs::read(&other).unwrap());

    let mut car = std::fs::read(fixture("dir-with-files.car")).unwrap();
    let bad = biggest_block(&car);
    let i = bad.data.start + bad.data.len() / 2;
    car[i] ^= 0x01;
    let sections = car_sections(&car);
    let path = t.write("corrupt.car", &car);
    let o = d.run(&["import", s(&path)]);
    // The error names the block and what its bytes actually hash to.
    let actual = sha256_hex(&car[bad.data.clone()]);
    assert_one_error(
        &o,
        "import of a corrupt CAR",
        &[&bad.cid.to_string(), &actual, "corrupt.car"],
    );
    assert!(o.stdout.is_empty(), "printed: {}", stdout(&o));
    for sec in &sections {
        assert!(
            !d.has_block_row(&sec.cid) || other_blocks.iter().any(|o| o.cid == sec.cid),
            "block {} of the rejected CAR was kept",
            sec.cid
        );
    }
    for sec in &other_blocks {
        assert!(d.has_block_row(&sec.cid), "lost block {}", sec.cid);
    }
    assert!(d.tmp_entries().is_empty(), "left: {:?}", d.tmp_entries());
    let root = "bafybeihchr7vmgjaasntayyatmp5sv6xza57iy2h4xj7g46bpjij6yhrmy";
    let o = d.run(&["cat", &format!("{root}/hello.txt")]);
    assert_one_error(&o, "cat from the rejected CAR", &[root, "not found"]);
    d.assert_verify(true);
}

#[test]
fn import_of_a_truncated_car_says_truncated_and_imports_nothing() {
    let t = TestDir::new();
    let d = t.data("data");
    let full = std::fs::read(fixture("dir-with-files.car")).unwrap();
    let sections = car_sections(&full);
    // Cut inside the block that spans the middle of the file (not at a section boundary,
    // which would be a valid, shorter CAR).
    let mid = full.len() / 2;
    let sec = sections
        .iter()
        .find(|s| s.start <= mid && mid < s.data.end)
        .expect("a section spans the middle");
    let cut = (sec.data.start + sec.data.end) / 2;
    assert!(sections.iter().filter(|s| s.data.end <= cut).count() >= 2);
    let path = t.write("cut.car", &full[..cut]);
    let o = d.run(&["import", s(&path)]);
    assert_one_error(&o, "import of a truncated CAR", &["truncated", "cut.car"]);
    assert!(o.stdout.is_empty(), "printed: {}", stdout(&o));
    for sec in &sections {
        assert!(!d.has_block_row(&sec.cid), "block {} was kept", sec.cid);
    }
    assert!(d.tmp_entries().is_empty(), "left: {:?}", d.tmp_entries());
    d.assert_verify(false);
}

#[test]
fn strings_that_are_not_cids_are_named() {
    let t = TestDir::new();
    let d = t.data("data");
    for args in [
        &["cat", "notacid"][..],
        &["cat", "notacid/some/path"],
        &["export", "zzz"],
        &["export", "-o", "out.car", "zzz"],
        &["pin", "rm", "bafyXYZ"],
        &["pin", "add", "bafyXYZ"],
    ] {
        let o = d.run(args);
        let needle = if args.contains(&"zzz") {
            "\"zzz\""
        } else if args.contains(&"bafyXYZ") {
            "\"bafyXYZ\""
        } else {
            "\"notacid\""
        };
        assert_one_error(&o, &args.join(" "), &[needle]);
        assert!(o.stdout.is_empty(), "{args:?} printed: {}", stdout(&o));
    }
    assert!(!t.path("out.car").exists());
    let temps: Vec<_> = std::fs::read_dir(t.path("."))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert!(temps.is_empty(), "left behind: {temps:?}");
}

#[test]
fn cat_of_a_range_past_the_end_fails() {
    let t = TestDir::new();
    t.write("ten.txt", b"0123456789");
    let d = t.data("data");
    let cid = d.add(&[], &["ten.txt"])["ten.txt"].clone();
    let o = d.run(&["cat", "--offset", "11", &cid]);
    assert_one_error(&o, "cat --offset past the end", &[&cid]);
    assert!(o.stdout.is_empty());
    // A directory is not something to cat.
    t.write("dir/a.txt", b"a");
    let dir = d.add(&[], &["dir"])["dir"].clone();
    let o = d.run(&["cat", &dir]);
    assert_one_error(&o, "cat of a directory", &[&dir]);
}

#[test]
fn export_of_an_incomplete_dag_leaves_no_file() {
    let t = TestDir::new();
    let d = t.data("data");
    d.ok(&[
        "import",
        s(&fixture("file-3k-and-3-blocks-missing-block.car")),
    ]);
    let out_dir = t.path("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("out.car");
    let o = d.run(&[
        "export",
        "-o",
        s(&out),
        "QmYhmPjhFjYFyaoiuNzYv8WGavpSRDwdHWe5B4M5du5Rtk",
    ]);
    assert_one_error(&o, "export of an incomplete DAG", &["not found"]);
    let left: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // A complete DAG exports to the same place.
    d.ok(&["import", s(&fixture("dag-pb.car"))]);
    d.ok(&[
        "export",
        "-o",
        s(&out),
        "bafybeiegxwlgmoh2cny7qlolykdf7aq7g6dlommarldrbm7c4hbckhfcke",
    ]);
    assert_car_blocks_verify(&std::fs::read(&out).unwrap(), "export of dag-pb");
    let left: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("out.car")],
        "only the CAR itself"
    );
}

#[test]
fn a_trusted_proxy_that_is_no_address_is_named_before_serving() {
    let t = TestDir::new();
    let d = t.data("d");
    let o = d.run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--trusted-proxy",
        "10.0.0.0/8",
        "--trusted-proxy",
        "proxy.lan",
    ]);
    assert_one_error(
        &o,
        "serve --trusted-proxy proxy.lan",
        &["trusted_proxies", "\"proxy.lan\""],
    );
}

#[test]
fn output_into_a_reader_that_stops_early_ends_quietly() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    let t = TestDir::new();
    // 3,000 lines of `CID PATH`, well past a pipe's buffer.
    for i in 0..3000 {
        t.write(&format!("many/f{i:04}"), format!("{i}").as_bytes());
    }
    let d = t.data("d");
    let mut child = d
        .cmd(["add", "--no-progress", "--no-pin", "many"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning add");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("a line");
    assert!(first.ends_with(" many/f0000\n"), "{first:?}");
    // The reader is gone now, like `| head -1`.
    let status = wait_timeout(&mut child, TIMEOUT).expect("add ends");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("stderr");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status:?} {err}");
}
