//! The guest's file tree, assembled from its disks the way its own boot would: the root
//! filesystem, then every local filesystem its `/etc/fstab` mounts.
//!
//! Shape: one read-only mount **per guest filesystem**, each at `<lower dir>/<n>` (n = 0 for
//! the root, then in mount order), listed with its guest mount point in
//! [`GuestTree::filesystems`]. That is what stacking one overlayfs per guest filesystem needs
//! (each upper layer then belongs to exactly one guest filesystem). [`GuestTree::assemble`]
//! additionally binds them into one combined read-only tree, for readers that must follow the
//! guest's paths across filesystems (e.g. `/vmlinuz` → `/boot/...` on a separate `/boot`).
//!
//! Mount points are guest data. A guest can make `/var` a symlink to `/../../etc`; mounting on
//! the path `<target>/var` would then land on dom0's `/etc`. So every mount point is opened with
//! `openat2(RESOLVE_IN_ROOT)` relative to the assembled tree (symlinks and `..` resolve inside
//! it, magic links refused) as an `O_PATH` directory descriptor, and the mount goes onto
//! `/proc/self/fd/N`, which names exactly that directory.

mod fstab;

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use serde::Serialize;

pub use fstab::{
    FstabEntry, Source, device_name, disk_index, normalize_mount_point, parse as parse_fstab, source as fstab_source,
};

use crate::disk::{DiskError, GuestDisk, OsRelease, ReadOnlyMount, open_in_root, read_in_root};

const MAX_FSTAB: u64 = 1 << 20;

/// Filesystems a guest mounts from the network: never part of its disks.
const NETWORK_FS: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "glusterfs",
    "9p",
    "afs",
    "davfs",
    "sshfs",
    "ncpfs",
    "coda",
    "lustre",
    "ocfs2",
    "gfs2",
];
/// Filesystems with no disk behind them; the sandbox provides its own /proc, /dev, /run, /tmp.
const PSEUDO_FS: &[&str] = &[
    "proc",
    "sysfs",
    "tmpfs",
    "devtmpfs",
    "devpts",
    "ramfs",
    "cgroup",
    "cgroup2",
    "securityfs",
    "debugfs",
    "tracefs",
    "mqueue",
    "hugetlbfs",
    "binfmt_misc",
    "fusectl",
    "configfs",
    "pstore",
    "efivarfs",
    "bpf",
    "autofs",
    "rpc_pipefs",
    "nfsd",
    "overlay",
    "none",
];

#[derive(Debug, thiserror::Error)]
pub enum GuestTreeError {
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("no guest disk given")]
    NoDisks,
    #[error(
        "no attached disk holds a root filesystem (one with /etc/fstab and /etc/os-release); attached: {attached}; name the root with --disk PATH:N"
    )]
    NoRoot { attached: String },
    #[error("disk #{index} does not exist; {count} disks are attached")]
    NoSuchDisk { index: usize, count: usize },
    #[error(
        "guest /etc/fstab line {line}: {mount_point} comes from {spec}, which {problem}; attached: {attached}. \
         Attach the disk that holds it with another --disk, or mark the entry nofail in the guest"
    )]
    Unresolved {
        line: usize,
        spec: String,
        mount_point: String,
        problem: String,
        attached: String,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("guest mount point {mount_point} (fstab line {line}) cannot be used inside {tree}: {source}")]
    MountPoint {
        mount_point: String,
        line: usize,
        tree: PathBuf,
        source: std::io::Error,
    },
    #[error("bind-mounting {source_dir} on guest path {mount_point} in {tree}: {errno}")]
    Bind {
        source_dir: PathBuf,
        mount_point: String,
        tree: PathBuf,
        errno: nix::errno::Errno,
    },
}

type Result<T> = std::result::Result<T, GuestTreeError>;

/// A guest disk with the name the guest knows it by (`xvda` from the xl config); without one,
/// disks are named by position (the first is `xvda`/`sda`/`vda`, the second `xvdb`, ...).
#[derive(Debug, Clone)]
pub struct AttachedDisk {
    pub disk: GuestDisk,
    pub vdev: Option<String>,
}

/// Which volume is the root filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootChoice {
    /// The first volume, disk by disk, that holds `/etc/fstab` and `/etc/os-release`.
    Auto,
    /// Forced (`--disk PATH:N`): partition `partition` of attached disk `disk`.
    Volume { disk: usize, partition: u32 },
}

/// What [`GuestTree::mount_with`] does with a local fstab filesystem it cannot mount: its
/// source is on no attached disk, or mounting fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmountable {
    /// Fail, unless the entry is `nofail` (then it is skipped): an update must not run with
    /// part of the guest's tree missing.
    Fail,
    /// Leave it out with a note, `nofail` or not: a reader reports on what the attached disks
    /// hold, and warns of the rest.
    Note,
}

/// One mounted guest filesystem.
#[derive(Debug, Clone, Serialize)]
pub struct GuestFilesystem {
    /// Where the guest mounts it (`/`, `/var`, ...).
    pub mount_point: String,
    pub disk: PathBuf,
    /// Position of the disk in the list given to [`GuestTree::mount`].
    pub disk_index: usize,
    pub partition: u32,
    pub fstype: String,
    pub uuid: Option<String>,
    pub label: Option<String>,
    /// The fstab line that mounts it; `None` for a root found by content and not listed.
    pub fstab_line: Option<usize>,
    /// Where dormouse mounted it, read-only.
    pub lower: PathBuf,
}

/// An fstab entry dormouse does not mount, and why.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedEntry {
    pub line: usize,
    pub spec: String,
    pub mount_point: String,
    pub fstype: String,
    pub reason: String,
}

/// The guest's local filesystems, each mounted read-only at its own directory; unmounted in
/// reverse order (and their directories removed) when dropped.
#[derive(Debug, Serialize)]
pub struct GuestTree {
    pub os_release: OsRelease,
    /// Root first, then in mount order (fstab order, parents before children).
    pub filesystems: Vec<GuestFilesystem>,
    pub skipped: Vec<SkippedEntry>,
    /// Lines of the fstab that could not be used and other remarks.
    pub notes: Vec<String>,
    #[serde(skip)]
    mounts: Vec<ReadOnlyMount>,
}

/// A mount the tree plans to make.
struct Planned<'a> {
    entry: &'a FstabEntry,
    mount_point: String,
    disk: usize,
    partition: u32,
}

impl GuestTree {
    /// Finds the root, reads its fstab and mounts every local filesystem read-only under
    /// `lower_dir` (created if missing; `<lower_dir>/<n>` must not exist yet).
    pub fn mount(disks: &[AttachedDisk], root: RootChoice, lower_dir: &Path) -> Result<Self> {
        Self::mount_with(disks, root, lower_dir, Unmountable::Fail)
    }

    /// [`GuestTree::mount`], with filesystems that cannot be mounted failing it or noted.
    pub fn mount_with(
        disks: &[AttachedDisk],
        root: RootChoice,
        lower_dir: &Path,
        unmountable: Unmountable,
    ) -> Result<Self> {
        if disks.is_empty() {
            return Err(GuestTreeError::NoDisks);
        }
        std::fs::create_dir_all(lower_dir).map_err(|source| GuestTreeError::Io {
            what: "creating",
            path: lower_dir.to_owned(),
            source,
        })?;
        let mut tree = GuestTree {
            os_release: OsRelease::default(),
            filesystems: Vec::new(),
            skipped: Vec::new(),
            notes: Vec::new(),
            mounts: Vec::new(),
        };
        let root_dir = make_lower(lower_dir, 0)?;
        let chosen = (|| match root {
            RootChoice::Auto => {
                let mut found = None;
                for (index, attached) in disks.iter().enumerate() {
                    if let Some((number, _, mount)) = attached.disk.find_root_mounted(&root_dir)? {
                        found = Some((index, number, Some(mount)));
                        break;
                    }
                }
                found.ok_or_else(|| GuestTreeError::NoRoot {
                    attached: describe(disks),
                })
            }
            RootChoice::Volume { disk, partition } => {
                if disk >= disks.len() {
                    return Err(GuestTreeError::NoSuchDisk {
                        index: disk,
                        count: disks.len(),
                    });
                }
                Ok((disk, partition, None))
            }
        })();
        let (root_disk, root_partition, probed_mount) = chosen.inspect_err(|_| {
            let _ = std::fs::remove_dir(&root_dir);
        })?;
        match probed_mount {
            Some(mount) => tree.push(disks, root_disk, root_partition, "/".into(), None, root_dir, mount)?,
            None => tree.add(disks, root_disk, root_partition, "/".into(), None, root_dir)?,
        }
        let (os_release, fstab_text) = {
            let mount = &tree.mounts[0];
            let fd = mount.open_root()?;
            // A forced root may lack os-release; failing to read one that is there is an error.
            let os = match read_in_root(&fd, mount.target(), "etc/os-release", 1 << 16) {
                Ok(text) => OsRelease::parse(&String::from_utf8_lossy(&text)),
                Err(e) if e.is_absent_guest_file() => OsRelease::default(),
                Err(e) => return Err(e.into()),
            };
            (os, read_in_root(&fd, mount.target(), "etc/fstab", MAX_FSTAB))
        };
        tree.os_release = os_release;
        let fstab_text = match fstab_text {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => {
                tree.notes.push(format!("{e}: only the root filesystem is mounted"));
                return Ok(tree);
            }
        };
        let (entries, notes) = fstab::parse(&fstab_text);
        tree.notes.extend(notes);

        let mut planned = Vec::new();
        for entry in &entries {
            planned.extend(tree.plan(disks, entry, (root_disk, root_partition), unmountable)?);
        }
        // Parents before children; fstab order among equals, as systemd orders them.
        planned.sort_by_key(|p| p.mount_point.matches('/').count());
        for p in planned {
            let dir = make_lower(lower_dir, tree.mounts.len())?;
            let mount_point = p.mount_point.clone();
            match tree.add(disks, p.disk, p.partition, p.mount_point, Some(p.entry.line), dir) {
                Err(e) if unmountable == Unmountable::Note => tree.notes.push(format!(
                    "fstab line {}: {mount_point} ({}) not mounted: {e}",
                    p.entry.line, p.entry.spec
                )),
                result => result?,
            }
        }
        Ok(tree)
    }

    /// Decides what to do with one fstab entry: `Some` to mount it, `None` when skipped (and
    /// recorded) or when it is the root, already mounted.
    fn plan<'a>(
        &mut self,
        disks: &[AttachedDisk],
        entry: &'a FstabEntry,
        root: (usize, u32),
        unmountable: Unmountable,
    ) -> Result<Option<Planned<'a>>> {
        let fstype = entry.fstype.as_str();
        let skip_reason = if entry.has_option("noauto") {
            Some("noauto: not mounted at boot".to_owned())
        } else if fstype == "swap" {
            Some("swap space".to_owned())
        } else if NETWORK_FS.contains(&fstype) || entry.has_option("_netdev") {
            Some("network filesystem".to_owned())
        } else if fstype.starts_with("fuse") {
            Some("FUSE filesystem (served by a guest daemon, not a disk)".to_owned())
        } else if PSEUDO_FS.contains(&fstype) {
            Some("pseudo filesystem (the sandbox provides its own)".to_owned())
        } else if entry.has_option("bind") || entry.has_option("rbind") {
            Some("bind mount: the directory stays visible at its own path".to_owned())
        } else {
            None
        };
        let mount_point = normalize_mount_point(&entry.mount_point);
        let skip_reason = skip_reason.or_else(|| {
            mount_point
                .is_none()
                .then(|| "mount point is not an absolute path without . or ..".to_owned())
        });
        if let Some(reason) = skip_reason {
            self.skip(entry, reason);
            return Ok(None);
        }
        let mount_point = mount_point.unwrap_or_default();
        let resolved = resolve(disks, &fstab::source(&entry.spec));
        if mount_point == "/" {
            match resolved {
                Ok(volume) if volume != root => self.notes.push(format!(
                    "fstab line {}: / is {}, but the root in use is partition {} of {}",
                    entry.line,
                    entry.spec,
                    root.1,
                    disks[root.0].disk.path.display()
                )),
                Err(problem) => self.notes.push(format!(
                    "fstab line {}: cannot check that / ({}) is the root in use: it {problem}",
                    entry.line, entry.spec
                )),
                Ok(_) => {}
            }
            return Ok(None);
        }
        match resolved {
            Ok((disk, partition)) => Ok(Some(Planned {
                entry,
                mount_point,
                disk,
                partition,
            })),
            Err(problem) if unmountable == Unmountable::Note => {
                self.notes.push(format!(
                    "fstab line {}: {mount_point} ({}) not mounted: its source {problem}",
                    entry.line, entry.spec
                ));
                Ok(None)
            }
            Err(problem) if entry.has_option("nofail") => {
                self.skip(entry, format!("nofail, and its source {problem}"));
                Ok(None)
            }
            Err(problem) => Err(GuestTreeError::Unresolved {
                line: entry.line,
                spec: entry.spec.clone(),
                mount_point,
                problem,
                attached: describe(disks),
            }),
        }
    }

    fn skip(&mut self, entry: &FstabEntry, reason: String) {
        self.skipped.push(SkippedEntry {
            line: entry.line,
            spec: entry.spec.clone(),
            mount_point: entry.mount_point.clone(),
            fstype: entry.fstype.clone(),
            reason,
        });
    }

    fn add(
        &mut self,
        disks: &[AttachedDisk],
        disk_index: usize,
        partition: u32,
        mount_point: String,
        fstab_line: Option<usize>,
        lower: PathBuf,
    ) -> Result<()> {
        let mount = match disks[disk_index].disk.mount(partition, &lower) {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_dir(&lower);
                return Err(e.into());
            }
        };
        self.push(disks, disk_index, partition, mount_point, fstab_line, lower, mount)
    }

    /// Records `mount`, partition `partition` of disk `disk_index` mounted at `lower`.
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        disks: &[AttachedDisk],
        disk_index: usize,
        partition: u32,
        mount_point: String,
        fstab_line: Option<usize>,
        lower: PathBuf,
        mount: ReadOnlyMount,
    ) -> Result<()> {
        let disk = &disks[disk_index].disk;
        let fs = disk.volume(partition)?.filesystem.clone();
        self.filesystems.push(GuestFilesystem {
            mount_point,
            disk: disk.path.clone(),
            disk_index,
            partition,
            fstype: fs.as_ref().map_or_else(String::new, |f| f.fstype.clone()),
            uuid: fs.as_ref().and_then(|f| f.uuid.clone()),
            label: fs.and_then(|f| f.label),
            fstab_line,
            lower,
        });
        self.mounts.push(mount);
        Ok(())
    }

    /// The filesystem holding the guest's root.
    pub fn root(&self) -> &GuestFilesystem {
        &self.filesystems[0]
    }

    /// Binds every filesystem at its guest mount point into one read-only tree at `target`
    /// (an existing empty directory); see the module documentation for why this is safe
    /// against guest symlinks. Unmounted when the returned value is dropped; it must be
    /// dropped before this tree.
    pub fn assemble(&self, target: &Path) -> Result<AssembledTree> {
        let bind = |source: &Path, onto: &Path, mount_point: &str| {
            nix::mount::mount(Some(source), onto, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(|errno| {
                GuestTreeError::Bind {
                    source_dir: source.to_owned(),
                    mount_point: mount_point.to_owned(),
                    tree: target.to_owned(),
                    errno,
                }
            })
        };
        // Binds inherit read-only, nodev and nosuid from the lower mounts.
        bind(&self.filesystems[0].lower, target, "/")?;
        let assembled = AssembledTree {
            target: target.to_owned(),
        };
        // Private, so the binds below stay inside this tree.
        nix::mount::mount(None::<&str>, target, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>).map_err(|errno| {
            GuestTreeError::Bind {
                source_dir: self.filesystems[0].lower.clone(),
                mount_point: "/".into(),
                tree: target.to_owned(),
                errno,
            }
        })?;
        let root: OwnedFd = File::open(target)
            .map_err(|source| GuestTreeError::Io {
                what: "opening",
                path: target.to_owned(),
                source,
            })?
            .into();
        for fs in &self.filesystems[1..] {
            let relative = fs.mount_point.trim_start_matches('/');
            let dir = open_in_root(&root, relative, libc::O_PATH | libc::O_DIRECTORY).map_err(|source| {
                GuestTreeError::MountPoint {
                    mount_point: fs.mount_point.clone(),
                    line: fs.fstab_line.unwrap_or(0),
                    tree: target.to_owned(),
                    source,
                }
            })?;
            bind(
                &fs.lower,
                Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())),
                &fs.mount_point,
            )?;
        }
        Ok(assembled)
    }
}

impl Drop for GuestTree {
    fn drop(&mut self) {
        // Children before parents: the reverse of the mount order.
        while let Some(mount) = self.mounts.pop() {
            let dir = mount.target().to_owned();
            drop(mount);
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The combined read-only view made by [`GuestTree::assemble`].
#[derive(Debug)]
pub struct AssembledTree {
    target: PathBuf,
}

impl AssembledTree {
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// An `O_PATH` descriptor of the tree's root, for [`read_in_root`] and [`open_in_root`].
    pub fn open_root(&self) -> std::io::Result<OwnedFd> {
        Ok(File::open(&self.target)?.into())
    }
}

impl Drop for AssembledTree {
    fn drop(&mut self) {
        // A lazy unmount of the top detaches every bind below it at once.
        let _ = nix::mount::umount2(&self.target, MntFlags::MNT_DETACH);
    }
}

fn make_lower(lower_dir: &Path, n: usize) -> Result<PathBuf> {
    let dir = lower_dir.join(n.to_string());
    std::fs::create_dir(&dir).map_err(|source| GuestTreeError::Io {
        what: "creating the mount directory",
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

/// Finds the volume an fstab source names among the attached disks: `(disk, partition)`, or
/// what is wrong in words that complete "its source ...".
fn resolve(disks: &[AttachedDisk], source: &Source) -> std::result::Result<(usize, u32), String> {
    let volumes = || {
        disks
            .iter()
            .enumerate()
            .flat_map(|(i, d)| d.disk.volumes.iter().map(move |v| (i, v)))
    };
    let unique = |matches: Vec<(usize, u32)>, what: String| match matches.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!("is not on any attached disk ({what} not found)")),
        _ => Err(format!("is ambiguous: {} volumes have {what}", matches.len())),
    };
    let find = |pred: &dyn Fn(&crate::disk::Volume) -> bool| {
        volumes()
            .filter(|(_, v)| pred(v))
            .map(|(i, v)| (i, v.partition.number))
            .collect::<Vec<_>>()
    };
    let eq = |a: &Option<String>, b: &str| a.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(b));
    match source {
        Source::Uuid(u) => unique(
            find(&|v| v.filesystem.as_ref().is_some_and(|f| eq(&f.uuid, u))),
            format!("filesystem UUID {u}"),
        ),
        Source::Label(l) => unique(
            find(&|v| v.filesystem.as_ref().is_some_and(|f| f.label.as_deref() == Some(l))),
            format!("filesystem label {l:?}"),
        ),
        Source::PartUuid(u) => unique(find(&|v| eq(&v.partition.part_uuid, u)), format!("partition UUID {u}")),
        Source::PartLabel(l) => unique(
            find(&|v| v.partition.name.as_deref() == Some(l)),
            format!("partition label {l:?}"),
        ),
        Source::Device { disk, partition } => {
            let wanted = disk_index(disk).ok_or_else(|| format!("names unknown device {disk}"))?;
            let any_vdev = disks.iter().any(|d| d.vdev.is_some());
            for (i, attached) in disks.iter().enumerate() {
                let (index, whole) = match attached.vdev.as_deref().and_then(device_name) {
                    // Xen can attach an image as a partition device (`xvda1`): the image is
                    // that partition's content.
                    Some((vdisk, vpart)) => (disk_index(&vdisk), vpart),
                    None if any_vdev => continue,
                    None => (Some(i), 0),
                };
                if index != Some(wanted) {
                    continue;
                }
                if whole != 0 {
                    if whole == *partition {
                        return Ok((i, 0));
                    }
                    continue;
                }
                return match attached.disk.volume(*partition) {
                    Ok(_) => Ok((i, *partition)),
                    Err(_) if *partition == 0 => Err(format!(
                        "is the whole of {}, which has a partition table",
                        attached.disk.path.display()
                    )),
                    Err(e) => Err(format!("names a missing partition: {e}")),
                };
            }
            Err(format!("names /dev/{disk}, a disk that is not attached"))
        }
        Source::Other(spec) => Err(format!(
            "{spec:?} is neither UUID=, LABEL=, PARTUUID=, PARTLABEL= nor a disk device dormouse can map"
        )),
    }
}

fn describe(disks: &[AttachedDisk]) -> String {
    disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let name = d.vdev.clone().unwrap_or_else(|| format!("disk{i}"));
            let volumes: Vec<String> = d
                .disk
                .volumes
                .iter()
                .map(|v| {
                    let at = format!("{name}:{} at byte offset {:#x}", v.partition.number, v.partition.start);
                    match &v.filesystem {
                        Some(fs) => format!("{at} {} UUID={}", fs.fstype, fs.uuid.as_deref().unwrap_or("-")),
                        None => format!("{at} (no filesystem)"),
                    }
                })
                .collect();
            format!("{} [{}]", d.disk.path.display(), volumes.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}
