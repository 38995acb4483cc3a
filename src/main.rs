//! `dormouse`: the dom0 command line. The commands and what they take; each command's work is
//! in its file under `cli/` (its arguments, a call into a library crate, the printing).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};
use cli::bundle::BundleCommand;
use cli::check::CheckArgs;
use cli::emulate::EmulateArgs;
use cli::image::ImageArgs;
use cli::isolate::{IsolateArgs, ReleaseArgs};
use cli::restore::{DeliverArgs, PendArgs, RestoreArgs};

mod cli;
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
    /// A Volatility 3 symbol table (ISF) of the guest kernel, from its RAM alone (kallsyms and
    /// .BTF), with no debug package: `vol -s DIR -f DUMP linux.pslist` with it in DIR/linux/.
    Isf(cli::isf::IsfArgs),
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

fn main() -> ExitCode {
    // The sandbox init is this binary re-executed; it must do nothing else first.
    let mut args = std::env::args_os();
    if args.nth(1).as_deref() == Some(std::ffi::OsStr::new(emulator::sandbox::INIT_SUBCOMMAND)) {
        let spec = args.next().map(PathBuf::from).unwrap_or_default();
        emulator::sandbox::init_main(&spec);
    }
    // Not a command of the list: neither --help nor the completions offer it (scripts/package).
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(cli::docs::SUBCOMMAND)) {
        let args = cli::docs::DocsArgs::parse_from(std::env::args_os().skip(1));
        return match cli::docs::generate(Cli::command(), &args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dormouse: {}", error_chain(&e));
                ExitCode::FAILURE
            }
        };
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("DORMOUSE_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Command::Emulate(args) = cli.command {
        return match cli::emulate::emulate(*args) {
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
        Command::Disk { path, json } => cli::disk::disk(&path, json),
        Command::Keygen { out } => cli::bundle::keygen(&out),
        Command::Bundle(command) => cli::bundle::bundle(command),
        Command::Inspect { image, json } => cli::inspect::inspect(&image, json),
        Command::Isf(args) => cli::isf::isf(&args),
        Command::Ps { image } => cli::inspect::ps(&image),
        Command::Proc { image, path } => cli::inspect::proc(&image, &path),
        Command::Shadowfs { image, mountpoint } => cli::inspect::shadowfs(&image, &mountpoint),
        Command::Uname { image, all } => cli::inspect::uname(&image, all),
        Command::Emulate(_) => unreachable!("dispatched in main"),
        Command::Cleanup { state_dir, json } => cli::emulate::cleanup(&state_dir, json),
        Command::Check(args) => cli::check::check(args),
        Command::Isolate(args) => cli::isolate::isolate(args),
        Command::Release(args) => cli::isolate::release(args),
        Command::Restore(args) => cli::restore::restore(args),
        Command::Pend(args) => cli::restore::pend(args),
        Command::Deliver(args) => cli::restore::deliver(args),
    }
}
