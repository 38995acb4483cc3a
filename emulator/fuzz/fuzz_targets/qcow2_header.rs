//! An image file as `resolve_format` reads it: container detection from its first bytes, then
//! the qcow2 header's backing file, backing format extension and external data file, both
//! probed (no format given) and declared qcow2 (which walks the backing chain).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use emulator::disk::{ImageFormat, resolve_format};
use libfuzzer_sys::fuzz_target;

/// One scratch directory for the whole run: relative backing names resolve inside it.
fn image_path() -> &'static PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("scratch directory");
        let path = dir.path().join("image");
        (dir, path)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    let path = image_path();
    if std::fs::write(path, data).is_err() {
        return;
    }
    let _ = resolve_format(path, None);
    let _ = resolve_format(path, Some(ImageFormat::Qcow2));
});
