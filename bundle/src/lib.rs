//! The bundle (`.dmb`): one zstd-compressed pax archive whose members are, in this order,
//! `manifest.json` (see [`manifest`]), `scripts/<seq>-<package>.<type>` in execution order,
//! then `files/<guest path>` sorted by path with their full metadata in the headers (numeric
//! owner, mode, mtime with nanoseconds, symlinks, hardlinks as links to the member of the
//! first name, device nodes, xattrs as `SCHILY.xattr.*` records). The same inputs give the
//! same bytes. Signed with [`sign`] in minisign's format beside it (`B.dmb.minisig`).
//!
//! This crate is what dom0 and the guest agent share: the manifest, the reader and verifier,
//! signatures, the pax layer, and the framing of the channel the bundle travels on
//! ([`transport`]). Packing a bundle from an emulation is dom0's (`applier::pack`).

pub mod manifest;
pub mod read;
pub mod sign;
pub mod summary;
pub mod tar;
pub mod transport;

use std::path::PathBuf;

/// The first member.
pub const MANIFEST_MEMBER: &str = "manifest.json";
/// Largest manifest read (a full-system upgrade lists some 100k paths in a few tens of MB).
pub const MAX_MANIFEST: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a valid dormouse bundle: {detail}; do not apply it (make it again with `dormouse emulate --out`)", path.display())]
    Format { path: PathBuf, detail: String },
    #[error("{}: signature check failed: {detail}", path.display())]
    Signature { path: PathBuf, detail: String },
    #[error("key {}: {detail}", path.display())]
    Key { path: PathBuf, detail: String },
}

/// The member holding a guest path's entry: `/usr/sbin/nginx` → `files/usr/sbin/nginx`.
pub fn file_member(guest_path: &str) -> String {
    format!("files/{}", guest_path.trim_start_matches('/'))
}

/// Lowercase hex, as manifests write digests.
pub fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}
