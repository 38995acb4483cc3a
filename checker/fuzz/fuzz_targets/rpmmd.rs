//! rpm-md metadata as a guest's dnf cache holds it: `repomd.xml` (`Repomd::parse`), then
//! `primary.xml` and `updateinfo.xml` through `IndexCache`, which picks the decompressor from
//! the name. The first byte picks that name's suffix; the rest is the file.
#![no_main]

use checker::indices::IndexCache;
use libfuzzer_sys::fuzz_target;
use packages::rpmmd::Repomd;

const SUFFIXES: [&str; 4] = ["xml", "xml.gz", "xml.xz", "xml.zst"];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, file)) = data.split_first() else {
        return;
    };
    let suffix = SUFFIXES[usize::from(pick) % SUFFIXES.len()];
    let _ = Repomd::parse(file, "repomd.xml");
    let mut cache = IndexCache::default();
    let _ = cache.primary(file, &format!("primary.{suffix}"));
    let _ = cache.updateinfo(file, &format!("updateinfo.{suffix}"));
});
