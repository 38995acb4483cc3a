//! The domain configuration a save image embeds (libxl JSON): `DomainConfig::from_json`, then
//! the disk list mapped to openable disks by `disks_from_config`.
#![no_main]

use emulator::disk::disks_from_config;
use introspect::DomainConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    match disks_from_config(&DomainConfig::from_json(raw)) {
        Ok(disks) => assert!(!disks.usable.is_empty()),
        Err(e) => drop(e.to_string()),
    }
});
