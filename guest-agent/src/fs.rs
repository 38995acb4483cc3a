//! Every filesystem operation of the agent, relative to the target root's directory descriptor.
//! A guest path is resolved to its parent directory with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` and the last component is only ever used with
//! `*at` calls that do not follow it: neither a symlink in the guest nor one in the bundle can
//! make the agent read or write outside the root, or anywhere but the named path.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Deepest directory tree the agent walks (removals, backups).
const MAX_DEPTH: usize = 512;
/// Most entries of one directory the agent lists.
const MAX_DIR_ENTRIES: usize = 1 << 20;
/// Bytes per write when creating a file (below malloc's mmap threshold).
const COPY_BUFFER: usize = 64 << 10;

fn cstr(text: &[u8]) -> io::Result<CString> {
    CString::new(text).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Adds what failed and where to an I/O error.
pub fn context(what: &str, path: &str) -> impl FnOnce(io::Error) -> io::Error {
    let message = format!("{what} {path}");
    move |e| io::Error::new(e.kind(), format!("{message}: {e}"))
}

/// What a path is, without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl Kind {
    fn of(mode: libc::mode_t) -> Kind {
        match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFCHR => Kind::CharDevice,
            libc::S_IFBLK => Kind::BlockDevice,
            libc::S_IFIFO => Kind::Fifo,
            _ => Kind::Socket,
        }
    }
}

/// Everything the agent sets or restores on an entry besides its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub kind: Kind,
    /// Permission bits with setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Name and hex value, sorted by name.
    pub xattrs: Vec<(String, String)>,
    pub link: Option<String>,
    pub rdev: Option<(u32, u32)>,
    /// Regular files: bytes.
    pub size: u64,
}

/// The target root, open as a directory.
pub struct Root {
    fd: OwnedFd,
    pub path: PathBuf,
}

/// A guest path's parent directory (open) and last component.
pub struct At {
    dir: OwnedFd,
    pub name: CString,
    pub path: String,
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        let c = cstr(path.as_os_str().as_bytes())?;
        // SAFETY: a NUL-terminated path; the returned descriptor is owned below.
        let fd = check(unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) })
            .map_err(context("opening the target root", &path.display().to_string()))?;
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Root {
            fd,
            path: path.to_owned(),
        })
    }

    /// Opens the directory at `rel` (relative to the root, `""` for the root) without
    /// following any symlink.
    fn open_dir(&self, rel: &str) -> io::Result<OwnedFd> {
        let rel = if rel.is_empty() { "." } else { rel };
        let c = cstr(rel.as_bytes())?;
        // SAFETY: open_how is plain data; all-zero is its "nothing asked" value.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: valid descriptor, NUL-terminated path, `how` of the size passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel returned a new descriptor that nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }

    /// The parent directory and name of `guest` (an absolute, normalized guest path, see
    /// `bundle::read::check_guest_path`). A symlink among the parents is `ELOOP`.
    pub fn at(&self, guest: &str) -> io::Result<At> {
        self.resolve(guest)
            .map_err(context("resolving the parent directory of", guest))
    }

    fn resolve(&self, guest: &str) -> io::Result<At> {
        let rel = guest.trim_start_matches('/');
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        if name.is_empty() || name == "." || name == ".." || parent.split('/').any(|c| c == "..") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("guest path {guest:?} is not normalized"),
            ));
        }
        Ok(At {
            dir: self.open_dir(parent)?,
            name: cstr(name.as_bytes())?,
            path: guest.to_owned(),
        })
    }

    /// Like [`Root::at`], but `None` when the parent cannot be reached: missing, not a
    /// directory, or reached only through a symlink (nothing there is the bundle's business).
    pub fn at_if_parent(&self, guest: &str) -> io::Result<Option<At>> {
        match self.resolve(guest) {
            Ok(at) => Ok(Some(at)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)) => Ok(None),
            Err(e) => Err(context("resolving the parent directory of", guest)(e)),
        }
    }

    /// Metadata of `guest`, `None` when it does not exist.
    pub fn lstat(&self, guest: &str) -> io::Result<Option<Meta>> {
        match self.at_if_parent(guest)? {
            Some(at) => at.meta(),
            None => Ok(None),
        }
    }

    pub fn syncfs(&self) -> io::Result<()> {
        syncfs(&self.fd)
    }

    pub fn device(&self) -> io::Result<u64> {
        device(&self.fd)
    }
}

impl At {
    fn dirfd(&self) -> RawFd {
        self.dir.as_raw_fd()
    }

    /// The same directory with another name in it.
    pub fn sibling(&self, name: &str) -> io::Result<At> {
        Ok(At {
            dir: self.dir.try_clone()?,
            name: cstr(name.as_bytes())?,
            path: match self.path.rsplit_once('/') {
                Some((parent, _)) => format!("{parent}/{name}"),
                None => name.to_owned(),
            },
        })
    }

    /// The entry `name` inside this entry, which must be a directory.
    pub fn child(&self, name: &CStr) -> io::Result<At> {
        let fd = self.open(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)?;
        Ok(At {
            dir: fd.into(),
            name: name.to_owned(),
            path: format!("{}/{}", self.path, name.to_string_lossy()),
        })
    }

    /// A path naming this entry through our own descriptor, for the calls without an `*at`
    /// form that does not follow the last component (`l*xattr`, listing a directory).
    fn proc_path(&self) -> CString {
        let mut bytes = format!("/proc/self/fd/{}/", self.dirfd()).into_bytes();
        bytes.extend_from_slice(self.name.as_bytes());
        CString::new(bytes).unwrap_or_default()
    }

    pub fn open(&self, flags: libc::c_int, mode: libc::mode_t) -> io::Result<File> {
        // SAFETY: valid descriptor and NUL-terminated name.
        let fd = check(unsafe {
            libc::openat(
                self.dirfd(),
                self.name.as_ptr(),
                flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        })?;
        // SAFETY: a new descriptor owned by nobody else.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    fn stat(&self) -> io::Result<Option<libc::stat>> {
        // SAFETY: an all-zero stat is a valid value to be overwritten.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor, NUL-terminated name, writable stat.
        let ret = unsafe { libc::fstatat(self.dirfd(), self.name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
        if ret < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOENT) => Ok(None),
                _ => Err(context("reading the metadata of", &self.path)(e)),
            };
        }
        Ok(Some(st))
    }

    /// What is at this name, without the rest of [`At::meta`] (xattrs, link target).
    pub fn kind(&self) -> io::Result<Option<Kind>> {
        Ok(self.stat()?.map(|st| Kind::of(st.st_mode)))
    }

    pub fn meta(&self) -> io::Result<Option<Meta>> {
        let Some(st) = self.stat()? else { return Ok(None) };
        let kind = Kind::of(st.st_mode);
        let link = if kind == Kind::Symlink {
            Some(self.read_link()?)
        } else {
            None
        };
        let rdev = matches!(kind, Kind::CharDevice | Kind::BlockDevice)
            .then(|| (libc::major(st.st_rdev), libc::minor(st.st_rdev)));
        Ok(Some(Meta {
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec.clamp(0, 999_999_999) as u32,
            xattrs: self.xattrs()?,
            link,
            rdev,
            size: if kind == Kind::File { st.st_size as u64 } else { 0 },
        }))
    }

    pub fn read_link(&self) -> io::Result<String> {
        let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
        // SAFETY: valid descriptor, NUL-terminated name, writable buffer of the given length.
        let n = unsafe { libc::readlinkat(self.dirfd(), self.name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(context("reading the symlink", &self.path)(io::Error::last_os_error()));
        }
        buf.truncate(n as usize);
        String::from_utf8(buf).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: symlink target is not UTF-8", self.path),
            )
        })
    }

    /// Every xattr, sorted by name, values in hex.
    pub fn xattrs(&self) -> io::Result<Vec<(String, String)>> {
        let path = self.xattr_path();
        let names = match xattr::list(&path) {
            Ok(names) => names,
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(context("listing the xattrs of", &self.path)(e)),
        };
        let mut out = Vec::new();
        for name in names {
            let value = xattr::get(&path, &name).map_err(context("reading an xattr of", &self.path))?;
            if let Some(value) = value {
                out.push((name.to_string_lossy().into_owned(), hex(&value)));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Makes the xattrs exactly `wanted` (name, hex value).
    fn set_xattrs(&self, wanted: &[(String, String)]) -> io::Result<()> {
        let path = self.xattr_path();
        let current = self.xattrs()?;
        for (name, _) in current.iter().filter(|(n, _)| !wanted.iter().any(|(w, _)| w == n)) {
            xattr::remove(&path, name).map_err(context(&format!("removing xattr {name} of"), &self.path))?;
        }
        for (name, value) in wanted {
            if current.iter().any(|(n, v)| n == name && v == value) {
                continue;
            }
            let bytes = unhex(value)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("xattr {name}: value is not hex")))?;
            xattr::set(&path, name, &bytes).map_err(context(&format!("setting xattr {name} of"), &self.path))?;
        }
        Ok(())
    }

    /// The entry as a path through its directory's descriptor, for the xattr calls (which do
    /// not follow a final symlink).
    fn xattr_path(&self) -> std::path::PathBuf {
        use std::os::unix::ffi::OsStrExt;
        std::path::PathBuf::from(std::ffi::OsStr::from_bytes(self.proc_path().as_bytes()))
    }

    /// Owner, then mode (chown clears setuid bits), then xattrs (chown also drops
    /// `security.capability`), then the modification time.
    pub fn set_meta(&self, meta: &Meta, times: bool) -> io::Result<()> {
        // SAFETY: valid descriptor and NUL-terminated name.
        check(unsafe {
            libc::fchownat(
                self.dirfd(),
                self.name.as_ptr(),
                meta.uid,
                meta.gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
        .map_err(context("changing the owner of", &self.path))?;
        if meta.kind != Kind::Symlink {
            // A symlink's mode cannot be set and means nothing.
            // SAFETY: valid descriptor and NUL-terminated name; the entry is not a symlink.
            check(unsafe { libc::fchmodat(self.dirfd(), self.name.as_ptr(), meta.mode as libc::mode_t, 0) })
                .map_err(context("changing the mode of", &self.path))?;
        }
        self.set_xattrs(&meta.xattrs)?;
        if times {
            self.set_mtime(meta)?;
        }
        Ok(())
    }

    pub fn set_mtime(&self, meta: &Meta) -> io::Result<()> {
        let times = [
            libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            libc::timespec {
                tv_sec: meta.mtime,
                tv_nsec: i64::from(meta.mtime_nsec),
            },
        ];
        // SAFETY: valid descriptor, NUL-terminated name, two timespecs.
        check(unsafe {
            libc::utimensat(
                self.dirfd(),
                self.name.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
        .map_err(context("setting the modification time of", &self.path))
        .map(|_| ())
    }

    /// Writes `data` into a new file at this name (which must not exist) with `meta`. Not
    /// flushed: the caller syncs the filesystem before relying on it (one syncfs for many
    /// files, which also lets the kernel write them back in one batch, instead of a journal
    /// commit each).
    pub fn create_file(&self, data: &mut dyn Read, meta: &Meta) -> io::Result<u64> {
        let mut file = self
            .open(libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600)
            .map_err(context("creating", &self.path))?;
        // io::copy from a `dyn Read` goes 8 KiB at a time: a write call each.
        let mut buf = vec![0u8; COPY_BUFFER];
        let mut n = 0u64;
        loop {
            let len = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(context("reading the data of", &self.path)(e)),
            };
            file.write_all(&buf[..len]).map_err(context("writing", &self.path))?;
            n += len as u64;
        }
        self.set_meta(meta, true)?;
        Ok(n)
    }

    /// Creates a non-regular entry (symlink, directory, device, fifo) with `meta`.
    pub fn create_special(&self, meta: &Meta) -> io::Result<()> {
        let fd = self.dirfd();
        let name = self.name.as_ptr();
        let ret = match meta.kind {
            Kind::Symlink => {
                let target = cstr(meta.link.as_deref().unwrap_or("").as_bytes())?;
                // SAFETY: a valid directory descriptor and NUL-terminated strings.
                unsafe { libc::symlinkat(target.as_ptr(), fd, name) }
            }
            // SAFETY: a valid directory descriptor and a NUL-terminated name.
            Kind::Dir => unsafe { libc::mkdirat(fd, name, 0o700) },
            Kind::CharDevice | Kind::BlockDevice => {
                let (major, minor) = meta.rdev.unwrap_or((0, 0));
                let kind = if meta.kind == Kind::CharDevice {
                    libc::S_IFCHR
                } else {
                    libc::S_IFBLK
                };
                // SAFETY: a valid directory descriptor and a NUL-terminated name.
                unsafe { libc::mknodat(fd, name, kind | 0o600, libc::makedev(major, minor)) }
            }
            // SAFETY: a valid directory descriptor and a NUL-terminated name.
            Kind::Fifo => unsafe { libc::mkfifoat(fd, name, 0o600) },
            Kind::File | Kind::Socket => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{}: not a special entry", self.path),
                ));
            }
        };
        check(ret).map_err(context("creating", &self.path))?;
        self.set_meta(meta, meta.kind != Kind::Dir)
    }

    /// A hard link at this name to `target`.
    pub fn link_to(&self, target: &At) -> io::Result<()> {
        // SAFETY: valid descriptors and NUL-terminated names; flags 0 does not follow a symlink.
        check(unsafe {
            libc::linkat(
                target.dirfd(),
                target.name.as_ptr(),
                self.dirfd(),
                self.name.as_ptr(),
                0,
            )
        })
        .map_err(context(&format!("linking to {} at", target.path), &self.path))
        .map(|_| ())
    }

    /// Renames this entry over `to` (same directory or not).
    pub fn rename_to(&self, to: &At) -> io::Result<()> {
        // SAFETY: valid descriptors and NUL-terminated names.
        check(unsafe { libc::renameat(self.dirfd(), self.name.as_ptr(), to.dirfd(), to.name.as_ptr()) })
            .map_err(context(&format!("renaming {} to", self.path), &to.path))
            .map(|_| ())
    }

    /// Removes a non-directory; `false` when there was nothing.
    pub fn unlink(&self) -> io::Result<bool> {
        // SAFETY: valid descriptor and NUL-terminated name.
        match check(unsafe { libc::unlinkat(self.dirfd(), self.name.as_ptr(), 0) }) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(context("removing", &self.path)(e)),
        }
    }

    /// Removes an empty directory.
    pub fn rmdir(&self) -> io::Result<()> {
        // SAFETY: valid descriptor and NUL-terminated name.
        check(unsafe { libc::unlinkat(self.dirfd(), self.name.as_ptr(), libc::AT_REMOVEDIR) })
            .map_err(context("removing the directory", &self.path))
            .map(|_| ())
    }

    /// The names in this directory, sorted.
    pub fn list(&self) -> io::Result<Vec<CString>> {
        let dir = self
            .open(libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .map_err(context("opening the directory", &self.path))?;
        let proc = format!("/proc/self/fd/{}", dir.as_raw_fd());
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&proc).map_err(context("listing", &self.path))? {
            let entry = entry.map_err(context("listing", &self.path))?;
            if names.len() >= MAX_DIR_ENTRIES {
                return Err(io::Error::other(format!(
                    "{}: more than {MAX_DIR_ENTRIES} entries",
                    self.path
                )));
            }
            names.push(cstr(entry.file_name().as_bytes())?);
        }
        names.sort();
        Ok(names)
    }

    /// Every path of the tree at this entry, parents before children, with its metadata.
    pub fn walk(&self, out: &mut Vec<(String, Meta)>) -> io::Result<()> {
        self.walk_depth(out, 0)
    }

    fn walk_depth(&self, out: &mut Vec<(String, Meta)>, depth: usize) -> io::Result<()> {
        let Some(meta) = self.meta()? else { return Ok(()) };
        let is_dir = meta.kind == Kind::Dir;
        out.push((self.path.clone(), meta));
        if is_dir {
            if depth >= MAX_DEPTH {
                return Err(io::Error::other(format!(
                    "{}: deeper than {MAX_DEPTH} levels",
                    self.path
                )));
            }
            for name in self.list()? {
                self.child(&name)?.walk_depth(out, depth + 1)?;
            }
        }
        Ok(())
    }

    /// Removes whatever is at this name, a directory with everything in it; `false` when
    /// there was nothing.
    pub fn remove_tree(&self) -> io::Result<bool> {
        self.remove_depth(0)
    }

    fn remove_depth(&self, depth: usize) -> io::Result<bool> {
        let Some(kind) = self.kind()? else { return Ok(false) };
        if kind != Kind::Dir {
            return self.unlink();
        }
        if depth >= MAX_DEPTH {
            return Err(io::Error::other(format!(
                "{}: deeper than {MAX_DEPTH} levels",
                self.path
            )));
        }
        for name in self.list()? {
            self.child(&name)?.remove_depth(depth + 1)?;
        }
        self.rmdir()?;
        Ok(true)
    }
}

/// Flushes the filesystem holding `dir` (an `O_PATH` descriptor, which syncfs refuses: the
/// directory is opened for reading first).
pub fn syncfs(dir: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: valid descriptor and a NUL-terminated name.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c".".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: a new descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a valid descriptor.
    check(unsafe { libc::syncfs(fd.as_raw_fd()) }).map(|_| ())
}

pub fn hex(bytes: &[u8]) -> String {
    bundle::hex(bytes)
}

pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The device of the filesystem holding `fd`.
pub fn device(fd: &impl AsRawFd) -> io::Result<u64> {
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a writable stat.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st.st_dev)
}

/// Writes `bytes` to `path` (a plain host path under the journal directory) atomically against
/// a crash of the process: temporary file, rename. Not flushed: the caller syncs the
/// filesystem where durability matters, once for everything written since.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = File::create(&tmp).map_err(context("creating", &tmp.display().to_string()))?;
    file.write_all(bytes)?;
    std::fs::rename(&tmp, path).map_err(context("renaming into place", &path.display().to_string()))
}
