//! Where the fields the snapshot needs live in this kernel's structures.
//!
//! Offsets are looked up once, by name, in whatever type source the profile has (BTF carved
//! from RAM, BTF of the guest's vmlinuz, a Volatility ISF), and kept as plain numbers; the
//! walk itself never asks the type source again. Each feature resolves its own group so that
//! a kernel lacking, say, the module list still yields tasks.

pub use crate::profile::TypeInfo;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the kernel's type information has no {ty}.{member}, which {feature} needs")]
pub struct LayoutError {
    pub ty: String,
    pub member: String,
    pub feature: &'static str,
}

struct Resolver<'a> {
    types: &'a dyn TypeInfo,
    feature: &'static str,
}

impl Resolver<'_> {
    fn off(&self, ty: &str, member: &str) -> Result<u64, LayoutError> {
        self.types
            .member_offset(ty, member)
            .ok_or_else(|| self.missing(ty, member))
    }

    fn size(&self, ty: &str, member: &str) -> Result<u64, LayoutError> {
        self.types
            .member_size(ty, member)
            .ok_or_else(|| self.missing(ty, member))
    }

    fn struct_size(&self, ty: &str) -> Result<u64, LayoutError> {
        self.types.struct_size(ty).ok_or_else(|| self.missing(ty, "(size)"))
    }

    /// An enumerator used as an array index; values beyond any kernel array are refused.
    fn index(&self, ty: &str, name: &str) -> Result<u64, LayoutError> {
        self.types
            .enum_value(ty, name)
            .filter(|v| (0..4096).contains(v))
            .map(|v| v as u64)
            .ok_or_else(|| self.missing(ty, name))
    }

    fn missing(&self, ty: &str, member: &str) -> LayoutError {
        LayoutError {
            ty: ty.to_owned(),
            member: member.to_owned(),
            feature: self.feature,
        }
    }
}

#[derive(Debug, Clone)]
pub struct UtsLayout {
    pub name: u64,
    pub field_len: u64,
    pub sysname: u64,
    pub nodename: u64,
    pub release: u64,
    pub version: u64,
    pub machine: u64,
    pub domainname: u64,
}

impl UtsLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "uname",
        };
        Ok(Self {
            name: r.off("uts_namespace", "name")?,
            field_len: r.size("new_utsname", "release")?,
            sysname: r.off("new_utsname", "sysname")?,
            nodename: r.off("new_utsname", "nodename")?,
            release: r.off("new_utsname", "release")?,
            version: r.off("new_utsname", "version")?,
            machine: r.off("new_utsname", "machine")?,
            domainname: r.off("new_utsname", "domainname")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct TaskLayout {
    pub tasks: u64,
    pub pid: u64,
    pub tgid: u64,
    pub comm: u64,
    pub comm_len: u64,
    pub real_parent: u64,
    pub real_cred: u64,
    pub mm: u64,
    pub flags: u64,
    /// `__state` since 5.14, `state` before.
    pub state: u64,
    /// Where a frozen task's real state is kept (6.1+), when the kernel has the field.
    pub saved_state: Option<u64>,
    /// Job-control bits; where a frozen 6.1–6.5 task's stopped/traced state survives.
    pub jobctl: Option<u64>,
    pub exit_state: u64,
    pub cred_uid: u64,
    pub cred_gid: u64,
    pub mm_arg_start: u64,
    pub mm_arg_end: u64,
    pub mm_env_start: u64,
    pub mm_env_end: u64,
    pub mm_pgd: u64,
    /// How `/proc` names kernel threads (full name, 5.17+) and workqueue workers
    /// (`comm-desc`); absent members leave the plain `comm`.
    pub kthread_names: Option<KthreadNameLayout>,
}

#[derive(Debug, Clone)]
pub struct KthreadNameLayout {
    /// `task_struct.worker_private`: the task's `struct kthread`.
    pub task_kthread: u64,
    pub kthread_full_name: u64,
    /// `kthread.data`: a workqueue worker's `struct worker`.
    pub kthread_data: u64,
    pub worker_desc: u64,
    pub worker_desc_len: u64,
    pub worker_current_work: u64,
    /// `worker.pool`: NULL while a rescuer is detached, and then `/proc` shows no desc.
    pub worker_pool: u64,
}

impl KthreadNameLayout {
    fn resolve(types: &dyn TypeInfo) -> Option<Self> {
        Some(Self {
            task_kthread: types.member_offset("task_struct", "worker_private")?,
            kthread_full_name: types.member_offset("kthread", "full_name")?,
            kthread_data: types.member_offset("kthread", "data")?,
            worker_desc: types.member_offset("worker", "desc")?,
            worker_desc_len: types.member_size("worker", "desc")?,
            worker_current_work: types.member_offset("worker", "current_work")?,
            worker_pool: types.member_offset("worker", "pool")?,
        })
    }
}

impl TaskLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "the task list",
        };
        let state = types
            .member_offset("task_struct", "__state")
            .or_else(|| types.member_offset("task_struct", "state"))
            .ok_or_else(|| r.missing("task_struct", "__state"))?;
        Ok(Self {
            tasks: r.off("task_struct", "tasks")?,
            pid: r.off("task_struct", "pid")?,
            tgid: r.off("task_struct", "tgid")?,
            comm: r.off("task_struct", "comm")?,
            comm_len: r.size("task_struct", "comm")?,
            real_parent: r.off("task_struct", "real_parent")?,
            real_cred: r.off("task_struct", "real_cred")?,
            mm: r.off("task_struct", "mm")?,
            flags: r.off("task_struct", "flags")?,
            state,
            saved_state: types.member_offset("task_struct", "saved_state"),
            jobctl: types.member_offset("task_struct", "jobctl"),
            exit_state: r.off("task_struct", "exit_state")?,
            cred_uid: r.off("cred", "uid")?,
            cred_gid: r.off("cred", "gid")?,
            mm_arg_start: r.off("mm_struct", "arg_start")?,
            mm_arg_end: r.off("mm_struct", "arg_end")?,
            mm_env_start: r.off("mm_struct", "env_start")?,
            mm_env_end: r.off("mm_struct", "env_end")?,
            mm_pgd: r.off("mm_struct", "pgd")?,
            kthread_names: KthreadNameLayout::resolve(types),
        })
    }
}

#[derive(Debug, Clone)]
pub struct FsTypeLayout {
    pub name: u64,
    pub fs_flags: u64,
    pub next: u64,
}

impl FsTypeLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "the filesystem list",
        };
        Ok(Self {
            name: r.off("file_system_type", "name")?,
            fs_flags: r.off("file_system_type", "fs_flags")?,
            next: r.off("file_system_type", "next")?,
        })
    }
}

/// How a module's size is recorded: separate layouts (≤ 6.3) or a `mem[]` array (6.4+).
#[derive(Debug, Clone)]
pub enum ModuleSize {
    Layouts {
        offsets: Vec<u64>,
        size_in_layout: u64,
    },
    MemArray {
        mem: u64,
        stride: u64,
        count: u64,
        size_in_mem: u64,
    },
}

#[derive(Debug, Clone)]
pub struct ModuleLayout {
    pub list: u64,
    pub name: u64,
    pub name_len: u64,
    pub state: u64,
    pub size: ModuleSize,
    /// Where the text base `/proc/modules` prints is: `core_layout.base` (≤ 6.3) or
    /// `mem[MOD_TEXT].base` (6.4+).
    pub text_base: u64,
    pub taints: u64,
    /// The reference count and users, kept only with CONFIG_MODULE_UNLOAD.
    pub unload: Option<ModuleUnloadLayout>,
}

#[derive(Debug, Clone)]
pub struct ModuleUnloadLayout {
    pub refcnt: u64,
    /// `module.source_list`: `struct module_use`s linked by their `source_list`, whose
    /// `source` is a module using this one.
    pub source_list: u64,
    pub use_source_list: u64,
    pub use_source: u64,
    /// `module.init` and `module.exit`: a module with an init but no exit is `[permanent]`.
    pub init: u64,
    pub exit: u64,
}

impl ModuleLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "the module list",
        };
        let (size, text_base) = if let Some(mem) = types.member_offset("module", "mem") {
            let stride = r.struct_size("module_memory")?;
            let text_base = mem
                .wrapping_add(stride.wrapping_mul(r.index("mod_mem_type", "MOD_TEXT")?))
                .wrapping_add(r.off("module_memory", "base")?);
            let total = r.size("module", "mem")?;
            let size = ModuleSize::MemArray {
                mem,
                stride,
                count: total.checked_div(stride).unwrap_or(0),
                size_in_mem: r.off("module_memory", "size")?,
            };
            (size, text_base)
        } else {
            let offsets = ["core_layout", "init_layout", "data_layout"]
                .iter()
                .filter_map(|l| types.member_offset("module", l))
                .collect::<Vec<_>>();
            if offsets.is_empty() {
                return Err(r.missing("module", "core_layout"));
            }
            let size = ModuleSize::Layouts {
                offsets,
                size_in_layout: r.off("module_layout", "size")?,
            };
            (
                size,
                r.off("module", "core_layout")?
                    .wrapping_add(r.off("module_layout", "base")?),
            )
        };
        let unload = types.member_offset("module", "refcnt").and_then(|refcnt| {
            Some(ModuleUnloadLayout {
                refcnt,
                source_list: types.member_offset("module", "source_list")?,
                use_source_list: types.member_offset("module_use", "source_list")?,
                use_source: types.member_offset("module_use", "source")?,
                init: types.member_offset("module", "init")?,
                exit: types.member_offset("module", "exit")?,
            })
        });
        Ok(Self {
            list: r.off("module", "list")?,
            name: r.off("module", "name")?,
            name_len: r.size("module", "name")?,
            state: r.off("module", "state")?,
            size,
            text_base,
            taints: r.off("module", "taints")?,
            unload,
        })
    }
}

#[derive(Debug, Clone)]
pub struct CtlTableLayout {
    pub stride: u64,
    pub procname: u64,
    pub data: u64,
    pub maxlen: u64,
    pub proc_handler: u64,
}

impl CtlTableLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "sysctls",
        };
        Ok(Self {
            stride: r.struct_size("ctl_table")?,
            procname: r.off("ctl_table", "procname")?,
            data: r.off("ctl_table", "data")?,
            maxlen: r.off("ctl_table", "maxlen")?,
            proc_handler: r.off("ctl_table", "proc_handler")?,
        })
    }
}

/// Offsets of the per-namespace IPv6 device configuration pointers in `struct net`.
#[derive(Debug, Clone)]
pub struct NetConfLayout {
    pub ipv6_devconf_all: u64,
    pub ipv6_devconf_dflt: u64,
}

impl NetConfLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "IPv6 sysctls",
        };
        Ok(Self {
            ipv6_devconf_all: r.off("net", "ipv6.devconf_all")?,
            ipv6_devconf_dflt: r.off("net", "ipv6.devconf_dflt")?,
        })
    }
}

/// IPv4's per-device configuration (net/ipv4/devinet.c): where each `struct ipv4_devconf`
/// instance is and where the kernel's own table of its sysctls starts.
#[derive(Debug, Clone)]
pub struct DevinetConfLayout {
    /// `net.ipv4.devconf_all` and `devconf_dflt`: pointers to the namespace's copies.
    pub devconf_all: u64,
    pub devconf_dflt: u64,
    /// `in_device.cnf`: an interface's copy, inline.
    pub in_dev_cnf: u64,
    /// `devinet_sysctl_table.devinet_vars`: the `ctl_table` array inside `devinet_sysctl`.
    pub vars: u64,
}

impl DevinetConfLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "IPv4 sysctls",
        };
        Ok(Self {
            devconf_all: r.off("net", "ipv4.devconf_all")?,
            devconf_dflt: r.off("net", "ipv4.devconf_dflt")?,
            in_dev_cnf: r.off("in_device", "cnf")?,
            vars: r.off("devinet_sysctl_table", "devinet_vars")?,
        })
    }
}

/// The mount tree: `struct mount` and what `/proc/mounts` prints of it.
#[derive(Debug, Clone)]
pub struct MountLayout {
    pub task_fs: u64,
    pub task_nsproxy: u64,
    pub nsproxy_mnt_ns: u64,
    pub fs_root: u64,
    pub path_mnt: u64,
    pub path_dentry: u64,
    /// `mnt_namespace.list` (≤ 6.7) or, when absent, the `mounts` rbtree (6.8+).
    pub ns_list: Option<u64>,
    pub ns_rbtree: Option<u64>,
    pub mount_list: Option<u64>,
    pub mount_node: Option<u64>,
    pub mount_parent: u64,
    pub mount_mountpoint: u64,
    pub mount_mnt: u64,
    pub mount_devname: u64,
    pub vfsmount_root: u64,
    pub vfsmount_sb: u64,
    pub vfsmount_flags: u64,
    pub sb_type: u64,
    pub sb_flags: u64,
    pub fs_type_name: u64,
    pub dentry_name: u64,
    pub dentry_parent: u64,
}

impl MountLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "the mount table",
        };
        let ns_list = types.member_offset("mnt_namespace", "list");
        let ns_rbtree = types.member_offset("mnt_namespace", "mounts");
        if ns_list.is_none() && ns_rbtree.is_none() {
            return Err(r.missing("mnt_namespace", "list"));
        }
        Ok(Self {
            task_fs: r.off("task_struct", "fs")?,
            task_nsproxy: r.off("task_struct", "nsproxy")?,
            nsproxy_mnt_ns: r.off("nsproxy", "mnt_ns")?,
            fs_root: r.off("fs_struct", "root")?,
            path_mnt: r.off("path", "mnt")?,
            path_dentry: r.off("path", "dentry")?,
            ns_list,
            ns_rbtree,
            mount_list: types.member_offset("mount", "mnt_list"),
            mount_node: types.member_offset("mount", "mnt_node"),
            mount_parent: r.off("mount", "mnt_parent")?,
            mount_mountpoint: r.off("mount", "mnt_mountpoint")?,
            mount_mnt: r.off("mount", "mnt")?,
            mount_devname: r.off("mount", "mnt_devname")?,
            vfsmount_root: r.off("vfsmount", "mnt_root")?,
            vfsmount_sb: r.off("vfsmount", "mnt_sb")?,
            vfsmount_flags: r.off("vfsmount", "mnt_flags")?,
            sb_type: r.off("super_block", "s_type")?,
            sb_flags: r.off("super_block", "s_flags")?,
            fs_type_name: r.off("file_system_type", "name")?,
            dentry_name: r.off("dentry", "d_name.name")?,
            dentry_parent: r.off("dentry", "d_parent")?,
        })
    }
}

/// What `super_operations.show_options` reads for the filesystems whose options
/// `/proc/mounts` can show from plain fields of `super_block.s_fs_info`; a filesystem whose
/// private structure this kernel's types lack keeps its generic options only.
#[derive(Debug, Clone)]
pub struct FsOptionsLayout {
    pub sb_op: u64,
    pub sb_fs_info: u64,
    pub show_options: u64,
    pub shmem: Option<ShmemOptionsLayout>,
    pub devpts: Option<DevptsOptionsLayout>,
    pub proc_fs: Option<ProcOptionsLayout>,
    pub kernfs: Option<KernfsOptionsLayout>,
}

/// `struct shmem_sb_info` (tmpfs, devtmpfs, rootfs).
#[derive(Debug, Clone)]
pub struct ShmemOptionsLayout {
    pub max_blocks: u64,
    pub max_inodes: u64,
    pub mode: u64,
    pub uid: u64,
    pub gid: u64,
    pub huge: u64,
    pub full_inums: u64,
    pub mpol: u64,
    /// `noswap` (6.4+).
    pub noswap: Option<u64>,
    pub mempolicy_mode: u64,
}

/// `pts_fs_info.mount_opts` (devpts).
#[derive(Debug, Clone)]
pub struct DevptsOptionsLayout {
    pub setuid: u64,
    pub setgid: u64,
    pub uid: u64,
    pub gid: u64,
    pub mode: u64,
    pub ptmxmode: u64,
    pub max: u64,
}

/// `struct proc_fs_info` (proc) and its `hidepid=` codes (`enum proc_hidepid`).
#[derive(Debug, Clone)]
pub struct ProcOptionsLayout {
    pub pid_gid: u64,
    pub hide_pid: u64,
    pub pidonly: u64,
    pub hidepid_names: Vec<(i128, &'static str)>,
}

/// `kernfs_super_info.root->syscall_ops` (sysfs, cgroup): options come from there.
#[derive(Debug, Clone)]
pub struct KernfsOptionsLayout {
    pub info_root: u64,
    pub root_syscall_ops: u64,
    pub ops_show_options: u64,
}

impl FsOptionsLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "filesystem options in /proc/mounts",
        };
        let off = |ty: &str, m: &str| types.member_offset(ty, m);
        let opts = |m: &str| Some(off("pts_fs_info", "mount_opts")?.wrapping_add(off("pts_mount_opts", m)?));
        Ok(Self {
            sb_op: r.off("super_block", "s_op")?,
            sb_fs_info: r.off("super_block", "s_fs_info")?,
            show_options: r.off("super_operations", "show_options")?,
            shmem: (|| {
                Some(ShmemOptionsLayout {
                    max_blocks: off("shmem_sb_info", "max_blocks")?,
                    max_inodes: off("shmem_sb_info", "max_inodes")?,
                    mode: off("shmem_sb_info", "mode")?,
                    uid: off("shmem_sb_info", "uid")?,
                    gid: off("shmem_sb_info", "gid")?,
                    huge: off("shmem_sb_info", "huge")?,
                    full_inums: off("shmem_sb_info", "full_inums")?,
                    mpol: off("shmem_sb_info", "mpol")?,
                    noswap: off("shmem_sb_info", "noswap"),
                    mempolicy_mode: off("mempolicy", "mode")?,
                })
            })(),
            devpts: (|| {
                Some(DevptsOptionsLayout {
                    setuid: opts("setuid")?,
                    setgid: opts("setgid")?,
                    uid: opts("uid")?,
                    gid: opts("gid")?,
                    mode: opts("mode")?,
                    ptmxmode: opts("ptmxmode")?,
                    max: opts("max")?,
                })
            })(),
            proc_fs: (|| {
                let hidepid_names = [
                    ("HIDEPID_OFF", "off"),
                    ("HIDEPID_NO_ACCESS", "noaccess"),
                    ("HIDEPID_INVISIBLE", "invisible"),
                    ("HIDEPID_NOT_PTRACEABLE", "ptraceable"),
                ]
                .into_iter()
                .map(|(e, name)| Some((types.enum_value("proc_hidepid", e)?, name)))
                .collect::<Option<Vec<_>>>()?;
                Some(ProcOptionsLayout {
                    pid_gid: off("proc_fs_info", "pid_gid")?,
                    hide_pid: off("proc_fs_info", "hide_pid")?,
                    pidonly: off("proc_fs_info", "pidonly")?,
                    hidepid_names,
                })
            })(),
            kernfs: (|| {
                Some(KernfsOptionsLayout {
                    info_root: off("kernfs_super_info", "root")?,
                    root_syscall_ops: off("kernfs_root", "syscall_ops")?,
                    ops_show_options: off("kernfs_syscall_ops", "show_options")?,
                })
            })(),
        })
    }
}

/// Network devices of the initial namespace and their addresses.
#[derive(Debug, Clone)]
pub struct NetDevLayout {
    pub net_dev_base_head: u64,
    pub dev_list: u64,
    pub name: u64,
    pub name_len: u64,
    pub dev_addr: u64,
    pub addr_len: u64,
    pub ip_ptr: u64,
    pub ip6_ptr: u64,
    pub in_dev_ifa_list: u64,
    pub ifa_next: u64,
    pub ifa_local: u64,
    pub ifa_prefixlen: u64,
    pub inet6_addr_list: u64,
    pub inet6_cnf: u64,
    pub ifa6_if_list: u64,
    pub ifa6_addr: u64,
    pub ifa6_prefix_len: u64,
}

impl NetDevLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "network interfaces",
        };
        Ok(Self {
            net_dev_base_head: r.off("net", "dev_base_head")?,
            dev_list: r.off("net_device", "dev_list")?,
            name: r.off("net_device", "name")?,
            name_len: r.size("net_device", "name")?,
            dev_addr: r.off("net_device", "dev_addr")?,
            addr_len: r.off("net_device", "addr_len")?,
            ip_ptr: r.off("net_device", "ip_ptr")?,
            ip6_ptr: r.off("net_device", "ip6_ptr")?,
            in_dev_ifa_list: r.off("in_device", "ifa_list")?,
            ifa_next: r.off("in_ifaddr", "ifa_next")?,
            ifa_local: r.off("in_ifaddr", "ifa_local")?,
            ifa_prefixlen: r.off("in_ifaddr", "ifa_prefixlen")?,
            inet6_addr_list: r.off("inet6_dev", "addr_list")?,
            inet6_cnf: r.off("inet6_dev", "cnf")?,
            ifa6_if_list: r.off("inet6_ifaddr", "if_list")?,
            ifa6_addr: r.off("inet6_ifaddr", "addr")?,
            ifa6_prefix_len: r.off("inet6_ifaddr", "prefix_len")?,
        })
    }
}

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

/// Per-CPU run queues and CPU time counters behind `/proc/{stat,loadavg,uptime}`.
#[derive(Debug, Clone)]
pub struct CpuStatLayout {
    pub rq_nr_running: u64,
    pub rq_nr_switches: u64,
    pub rq_nr_iowait: u64,
    pub rq_curr: u64,
    pub rq_idle: u64,
    /// `kernel_cpustat.cpustat[]` indices in `/proc/stat` column order: user nice system
    /// idle iowait irq softirq steal guest guest_nice.
    pub cpustat: u64,
    pub columns: [u64; 10],
    /// NO_HZ idle accounting (`struct tick_sched`), absent in kernels without it.
    pub tick_idle: Option<TickIdleLayout>,
    pub pid_ns_idr_next: u64,
}

#[derive(Debug, Clone)]
pub struct TickIdleLayout {
    pub idle_entrytime: u64,
    pub idle_sleeptime: u64,
    pub iowait_sleeptime: u64,
}

impl CpuStatLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "/proc/stat, loadavg and uptime",
        };
        let mut columns = [0; 10];
        for (column, name) in columns.iter_mut().zip([
            "CPUTIME_USER",
            "CPUTIME_NICE",
            "CPUTIME_SYSTEM",
            "CPUTIME_IDLE",
            "CPUTIME_IOWAIT",
            "CPUTIME_IRQ",
            "CPUTIME_SOFTIRQ",
            "CPUTIME_STEAL",
            "CPUTIME_GUEST",
            "CPUTIME_GUEST_NICE",
        ]) {
            *column = r.index("cpu_usage_stat", name)?;
        }
        let tick_idle = (|| {
            Some(TickIdleLayout {
                idle_entrytime: types.member_offset("tick_sched", "idle_entrytime")?,
                idle_sleeptime: types.member_offset("tick_sched", "idle_sleeptime")?,
                iowait_sleeptime: types.member_offset("tick_sched", "iowait_sleeptime")?,
            })
        })();
        Ok(Self {
            rq_nr_running: r.off("rq", "nr_running")?,
            rq_nr_switches: r.off("rq", "nr_switches")?,
            rq_nr_iowait: r.off("rq", "nr_iowait")?,
            rq_curr: r.off("rq", "curr")?,
            rq_idle: r.off("rq", "idle")?,
            cpustat: r.off("kernel_cpustat", "cpustat")?,
            columns,
            tick_idle,
            pid_ns_idr_next: r.off("pid_namespace", "idr.idr_next")?,
        })
    }
}

/// The timekeeper: where boot time and the clocks since boot are kept.
#[derive(Debug, Clone)]
pub struct TimekeeperLayout {
    /// Offset of `struct timekeeper` inside the anonymous `tk_core` (after its seqcount).
    pub in_core: u64,
    pub mono_base: u64,
    pub mono_xtime_nsec: u64,
    pub mono_shift: u64,
    pub offs_real: u64,
    pub offs_boot: u64,
}

impl TimekeeperLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "the boot time and uptime",
        };
        // `tk_core` is `struct { seqcount_raw_spinlock_t seq; struct timekeeper timekeeper; }`,
        // an anonymous type: the timekeeper (8-byte aligned) follows the seqcount.
        let seq = r.struct_size("seqcount_raw_spinlock")?;
        Ok(Self {
            in_core: seq.div_ceil(8).saturating_mul(8),
            mono_base: r.off("timekeeper", "tkr_mono.base")?,
            mono_xtime_nsec: r.off("timekeeper", "tkr_mono.xtime_nsec")?,
            mono_shift: r.off("timekeeper", "tkr_mono.shift")?,
            offs_real: r.off("timekeeper", "offs_real")?,
            offs_boot: r.off("timekeeper", "offs_boot")?,
        })
    }
}

/// `struct cpuinfo_x86`: each field as (offset, size), since their widths vary by release.
#[derive(Debug, Clone)]
pub struct CpuInfoLayout {
    pub family: (u64, u64),
    pub model: (u64, u64),
    pub stepping: (u64, u64),
    pub virt_bits: (u64, u64),
    pub phys_bits: (u64, u64),
    pub capability: (u64, u64),
    pub vendor_id: (u64, u64),
    pub model_id: (u64, u64),
    pub cache_size: (u64, u64),
    pub cache_alignment: (u64, u64),
    pub loops_per_jiffy: (u64, u64),
    pub microcode: (u64, u64),
    pub phys_proc_id: (u64, u64),
    pub core_id: (u64, u64),
    pub booted_cores: (u64, u64),
    pub apicid: (u64, u64),
    pub clflush_size: (u64, u64),
    /// `initial apicid`, `cpuid level` and `TLB size`: their lines are left out when the
    /// kernel lacks the field.
    pub initial_apicid: Option<(u64, u64)>,
    pub cpuid_level: Option<(u64, u64)>,
    pub tlbsize: Option<(u64, u64)>,
}

impl CpuInfoLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "/proc/cpuinfo",
        };
        let f = |m: &str| Ok::<_, LayoutError>((r.off("cpuinfo_x86", m)?, r.size("cpuinfo_x86", m)?));
        // 6.1 spells the package id `phys_proc_id`; 6.7+ keep it in `topo.pkg_id`.
        let either = |a: &str, b: &str| f(a).or_else(|_| f(b));
        Ok(Self {
            family: f("x86")?,
            model: f("x86_model")?,
            stepping: f("x86_stepping")?,
            virt_bits: f("x86_virt_bits")?,
            phys_bits: f("x86_phys_bits")?,
            capability: f("x86_capability")?,
            vendor_id: f("x86_vendor_id")?,
            model_id: f("x86_model_id")?,
            cache_size: f("x86_cache_size")?,
            cache_alignment: f("x86_cache_alignment")?,
            loops_per_jiffy: f("loops_per_jiffy")?,
            microcode: f("microcode")?,
            phys_proc_id: either("phys_proc_id", "topo.pkg_id")?,
            core_id: either("cpu_core_id", "topo.core_id")?,
            booted_cores: f("booted_cores")?,
            apicid: either("apicid", "topo.apicid")?,
            clflush_size: f("x86_clflush_size")?,
            initial_apicid: either("initial_apicid", "topo.initial_apicid").ok(),
            cpuid_level: f("cpuid_level").ok(),
            tlbsize: f("x86_tlbsize").ok(),
        })
    }
}

/// The counters `/proc/meminfo` is computed from.
#[derive(Debug, Clone)]
pub struct MemLayout {
    /// `node_stat_item` and `zone_stat_item` indices by enumerator name; an item this kernel
    /// lacks is absent (and so is the meminfo line that shows it).
    pub node_items: std::collections::BTreeMap<&'static str, u64>,
    pub zone_items: std::collections::BTreeMap<&'static str, u64>,
    pub pgdat_node_zones: u64,
    pub zone_size: u64,
    pub zones_per_node: u64,
    pub zone_watermark_low: u64,
    pub zone_watermark_boost: u64,
    pub percpu_counter_count: u64,
    pub percpu_counter_counters: u64,
    pub hstate: Option<HstateLayout>,
    pub blockdev_inodes: Option<BlockdevLayout>,
}

#[derive(Debug, Clone)]
pub struct HstateLayout {
    pub size: u64,
    pub order: u64,
    pub nr_huge_pages: u64,
    pub free_huge_pages: u64,
    pub resv_huge_pages: u64,
    pub surplus_huge_pages: u64,
}

/// Block device inodes, whose page caches are meminfo's `Buffers`.
#[derive(Debug, Clone)]
pub struct BlockdevLayout {
    pub sb_inodes: u64,
    pub inode_sb_list: u64,
    pub inode_mapping: u64,
    pub mapping_nrpages: u64,
}

pub const NODE_STAT_ITEMS: [&str; 24] = [
    "NR_FILE_PAGES",
    "NR_SWAPCACHE",
    "NR_INACTIVE_ANON",
    "NR_ACTIVE_ANON",
    "NR_INACTIVE_FILE",
    "NR_ACTIVE_FILE",
    "NR_UNEVICTABLE",
    "NR_SLAB_RECLAIMABLE_B",
    "NR_SLAB_UNRECLAIMABLE_B",
    "NR_KERNEL_MISC_RECLAIMABLE",
    "NR_FILE_DIRTY",
    "NR_WRITEBACK",
    "NR_ANON_MAPPED",
    "NR_FILE_MAPPED",
    "NR_SHMEM",
    "NR_KERNEL_STACK_KB",
    "NR_PAGETABLE",
    "NR_SECONDARY_PAGETABLE",
    "NR_WRITEBACK_TEMP",
    "NR_ANON_THPS",
    "NR_SHMEM_THPS",
    "NR_SHMEM_PMDMAPPED",
    "NR_FILE_THPS",
    "NR_FILE_PMDMAPPED",
];

pub const ZONE_STAT_ITEMS: [&str; 4] = ["NR_FREE_PAGES", "NR_MLOCK", "NR_BOUNCE", "NR_FREE_CMA_PAGES"];

impl MemLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "/proc/meminfo",
        };
        let items = |ty: &str, names: &[&'static str]| {
            names
                .iter()
                .filter_map(|n| Some((*n, r.index(ty, n).ok()?)))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let zone_size = r.struct_size("zone")?;
        let zones_len = r.size("pglist_data", "node_zones")?;
        Ok(Self {
            node_items: items("node_stat_item", &NODE_STAT_ITEMS),
            zone_items: items("zone_stat_item", &ZONE_STAT_ITEMS),
            pgdat_node_zones: r.off("pglist_data", "node_zones")?,
            zone_size,
            zones_per_node: zones_len.checked_div(zone_size).unwrap_or(0),
            zone_watermark_low: r
                .off("zone", "_watermark")?
                .wrapping_add(8 * r.index("zone_watermarks", "WMARK_LOW")?),
            zone_watermark_boost: r.off("zone", "watermark_boost")?,
            percpu_counter_count: r.off("percpu_counter", "count")?,
            percpu_counter_counters: r.off("percpu_counter", "counters")?,
            hstate: (|| {
                Some(HstateLayout {
                    size: types.struct_size("hstate")?,
                    order: types.member_offset("hstate", "order")?,
                    nr_huge_pages: types.member_offset("hstate", "nr_huge_pages")?,
                    free_huge_pages: types.member_offset("hstate", "free_huge_pages")?,
                    resv_huge_pages: types.member_offset("hstate", "resv_huge_pages")?,
                    surplus_huge_pages: types.member_offset("hstate", "surplus_huge_pages")?,
                })
            })(),
            blockdev_inodes: (|| {
                Some(BlockdevLayout {
                    sb_inodes: types.member_offset("super_block", "s_inodes")?,
                    inode_sb_list: types.member_offset("inode", "i_sb_list")?,
                    inode_mapping: types.member_offset("inode", "i_mapping")?,
                    mapping_nrpages: types.member_offset("address_space", "nrpages")?,
                })
            })(),
        })
    }
}

/// `struct swap_info_struct` as `/proc/swaps` prints it.
#[derive(Debug, Clone)]
pub struct SwapLayout {
    pub flags: u64,
    pub prio: u64,
    pub pages: u64,
    pub inuse_pages: u64,
    pub swap_file: u64,
    pub file_path: u64,
    pub file_inode: u64,
    pub inode_mode: u64,
}

impl SwapLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "/proc/swaps",
        };
        Ok(Self {
            flags: r.off("swap_info_struct", "flags")?,
            prio: r.off("swap_info_struct", "prio")?,
            pages: r.off("swap_info_struct", "pages")?,
            inuse_pages: r.off("swap_info_struct", "inuse_pages")?,
            swap_file: r.off("swap_info_struct", "swap_file")?,
            file_path: r.off("file", "f_path")?,
            file_inode: r.off("file", "f_inode")?,
            inode_mode: r.off("inode", "i_mode")?,
        })
    }
}

/// `struct tty_driver` as `/proc/tty/drivers` prints it, and the values of its type and
/// subtype codes.
#[derive(Debug, Clone)]
pub struct TtyDriverLayout {
    pub list: u64,
    pub driver_name: u64,
    pub name: u64,
    pub major: u64,
    pub minor_start: u64,
    pub num: u64,
    /// `type` and `subtype` as (offset, size): `short` until the codes became enums (6.16).
    pub kind: (u64, u64),
    pub subtype: (u64, u64),
    /// Codes of `TTY_DRIVER_TYPE_{SYSTEM,CONSOLE,SERIAL,PTY}`, `SYSTEM_TYPE_{TTY,CONSOLE,
    /// SYSCONS}` and `PTY_TYPE_{MASTER,SLAVE}`.
    pub types: [i128; 4],
    pub system_subtypes: [i128; 3],
    pub pty_subtypes: [i128; 2],
}

impl TtyDriverLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "/proc/tty/drivers",
        };
        let f = |m: &str| Ok::<_, LayoutError>((r.off("tty_driver", m)?, r.size("tty_driver", m)?));
        // Enumerators since 6.16 (types then count from 0); before, `#define`s that BTF does
        // not carry, with these values.
        let code = |ty: &str, name: &str, define: i128| types.enum_value(ty, name).unwrap_or(define);
        let t = |name: &str, define: i128| code("tty_driver_type", name, define);
        let st = |name: &str, define: i128| code("tty_driver_subtype", name, define);
        Ok(Self {
            list: r.off("tty_driver", "tty_drivers")?,
            driver_name: r.off("tty_driver", "driver_name")?,
            name: r.off("tty_driver", "name")?,
            major: r.off("tty_driver", "major")?,
            minor_start: r.off("tty_driver", "minor_start")?,
            num: r.off("tty_driver", "num")?,
            kind: f("type")?,
            subtype: f("subtype")?,
            types: [
                t("TTY_DRIVER_TYPE_SYSTEM", 1),
                t("TTY_DRIVER_TYPE_CONSOLE", 2),
                t("TTY_DRIVER_TYPE_SERIAL", 3),
                t("TTY_DRIVER_TYPE_PTY", 4),
            ],
            system_subtypes: [
                st("SYSTEM_TYPE_TTY", 1),
                st("SYSTEM_TYPE_CONSOLE", 2),
                st("SYSTEM_TYPE_SYSCONS", 3),
            ],
            pty_subtypes: [st("PTY_TYPE_MASTER", 1), st("PTY_TYPE_SLAVE", 2)],
        })
    }
}

/// Records every question the layouts ask, answering from `inner`.
struct Recorder<'a> {
    inner: &'a dyn TypeInfo,
    asked: std::cell::RefCell<Vec<(&'static str, String, String)>>,
}

impl TypeInfo for Recorder<'_> {
    fn member_offset(&self, ty: &str, member: &str) -> Option<u64> {
        self.asked
            .borrow_mut()
            .push(("offset", ty.to_owned(), member.to_owned()));
        self.inner.member_offset(ty, member)
    }

    fn struct_size(&self, ty: &str) -> Option<u64> {
        self.asked.borrow_mut().push(("size", ty.to_owned(), String::new()));
        self.inner.struct_size(ty)
    }

    fn member_size(&self, ty: &str, member: &str) -> Option<u64> {
        self.asked
            .borrow_mut()
            .push(("member size", ty.to_owned(), member.to_owned()));
        self.inner.member_size(ty, member)
    }

    fn enum_value(&self, ty: &str, name: &str) -> Option<i128> {
        self.asked
            .borrow_mut()
            .push(("enum value", ty.to_owned(), name.to_owned()));
        self.inner.enum_value(ty, name)
    }
}

/// Where `given` answers differently from `reference` for any layout the snapshot uses, as
/// readable lines (`task_struct.pid: offset 2424, kernel has 2416`). Empty when they agree.
pub fn layout_differences(reference: &dyn TypeInfo, given: &dyn TypeInfo) -> Vec<String> {
    let recorder = Recorder {
        inner: reference,
        asked: Default::default(),
    };
    // Asked of the kernel's own types, these are exactly the questions the walk will ask.
    let _ = UtsLayout::resolve(&recorder);
    let _ = TaskLayout::resolve(&recorder);
    let _ = FsTypeLayout::resolve(&recorder);
    let _ = ModuleLayout::resolve(&recorder);
    let _ = CtlTableLayout::resolve(&recorder);
    let _ = NetConfLayout::resolve(&recorder);
    let _ = DevinetConfLayout::resolve(&recorder);
    let _ = MountLayout::resolve(&recorder);
    let _ = NetDevLayout::resolve(&recorder);
    let _ = TaskDetailLayout::resolve(&recorder);
    let _ = CpuStatLayout::resolve(&recorder);
    let _ = TimekeeperLayout::resolve(&recorder);
    let _ = CpuInfoLayout::resolve(&recorder);
    let _ = MemLayout::resolve(&recorder);
    let _ = SwapLayout::resolve(&recorder);
    let _ = TtyDriverLayout::resolve(&recorder);
    let _ = FsOptionsLayout::resolve(&recorder);
    let show = |v: Option<u64>| v.map_or_else(|| "none".to_owned(), |v| v.to_string());
    recorder
        .asked
        .into_inner()
        .into_iter()
        .filter_map(|(what, ty, member)| {
            let (want, got) = match what {
                "offset" => (reference.member_offset(&ty, &member), given.member_offset(&ty, &member)),
                "enum value" => (
                    reference.enum_value(&ty, &member).map(|v| v as u64),
                    given.enum_value(&ty, &member).map(|v| v as u64),
                ),
                "size" => (reference.struct_size(&ty), given.struct_size(&ty)),
                _ => (reference.member_size(&ty, &member), given.member_size(&ty, &member)),
            };
            let name = if member.is_empty() {
                ty
            } else {
                format!("{ty}.{member}")
            };
            (want != got).then(|| format!("{name}: {what} {}, kernel has {}", show(got), show(want)))
        })
        .collect()
}
