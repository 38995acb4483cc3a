//! `dormouse`: the dom0 command line. Argument parsing and wiring only; the work happens in
//! the library crates.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use emulator::disk::GuestDisk;

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
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("DORMOUSE_LOG"))
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dormouse: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Disk { path, json } => disk(&path, json),
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
