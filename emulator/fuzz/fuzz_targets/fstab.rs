//! A guest's `/etc/fstab` as the guest tree plans its mounts from it: the parser, then the
//! source, device name, disk index and mount point of every entry. `/etc/os-release`, read on
//! the same path, takes the same text.
#![no_main]

use emulator::disk::OsRelease;
use emulator::guest_tree::{Source, device_name, disk_index, fstab_source, normalize_mount_point, parse_fstab};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (entries, _notes) = parse_fstab(&text);
    for entry in &entries {
        let _ = normalize_mount_point(&entry.mount_point);
        let _ = entry.has_option("nofail");
        if let Source::Device { disk, .. } = fstab_source(&entry.spec) {
            let _ = disk_index(&disk);
        }
        if let Some((disk, _)) = device_name(&entry.spec) {
            let _ = disk_index(&disk);
        }
    }
    let _ = OsRelease::parse(&text);
});
