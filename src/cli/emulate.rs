//! `dormouse emulate` and `dormouse cleanup`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use emulator::limit::{ByteLimit, CountLimit};

use super::image::{ImageArgs, snapshot_of};
use crate::output::{self, Stdout};
use crate::progress::Steps;
use emulator::run::PhaseEvent;

/// `--net`: the sandbox's network.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Net {
    /// dom0's network.
    Host,
    /// Loopback only.
    None,
    /// Only the hosts of the guest's package sources, through a dom0 proxy.
    Restricted,
}

/// `--trace`: how maintainer scripts and uname are intercepted.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Trace {
    /// Trap only execve, execveat and uname.
    Seccomp,
    /// Stop at every syscall (for measuring).
    AllSyscalls,
    /// Scripts really run, inside the sandbox (for baselines).
    Off,
}

#[derive(Args)]
pub(crate) struct EmulateArgs {
    /// Memory image of the suspended guest (`xl save` file, `xl dump-core` file or ELF core).
    image: Option<PathBuf>,
    /// A guest disk (raw image, qcow2 or block device), read-only; PATH:N forces the root
    /// partition. Repeat for several disks.
    #[arg(long = "disk", value_name = "DISK[:PART]")]
    disks: Vec<String>,
    /// Network of the sandbox.
    #[arg(long, value_enum, default_value_t = Net::Host)]
    net: Net,
    /// With `--net restricted`: also allow HOST:PORT (repeatable). dom0's loopback is reachable
    /// only this way, never because a guest source names it.
    #[arg(long = "allow", value_name = "HOST:PORT")]
    allow: Vec<String>,
    /// Keep the upper layers (the captured changes) in DIR instead of a discarded tmpfs.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Write the changes as a bundle B (signed: B.minisig) and the emulation record
    /// (B.record.json), when COMMAND succeeds.
    #[arg(long, value_name = "B", requires = "sign_key")]
    out: Option<PathBuf>,
    /// The secret key signing the bundle (`dormouse keygen`).
    #[arg(long, value_name = "KEY", requires = "out")]
    sign_key: Option<PathBuf>,
    /// Print a JSON summary on standard output.
    #[arg(long)]
    json: bool,
    /// Interception of maintainer scripts and uname.
    #[arg(long, value_enum, default_value_t = Trace::Seccomp)]
    trace: Trace,
    /// dormouse's state directory (run directories live in STATE/runs).
    #[arg(long, env = "DORMOUSE_STATE", default_value = emulator::run::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Memory limit of the sandbox (e.g. 4G, 512M; `none` for unlimited).
    #[arg(long, default_value = "4G")]
    memory: ByteLimit,
    /// Process limit of the sandbox (`none` for unlimited).
    #[arg(long, default_value = "4096")]
    pids: CountLimit,
    /// Wall-time limit in seconds (`none` for unlimited).
    #[arg(long, default_value = "3600")]
    timeout: CountLimit,
    /// Size limit of the scratch tmpfs holding the changes.
    #[arg(long, default_value = "8G")]
    scratch_size: ByteLimit,
    /// Bind a dom0 file or directory read-only into the sandbox at TARGET, which must be under
    /// /run or /tmp (e.g. local .debs: --bind ./debs:/run/debs). Repeatable.
    #[arg(long = "bind", value_name = "SOURCE:TARGET")]
    binds: Vec<String>,
    /// Let COMMAND's fsync/fdatasync/sync reach the disk. By default they return success at
    /// once: the changes are scratch until dormouse writes the bundle, so durability buys
    /// nothing but time.
    #[arg(long)]
    durable: bool,
    /// Extra environment for COMMAND (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Without IMAGE: the guest kernel's release, when the guest's /boot does not have it
    /// (Xen PV domUs booted with a kernel from dom0).
    #[arg(long, value_name = "RELEASE", conflicts_with = "image")]
    release: Option<String>,
    /// The running kernel's System.map, vmlinuz/vmlinux or ISF profile, as for `inspect`.
    #[arg(long, value_name = "FILE")]
    system_map: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    kernel: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    isf: Option<PathBuf>,
    /// The command to run in the guest, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// `dormouse emulate`: returns the command's exit status, or one of dormouse's (exit.rs).
pub(crate) fn emulate(args: EmulateArgs) -> Result<u8> {
    crate::privilege::require_root(
        "it mounts the guest's disks read-only through loop devices, builds overlays over them and \
         runs the command in new namespaces and a cgroup",
    )?;
    // Before any thread exists: every mount of the run lives in a namespace that dies with us.
    emulator::run::enter_private_mount_namespace()?;
    emulator::run::catch_termination_signals()?;
    let limits = emulator::run::Limits {
        memory_bytes: args.memory.0,
        pids: args.pids.0,
        wall: args.timeout.0.map(std::time::Duration::from_secs),
        scratch_bytes: args
            .scratch_size
            .0
            .context("--scratch-size needs a size: the changes live in memory")?,
        ..Default::default()
    };
    let env = args
        .env
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("--env {kv}: expected KEY=VALUE"))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut allow = Vec::new();
    for text in &args.allow {
        let endpoints = emulator::netproxy::Endpoint::parse_allow(text)
            .with_context(|| format!("--allow {text}: expected HOST:PORT"))?;
        allow.extend(endpoints);
    }
    let mut disks: Vec<emulator::disk::DiskSpec> =
        args.disks.iter().map(|d| emulator::disk::DiskSpec::parse(d)).collect();
    // Not before: a spinner's ticker is a thread, and the namespace above needs none.
    let steps = std::sync::Arc::new(std::sync::Mutex::new(Steps::new(args.json)));
    let with_steps = |f: &mut dyn FnMut(&mut Steps)| {
        if let Ok(mut steps) = steps.lock() {
            f(&mut steps);
        }
    };
    let snapshot_started = std::time::Instant::now();
    with_steps(&mut |s| {
        s.step(match &args.image {
            Some(image) => format!("reading the guest kernel's state from {}", image.display()),
            None => "making a snapshot for a stopped VM".to_owned(),
        })
    });
    let snapshot = match &args.image {
        Some(image) => {
            let image_args = ImageArgs {
                image: image.clone(),
                disks: Vec::new(),
                system_map: args.system_map.clone(),
                kernel: args.kernel.clone(),
                isf: args.isf.clone(),
                format: Default::default(),
                cr3: None,
            };
            let mem = image_args.open()?;
            if disks.is_empty() {
                disks = disks_from_image_config(image, mem.domain_config())?;
            }
            // All the disks, so that a /boot on another disk than the first is found.
            let snapshot = snapshot_of(&image_args, mem.as_ref(), &disks)?;
            emulator::emulate::SnapshotSource::Image(Box::new(snapshot))
        }
        None => emulator::emulate::SnapshotSource::Synthesize {
            release: args.release.clone(),
        },
    };
    with_steps(&mut |s| s.step("mounting the guest's filesystems read-only"));
    let options = emulator::run::RunOptions {
        command: args.command,
        env,
        net: match args.net {
            Net::Host => emulator::sandbox::NetMode::Host,
            Net::None => emulator::sandbox::NetMode::None,
            Net::Restricted => emulator::sandbox::NetMode::Restricted,
        },
        allow,
        limits,
        keep: args.keep,
        init_program: std::env::current_exe().context("locating the dormouse binary to run the sandbox init")?,
        progress: Some(Box::new({
            let steps = std::sync::Arc::clone(&steps);
            move |event| {
                let Ok(mut steps) = steps.lock() else {
                    return;
                };
                match event {
                    // The guest's package manager writes to the terminal: no spinner over it.
                    PhaseEvent::Started("command") => steps.pause("running the command in the sandbox"),
                    PhaseEvent::Started(name) => steps.step(name),
                    PhaseEvent::Done { name: "teardown", .. } => steps.finish_step(),
                    PhaseEvent::Done { .. } => {}
                }
            }
        })),
        stdout_to_stderr: args.json,
        binds: args
            .binds
            .iter()
            .map(|b| emulator::sandbox::Bind::parse(b).map_err(|e| anyhow::anyhow!("--bind {e}")))
            .collect::<Result<Vec<_>>>()?,
        durable: args.durable,
        trace: match args.trace {
            Trace::Seccomp => emulator::trace::TraceMode::Seccomp,
            Trace::AllSyscalls => emulator::trace::TraceMode::AllSyscalls,
            Trace::Off => emulator::trace::TraceMode::Off,
        },
    };
    // Read the key before the run: a bad key must not cost an emulation.
    let sign_key = match &args.sign_key {
        Some(path) => Some(bundle::sign::SecretKey::read(path)?),
        None => None,
    };
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let snapshot_phase = emulator::run::Phase {
        name: "snapshot".into(),
        millis: snapshot_started.elapsed().as_secs_f64() * 1000.0,
    };
    let (mut report, bundle) =
        emulator::emulate::emulate_with(&disks, snapshot, options, &args.state_dir, |context| {
            let (Some(out), Some(key)) = (&args.out, &sign_key) else {
                return Ok(None);
            };
            let run = context.report;
            if run.exit_code != Some(0) || run.timed_out || run.interrupted {
                return Ok(None);
            }
            with_steps(&mut |s| s.step(format!("packing the bundle {}", out.display())));
            let packed = applier::pack::bundle_from_run(context, out, key, created).map(Some);
            with_steps(&mut |s| s.finish_step());
            packed
        })?;
    report.run.phases.insert(0, snapshot_phase);
    let bundle = bundle.context("writing the bundle")?;
    let mut json = serde_json::to_value(&report)?;
    if let Some(outcome) = &bundle {
        json["bundle"] = serde_json::to_value(outcome)?;
        let record = outcome.bundle.with_extension("record.json");
        std::fs::write(&record, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("writing the emulation record {}", record.display()))?;
        eprintln!(
            "dormouse: bundle {} ({} bytes, signature {})",
            outcome.bundle.display(),
            outcome.write.bundle_bytes,
            outcome.signature.display()
        );
    } else if let Some(out) = &args.out {
        eprintln!(
            "dormouse: the command did not succeed; no bundle written to {}",
            out.display()
        );
    }
    if args.json {
        // The reader leaving early changes nothing about the run: the status stays the command's.
        output::reader_gone_is_ok(writeln!(Stdout::lock(), "{}", serde_json::to_string_pretty(&json)?))?;
    }
    if report.run.timed_out {
        eprintln!(
            "dormouse: the command exceeded --timeout {} s and was killed",
            args.timeout.0.unwrap_or_default()
        );
        return Ok(crate::exit::EMULATE_TIMED_OUT);
    }
    for event in &report.run.limit_events {
        eprintln!("dormouse: limit reached: {event}");
    }
    Ok(report
        .run
        .exit_code
        .and_then(|code| u8::try_from(code).ok())
        .unwrap_or(crate::exit::EMULATE_FAILED))
}

/// The disks the save image's xl config names, when they exist on this host.
pub(crate) fn disks_from_image_config(
    image: &std::path::Path,
    config: Option<&introspect::DomainConfig>,
) -> Result<Vec<emulator::disk::DiskSpec>> {
    let config = config.with_context(|| {
        format!(
            "{} records no domain configuration; pass the guest's disks with --disk PATH",
            image.display()
        )
    })?;
    let found = emulator::disk::disks_from_config(config)?;
    for skipped in &found.skipped {
        eprintln!(
            "dormouse: xl config disk {} ({}) skipped: {}",
            skipped.vdev.as_deref().unwrap_or("?"),
            skipped.path.as_deref().unwrap_or("no path"),
            skipped.reason
        );
    }
    Ok(found.usable)
}

pub(crate) fn cleanup(state_dir: &Path, json: bool) -> Result<()> {
    let report = emulator::run::cleanup(state_dir);
    let mut out = Stdout::lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        for id in &report.removed_runs {
            writeln!(out, "removed run {id}")?;
        }
        for cgroup in &report.removed_cgroups {
            writeln!(out, "removed cgroup {}", cgroup.display())?;
        }
        for id in &report.active_runs {
            writeln!(out, "left run {id}: its dormouse process is still running")?;
        }
        for problem in &report.problems {
            eprintln!("dormouse: cleanup: {problem}");
        }
    }
    if report.problems.is_empty() {
        Ok(())
    } else {
        bail!("cleanup left {} problem(s) above", report.problems.len())
    }
}
