//! A `Packages` index from a guest's `/var/lib/apt/lists` through `IndexCache::packages`:
//! decompression (none, lz4, gzip, xz, as the first byte picks) bounded to `MAX_INDEX_BYTES`,
//! then the index parser.
#![no_main]

use checker::indices::{Compression, IndexCache};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, file)) = data.split_first() else {
        return;
    };
    let (suffix, compression) = Compression::ALL[usize::from(pick) % Compression::ALL.len()];
    let _ = IndexCache::default().packages(file, compression, &format!("Packages{suffix}"));
});
