//! The FUSE filesystem: serves a [`ProcTree`] read-only, plus the caller's own dom0 `/proc/<pid>`
//! under `self` and `thread-self`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime};

use fuser::{
    BackingId, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyWrite, Request, SessionACL, WriteFlags,
};

use crate::render::{Attr, CALLER_DIR, Kind, ProcTree, Rendered};

/// How long the kernel may cache guest nodes: the snapshot never changes.
const GUEST_TTL: Duration = Duration::from_secs(3600);
/// The caller's own entries and `self` differ per caller: never cached.
const CALLER_TTL: Duration = Duration::ZERO;
/// First inode number handed to caller paths (guest nodes are numbered densely from 1).
const CALLER_INO_BASE: u64 = 1 << 40;
/// Largest dom0 file served through `self` (pagemap, mem and the like are not for reading whole).
const CALLER_READ_LIMIT: u64 = 16 << 20;
/// Guest files whose bytes change on every read (the kernel's fresh random UUID): rendered per
/// open and served through the server; every other guest file is rendered once and kept.
const VOLATILE: [&str; 1] = ["sys/kernel/random/uuid"];
/// Backing files kept registered after their last close (at least a page of kernel memory
/// each); beyond these, a file's backing lives only while it is open and a later open
/// registers it again.
const PINNED_BACKINGS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(
        "mounting the shadow /proc at {path}: {source} (needs root or /dev/fuse access and `fusermount3` from Debian's fuse3 package; is {path} an existing empty directory?)"
    )]
    Mount { path: PathBuf, source: std::io::Error },
    #[error("serving the shadow /proc at {path}: {source}")]
    Serve { path: PathBuf, source: std::io::Error },
}

/// The filesystem handed to fuser.
pub struct ShadowFs {
    tree: ProcTree,
    /// Guest paths by inode (index = ino - 1) and back.
    guest_paths: Vec<String>,
    guest_inos: HashMap<String, u64>,
    /// Caller paths (`.dormouse-caller/<pid>/...`) by inode and back.
    caller: RwLock<(Vec<String>, HashMap<String, u64>)>,
    handles: Mutex<HashMap<u64, Arc<Vec<u8>>>>,
    next_fh: AtomicU64,
    /// Renderings of immutable guest files, by inode (the snapshot never changes).
    rendered: Mutex<HashMap<u64, Arc<Vec<u8>>>>,
    /// Whether the kernel agreed to FUSE passthrough (and registering backing files works).
    passthrough: AtomicBool,
    /// Immutable guest files as kernel backing files (sealed memfds): reads of an open file then
    /// never reach this server. At most one per inode at a time, as the kernel requires for
    /// concurrent opens of the same inode.
    backing: Mutex<Backings>,
    /// Whether to ask the kernel for passthrough at all.
    allow_passthrough: bool,
    /// Read requests answered by this server (passthrough reads never reach it).
    reads: Arc<AtomicU64>,
    /// dom0's procfs, where the caller's own entries come from.
    host_proc: PathBuf,
    mounted_at: SystemTime,
}

impl ShadowFs {
    pub fn new(tree: ProcTree) -> ShadowFs {
        Self::with_host_proc(tree, PathBuf::from("/proc"))
    }

    pub fn with_host_proc(tree: ProcTree, host_proc: PathBuf) -> ShadowFs {
        let guest_paths: Vec<String> = tree.paths().map(str::to_owned).collect();
        let guest_inos = guest_paths
            .iter()
            .enumerate()
            .map(|(i, p)| (p.clone(), i as u64 + 1))
            .collect();
        ShadowFs {
            tree,
            guest_paths,
            guest_inos,
            caller: RwLock::new((Vec::new(), HashMap::new())),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            rendered: Mutex::new(HashMap::new()),
            passthrough: AtomicBool::new(false),
            backing: Mutex::new(Backings::default()),
            allow_passthrough: true,
            reads: Arc::new(AtomicU64::new(0)),
            host_proc,
            mounted_at: SystemTime::now(),
        }
    }

    /// Never uses FUSE passthrough: every read(2) is answered by this server, as on kernels
    /// without passthrough (< 6.9) or servers without CAP_SYS_ADMIN.
    pub fn without_passthrough(mut self) -> ShadowFs {
        self.allow_passthrough = false;
        self
    }

    /// Counts the read requests this server answers (reads served by passthrough are not).
    pub fn server_reads(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.reads)
    }

    fn path_of(&self, ino: INodeNo) -> Option<String> {
        let ino = ino.0;
        if ino >= CALLER_INO_BASE {
            let caller = self.caller.read().ok()?;
            return caller.0.get((ino - CALLER_INO_BASE) as usize).cloned();
        }
        self.guest_paths.get(ino.checked_sub(1)? as usize).cloned()
    }

    fn ino_of(&self, path: &str) -> u64 {
        if let Some(ino) = self.guest_inos.get(path) {
            return *ino;
        }
        if let Ok(caller) = self.caller.read()
            && let Some(ino) = caller.1.get(path)
        {
            return *ino;
        }
        let Ok(mut caller) = self.caller.write() else {
            return 0;
        };
        let (list, map) = &mut *caller;
        *map.entry(path.to_owned()).or_insert_with(|| {
            list.push(path.to_owned());
            CALLER_INO_BASE + list.len() as u64 - 1
        })
    }

    fn file_attr(&self, ino: u64, a: Attr) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: self.mounted_at,
            mtime: self.mounted_at,
            ctime: self.mounted_at,
            crtime: self.mounted_at,
            kind: match a.kind {
                Kind::File => FileType::RegularFile,
                Kind::Dir => FileType::Directory,
                Kind::Symlink => FileType::Symlink,
            },
            perm: a.mode,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: 0,
            blksize: 1024,
            flags: 0,
        }
    }

    /// Thread-group id of the requesting thread, from dom0's procfs.
    fn caller_tgid(&self, tid: u32) -> Option<u32> {
        if tid == 0 {
            return None;
        }
        // Nearly every caller is a process's main thread, whose tid is its tgid: pidfd_open
        // succeeds only for such a thread, and costs one syscall instead of reading and parsing
        // /proc/<tid>/status on every lookup under /proc/self.
        if self.host_proc == Path::new("/proc") {
            // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, tid as libc::pid_t, 0) };
            if fd >= 0 {
                // SAFETY: the descriptor was just returned to us and is closed once.
                drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) });
                return Some(tid);
            }
        }
        let status = std::fs::read_to_string(self.host_proc.join(tid.to_string()).join("status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("Tgid:"))
            .and_then(|v| v.trim().parse().ok())
    }

    /// For `.dormouse-caller/<pid>/rest`: dom0's `/proc/<pid>/rest`, only when `<pid>` is the
    /// caller's own thread group (a caller never sees another process's entries this way).
    fn caller_host_path(&self, req: &Request, path: &str) -> Result<Option<PathBuf>, Errno> {
        let rest = match path.strip_prefix(CALLER_DIR) {
            Some("") => return Ok(None),
            Some(r) => r.strip_prefix('/').ok_or(Errno::ENOENT)?,
            None => return Err(Errno::ENOENT),
        };
        let (pid, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let pid: u32 = pid.parse().map_err(|_| Errno::ENOENT)?;
        let tgid = self.caller_tgid(req.pid()).ok_or(Errno::ENOENT)?;
        if pid != tgid {
            return Err(Errno::ENOENT);
        }
        let mut host = self.host_proc.join(pid.to_string());
        if !tail.is_empty() {
            host.push(tail);
        }
        Ok(Some(host))
    }

    /// Attributes of any path, for the calling request.
    fn attr_for(&self, req: &Request, path: &str) -> Result<(FileAttr, Duration), Errno> {
        if path == CALLER_DIR || path.starts_with(&format!("{CALLER_DIR}/")) {
            let ino = self.ino_of(path);
            let a = match self.caller_host_path(req, path)? {
                None => Attr {
                    kind: Kind::Dir,
                    mode: 0o555,
                    uid: 0,
                    gid: 0,
                    nlink: 2,
                },
                Some(host) => host_attr(&host)?,
            };
            return Ok((self.file_attr(ino, a), CALLER_TTL));
        }
        let a = self.tree.attr(path).ok_or(Errno::ENOENT)?;
        let ttl = if self.tree.caller_link(path).is_some() {
            CALLER_TTL
        } else {
            GUEST_TTL
        };
        Ok((self.file_attr(self.ino_of(path), a), ttl))
    }

    fn dir_entries(&self, req: &Request, path: &str) -> Result<Vec<(u64, FileType, String)>, Errno> {
        let parent = match path.rsplit_once('/') {
            Some((p, _)) => p.to_owned(),
            None => String::new(),
        };
        let mut out = vec![
            (self.ino_of(path), FileType::Directory, ".".to_owned()),
            (self.ino_of(&parent), FileType::Directory, "..".to_owned()),
        ];
        if path == CALLER_DIR || path.starts_with(&format!("{CALLER_DIR}/")) {
            match self.caller_host_path(req, path)? {
                None => {
                    if let Some(tgid) = self.caller_tgid(req.pid()) {
                        let p = format!("{CALLER_DIR}/{tgid}");
                        out.push((self.ino_of(&p), FileType::Directory, tgid.to_string()));
                    }
                }
                Some(host) => {
                    let dir = std::fs::read_dir(&host).map_err(Errno::from)?;
                    for entry in dir.flatten() {
                        let name = entry.file_name().to_string_lossy().into_owned();
                        let kind = entry
                            .file_type()
                            .ok()
                            .and_then(FileType::from_std)
                            .unwrap_or(FileType::RegularFile);
                        out.push((self.ino_of(&format!("{path}/{name}")), kind, name));
                    }
                }
            }
            return Ok(out);
        }
        match self.tree.render(path) {
            Ok(Rendered::Dir(entries)) => {
                for e in entries {
                    let child = if path.is_empty() {
                        e.name.clone()
                    } else {
                        format!("{path}/{}", e.name)
                    };
                    let kind = match e.kind {
                        Kind::File => FileType::RegularFile,
                        Kind::Dir => FileType::Directory,
                        Kind::Symlink => FileType::Symlink,
                    };
                    out.push((self.ino_of(&child), kind, e.name));
                }
                Ok(out)
            }
            Ok(_) => Err(Errno::ENOTDIR),
            Err(_) => Err(Errno::ENOENT),
        }
    }

    fn contents(&self, req: &Request, path: &str) -> Result<Vec<u8>, Errno> {
        if path.starts_with(&format!("{CALLER_DIR}/")) {
            let host = self.caller_host_path(req, path)?.ok_or(Errno::EISDIR)?;
            let mut bytes = Vec::new();
            std::fs::File::open(&host)
                .and_then(|f| f.take(CALLER_READ_LIMIT).read_to_end(&mut bytes))
                .map_err(Errno::from)?;
            return Ok(bytes);
        }
        match self.tree.render(path) {
            Ok(Rendered::File(bytes)) => Ok(bytes),
            Ok(Rendered::Dir(_)) => Err(Errno::EISDIR),
            Ok(Rendered::Symlink(_)) => Err(Errno::ELOOP),
            Err(_) => Err(Errno::ENOENT),
        }
    }
}

impl ShadowFs {
    /// A guest file's rendering: once per inode for immutable files, per call for volatile ones.
    fn guest_bytes(&self, req: &Request, ino: u64, path: &str) -> Result<(Arc<Vec<u8>>, bool), Errno> {
        if VOLATILE.contains(&path) {
            return Ok((Arc::new(self.contents(req, path)?), false));
        }
        if let Some(bytes) = self.rendered.lock().ok().and_then(|m| m.get(&ino).cloned()) {
            return Ok((bytes, true));
        }
        let bytes = Arc::new(self.contents(req, path)?);
        if let Ok(mut m) = self.rendered.lock() {
            m.entry(ino).or_insert_with(|| Arc::clone(&bytes));
        }
        Ok((bytes, true))
    }

    /// The backing file of an immutable guest file for passthrough reads, registered on first
    /// use. `None` when passthrough is off or registering fails (then it is turned off: reads go
    /// through the server).
    fn backing_for(&self, reply: &ReplyOpen, ino: u64, bytes: &[u8]) -> Option<Arc<BackingId>> {
        if !self.passthrough.load(Ordering::Relaxed) {
            return None;
        }
        // Held while registering: concurrent first opens of one inode must share one backing id.
        let mut backing = self.backing.lock().ok()?;
        if let Some(id) = backing.by_ino.get(&ino).and_then(Weak::upgrade) {
            return Some(id);
        }
        let registered = sealed_memfd(bytes).and_then(|fd| reply.open_backing(&fd));
        match registered {
            Ok(id) => {
                let id = Arc::new(id);
                backing.by_ino.insert(ino, Arc::downgrade(&id));
                if backing.pinned.len() < PINNED_BACKINGS {
                    backing.pinned.push(Arc::clone(&id));
                }
                Some(id)
            }
            Err(e) => {
                tracing::warn!("FUSE passthrough unavailable ({e}); serving reads from the server");
                self.passthrough.store(false, Ordering::Relaxed);
                None
            }
        }
    }
}

/// Registered backing files: weakly by inode; strongly by the open handles using them and, for
/// the first [`PINNED_BACKINGS`], for the mount's lifetime.
#[derive(Default)]
struct Backings {
    by_ino: HashMap<u64, Weak<BackingId>>,
    by_fh: HashMap<u64, Arc<BackingId>>,
    pinned: Vec<Arc<BackingId>>,
}

/// A sealed (read-only, fixed-size) memfd holding `bytes`; the kernel keeps its own reference
/// once it is registered as a backing file, so the descriptor is closed right after.
fn sealed_memfd(bytes: &[u8]) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: the name is a valid NUL-terminated string; flags are plain constants.
    let fd = unsafe { libc::memfd_create(c"dormouse-proc".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: memfd_create just returned this descriptor, owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on a descriptor we own, with an integer argument.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file.into())
}

fn host_attr(host: &Path) -> Result<Attr, Errno> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(host).map_err(Errno::from)?;
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else {
        Kind::File
    };
    Ok(Attr {
        kind,
        mode: (m.mode() & 0o7777) as u16,
        uid: m.uid(),
        gid: m.gid(),
        nlink: m.nlink() as u32,
    })
}

fn join(parent: &str, name: &OsStr) -> Option<String> {
    let name = name.to_str()?;
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return None;
    }
    Some(if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}/{name}")
    })
}

impl Filesystem for ShadowFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Passthrough: reads of immutable guest files go straight to a memfd in the kernel, no
        // round trip here per read(2) (direct I/O would cost one each, as i_size stays 0).
        // Stack depth 1 keeps this mount usable under overlayfs.
        let on = self.allow_passthrough
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok();
        self.passthrough.store(on, Ordering::Relaxed);
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(path) = self.path_of(parent).and_then(|p| join(&p, name)) else {
            return reply.error(Errno::ENOENT);
        };
        match self.attr_for(req, &path) {
            Ok((attr, ttl)) => reply.entry(&ttl, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let Some(path) = self.path_of(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match self.attr_for(req, &path) {
            Ok((attr, ttl)) => reply.attr(&ttl, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let Some(path) = self.path_of(ino) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(thread) = self.tree.caller_link(&path) {
            let Some(tgid) = self.caller_tgid(req.pid()) else {
                return reply.error(Errno::ENOENT);
            };
            let target = if thread {
                format!("{CALLER_DIR}/{tgid}/task/{}", req.pid())
            } else {
                format!("{CALLER_DIR}/{tgid}")
            };
            return reply.data(target.as_bytes());
        }
        if path.starts_with(&format!("{CALLER_DIR}/")) {
            let target = self
                .caller_host_path(req, &path)
                .and_then(|h| h.ok_or(Errno::EINVAL))
                .and_then(|h| std::fs::read_link(h).map_err(Errno::from));
            return match target {
                Ok(t) => reply.data(t.as_os_str().as_encoded_bytes()),
                Err(e) => reply.error(e),
            };
        }
        match self.tree.render(&path) {
            Ok(Rendered::Symlink(target)) => reply.data(target.as_bytes()),
            Ok(_) => reply.error(Errno::EINVAL),
            Err(_) => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return reply.error(Errno::EROFS);
        }
        let Some(path) = self.path_of(ino) else {
            return reply.error(Errno::ENOENT);
        };
        // The caller's own files and volatile guest files are read at open; other guest files are
        // rendered once. Reads serve slices of that (procfs's seq_file semantics), from the
        // kernel's backing file with passthrough, else from here.
        let rendered = if ino.0 < CALLER_INO_BASE {
            self.guest_bytes(req, ino.0, &path)
        } else {
            self.contents(req, &path).map(|b| (Arc::new(b), false))
        };
        match rendered {
            Ok((bytes, immutable)) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                if immutable && let Some(id) = self.backing_for(&reply, ino.0, &bytes) {
                    // Held by the handle before the kernel can send its release.
                    if let Ok(mut b) = self.backing.lock() {
                        b.by_fh.insert(fh, Arc::clone(&id));
                    }
                    return reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id);
                }
                if let Ok(mut handles) = self.handles.lock() {
                    handles.insert(fh, bytes);
                }
                // Size is 0 like procfs: direct I/O makes the kernel ask us instead of i_size.
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let bytes = match self.handles.lock() {
            Ok(h) => h.get(&fh.0).cloned(),
            Err(_) => None,
        };
        let Some(bytes) = bytes else {
            return reply.error(Errno::EBADF);
        };
        self.reads.fetch_add(1, Ordering::Relaxed);
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
        let end = start.saturating_add(size as usize).min(bytes.len());
        reply.data(&bytes[start..end]);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Ok(mut h) = self.handles.lock() {
            h.remove(&fh.0);
        }
        let backing = self.backing.lock().ok().and_then(|mut b| b.by_fh.remove(&fh.0));
        // Dropped (and, unless pinned, unregistered) outside the lock.
        drop(backing);
        reply.ok();
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.path_of(ino).map(|p| self.attr_for(req, &p)) {
            Some(Ok((attr, _))) if attr.kind == FileType::Directory => reply.opened(FileHandle(0), FopenFlags::empty()),
            Some(Ok(_)) => reply.error(Errno::ENOTDIR),
            Some(Err(e)) => reply.error(e),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(&self, req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let Some(path) = self.path_of(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match self.dir_entries(req, &path) {
            Ok(entries) => {
                for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(ino), i as u64 + 1, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }
}

/// Mount options: read-only, shared with every user of the sandbox (`allow_other`), permission
/// checks by the kernel against the modes and owners served (`default_permissions`), unmounted
/// by `fusermount3` when the server dies (`auto_unmount`), listed as `proc` in mount tables.
pub fn mount_config(threads: usize) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("proc".into()),
        MountOption::Subtype("dormouse".into()),
        MountOption::RO,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoExec,
        MountOption::DefaultPermissions,
        MountOption::AutoUnmount,
    ];
    config.acl = SessionACL::All;
    config.n_threads = Some(threads.max(1));
    config
}

/// Mounts `tree` at `mountpoint` and serves it in the foreground until SIGINT or SIGTERM (then
/// unmounts) or until the filesystem is unmounted from outside. If this process dies without
/// either, `fusermount3` (auto_unmount) removes the mount.
pub fn serve(tree: ProcTree, mountpoint: &Path) -> Result<(), MountError> {
    use nix::sys::signal::{SigSet, Signal};
    // Block the signals in every thread (the session's threads inherit the mask) and take them
    // synchronously here.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGUSR1);
    signals.thread_block().map_err(|e| MountError::Serve {
        path: mountpoint.to_owned(),
        source: e.into(),
    })?;
    let mut session =
        fuser::Session::new(ShadowFs::new(tree), mountpoint, &mount_config(4)).map_err(|source| MountError::Mount {
            path: mountpoint.to_owned(),
            source,
        })?;
    let mut unmounter = session.unmount_callable();
    let worker = std::thread::spawn(move || {
        let result = session.run();
        // Unmounted from outside: wake the signal wait below.
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), Signal::SIGUSR1);
        result
    });
    tracing::info!("serving the shadow /proc at {}", mountpoint.display());
    let signal = signals.wait().map_err(|e| MountError::Serve {
        path: mountpoint.to_owned(),
        source: e.into(),
    })?;
    tracing::info!("{signal:?}: unmounting {}", mountpoint.display());
    if signal != Signal::SIGUSR1 {
        // fusermount's auto_unmount only acts once this process is gone; detach the mount
        // ourselves, which also ends the session threads' reads.
        detach(mountpoint).map_err(|source| MountError::Serve {
            path: mountpoint.to_owned(),
            source,
        })?;
        let _ = unmounter.unmount();
    }
    match worker.join() {
        Ok(result) => result.map_err(|source| MountError::Serve {
            path: mountpoint.to_owned(),
            source,
        }),
        Err(_) => Err(MountError::Serve {
            path: mountpoint.to_owned(),
            source: std::io::Error::other("the FUSE session thread panicked"),
        }),
    }
}

/// Lazily unmounts `mountpoint`: umount2(MNT_DETACH) as root, else `fusermount3 -u -z`.
fn detach(mountpoint: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EPERM) {
        return Err(err);
    }
    let status = std::process::Command::new("fusermount3")
        .args(["-u", "-z", "--"])
        .arg(mountpoint)
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "fusermount3 -u -z {} failed: {status}",
            mountpoint.display()
        )))
    }
}

/// A shadow /proc served by background threads of this process; dropping it unmounts.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    path: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // fusermount's auto_unmount acts only when this process is gone, so detach first; the
        // session threads then see the connection end and the join in the session's drop returns.
        if let Err(e) = detach(&self.path) {
            tracing::warn!("unmounting {}: {e}", self.path.display());
        }
        drop(self.session.take());
    }
}

/// Mounts `fs` at `mountpoint` served by background threads of this process; unmounted when
/// the returned [`Mounted`] is dropped (for tests and benchmarks).
pub fn spawn(fs: ShadowFs, mountpoint: &Path) -> Result<Mounted, MountError> {
    let session = fuser::spawn_mount(fs, mountpoint, &mount_config(4)).map_err(|source| MountError::Mount {
        path: mountpoint.to_owned(),
        source,
    })?;
    Ok(Mounted {
        session: Some(session),
        path: mountpoint.to_owned(),
    })
}
