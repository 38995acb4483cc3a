//! The guest-physical memory abstraction shared by every image format, and the page index the
//! file-backed formats use to serve pages straight out of their mapping.

use std::fs::File;
use std::ops::{Deref, Range};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::source::domain_config::DomainConfig;

/// log2 of the guest page size; x86 Xen streams and dumps refuse anything else.
pub const PAGE_SHIFT: u32 = 12;
/// Guest page size in bytes.
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;
const PAGE_SIZE_U64: u64 = PAGE_SIZE as u64;

/// Served for pages an image declares present but stores no bytes for (ELF `p_memsz` beyond
/// `p_filesz`), so that `page()` can stay zero-copy.
static ZERO_PAGE: [u8; PAGE_SIZE] = [0; PAGE_SIZE];

/// Which container a memory image came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageFormat {
    /// `xl save` image (xl header, libxl stream v2, libxc stream v2/v3).
    XlSave,
    /// `xl dump-core` ELF (sections `.xen_pages` + `.xen_p2m`/`.xen_pfn`).
    XenCore,
    /// ELF core with PT_LOAD segments by physical address (QEMU dump-guest-memory, kdump).
    ElfCore,
    /// Flat physical memory, byte offset = physical address.
    Raw,
    /// A live, paused Xen domain read through the hypervisor (feature `xen`); not a file, so
    /// [`crate::open_memory_as`] refuses it: use `open_live_domain`.
    XenLive,
}

/// What kind of guest the image says it holds; decides how page tables are to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuestKind {
    /// Xen paravirtualised guest: no second-stage translation, page tables are Xen-validated
    /// and never use superpages above L1.
    XenPv,
    /// Xen HVM (or PVH) guest: ordinary x86 paging over guest-physical frames.
    XenHvm,
    /// The image does not say (QEMU/kdump ELF, raw): treat it as bare-metal x86.
    Unspecified,
}

/// What the frame numbers inside the guest's page tables (and its CR3) refer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FrameSpace {
    /// Guest page frame numbers, directly usable with [`PhysMemory::page`].
    Physical,
    /// Host machine frames (Xen PV memory as dumped by `xl dump-core`); translate each with
    /// [`PhysMemory::machine_to_phys`].
    Machine,
}

/// Saved state of one virtual CPU, as far as the image records it. Every register is
/// optional because each format records a different subset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VcpuState {
    /// vCPU number (for formats without ids: position in the image).
    pub id: u32,
    pub cr0: Option<u64>,
    pub cr2: Option<u64>,
    /// CR3 exactly as the image records it (Xen PV save: normalised `pfn << 12`; Xen PV
    /// dump-core: `mfn << 12`; HVM/QEMU: guest-physical address, low bits PCID/flags).
    pub cr3: Option<u64>,
    pub cr4: Option<u64>,
    pub efer: Option<u64>,
    pub rip: Option<u64>,
    pub rsp: Option<u64>,
    pub fs_base: Option<u64>,
    /// GS base active in the saved context (the kernel's per-CPU base while in the kernel).
    pub gs_base: Option<u64>,
    /// The swapped-out GS base (MSR_KERNEL_GS_BASE; for Xen PV the user-mode GS base).
    pub kernel_gs_base: Option<u64>,
    /// Guest pfn of the top-level page table named by CR3, already translated from machine
    /// frames where needed. For Linux with KPTI this may be the user half (bit 12 set).
    pub root_table_pfn: Option<u64>,
    /// Xen 64-bit PV only: the separate user-mode top-level table (`ctrlreg[1]`).
    pub user_root_table_pfn: Option<u64>,
}

impl VcpuState {
    /// CR0.PG: whether the vCPU had paging on; `None` when CR0 is not recorded.
    pub fn paging_enabled(&self) -> Option<bool> {
        self.cr0.map(|cr0| cr0 & (1 << 31) != 0)
    }
}

/// Mask of the frame bits of CR3 and of page-table entries (bits 12..51).
pub(crate) const FRAME_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Guest-physical memory plus the saved vCPU state of one image.
///
/// Pages are addressed by guest page frame number (pfn = physical address >> 12). Absent
/// pages (not saved, ballooned, not RAM) are `None`, never silently zero, so callers can tell
/// "not in the image" from "zero".
pub trait PhysMemory: Send + Sync {
    /// File the image was read from (for error messages).
    fn path(&self) -> &Path;

    /// Container format.
    fn format(&self) -> ImageFormat;

    /// What kind of guest the image holds.
    fn guest_kind(&self) -> GuestKind;

    /// The 4096 bytes of guest page `pfn`, borrowed from the image when possible.
    fn page(&self, pfn: u64) -> Option<&[u8]>;

    /// Present pfns as ascending, non-overlapping ranges.
    fn present_ranges(&self) -> Box<dyn Iterator<Item = Range<u64>> + '_>;

    /// Saved vCPU states, in vCPU order.
    fn vcpus(&self) -> &[VcpuState];

    /// What page-table entries and CR3 frames refer to.
    fn frame_space(&self) -> FrameSpace {
        FrameSpace::Physical
    }

    /// Guest pfn backing machine frame `mfn`; `None` when unknown or when the image has no
    /// machine-frame map (then frames already are pfns, see [`Self::frame_space`]).
    fn machine_to_phys(&self, _mfn: u64) -> Option<u64> {
        None
    }

    /// VMCOREINFO text carried by the image itself (ELF note), if any.
    fn vmcoreinfo(&self) -> Option<&str> {
        None
    }

    /// Domain configuration embedded in the image (`xl save` only).
    fn domain_config(&self) -> Option<&DomainConfig> {
        None
    }

    /// Guest pfn for a frame number read from a page-table entry or CR3 of this image.
    fn table_frame_to_pfn(&self, frame: u64) -> Option<u64> {
        match self.frame_space() {
            FrameSpace::Physical => Some(frame),
            FrameSpace::Machine => self.machine_to_phys(frame),
        }
    }

    /// Highest present pfn.
    fn max_pfn(&self) -> Option<u64> {
        self.present_ranges().last().map(|r| r.end - 1)
    }

    /// Number of present pages.
    fn page_count(&self) -> u64 {
        self.present_ranges().map(|r| r.end - r.start).sum()
    }

    /// All present pfns in ascending order.
    fn present_pfns(&self) -> Box<dyn Iterator<Item = u64> + '_> {
        Box::new(self.present_ranges().flatten())
    }

    /// Copies guest-physical memory at `paddr` into `buf`, crossing pages as needed; fails
    /// with [`Error::NotPresent`] at the first absent page.
    fn read_phys(&self, paddr: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let addr = paddr.checked_add(done as u64).ok_or_else(|| Error::NotPresent {
                path: self.path().to_path_buf(),
                paddr: u64::MAX,
            })?;
            let in_page = (addr % PAGE_SIZE_U64) as usize;
            let n = (PAGE_SIZE - in_page).min(buf.len() - done);
            let page = self.page(addr >> PAGE_SHIFT).ok_or_else(|| Error::NotPresent {
                path: self.path().to_path_buf(),
                paddr: addr,
            })?;
            let src = page.get(in_page..in_page + n).ok_or_else(|| Error::NotPresent {
                path: self.path().to_path_buf(),
                paddr: addr,
            })?;
            buf[done..done + n].copy_from_slice(src);
            done += n;
        }
        Ok(())
    }
}

/// Bytes of an image: a read-only file mapping, or an owned buffer (fuzzing, tests).
pub(crate) enum Backing {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Deref for Backing {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Backing::Mapped(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

impl Backing {
    /// Maps `path` read-only.
    pub(crate) fn map(path: &Path) -> Result<Backing> {
        let io = |action, source| Error::Io {
            path: path.to_path_buf(),
            action,
            source,
        };
        let file = File::open(path).map_err(|e| io("open", e))?;
        let len = file.metadata().map_err(|e| io("stat", e))?.len();
        if len == 0 {
            // A zero-length mapping is an error on Linux; an empty image is reported by the parser.
            return Ok(Backing::Owned(Vec::new()));
        }
        // SAFETY: the mapping is read-only and private to this process. Memory images are
        // written once (xl save, dump-core) and must not be truncated or rewritten while open;
        // if another process does so anyway we may read changed bytes or get SIGBUS, which is
        // the documented cost of serving multi-GiB images zero-copy.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io("mmap", e))?;
        Ok(Backing::Mapped(map))
    }
}

/// Where the bytes of a run of consecutive pages live.
#[derive(Debug)]
pub(crate) enum RunData {
    /// Consecutive pages in the backing, starting at this byte offset.
    File(u64),
    /// Present but all-zero pages.
    Zero,
    /// Bytes assembled at open time (pages only partly covered by ELF segments).
    Owned(Box<[u8]>),
}

/// `count` consecutive pages starting at `start`.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) start: u64,
    pub(crate) count: u64,
    pub(crate) data: RunData,
}

/// Why runs could not form an index: the pfn where it went wrong.
#[derive(Debug)]
pub(crate) enum PageMapError {
    /// Two runs claim the same pfn.
    Overlap(u64),
    /// A run's pages are not inside the file.
    OutOfFile(u64),
}

/// Sorted, non-overlapping runs of pages; lookup by binary search.
#[derive(Debug, Default)]
pub(crate) struct PageMap {
    runs: Vec<Run>,
}

impl PageMap {
    /// Builds the index; every file run must lie inside `data_len` bytes.
    pub(crate) fn new(mut runs: Vec<Run>, data_len: u64) -> Result<PageMap, PageMapError> {
        runs.retain(|r| r.count > 0);
        runs.sort_by_key(|r| r.start);
        let mut merged: Vec<Run> = Vec::with_capacity(runs.len());
        for run in runs {
            run.start
                .checked_add(run.count)
                .filter(|&e| e <= 1 << (64 - PAGE_SHIFT))
                .ok_or(PageMapError::OutOfFile(run.start))?;
            if let RunData::File(off) = run.data {
                let fits = run
                    .count
                    .checked_mul(PAGE_SIZE_U64)
                    .and_then(|len| off.checked_add(len))
                    .is_some_and(|e| e <= data_len);
                if !fits {
                    return Err(PageMapError::OutOfFile(run.start));
                }
            }
            if let Some(prev) = merged.last_mut() {
                if prev.start + prev.count > run.start {
                    return Err(PageMapError::Overlap(run.start));
                }
                // Coalesce file-contiguous neighbours so lookups stay short.
                if prev.start + prev.count == run.start {
                    match (&prev.data, &run.data) {
                        (RunData::File(a), RunData::File(b)) if *a + prev.count * PAGE_SIZE_U64 == *b => {
                            prev.count += run.count;
                            continue;
                        }
                        (RunData::Zero, RunData::Zero) => {
                            prev.count += run.count;
                            continue;
                        }
                        _ => {}
                    }
                }
            }
            merged.push(run);
        }
        Ok(PageMap { runs: merged })
    }

    /// Builds the index from per-page entries in stream order: a later entry for a pfn
    /// replaces an earlier one, `None` removes the page.
    pub(crate) fn from_page_entries(
        mut entries: Vec<(u64, Option<u64>)>,
        data_len: u64,
    ) -> Result<PageMap, PageMapError> {
        // Stable sort keeps stream order among equal pfns, so the last of each group wins.
        entries.sort_by_key(|e| e.0);
        let mut runs = Vec::new();
        let mut i = 0;
        while i < entries.len() {
            let pfn = entries[i].0;
            let mut last = entries[i].1;
            while i + 1 < entries.len() && entries[i + 1].0 == pfn {
                i += 1;
                last = entries[i].1;
            }
            i += 1;
            if let Some(off) = last {
                runs.push(Run {
                    start: pfn,
                    count: 1,
                    data: RunData::File(off),
                });
            }
        }
        PageMap::new(runs, data_len)
    }

    /// The bytes of page `pfn` from `data` (the backing the runs were built against).
    pub(crate) fn page<'a>(&'a self, data: &'a [u8], pfn: u64) -> Option<&'a [u8]> {
        let idx = self.runs.partition_point(|r| r.start <= pfn).checked_sub(1)?;
        let run = &self.runs[idx];
        let i = pfn - run.start;
        if i >= run.count {
            return None;
        }
        match &run.data {
            RunData::File(off) => crate::bytes::slice_at(data, off + i * PAGE_SIZE_U64, PAGE_SIZE_U64),
            RunData::Zero => Some(&ZERO_PAGE),
            RunData::Owned(buf) => {
                let at = usize::try_from(i).ok()?.checked_mul(PAGE_SIZE)?;
                buf.get(at..at.checked_add(PAGE_SIZE)?)
            }
        }
    }

    /// Present pfn ranges, ascending.
    pub(crate) fn ranges(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        let mut it = self.runs.iter().peekable();
        std::iter::from_fn(move || {
            let first = it.next()?;
            let mut end = first.start + first.count;
            // Adjacent runs of different storage still form one present range.
            while let Some(next) = it.peek() {
                if next.start != end {
                    break;
                }
                end += next.count;
                it.next();
            }
            Some(first.start..end)
        })
    }
}

/// Turns a [`PageMapError`] into a format error naming the file.
pub(crate) fn page_map_error(path: &Path, offset: u64, err: PageMapError, remedy: &'static str) -> Error {
    let problem = match err {
        PageMapError::Overlap(pfn) => format!("page {pfn:#x} is stored twice (overlapping segments)"),
        PageMapError::OutOfFile(pfn) => format!("page {pfn:#x} lies beyond the end of the file"),
    };
    Error::Malformed {
        path: PathBuf::from(path),
        offset,
        problem,
        remedy,
    }
}
