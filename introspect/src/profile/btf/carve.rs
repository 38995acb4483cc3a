//! [`find_kernel_btf`]: the running kernel's `.BTF` carved out of a memory image.

use super::{Btf, HEADER_LEN, le32};
use crate::source::memory::{PAGE_SHIFT, PAGE_SIZE, PhysMemory};

/// Largest blob [`find_kernel_btf`] reads: 6.x distribution kernels have 4–8 MiB.
const MAX_CARVED_LEN: u64 = 128 << 20;
/// Plausible headers [`find_kernel_btf`] reads and parses before giving up: each may cost
/// `MAX_CARVED_LEN`, and a guest can plant as many as it likes.
const MAX_CARVE_CANDIDATES: usize = 8;

/// The kernel's BTF found in a memory image.
#[derive(Debug)]
pub struct CarvedBtf {
    /// Guest-physical address of the blob's first byte.
    pub paddr: u64,
    pub btf: Btf,
}

/// Searches guest-physical memory for the running kernel's `.BTF` and returns the first blob
/// (lowest address) that parses completely and defines `task_struct`; `None` if no page holds one.
///
/// The kernel image is physically contiguous, so its `.BTF` is one run of pages. The section
/// has alignment 1 in vmlinux (on 6.1 it follows `.notes` at a 4-byte boundary), so every
/// byte offset is searched for the header start `9F EB 01`. Candidates are cheaply vetted
/// first (header as the kernel's pahole writes it: 24-byte header, types first, strings right
/// after, NUL at both ends of the strings) before the whole blob is read and parsed. Module
/// (split) BTF fails to parse on its own and is skipped.
pub fn find_kernel_btf(mem: &dyn PhysMemory) -> Option<CarvedBtf> {
    const PREFIX: [u8; 3] = [0x9f, 0xeb, 0x01];
    let finder = memchr::memmem::Finder::new(&PREFIX);
    let mut candidates = 0;
    for range in mem.present_ranges() {
        for pfn in range {
            let Some(page) = mem.page(pfn) else { continue };
            let base = pfn << PAGE_SHIFT;
            let hits = finder.find_iter(page).map(|i| i as u64);
            // Headers starting in the last two bytes straddle into the next page.
            let straddling = [PAGE_SIZE - 2, PAGE_SIZE - 1]
                .into_iter()
                .filter(|&i| page.get(i..).is_some_and(|tail| PREFIX.starts_with(tail)))
                .map(|i| i as u64);
            for off in hits.chain(straddling) {
                match try_candidate(mem, base + off) {
                    Candidate::Found(found) => return Some(*found),
                    Candidate::Rejected => {
                        candidates += 1;
                        if candidates >= MAX_CARVE_CANDIDATES {
                            return None;
                        }
                    }
                    Candidate::Implausible => {}
                }
            }
        }
    }
    None
}

enum Candidate {
    Found(Box<CarvedBtf>),
    /// The header's shape is wrong: cheap to see, not counted.
    Implausible,
    /// Read and parsed, and not the kernel's.
    Rejected,
}

fn try_candidate(mem: &dyn PhysMemory, paddr: u64) -> Candidate {
    let mut hdr = [0u8; HEADER_LEN];
    if mem.read_phys(paddr, &mut hdr).is_err() {
        return Candidate::Implausible;
    }
    let field = |i: usize| le32(&hdr, i).unwrap_or(0);
    let (hdr_len, type_off, type_len, str_off, str_len) = (field(4), field(8), field(12), field(16), field(20));
    let plausible = hdr[..4] == [0x9f, 0xeb, 0x01, 0x00]
        && hdr_len as usize == HEADER_LEN
        && type_off == 0
        && type_len > 0
        && type_len % 4 == 0
        && str_off == type_len
        && str_len > 0;
    let total = HEADER_LEN as u64 + u64::from(type_len) + u64::from(str_len);
    if !plausible || total > MAX_CARVED_LEN {
        return Candidate::Implausible;
    }
    let mut edge = [0u8; 1];
    let str_at = paddr + HEADER_LEN as u64 + u64::from(str_off);
    for at in [str_at, paddr + total - 1] {
        if mem.read_phys(at, &mut edge).is_err() || edge[0] != 0 {
            return Candidate::Implausible;
        }
    }
    let mut blob = vec![0u8; total as usize];
    if mem.read_phys(paddr, &mut blob).is_err() {
        return Candidate::Rejected;
    }
    let origin = format!("{}: guest-physical {paddr:#x}", mem.path().display());
    match Btf::parse(origin, blob) {
        Ok(btf) if btf.find_struct("task_struct").is_some() => Candidate::Found(Box::new(CarvedBtf { paddr, btf })),
        _ => Candidate::Rejected,
    }
}
