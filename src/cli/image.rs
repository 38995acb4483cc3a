//! The memory image every introspecting command takes, and the snapshot made from it.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use introspect::linux::{GuestSnapshot, ProfileFiles};

use super::tempfile_dir;
use crate::progress::Steps;

#[derive(Args)]
pub(crate) struct ImageArgs {
    /// Memory image: `xl save` file, `xl dump-core` file or ELF core (format detected by
    /// content), or `domain:DOMID` for a live Xen domain: pause it first (`xl pause`), since a
    /// running guest changes under the reader (needs the `xen` feature, in dom0).
    pub(crate) image: PathBuf,
    /// A guest disk (PATH, or PATH:N to name the root partition), read-only; repeat for each
    /// disk. Profile files are taken from /boot/System.map-<release> and
    /// /boot/vmlinuz-<release> as the guest's fstab mounts them, when they are real.
    #[arg(long = "disk", value_name = "DISK[:PART]")]
    pub(crate) disks: Vec<String>,
    /// The running kernel's System.map (checked against the kallsyms in memory when present).
    #[arg(long, value_name = "FILE")]
    pub(crate) system_map: Option<PathBuf>,
    /// The running kernel's vmlinuz or vmlinux, for its .BTF types.
    #[arg(long, value_name = "FILE")]
    pub(crate) kernel: Option<PathBuf>,
    /// A Volatility 3 ISF profile (JSON, optionally xz-compressed) for symbols and types.
    #[arg(long, value_name = "FILE")]
    pub(crate) isf: Option<PathBuf>,
    /// The memory image's format: `auto` tells xl save images and ELF cores by their magic;
    /// `raw` is flat physical memory (byte N = guest-physical address N), which has none.
    #[arg(long, value_enum, default_value_t = MemoryFormat::Auto)]
    pub(crate) format: MemoryFormat,
    /// With `--format raw`: the guest's CR3 (hex `0x...` or decimal), the physical address of
    /// its kernel's top-level page table. Without it the image is scanned for that table.
    #[arg(long, value_name = "ADDR", value_parser = parse_address, requires = "format")]
    pub(crate) cr3: Option<u64>,
}

/// `--format`: how to read IMAGE.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum MemoryFormat {
    /// By its magic: `xl save` image, `xl dump-core`, ELF core (QEMU, kdump).
    #[default]
    Auto,
    /// Flat physical memory from address 0 (no vCPU state: give --cr3 or let it be scanned for).
    Raw,
}

fn parse_address(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|e| format!("{text}: expected an address, hex 0x... or decimal ({e})"))
}

pub(crate) fn snapshot(args: &ImageArgs) -> Result<GuestSnapshot> {
    Ok(snapshot_and_config(args)?.0)
}

/// The snapshot, with the reading shown as a step of `steps`.
pub(crate) fn snapshot_shown(args: &ImageArgs, steps: &mut Steps) -> Result<GuestSnapshot> {
    steps.step(format!("reading the guest kernel's state from {}", args.source()));
    let snapshot = snapshot(args)?;
    steps.finish_step();
    Ok(snapshot)
}

impl ImageArgs {
    /// The live domain IMAGE names (`domain:DOMID`), unless a file of that name exists.
    pub(crate) fn domain(&self) -> Option<u32> {
        let domid = self.image.to_str()?.strip_prefix("domain:")?.parse().ok()?;
        (!self.image.exists()).then_some(domid)
    }

    /// What is read, for messages: the image's path or `domain N`.
    pub(crate) fn source(&self) -> String {
        match self.domain() {
            Some(domid) => format!("domain {domid}"),
            None => self.image.display().to_string(),
        }
    }

    pub(crate) fn open(&self) -> Result<Box<dyn introspect::PhysMemory>> {
        if !self.disks.is_empty() {
            crate::privilege::require_root(crate::privilege::DISKS)?;
        }
        match self.domain() {
            Some(domid) => {
                crate::privilege::require_root("it maps a live domain's memory through Xen's privcmd driver")?;
                open_domain(domid)
            }
            None if self.format == MemoryFormat::Raw => {
                let raw = introspect::RawMemory::open(&self.image)?;
                Ok(Box::new(match self.cr3 {
                    Some(cr3) => raw.with_cr3(cr3),
                    None => raw,
                }))
            }
            None if self.cr3.is_some() => {
                bail!(
                    "--cr3 is for raw memory images (--format raw); {} records its own vCPU state",
                    self.source()
                )
            }
            None => Ok(introspect::open_memory(&self.image)?),
        }
    }

    /// The save image itself, for commands that need the file (restore).
    pub(crate) fn image_file(&self) -> Result<&PathBuf> {
        match self.domain() {
            Some(domid) => bail!("domain {domid}: this command needs the save image's path, not a live domain"),
            None => Ok(&self.image),
        }
    }
}

#[cfg(feature = "xen")]
pub(crate) fn open_domain(domid: u32) -> Result<Box<dyn introspect::PhysMemory>> {
    introspect::open_live_domain(domid).with_context(|| {
        format!("attaching to domain {domid} (is this dom0, as root, and is the domain paused? `xl list`)")
    })
}

#[cfg(not(feature = "xen"))]
pub(crate) fn open_domain(domid: u32) -> Result<Box<dyn introspect::PhysMemory>> {
    bail!(
        "domain:{domid}: this dormouse was built without live-domain support; build it with \
         `cargo build --release --features xen` (needs Debian's libxen-dev) and run it in dom0"
    )
}

/// The snapshot, and the domain configuration the image embeds (`xl save`).
pub(crate) fn snapshot_and_config(args: &ImageArgs) -> Result<(GuestSnapshot, Option<introspect::DomainConfig>)> {
    let mem = args.open()?;
    let disks: Vec<_> = args.disks.iter().map(|d| emulator::disk::DiskSpec::parse(d)).collect();
    let snapshot = snapshot_of(args, mem.as_ref(), &disks)?;
    Ok((snapshot, mem.domain_config().cloned()))
}

/// Introspects `mem` with the profile files IMAGE's flags name and those on `disks`.
pub(crate) fn snapshot_of(
    args: &ImageArgs,
    mem: &dyn introspect::PhysMemory,
    disks: &[emulator::disk::DiskSpec],
) -> Result<GuestSnapshot> {
    let files = profile_files(args, mem, disks)?;
    Ok(introspect::linux::snapshot(mem, &files)?)
}

/// The profile files IMAGE's flags name and those found on `disks`.
pub(crate) fn profile_files(
    args: &ImageArgs,
    mem: &dyn introspect::PhysMemory,
    disks: &[emulator::disk::DiskSpec],
) -> Result<ProfileFiles> {
    let mut files = ProfileFiles::default();
    if !disks.is_empty() {
        let release = introspect::linux::kernel_release(mem)
            .with_context(|| format!("{}: no kernel release in memory to pick /boot files by", args.source()))?;
        let scratch = tempfile_dir()?;
        let remarks;
        (files, remarks) = emulator::boot_files::profile_files(disks, &release, scratch.path())?;
        for remark in remarks {
            eprintln!("dormouse: {remark}");
        }
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
    Ok(files)
}

pub(crate) fn read_system_map(path: &std::path::Path) -> Result<(String, introspect::Symbols)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let symbols = introspect::Symbols::from_system_map(&text).with_context(|| path.display().to_string())?;
    Ok((path.display().to_string(), symbols))
}
