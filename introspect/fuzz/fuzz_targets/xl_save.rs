//! `cargo +nightly fuzz run xl_save`: the xl save parser on arbitrary bytes.
#![no_main]

use introspect::{PhysMemory, XlSaveImage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = XlSaveImage::from_bytes("fuzz.save", data.to_vec()) {
        // Whatever was accepted must be servable without panics.
        let _ = (img.records().len(), img.config(), img.vcpus(), img.hvm_params());
        for pfn in img.present_pfns().take(64) {
            assert_eq!(img.page(pfn).map(<[u8]>::len), Some(4096));
        }
        let mut buf = [0u8; 64];
        let _ = img.read_phys(0xff0, &mut buf);
    }
});
