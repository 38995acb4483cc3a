//! Faults: kill -9 between and inside every step, then apply again → the end state of an
//! uninterrupted run; rollback after a failing postinst → the exact pre-apply tree; a flipped
//! byte, a wrong key, no signature, a base conflict → refused, nothing changed, the reason
//! said; a symlink in the guest cannot redirect a write; a full filesystem fails cleanly and
//! rollback restores.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use applier::pack::{BundleInputs, generate_key, sign_bundle, write_bundle, write_key_pair};
use emulator::capture::{BaseFingerprint, BaseKind, ChangeSet, Entry, EntryKind, Xattr};
use emulator::trace::record::{Manager, ScriptRecord, ScriptType};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::tree::{Node, diff, snapshot};
use crate::{agent, copy_guest, dormouse_bin, text, with_policy_rc_d};

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A v2 file capability: CAP_NET_BIND_SERVICE permitted and effective.
const CAPABILITY: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// The guest's side of the synthetic bundle, created in `root`.
fn base_tree(root: &Path) {
    for dir in ["etc/dir_rm/sub", "opq", "usr/bin", "var/lib/dpkg/info"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    fs::write(root.join("etc/a"), "old a\n").unwrap();
    fs::write(root.join("etc/gone"), "gone\n").unwrap();
    fs::write(root.join("etc/was-file"), "a file\n").unwrap();
    fs::write(root.join("etc/dir_rm/sub/f"), "x").unwrap();
    fs::write(root.join("opq/old-child"), "old child").unwrap();
    fs::write(root.join("usr/bin/tool"), "tool v1").unwrap();
    let _ = fs::remove_file(root.join("etc/link"));
    symlink("a", root.join("etc/link")).unwrap();
}

/// What `root`'s entry at `path` is, as the capture fingerprints it.
fn fingerprint(root: &Path, path: &str) -> BaseFingerprint {
    let p = root.join(path.trim_start_matches('/'));
    let meta = fs::symlink_metadata(&p).unwrap();
    let (kind, size, sha256) = if meta.is_dir() {
        (BaseKind::Dir, 0, None)
    } else if meta.file_type().is_symlink() {
        let target = fs::read_link(&p).unwrap().into_os_string().into_string().unwrap();
        (BaseKind::Symlink, target.len() as u64, Some(sha(target.as_bytes())))
    } else {
        let data = fs::read(&p).unwrap();
        (BaseKind::File, data.len() as u64, Some(sha(&data)))
    };
    BaseFingerprint {
        path: path.into(),
        kind,
        size,
        sha256,
    }
}

fn script(seq: u64, script_type: ScriptType, path: &str, body: &str) -> ScriptRecord {
    let bytes = format!("#!/bin/sh\n{body}\n").into_bytes();
    ScriptRecord {
        seq,
        manager: Manager::Dpkg,
        phase: script_type.phase(),
        script_type,
        package: "synth".into(),
        arch: None,
        triggered: false,
        rpm_tag: None,
        path: path.into(),
        argv: vec![
            path.into(),
            if script_type == ScriptType::Preinst {
                "install"
            } else {
                "configure"
            }
            .into(),
        ],
        env: vec![
            "DPKG_MAINTSCRIPT_PACKAGE=synth".into(),
            "DPKG_MAINTSCRIPT_NAME=x".into(),
        ],
        sha256: sha(&bytes),
        bytes,
    }
}

/// A signed bundle over [`base_tree`]: files replaced (content, owner, mode, xattr,
/// capability), added (file, symlink, hardlinks, fifo, a directory replacing a file),
/// removed (a file, a tree), an opaque directory, a preinst (dpkg's `tmp.ci/`, which the agent
/// must recreate) and a postinst of body `postinst` (no scripts for `None`), plus `big` bytes
/// in one file.
fn synthetic_bundle(base: &Path, work: &Path, postinst: Option<&str>, big: u64) -> (PathBuf, PathBuf) {
    let upper = work.join("upper");
    fs::create_dir_all(&upper).unwrap();
    let mut n = 0;
    let mut file = |path: &str, data: &[u8], mode: u32, uid: u32, xattrs: Vec<Xattr>| {
        n += 1;
        let source = upper.join(n.to_string());
        fs::write(&source, data).unwrap();
        Entry {
            path: path.into(),
            kind: EntryKind::File {
                source,
                size: data.len() as u64,
                sha256: sha(data),
            },
            uid,
            gid: 0,
            mode,
            mtime: 1_600_000_000,
            mtime_nsec: 5,
            xattrs,
        }
    };
    let special = |path: &str, kind: EntryKind, mode: u32| Entry {
        path: path.into(),
        kind,
        uid: 0,
        gid: 0,
        mode,
        mtime: 1_600_000_100,
        mtime_nsec: 0,
        xattrs: Vec::new(),
    };
    let postinst_path = "/var/lib/dpkg/info/synth.postinst";
    let postinst_record = script(1, ScriptType::Postinst, postinst_path, postinst.unwrap_or("true"));
    let mut entries = vec![
        special("/etc", EntryKind::Dir, 0o755),
        file(
            "/etc/a",
            b"new a\n",
            0o640,
            7,
            vec![Xattr {
                name: "user.dormouse".into(),
                value: b"v".to_vec(),
            }],
        ),
        file("/etc/h1", b"linked\n", 0o644, 0, Vec::new()),
        special(
            "/etc/h2",
            EntryKind::Hardlink {
                target: "/etc/h1".into(),
            },
            0o644,
        ),
        special(
            "/etc/link",
            EntryKind::Symlink {
                target: "gone-target".into(),
            },
            0o777,
        ),
        file("/etc/new", b"new\n", 0o600, 0, Vec::new()),
        special("/etc/was-file", EntryKind::Dir, 0o750),
        file("/etc/was-file/inner", b"in", 0o644, 0, Vec::new()),
        special("/newdir", EntryKind::Dir, 0o755),
        file("/newdir/f", b"f", 0o4755, 0, Vec::new()),
        special("/newdir/fifo", EntryKind::Fifo, 0o640),
        special("/opq", EntryKind::Dir, 0o755),
        file("/opq/new", b"new child", 0o644, 0, Vec::new()),
        special("/usr", EntryKind::Dir, 0o755),
        special("/usr/bin", EntryKind::Dir, 0o755),
        file(
            "/usr/bin/tool",
            b"tool v2",
            0o755,
            0,
            vec![Xattr {
                name: "security.capability".into(),
                value: CAPABILITY.to_vec(),
            }],
        ),
        special("/var", EntryKind::Dir, 0o755),
        special("/var/lib", EntryKind::Dir, 0o755),
        special("/var/lib/dpkg", EntryKind::Dir, 0o755),
        special("/var/lib/dpkg/info", EntryKind::Dir, 0o755),
        file(postinst_path, &postinst_record.bytes, 0o755, 0, Vec::new()),
    ];
    if big > 0 {
        entries.push(file("/var/big", &vec![7u8; big as usize], 0o644, 0, Vec::new()));
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let mut base: Vec<BaseFingerprint> = [
        "/etc",
        "/etc/a",
        "/etc/dir_rm",
        "/etc/gone",
        "/etc/link",
        "/etc/was-file",
        "/opq",
        "/usr",
        "/usr/bin",
        "/usr/bin/tool",
        "/var",
        "/var/lib",
        "/var/lib/dpkg",
        "/var/lib/dpkg/info",
    ]
    .iter()
    .map(|p| fingerprint(base, p))
    .collect();
    base.sort_by(|a, b| a.path.cmp(&b.path));
    let changes = ChangeSet {
        entries,
        removals: vec!["/etc/dir_rm".into(), "/etc/gone".into()],
        opaque_dirs: vec!["/opq".into()],
        base,
        excluded: Vec::new(),
    };
    let mut scripts = vec![
        script(
            0,
            ScriptType::Preinst,
            "/var/lib/dpkg/tmp.ci/preinst",
            "echo \"preinst $* of $DPKG_MAINTSCRIPT_PACKAGE\"",
        ),
        postinst_record,
    ];
    if postinst.is_none() {
        scripts.clear();
    }
    let manifest_guest = bundle::manifest::GuestIdentity {
        domain_name: None,
        domain_uuid: None,
        kernel_release: "6.1.0-synthetic".into(),
        boot_id: None,
        hostname: "synthetic".into(),
    };
    let inputs = BundleInputs {
        bundle_id: format!("synth-{}", sha(format!("{postinst:?}{big}").as_bytes())[..8].to_owned()),
        created_unix: 1_700_000_000,
        guest: manifest_guest,
        command: vec!["synthetic".into()],
        packages: Vec::new(),
        scripts: &scripts,
    };
    let bundle = work.join("synth.dmb");
    let (manifest, _) = write_bundle(&bundle, &changes, &inputs).unwrap();
    let key = generate_key().unwrap();
    let (_, public) = write_key_pair(&key, &work.join("key")).unwrap();
    sign_bundle(&key, &bundle, &manifest).unwrap();
    (bundle, public)
}

fn apply_json(
    bundle: &Path,
    key: &Path,
    root: &Path,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> (Output, Option<Value>) {
    let mut args = vec![
        "apply",
        bundle.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--json",
    ];
    args.extend(extra);
    let out = agent(&args, Some(root), envs);
    let report = serde_json::from_slice(&out.stdout).ok();
    (out, report)
}

fn guest_copy(work: &Path, name: &str) -> PathBuf {
    let tb = dormouse_tests::testbed("guest-agent faults").expect("the test bed");
    let dest = work.join(name);
    copy_guest(&tb.disks.guest.path, &dest);
    dest
}

/// The tree without the agent's journal.
fn state(root: &Path) -> BTreeMap<String, Node> {
    let mut tree = snapshot(root, &["/proc", "/dev", "/run", "/tmp"]);
    tree.retain(|p, _| p != "/var/lib/dormouse" && !p.starts_with("/var/lib/dormouse/"));
    tree
}

/// The synthetic bundle applied, then rolled back after its postinst failed: the exact
/// pre-apply tree, times and xattrs included.
#[test]
fn rollback_after_a_failing_postinst_restores_the_exact_tree() {
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let root = guest_copy(work.path(), "root");
    base_tree(&root);
    let (bundle, key) = synthetic_bundle(&root, work.path(), Some("echo failing on purpose; exit 3"), 0);
    let before = state(&root);
    let (out, report) = apply_json(&bundle, &key, &root, &[], &[]);
    let report = report.unwrap_or_else(|| panic!("no JSON report: {}", text(&out)));
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    assert_eq!(report["result"], "failed");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("exited with 3"), "{error}");
    let scripts = report["scripts"].as_array().unwrap();
    assert_eq!(scripts[0]["output"], "preinst install of synth\n", "{report:#}");
    assert_eq!(scripts[1]["output"], "failing on purpose\n");
    // The files were in place when the postinst ran: the failure came after the install.
    assert_eq!(fs::read(root.join("etc/a")).unwrap(), b"new a\n");
    assert!(
        !root.join("var/lib/dpkg/tmp.ci").exists(),
        "the preinst's directory is left"
    );
    let id = report["bundle_id"].as_str().unwrap().to_owned();

    let status = agent(&["status", "--json"], Some(&root), &[]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status[0]["status"], "partial", "{status:#}");
    let out = agent(&["rollback", &id], Some(&root), &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        diff(&before, &state(&root)),
        Vec::<String>::new(),
        "rollback left differences"
    );
    let status = agent(&["status", "--json"], Some(&root), &[]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status[0]["status"], "rolled-back", "{status:#}");
}

/// The same bundle with a working postinst: everything in place with its metadata, the
/// postinst ran chrooted with the recorded argv and environment; rollback after a finished
/// apply restores too.
#[test]
fn synthetic_bundle_applies_with_full_metadata() {
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let root = guest_copy(work.path(), "root");
    base_tree(&root);
    let (bundle, key) = synthetic_bundle(
        &root,
        work.path(),
        Some("echo \"$1 $DPKG_MAINTSCRIPT_PACKAGE\" > /newdir/configured"),
        0,
    );
    let before = state(&root);
    let (out, report) = apply_json(&bundle, &key, &root, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(report.unwrap()["result"], "applied");
    let r = |p: &str| root.join(p);
    assert_eq!(fs::read_to_string(r("newdir/configured")).unwrap(), "configure synth\n");
    let meta = fs::symlink_metadata(r("etc/a")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.mtime()),
        (0o640, 7, 1_600_000_000)
    );
    assert_eq!(fs::read(r("etc/a")).unwrap(), b"new a\n");
    let after = state(&root);
    assert_eq!(after["/etc/a"].xattrs, vec![("user.dormouse".into(), b"v".to_vec())]);
    assert_eq!(
        after["/usr/bin/tool"].xattrs,
        vec![("security.capability".into(), CAPABILITY.to_vec())]
    );
    assert_eq!(after["/newdir/f"].mode, 0o4755);
    assert_eq!(fs::read_link(r("etc/link")).unwrap(), Path::new("gone-target"));
    assert_eq!(
        fs::metadata(r("etc/h1")).unwrap().ino(),
        fs::metadata(r("etc/h2")).unwrap().ino(),
        "hardlink"
    );
    assert_eq!(after["/newdir/fifo"].kind, "other");
    assert_eq!(after["/etc/was-file"].kind, "dir");
    assert!(!r("etc/gone").exists() && !r("etc/dir_rm").exists(), "removals");
    assert!(
        !r("opq/old-child").exists() && r("opq/new").exists(),
        "opaque directory"
    );
    assert!(!r("var/lib/dpkg/tmp.ci").exists());

    let again = apply_json(&bundle, &key, &root, &[], &[]).1.unwrap();
    assert_eq!(again["result"], "already-applied");
    let id = again["bundle_id"].as_str().unwrap().to_owned();
    let out = agent(&["rollback", &id], Some(&root), &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(diff(&before, &state(&root)), Vec::<String>::new());
}

/// A payload bigger than the agent keeps in memory from verification is decompressed and
/// checked a second time by the install step: it applies all the same.
#[test]
fn a_payload_too_big_to_keep_is_streamed_again() {
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let root = work.path().join("root");
    base_tree(&root);
    for dir in ["proc", "dev", "run", "tmp"] {
        fs::create_dir(root.join(dir)).unwrap();
    }
    let big = guest_agent::apply::MAX_BUFFERED_BYTES + 1;
    // No scripts: this root has no shell to run them.
    let (bundle, key) = synthetic_bundle(&root, work.path(), None, big);
    let (out, report) = apply_json(&bundle, &key, &root, &[], &[]);
    let report = report.unwrap_or_else(|| panic!("{}", text(&out)));
    assert_eq!(report["result"], "applied", "{report:#}");
    let data = fs::read(root.join("var/big")).unwrap();
    assert!(data.len() as u64 == big && data.iter().all(|&b| b == 7), "/var/big");
    assert_eq!(fs::read(root.join("etc/a")).unwrap(), b"new a\n");
}

/// Nothing is changed, and the reason is said, for a flipped byte, a wrong key, a missing
/// signature, and a base conflict (also a new path that exists); `--force` overrides the
/// conflict, and a guest symlink where the bundle adds a directory cannot redirect a write.
#[test]
fn tampering_wrong_keys_and_conflicts_change_nothing() {
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let root = guest_copy(work.path(), "root");
    base_tree(&root);
    let (bundle, key) = synthetic_bundle(&root, work.path(), Some("true"), 0);
    let before = state(&root);
    let refused = |bundle: &Path, key: &Path, needle: &str| {
        let (out, report) = apply_json(bundle, key, &root, &[], &[]);
        let report = report.unwrap_or_else(|| panic!("{}", text(&out)));
        assert_eq!(out.status.code(), Some(3), "{report:#}");
        assert_eq!(report["result"], "refused");
        let error = report["error"].as_str().unwrap();
        assert!(error.contains(needle), "{needle:?} not in {error}");
        assert_eq!(
            diff(&before, &snapshot(&root, &["/proc", "/dev", "/run", "/tmp"])),
            Vec::<String>::new()
        );
    };

    let flipped = work.path().join("flipped.dmb");
    let mut bytes = fs::read(&bundle).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&flipped, bytes).unwrap();
    fs::copy(
        bundle::sign::signature_path(&bundle),
        bundle::sign::signature_path(&flipped),
    )
    .unwrap();
    refused(&flipped, &key, "does not match its signature");

    let other = generate_key().unwrap();
    let (_, other_pub) = write_key_pair(&other, &work.path().join("other")).unwrap();
    refused(&bundle, &other_pub, "not with the given key");

    let unsigned = work.path().join("unsigned.dmb");
    fs::copy(&bundle, &unsigned).unwrap();
    refused(&unsigned, &key, "unsigned bundle");

    let loose = work.path().join("loose");
    fs::create_dir(&loose).unwrap();
    fs::set_permissions(&loose, fs::Permissions::from_mode(0o777)).unwrap();
    fs::copy(&bundle, loose.join("b.dmb")).unwrap();
    fs::copy(bundle::sign::signature_path(&bundle), loose.join("b.dmb.minisig")).unwrap();
    refused(&loose.join("b.dmb"), &key, "writable by others");

    fs::write(root.join("etc/a"), "changed in the guest\n").unwrap();
    fs::write(root.join("etc/new"), "made in the guest\n").unwrap();
    let outside = work.path().join("outside");
    fs::create_dir(&outside).unwrap();
    symlink(&outside, root.join("newdir")).unwrap();
    let before = state(&root);
    let (out, report) = apply_json(&bundle, &key, &root, &[], &[]);
    let report = report.unwrap_or_else(|| panic!("{}", text(&out)));
    assert_eq!(report["result"], "refused");
    let conflicts: Vec<&str> = report["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        conflicts.iter().any(|c| c.starts_with("/etc/a: changed since")),
        "{conflicts:?}"
    );
    assert!(
        conflicts.iter().any(|c| c.starts_with("/etc/new: a File exists")),
        "{conflicts:?}"
    );
    assert!(
        conflicts.iter().any(|c| c.starts_with("/newdir: a Symlink exists")),
        "{conflicts:?}"
    );
    assert_eq!(diff(&before, &state(&root)), Vec::<String>::new());

    let (out, report) = apply_json(&bundle, &key, &root, &["--force"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(report.unwrap()["forced"], true);
    assert!(
        fs::read_dir(&outside).unwrap().next().is_none(),
        "a write went through the guest's symlink"
    );
    assert!(fs::symlink_metadata(root.join("newdir")).unwrap().is_dir());
    assert_eq!(fs::read(root.join("newdir/f")).unwrap(), b"f");
}

/// A target root on a small ext4 that the bundle does not fit: the apply fails with ENOSPC,
/// says so, and rollback restores the tree.
#[test]
fn full_filesystem_fails_cleanly_and_rollback_restores() {
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let image = work.path().join("small.ext4");
    let root = work.path().join("root");
    fs::create_dir(&root).unwrap();
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&image)
        .arg("8M")
        .status()
        .unwrap();
    assert!(status.success(), "mkfs.ext4");
    // The test's own mount namespace would hide it from the agent's (in_private_ns copies the
    // parent's mounts): mount here and unmount at the end.
    let status = Command::new("mount")
        .args(["-o", "loop"])
        .arg(&image)
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success(), "mount");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(&root);
    fs::remove_dir(root.join("lost+found")).unwrap();
    base_tree(&root);
    for dir in ["proc", "dev", "run", "tmp"] {
        fs::create_dir(root.join(dir)).unwrap();
    }
    // No scripts: this root has no shell to run them.
    let (bundle, key) = synthetic_bundle(&root, work.path(), None, 12 << 20);
    let before = state(&root);
    let (out, report) = apply_json(&bundle, &key, &root, &[], &[]);
    let report = report.unwrap_or_else(|| panic!("{}", text(&out)));
    assert_eq!(report["result"], "failed", "{report:#}");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("No space left on device"), "{error}");
    let id = report["bundle_id"].as_str().unwrap().to_owned();
    let out = agent(&["rollback", &id], Some(&root), &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(diff(&before, &state(&root)), Vec::<String>::new());
}

/// kill -9 between every two steps and inside the long ones, then `apply` again: the same
/// tree as an uninterrupted apply of the test bed's nginx install bundle.
#[test]
fn kill_9_at_every_step_then_apply_again_reaches_the_same_end_state() {
    let Some(tb) = dormouse_tests::testbed("kill_9_at_every_step_then_apply_again_reaches_the_same_end_state") else {
        return;
    };
    dormouse_tests::start_repo();
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let path = |n: &str| work.path().join(n);
    let keygen = Command::new(dormouse_bin())
        .args(["keygen", "--out"])
        .arg(path("k"))
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{}", text(&keygen));
    let emulate = Command::new(dormouse_bin())
        .arg("emulate")
        .arg("--state-dir")
        .arg(path("state"))
        .arg(tb.memdump.dir.join("dump.elf"))
        .arg("--disk")
        .arg(&tb.disks.guest.path)
        .arg("--out")
        .arg(path("b.dmb"))
        .arg("--sign-key")
        .arg(path("k.key"))
        .args([
            "--",
            "sh",
            "-c",
            "apt-get update >/dev/null && apt-get install -y nginx >/dev/null",
        ])
        .output()
        .unwrap();
    assert!(emulate.status.success(), "{}", text(&emulate));
    let (bundle, key) = (path("b.dmb"), path("k.pub"));
    copy_guest(&tb.disks.guest.path, &path("pristine"));

    // Script-written files carry the time they were written; ldconfig's aux-cache, inode
    // numbers. Neither says anything about the apply.
    let settle = |root: &Path| {
        let mut tree = state(root);
        tree.remove("/var/cache/ldconfig/aux-cache");
        for node in tree.values_mut() {
            node.mtime = None;
        }
        tree
    };
    let fresh = |name: &str| {
        let root = path(name);
        let out = Command::new("cp")
            .arg("-a")
            .arg(path("pristine"))
            .arg(&root)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        root
    };
    let reference_root = fresh("reference");
    let reference = with_policy_rc_d(&reference_root, || {
        let (out, _) = apply_json(&bundle, &key, &reference_root, &[], &[]);
        assert!(out.status.success(), "{}", text(&out));
        settle(&reference_root)
    });
    for stop in [
        "verify",
        "check",
        "backup:3",
        "backup",
        "pre-scripts:1",
        "pre-scripts",
        "install:1",
        "install:200",
        "install",
        "post-scripts:2",
        "post-scripts",
    ] {
        let root = fresh(&format!("stop-{stop}"));
        let tree = with_policy_rc_d(&root, || {
            let (out, _) = apply_json(&bundle, &key, &root, &[], &[(guest_agent::apply::STOP_HOOK, stop)]);
            assert_eq!(
                out.status.signal(),
                Some(9),
                "{stop}: not killed by the hook: {}",
                text(&out)
            );
            let (out, report) = apply_json(&bundle, &key, &root, &[], &[]);
            let report = report.unwrap_or_else(|| panic!("{stop}: {}", text(&out)));
            assert_eq!(report["result"], "applied", "{stop}: {report:#}");
            settle(&root)
        });
        assert_eq!(diff(&reference, &tree), Vec::<String>::new(), "after kill -9 at {stop}");
        fs::remove_dir_all(&root).unwrap();
    }
}
