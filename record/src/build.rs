//! A record's parts from an emulation's outputs: inputs hashed as read, the captured upper
//! tree classified for the figures, the repository state read from the layers after the run.

use std::collections::HashSet;
use std::io::{self, Read};
use std::path::Path;

use emulator::capture::{CaptureLayer, ChangeSet, EntryKind, sha256_reader};
use emulator::run::RunReport;

use crate::schema::{Category, ExcludedRef, IndexFile, InputFile, Outcome, PhaseTime, Repository, Upper, UpperEntry};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("hashing {path}: {source} (the record pins every input by SHA-256)")]
    Hash { path: String, source: io::Error },
    #[error(transparent)]
    Capture(#[from] emulator::capture::CaptureError),
    #[error(
        "the run's package file lists ({path} and before) hold more than {MAX_LIST_BYTES} bytes; the record's categories cannot be made"
    )]
    ListsTooLarge { path: String },
}

/// dpkg's `info/*.list` read to tell package payload from generated files: a whole Debian
/// install lists some 50 MB; four times that is no package database.
pub const MAX_LIST_BYTES: u64 = 256 << 20;

/// Index files recorded per directory (apt's lists of a large multi-arch, multi-suite guest
/// are a few hundred).
const MAX_INDEX_FILES: usize = 20_000;

/// A dom0 input (image, disk image or block device, profile file) pinned by its bytes.
pub fn hash_input(path: &Path) -> Result<InputFile, BuildError> {
    let err = |source| BuildError::Hash {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(err)?;
    let (bytes, sha256) = sha256_reader(file).map_err(err)?;
    Ok(InputFile {
        path: path.display().to_string(),
        bytes,
        sha256,
    })
}

pub fn outcome(run: &RunReport) -> Outcome {
    Outcome {
        exit_code: run.exit_code,
        timed_out: run.timed_out,
        interrupted: run.interrupted,
        execs_allowed: run.trace.execs_allowed,
        execs_refused: run.trace.execs_refused.len() as u64,
        unames_answered: run.trace.unames_answered,
        tracer_stops: run.trace.stops,
        interception_seconds: run.trace.handling_seconds,
        processes: run.trace.processes,
    }
}

pub fn phases(phases: &[emulator::run::Phase]) -> Vec<PhaseTime> {
    phases
        .iter()
        .map(|p| PhaseTime {
            name: p.name.clone(),
            seconds: p.millis / 1000.0,
        })
        .collect()
}

/// The captured changes as the record lists them, each entry classified.
pub fn upper(changes: &ChangeSet) -> Result<Upper, BuildError> {
    let payload = dpkg_payload(changes)?;
    let mut entries: Vec<UpperEntry> = changes
        .entries
        .iter()
        .map(|e| {
            let (kind, size, sha256, target) = match &e.kind {
                EntryKind::File { size, sha256, .. } => ("file", *size, Some(sha256.clone()), None),
                EntryKind::Hardlink { target } => ("hardlink", 0, None, Some(target.clone())),
                EntryKind::Dir => ("dir", 0, None, None),
                EntryKind::Symlink { target } => ("symlink", 0, None, Some(target.clone())),
                EntryKind::CharDevice { major, minor } => ("char", 0, None, Some(format!("{major}:{minor}"))),
                EntryKind::BlockDevice { major, minor } => ("block", 0, None, Some(format!("{major}:{minor}"))),
                EntryKind::Fifo => ("fifo", 0, None, None),
            };
            UpperEntry {
                category: category(&e.path, &payload),
                path: e.path.clone(),
                kind: kind.into(),
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                size,
                sha256,
                target,
            }
        })
        .collect();
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Upper {
        entries,
        removals: changes.removals.clone(),
        opaque_dirs: changes.opaque_dirs.clone(),
        excluded: changes
            .excluded
            .iter()
            .map(|x| ExcludedRef {
                path: x.path.clone(),
                pattern: x.pattern.clone(),
                removal: x.removal,
                entries: x.entries,
                bytes: x.bytes,
            })
            .collect(),
    })
}

/// Paths listed by the `info/*.list` files the run wrote: the files of the packages it
/// installed or upgraded.
fn dpkg_payload(changes: &ChangeSet) -> Result<HashSet<String>, BuildError> {
    let mut listed = HashSet::new();
    let mut total = 0u64;
    for entry in &changes.entries {
        let EntryKind::File { source, size, .. } = &entry.kind else {
            continue;
        };
        if !(entry.path.starts_with("/var/lib/dpkg/info/") && entry.path.ends_with(".list")) {
            continue;
        }
        total = total.saturating_add(*size);
        if total > MAX_LIST_BYTES {
            return Err(BuildError::ListsTooLarge {
                path: entry.path.clone(),
            });
        }
        let text = std::fs::read(source).map_err(|source| BuildError::Hash {
            path: entry.path.clone(),
            source,
        })?;
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let path = String::from_utf8_lossy(line).into_owned();
            // Merged /usr (Debian 12): packages list /sbin/ip, the tree holds /usr/sbin/ip.
            if MERGED_USR_ALIASES.iter().any(|a| path.starts_with(a)) {
                listed.insert(format!("/usr{path}"));
            }
            listed.insert(path);
        }
    }
    Ok(listed)
}

/// Top-level directories that merged-/usr systems make symlinks into /usr.
const MERGED_USR_ALIASES: [&str; 6] = ["/bin/", "/sbin/", "/lib/", "/lib32/", "/lib64/", "/libx32/"];

fn category(path: &str, payload: &HashSet<String>) -> Category {
    let under = |dir: &str| path == dir || path.starts_with(&format!("{dir}/"));
    if payload.contains(path) {
        Category::Payload
    } else if under("/var/lib/dpkg")
        || under("/var/lib/rpm")
        || under("/var/lib/dnf")
        || path == "/var/lib/apt/extended_states"
    {
        Category::PackageDb
    } else if under("/var/lib/apt/lists") || under("/var/cache") {
        Category::Cache
    } else if under("/var/log") {
        Category::Log
    } else {
        Category::Generated
    }
}

/// Where package managers keep their sources and the indices they fetched.
const SOURCE_DIRS: [&str; 2] = ["/etc/apt/sources.list.d", "/etc/yum.repos.d"];
const SOURCE_FILES: [&str; 1] = ["/etc/apt/sources.list"];
const INDEX_DIRS: [&str; 1] = ["/var/lib/apt/lists"];
/// dnf and yum keep one directory per repository, with `repodata/` inside.
const REPO_CACHE_DIRS: [&str; 2] = ["/var/cache/dnf", "/var/cache/yum"];

/// The sources and index files after the run, read from its layers, each by hash.
pub fn repository(layers: &[CaptureLayer]) -> Result<Repository, BuildError> {
    let mut sources = Vec::new();
    for file in SOURCE_FILES {
        sources.extend(hash_guest_file(layers, file)?);
    }
    for dir in SOURCE_DIRS {
        for path in files_in(layers, dir)? {
            sources.extend(hash_guest_file(layers, &path)?);
        }
    }
    let mut paths = Vec::new();
    for dir in INDEX_DIRS {
        paths.extend(files_in(layers, dir)?.into_iter().filter(|p| !p.ends_with("/lock")));
    }
    for cache in REPO_CACHE_DIRS {
        for repo in emulator::capture::list_after(layers, cache)? {
            paths.extend(files_in(layers, &format!("{cache}/{repo}/repodata"))?);
        }
    }
    let mut indices = Vec::new();
    for path in paths {
        let Some(file) = hash_guest_file(layers, &path)? else {
            continue;
        };
        let release_date = if path.ends_with("Release") {
            release_date(layers, &path)?
        } else {
            None
        };
        indices.push(IndexFile { file, release_date });
    }
    Ok(Repository { sources, indices })
}

/// The `Date:` field of an apt `Release`/`InRelease` file (within its first 64 KiB, where the
/// header is).
fn release_date(layers: &[CaptureLayer], guest_path: &str) -> Result<Option<String>, BuildError> {
    let Some((file, at)) = emulator::capture::open_after(layers, guest_path)? else {
        return Ok(None);
    };
    let mut head = Vec::new();
    file.take(64 << 10)
        .read_to_end(&mut head)
        .map_err(|source| BuildError::Hash {
            path: at.display().to_string(),
            source,
        })?;
    Ok(String::from_utf8_lossy(&head)
        .lines()
        .find_map(|l| l.strip_prefix("Date:"))
        .map(|d| d.trim().to_owned()))
}

/// Guest paths of the names in `dir` after the run (regular files are kept by the hashing,
/// which skips anything else), bounded.
fn files_in(layers: &[CaptureLayer], dir: &str) -> Result<Vec<String>, BuildError> {
    let names = emulator::capture::list_after(layers, dir)?;
    Ok(names
        .into_iter()
        .take(MAX_INDEX_FILES)
        .map(|n| format!("{dir}/{n}"))
        .collect())
}

fn hash_guest_file(layers: &[CaptureLayer], guest_path: &str) -> Result<Option<InputFile>, BuildError> {
    let Some((file, at)) = emulator::capture::open_after(layers, guest_path)? else {
        return Ok(None);
    };
    let (bytes, sha256) = sha256_reader(file).map_err(|source| BuildError::Hash {
        path: at.display().to_string(),
        source,
    })?;
    Ok(Some(InputFile {
        path: guest_path.to_owned(),
        bytes,
        sha256,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_follow_the_package_lists_first() {
        let payload: HashSet<String> = ["/usr/sbin/nginx".to_owned(), "/var/lib/dpkg/weird".to_owned()].into();
        assert_eq!(category("/usr/sbin/nginx", &payload), Category::Payload);
        assert_eq!(category("/var/lib/dpkg/weird", &payload), Category::Payload);
        assert_eq!(category("/var/lib/dpkg/status", &payload), Category::PackageDb);
        assert_eq!(category("/var/lib/apt/lists/x_Packages", &payload), Category::Cache);
        assert_eq!(category("/var/cache/debconf/config.dat", &payload), Category::Cache);
        assert_eq!(category("/var/log/dpkg.log", &payload), Category::Log);
        assert_eq!(category("/etc/ld.so.cache", &payload), Category::Generated);
        assert_eq!(category("/var/lib/dpkgx", &payload), Category::Generated);
    }

    #[test]
    fn hashes_are_sha256_of_every_byte() {
        let (n, h) = sha256_reader(&b"abc"[..]).unwrap();
        assert_eq!(n, 3);
        assert_eq!(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
