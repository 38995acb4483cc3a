//! qcow2 guest disks open through qemu-storage-daemon's FUSE export, read-only all the way
//! down the backing chain, and leave no daemon, mount or loop device behind.

// Tests and their helpers fail by panicking, with the message saying what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use dormouse_tests::{sha256_file, testbed};
use emulator::disk::{DiskError, FormatError, GuestDisk, ImageFormat, read_in_root};

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().expect("run qemu-img");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A qcow2 overlay over a raw image, its backing format recorded.
fn raw_backed_overlay(base: &Path, overlay: &Path) {
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-F",
        "raw",
        "-b",
        base.to_str().unwrap(),
        overlay.to_str().unwrap(),
    ]);
}

/// Daemons exporting into `dir`, FUSE mounts under it, and loop devices backed by files in it.
fn leftovers(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.starts_with("qemu-storage-daemon") && cmdline.contains(&dir) {
                found.push(format!("process {}: {cmdline}", entry.file_name().to_string_lossy()));
            }
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    found.extend(
        mountinfo
            .lines()
            .filter(|l| l.contains(&dir))
            .map(|l| format!("mount: {l}")),
    );
    for entry in std::fs::read_dir("/sys/block").unwrap().flatten() {
        if let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file")) {
            if backing.contains(&dir) {
                found.push(format!("{}: {backing}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// Opens `image`, finds the root, reads /etc/debian_version through the export, and returns
/// the version.
fn read_debian_version(image: &Path, declared: Option<ImageFormat>, state: &Path) -> String {
    let disk = GuestDisk::open_as(image, declared, state).unwrap();
    assert_eq!(disk.format, ImageFormat::Qcow2);
    let scratch = tempfile::tempdir().unwrap();
    let (root, os) = disk.find_root(scratch.path()).unwrap().unwrap_or_else(|| {
        panic!(
            "no root filesystem found in {} through its export; the disk as read: {disk:#?}",
            image.display()
        )
    });
    assert_eq!((root, os.id.as_deref()), (1, Some("debian")));
    let mount = disk.mount(root, scratch.path()).unwrap();
    // The mount keeps the export alive after the disk description is gone.
    drop(disk);
    let fd = mount.open_root().unwrap();
    String::from_utf8(read_in_root(&fd, mount.target(), "etc/debian_version", 4096).unwrap()).unwrap()
}

fn converted_guest(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let testbed = testbed("qcow2")?;
    let raw = testbed.disks.guest.path.clone();
    let qcow2 = dir.join("guest.qcow2");
    qemu_img(&["convert", "-O", "qcow2", raw.to_str().unwrap(), qcow2.to_str().unwrap()]);
    Some((raw, qcow2))
}

#[test]
fn qcow2_image_reads_like_the_raw_one_and_stays_unchanged() {
    let work = tempfile::tempdir().unwrap();
    let Some((_, qcow2)) = converted_guest(work.path()) else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let before = sha256_file(&qcow2);
    // Probed: a qcow2 without external references opens without being declared.
    let version = read_debian_version(&qcow2, None, state.path());
    assert!(version.starts_with("12."), "/etc/debian_version is {version:?}");
    assert_eq!(sha256_file(&qcow2), before, "opening the qcow2 image changed its bytes");
    assert_eq!(leftovers(state.path()), Vec::<String>::new());
    assert_eq!(
        std::fs::read_dir(state.path()).unwrap().count(),
        0,
        "export files left behind"
    );
}

#[test]
fn qcow2_overlay_reads_through_a_read_only_backing_chain() {
    let work = tempfile::tempdir().unwrap();
    let Some((raw, _)) = converted_guest(work.path()) else {
        return;
    };
    let testbed = testbed("qcow2_overlay_reads_through_a_read_only_backing_chain").unwrap();
    let overlay = work.path().join("overlay.qcow2");
    raw_backed_overlay(&raw, &overlay);
    let overlay_before = sha256_file(&overlay);
    let state = tempfile::tempdir().unwrap();

    // A probed image that names a backing file could be a guest's forgery in a raw disk.
    match GuestDisk::open_as(&overlay, None, state.path()) {
        Err(DiskError::Format(FormatError::ProbedReference { .. })) => {}
        other => panic!("a probed qcow2 with a backing file must be refused, got {other:?}"),
    }

    let version = read_debian_version(&overlay, Some(ImageFormat::Qcow2), state.path());
    assert!(version.starts_with("12."), "/etc/debian_version is {version:?}");
    assert_eq!(sha256_file(&overlay), overlay_before, "the overlay changed");
    assert_eq!(
        sha256_file(&raw),
        testbed.disks.guest.sha256,
        "the backing file changed"
    );
    assert_eq!(leftovers(state.path()), Vec::<String>::new());
    assert_eq!(leftovers(work.path()), Vec::<String>::new());
}

#[test]
fn declared_qcow2_chain_must_record_backing_formats() {
    let work = tempfile::tempdir().unwrap();
    let base = work.path().join("base.raw");
    std::fs::write(&base, vec![0u8; 1 << 20]).unwrap();
    let overlay = work.path().join("overlay.qcow2");
    raw_backed_overlay(&base, &overlay);
    // Erase the recorded backing format, as older qemu-img versions left it: retype its header
    // extension (0xe2792aca) to one qemu ignores.
    let mut header = std::fs::read(&overlay).unwrap();
    let be32 = |h: &[u8], at: usize| u32::from_be_bytes(h[at..at + 4].try_into().unwrap());
    let mut at = be32(&header, 100) as usize;
    while be32(&header, at) != 0xe279_2aca {
        assert_ne!(be32(&header, at), 0, "qemu-img recorded no backing format");
        at += 8 + (be32(&header, at + 4) as usize).div_ceil(8) * 8;
    }
    header[at..at + 4].copy_from_slice(&0x0bad_cafe_u32.to_be_bytes());
    std::fs::write(&overlay, &header).unwrap();
    match GuestDisk::open_as(&overlay, Some(ImageFormat::Qcow2), work.path()) {
        Err(DiskError::Format(FormatError::UnrecordedBackingFormat { backing, .. })) => {
            assert_eq!(Path::new(&backing), base);
        }
        other => panic!("an unrecorded backing format must be refused, got {other:?}"),
    }
}
