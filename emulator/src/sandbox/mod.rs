//! The sandbox in which the guest's own package manager runs as root in dom0.
//!
//! Shape of a run (see [`launch`]):
//! - dormouse itself (the *supervisor*) has moved into a private mount namespace, mounted the
//!   guest's overlays and the shadow `/proc` there, and created the cgroups;
//! - it re-executes its own binary as the sandbox *init* (`dormouse __sandbox-init SPEC`), a
//!   fresh single-threaded process that joins the cgroups, unshares the mount, PID, UTS, IPC
//!   and cgroup namespaces (and the network one unless `--net host`), and forks PID 1 of the new
//!   PID namespace;
//! - PID 1 mounts `/proc` (the shadowfs), a minimal `/dev`, an empty read-only `/sys`, tmpfs
//!   `/run` and `/tmp`, binds dom0's resolv.conf, pivots into the merged tree, drops to the
//!   capabilities a package manager needs ([`confine::KEPT_CAPABILITIES`]) with no_new_privs
//!   and a seccomp deny-list, forks the command and reaps everything until it exits.
//!
//! Every process of the sandbox dies with its parent (PR_SET_PDEATHSIG), and every process in
//! the PID namespace dies with PID 1, so killing the supervisor — even with SIGKILL — kills
//! the whole tree; and the supervisor's mounts live only in its private mount namespace, so
//! they vanish with it.

pub mod cgroup;
pub mod confine;
mod init;
pub mod overlay;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use cgroup::CgroupSet;
pub use init::init_main;
pub(crate) use init::loopback_up;
pub use overlay::{Layer, OverlayStack};

/// The hidden subcommand the `dormouse` binary dispatches to [`init_main`].
pub const INIT_SUBCOMMAND: &str = "__sandbox-init";

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{what}: {path}: {source}")]
    Io {
        what: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {path}: {detail}")]
    Setup {
        what: String,
        path: PathBuf,
        detail: String,
    },
    #[error("confining the sandbox: {0}")]
    Confine(String),
}

impl SandboxError {
    pub fn io(what: &str, path: &Path, source: impl Into<std::io::Error>) -> SandboxError {
        SandboxError::Io {
            what: what.to_owned(),
            path: path.to_owned(),
            source: source.into(),
        }
    }
}

/// How the sandbox reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// dom0's network stack, so apt reaches the guest's configured mirrors directly.
    Host,
    /// A network namespace with only loopback.
    None,
    /// A network namespace with only loopback, plus an HTTP proxy on its loopback that dom0
    /// serves and that connects only to the hosts of the guest's package sources.
    Restricted,
}

/// Everything the sandbox init needs, written to a file in the run directory by the
/// supervisor and read by `dormouse __sandbox-init`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// The merged guest tree, a mount point in the supervisor's mount namespace.
    pub root: PathBuf,
    /// The shadow /proc (a FUSE mount) to bind at the tree's `/proc`.
    pub proc: PathBuf,
    pub hostname: String,
    pub domainname: String,
    pub net: NetMode,
    /// The network namespace to join (`NetMode::Restricted`: the one the proxy listens in).
    pub netns: Option<PathBuf>,
    pub command: Vec<String>,
    /// The command's whole environment.
    pub env: Vec<(String, String)>,
    pub cgroups: CgroupSet,
    /// dom0's resolver configuration, bound over the guest's (`--net host` only).
    pub resolv_conf: Option<PathBuf>,
    /// Size limit of each of the `/tmp` and `/run` tmpfs, in bytes.
    pub tmpfs_bytes: u64,
    /// dom0 directories or files bound read-only into the sandbox, at paths under `/run` or
    /// `/tmp` (its tmpfs: nothing bound there can reach the captured changes).
    pub binds: Vec<Bind>,
    /// Let fsync and friends reach the kernel (by default they are no-ops: see
    /// [`confine::apply_skip_durability`]).
    pub durable: bool,
    /// Inherited descriptor the command reads one byte from before it executes: the tracer
    /// attaches in the meantime.
    pub start_fd: Option<i32>,
    /// With `Seccomp`, the command installs the tracing filter before its exec.
    pub trace: crate::trace::TraceMode,
}

/// A read-only bind of a dom0 path into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    pub source: PathBuf,
    /// Absolute path in the sandbox, under `/run/` or `/tmp/`.
    pub target: String,
}

impl Bind {
    /// `SOURCE:TARGET`; the target must be a clean absolute path below `/run` or `/tmp`.
    pub fn parse(text: &str) -> Result<Bind, String> {
        let (source, target) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("{text}: expected SOURCE:TARGET"))?;
        let clean = target.starts_with('/')
            && target
                .split('/')
                .skip(1)
                .all(|c| !c.is_empty() && c != "." && c != "..");
        let under_tmpfs = ["/run/", "/tmp/"].iter().any(|p| target.starts_with(p));
        if !clean || !under_tmpfs {
            return Err(format!(
                "{text}: the target must be a clean absolute path under /run/ or /tmp/ (the sandbox's \
                 tmpfs), so nothing bound can land in the captured changes"
            ));
        }
        let source = std::fs::canonicalize(source).map_err(|e| format!("{source}: {e}"))?;
        Ok(Bind {
            source,
            target: target.to_owned(),
        })
    }
}

/// The directories the sandbox mounts over; the supervisor creates any the guest lacks (and
/// reports them, as they are host-injected) before the init runs.
pub const MOUNT_POINTS: &[&str] = &["proc", "dev", "sys", "run", "tmp"];

/// Exit status the init uses when the sandbox could not be set up (as `env` and `chroot` do).
pub const SETUP_FAILED: i32 = 125;
/// Exit status when the command could not be executed.
pub const EXEC_FAILED: i32 = 127;
