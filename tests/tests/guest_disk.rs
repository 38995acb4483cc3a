//! The generated guest disks attach read-only, their root is found by content, and attaching
//! them never changes a byte of the image.

// Tests and their helpers fail by panicking, with the message saying what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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

/// A guest filesystem saved with committed journal transactions not yet in their home blocks
/// (what `xl save` of a busy guest leaves on its disk: here, a copy of a mounted image taken
/// right after a journal commit) reads as the guest left it, and the image is untouched: the
/// journal is replayed into a snapshot, never into the disk.
#[test]
fn a_dirty_journal_is_replayed_into_a_copy_on_write_view_never_into_the_disk() {
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let image = work.path().join("saved.img");
    let run = |script: &str| {
        let out = std::process::Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-ec", script, "sh"])
            .arg(&image)
            .arg(work.path())
            .output()
            .expect("running unshare");
        assert!(
            out.status.success(),
            "{script}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(r#"
        truncate -s 64M "$2/live.img"
        mkfs.ext4 -q -F -L dirty "$2/live.img"
        mkdir "$2/mnt"
        mount -o loop "$2/live.img" "$2/mnt"
        mkdir -p "$2/mnt/etc" "$2/mnt/var/lib/apt/lists"
        echo 'ID=debian' > "$2/mnt/etc/os-release"
        : > "$2/mnt/etc/fstab"
        echo 'fresh list' > "$2/mnt/var/lib/apt/lists/Packages.new"
        sync
        # As apt renames fresh lists into place: metadata only, committed to the journal by
        # an fsync of the directory; the home blocks follow only at writeback, seconds later.
        mv "$2/mnt/var/lib/apt/lists/Packages.new" "$2/mnt/var/lib/apt/lists/Packages"
        xfs_io -c fsync "$2/mnt/var/lib/apt/lists"
        cp --sparse=always "$2/live.img" "$1"
        umount "$2/mnt"
    "#);
    let listing = run(r#"debugfs -R 'ls /var/lib/apt/lists' "$1" 2>/dev/null"#);
    assert!(
        listing.contains("Packages.new"),
        "the rename already reached its home blocks, so this test proves nothing:\n{listing}"
    );
    let header = run(r#"dumpe2fs -h "$1" 2>/dev/null"#);
    assert!(
        header
            .lines()
            .any(|l| l.starts_with("Filesystem features:") && l.contains("needs_recovery")),
        "the image does not need recovery, so this test proves nothing:\n{header}"
    );
    let before = sha256_file(&image);

    let disk = GuestDisk::open(&image).unwrap();
    let scratch = tempfile::tempdir_in(work.path()).unwrap();
    {
        let mount = disk.mount(0, scratch.path()).unwrap();
        let root = mount.open_root().unwrap();
        let list = read_in_root(&root, mount.target(), "var/lib/apt/lists/Packages", 4096)
            .expect("the journal's last transaction, replayed");
        assert_eq!(list, b"fresh list\n");
    }
    assert_eq!(sha256_file(&image), before, "the image was written");
    let header = run(r#"dumpe2fs -h "$1" 2>/dev/null"#);
    assert!(
        header.contains("needs_recovery"),
        "the image's journal was replayed in place:\n{header}"
    );
    let left: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("dormouse-"))
        .collect();
    assert!(left.is_empty(), "the replay's layer or export left behind: {left:?}");
}
