//! The tracer: the guest's package manager runs to the end as if online, but no maintainer
//! script executes in dom0, and `uname` answers with the guest's kernel.
//!
//! The sandbox's command is ptraced by a dedicated supervisor thread (ptrace belongs to the
//! thread that attached). A seccomp filter installed in the command before its first exec
//! returns `SECCOMP_RET_TRACE` only for `execve`, `execveat` and `uname`, so every other
//! syscall runs at native speed; fork/vfork/clone children are followed automatically, and
//! `PTRACE_O_EXITKILL` kills the whole tree if dormouse dies.
//!
//! - An exec of a maintainer script or rpm scriptlet ([`scripts::classify`]) is recorded —
//!   path, argv, the `DPKG_*`/`RPM_*` environment, the script's bytes and SHA-256 — and
//!   replaced by `exit_group(0)` before the kernel looks at the file: not one line of it runs,
//!   and the package manager sees a script that succeeded. rpm `<lua>` scriptlets never exec:
//!   they are reported by package ([`TraceReport::lua_scriptlets`]).
//! - `uname` is answered from the snapshot (sysname, nodename, release, version, machine,
//!   domainname) without entering the kernel.
//!
//! [`TraceMode::AllSyscalls`] does the same with `PTRACE_SYSCALL` stops on every syscall and no
//! filter: it exists to measure what the filter saves.

pub mod record;
mod rpm;
pub mod scripts;

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use introspect::linux::Uts;
use nix::errno::Errno;
use nix::sys::ptrace::{self, Options};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use record::{LuaScriptlet, Manager, Phase, ScriptRecord, ScriptType};

/// How the command is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TraceMode {
    /// Not traced: maintainer scripts really run (inside the sandbox). For baselines.
    Off,
    /// seccomp traps execve, execveat and uname only (the default).
    Seccomp,
    /// Every syscall stops (PTRACE_SYSCALL), no filter: for measuring the filter's benefit.
    AllSyscalls,
}

/// What the tracer saw and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TraceReport {
    pub scripts: Vec<ScriptRecord>,
    /// rpm `<lua>` scriptlets of the packages rpm front-ends added or removed: they ran inside
    /// rpm, in the sandbox, and could not be intercepted.
    pub lua_scriptlets: Vec<LuaScriptlet>,
    /// Execs the tracer let through (the package manager, its helpers, debconf's config
    /// scripts, ...).
    pub execs_allowed: u64,
    /// Execs refused with EPERM because the tracer could not read what they would run: an
    /// exec the tracer cannot classify could be a maintainer script.
    pub execs_refused: Vec<RefusedExec>,
    pub unames_answered: u64,
    /// ptrace stops handled (a measure of the tracing cost).
    pub stops: u64,
    /// Seconds the tracer spent handling those stops: the interception's own cost, as a lower
    /// bound (the kernel's stop and resume switches are not in it).
    pub handling_seconds: f64,
    /// Processes followed.
    pub processes: u64,
    pub warnings: Vec<String>,
}

/// An exec the tracer refused.
#[derive(Debug, Clone, Serialize)]
pub struct RefusedExec {
    pub pid: i32,
    /// What could not be read.
    pub reason: String,
}

/// Longest path, argument or environment string read from a tracee.
const MAX_STRING: usize = 64 << 10;
/// Most argv/envp entries read.
const MAX_VECTOR: usize = 4096;
/// Largest maintainer script recorded.
const MAX_SCRIPT: u64 = 16 << 20;

/// Finds the sandbox's command (the first child of the sandbox's PID 1, itself the only child
/// of the init `init_pid`), waiting until it exists.
pub fn find_command(init_pid: Pid, timeout: Duration) -> Result<Pid, String> {
    let start = Instant::now();
    loop {
        if let Some(pid1) = first_child(init_pid) {
            if let Some(command) = first_child(pid1) {
                return Ok(command);
            }
        }
        let state = std::fs::read_to_string(format!("/proc/{init_pid}/stat")).unwrap_or_default();
        if state.is_empty()
            || state
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'))
        {
            return Err("the sandbox init exited before starting the command".into());
        }
        if start.elapsed() > timeout {
            return Err(format!("the sandbox's command did not appear within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn first_child(pid: Pid) -> Option<Pid> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    text.split_whitespace().next()?.parse().ok().map(Pid::from_raw)
}

/// Attaches to the command (blocked on its start pipe, so it has not exec'd yet).
pub fn seize(command: Pid, mode: TraceMode) -> Result<(), String> {
    let options = Options::PTRACE_O_TRACESECCOMP
        | Options::PTRACE_O_TRACEFORK
        | Options::PTRACE_O_TRACEVFORK
        | Options::PTRACE_O_TRACECLONE
        | Options::PTRACE_O_TRACEEXEC
        | Options::PTRACE_O_TRACESYSGOOD
        | Options::PTRACE_O_EXITKILL;
    ptrace::seize(command, options).map_err(|e| format!("ptrace(SEIZE) of the command (pid {command}): {e}"))?;
    if mode == TraceMode::AllSyscalls {
        // Syscall stops start from a ptrace stop: interrupt it once, then resume with SYSCALL.
        ptrace::interrupt(command).map_err(|e| format!("ptrace(INTERRUPT) of pid {command}: {e}"))?;
    }
    Ok(())
}

/// The event loop: serves every tracee until `init_pid` (a plain child, not traced) exits;
/// returns its wait status, or the error that stopped `waitpid`.
pub fn event_loop(init_pid: Pid, mode: TraceMode, uts: &Uts, report: &mut TraceReport) -> Result<WaitStatus, Errno> {
    let mut tracer = Tracer {
        mode,
        utsname: utsname_bytes(uts),
        in_syscall: HashMap::new(),
        skipped: HashMap::new(),
        rpm: scripts::RpmTracker::default(),
        report,
    };
    loop {
        let status = match waitpid(None, Some(WaitPidFlag::__WALL)) {
            Ok(status) => status,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        };
        let handling = Instant::now();
        match status {
            WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _) => {
                if pid == init_pid {
                    let (lua, warnings) = tracer.rpm.finish();
                    tracer.report.lua_scriptlets.extend(lua);
                    tracer.report.warnings.extend(warnings);
                    return Ok(status);
                }
                tracer.in_syscall.remove(&pid);
                tracer.skipped.remove(&pid);
                let (lua, warning) = tracer.rpm.exited(pid);
                tracer.report.lua_scriptlets.extend(lua);
                tracer.report.warnings.extend(warning);
            }
            WaitStatus::PtraceEvent(pid, signal, event) => {
                tracer.report.stops += 1;
                tracer.on_event(pid, signal, event);
            }
            WaitStatus::PtraceSyscall(pid) => {
                tracer.report.stops += 1;
                tracer.on_syscall_stop(pid);
            }
            WaitStatus::Stopped(pid, signal) => {
                tracer.report.stops += 1;
                // Signal-delivery stop: deliver the signal as if untraced.
                tracer.resume(pid, Some(signal));
            }
            WaitStatus::Continued(_) | WaitStatus::StillAlive => {}
        }
        tracer.report.handling_seconds += handling.elapsed().as_secs_f64();
    }
}

struct Tracer<'a> {
    mode: TraceMode,
    utsname: [u8; UTSNAME_LEN],
    /// AllSyscalls mode: whether each tracee is inside a syscall (entry seen, exit not yet).
    in_syscall: HashMap<Pid, bool>,
    /// AllSyscalls mode: tracees whose syscall was skipped at entry, and the return value it
    /// must show at exit.
    skipped: HashMap<Pid, u64>,
    /// rpm headers read so far, and the rpm front-ends running.
    rpm: scripts::RpmTracker,
    report: &'a mut TraceReport,
}

impl Tracer<'_> {
    fn resume(&self, pid: Pid, signal: Option<Signal>) {
        let _ = match self.mode {
            TraceMode::AllSyscalls => ptrace::syscall(pid, signal),
            _ => ptrace::cont(pid, signal),
        };
    }

    fn on_event(&mut self, pid: Pid, signal: Signal, event: i32) {
        match event {
            libc::PTRACE_EVENT_SECCOMP => {
                self.on_syscall_entry(pid);
                self.resume(pid, None);
            }
            libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE => {
                self.report.processes += 1;
                self.resume(pid, None);
            }
            libc::PTRACE_EVENT_STOP => {
                if matches!(
                    signal,
                    Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU
                ) {
                    // Group stop (job control): stay stopped until SIGCONT, still traced.
                    let _ = listen(pid);
                } else {
                    // A new tracee's first stop, or our PTRACE_INTERRUPT.
                    self.resume(pid, None);
                }
            }
            _ => self.resume(pid, None),
        }
    }

    /// AllSyscalls mode: entry and exit stops alternate per tracee.
    fn on_syscall_stop(&mut self, pid: Pid) {
        let inside = self.in_syscall.entry(pid).or_insert(false);
        *inside = !*inside;
        if *inside {
            self.on_syscall_entry(pid);
        } else if let Some(value) = self.skipped.remove(&pid) {
            if let Ok(mut regs) = ptrace::getregs(pid) {
                regs.rax = value;
                let _ = ptrace::setregs(pid, regs);
            }
        }
        self.resume(pid, None);
    }

    fn on_syscall_entry(&mut self, pid: Pid) {
        let Ok(mut regs) = ptrace::getregs(pid) else { return };
        match regs.orig_rax as i64 {
            // The guest's utsname goes straight into the caller's buffer; the syscall is skipped.
            libc::SYS_uname if write_memory(pid, regs.rdi, &self.utsname).is_ok() => {
                self.skip_syscall(pid, regs, 0);
                self.report.unames_answered += 1;
            }
            nr @ (libc::SYS_execve | libc::SYS_execveat) => {
                let (dirfd, path, argv, envp) = if nr == libc::SYS_execve {
                    (None, regs.rdi, regs.rsi, regs.rdx)
                } else {
                    (Some(regs.rdi as i32), regs.rsi, regs.rdx, regs.r10)
                };
                match self.inspect_exec(pid, dirfd, path, argv, envp) {
                    Ok(Some(record)) => {
                        self.report.scripts.push(record);
                        // The script never starts: the process exits 0 instead of exec'ing it.
                        regs.orig_rax = libc::SYS_exit_group as u64;
                        regs.rdi = 0;
                        let _ = ptrace::setregs(pid, regs);
                    }
                    Ok(None) => self.report.execs_allowed += 1,
                    // Fail closed: what cannot be classified does not run.
                    Err(reason) => {
                        self.skip_syscall(pid, regs, -i64::from(libc::EPERM));
                        self.report.execs_refused.push(RefusedExec {
                            pid: pid.as_raw(),
                            reason,
                        });
                    }
                }
            }
            _ => {}
        }
    }

    /// The syscall at this entry stop does not run; the caller sees `value` as its result.
    fn skip_syscall(&mut self, pid: Pid, mut regs: libc::user_regs_struct, value: i64) {
        regs.orig_rax = u64::MAX;
        regs.rax = value as u64;
        let _ = ptrace::setregs(pid, regs);
        if self.mode == TraceMode::AllSyscalls {
            self.skipped.insert(pid, value as u64);
        }
    }

    fn inspect_exec(
        &mut self,
        pid: Pid,
        dirfd: Option<i32>,
        path_addr: u64,
        argv_addr: u64,
        envp_addr: u64,
    ) -> Result<Option<ScriptRecord>, String> {
        let path = read_string(pid, path_addr)?;
        let argv = read_string_vector(pid, argv_addr)?;
        let env = read_string_vector(pid, envp_addr)?;
        let path = resolve_exec_path(pid, dirfd, &path);
        let exec = scripts::Exec {
            pid,
            path: &path,
            argv: &argv,
            env: &env,
        };
        let Some(identity) = scripts::classify(&exec, &mut self.rpm) else {
            self.report.warnings.extend(self.rpm.exec_allowed(pid, &path, &argv));
            return Ok(None);
        };
        self.report.warnings.extend(identity.note);
        let bytes = match identity.bytes {
            Some(bytes) => bytes,
            None => read_guest_file(pid, &identity.script_path)?,
        };
        let sha256 = hex::encode(Sha256::digest(&bytes));
        tracing::debug!(
            "intercepted {} {:?} of {} ({} bytes): recorded, answered as a success",
            identity.script_path,
            identity.script_type,
            identity.package,
            bytes.len()
        );
        Ok(Some(ScriptRecord {
            seq: self.report.scripts.len() as u64,
            manager: identity.manager,
            phase: identity.script_type.phase(),
            script_type: identity.script_type,
            package: identity.package,
            arch: identity.arch,
            triggered: identity.triggered,
            rpm_tag: identity.rpm_tag,
            path: identity.script_path,
            argv,
            env: identity.env,
            bytes,
            sha256,
        }))
    }
}

fn listen(pid: Pid) -> nix::Result<()> {
    // SAFETY: PTRACE_LISTEN takes no pointers; pid is a tracee of this thread.
    let rc = unsafe { libc::ptrace(libc::PTRACE_LISTEN, pid.as_raw(), 0, 0) };
    Errno::result(rc).map(drop)
}

/// An absolute guest path for the exec: relative paths are taken from the tracee's cwd (or
/// `dirfd` for execveat), as the kernel reports it to dom0.
fn resolve_exec_path(pid: Pid, dirfd: Option<i32>, path: &str) -> String {
    if path.starts_with('/') {
        return scripts::normalize(path);
    }
    let base = match dirfd {
        Some(fd) if fd != libc::AT_FDCWD => std::fs::read_link(format!("/proc/{pid}/fd/{fd}")),
        _ => std::fs::read_link(format!("/proc/{pid}/cwd")),
    };
    let base = base
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "/".into());
    scripts::normalize(&format!("{base}/{path}"))
}

/// Reads a file as the tracee sees it: from its root, every symlink resolved inside it.
fn read_guest_file(pid: Pid, path: &str) -> Result<Vec<u8>, String> {
    let root: OwnedFd = File::open(format!("/proc/{pid}/root"))
        .map_err(|e| format!("opening the root of pid {pid}: {e}"))?
        .into();
    crate::disk::read_in_root(&root, Path::new("/"), path.trim_start_matches('/'), MAX_SCRIPT)
        .map_err(|e| format!("reading the script {path}: {e}"))
}

fn read_memory(pid: Pid, addr: u64, len: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; len];
    let mut local = [std::io::IoSliceMut::new(&mut buf)];
    let remote = [nix::sys::uio::RemoteIoVec {
        base: addr as usize,
        len,
    }];
    let n = nix::sys::uio::process_vm_readv(pid, &mut local, &remote)
        .map_err(|e| format!("reading {len} bytes at {addr:#x} of pid {pid}: {e}"))?;
    buf.truncate(n);
    Ok(buf)
}

fn write_memory(pid: Pid, addr: u64, bytes: &[u8]) -> Result<(), String> {
    let local = [std::io::IoSlice::new(bytes)];
    let remote = [nix::sys::uio::RemoteIoVec {
        base: addr as usize,
        len: bytes.len(),
    }];
    match nix::sys::uio::process_vm_writev(pid, &local, &remote) {
        Ok(n) if n == bytes.len() => Ok(()),
        Ok(n) => Err(format!("wrote {n} of {} bytes at {addr:#x} of pid {pid}", bytes.len())),
        Err(e) => Err(format!("writing at {addr:#x} of pid {pid}: {e}")),
    }
}

/// A NUL-terminated string of the tracee, read page by page (a string may end just before an
/// unmapped page), at most [`MAX_STRING`] bytes.
fn read_string(pid: Pid, addr: u64) -> Result<String, String> {
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < MAX_STRING {
        let to_page_end = 4096 - (at % 4096) as usize;
        let chunk = read_memory(pid, at, to_page_end)?;
        if chunk.is_empty() {
            return Err(format!("string at {addr:#x} of pid {pid} runs into unmapped memory"));
        }
        if let Some(nul) = chunk.iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..nul]);
            return Ok(String::from_utf8_lossy(&out).into_owned());
        }
        out.extend_from_slice(&chunk);
        at += chunk.len() as u64;
    }
    Err(format!(
        "string at {addr:#x} of pid {pid} is longer than {MAX_STRING} bytes"
    ))
}

/// A NULL-terminated array of string pointers (argv, envp); a NULL array reads as empty.
fn read_string_vector(pid: Pid, addr: u64) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    if addr == 0 {
        return Ok(out);
    }
    for index in 0..MAX_VECTOR as u64 {
        let word = read_memory(pid, addr + index * 8, 8)?;
        let pointer = u64::from_le_bytes(
            word.try_into()
                .map_err(|_| format!("short read of argv at {addr:#x}"))?,
        );
        if pointer == 0 {
            return Ok(out);
        }
        out.push(read_string(pid, pointer)?);
    }
    Err(format!(
        "argument vector at {addr:#x} of pid {pid} has more than {MAX_VECTOR} entries"
    ))
}

const UTSNAME_LEN: usize = 65 * 6;

/// `struct utsname` as the guest kernel would fill it (each field NUL-padded to 65 bytes,
/// truncated to 64 like the kernel's `__NEW_UTS_LEN`).
fn utsname_bytes(uts: &Uts) -> [u8; UTSNAME_LEN] {
    let mut out = [0u8; UTSNAME_LEN];
    let fields = [
        &uts.sysname,
        &uts.nodename,
        &uts.release,
        &uts.version,
        &uts.machine,
        &uts.domainname,
    ];
    for (slot, field) in out.chunks_mut(65).zip(fields) {
        let bytes = field.as_bytes();
        let n = bytes.len().min(64);
        slot[..n].copy_from_slice(&bytes[..n]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utsname_layout() {
        let uts = Uts {
            sysname: "Linux".into(),
            nodename: "n".repeat(70),
            release: "6.1.0-56-amd64".into(),
            version: "#1 SMP".into(),
            machine: "x86_64".into(),
            domainname: "(none)".into(),
        };
        let bytes = utsname_bytes(&uts);
        assert_eq!(&bytes[..6], b"Linux\0");
        assert_eq!(bytes[65 + 63], b'n');
        assert_eq!(bytes[65 + 64], 0, "nodename truncated to 64 bytes plus NUL");
        assert_eq!(&bytes[130..145], b"6.1.0-56-amd64\0");
        assert_eq!(&bytes[325..332], b"(none)\0");
    }
}
