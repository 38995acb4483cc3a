//! dpkg's status database, as a hostile guest could write it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(pkgs) = packages::dpkg::parse_status(&text) {
        let _ = packages::dpkg::native_arch(&pkgs);
    }
    let _ = packages::dpkg::parse_file_list(&text, 1000);
});
