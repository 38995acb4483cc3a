//! The system-wide counters: `/proc/meminfo`, `cpuinfo`, `uptime`, `loadavg`, `stat` and
//! `swaps`.

use std::fmt::Write as _;

use introspect::linux::GuestSnapshot;
use introspect::octal_escape::escape;

/// Whether the snapshot knows the swap table: meminfo says how much swap there is, and the
/// list accounts for it.
pub(super) fn swaps_known(s: &GuestSnapshot) -> bool {
    let total = s.system.meminfo.iter().find(|(k, _)| k == "SwapTotal").map(|(_, v)| *v);
    match total {
        Some(0) => s.system.swaps.is_empty(),
        Some(_) => !s.system.swaps.is_empty(),
        None => false,
    }
}

/// `/proc/meminfo` (fs/proc/meminfo.c): 16-column labels, 8-column values.
pub(super) fn meminfo(s: &GuestSnapshot) -> String {
    let mut out = String::new();
    for (name, value) in &s.system.meminfo {
        let label = format!("{name}:");
        let unit = if name.starts_with("HugePages_") { "" } else { " kB" };
        if label.len() >= 16 {
            // "HardwareCorrupted: %5lu kB"
            let _ = writeln!(out, "{label} {value:>5}{unit}");
        } else {
            let _ = writeln!(out, "{label:<16}{value:>8}{unit}");
        }
    }
    out
}

/// `/proc/cpuinfo` (arch/x86/kernel/cpu/proc.c `show_cpuinfo`): the lines the snapshot has.
pub(super) fn cpuinfo(s: &GuestSnapshot) -> String {
    let mut out = String::new();
    for c in &s.system.cpus {
        let _ = writeln!(out, "processor\t: {}", c.processor);
        let _ = writeln!(
            out,
            "vendor_id\t: {}",
            if c.vendor_id.is_empty() {
                "unknown"
            } else {
                &c.vendor_id
            }
        );
        let _ = writeln!(out, "cpu family\t: {}", c.family);
        let _ = writeln!(out, "model\t\t: {}", c.model);
        let _ = writeln!(
            out,
            "model name\t: {}",
            if c.model_name.is_empty() {
                "unknown"
            } else {
                &c.model_name
            }
        );
        let _ = writeln!(out, "stepping\t: {}", c.stepping);
        if let Some(m) = c.microcode {
            let _ = writeln!(out, "microcode\t: 0x{m:x}");
        }
        if let Some(mhz) = c.mhz {
            let _ = writeln!(out, "cpu MHz\t\t: {mhz:.3}");
        }
        if let Some(kb) = c.cache_size_kb {
            let _ = writeln!(out, "cache size\t: {kb} KB");
        }
        if let (Some(p), Some(sib), Some(core), Some(cores)) = (c.physical_id, c.siblings, c.core_id, c.cpu_cores) {
            let _ = writeln!(
                out,
                "physical id\t: {p}\nsiblings\t: {sib}\ncore id\t\t: {core}\ncpu cores\t: {cores}"
            );
        }
        if let Some(a) = c.apicid {
            let _ = writeln!(out, "apicid\t\t: {a}");
        }
        if let Some(a) = c.initial_apicid {
            let _ = writeln!(out, "initial apicid\t: {a}");
        }
        // show_cpuinfo_misc() of x86-64: fpu, exceptions and write protection always exist.
        if let Some(level) = c.cpuid_level {
            let _ = writeln!(
                out,
                "fpu\t\t: yes\nfpu_exception\t: yes\ncpuid level\t: {level}\nwp\t\t: yes"
            );
        }
        let _ = writeln!(out, "flags\t\t: {}", c.flags.join(" "));
        let _ = writeln!(out, "bugs\t\t: {}", c.bugs.join(" "));
        if let Some(b) = c.bogomips {
            let _ = writeln!(out, "bogomips\t: {b:.2}");
        }
        if let Some(pages) = c.tlb_size {
            let _ = writeln!(out, "TLB size\t: {pages} 4K pages");
        }
        if let Some(v) = c.clflush_size {
            let _ = writeln!(out, "clflush size\t: {v}");
        }
        if let Some(v) = c.cache_alignment {
            let _ = writeln!(out, "cache_alignment\t: {v}");
        }
        if let Some((p, v)) = c.address_sizes {
            let _ = writeln!(out, "address sizes\t: {p} bits physical, {v} bits virtual");
        }
        out.push_str("power management:\n\n");
    }
    out
}

/// `/proc/uptime`: seconds and hundredths, truncated.
pub(super) fn uptime(s: &GuestSnapshot) -> String {
    let f = |ns: u64| format!("{}.{:02}", ns / 1_000_000_000, ns % 1_000_000_000 / 10_000_000);
    format!(
        "{} {}\n",
        f(s.system.uptime_ns.unwrap_or(0)),
        f(s.system.idle_ns.unwrap_or(0))
    )
}

/// `/proc/loadavg` (fs/proc/loadavg.c): LOAD_INT/LOAD_FRAC of avenrun + FIXED_1/200.
pub(super) fn loadavg(s: &GuestSnapshot) -> String {
    const FSHIFT: u32 = 11;
    const FIXED_1: u64 = 1 << FSHIFT;
    let avg = s.system.avenrun.unwrap_or([0; 3]).map(|a| {
        let a = a.saturating_add(FIXED_1 / 200);
        format!("{}.{:02}", a >> FSHIFT, ((a & (FIXED_1 - 1)) * 100) >> FSHIFT)
    });
    format!(
        "{} {} {} {}/{} {}\n",
        avg[0],
        avg[1],
        avg[2],
        s.system.nr_running.unwrap_or(0),
        s.system.nr_threads.unwrap_or(0),
        s.system.last_pid.unwrap_or(0)
    )
}

/// `/proc/stat` (fs/proc/stat.c): the cpu lines and the counters the snapshot has. The `intr`
/// and `softirq` lines need per-IRQ counters the snapshot does not carry; they are left out.
pub(super) fn stat(s: &GuestSnapshot) -> String {
    let sys = &s.system;
    let mut out = String::new();
    let mut total = [0u64; 10];
    for cpu in &sys.cpu_times {
        for (t, v) in total.iter_mut().zip(cpu) {
            *t = t.saturating_add(*v);
        }
    }
    let line = |out: &mut String, name: &str, v: &[u64; 10]| {
        out.push_str(name);
        for x in v {
            let _ = write!(out, " {x}");
        }
        out.push('\n');
    };
    line(&mut out, "cpu ", &total);
    for (i, cpu) in sys.cpu_times.iter().enumerate() {
        line(&mut out, &format!("cpu{i}"), cpu);
    }
    if let Some(v) = sys.context_switches {
        let _ = writeln!(out, "ctxt {v}");
    }
    if let Some(v) = sys.boot_time {
        let _ = writeln!(out, "btime {v}");
    }
    if let Some(v) = sys.forks {
        let _ = writeln!(out, "processes {v}");
    }
    if let Some(v) = sys.nr_running {
        let _ = writeln!(out, "procs_running {v}");
    }
    if let Some(v) = sys.procs_blocked {
        let _ = writeln!(out, "procs_blocked {v}");
    }
    out
}

/// `/proc/swaps` (mm/swapfile.c `swap_show`).
pub(super) fn swaps(s: &GuestSnapshot) -> String {
    let mut out = String::from("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n");
    for sw in &s.system.swaps {
        let name = escape(&sw.filename);
        let pad = if name.len() < 40 { 40 - name.len() } else { 1 };
        let kind = if sw.kind == "partition" { "partition" } else { "file\t" };
        let _ = writeln!(
            out,
            "{name}{:pad$}{kind}\t{}\t{}{}\t{}{}",
            "",
            sw.size_kb,
            if sw.size_kb < 10_000_000 { "\t" } else { "" },
            sw.used_kb,
            if sw.used_kb < 10_000_000 { "\t" } else { "" },
            sw.priority
        );
    }
    out
}
