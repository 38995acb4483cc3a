//! One file per command: its arguments, a call into a library crate, and what it prints.

pub mod bundle;
pub mod check;
pub mod disk;
pub mod docs;
pub mod emulate;
pub mod image;
pub mod inspect;
pub mod isf;
pub mod isolate;
pub mod research;
pub mod restore;

use anyhow::{Context, Result};

/// A scratch directory for read-only mounts of guest disks.
pub(crate) fn tempfile_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("dormouse-disk-")
        .tempdir()
        .context("creating a scratch mount point under $TMPDIR")
}
