//! Locating and decompressing the real fixtures (see /work/shared/fixtures/README.md).

#![allow(dead_code)] // each test binary uses a different subset of these helpers

use std::path::{Path, PathBuf};

use introspect::PhysMemory;

/// The fixtures directory, or `None` (after a loud message) when it is missing.
pub fn fixtures() -> Option<PathBuf> {
    dormouse_tests::xen_fixtures("introspect")
}

/// Path of fixture `rel` (e.g. `xen-pv-a/domU-A.save`), decompressed from `rel.zst` into the
/// cache on first use.
pub fn decompressed(fixtures: &Path, rel: &str) -> PathBuf {
    dormouse_tests::decompressed(fixtures, rel)
}

pub fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn hex(v: &serde_json::Value) -> u64 {
    let s = v.as_str().expect("hex string");
    u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex number")
}

/// Pfns of the pages containing `needle` (only whole occurrences within one page).
pub fn pages_containing(mem: &dyn PhysMemory, needle: &[u8]) -> Vec<u64> {
    let finder = memchr::memmem::Finder::new(needle);
    mem.present_pfns()
        .filter(|&pfn| mem.page(pfn).is_some_and(|p| finder.find(p).is_some()))
        .collect()
}

/// One record line of a `*.stream-summary.txt`: (layer, name, offset, length).
pub type SummaryRecord = (String, String, u64, u32);

/// Parsed `*.stream-summary.txt` (written by the fixture scripts with Xen's Python tools).
pub struct Summary {
    /// Every non-PAGE_DATA record in file order.
    pub records: Vec<SummaryRecord>,
    pub page_data_records: usize,
    pub first_page_data: u64,
    pub pfn_entries: u64,
    pub highest_pfn: u64,
    /// (type nibble, count)
    pub page_types: Vec<(usize, u64)>,
}

pub fn summary(path: &Path) -> Summary {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let num = |s: &str| {
        let s = s.trim().trim_end_matches(',').trim_end_matches(')');
        match s.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).expect("hex"),
            None => s.parse().expect("decimal"),
        }
    };
    let mut out = Summary {
        records: Vec::new(),
        page_data_records: 0,
        first_page_data: 0,
        pfn_entries: 0,
        highest_pfn: 0,
        page_types: Vec::new(),
    };
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("libxc PAGE_DATA records: ") {
            // "64 (first @0xe01), pfn entries: 65536, highest pfn 0xffff"
            let words: Vec<&str> = rest.split_whitespace().collect();
            out.page_data_records = num(words[0]) as usize;
            out.first_page_data = num(words[2].trim_start_matches('@'));
            out.pfn_entries = num(words[5]);
            out.highest_pfn = num(words[8]);
        } else if let Some(rest) = line.strip_prefix("page types") {
            let list = rest.split("): ").nth(1).expect("page type list");
            for item in list.split(", ") {
                let (t, n) = item.split_once(": ").expect("type: count");
                out.page_types.push((num(t) as usize, num(n)));
            }
        } else if let Some((layer, rest)) = line
            .strip_prefix("libxl record @")
            .map(|r| ("libxl", r))
            .or_else(|| line.strip_prefix("libxc record @").map(|r| ("libxc", r)))
        {
            // "0x4e1: X86_PV_INFO length=8"
            let (off, rest) = rest.split_once(": ").expect("offset: record");
            let (name, len) = rest.split_once(" length=").expect("name length=");
            out.records.push((layer.into(), name.into(), num(off), num(len) as u32));
        }
    }
    out
}

/// The test bed's QEMU memory-dump directory (`dump.elf`, `ground-truth.json`, ...): see
/// `dormouse_tests::testbed` for when a missing test bed fails and when it skips.
pub fn testbed_memdump(test: &str) -> Option<PathBuf> {
    let dir = dormouse_tests::testbed(test)?.memdump.dir;
    assert!(
        dir.join("dump.elf").is_file(),
        "{}/dump.elf is missing; rerun scripts/make-fixtures",
        dir.display()
    );
    Some(dir)
}

/// The kernel the test bed's dump booted, as `scripts/make-fixtures` recorded it. Only called
/// after [`testbed_memdump`] found the test bed.
pub fn testbed_kernel(test: &str) -> dormouse_tests::TestbedKernel {
    dormouse_tests::testbed(test)
        .expect("the test bed was found a moment ago")
        .kernel
}
