//! `dormouse emulate` from the inputs an operator has: the guest's disks (from `--disk` or the
//! save image's xl config) and its snapshot (from the memory image, or synthesized from the
//! disk for a stopped VM). Attaches the disks read-only, assembles the guest's filesystems
//! from its fstab, and runs the command in the sandbox over one overlay per filesystem.

use std::path::Path;

use introspect::linux::GuestSnapshot;
use serde::Serialize;

use crate::disk::{DiskError, DiskSpec, GuestDisk};
use crate::guest_tree::{AttachedDisk, GuestFilesystem, GuestTree, GuestTreeError, RootChoice, SkippedEntry};
use crate::run::CaptureContext;
use crate::run::{RunDir, RunError, RunOptions, RunReport};
use crate::sandbox::{Layer, SandboxError};
use crate::synth::SynthError;

#[derive(Debug, thiserror::Error)]
pub enum EmulateError {
    #[error("no guest disk: pass --disk PATH (the guest's disk image or block device)")]
    NoDisks,
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error(transparent)]
    Tree(#[from] GuestTreeError),
    #[error("synthesizing the guest's /proc for a stopped VM: {0}")]
    Synth(#[from] SynthError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Opens `disks` read-only (qcow2 exported under `export_dir`) and says which volume is the
/// root: the last `PATH:N` given, or found by content.
pub(crate) fn attach(disks: &[DiskSpec], export_dir: &Path) -> Result<(Vec<AttachedDisk>, RootChoice), DiskError> {
    let mut attached = Vec::new();
    let mut root = RootChoice::Auto;
    for (index, arg) in disks.iter().enumerate() {
        let disk = GuestDisk::open_as(&arg.path, arg.format, export_dir)?;
        if let Some(partition) = arg.root_partition {
            root = RootChoice::Volume { disk: index, partition };
        }
        attached.push(AttachedDisk {
            disk,
            vdev: arg.vdev.clone(),
        });
    }
    Ok((attached, root))
}

/// Where the guest's /proc comes from.
#[derive(Debug, Clone)]
pub enum SnapshotSource {
    /// Introspected from the suspended guest's memory.
    Image(Box<GuestSnapshot>),
    /// A stopped VM: synthesized from its disk; `release` overrides the kernel found in /boot
    /// (needed when the kernel lives in dom0, as with Xen PV direct kernel boot).
    Synthesize { release: Option<String> },
}

/// Everything `emulate` did besides the run itself.
#[derive(Debug, Clone, Serialize)]
pub struct EmulateReport {
    /// `image` or `synthesized` (a stopped VM: no processes, kernel facts from /boot).
    pub snapshot: &'static str,
    pub filesystems: Vec<GuestFilesystem>,
    pub skipped_fstab_entries: Vec<SkippedEntry>,
    pub notes: Vec<String>,
    #[serde(flatten)]
    pub run: RunReport,
}

/// Attaches `disks`, assembles the guest tree, and runs `options.command` over it with the
/// snapshot as the guest's /proc. The process must already be in a private mount namespace.
pub fn emulate(
    disks: &[DiskSpec],
    snapshot: SnapshotSource,
    options: RunOptions,
    state_dir: &Path,
) -> Result<EmulateReport, EmulateError> {
    emulate_with(disks, snapshot, options, state_dir, |_| ()).map(|(report, ())| report)
}

/// [`emulate`], with `capture` run after the command while the upper layers and the guest's
/// read-only mounts still exist (see [`crate::run::run`]).
pub fn emulate_with<T>(
    disks: &[DiskSpec],
    snapshot: SnapshotSource,
    options: RunOptions,
    state_dir: &Path,
    capture: impl FnOnce(&CaptureContext) -> T,
) -> Result<(EmulateReport, T), EmulateError> {
    if disks.is_empty() {
        return Err(EmulateError::NoDisks);
    }
    let started = std::time::Instant::now();
    let mut run_dir = RunDir::create(state_dir, &options.command)?;
    let export_dir = run_dir.subdir("export")?;
    let (attached, root) = attach(disks, &export_dir)?;
    let tree = GuestTree::mount(&attached, root, &run_dir.path.join("lower"))?;
    for f in &tree.filesystems {
        tracing::info!("guest filesystem {} ({}) mounted read-only", f.mount_point, f.fstype);
    }
    let (snapshot, source) = match snapshot {
        SnapshotSource::Image(s) => (*s, "image"),
        SnapshotSource::Synthesize { release } => {
            let fstypes: Vec<String> = tree.filesystems.iter().map(|f| f.fstype.clone()).collect();
            let snapshot = crate::synth::synthesize(&tree.root().lower, release.as_deref(), &fstypes)?;
            (snapshot, "synthesized")
        }
    };
    let layers: Vec<Layer> = tree
        .filesystems
        .iter()
        .map(|f| Layer {
            guest_path: f.mount_point.clone(),
            lower: f.lower.clone(),
        })
        .collect();
    let attach = crate::run::Phase {
        name: "attach".into(),
        millis: started.elapsed().as_secs_f64() * 1000.0,
    };
    let (mut run, captured) = crate::run::run(&layers, snapshot, options, &mut run_dir, capture)?;
    run.phases.insert(0, attach);
    let report = EmulateReport {
        snapshot: source,
        filesystems: tree.filesystems.clone(),
        skipped_fstab_entries: tree.skipped.clone(),
        notes: tree.notes.clone(),
        run,
    };
    drop(tree);
    drop(attached);
    Ok((report, captured))
}
