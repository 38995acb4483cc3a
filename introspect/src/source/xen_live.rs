//! A live, **paused** Xen domain as a memory source (cargo feature `xen`): guest memory through
//! libxenforeignmemory, domain facts and vCPU state through libxenctrl. Runs in dom0 as root.
//!
//! The domain must stay paused (`xl pause`, or restored with `xl restore -p`) while it is read:
//! pages are served straight out of foreign mappings of the guest's frames, so a running guest
//! would change them under the reader and the kernel structures walked would not be consistent
//! with each other. [`XenDomain::attach`] refuses a domain that is not paused, but cannot stop
//! someone unpausing it later.
//!
//! - **HVM/PVH**: foreign maps take guest frame numbers, so pfn == gfn; the pfn space is
//!   `0..=xc_domain_maximum_gpfn`, and a gfn that does not map (hole, MMIO, paged out) is absent.
//!   vCPU state comes from the `CPU` record of the HVM context (`struct hvm_hw_cpu`).
//! - **PV (64-bit)**: foreign maps take *machine* frames and the guest's page tables and CR3 hold
//!   machine frames ([`FrameSpace::Machine`]). The pfn -> mfn table is the guest's own p2m,
//!   found through `shared_info.arch` the way libxc's saver does (`xg_sr_save_x86_pv.c`):
//!   the virtually mapped linear list (`p2m_cr3`/`p2m_vaddr`) when the guest publishes one,
//!   else (or if that walk fails) the 3-level `pfn_to_mfn_frame_list_list` tree. Its inverse
//!   serves [`PhysMemory::machine_to_phys`]. The p2m is guest-written data: every frame number
//!   in it is bounds-checked, and the foreign map itself only ever maps frames the domain owns.
//!
//! Pages are mapped lazily in chunks of [`CHUNK_FRAMES`] frames (one `xenforeignmemory_map`
//! call each), cached for the life of the [`XenDomain`] so that [`PhysMemory::page`] can hand
//! out `&[u8]` borrowed from `&self`, and unmapped on drop.
//!
//! Everything that does not need the hypervisor — the chunk cache, the p2m walks, shared-info
//! and vCPU decoding — is written against the small [`ForeignFrames`] trait and unit-tested
//! with synthetic machine memory; the FFI layer at the bottom of this file is thin.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ffi::{c_int, c_void};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use serde::Serialize;
use xenctrl_sys as xc;
use xenforeignmemory_sys as xfm;

use crate::bytes::{le_u32, le_u64};
use crate::error::{Error, Result};
use crate::source::memory::{
    FRAME_MASK, FrameSpace, GuestKind, ImageFormat, PAGE_SHIFT, PAGE_SIZE, PhysMemory, VcpuState,
};
use crate::source::vcpu_context::{VCPU_CONTEXT_X64_LEN, pv64_vcpu};

/// log2 of the frames mapped per `xenforeignmemory_map` call.
const CHUNK_SHIFT: u32 = 10;
/// Frames mapped per `xenforeignmemory_map` call (libxc's `MAX_BATCH_SIZE` is the same).
pub const CHUNK_FRAMES: usize = 1 << CHUNK_SHIFT;
/// log2 of the chunks per lazily allocated group of the chunk table.
const GROUP_SHIFT: u32 = 10;
/// x86-64 physical addresses have at most 52 bits.
const MAX_PFN_LIMIT: u64 = 1 << (52 - PAGE_SHIFT);
/// Slot of a pfn that has no frame to map.
const NO_SLOT: u16 = u16::MAX;
/// A p2m entry naming no frame.
const INVALID_MFN: u64 = u64::MAX;
/// Linux's p2m marks non-RAM entries with these top bits (`FOREIGN_FRAME_BIT`,
/// `IDENTITY_FRAME_BIT`, arch/x86/include/asm/xen/page.h); `INVALID_P2M_ENTRY` is all ones.
const P2M_FLAG_BITS_64: u64 = 0b11 << 62;
const P2M_FLAG_BITS_32: u32 = 0b11 << 30;
/// Offset of `arch` in the 64-bit `struct shared_info` (public/xen.h, checked in the tests).
const SHARED_INFO_ARCH: u64 = 3088;
/// Xen's own part of the 64-bit PV address space (public/arch-x86/xen-x86_64.h).
const HYPERVISOR_VIRT_START_X86_64: u64 = 0xffff_8000_0000_0000;
const HYPERVISOR_VIRT_END_X86_64: u64 = 0xffff_8800_0000_0000;
/// `HVM_SAVE_CODE(CPU)` (public/arch-x86/hvm/save.h).
const HVM_SAVE_CODE_CPU: u16 = 2;
/// Linux `PROT_READ`.
const PROT_READ: c_int = 1;

// ---------------------------------------------------------------------------------------------
// Hypervisor-free core
// ---------------------------------------------------------------------------------------------

/// Maps frames of one foreign domain read-only. The live implementation is
/// libxenforeignmemory; tests stand in synthetic machine memory.
pub(crate) trait ForeignFrames: Send + Sync {
    /// One mapping of a list of frames; unmapped when dropped.
    type Mapping: FrameMapping;

    /// Maps `frames` (gfns for HVM, mfns for PV) read-only as one mapping. `Err` when the
    /// call failed as a whole; frames that failed on their own read as `None` from the mapping.
    fn map(&self, frames: &[u64]) -> io::Result<Self::Mapping>;
}

/// The frames of one [`ForeignFrames::map`] call.
pub(crate) trait FrameMapping: Send + Sync {
    /// The [`PAGE_SIZE`] bytes of frame `index` of the mapping, `None` if it failed to map.
    fn frame(&self, index: usize) -> Option<&[u8]>;
}

/// The mapped frames of one chunk of pfns.
struct Chunk<M> {
    /// `None` when the chunk has no frame to map or the whole map call failed.
    mapping: Option<M>,
    /// Per pfn of the chunk: index of its frame in `mapping`, or [`NO_SLOT`].
    slots: Box<[u16]>,
}

/// Chunks by index, each initialised at most once, in groups allocated on first use so that a
/// sparse pfn space (HVM guests with frames mapped high) costs little.
struct ChunkTable<M> {
    groups: Box<[OnceLock<ChunkGroup<M>>]>,
}

/// `1 << GROUP_SHIFT` chunk cells.
type ChunkGroup<M> = Box<[OnceLock<Chunk<M>>]>;

impl<M> ChunkTable<M> {
    fn new(pfn_limit: u64) -> ChunkTable<M> {
        let chunks = pfn_limit.div_ceil(CHUNK_FRAMES as u64);
        let groups = chunks.div_ceil(1 << GROUP_SHIFT);
        ChunkTable {
            groups: (0..groups).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Chunk `index`, built by `init` on first use (concurrent first users wait for one init).
    fn get_or_init(&self, index: u64, init: impl FnOnce() -> Chunk<M>) -> Option<&Chunk<M>> {
        let group = self.groups.get(usize::try_from(index >> GROUP_SHIFT).ok()?)?;
        let group = group.get_or_init(|| (0..1usize << GROUP_SHIFT).map(|_| OnceLock::new()).collect());
        let cell = group.get(usize::try_from(index & ((1 << GROUP_SHIFT) - 1)).ok()?)?;
        Some(cell.get_or_init(init))
    }
}

/// How pfns become the frame numbers the foreign map takes.
enum Translation {
    /// HVM/PVH: gfn == pfn.
    Identity,
    /// PV: the guest's p2m (pfn -> mfn, [`INVALID_MFN`] where none) and its inverse.
    Pv { p2m: Vec<u64>, m2p: HashMap<u64, u64> },
}

/// Guest memory over any [`ForeignFrames`]: the part of [`XenDomain`] tests can drive.
struct LiveMemory<F: ForeignFrames> {
    label: PathBuf,
    kind: GuestKind,
    frames: F,
    translation: Translation,
    /// One past the highest pfn.
    pfn_limit: u64,
    chunks: ChunkTable<F::Mapping>,
    vcpus: Vec<VcpuState>,
    /// The first whole-chunk map failure, for diagnostics (such chunks read as absent).
    first_map_error: OnceLock<String>,
}

impl<F: ForeignFrames> LiveMemory<F> {
    fn new(label: PathBuf, kind: GuestKind, frames: F, translation: Translation, pfn_limit: u64) -> LiveMemory<F> {
        let pfn_limit = match &translation {
            Translation::Identity => pfn_limit,
            Translation::Pv { p2m, .. } => p2m.len() as u64,
        }
        .min(MAX_PFN_LIMIT);
        LiveMemory {
            label,
            kind,
            frames,
            translation,
            pfn_limit,
            chunks: ChunkTable::new(pfn_limit),
            vcpus: Vec::new(),
            first_map_error: OnceLock::new(),
        }
    }

    /// The frame the foreign map takes for `pfn`.
    fn frame_of(&self, pfn: u64) -> Option<u64> {
        match &self.translation {
            Translation::Identity => Some(pfn),
            Translation::Pv { p2m, .. } => {
                let mfn = *p2m.get(usize::try_from(pfn).ok()?)?;
                (mfn != INVALID_MFN).then_some(mfn)
            }
        }
    }

    fn machine_to_phys(&self, mfn: u64) -> Option<u64> {
        match &self.translation {
            Translation::Identity => None,
            Translation::Pv { m2p, .. } => m2p.get(&mfn).copied(),
        }
    }

    fn load_chunk(&self, index: u64) -> Chunk<F::Mapping> {
        let first = index << CHUNK_SHIFT;
        let end = first.saturating_add(CHUNK_FRAMES as u64).min(self.pfn_limit);
        let mut slots = vec![NO_SLOT; CHUNK_FRAMES].into_boxed_slice();
        let mut list = Vec::with_capacity(CHUNK_FRAMES);
        for pfn in first..end {
            if let Some(frame) = self.frame_of(pfn) {
                // At most CHUNK_FRAMES (1024) entries: the index fits in u16 below NO_SLOT.
                slots[(pfn - first) as usize] = list.len() as u16;
                list.push(frame);
            }
        }
        let mapping = if list.is_empty() {
            None
        } else {
            match self.frames.map(&list) {
                Ok(m) => Some(m),
                Err(e) => {
                    let _ = self.first_map_error.set(format!(
                        "xenforeignmemory_map of {} frames for pfns {first:#x}..{end:#x} failed: {e}",
                        list.len()
                    ));
                    None
                }
            }
        };
        Chunk { mapping, slots }
    }

    fn chunk(&self, index: u64) -> Option<&Chunk<F::Mapping>> {
        self.chunks.get_or_init(index, || self.load_chunk(index))
    }

    fn page(&self, pfn: u64) -> Option<&[u8]> {
        if pfn >= self.pfn_limit {
            return None;
        }
        let chunk = self.chunk(pfn >> CHUNK_SHIFT)?;
        let slot = *chunk.slots.get((pfn & (CHUNK_FRAMES as u64 - 1)) as usize)?;
        if slot == NO_SLOT {
            return None;
        }
        chunk.mapping.as_ref()?.frame(usize::from(slot))
    }

    /// Present pfn ranges; maps every chunk on the way (the mappings stay cached).
    fn present_ranges(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        let mut pfn = 0u64;
        std::iter::from_fn(move || {
            // Find the next present pfn, skipping chunks that mapped nothing.
            let start = loop {
                if pfn >= self.pfn_limit {
                    return None;
                }
                if self.chunk(pfn >> CHUNK_SHIFT).is_none_or(|c| c.mapping.is_none()) {
                    pfn = ((pfn >> CHUNK_SHIFT) + 1) << CHUNK_SHIFT;
                    continue;
                }
                if self.page(pfn).is_some() {
                    break pfn;
                }
                pfn += 1;
            };
            pfn = start + 1;
            while pfn < self.pfn_limit && self.page(pfn).is_some() {
                pfn += 1;
            }
            Some(start..pfn)
        })
    }
}

/// The fields of the 64-bit `shared_info.arch` (`struct arch_shared_info`) the p2m needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ArchSharedInfo {
    /// Number of pfns the p2m covers (the name is Xen's; it is a count).
    max_pfn: u64,
    pfn_to_mfn_frame_list_list: u64,
    p2m_cr3: u64,
    p2m_vaddr: u64,
}

/// Decodes `shared_info.arch` of a 64-bit guest from its shared-info page.
fn parse_arch_shared_info(page: &[u8]) -> Option<ArchSharedInfo> {
    let q = |o: u64| le_u64(page, SHARED_INFO_ARCH + o);
    Some(ArchSharedInfo {
        max_pfn: q(0)?,
        pfn_to_mfn_frame_list_list: q(8)?,
        p2m_cr3: q(24)?,
        p2m_vaddr: q(32)?,
    })
}

/// Which p2m representation a PV guest's table was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum P2mSource {
    /// The virtually mapped linear list (`shared_info.arch.p2m_cr3` / `p2m_vaddr`).
    LinearList,
    /// The 3-level `pfn_to_mfn_frame_list_list` tree.
    FrameListTree,
}

/// Limits a p2m walk works within.
#[derive(Clone, Copy, Debug)]
struct P2mLimits {
    /// Highest machine frame of the host (`xc_maximum_ram_page`).
    max_mfn: u64,
    /// Most pfns accepted (bounds the table a hostile `max_pfn` could make us allocate).
    max_pfns: u64,
}

/// A bad-mfn check shared by every level: machine frame 0 belongs to Xen, and no frame lies
/// above the host's highest.
fn check_mfn(mfn: u64, limits: P2mLimits, what: impl FnOnce() -> String) -> Result<u64, String> {
    if mfn == 0 || mfn > limits.max_mfn {
        Err(format!(
            "{} holds bad machine frame {mfn:#x} (host frames end at {:#x})",
            what(),
            limits.max_mfn
        ))
    } else {
        Ok(mfn)
    }
}

/// Maps `mfns` in batches and hands each frame's bytes to `f(index, bytes)`; fails naming
/// `what` at the first frame that does not map.
fn for_each_frame<F: ForeignFrames>(
    frames: &F,
    mfns: &[u64],
    what: &str,
    mut f: impl FnMut(usize, &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    for (batch_no, batch) in mfns.chunks(CHUNK_FRAMES).enumerate() {
        let mapping = frames
            .map(batch)
            .map_err(|e| format!("mapping {} frames of the {what} failed: {e}", batch.len()))?;
        for (i, &mfn) in batch.iter().enumerate() {
            let bytes = mapping
                .frame(i)
                .ok_or_else(|| format!("machine frame {mfn:#x} of the {what} does not map"))?;
            f(batch_no * CHUNK_FRAMES + i, bytes)?;
        }
    }
    Ok(())
}

/// One frame's bytes, copied.
fn read_frame<F: ForeignFrames>(frames: &F, mfn: u64, what: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for_each_frame(frames, &[mfn], what, |_, bytes| {
        out = bytes.to_vec();
        Ok(())
    })?;
    Ok(out)
}

/// Entry `index` of a table of `width`-byte guest words; 32-bit invalid/flagged entries
/// widen to [`INVALID_MFN`] so that one check serves both widths.
fn guest_word(page: &[u8], index: usize, width: usize) -> Option<u64> {
    let off = (index * width) as u64;
    if width == 4 {
        let w = le_u32(page, off)?;
        Some(if w & P2M_FLAG_BITS_32 != 0 {
            INVALID_MFN
        } else {
            u64::from(w)
        })
    } else {
        le_u64(page, off)
    }
}

/// A p2m leaf entry as a usable mfn: invalid, foreign, identity and out-of-range entries name
/// no page of this guest.
fn leaf_mfn(entry: u64, max_mfn: u64) -> u64 {
    if entry & P2M_FLAG_BITS_64 != 0 || entry == 0 || entry > max_mfn {
        INVALID_MFN
    } else {
        entry
    }
}

/// Reads the p2m leaf frames `leaves` (each `PAGE_SIZE / width` entries) into a table of
/// `nr_pfns` entries.
fn read_p2m_leaves<F: ForeignFrames>(
    frames: &F,
    leaves: &[u64],
    width: usize,
    nr_pfns: u64,
    max_mfn: u64,
) -> Result<Vec<u64>, String> {
    let fpp = PAGE_SIZE / width;
    let len = usize::try_from(nr_pfns).map_err(|_| format!("{nr_pfns} pfns do not fit in memory"))?;
    let mut p2m = vec![INVALID_MFN; len];
    for_each_frame(frames, leaves, "p2m", |leaf, bytes| {
        let base = leaf * fpp;
        for j in 0..fpp.min(len.saturating_sub(base)) {
            let entry = guest_word(bytes, j, width).ok_or("short p2m frame")?;
            p2m[base + j] = leaf_mfn(entry, max_mfn);
        }
        Ok(())
    })?;
    Ok(p2m)
}

/// The p2m from the 3-level frame-list tree, as libxc's `map_p2m_tree`: the top page lists
/// mid pages, which list the leaf pages holding one mfn per pfn.
fn p2m_from_tree<F: ForeignFrames>(
    frames: &F,
    width: usize,
    fll_mfn: u64,
    nr_pfns: u64,
    limits: P2mLimits,
) -> Result<Vec<u64>, String> {
    let fpp = (PAGE_SIZE / width) as u64;
    let mut max_pfn = nr_pfns
        .checked_sub(1)
        .ok_or("shared_info.arch.max_pfn is 0 (the guest published no p2m size)")?;
    let fll_entries = max_pfn / (fpp * fpp) + 1;
    if fll_entries > fpp {
        return Err(format!("max_pfn {max_pfn:#x} is too large for a p2m tree"));
    }
    check_mfn(fll_mfn, limits, || "shared_info.arch.pfn_to_mfn_frame_list_list".into())?;
    let fll = read_frame(frames, fll_mfn, "p2m frame list list")?;
    let mut mids = Vec::new();
    let (mut saved_mfn, mut saved_x) = (0, 0);
    for x in 0..fll_entries as usize {
        let mfn = guest_word(&fll, x, width).ok_or("short p2m frame list list")?;
        check_mfn(mfn, limits, || format!("p2m frame list list entry {x}"))?;
        if mfn != saved_mfn {
            (saved_mfn, saved_x) = (mfn, x as u64);
        }
        mids.push(mfn);
    }
    // Trailing identical top entries all name the same all-invalid mid page (real mid pages
    // cannot be shared): drop them, as libxc does, instead of reading empty leaves.
    max_pfn = max_pfn.min((saved_x + 1) * fpp * fpp - 1);
    mids.truncate((max_pfn / (fpp * fpp) + 1) as usize);
    let fl_entries = (max_pfn / fpp + 1) as usize;
    let mut leaves = Vec::with_capacity(fl_entries);
    for_each_frame(frames, &mids, "p2m frame list", |mid, bytes| {
        for j in 0..fpp as usize {
            let x = mid * fpp as usize + j;
            if x >= fl_entries {
                break;
            }
            let mfn = guest_word(bytes, j, width).ok_or("short p2m frame list")?;
            leaves.push(check_mfn(mfn, limits, || format!("p2m frame list entry {x}"))?);
        }
        Ok(())
    })?;
    read_p2m_leaves(frames, &leaves, width, max_pfn + 1, limits.max_mfn)
}

/// The p2m from the virtually mapped linear list of a 64-bit guest, as libxc's
/// `map_p2m_list`: walk the guest page tables rooted at `p2m_cr3` (machine frames) for the
/// virtual range `p2m_vaddr..` holding one 8-byte mfn per pfn.
fn p2m_from_list<F: ForeignFrames>(
    frames: &F,
    p2m_cr3: u64,
    p2m_vaddr: u64,
    nr_pfns: u64,
    limits: P2mLimits,
) -> Result<Vec<u64>, String> {
    const FPP: u64 = (PAGE_SIZE / 8) as u64;
    let max_pfn = nr_pfns
        .checked_sub(1)
        .ok_or("shared_info.arch.max_pfn is 0 (the guest published no p2m size)")?;
    let p2m_frames = max_pfn / FPP + 1;
    let canonical = |va: u64| {
        let top = va >> 47;
        top == 0 || top == 0x1_ffff
    };
    p2m_frames
        .checked_mul(PAGE_SIZE as u64)
        .and_then(|len| p2m_vaddr.checked_add(len - 1))
        .filter(|&end| canonical(p2m_vaddr) && canonical(end) && p2m_vaddr & (PAGE_SIZE as u64 - 1) == 0)
        .filter(|&end| !(p2m_vaddr <= HYPERVISOR_VIRT_END_X86_64 && end > HYPERVISOR_VIRT_START_X86_64))
        .ok_or_else(|| format!("bad virtual p2m address range from {p2m_vaddr:#x} for {nr_pfns:#x} pfns"))?;
    // xen_cr3_to_pfn() of a 64-bit guest.
    let root = check_mfn(p2m_cr3 >> PAGE_SHIFT, limits, || "shared_info.arch.p2m_cr3".into())?;
    let mut tables: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut leaves = Vec::with_capacity(p2m_frames as usize);
    for i in 0..p2m_frames {
        // Cannot overflow: the whole range was checked above.
        let va = p2m_vaddr + i * PAGE_SIZE as u64;
        let mut mfn = root;
        for level in (1..=4u32).rev() {
            let table = match tables.entry(mfn) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(read_frame(frames, mfn, "page tables mapping the p2m list")?),
            };
            let index = (va >> (PAGE_SHIFT + 9 * (level - 1))) & 0x1ff;
            let pte = le_u64(table, index * 8).ok_or("short page-table frame")?;
            let at = || format!("the level-{level} entry for p2m address {va:#x}");
            if pte & 1 == 0 {
                return Err(format!("{} is not present", at()));
            }
            if level > 1 && pte & (1 << 7) != 0 {
                return Err(format!("{} maps a superpage, which PV guests cannot use", at()));
            }
            mfn = check_mfn((pte & FRAME_MASK) >> PAGE_SHIFT, limits, at)?;
        }
        leaves.push(mfn);
    }
    read_p2m_leaves(frames, &leaves, 8, nr_pfns, limits.max_mfn)
}

/// The p2m of a 64-bit PV guest: the linear list when published (libxc's choice), falling
/// back to the tree if that walk fails and the tree is there.
fn build_pv_p2m<F: ForeignFrames>(
    frames: &F,
    arch: &ArchSharedInfo,
    limits: P2mLimits,
) -> Result<(Vec<u64>, P2mSource), String> {
    if arch.max_pfn > limits.max_pfns {
        return Err(format!(
            "shared_info.arch.max_pfn {:#x} exceeds the {:#x} pfns accepted for this domain's size",
            arch.max_pfn, limits.max_pfns
        ));
    }
    let fll = arch.pfn_to_mfn_frame_list_list;
    // Linux sets the frame list list to ~0 when it keeps only the linear list
    // (SIF_VIRT_P2M_4TOOLS).
    let has_tree = fll != 0 && fll != u64::MAX;
    let list_error = if arch.p2m_cr3 != 0 {
        match p2m_from_list(frames, arch.p2m_cr3, arch.p2m_vaddr, arch.max_pfn, limits) {
            Ok(p2m) => return Ok((p2m, P2mSource::LinearList)),
            Err(e) if !has_tree => return Err(format!("reading the linear p2m list: {e}")),
            Err(e) => Some(e),
        }
    } else {
        None
    };
    if !has_tree {
        return Err("the guest publishes neither a p2m list nor a p2m frame list list".into());
    }
    p2m_from_tree(frames, 8, fll, arch.max_pfn, limits)
        .map(|p2m| (p2m, P2mSource::FrameListTree))
        .map_err(|e| match list_error {
            Some(l) => format!("reading the linear p2m list: {l}; reading the p2m tree: {e}"),
            None => format!("reading the p2m tree: {e}"),
        })
}

/// The inverse of a p2m. A guest may list one mfn twice (it cannot own it twice): the lowest
/// pfn wins, so the result does not depend on hash order.
fn invert_p2m(p2m: &[u64]) -> HashMap<u64, u64> {
    let mut m2p = HashMap::with_capacity(p2m.len());
    for (pfn, &mfn) in p2m.iter().enumerate() {
        if mfn != INVALID_MFN {
            m2p.entry(mfn).or_insert(pfn as u64);
        }
    }
    m2p
}

/// vCPU state of a 64-bit PV guest from the bytes of its `vcpu_guest_context_x86_64`, as
/// `XEN_DOMCTL_getvcpucontext` returns it: `ctrlreg[3]` is `xen_pfn_to_cr3(mfn)` (`mfn << 12`
/// for 64-bit guests), `ctrlreg[1]` likewise for the user-mode table; both roots are
/// translated to pfns through `m2p`. `cr3` is kept as Xen reports it (a machine address).
fn pv_vcpu_state(ctx: &[u8], id: u32, m2p: &HashMap<u64, u64>) -> Option<VcpuState> {
    // Same offsets as X86_PV_VCPU_BASIC records of a save image; only the frame space differs
    // (the saver normalises to pfns, Xen hands out mfns).
    pv64_vcpu(ctx, 0, id, |mfn| m2p.get(&mfn).copied())
}

/// Fields of `struct hvm_hw_cpu` (public/arch-x86/hvm/save.h) a vCPU state needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct HvmCpu {
    cr0: u64,
    cr2: u64,
    cr3: u64,
    cr4: u64,
    efer: u64,
    rip: u64,
    rsp: u64,
    fs_base: u64,
    gs_base: u64,
    shadow_gs: u64,
}

/// vCPU state of an HVM/PVH guest: CR3 is a guest-physical address.
fn hvm_vcpu_state(cpu: &HvmCpu, id: u32) -> VcpuState {
    VcpuState {
        id,
        cr0: Some(cpu.cr0),
        cr2: Some(cpu.cr2),
        cr3: Some(cpu.cr3),
        cr4: Some(cpu.cr4),
        efer: Some(cpu.efer),
        rip: Some(cpu.rip),
        rsp: Some(cpu.rsp),
        fs_base: Some(cpu.fs_base),
        gs_base: Some(cpu.gs_base),
        kernel_gs_base: Some(cpu.shadow_gs),
        // Without CR0.PG, CR3 names no page table.
        root_table_pfn: (cpu.cr0 & (1 << 31) != 0).then_some((cpu.cr3 & FRAME_MASK) >> PAGE_SHIFT),
        user_root_table_pfn: None,
    }
}

/// The domain size-derived bound on the pfns a PV p2m may claim: generous for holes (4x the
/// domain's pages, at least 64 GiB of pfn space), never above 16 TiB.
fn pv_pfn_cap(nr_pages: u64) -> u64 {
    nr_pages.saturating_mul(4).clamp(1 << 24, 1 << 32)
}

// ---------------------------------------------------------------------------------------------
// The public memory source
// ---------------------------------------------------------------------------------------------

/// What [`XenDomain::attach`] learnt about the domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct XenLiveInfo {
    pub domid: u32,
    /// Domain handle (the UUID `xl list -v` shows).
    pub uuid: String,
    /// HVM or PVH (`XEN_DOMINF_hvm_guest`); otherwise PV.
    pub hvm: bool,
    /// PV only: guest word size in bytes (`xc_domain_get_guest_width`).
    pub guest_width: Option<u32>,
    /// Pages currently allocated to the domain.
    pub tot_pages: u64,
    /// The domain's page limit.
    pub max_pages: u64,
    pub max_vcpu_id: u32,
    /// One past the highest pfn served.
    pub pfn_limit: u64,
    /// PV only: where the guest's p2m was read from.
    pub p2m_source: Option<P2mSource>,
}

/// A live, **paused** Xen domain read through the hypervisor, from dom0 as root.
///
/// The domain must stay paused (`xl pause`, or `xl restore -p`) while it is read: pages are
/// borrowed straight from foreign mappings of the guest's frames, so a running guest would
/// change them under the reader. [`XenDomain::attach`] refuses a domain that is not paused.
///
/// - HVM/PVH: pfn == gfn over `0..=xc_domain_maximum_gpfn`; gfns that do not map are absent.
///   vCPU state comes from the HVM context's `CPU` records (CR3 guest-physical).
/// - 64-bit PV: pages are found through the guest's own p2m (linear list or frame-list tree,
///   see [`P2mSource`]); page tables and CR3 hold machine frames ([`FrameSpace::Machine`]),
///   translated by [`PhysMemory::machine_to_phys`]. 32-bit PV guests are refused.
///
/// Pages are mapped lazily, [`CHUNK_FRAMES`] at a time, and stay mapped until the value is
/// dropped; [`PhysMemory::present_ranges`] maps the whole guest to find out what is there.
pub struct XenDomain {
    info: XenLiveInfo,
    mem: LiveMemory<XenFrames>,
}

impl XenDomain {
    /// Attaches to domain `domid`, which must exist and be paused; reads its vCPU state and
    /// (PV) its p2m. Guest pages are mapped later, on first access.
    pub fn attach(domid: u32) -> Result<XenDomain> {
        let xc = XcHandle::open(domid)?;
        let dom = xc.dominfo()?;
        let not_usable = |problem: String, remedy: &'static str| Error::XenDomain { domid, problem, remedy };
        let flag = |f: u32| dom.flags & f != 0;
        if flag(xc::XEN_DOMINF_dying) {
            return Err(not_usable(
                "the domain is dying".into(),
                "wait for it to go away; there is nothing left to read",
            ));
        }
        if !flag(xc::XEN_DOMINF_paused) {
            return Err(not_usable(
                "the domain is running (not paused)".into(),
                "reading a running guest gives an inconsistent view of its memory: pause it with \
                 `xl pause <domain>` (and `xl unpause` afterwards), or restore it paused with \
                 `xl restore -p`",
            ));
        }
        // Set for HVM and PVH guests alike.
        let hvm = flag(xc::XEN_DOMINF_hvm_guest);
        let frames = XenFrames {
            fmem: Arc::new(FmemHandle::open(domid)?),
            domid,
        };
        let label = PathBuf::from(format!("xen-domain:{domid}"));
        let mut info = XenLiveInfo {
            domid,
            uuid: format_uuid(&dom.handle),
            hvm,
            guest_width: None,
            tot_pages: dom.tot_pages,
            max_pages: dom.max_pages,
            max_vcpu_id: dom.max_vcpu_id,
            pfn_limit: 0,
            p2m_source: None,
        };
        let mem = if hvm {
            let max_gpfn = xc.maximum_gpfn()?;
            let pfn_limit = max_gpfn.checked_add(1).filter(|&l| l <= MAX_PFN_LIMIT).ok_or_else(|| {
                not_usable(
                    format!("xc_domain_maximum_gpfn reports {max_gpfn:#x}, beyond 52-bit physical addresses"),
                    "this is not a sane x86 guest; report it",
                )
            })?;
            let mut mem = LiveMemory::new(label, GuestKind::XenHvm, frames, Translation::Identity, pfn_limit);
            for vcpu in xc.online_vcpus(dom.max_vcpu_id)? {
                let cpu = xc.hvm_cpu(vcpu)?;
                mem.vcpus.push(hvm_vcpu_state(&cpu, vcpu));
            }
            mem
        } else {
            let width = xc.guest_width()?;
            info.guest_width = Some(width);
            if width != 8 {
                return Err(not_usable(
                    format!("the domain is a {}-bit PV guest", width * 8),
                    "only 64-bit PV guests are supported; save it with `xl save` and read the image",
                ));
            }
            let limits = P2mLimits {
                max_mfn: xc.maximum_ram_page()?,
                max_pfns: pv_pfn_cap(dom.tot_pages),
            };
            let shinfo = read_frame(&frames, dom.shared_info_frame, "shared_info page")
                .map_err(|e| not_usable(e, "is the domain fully built? check `xl list`"))?;
            let arch = parse_arch_shared_info(&shinfo)
                .ok_or_else(|| not_usable("the shared_info page is short".into(), "this is a bug; report it"))?;
            let (p2m, source) = build_pv_p2m(&frames, &arch, limits).map_err(|e| {
                not_usable(
                    format!("cannot read the guest's p2m (pfn -> mfn table): {e}"),
                    "the guest kernel may not have finished booting, or its p2m is corrupt; \
                     save it with `xl save` and read the image instead",
                )
            })?;
            info.p2m_source = Some(source);
            let m2p = invert_p2m(&p2m);
            let mut vcpus = Vec::new();
            for vcpu in xc.online_vcpus(dom.max_vcpu_id)? {
                let ctx = xc.pv_context(vcpu)?;
                let state = pv_vcpu_state(&ctx, vcpu, &m2p).ok_or_else(|| {
                    not_usable(
                        format!("vCPU {vcpu} context is shorter than {VCPU_CONTEXT_X64_LEN} bytes"),
                        "this is a bug; report it",
                    )
                })?;
                vcpus.push(state);
            }
            let mut mem = LiveMemory::new(label, GuestKind::XenPv, frames, Translation::Pv { p2m, m2p }, 0);
            mem.vcpus = vcpus;
            mem
        };
        info.pfn_limit = mem.pfn_limit;
        Ok(XenDomain { info, mem })
    }

    /// Domain id.
    pub fn domid(&self) -> u32 {
        self.info.domid
    }

    /// What attaching learnt about the domain.
    pub fn info(&self) -> &XenLiveInfo {
        &self.info
    }

    /// The first chunk of pages whose mapping failed as a whole (its pages read as absent),
    /// if any: a hint when pages one expected are missing.
    pub fn map_error(&self) -> Option<&str> {
        self.mem.first_map_error.get().map(String::as_str)
    }
}

impl PhysMemory for XenDomain {
    fn path(&self) -> &Path {
        &self.mem.label
    }
    fn format(&self) -> ImageFormat {
        ImageFormat::XenLive
    }
    fn guest_kind(&self) -> GuestKind {
        self.mem.kind
    }
    fn page(&self, pfn: u64) -> Option<&[u8]> {
        self.mem.page(pfn)
    }
    /// Probes the whole pfn space, mapping every chunk (they stay mapped for later reads).
    fn present_ranges(&self) -> Box<dyn Iterator<Item = Range<u64>> + '_> {
        Box::new(self.mem.present_ranges())
    }
    fn vcpus(&self) -> &[VcpuState] {
        &self.mem.vcpus
    }
    fn frame_space(&self) -> FrameSpace {
        match self.mem.translation {
            Translation::Identity => FrameSpace::Physical,
            Translation::Pv { .. } => FrameSpace::Machine,
        }
    }
    fn machine_to_phys(&self, mfn: u64) -> Option<u64> {
        self.mem.machine_to_phys(mfn)
    }
}

/// Attaches to the paused domain `domid` as a [`PhysMemory`] (the live counterpart of
/// [`crate::open_memory`], which only opens files).
pub fn open_live_domain(domid: u32) -> Result<Box<dyn PhysMemory>> {
    Ok(Box::new(XenDomain::attach(domid)?))
}

fn format_uuid(h: &[u8; 16]) -> String {
    let hex = hex::encode(h);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

// ---------------------------------------------------------------------------------------------
// FFI: libxenctrl and libxenforeignmemory
// ---------------------------------------------------------------------------------------------

const REMEDY_PRIVCMD: &str = "run as root in dom0 of a Xen host; is xenfs mounted on /proc/xen, or \
                              /dev/xen/privcmd present (modprobe xen-privcmd)?";
const REMEDY_DOMAIN: &str = "check the domain id with `xl list`; run as root in dom0";

/// The error of a failed call, from `errno` as the Xen libraries leave it.
fn call_error(domid: u32, call: &'static str, remedy: &'static str) -> Error {
    Error::XenCall {
        domid,
        call,
        source: io::Error::last_os_error(),
        remedy,
    }
}

/// A libxenctrl handle, used only while attaching (from one thread) and closed on drop.
struct XcHandle {
    raw: NonNull<xc::xc_interface>,
    domid: u32,
}

impl XcHandle {
    fn open(domid: u32) -> Result<XcHandle> {
        // SAFETY: null loggers select libxenctrl's default (stderr) loggers; flags 0 is the
        // documented default. The returned handle is owned by the XcHandle and closed once.
        let raw = unsafe { xc::xc_interface_open(std::ptr::null_mut(), std::ptr::null_mut(), 0) };
        let raw = NonNull::new(raw).ok_or_else(|| call_error(domid, "xc_interface_open", REMEDY_PRIVCMD))?;
        Ok(XcHandle { raw, domid })
    }

    fn fail(&self, call: &'static str, remedy: &'static str) -> Error {
        call_error(self.domid, call, remedy)
    }

    /// `XEN_DOMCTL_getdomaininfo` through `xc_domain_getinfolist`, which (unlike
    /// `xc_domain_getinfo`, removed in Xen 4.18) exists in every libxenctrl since 4.x.
    fn dominfo(&self) -> Result<xc::xc_domaininfo_t> {
        // SAFETY: xc_domaininfo_t is plain C data for which all-zero bytes are valid.
        let mut info: xc::xc_domaininfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: the handle is open; `info` is a valid, writable array of one entry, matching
        // max_domains = 1.
        let rc = unsafe { xc::xc_domain_getinfolist(self.raw.as_ptr(), self.domid, 1, &mut info) };
        if rc < 0 {
            return Err(self.fail("xc_domain_getinfolist", REMEDY_DOMAIN));
        }
        // The call returns the first domain at or after `domid`.
        if rc == 0 || u32::from(info.domain) != self.domid {
            return Err(Error::XenDomain {
                domid: self.domid,
                problem: "no such domain".into(),
                remedy: "check the domain id with `xl list` (or `xl domid <name>`)",
            });
        }
        Ok(info)
    }

    fn guest_width(&self) -> Result<u32> {
        let mut width: std::ffi::c_uint = 0;
        // SAFETY: the handle is open; `width` is a valid out-pointer.
        let rc = unsafe { xc::xc_domain_get_guest_width(self.raw.as_ptr(), self.domid, &mut width) };
        if rc != 0 {
            return Err(self.fail("xc_domain_get_guest_width", REMEDY_DOMAIN));
        }
        Ok(width)
    }

    fn maximum_gpfn(&self) -> Result<u64> {
        let mut gpfn: xc::xen_pfn_t = 0;
        // SAFETY: the handle is open; `gpfn` is a valid out-pointer.
        let rc = unsafe { xc::xc_domain_maximum_gpfn(self.raw.as_ptr(), self.domid, &mut gpfn) };
        if rc != 0 {
            return Err(self.fail("xc_domain_maximum_gpfn", REMEDY_DOMAIN));
        }
        Ok(gpfn)
    }

    fn maximum_ram_page(&self) -> Result<u64> {
        let mut max_mfn: std::ffi::c_ulong = 0;
        // SAFETY: the handle is open; `max_mfn` is a valid out-pointer.
        let rc = unsafe { xc::xc_maximum_ram_page(self.raw.as_ptr(), &mut max_mfn) };
        if rc != 0 {
            return Err(self.fail("xc_maximum_ram_page", REMEDY_PRIVCMD));
        }
        Ok(max_mfn)
    }

    /// Ids of the online vCPUs (offline ones have no state worth reading, as for the saver).
    fn online_vcpus(&self, max_vcpu_id: u32) -> Result<Vec<u32>> {
        let mut online = Vec::new();
        for vcpu in 0..=max_vcpu_id {
            // SAFETY: plain C data for which all-zero bytes are valid.
            let mut info: xc::xc_vcpuinfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: the handle is open; `info` is a valid out-pointer.
            let rc = unsafe { xc::xc_vcpu_getinfo(self.raw.as_ptr(), self.domid, vcpu, &mut info) };
            if rc != 0 {
                return Err(self.fail("xc_vcpu_getinfo", REMEDY_DOMAIN));
            }
            if info.online != 0 {
                online.push(vcpu);
            }
        }
        Ok(online)
    }

    /// The raw bytes of a PV vCPU's `vcpu_guest_context` (64-bit form for 64-bit guests).
    fn pv_context(&self, vcpu: u32) -> Result<Vec<u8>> {
        let words = std::mem::size_of::<xc::vcpu_guest_context_any_t>().div_ceil(8);
        // A zeroed, 8-byte aligned buffer at least as large as the union the call fills.
        let mut buf = vec![0u64; words];
        // SAFETY: the handle is open; `buf` is writable, 8-byte aligned (the union's
        // alignment) and at least size_of::<vcpu_guest_context_any_t>() bytes long, and lives
        // across the call.
        let rc = unsafe {
            xc::xc_vcpu_getcontext(
                self.raw.as_ptr(),
                self.domid,
                vcpu,
                buf.as_mut_ptr().cast::<xc::vcpu_guest_context_any_t>(),
            )
        };
        if rc != 0 {
            return Err(self.fail("xc_vcpu_getcontext", REMEDY_DOMAIN));
        }
        Ok(buf.iter().flat_map(|w| w.to_ne_bytes()).collect())
    }

    /// The `CPU` record of an HVM/PVH vCPU.
    fn hvm_cpu(&self, vcpu: u32) -> Result<HvmCpu> {
        let instance = u16::try_from(vcpu).map_err(|_| Error::XenDomain {
            domid: self.domid,
            problem: format!("vCPU id {vcpu} does not fit an HVM save instance number"),
            remedy: "this is not a sane domain; report it",
        })?;
        // SAFETY: hvm_hw_cpu is plain C data for which all-zero bytes are valid.
        let mut cpu: xc::hvm_hw_cpu = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<xc::hvm_hw_cpu>() as u32;
        // SAFETY: the handle is open; `cpu` is a writable hvm_hw_cpu and `size` is its size,
        // which bounds what Xen copies into it.
        let rc = unsafe {
            xc::xc_domain_hvm_getcontext_partial(
                self.raw.as_ptr(),
                self.domid,
                HVM_SAVE_CODE_CPU,
                instance,
                (&mut cpu as *mut xc::hvm_hw_cpu).cast::<c_void>(),
                size,
            )
        };
        if rc != 0 {
            return Err(self.fail("xc_domain_hvm_getcontext_partial(CPU)", REMEDY_DOMAIN));
        }
        Ok(HvmCpu {
            cr0: cpu.cr0,
            cr2: cpu.cr2,
            cr3: cpu.cr3,
            cr4: cpu.cr4,
            efer: cpu.msr_efer,
            rip: cpu.rip,
            rsp: cpu.rsp,
            fs_base: cpu.fs_base,
            gs_base: cpu.gs_base,
            shadow_gs: cpu.shadow_gs,
        })
    }
}

impl Drop for XcHandle {
    fn drop(&mut self) {
        // SAFETY: the handle came from xc_interface_open and is closed exactly once, here.
        unsafe {
            xc::xc_interface_close(self.raw.as_ptr());
        }
    }
}

/// A libxenforeignmemory handle. Calls through it are serialised by `lock`.
struct FmemHandle {
    raw: NonNull<xfm::xenforeignmemory_handle>,
    lock: Mutex<()>,
}

// SAFETY: the handle is an open privcmd file descriptor plus immutable configuration; it is not
// tied to the thread that opened it, and every use (map, unmap) holds `lock`, so it is never
// used from two threads at once.
unsafe impl Send for FmemHandle {}
// SAFETY: as for Send: shared access only ever calls the library under `lock`.
unsafe impl Sync for FmemHandle {}

impl FmemHandle {
    fn open(domid: u32) -> Result<FmemHandle> {
        // SAFETY: a null logger selects the default one; flags 0 is the documented default.
        let raw = unsafe { xfm::xenforeignmemory_open(std::ptr::null_mut(), 0) };
        let raw = NonNull::new(raw).ok_or_else(|| call_error(domid, "xenforeignmemory_open", REMEDY_PRIVCMD))?;
        Ok(FmemHandle {
            raw,
            lock: Mutex::new(()),
        })
    }
}

impl Drop for FmemHandle {
    fn drop(&mut self) {
        // SAFETY: opened by xenforeignmemory_open, closed exactly once; every mapping holds an
        // Arc to this handle, so none is left to unmap through it.
        unsafe {
            xfm::xenforeignmemory_close(self.raw.as_ptr());
        }
    }
}

/// [`ForeignFrames`] over libxenforeignmemory for one domain.
struct XenFrames {
    fmem: Arc<FmemHandle>,
    domid: u32,
}

impl ForeignFrames for XenFrames {
    type Mapping = XenMapping;

    fn map(&self, frames: &[u64]) -> io::Result<XenMapping> {
        if frames.is_empty() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let mut errs: Vec<c_int> = vec![0; frames.len()];
        let guard = self.fmem.lock.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: the handle is open and used under its lock; `frames` (u64 is xen_pfn_t on
        // x86-64) and `errs` each hold `frames.len()` elements and outlive the call. With a non-null `err` the library
        // reports per-frame failures there and returns null only if the call failed as a whole.
        let addr = unsafe {
            xfm::xenforeignmemory_map(
                self.fmem.raw.as_ptr(),
                self.domid,
                PROT_READ,
                frames.len(),
                frames.as_ptr(),
                errs.as_mut_ptr(),
            )
        };
        let errno = io::Error::last_os_error();
        drop(guard);
        let addr = NonNull::new(addr.cast::<u8>()).ok_or(errno)?;
        Ok(XenMapping {
            fmem: Arc::clone(&self.fmem),
            addr,
            count: frames.len(),
            errs: errs.into_boxed_slice(),
        })
    }
}

/// `count` frames mapped read-only at `addr`; `errs[i] != 0` marks a frame that did not map
/// (its part of the range must not be touched).
struct XenMapping {
    fmem: Arc<FmemHandle>,
    addr: NonNull<u8>,
    count: usize,
    errs: Box<[c_int]>,
}

// SAFETY: the mapping is plain read-only memory owned by this value until Drop; it is never
// written through `addr`, and unmapping goes through the lock-guarded handle.
unsafe impl Send for XenMapping {}
// SAFETY: shared access only creates shared byte slices of the read-only mapping.
unsafe impl Sync for XenMapping {}

impl FrameMapping for XenMapping {
    fn frame(&self, index: usize) -> Option<&[u8]> {
        if index >= self.count || *self.errs.get(index)? != 0 {
            return None;
        }
        // SAFETY: the mapping spans count * PAGE_SIZE bytes from `addr` and frame `index`
        // (< count) mapped successfully; it stays mapped until `self` is dropped, which the
        // borrow prevents. The paused guest does not write it; other writers (a dom0 backend
        // finishing I/O, someone unpausing the domain) could change bytes under the slice,
        // the same accepted hazard as mapping a file another process rewrites (see
        // `Backing::map`): u8 has no invalid values, readers only see changed data.
        Some(unsafe { std::slice::from_raw_parts(self.addr.as_ptr().add(index * PAGE_SIZE), PAGE_SIZE) })
    }
}

impl Drop for XenMapping {
    fn drop(&mut self) {
        let _guard = self.fmem.lock.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: `addr`/`count` are exactly what xenforeignmemory_map returned and mapped; no
        // slice of it outlives `self`; unmapped once, under the handle's lock, while the
        // handle is still open (this mapping holds an Arc to it).
        unsafe {
            xfm::xenforeignmemory_unmap(self.fmem.raw.as_ptr(), self.addr.as_ptr().cast::<c_void>(), self.count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Synthetic machine memory: frames by number, plus a record of map calls.
    #[derive(Default)]
    struct FakeMachine {
        frames: HashMap<u64, Box<[u8]>>,
        /// Frames whose mapping fails on their own.
        bad: Vec<u64>,
        /// Fail every map call as a whole.
        fail_all: bool,
        calls: AtomicUsize,
        mapped_frames: AtomicUsize,
    }

    struct FakeMapping(Vec<Option<Box<[u8]>>>);

    impl FrameMapping for FakeMapping {
        fn frame(&self, index: usize) -> Option<&[u8]> {
            self.0.get(index)?.as_deref()
        }
    }

    impl ForeignFrames for FakeMachine {
        type Mapping = FakeMapping;
        fn map(&self, frames: &[u64]) -> io::Result<FakeMapping> {
            assert!(
                !frames.is_empty() && frames.len() <= CHUNK_FRAMES,
                "{} frames",
                frames.len()
            );
            self.calls.fetch_add(1, Ordering::Relaxed);
            self.mapped_frames.fetch_add(frames.len(), Ordering::Relaxed);
            if self.fail_all {
                return Err(io::Error::from_raw_os_error(12));
            }
            Ok(FakeMapping(
                frames
                    .iter()
                    .map(|f| {
                        if self.bad.contains(f) {
                            None
                        } else {
                            self.frames.get(f).cloned()
                        }
                    })
                    .collect(),
            ))
        }
    }

    impl FakeMachine {
        fn put(&mut self, mfn: u64, bytes: Vec<u8>) {
            let mut page = bytes;
            page.resize(PAGE_SIZE, 0);
            self.frames.insert(mfn, page.into_boxed_slice());
        }
        /// A page whose first 8 bytes name it.
        fn put_tagged(&mut self, mfn: u64, tag: u64) {
            self.put(mfn, tag.to_le_bytes().to_vec());
        }
        /// A page of 64-bit words.
        fn put_words(&mut self, mfn: u64, words: &[(usize, u64)]) {
            let mut page = vec![0u8; PAGE_SIZE];
            for &(i, w) in words {
                page[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
            }
            self.put(mfn, page);
        }
    }

    const LIMITS: P2mLimits = P2mLimits {
        max_mfn: 0xf_ffff,
        max_pfns: 1 << 24,
    };

    /// A PV guest of `nr` pfns whose pfn `p` lives at mfn `0x10000 + 3 * p` (a non-trivial
    /// mapping), except pfns in `holes` (invalid entries); returns the leaf page mfns.
    fn put_p2m_leaves(m: &mut FakeMachine, nr: u64, holes: &[u64], first_leaf: u64) -> Vec<u64> {
        let leaves = nr.div_ceil(512);
        (0..leaves)
            .map(|l| {
                let words: Vec<(usize, u64)> = (0..512)
                    .map(|j| {
                        let pfn = l * 512 + j;
                        let e = if pfn >= nr || holes.contains(&pfn) {
                            INVALID_MFN
                        } else {
                            0x10000 + 3 * pfn
                        };
                        (j as usize, e)
                    })
                    .collect();
                m.put_words(first_leaf + l, &words);
                first_leaf + l
            })
            .collect()
    }

    fn expected_mfn(pfn: u64) -> u64 {
        0x10000 + 3 * pfn
    }

    #[test]
    fn xen_live_p2m_tree_walk_follows_three_levels() {
        let mut m = FakeMachine::default();
        let nr = 1500u64; // three leaf pages, the last one partly used
        let leaves = put_p2m_leaves(&mut m, nr, &[7, 1024], 0x500);
        // One mid page listing the leaves, one top page listing the mid page.
        let mid: Vec<(usize, u64)> = leaves.iter().enumerate().map(|(i, &l)| (i, l)).collect();
        m.put_words(0x400, &mid);
        m.put_words(0x300, &[(0, 0x400)]);
        let p2m = p2m_from_tree(&m, 8, 0x300, nr, LIMITS).unwrap();
        assert_eq!(p2m.len(), nr as usize);
        assert_eq!(p2m[0], expected_mfn(0));
        assert_eq!(p2m[511], expected_mfn(511));
        assert_eq!(p2m[512], expected_mfn(512));
        assert_eq!(p2m[1499], expected_mfn(1499));
        assert_eq!(p2m[7], INVALID_MFN);
        assert_eq!(p2m[1024], INVALID_MFN);
    }

    #[test]
    fn xen_live_p2m_tree_trims_repeated_top_entries_and_reads_32bit_words() {
        // 32-bit words: 1024 per page. nr claims 4 top entries' worth but entries 1..=3
        // repeat one (empty) mid page: libxc keeps the first of the repeats, so 2 are read.
        let mut m = FakeMachine::default();
        let fpp = 1024u64;
        let nr = 3 * fpp * fpp + 5;
        let mut leaf = vec![0u8; PAGE_SIZE];
        for j in 0..1024usize {
            let e: u32 = if j == 3 { 0xffff_ffff } else { 0x2000 + j as u32 };
            leaf[j * 4..j * 4 + 4].copy_from_slice(&e.to_le_bytes());
        }
        m.put(0x600, leaf);
        let mut mid = vec![0u8; PAGE_SIZE];
        for j in 0..1024usize {
            mid[j * 4..j * 4 + 4].copy_from_slice(&0x600u32.to_le_bytes());
        }
        m.put(0x601, mid);
        // Linux's shared "missing" mid page lists the shared all-invalid leaf page.
        m.put(0x604, vec![0xff; PAGE_SIZE]);
        let mut missing = vec![0u8; PAGE_SIZE];
        for j in 0..1024usize {
            missing[j * 4..j * 4 + 4].copy_from_slice(&0x604u32.to_le_bytes());
        }
        m.put(0x602, missing);
        let mut top = vec![0u8; PAGE_SIZE];
        for (i, e) in [0x601u32, 0x602, 0x602, 0x602].iter().enumerate() {
            top[i * 4..i * 4 + 4].copy_from_slice(&e.to_le_bytes());
        }
        m.put(0x603, top);
        let p2m = p2m_from_tree(&m, 4, 0x603, nr, LIMITS).unwrap();
        assert_eq!(p2m.len() as u64, 2 * fpp * fpp, "trimmed after the first repeat");
        assert_eq!(p2m[0], 0x2000);
        assert_eq!(p2m[3], INVALID_MFN);
        assert_eq!(p2m[1024 + 5], 0x2005, "every leaf slot names the same leaf page");
        assert_eq!(p2m[(fpp * fpp) as usize + 17], INVALID_MFN, "the missing leaf");
    }

    #[test]
    fn xen_live_p2m_tree_rejects_bad_frames() {
        let mut m = FakeMachine::default();
        m.put_words(0x300, &[(0, 0x400)]);
        m.put_words(0x400, &[(0, 0)]); // mid page lists machine frame 0
        let err = p2m_from_tree(&m, 8, 0x300, 100, LIMITS).unwrap_err();
        assert!(err.contains("p2m frame list entry 0") && err.contains("0x0"), "{err}");
        let err = p2m_from_tree(&m, 8, 0x10_0000, 100, LIMITS).unwrap_err();
        assert!(err.contains("pfn_to_mfn_frame_list_list"), "{err}");
        // A top page that does not map.
        m.bad.push(0x300);
        let err = p2m_from_tree(&m, 8, 0x300, 100, LIMITS).unwrap_err();
        assert!(err.contains("0x300") && err.contains("does not map"), "{err}");
        let err = p2m_from_tree(&m, 8, 0x300, 0, LIMITS).unwrap_err();
        assert!(err.contains("max_pfn is 0"), "{err}");
        // 512^3 pfns do not fit a 64-bit tree.
        let err = p2m_from_tree(&m, 8, 0x300, 512 * 512 * 512 + 1, LIMITS).unwrap_err();
        assert!(err.contains("too large"), "{err}");
    }

    /// Page tables mapping `leaves` at `vaddr` (4 KiB pages), all tables in machine frames
    /// from 0x800; returns the cr3 value.
    fn put_list_tables(m: &mut FakeMachine, vaddr: u64, leaves: &[u64]) -> u64 {
        let (l4, l3, l2) = (0x800u64, 0x801u64, 0x802u64);
        let idx = |va: u64, level: u32| ((va >> (12 + 9 * (level - 1))) & 0x1ff) as usize;
        let pte = |mfn: u64| (mfn << 12) | 0x67; // present, rw, user, accessed, dirty
        let mut l1s: HashMap<usize, Vec<(usize, u64)>> = HashMap::new();
        for (i, &leaf) in leaves.iter().enumerate() {
            let va = vaddr + (i as u64) * 4096;
            assert_eq!(idx(va, 4), idx(vaddr, 4));
            assert_eq!(idx(va, 3), idx(vaddr, 3));
            l1s.entry(idx(va, 2)).or_default().push((idx(va, 1), pte(leaf)));
        }
        let mut l2_words = Vec::new();
        for (n, (l2_index, words)) in l1s.into_iter().enumerate() {
            let l1 = 0x810 + n as u64;
            m.put_words(l1, &words);
            l2_words.push((l2_index, pte(l1)));
        }
        m.put_words(l2, &l2_words);
        m.put_words(l3, &[(idx(vaddr, 3), pte(l2))]);
        m.put_words(l4, &[(idx(vaddr, 4), pte(l3))]);
        l4 << 12
    }

    #[test]
    fn xen_live_p2m_linear_list_walks_page_tables() {
        let mut m = FakeMachine::default();
        let nr = 512 * 600 + 17; // 601 leaf pages: the list crosses an L2 entry (512 pages)
        let leaves = put_p2m_leaves(&mut m, nr, &[9], 0x1000);
        let vaddr = 0xffff_c900_0000_0000; // a vmalloc-area address, 1 GiB aligned
        let cr3 = put_list_tables(&mut m, vaddr, &leaves);
        let p2m = p2m_from_list(&m, cr3, vaddr, nr, LIMITS).unwrap();
        assert_eq!(p2m.len() as u64, nr);
        for pfn in [0, 511, 512, 512 * 600, nr - 1] {
            assert_eq!(p2m[pfn as usize], expected_mfn(pfn), "pfn {pfn}");
        }
        assert_eq!(p2m[9], INVALID_MFN);

        // A range inside Xen's hole, a non-canonical one and a missing mapping are refused.
        let err = p2m_from_list(&m, cr3, 0xffff_8000_0000_0000, nr, LIMITS).unwrap_err();
        assert!(err.contains("bad virtual p2m address range"), "{err}");
        let err = p2m_from_list(&m, cr3, 0x0000_8000_0000_0000, nr, LIMITS).unwrap_err();
        assert!(err.contains("bad virtual p2m address range"), "{err}");
        let err = p2m_from_list(&m, cr3, vaddr + (1 << 30), nr, LIMITS).unwrap_err();
        assert!(err.contains("not present"), "{err}");
    }

    #[test]
    fn xen_live_p2m_prefers_list_and_falls_back_to_tree() {
        let mut m = FakeMachine::default();
        let nr = 1000u64;
        let leaves = put_p2m_leaves(&mut m, nr, &[], 0x500);
        m.put_words(0x400, &[(0, leaves[0]), (1, leaves[1])]);
        m.put_words(0x300, &[(0, 0x400)]);
        let vaddr = 0xffff_c900_0000_0000;
        let cr3 = put_list_tables(&mut m, vaddr, &leaves);
        let mut arch = ArchSharedInfo {
            max_pfn: nr,
            pfn_to_mfn_frame_list_list: 0x300,
            p2m_cr3: cr3,
            p2m_vaddr: vaddr,
        };
        let (p2m, source) = build_pv_p2m(&m, &arch, LIMITS).unwrap();
        assert_eq!(source, P2mSource::LinearList);
        assert_eq!(p2m[999], expected_mfn(999));
        // A broken list falls back to the tree...
        arch.p2m_vaddr = vaddr + (1 << 30);
        let (p2m, source) = build_pv_p2m(&m, &arch, LIMITS).unwrap();
        assert_eq!(source, P2mSource::FrameListTree);
        assert_eq!(p2m[999], expected_mfn(999));
        // ...unless there is none (Linux's SIF_VIRT_P2M_4TOOLS writes ~0 there).
        arch.pfn_to_mfn_frame_list_list = u64::MAX;
        let err = build_pv_p2m(&m, &arch, LIMITS).unwrap_err();
        assert!(err.contains("linear p2m list") && err.contains("not present"), "{err}");
        arch.p2m_cr3 = 0;
        let err = build_pv_p2m(&m, &arch, LIMITS).unwrap_err();
        assert!(err.contains("neither"), "{err}");
        // A hostile size is refused before anything is allocated.
        arch.max_pfn = LIMITS.max_pfns + 1;
        let err = build_pv_p2m(&m, &arch, LIMITS).unwrap_err();
        assert!(err.contains("exceeds"), "{err}");
    }

    #[test]
    fn xen_live_p2m_leaf_entries_with_linux_flags_are_absent() {
        assert_eq!(leaf_mfn(0x1234, 0xffff), 0x1234);
        assert_eq!(leaf_mfn(0x1234 | 1 << 63, 0xffff), INVALID_MFN, "foreign frame");
        assert_eq!(leaf_mfn(0x1234 | 1 << 62, 0xffff), INVALID_MFN, "identity frame");
        assert_eq!(leaf_mfn(0x10000, 0xffff), INVALID_MFN, "beyond the host");
        assert_eq!(leaf_mfn(0, 0xffff), INVALID_MFN, "Xen's frame 0");
        assert_eq!(guest_word(&0x4000_0001u32.to_le_bytes(), 0, 4), Some(INVALID_MFN));
    }

    fn pv_memory(m: FakeMachine, p2m: Vec<u64>) -> LiveMemory<FakeMachine> {
        let m2p = invert_p2m(&p2m);
        LiveMemory::new(
            "xen-domain:7".into(),
            GuestKind::XenPv,
            m,
            Translation::Pv { p2m, m2p },
            0,
        )
    }

    #[test]
    fn xen_live_pv_pages_are_served_by_pfn_through_the_p2m() {
        let mut m = FakeMachine::default();
        let nr = 3000u64;
        let mut p2m = Vec::new();
        for pfn in 0..nr {
            let present = !(100..200).contains(&pfn) && pfn != 2500;
            if present {
                m.put_tagged(expected_mfn(pfn), pfn);
            }
            p2m.push(if present { expected_mfn(pfn) } else { INVALID_MFN });
        }
        m.bad.push(expected_mfn(2600)); // in the p2m, but the map refuses it
        let mem = pv_memory(m, p2m);
        assert_eq!(mem.page(0).map(|p| p[..8].to_vec()), Some(0u64.to_le_bytes().to_vec()));
        let p = mem.page(2999).unwrap();
        assert_eq!(p.len(), PAGE_SIZE);
        assert_eq!(le_u64(p, 0), Some(2999));
        assert!(mem.page(150).is_none());
        assert!(mem.page(2500).is_none());
        assert!(mem.page(2600).is_none());
        assert!(mem.page(nr).is_none());
        assert!(mem.page(u64::MAX).is_none());
        assert_eq!(mem.machine_to_phys(expected_mfn(1234)), Some(1234));
        assert_eq!(mem.machine_to_phys(expected_mfn(150)), None);
        let ranges: Vec<_> = mem.present_ranges().collect();
        assert_eq!(ranges, vec![0..100, 200..2500, 2501..2600, 2601..3000]);
        // Three chunks, each mapped by one call, never twice; holes are not passed to the map.
        assert_eq!(mem.frames.calls.load(Ordering::Relaxed), 3);
        assert_eq!(mem.frames.mapped_frames.load(Ordering::Relaxed), 3000 - 100 - 1);
    }

    #[test]
    fn xen_live_hvm_pages_are_identity_and_failed_chunks_are_absent() {
        let mut m = FakeMachine::default();
        for gfn in (0..0x400).chain(0x800..0x900) {
            m.put_tagged(gfn, gfn);
        }
        let mem = LiveMemory::new(
            "xen-domain:9".into(),
            GuestKind::XenHvm,
            m,
            Translation::Identity,
            0x900,
        );
        assert_eq!(le_u64(mem.page(0x3ff).unwrap(), 0), Some(0x3ff));
        assert_eq!(le_u64(mem.page(0x8ab).unwrap(), 0), Some(0x8ab));
        assert!(mem.page(0x400).is_none(), "hole between RAM ranges");
        assert!(mem.page(0x900).is_none(), "beyond max_gpfn");
        assert_eq!(mem.machine_to_phys(5), None);
        assert_eq!(mem.present_ranges().collect::<Vec<_>>(), vec![0..0x400, 0x800..0x900]);

        let m = FakeMachine {
            fail_all: true,
            ..FakeMachine::default()
        };
        let mem = LiveMemory::new("x".into(), GuestKind::XenHvm, m, Translation::Identity, 10);
        assert!(mem.page(1).is_none());
        assert!(mem.page(2).is_none());
        assert_eq!(
            mem.frames.calls.load(Ordering::Relaxed),
            1,
            "a failed chunk is not retried"
        );
        let err = mem.first_map_error.get().unwrap();
        assert!(err.contains("pfns 0x0..0xa"), "{err}");
        assert_eq!(mem.present_ranges().count(), 0);
    }

    #[test]
    fn xen_live_pages_are_shared_across_threads() {
        let mut m = FakeMachine::default();
        for gfn in 0..4096 {
            m.put_tagged(gfn, gfn);
        }
        let mem = LiveMemory::new("x".into(), GuestKind::XenHvm, m, Translation::Identity, 4096);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let mem = &mem;
                s.spawn(move || {
                    for i in 0..4096u64 {
                        let pfn = (i * 7 + t * 1031) % 4096;
                        assert_eq!(le_u64(mem.page(pfn).unwrap(), 0), Some(pfn));
                    }
                });
            }
        });
        assert_eq!(mem.frames.calls.load(Ordering::Relaxed), 4, "one map per chunk");
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<XenDomain>();
    }

    #[test]
    fn xen_live_chunk_table_is_sparse() {
        // 2^40 pfns: only the top level is allocated up front (2^20 groups).
        let table: ChunkTable<FakeMapping> = ChunkTable::new(MAX_PFN_LIMIT);
        assert_eq!(table.groups.len(), 1 << 20);
        let c = table.get_or_init((1 << 30) - 1, || Chunk {
            mapping: None,
            slots: Box::new([]),
        });
        assert!(c.is_some());
        assert!(table.get_or_init(1 << 30, || unreachable!()).is_none());
        assert_eq!(table.groups.iter().filter(|g| g.get().is_some()).count(), 1);
    }

    #[test]
    fn xen_live_shared_info_layout_matches_the_headers() {
        assert_eq!(std::mem::size_of::<xc::shared_info>(), 3136);
        assert_eq!(std::mem::offset_of!(xc::shared_info, arch) as u64, SHARED_INFO_ARCH);
        assert_eq!(std::mem::offset_of!(xc::arch_shared_info, max_pfn), 0);
        assert_eq!(
            std::mem::offset_of!(xc::arch_shared_info, pfn_to_mfn_frame_list_list),
            8
        );
        assert_eq!(std::mem::offset_of!(xc::arch_shared_info, p2m_cr3), 24);
        assert_eq!(std::mem::offset_of!(xc::arch_shared_info, p2m_vaddr), 32);
        assert_eq!(std::mem::offset_of!(xc::arch_shared_info, p2m_generation), 40);
        let mut page = vec![0u8; PAGE_SIZE];
        for (i, v) in [0x4_0000u64, 0x1234, 0, 0x5678_9000, 0xffff_c900_0000_0000, 3]
            .iter()
            .enumerate()
        {
            let at = SHARED_INFO_ARCH as usize + i * 8;
            page[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        let arch = parse_arch_shared_info(&page).unwrap();
        assert_eq!(
            arch,
            ArchSharedInfo {
                max_pfn: 0x4_0000,
                pfn_to_mfn_frame_list_list: 0x1234,
                p2m_cr3: 0x5678_9000,
                p2m_vaddr: 0xffff_c900_0000_0000,
            }
        );
        assert_eq!(parse_arch_shared_info(&page[..3100]), None);
    }

    #[test]
    fn xen_live_pv_vcpu_context_translates_machine_roots() {
        // The offsets pv64_vcpu decodes are those of the library's vcpu_guest_context_x86_64.
        use std::mem::{offset_of, size_of};
        type Ctx = xc::vcpu_guest_context_x86_64;
        type Regs = xc::cpu_user_regs_x86_64;
        assert_eq!(size_of::<Ctx>() as u64, VCPU_CONTEXT_X64_LEN);
        assert!(size_of::<xc::vcpu_guest_context_any_t>() as u64 >= VCPU_CONTEXT_X64_LEN);
        assert_eq!(offset_of!(Ctx, ctrlreg), 4984);
        assert_eq!(offset_of!(Ctx, fs_base), 5144);
        assert_eq!(offset_of!(Ctx, gs_base_kernel), 5152);
        assert_eq!(offset_of!(Ctx, gs_base_user), 5160);
        assert_eq!(offset_of!(Ctx, user_regs), 520);
        assert_eq!(offset_of!(Regs, __bindgen_anon_16), 648 - 520, "rip");
        assert_eq!(offset_of!(Regs, __bindgen_anon_18), 672 - 520, "rsp");

        let mut ctx = vec![0u8; VCPU_CONTEXT_X64_LEN as usize];
        let mut put = |off: usize, v: u64| ctx[off..off + 8].copy_from_slice(&v.to_le_bytes());
        put(4984, 0x8005_003b); // cr0 with PG
        put(4984 + 8, 0x4_2000); // ctrlreg[1]: user table at mfn 0x42
        put(4984 + 16, 0xdead_0000); // cr2
        put(4984 + 24, 0x4_1000); // ctrlreg[3]: kernel table at mfn 0x41
        put(4984 + 32, 0x2660); // cr4
        put(648, 0xffff_ffff_8100_0000);
        put(672, 0xffff_c900_0001_0000);
        put(5144, 0x7f00_0000_0000);
        put(5152, 0xffff_8880_3fc0_0000);
        put(5160, 0x1234);
        let m2p = HashMap::from([(0x41, 0x1a05), (0x42, 0x1a06)]);
        let v = pv_vcpu_state(&ctx, 3, &m2p).unwrap();
        assert_eq!(v.id, 3);
        assert_eq!(v.cr0, Some(0x8005_003b));
        assert_eq!(v.cr2, Some(0xdead_0000));
        assert_eq!(v.cr3, Some(0x4_1000), "cr3 stays the machine address Xen reports");
        assert_eq!(v.cr4, Some(0x2660));
        assert_eq!(v.root_table_pfn, Some(0x1a05));
        assert_eq!(v.user_root_table_pfn, Some(0x1a06));
        assert_eq!(v.rip, Some(0xffff_ffff_8100_0000));
        assert_eq!(v.rsp, Some(0xffff_c900_0001_0000));
        assert_eq!(v.fs_base, Some(0x7f00_0000_0000));
        assert_eq!(v.gs_base, Some(0xffff_8880_3fc0_0000));
        assert_eq!(v.kernel_gs_base, Some(0x1234));
        assert_eq!(v.efer, None);
        // A root outside the guest's p2m stays untranslated rather than guessed.
        let v = pv_vcpu_state(&ctx, 0, &HashMap::new()).unwrap();
        assert_eq!(v.root_table_pfn, None);
        assert!(pv_vcpu_state(&ctx[..5000], 0, &m2p).is_none());
    }

    #[test]
    fn xen_live_hvm_vcpu_context_is_guest_physical() {
        let cpu = HvmCpu {
            cr0: 0x8005_0033,
            cr2: 0x10,
            cr3: 0x1_2345_6000 | 0x1000 | 0x5, // KPTI user bit and a PCID stay in cr3
            cr4: 0x3606f0,
            efer: 0xd01,
            rip: 0xffff_ffff_8100_1000,
            rsp: 0xffff_c900_0000_8000,
            fs_base: 0,
            gs_base: 0xffff_8880_7fc0_0000,
            shadow_gs: 0x7f12_3456_7000,
        };
        let v = hvm_vcpu_state(&cpu, 1);
        assert_eq!(v.cr3, Some(0x1_2345_7005));
        assert_eq!(v.root_table_pfn, Some(0x12_3457));
        assert_eq!(v.efer, Some(0xd01));
        assert_eq!(v.kernel_gs_base, Some(0x7f12_3456_7000));
        assert_eq!(v.paging_enabled(), Some(true));
        let real_mode = hvm_vcpu_state(&HvmCpu { cr0: 0x10, ..cpu }, 0);
        assert_eq!(real_mode.root_table_pfn, None);
        // The fields read are the header's (hvm_hw_cpu offsets used by the save-image reader).
        use std::mem::offset_of;
        assert_eq!(offset_of!(xc::hvm_hw_cpu, cr0), 656);
        assert_eq!(offset_of!(xc::hvm_hw_cpu, cr3), 672);
        assert_eq!(offset_of!(xc::hvm_hw_cpu, msr_efer), 992);
    }

    #[test]
    fn xen_live_helpers() {
        let mut h = [0u8; 16];
        h.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8 * 0x11);
        assert_eq!(format_uuid(&h), "00112233-4455-6677-8899-aabbccddeeff");
        assert_eq!(pv_pfn_cap(1000), 1 << 24);
        assert_eq!(pv_pfn_cap(1 << 23), 1 << 25);
        assert_eq!(pv_pfn_cap(u64::MAX), 1 << 32);
        assert_eq!(invert_p2m(&[5, INVALID_MFN, 5, 6]), HashMap::from([(5, 0), (6, 3)]));
        let e = Error::XenDomain {
            domid: 4,
            problem: "the domain is running (not paused)".into(),
            remedy: "pause it with `xl pause`",
        };
        assert_eq!(
            e.to_string(),
            "Xen domain 4: the domain is running (not paused); pause it with `xl pause`"
        );
        let e = Error::XenCall {
            domid: 4,
            call: "xc_interface_open",
            source: io::Error::from_raw_os_error(13),
            remedy: REMEDY_PRIVCMD,
        };
        let s = e.to_string();
        assert!(
            s.starts_with("Xen domain 4: xc_interface_open failed: Permission denied (os error 13); run as root"),
            "{s}"
        );
    }
}
