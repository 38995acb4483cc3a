//! Checking 100 copies of the test-bed guest in one batch, with the index cache warm (as for
//! every VM after the first of a fleet): the per-VM cost is the time per batch / 100.
//!
//! - `trees`: 100 copies of the guest's package state (dpkg status, apt configuration and
//!   lists, os-release) in directories, so the time is the check itself;
//! - `disks`: the guest's disk image 100 times, each attached read-only (loop device, mount,
//!   fstab) and detached again, as `dormouse check --batch` does for real VMs.
//!
//! Needs root (loop devices, mounts) and the test bed (`scripts/make-fixtures`).

// Tests and their helpers fail by panicking, with the message saying what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use checker::tree::TreeSource;
use checker::{Checker, IndexSource, Target};
use criterion::{Criterion, criterion_group, criterion_main};

const VMS: usize = 100;

/// The guest's package state, copied out of its disk (mounted read-only) into `dest`.
fn copy_package_state(disk: &Path, dest: &Path) {
    let guest = emulator::disk::GuestDisk::open(disk).unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let (root, _) = guest.find_root(mnt.path()).unwrap().expect("a root filesystem");
    let mount = guest.mount(root, mnt.path()).unwrap();
    for rel in ["etc/os-release", "etc/apt", "var/lib/dpkg/status", "var/lib/apt/lists"] {
        let status = Command::new("cp")
            .args(["-a", "--parents", "-L"])
            .arg(rel)
            .arg(dest)
            .current_dir(mount.target())
            .status()
            .unwrap();
        assert!(status.success(), "copying {rel}");
    }
}

fn check_all(checker: &mut Checker, targets: &[Target]) {
    for t in targets {
        let report = checker.check(t).unwrap();
        assert!(report.installed > 0);
    }
}

fn bench(c: &mut Criterion) {
    let Some(bed) = dormouse_tests::testbed("check_batch") else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let template = scratch.path().join("template");
    std::fs::create_dir(&template).unwrap();
    copy_package_state(&bed.disks.guest.path, &template);
    let trees: Vec<Target> = (0..VMS)
        .map(|i| {
            let dir: PathBuf = scratch.path().join(format!("vm{i}"));
            let status = Command::new("cp").arg("-a").arg(&template).arg(&dir).status().unwrap();
            assert!(status.success());
            Target {
                name: Some(format!("vm{i}")),
                image: None,
                tree: TreeSource::Dir(dir),
            }
        })
        .collect();
    let disks: Vec<Target> = (0..VMS)
        .map(|i| Target {
            name: Some(format!("disk{i}")),
            image: None,
            tree: TreeSource::disk(&bed.disks.guest_split.path.display().to_string()),
        })
        .collect();

    let mut checker = Checker::new(IndexSource::GuestLists);
    check_all(&mut checker, &trees[..1]);
    let mut group = c.benchmark_group("check_batch_100_warm");
    group.sample_size(10);
    group.bench_function("trees", |b| b.iter(|| check_all(&mut checker, &trees)));
    group.bench_function("disks", |b| b.iter(|| check_all(&mut checker, &disks)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
