#!/usr/bin/env python3
"""Generates AUR package bases for bench/aur.sh: local git repositories and their sources.

    gen_aur.py init --dir DIR --port PORT --bases 1000 --min-kib 10 --max-kib 20480 [--seed S]
    gen_aur.py bump --dir DIR --port PORT --count 10

`init` writes DIR/sources/<base>-1.tar.gz (seeded random bytes, sizes log-uniform between
--min-kib and --max-kib), DIR/repos/<base>/ (a git repository whose one commit holds a
.SRCINFO naming that source at http://127.0.0.1:PORT/<file> with its sha256sums and b2sums,
plus a SKIP source and a git source, which the cache must skip), DIR/bases (one name per
line) and DIR/urls (every cached source's URL). `bump` gives --count bases a new version (a
new source file, a new commit). Both print `key value` lines (sizes in bytes); the state is
DIR/state.json.
"""

import argparse
import hashlib
import json
import math
import os
import random
import subprocess

GIT_ENV = dict(
    os.environ,
    GIT_CONFIG_GLOBAL="/dev/null",
    GIT_AUTHOR_NAME="bench",
    GIT_AUTHOR_EMAIL="bench@example.org",
    GIT_COMMITTER_NAME="bench",
    GIT_COMMITTER_EMAIL="bench@example.org",
)


def git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, check=True, capture_output=True)


def write_source(d, rng, base, ver, size):
    name = f"{base}-{ver}.tar.gz"
    data = rng.randbytes(size)
    with open(os.path.join(d, "sources", name), "wb") as f:
        f.write(data)
    return name, hashlib.sha256(data).hexdigest(), hashlib.blake2b(data, digest_size=64).hexdigest()


def commit(d, port, base, ver, name, sha, b2):
    repo = os.path.join(d, "repos", base)
    fresh = not os.path.isdir(os.path.join(repo, ".git"))
    os.makedirs(repo, exist_ok=True)
    if fresh:
        git(repo, "init", "--quiet", "-b", "master")
    srcinfo = (
        f"pkgbase = {base}\n\tpkgver = {ver}\n\tpkgrel = 1\n\tarch = any\n"
        f"\tsource = http://127.0.0.1:{port}/{name}\n"
        f"\tsource = notes-{ver}.txt::http://127.0.0.1:{port}/notes\n"
        f"\tsource = git+https://example.org/{base}.git\n"
        f"\tsha256sums = {sha}\n\tsha256sums = SKIP\n\tsha256sums = SKIP\n"
        f"\tb2sums = {b2}\n\tb2sums = SKIP\n\tb2sums = SKIP\n"
        f"\npkgname = {base}\n"
    )
    with open(os.path.join(repo, ".SRCINFO"), "w") as f:
        f.write(srcinfo)
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", f"{ver}")


def save(d, state):
    with open(os.path.join(d, "state.json"), "w") as f:
        json.dump(state, f)
    with open(os.path.join(d, "urls"), "w") as f:
        for b, s in sorted(state["bases"].items()):
            f.write(f"http://127.0.0.1:{state['port']}/{s['file']}\n")


def init(a):
    rng = random.Random(a.seed)
    os.makedirs(os.path.join(a.dir, "sources"), exist_ok=True)
    state = {"port": a.port, "bases": {}, "seed": a.seed}
    total = 0
    lo, hi = math.log(a.min_kib * 1024), math.log(a.max_kib * 1024)
    for i in range(a.bases):
        base = f"bench-{i:05d}"
        size = int(math.exp(rng.uniform(lo, hi)))
        name, sha, b2 = write_source(a.dir, rng, base, 1, size)
        commit(a.dir, a.port, base, 1, name, sha, b2)
        state["bases"][base] = {"ver": 1, "file": name, "size": size}
        total += size
    with open(os.path.join(a.dir, "bases"), "w") as f:
        f.write("".join(f"{b}\n" for b in sorted(state["bases"])))
    save(a.dir, state)
    print(f"bases {a.bases}\nsource_bytes {total}")


def bump(a):
    with open(os.path.join(a.dir, "state.json")) as f:
        state = json.load(f)
    rng = random.Random(f"{state['seed']} bump {sum(s['ver'] for s in state['bases'].values())}")
    names = sorted(state["bases"])
    total = 0
    for base in rng.sample(names, a.count):
        s = state["bases"][base]
        s["ver"] += 1
        name, sha, b2 = write_source(a.dir, rng, base, s["ver"], s["size"])
        commit(a.dir, state["port"], base, s["ver"], name, sha, b2)
        s["file"] = name
        total += s["size"]
    save(a.dir, state)
    print(f"changed {a.count}\nchanged_bytes {total}")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init")
    i.add_argument("--dir", required=True)
    i.add_argument("--port", type=int, required=True)
    i.add_argument("--bases", type=int, default=1000)
    i.add_argument("--min-kib", type=int, default=10)
    i.add_argument("--max-kib", type=int, default=20480)
    i.add_argument("--seed", default="cidmirror-aur-bench")
    b = sub.add_parser("bump")
    b.add_argument("--dir", required=True)
    b.add_argument("--port", type=int, required=True)
    b.add_argument("--count", type=int, default=10)
    a = p.parse_args()
    {"init": init, "bump": bump}[a.cmd](a)


if __name__ == "__main__":
    main()
