//! Real kernels: VMCOREINFO, the kernel image mapping and kallsyms of both QEMU fixtures and
//! the test bed's dump (KASLR on, VMCOREINFO note) and of the Xen PV save and dump-core (no
//! note: VMCOREINFO found in RAM).

use std::path::Path;

use dormouse_tests::FixtureKernel;

use introspect::{
    AddressEncoding, KallsymsError, KallsymsLocation, KallsymsOptions, KernelImageMap, START_KERNEL_MAP, Symbols,
    VirtError, VirtualMemory, VmcoreInfo, VmcoreinfoSource, carve_kallsyms, compare_symbols, find_vmcoreinfo_in_ram,
    kallsyms_from_vmcoreinfo, load_vmcoreinfo, open_memory,
};

use crate::system_map::{assert_system_map_covers, system_map};
use crate::{LINK_TEXT, common, core_kallsyms, lines_of};

fn read_u64(mem: &dyn VirtualMemory, vaddr: u64) -> u64 {
    let mut b = [0u8; 8];
    mem.read_virt(vaddr, &mut b).unwrap();
    u64::from_le_bytes(b)
}

/// VMCOREINFO text without its `SYMBOL(kallsyms_*)` lines, as a pre-6.0 kernel writes it.
fn without_kallsyms_symbols(text: &str) -> VmcoreInfo {
    let stripped: String = text
        .lines()
        .filter(|l| !l.starts_with("SYMBOL(kallsyms_"))
        .map(|l| format!("{l}\n"))
        .collect();
    VmcoreInfo::parse(&stripped).unwrap()
}

/// Everything a QEMU dump with KASLR must satisfy.
fn check_qemu_dump(dump: &Path, gt: &serde_json::Value, kallsyms_txt: &Path, system_map: Option<&Symbols>) {
    let mem = open_memory(dump).unwrap();
    // What the guest itself said; each dump is held to its own kernel.
    let release = gt["uname"]["release"].as_str().expect("ground truth uname.release");
    let kaslr = &gt["kaslr"];
    let rt = |name: &str| common::hex(&kaslr["runtime_symbols"][name]);
    let text_runtime = common::hex(&kaslr["text_runtime"]);

    // VMCOREINFO: the ELF note, and the same text in guest RAM where the kernel keeps it.
    let located = load_vmcoreinfo(mem.as_ref()).unwrap();
    assert_eq!(located.source, VmcoreinfoSource::ImageNote);
    assert_eq!(
        located.text.trim_end(),
        gt["vmcoreinfo_text"].as_str().unwrap().trim_end()
    );
    let info = &located.info;
    assert_eq!(info.osrelease, release);
    assert_eq!(info.page_size, Some(4096));
    let in_ram = find_vmcoreinfo_in_ram(mem.as_ref()).unwrap();
    assert_eq!(in_ram.text, located.text);
    assert_eq!(&in_ram.info, info);
    let VmcoreinfoSource::RamNote { paddr: note_paddr } = in_ram.source else {
        panic!("expected the note form, got {:?}", in_ram.source)
    };

    // KASLR: KERNELOFFSET is the virtual slide of _text; NUMBER(phys_base) (a wrapped negative
    // here) maps kernel-image virtual addresses to where the kernel really sits in RAM.
    assert_eq!(info.kernel_offset, Some(text_runtime - LINK_TEXT));
    assert_eq!(info.kernel_offset, Some(common::hex(&kaslr["virtual_slide"])));
    assert_eq!(info.phys_base(), Some(common::hex(&kaslr["phys_base_value"])));
    assert_eq!(info.symbol("_stext"), Some(text_runtime));
    let map = KernelImageMap::from_vmcoreinfo(mem.as_ref(), info).unwrap();
    assert_eq!(map.range(), START_KERNEL_MAP..START_KERNEL_MAP + (1 << 30));
    let text_phys = map.translate(text_runtime).unwrap();
    assert_eq!(text_phys, common::hex(&kaslr["phys_kernel_code_start"]));
    assert_eq!(
        text_phys,
        (text_runtime - START_KERNEL_MAP).wrapping_add(info.phys_base().unwrap())
    );
    assert_eq!(
        map.read_virt(START_KERNEL_MAP - 1, &mut [0]),
        Err(VirtError::NotMapped {
            vaddr: START_KERNEL_MAP - 1,
            level: 0
        })
    );
    let expected_banner = format!("Linux version {release} ");
    let mut banner = vec![0u8; expected_banner.len()];
    map.read_virt(rt("linux_banner"), &mut banner).unwrap();
    assert_eq!(banner, expected_banner.as_bytes());
    // The kernel's `vmcoreinfo_note` pointer (a direct-map address) names the page the scan found.
    let note_ptr = read_u64(&map, rt("vmcoreinfo_note"));
    assert_eq!(note_ptr - common::hex(&kaslr["page_offset_base_value"]), note_paddr);

    // kallsyms via VMCOREINFO: exactly the core of the guest's /proc/kallsyms, in order.
    let t = std::time::Instant::now();
    let k = kallsyms_from_vmcoreinfo(&map, info).unwrap();
    let elapsed = t.elapsed();
    assert_eq!(k.encoding, AddressEncoding::AbsolutePercpu);
    let expected = core_kallsyms(kallsyms_txt);
    assert_eq!(k.symbols.len(), expected.len());
    assert_eq!(lines_of(&k.symbols), expected);
    for (name, addr) in kaslr["runtime_symbols"].as_object().unwrap() {
        assert_eq!(k.symbols.address_of(name), Some(common::hex(addr)), "{name}");
    }
    let (sym, off) = k.symbols.nearest(rt("linux_banner") + 5).unwrap();
    assert_eq!((sym.name, off), ("linux_banner", 5));
    eprintln!("{}: {} symbols decoded in {elapsed:?}", dump.display(), k.symbols.len());

    // Carving, as for a kernel whose VMCOREINFO lacks the kallsyms lines: the same tables,
    // plus kallsyms_markers, which the System.map places (after relocation) exactly there.
    let bare = without_kallsyms_symbols(&located.text);
    assert_eq!(
        KallsymsLocation::from_vmcoreinfo(&bare),
        Err(KallsymsError::MissingVmcoreinfoSymbol {
            symbol: "kallsyms_offsets"
        })
    );
    let image = text_runtime..text_runtime + (64 << 20);
    let carved = carve_kallsyms(&map, image.clone(), &KallsymsOptions::from_vmcoreinfo(&bare)).unwrap();
    let markers = carved.location.markers.expect("carving finds the markers");
    assert_eq!(
        KallsymsLocation {
            markers: None,
            ..carved.location
        },
        k.location
    );
    assert_eq!(markers.entry_size, 4);
    if let Some(sm) = system_map {
        let shifted = |name| sm.address_of(name).unwrap() + (text_runtime - LINK_TEXT);
        assert_eq!(markers.vaddr, shifted("kallsyms_markers"));
        assert_eq!(k.location.names, shifted("kallsyms_names"));
    }
    assert_eq!(carved.symbols, k.symbols);
    // Without any _stext hint the address encoding is still unambiguous.
    let unhinted = KallsymsOptions {
        big_symbols: true,
        stext: None,
    };
    assert_eq!(carve_kallsyms(&map, image, &unhinted).unwrap().symbols, k.symbols);
}

#[test]
fn qemu_4level_kallsyms() {
    let Some(fx) = common::fixtures() else { return };
    let gt = common::json(&fx.join("qemu-6.1-4level/ground-truth.json"));
    let sm = system_map(&fx);
    check_qemu_dump(
        &common::decompressed(&fx, "qemu-6.1-4level/dump.elf"),
        &gt,
        &common::decompressed(&fx, "qemu-6.1-4level/kallsyms.txt"),
        Some(&sm),
    );
}

#[test]
fn qemu_la57_kallsyms() {
    let Some(fx) = common::fixtures() else { return };
    let gt = common::json(&fx.join("qemu-6.1-la57/ground-truth.json"));
    let sm = system_map(&fx);
    check_qemu_dump(
        &common::decompressed(&fx, "qemu-6.1-la57/dump.elf"),
        &gt,
        &common::decompressed(&fx, "qemu-6.1-la57/kallsyms.txt"),
        Some(&sm),
    );
}

#[test]
fn testbed_dump_kallsyms() {
    let Some(dir) = common::testbed_memdump("testbed_dump_kallsyms") else {
        return;
    };
    let gt = common::json(&dir.join("ground-truth.json"));
    let kernel = common::testbed_kernel("testbed_dump_kallsyms");
    assert_eq!(
        gt["uname"]["release"],
        kernel.release.as_str(),
        "the test bed's record vs its guest"
    );
    // The real System.map (from the -dbg package) is among the fixtures only for their own
    // build; the test bed boots whatever the archive offers today.
    let same_build = |fx: &Path| {
        let fixture = FixtureKernel::read(fx);
        fixture.release == kernel.release && kernel.banner.contains(&fixture.version)
    };
    let sm = common::fixtures().filter(|fx| same_build(fx)).map(|fx| system_map(&fx));
    if sm.is_none() {
        eprintln!(
            "testbed_dump_kallsyms: the test bed runs {} ({}), not the fixtures' kernel build: no System.map to compare",
            kernel.release, kernel.version
        );
    }
    check_qemu_dump(&dir.join("dump.elf"), &gt, &dir.join("kallsyms.txt"), sm.as_ref());
}

/// Both Xen PV images: no ELF note, VMCOREINFO found in RAM; no KASLR.
#[test]
fn xen_pv_vmcoreinfo_in_ram_and_kallsyms() {
    let Some(fx) = common::fixtures() else { return };
    let gt = common::json(&fx.join("xen-pv-a/ground-truth.json"));
    let sm = system_map(&fx);
    let mut decoded = Vec::new();
    for rel in ["xen-pv-a/domU-A.save", "xen-pv-a/domU-A.core"] {
        let mem = open_memory(common::decompressed(&fx, rel)).unwrap();
        assert!(mem.vmcoreinfo().is_none(), "{rel}: Xen images carry no VMCOREINFO note");
        let located = load_vmcoreinfo(mem.as_ref()).unwrap();
        let VmcoreinfoSource::RamNote { paddr } = located.source else {
            panic!("{rel}: expected the RAM note, got {:?}", located.source)
        };
        let info = &located.info;
        assert_eq!(info.osrelease, gt["uname"]["release"].as_str().unwrap());
        // PV guests are not randomised: phys_base 0, KERNELOFFSET 0, _stext at its link address.
        assert_eq!((info.phys_base(), info.kernel_offset), (Some(0), Some(0)));
        assert_eq!(info.symbol("_stext"), Some(LINK_TEXT));
        let map = KernelImageMap::from_vmcoreinfo(mem.as_ref(), info).unwrap();
        assert_eq!(map.translate(LINK_TEXT), Ok(0x100_0000));

        let k = kallsyms_from_vmcoreinfo(&map, info).unwrap();
        assert_eq!(k.encoding, AddressEncoding::AbsolutePercpu);
        let selected = gt["kallsyms_selected"].as_object().unwrap();
        assert!(selected.len() >= 20);
        for (name, entries) in selected {
            let want: Vec<(u64, char)> = entries
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        common::hex(&e["addr"]),
                        e["type"].as_str().unwrap().chars().next().unwrap(),
                    )
                })
                .collect();
            let got: Vec<(u64, char)> = k.symbols.lookup_all(name).map(|s| (s.address, s.kind)).collect();
            assert_eq!(got, want, "{rel}: {name}");
        }

        let mut banner = vec![0u8; 256];
        map.read_virt(k.symbols.address_of("linux_banner").unwrap(), &mut banner)
            .unwrap();
        let version = gt["proc_files"]["/proc/version"].as_str().unwrap();
        assert!(version.starts_with(&FixtureKernel::read(&fx).banner_prefix()));
        assert_eq!(&banner[..version.len()], version.as_bytes(), "{rel}");
        // The note the scan found is the one the kernel's `vmcoreinfo_note` points to.
        let page_offset_base = read_u64(&map, k.symbols.address_of("page_offset_base").unwrap());
        let note_ptr = read_u64(&map, k.symbols.address_of("vmcoreinfo_note").unwrap());
        assert_eq!(note_ptr - page_offset_base, paddr, "{rel}");

        // Against the real System.map (no relocation needed): every decoded symbol is there
        // at the same address; types agree except per-CPU symbols, which kallsyms marks
        // absolute (`A`) while nm calls them data.
        assert_system_map_covers(&sm, &k.symbols);
        let sample = k.symbols.sample_names(300);
        assert_eq!(sample.len(), 300);
        assert_eq!(compare_symbols(&sm, &k.symbols, &sample), Ok(300));
        decoded.push(k.symbols);
    }
    assert_eq!(decoded[0], decoded[1], "save and dump-core decode to the same symbols");
}
