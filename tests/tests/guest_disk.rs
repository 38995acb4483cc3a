//! The generated guest disks attach read-only, their root is found by content, and attaching
//! them never changes a byte of the image.

use std::io::Read;

use dormouse_tests::{TestbedDisk, testbed};
use emulator::disk::{GuestDisk, TableKind, read_in_root};
use sha2::{Digest, Sha256};

fn sha256_file(path: &std::path::Path) -> String {
    let mut file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Mounts every filesystem of the disk read-only and checks it, then proves the image is
/// byte-identical to what `scripts/make-fixtures` recorded.
fn check_disk(disk_info: &TestbedDisk, expected_table: TableKind) {
    assert_eq!(
        sha256_file(&disk_info.path),
        disk_info.sha256,
        "{} differs from the sha256 make-fixtures recorded before this test ran; rebuild the test bed",
        disk_info.path.display()
    );

    let disk = GuestDisk::open(&disk_info.path).unwrap();
    assert_eq!(disk.table, expected_table);
    for fs in &disk_info.filesystems {
        let volume = disk.volume(fs.partition).unwrap();
        let probed = volume
            .filesystem
            .as_ref()
            .expect("a filesystem in every test-bed partition");
        assert_eq!(probed.fstype, "ext4");
        assert_eq!(probed.uuid.as_deref(), Some(fs.uuid.as_str()));
    }

    let scratch = tempfile::tempdir().unwrap();
    let (root_number, os_release) = disk.find_root(scratch.path()).unwrap().expect("a root filesystem");
    let expected_root = disk_info.filesystems.iter().find(|f| f.mountpoint == "/").unwrap();
    assert_eq!(root_number, expected_root.partition);
    assert_eq!(os_release.id.as_deref(), Some("debian"));
    assert_eq!(os_release.version_id.as_deref(), Some("12"));

    {
        let mount = disk.mount(root_number, scratch.path()).unwrap();
        let root = mount.open_root().unwrap();
        let version = read_in_root(&root, mount.target(), "etc/debian_version", 4096).unwrap();
        let version = String::from_utf8(version).unwrap();
        assert!(version.starts_with("12."), "/etc/debian_version is {version:?}");

        // The kernel agrees that the mount is read-only: a write fails with EROFS.
        let err = std::fs::write(scratch.path().join("etc/dormouse-probe"), b"x").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ReadOnlyFilesystem, "{err}");

        let fstab = String::from_utf8(read_in_root(&root, mount.target(), "etc/fstab", 1 << 16).unwrap()).unwrap();
        for fs in &disk_info.filesystems {
            assert!(
                fstab.contains(&format!("UUID={}\t{}\t", fs.uuid, fs.mountpoint)),
                "fstab lacks {}: {fstab}",
                fs.mountpoint
            );
        }
    }
    // Unmounted on drop: the scratch directory is empty again.
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);

    assert_eq!(
        sha256_file(&disk_info.path),
        disk_info.sha256,
        "attaching {} read-only changed its bytes",
        disk_info.path.display()
    );
}

#[test]
fn guest_image_mounts_read_only_and_stays_unchanged() {
    let Some(testbed) = testbed("guest_image_mounts_read_only_and_stays_unchanged") else {
        return;
    };
    check_disk(&testbed.disks.guest, TableKind::Mbr);
}

#[test]
fn split_guest_image_with_separate_var_partition() {
    let Some(testbed) = testbed("split_guest_image_with_separate_var_partition") else {
        return;
    };
    check_disk(&testbed.disks.guest_split, TableKind::Gpt);

    // /var lives on partition 2 and holds dpkg's database.
    let disk = GuestDisk::open(&testbed.disks.guest_split.path).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mount = disk.mount(2, scratch.path()).unwrap();
    let root = mount.open_root().unwrap();
    let status = read_in_root(&root, mount.target(), "lib/dpkg/status", 64 << 20).unwrap();
    assert!(String::from_utf8_lossy(&status).contains("Package: apt\n"));
}
