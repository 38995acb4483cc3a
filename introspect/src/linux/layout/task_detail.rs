//! What `/proc/PID/{stat,status,...}` show of a task beyond the task list's own fields.

use super::{LayoutError, Resolver, TypeInfo};

/// `RLIMIT_RSS`: the index of `signal_struct.rlim[]` stat's rsslim comes from (asm-generic,
/// which x86 uses; a #define, so not in BTF).
const RLIMIT_RSS: u64 = 5;

/// What `/proc/PID/{stat,status}` show of a task beyond the task list's own fields.
#[derive(Debug, Clone)]
pub struct TaskDetailLayout {
    /// `task_struct.cred`: the credentials `/proc/PID/status` prints (not `real_cred`).
    pub cred: u64,
    /// `cred.{uid,euid,suid,fsuid}` and the same for gids.
    pub cred_uids: [u64; 4],
    pub cred_gids: [u64; 4],
    pub cred_group_info: u64,
    pub group_info_ngroups: u64,
    pub group_info_gid: u64,
    /// `cred.cap_{inheritable,permitted,effective,bset,ambient}`.
    pub cred_caps: [u64; 5],
    pub fs: u64,
    pub fs_umask: u64,
    pub fs_root: u64,
    pub fs_pwd: u64,
    pub signal: u64,
    pub sighand: u64,
    /// `signal_struct.pids[PIDTYPE_PGID]` and `[PIDTYPE_SID]`.
    pub signal_pgid: u64,
    pub signal_sid: u64,
    /// `pid.numbers[0].nr`: the number in the initial pid namespace.
    pub pid_nr: u64,
    pub signal_tty: u64,
    pub signal_nr_threads: u64,
    pub signal_thread_head: u64,
    pub task_thread_node: u64,
    pub signal_utime: u64,
    pub signal_stime: u64,
    pub signal_sum_sched_runtime: u64,
    pub signal_min_flt: u64,
    pub signal_maj_flt: u64,
    pub signal_prev_utime: u64,
    pub signal_prev_stime: u64,
    /// Dead children's totals (`cmin_flt`, `cmaj_flt`, `cutime`, `cstime`, `cgtime`) and the
    /// group's exited threads' guest time.
    pub signal_cmin_flt: u64,
    pub signal_cmaj_flt: u64,
    pub signal_cutime: u64,
    pub signal_cstime: u64,
    pub signal_cgtime: u64,
    pub signal_gtime: u64,
    /// `signal_struct.rlim[RLIMIT_RSS].rlim_cur`.
    pub signal_rss_limit: u64,
    pub signal_flags: u64,
    pub signal_group_exit_code: u64,
    pub tty_driver: u64,
    pub tty_index: u64,
    /// `tty_struct.ctrl.pgrp` (5.16+) or `tty_struct.pgrp`.
    pub tty_pgrp: u64,
    pub driver_major: u64,
    pub driver_minor_start: u64,
    pub utime: u64,
    pub stime: u64,
    pub sum_exec_runtime: u64,
    pub min_flt: u64,
    pub maj_flt: u64,
    pub gtime: u64,
    /// `task_struct.prev_cputime.{utime,stime}`: what a thread's own stat last reported.
    pub prev_utime: u64,
    pub prev_stime: u64,
    pub rt_priority: u64,
    pub policy: u64,
    pub exit_code: u64,
    /// `task_struct.pending.signal`: the thread's own pending set stat prints.
    pub pending: u64,
    /// `task_struct.delays` and `task_delay_info.blkio_delay`, with CONFIG_TASK_DELAY_ACCT.
    pub delays: Option<(u64, u64)>,
    /// Where an exiting or dumping task's user registers are, for stat's kstkeip/kstkesp.
    pub user_regs: Option<UserRegsLayout>,
    pub prio: u64,
    pub static_prio: u64,
    pub start_boottime: u64,
    pub exit_signal: u64,
    /// `task_struct.thread_info.cpu` (THREAD_INFO_IN_TASK) or `task_struct.cpu`.
    pub cpu: u64,
    pub blocked: u64,
    pub sighand_action: u64,
    pub sigaction_size: u64,
    pub sa_handler: u64,
    pub mm: MmLayout,
    pub file_path: u64,
}

/// x86-64 `task_pt_regs()`: the user `pt_regs` at the top of the task's kernel stack.
#[derive(Debug, Clone)]
pub struct UserRegsLayout {
    /// `task_struct.stack`: the stack's lowest address.
    pub stack: u64,
    pub pt_regs_size: u64,
    pub ip: u64,
    pub sp: u64,
}

/// The `mm_struct` counters behind `VmSize`, `VmRSS`, ... and stat's vsize/rss.
#[derive(Debug, Clone)]
pub struct MmLayout {
    pub total_vm: u64,
    pub hiwater_vm: u64,
    pub hiwater_rss: u64,
    pub locked_vm: u64,
    pub pinned_vm: u64,
    pub data_vm: u64,
    pub stack_vm: u64,
    pub exec_vm: u64,
    pub start_code: u64,
    pub end_code: u64,
    pub start_stack: u64,
    /// Stat fields 45-51, in that order: `start_data`, `end_data`, `start_brk`, `arg_start`,
    /// `arg_end`, `env_start`, `env_end`.
    pub stat_tail: [u64; 7],
    pub pgtables_bytes: u64,
    pub hugetlb_usage: Option<u64>,
    pub exe_file: u64,
    /// Where counter `i` of `rss_stat` sits: `rss_stat + i * rss_stride` (an `atomic_long_t`
    /// array ≤ 6.1, `percpu_counter`s whose `count` is read since 6.2).
    pub rss_stat: u64,
    pub rss_stride: u64,
    /// `MM_FILEPAGES`, `MM_ANONPAGES`, `MM_SWAPENTS`, `MM_SHMEMPAGES`.
    pub rss_file: u64,
    pub rss_anon: u64,
    pub rss_swap: u64,
    pub rss_shmem: u64,
}

impl TaskDetailLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "/proc/PID/stat and status",
        };
        let id = |which: &str| -> Result<[u64; 4], LayoutError> {
            Ok([
                r.off("cred", which)?,
                r.off("cred", &format!("e{which}"))?,
                r.off("cred", &format!("s{which}"))?,
                r.off("cred", &format!("fs{which}"))?,
            ])
        };
        let signal_pids = r.off("signal_struct", "pids")?;
        let prev_cputime = r.off("signal_struct", "prev_cputime")?;
        let tty_pgrp = types
            .member_offset("tty_struct", "ctrl.pgrp")
            .or_else(|| types.member_offset("tty_struct", "pgrp"))
            .ok_or_else(|| r.missing("tty_struct", "ctrl.pgrp"))?;
        let rlim = r.off("signal_struct", "rlim")?;
        let user_regs = (|| {
            Some(UserRegsLayout {
                stack: types.member_offset("task_struct", "stack")?,
                pt_regs_size: types.struct_size("pt_regs")?,
                ip: types.member_offset("pt_regs", "ip")?,
                sp: types.member_offset("pt_regs", "sp")?,
            })
        })();
        let delays = types
            .member_offset("task_struct", "delays")
            .zip(types.member_offset("task_delay_info", "blkio_delay"));
        let cpu = types
            .member_offset("task_struct", "thread_info.cpu")
            .or_else(|| types.member_offset("task_struct", "cpu"))
            .ok_or_else(|| r.missing("task_struct", "thread_info.cpu"))?;
        Ok(Self {
            cred: r.off("task_struct", "cred")?,
            cred_uids: id("uid")?,
            cred_gids: id("gid")?,
            cred_group_info: r.off("cred", "group_info")?,
            group_info_ngroups: r.off("group_info", "ngroups")?,
            group_info_gid: r.off("group_info", "gid")?,
            cred_caps: [
                r.off("cred", "cap_inheritable")?,
                r.off("cred", "cap_permitted")?,
                r.off("cred", "cap_effective")?,
                r.off("cred", "cap_bset")?,
                r.off("cred", "cap_ambient")?,
            ],
            fs: r.off("task_struct", "fs")?,
            fs_umask: r.off("fs_struct", "umask")?,
            fs_root: r.off("fs_struct", "root")?,
            fs_pwd: r.off("fs_struct", "pwd")?,
            signal: r.off("task_struct", "signal")?,
            sighand: r.off("task_struct", "sighand")?,
            signal_pgid: signal_pids.wrapping_add(8 * r.index("pid_type", "PIDTYPE_PGID")?),
            signal_sid: signal_pids.wrapping_add(8 * r.index("pid_type", "PIDTYPE_SID")?),
            pid_nr: r.off("pid", "numbers")?.wrapping_add(r.off("upid", "nr")?),
            signal_tty: r.off("signal_struct", "tty")?,
            signal_nr_threads: r.off("signal_struct", "nr_threads")?,
            signal_thread_head: r.off("signal_struct", "thread_head")?,
            task_thread_node: r.off("task_struct", "thread_node")?,
            signal_utime: r.off("signal_struct", "utime")?,
            signal_stime: r.off("signal_struct", "stime")?,
            signal_sum_sched_runtime: r.off("signal_struct", "sum_sched_runtime")?,
            signal_min_flt: r.off("signal_struct", "min_flt")?,
            signal_maj_flt: r.off("signal_struct", "maj_flt")?,
            signal_prev_utime: prev_cputime.wrapping_add(r.off("prev_cputime", "utime")?),
            signal_prev_stime: prev_cputime.wrapping_add(r.off("prev_cputime", "stime")?),
            signal_cmin_flt: r.off("signal_struct", "cmin_flt")?,
            signal_cmaj_flt: r.off("signal_struct", "cmaj_flt")?,
            signal_cutime: r.off("signal_struct", "cutime")?,
            signal_cstime: r.off("signal_struct", "cstime")?,
            signal_cgtime: r.off("signal_struct", "cgtime")?,
            signal_gtime: r.off("signal_struct", "gtime")?,
            signal_rss_limit: rlim
                .wrapping_add(RLIMIT_RSS.wrapping_mul(r.struct_size("rlimit")?))
                .wrapping_add(r.off("rlimit", "rlim_cur")?),
            signal_flags: r.off("signal_struct", "flags")?,
            signal_group_exit_code: r.off("signal_struct", "group_exit_code")?,
            tty_driver: r.off("tty_struct", "driver")?,
            tty_index: r.off("tty_struct", "index")?,
            tty_pgrp,
            driver_major: r.off("tty_driver", "major")?,
            driver_minor_start: r.off("tty_driver", "minor_start")?,
            utime: r.off("task_struct", "utime")?,
            stime: r.off("task_struct", "stime")?,
            sum_exec_runtime: r.off("task_struct", "se.sum_exec_runtime")?,
            min_flt: r.off("task_struct", "min_flt")?,
            maj_flt: r.off("task_struct", "maj_flt")?,
            gtime: r.off("task_struct", "gtime")?,
            prev_utime: r
                .off("task_struct", "prev_cputime")?
                .wrapping_add(r.off("prev_cputime", "utime")?),
            prev_stime: r
                .off("task_struct", "prev_cputime")?
                .wrapping_add(r.off("prev_cputime", "stime")?),
            rt_priority: r.off("task_struct", "rt_priority")?,
            policy: r.off("task_struct", "policy")?,
            exit_code: r.off("task_struct", "exit_code")?,
            pending: r.off("task_struct", "pending.signal")?,
            delays,
            user_regs,
            prio: r.off("task_struct", "prio")?,
            static_prio: r.off("task_struct", "static_prio")?,
            start_boottime: r.off("task_struct", "start_boottime")?,
            exit_signal: r.off("task_struct", "exit_signal")?,
            cpu,
            blocked: r.off("task_struct", "blocked")?,
            sighand_action: r.off("sighand_struct", "action")?,
            sigaction_size: r.struct_size("k_sigaction")?,
            sa_handler: r.off("k_sigaction", "sa.sa_handler")?,
            mm: MmLayout::resolve(&r)?,
            file_path: r.off("file", "f_path")?,
        })
    }
}

impl MmLayout {
    fn resolve(r: &Resolver) -> Result<Self, LayoutError> {
        let rss_stat = r.off("mm_struct", "rss_stat")?;
        let (rss_stat, rss_stride) = match r.types.member_offset("mm_rss_stat", "count") {
            Some(count) => (rss_stat.wrapping_add(count), 8),
            None => (
                rss_stat.wrapping_add(r.off("percpu_counter", "count")?),
                r.struct_size("percpu_counter")?,
            ),
        };
        // The counters are an anonymous enum.
        let item = |name: &str| r.index("", name);
        Ok(Self {
            total_vm: r.off("mm_struct", "total_vm")?,
            hiwater_vm: r.off("mm_struct", "hiwater_vm")?,
            hiwater_rss: r.off("mm_struct", "hiwater_rss")?,
            locked_vm: r.off("mm_struct", "locked_vm")?,
            pinned_vm: r.off("mm_struct", "pinned_vm")?,
            data_vm: r.off("mm_struct", "data_vm")?,
            stack_vm: r.off("mm_struct", "stack_vm")?,
            exec_vm: r.off("mm_struct", "exec_vm")?,
            start_code: r.off("mm_struct", "start_code")?,
            end_code: r.off("mm_struct", "end_code")?,
            start_stack: r.off("mm_struct", "start_stack")?,
            stat_tail: [
                r.off("mm_struct", "start_data")?,
                r.off("mm_struct", "end_data")?,
                r.off("mm_struct", "start_brk")?,
                r.off("mm_struct", "arg_start")?,
                r.off("mm_struct", "arg_end")?,
                r.off("mm_struct", "env_start")?,
                r.off("mm_struct", "env_end")?,
            ],
            pgtables_bytes: r.off("mm_struct", "pgtables_bytes")?,
            hugetlb_usage: r.types.member_offset("mm_struct", "hugetlb_usage"),
            exe_file: r.off("mm_struct", "exe_file")?,
            rss_stat,
            rss_stride,
            rss_file: item("MM_FILEPAGES")?,
            rss_anon: item("MM_ANONPAGES")?,
            rss_swap: item("MM_SWAPENTS")?,
            rss_shmem: item("MM_SHMEMPAGES")?,
        })
    }
}
