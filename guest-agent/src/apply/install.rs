//! Step 5: the bundle's entries staged beside their places and renamed in, then removals and
//! directory times.

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use bundle::manifest::{EntryType, PayloadEntry};
use bundle::read::Member;
use bundle::tar::Header;

use super::{Timings, Verified, kept, stop_hook, temp_name};
use crate::fs::{Kind, Meta, Root, hex};
use crate::journal::Step;

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
pub(super) fn install(root: &Root, verified: &Verified, timings: &mut Timings) -> Result<u64> {
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
