//! Finding the kernel's linear map of physical memory (the direct map) without symbols.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use super::{
    AddressSpace, CPU_ENTRY_AREA_BASE, DirectMap, ENTRIES, GIB, PAGE_SIZE_BIT, PRESENT, PagingError,
    XEN_PV_RESERVED_SLOTS, entry, large_leaf_reserved_bits, leaf_frame_mask, shift,
};
use crate::source::memory::{PAGE_SHIFT, PhysMemory};

/// Budget of the direct-map candidate search (it reads one first leaf per 1 GiB slot).
const DIRECT_MAP_SEARCH_BUDGET: u64 = 1 << 22;
/// Physical pages sampled to verify a direct-map candidate.
const DIRECT_MAP_SAMPLES: u64 = 32;
/// Candidates verified at most (the search usually yields one or two).
const DIRECT_MAP_MAX_CANDIDATES: usize = 8;

impl<'m> AddressSpace<'m> {
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
