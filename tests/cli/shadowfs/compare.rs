//! One view of the guest's /proc, whichever serves it, compared with the ground truth.

use std::collections::BTreeMap;

use introspect::linux::GuestSnapshot;
use serde_json::Value;

use super::{Case, stat_fields};

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
pub(super) fn check_against_truth(
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
