//! Step 3: what every touched path is now, journaled, with a copy of every regular file's data.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::PathBuf;

use anyhow::Result;
use bundle::manifest::{EntryType, Manifest};

use super::{kept, stop_hook};
use crate::fs::{At, Kind, Root};
use crate::journal::{Action, Change, JournalDir, Step};

/// Step 3: what every touched path is now, with a copy of every regular file's data.
pub(super) fn backup(root: &Root, manifest: &Manifest, dir: &JournalDir) -> Result<u64> {
    let mut changes: Vec<Change> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let subtree = |at: &At, changes: &mut Vec<Change>, seen: &mut HashSet<String>| -> Result<()> {
        let mut tree = Vec::new();
        at.walk(&mut tree)?;
        for (path, meta) in tree {
            if seen.insert(path.clone()) {
                changes.push(Change {
                    path,
                    action: Action::Removed,
                    before: Some(meta),
                    backup: None,
                });
            }
        }
        Ok(())
    };
    for entry in &manifest.files {
        let at = root.at_if_parent(&entry.path)?;
        let before = match &at {
            Some(at) => at.meta()?,
            None => None,
        };
        seen.insert(entry.path.clone());
        let is_dir = entry.entry_type == EntryType::Dir;
        let action = match &before {
            None => Action::Added,
            Some(m) if m.kind == Kind::Dir && is_dir => Action::Updated,
            Some(_) => Action::Replaced,
        };
        let replaced_dir = before.as_ref().is_some_and(|m| m.kind == Kind::Dir) && !is_dir;
        changes.push(Change {
            path: entry.path.clone(),
            action,
            before,
            backup: None,
        });
        if let (true, Some(at)) = (replaced_dir, &at) {
            for name in at.list()? {
                subtree(&at.child(&name)?, &mut changes, &mut seen)?;
            }
        }
    }
    for path in &manifest.removals {
        if let Some(at) = root.at_if_parent(path)? {
            subtree(&at, &mut changes, &mut seen)?;
        }
    }
    for opaque in &manifest.opaque_dirs {
        let Some(at) = root.at_if_parent(opaque)? else { continue };
        if !at.meta()?.is_some_and(|m| m.kind == Kind::Dir) {
            continue;
        }
        for name in at.list()? {
            if !kept(manifest, opaque, &name.to_string_lossy()) {
                subtree(&at.child(&name)?, &mut changes, &mut seen)?;
            }
        }
    }
    let backups = dir.backup_dir()?;
    let mut count = 0;
    for (n, change) in changes.iter_mut().enumerate() {
        if !change.before.as_ref().is_some_and(|m| m.kind == Kind::File) {
            continue;
        }
        let at = root.at(&change.path)?;
        let mut source = at.open(libc::O_RDONLY, 0)?;
        let name = n.to_string();
        let target = PathBuf::from(format!(
            "/proc/self/fd/{}/{name}",
            std::os::fd::AsRawFd::as_raw_fd(&backups)
        ));
        let mut out = File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&target)
            .map_err(crate::fs::context("creating the backup of", &change.path))?;
        // copy_file_range underneath: shared extents where the filesystem can (btrfs, XFS).
        // Flushed all at once when the step ends, before anything is replaced.
        io::copy(&mut source, &mut out).map_err(crate::fs::context("backing up", &change.path))?;
        change.backup = Some(name);
        count += 1;
        stop_hook(Step::Backup, Some(count));
    }
    dir.save_changes(&changes)?;
    Ok(changes.len() as u64)
}
