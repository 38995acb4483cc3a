//! `xl save` images against the real fixtures and their ground truth.

// Tests and their helpers fail by panicking, with the message saying what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use introspect::{GuestKind, ImageFormat, PhysMemory, StreamLayer, XenDomainType, XlSaveImage, open_memory};

const PTE_PRESENT: u64 = 1;
const PTE_FRAME: u64 = 0x000f_ffff_ffff_f000;

fn layer_name(l: StreamLayer) -> &'static str {
    match l {
        StreamLayer::Libxl => "libxl",
        StreamLayer::Libxc => "libxc",
    }
}

/// The image's records with PAGE_DATA folded out, in the summary's shape.
fn non_page_records(img: &XlSaveImage) -> Vec<common::SummaryRecord> {
    img.records()
        .iter()
        .filter(|r| !(r.layer == StreamLayer::Libxc && r.name() == "PAGE_DATA"))
        .map(|r| {
            (
                layer_name(r.layer).to_string(),
                r.name().to_string(),
                r.offset,
                r.length,
            )
        })
        .collect()
}

fn check_against_summary(img: &XlSaveImage, summary: &common::Summary) {
    assert!(
        summary.records.len() >= 10 && summary.page_types.len() >= 2,
        "summary parsed"
    );
    assert_eq!(non_page_records(img), summary.records);
    let pages: Vec<_> = img.records().iter().filter(|r| r.name() == "PAGE_DATA").collect();
    assert_eq!(pages.len(), summary.page_data_records);
    assert_eq!(pages[0].offset, summary.first_page_data);
    let counts = img.page_type_counts();
    assert_eq!(counts.iter().sum::<u64>(), summary.pfn_entries);
    let nonzero: Vec<(usize, u64)> = (0..16).filter(|&t| counts[t] != 0).map(|t| (t, counts[t])).collect();
    assert_eq!(nonzero, summary.page_types);
}

#[test]
fn pv_save_matches_stream_summary_and_config() {
    let Some(fx) = common::fixtures() else { return };
    let path = common::decompressed(&fx, "xen-pv-a/domU-A.save");
    let img = XlSaveImage::open(&path).expect("open PV save image");
    let summary = common::summary(&fx.join("xen-pv-a/domU-A.stream-summary.txt"));
    check_against_summary(&img, &summary);

    assert_eq!(img.header().mandatory_flags, 0x3);
    assert_eq!(img.header().optional_data_len, 1137);
    assert_eq!(img.libxc_version(), 3);
    assert_eq!(img.domain_type(), XenDomainType::X86Pv);
    assert_eq!(img.guest_width(), Some(8));
    assert_eq!(img.pv_info().map(|i| i.pt_levels), Some(4));
    assert_eq!(img.page_shift(), 12);
    assert_eq!(img.xen_version(), (4, 17));
    assert_eq!(img.guest_kind(), GuestKind::XenPv);
    // Non-live save of a 256 MiB guest: every pfn once, no XTAB.
    assert_eq!(img.page_count(), 65536);
    assert_eq!(img.max_pfn(), Some(summary.highest_pfn));
    assert_eq!(img.present_ranges().collect::<Vec<_>>(), vec![0..65536]);
    assert!(img.shared_info().is_some());

    // The embedded config is the one `xl list -l` showed just before the save.
    let list = common::json(&fx.join("xen-pv-a/domU-A.xl-list-l.json"));
    let want = &list[0]["config"];
    let cfg = img.config().expect("embedded JSON config");
    assert_eq!(cfg.name.as_deref(), want["c_info"]["name"].as_str());
    assert_eq!(cfg.name.as_deref(), Some("dormouse-a"));
    assert_eq!(cfg.uuid.as_deref(), want["c_info"]["uuid"].as_str());
    assert_eq!(cfg.domain_type.as_deref(), Some("pv"));
    assert_eq!(cfg.target_memkb, want["b_info"]["target_memkb"].as_u64());
    assert_eq!(cfg.max_memkb, Some(262144));
    assert_eq!(cfg.max_vcpus, Some(1));
    assert_eq!(cfg.avail_vcpus, vec![0]);
    assert_eq!(cfg.cmdline.as_deref(), want["b_info"]["cmdline"].as_str());
    assert_eq!(cfg.disks.len(), 1);
    assert_eq!(cfg.disks[0].vdev.as_deref(), Some("xvda"));
    assert_eq!(cfg.disks[0].pdev_path.as_deref(), Some("/dev/vdc"));
    assert_eq!(cfg.disks[0].readwrite, Some(true));
    assert!(cfg.nics.is_empty(), "domU-A has no vif");
    assert_eq!(cfg.raw["on_crash"], "preserve");
}

#[test]
fn pv_save_vcpu_cr3_names_a_normalised_page_table() {
    let Some(fx) = common::fixtures() else { return };
    let img = XlSaveImage::open(common::decompressed(&fx, "xen-pv-a/domU-A.save")).unwrap();
    let [vcpu] = img.vcpus() else {
        panic!("one vCPU expected: {:?}", img.vcpus())
    };
    assert_eq!(vcpu.paging_enabled(), Some(true));
    // Normalised: ctrlreg[3] = pfn << 12, ctrlreg[1] = 1 | pfn << 12.
    let cr3 = vcpu.cr3.unwrap();
    let root = vcpu.root_table_pfn.expect("root table");
    assert_eq!(root, cr3 >> 12);
    assert!(root <= 0xffff, "cr3 {cr3:#x} must hold a pfn, not an mfn");
    let user = vcpu.user_root_table_pfn.expect("64-bit PV has a user L4");
    assert_ne!(user, root);
    // The root is a present L4 whose present entries all name present pfns (normalised):
    // Xen's own slots were zeroed by the saver.
    for pfn in [root, user] {
        let l4 = img.page(pfn).expect("page-table root present");
        let mut present = 0;
        for e in l4.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())) {
            if e & PTE_PRESENT != 0 {
                present += 1;
                let next = (e & PTE_FRAME) >> 12;
                assert!(img.page(next).is_some(), "L4 entry {e:#x} of pfn {pfn:#x}");
            }
        }
        assert!(present > 0, "an L4 without present entries");
    }
    // The kernel L4 maps the kernel half: slot 511 (__START_KERNEL_map) is present.
    let l4 = img.page(root).unwrap();
    assert_ne!(
        u64::from_le_bytes(l4[511 * 8..512 * 8].try_into().unwrap()) & PTE_PRESENT,
        0
    );

    let p2m = img.p2m_frames().expect("X86_PV_P2M_FRAMES");
    assert_eq!((p2m.start_pfn, p2m.end_pfn), (0, 0xffff));
    // 65536 p2m entries of 8 bytes: 128 frames, each an ordinary saved page.
    assert_eq!(p2m.frames.len(), 128);
    assert!(p2m.frames.iter().all(|&f| img.page(f).is_some()));
}

#[test]
fn hvm_save_matches_stream_summary_and_real_mode_cpu() {
    let Some(fx) = common::fixtures() else { return };
    let path = common::decompressed(&fx, "xen-hvm-bios/domU-H.save");
    let img = XlSaveImage::open(&path).expect("open HVM save image");
    let summary = common::summary(&fx.join("xen-hvm-bios/domU-H.stream-summary.txt"));
    check_against_summary(&img, &summary);

    assert_eq!(img.domain_type(), XenDomainType::X86Hvm);
    assert_eq!(img.guest_width(), None);
    assert_eq!(img.xen_version(), (4, 17));
    // XTAB entries (non-RAM pfns up to 0xfefff) are absent; 65532 RAM pages are present.
    assert_eq!(img.page_count(), 65532);
    assert_eq!(img.max_pfn(), Some(0xfefff));
    assert_eq!(summary.highest_pfn, 0xfefff);
    let names: Vec<&str> = img.records().iter().map(|r| r.name()).collect();
    let ctx = names.iter().position(|&n| n == "HVM_CONTEXT").unwrap();
    let params = names.iter().position(|&n| n == "HVM_PARAMS").unwrap();
    assert!(ctx < params, "4.17 writes HVM_CONTEXT before HVM_PARAMS");
    assert!(names.contains(&"EMULATOR_CONTEXT"));

    let entries = img.hvm_save_entries();
    assert_eq!(entries[0].typecode, 1, "HVM_CONTEXT starts with the save HEADER");
    let cpus: Vec<_> = entries.iter().filter(|e| e.typecode == 2).collect();
    assert_eq!(cpus.len(), 1);
    assert_eq!((cpus[0].instance, cpus[0].length), (0, 1032));
    assert_eq!(img.hvm_entry_bytes(cpus[0]).map(<[u8]>::len), Some(1032));

    // 12 params; STORE_PFN (1) and CONSOLE_PFN (17) point at saved RAM below the XTAB hole.
    let params = img.hvm_params();
    assert_eq!(params.len(), 12);
    let param = |i| params.iter().find(|p| p.0 == i).map(|p| p.1);
    assert_eq!(param(1), Some(0xfeffc));
    assert_eq!(param(17), Some(0xfefff));
    assert!(img.page(0xfeffc).is_some() && img.page(0xfefff).is_some());

    // SeaBIOS in real mode: CR0.PG clear, so there is no page-table root.
    let [vcpu] = img.vcpus() else {
        panic!("one vCPU expected")
    };
    assert_eq!(vcpu.paging_enabled(), Some(false));
    assert_eq!(vcpu.cr0.map(|c| c & 1), Some(0), "CR0.PE clear: real mode");
    assert_eq!(vcpu.root_table_pfn, None);
    assert_eq!(vcpu.efer, Some(0));
    // The vCPU executes BIOS code at F000:FF53, which is present RAM in the image.
    assert_eq!(vcpu.rip, Some(0xff53));
    assert!(img.page(0xff).is_some());

    let cfg = img.config().unwrap();
    let list = common::json(&fx.join("xen-hvm-bios/domU-H.xl-list-l.json"));
    assert_eq!(cfg.name.as_deref(), list[0]["config"]["c_info"]["name"].as_str());
    assert_eq!(cfg.uuid.as_deref(), list[0]["config"]["c_info"]["uuid"].as_str());
    assert_eq!(cfg.domain_type.as_deref(), Some("hvm"));
}

#[test]
fn pv_save_serves_the_kernel_banner() {
    let Some(fx) = common::fixtures() else { return };
    let path = common::decompressed(&fx, "xen-pv-a/domU-A.save");
    let mem = open_memory(&path).expect("auto-detect the save image");
    assert_eq!(mem.format(), ImageFormat::XlSave);
    assert_eq!(mem.domain_config().and_then(|c| c.name.as_deref()), Some("dormouse-a"));
    let gt = common::json(&fx.join("xen-pv-a/ground-truth.json"));
    let version = gt["proc_files"]["/proc/version"].as_str().unwrap();
    assert!(version.starts_with(&dormouse_tests::FixtureKernel::read(&fx).banner_prefix()));
    // linux_banner sits at ffffffff82161900 (ground-truth kallsyms): pfn 0x2161 of a PV
    // kernel loaded at physical 0.
    let hits = common::pages_containing(mem.as_ref(), version.as_bytes());
    assert_eq!(hits, vec![0x2161]);
    let mut buf = vec![0u8; version.len()];
    mem.read_phys(0x2161900, &mut buf).unwrap();
    assert_eq!(buf, version.as_bytes());
}
