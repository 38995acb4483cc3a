//! MBR and GPT partition tables of a guest disk.
//!
//! The table is guest data: every offset, count and size is checked against the disk's length
//! and against fixed bounds before use, and the walk of chained MBR extended partitions is
//! bounded, so a crafted table can only produce an error.

use std::io::{Read, Seek, SeekFrom};

use serde::Serialize;

/// Linux and every hypervisor we care about present 512-byte logical sectors for image files.
pub const SECTOR: u64 = 512;
/// Linux's own limit on GPT entries it scans is far lower; this only bounds hostile input.
const GPT_MAX_ENTRIES: u32 = 1024;
const GPT_MAX_ENTRY_SIZE: u32 = 4096;
/// Linux stops following EBR chains long before this; a loop in the chain must end somewhere.
const MBR_MAX_LOGICAL: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("reading {what} at byte offset {offset}: {source}")]
    Io {
        what: &'static str,
        offset: u64,
        source: std::io::Error,
    },
    #[error("invalid {table} partition table at byte offset {offset}: {reason}")]
    Invalid {
        table: &'static str,
        offset: u64,
        reason: String,
    },
}

type Result<T> = std::result::Result<T, PartitionError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    Mbr,
    Gpt,
    /// No partition table: the whole disk is one filesystem (common for Xen PV `xvda1` disks).
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// Linux's numbering: MBR primaries 1–4, logicals from 5; GPT entries by index + 1;
    /// 0 for an unpartitioned disk.
    pub number: u32,
    pub start: u64,
    pub size: u64,
    /// MBR system id (e.g. `0x83`) or GPT partition type GUID.
    pub type_id: String,
    /// GPT unique partition GUID (what `PARTUUID=` names); for MBR, `<disk signature>-<number>`.
    pub part_uuid: Option<String>,
    /// GPT partition name (what `PARTLABEL=` names).
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionTable {
    pub kind: TableKind,
    pub partitions: Vec<Partition>,
}

/// Reads the partition table of a disk of `disk_len` bytes.
///
/// A disk without an MBR signature is reported as [`TableKind::None`] with one partition
/// spanning the whole disk, so callers can treat bare-filesystem disks like partitions.
pub fn read_partition_table<R: Read + Seek>(disk: &mut R, disk_len: u64) -> Result<PartitionTable> {
    let mbr = read_at::<_, 512>(disk, 0, "the master boot record")?;
    if mbr[510..512] != [0x55, 0xAA] {
        return Ok(whole_disk(disk_len));
    }
    let entries = mbr_entries(&mbr);
    if entries.iter().any(|e| e.system_id == 0xEE) {
        return read_gpt(disk, disk_len);
    }
    // FAT and ext boot sectors can carry 0x55AA too; a table whose entries are all empty or
    // nonsensical is not a partition table.
    let table = read_mbr(disk, disk_len, &mbr, &entries)?;
    if table.partitions.is_empty() {
        return Ok(whole_disk(disk_len));
    }
    Ok(table)
}

fn whole_disk(disk_len: u64) -> PartitionTable {
    PartitionTable {
        kind: TableKind::None,
        partitions: vec![Partition {
            number: 0,
            start: 0,
            size: disk_len,
            type_id: "whole-disk".into(),
            part_uuid: None,
            name: None,
        }],
    }
}

#[derive(Debug, Clone, Copy)]
struct MbrEntry {
    system_id: u8,
    start_lba: u32,
    sectors: u32,
}

fn mbr_entries(sector: &[u8; 512]) -> [MbrEntry; 4] {
    std::array::from_fn(|i| {
        let e = &sector[446 + 16 * i..446 + 16 * (i + 1)];
        MbrEntry {
            system_id: e[4],
            start_lba: u32::from_le_bytes([e[8], e[9], e[10], e[11]]),
            sectors: u32::from_le_bytes([e[12], e[13], e[14], e[15]]),
        }
    })
}

fn is_extended(system_id: u8) -> bool {
    matches!(system_id, 0x05 | 0x0F | 0x85)
}

fn read_mbr<R: Read + Seek>(
    disk: &mut R,
    disk_len: u64,
    mbr: &[u8; 512],
    entries: &[MbrEntry; 4],
) -> Result<PartitionTable> {
    let signature = u32::from_le_bytes([mbr[440], mbr[441], mbr[442], mbr[443]]);
    let part_uuid = |number: u32| Some(format!("{signature:08x}-{number:02x}"));
    let mut partitions = Vec::new();
    let mut extended = None;
    for (i, e) in entries.iter().enumerate() {
        let number = i as u32 + 1;
        if e.system_id == 0 || e.sectors == 0 {
            continue;
        }
        let (start, size) = checked_extent(
            "MBR",
            446 + 16 * i as u64,
            e.start_lba as u64,
            e.sectors as u64,
            disk_len,
        )?;
        if is_extended(e.system_id) {
            extended = Some(start);
            continue;
        }
        partitions.push(Partition {
            number,
            start,
            size,
            type_id: format!("0x{:02x}", e.system_id),
            part_uuid: part_uuid(number),
            name: None,
        });
    }
    if let Some(ext_start) = extended {
        // Logical partitions: each EBR holds one partition (relative to that EBR) and a link
        // to the next EBR (relative to the start of the extended partition).
        let mut ebr_offset = ext_start;
        let mut number = 5;
        for _ in 0..MBR_MAX_LOGICAL {
            let ebr = read_at::<_, 512>(disk, ebr_offset, "an extended boot record")?;
            if ebr[510..512] != [0x55, 0xAA] {
                return Err(invalid(
                    "MBR",
                    ebr_offset,
                    "extended boot record lacks the 0x55AA signature",
                ));
            }
            let [this, next, ..] = mbr_entries(&ebr);
            if this.system_id != 0 && this.sectors != 0 {
                let lba = ebr_offset / SECTOR + this.start_lba as u64;
                let (start, size) = checked_extent("MBR", ebr_offset + 446, lba, this.sectors as u64, disk_len)?;
                partitions.push(Partition {
                    number,
                    start,
                    size,
                    type_id: format!("0x{:02x}", this.system_id),
                    part_uuid: part_uuid(number),
                    name: None,
                });
                number += 1;
            }
            if !is_extended(next.system_id) || next.start_lba == 0 {
                return Ok(PartitionTable {
                    kind: TableKind::Mbr,
                    partitions,
                });
            }
            let (next_offset, _) = checked_extent(
                "MBR",
                ebr_offset + 462,
                ext_start / SECTOR + next.start_lba as u64,
                1,
                disk_len,
            )?;
            ebr_offset = next_offset;
        }
        return Err(invalid(
            "MBR",
            ebr_offset,
            &format!("more than {MBR_MAX_LOGICAL} logical partitions (a loop in the EBR chain?)"),
        ));
    }
    Ok(PartitionTable {
        kind: TableKind::Mbr,
        partitions,
    })
}

fn read_gpt<R: Read + Seek>(disk: &mut R, disk_len: u64) -> Result<PartitionTable> {
    let header_offset = SECTOR;
    let header = read_at::<_, 512>(disk, header_offset, "the GPT header")?;
    if &header[0..8] != b"EFI PART" {
        return Err(invalid(
            "GPT",
            header_offset,
            "protective MBR present but no \"EFI PART\" header at LBA 1",
        ));
    }
    let header_size = le32(&header, 12);
    if !(92..=512).contains(&header_size) {
        return Err(invalid(
            "GPT",
            header_offset + 12,
            &format!("header size {header_size} out of range 92..=512"),
        ));
    }
    let stored_crc = le32(&header, 16);
    let mut crc_input = header[..header_size as usize].to_vec();
    crc_input[16..20].fill(0);
    if crc32fast::hash(&crc_input) != stored_crc {
        return Err(invalid("GPT", header_offset + 16, "header CRC32 mismatch"));
    }
    let entries_lba = le64(&header, 72);
    let count = le32(&header, 80);
    let entry_size = le32(&header, 84);
    let entries_crc = le32(&header, 88);
    if count > GPT_MAX_ENTRIES || !(128..=GPT_MAX_ENTRY_SIZE).contains(&entry_size) || entry_size % 8 != 0 {
        return Err(invalid(
            "GPT",
            header_offset + 80,
            &format!("{count} entries of {entry_size} bytes is outside what any partitioner writes"),
        ));
    }
    let table_len = count as u64 * entry_size as u64;
    let (table_offset, _) = checked_extent(
        "GPT",
        header_offset + 72,
        entries_lba,
        table_len.div_ceil(SECTOR),
        disk_len,
    )?;
    let mut table = vec![0u8; table_len as usize];
    seek_read(disk, table_offset, &mut table, "the GPT partition entries")?;
    if crc32fast::hash(&table) != entries_crc {
        return Err(invalid("GPT", table_offset, "partition entry array CRC32 mismatch"));
    }
    let mut partitions = Vec::new();
    for (i, entry) in table.chunks_exact(entry_size as usize).enumerate() {
        let type_guid = &entry[0..16];
        if type_guid.iter().all(|b| *b == 0) {
            continue;
        }
        let first = le64(entry, 32);
        let last = le64(entry, 40);
        let entry_offset = table_offset + i as u64 * entry_size as u64;
        if last < first {
            return Err(invalid(
                "GPT",
                entry_offset + 32,
                &format!("partition ends (LBA {last}) before it starts (LBA {first})"),
            ));
        }
        let (start, size) = checked_extent("GPT", entry_offset + 32, first, last - first + 1, disk_len)?;
        let name_units: Vec<u16> = entry[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|u| *u != 0)
            .collect();
        partitions.push(Partition {
            number: i as u32 + 1,
            start,
            size,
            type_id: guid_string(type_guid),
            part_uuid: Some(guid_string(&entry[16..32])),
            name: Some(String::from_utf16_lossy(&name_units)),
        });
    }
    Ok(PartitionTable {
        kind: TableKind::Gpt,
        partitions,
    })
}

/// GUIDs are stored mixed-endian: the first three fields little-endian, the rest as bytes.
fn guid_string(b: &[u8]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

/// Converts a sector extent to bytes, refusing overflow and extents past the end of the disk.
fn checked_extent(table: &'static str, at: u64, lba: u64, sectors: u64, disk_len: u64) -> Result<(u64, u64)> {
    let start = lba.checked_mul(SECTOR);
    let size = sectors.checked_mul(SECTOR);
    match (start, size) {
        (Some(start), Some(size)) if start.checked_add(size).is_some_and(|end| end <= disk_len) && lba > 0 => {
            Ok((start, size))
        }
        _ => Err(invalid(
            table,
            at,
            &format!(
                "extent of {sectors} sectors at LBA {lba} does not fit the disk's {} sectors",
                disk_len / SECTOR
            ),
        )),
    }
}

fn invalid(table: &'static str, offset: u64, reason: &str) -> PartitionError {
    PartitionError::Invalid {
        table,
        offset,
        reason: reason.to_owned(),
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

fn read_at<R: Read + Seek, const N: usize>(disk: &mut R, offset: u64, what: &'static str) -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    seek_read(disk, offset, &mut buf, what)?;
    Ok(buf)
}

fn seek_read<R: Read + Seek>(disk: &mut R, offset: u64, buf: &mut [u8], what: &'static str) -> Result<()> {
    disk.seek(SeekFrom::Start(offset))
        .and_then(|_| disk.read_exact(buf))
        .map_err(|source| PartitionError::Io { what, offset, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn disk_with_mbr(entries: &[(u8, u32, u32)], len: usize) -> Vec<u8> {
        let mut d = vec![0u8; len];
        d[440..444].copy_from_slice(&0x1234_abcdu32.to_le_bytes());
        for (i, (id, start, count)) in entries.iter().enumerate() {
            let e = 446 + 16 * i;
            d[e + 4] = *id;
            d[e + 8..e + 12].copy_from_slice(&start.to_le_bytes());
            d[e + 12..e + 16].copy_from_slice(&count.to_le_bytes());
        }
        d[510] = 0x55;
        d[511] = 0xAA;
        d
    }

    #[test]
    fn unpartitioned_disk_is_one_whole_disk_partition() {
        let t = read_partition_table(&mut Cursor::new(vec![0u8; 4096]), 4096).unwrap();
        assert_eq!(t.kind, TableKind::None);
        assert_eq!(t.partitions[0].size, 4096);
    }

    #[test]
    fn mbr_primaries_with_linux_numbering_and_partuuid() {
        let d = disk_with_mbr(&[(0x83, 2048, 100), (0, 0, 0), (0x82, 4096, 8)], 1 << 22);
        let t = read_partition_table(&mut Cursor::new(d), 1 << 22).unwrap();
        assert_eq!(t.kind, TableKind::Mbr);
        let numbers: Vec<_> = t.partitions.iter().map(|p| (p.number, p.start, p.size)).collect();
        assert_eq!(numbers, vec![(1, 2048 * 512, 100 * 512), (3, 4096 * 512, 8 * 512)]);
        assert_eq!(t.partitions[0].part_uuid.as_deref(), Some("1234abcd-01"));
    }

    #[test]
    fn mbr_partition_past_end_of_disk_is_an_error_naming_the_entry() {
        let d = disk_with_mbr(&[(0x83, 2048, u32::MAX)], 1 << 20);
        let err = read_partition_table(&mut Cursor::new(d), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("offset 446"), "{err}");
    }

    /// Writes an EBR at `lba` with one logical partition and a link (relative to the
    /// extended partition at LBA 8) to the next EBR; a link of 0 ends the chain.
    fn put_ebr(d: &mut [u8], lba: usize, link: u32) {
        let ebr = lba * 512;
        d[ebr + 446 + 4] = 0x83;
        d[ebr + 446 + 8..ebr + 446 + 12].copy_from_slice(&1u32.to_le_bytes());
        d[ebr + 446 + 12..ebr + 446 + 16].copy_from_slice(&2u32.to_le_bytes());
        d[ebr + 462 + 4] = 0x05;
        d[ebr + 462 + 8..ebr + 462 + 12].copy_from_slice(&link.to_le_bytes());
        d[ebr + 510] = 0x55;
        d[ebr + 511] = 0xAA;
    }

    #[test]
    fn logical_partitions_are_numbered_from_five() {
        let mut d = disk_with_mbr(&[(0x05, 8, 64)], 1 << 16);
        put_ebr(&mut d, 8, 8);
        put_ebr(&mut d, 16, 0);
        let t = read_partition_table(&mut Cursor::new(d), 1 << 16).unwrap();
        let got: Vec<_> = t.partitions.iter().map(|p| (p.number, p.start / 512)).collect();
        assert_eq!(got, vec![(5, 9), (6, 17)]);
    }

    #[test]
    fn looping_ebr_chain_is_bounded() {
        // The second EBR links to itself.
        let mut d = disk_with_mbr(&[(0x05, 8, 64)], 1 << 16);
        put_ebr(&mut d, 8, 8);
        put_ebr(&mut d, 16, 8);
        let err = read_partition_table(&mut Cursor::new(d), 1 << 16)
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than 128 logical partitions"), "{err}");
    }

    #[test]
    fn gpt_header_with_bad_crc_is_refused() {
        let mut d = disk_with_mbr(&[(0xEE, 1, 100)], 1 << 20);
        d[512..520].copy_from_slice(b"EFI PART");
        d[512 + 12..512 + 16].copy_from_slice(&92u32.to_le_bytes());
        let err = read_partition_table(&mut Cursor::new(d), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("CRC32"), "{err}");
    }
}
