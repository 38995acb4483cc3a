//! `apply` and `rollback`: the steps of [`Step`], each journaled, each idempotent, so that a
//! rerun after a crash at any point finishes the same way an uninterrupted run does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, anyhow};
use bundle::manifest::{Manifest, Phase};
use bundle::read::Bundle;
use bundle::tar::Header;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::fs::{Root, hex};
use crate::journal::{Journal, JournalDir, SCHEMA, ScriptEntry, ScriptState, State, Step, now_unix};

// One file per step; this one holds the run that sequences and journals them.
mod backup;
mod check;
mod install;
mod scripts;
mod verify;

use backup::backup;
use check::{base_conflicts, identity};
use install::install;
pub(crate) use scripts::undo_placement;
use verify::verify;

/// The key `apply` trusts unless told otherwise.
pub const DEFAULT_KEY: &str = "/etc/dormouse/trusted.pub";
/// Test hook: `<step>` kills the agent (SIGKILL) right after that step is journaled,
/// `<step>:<n>` after the n-th item of it (backup: file backed up; scripts: script marked
/// running, before it runs; install: entry in place; remove: removal done).
pub const STOP_HOOK: &str = "DORMOUSE_AGENT_STOP_AFTER";
/// Most bytes of file data kept in memory from verification for the install step, which then
/// need not decompress and hash the bundle a second time; a bigger payload is streamed again.
pub const MAX_BUFFERED_BYTES: u64 = 64 << 20;

/// A refusal: nothing was changed, and the reason says why.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused: {}", self.0)
    }
}

impl std::error::Error for Refused {}

pub struct ApplyOptions {
    pub bundle: PathBuf,
    /// `--root DIR`: apply to the tree at DIR, scripts chrooted into it.
    pub root: Option<PathBuf>,
    pub key: PathBuf,
    pub force: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct IdentityCheck {
    pub what: &'static str,
    /// `ok`, `mismatch` or `skipped`.
    pub status: &'static str,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub name: &'static str,
    pub seconds: f64,
    /// Files, scripts or paths it handled.
    pub items: u64,
    /// Done by an earlier, interrupted run.
    pub skipped: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScriptReport {
    pub seq: u64,
    pub phase: Phase,
    pub package: String,
    #[serde(rename = "type")]
    pub script_type: &'static str,
    pub triggered: bool,
    pub argv: Vec<String>,
    pub exit_code: i32,
    pub seconds: f64,
    pub output: String,
}

/// Where the time went: the scripts' own run time, and dormouse's.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub verify: f64,
    pub check: f64,
    /// Writing journal files (included in the steps' times too).
    pub journal: f64,
    pub backup: f64,
    pub install: f64,
    pub remove: f64,
    /// Placing script files and waiting for them, minus the scripts' own run time.
    pub script_handling: f64,
    pub scripts: f64,
    /// Finding the processes that hold replaced files, and restarting their units.
    pub restarts: f64,
    /// Everything but `scripts`.
    pub own: f64,
    pub total: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub bundle: String,
    pub bundle_id: Option<String>,
    pub root: String,
    /// `applied`, `already-applied`, `refused` or `failed`.
    pub result: &'static str,
    pub error: Option<String>,
    /// The step an interrupted earlier run had completed.
    pub resumed_after: Option<&'static str>,
    pub identity: Vec<IdentityCheck>,
    pub conflicts: Vec<String>,
    pub forced: bool,
    pub steps: Vec<StepReport>,
    pub scripts: Vec<ScriptReport>,
    /// After an apply (also one found already done): what still ran replaced files, what was
    /// restarted, whether a reboot is needed.
    pub restarts: Option<crate::restart::RestartReport>,
    pub timings: Timings,
}

/// Applies a bundle; the report says how it went (also on failure).
pub fn apply(options: &ApplyOptions) -> Report {
    let start = Instant::now();
    let root_path = options.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    let mut run = Run {
        report: Report {
            bundle: options.bundle.display().to_string(),
            bundle_id: None,
            root: root_path.display().to_string(),
            result: "failed",
            error: None,
            resumed_after: None,
            identity: Vec::new(),
            conflicts: Vec::new(),
            forced: false,
            steps: Vec::new(),
            scripts: Vec::new(),
            restarts: None,
            timings: Timings::default(),
        },
        journal_seconds: 0.0,
        targets: None,
    };
    match run.apply(options, &root_path) {
        Ok(result) => {
            run.report.result = result;
            if let Some(targets) = &run.targets {
                let restart = crate::restart::can_restart(options.root.is_some());
                let restarts = crate::restart::after_apply(targets, &root_path, restart);
                run.report.timings.restarts = restarts.seconds;
                run.report.restarts = Some(restarts);
            }
        }
        Err(e) => {
            run.report.result = if e.downcast_ref::<Refused>().is_some() {
                "refused"
            } else {
                "failed"
            };
            run.report.error = Some(format!("{e:#}"));
        }
    }
    let t = &mut run.report.timings;
    t.total = start.elapsed().as_secs_f64();
    t.journal = run.journal_seconds;
    t.own = t.total - t.scripts;
    run.report
}

struct Run {
    report: Report,
    journal_seconds: f64,
    /// What the verified bundle replaces, for the restarts after it is applied.
    targets: Option<crate::restart::Targets>,
}

/// The bundle's scripts, read during verification.
type ScriptBytes = HashMap<u64, Vec<u8>>;

/// A verified bundle, with what verification read of it.
struct Verified {
    bundle: Bundle,
    scripts: ScriptBytes,
    /// The header and data of every `files/` member in manifest order, when the payload is at
    /// most [`MAX_BUFFERED_BYTES`].
    files: Option<Vec<(Header, Vec<u8>)>>,
}

fn stop_hook(step: Step, item: Option<usize>) {
    let Ok(value) = std::env::var(STOP_HOOK) else { return };
    let (name, n) = match value.split_once(':') {
        Some((name, n)) => (name, n.parse::<usize>().ok()),
        None => (value.as_str(), None),
    };
    if name == step.name() && n == item {
        // SAFETY: signalling ourselves; SIGKILL cannot be caught: this is `kill -9`.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// SHA-256 of the manifest as parsed, to tell two bundles with one id apart.
fn manifest_digest(manifest: &Manifest) -> Result<String> {
    Ok(hex(&Sha256::digest(serde_json::to_vec(manifest)?)))
}

impl Run {
    fn step(&mut self, step: Step, seconds: f64, items: u64, skipped: bool) {
        self.report.steps.push(StepReport {
            name: step.name(),
            seconds,
            items,
            skipped,
        });
        let t = &mut self.report.timings;
        match step {
            Step::Verify => t.verify += seconds,
            Step::Check => t.check += seconds,
            Step::Backup => t.backup += seconds,
            // install() splits its time between installing and removing.
            Step::Install | Step::PreScripts | Step::PostScripts => {}
        }
    }

    /// Writes the journal; `durable`: on disk before this returns (see [`JournalDir::commit`]).
    fn save(&mut self, dir: &JournalDir, journal: &mut Journal, durable: bool) -> Result<()> {
        let start = Instant::now();
        if durable {
            dir.commit(journal)?;
        } else {
            dir.save(journal)?;
        }
        self.journal_seconds += start.elapsed().as_secs_f64();
        Ok(())
    }

    /// Marks `step` done in the journal, then the test hook.
    fn done(&mut self, dir: &JournalDir, journal: &mut Journal, step: Step, durable: bool) -> Result<()> {
        journal.step = Some(step);
        self.save(dir, journal, durable)?;
        stop_hook(step, None);
        Ok(())
    }

    fn apply(&mut self, options: &ApplyOptions, root_path: &Path) -> Result<&'static str> {
        let start = Instant::now();
        let verified = verify(&options.bundle, &options.key)?;
        let manifest = verified.bundle.manifest();
        self.report.bundle_id = Some(manifest.bundle_id.clone());
        self.targets = Some(crate::restart::Targets::of(manifest));
        let digest = manifest_digest(manifest)?;
        self.step(
            Step::Verify,
            start.elapsed().as_secs_f64(),
            manifest.files.len() as u64,
            false,
        );
        stop_hook(Step::Verify, None);

        let root = Root::open(root_path)?;
        let chroot = options.root.as_deref();
        let existing = match JournalDir::open(&root, &manifest.bundle_id, false)? {
            Some(dir) => dir.load_if_present()?.map(|journal| (dir, journal)),
            None => None,
        };
        let (dir, mut journal) = match existing {
            Some((dir, journal)) => {
                if journal.manifest_sha256 != digest {
                    return Err(Refused(format!(
                        "{} holds the journal of another bundle with the same id {}",
                        dir.display, manifest.bundle_id
                    ))
                    .into());
                }
                match journal.state {
                    State::Applied => return Ok("already-applied"),
                    State::RolledBack | State::RollingBack => {
                        return Err(Refused(format!(
                            "bundle {} was rolled back (journal {}); make a new bundle, or remove the journal to apply this one again",
                            manifest.bundle_id, dir.display
                        ))
                        .into());
                    }
                    State::Applying | State::Failed => {}
                }
                self.report.resumed_after = journal.step.map(Step::name);
                self.report.forced = !journal.forced.is_empty();
                (dir, journal)
            }
            None => {
                let start = Instant::now();
                self.report.identity = identity(manifest, chroot.is_some())?;
                let mut conflicts: Vec<String> = self
                    .report
                    .identity
                    .iter()
                    .filter(|c| c.status == "mismatch")
                    .map(|c| format!("identity: {}", c.detail))
                    .collect();
                conflicts.extend(base_conflicts(&root, manifest)?);
                self.report.conflicts = conflicts.clone();
                if !conflicts.is_empty() && !options.force {
                    return Err(Refused(format!(
                        "the guest is not what the bundle was made for; nothing was changed. Conflicts:\n  {}\n(make a new bundle from the guest's current state, or use --force)",
                        conflicts.join("\n  ")
                    ))
                    .into());
                }
                self.report.forced = !conflicts.is_empty();
                let dir = JournalDir::open(&root, &manifest.bundle_id, true)?
                    .ok_or_else(|| anyhow!("the journal directory vanished"))?;
                let mut journal = Journal {
                    schema: SCHEMA.into(),
                    bundle_id: manifest.bundle_id.clone(),
                    manifest_sha256: digest,
                    bundle_path: options.bundle.display().to_string(),
                    state: State::Applying,
                    step: None,
                    started_unix: now_unix(),
                    updated_unix: 0,
                    scripts: manifest
                        .scripts
                        .iter()
                        .map(|s| ScriptEntry {
                            seq: s.seq,
                            state: ScriptState::Pending,
                            exit_code: None,
                        })
                        .collect(),
                    placement: None,
                    forced: conflicts,
                    error: None,
                };
                // Nothing is changed yet: a journal lost to a power cut only means checking again.
                self.done(&dir, &mut journal, Step::Check, false)?;
                self.step(
                    Step::Check,
                    start.elapsed().as_secs_f64(),
                    manifest.base.len() as u64,
                    false,
                );
                (dir, journal)
            }
        };
        journal.state = State::Applying;
        journal.error = None;
        journal.bundle_path = options.bundle.display().to_string();
        match self.steps(&root, chroot, &verified, &dir, &mut journal) {
            Ok(()) => {
                // The last step is on disk: lost, this state is only reached again by a rerun
                // that has nothing left to do.
                journal.state = State::Applied;
                self.save(&dir, &mut journal, false)?;
                Ok("applied")
            }
            Err(e) => {
                journal.state = State::Failed;
                journal.error = Some(format!("{e:#}"));
                // The failure is what matters; a journal that cannot be written says so too.
                if let Err(save) = self.save(&dir, &mut journal, true) {
                    return Err(e.context(format!("also failed to write the journal: {save:#}")));
                }
                Err(e.context(format!(
                    "apply stopped (journal {}: `dormouse-agent apply` again resumes, `dormouse-agent rollback {}` undoes)",
                    dir.display, journal.bundle_id
                )))
            }
        }
    }

    fn steps(
        &mut self,
        root: &Root,
        chroot: Option<&Path>,
        verified: &Verified,
        dir: &JournalDir,
        journal: &mut Journal,
    ) -> Result<()> {
        let manifest = verified.bundle.manifest();
        let scripts = &verified.scripts;
        let completed = journal.step;
        let todo = |step: Step| completed.is_none_or(|c| c < step);
        for step in [Step::Backup, Step::PreScripts, Step::Install, Step::PostScripts] {
            if !todo(step) {
                self.step(step, 0.0, 0, true);
                continue;
            }
            let start = Instant::now();
            let items = match step {
                Step::Backup => backup(root, manifest, dir)?,
                Step::PreScripts => self.scripts(root, chroot, manifest, scripts, dir, journal, Phase::Pre)?,
                Step::Install => install(root, verified, &mut self.report.timings)?,
                Step::PostScripts => self.scripts(root, chroot, manifest, scripts, dir, journal, Phase::Post)?,
                Step::Verify | Step::Check => 0,
            };
            // Everything of the step is on disk before the journal says it is done (the root's
            // filesystem and /var's, where the journal is, when it is another one). A step
            // that did nothing (no scripts of its phase) has nothing to flush: redoing it after
            // a power cut is as cheap. A resumed run flushes what the interrupted one left.
            let changed =
                items > 0 || matches!(step, Step::Backup | Step::Install) || self.report.resumed_after.is_some();
            if changed {
                root.syncfs()?;
                if dir.on_other_fs(root)? {
                    dir.syncfs()?;
                }
            }
            self.step(step, start.elapsed().as_secs_f64(), items, false);
            self.done(dir, journal, step, changed)?;
        }
        Ok(())
    }
}

/// The temporary sibling a path's new version is written to: fixed per path, so a rerun
/// finds and replaces what a crash left.
pub(crate) fn temp_name(guest: &str) -> String {
    format!(".dormouse-{}", &hex(&Sha256::digest(guest.as_bytes()))[..16])
}

/// Entries directly below each opaque directory that the bundle keeps.
fn kept(manifest: &Manifest, dir: &str, name: &str) -> bool {
    let path = format!("{dir}/{name}");
    manifest.files.binary_search_by(|e| e.path.as_str().cmp(&path)).is_ok()
}
