//! What the guest's package manager keeps of root's powers: a short capability list, no new
//! privileges, and a syscall deny-list as a second wall behind the capabilities.

use std::collections::BTreeMap;

use caps::{CapSet, Capability};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
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
    Ok(vec![compile(rules, libc::EPERM)?, compile(clone3, libc::ENOSYS)?])
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
