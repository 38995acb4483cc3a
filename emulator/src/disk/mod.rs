//! Guest disks, attached read-only: partition tables, filesystem identification, loop
//! devices and mounts that can never write a byte of the image.

mod export;
mod format;
mod loopdev;
mod partition;
mod probe;
mod replay;
mod xl_config;

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use serde::Serialize;

pub use export::{ExportError, QemuExport};
pub use format::{FormatError, ImageFormat, resolve_format};
pub use loopdev::{LoopDevice, LoopError};
pub use partition::{Partition, PartitionError, PartitionTable, TableKind, read_partition_table};
pub use probe::{Filesystem, probe_filesystem};
pub use xl_config::{ConfigDisks, DiskSpec, NoConfigDisk, SkippedDisk, disks_from_config};

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("opening guest disk {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("guest disk {path}: {source}")]
    Table { path: PathBuf, source: PartitionError },
    #[error("probing partition {number} of {path} at byte offset {offset}: {source}")]
    Probe {
        path: PathBuf,
        number: u32,
        offset: u64,
        source: std::io::Error,
    },
    #[error("partition {number} of {path}: {source}")]
    Loop {
        path: PathBuf,
        number: u32,
        source: LoopError,
    },
    #[error(
        "partition {number} of {path} (byte offset {offset:#x}): mounting {device} ({fstype}) read-only on \
         {target}: {errno}{hint}",
        hint = if *errno == Errno::EBADMSG || *errno == Errno::EUCLEAN || *errno == Errno::EINVAL {
            "; the kernel found the filesystem damaged (its log says why: `dmesg | tail`)"
        } else {
            ""
        }
    )]
    Mount {
        path: PathBuf,
        number: u32,
        offset: u64,
        device: PathBuf,
        fstype: String,
        target: PathBuf,
        errno: Errno,
    },
    #[error("partition {number} of {path} holds no filesystem dormouse can mount (found: {found})")]
    NotMountable { path: PathBuf, number: u32, found: String },
    #[error("{path} has no partition {number}; it has {available}")]
    NoSuchPartition {
        path: PathBuf,
        number: u32,
        available: String,
    },
    #[error("reading {path} inside the guest tree at {root}: {source}")]
    GuestFile {
        root: PathBuf,
        path: String,
        source: std::io::Error,
    },
}

impl DiskError {
    /// A guest file that is not there (or not a readable file: a directory, a symlink loop),
    /// as opposed to one that could not be read.
    pub fn is_absent_guest_file(&self) -> bool {
        matches!(self, DiskError::GuestFile { source, .. }
        if matches!(
            source.raw_os_error(),
            Some(libc::ENOENT | libc::ENOTDIR | libc::EISDIR | libc::ELOOP)
        ))
    }
}

type Result<T> = std::result::Result<T, DiskError>;

/// One partition (or the whole unpartitioned disk) and what lives in it.
#[derive(Debug, Clone, Serialize)]
pub struct Volume {
    #[serde(flatten)]
    pub partition: Partition,
    pub filesystem: Option<Filesystem>,
}

/// A guest disk image or block device, opened read-only and described.
///
/// Clones share one qemu export (for non-raw images); it stops when the last clone and the
/// last mount made from them are gone.
#[derive(Debug, Clone, Serialize)]
pub struct GuestDisk {
    pub path: PathBuf,
    pub format: ImageFormat,
    pub size: u64,
    pub table: TableKind,
    pub volumes: Vec<Volume>,
    /// The qemu-storage-daemon export presenting a non-raw image as raw bytes.
    #[serde(skip)]
    export: Option<Arc<QemuExport>>,
}

impl GuestDisk {
    /// Opens a raw image or block device, or a non-raw image whose probed format is safe to
    /// follow (see [`resolve_format`]), exporting the latter from the system's temporary
    /// directory. Never writes.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_as(path, None, &std::env::temp_dir())
    }

    /// Opens `path` as the `declared` format (probing when `None`). A non-raw image is
    /// exported by `qemu-storage-daemon` on a file in `export_dir` (dormouse's state directory,
    /// so a crashed run's leftovers are found there). The daemon is tied to the calling thread
    /// through `PR_SET_PDEATHSIG`: open disks from a thread that outlives them.
    pub fn open_as(path: &Path, declared: Option<ImageFormat>, export_dir: &Path) -> Result<Self> {
        let format = resolve_format(path, declared)?;
        let export = match format {
            ImageFormat::Raw => None,
            format => Some(Arc::new(QemuExport::start(path, format, export_dir)?)),
        };
        let raw = export.as_ref().map_or(path, |e| e.path());
        let open_err = |source| DiskError::Open {
            path: raw.to_owned(),
            source,
        };
        let mut file = File::open(raw).map_err(open_err)?;
        let size = disk_size(&file).map_err(open_err)?;
        let table = read_partition_table(&mut file, size).map_err(|source| DiskError::Table {
            path: path.to_owned(),
            source,
        })?;
        let volumes = table
            .partitions
            .into_iter()
            .map(|partition| {
                let filesystem = probe_filesystem(&mut file, partition.start, partition.size).map_err(|source| {
                    DiskError::Probe {
                        path: path.to_owned(),
                        number: partition.number,
                        offset: partition.start,
                        source,
                    }
                })?;
                Ok(Volume { partition, filesystem })
            })
            .collect::<Result<_>>()?;
        drop(file);
        Ok(Self {
            path: path.to_owned(),
            format,
            size,
            table: table.kind,
            volumes,
            export,
        })
    }

    /// The raw bytes of the disk: the image itself, or the qemu export of a non-raw one.
    pub fn raw_path(&self) -> &Path {
        self.export.as_ref().map_or(&self.path, |e| e.path())
    }

    pub fn volume(&self, number: u32) -> Result<&Volume> {
        self.volumes
            .iter()
            .find(|v| v.partition.number == number)
            .ok_or_else(|| {
                let available: Vec<String> = self.volumes.iter().map(|v| v.partition.number.to_string()).collect();
                DiskError::NoSuchPartition {
                    path: self.path.clone(),
                    number,
                    available: format!("partitions {}", available.join(", ")),
                }
            })
    }

    /// Mounts one volume read-only at `target` (which must exist).
    pub fn mount(&self, number: u32, target: &Path) -> Result<ReadOnlyMount> {
        let volume = self.volume(number)?;
        let fs = volume
            .filesystem
            .as_ref()
            .filter(|fs| mount_data(&fs.fstype).is_some())
            .ok_or_else(|| DiskError::NotMountable {
                path: self.path.clone(),
                number,
                found: volume
                    .filesystem
                    .as_ref()
                    .map_or("nothing recognisable".into(), |fs| fs.fstype.clone()),
            })?;
        ReadOnlyMount::new(self, &volume.partition, fs, target)
    }

    /// Finds the volume holding the guest's root filesystem by content: `/etc/fstab` and
    /// `/etc/os-release` must exist. Returns its number and the parsed os-release.
    pub fn find_root(&self, scratch: &Path) -> Result<Option<(u32, OsRelease)>> {
        Ok(self
            .find_root_mounted(scratch)?
            .map(|(number, os_release, _)| (number, os_release)))
    }

    /// [`GuestDisk::find_root`], leaving the root mounted at `target` for a caller that goes on
    /// to use it (probing mounts it anyway).
    pub fn find_root_mounted(&self, target: &Path) -> Result<Option<(u32, OsRelease, ReadOnlyMount)>> {
        for volume in &self.volumes {
            let mountable = volume
                .filesystem
                .as_ref()
                .is_some_and(|fs| mount_data(&fs.fstype).is_some());
            if !mountable {
                continue;
            }
            let mount = self.mount(volume.partition.number, target)?;
            let root = mount.open_root()?;
            // Absent files mean "not the root"; any other failure (EIO from a broken export,
            // a corrupt directory) is reported rather than taken for an answer.
            let present = |path: &str, limit: u64| match read_in_root(&root, mount.target(), path, limit) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.is_absent_guest_file() => Ok(None),
                Err(e) => Err(e),
            };
            let has_fstab = present("etc/fstab", 1 << 20)?.is_some();
            let os_release = present("etc/os-release", 1 << 16)?;
            drop(root);
            if let (true, Some(text)) = (has_fstab, os_release) {
                return Ok(Some((
                    volume.partition.number,
                    OsRelease::parse(&String::from_utf8_lossy(&text)),
                    mount,
                )));
            }
        }
        Ok(None)
    }
}

fn disk_size(file: &File) -> std::io::Result<u64> {
    use std::os::unix::fs::FileTypeExt;
    let meta = file.metadata()?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    if !meta.file_type().is_block_device() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "neither a regular file (disk image) nor a block device",
        ));
    }
    // Block devices report size 0 in metadata; ask the block layer.
    let mut size: u64 = 0;
    const BLKGETSIZE64: libc::c_ulong = 0x80081272;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which is valid for the call.
    Errno::result(unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &mut size) })?;
    Ok(size)
}

/// The options that keep a filesystem driver from writing to a device mounted read-only: a
/// suspended guest's journal is dirty, and replaying it would write the disk. ext3/ext4 are
/// replayed into a snapshot instead ([`replay`]); these options are their fallback.
fn mount_data(fstype: &str) -> Option<&'static str> {
    match fstype {
        "ext3" | "ext4" => Some("noload"),
        "ext2" => Some(""),
        "xfs" => Some("norecovery"),
        "btrfs" => Some("rescue=nologreplay"),
        _ => None,
    }
}

/// A guest filesystem mounted read-only (and nodev, nosuid: guest device nodes and setuid
/// binaries must not become dom0 privileges) on a loop device; unmounted when dropped.
#[derive(Debug)]
pub struct ReadOnlyMount {
    target: PathBuf,
    // Dropped after the unmount in `Drop`, so the device detaches, and then the export the
    // device reads from.
    _device: MountedDevice,
    _export: Option<Arc<QemuExport>>,
}

/// What a filesystem is mounted from: the read-only loop device, or a snapshot of it that its
/// journal was replayed into.
#[derive(Debug)]
enum MountedDevice {
    Loop(LoopDevice),
    Replayed(replay::ReplayDevice),
}

impl MountedDevice {
    fn path(&self) -> &Path {
        match self {
            MountedDevice::Loop(device) => device.path(),
            MountedDevice::Replayed(device) => device.path(),
        }
    }
}

/// Filesystems whose journal is replayed into a snapshot before they are read.
fn replays_journal(fstype: &str) -> bool {
    matches!(fstype, "ext3" | "ext4")
}

impl ReadOnlyMount {
    fn new(disk: &GuestDisk, partition: &Partition, fs: &Filesystem, target: &Path) -> Result<Self> {
        let read_only = || {
            LoopDevice::attach_read_only(disk.raw_path(), partition.start, partition.size).map_err(|source| {
                DiskError::Loop {
                    path: disk.path.clone(),
                    number: partition.number,
                    source,
                }
            })
        };
        let scratch = target.parent().unwrap_or(Path::new("/var/tmp"));
        let replayed = if replays_journal(&fs.fstype) {
            match replay::ReplayDevice::new(disk.raw_path(), partition.start, partition.size, scratch) {
                Ok(view) => Some(view),
                Err(e) => {
                    // Seen by the operator whatever the log level: the emulation then starts
                    // from an older state than the guest's.
                    eprintln!(
                        "dormouse: warning: partition {} of {}: its journal cannot be replayed into a \
                         copy-on-write view ({e}); reading it without the journal's last transactions \
                         (noload), which may show files older than the guest's",
                        partition.number,
                        disk.path.display()
                    );
                    None
                }
            }
        } else {
            None
        };
        // The replayed view is writable: the kernel replays the journal into its layer.
        let (device, data) = match replayed {
            Some(view) => (MountedDevice::Replayed(view), ""),
            None => (MountedDevice::Loop(read_only()?), mount_data(&fs.fstype).unwrap_or("")),
        };
        nix::mount::mount(
            Some(device.path()),
            target,
            Some(fs.fstype.as_str()),
            MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
            Some(data),
        )
        .map_err(|errno| DiskError::Mount {
            path: disk.path.clone(),
            number: partition.number,
            offset: partition.start,
            device: device.path().to_owned(),
            fstype: fs.fstype.clone(),
            target: target.to_owned(),
            errno,
        })?;
        // Private: mounts made on top of it later (the guest tree, overlays) must not propagate
        // back into dom0's shared mount tree, nor dom0's into it.
        nix::mount::mount(None::<&str>, target, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>).map_err(|errno| {
            let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
            DiskError::Mount {
                path: disk.path.clone(),
                number: partition.number,
                offset: partition.start,
                device: device.path().to_owned(),
                fstype: "(making the mount private)".into(),
                target: target.to_owned(),
                errno,
            }
        })?;
        Ok(Self {
            target: target.to_owned(),
            _device: device,
            _export: disk.export.clone(),
        })
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// An `O_PATH` descriptor of the mount's root, for reading guest files with
    /// [`read_in_root`].
    pub fn open_root(&self) -> Result<OwnedFd> {
        let file = File::open(&self.target).map_err(|source| DiskError::Open {
            path: self.target.clone(),
            source,
        })?;
        Ok(file.into())
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        if nix::mount::umount2(&self.target, MntFlags::empty()).is_err() {
            // Something still has a file open in it; detach now, the kernel finishes later.
            let _ = nix::mount::umount2(&self.target, MntFlags::MNT_DETACH);
        }
    }
}

/// A `--disk` argument, `PATH` or `PATH:N` (the root filesystem is partition N): the path and
/// the partition. A string that names an existing path is that path, whatever it ends in, so
/// device names ending in `:digits` (`/dev/disk/by-path/pci-0000:02:00.0-scsi-0:0:0:0`) are
/// not read as a partition of a disk that does not exist. Otherwise it splits at the last ':'
/// when only digits follow.
pub fn disk_and_partition(spec: &str) -> (PathBuf, Option<u32>) {
    // symlink_metadata: a dangling link is still the name given, and opening it says so.
    if std::fs::symlink_metadata(spec).is_ok() {
        return (PathBuf::from(spec), None);
    }
    match spec.rsplit_once(':') {
        Some((path, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => match n.parse() {
            Ok(n) => (PathBuf::from(path), Some(n)),
            Err(_) => (PathBuf::from(spec), None),
        },
        _ => (PathBuf::from(spec), None),
    }
}

/// Reads a file of the guest tree, resolving every symlink *inside* the guest root
/// (`RESOLVE_IN_ROOT`), so a hostile `/etc/os-release -> /etc/shadow` link reads the guest's
/// file, never dom0's. At most `limit` bytes are read.
pub fn read_in_root(root: &OwnedFd, root_path: &Path, path: &str, limit: u64) -> Result<Vec<u8>> {
    let err = |source| DiskError::GuestFile {
        root: root_path.to_owned(),
        path: path.to_owned(),
        source,
    };
    let file = File::from(open_in_root(root, path, libc::O_RDONLY).map_err(err)?);
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes).map_err(err)?;
    Ok(bytes)
}

/// openat2 attempts that may end in a raced `..` (EAGAIN) before the error is returned.
const OPENAT2_RETRIES: u32 = 1000;

/// Opens `path` of the guest tree under `root` with `flags` (`O_CLOEXEC` is added; a file
/// `O_CREAT` makes gets mode 0644), every symlink and `..` resolved inside the tree
/// (`RESOLVE_IN_ROOT`) and no magic links followed.
pub fn open_in_root(root: &OwnedFd, path: &str, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let c_path = std::ffi::CString::new(path).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut how: libc::open_how = unsafe_zeroed_open_how();
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = if flags & libc::O_CREAT != 0 { 0o644 } else { 0 };
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // With RESOLVE_IN_ROOT the kernel answers EAGAIN when any mount or rename anywhere on the
    // system raced with a `..` step (a guest's `/etc/os-release -> ../usr/lib/os-release`), as
    // it cannot then prove the step stayed inside; openat2(2) says to retry. Parallel mounts
    // (other runs, sandboxes being built) make that routine, so retry, boundedly.
    let mut attempts = 0;
    let fd = loop {
        // SAFETY: openat2 reads `how` (valid, sized) and the NUL-terminated path; it returns a
        // new fd or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                c_path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        match Errno::result(fd) {
            Err(Errno::EAGAIN) if attempts < OPENAT2_RETRIES => {
                attempts += 1;
                std::thread::yield_now();
            }
            result => break result?,
        }
    };
    // SAFETY: openat2 succeeded, so `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn unsafe_zeroed_open_how() -> libc::open_how {
    // SAFETY: open_how is a plain C struct of integers; all-zero is its documented default.
    unsafe { std::mem::zeroed() }
}

/// The fields of `/etc/os-release` dormouse reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OsRelease {
    pub id: Option<String>,
    pub version_id: Option<String>,
    pub pretty_name: Option<String>,
}

impl OsRelease {
    pub fn parse(text: &str) -> Self {
        let mut out = Self::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"').to_owned();
            match key.trim() {
                "ID" => out.id = Some(value),
                "VERSION_ID" => out.version_id = Some(value),
                "PRETTY_NAME" => out.pretty_name = Some(value),
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_path_ending_in_colon_digits_is_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let by_path = dir.path().join("pci-0000:02:00.0-scsi-0:0:0:0");
        std::fs::write(&by_path, b"").unwrap();
        let spec = by_path.to_str().unwrap();
        assert_eq!(disk_and_partition(spec), (by_path.clone(), None));
        assert_eq!(disk_and_partition(&format!("{spec}:2")), (by_path.clone(), Some(2)));
        let disk = dir.path().join("disk.img");
        let disk_spec = disk.to_str().unwrap();
        assert_eq!(disk_and_partition(disk_spec), (disk.clone(), None));
        assert_eq!(disk_and_partition(&format!("{disk_spec}:1")), (disk.clone(), Some(1)));
        for not_a_partition in [":", ":+1", ":1a", ":99999999999"] {
            let spec = format!("{disk_spec}{not_a_partition}");
            assert_eq!(disk_and_partition(&spec), (PathBuf::from(&spec), None));
        }
    }

    /// Mounts elsewhere on the system make the kernel refuse a `..` step now and then (EAGAIN);
    /// a guest's `etc/os-release -> ../usr/lib/os-release` must still read every time.
    #[test]
    fn dot_dot_lookups_survive_concurrent_mounts() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::fs::write(root.join("usr/lib/os-release"), "ID=debian\n").unwrap();
        std::os::unix::fs::symlink("../usr/lib/os-release", root.join("etc/os-release")).unwrap();
        let churn = dir.path().join("churn");
        std::fs::create_dir(&churn).unwrap();
        let stop = AtomicBool::new(false);
        let root_fd: OwnedFd = File::open(&root).unwrap().into();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    nix::mount::mount(Some("none"), &churn, Some("tmpfs"), MsFlags::empty(), None::<&str>)
                        .expect("mount a tmpfs (the test runs as root)");
                    nix::mount::umount2(&churn, MntFlags::MNT_DETACH).unwrap();
                }
            });
            let reads: Vec<_> = (0..20_000)
                .map(|_| read_in_root(&root_fd, &root, "etc/os-release", 64))
                .collect();
            stop.store(true, Ordering::Relaxed);
            for read in reads {
                assert_eq!(read.unwrap(), b"ID=debian\n");
            }
        });
    }

    #[test]
    fn os_release_quoting() {
        let r = OsRelease::parse("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n# c\n");
        assert_eq!(r.id.as_deref(), Some("debian"));
        assert_eq!(r.version_id.as_deref(), Some("12"));
        assert_eq!(r.pretty_name.as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
    }
}
