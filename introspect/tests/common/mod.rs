//! Locating and decompressing the real fixtures (see /work/shared/fixtures/README.md).

#![allow(dead_code)] // each test binary uses a different subset of these helpers

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use introspect::PhysMemory;

/// The fixtures directory, or `None` (after a loud message) when it is missing.
pub fn fixtures() -> Option<PathBuf> {
    let dir = match std::env::var_os("DORMOUSE_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"),
    };
    if dir.is_dir() {
        Some(dir)
    } else {
        // Written to the real stderr: the test harness captures `eprintln!` of passing tests,
        // and a skip must not look like a pass.
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED: real Xen fixtures not found at {}; set DORMOUSE_FIXTURES ***\n",
            dir.display()
        );
        None
    }
}

/// Path of fixture `rel` (e.g. `xen-pv-a/domU-A.save`), decompressed from `rel.zst` into the
/// cache on first use. Concurrent tests race benignly: each writes its own temporary file and
/// renames it into place.
pub fn decompressed(fixtures: &Path, rel: &str) -> PathBuf {
    let cache = std::env::var_os("DORMOUSE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/dormouse"))
        .join("fixtures-decompressed");
    let out = cache.join(rel);
    if out.is_file() {
        return out;
    }
    std::fs::create_dir_all(out.parent().expect("fixture path has a parent"))
        .expect("create the fixture cache directory");
    let tmp = out.with_extension(format!("tmp.{}", std::process::id()));
    let src = fixtures.join(format!("{rel}.zst"));
    let status = Command::new("zstd")
        .args(["-q", "-f", "-d", "--long=27"])
        .arg(&src)
        .arg("-o")
        .arg(&tmp)
        .status()
        .expect("run zstd (install the zstd package)");
    assert!(status.success(), "zstd failed on {}", src.display());
    std::fs::rename(&tmp, &out).expect("move the decompressed fixture into place");
    out
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

/// The test bed's QEMU memory-dump directory (`dump.elf`, `ground-truth.json`, ...). Missing
/// is a failure naming the script that builds it, except in quick mode (`DORMOUSE_QUICK=1`),
/// where the test skips loudly.
pub fn testbed_memdump(test: &str) -> Option<PathBuf> {
    let cache = std::env::var_os("DORMOUSE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache/dormouse")
        });
    let manifest = cache.join("testbed.json");
    let text = match std::fs::read_to_string(&manifest) {
        Ok(text) => text,
        Err(e) if std::env::var_os("DORMOUSE_QUICK").is_some_and(|v| v == "1") => {
            let _ = writeln!(
                std::io::stderr(),
                "\n!!! SKIPPED {test} (DORMOUSE_QUICK=1): no test bed at {}: {e}\n",
                manifest.display()
            );
            return None;
        }
        Err(e) => panic!(
            "{test}: the test bed is missing ({}: {e}). Build it with `scripts/make-fixtures` as root \
             (scripts/test does this), or set DORMOUSE_CACHE to where it was built.",
            manifest.display()
        ),
    };
    let testbed: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: {e}; rerun scripts/make-fixtures", manifest.display()));
    let dir = PathBuf::from(testbed["memdump"]["dir"].as_str().expect("testbed.json: memdump.dir"));
    assert!(
        dir.join("dump.elf").is_file(),
        "{}/dump.elf is missing; rerun scripts/make-fixtures",
        dir.display()
    );
    Some(dir)
}
