//! A whole tree's state, to compare two trees or one tree before and after.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Regular file: SHA-256 of the data; symlink: target; device: numbers.
    pub data: String,
    pub xattrs: Vec<(String, Vec<u8>)>,
    pub mtime: Option<(i64, i64)>,
}

fn xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 65536];
    // SAFETY: NUL-terminated path and a writable buffer of the given length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "llistxattr {}", path.display());
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cn = CString::new(name).unwrap();
        let mut value = vec![0u8; 65536];
        // SAFETY: NUL-terminated strings and a writable buffer of the given length.
        let n = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
        assert!(n >= 0, "lgetxattr {}", path.display());
        value.truncate(n as usize);
        out.push((String::from_utf8_lossy(name).into_owned(), value));
    }
    out.sort();
    out
}

/// Every path under `root` (as `/rel`), not descending into `skip` (which are listed).
pub fn snapshot(root: &Path, skip: &[&str]) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(rel.trim_start_matches('/'));
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let entry = entry.unwrap();
            let path = entry.path();
            let name = format!("{rel}/{}", entry.file_name().to_string_lossy());
            let meta = fs::symlink_metadata(&path).unwrap();
            let ft = meta.file_type();
            let (kind, data) = if ft.is_dir() {
                ("dir", String::new())
            } else if ft.is_file() {
                let digest = Sha256::digest(fs::read(&path).unwrap());
                ("file", digest.iter().map(|b| format!("{b:02x}")).collect())
            } else if ft.is_symlink() {
                ("symlink", fs::read_link(&path).unwrap().to_string_lossy().into_owned())
            } else if ft.is_char_device() || ft.is_block_device() {
                ("device", format!("{}", meta.rdev()))
            } else {
                ("other", String::new())
            };
            out.insert(
                name.clone(),
                Node {
                    kind,
                    mode: meta.mode() & 0o7777,
                    uid: meta.uid(),
                    gid: meta.gid(),
                    data,
                    xattrs: xattrs(&path),
                    mtime: Some((meta.mtime(), meta.mtime_nsec())),
                },
            );
            if ft.is_dir() && !skip.contains(&name.as_str()) {
                stack.push(name);
            }
        }
    }
    out
}

/// The differences between two snapshots, one line each.
pub fn diff(a: &BTreeMap<String, Node>, b: &BTreeMap<String, Node>) -> Vec<String> {
    let mut out = Vec::new();
    for path in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
        match (a.get(path), b.get(path)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) => out.push(format!("{path}: {x:?} != {y:?}")),
            (Some(_), None) => out.push(format!("{path}: only in the first")),
            (None, _) => out.push(format!("{path}: only in the second")),
        }
    }
    out
}
