#!/usr/bin/env python3
"""Writes small seed corpora for the fuzz targets, cut from the real fixtures.

Usage: make_seeds.py CORPUS_DIR   (creates CORPUS_DIR/<target>/ for every target)

Real files are trimmed into small but well-formed inputs (the parsers reject truncated
streams early, so a plain prefix would only exercise the header checks):
  xl_save    the xl save images with their PAGE_DATA records cut down to a few pages
  elf_core   QEMU's ELF dumps and Xen's dump-core with a few pages per segment/section
  btf        the vmlinuz .BTF section, whole and cut to its first N types
  kallsyms   synthetic kallsyms tables (the layout of tests/kallsyms/synthetic.rs) behind the
             32-byte header the target reads
  vmcoreinfo VMCOREINFO text from ground-truth.json, bare and as an ELF note in a page
  kernel_walk the crafted kernel memory built by the target's own layout (see its source)
  raw_memory a cut .BTF placed one page into otherwise empty RAM
Fixtures: $DORMOUSE_FIXTURES or ../shared/fixtures beside the clone; decompressed copies are taken from
$DORMOUSE_CACHE, /var/tmp/dmcache or ~/.cache/dormouse (fixtures-decompressed/), or made there.
"""

import json
import lzma
import os
import struct
import subprocess
import sys
from pathlib import Path

FIXTURES = Path(os.environ.get("DORMOUSE_FIXTURES", Path(__file__).resolve().parents[3] / "shared/fixtures"))
CACHES = [
    Path(p) / "fixtures-decompressed"
    for p in [os.environ.get("DORMOUSE_CACHE"), "/var/tmp/dmcache", str(Path.home() / ".cache/dormouse")]
    if p
]


def fixture(rel):
    """Path of a fixture, decompressed (into the first cache) if it is only there as .zst."""
    plain = FIXTURES / rel
    if plain.is_file():
        return plain
    for c in CACHES:
        if (c / rel).is_file():
            return c / rel
    src = FIXTURES / f"{rel}.zst"
    if not src.is_file():
        return None
    out = CACHES[0] / rel
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["zstd", "-q", "-f", "-d", "--long=27", str(src), "-o", str(out)], check=True)
    return out


def pad8(n):
    return (8 - n % 8) % 8


# ---------------------------------------------------------------- xl save
XTAB_LIKE = {0xD, 0xE, 0xF}  # broken, xalloc, xtab: no page data follows


def trim_page_data(body, keep):
    count, _ = struct.unpack_from("<II", body, 0)
    pfns = list(struct.unpack_from(f"<{count}Q", body, 8))
    data = body[8 + 8 * count :]
    out_pfns, out_pages, at = [], [], 0
    for p in pfns:
        has = (p >> 60) not in XTAB_LIKE
        if len(out_pfns) < keep:
            out_pfns.append(p)
            if has:
                out_pages.append(data[at : at + 4096])
        if has:
            at += 4096
    return struct.pack("<II", len(out_pfns), 0) + struct.pack(f"<{len(out_pfns)}Q", *out_pfns) + b"".join(out_pages)


def xl_save_seed(path, page_records=1, pages=4):
    """Whole stream with every PAGE_DATA record after the first `page_records` dropped and the
    kept ones cut to `pages` entries."""
    f = open(path, "rb")
    head = f.read(48)
    (opt_len,) = struct.unpack_from("<I", head, 44)
    out = bytearray(head + f.read(opt_len))
    out += f.read(16)  # libxl stream header
    kept = 0
    while True:  # libxl records
        rtype, length = struct.unpack("<II", f.read(8))
        body = f.read(length + pad8(length))
        out += struct.pack("<II", rtype, length) + body
        if rtype == 0:
            break
        if rtype != 1:  # LIBXC_CONTEXT: the libxc stream follows inline
            continue
        out += f.read(24 + 16)  # libxc image header + domain header
        while True:
            rtype, length = struct.unpack("<II", f.read(8))
            body = f.read(length + pad8(length))
            if rtype == 1:  # PAGE_DATA
                if kept >= page_records:
                    continue
                kept += 1
                b = trim_page_data(body[:length], pages)
                out += struct.pack("<II", 1, len(b)) + b + b"\0" * pad8(len(b))
                continue
            out += struct.pack("<II", rtype, length) + body
            if rtype == 0:
                break
    return bytes(out)


# ---------------------------------------------------------------- ELF
def elf_load_seed(path, loads=2, pages=2):
    """A QEMU physical-address dump: ELF header, notes, and `loads` PT_LOADs of `pages` pages."""
    f = open(path, "rb")
    eh = bytearray(f.read(64))
    phoff, phentsize, phnum = struct.unpack_from("<Q", eh, 32)[0], *struct.unpack_from("<HH", eh, 54)
    f.seek(phoff)
    phdrs = [bytearray(f.read(phentsize)) for _ in range(phnum)]
    keep, blobs = [], []
    for ph in phdrs:
        ptype, _, off = struct.unpack_from("<IIQ", ph, 0)
        filesz = struct.unpack_from("<Q", ph, 32)[0]
        if ptype == 4:  # PT_NOTE
            f.seek(off)
            keep.append(ph)
            blobs.append(f.read(filesz))
        elif ptype == 1 and sum(1 for p in keep if struct.unpack_from("<I", p)[0] == 1) < loads:
            size = min(filesz, pages * 4096)
            f.seek(off)
            struct.pack_into("<QQ", ph, 32, size, size)  # p_filesz, p_memsz
            keep.append(ph)
            blobs.append(f.read(size))
    struct.pack_into("<Q", eh, 40, 0)  # no section headers
    struct.pack_into("<HHH", eh, 58, 0, 0, 0)
    struct.pack_into("<H", eh, 56, len(keep))
    struct.pack_into("<Q", eh, 32, 64)
    at = 64 + phentsize * len(keep)
    data = bytearray()
    for ph, blob in zip(keep, blobs):
        struct.pack_into("<Q", ph, 8, at + len(data))
        data += blob
    return bytes(eh) + b"".join(bytes(p) for p in keep) + bytes(data)


def xen_core_seed(path, pages=3):
    """An `xl dump-core` with .xen_pages/.xen_p2m (or .xen_pfn) cut to `pages` entries."""
    f = open(path, "rb")
    eh = bytearray(f.read(64))
    shoff = struct.unpack_from("<Q", eh, 40)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", eh, 58)
    f.seek(shoff)
    shdrs = [bytearray(f.read(shentsize)) for _ in range(shnum)]
    def sec(sh):
        off, size = struct.unpack_from("<QQ", sh, 24)
        f.seek(off)
        return f.read(size)
    names = sec(shdrs[shstrndx])
    def name(sh):
        n = struct.unpack_from("<I", sh, 0)[0]
        return names[n : names.index(b"\0", n)].decode()
    out = bytearray(eh)
    out += b"\0" * 0  # sections follow the header directly
    for sh in shdrs:
        off, size = struct.unpack_from("<QQ", sh, 24)
        entsize = struct.unpack_from("<Q", sh, 56)[0]
        n = name(sh)
        if struct.unpack_from("<I", sh, 4)[0] == 8:  # SHT_NOBITS
            continue
        f.seek(off)
        if n == ".xen_pages":
            size = min(size, pages * 4096)
        elif n in (".xen_p2m", ".xen_pfn"):
            size = min(size, pages * (entsize or 8))
        blob = bytearray(f.read(size))
        if n == ".note.Xen":  # XEN_ELFNOTE_DUMPCORE_HEADER: xch_nr_pages
            i = 0
            while i + 12 <= len(blob):
                namesz, descsz, ntype = struct.unpack_from("<III", blob, i)
                desc = i + 12 + ((namesz + 3) & ~3)
                if ntype == 0x2000001 and descsz >= 24:
                    struct.pack_into("<Q", blob, desc + 16, pages)
                i = desc + ((descsz + 3) & ~3)
        out += b"\0" * ((-len(out)) % 8)
        struct.pack_into("<QQ", sh, 24, len(out), size)
        out += blob
    out += b"\0" * ((-len(out)) % 8)
    struct.pack_into("<Q", eh, 40, len(out))
    out[:64] = eh
    for sh in shdrs:
        out += sh
    return bytes(out)


# ---------------------------------------------------------------- BTF
def vmlinux_from_bzimage(path):
    data = open(path, "rb").read()
    at = data.find(b"\xfd7zXZ\0")
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[at:])


def elf_section(elf, wanted):
    shoff = struct.unpack_from("<Q", elf, 40)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 58)
    sh = lambda i: struct.unpack_from("<IIQQQQ", elf, shoff + i * shentsize)
    strtab = sh(shstrndx)
    base = strtab[4]
    for i in range(shnum):
        n, _, _, _, off, size = sh(i)
        if elf[base + n : elf.index(b"\0", base + n)].decode() == wanted:
            return elf[off : off + size]
    return None


def btf_cut(btf, ntypes):
    """The BTF with only its first `ntypes` types and the strings they name."""
    magic, ver, flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", btf, 0)
    types = btf[hdr_len + type_off : hdr_len + type_off + type_len]
    strs = btf[hdr_len + str_off : hdr_len + str_off + str_len]
    i, n, max_str = 0, 0, 0
    while i < len(types) and n < ntypes:
        name_off, info, _size = struct.unpack_from("<III", types, i)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        max_str = max(max_str, name_off)
        i += 12
        extra = {1: 4, 3: 12, 4: 12 * vlen, 5: 12 * vlen, 6: 8 * vlen, 13: 8 * vlen, 14: 4,
                 15: 12 * vlen, 17: 4, 19: 12 * vlen}.get(kind, 0)
        if kind in (4, 5, 19):  # members: name_off, type, offset
            for m in range(vlen):
                max_str = max(max_str, struct.unpack_from("<I", types, i + 12 * m)[0])
        if kind in (6, 13):  # enum / func_proto entries: name_off first
            for m in range(vlen):
                max_str = max(max_str, struct.unpack_from("<I", types, i + 8 * m)[0])
        i += extra
        n += 1
    types = types[:i]
    end = strs.index(b"\0", max_str) + 1 if max_str < len(strs) else len(strs)
    strs = strs[:end]
    return struct.pack("<HBBIIIII", magic, ver, flags, 24, 0, len(types), len(types), len(strs)) + types + strs


# ---------------------------------------------------------------- kallsyms
KBASE = 0xFFFF_FFFF_8200_0000
KTEXT = 0xFFFF_FFFF_8100_0000


def kallsyms_seed(n, seqs=False):
    """tests/kallsyms/synthetic.rs `synthetic()` in 6.1 order, behind the fuzz target's 32-byte header."""
    syms = [(i * 0x1000, "A", f"percpu_{i}") for i in range(4)]
    syms += [(KTEXT, "T", "_stext"), (KTEXT, "T", "_text")]
    syms += [(KTEXT + 0x10 * (i + 1), "t" if i % 3 == 0 else "T", f"fn_{i}") for i in range(n)]
    b = bytearray(b"\xcc" * 64)
    align = lambda: b.extend(b"\0" * ((-len(b)) % 8))
    offsets = len(b)
    for addr, kind, _ in syms:
        v = addr if kind == "A" else KTEXT - 1 - addr
        b += struct.pack("<i", v)
    align()
    rb = len(b)
    b += struct.pack("<Q", KTEXT)
    num = len(b)
    b += struct.pack("<I", len(syms))
    align()
    names = len(b)
    markers = []
    for i, (_, kind, name) in enumerate(syms):
        if i % 256 == 0:
            markers.append(len(b) - names)
        b.append(len(name) + 1)
        b += kind.encode() + name.encode()
    align()
    marker_at = len(b)
    for m in markers:
        b += struct.pack("<I", m)
    align()
    if seqs:
        for i in range(len(syms)):
            b += i.to_bytes(3, "big")
        align()
    token_table = len(b)
    index, off = bytearray(), 0
    for i in range(256):
        index += struct.pack("<H", off)
        t = bytes([i]) if 0x21 <= i < 0x7F else f"~{i:02x}".encode()
        off += len(t) + 1
        b += t + b"\0"
    align()
    token_index = len(b)
    b += index
    b.extend(b"\xcc" * ((-len(b)) % 4096))
    flags = 8  # markers of 4 bytes, relative addresses, no _stext, one-byte lengths
    b[:32] = struct.pack("<8I", num, names, marker_at, token_table, token_index, offsets, rb, flags)
    return bytes(b)


# ---------------------------------------------------------------- vmcoreinfo
def vmcoreinfo_note_page(text, at=0x100):
    desc = text.encode()
    note = struct.pack("<III", 11, len(desc), 0) + b"VMCOREINFO\0\0" + desc
    page = bytearray(8192)
    page[4096 + at : 4096 + at + len(note)] = note
    return bytes(page)


# ---------------------------------------------------------------- kernel walk
WBASE = 0xFFFF_8880_0000_0000
WUSER = 0x1000
WTEXT = 0xFFFF_FFFF_8100_0000


def kernel_walk_seed(variant):
    """Kernel memory laid out as fuzz_targets/kernel_walk.rs's fixed symbols and types expect:
    uname, banner, command line, boot id, two tasks (one user, one kernel thread), two
    filesystems, a module, sysctl tables, a network device with IPv4/IPv6 addresses, and
    init's root mount. `variant` is the first byte (the target's layout switches)."""
    m = bytearray(0x2000)
    def put(off, data):
        m[off : off + len(data)] = data
    q = lambda off, v: struct.pack_into("<Q", m, off, v)
    d = lambda off, v: struct.pack_into("<I", m, off, v & 0xFFFFFFFF)
    a = lambda off: WBASE + off
    for i, f in enumerate([b"Linux", b"fuzz", b"6.1.0-fuzz", b"#1 SMP", b"x86_64", b"(none)"]):
        put(16 * i, f)
    m[0] = variant
    put(0x100, b"Linux version 6.1.0-fuzz (fuzz)\n\0")
    q(0x180, a(0x1000)); put(0x1000, b"root=/dev/xvda1 ro\0")
    put(0x188, bytes(range(1, 17)))
    q(0x198, 4_000_000)
    # file_systems: ext4 (requires a device) -> proc
    q(0x1A0, a(0x1100))
    q(0x1100, a(0x1180)); d(0x1108, 1); q(0x1110, a(0x1140))
    q(0x1140, a(0x1190)); d(0x1148, 0); q(0x1150, 0)
    put(0x1180, b"ext4\0"); put(0x1190, b"proc\0")
    # modules: one
    q(0x1A8, a(0x1200)); q(0x1B0, a(0x1200))
    q(0x1200, a(0x1A8)); q(0x1208, a(0x1A8)); put(0x1210, b"xen_blkfront\0")
    d(0x1220, 0); d(0x1224, 1); d(0x1228, 0x4000); d(0x1230, 0x1000); d(0x1238, 0x200)
    # init_net: one device, IPv6 devconf instances
    q(0x1C0, a(0x1300)); q(0x1C8, a(0x1300)); q(0x1D0, a(0x1500)); q(0x1D8, a(0x1540))
    q(0x1300, a(0x1C0)); q(0x1308, a(0x1C0)); put(0x1310, b"eth0\0")
    q(0x1320, a(0x1380)); m[0x1328] = 6; q(0x1330, a(0x13A0)); q(0x1338, a(0x1400))
    put(0x1380, bytes([0, 0x16, 0x3E, 0, 0, 1]))
    q(0x13A0, a(0x13C0)); q(0x13C0, 0); put(0x13C8, bytes([10, 0, 0, 2])); m[0x13CC] = 24
    q(0x1400, a(0x1480)); q(0x1408, a(0x1480))
    q(0x1480, a(0x1400)); q(0x1488, a(0x1400)); put(0x1490, bytes([0xFE, 0x80] + [0] * 13 + [1])); d(0x14A0, 64)
    for inst in (0x480, 0x1500, 0x1540, 0x1410):
        d(inst, 1); d(inst + 4, 64)
    # tasks: init_task -> init (pid 1) -> kthreadd (pid 2) -> init_task
    q(0x200, a(0x1600)); q(0x208, a(0x1680))
    for t, nxt, pid, comm, flags, mm in [
        (0x1600, 0x1680, 1, b"init", 0x400100, a(0x1740)),
        (0x1680, 0x200, 2, b"kthreadd", 0x208040, 0),
    ]:
        q(t, a(nxt)); d(t + 0x10, pid); d(t + 0x14, pid); put(t + 0x18, comm)
        q(t + 0x28, a(0x200)); q(t + 0x30, a(0x1700)); q(t + 0x38, mm); d(t + 0x40, flags)
        d(t + 0x44, 0x8000 | 1); d(t + 0x48, 1); q(t + 0x60, a(0x17C0))
        q(t + 0x68, a(0x1900)); q(t + 0x70, a(0x1940))
    d(0x1704, 1000); d(0x1708, 1000)
    args = b"/sbin/init\0splash\0"
    put(0x1800, args); q(0x1740, WUSER + 0x1800); q(0x1748, WUSER + 0x1800 + len(args)); q(0x1750, a(0x1000))
    q(0x17C0, a(0x17E0)); put(0x17E0, b"kthreadd-with-a-long-name\0")
    # init's mounts: one root mount of /dev/xvda1
    q(0x1900, a(0x1A20)); q(0x1908, a(0x1B00)); q(0x1940, a(0x1950))
    q(0x1950, a(0x1A00)); q(0x1958, a(0x1A00))
    q(0x1A00, a(0x1950)); q(0x1A08, a(0x1950)); q(0x1A10, a(0x1A00)); q(0x1A18, a(0x1B00))
    q(0x1A20, a(0x1B00)); q(0x1A28, a(0x1B40)); d(0x1A30, 0x20); q(0x1A40, a(0x1B80))
    q(0x1B00, a(0x1B20)); q(0x1B08, a(0x1B00)); put(0x1B20, b"/\0")
    q(0x1B40, a(0x1100)); q(0x1B48, 0); put(0x1B80, b"/dev/xvda1\0")
    # sysctls: kern_table, vm_table, fs_table (empty), addrconf_sysctl over ipv6_devconf
    def ctl(off, name_at, name, data, maxlen, handler):
        put(name_at, name + b"\0"); q(off, a(name_at)); q(off + 8, data); d(off + 0x10, maxlen)
        q(off + 0x18, WTEXT + handler)
    ctl(0x300, 0x1C00, b"pid_max", a(0x1C20), 4, 0x10)
    d(0x1C20, 32768)
    ctl(0x320, 0x1C40, b"hostname", a(16), 16, 0)
    ctl(0x380, 0x1C60, b"swappiness", a(0x1C80), 4, 0x20)
    d(0x1C80, 60)
    ctl(0x3A0, 0x1CA0, b"dirty_expire_centisecs", a(0x1C84), 4, 0x70)
    d(0x1C84, 3000)
    ctl(0x400, 0x1CC0, b"forwarding", a(0x480), 4, 0x10)
    ctl(0x420, 0x1CE0, b"hop_limit", a(0x484), 4, 0xA0)
    return bytes(m)


def main():
    root = Path(sys.argv[1])
    def put(target, name, data):
        d = root / target
        d.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data)
        print(f"  {target}/{name}: {len(data)} bytes")

    for rel, tag in [("xen-pv-a/domU-A.save", "pv"), ("xen-hvm-bios/domU-H.save", "hvm")]:
        p = fixture(rel)
        if p:
            put("xl_save", f"{tag}-1x4", xl_save_seed(p, 1, 4))
            put("xl_save", f"{tag}-2x1", xl_save_seed(p, 2, 1))
            put("xl_save", f"{tag}-head", open(p, "rb").read(4096))
    for rel, tag in [("qemu-6.1-4level/dump.elf", "qemu4"), ("qemu-6.1-la57/dump.elf", "qemu5")]:
        p = fixture(rel)
        if p:
            put("elf_core", f"{tag}-2x2", elf_load_seed(p, 2, 2))
            put("elf_core", f"{tag}-1x1", elf_load_seed(p, 1, 1))
    p = fixture("xen-pv-a/domU-A.core")
    if p:
        put("elf_core", "xen-dump-core-3", xen_core_seed(p, 3))
        put("elf_core", "xen-dump-core-head", open(p, "rb").read(8192))

    # The fixtures' kernel, whatever release it is (kernel-<release>/vmlinuz-<release>).
    vmlinuz = next(iter(sorted(FIXTURES.glob("kernel-*/vmlinuz-*"))), None)
    if vmlinuz:
        btf = elf_section(vmlinux_from_bzimage(vmlinuz), ".BTF")
        if btf:
            put("btf", "vmlinux-full", btf)
            for n in (40, 400, 4000):
                put("btf", f"vmlinux-first-{n}", btf_cut(btf, n))
            # As RAM: a cut .BTF one page in, where the carving scan finds it by its header.
            put("raw_memory", "btf-at-page-1", bytes(4096) + btf_cut(btf, 400))

    put("kallsyms", "synthetic-40", kallsyms_seed(40))
    put("kallsyms", "synthetic-300-seqs", kallsyms_seed(300, seqs=True))

    for case in ["qemu-6.1-4level", "qemu-6.1-la57"]:
        gt = FIXTURES / case / "ground-truth.json"
        if gt.is_file():
            text = json.load(open(gt))["vmcoreinfo_text"]
            put("vmcoreinfo", f"{case}.txt", text.encode())
            put("vmcoreinfo", f"{case}-note-in-ram", vmcoreinfo_note_page(text))
            put("vmcoreinfo", f"{case}-data-in-ram", bytes(4096) + text.encode().ljust(4096, b"\0"))

    for v in (0x4C, 0x4D, 0x4E, 0x5C, 0x40):
        put("kernel_walk", f"variant-{v:02x}", kernel_walk_seed(v))


if __name__ == "__main__":
    main()
