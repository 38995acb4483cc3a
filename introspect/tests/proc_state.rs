//! The `/proc` state behind meminfo, cpuinfo, stat, uptime, loadavg and each process's
//! stat/status lines, against the files the guests printed themselves. The images were
//! taken seconds (QEMU) to minutes (Xen) after the ground truth, so counters that move are
//! checked for plausibility and direction; what cannot move is checked exactly.

// Tests and their helpers fail by panicking, with the message saying what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use introspect::linux::{GuestSnapshot, ProfileFiles, snapshot};
use introspect::open_memory;
use serde_json::Value;

struct Case {
    name: String,
    image: PathBuf,
    truth: Value,
    /// The image was written by `xl save`, after the guest's suspend froze its tasks.
    xen_save: bool,
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    if let Some(fx) = common::fixtures() {
        for (file, save) in [("domU-A.save", true), ("domU-A.core", false)] {
            cases.push(Case {
                name: format!("xen-pv-a/{file}"),
                image: common::decompressed(&fx, &format!("xen-pv-a/{file}")),
                truth: common::json(&fx.join("xen-pv-a/ground-truth.json")),
                xen_save: save,
            });
        }
        for dir in ["qemu-6.1-4level", "qemu-6.1-la57"] {
            cases.push(Case {
                name: dir.to_owned(),
                image: common::decompressed(&fx, &format!("{dir}/dump.elf")),
                truth: common::json(&fx.join(format!("{dir}/ground-truth.json"))),
                xen_save: false,
            });
        }
    }
    if let Some(dir) = common::testbed_memdump("proc_state") {
        cases.push(Case {
            name: "test bed".into(),
            image: dir.join("dump.elf"),
            truth: common::json(&dir.join("ground-truth.json")),
            xen_save: false,
        });
    }
    cases
}

fn take(case: &Case) -> GuestSnapshot {
    let mem = open_memory(&case.image).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    snapshot(mem.as_ref(), &ProfileFiles::default()).unwrap_or_else(|e| panic!("{}: {e}", case.name))
}

fn proc_file<'a>(case: &'a Case, path: &str) -> Option<&'a str> {
    case.truth["proc_files"][path].as_str()
}

/// "Key:   value kB" lines of meminfo / status as (key, number).
fn kv_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn number(v: &str) -> u64 {
    v.split_whitespace().next().unwrap().parse().unwrap()
}

/// Seconds as /proc/uptime prints them ("12.34").
fn seconds(v: &str) -> f64 {
    v.parse().unwrap()
}

fn check_meminfo(case: &Case, s: &GuestSnapshot) {
    let name = &case.name;
    let truth = kv_lines(proc_file(case, "/proc/meminfo").unwrap());
    let got: Vec<&str> = s.system.meminfo.iter().map(|(k, _)| k.as_str()).collect();
    let want: Vec<&str> = truth.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(got, want, "{name}: meminfo lines");
    let got: BTreeMap<&str, u64> = s.system.meminfo.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let total = number(&truth[0].1);
    // Sizes fixed at boot.
    for key in [
        "MemTotal",
        "SwapTotal",
        "SwapFree",
        "CommitLimit",
        "VmallocTotal",
        "Percpu",
        "Hugepagesize",
        "HugePages_Total",
    ] {
        let want = truth.iter().find(|(k, _)| k == key).map(|(_, v)| number(v));
        assert_eq!(got.get(key).copied(), want, "{name}: meminfo {key}");
    }
    // Usage moved a little between the two moments: within 2% of RAM.
    for (key, value) in &truth {
        if key == "VmallocTotal" {
            continue;
        }
        let (want, got) = (number(value), got[key.as_str()]);
        assert!(
            want.abs_diff(got) <= total / 50,
            "{name}: meminfo {key} is {got}, the guest said {want}"
        );
    }
}

fn check_cpuinfo(case: &Case, s: &GuestSnapshot) {
    let name = &case.name;
    let text = proc_file(case, "/proc/cpuinfo").unwrap();
    let blocks: Vec<&str> = text.split("\n\n").filter(|b| !b.trim().is_empty()).collect();
    assert_eq!(s.system.cpus.len(), blocks.len(), "{name}: CPU count");
    for (cpu, block) in s.system.cpus.iter().zip(&blocks) {
        let f: BTreeMap<String, String> = kv_lines(block).into_iter().collect();
        let list = |v: &str| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        let (phys, virt) = cpu.address_sizes.unwrap();
        let got = [
            ("processor", cpu.processor.to_string()),
            ("vendor_id", cpu.vendor_id.clone()),
            ("cpu family", cpu.family.to_string()),
            ("model", cpu.model.to_string()),
            ("model name", cpu.model_name.clone()),
            ("stepping", cpu.stepping.to_string()),
            ("microcode", format!("{:#x}", cpu.microcode.unwrap())),
            ("cpu MHz", format!("{:.3}", cpu.mhz.unwrap())),
            ("cache size", format!("{} KB", cpu.cache_size_kb.unwrap())),
            ("physical id", cpu.physical_id.unwrap().to_string()),
            ("siblings", cpu.siblings.unwrap().to_string()),
            ("core id", cpu.core_id.unwrap().to_string()),
            ("cpu cores", cpu.cpu_cores.unwrap().to_string()),
            ("apicid", cpu.apicid.unwrap().to_string()),
            ("initial apicid", cpu.initial_apicid.unwrap().to_string()),
            ("cpuid level", cpu.cpuid_level.unwrap().to_string()),
            ("TLB size", format!("{} 4K pages", cpu.tlb_size.unwrap())),
            ("bogomips", format!("{:.2}", cpu.bogomips.unwrap())),
            ("clflush size", cpu.clflush_size.unwrap().to_string()),
            ("cache_alignment", cpu.cache_alignment.unwrap().to_string()),
            ("address sizes", format!("{phys} bits physical, {virt} bits virtual")),
        ];
        for (key, value) in got {
            assert_eq!(Some(&value), f.get(key), "{name}: cpuinfo {key}");
        }
        assert_eq!(cpu.flags, list(&f["flags"]), "{name}: cpuinfo flags");
        assert_eq!(cpu.bugs, list(&f["bugs"]), "{name}: cpuinfo bugs");
    }
    if let Some(first) = case.truth.get("cpuinfo_first_cpu").and_then(Value::as_str) {
        assert_eq!(
            first.trim(),
            blocks[0].trim(),
            "{name}: cpuinfo_first_cpu is the first block"
        );
    }
}

/// /proc/stat, uptime and loadavg: boot time exactly, the rest no earlier than the guest saw.
fn check_clocks_and_counters(case: &Case, s: &GuestSnapshot) {
    let name = &case.name;
    let sys = &s.system;
    let uptime = sys.uptime_ns.unwrap() as f64 / 1e9;
    let idle = sys.idle_ns.unwrap() as f64 / 1e9;
    let ncpus = sys.cpus.len() as f64;
    assert!(idle <= uptime * ncpus, "{name}: idle {idle} s in {uptime} s");
    let btime = sys.boot_time.unwrap();
    if let Some(stat) = proc_file(case, "/proc/stat") {
        let field = |key: &str| -> u64 {
            let line = stat.lines().find(|l| l.starts_with(&format!("{key} "))).unwrap();
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        };
        assert_eq!(btime, field("btime"), "{name}: btime");
        assert!(sys.forks.unwrap() >= field("processes"), "{name}: forks");
        assert!(sys.context_switches.unwrap() >= field("ctxt"), "{name}: ctxt");
        assert_eq!(sys.procs_blocked, Some(0), "{name}: nothing waits for I/O");
        let per_cpu: Vec<Vec<u64>> = stat
            .lines()
            .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
            .map(|l| l.split_whitespace().skip(1).map(|v| v.parse().unwrap()).collect())
            .collect();
        assert_eq!(sys.cpu_times.len(), per_cpu.len(), "{name}: /proc/stat cpu lines");
        for (got, want) in sys.cpu_times.iter().zip(&per_cpu) {
            for (column, (g, w)) in got.iter().zip(want).enumerate() {
                assert!(
                    g >= w,
                    "{name}: /proc/stat column {column} went back: {got:?} < {want:?}"
                );
            }
            let total: u64 = got.iter().sum();
            assert!(
                (total as f64 / 100.0) <= uptime + 1.0,
                "{name}: a CPU spent {total} ticks in {uptime} s"
            );
        }
    } else {
        // The Xen guest printed its clock and uptime instead: they give the boot time.
        let epoch = case.truth["guest_time_epoch"].as_u64().unwrap() as f64;
        let up = seconds(
            case.truth["uptime_at_snapshot"]
                .as_str()
                .unwrap()
                .split(' ')
                .next()
                .unwrap(),
        );
        assert!((btime as f64 - (epoch - up)).abs() <= 1.0, "{name}: btime {btime}");
        // Saved or dumped at least 20 s after the truth (fixture notes), well within an hour.
        assert!(uptime >= up + 20.0 && uptime < up + 3600.0, "{name}: uptime {uptime}");
    }
    match case.truth.get("uptime") {
        Some(u) if u.get("last_tick_before_stop").is_some() => {
            // The dump follows the last printed tick by at most ~1 s.
            let tick: Vec<f64> = u["last_tick_before_stop"]
                .as_str()
                .unwrap()
                .split(' ')
                .map(seconds)
                .collect();
            assert!(
                uptime >= tick[0] - 0.01 && uptime <= tick[0] + 3.0,
                "{name}: uptime {uptime} vs {tick:?}"
            );
            assert!(
                idle >= tick[1] - 0.01 && idle <= tick[1] + 3.0 * ncpus,
                "{name}: idle {idle} vs {tick:?}"
            );
        }
        Some(u) => {
            // The host stopped the VM about 2 s after the capture ended.
            let end = seconds(u["at_capture_end"].as_str().unwrap().split(' ').next().unwrap());
            assert!(
                uptime >= end && uptime <= end + 10.0,
                "{name}: uptime {uptime} vs {end}"
            );
        }
        None => {}
    }
    let loadavg: Vec<&str> = proc_file(case, "/proc/loadavg").unwrap().split_whitespace().collect();
    let (_, threads) = loadavg[3].split_once('/').unwrap();
    let threads: u64 = threads.parse().unwrap();
    assert!(
        sys.nr_threads.unwrap().abs_diff(threads) <= 20,
        "{name}: nr_threads {:?} vs {threads}",
        sys.nr_threads
    );
    let last_pid: i32 = loadavg[4].parse().unwrap();
    assert!(sys.last_pid.unwrap() >= last_pid, "{name}: last pid {:?}", sys.last_pid);
    assert!(
        sys.nr_running.unwrap() <= sys.cpus.len() as u64 + 2,
        "{name}: nr_running"
    );
    for load in sys.avenrun.unwrap() {
        // FIXED_1 = 2048; these guests never ran more than a few tasks at once.
        assert!((10..8 * 2048).contains(&load), "{name}: load {load}");
    }
    if proc_file(case, "/proc/swaps").is_some_and(|t| t.lines().count() == 1) {
        assert!(sys.swaps.is_empty(), "{name}: no swap in the guest");
    }
}

/// /proc/PID/stat fields that do not move for a sleeping process, and status ids.
fn check_task_details(case: &Case, s: &GuestSnapshot) {
    let name = &case.name;
    let tasks: BTreeMap<i32, _> = s.tasks.iter().map(|t| (t.pid, t)).collect();
    let mut compared = 0;
    for p in case.truth["processes"].as_array().unwrap() {
        let comm = p["comm"].as_str().unwrap();
        let pid = p["pid"].as_i64().unwrap() as i32;
        let Some(t) = tasks.get(&pid).filter(|_| !comm.starts_with("kworker/")) else {
            continue;
        };
        let d = t
            .detail
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: pid {pid} has no detail"));
        let line = p["stat"].as_str().unwrap();
        let close = line.rfind(')').unwrap();
        let rest: Vec<&str> = line[close + 2..].split_whitespace().collect();
        // rest[0] is field 3 (state).
        let field = |n: usize| rest[n - 3];
        let mut fields = vec![
            (5, d.pgrp.to_string()),
            (6, d.session.to_string()),
            (7, d.tty_nr.to_string()),
            (8, d.tpgid.to_string()),
            (18, d.priority.to_string()),
            (19, d.nice.to_string()),
            (20, d.threads.len().to_string()),
            (22, d.start_time.to_string()),
            (38, d.exit_signal.to_string()),
        ];
        // The tasks carrying out `xl save` are marked PF_SUSPEND_TASK while they do.
        if !(case.xen_save && (comm == "xenwatch" || comm.starts_with("migration/"))) {
            fields.push((9, d.flags.to_string()));
        }
        // PID 1 wrote the ground truth and kept running; the others sleep throughout.
        if pid != 1 && !t.kernel_thread {
            fields.push((23, d.vsize.to_string()));
            fields.push((26, d.code.0.to_string()));
            fields.push((27, d.code.1.to_string()));
            fields.push((28, d.start_stack.to_string()));
        }
        for (n, got) in fields {
            assert_eq!(got, field(n), "{name}: pid {pid} ({comm}) stat field {n}");
        }
        if let Some(threads) = p["threads"].as_array() {
            let want: Vec<i32> = threads.iter().map(|t| t.as_i64().unwrap() as i32).collect();
            assert_eq!(d.threads, want, "{name}: pid {pid} thread ids");
        }
        let id = |key: &str| p[key].as_u64().unwrap() as u32;
        assert_eq!(
            (t.uid, d.euid, d.suid, d.fsuid),
            (id("uid"), id("euid"), id("suid"), id("fsuid")),
            "{name}: pid {pid} Uid"
        );
        assert_eq!(
            (t.gid, d.egid, d.sgid, d.fsgid),
            (id("gid"), id("egid"), id("sgid"), id("fsgid")),
            "{name}: pid {pid} Gid"
        );
        let groups: Vec<u32> = p["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(d.groups, groups, "{name}: pid {pid} Groups");
        if !t.kernel_thread && t.state != 'Z' {
            assert_eq!(d.root.as_deref(), Some("/"), "{name}: pid {pid} root");
            assert!(
                d.exe.as_deref().is_some_and(|e| e.starts_with('/')),
                "{name}: pid {pid} exe {:?}",
                d.exe
            );
        }
        compared += 1;
    }
    assert!(compared >= 20, "{name}: only {compared} processes compared");

    // /proc/1/status lines that PID 1 does not change by running.
    let init = tasks[&1].detail.as_ref().unwrap();
    let status: BTreeMap<String, String> = kv_lines(proc_file(case, "/proc/1/status").unwrap())
        .into_iter()
        .collect();
    let hex = |v: u64| format!("{v:016x}");
    let mut want = vec![
        ("SigBlk", hex(init.sig_blocked)),
        ("SigIgn", hex(init.sig_ignored)),
        ("SigCgt", hex(init.sig_caught)),
        ("CapInh", hex(init.caps[0])),
        ("CapPrm", hex(init.caps[1])),
        ("CapEff", hex(init.caps[2])),
        ("CapBnd", hex(init.caps[3])),
        ("CapAmb", hex(init.caps[4])),
        ("Threads", init.threads.len().to_string()),
        ("Umask", format!("{:04o}", init.umask.unwrap())),
    ];
    let vm: BTreeMap<&str, u64> = init.vm.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    for key in ["VmExe", "VmLib", "VmStk"] {
        want.push((key, format!("{} kB", vm[key])));
    }
    for (key, got) in want {
        assert_eq!(Some(&got), status.get(key), "{name}: /proc/1/status {key}");
    }
}

/// Each process's threads (`/proc/PID/task`) and environment against the ids and `environ`
/// the guest listed; each thread's stat detail follows `do_task_stat()` with `whole` = 0:
/// the group-wide fields are the leader's, the counters its own.
fn check_threads_and_environ(case: &Case, s: &GuestSnapshot) {
    let name = &case.name;
    let tasks: BTreeMap<i32, _> = s.tasks.iter().map(|t| (t.pid, t)).collect();
    let (mut threads_compared, mut environs_compared, mut multi) = (0, 0, 0);
    for p in case.truth["processes"].as_array().unwrap() {
        let comm = p["comm"].as_str().unwrap();
        let pid = p["pid"].as_i64().unwrap() as i32;
        let Some(t) = tasks.get(&pid).filter(|_| !comm.starts_with("kworker/")) else {
            continue;
        };
        let tids: Vec<i32> = t.threads.iter().map(|th| th.pid).collect();
        match &p["threads"] {
            Value::Array(want) => {
                let want: Vec<i32> = want.iter().map(|t| t.as_i64().unwrap() as i32).collect();
                assert_eq!(tids, want, "{name}: pid {pid} ({comm}) /proc/{pid}/task");
            }
            // The Xen ground truth has the count only.
            count => assert_eq!(
                Some(tids.len() as u64),
                count.as_u64(),
                "{name}: pid {pid} thread count"
            ),
        }
        threads_compared += 1;
        multi += usize::from(tids.len() > 1);
        let d = t.detail.as_ref().unwrap();
        assert_eq!(t.threads[0].pid, pid, "{name}: pid {pid}: the leader lists first");
        for th in &t.threads {
            let what = format!("{name}: pid {pid} thread {}", th.pid);
            assert_eq!(th.tgid, pid, "{what}: tgid");
            assert!(
                th.threads.is_empty() && th.cmdline.is_none() && th.environ.is_none(),
                "{what}"
            );
            let td = th.detail.as_ref().unwrap_or_else(|| panic!("{what}: no detail"));
            assert!(td.threads.is_empty(), "{what}: the group's thread list is the leader's");
            let shared = |d: &introspect::linux::TaskDetail| {
                (
                    (d.pgrp, d.session, d.tty_nr, d.tpgid),
                    (d.vsize, d.rss_pages, d.rsslim, d.code, d.start_stack),
                    (d.cminflt, d.cmajflt, d.cutime, d.cstime, d.cguest_time),
                    (d.sig_ignored, d.sig_caught, d.data, d.arg, d.env),
                )
            };
            assert_eq!(shared(td), shared(d), "{what}: group-wide stat fields");
            assert!(td.minflt <= d.minflt && td.utime <= d.utime, "{what}: own counters");
            if th.pid != pid {
                // Threads are created with exit_signal -1 (copy_process() for CLONE_THREAD).
                assert_eq!(td.exit_signal, -1, "{what}: exit_signal");
            }
        }
        // The group sums its live threads' counters (plus those of exited ones).
        let sum: u64 = t.threads.iter().map(|th| th.detail.as_ref().unwrap().minflt).sum();
        assert!(
            sum <= d.minflt,
            "{name}: pid {pid}: threads' minflt {sum} > group's {}",
            d.minflt
        );
        if let Some(want) = p["environ"].as_array() {
            let want: Vec<&str> = want.iter().map(|e| e.as_str().unwrap()).collect();
            let got = t
                .environ
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: pid {pid} ({comm}) has no environ"));
            assert_eq!(got, &want, "{name}: pid {pid} ({comm}) environ");
            environs_compared += 1;
        }
    }
    assert!(
        threads_compared >= 20,
        "{name}: only {threads_compared} thread lists compared"
    );
    if case.truth["processes"][0]["environ"].is_array() {
        assert!(
            environs_compared >= 20,
            "{name}: only {environs_compared} environments compared"
        );
    }
    if name.starts_with("qemu") {
        // The lab guest's dormouse-thr runs four threads.
        assert!(multi >= 1, "{name}: no multi-threaded process compared");
    }
}

#[test]
fn proc_state_matches_what_the_guests_printed() {
    for case in cases() {
        let s = take(&case);
        assert_eq!(s.system.hz, Some(250), "{}: Debian's CONFIG_HZ", case.name);
        check_meminfo(&case, &s);
        check_cpuinfo(&case, &s);
        check_clocks_and_counters(&case, &s);
        check_task_details(&case, &s);
        check_threads_and_environ(&case, &s);
        assert!(
            s.warnings
                .iter()
                .all(|w| !w.contains("stat") && !w.contains("meminfo") && !w.contains("cpuinfo")),
            "{}: {:?}",
            case.name,
            s.warnings
        );
    }
}

/// Saved about 70 s after the dump-core of the same running guest: the clocks moved forward
/// by that, the boot time did not.
#[test]
fn xen_save_is_later_than_its_dump_core() {
    let all = cases();
    let (Some(core), Some(save)) = (
        all.iter().find(|c| c.name.ends_with(".core")),
        all.iter().find(|c| c.xen_save),
    ) else {
        return;
    };
    let (core, save) = (take(core), take(save));
    assert_eq!(core.system.boot_time, save.system.boot_time);
    let gap = (save.system.uptime_ns.unwrap() as f64 - core.system.uptime_ns.unwrap() as f64) / 1e9;
    assert!((30.0..300.0).contains(&gap), "save is {gap} s after the core");
    assert!(save.system.forks >= core.system.forks);
}
