#!/usr/bin/env python3
"""Generates a pacman upstream mirror for bench/mirror.sh: deterministic, realistic databases.

    gen_repo.py init --upstream DIR --state FILE --repo extra --packages 15000 \
                     [--min-kib 1 --max-kib 40 | --size-kib 10240 | --mix 400x100,40x20480] [--seed S]
    gen_repo.py bump --upstream DIR --state FILE --count 150
    gen_repo.py remove --upstream DIR --state FILE --count 10

`init` writes DIR/lastupdate and DIR/<repo>/os/x86_64/ as repo-add leaves it: one package
file per entry (random bytes, sized uniformly between --min-kib and --max-kib KiB, or exactly
--size-kib, or a mix of fixed sizes given by --mix COUNTxKIB,... whose sizes are dealt out in
a seeded random order; the mix sets the number of packages), its detached signature `<file>.sig` (the decoded %PGPSIG%), `<repo>.db.tar.gz`
and `<repo>.files.tar.gz` (gzip -6 tar archives with one `<name>-<version>/` directory per
package holding `desc`, and `desc` plus `files`) and the `<repo>.db` / `<repo>.files`
symlinks. Every desc carries the fields of a real Arch entry (FILENAME NAME BASE VERSION
DESC [GROUPS] CSIZE ISIZE MD5SUM SHA256SUM PGPSIG URL LICENSE ARCH BUILDDATE PACKAGER DEPENDS
[OPTDEPENDS] [MAKEDEPENDS]). `bump` gives --count packages a new pkgrel (new file name, new
bytes, new signature, new desc), deletes their old files, rewrites both databases and moves
lastupdate forward by an hour.

Both print `key value` lines (sizes in bytes) for the benchmark to read. Everything is a pure
function of --seed and the sequence of commands; the state file remembers what is upstream.
"""

import argparse
import base64
import gzip
import hashlib
import io
import json
import os
import random
import sys
import tarfile

ARCH_DIR = "x86_64"
FIRST_LASTUPDATE = 1_700_000_000
SIG_BYTES = 310  # 416 base64 characters: an RSA-4096 OpenPGP signature is about this size

SYLLABLES = (
    "al ba ce do ex fi gu ha in jo ka le mo nu op pa qu ra si tu ur vo wa xe yo za "
    "bro cla dri fla gno kra plu sna tri zen lib net gtk qt xml font gl sdl cairo"
).split()
PREFIXES = ["", "", "", "", "lib", "python-", "perl-", "haskell-", "ruby-", "lib32-",
            "ttf-", "texlive-", "kde-", "gst-plugin-", "nodejs-", "rust-"]
SUFFIXES = ["", "", "", "", "", "-git", "-utils", "-docs", "-tools", "-data", "-common"]
LICENSES = ["GPL-2.0-or-later", "GPL-3.0-or-later", "LGPL-2.1-or-later", "MIT",
            "Apache-2.0", "BSD-3-Clause", "MPL-2.0", "custom"]
GROUPS = ["kde-applications", "gnome-extra", "xorg-apps", "texlive", "haskell",
          "qt6", "pro-audio", "vim-plugins"]
COMMON_DEPS = ["glibc", "gcc-libs", "zlib", "openssl", "python", "perl", "glib2", "gtk3",
               "qt6-base", "libx11", "ncurses", "readline", "systemd-libs", "curl", "libxml2",
               "icu", "dbus", "bash", "sh", "xz", "zstd", "bzip2", "expat", "pcre2"]
MAKE_DEPS = ["cmake", "meson", "ninja", "git", "python-build", "python-installer",
             "python-wheel", "rust", "go", "doxygen", "gobject-introspection"]
PACKAGERS = ["Alice Maintainer <alice@archlinux.org>", "Bob Builder <bob@archlinux.org>",
             "Carol Packager <carol@archlinux.org>", "Dave Trusted <dave@archlinux.org>"]
WORDS = ("library tool for the utility fast small simple modern cross platform "
         "implementation of a protocol bindings plugin framework command line "
         "graphical viewer editor toolkit server client daemon").split()


def word(rng, n):
    return "".join(rng.choice(SYLLABLES) for _ in range(n))


def make_meta(seed, i, names):
    """The metadata of package number i that does not change when it is rebuilt."""
    rng = random.Random(f"{seed}:meta:{i}")
    while True:
        base = word(rng, rng.randint(2, 3))
        name = rng.choice(PREFIXES) + base + rng.choice(SUFFIXES)
        if name not in names:
            break
    names.add(name)
    pkgver = ".".join(str(rng.randint(0, 30)) for _ in range(rng.randint(2, 3)))
    if rng.random() < 0.08:
        pkgver = f"{rng.randint(1, 3)}:{pkgver}"
    ndeps = rng.randint(3, 8)
    depends = rng.sample(COMMON_DEPS, ndeps)
    depends = [d + (f">={rng.randint(1, 9)}.{rng.randint(0, 9)}" if rng.random() < 0.2 else "")
               for d in depends]
    optdepends = [f"{d}: {' '.join(rng.choice(WORDS) for _ in range(rng.randint(2, 5)))}"
                  for d in rng.sample(COMMON_DEPS, rng.randint(0, 3))]
    makedepends = rng.sample(MAKE_DEPS, rng.randint(0, 4))
    groups = [rng.choice(GROUPS)] if rng.random() < 0.15 else []
    return {
        "name": name,
        "base": base if rng.random() < 0.3 else name,
        "pkgver": pkgver,
        "desc": " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 14))).capitalize(),
        "groups": groups,
        "url": f"https://{word(rng, 2)}.{rng.choice(['org', 'io', 'net', 'dev'])}/{base}",
        "license": rng.sample(LICENSES, rng.randint(1, 2)),
        "arch": "any" if rng.random() < 0.2 else "x86_64",
        "packager": rng.choice(PACKAGERS),
        "depends": depends,
        "optdepends": optdepends,
        "makedepends": makedepends,
        "nfiles": rng.randint(5, 40),
    }


def section(name, values):
    return f"%{name}%\n" + "".join(v + "\n" for v in values) + "\n"


def build(seed, i, meta, pkgrel, size, outdir):
    """Writes package i at pkgrel (file and .sig); returns its record."""
    version = f"{meta['pkgver']}-{pkgrel}"
    filename = f"{meta['name']}-{version}-{meta['arch']}.pkg.tar.zst"
    rng = random.Random(f"{seed}:build:{i}:{pkgrel}")
    data = rng.randbytes(size)
    sig = rng.randbytes(SIG_BYTES)
    with open(os.path.join(outdir, filename), "wb") as f:
        f.write(data)
    with open(os.path.join(outdir, filename + ".sig"), "wb") as f:
        f.write(sig)
    fields = [
        ("FILENAME", [filename]),
        ("NAME", [meta["name"]]),
        ("BASE", [meta["base"]]),
        ("VERSION", [version]),
        ("DESC", [meta["desc"]]),
        ("GROUPS", meta["groups"]),
        ("CSIZE", [str(size)]),
        ("ISIZE", [str(size * rng.randint(2, 5))]),
        ("MD5SUM", [hashlib.md5(data).hexdigest()]),
        ("SHA256SUM", [hashlib.sha256(data).hexdigest()]),
        ("PGPSIG", [base64.b64encode(sig).decode()]),
        ("URL", [meta["url"]]),
        ("LICENSE", meta["license"]),
        ("ARCH", [meta["arch"]]),
        ("BUILDDATE", [str(FIRST_LASTUPDATE - 86400 * 30 + i * 7 + pkgrel * 86400)]),
        ("PACKAGER", [meta["packager"]]),
        ("DEPENDS", meta["depends"]),
        ("OPTDEPENDS", meta["optdepends"]),
        ("MAKEDEPENDS", meta["makedepends"]),
    ]
    desc = "".join(section(n, v) for n, v in fields if v)
    files = ["usr/", "usr/bin/", f"usr/bin/{meta['name']}", "usr/share/",
             f"usr/share/{meta['name']}/"]
    files += [f"usr/share/{meta['name']}/{word(rng, 2)}.{rng.choice(['py', 'so', 'txt', 'png'])}"
              for _ in range(meta["nfiles"])]
    return {
        "entry": f"{meta['name']}-{version}",
        "filename": filename,
        "size": size,
        "sig_size": SIG_BYTES,
        "desc": desc,
        "files": section("FILES", sorted(set(files))),
        "pkgrel": pkgrel,
    }


def add_member(tar, path, data=None):
    info = tarfile.TarInfo(path)
    info.mtime = FIRST_LASTUPDATE
    info.uname = info.gname = "root"
    if data is None:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
    else:
        info.mode = 0o644
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def write_archive(path, pkgs, with_files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for p in sorted(pkgs, key=lambda p: p["entry"]):
            add_member(tar, p["entry"] + "/")
            add_member(tar, p["entry"] + "/desc", p["desc"].encode())
            if with_files:
                add_member(tar, p["entry"] + "/files", p["files"].encode())
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(gzip.compress(buf.getvalue(), compresslevel=6, mtime=0))
    os.replace(tmp, path)
    return os.path.getsize(path)


def write_dbs(outdir, repo, pkgs):
    sizes = {}
    for kind, with_files in (("db", False), ("files", True)):
        target = f"{repo}.{kind}.tar.gz"
        sizes[kind] = write_archive(os.path.join(outdir, target), pkgs, with_files)
        link = os.path.join(outdir, f"{repo}.{kind}")
        if not os.path.islink(link):
            os.symlink(target, link)
    return sizes


def write_lastupdate(upstream, t):
    tmp = os.path.join(upstream, "lastupdate.tmp")
    with open(tmp, "w") as f:
        f.write(f"{t}\n")
    os.replace(tmp, os.path.join(upstream, "lastupdate"))


def parse_mix(text):
    """`400x100,40x20480` -> [100 KiB] * 400 + [20480 KiB] * 40 (in bytes)."""
    sizes = []
    for part in text.split(","):
        count, _, kib = part.strip().lower().partition("x")
        if not count.isdigit() or not kib.isdigit() or int(kib) == 0:
            raise SystemExit(f"--mix: expected COUNTxKIB[,COUNTxKIB...], got {part!r}")
        sizes += [int(kib) * 1024] * int(count)
    if not sizes:
        raise SystemExit("--mix: no packages")
    return sizes


def cmd_init(a):
    outdir = os.path.join(a.upstream, a.repo, "os", ARCH_DIR)
    os.makedirs(outdir, exist_ok=True)
    names = set()
    pkgs = []
    mix = None
    if a.mix:
        mix = parse_mix(a.mix)
        random.Random(f"{a.seed}:mix").shuffle(mix)
        a.packages = len(mix)
    for i in range(a.packages):
        meta = make_meta(a.seed, i, names)
        rng = random.Random(f"{a.seed}:size:{i}")
        if mix:
            size = mix[i]
        else:
            size = a.size_kib * 1024 if a.size_kib else rng.randint(a.min_kib * 1024, a.max_kib * 1024)
        rec = build(a.seed, i, meta, 1, size, outdir)
        rec["meta"] = meta
        pkgs.append(rec)
    sizes = write_dbs(outdir, a.repo, pkgs)
    write_lastupdate(a.upstream, FIRST_LASTUPDATE)
    with open(a.state, "w") as f:
        json.dump({"seed": a.seed, "repo": a.repo, "lastupdate": FIRST_LASTUPDATE,
                   "pkgs": pkgs}, f)
    descs = [len(p["desc"].encode()) for p in pkgs]
    print("packages", len(pkgs))
    print("package_bytes", sum(p["size"] for p in pkgs))
    print("sig_bytes", sum(p["sig_size"] for p in pkgs))
    print("desc_bytes", sum(descs))
    print("desc_min", min(descs))
    print("desc_avg", sum(descs) // len(descs))
    print("desc_max", max(descs))
    print("db_bytes", sizes["db"])
    print("files_db_bytes", sizes["files"])


def cmd_bump(a):
    with open(a.state) as f:
        st = json.load(f)
    seed, repo, pkgs = st["seed"], st["repo"], st["pkgs"]
    outdir = os.path.join(a.upstream, repo, "os", ARCH_DIR)
    lastupdate = st["lastupdate"] + 3600
    rng = random.Random(f"{seed}:bump:{lastupdate}")
    chosen = sorted(rng.sample(range(len(pkgs)), min(a.count, len(pkgs))))
    new_desc = new_pkg = new_sig = 0
    for i in chosen:
        old = pkgs[i]
        os.remove(os.path.join(outdir, old["filename"]))
        os.remove(os.path.join(outdir, old["filename"] + ".sig"))
        srng = random.Random(f"{seed}:size:{i}:{old['pkgrel'] + 1}")
        size = old["size"] if a.keep_size else srng.randint(
            max(1024, old["size"] * 3 // 4), old["size"] * 5 // 4)
        rec = build(seed, i, old["meta"], old["pkgrel"] + 1, size, outdir)
        rec["meta"] = old["meta"]
        pkgs[i] = rec
        new_desc += len(rec["desc"].encode())
        new_pkg += rec["size"]
        new_sig += rec["sig_size"]
    sizes = write_dbs(outdir, repo, pkgs)
    write_lastupdate(a.upstream, lastupdate)
    st["lastupdate"] = lastupdate
    with open(a.state + ".tmp", "w") as f:
        json.dump(st, f)
    os.replace(a.state + ".tmp", a.state)
    print("changed", len(chosen))
    print("changed_desc_bytes", new_desc)
    print("new_package_bytes", new_pkg)
    print("new_sig_bytes", new_sig)
    print("db_bytes", sizes["db"])
    print("files_db_bytes", sizes["files"])


def cmd_remove(a):
    """Upstream drops --count packages (seeded choice): files, signatures and db entries."""
    with open(a.state) as f:
        st = json.load(f)
    seed, repo, pkgs = st["seed"], st["repo"], st["pkgs"]
    outdir = os.path.join(a.upstream, repo, "os", ARCH_DIR)
    lastupdate = st["lastupdate"] + 3600
    rng = random.Random(f"{seed}:remove:{lastupdate}")
    chosen = set(rng.sample(range(len(pkgs)), min(a.count, len(pkgs) - 1)))
    gone = 0
    for i in sorted(chosen):
        os.remove(os.path.join(outdir, pkgs[i]["filename"]))
        os.remove(os.path.join(outdir, pkgs[i]["filename"] + ".sig"))
        gone += pkgs[i]["size"]
    st["pkgs"] = [p for i, p in enumerate(pkgs) if i not in chosen]
    sizes = write_dbs(outdir, repo, st["pkgs"])
    write_lastupdate(a.upstream, lastupdate)
    st["lastupdate"] = lastupdate
    with open(a.state + ".tmp", "w") as f:
        json.dump(st, f)
    os.replace(a.state + ".tmp", a.state)
    print("removed", len(chosen))
    print("removed_package_bytes", gone)
    print("db_bytes", sizes["db"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init")
    i.add_argument("--upstream", required=True)
    i.add_argument("--state", required=True)
    i.add_argument("--repo", default="extra")
    i.add_argument("--packages", type=int, default=15000)
    i.add_argument("--min-kib", type=int, default=1)
    i.add_argument("--max-kib", type=int, default=40)
    i.add_argument("--size-kib", type=int, default=0, help="every package exactly this size")
    i.add_argument("--mix", default="",
                   help="COUNTxKIB[,COUNTxKIB...]: packages of these exact sizes in a seeded "
                        "random order (overrides --packages and the other size options)")
    i.add_argument("--seed", default="cidmirror-bench")
    b = sub.add_parser("bump")
    b.add_argument("--upstream", required=True)
    b.add_argument("--state", required=True)
    b.add_argument("--count", type=int, default=150)
    b.add_argument("--keep-size", action="store_true")
    r = sub.add_parser("remove")
    r.add_argument("--upstream", required=True)
    r.add_argument("--state", required=True)
    r.add_argument("--count", type=int, default=10)
    a = ap.parse_args()
    {"init": cmd_init, "bump": cmd_bump, "remove": cmd_remove}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
