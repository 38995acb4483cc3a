//! The journal of one bundle under `<root>/var/lib/dormouse/<bundle id>/`:
//! - `journal.json`: state, last completed step, per-script state, the script file put in place
//!   (rewritten, atomically, at every step and around every script; flushed to disk only where
//!   a power loss must not lose it, see [`JournalDir::commit`]);
//! - `changes.json`: per-path state written once before the first change: what every path the
//!   bundle touches was (metadata, and the backup of its data) and what the agent does to it;
//! - `backup/<n>`: the data of every regular file replaced or removed (0600, no xattrs, so a
//!   backed-up capability or setuid bit grants nothing);
//! - `scripts/<seq>.log`: each script's output.
//!
//! The directory is reached through the target root's descriptor (see [`crate::fs`]), never
//! through a path the guest could redirect.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::fs::{At, Kind, Meta, Root, context, write_atomic};

pub const SCHEMA: &str = "dormouse.journal/1";
/// Where journals live in the target root.
pub const DIR: &str = "/var/lib/dormouse";
/// Largest journal file read.
const MAX_JOURNAL: u64 = 512 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Started, not finished (killed, or still running).
    Applying,
    /// A step failed; `apply` again resumes, `rollback` undoes.
    Failed,
    Applied,
    RollingBack,
    RolledBack,
}

/// The steps of an apply, in order; the journal keeps the last one completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Verify,
    Check,
    Backup,
    PreScripts,
    /// Files, opaque directories and removals.
    Install,
    PostScripts,
}

impl Step {
    pub const ALL: [Step; 6] = [
        Step::Verify,
        Step::Check,
        Step::Backup,
        Step::PreScripts,
        Step::Install,
        Step::PostScripts,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Verify => "verify",
            Step::Check => "check",
            Step::Backup => "backup",
            Step::PreScripts => "pre-scripts",
            Step::Install => "install",
            Step::PostScripts => "post-scripts",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScriptState {
    Pending,
    /// Started; a crash here runs it again on resume.
    Running,
    Done,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptEntry {
    pub seq: u64,
    pub state: ScriptState,
    pub exit_code: Option<i32>,
}

/// A recorded script written at its recorded path for the time it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub path: String,
    /// What was at the path, renamed aside to this sibling name.
    pub saved_as: Option<String>,
    /// Parent directories created for it, outermost first.
    pub created_dirs: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    pub schema: String,
    pub bundle_id: String,
    /// SHA-256 of the manifest: the same id with other contents is another bundle.
    pub manifest_sha256: String,
    pub bundle_path: String,
    pub state: State,
    pub step: Option<Step>,
    pub started_unix: u64,
    pub updated_unix: u64,
    pub scripts: Vec<ScriptEntry>,
    pub placement: Option<Placement>,
    /// Conflicts overridden with `--force`.
    pub forced: Vec<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Did not exist: rollback removes it (with anything put under it).
    Added,
    /// Replaced by the bundle's entry.
    Replaced,
    /// A directory that stays one; its metadata is the bundle's.
    Updated,
    /// Removed (a removal, the contents of an opaque directory, or under a replaced directory).
    Removed,
}

/// One path the bundle touches.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Change {
    pub path: String,
    pub action: Action,
    /// What the guest had (not for `Added`).
    pub before: Option<Meta>,
    /// The backup of its data under `backup/` (regular files).
    pub backup: Option<String>,
}

/// An open journal directory.
pub struct JournalDir {
    dir: File,
    pub display: String,
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Bundle ids become directory names: `[A-Za-z0-9._-]`, not starting with a dot.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 128
        || id.starts_with('.')
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!("bundle id {id:?} is not a plain name"));
    }
    Ok(())
}

/// `dir` inside `parent`, created (0700, root) when missing; a symlink or file there is an
/// error. Creating it leaves the parent's modification time as it was: the guest's `/var/lib`
/// must look untouched after a rollback.
fn ensure_dir(parent: &At, name: &str) -> io::Result<At> {
    let at = parent.child(&std::ffi::CString::new(name).map_err(io::Error::other)?)?;
    match at.meta()? {
        Some(m) if m.kind == Kind::Dir => {}
        Some(_) => return Err(io::Error::other(format!("{} exists and is not a directory", at.path))),
        None => {
            let parent_meta = parent
                .meta()?
                .ok_or_else(|| io::Error::other(format!("{} vanished", parent.path)))?;
            at.create_special(&Meta {
                kind: Kind::Dir,
                mode: 0o700,
                uid: 0,
                gid: 0,
                mtime: 0,
                mtime_nsec: 0,
                xattrs: Vec::new(),
                link: None,
                rdev: None,
                size: 0,
            })?;
            parent.set_mtime(&parent_meta)?;
        }
    }
    Ok(at)
}

impl JournalDir {
    /// The journal of `id`, created (with `/var/lib/dormouse`) when `create`; `None` when
    /// absent.
    pub fn open(root: &Root, id: &str, create: bool) -> io::Result<Option<JournalDir>> {
        check_id(id).map_err(io::Error::other)?;
        let is_dir = |at: &At| -> io::Result<bool> { Ok(at.meta()?.is_some_and(|m| m.kind == Kind::Dir)) };
        // /var and /var/lib belong to the guest: only dormouse's own directories are made.
        let var = root.at("/var")?;
        let lib = var.child(c"lib")?;
        if !is_dir(&var)? || !is_dir(&lib)? {
            return Err(io::Error::other(format!(
                "{}/var/lib is not a directory",
                root.path.display()
            )));
        }
        let mut at = lib;
        for name in [DIR.rsplit('/').next().unwrap_or("dormouse"), id] {
            at = if create {
                ensure_dir(&at, name)?
            } else {
                let child = at.child(&std::ffi::CString::new(name).map_err(io::Error::other)?)?;
                if !is_dir(&child)? {
                    return Ok(None);
                }
                child
            };
        }
        let dir = at.open(libc::O_PATH | libc::O_DIRECTORY, 0)?;
        let journal = JournalDir {
            dir,
            display: format!("{}{}/{id}", root.path.display().to_string().trim_end_matches('/'), DIR),
        };
        if create {
            for sub in ["backup", "scripts"] {
                std::fs::create_dir_all(journal.path(sub))?;
            }
        }
        Ok(Some(journal))
    }

    /// Every journal id in the target root.
    pub fn list(root: &Root) -> io::Result<Vec<String>> {
        let Some(at) = root.at_if_parent(DIR)? else {
            return Ok(Vec::new());
        };
        if !at.meta()?.is_some_and(|m| m.kind == Kind::Dir) {
            return Ok(Vec::new());
        }
        Ok(at
            .list()?
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .filter(|n| check_id(n).is_ok())
            .collect())
    }

    /// A host path to `name` inside the journal directory, through our descriptor.
    pub fn path(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}/{name}", self.dir.as_raw_fd()))
    }

    pub fn backup_dir(&self) -> io::Result<File> {
        let path = self.path("backup");
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
        // SAFETY: NUL-terminated path; the descriptor is owned below.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor owned by nobody else.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    pub fn syncfs(&self) -> io::Result<()> {
        crate::fs::syncfs(&self.dir)
    }

    /// Whether the journal is on another filesystem than the root's (a separate /var), which
    /// then needs its own syncfs.
    pub fn on_other_fs(&self, root: &Root) -> io::Result<bool> {
        Ok(crate::fs::device(&self.dir)? != root.device()?)
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, name: &str) -> io::Result<T> {
        use std::io::Read;
        let path = self.path(name);
        let mut text = Vec::new();
        File::open(&path)
            .map_err(context("opening", &format!("{}/{name}", self.display)))?
            .take(MAX_JOURNAL)
            .read_to_end(&mut text)?;
        serde_json::from_slice(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}/{name}: {e} (damaged journal)", self.display),
            )
        })
    }

    fn write_json<T: Serialize>(&self, name: &str, value: &T) -> io::Result<()> {
        let text = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
        write_atomic(&self.path(name), &text).map_err(context("writing", &format!("{}/{name}", self.display)))
    }

    /// The journal, `None` when `journal.json` was never written: a run stopped between
    /// creating the directory and its first save, before it changed anything.
    pub fn load_if_present(&self) -> io::Result<Option<Journal>> {
        match std::fs::symlink_metadata(self.path("journal.json")) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            _ => self.load().map(Some),
        }
    }

    pub fn load(&self) -> io::Result<Journal> {
        let journal: Journal = self.read_json("journal.json")?;
        if journal.schema != SCHEMA {
            return Err(io::Error::other(format!(
                "{}/journal.json: schema {:?}, this agent reads {SCHEMA}",
                self.display, journal.schema
            )));
        }
        Ok(journal)
    }

    /// Replaces `journal.json` atomically: a crash of the agent (kill -9) leaves the old or the
    /// new one. After a power loss it may be an earlier one; every state is resumable, and
    /// redoing work from an earlier state reaches the same end (scripts marked running or
    /// done but not yet flushed run again, as dpkg reruns an interrupted configure).
    pub fn save(&self, journal: &mut Journal) -> io::Result<()> {
        journal.updated_unix = now_unix();
        self.write_json("journal.json", journal)
    }

    /// [`JournalDir::save`], then on disk: what the journal says happened must not be lost
    /// (a completed step, whose changes the caller flushed first; a script placement about to
    /// be carried out). One syncfs instead of an fsync of the file and one of the directory.
    pub fn commit(&self, journal: &mut Journal) -> io::Result<()> {
        self.save(journal)?;
        self.syncfs().map_err(context(
            "flushing the journal",
            &format!("{}/journal.json", self.display),
        ))
    }

    pub fn load_changes(&self) -> io::Result<Vec<Change>> {
        self.read_json("changes.json")
    }

    /// Written before the first change; flushed with the backups when the backup step ends.
    pub fn save_changes(&self, changes: &[Change]) -> io::Result<()> {
        self.write_json("changes.json", &changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steps_are_the_ones_dom0_counts() {
        let names: Vec<&str> = Step::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names, bundle::transport::APPLY_STEPS);
    }
}
