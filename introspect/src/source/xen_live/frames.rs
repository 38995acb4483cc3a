//! Guest pages served lazily out of foreign mappings: the [`ForeignFrames`] seam between the
//! hypervisor and everything testable, and the chunk cache over it.

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::OnceLock;

use crate::source::memory::{GuestKind, PAGE_SHIFT, VcpuState};

/// log2 of the frames mapped per `xenforeignmemory_map` call.
const CHUNK_SHIFT: u32 = 10;
/// Frames mapped per `xenforeignmemory_map` call (libxc's `MAX_BATCH_SIZE` is the same).
pub const CHUNK_FRAMES: usize = 1 << CHUNK_SHIFT;
/// log2 of the chunks per lazily allocated group of the chunk table.
const GROUP_SHIFT: u32 = 10;
/// x86-64 physical addresses have at most 52 bits.
pub(super) const MAX_PFN_LIMIT: u64 = 1 << (52 - PAGE_SHIFT);
/// Slot of a pfn that has no frame to map.
const NO_SLOT: u16 = u16::MAX;
/// A p2m entry naming no frame.
pub(super) const INVALID_MFN: u64 = u64::MAX;

/// Maps frames of one foreign domain read-only. The live implementation is
/// libxenforeignmemory; tests stand in synthetic machine memory.
pub(super) trait ForeignFrames: Send + Sync {
    /// One mapping of a list of frames; unmapped when dropped.
    type Mapping: FrameMapping;

    /// Maps `frames` (gfns for HVM, mfns for PV) read-only as one mapping. `Err` when the
    /// call failed as a whole; frames that failed on their own read as `None` from the mapping.
    fn map(&self, frames: &[u64]) -> io::Result<Self::Mapping>;
}

/// The frames of one [`ForeignFrames::map`] call.
pub(super) trait FrameMapping: Send + Sync {
    /// The [`PAGE_SIZE`] bytes of frame `index` of the mapping, `None` if it failed to map.
    fn frame(&self, index: usize) -> Option<&[u8]>;
}

/// The mapped frames of one chunk of pfns.
pub(super) struct Chunk<M> {
    /// `None` when the chunk has no frame to map or the whole map call failed.
    pub(super) mapping: Option<M>,
    /// Per pfn of the chunk: index of its frame in `mapping`, or [`NO_SLOT`].
    pub(super) slots: Box<[u16]>,
}

/// Chunks by index, each initialised at most once, in groups allocated on first use so that a
/// sparse pfn space (HVM guests with frames mapped high) costs little.
pub(super) struct ChunkTable<M> {
    pub(super) groups: Box<[OnceLock<ChunkGroup<M>>]>,
}

/// `1 << GROUP_SHIFT` chunk cells.
type ChunkGroup<M> = Box<[OnceLock<Chunk<M>>]>;

impl<M> ChunkTable<M> {
    pub(super) fn new(pfn_limit: u64) -> ChunkTable<M> {
        let chunks = pfn_limit.div_ceil(CHUNK_FRAMES as u64);
        let groups = chunks.div_ceil(1 << GROUP_SHIFT);
        ChunkTable {
            groups: (0..groups).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Chunk `index`, built by `init` on first use (concurrent first users wait for one init).
    pub(super) fn get_or_init(&self, index: u64, init: impl FnOnce() -> Chunk<M>) -> Option<&Chunk<M>> {
        let group = self.groups.get(usize::try_from(index >> GROUP_SHIFT).ok()?)?;
        let group = group.get_or_init(|| (0..1usize << GROUP_SHIFT).map(|_| OnceLock::new()).collect());
        let cell = group.get(usize::try_from(index & ((1 << GROUP_SHIFT) - 1)).ok()?)?;
        Some(cell.get_or_init(init))
    }
}

/// How pfns become the frame numbers the foreign map takes.
pub(super) enum Translation {
    /// HVM/PVH: gfn == pfn.
    Identity,
    /// PV: the guest's p2m (pfn -> mfn, [`INVALID_MFN`] where none) and its inverse.
    Pv { p2m: Vec<u64>, m2p: HashMap<u64, u64> },
}

/// Guest memory over any [`ForeignFrames`]: the part of [`XenDomain`](super::XenDomain) tests can drive.
pub(super) struct LiveMemory<F: ForeignFrames> {
    pub(super) label: PathBuf,
    pub(super) kind: GuestKind,
    pub(super) frames: F,
    pub(super) translation: Translation,
    /// One past the highest pfn.
    pub(super) pfn_limit: u64,
    chunks: ChunkTable<F::Mapping>,
    pub(super) vcpus: Vec<VcpuState>,
    /// The first whole-chunk map failure, for diagnostics (such chunks read as absent).
    pub(super) first_map_error: OnceLock<String>,
}

impl<F: ForeignFrames> LiveMemory<F> {
    pub(super) fn new(
        label: PathBuf,
        kind: GuestKind,
        frames: F,
        translation: Translation,
        pfn_limit: u64,
    ) -> LiveMemory<F> {
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

    pub(super) fn machine_to_phys(&self, mfn: u64) -> Option<u64> {
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

    pub(super) fn page(&self, pfn: u64) -> Option<&[u8]> {
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
    pub(super) fn present_ranges(&self) -> impl Iterator<Item = Range<u64>> + '_ {
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
