#!/usr/bin/env python3
"""Writes small seed corpora for the emulator fuzz targets from real tool output.

Usage: make_seeds.py CORPUS_DIR   (creates CORPUS_DIR/<target>/ for every target)

  partition     small disks partitioned by sfdisk (MBR with logical partitions, GPT)
  probe         the first blocks of filesystems made by mkfs.ext2/3/4, mkswap, mkfs.xfs, and a
                btrfs superblock placed by hand (no mkfs.btrfs here)
  qcow2_header  images made by qemu-img: qcow2 (plain, with a backing file and format, with an
                external data file), qcow, and the other containers detect() knows
  fstab         this machine's /etc/fstab and /etc/os-release, the rpm test guest's, and a
                crafted fstab using every source form
  xl_config     the libxl JSON config of the xen-pv-a fixture (from `xl list -l`)
A tool that is missing only costs its seeds. Nothing here is kept in git.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FIXTURES = Path(os.environ.get("DORMOUSE_FIXTURES", Path(__file__).resolve().parents[3] / "shared/fixtures"))


def run(*cmd):
    """Runs a seed-making tool quietly; False when it is missing or fails."""
    if shutil.which(cmd[0]) is None:
        return False
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True).returncode == 0


def blank(path, size):
    with open(path, "wb") as f:
        f.truncate(size)


def partitions(tmp, out):
    layouts = {
        # An extended partition makes sfdisk write the EBR chain the reader follows.
        "mbr": "label: dos\nstart=1, size=63, type=83\nstart=64, size=320, type=5\n"
        "start=65, size=100, type=83\nstart=166, size=100, type=82\nstart=400, size=100, type=83\n",
        "gpt": "label: gpt\nfirst-lba: 34\nstart=40, size=64, name=root\nstart=104, size=64, type=S\n",
    }
    for name, script in layouts.items():
        img = tmp / f"{name}.img"
        blank(img, 256 << 10)
        if subprocess.run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(img)],
                          input=script.encode(), capture_output=True).returncode == 0:
            shutil.copy(img, out / name)


def filesystems(tmp, out):
    # The probe reads the first 4 KiB (and 4 KiB at 64 KiB for btrfs): keep just that.
    made = [
        ("ext2", ["mkfs.ext2", "-q", "-F", "-L", "seed"], 1 << 20),
        ("ext3", ["mkfs.ext3", "-q", "-F", "-L", "seed"], 4 << 20),
        ("ext4", ["mkfs.ext4", "-q", "-F", "-L", "seed"], 4 << 20),
        ("swap", ["mkswap", "-L", "seed"], 1 << 20),
        ("xfs", ["mkfs.xfs", "-q", "-f", "-L", "seed"], 300 << 20),
    ]
    for name, cmd, size in made:
        img = tmp / f"{name}.fs"
        blank(img, size)
        if run(*cmd, str(img)):
            with open(img, "rb") as f:
                (out / name).write_bytes(f.read(4096))
    btrfs = bytearray(0x11000)
    btrfs[0x10000 + 32:0x10000 + 48] = bytes(range(16))
    btrfs[0x10000 + 64:0x10000 + 72] = b"_BHRfS_M"
    btrfs[0x10000 + 299:0x10000 + 303] = b"seed"
    (out / "btrfs").write_bytes(bytes(btrfs))


def images(tmp, out):
    run("qemu-img", "create", "-q", "-f", "qcow2", str(tmp / "base.qcow2"), "1M")
    made = {
        "qcow2": ["-f", "qcow2"],
        "qcow2-backing": ["-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2"],
        "qcow2-raw-backing": ["-f", "qcow2", "-u", "-b", "base.raw", "-F", "raw"],
        "qcow2-data-file": ["-f", "qcow2", "-o", f"data_file={tmp / 'data.raw'}"],
        "qcow2-v2": ["-f", "qcow2", "-o", "compat=0.10"],
        "qcow": ["-f", "qcow"],
        "qed": ["-f", "qed"],
        "vmdk": ["-f", "vmdk"],
        "vpc": ["-f", "vpc"],
        "vdi": ["-f", "vdi"],
        "vhdx": ["-f", "vhdx"],
    }
    for name, args in made.items():
        img = tmp / name
        if run("qemu-img", "create", "-q", *args, str(img), "1M"):
            # The header, its extensions and a backing name all sit in the first 64 KiB,
            # which is all the format code reads.
            with open(img, "rb") as f:
                (out / name).write_bytes(f.read(64 << 10))


CRAFTED_FSTAB = r"""# crafted: every source form the guest tree resolves
UUID=0a1b2c3d-0000-4000-8000-000000000001 / ext4 errors=remount-ro 0 1
LABEL="boot\040disk" /boot ext4 defaults,nofail 0 2
PARTUUID=12345678-02 /var xfs defaults 0 2
PARTLABEL=home /home btrfs subvol=@home 0 0
/dev/disk/by-uuid/0a1b2c3d-0000-4000-8000-000000000002 none swap sw 0 0
/dev/disk/by-label/my\x20data /srv/my\040data ext3 ro
/dev/xvda1 /mnt/a ext4
/dev/nvme0n1p2 /mnt/b ext4 defaults
/dev/sdab /mnt/c ext2 defaults
/dev/mapper/vg-lv /mnt/d ext4 defaults
server:/export /mnt/nfs nfs defaults
tmpfs /tmp tmpfs mode=1777
"""


def texts(out):
    for name, path in [
        ("fstab", "/etc/fstab"),
        ("os-release", "/etc/os-release"),
        ("rpmguest-fstab", "/var/tmp/dmcache2/rpmguest/root/etc/fstab"),
        ("rpmguest-os-release", "/var/tmp/dmcache2/rpmguest/root/etc/os-release"),
    ]:
        if Path(path).is_file():
            shutil.copy(path, out / name)
    (out / "crafted").write_text(CRAFTED_FSTAB)


def xl_configs(out):
    listed = FIXTURES / "xen-pv-a/domU-A.xl-list-l.json"
    if listed.is_file():
        for i, domain in enumerate(json.loads(listed.read_text())):
            # The save image embeds the "config" object of `xl list -l`.
            (out / f"xen-pv-a-{i}").write_text(json.dumps(domain.get("config", domain), indent=1))
    # A usable disk: a path that exists on every host.
    (out / "usable").write_text(json.dumps({"disks": [{"pdev_path": "/dev/null", "vdev": "xvda", "format": "raw"}]}))


def main():
    corpus = Path(sys.argv[1])
    dirs = {t: corpus / t for t in ["partition", "probe", "qcow2_header", "fstab", "xl_config"]}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        partitions(tmp, dirs["partition"])
        filesystems(tmp, dirs["probe"])
        images(tmp, dirs["qcow2_header"])
    texts(dirs["fstab"])
    xl_configs(dirs["xl_config"])
    for t, d in dirs.items():
        print(f"{t}: {len(list(d.iterdir()))} files")


if __name__ == "__main__":
    main()
