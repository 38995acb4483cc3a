//! `cargo +nightly fuzz run vmcoreinfo`: VMCOREINFO text parsing, and the RAM scan over
//! arbitrary pages.
#![no_main]

use introspect::{RawMemory, VmcoreInfo, find_vmcoreinfo_in_ram};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(info) = VmcoreInfo::parse(text) {
            assert!(!info.osrelease.is_empty());
            let _ = (info.phys_base(), info.release_version());
        }
    }
    if let Ok(mem) = RawMemory::from_bytes("fuzz.raw", data.to_vec()) {
        if let Ok(found) = find_vmcoreinfo_in_ram(&mem) {
            assert!(found.text.starts_with("OSRELEASE="));
        }
    }
});
