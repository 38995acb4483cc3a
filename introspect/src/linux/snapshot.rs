//! `GuestSnapshot`: what the guest kernel knew, as plain serde data. This is the contract
//! with shadowfs and everything to its right; its JSON form is versioned by `schema`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const SNAPSHOT_SCHEMA: &str = "dormouse.snapshot/1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestSnapshot {
    pub schema: String,
    pub source: Source,
    /// The domain's identity when the image format records it (`xl save`).
    pub domain: Option<Domain>,
    pub kernel: KernelInfo,
    pub uts: Uts,
    /// `/proc/sys/kernel/random/boot_id`; `None` when the guest never generated it.
    pub boot_id: Option<String>,
    /// Thread-group leaders and kernel threads, like `ps -e`, in list order.
    pub tasks: Vec<Task>,
    /// `/proc/filesystems` in registration order.
    pub filesystems: Vec<FilesystemType>,
    /// sysctl name (dotted, e.g. `net.ipv6.conf.all.accept_ra`) → value as `/proc/sys` prints it.
    pub sysctl: BTreeMap<String, String>,
    pub modules: Vec<Module>,
    pub mounts: Vec<Mount>,
    pub interfaces: Vec<Interface>,
    /// `/proc/tty/drivers`; `None` when the driver list could not be read (or the snapshot
    /// predates it).
    #[serde(default)]
    pub tty: Option<TtyDrivers>,
    /// System-wide counters behind `/proc/{meminfo,cpuinfo,uptime,loadavg,stat,swaps}`.
    pub system: SystemState,
    /// What could not be read and why; the rest of the snapshot is still valid.
    pub warnings: Vec<String>,
}

/// The kernel's registered tty drivers (`tty_drivers`, newest first) and the build options
/// that make `/proc/tty/drivers` print its fixed pseudo-driver lines.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtyDrivers {
    pub drivers: Vec<TtyDriver>,
    /// CONFIG_UNIX98_PTYS: the `/dev/ptmx` line.
    pub unix98_ptys: bool,
    /// CONFIG_VT: the `/dev/vc/0` line.
    pub vt: bool,
}

/// One `struct tty_driver` as `show_tty_driver()` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtyDriver {
    /// `driver_name`; `None` prints as `unknown`.
    pub driver_name: Option<String>,
    /// The device name prefix (`ttyS`, `pts`).
    pub name: String,
    pub major: u32,
    pub minor_start: u32,
    pub num: u32,
    /// `show_tty_range()`'s type column: `system`, `system:/dev/tty`, `console`, `serial`,
    /// `pty:master`, `type:5.0`, ...
    pub kind: String,
}

/// System-wide state, each part empty or `None` when it could not be read (see warnings).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemState {
    /// Timer frequency of the guest (`CONFIG_HZ`), needed to turn jiffies into time.
    pub hz: Option<u64>,
    /// `/proc/meminfo` entries in the kernel's order; values in kB except where the kernel
    /// prints plain counts (`HugePages_*`), kept as printed.
    pub meminfo: Vec<(String, u64)>,
    /// One entry per online CPU, the fields of `/proc/cpuinfo`.
    pub cpus: Vec<Cpu>,
    /// Time since boot and summed idle time of all CPUs, in nanoseconds.
    pub uptime_ns: Option<u64>,
    pub idle_ns: Option<u64>,
    /// `avenrun[]` fixed-point load averages (FSHIFT 11) as `/proc/loadavg` prints them:
    /// already rounded by `FIXED_1/200` as `get_avenrun()` does there, so a renderer only
    /// splits them (`LOAD_INT`, `LOAD_FRAC`).
    pub avenrun: Option<[u64; 3]>,
    pub nr_running: Option<u64>,
    pub nr_threads: Option<u64>,
    pub last_pid: Option<i32>,
    /// `/proc/stat`: boot time (epoch seconds), forks since boot, context switches, and
    /// per-CPU times in USER_HZ ticks (user nice system idle iowait irq softirq steal guest
    /// guest_nice).
    pub boot_time: Option<u64>,
    pub forks: Option<u64>,
    pub context_switches: Option<u64>,
    pub procs_blocked: Option<u64>,
    pub cpu_times: Vec<[u64; 10]>,
    pub swaps: Vec<Swap>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    pub processor: u32,
    pub vendor_id: String,
    pub family: u32,
    pub model: u32,
    pub model_name: String,
    pub stepping: u32,
    pub microcode: Option<u32>,
    pub mhz: Option<f64>,
    pub cache_size_kb: Option<u32>,
    pub physical_id: Option<u32>,
    pub siblings: Option<u32>,
    pub core_id: Option<u32>,
    pub cpu_cores: Option<u32>,
    pub apicid: Option<u32>,
    /// `initial apicid`, `cpuid level` and `TLB size` (4K pages; printed only when > 0).
    #[serde(default)]
    pub initial_apicid: Option<u32>,
    #[serde(default)]
    pub cpuid_level: Option<i32>,
    #[serde(default)]
    pub tlb_size: Option<i32>,
    pub flags: Vec<String>,
    pub bugs: Vec<String>,
    pub bogomips: Option<f64>,
    pub clflush_size: Option<u32>,
    pub cache_alignment: Option<u32>,
    /// Physical and virtual address bits.
    pub address_sizes: Option<(u32, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Swap {
    pub filename: String,
    /// `partition` or `file`.
    pub kind: String,
    pub size_kb: u64,
    pub used_kb: u64,
    pub priority: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub path: String,
    pub format: String,
    pub guest_kind: String,
    pub pages: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    pub name: Option<String>,
    pub uuid: Option<String>,
    pub domain_type: Option<String>,
    pub memory_kib: Option<u64>,
    pub vcpus: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    pub release: String,
    pub version: String,
    pub banner: String,
    pub cmdline: Option<String>,
    /// KASLR shift of the kernel image's virtual addresses (0 when KASLR is off).
    pub kaslr_offset: u64,
    /// Shift of the kernel image's physical load address from where it was linked to load
    /// (`CONFIG_PHYSICAL_START`, 16 MiB on x86-64); `None` when `_text` is not mapped.
    pub kaslr_phys_offset: Option<i64>,
    /// Guest-physical address of the kernel's top-level page table (from the saved CR3).
    pub page_table_root: u64,
    pub page_offset_base: Option<u64>,
    pub profile: Profile,
}

/// Where symbols and types came from, so a result can be traced to its inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub symbols: String,
    pub types: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uts {
    pub sysname: String,
    pub nodename: String,
    pub release: String,
    pub version: String,
    pub machine: String,
    pub domainname: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub pid: i32,
    pub tgid: i32,
    pub ppid: i32,
    pub uid: u32,
    pub gid: u32,
    /// The letter `ps` shows: R S D T t X Z P I.
    pub state: char,
    pub comm: String,
    pub kernel_thread: bool,
    /// `None` when the argument pages are not in the image (swapped out, not saved).
    pub cmdline: Option<Vec<String>>,
    /// What `/proc/PID/{stat,status}` show beyond the above; `None` when unreadable.
    pub detail: Option<TaskDetail>,
    /// `/proc/PID/environ` split at its NULs like `cmdline`; `None` when its pages are not in
    /// the image. Always `None` on the entries of `threads` (the group's is the leader's).
    #[serde(default)]
    pub environ: Option<Vec<String>>,
    /// The thread group as `/proc/PID/task/TID/` shows it, leader first: each thread's own
    /// state, name, ids and per-thread stat (`do_task_stat()` with `whole` = 0). Their
    /// `cmdline` and `environ` are `None` (the group's are the leader's), their `detail`
    /// has no `threads` (the count is the group's), and their own `threads` are empty.
    /// Empty when the thread list could not be read.
    #[serde(default)]
    pub threads: Vec<Task>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDetail {
    pub euid: u32,
    pub suid: u32,
    pub fsuid: u32,
    pub egid: u32,
    pub sgid: u32,
    pub fsgid: u32,
    pub groups: Vec<u32>,
    pub umask: Option<u32>,
    pub pgrp: i32,
    pub session: i32,
    pub tty_nr: u32,
    pub tpgid: i32,
    /// `task_struct.flags` as `/proc/PID/stat` field 9 prints them.
    pub flags: u32,
    pub minflt: u64,
    /// Faults of reaped children (`signal_struct.cmin_flt`, `cmaj_flt`).
    pub cminflt: u64,
    pub majflt: u64,
    pub cmajflt: u64,
    /// CPU times in USER_HZ ticks; `c*` are reaped children's, `guest_time` the group's time
    /// running a virtual CPU.
    pub utime: u64,
    pub stime: u64,
    pub cutime: u64,
    pub cstime: u64,
    pub guest_time: u64,
    pub cguest_time: u64,
    /// Block I/O delay in USER_HZ ticks (`delayacct_blkio_ticks()`; 0 without delay
    /// accounting).
    pub delayacct_blkio_ticks: u64,
    pub priority: i32,
    pub nice: i32,
    /// Thread ids of the group, the leader first.
    pub threads: Vec<i32>,
    /// Start time after boot, in USER_HZ ticks.
    pub start_time: u64,
    /// Virtual memory size in bytes and resident set in pages.
    pub vsize: u64,
    pub rss_pages: u64,
    /// `RLIMIT_RSS` soft limit in bytes (`RLIM_INFINITY` prints as 18446744073709551615).
    pub rsslim: u64,
    /// Fields of `/proc/PID/status` in kB (`VmPeak`, `VmSize`, `VmRSS`, ...), in its order.
    pub vm: Vec<(String, u64)>,
    /// Signal masks as status prints them (hex).
    pub sig_blocked: u64,
    /// The leader thread's own pending signals (`task_struct.pending`, not the shared set).
    pub sig_pending: u64,
    pub sig_ignored: u64,
    pub sig_caught: u64,
    /// Capability sets: inheritable, permitted, effective, bounding, ambient.
    pub caps: [u64; 5],
    /// `mm->start_code`, `end_code` and `start_stack`: stat fields 26-28.
    pub code: (u64, u64),
    pub start_stack: u64,
    /// User stack and instruction pointers: the kernel shows them only for a task that is
    /// exiting or dumping core, 0 otherwise.
    pub kstkesp: u64,
    pub kstkeip: u64,
    /// Stat field 35: 1 when the task is not running, shown for a thread and for a
    /// single-threaded group (the kernel no longer prints the wait channel's address).
    pub wchan: bool,
    pub exit_signal: i32,
    /// CPU it last ran on.
    pub processor: u32,
    pub rt_priority: u32,
    /// Scheduling policy (`SCHED_NORMAL` 0, `SCHED_FIFO` 1, ...).
    pub policy: u32,
    /// `mm->start_data`, `end_data`, `start_brk`, `arg_start`, `arg_end`, `env_start`,
    /// `env_end` (stat fields 45-51), all 0 without an mm (kernel threads, zombies).
    pub data: (u64, u64),
    pub start_brk: u64,
    pub arg: (u64, u64),
    pub env: (u64, u64),
    /// Stat field 52: `task->exit_code`, or the group's exit/stop code while the group is
    /// exiting or stopped.
    pub exit_code: i32,
    /// Root and working directory as paths in the guest (`/proc/PID/root`, `cwd`).
    pub root: Option<String>,
    pub cwd: Option<String>,
    /// The executable's path in the guest (`/proc/PID/exe`).
    pub exe: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesystemType {
    pub name: String,
    pub nodev: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Module {
    pub name: String,
    pub size: u64,
    /// `module_refcount()`: the references beyond the module's own (`refcnt` − 1); `None`
    /// without CONFIG_MODULE_UNLOAD.
    pub refcount: Option<i32>,
    /// Names of the modules that use this one, in `source_list` order.
    pub used_by: Vec<String>,
    /// Loaded with an init but no exit function: it can never be unloaded.
    pub permanent: bool,
    /// `Live`, `Loading`, `Unloading` as `/proc/modules` prints it.
    pub state: String,
    /// The module's text base (`/proc/modules`' address column).
    pub address: u64,
    /// Taint letters of `module.taints` in `taint_flags[]` order (`"OE"`), empty for none.
    pub taints: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// The device and mount point as the kernel holds them, unescaped: renderers of
    /// `/proc/mounts` escape them with [`crate::octal_escape::escape`].
    pub device: String,
    pub mountpoint: String,
    pub fstype: String,
    pub options: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    pub ipv4: Vec<String>,
    pub ipv6: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Snapshots written before threads, environments, tty drivers and the extra cpuinfo
    /// fields still load: those are simply unknown.
    #[test]
    fn snapshots_without_the_newer_fields_load() {
        let task: Task = serde_json::from_str(
            r#"{"pid":1,"tgid":1,"ppid":0,"uid":0,"gid":0,"state":"S","comm":"init",
                "kernel_thread":false,"cmdline":["/sbin/init"],"detail":null}"#,
        )
        .expect("a task without environ and threads");
        assert!(task.environ.is_none() && task.threads.is_empty());
        let cpu: Cpu = serde_json::from_str(
            r#"{"processor":0,"vendor_id":"GenuineIntel","family":6,"model":85,"model_name":"x",
                "stepping":7,"microcode":null,"mhz":null,"cache_size_kb":null,"physical_id":null,
                "siblings":null,"core_id":null,"cpu_cores":null,"apicid":null,"flags":[],"bugs":[],
                "bogomips":null,"clflush_size":null,"cache_alignment":null,"address_sizes":null}"#,
        )
        .expect("a cpu without initial apicid, cpuid level and TLB size");
        assert_eq!((cpu.initial_apicid, cpu.cpuid_level, cpu.tlb_size), (None, None, None));
        let mut snapshot = serde_json::to_value(GuestSnapshot {
            schema: SNAPSHOT_SCHEMA.into(),
            source: Source {
                path: "x".into(),
                format: "raw".into(),
                guest_kind: "pv".into(),
                pages: 0,
            },
            domain: None,
            kernel: KernelInfo {
                release: String::new(),
                version: String::new(),
                banner: String::new(),
                cmdline: None,
                kaslr_offset: 0,
                kaslr_phys_offset: None,
                page_table_root: 0,
                page_offset_base: None,
                profile: Profile {
                    symbols: String::new(),
                    types: String::new(),
                },
            },
            uts: Uts::default(),
            boot_id: None,
            tasks: vec![task],
            filesystems: Vec::new(),
            sysctl: BTreeMap::new(),
            modules: Vec::new(),
            mounts: Vec::new(),
            interfaces: Vec::new(),
            tty: Some(TtyDrivers::default()),
            system: SystemState::default(),
            warnings: Vec::new(),
        })
        .expect("serialize");
        snapshot.as_object_mut().expect("object").remove("tty");
        let old: GuestSnapshot = serde_json::from_value(snapshot).expect("a snapshot without tty");
        assert_eq!(old.tty, None);
    }
}
