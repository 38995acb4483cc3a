//! The per-task files that format a task's fields: `/proc/PID/stat` and `/proc/PID/status`.

use std::fmt::Write as _;

use introspect::linux::Task;

/// `proc_task_name()`'s escaping of a command name (`seq_escape_str` with `ESCAPE_SPACE |
/// ESCAPE_SPECIAL`, only `"\n\\"`): C-style, `\n` and `\\`, not octal.
pub(super) fn escape_comm(comm: &str) -> String {
    comm.replace('\\', "\\\\").replace('\n', "\\n")
}

/// `/proc/PID/stat` and `/proc/PID/task/TID/stat` (fs/proc/array.c `do_task_stat`, of the
/// whole group or of one thread, as the snapshot computed the task's detail) as a reader with
/// ptrace access to the task (root) sees it; `threads` is the group's count. Fields 1-4
/// always; the other 48 only with the task's detail: positional fields cannot be skipped,
/// and none is made up.
pub(super) fn task_stat(t: &Task, threads: usize) -> String {
    let mut out = format!("{} ({}) {} {}", t.pid, t.comm, t.state, t.ppid);
    if let Some(d) = &t.detail {
        // Signal fields are "obsolete ... decimal for Linux 2.0 compatibility": the first 31.
        let old_sigs = |set: u64| set & 0x7fff_ffff;
        let fields: [&dyn std::fmt::Display; 48] = [
            &d.pgrp,
            &d.session,
            &d.tty_nr,
            &d.tpgid,
            &d.flags,
            &d.minflt,
            &d.cminflt,
            &d.majflt,
            &d.cmajflt,
            &d.utime,
            &d.stime,
            &d.cutime,
            &d.cstime,
            &d.priority,
            &d.nice,
            &threads,
            // itrealvalue: always 0 since 2.6.17.
            &0,
            &d.start_time,
            &d.vsize,
            &d.rss_pages,
            &d.rsslim,
            &d.code.0,
            &d.code.1,
            &d.start_stack,
            &d.kstkesp,
            &d.kstkeip,
            &old_sigs(d.sig_pending),
            &old_sigs(d.sig_blocked),
            &old_sigs(d.sig_ignored),
            &old_sigs(d.sig_caught),
            &u8::from(d.wchan),
            // nswap, cnswap: never maintained, always 0.
            &0,
            &0,
            &d.exit_signal,
            &d.processor,
            &d.rt_priority,
            &d.policy,
            &d.delayacct_blkio_ticks,
            &d.guest_time,
            &d.cguest_time,
            &d.data.0,
            &d.data.1,
            &d.start_brk,
            &d.arg.0,
            &d.arg.1,
            &d.env.0,
            &d.env.1,
            &d.exit_code,
        ];
        for f in fields {
            let _ = write!(out, " {f}");
        }
    }
    out.push('\n');
    out
}

pub(super) fn state_name(state: char) -> &'static str {
    match state {
        'R' => "R (running)",
        'S' => "S (sleeping)",
        'D' => "D (disk sleep)",
        'T' => "T (stopped)",
        't' => "t (tracing stop)",
        'X' => "X (dead)",
        'Z' => "Z (zombie)",
        'P' => "P (parked)",
        'I' => "I (idle)",
        _ => "? (unknown)",
    }
}

/// `/proc/PID/status` (fs/proc/array.c `proc_pid_status`): the lines the snapshot has, in the
/// kernel's order; `threads` is the group's count.
pub(super) fn task_status(t: &Task, threads: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Name:\t{}", escape_comm(&t.comm));
    if let Some(u) = t.detail.as_ref().and_then(|d| d.umask) {
        let _ = writeln!(out, "Umask:\t{u:04o}");
    }
    let _ = writeln!(out, "State:\t{}", state_name(t.state));
    let _ = writeln!(out, "Tgid:\t{}", t.tgid);
    let _ = writeln!(out, "Pid:\t{}", t.pid);
    let _ = writeln!(out, "PPid:\t{}", t.ppid);
    let Some(d) = &t.detail else {
        return out;
    };
    let _ = writeln!(out, "Uid:\t{}\t{}\t{}\t{}", t.uid, d.euid, d.suid, d.fsuid);
    let _ = writeln!(out, "Gid:\t{}\t{}\t{}\t{}", t.gid, d.egid, d.sgid, d.fsgid);
    out.push_str("Groups:\t");
    for g in &d.groups {
        let _ = write!(out, "{g} ");
    }
    out.push('\n');
    for (name, kb) in &d.vm {
        let _ = writeln!(out, "{name}:\t{kb:>8} kB");
    }
    if threads > 0 {
        let _ = writeln!(out, "Threads:\t{threads}");
    }
    let _ = writeln!(out, "SigBlk:\t{:016x}", d.sig_blocked);
    let _ = writeln!(out, "SigIgn:\t{:016x}", d.sig_ignored);
    let _ = writeln!(out, "SigCgt:\t{:016x}", d.sig_caught);
    for (name, v) in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"].iter().zip(d.caps) {
        let _ = writeln!(out, "{name}:\t{v:016x}");
    }
    out
}
