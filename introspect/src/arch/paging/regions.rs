//! The mapped regions of an address space: a budgeted scan of the page tables that coalesces
//! contiguous leaves into runs.

use std::ops::RangeInclusive;

use super::{
    AddressSpace, DEFAULT_SCAN_BUDGET, ENTRIES, MappedRegion, PAGE, PAGE_SIZE_BIT, PRESENT, PageSize,
    XEN_PV_RESERVED_SLOTS, entry, large_leaf_reserved_bits, leaf_frame_mask, shift,
};
use crate::arch::virt::VirtError;
use crate::source::memory::{FRAME_MASK, PAGE_SHIFT};

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
    pub(super) fn new(space: &'a AddressSpace<'m>, range: RangeInclusive<u64>) -> Regions<'a, 'm> {
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
