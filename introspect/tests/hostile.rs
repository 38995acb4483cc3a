//! Synthetic images exercising stream semantics the fixtures do not (later PAGE_DATA wins,
//! XTAB removal, unaligned ELF segments), and proof that truncated or corrupted input yields
//! errors, never panics. These need no fixtures.

// Tests and their helpers fail by panicking, with the message saying what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use introspect::{ElfCore, Error, FrameSpace, PhysMemory, XenCore, XenDomainType, XlSaveImage, open_memory};

fn rec(out: &mut Vec<u8>, rtype: u32, body: &[u8]) {
    out.extend(rtype.to_le_bytes());
    out.extend((body.len() as u32).to_le_bytes());
    out.extend(body);
    out.resize(out.len() + (8 - body.len() % 8) % 8, 0);
}

fn page_data(entries: &[(u64, u64, Option<u8>)]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend((entries.len() as u32).to_le_bytes());
    b.extend(0u32.to_le_bytes());
    for &(ptype, pfn, _) in entries {
        b.extend(((ptype << 60) | pfn).to_le_bytes());
    }
    for &(_, _, fill) in entries {
        if let Some(fill) = fill {
            b.extend([fill; 4096]);
        }
    }
    b
}

/// A small PV save: pfn 5 sent twice (second wins), pfn 6 sent then XTAB'd, pfn 7 XTAB only.
fn synthetic_save() -> Vec<u8> {
    let mut f = b"Xen saved domain, xl format\n \0 \r".to_vec();
    let config = b"{\"c_info\": {\"name\": \"syn\", \"uuid\": \"00000000-0000-0000-0000-000000000001\"}, \"nics\": [{\"devid\": 0, \"mac\": \"00:16:3e:00:00:01\", \"bridge\": \"xenbr0\"}]}\0";
    f.extend(0x0102_0304u32.to_le_bytes());
    f.extend(3u32.to_le_bytes());
    f.extend(0u32.to_le_bytes());
    f.extend((config.len() as u32 + 4).to_le_bytes());
    f.extend((config.len() as u32).to_le_bytes());
    f.extend(config);
    f.extend(0x4c69_6278_6c46_6d74u64.to_be_bytes());
    f.extend(2u32.to_be_bytes());
    f.extend(0u32.to_be_bytes());
    rec(&mut f, 1, &[]);
    f.extend(u64::MAX.to_be_bytes());
    f.extend(0x5845_4e46u32.to_be_bytes());
    f.extend(3u32.to_be_bytes());
    f.extend([0; 8]);
    f.extend(1u32.to_le_bytes());
    f.extend(12u16.to_le_bytes());
    f.extend(0u16.to_le_bytes());
    f.extend(4u32.to_le_bytes());
    f.extend(17u32.to_le_bytes());
    rec(&mut f, 0x02, &[8, 4, 0, 0, 0, 0, 0, 0]);
    rec(
        &mut f,
        0x01,
        &page_data(&[(0, 5, Some(0xaa)), (0, 6, Some(0xbb)), (0xf, 7, None)]),
    );
    rec(&mut f, 0x01, &page_data(&[(0x1, 5, Some(0xcc)), (0xf, 6, None)]));
    rec(&mut f, 0x8000_1234, b"optional, skipped");
    // X86_PV_VCPU_BASIC: vCPU 0, a zeroed 64-bit context.
    let mut vcpu = vec![0u8; 8];
    vcpu.extend([0u8; 5168]);
    rec(&mut f, 0x04, &vcpu);
    rec(&mut f, 0, &[]);
    rec(&mut f, 0, &[]);
    f
}

#[test]
fn later_page_data_wins_and_xtab_removes() {
    let img = XlSaveImage::from_bytes("synthetic.save", synthetic_save()).expect("valid stream");
    assert_eq!(img.page(5), Some(&[0xcc; 4096][..]));
    assert_eq!(img.page(6), None);
    assert_eq!(img.page(7), None);
    assert_eq!(img.page_count(), 1);
    assert_eq!(img.page_type_counts()[0xf], 2);
    assert_eq!(img.records().len(), 8);
    assert_eq!(img.records()[4].name(), "UNKNOWN");
    let cfg = img.config().unwrap();
    assert_eq!(cfg.name.as_deref(), Some("syn"));
    assert_eq!(cfg.nics[0].mac.as_deref(), Some("00:16:3e:00:00:01"));
    assert_eq!(cfg.nics[0].bridge.as_deref(), Some("xenbr0"));
    let err = img.read_phys(0x6000, &mut [0; 1]).unwrap_err();
    assert!(matches!(err, Error::NotPresent { paddr: 0x6000, .. }), "{err}");
}

/// A stream whose vCPU records are gone (a length misread upstream ends it early, say) is
/// refused where it ends, not opened to fail later as "no kernel".
#[test]
fn a_save_without_vcpu_contexts_is_refused_where_its_stream_ends() {
    let mut stream = synthetic_save();
    let vcpu_record = stream.len() - 16 - 8 - 5176;
    stream.drain(vcpu_record..vcpu_record + 8 + 5176);
    let err = XlSaveImage::from_bytes("novcpu.save", stream)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("without any X86_PV_VCPU_BASIC record"), "{err}");
    assert!(err.starts_with("novcpu.save: at byte offset 0x"), "{err}");
}

#[test]
fn truncated_or_corrupted_save_never_panics() {
    let good = synthetic_save();
    for len in 0..good.len() {
        let err = XlSaveImage::from_bytes("cut.save", good[..len].to_vec());
        assert!(err.is_err(), "prefix of {len} bytes accepted");
    }
    let err = XlSaveImage::from_bytes("cut.save", good[..good.len() - 8].to_vec())
        .err()
        .unwrap();
    assert!(err.to_string().starts_with("cut.save: at byte offset 0x"), "{err}");
    // Every single-byte corruption: Ok or Err, but no panic and no out-of-range page.
    for at in 0..good.len().min(600) {
        for v in [0x00, 0x7f, 0xff] {
            let mut bad = good.clone();
            bad[at] ^= v;
            if let Ok(img) = XlSaveImage::from_bytes("bad.save", bad) {
                for pfn in img.present_pfns().take(4) {
                    assert_eq!(img.page(pfn).map(<[u8]>::len), Some(4096));
                }
            }
        }
    }
}

fn note(out: &mut Vec<u8>, name: &[u8], ntype: u32, desc: &[u8]) {
    out.extend((name.len() as u32 + 1).to_le_bytes());
    out.extend((desc.len() as u32).to_le_bytes());
    out.extend(ntype.to_le_bytes());
    out.extend(name);
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend(desc);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn elf_header(phnum: u16, shoff: u64, shnum: u16, shstrndx: u16) -> Vec<u8> {
    let mut h = b"\x7fELF\x02\x01\x01".to_vec();
    h.resize(16, 0);
    h.extend(4u16.to_le_bytes()); // ET_CORE
    h.extend(62u16.to_le_bytes()); // x86-64
    h.extend(1u32.to_le_bytes());
    h.extend(0u64.to_le_bytes());
    h.extend((if phnum > 0 { 64u64 } else { 0 }).to_le_bytes());
    h.extend(shoff.to_le_bytes());
    h.extend(0u32.to_le_bytes());
    for v in [64u16, 56, phnum, 64, shnum, shstrndx] {
        h.extend(v.to_le_bytes());
    }
    h
}

/// QEMU-style core: a VMCOREINFO note and one PT_LOAD at an unaligned physical address.
fn synthetic_elf() -> Vec<u8> {
    synthetic_elf_with(true)
}

fn synthetic_elf_with(cpu_note: bool) -> Vec<u8> {
    let mut notes = Vec::new();
    note(&mut notes, b"VMCOREINFO", 0, b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\n");
    if cpu_note {
        // NT_PRSTATUS of one vCPU, as kdump writes it (general registers only).
        note(&mut notes, b"CORE", 1, &[0; 336]);
    }
    let mut f = elf_header(2, 0, 0, 0);
    let notes_off = 64 + 2 * 56;
    let data_off = (notes_off + notes.len()) as u64;
    let phdr = |f: &mut Vec<u8>, t: u32, off: u64, paddr: u64, filesz: u64, memsz: u64| {
        f.extend(t.to_le_bytes());
        f.extend(0u32.to_le_bytes());
        for v in [off, paddr, paddr, filesz, memsz, 0] {
            f.extend(v.to_le_bytes());
        }
    };
    phdr(&mut f, 4, notes_off as u64, 0, notes.len() as u64, notes.len() as u64);
    // Physical 0x1800..0x2800 from the file, 0x2800..0x3800 zero.
    phdr(&mut f, 1, data_off, 0x1800, 0x1000, 0x2000);
    f.extend(notes);
    f.extend((0..0x1000u32).map(|i| (i % 251) as u8 + 1));
    f
}

/// Notes lost (a PT_NOTE cut to nothing, say) leave no vCPU: refused at the notes' offset.
#[test]
fn an_elf_core_without_cpu_notes_is_refused_where_its_notes_are() {
    let err = ElfCore::from_bytes("nocpu.elf", synthetic_elf_with(false))
        .err()
        .unwrap()
        .to_string();
    assert!(err.starts_with("nocpu.elf: at byte offset 0xb0"), "{err}");
    assert!(err.contains("no CPU state"), "{err}");
}

#[test]
fn unaligned_elf_segments_are_assembled_into_pages() {
    let elf = ElfCore::from_bytes("synthetic.elf", synthetic_elf()).expect("valid core");
    assert_eq!(elf.vmcoreinfo(), Some("OSRELEASE=6.1.0-test\nPAGESIZE=4096\n"));
    assert_eq!(elf.present_ranges().collect::<Vec<_>>(), vec![1..4]);
    let mut buf = vec![0u8; 0x2000];
    elf.read_phys(0x1800, &mut buf).unwrap();
    let want: Vec<u8> = (0..0x1000u32).map(|i| (i % 251) as u8 + 1).collect();
    assert_eq!(&buf[..0x1000], &want[..]);
    assert!(buf[0x1000..].iter().all(|&b| b == 0));
    assert!(
        elf.page(1).unwrap()[..0x800].iter().all(|&b| b == 0),
        "below the segment"
    );
    assert!(elf.page(0).is_none() && elf.page(4).is_none());
    // kdump's NT_PRSTATUS carries no control registers: a vCPU without a page-table root.
    assert_eq!(elf.vcpus().len(), 1);
    assert_eq!(elf.vcpus()[0].root_table_pfn, None);
}

/// A PV dump-core with two pages: pfn 0 at mfn 0x1000 and pfn 1 at mfn 0x2000, and a vCPU
/// whose cr3 names mfn 0x2000.
fn synthetic_dump_core() -> Vec<u8> {
    let mut notes = Vec::new();
    let header: Vec<u8> = [0xF00F_EBEDu64, 1, 2, 4096]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    note(&mut notes, b"Xen", 0x200_0001, &header);
    let mut ctx = vec![0u8; 5168];
    ctx[4984..4992].copy_from_slice(&0x8005_0033u64.to_le_bytes());
    ctx[5008..5016].copy_from_slice(&(0x2000u64 << 12).to_le_bytes());
    let strtab = b"\0.shstrtab\0.note.Xen\0.xen_prstatus\0.xen_pages\0.xen_p2m\0".to_vec();
    let mut p2m = Vec::new();
    for (pfn, mfn) in [(0u64, 0x1000u64), (1, 0x2000)] {
        p2m.extend(pfn.to_le_bytes());
        p2m.extend(mfn.to_le_bytes());
    }
    let pages: Vec<u8> = [0x11u8; 4096].iter().chain([0x22u8; 4096].iter()).copied().collect();
    // Layout: ELF header, section headers (6), then the section bodies.
    let body_start = 64 + 6 * 64;
    let mut bodies = Vec::new();
    let mut place = |bytes: &[u8], align: usize| {
        let off = (body_start + bodies.len()).next_multiple_of(align);
        bodies.resize(off - body_start, 0);
        bodies.extend(bytes);
        (off as u64, bytes.len() as u64)
    };
    let secs = [
        (1u32, 3u32, place(&strtab, 1), 0u64),
        (11, 7, place(&notes, 4), 0),
        (21, 1, place(&ctx, 8), 5168),
        (35, 1, place(&pages, 4096), 4096),
        (46, 1, place(&p2m, 8), 16),
    ];
    let mut f = elf_header(0, 64, 6, 1);
    f.extend([0u8; 64]);
    for (name, t, (off, size), entsize) in secs {
        f.extend(name.to_le_bytes());
        f.extend(t.to_le_bytes());
        // sh_flags, sh_addr, sh_offset, sh_size, sh_link+sh_info, sh_addralign, sh_entsize
        for v in [0u64, 0, off, size, 0, 0, entsize] {
            f.extend(v.to_le_bytes());
        }
    }
    f.extend(bodies);
    f
}

#[test]
fn dump_core_sections_and_machine_frames() {
    let core = XenCore::from_bytes("synthetic.core", synthetic_dump_core()).expect("valid core");
    assert_eq!(core.domain_type(), XenDomainType::X86Pv);
    assert_eq!(core.frame_space(), FrameSpace::Machine);
    assert_eq!(core.page(0), Some(&[0x11; 4096][..]));
    assert_eq!(core.page(1), Some(&[0x22; 4096][..]));
    assert_eq!(core.machine_to_phys(0x2000), Some(1));
    assert_eq!(core.machine_to_phys(0x3000), None);
    assert_eq!(core.vcpus()[0].root_table_pfn, Some(1));
}

#[test]
fn truncated_or_corrupted_elf_never_panics() {
    for (good, is_xen) in [(synthetic_elf(), false), (synthetic_dump_core(), true)] {
        let parse = |b: Vec<u8>| -> Result<Box<dyn PhysMemory>, Error> {
            if is_xen {
                XenCore::from_bytes("x.core", b).map(|c| Box::new(c) as Box<dyn PhysMemory>)
            } else {
                ElfCore::from_bytes("x.elf", b).map(|c| Box::new(c) as Box<dyn PhysMemory>)
            }
        };
        for len in (0..good.len()).step_by(7) {
            // A cut core either fails or serves only what it still holds.
            if let Ok(mem) = parse(good[..len].to_vec()) {
                assert!(mem.present_pfns().all(|p| mem.page(p).is_some()));
            }
        }
        let headers = good.len().min(1200);
        for at in 0..headers {
            for v in [0x01, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[at] ^= v;
                if let Ok(mem) = parse(bad) {
                    let _ = mem.vcpus();
                    let _ = mem.max_pfn();
                }
            }
        }
    }
}

#[test]
fn unknown_format_is_named() {
    let path = std::env::temp_dir().join(format!("dormouse-unknown-{}.img", std::process::id()));
    std::fs::write(&path, b"this is not a memory image").unwrap();
    let err = open_memory(&path).err().expect("unknown format");
    std::fs::remove_file(&path).unwrap();
    let msg = err.to_string();
    assert!(matches!(err, Error::UnknownFormat { .. }));
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("raw"),
        "{msg}"
    );
    let missing = open_memory("/nonexistent/dormouse.save").err().unwrap();
    assert!(missing.to_string().contains("/nonexistent/dormouse.save"), "{missing}");
}

/// Counts the pages a search reads, to measure the work a guest can make it do.
struct CountingMemory {
    inner: introspect::RawMemory,
    pages_read: std::sync::atomic::AtomicUsize,
}

impl PhysMemory for CountingMemory {
    fn path(&self) -> &std::path::Path {
        self.inner.path()
    }
    fn format(&self) -> introspect::ImageFormat {
        self.inner.format()
    }
    fn guest_kind(&self) -> introspect::GuestKind {
        self.inner.guest_kind()
    }
    fn page(&self, pfn: u64) -> Option<&[u8]> {
        self.pages_read.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.page(pfn)
    }
    fn present_ranges(&self) -> Box<dyn Iterator<Item = std::ops::Range<u64>> + '_> {
        self.inner.present_ranges()
    }
    fn vcpus(&self) -> &[introspect::VcpuState] {
        self.inner.vcpus()
    }
}

/// Headers that look like a kernel's .BTF, each claiming a 256 KiB blob that holds no
/// task_struct: the carving gives up after a few instead of reading every one.
#[test]
fn planted_btf_headers_buy_bounded_work() {
    const PLANTED: usize = 48;
    const CLAIMED: u32 = 256 << 10;
    let mut ram = vec![0u8; 2 << 20];
    for k in 0..PLANTED {
        let at = k * 16 * 1024;
        let mut hdr = Vec::new();
        hdr.extend([0x9f, 0xeb, 0x01, 0x00]);
        for field in [24u32, 0, 4, 4, CLAIMED] {
            hdr.extend(field.to_le_bytes());
        }
        ram[at..at + hdr.len()].copy_from_slice(&hdr);
    }
    let mem = CountingMemory {
        inner: introspect::RawMemory::from_bytes("planted.raw", ram).unwrap(),
        pages_read: 0.into(),
    };
    assert!(introspect::find_kernel_btf(&mem).is_none());
    let read = mem.pages_read.into_inner();
    // Each rejected candidate reads its 64 claimed pages; unbounded, that is 48 * 64 plus the scan.
    let scan = (2 << 20) / 4096;
    assert!(read < scan + 16 * 64 + 4 * PLANTED, "{read} page reads");
}

/// Digit-token runs ("0\0" .. "9\0") planted all over: carving stops after a bounded number.
#[test]
fn planted_kallsyms_token_runs_buy_bounded_work() {
    const BASE: u64 = 0xffff_ffff_8100_0000;
    let digits = b"0\x001\x002\x003\x004\x005\x006\x007\x008\x009\x00";
    let mut bytes = vec![0u8; 1 << 20];
    for chunk in bytes.chunks_mut(4096) {
        chunk[..digits.len()].copy_from_slice(digits);
    }
    let mem = introspect::BufferMemory { base: BASE, bytes };
    let opts = introspect::KallsymsOptions {
        big_symbols: true,
        stext: None,
    };
    let err = introspect::carve_kallsyms(&mem, BASE..BASE + (1 << 20), &opts).unwrap_err();
    assert!(err.to_string().contains("giving up"), "{err}");
}
