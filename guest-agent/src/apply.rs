//! `apply` and `rollback`: the steps of [`Step`], each journaled, each idempotent, so that a
//! rerun after a crash at any point finishes the same way an uninterrupted run does.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use bundle::manifest::{BaseType, EntryType, Manifest, PayloadEntry, Phase, Script};
use bundle::read::{Bundle, Member};
use bundle::sign::{PublicKey, read_signature, signature_path};
use bundle::tar::Header;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::fs::{At, Kind, Meta, Root, hex};
use crate::journal::{
    Action, Change, Journal, JournalDir, Placement, SCHEMA, ScriptEntry, ScriptState, State, Step, check_id, now_unix,
};
use crate::script;

/// The key `apply` trusts unless told otherwise.
pub const DEFAULT_KEY: &str = "/etc/dormouse/trusted.pub";
/// Test hook: `<step>` kills the agent (SIGKILL) right after that step is journaled,
/// `<step>:<n>` after the n-th item of it (backup: file backed up; scripts: script marked
/// running, before it runs; install: entry in place; remove: removal done).
pub const STOP_HOOK: &str = "DORMOUSE_AGENT_STOP_AFTER";
/// Most bytes of scripts held in memory between verification and running them.
const MAX_SCRIPT_BYTES: u64 = 256 << 20;
/// Most bytes of file data kept in memory from verification for the install step, which then
/// need not decompress and hash the bundle a second time; a bigger payload is streamed again.
pub const MAX_BUFFERED_BYTES: u64 = 64 << 20;
/// Bytes read from the bundle at a time while keeping them.
const READ_CHUNK: usize = 128 << 10;

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
            timings: Timings::default(),
        },
        journal_seconds: 0.0,
    };
    match run.apply(options, &root_path) {
        Ok(result) => run.report.result = result,
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

    #[allow(clippy::too_many_arguments)]
    fn scripts(
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

/// Step 1: the bundle file is root's alone, its signature is the pinned key's, every member
/// matches the manifest. Returns the opened bundle, the scripts' bytes, and the files'
/// members unless the payload is too big to keep.
fn verify(path: &Path, key: &Path) -> Result<Verified> {
    check_private(path)?;
    let key = PublicKey::read(key).map_err(|e| Refused(format!("{e} (the pinned key; pass another with --key)")))?;
    let sig_path = signature_path(path);
    let signature = read_signature(&sig_path).map_err(|e| Refused(format!("unsigned bundle: {e}")))?;
    key.verify_file(path, &signature, &sig_path)
        .map_err(|e| Refused(e.to_string()))?;
    let bundle = Bundle::open(path).map_err(|e| Refused(e.to_string()))?;
    check_id(&bundle.manifest().bundle_id).map_err(Refused)?;
    let manifest = bundle.manifest();
    let total = manifest.scripts.iter().fold(0u64, |sum, s| sum.saturating_add(s.size));
    if total > MAX_SCRIPT_BYTES {
        return Err(Refused(format!("{total} bytes of scripts (at most {MAX_SCRIPT_BYTES})")).into());
    }
    let payload = manifest.files.iter().fold(0u64, |sum, e| sum.saturating_add(e.size));
    let mut files = (payload <= MAX_BUFFERED_BYTES).then(|| Vec::with_capacity(manifest.files.len()));
    let mut scripts = ScriptBytes::new();
    let read = |data: &mut dyn Read, size: u64| -> Result<Vec<u8>, bundle::BundleError> {
        // `size` is the manifest's, within the bounds checked above.
        let size = size as usize;
        let mut bytes = Vec::with_capacity(size);
        // A chunk at a time: the reader hashes what it returns, while it is still in cache.
        while bytes.len() < size {
            let start = bytes.len();
            bytes.resize(size.min(start + READ_CHUNK), 0);
            let n = data
                .read(&mut bytes[start..])
                .map_err(|source| bundle::BundleError::Io {
                    what: "reading a member of",
                    path: path.to_owned(),
                    source,
                })?;
            bytes.truncate(start + n);
            if n == 0 {
                break;
            }
        }
        Ok(bytes)
    };
    bundle
        .for_each_member(|member, header, data| {
            match member {
                Member::Script(s) => {
                    scripts.insert(s.seq, read(data, s.size)?);
                }
                Member::File(entry) => {
                    if let Some(files) = &mut files {
                        files.push((header.clone(), read(data, entry.size)?));
                    }
                }
            }
            Ok(())
        })
        .map_err(|e| Refused(e.to_string()))?;
    Ok(Verified { bundle, scripts, files })
}

/// A bundle someone else could rewrite between verification and use is refused: it must be
/// owned by root (or us) and writable by nobody else, in a directory nobody else can
/// replace it in.
fn check_private(path: &Path) -> Result<()> {
    // SAFETY: no arguments, cannot fail.
    let me = unsafe { libc::geteuid() };
    let meta = std::fs::metadata(path).with_context(|| format!("reading the bundle {}", path.display()))?;
    let private = |m: &std::fs::Metadata, sticky_ok: bool| {
        (m.uid() == 0 || m.uid() == me) && (m.mode() & 0o022 == 0 || (sticky_ok && m.mode() & 0o1000 != 0))
    };
    if !meta.is_file() || !private(&meta, false) {
        return Err(Refused(format!(
            "{}: the bundle must be a regular file owned by root and writable by nobody else",
            path.display()
        ))
        .into());
    }
    let dir = std::fs::canonicalize(path)?
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("/"));
    let dir_meta = std::fs::metadata(&dir)?;
    if !private(&dir_meta, true) {
        return Err(Refused(format!(
            "{}: the bundle's directory is writable by others (not sticky): move the bundle somewhere private",
            dir.display()
        ))
        .into());
    }
    Ok(())
}

fn host_file(path: &str) -> Option<String> {
    let mut text = String::new();
    File::open(path).ok()?.take(4096).read_to_string(&mut text).ok()?;
    Some(text.trim().to_owned())
}

fn uname() -> Option<(String, String)> {
    // SAFETY: an all-zero utsname is valid, and uname fills it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Some((field(&uts.release), field(&uts.nodename)))
}

/// Step 2a: is this the guest the bundle was made for?
fn identity(manifest: &Manifest, root_mode: bool) -> Result<Vec<IdentityCheck>> {
    let guest = &manifest.guest;
    let compare = |what: &'static str, have: Option<String>, want: Option<&str>, skip: &str| {
        let (status, detail) = match (have, want) {
            (_, None) => ("skipped", format!("{what}: the bundle records none")),
            (None, Some(_)) => ("skipped", format!("{what}: {skip}")),
            (Some(h), Some(w)) if h == w => ("ok", format!("{what} {h}")),
            (Some(h), Some(w)) => ("mismatch", format!("{what} is {h}, the bundle was made for {w}")),
        };
        IdentityCheck { what, status, detail }
    };
    let mut checks = Vec::new();
    if root_mode {
        let why = "skipped with --root: the running kernel is not the target's";
        checks.push(compare("boot_id", None, guest.boot_id.as_deref(), why));
        checks.push(compare("kernel release", None, Some(&guest.kernel_release), why));
        checks.push(compare("domain UUID", None, guest.domain_uuid.as_deref(), why));
        // /etc/hostname need not be the name the kernel had (DHCP, transient names).
        checks.push(compare("hostname", None, Some(&guest.hostname), why));
    } else {
        let uts = uname();
        checks.push(compare(
            "boot_id",
            host_file("/proc/sys/kernel/random/boot_id"),
            guest.boot_id.as_deref(),
            "/proc/sys/kernel/random/boot_id is not readable",
        ));
        checks.push(compare(
            "kernel release",
            uts.as_ref().map(|u| u.0.clone()),
            Some(&guest.kernel_release),
            "uname failed",
        ));
        checks.push(compare(
            "domain UUID",
            host_file("/sys/hypervisor/uuid"),
            guest.domain_uuid.as_deref(),
            "/sys/hypervisor/uuid is not readable (not a Xen guest, or no xenfs)",
        ));
        checks.push(compare(
            "hostname",
            uts.map(|u| u.1),
            Some(&guest.hostname),
            "uname failed",
        ));
    }
    Ok(checks)
}

fn sha256_of(mut reader: impl Read) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok((size, hex(&hasher.finalize())));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

/// Step 2b: every path the bundle replaces or removes is what it was when the bundle was
/// made, and every path it adds is free.
fn base_conflicts(root: &Root, manifest: &Manifest) -> Result<Vec<String>> {
    let mut conflicts = Vec::new();
    let mut based = HashSet::new();
    for base in &manifest.base {
        based.insert(base.path.as_str());
        let at = match root.at_if_parent(&base.path) {
            Ok(Some(at)) => at,
            Ok(None) => {
                conflicts.push(format!("{}: missing (its directory is gone)", base.path));
                continue;
            }
            Err(e) => {
                conflicts.push(format!("{}: {e}", base.path));
                continue;
            }
        };
        let Some(meta) = at.meta()? else {
            conflicts.push(format!("{}: missing", base.path));
            continue;
        };
        let want = match base.base_type {
            BaseType::File => Kind::File,
            BaseType::Dir => Kind::Dir,
            BaseType::Symlink => Kind::Symlink,
            BaseType::Other => meta.kind,
        };
        if meta.kind != want
            || (base.base_type == BaseType::Other && matches!(meta.kind, Kind::File | Kind::Dir | Kind::Symlink))
        {
            conflicts.push(format!(
                "{}: a {:?} where the bundle expects a {:?}",
                base.path, meta.kind, base.base_type
            ));
            continue;
        }
        let actual = match meta.kind {
            Kind::File => Some(sha256_of(at.open(libc::O_RDONLY, 0)?)?),
            Kind::Symlink => {
                let target = meta.link.unwrap_or_default();
                Some((target.len() as u64, hex(&Sha256::digest(target.as_bytes()))))
            }
            _ => None,
        };
        if let (Some((size, digest)), Some(want)) = (&actual, &base.sha256) {
            if *size != base.size || digest != want {
                conflicts.push(format!(
                    "{}: changed since the bundle was made ({size} bytes, SHA-256 {digest}; the bundle expects {} bytes, {want})",
                    base.path, base.size
                ));
            }
        }
    }
    for entry in manifest.files.iter().filter(|e| !based.contains(e.path.as_str())) {
        match root.lstat(&entry.path) {
            Ok(None) => {}
            Ok(Some(meta)) => conflicts.push(format!(
                "{}: a {:?} exists where the bundle adds a new entry",
                entry.path, meta.kind
            )),
            Err(e) => conflicts.push(format!("{}: {e}", entry.path)),
        }
    }
    Ok(conflicts)
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

/// Step 3: what every touched path is now, with a copy of every regular file's data.
fn backup(root: &Root, manifest: &Manifest, dir: &JournalDir) -> Result<u64> {
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

fn meta_of(header: &Header, kind: Kind) -> Meta {
    Meta {
        kind,
        mode: header.mode & 0o7777,
        uid: header.uid,
        gid: header.gid,
        mtime: header.mtime,
        mtime_nsec: header.mtime_nsec,
        xattrs: header.xattrs.iter().map(|(n, v)| (n.clone(), hex(v))).collect(),
        link: if kind == Kind::Symlink {
            header.link.clone()
        } else {
            None
        },
        rdev: header.device,
        size: header.size,
    }
}

fn kind_of(entry_type: EntryType) -> Kind {
    match entry_type {
        EntryType::File | EntryType::Hardlink => Kind::File,
        EntryType::Dir => Kind::Dir,
        EntryType::Symlink => Kind::Symlink,
        EntryType::CharDevice => Kind::CharDevice,
        EntryType::BlockDevice => Kind::BlockDevice,
        EntryType::Fifo => Kind::Fifo,
    }
}

/// One entry staged beside its place, renamed in once the whole bundle checked out.
enum Staged {
    /// Written at its temporary name.
    Temp(String),
    /// A hard link to this earlier guest path.
    Link(String, String),
    /// An existing directory that takes the bundle's metadata.
    Dir(Meta),
    /// A directory created at its place.
    NewDir,
}

/// Step 5: every entry of the bundle in place, atomically each; opaque directories; removals
/// (each a whole tree: files, then directories deepest first); then the directories' times,
/// which every change below them moved.
fn install(root: &Root, verified: &Verified, timings: &mut Timings) -> Result<u64> {
    let start = Instant::now();
    let manifest = verified.bundle.manifest();
    let mut staged: Vec<(String, Staged)> = Vec::with_capacity(manifest.files.len());
    let mut dirs: Vec<(String, Meta)> = Vec::new();
    let mut stage_one = |entry: &PayloadEntry, header: &Header, data: &mut dyn Read| -> Result<()> {
        let s = stage(root, entry.entry_type, &entry.path, header, data)?;
        if entry.entry_type == EntryType::Dir {
            dirs.push((entry.path.clone(), meta_of(header, Kind::Dir)));
        }
        staged.push((entry.path.clone(), s));
        Ok(())
    };
    let staging = "staging the bundle's files beside their places";
    match &verified.files {
        Some(files) => {
            if files.len() != manifest.files.len() {
                bail!("verification kept {} members of {}", files.len(), manifest.files.len());
            }
            for (entry, (header, bytes)) in manifest.files.iter().zip(files) {
                stage_one(entry, header, &mut bytes.as_slice()).context(staging)?;
            }
        }
        // Too big to have been kept: decompressed, and checked, again.
        None => {
            let mut failure: Option<anyhow::Error> = None;
            let walk = verified.bundle.for_each_member(|member, header, data| {
                let Member::File(entry) = member else { return Ok(()) };
                stage_one(entry, header, data).map_err(|e| {
                    failure.get_or_insert(e);
                    bundle::BundleError::Format {
                        path: PathBuf::from(&entry.path),
                        detail: "staging failed".into(),
                    }
                })
            });
            if let Some(e) = failure {
                return Err(e.context(staging));
            }
            walk.context("the bundle changed after it was verified")?;
        }
    }
    // Every staged file is on disk before the first one takes its place.
    root.syncfs()?;
    let mut done = 0;
    for (path, staged) in &staged {
        let at = root.at(path)?;
        match staged {
            Staged::Temp(temp) => {
                let temp = at.sibling(temp)?;
                if at.kind()? == Some(Kind::Dir) {
                    at.remove_tree()?;
                }
                temp.rename_to(&at)?;
            }
            Staged::Link(temp, target) => {
                let temp = at.sibling(temp)?;
                temp.remove_tree()?;
                temp.link_to(&root.at(target)?)?;
                if at.kind()? == Some(Kind::Dir) {
                    at.remove_tree()?;
                }
                temp.rename_to(&at)?;
            }
            Staged::Dir(meta) => at.set_meta(meta, false)?,
            Staged::NewDir => {}
        }
        done += 1;
        stop_hook(Step::Install, Some(done));
    }
    for opaque in &manifest.opaque_dirs {
        let at = root.at(opaque)?;
        for name in at.list()? {
            if !kept(manifest, opaque, &name.to_string_lossy()) {
                at.child(&name)?.remove_tree()?;
            }
        }
    }
    timings.install += start.elapsed().as_secs_f64();
    let start = Instant::now();
    for path in &manifest.removals {
        if let Some(at) = root.at_if_parent(path)? {
            at.remove_tree()?;
        }
    }
    for (path, meta) in dirs.iter().rev() {
        root.at(path)?.set_mtime(meta)?;
    }
    timings.remove += start.elapsed().as_secs_f64();
    Ok(staged.len() as u64 + manifest.removals.len() as u64)
}

fn stage(root: &Root, entry_type: EntryType, path: &str, header: &Header, data: &mut dyn Read) -> Result<Staged> {
    let at = root.at(path)?;
    let meta = meta_of(header, kind_of(entry_type));
    let temp_name = temp_name(path);
    match entry_type {
        EntryType::Dir => match at.kind()? {
            Some(Kind::Dir) => Ok(Staged::Dir(meta)),
            existing => {
                if existing.is_some() {
                    at.unlink()?;
                }
                at.create_special(&meta)?;
                Ok(Staged::NewDir)
            }
        },
        EntryType::Hardlink => {
            let target = header
                .link
                .as_deref()
                .and_then(|l| l.strip_prefix("files/"))
                .ok_or_else(|| anyhow!("{path}: hard link without a target member"))?;
            Ok(Staged::Link(temp_name, format!("/{target}")))
        }
        _ => {
            let temp = at.sibling(&temp_name)?;
            temp.remove_tree()?;
            if entry_type == EntryType::File {
                let written = temp.create_file(data, &meta).inspect_err(|_| {
                    // A partial file would hold the space a rollback needs.
                    let _ = temp.unlink();
                })?;
                if written != header.size {
                    bail!("{path}: {written} bytes written of {}", header.size);
                }
            } else {
                temp.create_special(&meta)?;
            }
            Ok(Staged::Temp(temp_name))
        }
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
