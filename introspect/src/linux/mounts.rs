//! `/proc/filesystems` and init's `/proc/mounts`, and the kernel's path walk
//! (`prepend_path()`) that also names tasks' root, cwd and exe and the swap files.

use super::extract::{ExtractError, KernelView};
use super::layout::{FsOptionsLayout, FsTypeLayout, MountLayout};
use super::snapshot::{FilesystemType, Mount};
use crate::octal_escape::escape;

type Result<T> = std::result::Result<T, ExtractError>;

const FS_REQUIRES_DEV: u32 = 1;

impl KernelView<'_> {
    pub fn filesystems(&self) -> Result<Vec<FilesystemType>> {
        let l = FsTypeLayout::resolve(self.types)?;
        let r = self.reader();
        let first = r.u64(self.symbol("file_systems")?, "file_systems")?;
        r.chain(first, l.next, "the file_systems chain")?
            .into_iter()
            .map(|fs| {
                let name_ptr = r.u64(fs.wrapping_add(l.name), "file_system_type.name")?;
                Ok(FilesystemType {
                    name: r.c_string(name_ptr, 256, "file_system_type.name")?,
                    nodev: r.u32(fs.wrapping_add(l.fs_flags), "file_system_type.fs_flags")? & FS_REQUIRES_DEV == 0,
                })
            })
            .collect()
    }

    /// Init's root directory as (vfsmount, dentry): the root guest paths are shown from.
    pub(super) fn init_root(&self, l: &MountLayout) -> Result<(u64, u64)> {
        let r = self.reader();
        let init = self.find_task(1)?;
        let fs = r.u64(init.wrapping_add(l.task_fs), "task_struct.fs")?;
        let root_mnt = r.u64(
            fs.wrapping_add(l.fs_root).wrapping_add(l.path_mnt),
            "fs_struct.root.mnt",
        )?;
        let root_dentry = r.u64(
            fs.wrapping_add(l.fs_root).wrapping_add(l.path_dentry),
            "fs_struct.root.dentry",
        )?;
        Ok((root_mnt, root_dentry))
    }

    /// `/proc/1/mounts`: the mounts of init's namespace that are visible from its root, in
    /// namespace order, with the generic options and the filesystem-specific ones
    /// [`fs_options`](Self::fs_options) can render; what it cannot is among the warnings.
    pub fn mounts(&self) -> Result<(Vec<Mount>, Vec<String>)> {
        let l = MountLayout::resolve(self.types)?;
        let r = self.reader();
        let mut warnings = Vec::new();
        let init = self.find_task(1)?;
        let (root_mnt, root_dentry) = self.init_root(&l)?;
        let nsproxy = r.u64(init.wrapping_add(l.task_nsproxy), "task_struct.nsproxy")?;
        let ns = r.u64(nsproxy.wrapping_add(l.nsproxy_mnt_ns), "nsproxy.mnt_ns")?;
        let mounts = match (l.ns_list, l.mount_list, l.ns_rbtree, l.mount_node) {
            (Some(list), Some(link), _, _) => r.list(ns.wrapping_add(list), link, "mnt_namespace.list")?,
            (_, _, Some(tree), Some(node)) => {
                self.rbtree(r.u64(ns.wrapping_add(tree), "mnt_namespace.mounts")?, node)?
            }
            _ => {
                return Err(ExtractError::Invalid(
                    "no way to enumerate mounts in this kernel".into(),
                ));
            }
        };
        let fs_opts = FsOptionsLayout::resolve(self.types)
            .map_err(|e| warnings.push(format!("/proc/mounts: filesystem-specific options left out: {e}")))
            .ok();
        // totalram_pages(), against which shmem compares its limits.
        let totalram = self
            .symbols
            .address("_totalram_pages")
            .and_then(|a| r.u64(a, "_totalram_pages").ok());
        let mut out = Vec::new();
        for m in mounts {
            let vfs = m.wrapping_add(l.mount_mnt);
            let mnt_root = r.u64(vfs.wrapping_add(l.vfsmount_root), "vfsmount.mnt_root")?;
            let Some(mountpoint) = self.prepend_path(&l, vfs, mnt_root, (root_mnt, root_dentry))? else {
                continue; // outside init's root, as /proc/mounts skips it
            };
            let sb = r.u64(vfs.wrapping_add(l.vfsmount_sb), "vfsmount.mnt_sb")?;
            let fs_type = r.u64(sb.wrapping_add(l.sb_type), "super_block.s_type")?;
            let fstype = r.c_string(
                r.u64(fs_type.wrapping_add(l.fs_type_name), "file_system_type.name")?,
                256,
                "fs name",
            )?;
            let devname = match r.u64(m.wrapping_add(l.mount_devname), "mount.mnt_devname")? {
                0 => "none".to_owned(),
                p => r.c_string(p, 4096, "mount.mnt_devname")?,
            };
            let mnt_flags = r.u32(vfs.wrapping_add(l.vfsmount_flags), "vfsmount.mnt_flags")?;
            let sb_flags = r.u64(sb.wrapping_add(l.sb_flags), "super_block.s_flags")?;
            let mut options = mount_options(mnt_flags, sb_flags);
            match fs_opts.as_ref().map(|fo| self.fs_options(fo, sb, totalram)) {
                Some(Ok(specific)) => {
                    options.push_str(&specific.text);
                    if let Some(missing) = specific.missing {
                        warnings.push(format!(
                            "/proc/mounts: {} ({fstype}): {missing} left out",
                            escape(&mountpoint)
                        ));
                    }
                }
                Some(Err(e)) => warnings.push(format!(
                    "/proc/mounts: {} ({fstype}): options: {e}",
                    escape(&mountpoint)
                )),
                None => {}
            }
            out.push(Mount {
                device: devname,
                mountpoint,
                fstype,
                options,
            });
        }
        Ok((out, warnings))
    }

    /// In-order walk of a kernel rbtree whose nodes sit `node_offset` into their containers.
    fn rbtree(&self, root: u64, node_offset: u64) -> Result<Vec<u64>> {
        const RB_RIGHT: u64 = 8;
        const RB_LEFT: u64 = 16;
        let r = self.reader();
        let mut out = Vec::new();
        let mut stack = Vec::new();
        let mut node = root;
        let mut steps = 0usize;
        while node != 0 || !stack.is_empty() {
            steps += 1;
            if steps > 2 * super::reader::MAX_LIST_LEN {
                return Err(ExtractError::Invalid(format!(
                    "rbtree at {root:#x} does not end (corrupt or hostile)"
                )));
            }
            while node != 0 {
                if stack.len() > 64 {
                    return Err(ExtractError::Invalid(format!(
                        "rbtree at {root:#x} deeper than 64 levels"
                    )));
                }
                stack.push(node);
                node = r.u64(node.wrapping_add(RB_LEFT), "rb_node.rb_left")?;
            }
            let Some(top) = stack.pop() else { break };
            out.push(top.wrapping_sub(node_offset));
            node = r.u64(top.wrapping_add(RB_RIGHT), "rb_node.rb_right")?;
        }
        Ok(out)
    }

    /// The kernel's `prepend_path()`: the path of (vfsmount, dentry) as seen from `root`, or
    /// `None` when it is not below `root`.
    pub(super) fn prepend_path(
        &self,
        l: &MountLayout,
        mut vfs: u64,
        mut dentry: u64,
        root: (u64, u64),
    ) -> Result<Option<String>> {
        const MAX_DEPTH: usize = 4096;
        let r = self.reader();
        let mut names = Vec::new();
        for _ in 0..MAX_DEPTH {
            if (vfs, dentry) == root {
                names.reverse();
                return Ok(Some(format!("/{}", names.join("/"))));
            }
            let mnt_root = r.u64(vfs.wrapping_add(l.vfsmount_root), "vfsmount.mnt_root")?;
            let parent_dentry = r.u64(dentry.wrapping_add(l.dentry_parent), "dentry.d_parent")?;
            if dentry == mnt_root || parent_dentry == dentry {
                let mount = vfs.wrapping_sub(l.mount_mnt);
                let parent = r.u64(mount.wrapping_add(l.mount_parent), "mount.mnt_parent")?;
                if parent == mount {
                    return Ok(None);
                }
                dentry = r.u64(mount.wrapping_add(l.mount_mountpoint), "mount.mnt_mountpoint")?;
                vfs = parent.wrapping_add(l.mount_mnt);
                continue;
            }
            let name = r.c_string(
                r.u64(dentry.wrapping_add(l.dentry_name), "dentry.d_name.name")?,
                256,
                "dentry name",
            )?;
            names.push(name);
            dentry = parent_dentry;
        }
        Err(ExtractError::Invalid(format!(
            "path of dentry {dentry:#x} deeper than {MAX_DEPTH} components"
        )))
    }
}

/// The generic part of a `/proc/mounts` option string (`show_sb_opts` + `show_mnt_opts`);
/// filesystem-specific options (`size=`, `mode=`, ...) come from driver code and are absent.
fn mount_options(mnt_flags: u32, sb_flags: u64) -> String {
    const SB_RDONLY: u64 = 1;
    const MNT_READONLY: u32 = 0x40;
    let mut opts = vec![if sb_flags & SB_RDONLY != 0 || mnt_flags & MNT_READONLY != 0 {
        "ro"
    } else {
        "rw"
    }];
    for (bit, name) in [
        (0x10u64, "sync"),
        (0x80, "dirsync"),
        (0x40, "mand"),
        (1 << 25, "lazytime"),
    ] {
        if sb_flags & bit != 0 {
            opts.push(name);
        }
    }
    for (bit, name) in [
        (1u32, "nosuid"),
        (2, "nodev"),
        (4, "noexec"),
        (8, "noatime"),
        (0x10, "nodiratime"),
        (0x20, "relatime"),
    ] {
        if mnt_flags & bit != 0 {
            opts.push(name);
        }
    }
    opts.join(",")
}

#[cfg(test)]
mod tests {
    use crate::linux::extract::tests::{BASE, view};
    use crate::linux::reader::tests::FlatMemory;

    /// Names are kept as the kernel holds them: escaping is the renderer's job, once (it
    /// was escaped here and again when /proc/mounts was rendered).
    #[test]
    fn mount_names_are_extracted_unescaped() {
        let mut mem = FlatMemory {
            base: BASE,
            bytes: vec![0; 0x1000],
        };
        let at = |offset: u64| BASE + offset;
        let put_str = |mem: &mut FlatMemory, offset: u64, text: &str| {
            let start = offset as usize;
            mem.bytes[start..start + text.len()].copy_from_slice(text.as_bytes());
            at(offset)
        };
        let (task, fs, nsproxy, ns) = (at(0x200), at(0x300), at(0x340), at(0x380));
        let (root_mount, mount) = (at(0x400), at(0x480));
        let (root_dentry, dir, mnt, mounted_root, sb, fs_type) =
            (at(0x500), at(0x520), at(0x540), at(0x560), at(0x580), at(0x5a0));
        mem.put_u64(BASE, task); // init_task.tasks -> pid 1 -> init_task
        mem.put_u64(task, BASE);
        mem.put_u64(task + 0x10, 1);
        mem.put_u64(task + 0x68, fs);
        mem.put_u64(task + 0x70, nsproxy);
        mem.put_u64(fs, root_mount + 0x20); // fs.root = (root vfsmount, root dentry)
        mem.put_u64(fs + 8, root_dentry);
        mem.put_u64(nsproxy, ns);
        mem.put_u64(ns, root_mount); // ns.list -> root mount -> mount -> ns
        mem.put_u64(root_mount, mount);
        mem.put_u64(mount, ns);
        for (m, parent, mountpoint, root, devname) in [
            (root_mount, root_mount, root_dentry, root_dentry, "/dev/root"),
            (mount, root_mount, dir, mounted_root, "/dev/a b"),
        ] {
            mem.put_u64(m + 0x10, parent);
            mem.put_u64(m + 0x18, mountpoint);
            mem.put_u64(m + 0x20, root);
            mem.put_u64(m + 0x28, sb);
            let name = put_str(&mut mem, if m == mount { 0x700 } else { 0x680 }, devname);
            mem.put_u64(m + 0x40, name);
        }
        // dentries: / (its own parent), /mnt, /mnt/<name>, and the mounted root.
        let name = put_str(&mut mem, 0x800, "a b\tc\nd\\e");
        for (dentry, name, parent) in [
            (root_dentry, at(0x900), root_dentry),
            (mnt, put_str(&mut mem, 0x880, "mnt"), root_dentry),
            (dir, name, mnt),
            (mounted_root, at(0x900), mounted_root),
        ] {
            mem.put_u64(dentry, name);
            mem.put_u64(dentry + 8, parent);
        }
        mem.put_u64(sb, fs_type);
        let ext4 = put_str(&mut mem, 0x980, "ext4");
        mem.put_u64(fs_type, ext4);
        let (mounts, _) = view(&mem, &|_| None).mounts().unwrap();
        let names: Vec<(&str, &str)> = mounts
            .iter()
            .map(|m| (m.device.as_str(), m.mountpoint.as_str()))
            .collect();
        assert_eq!(names, [("/dev/root", "/"), ("/dev/a b", "/mnt/a b\tc\nd\\e")]);
    }
}
