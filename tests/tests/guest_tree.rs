//! The guest tree assembled from real disks and the guest's own fstab; stopped-guest
//! snapshots synthesized from it; the disk list of a real save image's configuration.

// Tests and their helpers fail by panicking, with the message saying what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use dormouse_tests::{FixtureKernel, decompressed, testbed, xen_fixtures};
use emulator::disk::{GuestDisk, disks_from_config, read_in_root};
use emulator::guest_tree::{AttachedDisk, GuestTree, GuestTreeError, RootChoice, Unmountable};
use emulator::synth::{SynthError, synthesize};

fn attach(path: &Path) -> AttachedDisk {
    AttachedDisk {
        disk: GuestDisk::open(path).unwrap(),
        vdev: None,
    }
}

/// Mounts whose mount point is `dir` or below it.
fn mounted_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| Path::new(m).starts_with(dir)))
        .map(str::to_owned)
        .collect()
}

fn read(root: &Path, path: &str) -> String {
    let fd = std::fs::File::open(root).unwrap().into();
    String::from_utf8(read_in_root(&fd, root, path, 64 << 20).unwrap()).unwrap()
}

#[test]
fn split_guest_tree_mounts_var_from_its_own_partition() {
    let Some(testbed) = testbed("split_guest_tree_mounts_var_from_its_own_partition") else {
        return;
    };
    let info = &testbed.disks.guest_split;
    let state = tempfile::tempdir().unwrap();
    let lower = state.path().join("lower");
    {
        let tree = GuestTree::mount(&[attach(&info.path)], RootChoice::Auto, &lower).unwrap();
        assert_eq!(tree.os_release.id.as_deref(), Some("debian"));
        let got: Vec<(&str, u32, Option<&str>)> = tree
            .filesystems
            .iter()
            .map(|f| (f.mount_point.as_str(), f.partition, f.uuid.as_deref()))
            .collect();
        let want: Vec<(&str, u32, Option<&str>)> = info
            .filesystems
            .iter()
            .map(|f| (f.mountpoint.as_str(), f.partition, Some(f.uuid.as_str())))
            .collect();
        assert_eq!(got, want);
        // Each filesystem is its own read-only lower directory.
        let var = &tree.filesystems[1];
        assert_eq!(var.lower, lower.join("1"));
        assert!(read(&var.lower, "lib/dpkg/status").contains("Package: apt\n"));
        let err = std::fs::write(var.lower.join("dormouse-probe"), b"x").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ReadOnlyFilesystem);

        let target = state.path().join("tree");
        std::fs::create_dir(&target).unwrap();
        {
            let assembled = tree.assemble(&target).unwrap();
            assert!(read(assembled.path(), "var/lib/dpkg/status").contains("Package: apt\n"));
            assert!(read(assembled.path(), "etc/debian_version").starts_with("12."));
            // In the root filesystem alone, /var is an empty mount point.
            assert_eq!(std::fs::read_dir(tree.root().lower.join("var")).unwrap().count(), 0);
        }
        assert_eq!(
            std::fs::read_dir(&target).unwrap().count(),
            0,
            "assembled tree left mounted"
        );
    }
    assert_eq!(mounted_under(state.path()), Vec::<String>::new());
    assert_eq!(
        std::fs::read_dir(&lower).unwrap().count(),
        0,
        "lower directories left behind"
    );
}

#[test]
fn single_root_guest_tree_and_forced_root() {
    let Some(testbed) = testbed("single_root_guest_tree_and_forced_root") else {
        return;
    };
    let info = &testbed.disks.guest;
    let state = tempfile::tempdir().unwrap();
    let disks = [attach(&info.path)];
    let tree = GuestTree::mount(&disks, RootChoice::Volume { disk: 0, partition: 1 }, state.path()).unwrap();
    assert_eq!(tree.filesystems.len(), 1);
    assert_eq!(tree.root().uuid.as_deref(), Some(info.filesystems[0].uuid.as_str()));
    assert_eq!(tree.root().fstype, "ext4");

    // The test bed guest has no kernel installed: synthesis says so, and takes one when told.
    let target = state.path().join("tree");
    std::fs::create_dir(&target).unwrap();
    let assembled = tree.assemble(&target).unwrap();
    match synthesize(assembled.path(), None, &[]) {
        Err(e @ SynthError::NoKernel { .. }) => assert!(e.to_string().contains("give the release"), "{e}"),
        other => panic!("expected NoKernel, got {other:?}"),
    }
    // Any release will do; the one the test bed's dump booted is at hand.
    let release = &testbed.kernel.release;
    let snap = synthesize(assembled.path(), Some(release), &["ext4".to_owned()]).unwrap();
    assert_eq!(snap.uts.nodename, testbed.guest_hostname);
    assert_eq!(snap.uts.machine, "x86_64");
    assert_eq!(snap.uts.version, "unknown");
    let names: Vec<&str> = snap.filesystems.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["tmpfs", "pipefs", "ramfs", "ext3", "ext4"]);
    assert!(
        snap.warnings
            .iter()
            .any(|w| w.contains(&format!("no /boot/config-{release}"))),
        "{:?}",
        snap.warnings
    );
    drop(assembled);
    std::fs::remove_dir(&target).unwrap();
    drop(tree);
    match GuestTree::mount(&disks, RootChoice::Volume { disk: 1, partition: 1 }, state.path()) {
        Err(GuestTreeError::NoSuchDisk { index: 1, count: 1 }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read_dir(state.path()).unwrap().count(), 0);
}

/// Builds a bare ext4 filesystem image from a directory, as a whole-disk (unpartitioned) disk.
fn ext4_image(dir: &Path, uuid: &str, out: &Path) {
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-U", uuid, "-d"])
        .arg(dir)
        .arg(out)
        .arg("32M")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run mkfs.ext4");
    assert!(status.success());
}

const ROOT_UUID: &str = "5d0c35a5-70d4-4a4e-9a55-1f1f3c0a00a1";
const VAR_UUID: &str = "5d0c35a5-70d4-4a4e-9a55-1f1f3c0a00a2";

/// Two disks: a root filesystem whose `/var` is a symlink aiming out of the tree and whose
/// fstab is full of things to skip, and a `/var` filesystem. The root holds the real Debian
/// kernel's /boot files and the test bed's real /bin/sh.
fn hostile_guest(work: &Path, escape: &Path, with_kernel: bool) -> (PathBuf, PathBuf) {
    let Some(fixtures) = xen_fixtures("hostile_guest") else {
        panic!("real fixtures needed");
    };
    let root = work.join("root");
    for d in ["etc", "bin", "boot"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    // The guest's /var points at an absolute path that exists on dom0 too.
    std::fs::create_dir_all(root.join(escape.strip_prefix("/").unwrap())).unwrap();
    std::os::unix::fs::symlink(escape, root.join("var")).unwrap();
    std::fs::write(root.join("etc/os-release"), "ID=debian\nVERSION_ID=\"12\"\n").unwrap();
    std::fs::write(root.join("etc/hostname"), "stopped-guest\n").unwrap();
    std::fs::write(
        root.join("etc/fstab"),
        format!(
            "# hostile but valid\n\
             UUID={ROOT_UUID} / ext4 errors=remount-ro 0 1\n\
             proc /proc proc defaults 0 0\n\
             server:/export /mnt/nfs nfs defaults 0 0\n\
             /dev/xvda2 none swap sw 0 0\n\
             /dev/xvdc1 /opt ext4 nofail 0 2\n\
             LABEL=cdrom /media/cdrom iso9660 noauto,ro 0 0\n\
             /dev/disk/by-uuid/{VAR_UUID} /var ext4 defaults 0 2\n"
        ),
    )
    .unwrap();
    let testbed_sh = dormouse_tests::cache_dir().join("guest/root/bin/dash");
    std::fs::copy(&testbed_sh, root.join("bin/sh")).unwrap();
    if with_kernel {
        let kernel = FixtureKernel::read(&fixtures);
        let release = &kernel.release;
        // A leftover modules directory whose name sorts after the kernel's: the /vmlinuz link wins.
        std::fs::create_dir_all(root.join(format!("lib/modules/{release}-leftover"))).unwrap();
        std::fs::create_dir_all(root.join(format!("lib/modules/{release}"))).unwrap();
        std::fs::copy(kernel.vmlinuz(), root.join(format!("boot/vmlinuz-{release}"))).unwrap();
        std::fs::copy(kernel.config(), root.join(format!("boot/config-{release}"))).unwrap();
        std::os::unix::fs::symlink(format!("boot/vmlinuz-{release}"), root.join("vmlinuz")).unwrap();
    }
    let var = work.join("var");
    std::fs::create_dir_all(var.join("lib/dpkg")).unwrap();
    std::fs::write(var.join("lib/dpkg/status"), "Package: dpkg\nArchitecture: amd64\n\n").unwrap();
    let (root_img, var_img) = (work.join("root.img"), work.join("var.img"));
    ext4_image(&root, ROOT_UUID, &root_img);
    ext4_image(&var, VAR_UUID, &var_img);
    (root_img, var_img)
}

#[test]
fn guest_symlinks_cannot_redirect_mounts_and_skips_are_reported() {
    let work = tempfile::tempdir().unwrap();
    // A dom0 directory the guest's /var symlink names.
    let escape = tempfile::tempdir().unwrap();
    let (root_img, var_img) = hostile_guest(work.path(), escape.path(), false);
    let state = tempfile::tempdir().unwrap();
    let tree = GuestTree::mount(&[attach(&root_img), attach(&var_img)], RootChoice::Auto, state.path()).unwrap();
    let mounted: Vec<(&str, usize)> = tree
        .filesystems
        .iter()
        .map(|f| (f.mount_point.as_str(), f.disk_index))
        .collect();
    assert_eq!(mounted, [("/", 0), ("/var", 1)]);
    let skipped: Vec<(usize, &str)> = tree
        .skipped
        .iter()
        .map(|s| (s.line, s.reason.split([' ', ':', ',']).next().unwrap()))
        .collect();
    assert_eq!(
        skipped,
        [(3, "pseudo"), (4, "network"), (5, "swap"), (6, "nofail"), (7, "noauto")]
    );
    assert!(tree.skipped[3].reason.contains("not attached"), "{:?}", tree.skipped[3]);

    let target = state.path().join("tree");
    std::fs::create_dir(&target).unwrap();
    let assembled = tree.assemble(&target).unwrap();
    // The guest's symlink resolved inside the tree: /var's filesystem sits at the guest's own
    // copy of the path, and dom0's directory of that name got nothing.
    let inside = target.join(escape.path().strip_prefix("/").unwrap());
    assert!(read(&inside, "lib/dpkg/status").contains("Package: dpkg"));
    assert!(read(&target, "var/lib/dpkg/status").contains("Package: dpkg"));
    assert_eq!(mounted_under(escape.path()), Vec::<String>::new());
    assert_eq!(std::fs::read_dir(escape.path()).unwrap().count(), 0);

    drop(assembled);
    drop(tree);

    // Without the `/var` disk, the emulator refuses the guest; a reader gets the root and a
    // note for each filesystem left out, `nofail` or not.
    let only_root = [attach(&root_img)];
    match GuestTree::mount(&only_root, RootChoice::Auto, &state.path().join("strict")) {
        Err(GuestTreeError::Unresolved { line: 8, .. }) => {}
        other => panic!("{other:?}"),
    }
    let tree = GuestTree::mount_with(
        &only_root,
        RootChoice::Auto,
        &state.path().join("noted"),
        Unmountable::Note,
    )
    .unwrap();
    assert_eq!(tree.filesystems.len(), 1);
    let noted: Vec<&str> = tree.notes.iter().filter_map(|n| n.split(": ").next()).collect();
    assert_eq!(noted, ["fstab line 6", "fstab line 8"], "{:?}", tree.notes);
    assert!(
        tree.notes[0].contains("/opt (/dev/xvdc1) not mounted"),
        "{:?}",
        tree.notes
    );
    assert!(tree.notes[1].contains(VAR_UUID), "{:?}", tree.notes);
    let skipped: Vec<usize> = tree.skipped.iter().map(|s| s.line).collect();
    assert_eq!(skipped, [3, 4, 5, 7]);
    drop(tree);
    assert_eq!(mounted_under(state.path()), Vec::<String>::new());
}

#[test]
fn stopped_guest_snapshot_matches_the_real_kernel() {
    let Some(fixtures) = xen_fixtures("stopped_guest_snapshot_matches_the_real_kernel") else {
        return;
    };
    let ground: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures.join("xen-pv-a/ground-truth.json")).unwrap()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let escape = tempfile::tempdir().unwrap();
    let (root_img, var_img) = hostile_guest(work.path(), escape.path(), true);
    let state = tempfile::tempdir().unwrap();
    let tree = GuestTree::mount(
        &[attach(&root_img), attach(&var_img)],
        RootChoice::Auto,
        &state.path().join("lower"),
    )
    .unwrap();
    let target = state.path().join("tree");
    std::fs::create_dir(&target).unwrap();
    let assembled = tree.assemble(&target).unwrap();
    let fstypes: Vec<String> = tree.filesystems.iter().map(|f| f.fstype.clone()).collect();
    let snap = synthesize(assembled.path(), None, &fstypes).unwrap();

    // The same Debian kernel ran the fixture guest: its uname is ground truth, except the
    // hostname, which is this guest's.
    let uname = &ground["uname"];
    assert_eq!(
        snap.uts.release,
        FixtureKernel::read(&fixtures).release,
        "the /vmlinuz link wins over the older modules dir"
    );
    assert_eq!(snap.uts.version, uname["version"].as_str().unwrap());
    assert_eq!(snap.uts.machine, uname["machine"].as_str().unwrap());
    assert_eq!(snap.uts.nodename, "stopped-guest");
    assert_eq!(snap.uts.domainname, "(none)");
    assert!(snap.tasks.is_empty());
    assert!(snap.warnings[0].contains("synthesized"), "{:?}", snap.warnings);
    assert_eq!(
        snap.sysctl["kernel.ngroups_max"],
        ground["proc_files"]["/proc/sys/kernel/ngroups_max"]
            .as_str()
            .unwrap()
            .trim()
    );
    let ipv6_all = &ground["ipv6_conf_all"];
    for (key, value) in &snap.sysctl {
        if let Some(k) = key.strip_prefix("net.ipv6.conf.all.") {
            assert_eq!(value, ipv6_all[k].as_str().unwrap(), "{key}");
        }
    }
    // /proc/filesystems of the running guest: the built-in ones, then ext4's module. A Xen PV
    // guest has no huge pages, so its kernel dropped the configured hugetlbfs at boot.
    let want: Vec<(bool, String)> = ground["proc_files"]["/proc/filesystems"]
        .as_str()
        .unwrap()
        .lines()
        .map(|l| {
            let (nodev, name) = l.split_once('\t').unwrap();
            (nodev == "nodev", name.to_owned())
        })
        .collect();
    let got: Vec<(bool, String)> = snap
        .filesystems
        .iter()
        .filter(|f| f.name != "hugetlbfs")
        .map(|f| (f.nodev, f.name.clone()))
        .collect();
    assert_eq!(got, want);
    drop(assembled);
    drop(tree);
    assert_eq!(mounted_under(state.path()), Vec::<String>::new());
}

#[test]
fn save_image_config_names_a_disk_that_is_not_here() {
    let Some(fixtures) = xen_fixtures("save_image_config_names_a_disk_that_is_not_here") else {
        return;
    };
    let save = decompressed(&fixtures, "xen-pv-a/domU-A.save");
    let image = introspect::XlSaveImage::open(&save).unwrap();
    let config = image.config().expect("xl save embeds the domain config");
    let err = disks_from_config(config).unwrap_err();
    assert_eq!(err.skipped.len(), 1);
    assert_eq!(err.skipped[0].vdev.as_deref(), Some("xvda"));
    assert_eq!(err.skipped[0].path.as_deref(), Some("/dev/vdc"));
    let message = err.to_string();
    assert!(
        message.contains("/dev/vdc not found on this host") && message.contains("--disk"),
        "{message}"
    );
}
