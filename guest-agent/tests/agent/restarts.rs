//! After an apply, the agent names the processes that still hold a file the update replaced:
//! on the test bed, a process of the guest's tree mapping the security update's library,
//! started before the apply, is found with exactly the mapped files whose bytes changed. Under
//! `--root` nothing is restarted (the tree's services are not this system's), and it says so.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use dormouse_tests::{sha256_file, start_repo, testbed};

use crate::copy_guest;
use crate::equivalence::{UPDATE, applied, emulated_bundle};

/// Guest paths of the regular files `pid` maps from the tree at `root`.
fn mapped_files(pid: u32, root: &Path) -> BTreeSet<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter_map(|p| {
            Path::new(p)
                .strip_prefix(root)
                .ok()
                .map(|r| format!("/{}", r.display()))
        })
        .collect()
}

#[test]
fn processes_holding_replaced_files_are_found_after_an_apply() {
    let Some(tb) = testbed("processes_holding_replaced_files_are_found_after_an_apply") else {
        return;
    };
    start_repo();
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let root = work.path().join("B");
    copy_guest(&tb.disks.guest.path, &root);
    let (_, bundle, key) = emulated_bundle(
        &tb.disks.guest.path,
        &tb.memdump.dir.join("dump.elf"),
        work.path(),
        &format!("{UPDATE} && apt-get -y upgrade"),
    );

    // dpkg-deb links the compression libraries (the security update's among them on the test
    // bed); opening a FIFO nobody writes, it waits until we end it.
    let fifo = root.join("tmp/dormouse-hold");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let mut holder = Command::new("chroot")
        .arg(&root)
        .args(["/usr/bin/dpkg-deb", "--info", "/tmp/dormouse-hold"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = holder.id();
    // Until the loader has mapped its libraries.
    let mut mapped = BTreeSet::new();
    for _ in 0..200 {
        mapped = mapped_files(pid, &root);
        if mapped.iter().any(|p| p.contains("/dpkg-deb")) && mapped.len() > 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let before: Vec<(String, String)> = mapped
        .iter()
        .map(|p| (p.clone(), sha256_file(&root.join(&p[1..]))))
        .collect();

    let report = applied(&root, &bundle, &key);
    let replaced: Vec<String> = before
        .iter()
        .filter(|(p, sha)| !root.join(&p[1..]).is_file() || sha256_file(&root.join(&p[1..])) != *sha)
        .map(|(p, _)| p.clone())
        .collect();
    let _ = holder.kill();
    let _ = holder.wait();
    std::fs::remove_file(&fifo).unwrap();

    let package = tb.scenarios["security_update"]["package"].as_str().unwrap();
    assert!(
        !replaced.is_empty(),
        "the update ({package}) replaced none of the files dpkg-deb maps: {mapped:?}"
    );
    let restarts = &report["restarts"];
    let stale: Vec<&serde_json::Value> = restarts["stale"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["pid"] == pid)
        .collect();
    assert_eq!(stale.len(), 1, "pid {pid} not found stale: {restarts:#}");
    let files: Vec<String> = stale[0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(files, replaced, "{restarts:#}");
    assert_eq!(stale[0]["comm"], "dpkg-deb");
    // Under --root nothing is restarted, and each stale process says why.
    assert_eq!(restarts["restarted"], serde_json::json!([]));
    let left = restarts["not_restarted"].as_array().unwrap();
    assert!(
        left.iter()
            .any(|n| n["pid"] == pid && n["reason"].as_str().unwrap().contains("--root")),
        "{restarts:#}"
    );
    assert_eq!(
        restarts["reboot_needed"],
        serde_json::Value::Null,
        "no kernel in this update"
    );
}
