//! What the guest's package manager keeps of root's powers: a short capability list, no new
//! privileges, and a syscall deny-list as a second wall behind the capabilities.

use std::collections::BTreeMap;

use caps::{CapSet, Capability};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch, sock_filter,
};

use super::SandboxError;

/// What apt, dpkg and rpm need as root: own and chmod any file, read and search everything,
/// keep setgid bits, signal their children, drop to `_apt`, and write file capabilities
/// (`security.capability`, e.g. ping's cap_net_raw). Everything else — mounts, modules, raw
/// I/O, ptrace, device nodes, network administration, chroot — is gone, also from the bounding
/// set, so no exec can bring it back.
pub const KEPT_CAPABILITIES: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_DAC_READ_SEARCH,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_KILL,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
];

/// Syscalls that only matter to escape or to change the host, refused with EPERM. The dropped
/// capabilities already refuse most of them; this list also covers what needs no capability
/// (io_uring submits syscalls seccomp never sees, userfaultfd and perf are exploit primitives,
/// unshare/setns of user namespaces, the new mount API).
const DENIED: &[i64] = &[
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_fsopen,
    libc::SYS_fsmount,
    libc::SYS_fsconfig,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kcmp,
    libc::SYS_pidfd_getfd,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_setns,
    libc::SYS_unshare,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_syslog,
    libc::SYS_acct,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
    libc::SYS_quotactl,
    libc::SYS_vhangup,
    libc::SYS_lookup_dcookie,
    libc::SYS_fanotify_init,
];

const NAMESPACE_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
];

/// The compiled deny-list. `clone` with any namespace flag is refused; `clone3` (whose flags
/// live in memory seccomp cannot read) reports ENOSYS so libc falls back to `clone`.
pub fn deny_list() -> Result<Vec<BpfProgram>, SandboxError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = DENIED.iter().map(|&nr| (nr, Vec::new())).collect();
    let err = |e: &dyn std::fmt::Display| SandboxError::Confine(format!("building the seccomp filter: {e}"));
    // Rules of one syscall are alternatives: one per namespace flag, matching when it is set.
    let mut clone_rules = Vec::new();
    for flag in NAMESPACE_FLAGS {
        let flag = *flag as u64;
        let condition = SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(flag), flag)
            .map_err(|e| err(&e))?;
        clone_rules.push(SeccompRule::new(vec![condition]).map_err(|e| err(&e))?);
    }
    rules.insert(libc::SYS_clone, clone_rules);
    // Pushing input into a terminal's queue (TIOCSTI) or the console's (TIOCLINUX) would type
    // commands into a dom0 shell whose terminal the sandbox inherited as stdout/stderr.
    let mut ioctl_rules = Vec::new();
    for request in [libc::TIOCSTI, libc::TIOCLINUX] {
        let condition =
            SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, request).map_err(|e| err(&e))?;
        ioctl_rules.push(SeccompRule::new(vec![condition]).map_err(|e| err(&e))?);
    }
    rules.insert(libc::SYS_ioctl, ioctl_rules);
    let compile = |rules, errno: i32| -> Result<BpfProgram, SandboxError> {
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(errno as u32),
            TargetArch::x86_64,
        )
        .map_err(|e| err(&e))?;
        filter.try_into().map_err(|e: seccompiler::BackendError| err(&e))
    };
    let clone3 = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
    Ok(vec![
        native_only(),
        compile(rules, libc::EPERM)?,
        compile(clone3, libc::ENOSYS)?,
    ])
}

/// `__X32_SYSCALL_BIT`: x32 system calls are x86-64's (same audit arch) with this bit set.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// `AUDIT_ARCH_X86_64` of linux/audit.h (EM_X86_64, 64-bit, little-endian); libc lacks it.
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;

/// Only native x86-64 system calls. The other filters match syscall numbers of x86-64, so an
/// x32 call (`mount | __X32_SYSCALL_BIT`, x32's own execve 520 | bit) would pass all of them,
/// deny-list and tracer intercepts alike, on a kernel with x32 enabled. x32 calls get ENOSYS,
/// what a kernel without x32 answers (Debian boots with it off), so a program that probes
/// for x32 carries on as on the guest; another architecture's calls (int 0x80) kill the
/// process, as seccompiler's arch check in the other filters already does.
fn native_only() -> BpfProgram {
    let stmt = |code: u32, k: u32| sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    // struct seccomp_data: nr at offset 0, arch at 4.
    vec![
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 4),
        jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, AUDIT_ARCH_X86_64, 0, 4),
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        jump(libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K, X32_SYSCALL_BIT, 1, 0),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
        stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_KILL_PROCESS),
    ]
}

/// Drops every capability but [`KEPT_CAPABILITIES`] (bounding, inheritable, ambient too) and
/// sets no_new_privs. Must run after the last mount.
pub fn drop_privileges() -> Result<(), SandboxError> {
    let err = |what: &str, e: caps::errors::CapsError| SandboxError::Confine(format!("{what}: {e}"));
    let kept: caps::CapsHashSet = KEPT_CAPABILITIES.iter().copied().collect();
    for cap in caps::all() {
        if !kept.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap).map_err(|e| err("dropping from the bounding set", e))?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| err("clearing ambient capabilities", e))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| err("clearing inheritable capabilities", e))?;
    caps::set(None, CapSet::Effective, &kept).map_err(|e| err("setting effective capabilities", e))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(|e| err("setting permitted capabilities", e))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| SandboxError::Confine(format!("setting no_new_privs: {e}")))?;
    Ok(())
}

/// Installs the deny-list on the calling thread (inherited by every child).
pub fn apply_deny_list() -> Result<(), SandboxError> {
    for program in deny_list()? {
        seccompiler::apply_filter(&program)
            .map_err(|e| SandboxError::Confine(format!("installing the seccomp filter: {e}")))?;
    }
    Ok(())
}

/// The tracer's filter: execve, execveat and uname stop for the tracer
/// (`SECCOMP_RET_TRACE`); everything else runs untouched.
pub fn trace_filter() -> Result<BpfProgram, SandboxError> {
    let err = |e: &dyn std::fmt::Display| SandboxError::Confine(format!("building the tracing filter: {e}"));
    let rules: BTreeMap<i64, Vec<SeccompRule>> = [libc::SYS_execve, libc::SYS_execveat, libc::SYS_uname]
        .into_iter()
        .map(|nr| (nr, Vec::new()))
        .collect();
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Trace(0), TargetArch::x86_64)
        .map_err(|e| err(&e))?;
    filter.try_into().map_err(|e: seccompiler::BackendError| err(&e))
}

/// Installs [`trace_filter`] on the calling thread.
pub fn apply_trace_filter() -> Result<(), SandboxError> {
    seccompiler::apply_filter(&trace_filter()?)
        .map_err(|e| SandboxError::Confine(format!("installing the tracing filter: {e}")))
}

/// Syscalls that only make data durable. The upper layer is scratch until the bundle is
/// written (and dormouse writes the bundle itself), so the package manager's thousands of
/// fsyncs buy nothing; like eatmydata, they return success without reaching the kernel.
const DURABILITY: &[i64] = &[
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_syncfs,
    libc::SYS_sync,
    libc::SYS_sync_file_range,
];

/// Installs the filter that turns [`DURABILITY`] syscalls into successful no-ops.
pub fn apply_skip_durability() -> Result<(), SandboxError> {
    let err = |e: &dyn std::fmt::Display| SandboxError::Confine(format!("building the fsync filter: {e}"));
    let rules: BTreeMap<i64, Vec<SeccompRule>> = DURABILITY.iter().map(|&nr| (nr, Vec::new())).collect();
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(0), TargetArch::x86_64)
        .map_err(|e| err(&e))?;
    let program: BpfProgram = filter.try_into().map_err(|e: seccompiler::BackendError| err(&e))?;
    seccompiler::apply_filter(&program).map_err(|e| SandboxError::Confine(format!("installing the fsync filter: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a classic-BPF seccomp program on `seccomp_data` as the kernel would, for the
    /// instructions seccompiler and [`native_only`] emit.
    fn run(program: &[sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        let mut data = Vec::with_capacity(64);
        data.extend(nr.to_le_bytes());
        data.extend(arch.to_le_bytes());
        data.extend(0u64.to_le_bytes());
        args.iter().for_each(|a| data.extend(a.to_le_bytes()));
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let i = &program[pc];
            pc += 1;
            let (code, k) = (u32::from(i.code), i.k);
            let taken = |cond: bool| if cond { usize::from(i.jt) } else { usize::from(i.jf) };
            match code {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => {
                    acc = u32::from_le_bytes(data[k as usize..k as usize + 4].try_into().unwrap());
                }
                c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => acc &= k,
                c if c == libc::BPF_JMP | libc::BPF_JA => pc += k as usize,
                c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => pc += taken(acc == k),
                c if c == libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K => pc += taken(acc > k),
                c if c == libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K => pc += taken(acc >= k),
                c if c == libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K => pc += taken(acc & k != 0),
                c if c == libc::BPF_RET | libc::BPF_K => return k,
                _ => panic!("instruction {i:?} at {} not interpreted", pc - 1),
            }
        }
    }

    /// What the sandbox's filters decide together: the kernel takes the most restrictive
    /// action, the one lowest as a signed number.
    fn verdict(nr: u32, arch: u32) -> u32 {
        let mut programs = deny_list().unwrap();
        programs.push(trace_filter().unwrap());
        let verdicts = programs.iter().map(|p| run(p, nr, arch, [0; 6]));
        verdicts
            .min_by_key(|v| (v & libc::SECCOMP_RET_ACTION_FULL) as i32)
            .unwrap()
    }

    #[test]
    fn x32_and_foreign_system_calls_are_denied_outright() {
        let x86_64 = AUDIT_ARCH_X86_64;
        let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        // x32's execve and execveat have numbers of their own (520, 545).
        for nr in [libc::SYS_mount, libc::SYS_uname, libc::SYS_getpid, 520, 545] {
            assert_eq!(verdict(X32_SYSCALL_BIT | nr as u32, x86_64), enosys, "x32 syscall {nr}");
        }
        let i386 = 3 | 0x4000_0000; // AUDIT_ARCH_I386: EM_386, little-endian
        assert_eq!(verdict(libc::SYS_getpid as u32, i386), libc::SECCOMP_RET_KILL_PROCESS);
        // Native calls are unchanged: allowed, refused, or stopped for the tracer.
        assert_eq!(verdict(libc::SYS_getpid as u32, x86_64), libc::SECCOMP_RET_ALLOW);
        assert_eq!(
            verdict(libc::SYS_mount as u32, x86_64),
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32
        );
        assert_eq!(verdict(libc::SYS_uname as u32, x86_64), libc::SECCOMP_RET_TRACE);
    }
}
