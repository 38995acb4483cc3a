//! A real FUSE mount served by `dormouse shadowfs` (root): what it serves, its attributes,
//! reads, writes and `self`, and that it goes away with the server.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dormouse_tests::{decompressed, xen_fixtures};

use super::compare::check_against_truth;
use super::{cases, is_root, mounted, snapshot};
use crate::dormouse_bin;

/// A directory's entry names in readdir order, `None` when it cannot be read.
fn list_dir(dir: &Path) -> Option<Vec<String>> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect()
}

/// `dormouse shadowfs IMAGE DIR` in the background, returned once the mount is up.
struct Served {
    child: Child,
    dir: tempfile::TempDir,
}

impl Served {
    fn start(image: &Path) -> Served {
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Command::new(dormouse_bin())
            .arg("shadowfs")
            .arg(image)
            .arg(dir.path())
            .stdin(Stdio::null())
            .spawn()
            .expect("start dormouse shadowfs");
        let served = Served { child, dir };
        let start = Instant::now();
        while !mounted(served.dir.path()) {
            assert!(start.elapsed() < Duration::from_secs(60), "shadowfs never mounted");
            std::thread::sleep(Duration::from_millis(50));
        }
        served
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn wait_unmounted(&self) {
        let start = Instant::now();
        while mounted(self.path()) {
            // fusermount's auto-unmount helper notices the server's death; on a loaded
            // 2-core machine that took over 10 s once.
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "stale mount at {} 60 s after the server died; fusermount3 processes: {}",
                self.path().display(),
                fusermount_processes()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Each fusermount3 process with its state and wait channel: the auto-unmount helper that
/// should have noticed the server's death, for the message of a stale mount.
fn fusermount_processes() -> String {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let dir = entry.path();
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains("fusermount") {
            continue;
        }
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        let state = read("status")
            .lines()
            .find(|l| l.starts_with("State:"))
            .unwrap_or("")
            .to_owned();
        let fds = std::fs::read_dir(dir.join("fd")).map_or(0, |d| d.count());
        found.push(format!(
            "{} [{}] {state} wchan={} fds={fds}",
            entry.file_name().to_string_lossy(),
            String::from_utf8_lossy(&cmdline).replace('\0', " ").trim(),
            read("wchan")
        ));
    }
    if found.is_empty() {
        "none".to_owned()
    } else {
        found.join("; ")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if mounted(self.dir.path()) {
            let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
        }
    }
}

#[test]
fn fuse_mount_serves_ground_truth_and_unmounts_on_sigterm() {
    if !is_root() {
        eprintln!("!!! SKIPPED fuse_mount_serves_ground_truth: mounting needs root");
        return;
    }
    for case in cases("fuse_mount_serves_ground_truth_and_unmounts_on_sigterm") {
        if case.name == "xen-pv-a core" || case.name == "qemu la57" {
            continue; // same data as their siblings; the renderer test covers them
        }
        let snap = snapshot(&case.image);
        let served = Served::start(&case.image);
        let root = served.path().to_owned();
        let checked = check_against_truth(&case, &snap, &|p| std::fs::read(root.join(p)).ok(), &|p| {
            list_dir(&root.join(p))
        });
        assert!(checked > 20);

        // The root lists the guest's pids.
        let mut pids: Vec<i32> = std::fs::read_dir(&root)
            .expect("readdir")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        let mut expected: Vec<i32> = snap.tasks.iter().filter(|t| t.pid == t.tgid).map(|t| t.pid).collect();
        expected.sort_unstable();
        expected.dedup();
        assert_eq!(pids, expected, "{}: ls of the root", case.name);

        // Attributes like procfs: size 0, owner = the task's, read-only modes.
        let user = snap.tasks.iter().find(|t| t.uid != 0 && t.pid == t.tgid);
        if let Some(t) = user {
            let m = std::fs::metadata(root.join(format!("{}/stat", t.pid))).expect("stat");
            assert_eq!((m.uid(), m.gid(), m.size(), m.mode() & 0o777), (t.uid, t.gid, 0, 0o444));
            // environ is for its owner only (S_IRUSR).
            let m = std::fs::metadata(root.join(format!("{}/environ", t.pid))).expect("environ");
            assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (t.uid, t.gid, 0o400));
        }
        // task/ links its threads' directories: 2 + the group's thread count, as
        // proc_task_getattr() counts them.
        for t in snap.tasks.iter().filter(|t| t.pid == t.tgid && !t.threads.is_empty()) {
            let m = std::fs::metadata(root.join(format!("{}/task", t.pid))).expect("task/");
            assert_eq!(
                m.nlink(),
                2 + t.threads.len() as u64,
                "{}: {}/task links",
                case.name,
                t.pid
            );
            let threads = t.detail.as_ref().map_or(0, |d| d.threads.len());
            assert_eq!(t.threads.len(), threads, "{}: {} lists every thread", case.name, t.pid);
        }

        // Reads at any offset (pread) and by concurrent readers give the same bytes.
        let whole = std::fs::read(root.join("filesystems")).expect("read");
        {
            use std::os::unix::fs::FileExt;
            let f = std::fs::File::open(root.join("filesystems")).expect("open");
            let mut buf = vec![0u8; 10];
            let n = f.read_at(&mut buf, 7).expect("pread");
            assert_eq!(&buf[..n], &whole[7..7 + n]);
        }
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        assert_eq!(std::fs::read(root.join("filesystems")).expect("read"), whole);
                    }
                });
            }
        });

        // Immutable files are kept by the kernel after the first open (passthrough); the random
        // uuid never is: fresh on every read through the mount too.
        let uuid = || std::fs::read(root.join("sys/kernel/random/uuid")).expect("uuid");
        let (a, b) = (uuid(), uuid());
        assert!(a.len() == 37 && a != b, "uuid reads {a:?} {b:?}");
        assert_eq!(std::fs::read(root.join("filesystems")).expect("read"), whole);

        // Writes fail: read-only mount.
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(root.join("sys/kernel/hostname"))
            .expect_err("writing must fail");
        assert!(
            matches!(err.raw_os_error(), Some(libc_erofs::EROFS) | Some(libc_erofs::EACCES)),
            "{err}"
        );
        assert!(std::fs::create_dir(root.join("newdir")).is_err());

        // self: this test process's own dom0 entries; fd/ shows its own fds.
        let me = std::fs::File::open(&case.image).expect("open the image");
        use std::os::fd::AsRawFd;
        let fd = me.as_raw_fd();
        let target = std::fs::read_link(root.join(format!("self/fd/{fd}"))).expect("readlink self/fd/N");
        assert_eq!(target, case.image.canonicalize().expect("canonical"));
        let status = std::fs::read_to_string(root.join("self/status")).expect("self/status");
        assert!(
            status.contains(&format!("\nPid:\t{}\n", std::process::id())),
            "self/status is this process's"
        );
        assert!(std::fs::read_link(root.join("thread-self")).is_ok());
        // `ls -l self/fd/` lists ls's own fds: stdin is /dev/null, and not our image (CLOEXEC).
        let ls = Command::new("ls")
            .arg("-l")
            .arg(root.join("self/fd/"))
            .stdin(Stdio::null())
            .output()
            .expect("ls");
        assert!(
            ls.status.success(),
            "ls -l self/fd/: {}",
            String::from_utf8_lossy(&ls.stderr)
        );
        let listing = String::from_utf8_lossy(&ls.stdout);
        assert!(listing.contains(" 0 -> /dev/null"), "ls -l self/fd/:\n{listing}");
        assert!(
            !listing.contains(&*case.image.to_string_lossy()),
            "ls saw this process's fds:\n{listing}"
        );
        // mount table entry: fsname proc, read-only.
        let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
        let line = mounts
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(root.to_str().unwrap()))
            .expect("our mount");
        assert!(line.starts_with("proc ") && line.contains(" ro,"), "{line}");

        // SIGTERM: clean exit and no mount left.
        let mut served = served;
        let pid = served.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("kill")
                .success()
        );
        let status = served.child.wait().expect("wait");
        assert!(status.success(), "shadowfs exited with {status}");
        served.wait_unmounted();
    }
}

mod libc_erofs {
    pub const EROFS: i32 = 30;
    pub const EACCES: i32 = 13;
}

#[test]
fn fuse_mount_goes_away_when_the_server_is_killed() {
    if !is_root() {
        eprintln!("!!! SKIPPED fuse_mount_goes_away_when_the_server_is_killed: needs root");
        return;
    }
    let Some(fx) = xen_fixtures("fuse_mount_goes_away_when_the_server_is_killed") else {
        return;
    };
    let served = Served::start(&decompressed(&fx, "xen-pv-a/domU-A.save"));
    assert!(std::fs::read(served.path().join("version")).is_ok());
    let mut served = served;
    served.child.kill().expect("SIGKILL");
    served.child.wait().expect("wait");
    served.wait_unmounted();
}
