//! `cargo +nightly fuzz run elf_core`: the ELF core parsers (dump-core and PT_LOAD) on
//! arbitrary bytes.
#![no_main]

use introspect::{ElfCore, PhysMemory, XenCore};
use libfuzzer_sys::fuzz_target;

fn exercise(mem: &dyn PhysMemory) {
    let _ = (mem.vcpus(), mem.vmcoreinfo(), mem.max_pfn());
    for pfn in mem.present_pfns().take(64) {
        assert_eq!(mem.page(pfn).map(<[u8]>::len), Some(4096));
        let _ = mem.machine_to_phys(pfn);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(core) = XenCore::from_bytes("fuzz.core", data.to_vec()) {
        exercise(&core);
    }
    if let Ok(elf) = ElfCore::from_bytes("fuzz.elf", data.to_vec()) {
        exercise(&elf);
    }
});
