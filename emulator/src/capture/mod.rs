//! What an emulation changed, read from the overlays' upper layers with overlayfs semantics:
//! files with their full metadata, removals (whiteouts), directories whose guest contents are
//! replaced (real opaque directories), fingerprints of the guest's files being replaced or
//! removed, and what was deliberately left out. Knows nothing of the bundle format; the
//! applier packs a [`ChangeSet`].
//!
//! Every upper layer is guest-written: names, symlinks and xattrs are hostile input. The walk
//! never follows a symlink (lstat, `O_NOFOLLOW`), reads the guest's original files only through
//! [`open_in_root`] (`RESOLVE_IN_ROOT`), and runs after the sandbox is gone, so nothing changes
//! under it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::disk::open_in_root;

mod after;
pub use after::{FileVersions, list_after, open_after, read_versions};

/// The xattr namespace overlayfs keeps its own bookkeeping in (opaque, whiteout, origin,
/// impure, ...). It describes the dom0 overlay, never the guest: it must not reach a bundle.
const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";
pub(super) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Kernels ≥ 6.7 can represent a whiteout as a zero-size file carrying this xattr (used when
/// a whiteout must itself live in a layer); the upper layer normally holds 0/0 char devices.
const WHITEOUT_XATTR: &str = "trusted.overlay.whiteout";

/// Guest paths left out of a capture by default, and why:
/// - downloaded package archives (apt's and dnf's caches): only needed to unpack, which
///   already happened in dom0; shipping them would double the bundle;
/// - apt's binary caches: rewritten by every apt run (tens of MB), derived data that apt
///   rebuilds in the guest when it finds them stale;
/// - `/tmp`, `/run`: tmpfs in the sandbox and in the guest, meaningless across a boot;
/// - package-manager lock files: their content is empty and their meaning is the *inode*
///   a running process holds an fcntl lock on; replacing the guest's inode during apply would
///   silently drop the lock of a guest apt/dpkg/rpm holding it.
pub const DEFAULT_EXCLUDES: &[&str] = &[
    "/var/cache/apt/archives/*.deb",
    "/var/cache/apt/archives/partial/*",
    "/var/cache/apt/*.bin",
    "/var/cache/dnf/**/packages/*.rpm",
    "/tmp",
    "/run",
    "/var/lib/dpkg/lock",
    "/var/lib/dpkg/lock-frontend",
    "/var/lib/dpkg/triggers/Lock",
    "/var/cache/apt/archives/lock",
    "/var/lib/apt/lists/lock",
    "/var/lib/rpm/.rpm.lock",
];

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("capturing changes: {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "capturing changes: {} is not UTF-8; dormouse bundles only UTF-8 guest paths and symlink targets (rename it in the guest or exclude it)",
        path.display()
    )]
    NotUtf8 { path: PathBuf },
    #[error("capturing changes: {} is larger than the {limit} bytes dormouse reads of it", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
}

pub(super) type Result<T> = std::result::Result<T, CaptureError>;

pub(super) fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CaptureError {
    let path = path.to_owned();
    move |source| CaptureError::Io { what, path, source }
}

/// One guest filesystem as the capture sees it.
#[derive(Debug, Clone)]
pub struct CaptureLayer {
    /// Where the guest mounts it (`/`, `/var`).
    pub guest_path: String,
    /// The overlay's upper directory (dom0 scratch).
    pub upper: PathBuf,
    /// The guest filesystem's read-only mount.
    pub lower: PathBuf,
}

/// Which paths to leave out.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// Absolute guest-path globs: `*` and `?` within one component, `**` for any number of
    /// components. A matching directory is left out with everything under it.
    pub exclude: Vec<String>,
}

impl CaptureOptions {
    /// [`DEFAULT_EXCLUDES`] plus the mount points dormouse injected into the guest tree.
    pub fn defaults(injected: &[String]) -> CaptureOptions {
        let mut exclude: Vec<String> = DEFAULT_EXCLUDES.iter().map(|s| (*s).to_owned()).collect();
        exclude.extend(injected.iter().cloned());
        CaptureOptions { exclude }
    }
}

/// Everything the emulation changed in the guest's filesystems.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChangeSet {
    /// New or replaced entries, sorted by guest path (parents before children, the first link
    /// of a hardlinked file before the others).
    pub entries: Vec<Entry>,
    /// Guest paths removed; a removed directory goes with everything under it. Sorted.
    pub removals: Vec<String>,
    /// Directories whose guest contents are replaced by exactly the entries below them.
    pub opaque_dirs: Vec<String>,
    /// The guest's original of every path that is replaced, changed or removed, sorted.
    pub base: Vec<BaseFingerprint>,
    /// What the exclusion list left out, sorted.
    pub excluded: Vec<Excluded>,
}

/// One entry of an upper layer, with the guest's numeric owner and the raw mode bits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Absolute guest path.
    pub path: String,
    pub kind: EntryKind,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits with setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Every xattr but overlayfs's own, sorted by name (`security.capability` included).
    pub xattrs: Vec<Xattr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    pub name: String,
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum EntryKind {
    File {
        /// Where its bytes are, in the upper layer.
        source: PathBuf,
        size: u64,
        sha256: String,
    },
    /// Another name of a file listed earlier (same inode in the upper layer).
    Hardlink {
        target: String,
    },
    Dir,
    Symlink {
        target: String,
    },
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
}

/// What the guest had at a path the bundle replaces or removes, to detect drift before apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseFingerprint {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: BaseKind,
    /// File: its size; symlink: its target's length; otherwise 0.
    pub size: u64,
    /// File: SHA-256 of its bytes; symlink: of its target; otherwise none.
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaseKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// A path left out of the capture, with what it weighed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Excluded {
    pub path: String,
    /// The exclusion pattern that matched, or `(socket)`: sockets cannot be carried.
    pub pattern: String,
    /// A whiteout: the path was removed, and the removal is not carried.
    pub removal: bool,
    /// Entries and bytes of regular files (the whole subtree for a directory).
    pub entries: u64,
    pub bytes: u64,
}

/// Walks every upper layer and returns the change set.
pub fn capture(layers: &[CaptureLayer], options: &CaptureOptions) -> Result<ChangeSet> {
    let mut set = ChangeSet::default();
    // (layer, dev, ino) of multiply-linked files, to find hardlinks.
    let mut inodes: Vec<Option<(usize, u64, u64)>> = Vec::new();
    for (index, layer) in layers.iter().enumerate() {
        let lower = File::open(&layer.lower).map_err(io_err("opening the guest filesystem", &layer.lower))?;
        let walker = Walker {
            layer,
            lower: lower.into(),
            options,
        };
        walker.walk(index, &mut set, &mut inodes)?;
    }
    let mut order: Vec<usize> = (0..set.entries.len()).collect();
    order.sort_by(|&a, &b| set.entries[a].path.as_bytes().cmp(set.entries[b].path.as_bytes()));
    let mut sorted = Vec::with_capacity(order.len());
    let mut first_link: HashMap<(usize, u64, u64), String> = HashMap::new();
    for i in order {
        let mut entry = set.entries[i].clone();
        if let Some(key) = inodes[i] {
            match first_link.get(&key) {
                Some(target) => entry.kind = EntryKind::Hardlink { target: target.clone() },
                None => {
                    first_link.insert(key, entry.path.clone());
                }
            }
        }
        sorted.push(entry);
    }
    set.entries = sorted;
    set.removals.sort();
    set.opaque_dirs.sort();
    set.base.sort_by(|a, b| a.path.cmp(&b.path));
    set.excluded.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(set)
}

struct Walker<'a> {
    layer: &'a CaptureLayer,
    lower: OwnedFd,
    options: &'a CaptureOptions,
}

impl Walker<'_> {
    fn guest_path(&self, rel: &Path) -> Result<String> {
        let rel = rel.to_str().ok_or_else(|| CaptureError::NotUtf8 {
            path: self.layer.upper.join(rel),
        })?;
        Ok(match self.layer.guest_path.trim_end_matches('/') {
            "" => format!("/{rel}"),
            mount => format!("{mount}/{rel}"),
        })
    }

    fn walk(&self, index: usize, set: &mut ChangeSet, inodes: &mut Vec<Option<(usize, u64, u64)>>) -> Result<()> {
        // (path relative to the layer, whether the guest has a directory there). Iterative: a
        // hostile guest can nest directories as deep as the scratch space allows.
        let mut stack: Vec<(PathBuf, bool)> = vec![(PathBuf::new(), true)];
        while let Some((dir, lower_is_dir)) = stack.pop() {
            let upper_dir = self.layer.upper.join(&dir);
            let mut names: Vec<std::ffi::OsString> = fs::read_dir(&upper_dir)
                .map_err(io_err("listing", &upper_dir))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()
                .map_err(io_err("listing", &upper_dir))?;
            names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            for name in names {
                let rel = dir.join(&name);
                let upper = self.layer.upper.join(&rel);
                let guest = self.guest_path(&rel)?;
                let meta = fs::symlink_metadata(&upper).map_err(io_err("reading the metadata of", &upper))?;
                let xattrs = list_xattrs(&upper)?;
                let whiteout = is_whiteout(&meta, &xattrs);
                if let Some(pattern) = self.excluded(&guest) {
                    let (entries, bytes) = if meta.is_dir() {
                        tree_size(&upper)
                    } else {
                        (1, if meta.is_file() && !whiteout { meta.len() } else { 0 })
                    };
                    set.excluded.push(Excluded {
                        path: guest,
                        pattern,
                        removal: whiteout,
                        entries,
                        bytes,
                    });
                    continue;
                }
                let base = if lower_is_dir { self.fingerprint(&rel)? } else { None };
                if whiteout {
                    // Overlayfs only whites out a name the lower layer has; a stray whiteout
                    // (a guest mknod 0:0 of a new name) removes nothing.
                    if let Some(base) = base {
                        set.base.push(base);
                        set.removals.push(guest);
                    }
                    continue;
                }
                let ft = meta.file_type();
                if ft.is_socket() {
                    set.excluded.push(Excluded {
                        path: guest,
                        pattern: "(socket)".into(),
                        removal: false,
                        entries: 1,
                        bytes: 0,
                    });
                    continue;
                }
                let guest_had_dir = base.as_ref().is_some_and(|b| b.kind == BaseKind::Dir);
                if let Some(base) = base {
                    set.base.push(base);
                }
                let opaque = xattrs.iter().any(|x| x.name == OPAQUE_XATTR && x.value == b"y");
                let mut link_key = None;
                let kind = if ft.is_dir() {
                    // The kernel marks every directory created in a merged directory opaque;
                    // only one that hides a guest directory replaces contents.
                    if opaque && guest_had_dir {
                        set.opaque_dirs.push(guest.clone());
                    }
                    stack.push((rel.clone(), guest_had_dir));
                    EntryKind::Dir
                } else if ft.is_file() {
                    if meta.nlink() > 1 {
                        link_key = Some((index, meta.dev(), meta.ino()));
                    }
                    let (size, sha256) = hash_upper_file(&upper)?;
                    EntryKind::File {
                        source: upper.clone(),
                        size,
                        sha256,
                    }
                } else if ft.is_symlink() {
                    let target = fs::read_link(&upper).map_err(io_err("reading the symlink", &upper))?;
                    let target = target
                        .into_os_string()
                        .into_string()
                        .map_err(|_| CaptureError::NotUtf8 { path: upper.clone() })?;
                    EntryKind::Symlink { target }
                } else if ft.is_char_device() || ft.is_block_device() {
                    let rdev = meta.rdev();
                    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
                    if ft.is_char_device() {
                        EntryKind::CharDevice { major, minor }
                    } else {
                        EntryKind::BlockDevice { major, minor }
                    }
                } else {
                    EntryKind::Fifo
                };
                set.entries.push(Entry {
                    path: guest,
                    kind,
                    uid: meta.uid(),
                    gid: meta.gid(),
                    mode: meta.mode() & 0o7777,
                    mtime: meta.mtime(),
                    mtime_nsec: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
                    xattrs: xattrs
                        .into_iter()
                        .filter(|x| !x.name.starts_with(OVERLAY_XATTR_PREFIX))
                        .collect(),
                });
                inodes.push(link_key);
            }
        }
        Ok(())
    }

    fn excluded(&self, guest: &str) -> Option<String> {
        self.options
            .exclude
            .iter()
            .find(|pattern| glob_match(pattern, guest))
            .cloned()
    }

    /// The guest's original at `rel` (its parents are known directories of the guest), or
    /// `None` when it has nothing there.
    fn fingerprint(&self, rel: &Path) -> Result<Option<BaseFingerprint>> {
        let rel_text = rel.to_str().ok_or_else(|| CaptureError::NotUtf8 {
            path: self.layer.lower.join(rel),
        })?;
        let lower_path = self.layer.lower.join(rel);
        let fd = match open_in_root(&self.lower, rel_text, libc::O_PATH | libc::O_NOFOLLOW) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(io_err("opening the guest's", &lower_path)(e)),
        };
        let stat = nix::sys::stat::fstat(fd.as_fd())
            .map_err(|e| io_err("reading the metadata of the guest's", &lower_path)(e.into()))?;
        let path = self.guest_path(rel)?;
        let fingerprint = match stat.st_mode & libc::S_IFMT {
            libc::S_IFREG => {
                let file = open_in_root(&self.lower, rel_text, libc::O_RDONLY | libc::O_NOFOLLOW)
                    .map_err(io_err("opening the guest's", &lower_path))?;
                let (size, sha256) = hash_reader(File::from(file), &lower_path)?;
                BaseFingerprint {
                    path,
                    kind: BaseKind::File,
                    size,
                    sha256: Some(sha256),
                }
            }
            libc::S_IFLNK => {
                // readlinkat on an O_PATH descriptor with an empty name reads that very link.
                let target = nix::fcntl::readlinkat(fd.as_fd(), OsStr::new(""))
                    .map_err(|e| io_err("reading the guest's symlink", &lower_path)(e.into()))?;
                BaseFingerprint {
                    path,
                    kind: BaseKind::Symlink,
                    size: target.len() as u64,
                    sha256: Some(hex(&Sha256::digest(target.as_bytes()))),
                }
            }
            libc::S_IFDIR => BaseFingerprint {
                path,
                kind: BaseKind::Dir,
                size: 0,
                sha256: None,
            },
            _ => BaseFingerprint {
                path,
                kind: BaseKind::Other,
                size: 0,
                sha256: None,
            },
        };
        Ok(Some(fingerprint))
    }
}

/// A char device 0/0, or (kernels ≥ 6.7) a zero-size file marked with the whiteout xattr.
pub(super) fn is_whiteout(meta: &fs::Metadata, xattrs: &[Xattr]) -> bool {
    let ft = meta.file_type();
    (ft.is_char_device() && meta.rdev() == 0)
        || (ft.is_file() && meta.len() == 0 && xattrs.iter().any(|x| x.name == WHITEOUT_XATTR))
}

fn hash_upper_file(path: &Path) -> Result<(u64, String)> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err("opening", path))?;
    hash_reader(file, path)
}

fn hash_reader(reader: impl Read, path: &Path) -> Result<(u64, String)> {
    sha256_reader(reader).map_err(io_err("reading", path))
}

/// Length and SHA-256 (hex) of everything `reader` yields.
pub fn sha256_reader(mut reader: impl Read) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex(&hasher.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Every xattr of `path` (not following a symlink), sorted by name.
pub(super) fn list_xattrs(path: &Path) -> Result<Vec<Xattr>> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        // Filesystems without xattr support have none to carry.
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(io_err("listing the xattrs of", path)(e)),
    };
    let mut out = Vec::new();
    for name in names {
        let text = name
            .to_str()
            .ok_or_else(|| CaptureError::NotUtf8 { path: path.to_owned() })?;
        // Gone since the listing: nothing to carry.
        let Some(value) = xattr::get(path, &name).map_err(io_err("reading an xattr of", path))? else {
            continue;
        };
        out.push(Xattr {
            name: text.to_owned(),
            value,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Whether the absolute path `path` matches `pattern`: `*` and `?` within one component,
/// `**` for zero or more whole components.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    let path: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    match_components(&pattern, &path)
}

fn match_components(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|skip| match_components(rest, &path[skip..])),
        Some((first, rest)) => path.split_first().is_some_and(|(name, tail)| {
            match_component(first.as_bytes(), name.as_bytes()) && match_components(rest, tail)
        }),
    }
}

/// `*`/`?` wildcard match of one component, iterative with single backtracking (linear in
/// practice, never exponential).
fn match_component(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Entries and bytes of regular files under `dir`, not following symlinks; bounded by what the
/// scratch filesystem can hold.
pub fn tree_size(dir: &Path) -> (u64, u64) {
    let (mut entries, mut bytes) = (0, 0);
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(read) = fs::read_dir(&dir) else { continue };
        for entry in read.flatten() {
            entries += 1;
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                bytes += meta.len();
            }
        }
    }
    (entries, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_components() {
        assert!(glob_match("/var/cache/apt/*.bin", "/var/cache/apt/pkgcache.bin"));
        assert!(!glob_match("/var/cache/apt/*.bin", "/var/cache/apt/archives/x.bin"));
        assert!(glob_match(
            "/var/cache/dnf/**/packages/*.rpm",
            "/var/cache/dnf/fedora-1/packages/a.rpm"
        ));
        assert!(glob_match(
            "/var/cache/dnf/**/packages/*.rpm",
            "/var/cache/dnf/packages/a.rpm"
        ));
        assert!(glob_match(
            "/var/cache/dnf/**/packages/*.rpm",
            "/var/cache/dnf/a/b/packages/c.rpm"
        ));
        assert!(!glob_match(
            "/var/cache/dnf/**/packages/*.rpm",
            "/var/cache/dnf/a/packages/c.rpm.txt"
        ));
        assert!(glob_match("/tmp", "/tmp"));
        assert!(!glob_match("/tmp", "/tmp/x"));
        assert!(!glob_match("/tmp", "/tmpx"));
        assert!(glob_match("/a/?b*c", "/a/xbyyc"));
        assert!(!glob_match("/a/?b*c", "/a/bc"));
    }
}
