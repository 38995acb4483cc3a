//! The shadow /proc against the ground truth captured inside each guest: the pure renderer,
//! `dormouse proc`, and a real FUSE mount served by `dormouse shadowfs` (root).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dormouse_tests::{FixtureKernel, decompressed, testbed, xen_fixtures};
use introspect::linux::GuestSnapshot;
use serde_json::Value;
use shadowfs::ProcTree;

use crate::dormouse_bin;

struct Case {
    name: &'static str,
    image: PathBuf,
    truth: Value,
    /// The `.config` of the kernel the image ran: the fixtures' `kernel-<release>/` for their
    /// images, the test bed's own kernel package for its dump.
    kernel_config: PathBuf,
}

fn load_truth(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every memory image with ground truth: the Xen PV save and core, both QEMU dumps, the test
/// bed's dump.
fn cases(test: &str) -> Vec<Case> {
    let mut out = Vec::new();
    if let Some(fx) = &xen_fixtures(test) {
        let kernel_config = FixtureKernel::read(fx).config();
        let xen = load_truth(&fx.join("xen-pv-a/ground-truth.json"));
        for (name, rel) in [
            ("xen-pv-a save", "xen-pv-a/domU-A.save"),
            ("xen-pv-a core", "xen-pv-a/domU-A.core"),
        ] {
            out.push(Case {
                name,
                image: decompressed(fx, rel),
                truth: xen.clone(),
                kernel_config: kernel_config.clone(),
            });
        }
        for (name, dir) in [("qemu 4-level", "qemu-6.1-4level"), ("qemu la57", "qemu-6.1-la57")] {
            out.push(Case {
                name,
                image: decompressed(fx, &format!("{dir}/dump.elf")),
                truth: load_truth(&fx.join(dir).join("ground-truth.json")),
                kernel_config: kernel_config.clone(),
            });
        }
    }
    if let Some(tb) = testbed(test) {
        out.push(Case {
            name: "test-bed dump",
            image: tb.memdump.dir.join("dump.elf"),
            truth: load_truth(&tb.memdump.dir.join("ground-truth.json")),
            kernel_config: tb.kernel.config,
        });
    }
    out
}

fn snapshot(image: &Path) -> GuestSnapshot {
    let mem = introspect::open_memory(image).unwrap_or_else(|e| panic!("{}: {e}", image.display()));
    introspect::linux::snapshot(mem.as_ref(), &Default::default())
        .unwrap_or_else(|e| panic!("{}: {e}", image.display()))
}

/// The verbatim /proc files of the ground truth that must match byte for byte, keyed by path
/// under /proc. Files the snapshot cannot back yet must then be absent.
fn exact_files(truth: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(files) = truth["proc_files"].as_object() else {
        return out;
    };
    for name in [
        "version",
        "cmdline",
        "filesystems",
        "sys/kernel/ngroups_max",
        "sys/kernel/osrelease",
        "sys/kernel/ostype",
        "sys/kernel/hostname",
        "sys/kernel/domainname",
        "sys/kernel/version",
        "sys/kernel/pid_max",
        "sys/kernel/random/boot_id",
        "sys/kernel/threads-max",
        "sys/fs/file-max",
        "sys/vm/swappiness",
    ] {
        if let Some(text) = files.get(&format!("/proc/{name}")).and_then(Value::as_str) {
            out.insert(name.to_owned(), text.to_owned());
        }
    }
    out
}

/// Files whose data are the snapshot's newer `system` part: equal when the renderer offers them.
const SYSTEM_FILES: [&str; 5] = ["meminfo", "uptime", "loadavg", "swaps", "cpuinfo"];

/// (pid, fields of the stat line, cmdline bytes) of each long-lived user process.
fn processes(truth: &Value) -> Vec<(i64, Vec<String>, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    for p in truth["processes"].as_array().into_iter().flatten() {
        if p["kernel_thread"].as_bool() != Some(false) {
            continue;
        }
        let Some(stat) = p["stat"].as_str() else { continue };
        let pid = p["pid"].as_i64().expect("pid");
        let stat = truth["proc_files"][format!("/proc/{pid}/stat")]
            .as_str()
            .unwrap_or(stat);
        let fields = stat_fields(stat);
        assert_eq!(fields.len(), 52, "ground truth {pid}/stat has 52 fields");
        let cmdline = match p["cmdline_raw_hex"].as_str() {
            Some(hex) => Some(
                (0..hex.len() / 2)
                    .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
                    .collect(),
            ),
            None => p["cmdline"].as_array().map(|args| {
                args.iter()
                    .flat_map(|a| a.as_str().unwrap_or("").bytes().chain([0]))
                    .collect()
            }),
        };
        out.push((pid, fields, cmdline));
    }
    out
}

/// A stat line's fields, `(comm)` (which may hold spaces) as one.
fn stat_fields(s: &str) -> Vec<String> {
    let open = s.find('(').expect("(comm)");
    let close = s.rfind(')').expect("(comm)");
    let mut out = vec![s[..open].trim().to_owned(), s[open..=close].to_owned()];
    out.extend(s[close + 1..].split_whitespace().map(str::to_owned));
    out
}

/// Stat fields (1-based, as proc(5) numbers them) that cannot change between the ground
/// truth's capture and the dump of a long-lived process: pid, comm, (state: separately),
/// ppid, pgrp, session, tty_nr, tpgid, flags, priority, nice, num_threads, itrealvalue,
/// starttime, vsize, rsslim, startcode, endcode, startstack, kstkesp, kstkeip, signal,
/// blocked, sigignore, sigcatch, nswap, cnswap, exit_signal, processor, rt_priority, policy,
/// start_data, end_data, start_brk, arg_start, arg_end, env_start, env_end, exit_code.
const STAT_STABLE: [usize; 38] = [
    1, 2, 4, 5, 6, 7, 8, 9, 18, 19, 20, 21, 22, 23, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 36, 37, 38, 39, 40, 41, 45,
    46, 47, 48, 49, 50, 51, 52,
];
/// Counters that only grow, so the dump's are at least the capture's: minflt, cminflt, majflt,
/// cmajflt, utime, stime, cutime, cstime, delayacct_blkio_ticks, guest_time, cguest_time.
const STAT_MONOTONIC: [usize; 11] = [10, 11, 12, 13, 14, 15, 16, 17, 42, 43, 44];

/// Compares one view of the guest's /proc (`read` returns a file's bytes or `None` when absent,
/// `list` a directory's entry names) with the ground truth. Returns how many comparisons were
/// made.
fn check_against_truth(
    case: &Case,
    snap: &GuestSnapshot,
    read: &dyn Fn(&str) -> Option<Vec<u8>>,
    list: &dyn Fn(&str) -> Option<Vec<String>>,
) -> usize {
    let mut checked = 0;
    let name = case.name;
    // mounts: byte for byte, filesystem-specific options included.
    if let Some(expected) = case.truth["proc_files"]["/proc/mounts"].as_str() {
        let got = String::from_utf8(read("mounts").expect("mounts")).expect("utf-8");
        assert_eq!(got, expected, "{name}: /proc/mounts");
        checked += 1;
    }
    checked += check_tty_drivers(case, snap, read);
    checked += check_threads_and_environ(case, read, list);
    for (file, expected) in exact_files(&case.truth) {
        // Sysctls beyond the ones apt needs: present exactly when the snapshot read them.
        if matches!(
            file.as_str(),
            "sys/kernel/threads-max" | "sys/fs/file-max" | "sys/vm/swappiness"
        ) && !snap.sysctl.contains_key(&file["sys/".len()..].replace('/', "."))
        {
            assert_eq!(read(&file), None, "{name}: /proc/{file} is not in the snapshot");
            continue;
        }
        let got = read(&file).unwrap_or_else(|| panic!("{name}: /proc/{file} is missing"));
        assert_eq!(String::from_utf8_lossy(&got), expected, "{name}: /proc/{file}");
        checked += 1;
    }
    // modules: byte for byte (the ground truth was read as root, so with real addresses).
    if let Some(expected) = case.truth["proc_files"]["/proc/modules"].as_str() {
        let got = String::from_utf8(read("modules").expect("modules")).expect("utf-8");
        assert_eq!(got, expected, "{name}: /proc/modules");
        checked += 1;
    }
    // ipv6 conf/all: every value the guest could read.
    if let Some(conf) = case.truth["ipv6_conf_all"].as_object() {
        for (key, value) in conf {
            let value = value.as_str().expect("string");
            let got = read(&format!("sys/net/ipv6/conf/all/{key}"));
            if value == "<read error>" {
                // stable_secret: EIO in the guest until set; never rendered.
                assert_eq!(got, None, "{name}: conf/all/{key} unreadable in the guest");
            } else {
                let got = got.unwrap_or_else(|| panic!("{name}: conf/all/{key} missing"));
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    format!("{value}\n"),
                    "{name}: conf/all/{key}"
                );
            }
            checked += 1;
        }
    }
    // sysctls the guest had but the snapshot lacks would be absent, never dom0's.
    if !snap.sysctl.contains_key("net.ipv4.ip_forward") {
        assert_eq!(
            read("sys/net/ipv4/ip_forward"),
            None,
            "{name}: ip_forward is not in the snapshot"
        );
    }
    for (pid, fields, cmdline) in processes(&case.truth) {
        let Some(task) = snap.tasks.iter().find(|t| i64::from(t.pid) == pid) else {
            panic!("{name}: guest process {pid} is not in the snapshot");
        };
        let got = read(&format!("{pid}/stat")).unwrap_or_else(|| panic!("{name}: {pid}/stat"));
        let got = String::from_utf8(got).expect("utf-8");
        assert!(got.ends_with('\n'), "{name}: {pid}/stat ends its line");
        let got = stat_fields(&got);
        assert_eq!(got.len(), 52, "{name}: {pid}/stat has 52 fields: {got:?}");
        // The walker itself (running while it recorded) sleeps at dump time.
        if fields[2] != "R" {
            assert_eq!(got[2], fields[2], "{name}: {pid}/stat state");
        }
        for i in STAT_STABLE {
            assert_eq!(got[i - 1], fields[i - 1], "{name}: {pid}/stat field {i}");
        }
        for i in STAT_MONOTONIC {
            let n = |v: &str| {
                v.parse::<u64>()
                    .unwrap_or_else(|e| panic!("{name}: {pid}/stat field {i}: {e}"))
            };
            assert!(
                n(&got[i - 1]) >= n(&fields[i - 1]),
                "{name}: {pid}/stat field {i} went back: {} < {}",
                got[i - 1],
                fields[i - 1]
            );
        }
        match (cmdline, &task.cmdline) {
            (Some(expected), Some(_)) => {
                let got = read(&format!("{pid}/cmdline")).unwrap_or_else(|| panic!("{name}: {pid}/cmdline"));
                assert_eq!(got, expected, "{name}: {pid}/cmdline");
            }
            (_, None) => assert_eq!(read(&format!("{pid}/cmdline")), None, "{name}: {pid}/cmdline unknown"),
            (None, Some(_)) => {}
        }
        checked += 3;
    }
    // System files: equal to the ground truth when the snapshot has their data, else absent.
    for file in SYSTEM_FILES {
        let got = read(file);
        match (&got, case.truth["proc_files"][format!("/proc/{file}")].as_str()) {
            (None, _) => assert!(
                match file {
                    "meminfo" => snap.system.meminfo.is_empty(),
                    "cpuinfo" => snap.system.cpus.is_empty(),
                    "uptime" => snap.system.uptime_ns.is_none() || snap.system.idle_ns.is_none(),
                    _ => true,
                },
                "{name}: /proc/{file} absent although the snapshot has its data"
            ),
            (Some(got), Some(expected)) if file == "swaps" || file == "meminfo" => {
                // meminfo: same labels and layout; the values drift between capture and dump.
                let shape = |t: &str| {
                    t.lines()
                        .map(|l| l.split(':').next().unwrap_or("").to_owned())
                        .collect::<Vec<_>>()
                };
                assert_eq!(
                    shape(&String::from_utf8_lossy(got)),
                    shape(expected),
                    "{name}: /proc/{file} lines"
                );
                checked += 1;
            }
            (Some(got), Some(expected)) if file == "cpuinfo" => {
                // Line for line, but for the clock rate and bogomips (measured at each boot).
                let stable = |t: &str| {
                    t.lines()
                        .filter(|l| !l.starts_with("cpu MHz") && !l.starts_with("bogomips"))
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                };
                assert_eq!(
                    stable(&String::from_utf8_lossy(got)),
                    stable(expected),
                    "{name}: cpuinfo"
                );
                checked += 1;
            }
            (Some(got), _) => assert!(!got.is_empty(), "{name}: /proc/{file} empty"),
        }
    }
    checked
}

/// `/proc/tty/drivers` against what the guest's kernel build registers (its config) and, where
/// the ground truth has it, the character devices the drivers registered (`/proc/devices`).
fn check_tty_drivers(case: &Case, snap: &GuestSnapshot, read: &dyn Fn(&str) -> Option<Vec<u8>>) -> usize {
    let name = case.name;
    let text = String::from_utf8(read("tty/drivers").expect("tty/drivers")).expect("utf-8");
    // (driver, device name, major, minors, type) per line.
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
    assert!(lines.iter().all(|l| l.len() == 5), "{name}: tty/drivers:\n{text}");
    let has = |line: [&str; 5]| lines.iter().any(|l| l[..] == line[..]);
    let release = &snap.uts.release;
    let path = &case.kernel_config;
    assert!(
        path.ends_with(format!("config-{release}")),
        "{name}: the image runs {release}, but its case names {}",
        path.display()
    );
    let config = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{name}: {}: {e}", path.display()));
    let set = |option: &str| config.lines().any(|l| l == format!("{option}=y"));
    let value = |option: &str| {
        config
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{option}=")))
            .and_then(|v| v.parse::<u32>().ok())
    };
    // The pseudo-drivers come first, in the kernel's order.
    let mut pseudo = vec![
        ["/dev/tty", "/dev/tty", "5", "0", "system:/dev/tty"],
        ["/dev/console", "/dev/console", "5", "1", "system:console"],
    ];
    if set("CONFIG_UNIX98_PTYS") {
        pseudo.push(["/dev/ptmx", "/dev/ptmx", "5", "2", "system"]);
        // NR_UNIX98_PTY_MAX minors each.
        assert!(
            has(["pty_slave", "/dev/pts", "136", "0-1048575", "pty:slave"]),
            "{name}:\n{text}"
        );
        assert!(
            has(["pty_master", "/dev/ptm", "128", "0-1048575", "pty:master"]),
            "{name}:\n{text}"
        );
    }
    if set("CONFIG_VT") {
        pseudo.push(["/dev/vc/0", "/dev/vc/0", "4", "0", "system:vtmaster"]);
        // MAX_NR_CONSOLES virtual terminals, /dev/tty1 to /dev/tty63.
        assert!(has(["unknown", "/dev/tty", "4", "1-63", "console"]), "{name}:\n{text}");
    }
    for (got, want) in lines.iter().zip(&pseudo) {
        assert_eq!(got[..], want[..], "{name}: tty/drivers pseudo-driver lines");
    }
    if set("CONFIG_SERIAL_8250") {
        let uarts = value("CONFIG_SERIAL_8250_NR_UARTS").expect("CONFIG_SERIAL_8250_NR_UARTS");
        let minors = format!("64-{}", 63 + uarts);
        assert!(has(["serial", "/dev/ttyS", "4", &minors, "serial"]), "{name}:\n{text}");
    }
    // Each driver registered its device numbers under its name (tty_register_driver()), the
    // pseudo-drivers under their paths (tty_init(), vty_init()).
    if let Some(devices) = case.truth["proc_files"]["/proc/devices"].as_str() {
        let chars: Vec<(&str, &str)> = devices
            .split("\n\n")
            .next()
            .unwrap_or("")
            .lines()
            .skip(1)
            .filter_map(|l| l.trim().split_once(' '))
            .collect();
        for l in &lines {
            let registered = if l[0].starts_with("/dev/") {
                l[0]
            } else {
                &l[1]["/dev/".len()..]
            };
            assert!(
                chars.contains(&(l[2], registered)),
                "{name}: tty driver {l:?} not among the character devices:\n{devices}"
            );
        }
    }
    1
}

/// Each process's `task/` (its threads, as the guest listed them), the threads' own entries,
/// and `environ` byte for byte where the ground truth has it.
fn check_threads_and_environ(
    case: &Case,
    read: &dyn Fn(&str) -> Option<Vec<u8>>,
    list: &dyn Fn(&str) -> Option<Vec<String>>,
) -> usize {
    let name = case.name;
    let mut checked = 0;
    for p in case.truth["processes"].as_array().into_iter().flatten() {
        let pid = p["pid"].as_i64().expect("pid");
        if p["comm"].as_str().is_some_and(|c| c.starts_with("kworker/")) {
            continue; // a worker's pid may now belong to another worker
        }
        if let Some(env) = p["environ"].as_array() {
            let want: Vec<u8> = env
                .iter()
                .flat_map(|e| e.as_str().expect("string").bytes().chain([0]))
                .collect();
            let got = read(&format!("{pid}/environ")).unwrap_or_else(|| panic!("{name}: {pid}/environ"));
            assert_eq!(got, want, "{name}: {pid}/environ");
            checked += 1;
        }
        let Some(tids) = p["threads"].as_array() else { continue };
        let mut want: Vec<String> = tids.iter().map(|t| t.as_i64().expect("tid").to_string()).collect();
        want.sort_by_key(|t| t.parse::<i64>().unwrap_or(0));
        let got = list(&format!("{pid}/task")).unwrap_or_else(|| panic!("{name}: {pid}/task"));
        assert_eq!(got, want, "{name}: ls {pid}/task");
        let group_stat = String::from_utf8(read(&format!("{pid}/stat")).expect("stat")).expect("utf-8");
        let group = stat_fields(&group_stat);
        for tid in &want {
            let dir = format!("{pid}/task/{tid}");
            let stat = String::from_utf8(read(&format!("{dir}/stat")).unwrap_or_else(|| panic!("{name}: {dir}/stat")))
                .expect("utf-8");
            let f = stat_fields(&stat);
            assert_eq!(f.len(), 52, "{name}: {dir}/stat: {stat}");
            assert_eq!(&f[0], tid, "{name}: {dir}/stat pid");
            // ppid, pgrp, session, tty, num_threads, starttime (the leader's own), vsize.
            for i in [4, 5, 6, 7, 20, 23] {
                assert_eq!(f[i - 1], group[i - 1], "{name}: {dir}/stat field {i}");
            }
            if *tid == pid.to_string() {
                assert_eq!(f[21], group[21], "{name}: {dir}/stat starttime");
            }
            let status = String::from_utf8(read(&format!("{dir}/status")).expect("status")).expect("utf-8");
            assert!(
                status.contains(&format!("\nTgid:\t{pid}\n")) && status.contains(&format!("\nPid:\t{tid}\n")),
                "{name}: {dir}/status:\n{status}"
            );
            for file in ["cmdline", "environ"] {
                assert_eq!(
                    read(&format!("{dir}/{file}")),
                    read(&format!("{pid}/{file}")),
                    "{name}: {dir}/{file} is the group's"
                );
            }
            checked += 1;
        }
    }
    checked
}

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

/// A directory's entry names in readdir order, `None` when it cannot be read.
fn list_dir(dir: &Path) -> Option<Vec<String>> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn mounted(dir: &Path) -> bool {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dir = dir.to_string_lossy();
    text.lines().any(|l| l.split(' ').nth(4) == Some(dir.as_ref()))
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
                "stale mount at {}",
                self.path().display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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
