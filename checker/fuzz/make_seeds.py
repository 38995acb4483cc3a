#!/usr/bin/env python3
"""Writes small seed corpora for the checker fuzz targets.

Usage: make_seeds.py CORPUS_DIR   (creates CORPUS_DIR/<target>/ for every target)

The first byte of every input picks the file's compression (see the targets), so each file is
written once per compression this script can produce:
  rpmmd      repomd.xml, primary.xml and updateinfo.xml: the samples of packages/src/rpmmd.rs
             (no rpm-md repository is cached on this machine), plain, gzip, xz and zstd
  apt_index  the head of every Packages index of this machine's /var/lib/apt/lists and of the
             test repository in the dormouse cache, cut at a stanza boundary: plain, lz4,
             gzip, xz
Nothing here is kept in git.
"""

import glob
import gzip
import lzma
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAD = 32 << 10


def tool(cmd, data):
    """Compresses with a command-line tool; None when it is missing."""
    if shutil.which(cmd[0]) is None:
        return None
    return subprocess.run(cmd, input=data, capture_output=True, check=True).stdout


def plain(path):
    """The text of an index file, decompressed by its suffix."""
    raw = Path(path).read_bytes()
    if path.endswith(".gz"):
        return gzip.decompress(raw)
    if path.endswith(".xz"):
        return lzma.decompress(raw)
    if path.endswith(".lz4"):
        return tool(["lz4", "-dc"], raw)
    return raw


def write(out, name, text, codecs):
    for pick, (suffix, compress) in enumerate(codecs):
        data = compress(text)
        if data is not None:
            (out / f"{name}{suffix}").write_bytes(bytes([pick]) + data)


def main():
    corpus = Path(sys.argv[1])
    rpmmd, apt = corpus / "rpmmd", corpus / "apt_index"
    for d in (rpmmd, apt):
        d.mkdir(parents=True, exist_ok=True)

    # Order as in the targets: rpmmd's SUFFIXES and indices::Compression::ALL.
    xml_codecs = [
        ("", lambda t: t),
        (".gz", gzip.compress),
        (".xz", lambda t: lzma.compress(t, format=lzma.FORMAT_XZ)),
        (".zst", lambda t: tool(["zstd", "-q", "-c"], t)),
    ]
    apt_codecs = [
        ("", lambda t: t),
        (".lz4", lambda t: tool(["lz4", "-q", "-c"], t)),
        (".gz", gzip.compress),
        (".xz", lambda t: lzma.compress(t, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64)),
    ]

    source = (ROOT / "packages/src/rpmmd.rs").read_text()
    for name, text in re.findall(r'const (\w+): &str = r#"(.*?)"#;', source, re.S):
        write(rpmmd, name.lower(), text.encode(), xml_codecs)

    cache = os.environ.get("DORMOUSE_CACHE")
    lists = glob.glob("/var/lib/apt/lists/*_Packages*")
    for base in [cache, "/var/tmp/dmcache", "/var/tmp/dmcache2"]:
        if base:
            lists += glob.glob(f"{base}/repo/www/*/dists/*/*/binary-*/Packages")
    cuts = set()
    for path in sorted(lists):
        text = plain(path) or b""
        cut = text[:HEAD]
        # A whole stanza at the end, so the parser does not stop on a cut field.
        cuts.add(cut[: cut.rfind(b"\n\n") + 2] if b"\n\n" in cut else cut)
    for n, cut in enumerate(sorted(c for c in cuts if c)):
        write(apt, f"packages-{n}", cut, apt_codecs)

    for d in (rpmmd, apt):
        print(f"{d.name}: {len(list(d.iterdir()))} files")


if __name__ == "__main__":
    main()
