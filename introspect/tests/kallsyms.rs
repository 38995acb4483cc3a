//! VMCOREINFO, the kernel image mapping and kallsyms against real kernels: both QEMU
//! fixtures and the test bed's dump (KASLR on, VMCOREINFO note), the Xen PV save and
//! dump-core (no note: VMCOREINFO found in RAM), the kernel's real System.map; plus synthetic
//! and garbled tables that must yield errors, never panics.
//!
//! "Core" symbols are the first `kallsyms_num_syms` lines of /proc/kallsyms: the file goes on
//! with module symbols (`name\t[module]`) and, on other kernels, `[bpf]`, `[__builtin__ftrace]`
//! and `[__builtin__kprobes]` entries, which the kernel serves from other lists and which
//! therefore are not in the tables decoded here.

// Tests and their helpers fail by panicking, with the message saying what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use dormouse_tests::FixtureKernel;

use introspect::{
    AddressEncoding, AddressTable, KallsymsError, KallsymsLocation, KallsymsOptions, KernelImageMap, Markers,
    RawMemory, START_KERNEL_MAP, Symbols, SymbolsError, VirtError, VirtualMemory, VmcoreInfo, VmcoreinfoError,
    VmcoreinfoSource, carve_kallsyms, compare_symbols, decode_kallsyms, find_vmcoreinfo_in_ram,
    kallsyms_from_vmcoreinfo, load_vmcoreinfo, open_memory,
};

const LINK_TEXT: u64 = 0xffff_ffff_8100_0000;
/// System.map symbols that scripts/kallsyms leaves out of the tables: absolute link-time
/// constants, the kallsyms tables themselves (they do not exist yet when the table is
/// computed) and the `init_per_cpu__*` aliases of the boot CPU's per-CPU areas.
const NOT_IN_KALLSYMS: &[&str] = &[
    "kexec_control_code_size",
    "text_size",
    "phys_startup_64",
    "kallsyms_offsets",
    "kallsyms_relative_base",
    "kallsyms_num_syms",
    "kallsyms_names",
    "kallsyms_markers",
    "kallsyms_seqs_of_names",
    "kallsyms_token_table",
    "kallsyms_token_index",
    "init_per_cpu__fixed_percpu_data",
    "init_per_cpu__irq_stack_backing_store",
    "init_per_cpu__gdt_page",
];

type Line = (u64, char, String);

/// Core lines of a /proc/kallsyms capture, in file order.
fn core_kallsyms(path: &Path) -> Vec<Line> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    let core: Vec<Line> = lines
        .iter()
        .filter(|l| !l.contains('\t'))
        .map(|l| {
            let mut f = l.split(' ');
            let addr = u64::from_str_radix(f.next().unwrap(), 16).unwrap();
            let kind = f.next().unwrap().chars().next().unwrap();
            (addr, kind, f.next().unwrap().to_owned())
        })
        .collect();
    // Every excluded line is a module or other non-core entry, and they all follow the core.
    assert!(
        lines[core.len()..]
            .iter()
            .all(|l| l.ends_with(']') && l.contains("\t["))
    );
    assert!(
        lines.len() > core.len(),
        "{}: expected module symbols too",
        path.display()
    );
    core
}

fn lines_of(symbols: &Symbols) -> Vec<Line> {
    symbols.iter().map(|s| (s.address, s.kind, s.name.to_owned())).collect()
}

fn read_u64(mem: &dyn VirtualMemory, vaddr: u64) -> u64 {
    let mut b = [0u8; 8];
    mem.read_virt(vaddr, &mut b).unwrap();
    u64::from_le_bytes(b)
}

/// The real System.map of the fixtures' kernel (from its -dbg package).
fn system_map(fx: &Path) -> Symbols {
    let path = common::decompressed(fx, &FixtureKernel::read(fx).system_map_rel());
    Symbols::from_system_map(&std::fs::read_to_string(path).unwrap()).expect("parse the real System.map")
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

/// Every symbol of `kallsyms` appears in `map` with the same name and address, and the
/// System.map's surplus is exactly [`NOT_IN_KALLSYMS`].
fn assert_system_map_covers(map: &Symbols, kallsyms: &Symbols) {
    use std::collections::HashMap;
    let mut in_map: HashMap<(&str, u64), Vec<char>> = HashMap::new();
    for s in map.iter() {
        in_map.entry((s.name, s.address)).or_default().push(s.kind);
    }
    for s in kallsyms.iter() {
        let kinds = in_map
            .get_mut(&(s.name, s.address))
            .unwrap_or_else(|| panic!("{} at {:#x} not in System.map", s.name, s.address));
        let kind = kinds.pop().unwrap_or_else(|| panic!("{} listed too often", s.name));
        if s.kind == 'A' && s.address < START_KERNEL_MAP {
            assert!(matches!(kind, 'A' | 'D' | 'd'), "{}: {kind}", s.name);
        } else {
            assert_eq!(kind, s.kind, "{}", s.name);
        }
        if kinds.is_empty() {
            in_map.remove(&(s.name, s.address));
        }
    }
    let mut surplus: Vec<&str> = in_map.keys().map(|k| k.0).collect();
    surplus.sort_unstable();
    let mut expected = NOT_IN_KALLSYMS.to_vec();
    expected.sort_unstable();
    assert_eq!(surplus, expected);
}

#[test]
fn system_map_relocation_and_mismatch_detection() {
    let Some(fx) = common::fixtures() else { return };
    let sm_text =
        std::fs::read_to_string(common::decompressed(&fx, &FixtureKernel::read(&fx).system_map_rel())).unwrap();
    let sm = Symbols::from_system_map(&sm_text).unwrap();
    assert_eq!(sm.len(), 94280);
    let gt4 = common::json(&fx.join("qemu-6.1-4level/ground-truth.json"));
    let gt57 = common::json(&fx.join("qemu-6.1-la57/ground-truth.json"));
    let text4 = common::hex(&gt4["kaslr"]["text_runtime"]);
    let text57 = common::hex(&gt57["kaslr"]["text_runtime"]);

    // System.map + the runtime _text = the guest's /proc/kallsyms (core symbols).
    let relocated = sm.relocated(text4).unwrap();
    let core = core_kallsyms(&common::decompressed(&fx, "qemu-6.1-4level/kallsyms.txt"));
    let mut kallsyms = String::new();
    for (addr, kind, name) in &core {
        kallsyms.push_str(&format!("{addr:016x} {kind} {name}\n"));
    }
    let kallsyms = Symbols::from_system_map(&kallsyms).unwrap();
    assert_eq!(lines_of(&kallsyms), core);
    assert_system_map_covers(&relocated, &kallsyms);
    // Per-CPU offsets are not relocated.
    assert_eq!(relocated.address_of("fixed_percpu_data"), Some(0));
    assert_eq!(relocated.address_of("_text"), Some(text4));
    let sample = kallsyms.sample_names(500);
    assert_eq!(compare_symbols(&kallsyms, &relocated, &sample), Ok(500));

    // The wrong relocation (unrelocated, or another boot's) is caught on every kernel symbol.
    let Err(unrelocated) = compare_symbols(&kallsyms, &sm, &sample) else {
        panic!("an unrelocated System.map must not match a KASLR kernel")
    };
    assert!(
        unrelocated
            .iter()
            .any(|m| m.name == "_text" && m.found == Some(LINK_TEXT))
    );
    let Err(other_boot) = compare_symbols(&kallsyms, &sm.relocated(text57).unwrap(), &sample) else {
        panic!("another boot's relocation must not match")
    };
    assert!(other_boot.len() > 450, "{} mismatches", other_boot.len());
    assert!(other_boot[0].to_string().contains("expected 0x"));

    // A corrupted System.map: two addresses changed, one symbol renamed.
    let mut corrupted = String::new();
    for line in sm_text.lines() {
        let line = match line {
            l if l.ends_with(" init_task") => l.replacen("ffffffff82a1aa40", "ffffffff82a1aa80", 1),
            l if l.ends_with(" linux_banner") => l.replacen("ffffffff82161900", "ffffffff82161000", 1),
            l if l.ends_with(" init_mm") => l.replace("init_mm", "init_mn"),
            l => l.to_owned(),
        };
        corrupted.push_str(&line);
        corrupted.push('\n');
    }
    let corrupted = Symbols::from_system_map(&corrupted).unwrap().relocated(text4).unwrap();
    let names = ["_text", "init_task", "linux_banner", "init_mm", "init_top_pgt"];
    let mismatches = compare_symbols(&kallsyms, &corrupted, &names).unwrap_err();
    let found: Vec<(&str, bool)> = mismatches
        .iter()
        .map(|m| (m.name.as_str(), m.found.is_some()))
        .collect();
    assert_eq!(found, [("init_task", true), ("linux_banner", true), ("init_mm", false)]);

    // Debian's placeholder System.map and garbage are refused with the line.
    let placeholder = format!(
        "ffffffffffffffff B The real System.map is in the linux-image-{}-dbg package\n",
        FixtureKernel::read(&fx).release
    );
    assert!(matches!(
        Symbols::from_system_map(&placeholder),
        Err(SymbolsError::SystemMap { line: 1, .. })
    ));
    let garbage = "ffffffff81000000 T _text\nzz T x\n";
    let err = Symbols::from_system_map(garbage).unwrap_err();
    assert!(err.to_string().contains("System.map line 2"), "{err}");
    assert_eq!(
        Symbols::from_system_map("0000000000000000 D x\n")
            .unwrap()
            .relocated(text4),
        Err(SymbolsError::NoText)
    );
}

// -------------------------------------------------------------------------------------------
// Synthetic and hostile tables
// -------------------------------------------------------------------------------------------

/// Guest-virtual memory backed by a buffer at `base`.
type BufMem = introspect::BufferMemory<Vec<u8>>;

const SYNTH_BASE: u64 = 0xffff_ffff_8200_0000;
const SYNTH_TEXT: u64 = 0xffff_ffff_8100_0000;

fn align8(v: &mut Vec<u8>) {
    v.resize(v.len().next_multiple_of(8), 0);
}

/// Token `i`: the character `i` when printable (names encode one token per character),
/// otherwise a three-character filler.
fn token(i: usize) -> Vec<u8> {
    if (0x21..0x7f).contains(&i) {
        vec![i as u8]
    } else {
        format!("~{i:02x}").into_bytes()
    }
}

/// kallsyms tables in 6.1 order (offsets, relative base, num_syms, names, markers,
/// [seqs_of_names,] token table, token index) with absolute per-CPU entries.
fn synthetic(symbols: &[Line], seqs: bool, big: bool) -> (BufMem, KallsymsLocation) {
    let mut b = vec![0xccu8; 64];
    let relative_base = SYNTH_TEXT;
    let offsets = SYNTH_BASE + b.len() as u64;
    for (addr, kind, _) in symbols {
        let v = if *kind == 'A' {
            *addr as i32
        } else {
            (relative_base as i64 - 1 - *addr as i64) as i32
        };
        b.extend(v.to_le_bytes());
    }
    align8(&mut b);
    let rb = SYNTH_BASE + b.len() as u64;
    b.extend(relative_base.to_le_bytes());
    let num_syms = SYNTH_BASE + b.len() as u64;
    b.extend((symbols.len() as u32).to_le_bytes());
    align8(&mut b);
    let names = SYNTH_BASE + b.len() as u64;
    let mut markers = Vec::new();
    for (i, (_, kind, name)) in symbols.iter().enumerate() {
        if i % 256 == 0 {
            markers.push((SYNTH_BASE + b.len() as u64 - names) as u32);
        }
        let len = name.len() + 1;
        if len >= 0x80 {
            assert!(big);
            b.extend([0x80 | (len & 0x7f) as u8, (len >> 7) as u8]);
        } else {
            b.push(len as u8);
        }
        b.push(*kind as u8);
        b.extend(name.as_bytes());
    }
    align8(&mut b);
    let markers_at = SYNTH_BASE + b.len() as u64;
    for m in markers {
        b.extend(m.to_le_bytes());
    }
    align8(&mut b);
    if seqs {
        for i in 0..symbols.len() as u32 {
            b.extend(&i.to_be_bytes()[1..]);
        }
        align8(&mut b);
    }
    let token_table = SYNTH_BASE + b.len() as u64;
    let mut index = Vec::new();
    let mut off = 0u16;
    for i in 0..256 {
        index.extend(off.to_le_bytes());
        let t = token(i);
        off += t.len() as u16 + 1;
        b.extend(t);
        b.push(0);
    }
    align8(&mut b);
    let token_index = SYNTH_BASE + b.len() as u64;
    b.extend(index);
    // Whole pages, like real memory (partial pages are unreadable to the chunked readers).
    b.resize(b.len().next_multiple_of(4096), 0xcc);
    let loc = KallsymsLocation {
        num_syms,
        names,
        markers: Some(Markers {
            vaddr: markers_at,
            entry_size: 4,
        }),
        token_table,
        token_index,
        addresses: AddressTable::Relative {
            offsets,
            relative_base: rb,
        },
    };
    (
        BufMem {
            base: SYNTH_BASE,
            bytes: b,
        },
        loc,
    )
}

/// Per-CPU absolutes, `_text`/`_stext`, then ordinary symbols; optionally one name too long
/// for a one-byte length.
fn synthetic_symbols(n: usize, long_name: bool) -> Vec<Line> {
    let mut s: Vec<Line> = (0..4).map(|i| (i * 0x1000, 'A', format!("percpu_{i}"))).collect();
    s.push((SYNTH_TEXT, 'T', "_stext".into()));
    s.push((SYNTH_TEXT, 'T', "_text".into()));
    for i in 0..n {
        s.push((
            SYNTH_TEXT + 0x10 * (i as u64 + 1),
            if i % 3 == 0 { 't' } else { 'T' },
            format!("fn_{i}"),
        ));
    }
    if long_name {
        s.push((SYNTH_TEXT + 0x100_0000, 'D', "l".repeat(200)));
    }
    s
}

fn opts(big: bool) -> KallsymsOptions {
    KallsymsOptions {
        big_symbols: big,
        stext: Some(SYNTH_TEXT),
    }
}

#[test]
fn synthetic_tables_decode_and_carve() {
    for (seqs, big) in [(false, false), (true, false), (true, true), (false, true)] {
        let symbols = synthetic_symbols(700, big);
        let (mem, loc) = synthetic(&symbols, seqs, big);
        let k = decode_kallsyms(&mem, &loc, &opts(big)).unwrap();
        assert_eq!(lines_of(&k.symbols), symbols, "seqs {seqs} big {big}");
        assert_eq!(k.encoding, AddressEncoding::AbsolutePercpu);
        let range = SYNTH_BASE..SYNTH_BASE + mem.bytes.len() as u64;
        let carved = carve_kallsyms(&mem, range, &opts(big)).unwrap();
        assert_eq!(carved.location, loc, "seqs {seqs} big {big}");
        assert_eq!(carved.symbols, k.symbols);
    }
    // A two-byte length read as one byte is caught (here: as a name too short).
    let symbols = synthetic_symbols(10, true);
    let (mem, loc) = synthetic(&symbols, false, true);
    assert!(matches!(
        decode_kallsyms(&mem, &loc, &opts(false)),
        Err(KallsymsError::Corrupt { .. })
    ));
    // The wrong _stext is refused rather than silently picking an encoding.
    let err = decode_kallsyms(
        &mem,
        &loc,
        &KallsymsOptions {
            big_symbols: true,
            stext: Some(SYNTH_TEXT + 0x1000),
        },
    )
    .unwrap_err();
    assert!(matches!(err, KallsymsError::AddressEncoding { .. }), "{err}");
}

fn patch(mem: &mut BufMem, vaddr: u64, bytes: &[u8]) {
    let off = (vaddr - mem.base) as usize;
    mem.bytes[off..off + bytes.len()].copy_from_slice(bytes);
}

#[test]
fn hostile_tables_are_errors() {
    let symbols = synthetic_symbols(600, false);
    let fresh = || synthetic(&symbols, true, false);
    let corrupt_at = |mem: &BufMem, loc: &KallsymsLocation| match decode_kallsyms(mem, loc, &opts(true)) {
        Err(KallsymsError::Corrupt { what, vaddr, .. }) => (what, vaddr),
        other => panic!("expected a corruption error, got {other:?}"),
    };

    // Absurd and zero symbol counts.
    for count in [u32::MAX, (1 << 21) + 1, 0] {
        let (mut mem, loc) = fresh();
        patch(&mut mem, loc.num_syms, &count.to_le_bytes());
        assert_eq!(corrupt_at(&mem, &loc), ("kallsyms_num_syms", loc.num_syms));
    }
    // A plausible count larger than the names: runs into the markers, then off the buffer.
    let (mut mem, loc) = fresh();
    patch(&mut mem, loc.num_syms, &100_000u32.to_le_bytes());
    assert!(decode_kallsyms(&mem, &loc, &opts(true)).is_err());
    // Zero-length symbol.
    let (mut mem, loc) = fresh();
    patch(&mut mem, loc.names, &[0]);
    assert_eq!(corrupt_at(&mem, &loc), ("kallsyms_names", loc.names));
    // A token with no NUL within the length bound (the token table overwritten by 'A's).
    let (mut mem, loc) = fresh();
    patch(&mut mem, loc.token_table, &[b'A'; 700]);
    let (what, _) = corrupt_at(&mem, &loc);
    assert_eq!(what, "kallsyms_token_table");
    // Long tokens expanding a name past the name bound.
    let (mut mem, loc) = fresh();
    let mut long_tokens = Vec::new();
    let mut index = Vec::new();
    for _ in 0..256 {
        index.extend((long_tokens.len() as u16).to_le_bytes());
        long_tokens.extend([b'x'; 100]);
        long_tokens.push(0);
    }
    let tail = SYNTH_BASE + mem.bytes.len() as u64;
    mem.bytes.extend(&long_tokens);
    mem.bytes.resize(mem.bytes.len().next_multiple_of(4096) + 4096, 0);
    patch(&mut mem, loc.token_index, &index);
    let moved = KallsymsLocation {
        token_table: tail,
        ..loc
    };
    let (what, _) = corrupt_at(&mem, &moved);
    assert_eq!(what, "kallsyms_names");
    // Markers disagreeing with the names.
    let (mut mem, loc) = fresh();
    patch(&mut mem, loc.markers.unwrap().vaddr + 4, &7u32.to_le_bytes());
    assert_eq!(corrupt_at(&mem, &loc).0, "kallsyms_markers");
    // Truncated: the buffer ends inside the names.
    let (mut mem, loc) = fresh();
    mem.bytes.truncate((loc.names - SYNTH_BASE) as usize + 100);
    assert!(matches!(
        decode_kallsyms(&mem, &loc, &opts(true)),
        Err(KallsymsError::Read { .. })
    ));
    // Unsorted addresses: no encoding fits.
    let (mut mem, loc) = fresh();
    let AddressTable::Relative { offsets, .. } = loc.addresses else {
        unreachable!()
    };
    patch(&mut mem, offsets + 4 * 100, &(-5i32).to_le_bytes());
    assert!(matches!(
        decode_kallsyms(&mem, &loc, &opts(true)),
        Err(KallsymsError::AddressEncoding { .. })
    ));
    // Carving garbage finds nothing, and says where it looked.
    let junk = BufMem {
        base: SYNTH_BASE,
        bytes: (0..1 << 20)
            .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect(),
    };
    let err = carve_kallsyms(&junk, SYNTH_BASE..SYNTH_BASE + (1 << 20), &opts(true)).unwrap_err();
    assert!(matches!(err, KallsymsError::NotFound { .. }), "{err}");
    // VMCOREINFO without the kallsyms lines.
    let info = VmcoreInfo::parse("OSRELEASE=5.10.0\nSYMBOL(_stext)=ffffffff81000000\n").unwrap();
    assert!(matches!(
        KallsymsLocation::from_vmcoreinfo(&info),
        Err(KallsymsError::MissingVmcoreinfoSymbol { .. })
    ));
}

/// Tiny deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The real 4-level kernel's tables copied into a buffer and garbled: every decode and carve
/// must end (with symbols or an error) without panicking.
#[test]
fn garbled_real_tables_never_panic() {
    let Some(fx) = common::fixtures() else { return };
    let mem = open_memory(common::decompressed(&fx, "qemu-6.1-4level/dump.elf")).unwrap();
    let info = load_vmcoreinfo(mem.as_ref()).unwrap().info;
    let map = KernelImageMap::from_vmcoreinfo(mem.as_ref(), &info).unwrap();
    let loc = KallsymsLocation::from_vmcoreinfo(&info).unwrap();
    let AddressTable::Relative { offsets, .. } = loc.addresses else {
        panic!("6.1 uses relative offsets")
    };
    let end = loc.token_index + 512;
    let mut original = vec![0u8; (end - offsets) as usize];
    map.read_virt(offsets, &mut original).unwrap();
    let options = KallsymsOptions::from_vmcoreinfo(&info);
    let clean = BufMem {
        base: offsets,
        bytes: original.clone(),
    };
    let reference = decode_kallsyms(&clean, &loc, &options).unwrap();
    assert_eq!(reference.symbols.len(), 94266);

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut outcomes = [0usize; 2];
    for round in 0..60 {
        let mut bytes = original.clone();
        // Flip bytes in the small, dense tables (headers, tokens, index) and a few anywhere.
        let hot = [
            (loc.num_syms - offsets) as usize..(loc.names - offsets) as usize + 64,
            (loc.token_table - offsets) as usize..bytes.len(),
        ];
        for _ in 0..1 + round % 4 {
            let r = &hot[(rng.next() % 2) as usize];
            let i = r.start + (rng.next() as usize) % (r.end - r.start);
            bytes[i] ^= 1 << (rng.next() % 8);
        }
        let i = (rng.next() as usize) % bytes.len();
        bytes[i] = rng.next() as u8;
        if round % 10 == 9 {
            bytes.truncate((rng.next() as usize) % bytes.len());
        }
        let garbled = BufMem { base: offsets, bytes };
        outcomes[decode_kallsyms(&garbled, &loc, &options).is_ok() as usize] += 1;
        if round % 15 == 0 {
            let range = offsets..offsets + garbled.bytes.len() as u64;
            let _ = carve_kallsyms(&garbled, range, &options);
        }
    }
    eprintln!("garbled decodes: {} errors, {} decoded", outcomes[0], outcomes[1]);
    assert!(outcomes[0] > 0, "some garbling must be detected");
}

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
