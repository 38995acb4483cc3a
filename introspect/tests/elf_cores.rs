//! `xl dump-core` and QEMU `dump-guest-memory` ELF cores against the real fixtures.

// Tests and their helpers fail by panicking, with the message saying what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use introspect::{
    ElfCore, FrameSpace, GuestKind, ImageFormat, PhysMemory, RawMemory, XenCore, XenDomainType, XlSaveImage,
    open_memory,
};

const PTE_PRESENT: u64 = 1;
const PTE_FRAME: u64 = 0x000f_ffff_ffff_f000;

#[test]
fn dump_core_translates_machine_frames() {
    let Some(fx) = common::fixtures() else { return };
    let path = common::decompressed(&fx, "xen-pv-a/domU-A.core");
    let core = XenCore::open(&path).expect("open dump-core");
    assert_eq!(core.domain_type(), XenDomainType::X86Pv);
    assert_eq!(core.guest_kind(), GuestKind::XenPv);
    assert_eq!(core.frame_space(), FrameSpace::Machine);
    let v = core.xen_version().expect("XEN_VERSION note");
    assert_eq!((v.major, v.minor, v.extra.as_str()), (4, 17, ".7"));
    assert_eq!(core.page_count(), 65536);
    assert_eq!(core.p2m().len(), 65536);
    assert!(core.shared_info().is_some_and(|s| s.len() == 4096));

    // .xen_prstatus holds raw machine frames: cr3 = mfn << 12, far above the guest's pfns.
    let [vcpu] = core.vcpus() else {
        panic!("one vCPU expected")
    };
    let cr3 = vcpu.cr3.unwrap();
    let mfn = cr3 >> 12;
    assert!(mfn > 0xffff, "cr3 {cr3:#x} should hold a machine frame");
    let pfn = core.machine_to_phys(mfn).expect("cr3's mfn is guest memory");
    assert_eq!(vcpu.root_table_pfn, Some(pfn));
    assert_eq!(core.phys_to_machine(pfn), Some(mfn));
    assert_eq!(core.table_frame_to_pfn(mfn), Some(pfn));
    // Guest-half L4 entries (slots below Xen's 256..=271) hold mfns that translate to present
    // pfns; Xen's own slots hold hypervisor mfns that are not guest memory.
    let l4 = core.page(pfn).expect("root page table present");
    let mut translated = 0;
    for (slot, e) in l4
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .enumerate()
    {
        if e & PTE_PRESENT == 0 || (256..=271).contains(&slot) {
            continue;
        }
        let next = core.table_frame_to_pfn((e & PTE_FRAME) >> 12);
        assert!(next.is_some_and(|p| core.page(p).is_some()), "slot {slot}: {e:#x}");
        translated += 1;
    }
    assert!(translated > 0);
}

#[test]
fn dump_core_and_save_agree() {
    let Some(fx) = common::fixtures() else { return };
    let core = open_memory(common::decompressed(&fx, "xen-pv-a/domU-A.core")).unwrap();
    assert_eq!(core.format(), ImageFormat::XenCore);
    let save = XlSaveImage::open(common::decompressed(&fx, "xen-pv-a/domU-A.save")).unwrap();
    let gt = common::json(&fx.join("xen-pv-a/ground-truth.json"));
    let version = gt["proc_files"]["/proc/version"].as_str().unwrap();
    assert_eq!(
        common::pages_containing(core.as_ref(), version.as_bytes()),
        vec![0x2161]
    );
    assert_eq!(core.page(0x2161), save.page(0x2161), "banner page differs");

    // Kernel text (_stext ffffffff81000000 .. _etext ffffffff81e01d32: pfns 0x1000..=0x1e01)
    // is identical 70 s apart except where the suspend path flipped a static branch: the
    // save was taken with tasks frozen, so the `freezer_active` static key's sites read as a
    // jump (eb rel8 / e9 rel32) where the dump-core, taken while merely paused, has the
    // matching NOP (66 90 / 0f 1f 44 00 00). Every other byte must match, so any error in
    // page serving would show up.
    let mut differing = Vec::new();
    let mut sites = 0;
    for pfn in 0x1000..=0x1e01 {
        let (a, b) = (save.page(pfn).unwrap(), core.page(pfn).unwrap());
        if a == b {
            continue;
        }
        differing.push(pfn);
        let mut i = 0;
        while i < a.len() {
            if a[i] == b[i] {
                i += 1;
            } else if a[i] == 0xeb && b[i..].starts_with(&[0x66, 0x90]) {
                (i, sites) = (i + 2, sites + 1);
            } else if a[i] == 0xe9 && b[i..].starts_with(&[0x0f, 0x1f, 0x44, 0, 0]) {
                (i, sites) = (i + 5, sites + 1);
            } else {
                panic!(
                    "pfn {pfn:#x} offset {i:#x}: {:#x} vs {:#x} is no static-branch patch",
                    a[i], b[i]
                );
            }
        }
    }
    assert_eq!(differing.len(), 16, "{differing:x?}");
    assert!(differing.contains(&0x1a05), "try_to_freeze_tasks' page");
    assert!(sites >= 16);

    // The save's p2m frames are copied verbatim (stale mfns, spec 1.6): they must equal the
    // dump-core's p2m, since the domain did not move between the two.
    let xcore = XenCore::open(common::decompressed(&fx, "xen-pv-a/domU-A.core")).unwrap();
    let frames = &save.p2m_frames().unwrap().frames;
    for (i, &frame) in frames.iter().enumerate() {
        let page = save.page(frame).unwrap();
        for (j, e) in page.chunks_exact(8).enumerate() {
            let pfn = (i * 512 + j) as u64;
            let mfn = u64::from_le_bytes(e.try_into().unwrap());
            assert_eq!(xcore.phys_to_machine(pfn), Some(mfn), "p2m[{pfn:#x}]");
        }
    }
}

fn qemu_case(case: &str) {
    let Some(fx) = common::fixtures() else { return };
    let path = common::decompressed(&fx, &format!("{case}/dump.elf"));
    let gt = common::json(&fx.join(format!("{case}/ground-truth.json")));
    let elf = ElfCore::open(&path).expect("open QEMU dump");
    assert_eq!(elf.guest_kind(), GuestKind::Unspecified);

    let want: Vec<(u64, u64, u64, u64, u64)> = gt["elf_core"]["pt_load"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let h = |k: &str| common::hex(&s[k]);
            (h("paddr"), h("vaddr"), h("offset"), h("filesz"), h("memsz"))
        })
        .collect();
    let got: Vec<_> = elf
        .segments()
        .iter()
        .map(|s| (s.paddr, s.vaddr, s.offset, s.filesz, s.memsz))
        .collect();
    assert_eq!(got, want);
    let pages: u64 = want.iter().map(|s| s.4 / 4096).sum();
    assert_eq!(elf.page_count(), pages);

    assert_eq!(elf.vmcoreinfo(), gt["vmcoreinfo_text"].as_str());

    // One vCPU per QEMU note, with the control registers QEMU recorded.
    let notes: Vec<&serde_json::Value> = gt["elf_core"]["notes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["name"] == "QEMU")
        .collect();
    assert_eq!(elf.vcpus().len(), notes.len());
    for (v, n) in elf.vcpus().iter().zip(&notes) {
        let s = &n["qemu_cpustate"];
        assert_eq!(v.cr0, Some(common::hex(&s["cr0"])));
        assert_eq!(v.cr3, Some(common::hex(&s["cr3"])));
        assert_eq!(v.cr4, Some(common::hex(&s["cr4"])));
        assert_eq!(v.rip, Some(common::hex(&s["rip"])));
        assert_eq!(v.gs_base, Some(common::hex(&s["gs"]["base"])));
        assert_eq!(v.paging_enabled(), Some(true));
        let root = v.root_table_pfn.unwrap();
        assert!(elf.page(root).is_some(), "cr3 root pfn {root:#x} present");
    }

    // The same VMCOREINFO text sits in guest RAM, and so does the kernel banner.
    let text = gt["vmcoreinfo_text"].as_str().unwrap();
    assert!(!common::pages_containing(&elf, &text.as_bytes()[..200]).is_empty());
    let version = gt["proc_files"]["/proc/version"].as_str().unwrap();
    assert!(!common::pages_containing(&elf, version.as_bytes()).is_empty());
}

#[test]
fn qemu_la57_dump() {
    qemu_case("qemu-6.1-la57");
}

#[test]
fn qemu_4level_dump() {
    qemu_case("qemu-6.1-4level");
}

#[test]
fn raw_memory_equals_the_elf_segment_it_was_cut_from() {
    let Some(fx) = common::fixtures() else { return };
    let path = common::decompressed(&fx, "qemu-6.1-la57/dump.elf");
    let elf = ElfCore::open(&path).unwrap();
    let seg = &elf.segments()[0];
    assert_eq!(seg.paddr, 0);
    // The first 16 MiB of RAM plus a 100-byte partial page, as a raw image.
    let len = (16 << 20) + 100;
    let bytes = std::fs::read(&path).unwrap()[seg.offset as usize..][..len].to_vec();
    let raw = RawMemory::from_bytes("raw-cut", bytes).unwrap();
    assert_eq!(raw.format(), ImageFormat::Raw);
    assert_eq!(raw.page_count(), 4097);
    for pfn in [0, 1, 0x9f, 0x100, 0xfff] {
        assert_eq!(raw.page(pfn), elf.page(pfn), "pfn {pfn:#x}");
    }
    let tail = raw.page(0x1000).unwrap();
    assert_eq!(&tail[..100], &elf.page(0x1000).unwrap()[..100]);
    assert!(tail[100..].iter().all(|&b| b == 0));
    assert!(raw.page(0x1001).is_none());
    let err = raw.read_phys(0x0100_0ff0, &mut [0u8; 32]).unwrap_err();
    assert!(err.to_string().contains("0x1001000"), "{err}");
}
