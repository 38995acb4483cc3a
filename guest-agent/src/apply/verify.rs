//! Step 1: the bundle's signature, ownership and members checked, and what was read of it kept.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bundle::read::{Bundle, Member};
use bundle::sign::{PublicKey, read_signature, signature_path};

use super::{MAX_BUFFERED_BYTES, Refused, ScriptBytes, Verified};
use crate::journal::check_id;

/// Most bytes of scripts held in memory between verification and running them.
const MAX_SCRIPT_BYTES: u64 = 256 << 20;

/// Bytes read from the bundle at a time while keeping them.
const READ_CHUNK: usize = 128 << 10;

/// Step 1: the bundle file is root's alone, its signature is the pinned key's, every member
/// matches the manifest. Returns the opened bundle, the scripts' bytes, and the files'
/// members unless the payload is too big to keep.
pub(super) fn verify(path: &Path, key: &Path) -> Result<Verified> {
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
