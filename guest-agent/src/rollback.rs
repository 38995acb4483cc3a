//! `rollback` and `status`: undoing an apply from its journal, and listing journals.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{Result, anyhow};
use serde::Serialize;

use crate::apply::{temp_name, undo_placement};
use crate::fs::{Kind, Meta, Root};
use crate::journal::{Action, Change, JournalDir, State, Step};

#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    pub bundle_id: String,
    /// `rolled-back` or `already-rolled-back`.
    pub result: &'static str,
    /// Paths removed (added by the bundle) and restored.
    pub removed: u64,
    pub restored: u64,
    pub seconds: f64,
}

/// Restores every path the bundle touched to what it was before the apply, and removes what
/// it added (with anything scripts put under it). Idempotent: a rollback interrupted at any
/// point is finished by running it again.
pub fn rollback(root_path: &Path, id: &str) -> Result<RollbackReport> {
    let start = std::time::Instant::now();
    let root = Root::open(root_path)?;
    let dir = JournalDir::open(&root, id, false)?.ok_or_else(|| {
        anyhow!(
            "no journal of bundle {id} under {}/var/lib/dormouse",
            root_path.display()
        )
    })?;
    let mut journal = dir.load()?;
    let mut report = RollbackReport {
        bundle_id: id.to_owned(),
        result: "rolled-back",
        removed: 0,
        restored: 0,
        seconds: 0.0,
    };
    if journal.state == State::RolledBack {
        report.result = "already-rolled-back";
        return Ok(report);
    }
    // Before the backup step completed, nothing outside the journal was changed.
    let changes = match journal.step {
        Some(step) if step >= Step::Backup => dir.load_changes()?,
        _ => Vec::new(),
    };
    // Space first: on a full filesystem, the journal cannot be written before the staged
    // temporary files are gone.
    for change in &changes {
        if let Some(at) = root.at_if_parent(&change.path)? {
            at.sibling(&temp_name(&change.path))?.unlink()?;
        }
    }
    undo_placement(&root, &mut journal)?;
    // On disk before the first restore: `apply` must never take a half-restored tree for an
    // applied one.
    journal.state = State::RollingBack;
    dir.commit(&mut journal)?;
    restore(&root, &changes, &dir.backup_dir()?, &mut report)?;
    // The restored files were not synced one by one.
    root.syncfs()?;
    journal.state = State::RolledBack;
    dir.commit(&mut journal)?;
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

fn restore(root: &Root, changes: &[Change], backups: &File, report: &mut RollbackReport) -> Result<()> {
    for change in changes.iter().rev().filter(|c| c.action == Action::Added) {
        if let Some(at) = root.at_if_parent(&change.path)? {
            if at.remove_tree()? {
                report.removed += 1;
            }
        }
    }
    // Parents before children: the changes are in that order.
    for change in changes {
        let Some(before) = &change.before else { continue };
        let at = root.at(&change.path)?;
        let now = at.meta()?;
        if before.kind == Kind::Dir {
            if !now.as_ref().is_some_and(|m| m.kind == Kind::Dir) {
                at.remove_tree()?;
                at.create_special(before)?;
            } else {
                at.set_meta(before, false)?;
            }
        } else {
            let temp = at.sibling(&temp_name(&change.path))?;
            temp.remove_tree()?;
            if before.kind == Kind::File {
                let name = change
                    .backup
                    .as_deref()
                    .ok_or_else(|| anyhow!("{}: no backup of its data in the journal", change.path))?;
                let path = format!("/proc/self/fd/{}/{name}", backups.as_raw_fd());
                let mut data = File::open(&path).map_err(crate::fs::context("opening the backup of", &change.path))?;
                temp.create_file(&mut data, before)?;
            } else {
                temp.create_special(before)?;
            }
            if now.is_some_and(|m| m.kind == Kind::Dir) {
                at.remove_tree()?;
            }
            temp.rename_to(&at)?;
        }
        report.restored += 1;
    }
    // Directory times last, children first: every restore above moved them.
    for change in changes.iter().rev() {
        if let Some(before @ Meta { kind: Kind::Dir, .. }) = &change.before {
            root.at(&change.path)?.set_mtime(before)?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusEntry {
    pub bundle_id: String,
    /// `applied`, `partial` (interrupted or failed: `apply` resumes, `rollback` undoes),
    /// `rolling-back` or `rolled-back`.
    pub status: &'static str,
    pub step: Option<&'static str>,
    pub bundle: String,
    pub started_unix: u64,
    pub updated_unix: u64,
    pub error: Option<String>,
    pub forced: Vec<String>,
}

/// Every bundle with a journal in the target root.
pub fn status(root_path: &Path) -> Result<Vec<StatusEntry>> {
    let root = Root::open(root_path)?;
    let mut out = Vec::new();
    for id in JournalDir::list(&root)? {
        let Some(dir) = JournalDir::open(&root, &id, false)? else {
            continue;
        };
        let journal = dir.load()?;
        out.push(StatusEntry {
            bundle_id: journal.bundle_id,
            status: match journal.state {
                State::Applied => "applied",
                State::Applying | State::Failed => "partial",
                State::RollingBack => "rolling-back",
                State::RolledBack => "rolled-back",
            },
            step: journal.step.map(Step::name),
            bundle: journal.bundle_path,
            started_unix: journal.started_unix,
            updated_unix: journal.updated_unix,
            error: journal.error,
            forced: journal.forced,
        });
    }
    out.sort_by_key(|e| (e.started_unix, e.bundle_id.clone()));
    Ok(out)
}
