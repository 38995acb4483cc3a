//! VMCOREINFO text: parsing and its bounds, and finding it in synthetic RAM (note, data page,
//! an old kernel's unaligned note).

use introspect::{KallsymsOptions, RawMemory, VmcoreInfo, VmcoreinfoError, VmcoreinfoSource, find_vmcoreinfo_in_ram};

#[test]
fn vmcoreinfo_parsing() {
    let text = "OSRELEASE=6.9.0\nBUILD-ID=00ff\nPAGESIZE=4096\nSYMBOL(init_uts_ns)=ffffffff82bfb000\n\
                OFFSET(uts_namespace.name)=0\nSIZE(page)=64\nLENGTH(zone.free_area)=11\n\
                NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129\nNUMBER(VMALLOC_START)=0xffffc90000000000\n\
                NUMBER(phys_base)=-163577856\nKERNELOFFSET=24200000\nCRASHTIME=1700000000\nCONFIG_NUMA=y\n\
                NEWKEY(x)=whatever\nno equals sign here\n\0\0";
    let info = VmcoreInfo::parse(text).unwrap();
    assert_eq!(info.osrelease, "6.9.0");
    assert_eq!(info.release_version(), Some((6, 9)));
    assert_eq!(info.build_id.as_deref(), Some("00ff"));
    assert_eq!(info.page_size, Some(4096));
    assert_eq!(info.symbol("init_uts_ns"), Some(0xffff_ffff_82bf_b000));
    assert_eq!(info.offset("uts_namespace.name"), Some(0));
    assert_eq!(info.size("page"), Some(64));
    assert_eq!(info.length("zone.free_area"), Some(11));
    assert_eq!(info.number("PAGE_BUDDY_MAPCOUNT_VALUE"), Some(-129));
    assert_eq!(info.number("VMALLOC_START"), Some(0xffff_c900_0000_0000u64 as i64));
    assert_eq!(info.phys_base(), Some(0xffff_ffff_f640_0000));
    assert_eq!(info.kernel_offset, Some(0x2420_0000));
    assert_eq!(info.crash_time, Some(1_700_000_000));
    assert!(info.configs.contains("CONFIG_NUMA"));
    assert_eq!(info.other.get("NEWKEY(x)").map(String::as_str), Some("whatever"));
    assert!(KallsymsOptions::from_vmcoreinfo(&info).big_symbols);
    assert!(!KallsymsOptions::from_vmcoreinfo(&VmcoreInfo::parse("OSRELEASE=5.19.1\n").unwrap()).big_symbols);

    let long = format!("OSRELEASE=x\n{}", "A=1\n".repeat(1100));
    assert_eq!(
        VmcoreInfo::parse(&long),
        Err(VmcoreinfoError::TooLong { len: long.len() })
    );
    let line = format!("OSRELEASE=x\nSYMBOL(a)={}\n", "f".repeat(300));
    assert!(matches!(
        VmcoreInfo::parse(&line),
        Err(VmcoreinfoError::LineTooLong { line: 2, .. })
    ));
    assert_eq!(
        VmcoreInfo::parse("OSRELEASE=x\n\u{1}"),
        Err(VmcoreinfoError::NotText { offset: 12, byte: 1 })
    );
    assert_eq!(VmcoreInfo::parse("PAGESIZE=4096\n"), Err(VmcoreinfoError::NoOsrelease));
    assert_eq!(VmcoreInfo::parse("OSRELEASE=\n"), Err(VmcoreinfoError::NoOsrelease));
    let err = VmcoreInfo::parse("OSRELEASE=x\nPAGESIZE=4096\nSYMBOL(init_task)=zz\n").unwrap_err();
    assert!(matches!(&err, VmcoreinfoError::BadValue { line: 3, key, .. } if key == "SYMBOL(init_task)"));
    assert!(err.to_string().contains("line 3"), "{err}");
}

/// One page of VMCOREINFO note: header, name, text.
fn note_page(text: &str, descsz: u32) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend(11u32.to_le_bytes());
    p.extend(descsz.to_le_bytes());
    p.extend(0u32.to_le_bytes());
    p.extend(b"VMCOREINFO\0\0");
    p.extend(text.as_bytes());
    p
}

#[test]
fn vmcoreinfo_in_synthetic_ram() {
    let text = "OSRELEASE=6.1.0-test\nPAGESIZE=4096\nNUMBER(phys_base)=0\n";
    let page = |content: &[u8]| {
        let mut p = content.to_vec();
        p.resize(4096, 0);
        p
    };
    // Page 1: a decoy note with an absurd size; page 2: the data form; page 3: the note.
    let mut ram = vec![0u8; 4096];
    ram.extend(page(&note_page(text, 1 << 20)));
    ram.extend(page(text.as_bytes()));
    ram.extend(page(&note_page(text, text.len() as u32)));
    let mem = RawMemory::from_bytes("synthetic.raw", ram.clone()).unwrap();
    let found = find_vmcoreinfo_in_ram(&mem).unwrap();
    assert_eq!(found.source, VmcoreinfoSource::RamNote { paddr: 0x3000 });
    assert_eq!(found.text, text);
    // Without the note, the data page.
    ram.truncate(0x3000);
    let mem = RawMemory::from_bytes("synthetic.raw", ram.clone()).unwrap();
    assert_eq!(
        find_vmcoreinfo_in_ram(&mem).unwrap().source,
        VmcoreinfoSource::RamData { paddr: 0x2000 }
    );
    // An old kernel's note in .bss: not page-aligned, found by the fallback search.
    ram.truncate(0x2000);
    let mut bss = vec![0xaau8; 0x7c];
    bss.extend(note_page(text, text.len() as u32));
    ram.extend(page(&bss));
    let mem = RawMemory::from_bytes("synthetic.raw", ram.clone()).unwrap();
    assert_eq!(
        find_vmcoreinfo_in_ram(&mem).unwrap().source,
        VmcoreinfoSource::RamNote { paddr: 0x207c }
    );
    // Nothing at all: an error naming the image.
    ram.truncate(0x2000);
    let mem = RawMemory::from_bytes("synthetic.raw", ram).unwrap();
    let err = find_vmcoreinfo_in_ram(&mem).unwrap_err();
    assert!(matches!(err, VmcoreinfoError::NotFound { pages: 2, .. }));
    assert!(err.to_string().contains("synthetic.raw"), "{err}");
}
