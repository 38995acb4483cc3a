//! `dormouse`: the dom0 command line. Argument parsing and wiring only; the work happens in
//! the library crates.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use emulator::disk::GuestDisk;
use introspect::linux::{GuestSnapshot, ProfileFiles};

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
    /// The guest's utsname, like `uname`.
    Uname {
        #[command(flatten)]
        image: ImageArgs,
        /// All fields, as `uname -a` prints them.
        #[arg(short = 'a', long)]
        all: bool,
    },
}

#[derive(Args)]
struct ImageArgs {
    /// Memory image: `xl save` file, `xl dump-core` file or ELF core (format detected by content).
    image: PathBuf,
    /// The guest's disk (PATH or PATH:PARTITION), read-only: profile files are taken from its
    /// /boot/System.map-<release> and /boot/vmlinuz-<release> when they are real.
    #[arg(long, value_name = "DISK[:PART]")]
    disk: Option<String>,
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
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("DORMOUSE_LOG"))
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
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
        Command::Inspect { image, json } => {
            let snapshot = snapshot(&image)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&snapshot)?);
            } else {
                print_summary(&snapshot);
            }
            Ok(())
        }
        Command::Ps { image } => {
            print_ps(&snapshot(&image)?);
            Ok(())
        }
        Command::Proc { image, path } => {
            let tree = shadowfs::ProcTree::new(snapshot(&image)?);
            match tree.render(&path)? {
                shadowfs::Rendered::File(bytes) => {
                    use std::io::Write;
                    std::io::stdout()
                        .write_all(&bytes)
                        .context("writing to standard output")?;
                }
                shadowfs::Rendered::Dir(entries) => {
                    for e in entries {
                        println!("{}", e.name);
                    }
                }
                shadowfs::Rendered::Symlink(target) => println!("{target}"),
            }
            Ok(())
        }
        Command::Shadowfs { image, mountpoint } => {
            let tree = shadowfs::ProcTree::new(snapshot(&image)?);
            shadowfs::serve(tree, &mountpoint)?;
            Ok(())
        }
        Command::Uname { image, all } => {
            let u = snapshot(&image)?.uts;
            if all {
                println!(
                    "{} {} {} {} {} GNU/Linux",
                    u.sysname, u.nodename, u.release, u.version, u.machine
                );
            } else {
                println!("{}", u.sysname);
            }
            Ok(())
        }
    }
}

fn snapshot(args: &ImageArgs) -> Result<GuestSnapshot> {
    let mem = introspect::open_memory(&args.image)?;
    let mut files = ProfileFiles::default();
    if let Some(disk) = &args.disk {
        let release = introspect::linux::kernel_release(mem.as_ref()).with_context(|| {
            format!(
                "{}: no kernel release in memory to pick /boot files by",
                args.image.display()
            )
        })?;
        profile_from_disk(disk, &release, &mut files)?;
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
    Ok(introspect::linux::snapshot(mem.as_ref(), &files)?)
}

fn read_system_map(path: &std::path::Path) -> Result<(String, introspect::Symbols)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let symbols = introspect::Symbols::from_system_map(&text).with_context(|| path.display().to_string())?;
    Ok((path.display().to_string(), symbols))
}

/// Reads the guest's own /boot files for `release` from its disk, read-only. Debian installs a
/// placeholder System.map (the real one is in the -dbg package): such a file is skipped.
fn profile_from_disk(disk: &str, release: &str, files: &mut ProfileFiles) -> Result<()> {
    let (path, partition) = match disk.rsplit_once(':') {
        Some((p, n)) if n.parse::<u32>().is_ok() => (PathBuf::from(p), n.parse::<u32>().ok()),
        _ => (PathBuf::from(disk), None),
    };
    let guest = GuestDisk::open(&path)?;
    let scratch = tempfile_dir()?;
    let number = match partition {
        Some(n) => n,
        None => match guest.find_root(scratch.path())? {
            Some((n, _)) => n,
            None => bail!(
                "{}: no partition holds a root filesystem; name one with {disk}:N",
                path.display()
            ),
        },
    };
    let mount = guest.mount(number, scratch.path())?;
    let root = mount.open_root()?;
    let boot = |name: String| emulator::disk::read_in_root(&root, mount.target(), &name, 512 << 20);
    let label = |name: &str| format!("{name} on {}:{number}", path.display());
    let mut found = false;
    if let Ok(bytes) = boot(format!("boot/System.map-{release}")) {
        found = true;
        let text = String::from_utf8_lossy(&bytes);
        match introspect::Symbols::from_system_map(&text) {
            Ok(symbols) if symbols.len() > 1 => {
                files.system_map = Some((label(&format!("/boot/System.map-{release}")), symbols));
            }
            _ => eprintln!("dormouse: /boot/System.map-{release} on the disk is a placeholder; using memory"),
        }
    }
    if let Ok(bytes) = boot(format!("boot/vmlinuz-{release}")) {
        found = true;
        let name = format!("/boot/vmlinuz-{release}");
        let btf = introspect::KernelImage::from_bytes(PathBuf::from(label(&name)), bytes)
            .map_err(anyhow::Error::from)
            .and_then(|image| image.btf().map_err(anyhow::Error::from));
        match btf {
            Ok(btf) => files.btf = Some((format!("BTF of {}", label(&name)), btf)),
            Err(e) => eprintln!("dormouse: {name} on the disk gives no BTF ({e:#}); using memory"),
        }
    }
    if !found {
        eprintln!(
            "dormouse: {}:{number} has neither /boot/System.map-{release} nor /boot/vmlinuz-{release}; using memory",
            path.display()
        );
    }
    Ok(())
}

fn print_summary(s: &GuestSnapshot) {
    println!(
        "image:      {} ({}, {}, {} pages)",
        s.source.path, s.source.format, s.source.guest_kind, s.source.pages
    );
    if let Some(d) = &s.domain {
        println!(
            "domain:     {} uuid={} type={} memory={} KiB vcpus={}",
            d.name.as_deref().unwrap_or("?"),
            d.uuid.as_deref().unwrap_or("?"),
            d.domain_type.as_deref().unwrap_or("?"),
            d.memory_kib.map_or("?".into(), |m| m.to_string()),
            d.vcpus.map_or("?".into(), |v| v.to_string())
        );
    }
    println!("kernel:     {} {}", s.kernel.release, s.kernel.version);
    println!("cmdline:    {}", s.kernel.cmdline.as_deref().unwrap_or("?"));
    println!(
        "kaslr:      virtual offset {:#x}, physical offset {}, page_offset_base {}, page tables at {:#x}",
        s.kernel.kaslr_offset,
        s.kernel.kaslr_phys_offset.map_or("?".into(), |o| format!("{o:#x}")),
        s.kernel.page_offset_base.map_or("?".into(), |b| format!("{b:#x}")),
        s.kernel.page_table_root
    );
    println!("symbols:    {}", s.kernel.profile.symbols);
    println!("types:      {}", s.kernel.profile.types);
    println!("hostname:   {}", s.uts.nodename);
    println!("boot_id:    {}", s.boot_id.as_deref().unwrap_or("(never generated)"));
    let user = s.tasks.iter().filter(|t| !t.kernel_thread).count();
    println!(
        "tasks:      {} ({} user, {} kernel threads)",
        s.tasks.len(),
        user,
        s.tasks.len() - user
    );
    println!(
        "filesystems: {}",
        s.filesystems
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "modules:    {}",
        s.modules.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(" ")
    );
    for m in &s.mounts {
        println!(
            "mount:      {} on {} type {} ({})",
            m.device, m.mountpoint, m.fstype, m.options
        );
    }
    for i in &s.interfaces {
        println!(
            "interface:  {} {} {} {}",
            i.name,
            i.mac.as_deref().unwrap_or("-"),
            i.ipv4.join(","),
            i.ipv6.join(",")
        );
    }
    println!("sysctls:    {} values", s.sysctl.len());
    for w in &s.warnings {
        println!("warning:    {w}");
    }
}

fn print_ps(s: &GuestSnapshot) {
    println!("{:>7} {:>7} {:>6} {:>6} STAT COMMAND", "PID", "PPID", "UID", "GID");
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
        println!(
            "{:>7} {:>7} {:>6} {:>6} {:<4} {command}",
            t.pid, t.ppid, t.uid, t.gid, t.state
        );
    }
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
    if json {
        let out = serde_json::json!({
            "disk": disk,
            "root": root.as_ref().map(|(n, os)| serde_json::json!({"partition": n, "os_release": os})),
            "fstab": fstab,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{}: {} bytes, partition table: {:?}",
        disk.path.display(),
        disk.size,
        disk.table
    );
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
        println!(
            "  {:>2}  start {:>12}  size {:>12}  type {:<38} {fs}",
            p.number, p.start, p.size, p.type_id
        );
    }
    match (&root, &fstab) {
        (Some((number, os)), Some(fstab)) => {
            println!(
                "root filesystem: partition {number} ({})",
                os.pretty_name.as_deref().unwrap_or("unknown OS")
            );
            println!("its /etc/fstab:");
            for line in fstab
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            {
                println!("  {line}");
            }
        }
        _ => println!("no partition holds a root filesystem (one with /etc/fstab and /etc/os-release)"),
    }
    Ok(())
}

fn tempfile_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("dormouse-disk-")
        .tempdir()
        .context("creating a scratch mount point under $TMPDIR")
}
