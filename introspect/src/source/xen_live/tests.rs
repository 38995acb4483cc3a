use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::ffi::REMEDY_PRIVCMD;
use super::frames::*;
use super::p2m::*;
use super::vcpu::*;
use super::*;
use crate::bytes::le_u64;
use crate::source::memory::PAGE_SIZE;

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
