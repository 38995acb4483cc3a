//! The bundle reader on arbitrary bytes: the pax archive layer directly, then a whole bundle
//! (zstd, manifest, member checks) from a file. Must never panic or allocate from a declared
//! size.
#![no_main]

use std::io::Read;

use bundle::read::Bundle;
use bundle::tar::Reader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reader = Reader::new(data);
    // Each member takes at least one 512-byte block, so this bounds the loop.
    for _ in 0..=data.len() / 512 {
        match reader.next_header() {
            Ok(Some(_)) => {
                let _ = std::io::copy(&mut reader.data().take(1 << 20), &mut std::io::sink());
            }
            _ => break,
        }
    }
    let Ok(mut file) = tempfile::NamedTempFile::new() else {
        return;
    };
    if std::io::Write::write_all(&mut file, data).is_err() {
        return;
    }
    if let Ok(bundle) = Bundle::open(file.path()) {
        let _ = bundle.verify_payload();
    }
});
