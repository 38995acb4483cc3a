//! The guest's file tree, read-only: the filesystems the guest's own `/etc/fstab` mounts
//! from the disk, assembled by the emulator's [`emulator::guest_tree::GuestTree`] (a separate
//! `/var` holds dpkg's and apt's state), or a directory that already holds a guest tree.
//! Every path resolves inside its filesystem (`RESOLVE_IN_ROOT`); a symlink never leads into
//! dom0.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use emulator::disk::{GuestDisk, OsRelease, open_in_root, read_in_root};
use emulator::guest_tree::{self, AttachedDisk, RootChoice, Unmountable};

use crate::CheckError;

const MAX_DIR_ENTRIES: usize = 100_000;

/// Where the guest tree comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeSource {
    /// A disk image or block device; the root partition is found by content unless given.
    Disk { path: PathBuf, partition: Option<u32> },
    /// A directory holding the guest's root tree (already mounted by the operator).
    Dir(PathBuf),
}

impl TreeSource {
    /// `PATH` or `PATH:PARTITION`, as [`emulator::disk::disk_and_partition`] reads them.
    pub fn disk(spec: &str) -> Self {
        let (path, partition) = emulator::disk::disk_and_partition(spec);
        Self::Disk { path, partition }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Disk {
                path,
                partition: Some(n),
            } => format!("{}:{n}", path.display()),
            Self::Disk { path, partition: None } => path.display().to_string(),
            Self::Dir(dir) => dir.display().to_string(),
        }
    }
}

struct Mounted {
    /// Mount point in the guest (`/`, `/var`).
    at: String,
    fd: OwnedFd,
    path: PathBuf,
}

pub struct GuestTree {
    // Longest mount point first, so lookups find the innermost filesystem.
    mounts: Vec<Mounted>,
    // Fields drop in order: the descriptors above are closed before the filesystems are
    // unmounted, and those before their scratch directory is removed.
    _disk_tree: Option<guest_tree::GuestTree>,
    _scratch: Option<tempfile::TempDir>,
    pub os: Option<OsRelease>,
    /// What could not be mounted, for the report.
    pub warnings: Vec<String>,
}

impl GuestTree {
    pub fn open(source: &TreeSource) -> Result<Self, CheckError> {
        match source {
            TreeSource::Dir(dir) => {
                let mut tree = Self {
                    mounts: vec![Mounted {
                        at: "/".into(),
                        fd: open_dir(dir)?,
                        path: dir.clone(),
                    }],
                    _disk_tree: None,
                    _scratch: None,
                    os: None,
                    warnings: Vec::new(),
                };
                tree.os = tree
                    .read("/etc/os-release", 1 << 16)
                    .ok()
                    .map(|b| OsRelease::parse(&String::from_utf8_lossy(&b)));
                Ok(tree)
            }
            TreeSource::Disk { path, partition } => Self::open_disk(path, *partition),
        }
    }

    /// The root and every local filesystem the guest's fstab mounts from this disk; the
    /// others (on disks not given, or failing to mount) become warnings.
    fn open_disk(path: &Path, partition: Option<u32>) -> Result<Self, CheckError> {
        let disk = AttachedDisk {
            disk: GuestDisk::open(path)?,
            vdev: None,
        };
        let root = partition.map_or(RootChoice::Auto, |partition| RootChoice::Volume { disk: 0, partition });
        let scratch = tempfile::Builder::new()
            .prefix("dormouse-check-")
            .tempdir()
            .map_err(|e| CheckError::guest("$TMPDIR", format!("creating scratch mount points: {e}")))?;
        let disk_tree = guest_tree::GuestTree::mount_with(&[disk], root, scratch.path(), Unmountable::Note)?;
        let mut mounts = disk_tree
            .filesystems
            .iter()
            .map(|fs| {
                Ok(Mounted {
                    at: fs.mount_point.clone(),
                    fd: open_dir(&fs.lower)?,
                    path: fs.lower.clone(),
                })
            })
            .collect::<Result<Vec<_>, CheckError>>()?;
        mounts.sort_by_key(|m| std::cmp::Reverse(m.at.len()));
        Ok(Self {
            mounts,
            os: Some(disk_tree.os_release.clone()),
            warnings: disk_tree.notes.clone(),
            _disk_tree: Some(disk_tree),
            _scratch: Some(scratch),
        })
    }

    fn locate<'a>(&self, path: &'a str) -> (&Mounted, &'a str) {
        for m in &self.mounts {
            let rest = if m.at == "/" {
                Some(path)
            } else {
                path.strip_prefix(m.at.as_str())
                    .filter(|r| r.is_empty() || r.starts_with('/'))
            };
            if let Some(rest) = rest {
                let rel = rest.trim_start_matches('/');
                return (m, if rel.is_empty() { "." } else { rel });
            }
        }
        // Every tree has "/" (the disk tree's root, or the directory).
        (&self.mounts[self.mounts.len() - 1], path.trim_start_matches('/'))
    }

    /// Reads an absolute guest path, at most `limit` bytes.
    pub fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>, CheckError> {
        let (m, rel) = self.locate(path);
        Ok(read_in_root(&m.fd, &m.path, rel, limit)?)
    }

    /// Whether an absolute guest path exists (and is readable).
    pub fn exists(&self, path: &str) -> bool {
        self.read(path, 0).is_ok()
    }

    /// The names in a guest directory; a missing directory is empty.
    pub fn list(&self, path: &str) -> Vec<String> {
        use std::os::fd::AsRawFd;
        let (m, rel) = self.locate(path);
        let Ok(dir) = open_in_root(&m.fd, rel, libc::O_RDONLY | libc::O_DIRECTORY) else {
            return Vec::new();
        };
        // The descriptor's /proc/self/fd link names the directory already opened inside the
        // guest tree; listing through it resolves nothing of the guest's again.
        let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd())) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .take(MAX_DIR_ENTRIES)
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        names
    }
}

fn open_dir(dir: &Path) -> Result<OwnedFd, CheckError> {
    Ok(std::fs::File::open(dir)
        .map_err(|e| CheckError::guest(dir.display(), format!("opening the guest tree: {e}")))?
        .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The split test-bed disk, root found or named: `/var` and dpkg's state come from their
    /// own partition, and read the same as the guest tree the disk was built from.
    #[test]
    fn disk_trees_mount_var_from_the_guests_fstab() {
        let Some(testbed) = dormouse_tests::testbed("disk_trees_mount_var_from_the_guests_fstab") else {
            return;
        };
        let info = &testbed.disks.guest_split;
        let dir = GuestTree::open(&TreeSource::Dir(dormouse_tests::cache_dir().join("guest/root"))).unwrap();
        let status = dir.read("/var/lib/dpkg/status", 64 << 20).unwrap();
        let named = format!("{}:{}", info.path.display(), info.filesystems[0].partition);
        for source in [
            TreeSource::disk(&info.path.display().to_string()),
            TreeSource::disk(&named),
        ] {
            let tree = GuestTree::open(&source).unwrap();
            assert_eq!(tree.warnings, Vec::<String>::new(), "{source:?}");
            assert_eq!(tree.os.as_ref().and_then(|o| o.id.as_deref()), Some("debian"));
            let at: Vec<&str> = tree.mounts.iter().map(|m| m.at.as_str()).collect();
            assert_eq!(at, ["/var", "/"]);
            assert_eq!(tree.locate("/var/lib/dpkg/status").0.at, "/var");
            assert_eq!(tree.read("/var/lib/dpkg/status", 64 << 20).unwrap(), status);
            assert_eq!(tree.list("/etc/apt"), dir.list("/etc/apt"));
        }
    }
}
