//! The filesystem probe (ext2/3/4, swap, xfs, btrfs superblocks) with the input as one
//! partition.
#![no_main]

use std::io::Cursor;

use emulator::disk::probe_filesystem;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = probe_filesystem(&mut Cursor::new(data), 0, data.len() as u64);
});
