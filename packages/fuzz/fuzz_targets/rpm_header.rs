//! rpm headers, as a hostile package file or guest rpmdb could hold them: the package-file
//! framing (lead, signature header, main header), the typed getters, and the installed-package
//! reader on the same bytes taken as an rpmdb.sqlite blob.
#![no_main]

use packages::rpmheader::{Header, read_at, read_package_header};

fn read_all(header: &Header<'_>) {
    // Tags of every type the readers ask for, and one tag no header has.
    for tag in [1000, 1003, 1023, 1065, 1086, 1116, 1117, 1118, 5020, 0xffff_ffff] {
        let _ = header.strings(tag);
        let _ = header.string(tag);
        let _ = header.string_array(tag);
        let _ = header.int32s(tag);
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok((blob, base)) = read_package_header(read_at(data)) {
        if let Ok(header) = Header::parse(&blob, base) {
            read_all(&header);
        }
    }
    if let Ok(header) = Header::parse(data, 0) {
        read_all(&header);
    }
    let _ = packages::rpmdb::parse_header(data);
});
