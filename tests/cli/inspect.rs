//! `dormouse inspect --disk`: profile files come from the guest's own /boot, read-only, and
//! Debian's placeholder System.map is recognised and skipped.

use std::path::Path;
use std::process::Command;

use dormouse_tests::{FixtureKernel, decompressed, xen_fixtures};

use crate::dormouse_bin;

/// A bare ext4 filesystem image (no partition table, as Xen PV `xvda1` disks often are)
/// holding a minimal root with the given /boot files.
fn guest_fs(dir: &Path, boot: &[(&str, &[u8])]) -> std::path::PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("boot")).unwrap();
    for (name, bytes) in boot {
        std::fs::write(root.join("boot").join(name), bytes).unwrap();
    }
    root_fs(dir, "/dev/xvda1 / ext4 defaults 0 1\n")
}

/// A bare ext4 image of `DIR/root` with an /etc/fstab and os-release, as `DIR/disk.img`.
fn root_fs(dir: &Path, fstab: &str) -> std::path::PathBuf {
    let root = dir.join("root");
    for d in ["etc", "boot"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("etc/fstab"), fstab).unwrap();
    std::fs::write(root.join("etc/os-release"), "ID=debian\nVERSION_ID=\"12\"\n").unwrap();
    ext4_image(&root, &dir.join("disk.img"), None)
}

fn ext4_image(contents: &Path, image: &Path, uuid: Option<&str>) -> std::path::PathBuf {
    let mut mke2fs = Command::new("mke2fs");
    mke2fs.args(["-q", "-t", "ext4"]);
    if let Some(uuid) = uuid {
        mke2fs.args(["-U", uuid]);
    }
    let status = mke2fs
        .arg("-d")
        .arg(contents)
        .arg(image)
        .arg("64M")
        .status()
        .expect("run mke2fs (e2fsprogs)");
    assert!(status.success());
    image.to_owned()
}

fn inspect_json(save: &Path, disk: &Path) -> (serde_json::Value, String) {
    inspect_json_disks(save, &[disk])
}

fn inspect_json_disks(save: &Path, disks: &[&Path]) -> (serde_json::Value, String) {
    let mut inspect = Command::new(dormouse_bin());
    inspect.arg("inspect").arg(save);
    for disk in disks {
        inspect.arg("--disk").arg(disk);
    }
    let out = inspect.arg("--json").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "dormouse inspect failed: {stderr}");
    let snapshot = serde_json::from_slice(&out.stdout).unwrap();
    crate::schemas::assert_valid("inspect", &snapshot);
    (snapshot, stderr)
}

#[test]
fn profile_files_from_the_guest_disk_are_used_and_cross_checked() {
    let Some(fx) = xen_fixtures("profile_files_from_the_guest_disk_are_used_and_cross_checked") else {
        return;
    };
    let save = decompressed(&fx, "xen-pv-a/domU-A.save");
    let kernel = FixtureKernel::read(&fx);
    let release = &kernel.release;
    let map = std::fs::read(decompressed(&fx, &kernel.system_map_rel())).unwrap();
    let vmlinuz = std::fs::read(kernel.vmlinuz()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (map_name, vmlinuz_name) = (format!("System.map-{release}"), format!("vmlinuz-{release}"));
    let disk = guest_fs(dir.path(), &[(&map_name, &map), (&vmlinuz_name, &vmlinuz)]);
    let (snapshot, _) = inspect_json(&save, &disk);
    let profile = &snapshot["kernel"]["profile"];
    let symbols = profile["symbols"].as_str().unwrap();
    let types = profile["types"].as_str().unwrap();
    assert!(symbols.starts_with(&format!("/boot/{map_name} on ")), "{symbols}");
    assert!(
        types.contains(&format!("/boot/{vmlinuz_name}")) && types.contains("identical to the .BTF in RAM"),
        "{types}"
    );
    assert_eq!(snapshot["uts"]["nodename"], "dormouse-a");
}

/// A /boot of its own, on the second disk, mounted by UUID from the root's fstab: the profile
/// files come from there (they used to be looked for on the first disk's root only).
#[test]
fn profile_files_come_from_the_disk_the_guest_mounts_on_boot() {
    let Some(fx) = xen_fixtures("profile_files_come_from_the_disk_the_guest_mounts_on_boot") else {
        return;
    };
    let save = decompressed(&fx, "xen-pv-a/domU-A.save");
    let kernel = FixtureKernel::read(&fx);
    let map = std::fs::read(decompressed(&fx, &kernel.system_map_rel())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let uuid = "6f1c1b1e-5d0a-4a58-9e2e-0b6d1e7a2c44";
    let root = root_fs(
        dir.path(),
        &format!("/dev/xvda1 / ext4 defaults 0 1\nUUID={uuid} /boot ext4 defaults 0 2\n"),
    );
    let boot_dir = dir.path().join("boot-contents");
    std::fs::create_dir(&boot_dir).unwrap();
    let map_name = format!("System.map-{}", kernel.release);
    std::fs::write(boot_dir.join(&map_name), &map).unwrap();
    let boot = ext4_image(&boot_dir, &dir.path().join("boot.img"), Some(uuid));
    let (snapshot, stderr) = inspect_json_disks(&save, &[&root, &boot]);
    let symbols = snapshot["kernel"]["profile"]["symbols"].as_str().unwrap();
    assert!(
        symbols.starts_with(&format!("/boot/{map_name} on {}:", boot.display())),
        "{symbols}\n{stderr}"
    );
}

#[test]
fn debian_placeholder_system_map_is_skipped() {
    let Some(fx) = xen_fixtures("debian_placeholder_system_map_is_skipped") else {
        return;
    };
    let save = decompressed(&fx, "xen-pv-a/domU-A.save");
    let placeholder: &[u8] = b"ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package\n";
    let dir = tempfile::tempdir().unwrap();
    let map_name = format!("System.map-{}", FixtureKernel::read(&fx).release);
    let disk = guest_fs(dir.path(), &[(&map_name, placeholder)]);
    let (snapshot, stderr) = inspect_json(&save, &disk);
    assert!(stderr.contains("placeholder"), "{stderr}");
    let symbols = snapshot["kernel"]["profile"]["symbols"].as_str().unwrap();
    assert!(
        symbols.starts_with("kallsyms in RAM, located by VMCOREINFO (kallsyms_names at 0x"),
        "{symbols}"
    );
}

/// `domain:DOMID` outside a Xen dom0 (or in a build without feature `xen`) fails, naming the
/// domain and what to do; a file of that name is still read as a file.
#[test]
fn live_domain_outside_dom0_fails_with_a_remedy() {
    let out = Command::new(dormouse_bin())
        .args(["inspect", "domain:4242"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("attaching to domain 4242") || stderr.contains("domain:4242: this dormouse was built without"),
        "{stderr}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("domain:1"), b"not a memory image").unwrap();
    let out = Command::new(dormouse_bin())
        .current_dir(dir.path())
        .args(["inspect", "domain:1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!stderr.contains("attaching to domain"), "{stderr}");
}

/// A reader that goes away first (`dormouse inspect IMAGE --json | head -c 10`) ends each
/// command quietly and successfully, as it would a C program (SIGPIPE); it used to panic with
/// "failed printing to stdout: Broken pipe" (exit 101).
#[test]
fn commands_end_quietly_when_their_reader_goes_away() {
    let Some(fx) = xen_fixtures("commands_end_quietly_when_their_reader_goes_away") else {
        return;
    };
    let save = decompressed(&fx, "xen-pv-a/domU-A.save");
    for args in [
        &["inspect", "--json"][..],
        &["inspect"],
        &["ps"],
        &["uname", "-a"],
        &["proc", "1/status"],
    ] {
        // The read end is closed before dormouse writes: every write to its stdout fails with EPIPE.
        let (reader, writer) = nix::unistd::pipe().unwrap();
        drop(reader);
        let out = Command::new(dormouse_bin())
            .arg(args[0])
            .arg(&save)
            .args(&args[1..])
            .stdout(writer)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "dormouse {args:?}: {:?}: {stderr}", out.status);
        assert!(stderr.is_empty(), "dormouse {args:?}: {stderr}");
    }
}

/// `ELF` (a QEMU dump: PT_LOAD segments by physical address) as a flat raw image in `raw`:
/// each segment at its physical address in a sparse file, up to the end of the RAM that is
/// contiguous from address 0 (QEMU adds the BIOS ROM just below 4 GiB, which a raw dump of
/// RAM does not have).
fn raw_from_elf(elf: &Path, raw: &Path) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::File::open(elf).unwrap();
    let mut header = [0u8; 64];
    f.read_exact(&mut header).unwrap();
    assert_eq!(&header[..4], b"\x7fELF");
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap()) as u64;
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (u64_at(&header, 32), u16_at(&header, 54), u16_at(&header, 56));
    let mut segments = Vec::new();
    for i in 0..phnum {
        let mut ph = vec![0u8; phentsize as usize];
        f.seek(SeekFrom::Start(phoff + i * phentsize)).unwrap();
        f.read_exact(&mut ph).unwrap();
        if u32_at(&ph, 0) == 1 {
            // PT_LOAD: p_offset, p_paddr, p_filesz
            segments.push((u64_at(&ph, 24), u64_at(&ph, 8), u64_at(&ph, 32)));
        }
    }
    segments.sort();
    let mut out = std::fs::File::create(raw).unwrap();
    let mut end = 0;
    for (paddr, offset, size) in segments {
        if paddr > end {
            break;
        }
        f.seek(SeekFrom::Start(offset)).unwrap();
        out.seek(SeekFrom::Start(paddr)).unwrap();
        let copied = std::io::copy(&mut (&mut f).take(size), &mut out).unwrap();
        assert_eq!(copied, size);
        end = end.max(paddr + size);
    }
    out.set_len(end).unwrap();
    out.flush().unwrap();
}

fn dormouse_json(args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let out = Command::new(dormouse_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "dormouse {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A raw image of the same memory gives the same processes as the ELF core, its kernel's page
/// table found by a scan or given with --cr3; without --format raw the error says how.
fn raw_image_matches_its_elf(elf: &Path) {
    use std::ffi::OsStr;
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("memory.raw");
    raw_from_elf(elf, &raw);
    let elf_ps = dormouse_json(&[OsStr::new("ps"), elf.as_os_str(), OsStr::new("--json")]);
    let elf_snapshot = dormouse_json(&[OsStr::new("inspect"), elf.as_os_str(), OsStr::new("--json")]);
    let scanned = dormouse_json(&[
        OsStr::new("inspect"),
        OsStr::new("--format"),
        OsStr::new("raw"),
        raw.as_os_str(),
        OsStr::new("--json"),
    ]);
    assert_eq!(scanned["source"]["format"], "raw");
    assert_eq!(scanned["tasks"], elf_snapshot["tasks"], "{}", elf.display());
    assert_eq!(scanned["uts"], elf_snapshot["uts"]);
    assert_eq!(
        scanned["kernel"]["kaslr_offset"],
        elf_snapshot["kernel"]["kaslr_offset"]
    );
    let cr3 = format!("{:#x}", elf_snapshot["kernel"]["page_table_root"].as_u64().unwrap());
    let given = dormouse_json(&[
        OsStr::new("ps"),
        raw.as_os_str(),
        OsStr::new("--format"),
        OsStr::new("raw"),
        OsStr::new("--cr3"),
        OsStr::new(&cr3),
        OsStr::new("--json"),
    ]);
    assert_eq!(given["processes"], elf_ps["processes"]);
    let auto = Command::new(dormouse_bin()).arg("ps").arg(&raw).output().unwrap();
    let stderr = String::from_utf8_lossy(&auto.stderr);
    assert_eq!(auto.status.code(), Some(1));
    assert!(stderr.contains("--format raw"), "{stderr}");
    let wrong_cr3 = Command::new(dormouse_bin())
        .args(["ps", "--format", "raw", "--cr3", "0x1000"])
        .arg(&raw)
        .output()
        .unwrap();
    assert_eq!(
        wrong_cr3.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&wrong_cr3.stderr)
    );
}

#[test]
fn raw_memory_image_of_the_test_bed_dump_gives_its_processes() {
    let Some(tb) = dormouse_tests::testbed("raw_memory_image_of_the_test_bed_dump_gives_its_processes") else {
        return;
    };
    raw_image_matches_its_elf(&tb.memdump.dir.join("dump.elf"));
}

#[test]
fn raw_memory_images_of_the_qemu_fixtures_give_their_processes() {
    let Some(fx) = xen_fixtures("raw_memory_images_of_the_qemu_fixtures_give_their_processes") else {
        return;
    };
    raw_image_matches_its_elf(&decompressed(&fx, "qemu-6.1-4level/dump.elf"));
    raw_image_matches_its_elf(&decompressed(&fx, "qemu-6.1-la57/dump.elf"));
}
