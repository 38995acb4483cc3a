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

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::PathBuf;

use serde::Serialize;

use crate::arch::virt::{VirtError, VirtualMemory};
use crate::source::memory::{FRAME_MASK, FrameSpace, GuestKind, PAGE_SHIFT, PhysMemory, VcpuState};

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
/// Budget of the direct-map candidate search (it reads one first leaf per 1 GiB slot).
const DIRECT_MAP_SEARCH_BUDGET: u64 = 1 << 22;
/// Physical pages sampled to verify a direct-map candidate.
const DIRECT_MAP_SAMPLES: u64 = 32;
/// Candidates verified at most (the search usually yields one or two).
const DIRECT_MAP_MAX_CANDIDATES: usize = 8;

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

    /// Finds the kernel's linear map of physical memory (`page_offset_base`) by walking the
    /// kernel half, and verifies it on present physical pages.
    ///
    /// Candidates: for every present 1 GiB slot (level-3 entry) between the lowest base any
    /// kernel uses and `cpu_entry_area`, the first leaf below it gives `vaddr - paddr`; KASLR
    /// places the linear map on a 1 GiB boundary in both paging modes (arch/x86/mm/kaslr.c
    /// since 5.x: `entropy & PUD_MASK`), so only 1 GiB-aligned differences count. Each
    /// candidate (most frequent first) is checked on up to 32 present pages spread over the
    /// image: `translate(base + p) == p`, and `base + 1 GiB + p` must not map `p` again. The
    /// candidate matching most pages wins if at least three quarters of the samples match
    /// (pages outside RAM, such as firmware ROM, may legitimately be unmapped).
    pub fn find_direct_map(&self) -> Result<DirectMap, PagingError> {
        let not_found = |detail: String| PagingError::DirectMapNotFound {
            path: self.mem.path().to_path_buf(),
            root: self.root_pfn << PAGE_SHIFT,
            detail,
        };
        let window = self.mode.direct_map_floor()..=CPU_ENTRY_AREA_BASE - 1;
        let mut votes = BTreeMap::new();
        let mut budget = DIRECT_MAP_SEARCH_BUDGET;
        let top = self.mode.levels();
        self.collect_candidates(self.root_pfn, top, 0, &window, &mut budget, &mut votes);
        if votes.is_empty() {
            return Err(not_found(
                "no 1 GiB-aligned linear mapping in the kernel half (is this the kernel's page table?)".into(),
            ));
        }
        let mut ranked: Vec<(u64, u32)> = votes.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let samples = sample_pfns(self.mem, DIRECT_MAP_SAMPLES);
        let sampled = u32::try_from(samples.len()).unwrap_or(u32::MAX);
        let mut best: Option<DirectMap> = None;
        for &(base, _) in ranked.iter().take(DIRECT_MAP_MAX_CANDIDATES) {
            // A linear map is one-to-one: the same pages again 1 GiB further on mean the
            // tables were read in the wrong paging mode (one entry taken for a whole GiB).
            let aliased = samples.iter().any(|&pfn| {
                let paddr = pfn << PAGE_SHIFT;
                base.checked_add(GIB + paddr)
                    .is_some_and(|va| self.walk(va).is_ok_and(|t| t.paddr == paddr))
            });
            if aliased {
                continue;
            }
            let matched = samples
                .iter()
                .filter(|&&pfn| {
                    let paddr = pfn << PAGE_SHIFT;
                    base.checked_add(paddr)
                        .is_some_and(|va| self.walk(va).is_ok_and(|t| t.paddr == paddr))
                })
                .count();
            let matched = u32::try_from(matched).unwrap_or(u32::MAX);
            if best.is_none_or(|b| matched > b.matched) {
                best = Some(DirectMap { base, sampled, matched });
            }
        }
        match best {
            Some(d) if d.matched >= 1 && u64::from(d.matched) * 4 >= u64::from(d.sampled) * 3 => Ok(d),
            Some(d) => Err(not_found(format!(
                "best candidate {:#x} maps only {} of {} sampled physical pages back to themselves",
                d.base, d.matched, d.sampled
            ))),
            None => Err(not_found("no candidate".into())),
        }
    }

    /// Votes `vaddr - paddr` of the first leaf under each present level-3 entry in `window`.
    fn collect_candidates(
        &self,
        table_pfn: u64,
        level: u8,
        lin_base: u64,
        window: &RangeInclusive<u64>,
        budget: &mut u64,
        votes: &mut BTreeMap<u64, u32>,
    ) {
        let Some(table) = self.mem.page(table_pfn) else { return };
        let span = 1u64 << shift(level);
        for idx in 0..ENTRIES {
            if *budget == 0 {
                return;
            }
            *budget -= 1;
            let lin = lin_base + idx as u64 * span;
            let va = self.mode.sign_extend(lin);
            if va.saturating_add(span - 1) < *window.start() || va > *window.end() {
                continue;
            }
            if level == self.mode.levels() && self.xen_pv && XEN_PV_RESERVED_SLOTS.contains(&idx) {
                continue;
            }
            let e = entry(table, idx);
            if e & PRESENT == 0 {
                continue;
            }
            if level > 3 {
                // A page-size bit is reserved above level 3; such an entry maps nothing.
                if e & PAGE_SIZE_BIT == 0
                    && let Some(child) = self.next_table(e)
                {
                    self.collect_candidates(child, level - 1, lin, window, budget, votes);
                }
                continue;
            }
            let Some((leaf_lin, paddr)) = self.first_leaf(e, level, lin, budget) else {
                continue;
            };
            let base = self.mode.sign_extend(leaf_lin).wrapping_sub(paddr);
            if base % GIB == 0 && window.contains(&base) {
                *votes.entry(base).or_insert(0) += 1;
            }
        }
    }

    /// (linear address, physical address) of the first mapped 4 KiB page under entry `e` at
    /// `level` covering linear address `lin`.
    fn first_leaf(&self, e: u64, level: u8, lin: u64, budget: &mut u64) -> Option<(u64, u64)> {
        if level == 1 || e & PAGE_SIZE_BIT != 0 {
            if large_leaf_reserved_bits(e, level) {
                return None;
            }
            let frame = (e & leaf_frame_mask(level)) >> PAGE_SHIFT;
            return Some((lin, self.frame_to_pfn(frame)? << PAGE_SHIFT));
        }
        let table = self.mem.page(self.next_table(e)?)?;
        let span = 1u64 << shift(level - 1);
        for idx in 0..ENTRIES {
            if *budget == 0 {
                return None;
            }
            *budget -= 1;
            let child = entry(table, idx);
            if child & PRESENT == 0 {
                continue;
            }
            if let Some(found) = self.first_leaf(child, level - 1, lin + idx as u64 * span, budget) {
                return Some(found);
            }
        }
        None
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

/// One table being scanned by [`Regions`].
struct Frame {
    level: u8,
    table_pfn: u64,
    lin_base: u64,
    next: usize,
    last: usize,
}

/// Iterator over the mapped regions of an address space; see [`AddressSpace::regions`].
pub struct Regions<'a, 'm> {
    space: &'a AddressSpace<'m>,
    /// Requested range in linear (non-sign-extended) addresses, widened to whole pages.
    lo: u64,
    hi: u64,
    stack: Vec<Frame>,
    /// (linear address, machine frame, pages left, leaf size) of a large machine-frame leaf
    /// whose pages are translated one by one.
    pending: Option<(u64, u64, u64, PageSize)>,
    /// Run being coalesced.
    current: Option<MappedRegion>,
    /// Error met while a run was open, reported after the run.
    deferred: Option<VirtError>,
    budget: u64,
}

impl<'a, 'm> Regions<'a, 'm> {
    fn new(space: &'a AddressSpace<'m>, range: RangeInclusive<u64>) -> Regions<'a, 'm> {
        let mode = space.mode;
        let half = mode.kernel_half_start();
        // Clamp endpoints in the non-canonical hole to the nearest canonical address; the
        // linear form preserves order across the two halves.
        let start = if mode.is_canonical(*range.start()) {
            *range.start()
        } else {
            half
        };
        let end = if mode.is_canonical(*range.end()) {
            *range.end()
        } else {
            !half
        };
        let (lo, hi) = (mode.linear(start) & !(PAGE - 1), mode.linear(end) | (PAGE - 1));
        let mut regions = Regions {
            space,
            lo,
            hi,
            stack: Vec::with_capacity(5),
            pending: None,
            current: None,
            deferred: None,
            budget: DEFAULT_SCAN_BUDGET,
        };
        if range.start() <= range.end() && lo <= hi {
            let top = mode.levels();
            let s = shift(top);
            regions.stack.push(Frame {
                level: top,
                table_pfn: space.root_pfn,
                lin_base: 0,
                next: (lo >> s) as usize & (ENTRIES - 1),
                last: (hi >> s) as usize & (ENTRIES - 1),
            });
        }
        regions
    }

    /// Limits the entries (and per-page translations) the scan may examine; when the budget
    /// runs out with work left the iterator yields one error and ends.
    pub fn with_budget(mut self, entries: u64) -> Self {
        self.budget = entries;
        self
    }

    /// Takes one unit of budget, or ends the scan with an error.
    fn spend(&mut self, lin: u64) -> Result<(), VirtError> {
        if self.budget == 0 {
            self.stack.clear();
            self.pending = None;
            return Err(VirtError::BadTable {
                vaddr: self.space.mode.sign_extend(lin),
                paddr: self.space.root_pfn << PAGE_SHIFT,
                reason: "region scan stopped here: entry budget exhausted (hostile or very large page tables)".into(),
            });
        }
        self.budget -= 1;
        Ok(())
    }

    /// Next leaf chunk (not yet coalesced), an error for an unreadable table, or `None`.
    fn next_chunk(&mut self) -> Option<Result<MappedRegion, VirtError>> {
        let mode = self.space.mode;
        let space = self.space;
        loop {
            if let Some((lin, frame, left, size)) = self.pending {
                if let Err(e) = self.spend(lin) {
                    return Some(Err(e));
                }
                self.pending = (left > 1).then_some((lin + PAGE, frame + 1, left - 1, size));
                let vaddr = mode.sign_extend(lin);
                return Some(match space.frame_to_pfn(frame) {
                    Some(pfn) => Ok(MappedRegion {
                        vaddr,
                        len: PAGE,
                        paddr: pfn << PAGE_SHIFT,
                        page_size: size,
                    }),
                    None => Err(VirtError::BadTable {
                        vaddr,
                        paddr: 0,
                        reason: format!("large page maps machine frame {frame:#x}, which is not in the guest's p2m"),
                    }),
                });
            }
            let frame = self.stack.last_mut()?;
            if frame.next > frame.last {
                self.stack.pop();
                continue;
            }
            let (level, idx, table_pfn) = (frame.level, frame.next, frame.table_pfn);
            frame.next += 1;
            let span = 1u64 << shift(level);
            let lin = frame.lin_base + idx as u64 * span;
            if let Err(e) = self.spend(lin) {
                return Some(Err(e));
            }
            let table_paddr = table_pfn << PAGE_SHIFT;
            let bad = |reason: String| {
                Some(Err(VirtError::BadTable {
                    vaddr: mode.sign_extend(lin),
                    paddr: table_paddr,
                    reason,
                }))
            };
            let Some(table) = space.mem.page(table_pfn) else {
                self.stack.pop();
                return bad(format!("the level-{level} page table is not in the image"));
            };
            if level == mode.levels() && space.xen_pv && XEN_PV_RESERVED_SLOTS.contains(&idx) {
                continue;
            }
            let e = entry(table, idx);
            if e & PRESENT == 0 {
                continue;
            }
            let leaf = level == 1 || (level <= 3 && e & PAGE_SIZE_BIT != 0);
            if !leaf {
                if e & PAGE_SIZE_BIT != 0 {
                    return bad(format!("level-{level} entry {e:#x} sets the reserved page-size bit"));
                }
                let Some(child) = space.next_table(e) else {
                    return bad(format!(
                        "level-{level} entry {e:#x} names machine frame {:#x}, which is not in the guest's p2m",
                        (e & FRAME_MASK) >> PAGE_SHIFT
                    ));
                };
                let child_shift = shift(level - 1);
                let first = if self.lo > lin {
                    ((self.lo - lin) >> child_shift) as usize
                } else {
                    0
                };
                let last = if self.hi < lin + (span - 1) {
                    ((self.hi - lin) >> child_shift) as usize
                } else {
                    ENTRIES - 1
                };
                self.stack.push(Frame {
                    level: level - 1,
                    table_pfn: child,
                    lin_base: lin,
                    next: first,
                    last,
                });
                continue;
            }
            if large_leaf_reserved_bits(e, level) {
                return bad(format!(
                    "level-{level} entry {e:#x} maps a large page but sets reserved address bits"
                ));
            }
            // Clip the leaf to the requested pages.
            let start = lin.max(self.lo);
            let end = (lin + (span - 1)).min(self.hi);
            let size = PageSize::of_level(level);
            let first_frame = ((e & leaf_frame_mask(level)) >> PAGE_SHIFT) + ((start - lin) >> PAGE_SHIFT);
            let pages = ((end - start) >> PAGE_SHIFT) + 1;
            if space.machine_frames && pages > 1 {
                self.pending = Some((start, first_frame, pages, size));
                continue;
            }
            return match space.frame_to_pfn(first_frame) {
                Some(pfn) => Some(Ok(MappedRegion {
                    vaddr: mode.sign_extend(start),
                    len: end - start + 1,
                    paddr: pfn << PAGE_SHIFT,
                    page_size: size,
                })),
                None => bad(format!(
                    "level-{level} entry {e:#x} maps machine frame {first_frame:#x}, which is not in the guest's p2m"
                )),
            };
        }
    }
}

impl Iterator for Regions<'_, '_> {
    type Item = Result<MappedRegion, VirtError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.deferred.take() {
            return Some(Err(e));
        }
        loop {
            match self.next_chunk() {
                None => return self.current.take().map(Ok),
                Some(Err(e)) => {
                    // Report the run gathered so far first; the error comes on the next call.
                    return Some(match self.current.take() {
                        Some(run) => {
                            self.deferred = Some(e);
                            Ok(run)
                        }
                        None => Err(e),
                    });
                }
                Some(Ok(chunk)) => match &mut self.current {
                    Some(run)
                        if run.page_size == chunk.page_size
                            && run.vaddr.wrapping_add(run.len) == chunk.vaddr
                            && run.paddr.wrapping_add(run.len) == chunk.paddr =>
                    {
                        run.len += chunk.len;
                    }
                    _ => {
                        if let Some(run) = self.current.replace(chunk) {
                            return Some(Ok(run));
                        }
                    }
                },
            }
        }
    }
}

/// Chooses the vCPU, paging mode and kernel top-level table of `mem`.
///
/// The first vCPU with paging on and a recorded root is used (all vCPUs share the kernel
/// half). Mode, in order of trust: CR4.LA57; the Xen PV ABI (4-level only); VMCOREINFO's
/// `NUMBER(pgtable_l5_enabled)`; otherwise the mode under which [`AddressSpace::find_direct_map`]
/// verifies. A wrong mode would index the top table with the wrong address bits, so the
/// probe does not verify by accident: it needs 3/4 of sampled pages to map back to themselves.
///
/// KPTI: Linux with page-table isolation allocates each PGD as an 8 KiB pair, kernel PGD
/// first, user PGD (`PTI_USER_PGTABLE_BIT` = bit 12) second, and CR3 holds the user one while
/// user code runs. Its kernel half maps only the entry trampolines, so kernel addresses need
/// the kernel twin. The twin is taken only when the evidence is specific: the saved root is
/// odd, the page below it is present, both user halves are equal ignoring NX (PTI copies each
/// user entry into both, adding NX to the kernel copy), the user half is in use, and the
/// twin's kernel half has more present entries. Xen PV needs none of this: its vCPU context
/// names the kernel table (`ctrlreg[3]`) and the user table (`ctrlreg[1]`) separately, and
/// Linux disables PTI under Xen PV.
pub fn detect_kernel_root(mem: &dyn PhysMemory) -> Result<KernelRoot, PagingError> {
    let path = || mem.path().to_path_buf();
    let (vcpu, saved) = mem
        .vcpus()
        .iter()
        .filter(|v| v.paging_enabled() != Some(false))
        .find_map(|v| Some((v, v.root_table_pfn?)))
        .ok_or_else(|| PagingError::NoPagingVcpu {
            path: path(),
            recorded: describe_vcpus(mem.vcpus()),
        })?;
    if let Some(efer) = vcpu.efer
        && efer & EFER_LMA == 0
    {
        return Err(PagingError::NotLongMode {
            path: path(),
            vcpu: vcpu.id,
            efer,
        });
    }
    let twin = kpti_kernel_twin(mem, saved);
    let root_pfn = twin.unwrap_or(saved);
    if mem.page(root_pfn).is_none() {
        return Err(PagingError::RootNotPresent {
            path: path(),
            vcpu: vcpu.id,
            pfn: root_pfn,
        });
    }
    let (mode, mode_source) = detect_mode(mem, vcpu, root_pfn)?;
    Ok(KernelRoot {
        vcpu: vcpu.id,
        root_pfn,
        mode,
        mode_source,
        kpti_user_root: twin.is_some(),
    })
}

/// The kernel PGD of a KPTI pair whose user PGD is `pfn`; see [`detect_kernel_root`].
fn kpti_kernel_twin(mem: &dyn PhysMemory, pfn: u64) -> Option<u64> {
    if pfn & 1 == 0 || mem.frame_space() == FrameSpace::Machine || mem.guest_kind() == GuestKind::XenPv {
        return None;
    }
    let user = mem.page(pfn)?;
    let kernel = mem.page(pfn - 1)?;
    let half = ENTRIES / 2;
    let same_user_half = (0..half).all(|i| entry(user, i) & !NO_EXECUTE == entry(kernel, i) & !NO_EXECUTE);
    let user_half_used = (0..half).any(|i| entry(user, i) & PRESENT != 0);
    let kernel_entries = |t: &[u8]| (half..ENTRIES).filter(|&i| entry(t, i) & PRESENT != 0).count();
    (same_user_half && user_half_used && kernel_entries(kernel) > kernel_entries(user)).then_some(pfn - 1)
}

fn detect_mode(mem: &dyn PhysMemory, vcpu: &VcpuState, root_pfn: u64) -> Result<(PagingMode, ModeSource), PagingError> {
    let mode = |l5: bool| if l5 { PagingMode::Level5 } else { PagingMode::Level4 };
    if let Some(cr4) = vcpu.cr4 {
        return Ok((mode(cr4 & CR4_LA57 != 0), ModeSource::Cr4));
    }
    if mem.guest_kind() == GuestKind::XenPv {
        return Ok((PagingMode::Level4, ModeSource::XenPvAbi));
    }
    let l5 = mem.vmcoreinfo().and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("NUMBER(pgtable_l5_enabled)="))
            .and_then(|v| v.trim().parse::<i64>().ok())
    });
    if let Some(l5) = l5 {
        return Ok((mode(l5 != 0), ModeSource::Vmcoreinfo));
    }
    [PagingMode::Level4, PagingMode::Level5]
        .into_iter()
        .find(|&m| AddressSpace::new(mem, root_pfn, m).find_direct_map().is_ok())
        .map(|m| (m, ModeSource::DirectMapProbe))
        .ok_or_else(|| PagingError::ModeUnknown {
            path: mem.path().to_path_buf(),
        })
}

/// Up to `n` present pfns spread evenly over the image's present pages.
fn sample_pfns(mem: &dyn PhysMemory, n: u64) -> Vec<u64> {
    let total = mem.page_count();
    let n = n.min(total);
    // Midpoints of n equal slices; total < 2^52 pages, so the product cannot overflow.
    let mut targets = (0..n).map(|k| (2 * k + 1) * total / (2 * n));
    let mut out = Vec::with_capacity(n as usize);
    let mut next = targets.next();
    let mut before = 0u64;
    for range in mem.present_ranges() {
        let len = range.end - range.start;
        while let Some(t) = next
            && t < before + len
        {
            out.push(range.start + (t - before));
            next = targets.next();
        }
        if next.is_none() {
            break;
        }
        before += len;
    }
    out
}
