//! `cargo +nightly fuzz run kallsyms`: kallsyms decoding and carving over arbitrary memory.
#![no_main]

use introspect::{
    AddressTable, BufferMemory, KallsymsLocation, KallsymsOptions, Markers, carve_kallsyms, decode_kallsyms,
};
use libfuzzer_sys::fuzz_target;

const BASE: u64 = 0xffff_ffff_8200_0000;

fuzz_target!(|data: &[u8]| {
    // The first 32 bytes place the tables (offsets into the input) and pick the options.
    let Some((head, _)) = data.split_first_chunk::<32>() else {
        return;
    };
    let at = |i: usize| BASE.wrapping_add(u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]) as u64);
    let flags = head[28];
    let options = KallsymsOptions {
        big_symbols: flags & 1 != 0,
        stext: (flags & 2 != 0).then(|| at(24)),
    };
    let addresses = if flags & 4 != 0 {
        AddressTable::Absolute { addresses: at(20) }
    } else {
        AddressTable::Relative {
            offsets: at(20),
            relative_base: at(24),
        }
    };
    let location = KallsymsLocation {
        num_syms: at(0),
        names: at(4),
        markers: (flags & 8 != 0).then(|| Markers {
            vaddr: at(8),
            entry_size: if flags & 16 != 0 { 8 } else { 4 },
        }),
        token_table: at(12),
        token_index: at(16),
        addresses,
    };
    let mem = BufferMemory { base: BASE, bytes: data };
    if let Ok(k) = decode_kallsyms(&mem, &location, &options) {
        // Whatever decoded must answer lookups.
        for s in k.symbols.iter().take(64) {
            assert_eq!(k.symbols.lookup(s.name).map(|f| f.name), Some(s.name));
            let _ = k.symbols.nearest(s.address);
        }
    }
    let _ = carve_kallsyms(&mem, BASE..BASE + data.len() as u64, &options);
});
