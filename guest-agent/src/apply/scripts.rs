//! Steps 4 and 6: the maintainer scripts of one phase run in order, each placed at its recorded
//! path first when what is there differs, and what the placement replaced put back after.

use std::io::{self, Read};
use std::path::Path;
use std::time::Instant;

use anyhow::{Result, anyhow, bail};
use bundle::manifest::{Manifest, Phase, Script};

use super::{Run, ScriptBytes, ScriptReport, stop_hook, temp_name};
use crate::fs::{Kind, Meta, Root};
use crate::journal::{Journal, JournalDir, Placement, ScriptState, Step, now_unix};
use crate::script;

impl Run {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn scripts(
        &mut self,
        root: &Root,
        chroot: Option<&Path>,
        manifest: &Manifest,
        bytes: &ScriptBytes,
        dir: &JournalDir,
        journal: &mut Journal,
        phase: Phase,
    ) -> Result<u64> {
        let step = if phase == Phase::Pre {
            Step::PreScripts
        } else {
            Step::PostScripts
        };
        undo_placement(root, journal)?;
        let mut ran = 0;
        for (index, script) in manifest.scripts.iter().enumerate() {
            if script.phase != phase {
                continue;
            }
            let entry = journal
                .scripts
                .iter()
                .position(|e| e.seq == script.seq)
                .ok_or_else(|| anyhow!("the journal has no state for script {}", script.file))?;
            if journal.scripts[entry].state == ScriptState::Done {
                continue;
            }
            let data = bytes
                .get(&script.seq)
                .ok_or_else(|| anyhow!("{}: not read from the bundle", script.file))?;
            let start = Instant::now();
            journal.placement = plan_placement(root, script, data)?;
            journal.scripts[entry].state = ScriptState::Running;
            // A placement moves a guest file aside: its plan must survive anything that can
            // interrupt it. Otherwise the state may be lost to a power cut, which reruns the
            // script, as a crash while it runs does.
            let durable = journal.placement.is_some();
            self.save(dir, journal, durable)?;
            if let Some(placement) = &journal.placement {
                place_script(root, placement, data)?;
            }
            ran += 1;
            stop_hook(step, Some(ran as usize));
            let log = dir.path(&format!("scripts/{}.log", script.seq));
            let outcome = script::run(script, chroot, &log)?;
            undo_placement(root, journal)?;
            journal.scripts[entry].exit_code = Some(outcome.exit_code);
            journal.scripts[entry].state = if outcome.exit_code == 0 {
                ScriptState::Done
            } else {
                ScriptState::Failed
            };
            self.save(dir, journal, false)?;
            let handling = start.elapsed().as_secs_f64() - outcome.seconds;
            self.report.timings.scripts += outcome.seconds;
            self.report.timings.script_handling += handling;
            self.report.scripts.push(ScriptReport {
                seq: script.seq,
                phase,
                package: script.package.clone(),
                script_type: script.script_type.name(),
                triggered: script.triggered,
                argv: script.argv.clone(),
                exit_code: outcome.exit_code,
                seconds: outcome.seconds,
                output: outcome.output,
            });
            if outcome.exit_code != 0 {
                bail!(
                    "script {} of {} ({} of {}, {}) exited with {}; its output is in {}/scripts/{}.log",
                    index + 1,
                    manifest.scripts.len(),
                    script.script_type.name(),
                    script.package,
                    script.argv.join(" "),
                    outcome.exit_code,
                    dir.display,
                    script.seq
                );
            }
        }
        Ok(ran)
    }
}

/// Where a recorded script must be written before it runs, when what is at its recorded path
/// differs (dpkg's `tmp.ci/` scripts are gone, `info/` ones may be another version's). Plans
/// only: the journal records the plan before [`place_script`] acts on it.
fn plan_placement(root: &Root, script: &Script, bytes: &[u8]) -> Result<Option<Placement>> {
    // A bare rpm `-p <program>` record names a program of the guest and carries no bytes.
    if script.size == 0 {
        return Ok(None);
    }
    bundle::read::check_guest_path(&script.path).map_err(|e| anyhow!("{}: {e}", script.file))?;
    let mut created_dirs = Vec::new();
    let mut parent = String::new();
    let components: Vec<&str> = script.path.trim_start_matches('/').split('/').collect();
    for component in &components[..components.len().saturating_sub(1)] {
        parent = format!("{parent}/{component}");
        match root.lstat(&parent)? {
            Some(m) if m.kind == Kind::Dir => {}
            Some(m) => bail!("{parent}: a {:?} where {} needs a directory", m.kind, script.path),
            None => created_dirs.push(parent.clone()),
        }
    }
    let saved_as = match root.lstat(&script.path)? {
        Some(m) if m.kind == Kind::File && m.size == bytes.len() as u64 => {
            let mut current = Vec::new();
            root.at(&script.path)?
                .open(libc::O_RDONLY, 0)?
                .take(m.size)
                .read_to_end(&mut current)?;
            if current == bytes {
                return Ok(None);
            }
            Some(format!("{}.saved", temp_name(&script.path)))
        }
        Some(m) if m.kind == Kind::Dir => bail!("{}: a directory where the script must be written", script.path),
        Some(_) => Some(format!("{}.saved", temp_name(&script.path))),
        None => None,
    };
    Ok(Some(Placement {
        path: script.path.clone(),
        saved_as,
        created_dirs,
    }))
}

/// Carries out a placement: parents created, what was there moved aside, the script written.
fn place_script(root: &Root, placement: &Placement, bytes: &[u8]) -> Result<()> {
    for dir in &placement.created_dirs {
        let at = root.at(dir)?;
        if at.meta()?.is_none() {
            at.create_special(&dir_meta(0o755))?;
        }
    }
    let at = root.at(&placement.path)?;
    if let Some(saved) = &placement.saved_as {
        at.rename_to(&at.sibling(saved)?)?;
    }
    let temp = at.sibling(&temp_name(&placement.path))?;
    temp.remove_tree()?;
    let mut data = bytes;
    // Not flushed: after a power cut, the journaled plan puts back what was there.
    temp.create_file(
        &mut data,
        &Meta {
            kind: Kind::File,
            ..dir_meta(0o755)
        },
    )?;
    temp.rename_to(&at)?;
    Ok(())
}

fn dir_meta(mode: u32) -> Meta {
    Meta {
        kind: Kind::Dir,
        mode,
        uid: 0,
        gid: 0,
        mtime: now_unix() as i64,
        mtime_nsec: 0,
        xattrs: Vec::new(),
        link: None,
        rdev: None,
        size: 0,
    }
}

/// Puts back what a script placement replaced (also after a crash mid-script).
pub(crate) fn undo_placement(root: &Root, journal: &mut Journal) -> Result<()> {
    let Some(placement) = journal.placement.take() else {
        return Ok(());
    };
    if let Some(at) = root.at_if_parent(&placement.path)? {
        match &placement.saved_as {
            Some(saved) => {
                let saved = at.sibling(saved)?;
                // Missing: the crash came before it was moved aside, so the original is in place.
                if saved.meta()?.is_some() {
                    saved.rename_to(&at)?;
                }
            }
            // Nothing was there: what is there now is the script, if it got written.
            None => {
                at.unlink()?;
            }
        }
        at.sibling(&temp_name(&placement.path))?.unlink()?;
    }
    for dir in placement.created_dirs.iter().rev() {
        if let Some(at) = root.at_if_parent(dir)? {
            if let Err(e) = at.rmdir() {
                if !matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty) {
                    return Err(e.into());
                }
            }
        }
    }
    Ok(())
}
