//! The supervisor of one emulation run: state directory, scratch upper layers, the overlay
//! stack, the shadow /proc, cgroups, the sandbox process, timeouts, signals and teardown.
//!
//! Run state lives in `<state>/runs/<id>/` (`run.json` names the owning process, its cgroups
//! and helper daemons). All mounts are made in the supervisor's private mount namespace
//! ([`enter_private_mount_namespace`]), so they disappear with it however it dies; loop devices
//! are auto-clearing; cgroups and the run directory are what a crash can leave, and
//! `dormouse cleanup` ([`cleanup`]) removes them.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use introspect::linux::GuestSnapshot;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::capture::{CaptureLayer, tree_size};
use crate::sandbox::{
    CgroupSet, INIT_SUBCOMMAND, Layer, MOUNT_POINTS, NetMode, OverlayStack, SETUP_FAILED, SandboxError, SandboxSpec,
};
use crate::trace::{TraceMode, TraceReport};

/// Default state directory (`--state-dir`, `DORMOUSE_STATE`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/dormouse";

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("serving the shadow /proc at {path}: {detail}")]
    ShadowFs { path: PathBuf, detail: String },
    #[error("starting the sandbox ({program}): {source}")]
    Spawn { program: PathBuf, source: std::io::Error },
}

type Result<T> = std::result::Result<T, RunError>;

/// Limits of one run; `None` is unlimited.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
    pub wall: Option<Duration>,
    /// Size of the tmpfs holding the upper layers (ignored with `keep`, which writes to disk).
    pub scratch_bytes: u64,
    /// Size of each of the sandbox's `/tmp` and `/run`.
    pub tmpfs_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: Some(4 << 30),
            pids: Some(4096),
            wall: Some(Duration::from_secs(3600)),
            scratch_bytes: 8 << 30,
            tmpfs_bytes: 1 << 30,
        }
    }
}

/// How to run the command (the guest tree and snapshot are given separately to [`run`]).
pub struct RunOptions {
    pub command: Vec<String>,
    /// Extra environment for the command (after dormouse's defaults, so they override them).
    pub env: Vec<(String, String)>,
    pub net: NetMode,
    /// `--net restricted`: endpoints the operator allows besides the guest's sources (the
    /// only way to allow dom0's loopback).
    pub allow: Vec<crate::netproxy::Endpoint>,
    pub limits: Limits,
    /// Write the upper layers here (on disk) and keep them, instead of a tmpfs.
    pub keep: Option<PathBuf>,
    /// The `dormouse` binary, re-executed as the sandbox init.
    pub init_program: PathBuf,
    pub progress: Progress,
    /// Send the command's standard output to dormouse's standard error (keeps `--json` output
    /// clean).
    pub stdout_to_stderr: bool,
    /// Interception of maintainer scripts and uname.
    pub trace: TraceMode,
    /// dom0 paths bound read-only under the sandbox's /run or /tmp (`--bind`).
    pub binds: Vec<crate::sandbox::Bind>,
    /// Keep fsync & co. real (`--durable`); by default they are skipped in the sandbox.
    pub durable: bool,
}

/// A phase of a run as it starts and ends, for a caller that shows progress.
#[derive(Debug, Clone, Copy)]
pub enum PhaseEvent<'a> {
    Started(&'a str),
    Done { name: &'a str, millis: f64 },
}

/// Where phase events go (`None`: nowhere).
pub type Progress = Option<Box<dyn FnMut(PhaseEvent) + Send>>;

/// Timings and outcome of one run, for `--json` and the emulation record.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub command: Vec<String>,
    /// The command's exit status (128 + signal when killed); `None` when it never ran.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub interrupted: bool,
    pub phases: Vec<Phase>,
    pub upper_layers: Vec<UpperLayer>,
    /// Mount points dormouse had to create in the guest tree (host-injected; excluded from
    /// captured changes).
    pub injected: Vec<String>,
    /// Limits the kernel enforced (pids.max reached, OOM kills).
    pub limit_events: Vec<String>,
    /// `--net restricted`: the allowed endpoints and what the proxy forwarded or refused.
    pub proxy: Option<crate::netproxy::ProxyLog>,
    /// The intercepted maintainer scripts (in execution order) and other tracer events.
    pub trace: TraceReport,
}

#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub millis: f64,
}

/// The upper layer of one guest filesystem after the run.
#[derive(Debug, Clone, Serialize)]
pub struct UpperLayer {
    pub guest_path: String,
    /// Where the upper layer is kept (`--keep`); `None` when it lived on the run's tmpfs.
    pub kept_at: Option<PathBuf>,
    pub entries: u64,
    pub bytes: u64,
}

/// What `run.json` records, for `dormouse cleanup` after a crash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub pid: i32,
    /// Field 22 of /proc/PID/stat, to tell our process from a later one with the same pid.
    pub pid_start_time: u64,
    pub created_unix: u64,
    pub cgroups: CgroupSet,
    pub command: Vec<String>,
}

/// Moves the calling process into a private mount namespace. Call it while the process is
/// still single-threaded (unshare refuses otherwise), before any mount.
pub fn enter_private_mount_namespace() -> std::result::Result<(), SandboxError> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| {
        SandboxError::io(
            "entering a private mount namespace (call it before any thread starts)",
            Path::new("/"),
            e,
        )
    })?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| SandboxError::io("making mounts private", Path::new("/"), e))
}

static SIGNALLED: AtomicI32 = AtomicI32::new(0);

extern "C" fn note_signal(signal: libc::c_int) {
    SIGNALLED.store(signal, Ordering::SeqCst);
}

/// Routes SIGINT, SIGTERM and SIGHUP to a flag the supervisor polls, so it can tear down.
pub fn catch_termination_signals() -> std::result::Result<(), SandboxError> {
    let action = SigAction::new(SigHandler::Handler(note_signal), SaFlags::SA_RESTART, SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        unsafe { nix::sys::signal::sigaction(signal, &action) }
            .map_err(|e| SandboxError::Confine(format!("installing the {signal} handler: {e}")))?;
    }
    Ok(())
}

/// The signal that asked dormouse to stop, if any.
pub fn termination_requested() -> Option<i32> {
    match SIGNALLED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// A run directory under the state dir; removed (with its cgroups) when dropped.
pub struct RunDir {
    pub id: String,
    pub path: PathBuf,
    cgroups: CgroupSet,
}

impl RunDir {
    pub fn create(state_dir: &Path, command: &[String]) -> std::result::Result<RunDir, SandboxError> {
        let id = format!("{}", uuid::Uuid::new_v4().simple());
        let id = id[..12].to_owned();
        let path = state_dir.join("runs").join(&id);
        fs::create_dir_all(&path).map_err(|e| SandboxError::io("creating the run directory", &path, e))?;
        let dir = RunDir {
            id,
            path,
            cgroups: CgroupSet::default(),
        };
        dir.write_record(command)?;
        Ok(dir)
    }

    fn write_record(&self, command: &[String]) -> std::result::Result<(), SandboxError> {
        let pid = std::process::id() as i32;
        let record = RunRecord {
            id: self.id.clone(),
            pid,
            pid_start_time: process_start_time(pid).unwrap_or(0),
            created_unix: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            cgroups: self.cgroups.clone(),
            command: command.to_vec(),
        };
        let path = self.path.join("run.json");
        let text = serde_json::to_vec_pretty(&record).map_err(|e| SandboxError::Setup {
            what: "writing the run record".into(),
            path: path.clone(),
            detail: e.to_string(),
        })?;
        fs::write(&path, text).map_err(|e| SandboxError::io("writing the run record", &path, e))
    }

    fn set_cgroups(&mut self, cgroups: CgroupSet, command: &[String]) -> std::result::Result<(), SandboxError> {
        self.cgroups = cgroups;
        self.write_record(command)
    }

    pub fn subdir(&self, name: &str) -> std::result::Result<PathBuf, SandboxError> {
        let dir = self.path.join(name);
        fs::create_dir_all(&dir).map_err(|e| SandboxError::io("creating a run directory", &dir, e))?;
        Ok(dir)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        self.cgroups.remove();
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A tmpfs mount, unmounted when dropped.
struct TmpfsMount(PathBuf);

impl TmpfsMount {
    fn mount(target: &Path, bytes: u64) -> std::result::Result<TmpfsMount, SandboxError> {
        nix::mount::mount(
            Some("tmpfs"),
            target,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("mode=0700,size={bytes}").as_str()),
        )
        .map_err(|e| SandboxError::io("mounting the scratch tmpfs for the upper layers", target, e))?;
        Ok(TmpfsMount(target.to_owned()))
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        if nix::mount::umount2(&self.0, MntFlags::empty()).is_err() {
            let _ = nix::mount::umount2(&self.0, MntFlags::MNT_DETACH);
        }
    }
}

struct Timer {
    phases: Vec<Phase>,
    progress: Progress,
    last: Instant,
}

impl Timer {
    fn new(progress: Progress) -> Timer {
        Timer {
            phases: Vec::new(),
            progress,
            last: Instant::now(),
        }
    }

    fn start(&mut self, name: &str) {
        self.last = Instant::now();
        if let Some(progress) = &mut self.progress {
            progress(PhaseEvent::Started(name));
        }
    }

    fn done(&mut self, name: &str) {
        let millis = self.last.elapsed().as_secs_f64() * 1000.0;
        self.last = Instant::now();
        if let Some(progress) = &mut self.progress {
            progress(PhaseEvent::Done { name, millis });
        }
        self.phases.push(Phase {
            name: name.to_owned(),
            millis,
        });
    }
}

/// What a capture hook gets after the command ended and the overlays are unmounted, while the
/// upper layers and the read-only guest mounts still exist.
pub struct CaptureContext<'a> {
    pub layers: &'a [CaptureLayer],
    pub report: &'a RunReport,
    /// The guest's snapshot the run used (its identity goes into the bundle).
    pub snapshot: &'a GuestSnapshot,
}

/// Runs the command in the sandbox over the given read-only layers (mounted by the caller,
/// typically under `run_dir`). The process must already be in a private mount namespace.
/// `capture` runs after the command and the overlays' unmount, while the upper layers (and the
/// caller's lower mounts) still exist; its result is returned beside the report.
pub fn run<T>(
    layers: &[Layer],
    snapshot: GuestSnapshot,
    options: RunOptions,
    run_dir: &mut RunDir,
    capture: impl FnOnce(&CaptureContext) -> T,
) -> Result<(RunReport, T)> {
    let mut timer = Timer::new(options.progress);
    timer.start("overlay");
    let scratch_dir = match &options.keep {
        Some(dir) => {
            fs::create_dir_all(dir).map_err(|e| SandboxError::io("creating the --keep directory", dir, e))?;
            dir.clone()
        }
        None => run_dir.subdir("scratch")?,
    };
    let _scratch = match options.keep {
        Some(_) => None,
        None => Some(TmpfsMount::mount(&scratch_dir, options.limits.scratch_bytes)?),
    };
    let merged = run_dir.subdir("merged")?;
    let overlays = OverlayStack::mount(layers, &scratch_dir, &merged)?;
    let injected = create_mount_points(&merged)?;
    timer.done("overlay");
    timer.start("shadowfs");

    let proc_dir = run_dir.subdir("proc")?;
    let guest_snapshot = snapshot.clone();
    let snapshot_uts = snapshot.uts.clone();
    let hostname = snapshot.uts.nodename.clone();
    let domainname = snapshot.uts.domainname.clone();
    let proc = shadowfs::spawn(shadowfs::ShadowFs::new(shadowfs::ProcTree::new(snapshot)), &proc_dir).map_err(|e| {
        RunError::ShadowFs {
            path: proc_dir.clone(),
            detail: e.to_string(),
        }
    })?;
    timer.done("shadowfs");
    timer.start("sandbox setup");

    let mut env = command_env(&options.env);
    let restricted = match options.net {
        NetMode::Restricted => {
            let allowed = crate::netproxy::allowed_endpoints(&merged)?;
            let operator = options.allow.iter().cloned().collect();
            let net = crate::netproxy::RestrictedNet::start(&run_dir.path, allowed, operator)?;
            let proxy = format!("http://127.0.0.1:{}/", net.port);
            for key in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"] {
                env.retain(|(k, _)| k != key);
                env.push((key.to_owned(), proxy.clone()));
            }
            Some(net)
        }
        _ => None,
    };
    let cgroups = CgroupSet::create(&run_dir.id, options.limits.memory_bytes, options.limits.pids)?;
    run_dir.set_cgroups(cgroups.clone(), &options.command)?;
    let uts = snapshot_uts.clone();
    let mut spec = SandboxSpec {
        root: merged.clone(),
        proc: proc_dir.clone(),
        hostname,
        domainname,
        net: options.net,
        netns: restricted.as_ref().map(|n| n.netns.clone()),
        command: options.command.clone(),
        env,
        cgroups: cgroups.clone(),
        resolv_conf: (options.net == NetMode::Host).then(|| PathBuf::from("/etc/resolv.conf")),
        tmpfs_bytes: options.limits.tmpfs_bytes,
        binds: options.binds.clone(),
        durable: options.durable,
        start_fd: None,
        trace: options.trace,
    };
    // The command waits on this pipe until the tracer has attached to it.
    let (gate_read, start_gate) = start_pipe()?;
    spec.start_fd = Some(gate_read.as_raw_fd());
    let spec_path = run_dir.path.join("spec.json");
    let spec_text = serde_json::to_vec_pretty(&spec).map_err(|e| SandboxError::Setup {
        what: "writing the sandbox spec".into(),
        path: spec_path.clone(),
        detail: e.to_string(),
    })?;
    fs::write(&spec_path, spec_text).map_err(|e| SandboxError::io("writing the sandbox spec", &spec_path, e))?;
    timer.done("sandbox setup");
    timer.start("command");

    let mut command = Command::new(&options.init_program);
    command.arg(INIT_SUBCOMMAND).arg(&spec_path);
    if options.stdout_to_stderr {
        command.stdout(std::io::stderr());
    }
    let supervised = supervise(
        command,
        start_gate,
        options.trace,
        uts,
        options.limits.wall,
        &options.init_program,
    )?;
    let (exit_code, timed_out, interrupted) = (supervised.exit_code, supervised.timed_out, supervised.interrupted);
    timer.done("command");
    timer.start("teardown");

    let limit_events = cgroups.limit_events();
    let upper_layers = overlays
        .uppers()
        .iter()
        .map(|(guest_path, upper)| {
            let (entries, bytes) = tree_size(upper);
            UpperLayer {
                guest_path: guest_path.clone(),
                kept_at: options.keep.as_ref().map(|_| upper.clone()),
                entries,
                bytes,
            }
        })
        .collect();
    let capture_layers: Vec<CaptureLayer> = overlays
        .uppers()
        .iter()
        .filter_map(|(guest_path, upper)| {
            let layer = layers.iter().find(|l| &l.guest_path == guest_path)?;
            Some(CaptureLayer {
                guest_path: guest_path.clone(),
                upper: upper.clone(),
                lower: layer.lower.clone(),
            })
        })
        .collect();
    drop(proc);
    drop(overlays);
    timer.done("teardown");
    let report = RunReport {
        run_id: run_dir.id.clone(),
        command: options.command,
        exit_code: (exit_code != SETUP_FAILED || !timed_out).then_some(exit_code),
        timed_out,
        interrupted,
        phases: timer.phases,
        upper_layers,
        injected,
        limit_events,
        proxy: restricted.map(|n| n.log()),
        trace: supervised.trace,
    };
    let captured = capture(&CaptureContext {
        layers: &capture_layers,
        report: &report,
        snapshot: &guest_snapshot,
    });
    Ok((report, captured))
}

struct Supervised {
    exit_code: i32,
    timed_out: bool,
    interrupted: bool,
    trace: TraceReport,
}

/// A pipe whose read end the sandbox's command inherits (not close-on-exec) and blocks on.
fn start_pipe() -> Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| SandboxError::io("creating the start pipe", Path::new("pipe"), e))?;
    nix::fcntl::fcntl(&read, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()))
        .map_err(|e| SandboxError::io("passing the start pipe to the sandbox", Path::new("pipe"), e))?;
    Ok((read, write))
}

/// Starts the sandbox init from a dedicated thread, which attaches the tracer to the command,
/// opens its start gate, and serves ptrace events until the init exits (ptrace, and the
/// init's parent-death signal, belong to that thread). This thread kills the init (and so,
/// through the parent-death signal and the PID namespace, everything in the sandbox) on
/// timeout or when dormouse is asked to stop.
fn supervise(
    mut command: Command,
    start_gate: OwnedFd,
    mode: TraceMode,
    uts: introspect::linux::Uts,
    wall: Option<Duration>,
    program: &Path,
) -> Result<Supervised> {
    let init_pid = Arc::new(AtomicI32::new(0));
    let shared_pid = Arc::clone(&init_pid);
    let worker = std::thread::spawn(move || -> std::result::Result<(i32, TraceReport), std::io::Error> {
        let child = command.spawn()?;
        let pid = Pid::from_raw(child.id() as i32);
        shared_pid.store(pid.as_raw(), Ordering::SeqCst);
        let mut report = TraceReport::default();
        if mode != TraceMode::Off {
            let attached = crate::trace::find_command(pid, Duration::from_secs(30))
                .and_then(|command| crate::trace::seize(command, mode));
            if let Err(e) = attached {
                report.warnings.push(e);
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            }
        }
        let _ = nix::unistd::write(&start_gate, b"go");
        drop(start_gate);
        let status = if mode == TraceMode::Off {
            waitpid(pid, None).unwrap_or(WaitStatus::Exited(pid, SETUP_FAILED))
        } else {
            crate::trace::event_loop(pid, mode, &uts, &mut report).unwrap_or(WaitStatus::Exited(pid, SETUP_FAILED))
        };
        // The Child handle's own wait would find nothing: the status was reaped above.
        std::mem::forget(child);
        let code = match status {
            WaitStatus::Exited(_, code) => code,
            WaitStatus::Signaled(_, signal, _) => 128 + signal as i32,
            _ => SETUP_FAILED,
        };
        Ok((code, report))
    });
    let start = Instant::now();
    let (mut timed_out, mut interrupted) = (false, false);
    while !worker.is_finished() {
        let kill = |flag: &mut bool| {
            *flag = true;
            let pid = init_pid.load(Ordering::SeqCst);
            if pid > 0 {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        };
        if !timed_out && wall.is_some_and(|w| start.elapsed() > w) {
            kill(&mut timed_out);
        }
        if !interrupted && termination_requested().is_some() {
            kill(&mut interrupted);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (exit_code, trace) = worker
        .join()
        .map_err(|_| SandboxError::Confine("the supervisor thread panicked".into()))?
        .map_err(|source| RunError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    Ok(Supervised {
        exit_code,
        timed_out,
        interrupted,
        trace,
    })
}

/// The command's environment: what a root login shell on Debian has, plus no prompts.
fn command_env(extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        ("HOME", "/root"),
        ("USER", "root"),
        ("LOGNAME", "root"),
        ("DEBIAN_FRONTEND", "noninteractive"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    env.push(("TERM".into(), std::env::var("TERM").unwrap_or_else(|_| "dumb".into())));
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

/// Creates the sandbox's mount points the guest lacks; refuses symlinks there (a hostile
/// guest could point `/dev` anywhere in the tree).
fn create_mount_points(merged: &Path) -> std::result::Result<Vec<String>, SandboxError> {
    let mut injected = Vec::new();
    for name in MOUNT_POINTS {
        let path = merged.join(name);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(SandboxError::Setup {
                    what: "preparing the sandbox's mount points".into(),
                    path,
                    detail:
                        "exists in the guest tree but is not a directory (a symlink or file); refusing to mount over it"
                            .into(),
                });
            }
            Err(_) => {
                fs::create_dir(&path).map_err(|e| SandboxError::io("creating a missing mount point", &path, e))?;
                injected.push(format!("/{name}"));
            }
        }
    }
    Ok(injected)
}

fn process_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// What `dormouse cleanup` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CleanupReport {
    pub removed_runs: Vec<String>,
    pub active_runs: Vec<String>,
    pub removed_cgroups: Vec<PathBuf>,
    pub problems: Vec<String>,
}

/// Removes what crashed runs left: run directories whose owner is gone, their cgroups (killing
/// any process still in them). Runs whose owner is alive are left alone.
pub fn cleanup(state_dir: &Path) -> CleanupReport {
    let mut report = CleanupReport::default();
    let runs = state_dir.join("runs");
    let Ok(entries) = fs::read_dir(&runs) else {
        return report;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let id = entry.file_name().to_string_lossy().into_owned();
        let record: Option<RunRecord> = fs::read(dir.join("run.json"))
            .ok()
            .and_then(|text| serde_json::from_slice(&text).ok());
        if let Some(record) = &record {
            let alive = process_start_time(record.pid).is_some_and(|t| t == record.pid_start_time);
            if alive {
                report.active_runs.push(id);
                continue;
            }
            for cgroup in &record.cgroups.dirs {
                if !cgroup.exists() {
                    continue;
                }
                kill_cgroup_members(cgroup);
                match fs::remove_dir(cgroup) {
                    Ok(()) => report.removed_cgroups.push(cgroup.clone()),
                    Err(e) => report
                        .problems
                        .push(format!("removing cgroup {}: {e}", cgroup.display())),
                }
            }
        }
        unmount_below(&dir, &mut report.problems);
        match fs::remove_dir_all(&dir) {
            Ok(()) => report.removed_runs.push(id),
            Err(e) => report.problems.push(format!("removing {}: {e}", dir.display())),
        }
    }
    report
}

fn kill_cgroup_members(cgroup: &Path) {
    for _ in 0..50 {
        let procs = fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<i32> = procs.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Mounts a crashed run left in *this* mount namespace (when it ran without a private one).
fn unmount_below(dir: &Path, problems: &mut Vec<String>) {
    // Bytes: mount points need not be UTF-8.
    let Ok(mountinfo) = fs::read("/proc/self/mountinfo") else {
        return;
    };
    let mut targets: Vec<PathBuf> = mountinfo
        .split(|&b| b == b'\n')
        .filter_map(|l| l.split(|&b| b == b' ').nth(4))
        .map(|p| PathBuf::from(std::ffi::OsString::from_vec(introspect::octal_escape::unescape(p))))
        .filter(|p| p.starts_with(dir))
        .collect();
    targets.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for target in targets {
        if let Err(e) = nix::mount::umount2(&target, MntFlags::MNT_DETACH) {
            problems.push(format!("unmounting {}: {e}", target.display()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cleanup finds mounts whose names /proc/self/mountinfo escapes: space, tab, newline and
    /// backslash (it used to undo only the space's `\040`). Needs root, as dormouse does.
    #[test]
    fn leftover_mounts_with_escaped_names_are_unmounted() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let target = dir.path().join("a b\tc\nd\\e");
        fs::create_dir(&target).unwrap();
        nix::mount::mount(Some(&target), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .unwrap_or_else(|e| panic!("bind-mounting {} (needs root): {e}", target.display()));
        let mut problems = Vec::new();
        unmount_below(dir.path(), &mut problems);
        // Still mounted: detach it so a failure leaves nothing behind.
        let left = nix::mount::umount2(&target, MntFlags::MNT_DETACH).is_ok();
        assert!(
            problems.is_empty() && !left,
            "problems {problems:?}; still mounted: {left}"
        );
    }
}
