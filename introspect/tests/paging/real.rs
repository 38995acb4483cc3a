//! Real images: the kernel root, the direct map, user space and the kernel half's regions of
//! the fixtures' Xen PV save and dump-core, both QEMU dumps and the test bed's dump.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use introspect::{
    AddressSpace, DirectMap, FrameSpace, GuestKind, ImageFormat, KernelRoot, ModeSource, PageSize, PagingError,
    PagingMode, PhysMemory, VcpuState, VirtError, VirtualMemory, detect_kernel_root, open_memory,
};

use crate::common;

/// `page_offset_base` when KASLR does not move it (4-level `__PAGE_OFFSET_BASE_L4`).
const DEFAULT_PAGE_OFFSET_L4: u64 = 0xffff_8880_0000_0000;

/// One real image with the addresses its ground truth records.
struct Case {
    name: &'static str,
    mem: Box<dyn PhysMemory>,
    gt: serde_json::Value,
    mode: PagingMode,
    /// Runtime address of `linux_banner`.
    banner: u64,
    /// Runtime address of the variable `page_offset_base`.
    page_offset_base_var: u64,
    /// Its value, where the ground truth records it (QEMU monitor, read while stopped).
    page_offset_base_value: Option<u64>,
}

fn xen_case(fx: &Path, name: &'static str, file: &str) -> Case {
    let gt = common::json(&fx.join("xen-pv-a/ground-truth.json"));
    let sym = |s: &str| common::hex(&gt["kallsyms_selected"][s][0]["addr"]);
    Case {
        name,
        mem: open_memory(common::decompressed(fx, file)).expect("open Xen image"),
        banner: sym("linux_banner"),
        page_offset_base_var: sym("page_offset_base"),
        page_offset_base_value: None,
        mode: PagingMode::Level4,
        gt,
    }
}

fn qemu_case(name: &'static str, dump: PathBuf, gt_path: &Path, mode: PagingMode) -> Case {
    let gt = common::json(gt_path);
    let sym = |s: &str| common::hex(&gt["kaslr"]["runtime_symbols"][s]);
    Case {
        name,
        mem: open_memory(dump).expect("open QEMU dump"),
        banner: sym("linux_banner"),
        page_offset_base_var: sym("page_offset_base"),
        page_offset_base_value: Some(common::hex(&gt["kaslr"]["page_offset_base_value"])),
        mode,
        gt,
    }
}

/// The shared fixtures' images, or none (after a loud skip message).
fn fixture_cases() -> Vec<Case> {
    let Some(fx) = common::fixtures() else {
        return Vec::new();
    };
    let qemu = |name, dir: &str, mode| {
        qemu_case(
            name,
            common::decompressed(&fx, &format!("{dir}/dump.elf")),
            &fx.join(format!("{dir}/ground-truth.json")),
            mode,
        )
    };
    vec![
        xen_case(&fx, "xen-pv save", "xen-pv-a/domU-A.save"),
        xen_case(&fx, "xen-pv dump-core", "xen-pv-a/domU-A.core"),
        qemu("qemu 4-level", "qemu-6.1-4level", PagingMode::Level4),
        qemu("qemu la57", "qemu-6.1-la57", PagingMode::Level5),
    ]
}

/// The test bed's QEMU dump (see `common::testbed_memdump` for when it may be missing).
fn testbed_case(test: &str) -> Option<Case> {
    let dir = common::testbed_memdump(test)?;
    let case = qemu_case(
        "test bed",
        dir.join("dump.elf"),
        &dir.join("ground-truth.json"),
        PagingMode::Level4,
    );
    let kernel = common::testbed_kernel(test);
    assert_eq!(
        case.gt["uname"]["release"],
        kernel.release.as_str(),
        "the test bed's record vs its guest"
    );
    assert_eq!(
        case.gt["proc_files"]["/proc/version"],
        kernel.banner.as_str(),
        "the test bed's record vs its guest"
    );
    Some(case)
}

fn read_u64(space: &AddressSpace<'_>, vaddr: u64) -> u64 {
    let mut b = [0; 8];
    space
        .read_virt(vaddr, &mut b)
        .unwrap_or_else(|e| panic!("read {vaddr:#x}: {e}"));
    u64::from_le_bytes(b)
}

/// The kernel root must come from the saved CR3 (no KPTI on these guests), the mode from CR4.
fn check_root(case: &Case) -> KernelRoot {
    let root = detect_kernel_root(case.mem.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let vcpu = &case.mem.vcpus()[0];
    assert_eq!(root.vcpu, vcpu.id, "{}", case.name);
    assert_eq!(Some(root.root_pfn), vcpu.root_table_pfn, "{}", case.name);
    assert_eq!(root.mode, case.mode, "{}", case.name);
    assert_eq!(root.mode_source, ModeSource::Cr4, "{}", case.name);
    assert!(!root.kpti_user_root, "{}", case.name);
    root
}

/// (a) `linux_banner` read through the kernel's page tables is the banner /proc/version showed;
/// (b) the detected direct map equals the value of `page_offset_base` read through the walker
/// and, for QEMU, the value the monitor recorded.
fn check_banner_and_direct_map(case: &Case) -> DirectMap {
    check_root(case);
    let (space, _) = AddressSpace::kernel(case.mem.as_ref()).unwrap();
    let version = case.gt["proc_files"]["/proc/version"].as_str().expect("/proc/version");
    // Each image is held to the kernel its guest reported, never to a release named here.
    let release = case.gt["uname"]["release"]
        .as_str()
        .expect("ground truth uname.release");
    let prefix = format!("Linux version {release} ");
    let mut banner = vec![0; version.len()];
    space
        .read_virt(case.banner, &mut banner)
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    assert!(
        banner.starts_with(prefix.as_bytes()),
        "{}: {:?}",
        case.name,
        String::from_utf8_lossy(&banner)
    );
    assert_eq!(banner, version.as_bytes(), "{}", case.name);
    let t = space.walk(case.banner).unwrap();
    // Kernel data is mapped with 2 MiB pages on bare metal; Xen PV allows no superpages.
    let expected_size = if case.mem.guest_kind() == GuestKind::XenPv {
        PageSize::Size4K
    } else {
        PageSize::Size2M
    };
    assert_eq!(t.page_size, expected_size, "{}", case.name);

    let found = space.find_direct_map().unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let variable = read_u64(&space, case.page_offset_base_var);
    assert_eq!(
        found.base, variable,
        "{}: detected vs page_offset_base in memory",
        case.name
    );
    if let Some(value) = case.page_offset_base_value {
        assert_eq!(found.base, value, "{}: detected vs ground truth", case.name);
    }
    assert_eq!(found.sampled, 32, "{}", case.name);
    assert!(found.matched >= 30, "{}: {found:?}", case.name);
    // The banner's physical page seen through the direct map holds the banner too.
    let mut again = vec![0; prefix.len()];
    space.read_virt(found.base + t.paddr, &mut again).unwrap();
    assert_eq!(again, prefix.as_bytes(), "{}", case.name);
    eprintln!(
        "{}: root pfn {:#x} {:?}, page_offset_base {:#x} ({}/{} samples)",
        case.name,
        space.root_pfn(),
        space.mode(),
        found.base,
        found.matched,
        found.sampled
    );
    found
}

#[test]
fn fixtures_banner_and_direct_map() {
    let cases = fixture_cases();
    let mut bases = HashMap::new();
    for case in &cases {
        bases.insert(case.name, check_banner_and_direct_map(case).base);
    }
    if cases.is_empty() {
        return;
    }
    // Xen PV boots without the decompressor, so KASLR never moves the direct map; the QEMU
    // guests' KASLR did.
    assert_eq!(bases["xen-pv save"], DEFAULT_PAGE_OFFSET_L4);
    assert_eq!(bases["xen-pv dump-core"], DEFAULT_PAGE_OFFSET_L4);
    assert_ne!(bases["qemu 4-level"], DEFAULT_PAGE_OFFSET_L4);
}

#[test]
fn testbed_banner_and_direct_map() {
    let Some(case) = testbed_case("testbed_banner_and_direct_map") else {
        return;
    };
    check_banner_and_direct_map(&case);
}

/// Pages the QEMU guests' holder processes filled: "DORMOUSE-MARK pid=P page=N va=0xV\n" at
/// the start of every 4 KiB page of their buffers. Returns pid -> (va, pfn) per page.
fn marker_pages(mem: &dyn PhysMemory) -> BTreeMap<u32, Vec<(u64, u64)>> {
    let mut out: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
    for pfn in mem.present_pfns() {
        let Some(page) = mem.page(pfn) else { continue };
        let Some(rest) = page.strip_prefix(b"DORMOUSE-MARK pid=") else {
            continue;
        };
        let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = std::str::from_utf8(line).expect("marker line is ASCII");
        let mut words = line.split(' ');
        let pid = words.next().and_then(|w| w.parse().ok()).expect("marker pid");
        let va = words
            .nth(1)
            .and_then(|w| w.strip_prefix("va=0x"))
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .expect("marker va");
        out.entry(pid).or_default().push((va, pfn));
    }
    out
}

/// Pages that look like a process's top-level table: the kernel half equals the kernel
/// root's (Linux copies it into every new pgd) and the user half maps something.
fn candidate_pgds(mem: &dyn PhysMemory, kernel_root: u64) -> Vec<u64> {
    let kernel = mem.page(kernel_root).expect("kernel root page");
    mem.present_pfns()
        .filter(|&pfn| pfn != kernel_root)
        .filter(|&pfn| {
            mem.page(pfn)
                .is_some_and(|p| p[2048..] == kernel[2048..] && p[..2048].chunks_exact(8).any(|e| e[0] & 1 == 1))
        })
        .collect()
}

/// (c) user space: the buffer the guest's `dormouse-p1` filled at 0x7e5700000000 (and every
/// other marker buffer) translates, page by page, to the physical pages holding its markers,
/// under exactly one candidate pgd.
fn check_user_markers(case: &Case) {
    let mem = case.mem.as_ref();
    let (kernel, _) = AddressSpace::kernel(mem).unwrap();
    let markers = marker_pages(mem);
    let pgds = candidate_pgds(mem, kernel.root_pfn());
    assert!(!pgds.is_empty(), "{}: no process page tables found", case.name);
    let p1 = case.gt["holder_reports"]["p1.out"].as_str().expect("holder report");
    let p1_pid: u32 = p1
        .strip_prefix("HOLDER pid=")
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("p1 pid");
    assert!(p1.contains("buf=0x7e5700000000 len=262144 pages=64"), "{p1}");
    assert_eq!(
        markers.get(&p1_pid).map(Vec::len),
        Some(64),
        "{}: p1's marker pages",
        case.name
    );

    for (pid, pages) in &markers {
        let &(va0, pfn0) = pages.iter().min().expect("at least one page");
        let owners: Vec<u64> = pgds
            .iter()
            .copied()
            .filter(|&pgd| kernel.with_root(pgd).translate(va0) == Ok(pfn0 << 12))
            .collect();
        assert_eq!(
            owners.len(),
            1,
            "{}: pid {pid}: pgds mapping {va0:#x}: {owners:x?}",
            case.name
        );
        let space = kernel.with_root(owners[0]);
        for &(va, pfn) in pages {
            let t = space
                .walk(va)
                .unwrap_or_else(|e| panic!("{}: pid {pid}: {e}", case.name));
            assert_eq!(t.paddr, pfn << 12, "{}: pid {pid} va {va:#x}", case.name);
            assert_eq!(t.page_size, PageSize::Size4K);
            assert_eq!(t.entry & 0b110, 0b110, "{}: user-accessible, writable", case.name);
        }
        // The same pages through one linear virtual read, and through the region scan.
        let span = pages.len() as u64 * 4096;
        let mut buf = vec![0; span as usize];
        space.read_virt(va0, &mut buf).unwrap();
        for (i, chunk) in buf.chunks_exact(4096).enumerate() {
            let want = format!("DORMOUSE-MARK pid={pid} page={i} va={:#x}\n", va0 + i as u64 * 4096);
            assert!(
                chunk.starts_with(want.as_bytes()),
                "{}: pid {pid} page {i}: {:?}",
                case.name,
                String::from_utf8_lossy(&chunk[..64])
            );
        }
        let regions: Vec<_> = space.regions(va0..=va0 + span - 1).map(Result::unwrap).collect();
        assert_eq!(
            regions.iter().map(|r| r.len).sum::<u64>(),
            span,
            "{}: {regions:x?}",
            case.name
        );
        assert!(regions.iter().all(|r| r.page_size == PageSize::Size4K));
        // A user pgd's kernel half is the kernel's: kernel addresses translate alike.
        assert_eq!(space.translate(case.banner), kernel.translate(case.banner));
        eprintln!(
            "{}: pid {pid}: {} marker pages at {va0:#x} under pgd pfn {:#x}",
            case.name,
            pages.len(),
            owners[0]
        );
    }
    // The kernel's own table maps no user buffer.
    assert!(matches!(
        kernel.translate(0x7e57_0000_0000),
        Err(VirtError::NotMapped { .. })
    ));
}

#[test]
fn fixtures_user_space_markers() {
    for case in fixture_cases().iter().filter(|c| c.name.starts_with("qemu")) {
        check_user_markers(case);
    }
}

/// A real image with the vCPU's CR4 (and optionally the VMCOREINFO note) hidden, as images
/// from other sources may lack them.
struct Hidden<'a> {
    inner: &'a dyn PhysMemory,
    vcpus: Vec<VcpuState>,
    keep_vmcoreinfo: bool,
}

impl<'a> Hidden<'a> {
    fn new(inner: &'a dyn PhysMemory, keep_vmcoreinfo: bool) -> Hidden<'a> {
        let vcpus = inner
            .vcpus()
            .iter()
            .map(|v| VcpuState { cr4: None, ..v.clone() })
            .collect();
        Hidden {
            inner,
            vcpus,
            keep_vmcoreinfo,
        }
    }
}

impl PhysMemory for Hidden<'_> {
    fn path(&self) -> &Path {
        self.inner.path()
    }
    fn format(&self) -> ImageFormat {
        self.inner.format()
    }
    fn guest_kind(&self) -> GuestKind {
        self.inner.guest_kind()
    }
    fn page(&self, pfn: u64) -> Option<&[u8]> {
        self.inner.page(pfn)
    }
    fn present_ranges(&self) -> Box<dyn Iterator<Item = Range<u64>> + '_> {
        self.inner.present_ranges()
    }
    fn vcpus(&self) -> &[VcpuState] {
        &self.vcpus
    }
    fn vmcoreinfo(&self) -> Option<&str> {
        self.inner.vmcoreinfo().filter(|_| self.keep_vmcoreinfo)
    }
}

#[test]
fn fixtures_mode_without_cr4() {
    for case in fixture_cases() {
        let expected = case.mode;
        let (source, with_note) = match case.mem.guest_kind() {
            GuestKind::XenPv => (ModeSource::XenPvAbi, false),
            _ => (ModeSource::DirectMapProbe, false),
        };
        let hidden = Hidden::new(case.mem.as_ref(), with_note);
        let root = detect_kernel_root(&hidden).unwrap();
        assert_eq!((root.mode, root.mode_source), (expected, source), "{}", case.name);
        if case.mem.vmcoreinfo().is_some() {
            let root = detect_kernel_root(&Hidden::new(case.mem.as_ref(), true)).unwrap();
            assert_eq!(
                (root.mode, root.mode_source),
                (expected, ModeSource::Vmcoreinfo),
                "{}",
                case.name
            );
        }
        // The wrong mode finds no direct map: the probe cannot pass by accident.
        let wrong = match expected {
            PagingMode::Level4 => PagingMode::Level5,
            PagingMode::Level5 => PagingMode::Level4,
        };
        let err = AddressSpace::new(case.mem.as_ref(), root.root_pfn, wrong)
            .find_direct_map()
            .map(|d| format!("{}: {:?} found {d:x?}", case.name, wrong))
            .unwrap_err();
        assert!(
            matches!(err, PagingError::DirectMapNotFound { .. }),
            "{}: {err}",
            case.name
        );
    }
}

/// The kernel half's regions: sorted, disjoint, each translating as the walker does; the
/// direct map covers physical 0 onwards at `page_offset_base`, the kernel image maps the banner.
#[test]
fn fixtures_kernel_regions() {
    for case in fixture_cases() {
        let (space, _) = AddressSpace::kernel(case.mem.as_ref()).unwrap();
        let base = space.find_direct_map().unwrap().base;
        let mut regions = Vec::new();
        let mut foreign = 0;
        for r in space.kernel_regions() {
            match r {
                Ok(r) => regions.push(r),
                // A paused (not suspended) PV guest still maps pages that are not its own
                // (shared info, grants); the dump-core's p2m has no entry for them.
                Err(VirtError::BadTable { reason, .. })
                    if case.mem.frame_space() == FrameSpace::Machine && reason.contains("not in the guest's p2m") =>
                {
                    foreign += 1
                }
                Err(e) => panic!("{}: {e}", case.name),
            }
        }
        assert!(foreign < 64, "{}: {foreign} foreign pages", case.name);
        for w in regions.windows(2) {
            assert!(w[0].vaddr + w[0].len <= w[1].vaddr, "{}: {:x?}", case.name, w);
        }
        for r in &regions {
            assert!(r.len > 0 && r.len % 4096 == 0 && r.vaddr >= space.mode().kernel_half_start());
            for off in [0, r.len - 4096] {
                assert_eq!(
                    space.translate(r.vaddr + off),
                    Ok(r.paddr + off),
                    "{}: {r:x?}",
                    case.name
                );
            }
        }
        let mapped = |va: u64| regions.iter().find(|r| r.vaddr <= va && va - r.vaddr < r.len);
        let direct = mapped(base + 0x100000).expect("direct map region");
        assert_eq!(
            direct.paddr + (base + 0x100000 - direct.vaddr),
            0x100000,
            "{}",
            case.name
        );
        assert!(mapped(case.banner).is_some(), "{}", case.name);
        let direct_bytes: u64 = regions
            .iter()
            .filter(|r| r.vaddr >= base && r.vaddr.wrapping_sub(r.paddr) == base)
            .map(|r| r.len)
            .sum();
        let ram = case.mem.page_count() * 4096;
        assert!(
            direct_bytes * 10 >= ram * 9,
            "{}: direct map {direct_bytes:#x} of {ram:#x}",
            case.name
        );
        eprintln!(
            "{}: {} kernel regions ({foreign} foreign pages), direct map {} MiB of {} MiB present",
            case.name,
            regions.len(),
            direct_bytes >> 20,
            ram >> 20
        );
    }
}

/// The dump-core's tables hold machine frames, the save's hold pfns: walked through the p2m,
/// both give the same physical page for the kernel's text, data and direct map.
#[test]
fn xen_save_and_dump_core_translate_alike() {
    let cases = fixture_cases();
    let (Some(save), Some(core)) = (cases.first(), cases.get(1)) else {
        return;
    };
    assert_eq!(core.mem.frame_space(), FrameSpace::Machine);
    let (s, _) = AddressSpace::kernel(save.mem.as_ref()).unwrap();
    let (c, _) = AddressSpace::kernel(core.mem.as_ref()).unwrap();
    let sym = |n: &str| common::hex(&save.gt["kallsyms_selected"][n][0]["addr"]);
    let text: Vec<u64> = ["_stext", "linux_banner", "init_task", "init_mm", "init_uts_ns", "_end"]
        .iter()
        .map(|n| sym(n))
        .collect();
    let direct = (0..64u64).map(|i| DEFAULT_PAGE_OFFSET_L4 + i * 1021 * 4096);
    let mut compared = 0;
    for va in text.into_iter().chain(direct) {
        let (a, b) = (s.walk(va), c.walk(va));
        if va == sym("_end") {
            // One past the image: not necessarily mapped, but alike.
            assert_eq!(a.is_ok(), b.is_ok());
            continue;
        }
        assert_eq!(a.unwrap().paddr, b.unwrap().paddr, "{va:#x}");
        compared += 1;
    }
    assert_eq!(compared, 69);
    // Xen's own L4 slots: zeroed in the save, hypervisor frames in the core; neither maps.
    let xen_va = 0xffff_8000_0000_0000;
    assert!(matches!(s.walk(xen_va), Err(VirtError::BadTable { .. })));
    let err = c.walk(xen_va).unwrap_err();
    assert!(err.to_string().contains("reserved for the Xen hypervisor"), "{err}");
}

#[test]
fn hvm_bios_has_no_paging() {
    let Some(fx) = common::fixtures() else { return };
    let mem = open_memory(common::decompressed(&fx, "xen-hvm-bios/domU-H.save")).unwrap();
    let err = detect_kernel_root(mem.as_ref()).unwrap_err();
    assert!(matches!(err, PagingError::NoPagingVcpu { .. }), "{err}");
    assert!(err.to_string().contains("no vCPU has paging enabled"), "{err}");
}
