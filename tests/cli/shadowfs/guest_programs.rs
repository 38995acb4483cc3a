//! The guest's own programs (cat, ls, procps, apt-get) chrooted into its root with the shadow
//! /proc mounted at its /proc.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dormouse_tests::{decompressed, testbed, xen_fixtures};
use introspect::linux::GuestSnapshot;
use shadowfs::ProcTree;

use super::{is_root, load_truth, mounted, snapshot, stat_fields};
use crate::dormouse_bin;

/// `dormouse shadowfs IMAGE DIR` on an existing directory, stopped (SIGTERM, then a lazy
/// unmount if anything was left) when dropped.
struct StopOnDrop(Child, PathBuf);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
        if mounted(&self.1) {
            let _ = Command::new("umount").arg("-l").arg(&self.1).status();
        }
    }
}

fn serve_at(image: &Path, dir: &Path) -> StopOnDrop {
    let child = Command::new(dormouse_bin())
        .arg("shadowfs")
        .arg(image)
        .arg(dir)
        .stdin(Stdio::null())
        .spawn()
        .expect("start dormouse shadowfs");
    let stop = StopOnDrop(child, dir.to_owned());
    let start = Instant::now();
    while !mounted(dir) {
        assert!(start.elapsed() < Duration::from_secs(60), "shadowfs never mounted");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop
}

/// Real programs of the test-bed guest, chrooted into its read-only root with the shadow /proc
/// mounted at its /proc.
#[test]
fn guest_programs_run_against_the_shadow_proc() {
    if !is_root() {
        eprintln!("!!! SKIPPED guest_programs_run_against_the_shadow_proc: needs root");
        return;
    }
    let Some(tb) = testbed("guest_programs_run_against_the_shadow_proc") else {
        return;
    };
    let image = tb.memdump.dir.join("dump.elf");
    let snap = snapshot(&image);
    let disk = emulator::disk::GuestDisk::open(&tb.disks.guest.path).expect("open the test-bed disk");
    let scratch = tempfile::tempdir().expect("tempdir");
    let (number, _) = disk
        .find_root(scratch.path())
        .expect("probe")
        .expect("a root filesystem");
    let mount = disk.mount(number, scratch.path()).expect("mount read-only");
    let root = mount.target().to_owned();
    let proc_dir = root.join("proc");
    let stop = serve_at(&image, &proc_dir);
    let run = |args: &[&str]| {
        let out = Command::new("chroot")
            .arg(&root)
            .args(args)
            .stdin(Stdio::null())
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .expect("chroot");
        assert!(
            out.status.success(),
            "chroot {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        run(&["/bin/cat", "/proc/sys/kernel/osrelease"]),
        format!("{}\n", snap.uts.release)
    );
    let listing = run(&["/bin/ls", "/proc"]);
    for t in snap.tasks.iter().filter(|t| t.pid == t.tgid) {
        assert!(
            listing.lines().any(|l| l == t.pid.to_string()),
            "ls /proc lacks guest pid {}",
            t.pid
        );
    }
    let fds = run(&["/bin/ls", "-l", "/proc/self/fd/"]);
    assert!(
        fds.contains(" 0 -> /dev/null"),
        "ls -l /proc/self/fd in the chroot:\n{fds}"
    );
    // The guest's own procps. It looks itself up as /proc/<getpid()>, so it runs in a pid
    // namespace of its own like under the emulator (there it is pid 1: the guest's init, whose
    // entry exists); in dom0's pid namespace its pid names no entry and it stops with "fatal
    // library error, lookup self".
    assert!(
        root.join("bin/ps").exists(),
        "the test-bed guest has no procps (/bin/ps): rebuild it with scripts/make-fixtures"
    );
    let run_pidns = |args: &[&str]| {
        let out = Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child", "chroot"])
            .arg(&root)
            .args(args)
            .stdin(Stdio::null())
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .expect("unshare");
        assert!(
            out.status.success(),
            "unshare --pid chroot {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tree = ProcTree::new(snap.clone());
    let mut leaders: Vec<&introspect::linux::Task> = snap.tasks.iter().filter(|t| t.pid == t.tgid).collect();
    leaders.sort_by_key(|t| t.pid);
    leaders.dedup_by_key(|t| t.pid);
    // `ps -e`: exactly the guest's processes (kernel threads included), by pid, with their names.
    let ps = run_pidns(&["/bin/ps", "-e"]);
    let listed: Vec<(i32, String)> = ps
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].parse().expect("pid"), f[3..].join(" "))
        })
        .collect();
    let pids: Vec<i32> = listed.iter().map(|(p, _)| *p).collect();
    assert_eq!(pids, leaders.iter().map(|t| t.pid).collect::<Vec<_>>(), "ps -e:\n{ps}");
    assert!(listed.iter().any(|(p, c)| *p == 1 && !c.is_empty()), "ps -e:\n{ps}");
    // Per process: parent, real and effective ids, state and name as the guest saw them.
    let ps = run_pidns(&["/bin/ps", "-eo", "pid=,ppid=,ruid=,rgid=,euid=,egid=,stat=,comm="]);
    let rows: Vec<Vec<&str>> = ps.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), leaders.len(), "ps -eo ...:\n{ps}");
    for (row, t) in rows.iter().zip(&leaders) {
        let what = format!("ps -eo ... row {row:?} for guest task {} ({})", t.pid, t.comm);
        let num = |i: usize| -> i64 { row[i].parse().unwrap_or_else(|_| panic!("{what}: column {i}")) };
        assert_eq!(num(0), i64::from(t.pid), "{what}: pid");
        assert_eq!(num(1), i64::from(t.ppid), "{what}: ppid");
        assert_eq!(
            (num(2), num(3)),
            (i64::from(t.uid), i64::from(t.gid)),
            "{what}: ruid rgid"
        );
        if let Some(d) = &t.detail {
            assert_eq!(
                (num(4), num(5)),
                (i64::from(d.euid), i64::from(d.egid)),
                "{what}: euid egid"
            );
        }
        assert_eq!(row[6].chars().next(), Some(t.state), "{what}: state");
        // comm as the stat line gives it (kernel workers carry their workqueue there).
        let stat = stat_fields(&String::from_utf8_lossy(
            &tree.read(&format!("{}/stat", t.pid)).expect("stat"),
        ));
        assert_eq!(format!("({})", row[7..].join(" ")), stat[1], "{what}: comm");
    }
    run(&["/usr/bin/apt-get", "check"]);

    // Threads: `ps -eLf` has one row per thread of every process (PID, LWP, NLWP columns).
    let threads = |snap: &GuestSnapshot| -> Vec<(i32, i32, usize)> {
        let mut out: Vec<(i32, i32, usize)> = snap
            .tasks
            .iter()
            .filter(|t| t.pid == t.tgid)
            .flat_map(|t| t.threads.iter().map(move |th| (t.pid, th.pid, t.threads.len())))
            .collect();
        out.sort_unstable();
        out
    };
    let lwp_rows = |ps: &str, columns: (usize, usize, Option<usize>)| -> Vec<(i32, i32, usize)> {
        let mut rows: Vec<(i32, i32, usize)> = ps
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let n = |i: usize| f[i].parse::<i32>().unwrap_or_else(|_| panic!("column {i} of {l:?}"));
                (n(columns.0), n(columns.1), columns.2.map_or(0, |i| n(i) as usize))
            })
            .collect();
        rows.sort_unstable();
        rows
    };
    // UID PID PPID LWP C NLWP STIME TTY TIME CMD
    let ps = run_pidns(&["/bin/ps", "-eLf"]);
    assert_eq!(
        lwp_rows(&ps, (1, 3, Some(5))),
        threads(&snap),
        "ps -eLf (test bed):\n{ps}"
    );
    drop(stop);

    // The QEMU lab guest has a multi-threaded process: its /proc under the same programs.
    let Some(fx) = xen_fixtures("guest_programs_run_against_the_shadow_proc") else {
        return;
    };
    let qemu = decompressed(&fx, "qemu-6.1-4level/dump.elf");
    let truth = load_truth(&fx.join("qemu-6.1-4level/ground-truth.json"));
    let (pid, tids): (i64, Vec<i32>) = truth["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .find_map(|p| {
            let tids: Vec<i32> = p["threads"]
                .as_array()?
                .iter()
                .map(|t| t.as_i64().unwrap() as i32)
                .collect();
            (tids.len() > 1).then(|| (p["pid"].as_i64().unwrap(), tids))
        })
        .expect("the QEMU guest's multi-threaded process");
    let snap = snapshot(&qemu);
    let _stop = serve_at(&qemu, &proc_dir);
    let ps = run_pidns(&["/bin/ps", "-eLf"]);
    let rows = lwp_rows(&ps, (1, 3, Some(5)));
    assert_eq!(rows, threads(&snap), "ps -eLf (QEMU guest):\n{ps}");
    let want: Vec<(i32, i32, usize)> = tids.iter().map(|t| (pid as i32, *t, tids.len())).collect();
    let group: Vec<_> = rows.iter().filter(|r| i64::from(r.0) == pid).copied().collect();
    assert_eq!(group, want, "ps -eLf rows of pid {pid}:\n{ps}");
    // PID LWP TTY TIME CMD and PID SPID TTY TIME CMD for that process.
    let pid_arg = pid.to_string();
    for flag in ["-L", "-T"] {
        let ps = run_pidns(&["/bin/ps", flag, "-p", &pid_arg]);
        let rows = lwp_rows(&ps, (0, 1, None));
        let want: Vec<(i32, i32, usize)> = tids.iter().map(|t| (pid as i32, *t, 0)).collect();
        assert_eq!(rows, want, "ps {flag} -p {pid}:\n{ps}");
    }
    // Without a selection: the caller's own kind of processes (same euid, no terminal), each
    // row a real thread of the guest.
    for flag in ["-L", "-T"] {
        let ps = run_pidns(&["/bin/ps", flag]);
        let all = threads(&snap);
        for (p, t, _) in lwp_rows(&ps, (0, 1, None)) {
            assert!(
                all.iter().any(|r| (r.0, r.1) == (p, t)),
                "ps {flag}: {p}/{t} is no guest thread:\n{ps}"
            );
        }
    }
}
