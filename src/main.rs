//! `dormouse`: the dom0 command line. Argument parsing and wiring only; the work happens in
//! the library crates.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{ArgGroup, Args, Parser, Subcommand};
use emulator::disk::GuestDisk;
use introspect::linux::{GuestSnapshot, ProfileFiles};
use introspect::octal_escape::escape;
use output::Stdout;

mod output;

#[derive(Parser)]
#[command(
    name = "dormouse",
    version,
    about = "Security-patch suspended Xen domUs offline, from dom0"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Describe a guest disk without writing to it: partitions, filesystems, the root found by
    /// content, its OS and its /etc/fstab.
    Disk {
        /// Raw disk image or block device.
        path: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// What the guest kernel knew, read from a memory image (xl save, xl dump-core, ELF core):
    /// a summary, or the whole snapshot as JSON.
    Inspect {
        #[command(flatten)]
        image: ImageArgs,
        /// Print the snapshot as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The guest's processes, like `ps -e`: PID PPID UID GID STAT COMMAND.
    Ps {
        #[command(flatten)]
        image: ImageArgs,
    },
    /// One file of the guest's /proc as the guest kernel would print it (e.g. /proc/filesystems,
    /// /proc/sys/kernel/osrelease, /proc/1/stat); a directory lists its entries.
    Proc {
        #[command(flatten)]
        image: ImageArgs,
        /// Path in the guest's /proc, with or without the leading /proc.
        path: String,
    },
    /// Mount the guest's /proc (read-only FUSE) at MOUNTPOINT and serve it in the foreground
    /// until SIGINT/SIGTERM; the mount goes away with this process.
    Shadowfs {
        #[command(flatten)]
        image: ImageArgs,
        /// An existing empty directory.
        mountpoint: PathBuf,
    },
    /// Run COMMAND (the guest's own package manager) in a dom0 sandbox over a copy-on-write
    /// overlay of the guest's disks, which are never written. The guest's /proc is served from
    /// IMAGE; without IMAGE (a stopped VM) it is synthesized from the disk.
    Emulate(Box<EmulateArgs>),
    /// Remove what crashed emulation runs left behind (run directories, cgroups).
    Cleanup {
        /// dormouse's state directory.
        #[arg(long, env = "DORMOUSE_STATE", default_value = emulator::run::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Which packages of a dormant VM are outdated (security or normal), read from its disk
    /// without booting it; with IMAGE, which running processes use them.
    Check(CheckArgs),
    /// Make a bundle signing key pair in minisign's format: PREFIX.key (secret, unencrypted,
    /// mode 0600) and PREFIX.pub.
    Keygen {
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
    /// Look into and check bundles made by `emulate --out`.
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Firewall Xen vifs (nftables rules held by the kernel) so they pass nothing but the agent
    /// channel to dom0, until `dormouse release`; `--list` shows what is isolated.
    Isolate(IsolateArgs),
    /// Lift the isolation of vifs; nothing else removes it.
    Release(ReleaseArgs),
    /// Restore a suspended domain with its network isolated (`xl restore -p`, vifs passing
    /// only the agent channel), deliver BUNDLE to its `dormouse-agent serve`, and lift the
    /// isolation once the agent reports it applied; on failure the domain stays isolated.
    Restore(RestoreArgs),
    /// Mark a saved domain pending without restoring it: after the same checks as `restore`,
    /// write the hook's key, so whatever restores it next (`xl restore`, xendomains) brings its
    /// vifs up isolated by `vif-dormouse`; then `dormouse deliver` applies and releases.
    Pend(PendArgs),
    /// Deliver BUNDLE to a restored domain's agent and lift the isolation once it reports the
    /// bundle applied: after a plain `xl restore` of a pending domain, or to finish a `restore`
    /// that was interrupted (the agent resumes, or reports it already applied).
    Deliver(DeliverArgs),
    /// The guest's utsname, like `uname`.
    Uname {
        #[command(flatten)]
        image: ImageArgs,
        /// All fields, as `uname -a` prints them.
        #[arg(short = 'a', long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum BundleCommand {
    /// What a bundle changes: files added/changed/removed, scripts by type, packages.
    Show {
        bundle: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check a bundle's signature (BUNDLE.minisig) and every member against its manifest.
    /// Same signature check by the standard tool: `minisign -Vm BUNDLE -p KEY`.
    Verify {
        bundle: PathBuf,
        /// The signer's public key (`dormouse keygen`'s PREFIX.pub).
        #[arg(long, value_name = "PUB")]
        key: PathBuf,
    },
}

#[derive(Args)]
struct EmulateArgs {
    /// Memory image of the suspended guest (`xl save` file, `xl dump-core` file or ELF core).
    image: Option<PathBuf>,
    /// A guest disk (raw image, qcow2 or block device), read-only; PATH:N forces the root
    /// partition. Repeat for several disks.
    #[arg(long = "disk", value_name = "DISK[:PART]")]
    disks: Vec<String>,
    /// Network of the sandbox: `host` (dom0's), `none` (loopback only), or `restricted`
    /// (only the hosts of the guest's package sources, through a dom0 proxy).
    #[arg(long, default_value = "host", value_parser = ["host", "none", "restricted"])]
    net: String,
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
    /// Interception of maintainer scripts and uname: `seccomp` (trap only execve, execveat and
    /// uname), `all-syscalls` (stop at every syscall; for measuring), or `off` (scripts really
    /// run, inside the sandbox; for baselines).
    #[arg(long, default_value = "seccomp", value_parser = ["seccomp", "all-syscalls", "off"])]
    trace: String,
    /// dormouse's state directory (run directories live in STATE/runs).
    #[arg(long, env = "DORMOUSE_STATE", default_value = emulator::run::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Memory limit of the sandbox (e.g. 4G, 512M; `none` for unlimited).
    #[arg(long, default_value = "4G")]
    memory: String,
    /// Process limit of the sandbox (`none` for unlimited).
    #[arg(long, default_value = "4096")]
    pids: String,
    /// Wall-time limit in seconds (`none` for unlimited).
    #[arg(long, default_value = "3600")]
    timeout: String,
    /// Size limit of the scratch tmpfs holding the changes.
    #[arg(long, default_value = "8G")]
    scratch_size: String,
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

#[derive(Args)]
struct ImageArgs {
    /// Memory image: `xl save` file, `xl dump-core` file or ELF core (format detected by
    /// content), or `domain:DOMID` for a live Xen domain: pause it first (`xl pause`), since a
    /// running guest changes under the reader (needs the `xen` feature, in dom0).
    image: PathBuf,
    /// A guest disk (PATH, or PATH:N to name the root partition), read-only; repeat for each
    /// disk. Profile files are taken from /boot/System.map-<release> and
    /// /boot/vmlinuz-<release> as the guest's fstab mounts them, when they are real.
    #[arg(long = "disk", value_name = "DISK[:PART]")]
    disks: Vec<String>,
    /// The running kernel's System.map (checked against the kallsyms in memory when present).
    #[arg(long, value_name = "FILE")]
    system_map: Option<PathBuf>,
    /// The running kernel's vmlinuz or vmlinux, for its .BTF types.
    #[arg(long, value_name = "FILE")]
    kernel: Option<PathBuf>,
    /// A Volatility 3 ISF profile (JSON, optionally xz-compressed) for symbols and types.
    #[arg(long, value_name = "FILE")]
    isf: Option<PathBuf>,
}

fn main() -> ExitCode {
    // The sandbox init is this binary re-executed; it must do nothing else first.
    let mut args = std::env::args_os();
    if args.nth(1).as_deref() == Some(std::ffi::OsStr::new(emulator::sandbox::INIT_SUBCOMMAND)) {
        let spec = args.next().map(PathBuf::from).unwrap_or_default();
        emulator::sandbox::init_main(&spec);
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("DORMOUSE_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Command::Emulate(args) = cli.command {
        return match emulate(*args) {
            Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => {
                eprintln!("dormouse: {}", error_chain(&e));
                ExitCode::from(125)
            }
        };
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // Quietly and successfully, as ripgrep: the reader (`| head`) has all it wanted.
        Err(e) if output::reader_gone(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dormouse: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, skipping causes the message already quotes (library errors
/// often embed their source's text and expose it as `source()` too).
fn error_chain(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !msg.contains(&cause) {
            msg.push_str(": ");
            msg.push_str(&cause);
        }
    }
    msg
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Disk { path, json } => disk(&path, json),
        Command::Keygen { out: prefix } => {
            let key = applier::bundle::write::generate_key()?;
            let (secret, public) = applier::bundle::write::write_key_pair(&key, &prefix)?;
            writeln!(
                Stdout::lock(),
                "secret key {} (keep it in dom0), public key {} (id {})",
                secret.display(),
                public.display(),
                key.public().key_id_hex()
            )?;
            Ok(())
        }
        Command::Bundle(BundleCommand::Show { bundle, json }) => {
            let bundle = applier::bundle::read::Bundle::open(&bundle)?;
            let summary = applier::bundle::summary::summarize(bundle.manifest());
            let mut out = Stdout::lock();
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&summary)?)?;
            } else {
                writeln!(out, "{summary}")?;
            }
            Ok(())
        }
        Command::Bundle(BundleCommand::Verify { bundle, key }) => {
            let public = applier::bundle::sign::PublicKey::read(&key)?;
            let sig_path = applier::bundle::sign::signature_path(&bundle);
            let signature = applier::bundle::sign::read_signature(&sig_path)?;
            let trusted = public.verify_file(&bundle, &signature, &sig_path)?;
            let stats = applier::bundle::read::Bundle::open(&bundle)?.verify_payload()?;
            writeln!(
                Stdout::lock(),
                "{}: signature by key {} good ({trusted}); {} members, {} bytes match the manifest",
                bundle.display(),
                public.key_id_hex(),
                stats.members,
                stats.bytes
            )?;
            Ok(())
        }
        Command::Inspect { image, json } => {
            let snapshot = snapshot(&image)?;
            let mut out = Stdout::lock();
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&snapshot)?)?;
            } else {
                print_summary(&mut out, &snapshot)?;
            }
            Ok(())
        }
        Command::Ps { image } => Ok(print_ps(&mut Stdout::lock(), &snapshot(&image)?)?),
        Command::Proc { image, path } => {
            let tree = shadowfs::ProcTree::new(snapshot(&image)?);
            let mut out = Stdout::lock();
            match tree.render(&path)? {
                shadowfs::Rendered::File(bytes) => out.write_all(&bytes)?,
                shadowfs::Rendered::Dir(entries) => {
                    for e in entries {
                        writeln!(out, "{}", e.name)?;
                    }
                }
                shadowfs::Rendered::Symlink(target) => writeln!(out, "{target}")?,
            }
            Ok(())
        }
        Command::Shadowfs { image, mountpoint } => {
            let tree = shadowfs::ProcTree::new(snapshot(&image)?);
            shadowfs::serve(tree, &mountpoint)?;
            Ok(())
        }
        Command::Emulate(_) => unreachable!("dispatched in main"),
        Command::Cleanup { state_dir, json } => {
            let report = emulator::run::cleanup(&state_dir);
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
        Command::Check(args) => check(args),
        Command::Isolate(args) => isolate(args),
        Command::Release(args) => release(args),
        Command::Restore(args) => restore(args),
        Command::Pend(args) => pend(args),
        Command::Deliver(args) => deliver(args),
        Command::Uname { image, all } => {
            let u = snapshot(&image)?.uts;
            let mut out = Stdout::lock();
            if all {
                writeln!(
                    out,
                    "{} {} {} {} {} GNU/Linux",
                    u.sysname, u.nodename, u.release, u.version, u.machine
                )?;
            } else {
                writeln!(out, "{}", u.sysname)?;
            }
            Ok(())
        }
    }
}

fn snapshot(args: &ImageArgs) -> Result<GuestSnapshot> {
    Ok(snapshot_and_config(args)?.0)
}

/// The snapshot, and the domain configuration the image embeds (`xl save`).
impl ImageArgs {
    /// The live domain IMAGE names (`domain:DOMID`), unless a file of that name exists.
    fn domain(&self) -> Option<u32> {
        let domid = self.image.to_str()?.strip_prefix("domain:")?.parse().ok()?;
        (!self.image.exists()).then_some(domid)
    }

    /// What is read, for messages: the image's path or `domain N`.
    fn source(&self) -> String {
        match self.domain() {
            Some(domid) => format!("domain {domid}"),
            None => self.image.display().to_string(),
        }
    }

    fn open(&self) -> Result<Box<dyn introspect::PhysMemory>> {
        match self.domain() {
            Some(domid) => open_domain(domid),
            None => Ok(introspect::open_memory(&self.image)?),
        }
    }

    /// The save image itself, for commands that need the file (restore).
    fn image_file(&self) -> Result<&PathBuf> {
        match self.domain() {
            Some(domid) => bail!("domain {domid}: this command needs the save image's path, not a live domain"),
            None => Ok(&self.image),
        }
    }
}

#[cfg(feature = "xen")]
fn open_domain(domid: u32) -> Result<Box<dyn introspect::PhysMemory>> {
    introspect::open_live_domain(domid).with_context(|| {
        format!("attaching to domain {domid} (is this dom0, as root, and is the domain paused? `xl list`)")
    })
}

#[cfg(not(feature = "xen"))]
fn open_domain(domid: u32) -> Result<Box<dyn introspect::PhysMemory>> {
    bail!(
        "domain:{domid}: this dormouse was built without live-domain support; build it with \
         `cargo build --release --features xen` (needs Debian's libxen-dev) and run it in dom0"
    )
}

fn snapshot_and_config(args: &ImageArgs) -> Result<(GuestSnapshot, Option<introspect::DomainConfig>)> {
    let mem = args.open()?;
    let disks: Vec<_> = args
        .disks
        .iter()
        .map(|d| emulator::emulate::DiskArg::parse(d))
        .collect();
    let snapshot = snapshot_of(args, mem.as_ref(), &disks)?;
    Ok((snapshot, mem.domain_config().cloned()))
}

/// Introspects `mem` with the profile files IMAGE's flags name and those on `disks`.
fn snapshot_of(
    args: &ImageArgs,
    mem: &dyn introspect::PhysMemory,
    disks: &[emulator::emulate::DiskArg],
) -> Result<GuestSnapshot> {
    let mut files = ProfileFiles::default();
    if !disks.is_empty() {
        let release = introspect::linux::kernel_release(mem)
            .with_context(|| format!("{}: no kernel release in memory to pick /boot files by", args.source()))?;
        profile_from_disks(disks, &release, &mut files)?;
    }
    if let Some(path) = &args.system_map {
        files.system_map = Some(read_system_map(path)?);
    }
    if let Some(path) = &args.kernel {
        let image = introspect::KernelImage::open(path)?;
        let btf = image
            .btf()
            .with_context(|| format!("{}: no usable .BTF section", path.display()))?;
        files.btf = Some((format!("BTF of {}", path.display()), btf));
    }
    if let Some(path) = &args.isf {
        files.isf = Some((path.display().to_string(), introspect::Isf::open(path)?));
    }
    Ok(introspect::linux::snapshot(mem, &files)?)
}

fn read_system_map(path: &std::path::Path) -> Result<(String, introspect::Symbols)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let symbols = introspect::Symbols::from_system_map(&text).with_context(|| path.display().to_string())?;
    Ok((path.display().to_string(), symbols))
}

/// Reads the guest's own /boot files for `release` from its disks, read-only, where its fstab
/// mounts /boot. Debian installs a placeholder System.map (the real one is in the -dbg
/// package): such a file is skipped.
fn profile_from_disks(disks: &[emulator::emulate::DiskArg], release: &str, files: &mut ProfileFiles) -> Result<()> {
    let scratch = tempfile_dir()?;
    let boot = emulator::boot_files::read_boot_files(disks, release, scratch.path())?;
    for note in &boot.notes {
        eprintln!("dormouse: reading /boot: {note}");
    }
    if let Some(map) = &boot.system_map {
        let text = String::from_utf8_lossy(&map.bytes);
        match introspect::Symbols::from_system_map(&text) {
            Ok(symbols) if symbols.len() > 1 => files.system_map = Some((map.label.clone(), symbols)),
            _ => eprintln!("dormouse: {} is a placeholder; using memory", map.label),
        }
    }
    if let Some(vmlinuz) = boot.vmlinuz {
        let label = vmlinuz.label;
        let btf = introspect::KernelImage::from_bytes(PathBuf::from(&label), vmlinuz.bytes)
            .map_err(anyhow::Error::from)
            .and_then(|image| image.btf().map_err(anyhow::Error::from));
        match btf {
            Ok(btf) => files.btf = Some((format!("BTF of {label}"), btf)),
            Err(e) => eprintln!("dormouse: {label} gives no BTF ({e:#}); using memory"),
        }
    } else if boot.system_map.is_none() {
        eprintln!(
            "dormouse: {} has neither /boot/System.map-{release} nor /boot/vmlinuz-{release}; using memory",
            boot.boot_volume
        );
    }
    Ok(())
}

fn print_summary(out: &mut impl Write, s: &GuestSnapshot) -> std::io::Result<()> {
    writeln!(
        out,
        "image:      {} ({}, {}, {} pages)",
        s.source.path, s.source.format, s.source.guest_kind, s.source.pages
    )?;
    if let Some(d) = &s.domain {
        writeln!(
            out,
            "domain:     {} uuid={} type={} memory={} KiB vcpus={}",
            d.name.as_deref().unwrap_or("?"),
            d.uuid.as_deref().unwrap_or("?"),
            d.domain_type.as_deref().unwrap_or("?"),
            d.memory_kib.map_or("?".into(), |m| m.to_string()),
            d.vcpus.map_or("?".into(), |v| v.to_string())
        )?;
    }
    writeln!(out, "kernel:     {} {}", s.kernel.release, s.kernel.version)?;
    writeln!(out, "cmdline:    {}", s.kernel.cmdline.as_deref().unwrap_or("?"))?;
    writeln!(
        out,
        "kaslr:      virtual offset {:#x}, physical offset {}, page_offset_base {}, page tables at {:#x}",
        s.kernel.kaslr_offset,
        s.kernel.kaslr_phys_offset.map_or("?".into(), |o| format!("{o:#x}")),
        s.kernel.page_offset_base.map_or("?".into(), |b| format!("{b:#x}")),
        s.kernel.page_table_root
    )?;
    writeln!(out, "symbols:    {}", s.kernel.profile.symbols)?;
    writeln!(out, "types:      {}", s.kernel.profile.types)?;
    writeln!(out, "hostname:   {}", s.uts.nodename)?;
    writeln!(
        out,
        "boot_id:    {}",
        s.boot_id.as_deref().unwrap_or("(never generated)")
    )?;
    let user = s.tasks.iter().filter(|t| !t.kernel_thread).count();
    writeln!(
        out,
        "tasks:      {} ({} user, {} kernel threads)",
        s.tasks.len(),
        user,
        s.tasks.len() - user
    )?;
    writeln!(
        out,
        "filesystems: {}",
        s.filesystems
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    )?;
    writeln!(
        out,
        "modules:    {}",
        s.modules.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(" ")
    )?;
    for m in &s.mounts {
        writeln!(
            out,
            "mount:      {} on {} type {} ({})",
            escape(&m.device),
            escape(&m.mountpoint),
            m.fstype,
            m.options
        )?;
    }
    for i in &s.interfaces {
        writeln!(
            out,
            "interface:  {} {} {} {}",
            i.name,
            i.mac.as_deref().unwrap_or("-"),
            i.ipv4.join(","),
            i.ipv6.join(",")
        )?;
    }
    writeln!(out, "sysctls:    {} values", s.sysctl.len())?;
    for w in &s.warnings {
        writeln!(out, "warning:    {w}")?;
    }
    Ok(())
}

fn print_ps(out: &mut impl Write, s: &GuestSnapshot) -> std::io::Result<()> {
    writeln!(out, "{:>7} {:>7} {:>6} {:>6} STAT COMMAND", "PID", "PPID", "UID", "GID")?;
    for t in &s.tasks {
        let command = match &t.cmdline {
            // Like procps: control characters in guest-written arguments print as '?'.
            Some(args) if !args.is_empty() => args
                .join(" ")
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect(),
            _ => format!("[{}]", t.comm),
        };
        writeln!(
            out,
            "{:>7} {:>7} {:>6} {:>6} {:<4} {command}",
            t.pid, t.ppid, t.uid, t.gid, t.state
        )?;
    }
    Ok(())
}

fn disk(path: &std::path::Path, json: bool) -> Result<()> {
    let disk = GuestDisk::open(path)?;
    let scratch = tempfile_dir()?;
    let root = disk.find_root(scratch.path())?;
    let fstab = match &root {
        Some((number, _)) => {
            let mount = disk.mount(*number, scratch.path())?;
            let root_fd = mount.open_root()?;
            let bytes = emulator::disk::read_in_root(&root_fd, mount.target(), "etc/fstab", 1 << 20)?;
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        None => None,
    };
    let mut out = Stdout::lock();
    if json {
        let json = serde_json::json!({
            "disk": disk,
            "root": root.as_ref().map(|(n, os)| serde_json::json!({"partition": n, "os_release": os})),
            "fstab": fstab,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{}: {} bytes, partition table: {:?}",
        disk.path.display(),
        disk.size,
        disk.table
    )?;
    for v in &disk.volumes {
        let p = &v.partition;
        let fs = v.filesystem.as_ref().map_or("-".to_owned(), |fs| {
            format!(
                "{} uuid={} label={}",
                fs.fstype,
                fs.uuid.as_deref().unwrap_or("-"),
                fs.label.as_deref().unwrap_or("-")
            )
        });
        writeln!(
            out,
            "  {:>2}  start {:>12}  size {:>12}  type {:<38} {fs}",
            p.number, p.start, p.size, p.type_id
        )?;
    }
    match (&root, &fstab) {
        (Some((number, os)), Some(fstab)) => {
            writeln!(
                out,
                "root filesystem: partition {number} ({})",
                os.pretty_name.as_deref().unwrap_or("unknown OS")
            )?;
            writeln!(out, "its /etc/fstab:")?;
            for line in fstab
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            {
                writeln!(out, "  {line}")?;
            }
        }
        _ => writeln!(
            out,
            "no partition holds a root filesystem (one with /etc/fstab and /etc/os-release)"
        )?,
    }
    Ok(())
}

fn tempfile_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("dormouse-disk-")
        .tempdir()
        .context("creating a scratch mount point under $TMPDIR")
}

/// `dormouse emulate`: returns the command's exit status.
fn emulate(args: EmulateArgs) -> Result<i32> {
    // Before any thread exists: every mount of the run lives in a namespace that dies with us.
    emulator::run::enter_private_mount_namespace()?;
    emulator::run::catch_termination_signals()?;
    let net = match args.net.as_str() {
        "none" => emulator::sandbox::NetMode::None,
        "restricted" => emulator::sandbox::NetMode::Restricted,
        _ => emulator::sandbox::NetMode::Host,
    };
    let limits = emulator::run::Limits {
        memory_bytes: parse_size("--memory", &args.memory)?,
        pids: parse_count("--pids", &args.pids)?,
        wall: parse_count("--timeout", &args.timeout)?.map(std::time::Duration::from_secs),
        scratch_bytes: parse_size("--scratch-size", &args.scratch_size)?
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
    let mut disks: Vec<emulator::emulate::DiskArg> = args
        .disks
        .iter()
        .map(|d| emulator::emulate::DiskArg::parse(d))
        .collect();
    let snapshot_started = std::time::Instant::now();
    let snapshot = match &args.image {
        Some(image) => {
            let image_args = ImageArgs {
                image: image.clone(),
                disks: Vec::new(),
                system_map: args.system_map.clone(),
                kernel: args.kernel.clone(),
                isf: args.isf.clone(),
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
    let options = emulator::run::RunOptions {
        command: args.command,
        env,
        net,
        allow,
        limits,
        keep: args.keep,
        init_program: std::env::current_exe().context("locating the dormouse binary to run the sandbox init")?,
        progress: emulator::run::Progress::Terminal,
        stdout_to_stderr: args.json,
        binds: args
            .binds
            .iter()
            .map(|b| emulator::sandbox::Bind::parse(b).map_err(|e| anyhow::anyhow!("--bind {e}")))
            .collect::<Result<Vec<_>>>()?,
        durable: args.durable,
        trace: match args.trace.as_str() {
            "off" => emulator::trace::TraceMode::Off,
            "all-syscalls" => emulator::trace::TraceMode::AllSyscalls,
            _ => emulator::trace::TraceMode::Seccomp,
        },
    };
    // Read the key before the run: a bad key must not cost an emulation.
    let sign_key = match &args.sign_key {
        Some(path) => Some(applier::bundle::sign::SecretKey::read(path)?),
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
            applier::bundle::write::bundle_from_run(context, out, key, created).map(Some)
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
            args.timeout
        );
        return Ok(124);
    }
    for event in &report.run.limit_events {
        eprintln!("dormouse: limit reached: {event}");
    }
    Ok(report.run.exit_code.unwrap_or(125))
}

/// The disks the save image's xl config names, when they exist on this host.
fn disks_from_image_config(
    image: &std::path::Path,
    config: Option<&introspect::DomainConfig>,
) -> Result<Vec<emulator::emulate::DiskArg>> {
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
    Ok(found
        .usable
        .into_iter()
        .map(|d| emulator::emulate::DiskArg {
            path: d.path,
            format: d.format,
            vdev: d.vdev,
            root_partition: None,
        })
        .collect())
}

/// `4G`, `512M`, `64k`, plain bytes, or `none`.
fn parse_size(flag: &str, text: &str) -> Result<Option<u64>> {
    if text == "none" {
        return Ok(None);
    }
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let shift = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => bail!("{flag} {text}: expected a size like 512M or 4G, or `none`"),
    };
    let n: u64 = digits
        .parse()
        .with_context(|| format!("{flag} {text}: expected a size like 512M or 4G"))?;
    Ok(Some(
        n.checked_shl(shift)
            .filter(|v| v >> shift == n)
            .with_context(|| format!("{flag} {text}: too large"))?,
    ))
}

fn parse_count(flag: &str, text: &str) -> Result<Option<u64>> {
    if text == "none" {
        return Ok(None);
    }
    Ok(Some(text.parse().with_context(|| {
        format!("{flag} {text}: expected a number or `none`")
    })?))
}

// ---- dormouse check ----------------------------------------------------------------------

#[derive(Args)]
struct CheckArgs {
    /// Memory image of the suspended guest: also list the processes running outdated
    /// executables.
    image: Option<PathBuf>,
    /// The guest's disk (raw image or block device; PATH:N names the root partition),
    /// read-only. Filesystems its /etc/fstab mounts from the same disk are read too.
    #[arg(long, value_name = "DISK[:PART]", conflicts_with_all = ["root", "batch"])]
    disk: Option<String>,
    /// A directory holding the guest's root tree, instead of a disk.
    #[arg(long, value_name = "DIR", conflicts_with = "batch")]
    root: Option<PathBuf>,
    /// Many VMs: FILE has one per line, `[IMAGE] --disk DISK[:N] [--name NAME]` or
    /// `[IMAGE] --root DIR [--name NAME]` (# comments); indices are parsed once for all.
    #[arg(long, value_name = "FILE", conflicts_with = "image")]
    batch: Option<PathBuf>,
    /// The VM's name in the results database (default: IMAGE, else the disk or directory).
    #[arg(long, conflicts_with = "batch")]
    name: Option<String>,
    /// Fetch fresh indices from the guest's repositories (release signatures checked with the
    /// guest's keys by dom0's gpgv) instead of the lists apt last downloaded in the guest.
    #[arg(long, conflicts_with = "repo_metadata")]
    refresh: bool,
    /// Use index files from DIR (laid out like /var/lib/apt/lists) instead of the guest's.
    #[arg(long, value_name = "DIR")]
    repo_metadata: Option<PathBuf>,
    /// Also show what changed since the previous check of the same VM.
    #[arg(long)]
    since: bool,
    /// The results database (default: STATE_DIR/check.sqlite).
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
    /// dormouse's state directory.
    #[arg(long, env = "DORMOUSE_STATE", default_value = emulator::run::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Print JSON (one object per VM, in an array with --batch).
    #[arg(long)]
    json: bool,
}

fn check(args: CheckArgs) -> Result<()> {
    let targets = match (&args.batch, &args.disk, &args.root) {
        (Some(file), _, _) => {
            let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
            checker::batch::parse(&text, &file.display().to_string())?
        }
        (None, Some(disk), _) => vec![checker::Target {
            name: args.name.clone(),
            image: args.image.clone(),
            tree: checker::tree::TreeSource::disk(disk),
        }],
        (None, None, Some(root)) => vec![checker::Target {
            name: args.name.clone(),
            image: args.image.clone(),
            tree: checker::tree::TreeSource::Dir(root.clone()),
        }],
        (None, None, None) => bail!("name the guest's disk with --disk (or a tree with --root, or VMs with --batch)"),
    };
    let source = match (args.refresh, args.repo_metadata) {
        (true, _) => checker::IndexSource::Refresh,
        (false, Some(dir)) => checker::IndexSource::Dir(dir),
        (false, None) => checker::IndexSource::GuestLists,
    };
    let db = args.db.unwrap_or_else(|| args.state_dir.join("check.sqlite"));
    let outcomes = checker::run_checks(&targets, source, Some(&db), args.since)?;
    let mut out = Stdout::lock();
    if args.json {
        let value = if args.batch.is_some() {
            serde_json::to_value(&outcomes)?
        } else {
            serde_json::to_value(&outcomes[0])?
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
    } else {
        for o in &outcomes {
            match (&o.report, &o.error) {
                (Some(report), _) => write!(out, "{}", report.text())?,
                (None, Some(e)) => writeln!(out, "{}: not checked: {e}", o.vm)?,
                (None, None) => {}
            }
            if let Some(c) = &o.changes {
                write!(out, "{}", checker::db::changes_text(c))?;
            }
        }
    }
    let failed: Vec<_> = outcomes.iter().filter(|o| o.error.is_some()).collect();
    match failed.as_slice() {
        [] => {}
        // One VM: its own error, which JSON output carries too, is what the operator needs.
        [one] if outcomes.len() == 1 => {
            bail!("{}: not checked: {}", one.vm, one.error.as_deref().unwrap_or_default())
        }
        _ => bail!("{} of {} VM(s) could not be checked", failed.len(), outcomes.len()),
    }
    Ok(())
}

// ---- dormouse isolate / release ----------------------------------------------------------

#[derive(Args)]
#[command(group(ArgGroup::new("target").required(true).args(["domain", "vifs", "list"])))]
struct IsolateArgs {
    /// The running domain whose vifs to isolate (their names are read from xenstore).
    #[arg(long, value_name = "DOMID")]
    domain: Option<u32>,
    /// Interfaces to isolate, by name; they need not exist yet.
    #[arg(long = "vif", value_name = "IFNAME", num_args = 1..)]
    vifs: Vec<String>,
    /// dom0 endpoint the vifs may talk to: ADDR (anything to and from it) or ADDR:PORT,
    /// [IPV6]:PORT (TCP whose dom0-side port is PORT, either side connecting). Repeatable;
    /// without it nothing passes.
    #[arg(long = "allow", value_name = "ADDR[:PORT]", conflicts_with = "list")]
    allow: Vec<String>,
    /// Show the isolated vifs instead.
    #[arg(long)]
    list: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(group(ArgGroup::new("target").required(true).args(["domain", "vifs", "all"])))]
struct ReleaseArgs {
    /// The domain whose vifs to release (names read from xenstore).
    #[arg(long, value_name = "DOMID")]
    domain: Option<u32>,
    /// Interfaces to release, by name (as `dormouse isolate --list` shows them).
    #[arg(long = "vif", value_name = "IFNAME", num_args = 1..)]
    vifs: Vec<String>,
    /// Every isolated vif: the dormouse nftables tables are deleted.
    #[arg(long)]
    all: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The vifs named on the command line, or those of `--domain` from xenstore.
fn target_vifs(domain: Option<u32>, vifs: Vec<String>) -> Result<Vec<String>> {
    use applier::toolstack::Toolstack;
    let Some(domid) = domain else {
        return Ok(vifs);
    };
    let found = applier::toolstack::XlToolstack.vifs(domid)?;
    if found.is_empty() {
        bail!("domain {domid} has no vif under /local/domain/0/backend/vif/{domid} in xenstore: nothing to do");
    }
    Ok(found)
}

fn isolate(args: IsolateArgs) -> Result<()> {
    let mut out = Stdout::lock();
    if args.list {
        let isolated = applier::isolate::list()?;
        if args.json {
            writeln!(out, "{}", serde_json::to_string_pretty(&isolated)?)?;
        } else if isolated.is_empty() {
            writeln!(out, "no vif is isolated")?;
        }
        for v in isolated.iter().filter(|_| !args.json) {
            let allow: Vec<String> = v.allow.iter().map(|a| a.to_string()).collect();
            writeln!(
                out,
                "{}: allows {}; tables {}; {} packets dropped",
                v.vif,
                if allow.is_empty() {
                    "nothing".to_owned()
                } else {
                    allow.join(" ")
                },
                v.families.join("+"),
                v.dropped_packets
            )?;
        }
        return Ok(());
    }
    let allow = args
        .allow
        .iter()
        .map(|a| a.parse::<applier::isolate::Allow>())
        .collect::<Result<Vec<_>, _>>()?;
    let vifs = target_vifs(args.domain, args.vifs)?;
    applier::isolate::isolate(&vifs, &allow)?;
    if args.json {
        writeln!(out, "{}", serde_json::json!({"isolated": vifs, "allow": allow}))?;
    } else {
        let allow: Vec<String> = allow.iter().map(|a| a.to_string()).collect();
        writeln!(
            out,
            "isolated {}; allowed: {}",
            vifs.join(" "),
            if allow.is_empty() {
                "nothing".to_owned()
            } else {
                allow.join(" ")
            }
        )?;
    }
    Ok(())
}

fn release(args: ReleaseArgs) -> Result<()> {
    let report = if args.all {
        applier::isolate::Released {
            released: applier::isolate::release_all()?,
            not_isolated: Vec::new(),
        }
    } else {
        applier::isolate::release(&target_vifs(args.domain, args.vifs)?)?
    };
    let mut out = Stdout::lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        for vif in &report.released {
            writeln!(out, "released {vif}")?;
        }
        for vif in &report.not_isolated {
            writeln!(out, "{vif} was not isolated")?;
        }
    }
    Ok(())
}

// ---- dormouse restore --------------------------------------------------------------------

/// The bundle and the agent channel, as `restore`, `pend` and `deliver` take them.
#[derive(Args)]
struct ChannelArgs {
    /// The bundle made from IMAGE by `emulate --out` (its signature B.minisig beside it).
    #[arg(long, value_name = "B")]
    bundle: PathBuf,
    /// The signer's public key, the one the guests trust (/etc/dormouse/trusted.pub there):
    /// the signature and every member are checked before the domain is touched.
    #[arg(long, value_name = "PUB")]
    key: PathBuf,
    /// dom0's address on the guest's network (default: the one routing picks towards the agent).
    #[arg(long, value_name = "ADDR")]
    dom0_addr: Option<std::net::IpAddr>,
    /// The agent channel's port: the agent listens on it, dom0 connects from it.
    #[arg(long, value_name = "N", default_value_t = applier::transport::DEFAULT_PORT)]
    port: u16,
    /// A program implementing the toolstack operations (see applier::toolstack::CommandToolstack)
    /// instead of `xl` and the xenstore tools.
    #[arg(long, value_name = "PROGRAM", env = "DORMOUSE_TOOLSTACK")]
    toolstack: Option<PathBuf>,
}

impl ChannelArgs {
    fn toolstack(&self) -> Box<dyn applier::toolstack::Toolstack> {
        match &self.toolstack {
            Some(program) => Box::new(applier::toolstack::CommandToolstack {
                program: program.clone(),
            }),
            None => Box::new(applier::toolstack::XlToolstack),
        }
    }

    fn delivery(&self, agent: std::net::IpAddr, timeout: u64) -> Result<applier::restore::DeliveryOptions> {
        let dom0 = match self.dom0_addr {
            Some(addr) => addr,
            None => applier::restore::dom0_address_towards(agent)
                .with_context(|| format!("finding dom0's address towards {agent}; pass --dom0-addr ADDR"))?,
        };
        Ok(applier::restore::DeliveryOptions {
            bundle: self.bundle.clone(),
            key: applier::bundle::sign::PublicKey::read(&self.key)?,
            key_path: self.key.clone(),
            agent,
            dom0,
            port: self.port,
            timeout: std::time::Duration::from_secs(timeout),
        })
    }
}

#[derive(Args)]
struct RestoreArgs {
    #[command(flatten)]
    image: ImageArgs,
    #[command(flatten)]
    channel: ChannelArgs,
    /// The guest's address for the agent channel (default: the first address of the guest's
    /// interfaces in the snapshot, IPv4 first).
    #[arg(long, value_name = "ADDR")]
    agent: Option<std::net::IpAddr>,
    /// Seconds from unpausing the domain until the agent's final report.
    #[arg(long, value_name = "S", default_value_t = 900)]
    timeout: u64,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct PendArgs {
    #[command(flatten)]
    image: ImageArgs,
    #[command(flatten)]
    channel: ChannelArgs,
    /// The guest's address for the agent channel (default: as `restore`), for the `deliver`
    /// command printed at the end.
    #[arg(long, value_name = "ADDR")]
    agent: Option<std::net::IpAddr>,
    /// Print the key written and `deliver`'s arguments as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DeliverArgs {
    /// The restored domain (`xl list` ID).
    #[arg(long, value_name = "DOMID")]
    domain: u32,
    #[command(flatten)]
    channel: ChannelArgs,
    /// The guest's address for the agent channel.
    #[arg(long, value_name = "ADDR")]
    agent: std::net::IpAddr,
    /// Seconds until the agent's final report.
    #[arg(long, value_name = "S", default_value_t = 900)]
    timeout: u64,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

/// The agent's address: given, or the guest's first in the snapshot.
fn agent_of(given: Option<std::net::IpAddr>, snapshot: &GuestSnapshot, image: &ImageArgs) -> Result<std::net::IpAddr> {
    match given {
        Some(addr) => Ok(addr),
        None => applier::restore::agent_address(snapshot).with_context(|| {
            format!(
                "{}: the guest's interfaces have no usable address; pass --agent ADDR",
                image.source()
            )
        }),
    }
}

fn restore_options(
    image: &ImageArgs,
    channel: &ChannelArgs,
    agent: Option<std::net::IpAddr>,
    timeout: u64,
) -> Result<applier::restore::RestoreOptions> {
    let (snapshot, _) = snapshot_and_config(image)?;
    let agent = agent_of(agent, &snapshot, image)?;
    Ok(applier::restore::RestoreOptions {
        image: image.image_file()?.clone(),
        image_identity: applier::bundle::write::guest_identity(&snapshot),
        delivery: channel.delivery(agent, timeout)?,
    })
}

/// How `restore` and `deliver` report what happens, on stderr.
fn print_progress(agent: std::net::IpAddr) -> impl FnMut(applier::restore::Progress) {
    use applier::restore::Progress;
    use applier::transport::Message;
    move |p: Progress| match p {
        Progress::PendingKey { path } => eprintln!("dormouse: marked pending: {path}"),
        Progress::Restored { domid, seconds } => {
            eprintln!("dormouse: restored paused as domain {domid} ({seconds:.2} s)")
        }
        Progress::Isolated { vifs, allow } => eprintln!("dormouse: isolated {} (allowed: {allow})", vifs.join(" ")),
        Progress::Unpaused => eprintln!("dormouse: unpaused"),
        Progress::Connected { attempts, seconds } => {
            eprintln!("dormouse: agent at {agent} reached after {seconds:.2} s ({attempts} attempts)")
        }
        Progress::Agent(Message::Progress { stage, detail, seconds }) => {
            eprintln!("dormouse: agent: {stage} ({detail}) at {seconds:.2} s")
        }
        Progress::Agent(_) => {}
        Progress::Released { vifs } => eprintln!("dormouse: released {}", vifs.join(" ")),
    }
}

/// Prints a delivery's outcome; a stranded domain is an error after its JSON.
fn report_delivery(
    result: Result<applier::restore::Outcome, applier::restore::RestoreError>,
    json: bool,
) -> Result<()> {
    use applier::restore::RestoreError;
    let mut out = Stdout::lock();
    match result {
        Ok(outcome) => {
            for warning in &outcome.warnings {
                eprintln!("dormouse: warning: {warning}");
            }
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&outcome)?)?;
            } else {
                writeln!(
                    out,
                    "domain {} ({}): bundle {} {}; isolation lifted {:.2} s after unpausing (agent apply {:.2} s)",
                    outcome.domid,
                    outcome.domain_uuid,
                    outcome.bundle_id,
                    outcome.report["result"].as_str().unwrap_or("?"),
                    outcome.timings.unpause_to_released_s,
                    outcome.timings.apply_s
                )?;
            }
            Ok(())
        }
        Err(RestoreError::Stranded(stranded)) => {
            if json {
                let json = serde_json::json!({
                    "domid": stranded.domid,
                    "vifs": stranded.vifs,
                    "isolated": true,
                    "pending_key": stranded.pending_key,
                    "bundle_id": stranded.bundle_id,
                    "error": stranded.failure,
                    "report": stranded.report,
                    "deliver_again": stranded.deliver_again,
                });
                writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
            }
            bail!("{stranded}")
        }
        Err(e) => Err(e.into()),
    }
}

fn restore(args: RestoreArgs) -> Result<()> {
    let options = restore_options(&args.image, &args.channel, args.agent, args.timeout)?;
    let toolstack = args.channel.toolstack();
    let mut progress = print_progress(options.delivery.agent);
    report_delivery(
        applier::restore::restore(toolstack.as_ref(), &options, &mut progress),
        args.json,
    )
}

fn pend(args: PendArgs) -> Result<()> {
    // The timeout only matters to `deliver`, which takes its own.
    let options = restore_options(&args.image, &args.channel, args.agent, 0)?;
    let key = applier::restore::pend(args.channel.toolstack().as_ref(), &options)?;
    let deliver_args = options.delivery.deliver_args();
    let mut out = Stdout::lock();
    if args.json {
        let json = serde_json::json!({
            "pending_key": key,
            "domain_uuid": options.image_identity.domain_uuid,
            "deliver_args": deliver_args,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
    } else {
        writeln!(
            out,
            "{key} written: the next restore of this domain brings its vifs up isolated (the vif-dormouse hook)"
        )?;
        writeln!(
            out,
            "once it runs: dormouse deliver --domain DOMID {}",
            deliver_args.join(" ")
        )?;
    }
    Ok(())
}

fn deliver(args: DeliverArgs) -> Result<()> {
    let options = args.channel.delivery(args.agent, args.timeout)?;
    let toolstack = args.channel.toolstack();
    let mut progress = print_progress(options.agent);
    report_delivery(
        applier::restore::deliver(toolstack.as_ref(), args.domain, &options, &mut progress),
        args.json,
    )
}
