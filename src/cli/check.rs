//! `dormouse check`: which packages of a dormant VM are outdated.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use crate::output::Stdout;
use crate::progress::Steps;

#[derive(Args)]
pub(crate) struct CheckArgs {
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
    /// Output: `text`; `json`, the report (one object per VM, in an array with --batch);
    /// `cyclonedx`, a CycloneDX 1.5 SBOM of the VM (its packages with package URLs, the
    /// running kernel given IMAGE, updates and the processes they concern as properties).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Same as --format json.
    #[arg(long, conflicts_with = "format")]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
    Cyclonedx,
}

pub(crate) fn check(args: CheckArgs) -> Result<()> {
    let format = if args.json { Format::Json } else { args.format };
    if format == Format::Cyclonedx && args.batch.is_some() {
        bail!("--format cyclonedx describes one VM: check the VMs of --batch one at a time (--disk or --root)");
    }
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
    if targets
        .iter()
        .any(|t| matches!(t.tree, checker::tree::TreeSource::Disk { .. }))
    {
        crate::privilege::require_root(crate::privilege::DISKS)?;
    }
    let source = match (args.refresh, args.repo_metadata) {
        (true, _) => checker::IndexSource::Refresh,
        (false, Some(dir)) => checker::IndexSource::Dir(dir),
        (false, None) => checker::IndexSource::GuestLists,
    };
    let db = args.db.unwrap_or_else(|| args.state_dir.join("check.sqlite"));
    let mut steps = Steps::new(format != Format::Text);
    steps.counted("checking", targets.len() as u64);
    let outcomes = checker::run_checks_with(
        &targets,
        source,
        Some(&db),
        args.since,
        format == Format::Cyclonedx,
        &mut |vm| steps.advance(vm),
    )?;
    steps.finish_step();
    let mut out = Stdout::lock();
    if format == Format::Cyclonedx {
        if let (Some(report), Some(inventory)) = (&outcomes[0].report, &outcomes[0].inventory) {
            let meta = checker::sbom::BomMeta::new("dormouse", env!("CARGO_PKG_VERSION"));
            let bom = checker::sbom::cyclonedx(report, inventory, &meta);
            writeln!(out, "{}", serde_json::to_string_pretty(&bom)?)?;
        }
    } else if format == Format::Json {
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
