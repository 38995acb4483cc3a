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
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
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
