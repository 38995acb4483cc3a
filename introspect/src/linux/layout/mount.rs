//! Filesystem types, the mount tree and the per-filesystem options `/proc/mounts` prints.

use super::{LayoutError, Resolver, TypeInfo};

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
