//! Version parsing and ordering: two versions split at the first NUL. The orderings must be
//! antisymmetric, whatever the bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (a, b) = text.split_once('\0').unwrap_or((&text, ""));
    if let (Ok(x), Ok(y)) = (packages::debversion::compare(a, b), packages::debversion::compare(b, a)) {
        assert_eq!(x, y.reverse(), "dpkg order of {a:?} and {b:?}");
    }
    let (x, y) = (
        packages::rpmversion::rpmvercmp(a, b),
        packages::rpmversion::rpmvercmp(b, a),
    );
    assert_eq!(x, y.reverse(), "rpmvercmp of {a:?} and {b:?}");
    let _ = packages::rpmversion::compare_evr(a, b);
});
