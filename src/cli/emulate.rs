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
    /// Write the emulation record to FILE: its inputs by SHA-256, options, phases, intercepted
    /// execs and upper tree (dormouse.record/1; `dormouse replay`, `diff` and `report` read
    /// it). With --out, B.record.json is written anyway.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
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
    let record_path = args
        .record
        .clone()
        .or_else(|| args.out.as_ref().map(|b| b.with_extension("record.json")));
    let want = record_path.as_ref().map(|_| RecordWanted::default());
    let emulated = run_emulation(&args, want)?;
    if let (Some(path), Some(record)) = (&record_path, &emulated.record) {
        record
            .write(path)
            .with_context(|| format!("writing the emulation record {}", path.display()))?;
        eprintln!("dormouse: emulation record {}", path.display());
    }
    if args.json {
        // The reader leaving early changes nothing about the run: the status stays the command's.
        output::reader_gone_is_ok(writeln!(
            Stdout::lock(),
            "{}",
            serde_json::to_string_pretty(&emulated.json)?
        ))?;
    }
    Ok(emulated.code)
}

/// `dormouse emulate` arguments from a command line (argv[0] first): how a replay runs exactly
/// what its record's emulation ran.
pub(crate) fn parse_emulate_args(argv: &[String]) -> Result<EmulateArgs> {
    #[derive(clap::Parser)]
    struct EmulateCommand {
        #[command(flatten)]
        args: EmulateArgs,
    }
    Ok(<EmulateCommand as clap::Parser>::try_parse_from(argv)?.args)
}

/// A record is wanted; with `expected`, this run replays one and must read the same inputs.
#[derive(Default)]
pub(crate) struct RecordWanted<'a> {
    pub expected: Option<&'a record::schema::Inputs>,
    pub allow_drift: bool,
}

/// What one emulation gave: the exit status `emulate` returns, its `--json` document, its
/// record when one was wanted, and the inputs that differed from the expected ones.
pub(crate) struct Emulated {
    pub code: u8,
    pub json: serde_json::Value,
    pub record: Option<record::Record>,
    pub drift: Vec<record::diff::FieldDiff>,
}

/// The inputs of a replay differ from its record's (and `--allow-drift` was not given).
#[derive(Debug)]
pub(crate) struct Drift(pub Vec<record::diff::FieldDiff>);

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "the inputs are not the ones the record pins:")?;
        for d in &self.0 {
            writeln!(f, "  {}: recorded {}, now {}", d.field, d.a, d.b)?;
        }
        write!(
            f,
            "replay the same inputs (--image, --disk), or pass --allow-drift to run anyway and see what changed"
        )
    }
}

impl std::error::Error for Drift {}

/// One emulation from its arguments: `emulate` and `replay` both run through here.
pub(crate) fn run_emulation(args: &EmulateArgs, want_record: Option<RecordWanted>) -> Result<Emulated> {
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
    let snapshot_phase = emulator::run::Phase {
        name: "snapshot".into(),
        millis: snapshot_started.elapsed().as_secs_f64() * 1000.0,
    };
    // Pinned before the run, so that a replay refuses before it costs an emulation.
    let (inputs, hash_phase) = match &want_record {
        Some(want) => {
            let started = std::time::Instant::now();
            with_steps(&mut |s| s.step("hashing the inputs for the record"));
            let inputs = hash_inputs(args, &disks)?;
            let drift = match want.expected {
                Some(expected) => record::compare::input_drift(expected, &inputs),
                None => Vec::new(),
            };
            if !drift.is_empty() && !want.allow_drift {
                with_steps(&mut |s| s.finish_step());
                return Err(Drift(drift).into());
            }
            let phase = emulator::run::Phase {
                name: "hash inputs".into(),
                millis: started.elapsed().as_secs_f64() * 1000.0,
            };
            (Some((inputs, drift)), Some(phase))
        }
        None => (None, None),
    };
    with_steps(&mut |s| s.step("mounting the guest's filesystems read-only"));
    let options = emulator::run::RunOptions {
        command: args.command.clone(),
        env,
        net: match args.net {
            Net::Host => emulator::sandbox::NetMode::Host,
            Net::None => emulator::sandbox::NetMode::None,
            Net::Restricted => emulator::sandbox::NetMode::Restricted,
        },
        allow,
        limits,
        keep: args.keep.clone(),
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
    let wants_record = inputs.is_some();
    let (mut report, after) = emulator::emulate::emulate_with(&disks, snapshot, options, &args.state_dir, |context| {
        after_run(context, args, sign_key.as_ref(), created, wants_record, &steps)
    })?;
    let after = after?;
    report.run.phases.insert(0, snapshot_phase);
    if let Some(phase) = hash_phase {
        report.run.phases.insert(1, phase);
    }
    report.run.phases.extend(after.phases);
    let mut json = serde_json::to_value(&report)?;
    if let Some(outcome) = &after.bundle {
        json["bundle"] = serde_json::to_value(outcome)?;
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
    let (record, drift) = match (inputs, after.record) {
        (Some((inputs, drift)), Some(parts)) => (
            Some(assemble_record(
                args,
                &report,
                inputs,
                parts,
                after.bundle.as_ref(),
                created,
            )?),
            drift,
        ),
        _ => (None, Vec::new()),
    };
    if report.run.timed_out {
        eprintln!(
            "dormouse: the command exceeded --timeout {} s and was killed",
            args.timeout.0.unwrap_or_default()
        );
    }
    for event in &report.run.limit_events {
        eprintln!("dormouse: limit reached: {event}");
    }
    let code = if report.run.timed_out {
        crate::exit::EMULATE_TIMED_OUT
    } else {
        report
            .run
            .exit_code
            .and_then(|code| u8::try_from(code).ok())
            .unwrap_or(crate::exit::EMULATE_FAILED)
    };
    Ok(Emulated {
        code,
        json,
        record,
        drift,
    })
}

/// What the capture hook made while the upper layers still existed.
struct AfterRun {
    bundle: Option<applier::pack::BundleOutcome>,
    record: Option<RecordParts>,
    phases: Vec<emulator::run::Phase>,
}

/// The parts of a record only the upper layers can give.
struct RecordParts {
    upper: record::schema::Upper,
    repository: record::schema::Repository,
    kernel: record::schema::Kernel,
}

fn after_run(
    context: &emulator::run::CaptureContext,
    args: &EmulateArgs,
    sign_key: Option<&bundle::sign::SecretKey>,
    created: u64,
    wants_record: bool,
    steps: &std::sync::Mutex<Steps>,
) -> Result<AfterRun> {
    let with_steps = |f: &mut dyn FnMut(&mut Steps)| {
        if let Ok(mut steps) = steps.lock() {
            f(&mut steps);
        }
    };
    let run = context.report;
    let succeeded = run.exit_code == Some(0) && !run.timed_out && !run.interrupted;
    let bundle_to = match (&args.out, sign_key) {
        (Some(out), Some(key)) if succeeded => Some((out, key)),
        _ => None,
    };
    let mut after = AfterRun {
        bundle: None,
        record: None,
        phases: Vec::new(),
    };
    if bundle_to.is_none() && !wants_record {
        return Ok(after);
    }
    let timed = |name: &str, started: std::time::Instant| emulator::run::Phase {
        name: name.into(),
        millis: started.elapsed().as_secs_f64() * 1000.0,
    };
    let started = std::time::Instant::now();
    with_steps(&mut |s| s.step("capturing the changes"));
    let changes = emulator::capture::capture(
        context.layers,
        &emulator::capture::CaptureOptions::defaults(&run.injected),
    )
    .context("capturing the run's changes")?;
    after.phases.push(timed("capture", started));
    if let Some((out, key)) = bundle_to {
        let started = std::time::Instant::now();
        with_steps(&mut |s| s.step(format!("packing the bundle {}", out.display())));
        after.bundle =
            Some(applier::pack::bundle_from_run(context, &changes, out, key, created).context("writing the bundle")?);
        after.phases.push(timed("pack", started));
    }
    if wants_record {
        let started = std::time::Instant::now();
        with_steps(&mut |s| s.step("recording the upper tree and the repository state"));
        let kernel = &context.snapshot.kernel;
        after.record = Some(RecordParts {
            upper: record::build::upper(&changes)?,
            repository: record::build::repository(context.layers)?,
            kernel: record::schema::Kernel {
                release: kernel.release.clone(),
                banner: args.image.as_ref().map(|_| kernel.banner.clone()),
            },
        });
        after.phases.push(timed("record", started));
    }
    with_steps(&mut |s| s.finish_step());
    Ok(after)
}

/// The image, every disk the run attaches and the profile files, by SHA-256.
fn hash_inputs(args: &EmulateArgs, disks: &[emulator::disk::DiskSpec]) -> Result<record::schema::Inputs> {
    let image = args.image.as_deref().map(record::build::hash_input).transpose()?;
    let disks = disks
        .iter()
        .map(|d| {
            Ok(record::schema::InputDisk {
                spec: disk_spec_text(d),
                file: record::build::hash_input(&d.path)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let profile_files = [&args.system_map, &args.kernel, &args.isf]
        .into_iter()
        .flatten()
        .map(|p| record::build::hash_input(p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(record::schema::Inputs {
        image,
        disks,
        profile_files,
        snapshot: if args.image.is_some() { "image" } else { "synthesized" }.into(),
        // Filled from the snapshot after the run.
        kernel: record::schema::Kernel {
            release: String::new(),
            banner: None,
        },
    })
}

/// A `--net`/`--trace` value as the command line spells it.
fn value_name(v: impl ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_owned())
        .unwrap_or_default()
}

/// `PATH[:N]` as `--disk` takes it back.
fn disk_spec_text(d: &emulator::disk::DiskSpec) -> String {
    match d.root_partition {
        Some(n) => format!("{}:{n}", d.path.display()),
        None => d.path.display().to_string(),
    }
}

fn assemble_record(
    args: &EmulateArgs,
    report: &emulator::emulate::EmulateReport,
    mut inputs: record::schema::Inputs,
    parts: RecordParts,
    bundle: Option<&applier::pack::BundleOutcome>,
    created: u64,
) -> Result<record::Record> {
    inputs.kernel = parts.kernel;
    let bundle = match bundle {
        Some(b) => {
            let hashed = record::build::hash_input(&b.bundle)?;
            Some(record::schema::BundleRef {
                path: hashed.path,
                bundle_id: b.bundle_id.clone(),
                bytes: hashed.bytes,
                sha256: hashed.sha256,
            })
        }
        None => None,
    };
    let path_text = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    Ok(record::Record {
        schema: record::SCHEMA.into(),
        dormouse_version: env!("CARGO_PKG_VERSION").into(),
        created_unix: created,
        run_id: report.run.run_id.clone(),
        inputs,
        options: record::schema::Options {
            command: args.command.clone(),
            env: args.env.clone(),
            net: value_name(args.net),
            allow: args.allow.clone(),
            trace: value_name(args.trace),
            memory: args.memory.to_string(),
            pids: args.pids.to_string(),
            timeout: args.timeout.to_string(),
            scratch_size: args.scratch_size.to_string(),
            binds: args.binds.clone(),
            durable: args.durable,
            release: args.release.clone(),
            system_map: path_text(&args.system_map),
            kernel: path_text(&args.kernel),
            isf: path_text(&args.isf),
        },
        outcome: record::build::outcome(&report.run),
        phases: record::build::phases(&report.run.phases),
        execs: report.run.trace.scripts.clone(),
        upper: parts.upper,
        repository: parts.repository,
        bundle,
        online: None,
    })
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
