//! Synthetic page tables built here for the cases real images do not show: 1 GiB pages,
//! 5-level sign extension, machine frames, KPTI, hostile tables.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use introspect::{
    AddressSpace, FrameSpace, GuestKind, ImageFormat, ModeSource, PageSize, PagingError, PagingMode, PhysMemory,
    RawMemory, VcpuState, VirtError, VirtualMemory, detect_kernel_root,
};

const P: u64 = 1; // present
const RW: u64 = 2;
const US: u64 = 4;
const PS: u64 = 1 << 7;
const NX: u64 = 1 << 63;
/// Machine frames of the synthetic "dump-core" are pfn + this.
const MFN_OFFSET: u64 = 0x80000;

/// Sparse physical memory with hand-built page tables.
struct Synth {
    pages: BTreeMap<u64, Vec<u8>>,
    machine: bool,
    kind: GuestKind,
    vcpus: Vec<VcpuState>,
    vmcoreinfo: Option<String>,
    next_table: u64,
    path: PathBuf,
}

impl Synth {
    fn new() -> Synth {
        Synth {
            pages: BTreeMap::new(),
            machine: false,
            kind: GuestKind::Unspecified,
            vcpus: Vec::new(),
            vmcoreinfo: None,
            next_table: 0x100,
            path: PathBuf::from("synthetic"),
        }
    }

    /// Guest page `pfn`, created zeroed.
    fn page_mut(&mut self, pfn: u64) -> &mut Vec<u8> {
        self.pages.entry(pfn).or_insert_with(|| vec![0; 4096])
    }

    fn fill(&mut self, pfn: u64, byte: u8) {
        self.page_mut(pfn).fill(byte);
    }

    /// Frame number as the tables store it.
    fn frame(&self, pfn: u64) -> u64 {
        if self.machine { pfn + MFN_OFFSET } else { pfn }
    }

    fn set(&mut self, table: u64, idx: u64, entry: u64) {
        let at = idx as usize * 8;
        self.page_mut(table)[at..at + 8].copy_from_slice(&entry.to_le_bytes());
    }

    fn get(&self, table: u64, idx: u64) -> u64 {
        let p = &self.pages[&table];
        u64::from_le_bytes(p[idx as usize * 8..idx as usize * 8 + 8].try_into().unwrap())
    }

    /// Maps `va` with a leaf at `leaf_level` (1: 4 KiB, 2: 2 MiB, 3: 1 GiB) to `pfn`, adding
    /// `flags` to the leaf and creating intermediate tables as needed.
    fn map(&mut self, root: u64, levels: u8, va: u64, leaf_level: u8, pfn: u64, flags: u64) {
        let mut table = root;
        for level in (leaf_level + 1..=levels).rev() {
            let idx = (va >> (12 + 9 * (u64::from(level) - 1))) & 511;
            let e = self.get_or_zero(table, idx);
            table = if e & P != 0 {
                let frame = (e & 0x000f_ffff_ffff_f000) >> 12;
                if self.machine { frame - MFN_OFFSET } else { frame }
            } else {
                let t = self.next_table;
                self.next_table += 1;
                self.page_mut(t);
                let entry = (self.frame(t) << 12) | P | RW | US;
                self.set(table, idx, entry);
                t
            };
        }
        let idx = (va >> (12 + 9 * (u64::from(leaf_level) - 1))) & 511;
        let ps = if leaf_level > 1 { PS } else { 0 };
        let entry = (self.frame(pfn) << 12) | P | ps | flags;
        self.set(table, idx, entry);
    }

    fn get_or_zero(&mut self, table: u64, idx: u64) -> u64 {
        self.page_mut(table);
        self.get(table, idx)
    }
}

impl PhysMemory for Synth {
    fn path(&self) -> &Path {
        &self.path
    }
    fn format(&self) -> ImageFormat {
        ImageFormat::Raw
    }
    fn guest_kind(&self) -> GuestKind {
        self.kind
    }
    fn page(&self, pfn: u64) -> Option<&[u8]> {
        self.pages.get(&pfn).map(Vec::as_slice)
    }
    fn present_ranges(&self) -> Box<dyn Iterator<Item = Range<u64>> + '_> {
        Box::new(self.pages.keys().map(|&p| p..p + 1))
    }
    fn vcpus(&self) -> &[VcpuState] {
        &self.vcpus
    }
    fn frame_space(&self) -> FrameSpace {
        if self.machine {
            FrameSpace::Machine
        } else {
            FrameSpace::Physical
        }
    }
    fn machine_to_phys(&self, mfn: u64) -> Option<u64> {
        // Like a dump-core's p2m: defined for every guest frame, whether or not saved.
        mfn.checked_sub(MFN_OFFSET).filter(|&p| p < 0x10_0000)
    }
    fn vmcoreinfo(&self) -> Option<&str> {
        self.vmcoreinfo.as_deref()
    }
}

const ROOT: u64 = 1;

/// 4 KiB, 2 MiB and 1 GiB leaves in one 4-level or 5-level tree; returns the image.
fn three_sizes(levels: u8, machine: bool) -> Synth {
    let mut m = Synth::new();
    m.machine = machine;
    m.page_mut(ROOT);
    // Bits 52..62 (software, protection key) and NX must not leak into the frame.
    let junk = NX | (0x7ff << 52) | RW;
    m.map(ROOT, levels, 0x0000_7f00_0020_3000, 1, 0x10, junk | US);
    m.map(ROOT, levels, 0xffff_c900_0040_0000, 2, 0x200, junk); // 2 MiB at pfn 0x200
    m.map(ROOT, levels, 0xffff_c900_4000_0000, 3, 0x40000, junk); // 1 GiB at pfn 0x40000
    m.fill(0x10, 0x11);
    m.fill(0x200 + 4, 0x24);
    m.fill(0x200 + 5, 0x25);
    m.fill(0x40000 + 0x1234, 0x31);
    m
}

fn sign_extended_5level(m: &mut Synth) {
    // In 5-level mode 0xffff_c900_... has PML5 index 511; map a lower-half address that only
    // 5-level paging can express (bit 48 set).
    m.map(ROOT, 5, 0x0001_2300_0000_0000, 1, 0x11, US);
    m.fill(0x11, 0x55);
}

fn check_three_sizes(m: &Synth, mode: PagingMode) {
    let s = AddressSpace::new(m, ROOT, mode);
    let t = s.walk(0x0000_7f00_0020_3abc).unwrap();
    assert_eq!((t.paddr, t.page_size), (0x10abc, PageSize::Size4K));
    assert_eq!(t.entry & (NX | US), NX | US);
    let t = s.walk(0xffff_c900_0045_6789).unwrap();
    assert_eq!((t.paddr, t.page_size), (0x200000 + 0x56789, PageSize::Size2M));
    let t = s.walk(0xffff_c900_4123_4567).unwrap();
    assert_eq!((t.paddr, t.page_size), (0x4000_0000 + 0x123_4567, PageSize::Size1G));
    let mut b = [0; 3];
    s.read_virt(0xffff_c900_0040_4fff, &mut b).unwrap();
    assert_eq!(b, [0x24, 0x25, 0x25], "crosses from pfn 0x204 into 0x205");
    s.read_virt(0xffff_c900_4123_4ffe, &mut b[..2]).unwrap();
    assert_eq!(b[..2], [0x31, 0x31]);
    // Translated, but the page is not in the image.
    assert_eq!(
        s.read_virt(0xffff_c900_0060_0000 - 1, &mut b),
        Err(VirtError::NotInImage {
            vaddr: 0xffff_c900_0060_0000 - 1,
            paddr: 0x3ff_fff
        })
    );
    // Non-present entries at each level.
    assert_eq!(
        s.walk(0x0000_1000_0000_0000),
        Err(VirtError::NotMapped {
            vaddr: 0x0000_1000_0000_0000,
            level: 4
        })
    );
    assert_eq!(
        s.walk(0xffff_c900_8000_0000),
        Err(VirtError::NotMapped {
            vaddr: 0xffff_c900_8000_0000,
            level: 3
        })
    );
    assert_eq!(
        s.walk(0x0000_7f00_0060_0000),
        Err(VirtError::NotMapped {
            vaddr: 0x0000_7f00_0060_0000,
            level: 2
        })
    );
    assert_eq!(
        s.walk(0x0000_7f00_0020_4000),
        Err(VirtError::NotMapped {
            vaddr: 0x0000_7f00_0020_4000,
            level: 1
        })
    );
    // Regions: exact, in order, clipped to the range asked for.
    let regions: Vec<_> = s.regions(0..=u64::MAX).map(Result::unwrap).collect();
    let want = |vaddr, len, paddr, page_size| introspect::MappedRegion {
        vaddr,
        len,
        paddr,
        page_size,
    };
    let mut expected = vec![
        want(0x0000_7f00_0020_3000, 0x1000, 0x10000, PageSize::Size4K),
        want(0xffff_c900_0040_0000, 0x20_0000, 0x20_0000, PageSize::Size2M),
        want(0xffff_c900_4000_0000, 0x4000_0000, 0x4000_0000, PageSize::Size1G),
    ];
    if m.pages.contains_key(&0x11) {
        expected.insert(1, want(0x0001_2300_0000_0000, 0x1000, 0x11000, PageSize::Size4K));
    }
    // Machine-frame large pages are translated page by page and coalesced again.
    assert_eq!(regions, expected);
    let clipped: Vec<_> = s
        .regions(0xffff_c900_0041_0000..=0xffff_c900_4000_1fff)
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        clipped,
        vec![
            want(0xffff_c900_0041_0000, 0x1f_0000, 0x21_0000, PageSize::Size2M),
            want(0xffff_c900_4000_0000, 0x2000, 0x4000_0000, PageSize::Size1G),
        ]
    );
}

#[test]
fn synthetic_four_level_page_sizes() {
    let m = three_sizes(4, false);
    check_three_sizes(&m, PagingMode::Level4);
    let s = AddressSpace::new(&m, ROOT, PagingMode::Level4);
    // 4-level canonical form: bits 63..47 equal.
    for va in [0x0000_8000_0000_0000, 0x0001_2300_0000_0000, 0xff7f_ffff_ffff_f000] {
        assert_eq!(s.walk(va), Err(VirtError::NonCanonical { vaddr: va }));
    }
    // A read running off the top of the address space fails instead of wrapping.
    let mut b = [0; 2];
    assert!(s.read_virt(u64::MAX, &mut b).is_err());
}

#[test]
fn synthetic_five_level() {
    let mut m = three_sizes(5, false);
    sign_extended_5level(&mut m);
    check_three_sizes(&m, PagingMode::Level5);
    let s = AddressSpace::new(&m, ROOT, PagingMode::Level5);
    assert_eq!(s.translate(0x0001_2300_0000_0042), Ok(0x11042));
    // 5-level canonical form: bits 63..56 equal.
    assert!(
        s.walk(0x00ff_ffff_ffff_f000)
            .is_err_and(|e| matches!(e, VirtError::NotMapped { level: 5, .. }))
    );
    assert_eq!(
        s.walk(0x0100_0000_0000_0000),
        Err(VirtError::NonCanonical {
            vaddr: 0x0100_0000_0000_0000
        })
    );
    // The same tables read as 4-level index different slots and find nothing there.
    assert!(
        AddressSpace::new(&m, ROOT, PagingMode::Level4)
            .walk(0x0000_7f00_0020_3000)
            .is_err()
    );
}

#[test]
fn synthetic_machine_frames() {
    let mut m = three_sizes(4, true);
    check_three_sizes(&m, PagingMode::Level4);
    // The root's entries really hold machine frames.
    let e = m.get(ROOT, 0xfe);
    assert!((e & 0x000f_ffff_ffff_f000) >> 12 >= MFN_OFFSET, "{e:#x}");
    // A frame outside the p2m is an error naming it and the table, not a wild read.
    m.map(ROOT, 4, 0x0000_7f00_0020_5000, 1, 0x10, US);
    let l4 = m.get(ROOT, 0xfe);
    let l3_pfn = ((l4 & 0x000f_ffff_ffff_f000) >> 12) - MFN_OFFSET;
    let l3 = m.get(l3_pfn, 0);
    let l2_pfn = ((l3 & 0x000f_ffff_ffff_f000) >> 12) - MFN_OFFSET;
    let l2 = m.get(l2_pfn, 1);
    let l1_pfn = ((l2 & 0x000f_ffff_ffff_f000) >> 12) - MFN_OFFSET;
    m.set(l1_pfn, 5, (0x7777_7777 << 12) | P);
    let s = AddressSpace::new(&m, ROOT, PagingMode::Level4);
    assert_eq!(s.translate(0x0000_7f00_0020_3000), Ok(0x10000));
    match s.walk(0x0000_7f00_0020_5000) {
        Err(VirtError::BadTable { vaddr, paddr, reason }) => {
            assert_eq!((vaddr, paddr), (0x0000_7f00_0020_5000, l1_pfn << 12));
            assert!(reason.contains("machine frame 0x77777777"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let regions: Vec<_> = s.regions(0x0000_7f00_0020_0000..=0x0000_7f00_0020_ffff).collect();
    assert_eq!(regions.len(), 2, "{regions:x?}");
    assert!(regions[1].as_ref().is_err_and(|e| e.to_string().contains("0x77777777")));
}

#[test]
fn synthetic_absent_and_reserved() {
    let mut m = three_sizes(4, false);
    // A table pointer to a page the image lacks: an error naming the table, not zeros.
    m.set(ROOT, 3, (0x9999 << 12) | P);
    let s = AddressSpace::new(&m, ROOT, PagingMode::Level4);
    let va = 3 << 39;
    match s.walk(va) {
        Err(VirtError::BadTable { vaddr, paddr, reason }) => {
            assert_eq!((vaddr, paddr), (va, 0x9999000));
            assert!(reason.contains("level-3 page table is not in the image"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // PS is reserved at level 4.
    m.set(ROOT, 4, (0x10 << 12) | P | PS);
    let s = AddressSpace::new(&m, ROOT, PagingMode::Level4);
    let err = s.walk(4 << 39).unwrap_err();
    assert!(err.to_string().contains("page-size bit"), "{err}");
    // A root the image lacks.
    let s = AddressSpace::new(&m, 0xdead, PagingMode::Level4);
    assert!(matches!(s.walk(0), Err(VirtError::BadTable { paddr: 0xdead000, .. })));
    let regions: Vec<_> = s.kernel_regions().collect();
    assert_eq!(regions.len(), 1);
    assert!(regions[0].is_err());
}

#[test]
fn synthetic_self_referencing_tables_terminate() {
    let mut m = Synth::new();
    for idx in 0..512 {
        m.set(ROOT, idx, (ROOT << 12) | P | RW);
    }
    for mode in [PagingMode::Level4, PagingMode::Level5] {
        let s = AddressSpace::new(&m, ROOT, mode);
        // Each level reads the root again; the last one takes it as the data page.
        assert_eq!(s.translate(0x123), Ok((ROOT << 12) | 0x123));
        assert_eq!(s.translate(mode.kernel_half_start() | 0x7654_3000), Ok(ROOT << 12));
        // The region scan would enumerate 2^36+ pages; its budget stops it with an error.
        let items: Vec<_> = s.regions(0..=u64::MAX).with_budget(100_000).collect();
        let last = items.last().unwrap();
        assert!(
            last.as_ref().is_err_and(|e| e.to_string().contains("budget exhausted")),
            "{last:?}"
        );
        assert!(items.len() < 100_000);
        // The direct-map search is bounded too, and finds nothing sensible.
        assert!(s.find_direct_map().is_err());
    }
}

/// A kernel-like tree: a 1 GiB-aligned linear map of all RAM with 2 MiB and 4 KiB pages, a
/// kernel image mapping elsewhere, and decoys the direct-map search must not pick.
fn kernel_like(levels: u8, base: u64) -> Synth {
    let mut m = Synth::new();
    // RAM: pfns 0..0x700 (the tables, allocated from 0x100, live in it too).
    for pfn in 0..0x700 {
        m.page_mut(pfn);
    }
    m.map(ROOT, levels, base, 2, 0, RW | NX); // first 2 MiB as one large page
    for pfn in 0x200..0x700 {
        m.map(ROOT, levels, base + (pfn << 12), 1, pfn, RW | NX);
    }
    // Kernel text at the top, physical 16 MiB: not 1 GiB-aligned, outside the window.
    m.map(ROOT, levels, 0xffff_ffff_8100_0000, 2, 0x1000, 0);
    // vmalloc-like 4 KiB mappings of scattered pages.
    m.map(ROOT, levels, base + (64 << 30), 1, 0x423, RW);
    m
}

#[test]
fn synthetic_direct_map_detection_and_mode_probe() {
    for (levels, mode, base) in [
        (4, PagingMode::Level4, 0xffff_8994_c000_0000u64),
        (5, PagingMode::Level5, 0xff21_d69f_4000_0000u64),
    ] {
        let mut m = kernel_like(levels, base);
        let s = AddressSpace::new(&m, ROOT, mode);
        let d = s.find_direct_map().unwrap();
        assert_eq!(d.base, base);
        assert_eq!(d.matched, d.sampled);
        assert_eq!(d.virt(0x1234), Some(base + 0x1234));
        // No CR4, no VMCOREINFO: the probe decides.
        m.vcpus = vec![VcpuState {
            cr0: Some(0x8005_0033),
            cr3: Some(ROOT << 12),
            root_table_pfn: Some(ROOT),
            ..VcpuState::default()
        }];
        let r = detect_kernel_root(&m).unwrap();
        assert_eq!(
            (r.root_pfn, r.mode, r.mode_source),
            (ROOT, mode, ModeSource::DirectMapProbe)
        );
        // VMCOREINFO outranks the probe; CR4 outranks both.
        m.vmcoreinfo = Some(format!(
            "OSRELEASE=x\nNUMBER(pgtable_l5_enabled)={}\n",
            u8::from(levels == 5)
        ));
        assert_eq!(detect_kernel_root(&m).unwrap().mode_source, ModeSource::Vmcoreinfo);
        m.vcpus[0].cr4 = Some(if levels == 5 { 1 << 12 } else { 0 });
        let r = detect_kernel_root(&m).unwrap();
        assert_eq!((r.mode, r.mode_source), (mode, ModeSource::Cr4));
        // Not in long mode.
        m.vcpus[0].efer = Some(0);
        assert!(matches!(detect_kernel_root(&m), Err(PagingError::NotLongMode { .. })));
    }
    // A tree with no 1 GiB-aligned linear map: reported, not guessed.
    let m = three_sizes(4, false);
    let err = AddressSpace::new(&m, ROOT, PagingMode::Level4)
        .find_direct_map()
        .unwrap_err();
    assert!(matches!(err, PagingError::DirectMapNotFound { .. }), "{err}");
}

#[test]
fn synthetic_kpti_user_root_is_swapped_for_the_kernel_one() {
    const KERNEL: u64 = 0x20; // 8 KiB-aligned pair
    const USER: u64 = 0x21;
    let mut m = kernel_like(4, 0xffff_8994_c000_0000);
    // Move the kernel tree to the pair's first page and build the user twin.
    let root = m.pages[&ROOT].clone();
    *m.page_mut(KERNEL) = root;
    m.map(KERNEL, 4, 0x0000_5555_0000_0000, 1, 0x400, US | RW);
    let user_entry = m.get(KERNEL, 0xaa);
    m.set(KERNEL, 0xaa, user_entry | NX); // PTI's kernel copy of a user entry carries NX
    m.set(USER, 0xaa, user_entry);
    m.map(USER, 4, 0xffff_fe00_0000_0000, 1, 0x401, 0); // cpu_entry_area only
    let vcpu = VcpuState {
        cr0: Some(0x8005_0033),
        cr3: Some((USER << 12) | 0x801), // PCID bits in the low 12
        cr4: Some(1 << 17),
        root_table_pfn: Some(USER),
        ..VcpuState::default()
    };
    m.vcpus = vec![vcpu];
    let r = detect_kernel_root(&m).unwrap();
    assert_eq!((r.root_pfn, r.kpti_user_root), (KERNEL, true));
    let (s, _) = AddressSpace::kernel(&m).unwrap();
    assert_eq!(s.translate(0xffff_8994_c000_0000 + 0x200_000), Ok(0x200_000));
    assert_eq!(s.translate(0x0000_5555_0000_0010), Ok(0x400_010));
    // An odd root without a twin below it is used as is.
    m.set(USER, 0xab, (0x400 << 12) | P | US);
    let r = detect_kernel_root(&m).unwrap();
    assert_eq!((r.root_pfn, r.kpti_user_root), (USER, false));
    // Xen PV never uses the KPTI pair layout.
    m.set(USER, 0xab, 0);
    m.kind = GuestKind::XenPv;
    assert_eq!(detect_kernel_root(&m).unwrap().root_pfn, USER);
}

#[test]
fn synthetic_raw_memory_walk() {
    // The walker over a real memory source type: tables at pfns 1-4, data at pfn 5.
    let mut bytes = vec![0u8; 6 * 4096];
    let mut put = |pfn: usize, idx: usize, e: u64| bytes[pfn * 4096 + idx * 8..][..8].copy_from_slice(&e.to_le_bytes());
    put(1, 0, (2 << 12) | P);
    put(2, 0, (3 << 12) | P);
    put(3, 0, (4 << 12) | P);
    put(4, 7, (5 << 12) | P);
    bytes[5 * 4096..5 * 4096 + 5].copy_from_slice(b"hello");
    let raw = RawMemory::from_bytes("raw", bytes).unwrap();
    let s = AddressSpace::new(&raw, 1, PagingMode::Level4);
    let mut b = [0; 5];
    s.read_virt(0x7000, &mut b).unwrap();
    assert_eq!(&b, b"hello");
    assert!(matches!(
        s.translate(0x8000),
        Err(VirtError::NotMapped { level: 1, .. })
    ));
}
