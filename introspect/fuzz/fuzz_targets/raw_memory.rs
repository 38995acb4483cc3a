//! `cargo fuzz run raw_memory`: a flat physical memory image (`RawMemory`), whose only
//! structure is what the carving scans find in it: the kernel's `.BTF` by its header, and the
//! whole inspection over it.
#![no_main]

use introspect::linux::ProfileFiles;
use introspect::{PhysMemory, RawMemory, find_kernel_btf};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mem) = RawMemory::from_bytes("fuzz.raw", data.to_vec()) else {
        return;
    };
    let pages = data.len().div_ceil(4096) as u64;
    assert_eq!(mem.present_pfns().count() as u64, pages);
    if let Some(found) = find_kernel_btf(&mem) {
        assert!(found.paddr < data.len() as u64);
        assert!(found.btf.find_struct("task_struct").is_some());
    }
    let _ = introspect::linux::snapshot(&mem, &ProfileFiles::default());
});
