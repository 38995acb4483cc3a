//! What `/proc/PID/stat` and `/proc/PID/status` show of a thread group (and
//! `/proc/PID/task/TID/*` of one thread), computed the
//! way fs/proc/array.c (`do_task_stat`, `proc_pid_status`) and fs/proc/task_mmu.c
//! (`task_mem`) compute it, from the task's credentials, signal, mm and fs structures.

use super::extract::{DetailContext, ExtractError, KernelView, PF_KTHREAD};
use super::layout::{MountLayout, TaskDetailLayout, TaskLayout};
use super::reader::KernelReader;
use super::snapshot::TaskDetail;

type Result<T> = std::result::Result<T, ExtractError>;

/// `MAX_RT_PRIO` and `DEFAULT_PRIO`: `task_prio()` and `task_nice()` offsets.
const MAX_RT_PRIO: i32 = 100;
const DEFAULT_PRIO: i32 = 120;
/// USER_HZ is 100 on every architecture dormouse reads: `nsec_to_clock_t` divides by this.
const NSEC_PER_USER_TICK: u64 = 10_000_000;
const PAGE_SHIFT: u32 = 12;
/// `NGROUPS_MAX`: a larger `group_info.ngroups` is corrupt.
const NGROUPS_MAX: i32 = 65536;
/// `_NSIG`: the size of `sighand_struct.action[]`.
const NSIG: u64 = 64;
/// A `struct k_sigaction` this large is not one (it is 32 bytes on x86-64).
const MAX_SIGACTION_SIZE: u64 = 256;
const SIG_DFL: u64 = 0;
const SIG_IGN: u64 = 1;
/// `signal_struct.flags` under which stat shows the group's exit code: SIGNAL_STOP_STOPPED,
/// SIGNAL_GROUP_EXIT.
const SIGNAL_STOP_STOPPED: u32 = 0x1;
const SIGNAL_GROUP_EXIT: u32 = 0x4;
/// `task_struct.flags` PF_EXITING and PF_DUMPCORE: only then does stat show kstkeip/kstkesp.
const PF_EXITING: u32 = 0x4;
const PF_DUMPCORE: u32 = 0x200;
/// x86-64 THREAD_SIZE (16 KiB without KASAN); `task_pt_regs()` sits just below its top.
const THREAD_SIZE: u64 = 16 * 1024;

/// One live thread's counters: `do_task_stat` sums them over the group, or shows a thread's own.
struct ThreadCounters {
    min_flt: u64,
    maj_flt: u64,
    utime: u64,
    stime: u64,
    runtime: u64,
    gtime: u64,
}

impl KernelView<'_> {
    pub(super) fn detail_context(&self) -> Result<DetailContext> {
        let l = TaskDetailLayout::resolve(self.types)?;
        let paths = MountLayout::resolve(self.types).ok().and_then(|m| {
            let root = self.init_root(&m).ok()?;
            Some((m, root))
        });
        Ok(DetailContext { l, paths })
    }

    /// The detail of the task at `task`: of its whole thread group as `/proc/PID/stat` shows
    /// a leader (`whole`), or of the thread alone as `/proc/PID/task/TID/stat` shows it.
    /// `flags` and `mm` were read by the task walk, which also sets `wchan` from the state it
    /// resolved. Failures to name a path become `warnings`, not a lost detail. With `whole`,
    /// also returns the group's live threads' `task_struct`s, leader first.
    ///
    /// Stat is computed as a reader with ptrace access sees it (`permitted` in
    /// `do_task_stat`, true for root): addresses, wchan and exit_code are shown.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn task_detail(
        &self,
        c: &DetailContext,
        tl: &TaskLayout,
        task: u64,
        flags: u32,
        mm: u64,
        whole: bool,
        warnings: &mut Vec<String>,
    ) -> Result<(TaskDetail, Vec<u64>)> {
        let l = &c.l;
        let r = self.reader();
        let at = |off: u64| task.wrapping_add(off);
        // get_task_mm(): a kernel thread borrowing an mm (kthread_use_mm) shows none.
        let mm = if flags & PF_KTHREAD != 0 { 0 } else { mm };
        let cred = r.u64(at(l.cred), "task_struct.cred")?;
        let ids = |offs: &[u64; 4], what: &str| -> Result<[u32; 4]> {
            let mut out = [0; 4];
            for (v, off) in out.iter_mut().zip(offs) {
                *v = r.u32(cred.wrapping_add(*off), what)?;
            }
            Ok(out)
        };
        let uids = ids(&l.cred_uids, "cred uids")?;
        let gids = ids(&l.cred_gids, "cred gids")?;
        let mut caps = [0; 5];
        for (cap, off) in caps.iter_mut().zip(&l.cred_caps) {
            // kernel_cap_t is `u32 cap[2]` (≤ 6.2) or `u64 val`: the same 8 little-endian bytes.
            *cap = r.u64(cred.wrapping_add(*off), "cred capabilities")?;
        }
        let groups = self.groups(l, cred)?;
        let fs = r.u64(at(l.fs), "task_struct.fs")?;
        // An exited task has no fs; status then prints no Umask line.
        let umask = match fs {
            0 => None,
            fs => Some(r.u32(fs.wrapping_add(l.fs_umask), "fs_struct.umask")?),
        };

        // do_task_stat reads the signal-side fields only under lock_task_sighand(), which
        // fails for a task already released (no sighand): those then print as zero / -1.
        let signal = r.u64(at(l.signal), "task_struct.signal")?;
        let sighand = r.u64(at(l.sighand), "task_struct.sighand")?;
        // do_task_stat reads `task->exit_code` first; the group's code may replace it below.
        let exit_code = r.i32(at(l.exit_code), "task_struct.exit_code")?;
        let mut d = TaskDetail {
            euid: uids[1],
            suid: uids[2],
            fsuid: uids[3],
            egid: gids[1],
            sgid: gids[2],
            fsgid: gids[3],
            groups,
            umask,
            // do_task_stat's values when lock_task_sighand() fails.
            pgrp: -1,
            session: -1,
            tpgid: -1,
            flags,
            exit_code,
            caps,
            ..Default::default()
        };
        let mut group = Vec::new();
        if signal != 0 && sighand != 0 {
            group = self.signal_side(l, tl, task, signal, whole, &mut d)?;
            let (ignored, caught) = self.sigign_sigcatch(l, sighand)?;
            d.sig_ignored = ignored;
            d.sig_caught = caught;
        }
        if !whole {
            // A thread's own counters, read outside the sighand lock as do_task_stat does.
            let t = self.thread_counters(l, task)?;
            let prev = (
                r.u64(at(l.prev_utime), "task_struct.prev_cputime.utime")?,
                r.u64(at(l.prev_stime), "task_struct.prev_cputime.stime")?,
            );
            let (ut, st) = cputime_adjust(t.utime, t.stime, t.runtime, prev);
            d.minflt = t.min_flt;
            d.majflt = t.maj_flt;
            d.utime = ut / NSEC_PER_USER_TICK;
            d.stime = st / NSEC_PER_USER_TICK;
            d.guest_time = t.gtime / NSEC_PER_USER_TICK;
        }
        d.sig_blocked = r.u64(at(l.blocked), "task_struct.blocked")?;
        d.sig_pending = r.u64(at(l.pending), "task_struct.pending.signal")?;
        d.rt_priority = r.u32(at(l.rt_priority), "task_struct.rt_priority")?;
        d.policy = r.u32(at(l.policy), "task_struct.policy")?;
        if let Some((delays, blkio)) = l.delays {
            let info = r.u64(at(delays), "task_struct.delays")?;
            if info != 0 {
                d.delayacct_blkio_ticks =
                    r.u64(info.wrapping_add(blkio), "task_delay_info.blkio_delay")? / NSEC_PER_USER_TICK;
            }
        }
        d.priority = r.i32(at(l.prio), "task_struct.prio")?.wrapping_sub(MAX_RT_PRIO);
        d.nice = r
            .i32(at(l.static_prio), "task_struct.static_prio")?
            .wrapping_sub(DEFAULT_PRIO);
        d.start_time = r.u64(at(l.start_boottime), "task_struct.start_boottime")? / NSEC_PER_USER_TICK;
        d.exit_signal = r.i32(at(l.exit_signal), "task_struct.exit_signal")?;
        d.processor = r.u32(at(l.cpu), "task_struct cpu")?;
        if mm != 0 {
            self.mm_detail(l, mm, &mut d)?;
            if flags & (PF_EXITING | PF_DUMPCORE) != 0 {
                (d.kstkeip, d.kstkesp) = self.user_ip_sp(l, task)?;
            }
        }

        if let Some((ml, root)) = &c.paths {
            let mut path = |base: u64, what: &str| -> Option<String> {
                let vfs = r.u64(base.wrapping_add(ml.path_mnt), what).ok()?;
                let dentry = r.u64(base.wrapping_add(ml.path_dentry), what).ok()?;
                self.prepend_path(ml, vfs, dentry, *root)
                    .map_err(|e| warnings.push(format!("pid {}: {what}: {e}", d_pid(&r, tl, task))))
                    .ok()
                    .flatten()
            };
            if fs != 0 {
                d.root = path(fs.wrapping_add(l.fs_root), "fs_struct.root");
                d.cwd = path(fs.wrapping_add(l.fs_pwd), "fs_struct.pwd");
            }
            if mm != 0 {
                let exe = r.u64(mm.wrapping_add(l.mm.exe_file), "mm_struct.exe_file")?;
                if exe != 0 {
                    d.exe = path(exe.wrapping_add(l.file_path), "mm_struct.exe_file->f_path");
                }
            }
        }
        Ok((d, group))
    }

    /// Supplementary groups (`cred->group_info`), as status prints them.
    fn groups(&self, l: &TaskDetailLayout, cred: u64) -> Result<Vec<u32>> {
        let r = self.reader();
        let gi = r.u64(cred.wrapping_add(l.cred_group_info), "cred.group_info")?;
        if gi == 0 {
            return Ok(Vec::new());
        }
        let n = r.i32(gi.wrapping_add(l.group_info_ngroups), "group_info.ngroups")?;
        if !(0..=NGROUPS_MAX).contains(&n) {
            return Err(ExtractError::Invalid(format!(
                "group_info at {gi:#x} claims {n} groups"
            )));
        }
        let bytes = r.bytes(gi.wrapping_add(l.group_info_gid), n as usize * 4, "group_info.gid")?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// The fields `do_task_stat` reads under the sighand lock; with `whole` (`/proc/PID/stat`
    /// of a leader) also the sums over the thread group and the group's exit code, and the
    /// group's live threads are returned, leader first (empty without `whole`).
    fn signal_side(
        &self,
        l: &TaskDetailLayout,
        tl: &TaskLayout,
        task: u64,
        signal: u64,
        whole: bool,
        d: &mut TaskDetail,
    ) -> Result<Vec<u64>> {
        let r = self.reader();
        let sig = |off: u64| signal.wrapping_add(off);
        d.pgrp = self.pid_nr(l, r.u64(sig(l.signal_pgid), "signal_struct.pids[PIDTYPE_PGID]")?)?;
        d.session = self.pid_nr(l, r.u64(sig(l.signal_sid), "signal_struct.pids[PIDTYPE_SID]")?)?;
        let tty = r.u64(sig(l.signal_tty), "signal_struct.tty")?;
        if tty != 0 {
            let driver = r.u64(tty.wrapping_add(l.tty_driver), "tty_struct.driver")?;
            let major = r.u32(driver.wrapping_add(l.driver_major), "tty_driver.major")?;
            let minor_start = r.u32(driver.wrapping_add(l.driver_minor_start), "tty_driver.minor_start")?;
            let index = r.u32(tty.wrapping_add(l.tty_index), "tty_struct.index")?;
            // tty_devnum(): MKDEV(major, minor_start) + index, a kernel dev_t (20 minor bits).
            let dev = (major << 20).wrapping_add(minor_start).wrapping_add(index);
            d.tty_nr = new_encode_dev(dev);
            d.tpgid = self.pid_nr(l, r.u64(tty.wrapping_add(l.tty_pgrp), "tty pgrp")?)?;
        }
        d.cminflt = r.u64(sig(l.signal_cmin_flt), "signal_struct.cmin_flt")?;
        d.cmajflt = r.u64(sig(l.signal_cmaj_flt), "signal_struct.cmaj_flt")?;
        d.cutime = r.u64(sig(l.signal_cutime), "signal_struct.cutime")? / NSEC_PER_USER_TICK;
        d.cstime = r.u64(sig(l.signal_cstime), "signal_struct.cstime")? / NSEC_PER_USER_TICK;
        d.cguest_time = r.u64(sig(l.signal_cgtime), "signal_struct.cgtime")? / NSEC_PER_USER_TICK;
        d.rsslim = r.u64(sig(l.signal_rss_limit), "signal_struct.rlim[RLIMIT_RSS]")?;
        if !whole {
            return Ok(Vec::new());
        }
        // The group's live threads, leader first (copy_signal() starts thread_head with it).
        let mut group = r.list(
            sig(l.signal_thread_head),
            l.task_thread_node,
            "signal_struct.thread_head",
        )?;
        if group.is_empty() {
            // A zombie leader whose threads are gone is still itself.
            group.push(task);
        }
        let mut live = Vec::new();
        for t in &group {
            d.threads.push(r.i32(t.wrapping_add(tl.pid), "task_struct.pid")?);
            live.push(self.thread_counters(l, *t)?);
        }
        let sum = |f: fn(&ThreadCounters) -> u64, dead: u64| live.iter().map(f).fold(dead, u64::wrapping_add);
        d.minflt = sum(|t| t.min_flt, r.u64(sig(l.signal_min_flt), "signal_struct.min_flt")?);
        d.majflt = sum(|t| t.maj_flt, r.u64(sig(l.signal_maj_flt), "signal_struct.maj_flt")?);
        // task_gtime() is `gtime` itself unless vtime accounting runs on a nohz_full CPU.
        let gtime = sum(|t| t.gtime, r.u64(sig(l.signal_gtime), "signal_struct.gtime")?);
        d.guest_time = gtime / NSEC_PER_USER_TICK;
        let group_flags = r.u32(sig(l.signal_flags), "signal_struct.flags")?;
        if group_flags & (SIGNAL_GROUP_EXIT | SIGNAL_STOP_STOPPED) != 0 {
            d.exit_code = r.i32(sig(l.signal_group_exit_code), "signal_struct.group_exit_code")?;
        }
        // thread_group_cputime(): exited threads' times are folded into the signal struct.
        let utime = sum(|t| t.utime, r.u64(sig(l.signal_utime), "signal_struct.utime")?);
        let stime = sum(|t| t.stime, r.u64(sig(l.signal_stime), "signal_struct.stime")?);
        let rtime = sum(
            |t| t.runtime,
            r.u64(sig(l.signal_sum_sched_runtime), "signal_struct.sum_sched_runtime")?,
        );
        let prev = (
            r.u64(sig(l.signal_prev_utime), "signal_struct.prev_cputime.utime")?,
            r.u64(sig(l.signal_prev_stime), "signal_struct.prev_cputime.stime")?,
        );
        let (ut, st) = cputime_adjust(utime, stime, rtime, prev);
        d.utime = ut / NSEC_PER_USER_TICK;
        d.stime = st / NSEC_PER_USER_TICK;
        Ok(group)
    }

    fn thread_counters(&self, l: &TaskDetailLayout, t: u64) -> Result<ThreadCounters> {
        let r = self.reader();
        let at = |off: u64| t.wrapping_add(off);
        Ok(ThreadCounters {
            min_flt: r.u64(at(l.min_flt), "task_struct.min_flt")?,
            maj_flt: r.u64(at(l.maj_flt), "task_struct.maj_flt")?,
            utime: r.u64(at(l.utime), "task_struct.utime")?,
            stime: r.u64(at(l.stime), "task_struct.stime")?,
            runtime: r.u64(at(l.sum_exec_runtime), "task_struct.se.sum_exec_runtime")?,
            gtime: r.u64(at(l.gtime), "task_struct.gtime")?,
        })
    }

    /// `pid_nr_ns(pid, &init_pid_ns)`: the number in the initial namespace, 0 for no pid.
    fn pid_nr(&self, l: &TaskDetailLayout, pid: u64) -> Result<i32> {
        if pid == 0 {
            return Ok(0);
        }
        Ok(self.reader().i32(pid.wrapping_add(l.pid_nr), "pid.numbers[0].nr")?)
    }

    /// `collect_sigign_sigcatch()`: bit `n-1` for each signal `n` ignored or handled.
    fn sigign_sigcatch(&self, l: &TaskDetailLayout, sighand: u64) -> Result<(u64, u64)> {
        if l.sigaction_size == 0
            || l.sigaction_size > MAX_SIGACTION_SIZE
            || l.sa_handler.saturating_add(8) > l.sigaction_size
        {
            return Err(ExtractError::Invalid(format!(
                "struct k_sigaction of {} bytes with sa_handler at {}",
                l.sigaction_size, l.sa_handler
            )));
        }
        let actions = self.reader().bytes(
            sighand.wrapping_add(l.sighand_action),
            (NSIG * l.sigaction_size) as usize,
            "sighand_struct.action",
        )?;
        let (mut ignored, mut caught) = (0u64, 0u64);
        for (bit, action) in actions.chunks_exact(l.sigaction_size as usize).enumerate() {
            let at = l.sa_handler as usize;
            let handler = u64::from_le_bytes(action[at..at + 8].try_into().unwrap_or([0; 8]));
            match handler {
                SIG_IGN => ignored |= 1 << bit,
                SIG_DFL => {}
                _ => caught |= 1 << bit,
            }
        }
        Ok((ignored, caught))
    }

    /// `task_vsize()`, `get_mm_rss()` and `task_mem()`'s Vm* lines.
    fn mm_detail(&self, l: &TaskDetailLayout, mm: u64, d: &mut TaskDetail) -> Result<()> {
        let r = self.reader();
        let m = &l.mm;
        let field = |off: u64, what: &str| r.u64(mm.wrapping_add(off), what);
        // get_mm_counter(): per-task caches may leave the shared counter briefly negative.
        let counter = |i: u64, what: &str| -> Result<u64> {
            let v = r.u64(
                mm.wrapping_add(m.rss_stat).wrapping_add(i.wrapping_mul(m.rss_stride)),
                what,
            )?;
            Ok((v as i64).max(0) as u64)
        };
        let anon = counter(m.rss_anon, "mm rss_stat MM_ANONPAGES")?;
        let file = counter(m.rss_file, "mm rss_stat MM_FILEPAGES")?;
        let shmem = counter(m.rss_shmem, "mm rss_stat MM_SHMEMPAGES")?;
        let swap = counter(m.rss_swap, "mm rss_stat MM_SWAPENTS")?;
        let total_vm = field(m.total_vm, "mm_struct.total_vm")?;
        let total_rss = anon.wrapping_add(file).wrapping_add(shmem);
        let start_code = field(m.start_code, "mm_struct.start_code")?;
        let end_code = field(m.end_code, "mm_struct.end_code")?;
        let exec_bytes = field(m.exec_vm, "mm_struct.exec_vm")?.wrapping_shl(PAGE_SHIFT);
        // Executable mappings split into the program's text and the rest (libraries).
        let text = (end_code.wrapping_add(0xfff) & !0xfff)
            .wrapping_sub(start_code & !0xfff)
            .min(exec_bytes);
        let kb = |pages: u64| pages.wrapping_shl(PAGE_SHIFT - 10);
        d.vsize = total_vm.wrapping_shl(PAGE_SHIFT);
        d.rss_pages = total_rss;
        d.code = (start_code, end_code);
        d.start_stack = field(m.start_stack, "mm_struct.start_stack")?;
        let [start_data, end_data, start_brk, arg_start, arg_end, env_start, env_end] = m.stat_tail;
        d.data = (
            field(start_data, "mm_struct.start_data")?,
            field(end_data, "mm_struct.end_data")?,
        );
        d.start_brk = field(start_brk, "mm_struct.start_brk")?;
        d.arg = (
            field(arg_start, "mm_struct.arg_start")?,
            field(arg_end, "mm_struct.arg_end")?,
        );
        d.env = (
            field(env_start, "mm_struct.env_start")?,
            field(env_end, "mm_struct.env_end")?,
        );
        d.vm = vec![
            (
                "VmPeak".into(),
                kb(total_vm.max(field(m.hiwater_vm, "mm_struct.hiwater_vm")?)),
            ),
            ("VmSize".into(), kb(total_vm)),
            ("VmLck".into(), kb(field(m.locked_vm, "mm_struct.locked_vm")?)),
            ("VmPin".into(), kb(field(m.pinned_vm, "mm_struct.pinned_vm")?)),
            (
                "VmHWM".into(),
                kb(total_rss.max(field(m.hiwater_rss, "mm_struct.hiwater_rss")?)),
            ),
            ("VmRSS".into(), kb(total_rss)),
            ("RssAnon".into(), kb(anon)),
            ("RssFile".into(), kb(file)),
            ("RssShmem".into(), kb(shmem)),
            ("VmData".into(), kb(field(m.data_vm, "mm_struct.data_vm")?)),
            ("VmStk".into(), kb(field(m.stack_vm, "mm_struct.stack_vm")?)),
            ("VmExe".into(), text >> 10),
            ("VmLib".into(), exec_bytes.wrapping_sub(text) >> 10),
            (
                "VmPTE".into(),
                field(m.pgtables_bytes, "mm_struct.pgtables_bytes")? >> 10,
            ),
            ("VmSwap".into(), kb(swap)),
        ];
        if let Some(off) = m.hugetlb_usage {
            d.vm.push(("HugetlbPages".into(), kb(field(off, "mm_struct.hugetlb_usage")?)));
        }
        Ok(())
    }
}

impl KernelView<'_> {
    /// `KSTK_EIP()`/`KSTK_ESP()`: the user registers saved in `task_pt_regs()`, or zeros when
    /// the kernel has no x86-64 `pt_regs` or the stack is already freed (`try_get_task_stack()`
    /// fails).
    fn user_ip_sp(&self, l: &TaskDetailLayout, task: u64) -> Result<(u64, u64)> {
        let Some(u) = &l.user_regs else { return Ok((0, 0)) };
        let r = self.reader();
        let stack = r.u64(task.wrapping_add(u.stack), "task_struct.stack")?;
        if stack == 0 {
            return Ok((0, 0));
        }
        let regs = stack.wrapping_add(THREAD_SIZE).wrapping_sub(u.pt_regs_size);
        Ok((
            r.u64(regs.wrapping_add(u.ip), "pt_regs.ip")?,
            r.u64(regs.wrapping_add(u.sp), "pt_regs.sp")?,
        ))
    }
}

fn d_pid(r: &KernelReader, tl: &TaskLayout, task: u64) -> i32 {
    r.i32(task.wrapping_add(tl.pid), "task_struct.pid").unwrap_or(-1)
}

/// `new_encode_dev()`: the 32-bit device number userspace sees.
fn new_encode_dev(dev: u32) -> u32 {
    let (major, minor) = (dev >> 20, dev & 0xfffff);
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// `cputime_adjust()` of kernel/sched/cputime.c without its write-back: scales the sampled
/// user/system split to the precise runtime, never going below what was reported before
/// (`prev`). Returns (utime, stime) in nanoseconds.
fn cputime_adjust(utime: u64, stime: u64, rtime: u64, prev: (u64, u64)) -> (u64, u64) {
    let (prev_utime, prev_stime) = prev;
    if prev_stime.saturating_add(prev_utime) >= rtime {
        return prev;
    }
    let mut st = if stime == 0 {
        0
    } else if utime == 0 {
        rtime
    } else {
        let scaled = stime as u128 * rtime as u128 / (stime as u128 + utime as u128);
        (scaled.min(rtime as u128)) as u64
    };
    st = st.max(prev_stime);
    let mut ut = rtime.saturating_sub(st);
    if ut < prev_utime {
        ut = prev_utime;
        st = rtime.saturating_sub(ut);
    }
    (ut, st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tty_numbers_encode_like_new_encode_dev() {
        // /dev/ttyS0 is 4:64, /dev/pts/3 is 136:3; stat prints 1088 and 34819.
        assert_eq!(new_encode_dev((4 << 20) | 64), 1088);
        assert_eq!(new_encode_dev((136 << 20) | 3), 34819);
        // Minors above 255 move to the high bits.
        assert_eq!(new_encode_dev((136 << 20) | 0x123), (0x23 | (136 << 8) | (0x100 << 12)));
    }

    #[test]
    fn cputime_is_scaled_to_the_runtime_and_never_goes_back() {
        // Ticks saw 3:1 user:system, the scheduler measured 8 units of runtime.
        assert_eq!(cputime_adjust(30, 10, 8, (0, 0)), (6, 2));
        assert_eq!(cputime_adjust(0, 10, 8, (0, 0)), (0, 8));
        assert_eq!(cputime_adjust(10, 0, 8, (0, 0)), (8, 0));
        // Already reported more than the runtime: the previous values stand.
        assert_eq!(cputime_adjust(30, 10, 8, (5, 4)), (5, 4));
        // Scaled stime below the reported one is lifted, utime takes the rest.
        assert_eq!(cputime_adjust(30, 10, 10, (1, 5)), (5, 5));
    }
}
