#!/usr/bin/env python3
"""Writes a local pacman upstream with one large database, for bench/mirror_mem.sh.

    gen_db.py plain   --upstream DIR --entries 200000
    gen_db.py hostile --upstream DIR --entries 3000 --desc-kib 1024

`plain`: DIR/core/os/x86_64/core.db(.tar.gz) with ENTRIES entries whose desc files carry the
fields of an ordinary Arch entry (no %PGPSIG%, no .files database), every one pointing at
the same 1 KiB package bytes under its own file name. Only the first entry's file exists
upstream: the publisher fetches each distinct SHA-256 once, so the sync does what a sync of
ENTRIES packages does to its memory (parse, plan, listing, index) without ENTRIES downloads.

`hostile`: the same, but every entry's %DESC% is DESC_KIB KiB of one repeated letter (it
compresses to almost nothing): what the probe in issue 12 fed the publisher.

Prints `key value` lines: entries, db_bytes (compressed), unpacked_bytes.
"""

import argparse
import hashlib
import io
import os
import tarfile

PKG = b"cidmirror bench package\n" * 43  # 1,032 bytes
SHA = hashlib.sha256(PKG).hexdigest()
MD5 = hashlib.md5(PKG).hexdigest()


def desc(i, desc_text):
    name = f"bench-package-{i:06d}"
    fields = [
        ("FILENAME", [f"{name}-1.0-1-x86_64.pkg.tar.zst"]),
        ("NAME", [name]),
        ("BASE", [name]),
        ("VERSION", ["1.0-1"]),
        ("DESC", [desc_text]),
        ("CSIZE", [str(len(PKG))]),
        ("ISIZE", ["4096"]),
        ("MD5SUM", [MD5]),
        ("SHA256SUM", [SHA]),
        ("URL", [f"https://example.org/{name}"]),
        ("LICENSE", ["GPL-3.0-or-later"]),
        ("ARCH", ["x86_64"]),
        ("BUILDDATE", ["1700000000"]),
        ("PACKAGER", ["Bench Packager <bench@example.org>"]),
        ("DEPENDS", ["glibc", "gcc-libs", "zlib"]),
    ]
    out = "".join(f"%{k}%\n" + "".join(v + "\n" for v in vs) + "\n" for k, vs in fields)
    return f"{name}-1.0-1", out.encode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["plain", "hostile"])
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--entries", type=int, required=True)
    ap.add_argument("--desc-kib", type=int, default=1024)
    a = ap.parse_args()

    d = os.path.join(a.upstream, "core", "os", "x86_64")
    os.makedirs(d, exist_ok=True)
    text = "A benchmark package of no use at all"
    if a.kind == "hostile":
        text = "x" * (a.desc_kib * 1024)
    buf = io.BytesIO()
    unpacked = 0
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for i in range(a.entries):
            entry, body = desc(i, text)
            info = tarfile.TarInfo(f"{entry}/desc")
            info.size = len(body)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(body))
            unpacked += len(body)
    db = os.path.join(d, "core.db.tar.gz")
    with open(db, "wb") as f:
        f.write(buf.getvalue())
    link = os.path.join(d, "core.db")
    if not os.path.lexists(link):
        os.symlink("core.db.tar.gz", link)
    first = desc(0, text)[0]
    with open(os.path.join(d, f"{first}-x86_64.pkg.tar.zst"), "wb") as f:
        f.write(PKG)
    with open(os.path.join(a.upstream, "lastupdate"), "w") as f:
        f.write("1700000000\n")
    print(f"entries {a.entries}")
    print(f"db_bytes {len(buf.getvalue())}")
    print(f"unpacked_bytes {unpacked}")


if __name__ == "__main__":
    main()
