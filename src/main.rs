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
mod exit;
#[cfg(test)]
mod json_schemas;
mod output;
mod privilege;
mod progress;

#[derive(Parser)]
#[command(
    name = "dormouse",
    version,
    about = "Security-patch suspended Xen domUs offline, from dom0"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More log on stderr: -v what each step does and takes, -vv debugging detail (RUST_LOG,
    /// e.g. `RUST_LOG=emulator=debug`, overrides).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// No progress and no step lines on stderr, only warnings and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
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
        /// Print JSON (`dormouse.ps/1`, docs/schemas/ps.schema.json).
        #[arg(long)]
        json: bool,
    },
    /// One file of the guest's /proc as the guest kernel would print it (e.g. /proc/filesystems,
    /// /proc/sys/kernel/osrelease, /proc/1/stat); a directory lists its entries.
    Proc {
        #[command(flatten)]
        image: ImageArgs,
        /// Path in the guest's /proc, with or without the leading /proc.
        path: String,
        /// Print JSON (`dormouse.proc/1`: a file's text, or base64 when not UTF-8; a
        /// directory's entries; a symlink's target).
        #[arg(long)]
        json: bool,
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
        /// Print the paths and key id as JSON.
        #[arg(long)]
        json: bool,
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
    /// Re-run an emulation from its record on the same inputs and say whether it did the same
    /// (execs in order, upper tree, removals). Exit status 3 when it did not.
    Replay(Box<cli::research::ReplayArgs>),
    /// Two emulation records side by side: inputs, phases, scripts, files.
    Diff(cli::research::DiffArgs),
    /// Figures (SVG, PNG) and their CSV numbers from emulation records.
    Report(cli::research::ReportArgs),
    /// The guest's utsname, like `uname`.
    Uname {
        #[command(flatten)]
        image: ImageArgs,
        /// All fields, as `uname -a` prints them.
        #[arg(short = 'a', long)]
        all: bool,
        /// Print every utsname field as JSON.
        #[arg(long)]
        json: bool,
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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // As clap's own `exit()`, with the status from exit.rs.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { exit::SUCCESS });
        }
    };
    init_log(cli.verbose);
    progress::set_quiet(cli.quiet);
    if let Command::Emulate(args) = cli.command {
        return match cli::emulate::emulate(*args) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("dormouse: {}", error_chain(&e));
                ExitCode::from(exit::EMULATE_FAILED)
            }
        };
    }
    if let Command::Replay(args) = cli.command {
        return match cli::research::replay(*args) {
            Ok(code) => ExitCode::from(code),
            Err(e) if output::reader_gone(&e) => ExitCode::from(exit::SUCCESS),
            Err(e) => {
                eprintln!("dormouse: {}", error_chain(&e));
                ExitCode::from(exit::FAILURE)
            }
        };
    }
    match run(cli) {
        Ok(()) => ExitCode::from(exit::SUCCESS),
        // Quietly and successfully, as ripgrep: the reader (`| head`) has all it wanted.
        Err(e) if output::reader_gone(&e) => ExitCode::from(exit::SUCCESS),
        Err(e) => {
            eprintln!("dormouse: {}", error_chain(&e));
            ExitCode::from(exit::FAILURE)
        }
    }
}

/// Logs on stderr, by `-v`, unless RUST_LOG says otherwise.
fn init_log(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(verbose > 1)
        .without_time()
        .init();
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
        Command::Keygen { out, json } => cli::bundle::keygen(&out, json),
        Command::Bundle(command) => cli::bundle::bundle(command),
        Command::Inspect { image, json } => cli::inspect::inspect(&image, json),
        Command::Isf(args) => cli::isf::isf(&args),
        Command::Ps { image, json } => cli::inspect::ps(&image, json),
        Command::Proc { image, path, json } => cli::inspect::proc(&image, &path, json),
        Command::Shadowfs { image, mountpoint } => cli::inspect::shadowfs(&image, &mountpoint),
        Command::Uname { image, all, json } => cli::inspect::uname(&image, all, json),
        Command::Emulate(_) | Command::Replay(_) => unreachable!("dispatched in main"),
        Command::Diff(args) => cli::research::diff(&args),
        Command::Report(args) => cli::research::report(&args),
        Command::Cleanup { state_dir, json } => cli::emulate::cleanup(&state_dir, json),
        Command::Check(args) => cli::check::check(args),
        Command::Isolate(args) => cli::isolate::isolate(args),
        Command::Release(args) => cli::isolate::release(args),
        Command::Restore(args) => cli::restore::restore(args),
        Command::Pend(args) => cli::restore::pend(args),
        Command::Deliver(args) => cli::restore::deliver(args),
    }
}
