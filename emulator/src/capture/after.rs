//! The merged view after a run, read from the layers themselves (the overlay is gone by
//! capture time): a file as the run left it, a directory's names, and the guest's before.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::{CaptureError, CaptureLayer, OPAQUE_XATTR, Result, io_err, is_whiteout, list_xattrs};
use crate::disk::open_in_root;

/// A guest file's contents before the run (lower layer) and after it (the merged view), for
/// package databases.
#[derive(Debug, Clone, Default)]
pub struct FileVersions {
    pub before: Option<Vec<u8>>,
    pub after: Option<Vec<u8>>,
}

/// Reads `guest_path` (a regular file; at most `limit` bytes) as the guest had it and as the
/// run left it: the upper layer's copy when it has one, nothing when it was removed (a
/// whiteout or an opaque directory above it), the guest's otherwise.
pub fn read_versions(layers: &[CaptureLayer], guest_path: &str, limit: u64) -> Result<FileVersions> {
    let Some((layer, rel)) = layer_of(layers, guest_path) else {
        return Ok(FileVersions::default());
    };
    let lower_path = layer.lower.join(rel);
    let before = match open_lower(layer, rel, libc::O_RDONLY | libc::O_NOFOLLOW)? {
        Some(fd) => Some(read_limited(File::from(fd), &lower_path, limit)?),
        None => None,
    };
    let after = match upper_state(&layer.upper, rel)? {
        Upper::Absent => before.clone(),
        Upper::Removed => None,
        Upper::File(path) => Some(read_limited(open_no_follow(&path)?, &path, limit)?),
    };
    Ok(FileVersions { before, after })
}

/// `guest_path` as the run left it, opened for reading when it is a regular file, with the
/// dom0 path it was opened at (for errors); `None` when it does not exist after the run.
pub fn open_after(layers: &[CaptureLayer], guest_path: &str) -> Result<Option<(File, PathBuf)>> {
    let Some((layer, rel)) = layer_of(layers, guest_path) else {
        return Ok(None);
    };
    match upper_state(&layer.upper, rel)? {
        Upper::Removed => Ok(None),
        Upper::File(path) => Ok(Some((open_no_follow(&path)?, path))),
        Upper::Absent => {
            let lower_path = layer.lower.join(rel);
            let Some(fd) = open_lower(layer, rel, libc::O_RDONLY | libc::O_NOFOLLOW)? else {
                return Ok(None);
            };
            let file = File::from(fd);
            let meta = file
                .metadata()
                .map_err(io_err("reading the metadata of", &lower_path))?;
            Ok(meta.is_file().then_some((file, lower_path)))
        }
    }
}

/// Directories listed by [`list_after`] hold at most this many names: more is not a package
/// manager's index directory.
pub const MAX_LISTED: usize = 100_000;

/// The names in the guest directory `guest_dir` as the run left it (the guest's, minus what
/// the run removed, plus what it created), sorted; empty when the directory does not exist.
pub fn list_after(layers: &[CaptureLayer], guest_dir: &str) -> Result<Vec<String>> {
    let Some((layer, rel)) = layer_of(layers, guest_dir) else {
        return Ok(Vec::new());
    };
    let mut names = std::collections::BTreeSet::new();
    let (upper_dir, lower_visible) = match upper_dir_state(&layer.upper, rel)? {
        UpperDir::Removed => return Ok(Vec::new()),
        UpperDir::Absent => (None, true),
        UpperDir::Dir { path, lower_visible } => (Some(path), lower_visible),
    };
    if lower_visible && let Some(fd) = open_lower(layer, rel, libc::O_RDONLY | libc::O_DIRECTORY)? {
        let proc_path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        let lower_path = layer.lower.join(rel);
        for entry in fs::read_dir(&proc_path).map_err(io_err("listing the guest's", &lower_path))? {
            let entry = entry.map_err(io_err("listing the guest's", &lower_path))?;
            names.insert(entry.file_name().to_string_lossy().into_owned());
            if names.len() > MAX_LISTED {
                return Err(too_many(&lower_path));
            }
        }
    }
    if let Some(dir) = upper_dir {
        for entry in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let entry = entry.map_err(io_err("listing", &dir))?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(io_err("reading the metadata of", &path))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_whiteout(&meta, &list_xattrs(&path)?) {
                names.remove(&name);
            } else {
                names.insert(name);
            }
            if names.len() > MAX_LISTED {
                return Err(too_many(&dir));
            }
        }
    }
    Ok(names.into_iter().collect())
}

fn too_many(dir: &Path) -> CaptureError {
    io_err("listing", dir)(io::Error::other(format!("more than {MAX_LISTED} names")))
}

/// The layer whose mount holds `guest_path` (the deepest), and the path relative to it.
fn layer_of<'a, 'p>(layers: &'a [CaptureLayer], guest_path: &'p str) -> Option<(&'a CaptureLayer, &'p str)> {
    let layer = layers
        .iter()
        .filter(|l| {
            let mount = l.guest_path.trim_end_matches('/');
            mount.is_empty() || guest_path == mount || guest_path.starts_with(&format!("{mount}/"))
        })
        .max_by_key(|l| l.guest_path.len())?;
    let rel = guest_path[layer.guest_path.trim_end_matches('/').len()..].trim_start_matches('/');
    Some((layer, rel))
}

/// Opens `rel` in the guest's own tree, resolving its symlinks inside it; `None` when missing.
fn open_lower(layer: &CaptureLayer, rel: &str, flags: libc::c_int) -> Result<Option<std::os::fd::OwnedFd>> {
    let lower = File::open(&layer.lower).map_err(io_err("opening the guest filesystem", &layer.lower))?;
    // openat2 refuses an empty path: the mount's own root is ".".
    let rel = if rel.is_empty() { "." } else { rel };
    match open_in_root(&lower.into(), rel, flags) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ELOOP | libc::ENOTDIR)) => Ok(None),
        Err(e) => Err(io_err("opening the guest's", &layer.lower.join(rel))(e)),
    }
}

fn open_no_follow(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err("opening", path))
}

enum UpperDir {
    /// The upper layer says nothing: the guest's directory shows through.
    Absent,
    /// Removed, hidden, or no longer a directory.
    Removed,
    /// The upper layer has the directory; the guest's shows through unless an opaque
    /// directory on the way hides it.
    Dir { path: PathBuf, lower_visible: bool },
}

fn upper_dir_state(upper: &Path, rel: &str) -> Result<UpperDir> {
    let components: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    let mut path = upper.to_owned();
    let mut lower_visible = true;
    for component in &components {
        path.push(component);
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(if lower_visible {
                    UpperDir::Absent
                } else {
                    UpperDir::Removed
                });
            }
            Err(e) => return Err(io_err("reading the metadata of", &path)(e)),
        };
        let xattrs = list_xattrs(&path)?;
        if is_whiteout(&meta, &xattrs) || !meta.is_dir() {
            return Ok(UpperDir::Removed);
        }
        if xattrs.iter().any(|x| x.name == OPAQUE_XATTR && x.value == b"y") {
            lower_visible = false;
        }
    }
    Ok(UpperDir::Dir { path, lower_visible })
}

enum Upper {
    /// The upper layer says nothing: the guest's file shows through.
    Absent,
    /// Removed, hidden, or no longer a regular file.
    Removed,
    File(PathBuf),
}

fn upper_state(upper: &Path, rel: &str) -> Result<Upper> {
    let components: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    let mut path = upper.to_owned();
    for (i, component) in components.iter().enumerate() {
        path.push(component);
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Upper::Absent),
            Err(e) => return Err(io_err("reading the metadata of", &path)(e)),
        };
        let xattrs = list_xattrs(&path)?;
        if is_whiteout(&meta, &xattrs) {
            return Ok(Upper::Removed);
        }
        let last = i + 1 == components.len();
        if last {
            return Ok(if meta.is_file() {
                Upper::File(path)
            } else {
                Upper::Removed
            });
        }
        if !meta.is_dir() {
            return Ok(Upper::Removed);
        }
        if xattrs.iter().any(|x| x.name == OPAQUE_XATTR && x.value == b"y") {
            // An opaque directory hides the guest's: the file exists only if the upper has it.
            return Ok(match upper_state(&path, &components[i + 1..].join("/"))? {
                Upper::Absent => Upper::Removed,
                other => other,
            });
        }
    }
    Ok(Upper::Absent)
}

fn read_limited(file: File, path: &Path, limit: u64) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_err("reading", path))?;
    if bytes.len() as u64 > limit {
        return Err(CaptureError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    Ok(bytes)
}
