//! A guest disk's partition table (MBR with its EBR chain, or GPT) with the input as the whole
//! disk, then the filesystem probe of every partition found, as `GuestDisk::open` does.
#![no_main]

use std::io::Cursor;

use emulator::disk::{probe_filesystem, read_partition_table};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut disk = Cursor::new(data);
    if let Ok(table) = read_partition_table(&mut disk, data.len() as u64) {
        for p in &table.partitions {
            let _ = probe_filesystem(&mut disk, p.start, p.size);
        }
    }
});
