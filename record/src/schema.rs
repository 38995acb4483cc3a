//! The record format, `dormouse.record/1`. Additions that old readers can ignore keep the
//! version; anything else bumps it. Readers refuse other versions (`Record::read`).

use std::path::{Path, PathBuf};

use emulator::trace::ScriptRecord;
use serde::{Deserialize, Serialize};

pub const SCHEMA: &str = "dormouse.record/1";

/// Records are JSON of a few MiB at most (a full upgrade lists some thousand files); anything
/// far larger is not one of ours.
pub const MAX_RECORD_BYTES: u64 = 256 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// `dormouse.record/1`.
    pub schema: String,
    pub dormouse_version: String,
    /// When the emulation ended (seconds since the epoch).
    pub created_unix: u64,
    /// The run's id (also the bundle's id when a bundle was written).
    pub run_id: String,
    pub inputs: Inputs,
    pub options: Options,
    pub outcome: Outcome,
    /// Wall time of each phase, in the order they ran.
    pub phases: Vec<PhaseTime>,
    /// The intercepted maintainer scripts, in execution order.
    pub execs: Vec<ScriptRecord>,
    pub upper: Upper,
    /// The package manager's sources and indices as the run left them.
    pub repository: Repository,
    /// The bundle written from this run, if any.
    pub bundle: Option<BundleRef>,
    /// The online update this emulation replaces and the guest agent's online step, when a
    /// benchmark measured them (`scripts/bench-agent` adds this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<Online>,
}

/// What the emulation read, pinned by hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    /// The memory image (`None`: a stopped VM, the snapshot was synthesized from its disk).
    pub image: Option<InputFile>,
    pub disks: Vec<InputDisk>,
    /// Kernel profile files given on the command line (System.map, kernel image, ISF).
    pub profile_files: Vec<InputFile>,
    /// `image` or `synthesized`.
    pub snapshot: String,
    pub kernel: Kernel,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    /// Where it was read (a dom0 path for inputs, a guest path for repository files).
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputDisk {
    /// The disk argument as the emulation used it (`PATH` or `PATH:N`).
    pub spec: String,
    pub file: InputFile,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kernel {
    pub release: String,
    /// `linux_banner` as read from guest memory (`None` when synthesized).
    pub banner: Option<String>,
}

/// How the emulation was asked to run: enough for `dormouse replay` to run it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    pub command: Vec<String>,
    /// `--env KEY=VALUE`, in order.
    pub env: Vec<String>,
    /// `host`, `none` or `restricted`.
    pub net: String,
    pub allow: Vec<String>,
    /// `seccomp`, `all-syscalls` or `off`.
    pub trace: String,
    /// Limits as given (`4G`, `none`, ...).
    pub memory: String,
    pub pids: String,
    pub timeout: String,
    pub scratch_size: String,
    pub binds: Vec<String>,
    pub durable: bool,
    /// `--release` for a synthesized snapshot.
    pub release: Option<String>,
    /// `--system-map`, `--kernel`, `--isf` (their hashes are in `inputs.profile_files`).
    pub system_map: Option<String>,
    pub kernel: Option<String>,
    pub isf: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The command's exit status (128 + signal when killed).
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub interrupted: bool,
    /// Execs the tracer let through and refused, unames it answered, ptrace stops (the cost of
    /// interception) and processes followed.
    pub execs_allowed: u64,
    pub execs_refused: u64,
    pub unames_answered: u64,
    pub tracer_stops: u64,
    /// Seconds the tracer spent handling its stops, inside the `command` phase (a lower bound
    /// of what interception costs). Absent from the first records: 0.
    #[serde(default)]
    pub interception_seconds: f64,
    pub processes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseTime {
    pub name: String,
    pub seconds: f64,
}

/// One intercepted maintainer script, as the tracer recorded it (its bytes are in the bundle,
/// not the record).
pub type Exec = ScriptRecord;

/// The upper layers after the run: what the emulation changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upper {
    /// Every captured entry, sorted by path.
    pub entries: Vec<UpperEntry>,
    pub removals: Vec<String>,
    pub opaque_dirs: Vec<String>,
    /// What capture left out by pattern (caches the guest rebuilds, locks).
    pub excluded: Vec<ExcludedRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpperEntry {
    pub path: String,
    /// `file`, `hardlink`, `dir`, `symlink`, `char`, `block` or `fifo`.
    pub kind: String,
    /// Permission bits and file type bits, as `st_mode`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Regular files: bytes.
    pub size: u64,
    /// Regular files: SHA-256 of the bytes.
    pub sha256: Option<String>,
    /// Symlinks: the target; hard links: the path of the first name.
    pub target: Option<String>,
    pub category: Category,
}

/// What a captured entry is, for the figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Listed by an installed package (dpkg's `info/*.list` after the run).
    Payload,
    /// The package database (`/var/lib/dpkg`, `/var/lib/rpm`, apt's state).
    PackageDb,
    /// Downloaded indices and caches (`/var/lib/apt/lists`, `/var/cache`).
    Cache,
    /// Logs (`/var/log`).
    Log,
    /// Made by the run itself (maintainer-script helpers, ldconfig, ...).
    Generated,
}

impl Category {
    pub const ALL: [Category; 5] = [
        Category::Payload,
        Category::PackageDb,
        Category::Cache,
        Category::Log,
        Category::Generated,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::Payload => "payload",
            Category::PackageDb => "package_db",
            Category::Cache => "cache",
            Category::Log => "log",
            Category::Generated => "generated",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExcludedRef {
    pub path: String,
    pub pattern: String,
    pub removal: bool,
    pub entries: u64,
    pub bytes: u64,
}

/// The package manager's repository state after the run: its sources and the index files it
/// read (apt's lists, dnf/yum's repodata), each by hash. Their file names say where they came
/// from (apt's lists are named after their URIs; repodata sits under the repo id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repository {
    pub sources: Vec<InputFile>,
    pub indices: Vec<IndexFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    /// Guest path, size and SHA-256.
    #[serde(flatten)]
    pub file: InputFile,
    /// `InRelease`/`Release`: their `Date:`, the archive state they describe (for Debian's
    /// archives, snapshot.debian.org serves that state again).
    pub release_date: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRef {
    pub path: String,
    pub bundle_id: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Online {
    /// The same update run in the guest (or a chroot of its disk), seconds.
    pub update_seconds: f64,
    /// The guest agent's apply of this emulation's bundle, seconds.
    pub step_seconds: f64,
    /// What measured them.
    pub measured_by: String,
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading the record {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is {bytes} bytes, more than a record can be ({MAX_RECORD_BYTES}); is it a record?")]
    TooLarge { path: PathBuf, bytes: u64 },
    #[error(
        "{path} is a {found:?} record; this dormouse reads {SCHEMA} (emulate again with this version, or use the dormouse that wrote it)"
    )]
    Version { path: PathBuf, found: String },
    #[error(
        "{path} has no \"schema\" field: not a {SCHEMA} record (a B.record.json written before records existed holds emulate's --json report; emulate again with --record)"
    )]
    Unversioned { path: PathBuf },
    /// serde_json's message says where: line and column.
    #[error("{path}: not a {SCHEMA} record: {message} (records are written by `dormouse emulate --record` or `--out`)")]
    Parse { path: PathBuf, message: String },
}

impl Record {
    pub fn read(path: &Path) -> Result<Record, ReadError> {
        let io = |source| ReadError::Io {
            path: path.to_owned(),
            source,
        };
        let bytes = std::fs::metadata(path).map_err(io)?.len();
        if bytes > MAX_RECORD_BYTES {
            return Err(ReadError::TooLarge {
                path: path.to_owned(),
                bytes,
            });
        }
        let text = std::fs::read(path).map_err(io)?;
        let value: serde_json::Value = serde_json::from_slice(&text).map_err(|e| parse_error(path, &e))?;
        let found = value.get("schema").and_then(|s| s.as_str()).unwrap_or("");
        if found.is_empty() {
            return Err(ReadError::Unversioned { path: path.to_owned() });
        }
        if found != SCHEMA {
            return Err(ReadError::Version {
                path: path.to_owned(),
                found: found.to_owned(),
            });
        }
        // From the text again, not the value: serde_json then says where (line, column).
        serde_json::from_slice(&text).map_err(|e| parse_error(path, &e))
    }

    /// Writes the record through a temporary file renamed into place.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp = tempfile_in(dir, path)?;
        serde_json::to_writer_pretty(&mut tmp.1, self).map_err(std::io::Error::other)?;
        std::io::Write::write_all(&mut tmp.1, b"\n")?;
        tmp.1.sync_all()?;
        std::fs::rename(&tmp.0, path)
    }
}

fn parse_error(path: &Path, e: &serde_json::Error) -> ReadError {
    ReadError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// A new file beside `path`, named after it; the caller renames it into place.
fn tempfile_in(dir: &Path, path: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    Ok((tmp, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_documents_are_refused_with_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let old = write("old.record.json", r#"{"run_id": "x", "exit_code": 0}"#);
        assert!(matches!(Record::read(&old), Err(ReadError::Unversioned { .. })));
        let newer = write("newer.record.json", r#"{"schema": "dormouse.record/2"}"#);
        let err = Record::read(&newer).unwrap_err();
        assert!(
            matches!(&err, ReadError::Version { found, .. } if found == "dormouse.record/2"),
            "{err}"
        );
        let broken = write("broken.record.json", r#"{"schema": "dormouse.record/1", "run_id": 5}"#);
        let err = Record::read(&broken).unwrap_err().to_string();
        assert!(err.contains("broken.record.json") && err.contains("line 1"), "{err}");
    }
}
