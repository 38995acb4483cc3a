//! `Packages` indices and rpm header blobs, as a hostile mirror or guest could serve them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = packages::apt::parse_packages(&String::from_utf8_lossy(data), "Packages");
    let _ = packages::rpmdb::parse_header(data);
});
