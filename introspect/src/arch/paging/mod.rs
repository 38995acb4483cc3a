//! x86-64 page-table walks over guest-physical memory: 4-level and 5-level (LA57) paging with
//! 1 GiB and 2 MiB pages, the choice of the kernel's page-table root (paging mode, KPTI), and
//! the discovery of the kernel's linear map of physical memory without symbols.
//!
//! Every table the walker reads comes from the image and is hostile: a walk is a fixed number
//! of levels (a self-referencing table cannot make it loop), region scans are bounded by an
//! entry budget, and a table page the image lacks is an error, never zeros. For Xen PV
//! dump-cores, whose tables hold machine frames, every frame is translated on its own with
//! [`PhysMemory::table_frame_to_pfn`].
//!
//! Levels are numbered as in the Intel SDM: 5 = PML5, 4 = PML4, 3 = PDPT, 2 = PD, 1 = PT.

mod direct_map;
mod kernel_root;
mod regions;

use std::cell::Cell;
use std::ops::RangeInclusive;
use std::path::PathBuf;

use serde::Serialize;

use crate::arch::virt::{VirtError, VirtualMemory};
use crate::source::memory::{FRAME_MASK, FrameSpace, GuestKind, PAGE_SHIFT, PhysMemory, VcpuState};
pub use kernel_root::detect_kernel_root;
pub use regions::Regions;

const PRESENT: u64 = 1;
/// PS: at levels 3 and 2 the entry maps a 1 GiB / 2 MiB page. At level 1 this bit is PAT.
const PAGE_SIZE_BIT: u64 = 1 << 7;
/// NX; PTI marks the kernel copy of user-half PGD entries with it (`__pti_set_user_pgtbl`).
const NO_EXECUTE: u64 = 1 << 63;
const ENTRIES: usize = 512;
const PAGE: u64 = 1 << PAGE_SHIFT;
const GIB: u64 = 1 << 30;
/// CR4.LA57: 5-level paging.
const CR4_LA57: u64 = 1 << 12;
/// EFER.LMA: long mode active.
const EFER_LMA: u64 = 1 << 10;
/// Start of Linux's `cpu_entry_area` (both paging modes); the KASLR'd regions (direct map,
/// vmalloc, vmemmap) all lie below it (arch/x86/mm/kaslr.c: `vaddr_end`).
const CPU_ENTRY_AREA_BASE: u64 = 0xffff_fe00_0000_0000;
/// Top-level slots Xen reserves for itself in a 64-bit PV guest's L4 (HYPERVISOR_VIRT_START
/// 0xffff800000000000 .. END 0xffff880000000000). They map hypervisor memory, never the guest's.
const XEN_PV_RESERVED_SLOTS: RangeInclusive<usize> = 256..=271;
/// Entries a region scan may examine before it stops: enough for a 256 GiB guest mapped
/// entirely with 4 KiB pages, small enough that a hostile table (every entry pointing at the
/// same full table) cannot stall a caller for more than a few seconds.
pub const DEFAULT_SCAN_BUDGET: u64 = 1 << 26;

/// x86-64 paging mode of an address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PagingMode {
    /// 4-level paging, 48-bit virtual addresses.
    Level4,
    /// 5-level paging (CR4.LA57), 57-bit virtual addresses.
    Level5,
}

impl PagingMode {
    /// Number of table levels walked.
    pub fn levels(self) -> u8 {
        match self {
            PagingMode::Level4 => 4,
            PagingMode::Level5 => 5,
        }
    }

    /// Implemented virtual-address bits.
    pub fn virtual_bits(self) -> u32 {
        match self {
            PagingMode::Level4 => 48,
            PagingMode::Level5 => 57,
        }
    }

    /// Whether bits 63..(virtual_bits - 1) of `vaddr` are all equal.
    pub fn is_canonical(self, vaddr: u64) -> bool {
        self.sign_extend(vaddr) == vaddr
    }

    /// First address of the upper ("kernel") half.
    pub fn kernel_half_start(self) -> u64 {
        !0u64 << (self.virtual_bits() - 1)
    }

    /// Lowest `page_offset_base` any kernel uses in this mode (`__PAGE_OFFSET_BASE`: 4-level
    /// 0xffff880000000000 before 4.20, 0xffff888000000000 since; 5-level 0xff10000000000000,
    /// then 0xff11000000000000); KASLR only moves it up.
    fn direct_map_floor(self) -> u64 {
        match self {
            PagingMode::Level4 => 0xffff_8800_0000_0000,
            PagingMode::Level5 => 0xff10_0000_0000_0000,
        }
    }

    /// Sign-extends a linear address (bits below `virtual_bits`) to canonical form.
    fn sign_extend(self, linear: u64) -> u64 {
        let unused = 64 - self.virtual_bits();
        (((linear << unused) as i64) >> unused) as u64
    }

    /// The bits of `vaddr` the tables index.
    fn linear(self, vaddr: u64) -> u64 {
        vaddr & (u64::MAX >> (64 - self.virtual_bits()))
    }
}

/// Bit position of the lowest virtual-address bit a level-`level` entry indexes.
fn shift(level: u8) -> u32 {
    PAGE_SHIFT + 9 * (u32::from(level) - 1)
}

/// Size of the page a leaf maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum PageSize {
    /// 4 KiB, level-1 leaf.
    Size4K,
    /// 2 MiB, level-2 leaf (PS).
    Size2M,
    /// 1 GiB, level-3 leaf (PS).
    Size1G,
}

impl PageSize {
    /// Bytes in one page of this size.
    pub fn bytes(self) -> u64 {
        1 << self.shift()
    }

    fn shift(self) -> u32 {
        match self {
            PageSize::Size4K => 12,
            PageSize::Size2M => 21,
            PageSize::Size1G => 30,
        }
    }

    fn of_level(level: u8) -> PageSize {
        match level {
            3 => PageSize::Size1G,
            2 => PageSize::Size2M,
            _ => PageSize::Size4K,
        }
    }
}

/// Result of one successful walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// Guest-physical address of the byte at the walked virtual address.
    pub paddr: u64,
    /// Size of the page that maps it.
    pub page_size: PageSize,
    /// The leaf entry as stored (flags: writable bit 1, user bit 2, NX bit 63, ...).
    pub entry: u64,
}

/// A run of virtual memory mapped to contiguous guest-physical memory by leaves of one size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MappedRegion {
    /// First virtual address (canonical).
    pub vaddr: u64,
    /// Length in bytes (a multiple of 4 KiB).
    pub len: u64,
    /// Guest-physical address of `vaddr`.
    pub paddr: u64,
    /// Size of the leaves that map the run.
    pub page_size: PageSize,
}

/// How the paging mode of an image was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModeSource {
    /// CR4.LA57 of the saved vCPU.
    Cr4,
    /// A Xen PV guest: the PV ABI has 4-level guest page tables only.
    XenPvAbi,
    /// `NUMBER(pgtable_l5_enabled)` in the image's VMCOREINFO note.
    Vmcoreinfo,
    /// Neither recorded: the mode under which a linear map of physical memory verifies.
    DirectMapProbe,
}

/// The kernel's page-table root as chosen from the saved vCPU state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct KernelRoot {
    /// vCPU whose CR3 was used.
    pub vcpu: u32,
    /// Guest pfn of the kernel's top-level table.
    pub root_pfn: u64,
    pub mode: PagingMode,
    pub mode_source: ModeSource,
    /// CR3 held a Linux KPTI user PGD (bit 12 set); `root_pfn` is its kernel twin.
    pub kpti_user_root: bool,
    /// No vCPU state recorded a root (a raw image): the table was found by scanning the
    /// image for a kernel top-level table, and `vcpu` means nothing.
    pub scanned: bool,
}

/// The kernel's linear map of all physical memory (`page_offset_base`), as found and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DirectMap {
    /// Virtual address of physical address 0.
    pub base: u64,
    /// Present physical pages sampled for the check.
    pub sampled: u32,
    /// Of those, pages that `base + paddr` translates back to.
    pub matched: u32,
}

impl DirectMap {
    /// Virtual address of `paddr` in the linear map.
    pub fn virt(&self, paddr: u64) -> Option<u64> {
        self.base.checked_add(paddr)
    }
}

/// What the image records of each vCPU's paging state, for errors.
fn describe_vcpus(vcpus: &[VcpuState]) -> String {
    const SHOWN: usize = 4;
    if vcpus.is_empty() {
        return "the image records no vCPU state".into();
    }
    let hex = |v: Option<u64>| v.map_or("not recorded".to_owned(), |v| format!("{v:#x}"));
    let mut text: Vec<String> = vcpus
        .iter()
        .take(SHOWN)
        .map(|v| format!("vCPU {}: CR0 {}, CR3 {}", v.id, hex(v.cr0), hex(v.cr3)))
        .collect();
    if vcpus.len() > SHOWN {
        text.push(format!("{} more", vcpus.len() - SHOWN));
    }
    text.join("; ")
}

/// Why the kernel's address space could not be set up from an image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PagingError {
    #[error(
        "{}: no vCPU has paging enabled with a page-table root (CR0.PG clear or CR3 not recorded; \
         {recorded}); the guest was not running a 64-bit kernel when the image was taken, or its \
         vCPU records are damaged",
        path.display()
    )]
    NoPagingVcpu { path: PathBuf, recorded: String },
    #[error(
        "{}: no kernel page table found: the image records no vCPU state (CR3), and none of the \
         {candidates} page(s) that look like an x86-64 kernel top-level table maps a linear map of \
         physical memory; give the guest's CR3 (dormouse: --cr3 ADDR), or check that the image is \
         the guest's physical memory from address 0",
        path.display()
    )]
    NoKernelTable { path: PathBuf, candidates: usize },
    #[error(
        "{}: vCPU {vcpu} is not in long mode (EFER {efer:#x}, LMA clear); only x86-64 guests are supported",
        path.display()
    )]
    NotLongMode { path: PathBuf, vcpu: u32, efer: u64 },
    #[error(
        "{}: vCPU {vcpu}'s page-table root (pfn {pfn:#x}) is not in the image; the image is incomplete",
        path.display()
    )]
    RootNotPresent { path: PathBuf, vcpu: u32, pfn: u64 },
    #[error(
        "{}: cannot tell 4-level from 5-level paging: the image records neither CR4 nor a VMCOREINFO \
         note, and no linear map of physical memory verifies under either mode",
        path.display()
    )]
    ModeUnknown { path: PathBuf },
    #[error(
        "{}: no linear map of physical memory found under the page table at physical {root:#x}: {detail}",
        path.display()
    )]
    DirectMapNotFound { path: PathBuf, root: u64, detail: String },
}

/// One x86-64 address space: a top-level table in a guest's physical memory.
///
/// It keeps a small translation cache (interior mutability), so it is `Send` but not `Sync`:
/// give each thread its own (they are cheap to create).
#[derive(Clone)]
pub struct AddressSpace<'m> {
    mem: &'m dyn PhysMemory,
    root_pfn: u64,
    mode: PagingMode,
    /// Entries hold machine frames (Xen PV dump-core) that need the p2m inverse.
    machine_frames: bool,
    /// Xen PV with 4-level tables: L4 slots 256..=271 belong to the hypervisor.
    xen_pv: bool,
    /// Translation cache, slot = 2 MiB block number modulo [`CACHE_SLOTS`].
    cache: [Cell<Cached>; CACHE_SLOTS],
}

impl std::fmt::Debug for AddressSpace<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressSpace")
            .field("image", &self.mem.path())
            .field("root_pfn", &format_args!("{:#x}", self.root_pfn))
            .field("mode", &self.mode)
            .finish()
    }
}

/// Virtual block size the translation cache works in (one level-1 table's reach).
const BLOCK: u64 = 1 << 21;
/// Slots of the translation cache (direct-mapped by block number).
const CACHE_SLOTS: usize = 16;

/// What one translation-cache slot remembers about a 2 MiB virtual block. Images never
/// change, so entries never go stale; each address space has its own cache.
#[derive(Clone, Copy)]
enum Cached {
    Empty,
    /// The level-1 table that maps the block: the next walk in it reads one entry.
    Table {
        block: u64,
        pfn: u64,
    },
    /// A large leaf covers the block (physical address of the block's first byte).
    Leaf {
        block: u64,
        paddr: u64,
        size: PageSize,
        entry: u64,
    },
}

impl<'m> AddressSpace<'m> {
    /// The address space whose top-level table is guest page `root_pfn` of `mem`.
    pub fn new(mem: &'m dyn PhysMemory, root_pfn: u64, mode: PagingMode) -> AddressSpace<'m> {
        AddressSpace {
            mem,
            root_pfn,
            mode,
            machine_frames: mem.frame_space() == FrameSpace::Machine,
            xen_pv: mem.guest_kind() == GuestKind::XenPv && mode == PagingMode::Level4,
            cache: std::array::from_fn(|_| Cell::new(Cached::Empty)),
        }
    }

    /// The kernel's address space of `mem`, root and mode chosen by [`detect_kernel_root`].
    pub fn kernel(mem: &'m dyn PhysMemory) -> Result<(AddressSpace<'m>, KernelRoot), PagingError> {
        let root = detect_kernel_root(mem)?;
        Ok((AddressSpace::new(mem, root.root_pfn, root.mode), root))
    }

    /// Another address space of the same image and mode (a process's PGD).
    pub fn with_root(&self, root_pfn: u64) -> AddressSpace<'m> {
        AddressSpace::new(self.mem, root_pfn, self.mode)
    }

    pub fn root_pfn(&self) -> u64 {
        self.root_pfn
    }

    pub fn mode(&self) -> PagingMode {
        self.mode
    }

    pub fn memory(&self) -> &'m dyn PhysMemory {
        self.mem
    }

    /// Mapped regions of the kernel half, in address order.
    pub fn kernel_regions(&self) -> Regions<'_, 'm> {
        self.regions(self.mode.kernel_half_start()..=u64::MAX)
    }

    /// Mapped regions overlapping `range` (clipped to it), in address order, coalescing
    /// physically contiguous leaves of one size. A table page that cannot be read yields an
    /// error item and the scan goes on past it. At most [`DEFAULT_SCAN_BUDGET`] entries are
    /// examined; see [`Regions::with_budget`].
    pub fn regions(&self, range: RangeInclusive<u64>) -> Regions<'_, 'm> {
        Regions::new(self, range)
    }

    fn frame_to_pfn(&self, frame: u64) -> Option<u64> {
        if self.machine_frames {
            self.mem.table_frame_to_pfn(frame)
        } else {
            Some(frame)
        }
    }

    /// Pfn of the table a non-leaf entry points to.
    fn next_table(&self, e: u64) -> Option<u64> {
        self.frame_to_pfn((e & FRAME_MASK) >> PAGE_SHIFT)
    }

    /// Walks the tables for `vaddr` (through the translation cache).
    pub fn walk(&self, vaddr: u64) -> Result<Translation, VirtError> {
        if !self.mode.is_canonical(vaddr) {
            return Err(VirtError::NonCanonical { vaddr });
        }
        let block = vaddr >> 21;
        let slot = &self.cache[block as usize % CACHE_SLOTS];
        let (mut level, mut table_pfn) = match slot.get() {
            Cached::Leaf {
                block: b,
                paddr,
                size,
                entry,
            } if b == block => {
                return Ok(Translation {
                    paddr: paddr | (vaddr & (BLOCK - 1)),
                    page_size: size,
                    entry,
                });
            }
            Cached::Table { block: b, pfn } if b == block => (1, pfn),
            _ => (self.mode.levels(), self.root_pfn),
        };
        loop {
            let table_paddr = table_pfn << PAGE_SHIFT;
            let bad = |reason: String| VirtError::BadTable {
                vaddr,
                paddr: table_paddr,
                reason,
            };
            let table = self
                .mem
                .page(table_pfn)
                .ok_or_else(|| bad(format!("the level-{level} page table is not in the image")))?;
            let idx = ((vaddr >> shift(level)) & (ENTRIES as u64 - 1)) as usize;
            if level == self.mode.levels() && self.xen_pv && XEN_PV_RESERVED_SLOTS.contains(&idx) {
                return Err(bad(format!(
                    "slot {idx} of the level-4 table is reserved for the Xen hypervisor (PV guest)"
                )));
            }
            let e = entry(table, idx);
            if e & PRESENT == 0 {
                return Err(VirtError::NotMapped { vaddr, level });
            }
            if level == 1 || (level <= 3 && e & PAGE_SIZE_BIT != 0) {
                if large_leaf_reserved_bits(e, level) {
                    return Err(bad(format!(
                        "level-{level} entry {e:#x} (slot {idx}) maps a large page but sets reserved address bits"
                    )));
                }
                let page_size = PageSize::of_level(level);
                let mask = page_size.bytes() - 1;
                let target = (e & leaf_frame_mask(level)) | (vaddr & mask & !(PAGE - 1));
                let pfn = self.frame_to_pfn(target >> PAGE_SHIFT).ok_or_else(|| {
                    bad(format!(
                        "level-{level} entry {e:#x} (slot {idx}) maps machine frame {:#x}, which is not \
                         in the guest's p2m (a hypervisor or foreign page)",
                        target >> PAGE_SHIFT
                    ))
                })?;
                let paddr = (pfn << PAGE_SHIFT) | (vaddr & (PAGE - 1));
                // Large leaves are physically contiguous only in pfn space; machine-frame
                // leaves are translated page by page.
                if level > 1 && !self.machine_frames {
                    slot.set(Cached::Leaf {
                        block,
                        paddr: paddr & !(BLOCK - 1),
                        size: page_size,
                        entry: e,
                    });
                }
                return Ok(Translation {
                    paddr,
                    page_size,
                    entry: e,
                });
            }
            if e & PAGE_SIZE_BIT != 0 {
                return Err(bad(format!(
                    "level-{level} entry {e:#x} (slot {idx}) sets the page-size bit, which is reserved at this level"
                )));
            }
            table_pfn = self.next_table(e).ok_or_else(|| {
                bad(format!(
                    "level-{level} entry {e:#x} (slot {idx}) names machine frame {:#x}, which is not in the \
                     guest's p2m",
                    (e & FRAME_MASK) >> PAGE_SHIFT
                ))
            })?;
            level -= 1;
            if level == 1 {
                slot.set(Cached::Table { block, pfn: table_pfn });
            }
        }
    }
}

impl VirtualMemory for AddressSpace<'_> {
    fn translate(&self, vaddr: u64) -> Result<u64, VirtError> {
        self.walk(vaddr).map(|t| t.paddr)
    }

    fn read_virt(&self, vaddr: u64, buf: &mut [u8]) -> Result<(), VirtError> {
        let mut done = 0usize;
        while done < buf.len() {
            let va = vaddr.checked_add(done as u64).ok_or(VirtError::NonCanonical {
                vaddr: vaddr.wrapping_add(done as u64),
            })?;
            let paddr = self.walk(va)?.paddr;
            let in_page = (va & (PAGE - 1)) as usize;
            let n = (PAGE as usize - in_page).min(buf.len() - done);
            let src = self
                .mem
                .page(paddr >> PAGE_SHIFT)
                .and_then(|p| p.get(in_page..in_page + n))
                .ok_or(VirtError::NotInImage { vaddr: va, paddr })?;
            buf[done..done + n].copy_from_slice(src);
            done += n;
        }
        Ok(())
    }
}

/// Physical-frame bits of a leaf at `level`: a large page's frame excludes its offset bits
/// (and bit 12, which is PAT there).
fn leaf_frame_mask(level: u8) -> u64 {
    FRAME_MASK & !((1u64 << shift(level)) - 1)
}

/// Whether a large leaf at `level` sets address bits below its page size (bits 13 up; bit 12
/// is PAT): reserved, the CPU would fault. Reading tables in the wrong paging mode takes
/// 2 MiB entries for 1 GiB ones and trips this.
fn large_leaf_reserved_bits(e: u64, level: u8) -> bool {
    level > 1 && e & FRAME_MASK & ((1u64 << shift(level)) - 1) & !(PAGE - 1) & !(1 << PAGE_SHIFT) != 0
}

/// Entry `idx` of a table page; a short page (which no source serves) reads as not present.
fn entry(table: &[u8], idx: usize) -> u64 {
    table
        .get(idx * 8..idx * 8 + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}
