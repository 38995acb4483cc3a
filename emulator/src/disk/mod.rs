//! Guest disks, attached read-only: partition tables, filesystem identification, loop
//! devices and mounts that can never write a byte of the image.

mod loopdev;
mod partition;
mod probe;

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use serde::Serialize;

pub use loopdev::{LoopDevice, LoopError};
pub use partition::{Partition, PartitionError, PartitionTable, TableKind, read_partition_table};
pub use probe::{Filesystem, probe_filesystem};

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("opening guest disk {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
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
    #[error("mounting {device} ({fstype}) read-only on {target}: {errno}")]
    Mount {
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

type Result<T> = std::result::Result<T, DiskError>;

/// One partition (or the whole unpartitioned disk) and what lives in it.
#[derive(Debug, Clone, Serialize)]
pub struct Volume {
    #[serde(flatten)]
    pub partition: Partition,
    pub filesystem: Option<Filesystem>,
}

/// A guest disk image or block device, opened read-only and described.
#[derive(Debug, Clone, Serialize)]
pub struct GuestDisk {
    pub path: PathBuf,
    pub size: u64,
    pub table: TableKind,
    pub volumes: Vec<Volume>,
}

impl GuestDisk {
    /// Reads the partition table and probes each partition's filesystem. Never writes.
    pub fn open(path: &Path) -> Result<Self> {
        let open_err = |source| DiskError::Open {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(open_err)?;
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
        Ok(Self {
            path: path.to_owned(),
            size,
            table: table.kind,
            volumes,
        })
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
        ReadOnlyMount::new(&self.path, &volume.partition, fs, target)
    }

    /// Finds the volume holding the guest's root filesystem by content: `/etc/fstab` and
    /// `/etc/os-release` must exist. Returns its number and the parsed os-release.
    pub fn find_root(&self, scratch: &Path) -> Result<Option<(u32, OsRelease)>> {
        for volume in &self.volumes {
            let mountable = volume
                .filesystem
                .as_ref()
                .is_some_and(|fs| mount_data(&fs.fstype).is_some());
            if !mountable {
                continue;
            }
            let mount = self.mount(volume.partition.number, scratch)?;
            let root = mount.open_root()?;
            let has_fstab = read_in_root(&root, mount.target(), "etc/fstab", 1 << 20).is_ok();
            let os_release = read_in_root(&root, mount.target(), "etc/os-release", 1 << 16);
            drop(root);
            drop(mount);
            if let (true, Ok(text)) = (has_fstab, os_release) {
                return Ok(Some((
                    volume.partition.number,
                    OsRelease::parse(&String::from_utf8_lossy(&text)),
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

/// The options that keep a filesystem driver from writing to a device mounted read-only:
/// a suspended guest's journal is dirty, and replaying it would both write the disk and
/// produce a state the guest's page cache does not match.
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
    // Dropped after the unmount in `Drop`, so the device detaches.
    _device: LoopDevice,
}

impl ReadOnlyMount {
    fn new(image: &Path, partition: &Partition, fs: &Filesystem, target: &Path) -> Result<Self> {
        let device =
            LoopDevice::attach_read_only(image, partition.start, partition.size).map_err(|source| DiskError::Loop {
                path: image.to_owned(),
                number: partition.number,
                source,
            })?;
        let data = mount_data(&fs.fstype).unwrap_or("");
        nix::mount::mount(
            Some(device.path()),
            target,
            Some(fs.fstype.as_str()),
            MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
            Some(data),
        )
        .map_err(|errno| DiskError::Mount {
            device: device.path().to_owned(),
            fstype: fs.fstype.clone(),
            target: target.to_owned(),
            errno,
        })?;
        Ok(Self {
            target: target.to_owned(),
            _device: device,
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

/// Reads a file of the guest tree, resolving every symlink *inside* the guest root
/// (`RESOLVE_IN_ROOT`), so a hostile `/etc/os-release -> /etc/shadow` link reads the guest's
/// file, never dom0's. At most `limit` bytes are read.
pub fn read_in_root(root: &OwnedFd, root_path: &Path, path: &str, limit: u64) -> Result<Vec<u8>> {
    let err = |source| DiskError::GuestFile {
        root: root_path.to_owned(),
        path: path.to_owned(),
        source,
    };
    let c_path = std::ffi::CString::new(path).map_err(|_| err(std::io::ErrorKind::InvalidInput.into()))?;
    let mut how: libc::open_how = unsafe_zeroed_open_how();
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 reads `how` (valid, sized) and the NUL-terminated path; it returns a new fd
    // or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c_path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    let fd = Errno::result(fd).map_err(|e| err(e.into()))?;
    // SAFETY: openat2 succeeded, so `fd` is a fresh descriptor that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd as i32) };
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes).map_err(err)?;
    Ok(bytes)
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
    fn os_release_quoting() {
        let r = OsRelease::parse("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n# c\n");
        assert_eq!(r.id.as_deref(), Some("debian"));
        assert_eq!(r.version_id.as_deref(), Some("12"));
        assert_eq!(r.pretty_name.as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
    }
}
