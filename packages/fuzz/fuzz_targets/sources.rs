//! apt sources (one-line and deb822), yum .repo files and clearsigned Release files.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for entry in packages::apt::parse_sources_list(&text, "fuzz.list").unwrap_or_default() {
        let _ = packages::apt::list_file_name(&entry.release_uri("InRelease"));
    }
    let _ = packages::apt::parse_deb822_sources(&text, "fuzz.sources");
    let _ = packages::yum::parse_repo_file(&text, "fuzz.repo");
    if let Ok(inner) = packages::deb822::clearsigned_text(&text) {
        let _ = packages::apt::Release::parse(&inner, "InRelease");
    }
    let _ = packages::apt::Release::parse(&text, "Release");
});
