//! The shadow `/proc`: the guest's procfs rendered from an [`introspect::linux::GuestSnapshot`]
//! in the kernel's own formats, and a read-only FUSE filesystem serving it inside the
//! emulator's sandbox.
//!
//! - [`render`] / [`ProcTree`]: pure rendering. A path that the snapshot cannot back does not
//!   exist (ENOENT); nothing is ever taken from dom0 for the guest's files, and no value is
//!   made up: where the snapshot lacks a field the file is absent, or holds only the lines (or,
//!   for positional formats like `PID/stat`, the leading fields) that it can back.
//! - [`serve`] / [`spawn`]: the FUSE filesystem (`fsname=proc`, `ro`, `allow_other`,
//!   `default_permissions`, `auto_unmount`). Generated files have size 0 like procfs; reads at
//!   any offset serve slices of one rendering. Guest files are immutable (the snapshot never
//!   changes) and rendered once; with FUSE passthrough (kernel ≥ 6.9, server with
//!   CAP_SYS_ADMIN) each becomes a sealed memfd in the kernel, so an `open` costs one round
//!   trip to the server and reads none (without it, or with
//!   [`ShadowFs::without_passthrough`], every read(2) is one round trip: direct I/O, as i_size
//!   is 0). `sys/kernel/random/uuid` and the caller's own files are read per
//!   `open` and served from the server.
//!
//! # `self` and `thread-self`
//! The update manager and its children really run in dom0, so `/proc/self` must be *their*
//! process, while the guest's processes keep their guest pids in the same directory. A caller's
//! pid may well equal a guest pid (both count up from 1), so `self` never points at a numeric
//! entry. The rule:
//!
//! - `self` is a symlink to `.dormouse-caller/<tgid>` and `thread-self` to
//!   `.dormouse-caller/<tgid>/task/<tid>`, where `<tid>` is the calling thread and `<tgid>` its
//!   thread group, as the FUSE server's pid namespace numbers them (the target is read per
//!   request and never cached).
//! - `.dormouse-caller/<tgid>/...` is dom0's real `/proc/<tgid>/...` for that caller: `fd/`
//!   (symlink targets read from dom0), `fdinfo/`, `exe`, `status`, `maps`, `mountinfo`,
//!   `environ`, and so on; files are read whole at open (at most 16 MiB).
//! - Only the caller itself can reach `.dormouse-caller/<tgid>`: any other pid there is ENOENT,
//!   and `.dormouse-caller` is not listed in the root directory. Numeric entries are always the
//!   guest's processes.
//!
//! Programs that `readlink("/proc/self")` to learn their own pid get a non-numeric answer; use
//! `getpid()`. Everything that *opens* paths under `/proc/self/` works.
//!
//! # Deviations from procfs, by design
//! - `mounts` is the guest's mount table (a file), not a symlink to `self/mounts`: `self` is
//!   the dom0 caller, whose mount table is dom0's sandbox.
//! - `mounts` carries the filesystem-specific options of tmpfs (devtmpfs, rootfs), devpts,
//!   proc and sysfs; other filesystems (ext4, cgroup, ...) show their generic options only, and
//!   the snapshot's warnings name each such mount.
//! - `PID/wchan` does not exist: the kernel finds the wait channel by unwinding the task's
//!   kernel stack with its ORC tables, which the snapshot does not carry (`ps -o wchan` shows `?`).

pub mod fs;
pub mod render;

pub use fs::{MountError, Mounted, ShadowFs, mount_config, serve, spawn};
pub use render::{Attr, DirEntry, Kind, ProcTree, RenderError, Rendered, normalize, render};
