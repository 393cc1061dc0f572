//! Several processes on one data directory at once.

use std::process::Stdio;

use crate::support::*;

const PROCS: usize = 4;
const ROUNDS: usize = 3;

#[test]
fn concurrent_adds_of_overlapping_files_share_one_copy() {
    let t = TestDir::new();
    let shared_sha = write_chacha_file(&t.path("shared.bin"), "cli-shared", 3 << 20);
    let mut own = Vec::new();
    for i in 0..PROCS {
        let name = format!("own-{i}.bin");
        let len = (1 << 20) + 1000 * i as u64 + 1;
        let sha = write_chacha_file(&t.path(&name), &format!("cli-own-{i}"), len);
        own.push((name, sha, len));
    }
    // Expected CIDs: hashing only, with no store involved.
    let scratch = t.data("scratch");
    let mut args = vec!["add", "-n", "--no-progress", "shared.bin"];
    args.extend(own.iter().map(|(n, _, _)| n.as_str()));
    let expected = parse_add(&scratch.ok_text(&args));
    assert_eq!(expected.len(), PROCS + 1);

    for round in 0..ROUNDS {
        let d = t.data(&format!("round-{round}"));
        let children: Vec<_> = own
            .iter()
            .map(|(name, _, _)| {
                let mut c = d.cmd(["add", "--no-progress", "shared.bin", name.as_str()]);
                c.stdout(Stdio::piped()).stderr(Stdio::piped());
                c.spawn().expect("spawning add")
            })
            .collect();
        for (i, child) in children.into_iter().enumerate() {
            let o = finish(child, &format!("round {round} add {i}"), TIMEOUT);
            assert_ok(&o, &format!("round {round}: concurrent add {i}"));
            let got = parse_add(&stdout(&o));
            assert_eq!(got.len(), 2, "round {round} add {i}: {}", stdout(&o));
            assert_eq!(
                got["shared.bin"], expected["shared.bin"],
                "round {round} add {i}"
            );
            assert_eq!(got[&own[i].0], expected[&own[i].0], "round {round} add {i}");
        }
        d.assert_verify(true);
        let kept = d.assert_consistent_on_disk(&format!("round {round}"));
        assert_eq!(kept, PROCS + 1, "{:?}", d.kept_files());
        let shared_copies = d
            .kept_files()
            .iter()
            .filter(|p| p.file_name().and_then(|n| n.to_str()) == Some(shared_sha.as_str()))
            .count();
        assert_eq!(shared_copies, 1, "the shared file is kept once");
        let (st, sha, len, err) = d.cat_sha256(&expected["shared.bin"]);
        assert!(st.success(), "cat shared: {err}");
        assert_eq!((sha, len), (shared_sha.clone(), 3 << 20));
        for (name, want_sha, want_len) in &own {
            let (st, sha, len, err) = d.cat_sha256(&expected[name]);
            assert!(st.success(), "cat {name}: {err}");
            assert_eq!((&sha, len), (want_sha, *want_len), "cat {name}");
        }
    }
}
