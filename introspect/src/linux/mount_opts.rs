//! The filesystem-specific part of a `/proc/mounts` line: what `sb->s_op->show_options()`
//! appends. The function is told by its symbol name; those whose output is a plain function
//! of fields of `s_fs_info` are rendered here, as Linux 6.1 prints them (mm/shmem.c,
//! fs/devpts/inode.c, fs/proc/root.c, fs/kernfs/mount.c). Any other one (ext4's, cgroup's,
//! ...) leaves the line with its generic options and a warning saying so.

use std::fmt::Write as _;

use super::extract::{ExtractError, KernelView};
use super::layout::FsOptionsLayout;
use super::reader::KernelReader;

/// `NR_UNIX98_PTY_MAX`: devpts prints `max=` only below it.
const NR_UNIX98_PTY_MAX: u32 = 1 << 20;
/// `MPOL_DEFAULT`: shmem prints no `mpol=` for it.
const MPOL_DEFAULT: u16 = 0;

/// The options appended for one superblock, and what could not be rendered.
pub(super) struct FsOptions {
    pub text: String,
    pub missing: Option<String>,
}

impl KernelView<'_> {
    /// `sb->s_op->show_options(seq, root)` for superblock `sb`. `totalram` is
    /// `totalram_pages()`, against which shmem compares its limits.
    pub(super) fn fs_options(
        &self,
        l: &FsOptionsLayout,
        sb: u64,
        totalram: Option<u64>,
    ) -> Result<FsOptions, ExtractError> {
        let r = self.reader();
        let ops = r.u64(sb.wrapping_add(l.sb_op), "super_block.s_op")?;
        let show = r.u64(ops.wrapping_add(l.show_options), "super_operations.show_options")?;
        let mut out = FsOptions {
            text: String::new(),
            missing: None,
        };
        if show == 0 {
            return Ok(out);
        }
        // A module's function (ext4 built as a module) has no name in the kernel's symbols.
        let name = self
            .symbols
            .name_at(show)
            .unwrap_or_else(|| format!("the function at {show:#x}"));
        let info = r.u64(sb.wrapping_add(l.sb_fs_info), "super_block.s_fs_info")?;
        let rendered = match name.as_str() {
            "shmem_show_options" => l.shmem.as_ref().zip(totalram).map(|(s, totalram)| {
                let at = |off: u64| info.wrapping_add(off);
                let t = &mut out.text;
                // shmem_default_max_blocks() and _max_inodes(): half of RAM (no highmem on
                // x86-64).
                let half = totalram / 2;
                let max_blocks = r.u64(at(s.max_blocks), "shmem_sb_info.max_blocks")?;
                if max_blocks != half {
                    let _ = write!(t, ",size={}k", max_blocks.wrapping_shl(2));
                }
                let max_inodes = r.u64(at(s.max_inodes), "shmem_sb_info.max_inodes")?;
                if max_inodes != half {
                    let _ = write!(t, ",nr_inodes={max_inodes}");
                }
                let mode = u16_at(&r, at(s.mode), "shmem_sb_info.mode")?;
                if mode != 0o1777 {
                    let _ = write!(t, ",mode={mode:03o}");
                }
                ids(&r, t, Some(at(s.uid)), Some(at(s.gid)), true)?;
                // `inode32` is also shown for a kernel built with CONFIG_TMPFS_INODE64, which
                // memory does not tell; only `inode64` is certain.
                if byte_at(&r, at(s.full_inums), "shmem_sb_info.full_inums")? != 0 {
                    t.push_str(",inode64");
                } else {
                    out.missing = Some("shmem's inode32 (shown only under CONFIG_TMPFS_INODE64)".into());
                }
                let huge = byte_at(&r, at(s.huge), "shmem_sb_info.huge")? as i8;
                if let Some(h) = match huge {
                    0 => None,
                    1 => Some("always"),
                    2 => Some("within_size"),
                    3 => Some("advise"),
                    -1 => Some("deny"),
                    -2 => Some("force"),
                    _ => Some("bad_val"),
                } {
                    let _ = write!(t, ",huge={h}");
                }
                let mpol = r.u64(at(s.mpol), "shmem_sb_info.mpol")?;
                if mpol != 0 && u16_at(&r, mpol.wrapping_add(s.mempolicy_mode), "mempolicy.mode")? != MPOL_DEFAULT {
                    out.missing = Some("shmem's mpol= (a NUMA policy)".into());
                }
                if let Some(noswap) = s.noswap
                    && byte_at(&r, at(noswap), "shmem_sb_info.noswap")? != 0
                {
                    t.push_str(",noswap");
                }
                Ok::<_, ExtractError>(())
            }),
            "devpts_show_options" => l.devpts.as_ref().map(|d| {
                let at = |off: u64| info.wrapping_add(off);
                let t = &mut out.text;
                let setuid = r.i32(at(d.setuid), "pts_mount_opts.setuid")? != 0;
                let setgid = r.i32(at(d.setgid), "pts_mount_opts.setgid")? != 0;
                ids(&r, t, setuid.then(|| at(d.uid)), setgid.then(|| at(d.gid)), false)?;
                let _ = write!(t, ",mode={:03o}", u16_at(&r, at(d.mode), "pts_mount_opts.mode")?);
                let _ = write!(
                    t,
                    ",ptmxmode={:03o}",
                    u16_at(&r, at(d.ptmxmode), "pts_mount_opts.ptmxmode")?
                );
                let max = r.i32(at(d.max), "pts_mount_opts.max")?;
                if max < NR_UNIX98_PTY_MAX as i32 {
                    let _ = write!(t, ",max={max}");
                }
                Ok(())
            }),
            "proc_show_options" => l.proc_fs.as_ref().map(|p| {
                let at = |off: u64| info.wrapping_add(off);
                let t = &mut out.text;
                ids(&r, t, None, Some(at(p.pid_gid)), true)?;
                let hide = r.i32(at(p.hide_pid), "proc_fs_info.hide_pid")? as i128;
                let (off, _) = p.hidepid_names.first().copied().unwrap_or((0, "off"));
                if hide != off {
                    let name = p
                        .hidepid_names
                        .iter()
                        .find(|(v, _)| *v == hide)
                        .map_or("unknown", |(_, n)| n);
                    let _ = write!(t, ",hidepid={name}");
                }
                if r.i32(at(p.pidonly), "proc_fs_info.pidonly")? != 0 {
                    t.push_str(",subset=pid");
                }
                Ok(())
            }),
            "kernfs_sop_show_options" => l.kernfs.as_ref().map(|k| {
                let root = r.u64(info.wrapping_add(k.info_root), "kernfs_super_info.root")?;
                let ops = r.u64(root.wrapping_add(k.root_syscall_ops), "kernfs_root.syscall_ops")?;
                if ops != 0 && r.u64(ops.wrapping_add(k.ops_show_options), "kernfs_syscall_ops.show_options")? != 0 {
                    out.missing = Some("the options of a kernfs filesystem with its own show_options (cgroup)".into());
                }
                Ok(())
            }),
            _ => None,
        };
        match rendered {
            Some(result) => result?,
            None => out.missing = Some(format!("the options printed by {name}")),
        }
        Ok(out)
    }
}

/// `,uid=` and `,gid=` of the ids at the given addresses (`from_k[ug]id_munged(&init_user_ns,
/// ...)`, the identity there), root's left out when `skip_root`.
fn ids(
    r: &KernelReader,
    t: &mut String,
    uid: Option<u64>,
    gid: Option<u64>,
    skip_root: bool,
) -> Result<(), ExtractError> {
    for (addr, key) in [(uid, "uid"), (gid, "gid")] {
        if let Some(addr) = addr {
            let id = r.u32(addr, key)?;
            if id != 0 || !skip_root {
                let _ = write!(t, ",{key}={id}");
            }
        }
    }
    Ok(())
}

fn u16_at(r: &KernelReader, addr: u64, what: &str) -> Result<u16, ExtractError> {
    let b = r.bytes(addr, 2, what)?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

fn byte_at(r: &KernelReader, addr: u64, what: &str) -> Result<u8, ExtractError> {
    Ok(r.bytes(addr, 1, what)?[0])
}
