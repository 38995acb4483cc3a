//! Where the fields the snapshot needs live in this kernel's structures.
//!
//! Offsets are looked up once, by name, in whatever type source the profile has (BTF carved
//! from RAM, BTF of the guest's vmlinuz, a Volatility ISF), and kept as plain numbers; the
//! walk itself never asks the type source again. Each feature resolves its own group so that
//! a kernel lacking, say, the module list still yields tasks.

/// A source of struct layouts.
pub trait TypeInfo {
    /// Byte offset of `member` — a dotted path that may cross anonymous unions/structs and
    /// named nested structs — inside struct or union `ty`.
    fn member_offset(&self, ty: &str, member: &str) -> Option<u64>;
    /// Size in bytes of struct or union `ty`.
    fn struct_size(&self, ty: &str) -> Option<u64>;
    /// Size in bytes of member `member` of `ty` (for inline arrays such as `comm[16]`).
    fn member_size(&self, ty: &str, member: &str) -> Option<u64>;
}

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
    pub refcnt: Option<u64>,
    pub size: ModuleSize,
}

impl ModuleLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "the module list",
        };
        let size = if let Some(mem) = types.member_offset("module", "mem") {
            let stride = r.struct_size("module_memory")?;
            let total = r.size("module", "mem")?;
            ModuleSize::MemArray {
                mem,
                stride,
                count: total.checked_div(stride).unwrap_or(0),
                size_in_mem: r.off("module_memory", "size")?,
            }
        } else {
            let offsets = ["core_layout", "init_layout", "data_layout"]
                .iter()
                .filter_map(|l| types.member_offset("module", l))
                .collect::<Vec<_>>();
            if offsets.is_empty() {
                return Err(r.missing("module", "core_layout"));
            }
            ModuleSize::Layouts {
                offsets,
                size_in_layout: r.off("module_layout", "size")?,
            }
        };
        Ok(Self {
            list: r.off("module", "list")?,
            name: r.off("module", "name")?,
            name_len: r.size("module", "name")?,
            state: r.off("module", "state")?,
            refcnt: types.member_offset("module", "refcnt"),
            size,
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
    let _ = MountLayout::resolve(&recorder);
    let _ = NetDevLayout::resolve(&recorder);
    let show = |v: Option<u64>| v.map_or_else(|| "none".to_owned(), |v| v.to_string());
    recorder
        .asked
        .into_inner()
        .into_iter()
        .filter_map(|(what, ty, member)| {
            let (want, got) = match what {
                "offset" => (reference.member_offset(&ty, &member), given.member_offset(&ty, &member)),
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
