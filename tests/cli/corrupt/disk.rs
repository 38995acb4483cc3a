//! The real domU disk, corrupted where dormouse's own parsers read it before the kernel mounts
//! anything: the MBR's entries (an extended partition pointing back at the MBR, entries past
//! the end), a forged GPT with valid checksums and hostile counts, the ext4 superblock fields
//! the probe reads, and truncations. `disk` and `check` must succeed or name the disk and where.

use std::ffi::OsString;
use std::path::Path;

use dormouse_tests::{decompressed, xen_fixtures};

use super::{Case, ones, sweep};

const SECTOR: u64 = 512;
const MBR_ENTRIES: u64 = 446;

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// `disk --json` and `check --disk --json`, on every case.
fn disk_commands(_: usize, image: &Path) -> Vec<Vec<OsString>> {
    let db = image.with_extension("check.sqlite");
    vec![
        vec!["disk".into(), image.into(), "--json".into()],
        vec![
            "check".into(),
            "--disk".into(),
            image.into(),
            "--json".into(),
            "--db".into(),
            db.into(),
        ],
    ]
}

/// A GPT header at LBA 1 and its table at LBA 2 with `count` entries of `entry_size` bytes,
/// both checksums valid, so the parser's own bounds are what stops it.
fn forged_gpt(what: &str, count: u32, entry_size: u32, table_lba: u64) -> Case {
    let table = vec![0u8; 128 * 4];
    let mut header = vec![0u8; 92];
    header[..8].copy_from_slice(b"EFI PART");
    header[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    header[12..16].copy_from_slice(&92u32.to_le_bytes());
    header[24..32].copy_from_slice(&1u64.to_le_bytes());
    header[32..40].copy_from_slice(&(u64::MAX >> 24).to_le_bytes());
    header[40..48].copy_from_slice(&34u64.to_le_bytes());
    header[48..56].copy_from_slice(&(u64::MAX >> 24).to_le_bytes());
    header[72..80].copy_from_slice(&table_lba.to_le_bytes());
    header[80..84].copy_from_slice(&count.to_le_bytes());
    header[84..88].copy_from_slice(&entry_size.to_le_bytes());
    header[88..92].copy_from_slice(&crc32fast::hash(&table).to_le_bytes());
    let crc = crc32fast::hash(&header);
    header[16..20].copy_from_slice(&crc.to_le_bytes());
    // A protective MBR entry in slot 0.
    let mut protective = vec![0u8; 16];
    protective[4] = 0xee;
    protective[8..12].copy_from_slice(&1u32.to_le_bytes());
    protective[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    Case {
        what: format!("forged GPT: {what}"),
        writes: vec![(MBR_ENTRIES, protective), (SECTOR, header), (2 * SECTOR, table)],
    }
}

fn disk_cases(mbr: &[u8]) -> (Vec<Case>, Vec<u64>) {
    let mut cases = vec![Case::set("MBR signature cleared", 510, vec![0, 0])];
    let mut truncations = vec![0, 256, 511, 512];
    for slot in 0..4u64 {
        let entry = MBR_ENTRIES + 16 * slot;
        let tag = format!("MBR entry {slot}");
        cases.push(Case::set(format!("{tag}: start = u32::MAX"), entry + 8, ones(4)));
        cases.push(Case::set(format!("{tag}: size = u32::MAX"), entry + 12, ones(4)));
        cases.push(Case::set(format!("{tag}: size = 0"), entry + 12, vec![0; 4]));
        // An extended partition starting at sector 0: its EBR is the MBR itself, a loop.
        let mut extended = vec![0u8; 16];
        extended[4] = 0x05;
        extended[12..16].copy_from_slice(&1u32.to_le_bytes());
        cases.push(Case::set(
            format!("{tag}: extended partition at sector 0"),
            entry,
            extended,
        ));
        cases.push(Case::set(
            format!("{tag}: type 0xee (GPT) with no GPT"),
            entry + 4,
            vec![0xee],
        ));
        let start = u64::from(le32(mbr, entry as usize + 8));
        let size = u64::from(le32(mbr, entry as usize + 12));
        if start == 0 || size == 0 {
            continue;
        }
        // The ext4 superblock sits 1024 bytes into the partition.
        let sb = start * SECTOR + 1024;
        for (field, off, width) in [
            ("s_inodes_count", 0x0, 4),
            ("s_blocks_count_lo", 0x4, 4),
            ("s_log_block_size", 0x18, 4),
            ("s_blocks_per_group", 0x20, 4),
            ("s_magic", 0x38, 2),
            ("s_rev_level", 0x4c, 4),
            ("s_inode_size", 0x58, 2),
            ("s_feature_incompat", 0x60, 4),
            ("s_uuid", 0x68, 16),
            ("s_volume_name", 0x78, 16),
        ] {
            cases.push(Case::set(
                format!("{tag}: ext4 {field} all ones"),
                sb + off,
                ones(width),
            ));
        }
        truncations.extend([start * SECTOR, sb + 0x38, sb + 1024, start * SECTOR + size * SECTOR / 2]);
    }
    for (what, count, size, lba) in [
        ("u32::MAX entries", u32::MAX, 128, 2),
        ("entries of u32::MAX bytes", 4, u32::MAX, 2),
        ("entries of 0 bytes", 4, 0, 2),
        ("table beyond the disk", 4, 128, u64::MAX >> 9),
    ] {
        cases.push(forged_gpt(what, count, size, lba));
    }
    (cases, truncations)
}

#[test]
fn corrupted_guest_disks_end_in_errors_that_say_where() {
    let Some(fx) = xen_fixtures("corrupted_guest_disks_end_in_errors_that_say_where") else {
        return;
    };
    let disk = decompressed(&fx, "xen-pv-a/domU-A-disk.img");
    let mut mbr = vec![0u8; 512];
    std::io::Read::read_exact(&mut std::fs::File::open(&disk).unwrap(), &mut mbr).unwrap();
    let (cases, truncations) = disk_cases(&mbr);
    sweep("xen-pv-a/domU-A-disk.img", &disk, cases, truncations, &disk_commands);
}
