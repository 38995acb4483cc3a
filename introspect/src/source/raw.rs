//! Flat physical memory: byte offset N of the file is guest-physical address N.

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::source::memory::{
    Backing, FRAME_MASK, GuestKind, ImageFormat, PAGE_SHIFT, PAGE_SIZE, PageMap, PhysMemory, Run, RunData, VcpuState,
};

/// A raw physical memory image. It records no vCPU state: the kernel's page-table root is
/// either given ([`RawMemory::with_cr3`]) or found by a scan of the image
/// ([`crate::detect_kernel_root`]).
pub struct RawMemory {
    path: PathBuf,
    data: Backing,
    pages: PageMap,
    vcpus: Vec<VcpuState>,
}

impl RawMemory {
    /// Maps the raw image at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<RawMemory> {
        let path = path.as_ref();
        Self::parse(path.to_path_buf(), Backing::map(path)?)
    }

    /// Serves `bytes` as physical memory; `label` stands in for the path in errors.
    pub fn from_bytes(label: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<RawMemory> {
        Self::parse(label.into(), Backing::Owned(bytes))
    }

    pub(crate) fn parse(path: PathBuf, data: Backing) -> Result<RawMemory> {
        let len = data.len() as u64;
        let full = len / PAGE_SIZE as u64;
        let mut runs = vec![Run {
            start: 0,
            count: full,
            data: RunData::File(0),
        }];
        // A trailing partial page is served zero-padded rather than dropped.
        let tail = &data[(full as usize) * PAGE_SIZE..];
        if !tail.is_empty() {
            let mut buf = vec![0; PAGE_SIZE].into_boxed_slice();
            buf[..tail.len()].copy_from_slice(tail);
            runs.push(Run {
                start: full,
                count: 1,
                data: RunData::Owned(buf),
            });
        }
        let pages = PageMap::new(runs, len).map_err(|_| Error::Malformed {
            path: path.clone(),
            offset: 0,
            problem: "file too large to be physical memory".into(),
            remedy: "check that this really is a raw memory image",
        })?;
        Ok(RawMemory {
            path,
            data,
            pages,
            vcpus: Vec::new(),
        })
    }

    /// Records `cr3` (the guest-physical address of a top-level page table, low 12 bits of
    /// PCID/flags ignored) as vCPU 0's, so that the kernel's address space is built on it
    /// instead of on a scan. Paging mode and KPTI are then decided as for any image.
    pub fn with_cr3(mut self, cr3: u64) -> RawMemory {
        self.vcpus = vec![VcpuState {
            id: 0,
            cr3: Some(cr3),
            root_table_pfn: Some((cr3 & FRAME_MASK) >> PAGE_SHIFT),
            ..VcpuState::default()
        }];
        self
    }
}

impl PhysMemory for RawMemory {
    fn path(&self) -> &Path {
        &self.path
    }
    fn format(&self) -> ImageFormat {
        ImageFormat::Raw
    }
    fn guest_kind(&self) -> GuestKind {
        GuestKind::Unspecified
    }
    fn page(&self, pfn: u64) -> Option<&[u8]> {
        self.pages.page(&self.data, pfn)
    }
    fn present_ranges(&self) -> Box<dyn Iterator<Item = Range<u64>> + '_> {
        Box::new(self.pages.ranges())
    }
    fn vcpus(&self) -> &[VcpuState] {
        &self.vcpus
    }
}
