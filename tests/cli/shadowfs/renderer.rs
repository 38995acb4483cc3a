//! The pure renderer and `dormouse proc`, which prints what it renders.

use std::process::Command;

use dormouse_tests::{decompressed, xen_fixtures};
use shadowfs::ProcTree;

use super::compare::check_against_truth;
use super::{cases, load_truth, snapshot};
use crate::dormouse_bin;

#[test]
fn renderer_matches_ground_truth_of_every_fixture() {
    let cases = cases("renderer_matches_ground_truth_of_every_fixture");
    for case in &cases {
        let snap = snapshot(&case.image);
        let tree = ProcTree::new(snap.clone());
        let list = |p: &str| match tree.render(p) {
            Ok(shadowfs::Rendered::Dir(entries)) => Some(entries.into_iter().map(|e| e.name).collect()),
            _ => None,
        };
        let checked = check_against_truth(case, &snap, &|p| tree.read(p).ok(), &list);
        assert!(checked > 20, "{}: only {checked} comparisons", case.name);
        // The root lists exactly the guest's thread-group leaders as pid directories.
        let shadowfs::Rendered::Dir(root) = tree.render("/").expect("root") else {
            panic!("root is a directory")
        };
        let mut pids: Vec<i32> = root.iter().filter_map(|e| e.name.parse().ok()).collect();
        let mut expected: Vec<i32> = snap.tasks.iter().filter(|t| t.pid == t.tgid).map(|t| t.pid).collect();
        expected.sort_unstable();
        expected.dedup();
        pids.sort_unstable();
        assert_eq!(pids, expected, "{}: pid directories", case.name);
        // Unknown paths are ENOENT, never dom0's.
        assert!(tree.read("sys/kernel/no_such_sysctl").is_err());
        assert!(tree.read("999999/stat").is_err());
        // uuid: a fresh v4 UUID on every read.
        let a = tree.read("sys/kernel/random/uuid").expect("uuid");
        let b = tree.read("sys/kernel/random/uuid").expect("uuid");
        assert_ne!(a, b);
        assert_eq!(a.len(), 37);
        assert_eq!(a[14], b'4', "{}: version 4", String::from_utf8_lossy(&a));
    }
}

#[test]
fn dormouse_proc_prints_ground_truth() {
    let Some(fx) = xen_fixtures("dormouse_proc_prints_ground_truth") else {
        return;
    };
    let image = decompressed(&fx, "xen-pv-a/domU-A.save");
    let truth = load_truth(&fx.join("xen-pv-a/ground-truth.json"));
    for file in [
        "/proc/filesystems",
        "/proc/sys/kernel/osrelease",
        "/proc/version",
        "/proc/1/cmdline",
    ] {
        let out = Command::new(dormouse_bin())
            .arg("proc")
            .arg(&image)
            .arg(file)
            .output()
            .expect("run dormouse");
        assert!(
            out.status.success(),
            "dormouse proc {file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            truth["proc_files"][file].as_str().expect(file),
            "{file}"
        );
    }
    let out = Command::new(dormouse_bin())
        .arg("proc")
        .arg(&image)
        .arg("/proc/nonexistent")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/proc/nonexistent"));
}
