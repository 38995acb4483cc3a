#!/usr/bin/env python3
"""Writes small seed corpora for the packages fuzz targets from this machine's real files.

Usage: make_seeds.py CORPUS_DIR   (creates CORPUS_DIR/<target>/ for every target)

  dpkg_status     the head of /var/lib/dpkg/status (cut at a stanza boundary), a few info/*.list
  sources         /etc/apt/sources.list{,.d/*}, /etc/yum.repos.d/*.repo, the InRelease files
                  of /var/lib/apt/lists
  version         pairs of installed versions from the status file ("a\\0b")
  packages_index  the head of every Packages index in /var/lib/apt/lists (decompressed)
  rpm_header      rpm headers: the blobs of the rpm test guest's rpmdb.sqlite when it has
                  packages, else one laid out here as rpmdb.sqlite stores it, and as a package
                  file (lead, signature header, main header)
Versions are whatever this machine has: nothing here names one, and nothing is kept in git.
"""

import glob
import re
import shutil
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

HEAD = 32 << 10
RPMDB = "/var/tmp/dmcache2/rpmguest/root/var/lib/rpm/rpmdb.sqlite"


def head(data):
    """The first stanzas of a deb822 file, at most HEAD bytes."""
    cut = data[:HEAD]
    return cut[: cut.rfind(b"\n\n") + 2] if b"\n\n" in cut else cut


def rpm_header(entries):
    """A header without magic (count, data length, index, data), as rpmdb.sqlite stores it."""
    index, data = b"", b""
    for tag, kind, count, value in entries:
        index += struct.pack(">4I", tag, kind, len(data), count)
        data += value
    return struct.pack(">2I", len(entries), len(data)) + index + data


def rpm_headers():
    try:
        db = sqlite3.connect(f"file:{RPMDB}?mode=ro", uri=True)
        blobs = [b for (b,) in db.execute("SELECT blob FROM Packages ORDER BY length(blob) LIMIT 4")]
    except sqlite3.Error:
        blobs = []
    if blobs:
        return blobs
    s = lambda t: t.encode() + b"\0"
    # NAME, VERSION, RELEASE, ARCH: what the installed-package reader requires.
    return [rpm_header([(1000, 6, 1, s("seed")), (1001, 6, 1, s("1.0")), (1002, 6, 1, s("1.fc40")),
                        (1022, 6, 1, s("x86_64"))])]


def package_file(blob):
    """An rpm package around a main header: lead, empty signature header, header with magic."""
    lead = bytes([0xED, 0xAB, 0xEE, 0xDB]) + bytes(92)
    magic = bytes([0x8E, 0xAD, 0xE8, 0x01]) + bytes(4)
    return lead + magic + struct.pack(">2I", 0, 0) + magic + blob


def main():
    corpus = Path(sys.argv[1])
    out = {t: corpus / t for t in ["dpkg_status", "sources", "version", "packages_index", "rpm_header"]}
    for d in out.values():
        d.mkdir(parents=True, exist_ok=True)

    status = Path("/var/lib/dpkg/status")
    if status.is_file():
        text = status.read_bytes()
        (out["dpkg_status"] / "status").write_bytes(head(text))
        versions = re.findall(rb"^Version: (.+)$", text, re.M)[:64]
        for n, (a, b) in enumerate(zip(versions, versions[1:])):
            (out["version"] / f"pair-{n}").write_bytes(a + b"\0" + b)
    for n, path in enumerate(sorted(glob.glob("/var/lib/dpkg/info/*.list"))[:4]):
        (out["dpkg_status"] / f"list-{n}").write_bytes(Path(path).read_bytes()[:HEAD])

    configs = ["/etc/apt/sources.list", *glob.glob("/etc/apt/sources.list.d/*"), *glob.glob("/etc/yum.repos.d/*.repo"),
               *glob.glob("/var/lib/apt/lists/*InRelease")]
    for n, path in enumerate(p for p in configs if Path(p).is_file()):
        shutil.copy(path, out["sources"] / f"{n}-{Path(path).name[-40:]}")

    for n, path in enumerate(sorted(glob.glob("/var/lib/apt/lists/*_Packages*"))):
        raw = Path(path).read_bytes()
        if path.endswith(".lz4") and shutil.which("lz4"):
            raw = subprocess.run(["lz4", "-dc"], input=raw, capture_output=True).stdout
        (out["packages_index"] / f"packages-{n}").write_bytes(head(raw))

    for n, blob in enumerate(rpm_headers()):
        (out["rpm_header"] / f"blob-{n}").write_bytes(blob)
        (out["rpm_header"] / f"package-{n}").write_bytes(package_file(blob))
        (out["packages_index"] / f"rpm-blob-{n}").write_bytes(blob)

    for t, d in out.items():
        print(f"{t}: {len(list(d.iterdir()))} files")


if __name__ == "__main__":
    main()
