//! `dormouse check` against apt itself: on the test-bed guest disks it must report exactly
//! what `apt list --upgradable` reports in a chroot of a copy of the same tree — with the
//! guest's own (stale) lists, and after a refresh from the local mirror — and classify the
//! bookworm-security update as `security`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use dormouse_tests::{Testbed, testbed, workspace_root};
use emulator::disk::GuestDisk;

use crate::dormouse_bin;

/// (name, arch, installed, candidate, suite) as apt prints them.
type Row = (String, String, String, String, String);

/// Copies the guest tree of a test-bed disk (its single ext4 root, mounted read-only) into
/// `dest`, so apt can run in a chroot of it without touching the image.
fn copy_guest_tree(disk: &Path, dest: &Path) {
    let guest = GuestDisk::open(disk).unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let (root, _) = guest.find_root(mnt.path()).unwrap().expect("a root filesystem");
    let mount = guest.mount(root, mnt.path()).unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", mount.target().display()))
        .arg(dest)
        .status()
        .unwrap();
    assert!(status.success(), "copying the guest tree");
}

/// Runs a command chrooted into `root` in a private mount namespace with /proc, /sys and
/// /dev/pts, as scripts/make-fixtures does.
pub(crate) fn in_chroot(root: &Path, args: &[&str]) -> String {
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-ec"])
        .arg(
            r#"root=$1; shift
               mount -t proc proc "$root/proc"; mount -t sysfs sys "$root/sys"
               mount -t devpts -o newinstance devpts "$root/dev/pts"
               exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@""#,
        )
        .arg("in_chroot")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?} in the guest chroot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `apt list --upgradable` lines: `name/suite[,suite] version arch [upgradable from: old]`.
fn apt_upgradable(root: &Path) -> BTreeSet<Row> {
    in_chroot(root, &["apt", "list", "--upgradable"])
        .lines()
        .filter(|l| l.contains("[upgradable from: "))
        .map(|l| {
            let (name, rest) = l.split_once('/').unwrap();
            let w: Vec<&str> = rest.split_ascii_whitespace().collect();
            let old = l.rsplit_once("from: ").unwrap().1.trim_end_matches(']');
            (name.into(), w[2].into(), old.into(), w[1].into(), w[0].into())
        })
        .collect()
}

fn dormouse_upgradable(disk: &Path, db: &Path, extra: &[&str]) -> (BTreeSet<Row>, serde_json::Value) {
    let out = Command::new(dormouse_bin())
        .args(["check", "--json", "--disk"])
        .arg(disk)
        .arg("--db")
        .arg(db)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dormouse check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    crate::schemas::assert_valid("check", &json);
    let rows = json["report"]["upgrades"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            let s = |k: &str| u[k].as_str().unwrap().to_owned();
            let suites: Vec<&str> = u["suites"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap())
                .collect();
            (s("name"), s("arch"), s("installed"), s("candidate"), suites.join(","))
        })
        .collect();
    (rows, json)
}

pub(crate) fn start_mirror() {
    let status = Command::new(workspace_root().join("scripts/repo-serve"))
        .arg("start")
        .env("DORMOUSE_CACHE", dormouse_tests::cache_dir())
        .status()
        .unwrap();
    assert!(status.success(), "scripts/repo-serve start failed");
}

fn disks(bed: &Testbed) -> [&Path; 2] {
    [&bed.disks.guest.path, &bed.disks.guest_split.path]
}

#[test]
fn check_matches_apt_with_the_guests_own_lists() {
    let Some(bed) = testbed("check_matches_apt_with_the_guests_own_lists") else {
        return;
    };
    let tree = tempfile::tempdir().unwrap();
    copy_guest_tree(&bed.disks.guest.path, tree.path());
    let expected = apt_upgradable(tree.path());
    let db = tree.path().join("check.sqlite");
    for disk in disks(&bed) {
        let (rows, json) = dormouse_upgradable(disk, &db, &[]);
        assert_eq!(
            rows,
            expected,
            "{}: check differs from apt with the same lists",
            disk.display()
        );
        assert_eq!(json["report"]["repositories"].as_array().unwrap().len(), 2);
    }
}

#[test]
fn check_refresh_matches_apt_after_update() {
    let Some(bed) = testbed("check_refresh_matches_apt_after_update") else {
        return;
    };
    start_mirror();
    let tree = tempfile::tempdir().unwrap();
    copy_guest_tree(&bed.disks.guest.path, tree.path());
    in_chroot(tree.path(), &["apt-get", "update", "-qq"]);
    let expected = apt_upgradable(tree.path());
    let scenario = &bed.scenarios["security_update"];
    let package = scenario["package"].as_str().unwrap();
    assert!(
        expected.iter().any(|r| r.0 == package),
        "apt itself does not see the {package} update: the test bed is not what this test expects"
    );

    let db = tree.path().join("check.sqlite");
    for disk in disks(&bed) {
        let (rows, json) = dormouse_upgradable(disk, &db, &["--refresh"]);
        assert_eq!(
            rows,
            expected,
            "{}: check --refresh differs from apt after apt-get update",
            disk.display()
        );
        let report = &json["report"];
        for u in report["upgrades"].as_array().unwrap() {
            let security = u["suites"].as_array().unwrap().iter().any(|s| s == "bookworm-security");
            assert_eq!(u["priority"], if security { "security" } else { "normal" }, "{u}");
        }
        let found = report["upgrades"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == package)
            .unwrap();
        assert_eq!(found["installed"], scenario["installed_version"]);
        assert_eq!(found["candidate"], scenario["candidate_version"]);
        assert_eq!(found["priority"], "security");
        assert_eq!(
            report["counts"]["security"].as_u64().unwrap() as usize,
            rows.iter().filter(|r| r.4.contains("-security")).count()
        );
        for repo in report["repositories"].as_array().unwrap() {
            assert!(repo["signature"].as_str().unwrap().starts_with("gpgv: "), "{repo}");
        }
    }
}

#[test]
fn check_since_and_batch_share_one_database() {
    let Some(bed) = testbed("check_since_and_batch_share_one_database") else {
        return;
    };
    start_mirror();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("check.sqlite");
    let batch = dir.path().join("vms");
    std::fs::write(
        &batch,
        format!(
            "# two views of one guest\n--disk {} --name one\n--disk {} --name split\n",
            bed.disks.guest.path.display(),
            bed.disks.guest_split.path.display()
        ),
    )
    .unwrap();
    let run = |extra: &[&str]| -> serde_json::Value {
        let out = Command::new(dormouse_bin())
            .args(["check", "--json", "--since", "--batch"])
            .arg(&batch)
            .arg("--db")
            .arg(&db)
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let json = serde_json::from_slice(&out.stdout).unwrap();
        crate::schemas::assert_valid("check", &json);
        json
    };
    // Stale lists first, then fresh ones: the security update appears as new.
    let first = run(&[]);
    let second = run(&["--refresh"]);
    let package = bed.scenarios["security_update"]["package"].as_str().unwrap();
    for (i, vm) in ["one", "split"].iter().enumerate() {
        assert_eq!(first[i]["vm"], *vm);
        assert!(first[i]["changes"]["previous_at"].is_null());
        let changes = &second[i]["changes"];
        assert!(changes["previous_at"].is_u64(), "{changes}");
        let new: Vec<&str> = changes["new"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        let upgrades = second[i]["report"]["upgrades"].as_array().unwrap().len();
        assert_eq!(new.len(), upgrades, "every update is new after the stale check");
        assert!(new.contains(&package), "{new:?}");
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    let checks: i64 = conn.query_row("SELECT count(*) FROM checks", [], |r| r.get(0)).unwrap();
    assert_eq!(checks, 4, "two checks of two VMs recorded");
    let security: i64 = conn
        .query_row(
            "SELECT count(*) FROM findings WHERE name = ?1 AND priority = 'security'",
            [package],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(security, 2, "the security finding of the refreshed check, once per VM");
}
