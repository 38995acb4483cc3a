//! The pfn -> mfn table of a 64-bit PV guest, read from the guest's own p2m the way libxc's
//! saver finds it (`xg_sr_save_x86_pv.c`). Every frame number in it is guest-written and
//! bounds-checked.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use serde::Serialize;

use super::frames::{CHUNK_FRAMES, ForeignFrames, FrameMapping, INVALID_MFN};
use crate::bytes::{le_u32, le_u64};
use crate::source::memory::{FRAME_MASK, PAGE_SHIFT, PAGE_SIZE};

/// Linux's p2m marks non-RAM entries with these top bits (`FOREIGN_FRAME_BIT`,
/// `IDENTITY_FRAME_BIT`, arch/x86/include/asm/xen/page.h); `INVALID_P2M_ENTRY` is all ones.
const P2M_FLAG_BITS_64: u64 = 0b11 << 62;
const P2M_FLAG_BITS_32: u32 = 0b11 << 30;
/// Offset of `arch` in the 64-bit `struct shared_info` (public/xen.h, checked in the tests).
pub(super) const SHARED_INFO_ARCH: u64 = 3088;
/// Xen's own part of the 64-bit PV address space (public/arch-x86/xen-x86_64.h).
const HYPERVISOR_VIRT_START_X86_64: u64 = 0xffff_8000_0000_0000;
const HYPERVISOR_VIRT_END_X86_64: u64 = 0xffff_8800_0000_0000;

/// The fields of the 64-bit `shared_info.arch` (`struct arch_shared_info`) the p2m needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct ArchSharedInfo {
    /// Number of pfns the p2m covers (the name is Xen's; it is a count).
    pub(super) max_pfn: u64,
    pub(super) pfn_to_mfn_frame_list_list: u64,
    pub(super) p2m_cr3: u64,
    pub(super) p2m_vaddr: u64,
}

/// Decodes `shared_info.arch` of a 64-bit guest from its shared-info page.
pub(super) fn parse_arch_shared_info(page: &[u8]) -> Option<ArchSharedInfo> {
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
pub(super) struct P2mLimits {
    /// Highest machine frame of the host (`xc_maximum_ram_page`).
    pub(super) max_mfn: u64,
    /// Most pfns accepted (bounds the table a hostile `max_pfn` could make us allocate).
    pub(super) max_pfns: u64,
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
pub(super) fn read_frame<F: ForeignFrames>(frames: &F, mfn: u64, what: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for_each_frame(frames, &[mfn], what, |_, bytes| {
        out = bytes.to_vec();
        Ok(())
    })?;
    Ok(out)
}

/// Entry `index` of a table of `width`-byte guest words; 32-bit invalid/flagged entries
/// widen to [`INVALID_MFN`] so that one check serves both widths.
pub(super) fn guest_word(page: &[u8], index: usize, width: usize) -> Option<u64> {
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
pub(super) fn leaf_mfn(entry: u64, max_mfn: u64) -> u64 {
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
pub(super) fn p2m_from_tree<F: ForeignFrames>(
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
pub(super) fn p2m_from_list<F: ForeignFrames>(
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
pub(super) fn build_pv_p2m<F: ForeignFrames>(
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
pub(super) fn invert_p2m(p2m: &[u64]) -> HashMap<u64, u64> {
    let mut m2p = HashMap::with_capacity(p2m.len());
    for (pfn, &mfn) in p2m.iter().enumerate() {
        if mfn != INVALID_MFN {
            m2p.entry(mfn).or_insert(pfn as u64);
        }
    }
    m2p
}

/// The domain size-derived bound on the pfns a PV p2m may claim: generous for holes (4x the
/// domain's pages, at least 64 GiB of pfn space), never above 16 TiB.
pub(super) fn pv_pfn_cap(nr_pages: u64) -> u64 {
    nr_pages.saturating_mul(4).clamp(1 << 24, 1 << 32)
}
