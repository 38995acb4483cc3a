//! The sandbox init (`dormouse __sandbox-init SPEC`) and PID 1 of the sandbox's PID namespace.
//! Both run in a freshly executed, single-threaded process, so forking and allocating are safe.

use std::ffi::CString;
use std::fs::{self, File};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, symlink};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use crate::disk::open_in_root;

use super::{EXEC_FAILED, NetMode, SETUP_FAILED, SandboxError, SandboxSpec, confine};

type Result<T> = std::result::Result<T, SandboxError>;

/// Entry point of `dormouse __sandbox-init SPEC`: never returns; exits with the command's
/// status (128 + signal when it was killed), or [`SETUP_FAILED`].
pub fn init_main(spec_path: &Path) -> ! {
    let code = match run_init(spec_path) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dormouse sandbox: {e}");
            SETUP_FAILED
        }
    };
    std::process::exit(code)
}

fn run_init(spec_path: &Path) -> Result<i32> {
    die_with_parent()?;
    let text = fs::read(spec_path).map_err(|e| SandboxError::io("reading the sandbox spec", spec_path, e))?;
    let spec: SandboxSpec = serde_json::from_slice(&text).map_err(|e| SandboxError::Setup {
        what: "parsing the sandbox spec".into(),
        path: spec_path.to_owned(),
        detail: e.to_string(),
    })?;
    spec.cgroups.join_self()?;
    if let Some(netns) = &spec.netns {
        crate::netproxy::join_netns(netns)?;
    }
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWCGROUP;
    if spec.net == NetMode::None {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    unshare(flags).map_err(|e| SandboxError::io("unsharing namespaces", Path::new("/"), e))?;
    // Nothing mounted from here on may propagate back to the supervisor or dom0.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| SandboxError::io("making mounts private", Path::new("/"), e))?;
    nix::unistd::sethostname(&spec.hostname)
        .map_err(|e| SandboxError::io("setting the guest's hostname", Path::new(&spec.hostname), e))?;
    set_domainname(&spec.domainname)?;
    if spec.net == NetMode::None {
        loopback_up()?;
    }
    // SAFETY: this process is single-threaded (freshly executed), so the child may do anything.
    match unsafe { fork() }.map_err(|e| SandboxError::io("forking PID 1 of the sandbox", spec_path, e))? {
        ForkResult::Child => {
            let code = match pid1(&spec) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("dormouse sandbox: {e}");
                    SETUP_FAILED
                }
            };
            std::process::exit(code)
        }
        ForkResult::Parent { child } => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => return Err(SandboxError::io("waiting for the sandbox's PID 1", spec_path, e)),
            }
        },
    }
}

fn die_with_parent() -> Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| SandboxError::Confine(format!("setting the parent-death signal: {e}")))?;
    // The parent may have died before the call above: then we were reparented already.
    if nix::unistd::getppid() == Pid::from_raw(1) {
        return Err(SandboxError::Confine(
            "the supervisor died before the sandbox started".into(),
        ));
    }
    Ok(())
}

/// PID 1: builds the guest's view, confines itself, runs the command and reaps every orphan
/// until the command exits; then kills whatever is left (daemons a script started).
fn pid1(spec: &SandboxSpec) -> Result<i32> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| SandboxError::Confine(format!("setting the parent-death signal: {e}")))?;
    // A session of its own: no controlling terminal to inject input into (TIOCSTI), and
    // kill(0, ...) from inside reaches only this session's process group, not the dom0
    // processes of the caller's, which PID namespaces alone do not prevent.
    nix::unistd::setsid().map_err(|e| SandboxError::io("starting a new session", &spec.root, e))?;
    mount_guest_view(spec)?;
    pivot_into(&spec.root)?;
    confine::drop_privileges()?;
    confine::apply_deny_list()?;
    if !spec.durable {
        confine::apply_skip_durability()?;
    }
    let (program, argv, envp) = exec_arguments(spec)?;
    // SAFETY: single-threaded process.
    match unsafe { fork() }.map_err(|e| SandboxError::io("forking the command", Path::new("/"), e))? {
        ForkResult::Child => {
            if let Err(e) = default_signals().and_then(|()| wait_for_tracer(spec)) {
                eprintln!("dormouse sandbox: {e}");
                std::process::exit(SETUP_FAILED);
            }
            let err = nix::unistd::execve(&program, &argv, &envp).unwrap_err();
            eprintln!("dormouse sandbox: executing {}: {err}", program.to_string_lossy());
            std::process::exit(EXEC_FAILED)
        }
        ForkResult::Parent { child } => {
            let code = reap_until(child);
            // Kill what is left in the namespace (signals from PID 1 to -1 reach all but itself).
            let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
            while waitpid(None, Some(WaitPidFlag::__WALL)).is_ok() {}
            Ok(code)
        }
    }
}

/// Every signal at its default action and none blocked, as the guest's own init would start
/// the command. Ignored actions and the mask survive execve, and this process has at least the
/// Rust runtime's ignored SIGPIPE (plus whatever dom0's caller ignored): the guest's package
/// manager and its scripts would see EPIPE errors where, on the guest, SIGPIPE ends them.
fn default_signals() -> Result<()> {
    /// The kernel's `struct sigaction` on x86-64 (handler, flags, restorer, mask), not libc's.
    #[repr(C)]
    struct KernelSigaction {
        handler: libc::sighandler_t,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // The raw system call: glibc's sigaction refuses the real-time signals it reserves (32 and
    // 33), which arrive here ignored too.
    for signal in (1..=libc::SIGRTMAX()).filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP) {
        // SAFETY: rt_sigaction reads `default`, the kernel's layout with its 8-byte mask, and
        // writes nothing (no old action asked for).
        let done = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                &default as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                std::mem::size_of::<u64>(),
            )
        };
        Errno::result(done)
            .map_err(|e| SandboxError::Confine(format!("restoring the default action of signal {signal}: {e}")))?;
    }
    nix::sys::signal::SigSet::empty()
        .thread_set_mask()
        .map_err(|e| SandboxError::Confine(format!("unblocking every signal for the command: {e}")))
}

/// Blocks until the supervisor has attached its tracer, then installs the tracing filter
/// (whose traps would fail with ENOSYS if nobody were attached).
fn wait_for_tracer(spec: &SandboxSpec) -> Result<()> {
    if let Some(fd) = spec.start_fd {
        // SAFETY: the supervisor passed this descriptor for us alone; we own it from here.
        let gate = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut byte = [0u8; 2];
        let n = nix::unistd::read(&gate, &mut byte)
            .map_err(|e| SandboxError::io("waiting for the tracer", Path::new("start pipe"), e))?;
        if n == 0 {
            return Err(SandboxError::Confine(
                "the supervisor closed the start pipe without starting the command".into(),
            ));
        }
    }
    if spec.trace == crate::trace::TraceMode::Seccomp {
        confine::apply_trace_filter()?;
    }
    Ok(())
}

fn reap_until(command: Pid) -> i32 {
    loop {
        match waitpid(None, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == command => return code,
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == command => return 128 + signal as i32,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return SETUP_FAILED,
        }
    }
}

fn mount_guest_view(spec: &SandboxSpec) -> Result<()> {
    let root = &spec.root;
    let at = |p: &str| root.join(p);
    bind(&spec.proc, &at("proc"), MsFlags::empty())?;

    let dev = at("dev");
    mount_tmpfs(
        &dev,
        "mode=0755,size=1m",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV,
    )?;
    // Bind mounts keep the flags of dom0's /dev, so these nodes work although the tmpfs is nodev;
    // a node the package manager creates in /dev cannot be opened.
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(node);
        File::create(&target).map_err(|e| SandboxError::io("creating a device mount point", &target, e))?;
        bind(
            &Path::new("/dev").join(node),
            &target,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        )?;
    }
    for (dir, mode) in [("pts", 0o755), ("shm", 0o1777)] {
        make_dir(&dev.join(dir), mode)?;
    }
    mount(
        Some("devpts"),
        &dev.join("pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )
    .map_err(|e| SandboxError::io("mounting devpts", &dev.join("pts"), e))?;
    mount_tmpfs(
        &dev.join("shm"),
        "mode=1777,size=64m",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )?;
    for (name, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(name)).map_err(|e| SandboxError::io("creating a /dev symlink", &dev.join(name), e))?;
    }
    remount_read_only(&dev, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV)?;

    mount_tmpfs(
        &at("sys"),
        "mode=0555,size=4k",
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV,
    )?;
    let size = spec.tmpfs_bytes;
    mount_tmpfs(
        &at("run"),
        &format!("mode=0755,size={size}"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )?;
    make_dir(&at("run/lock"), 0o1777)?;
    mount_tmpfs(
        &at("tmp"),
        &format!("mode=1777,size={size}"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )?;
    if let Some(host) = &spec.resolv_conf {
        bind_resolv_conf(host, root)?;
    }
    for extra in &spec.binds {
        // Inside the fresh tmpfs of /run or /tmp: no guest symlink can be on this path.
        let target = root.join(extra.target.trim_start_matches('/'));
        if extra.source.is_dir() {
            fs::create_dir_all(&target).map_err(|e| SandboxError::io("creating a bind target", &target, e))?;
        } else {
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(|e| SandboxError::io("creating a bind target", parent, e))?;
            }
            File::create(&target).map_err(|e| SandboxError::io("creating a bind target", &target, e))?;
        }
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        bind(&extra.source, &target, flags)?;
        remount_read_only(&target, MsFlags::MS_BIND | flags)?;
    }
    Ok(())
}

/// Binds dom0's resolv.conf over the guest's, resolving the guest's path inside the guest
/// tree. When it is a symlink into `/run` (systemd-resolved, resolvconf), the target is
/// created in the fresh `/run` tmpfs first; an absent or otherwise dangling file is left alone
/// rather than created in the overlay, where it would become part of the captured changes.
fn bind_resolv_conf(host: &Path, root: &Path) -> Result<()> {
    let root_fd = open_dir(root)?;
    let target = match open_in_root(&root_fd, "etc/resolv.conf", libc::O_PATH) {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let link = fs::read_link(root.join("etc/resolv.conf")).ok();
            let Some(link) = link.filter(|l| l.starts_with("/run/") || l.starts_with("../run/")) else {
                return Ok(());
            };
            let _ = link;
            open_in_root(&root_fd, "etc/resolv.conf", libc::O_CREAT | libc::O_WRONLY).map_err(|e| {
                SandboxError::io(
                    "creating the guest's resolv.conf in /run",
                    &root.join("etc/resolv.conf"),
                    e,
                )
            })?
        }
        Err(e) => {
            return Err(SandboxError::io(
                "opening the guest's resolv.conf",
                &root.join("etc/resolv.conf"),
                e,
            ));
        }
    };
    let via = PathBuf::from(format!("/proc/self/fd/{}", target.as_raw_fd()));
    bind(host, &via, MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC)?;
    // `target` still names the file under the new mount; a fresh lookup reaches the mount.
    let mounted = open_in_root(&root_fd, "etc/resolv.conf", libc::O_PATH)
        .map_err(|e| SandboxError::io("reopening the bound resolv.conf", &root.join("etc/resolv.conf"), e))?;
    let via = PathBuf::from(format!("/proc/self/fd/{}", mounted.as_raw_fd()));
    remount_read_only(
        &via,
        MsFlags::MS_BIND | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
    )
}

fn pivot_into(root: &Path) -> Result<()> {
    nix::unistd::chdir(root).map_err(|e| SandboxError::io("entering the guest tree", root, e))?;
    // With new_root == put_old the old root ends up stacked under the new one, where a lazy
    // unmount removes it without needing a directory for it in the guest tree.
    nix::unistd::pivot_root(".", ".").map_err(|e| SandboxError::io("pivot_root into the guest tree", root, e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| SandboxError::io("detaching dom0's root", root, e))?;
    nix::unistd::chdir("/").map_err(|e| SandboxError::io("entering the guest's /", root, e))
}

fn exec_arguments(spec: &SandboxSpec) -> Result<(CString, Vec<CString>, Vec<CString>)> {
    let cstring = |s: &str| {
        CString::new(s).map_err(|_| SandboxError::Setup {
            what: "preparing the command".into(),
            path: PathBuf::from(s),
            detail: "contains a NUL byte".into(),
        })
    };
    let first = spec.command.first().ok_or_else(|| SandboxError::Setup {
        what: "preparing the command".into(),
        path: PathBuf::from("/"),
        detail: "no command given".into(),
    })?;
    let program = if first.contains('/') {
        first.clone()
    } else {
        let path = spec
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or("/usr/sbin:/usr/bin:/sbin:/bin", |(_, v)| v.as_str());
        path.split(':')
            .map(|dir| format!("{dir}/{first}"))
            .find(|candidate| nix::unistd::access(candidate.as_str(), nix::unistd::AccessFlags::X_OK).is_ok())
            .ok_or_else(|| SandboxError::Setup {
                what: format!("finding {first} in the guest's PATH ({path})"),
                path: PathBuf::from(first),
                detail: "no executable of that name in the guest tree".into(),
            })?
    };
    let argv = spec.command.iter().map(|a| cstring(a)).collect::<Result<Vec<_>>>()?;
    let envp = spec
        .env
        .iter()
        .map(|(k, v)| cstring(&format!("{k}={v}")))
        .collect::<Result<Vec<_>>>()?;
    Ok((cstring(&program)?, argv, envp))
}

fn bind(source: &Path, target: &Path, flags: MsFlags) -> Result<()> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC | flags,
        None::<&str>,
    )
    .map_err(|e| SandboxError::io(&format!("bind-mounting {}", source.display()), target, e))
}

fn remount_read_only(target: &Path, flags: MsFlags) -> Result<()> {
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags,
        None::<&str>,
    )
    .map_err(|e| SandboxError::io("remounting read-only", target, e))
}

fn mount_tmpfs(target: &Path, options: &str, flags: MsFlags) -> Result<()> {
    mount(Some("tmpfs"), target, Some("tmpfs"), flags, Some(options))
        .map_err(|e| SandboxError::io(&format!("mounting tmpfs ({options})"), target, e))
}

fn make_dir(path: &Path, mode: u32) -> Result<()> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(|e| SandboxError::io("creating a directory", path, e))?;
    // The umask narrowed the mode given above.
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        path,
        nix::sys::stat::Mode::from_bits_truncate(mode),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(|e| SandboxError::io("setting a directory's mode", path, e))
}

fn open_dir(path: &Path) -> Result<OwnedFd> {
    File::open(path)
        .map(OwnedFd::from)
        .map_err(|e| SandboxError::io("opening the guest tree", path, e))
}

fn set_domainname(name: &str) -> Result<()> {
    // SAFETY: setdomainname reads `len` bytes from the pointer, valid for the call.
    let rc = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    Errno::result(rc)
        .map(drop)
        .map_err(|e| SandboxError::io("setting the guest's domainname", Path::new(name), e))
}

/// A new network namespace starts with `lo` down; apt and resolvers expect it up.
pub(crate) fn loopback_up() -> Result<()> {
    let err = |e: Errno| SandboxError::io("bringing up lo in the sandbox", Path::new("lo"), e);
    // SAFETY: plain socket(2) call; the result is checked and owned below.
    let fd =
        Errno::result(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) }).map_err(err)?;
    // SAFETY: socket succeeded, so `fd` is ours.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is a plain C struct; zero is a valid initial value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: the ioctls read and write the ifreq we own.
    Errno::result(unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) }).map_err(err)?;
    // SAFETY: as above; ifru_flags is the active union member after SIOCGIFFLAGS.
    unsafe {
        request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: as above.
    Errno::result(unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) }).map_err(err)?;
    Ok(())
}
