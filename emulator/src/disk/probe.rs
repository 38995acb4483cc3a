//! Identifies the filesystem inside a partition from its superblock, the way blkid does, so
//! that fstab's `UUID=`/`LABEL=` can be resolved and the root found without mounting blindly.

use std::io::{Read, Seek, SeekFrom};

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Filesystem {
    /// The type name Linux's mount(2) takes: ext2, ext3, ext4, xfs, btrfs, swap.
    pub fstype: String,
    pub uuid: Option<String>,
    pub label: Option<String>,
}

const EXT_SUPERBLOCK: u64 = 1024;
const EXT_MAGIC: u16 = 0xEF53;
const EXT_COMPAT_HAS_JOURNAL: u32 = 0x4;
/// Incompat features ext3 lacks; any of them means the filesystem needs the ext4 driver.
const EXT4_INCOMPAT: u32 = 0x40 /* extents */ | 0x80 /* 64bit */ | 0x200 /* flex_bg */ | 0x10000 /* inline data */;
const EXT4_RO_COMPAT: u32 = 0x8 /* huge_file */ | 0x10 /* gdt_csum */ | 0x20 /* dir_nlink */ | 0x40 /* extra_isize */ | 0x400 /* metadata_csum */;

/// Probes `len` bytes starting at `start` of `disk`. Returns `Ok(None)` for content it does
/// not recognise (unformatted space, LVM, LUKS, ...); I/O errors are errors.
pub fn probe_filesystem<R: Read + Seek>(disk: &mut R, start: u64, len: u64) -> std::io::Result<Option<Filesystem>> {
    let mut head = vec![0u8; 4096.min(len) as usize];
    disk.seek(SeekFrom::Start(start))?;
    disk.read_exact(&mut head)?;

    if head.len() >= 4096 {
        if let Some(fs) = ext(&head[EXT_SUPERBLOCK as usize..EXT_SUPERBLOCK as usize + 1024]) {
            return Ok(Some(fs));
        }
        if &head[4086..4096] == b"SWAPSPACE2" {
            return Ok(Some(Filesystem {
                fstype: "swap".into(),
                uuid: Some(uuid_string(&head[1036..1052])),
                label: c_string(&head[1052..1068]),
            }));
        }
    }
    if head.len() >= 512 && &head[0..4] == b"XFSB" {
        return Ok(Some(Filesystem {
            fstype: "xfs".into(),
            uuid: Some(uuid_string(&head[32..48])),
            label: c_string(&head[108..120]),
        }));
    }
    const BTRFS_SUPER: u64 = 0x10000;
    if len >= BTRFS_SUPER + 4096 {
        let mut sb = vec![0u8; 4096];
        disk.seek(SeekFrom::Start(start + BTRFS_SUPER))?;
        disk.read_exact(&mut sb)?;
        if &sb[64..72] == b"_BHRfS_M" {
            return Ok(Some(Filesystem {
                fstype: "btrfs".into(),
                uuid: Some(uuid_string(&sb[32..48])),
                label: c_string(&sb[299..299 + 256]),
            }));
        }
    }
    Ok(None)
}

fn ext(sb: &[u8]) -> Option<Filesystem> {
    let le32 = |at: usize| u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]]);
    if u16::from_le_bytes([sb[56], sb[57]]) != EXT_MAGIC {
        return None;
    }
    let (compat, incompat, ro_compat) = (le32(92), le32(96), le32(100));
    let fstype = if incompat & EXT4_INCOMPAT != 0 || ro_compat & EXT4_RO_COMPAT != 0 {
        "ext4"
    } else if compat & EXT_COMPAT_HAS_JOURNAL != 0 {
        "ext3"
    } else {
        "ext2"
    };
    Some(Filesystem {
        fstype: fstype.into(),
        uuid: Some(uuid_string(&sb[104..120])),
        label: c_string(&sb[120..136]),
    })
}

/// Superblocks store UUIDs as 16 raw bytes; callers pass in-bounds slices of that length.
fn uuid_string(b: &[u8]) -> String {
    let bytes: [u8; 16] = b.try_into().unwrap_or_default();
    uuid::Uuid::from_bytes(bytes).hyphenated().to_string()
}

/// Labels are NUL-padded byte strings; guests may put anything there, so invalid UTF-8 is
/// replaced rather than trusted.
fn c_string(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    (end > 0).then(|| String::from_utf8_lossy(&b[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn ext_image(incompat: u32, compat: u32) -> Vec<u8> {
        let mut d = vec![0u8; 8192];
        let sb = 1024;
        d[sb + 56..sb + 58].copy_from_slice(&EXT_MAGIC.to_le_bytes());
        d[sb + 92..sb + 96].copy_from_slice(&compat.to_le_bytes());
        d[sb + 96..sb + 100].copy_from_slice(&incompat.to_le_bytes());
        d[sb + 104..sb + 120].copy_from_slice(&[
            0x5d, 0x0c, 0x35, 0xa5, 0x70, 0xd4, 0x4a, 0x4e, 0x9a, 0x55, 0x1f, 0x1f, 0x3c, 0x0a, 0, 1,
        ]);
        d[sb + 120..sb + 124].copy_from_slice(b"root");
        d
    }

    #[test]
    fn ext_generations_are_told_apart() {
        let probe = |d: Vec<u8>| probe_filesystem(&mut Cursor::new(d), 0, 8192).unwrap().unwrap();
        let fs = probe(ext_image(0x40, EXT_COMPAT_HAS_JOURNAL));
        assert_eq!(fs.fstype, "ext4");
        assert_eq!(fs.uuid.as_deref(), Some("5d0c35a5-70d4-4a4e-9a55-1f1f3c0a0001"));
        assert_eq!(fs.label.as_deref(), Some("root"));
        assert_eq!(probe(ext_image(0, EXT_COMPAT_HAS_JOURNAL)).fstype, "ext3");
        assert_eq!(probe(ext_image(0, 0)).fstype, "ext2");
    }

    #[test]
    fn unknown_and_tiny_content_is_not_a_filesystem() {
        assert_eq!(
            probe_filesystem(&mut Cursor::new(vec![0u8; 8192]), 0, 8192).unwrap(),
            None
        );
        assert_eq!(
            probe_filesystem(&mut Cursor::new(vec![0u8; 100]), 0, 100).unwrap(),
            None
        );
    }
}
