//! `cargo +nightly fuzz run isf`: the ISF loader and its layout lookups on arbitrary bytes
//! (plain JSON, and xz when the input starts with the xz magic).
#![no_main]

use introspect::Isf;
use introspect::linux::TypeInfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(isf) = Isf::parse("fuzz.isf", data) else {
        return;
    };
    // Whatever was accepted must answer every question without panicking or hanging.
    let _ = (isf.banner(), isf.metadata(), isf.symbols().address_of("_text"));
    for ty in isf.type_names().take(64) {
        let _ = isf.struct_size(ty);
        for field in isf.field_names(ty).take(16) {
            let _ = (isf.member_offset(ty, field), isf.member_size(ty, field));
            let _ = isf.member_offset(ty, &format!("{field}.{field}"));
        }
        let _ = isf.member_offset(ty, "needle");
    }
    let _ = isf.symbols().relocated(0xffff_ffff_9000_0000);
});
