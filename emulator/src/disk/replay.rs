//! A suspended guest's journaling filesystem, as the guest sees it, without writing its disk.
//!
//! When a guest is saved, its ext3/ext4 journal usually holds committed transactions that are
//! not yet in their home blocks. Mounted with `noload`, the filesystem shows an older state
//! than the guest's own (found in the Xen lab: apt's lists, renamed into place shortly before
//! `xl save`, read back as "Structure needs cleaning"). So the journal is replayed, into a
//! writable view whose writes land in a qcow2 layer ([`QemuExport::start_overlay`]): the
//! guest's disk is only ever read. No device-mapper needed, so it works wherever FUSE does.

use std::fs::OpenOptions;
use std::path::Path;

use super::export::{ExportError, QemuExport};
use super::loopdev::{LoopDevice, LoopError};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("opening the writable view {path}: {source}")]
    View {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Loop(#[from] LoopError),
}

/// A writable block device over a read-only byte range of an image; torn down when dropped
/// (the loop device first, then the export it reads).
#[derive(Debug)]
pub struct ReplayDevice {
    device: LoopDevice,
    _export: QemuExport,
}

impl ReplayDevice {
    /// `size` bytes at `offset` of the raw `image`, writable through a layer in `scratch_dir`.
    pub fn new(image: &Path, offset: u64, size: u64, scratch_dir: &Path) -> Result<Self, ReplayError> {
        let export = QemuExport::start_overlay(image, offset, size, scratch_dir)?;
        let view = OpenOptions::new()
            .read(true)
            .write(true)
            .open(export.path())
            .map_err(|source| ReplayError::View {
                path: export.path().to_owned(),
                source,
            })?;
        let device = LoopDevice::attach_scratch(&view, export.path())?;
        Ok(Self {
            device,
            _export: export,
        })
    }

    pub fn path(&self) -> &Path {
        self.device.path()
    }
}
