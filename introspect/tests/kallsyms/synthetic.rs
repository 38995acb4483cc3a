//! Synthetic and hostile tables: built here in the kernel's layout, corrupted, and the real
//! kernel's tables garbled; each must decode, carve or fail with an error, never panic.

use introspect::{
    AddressEncoding, AddressTable, KallsymsError, KallsymsLocation, KallsymsOptions, KernelImageMap, Markers,
    VirtualMemory, VmcoreInfo, carve_kallsyms, decode_kallsyms, load_vmcoreinfo, open_memory,
};

use dormouse_tests::Rng;

use crate::{Line, common, lines_of};

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
            let r = &hot[(rng.next_u64() % 2) as usize];
            let i = r.start + (rng.next_u64() as usize) % (r.end - r.start);
            bytes[i] ^= 1 << (rng.next_u64() % 8);
        }
        let i = (rng.next_u64() as usize) % bytes.len();
        bytes[i] = rng.next_u64() as u8;
        if round % 10 == 9 {
            bytes.truncate((rng.next_u64() as usize) % bytes.len());
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
