//! Where the structure of a real image is, found independently of dormouse's own parsers (so a
//! bug there does not hide the places it gets wrong): the record headers of an `xl save`
//! stream, the headers, segments and notes of an ELF core, and the file offset of each guest
//! page in a save stream.

use std::collections::HashMap;

const XL_HEADER_LEN: usize = 48;
const PAGE_SIZE: u64 = 4096;
const PAGE_DATA: u32 = 1;

/// One stream record: the file offset of its 8-byte header, its type and body length.
#[derive(Debug, Clone)]
pub struct Record {
    pub layer: &'static str,
    pub offset: u64,
    pub rtype: u32,
    pub length: u32,
}

#[derive(Debug, Default)]
pub struct SaveLayout {
    pub records: Vec<Record>,
    /// Guest pfn -> file offset of its page.
    pub pages: HashMap<u64, u64>,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}

fn padded(len: u32) -> usize {
    (len as usize).div_ceil(8) * 8
}

/// Walks an `xl save` file: xl header, libxl stream v2 with the libxc stream inline
/// (`docs/specs/libxl-migration-stream.pandoc` and `migration-stream.pandoc` in Xen).
pub fn walk_save(b: &[u8]) -> SaveLayout {
    assert!(b.starts_with(b"Xen saved domain, xl format\n"), "not an xl save file");
    let optional_len = le32(b, 44) as usize;
    let mut at = XL_HEADER_LEN + optional_len;
    assert_eq!(&b[at..at + 8], b"LibxlFmt", "libxl stream header at {at:#x}");
    at += 16;
    let mut layout = SaveLayout::default();
    loop {
        let (rtype, length) = (le32(b, at), le32(b, at + 4));
        layout.records.push(Record {
            layer: "libxl",
            offset: at as u64,
            rtype,
            length,
        });
        at += 8 + padded(length);
        match rtype {
            0 => break,
            // LIBXC_CONTEXT: the libxc stream follows inline: image header (24 bytes), domain
            // header (16), then its records up to its END.
            1 => {
                at += 24 + 16;
                loop {
                    let (rtype, length) = (le32(b, at), le32(b, at + 4));
                    layout.records.push(Record {
                        layer: "libxc",
                        offset: at as u64,
                        rtype,
                        length,
                    });
                    if rtype == PAGE_DATA {
                        index_pages(b, at + 8, &mut layout.pages);
                    }
                    at += 8 + padded(length);
                    if rtype == 0 {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    layout
}

/// PAGE_DATA body: count, reserved, `count` pfn entries (type in bits 60-63), then the data of
/// each page whose type carries data.
fn index_pages(b: &[u8], body: usize, pages: &mut HashMap<u64, u64>) {
    let count = le32(b, body) as usize;
    let mut data = (body + 8 + count * 8) as u64;
    for i in 0..count {
        let entry = le64(b, body + 8 + i * 8);
        let kind = entry >> 60;
        // BROKEN, XALLOC and XTAB pages have no data.
        if matches!(kind, 0xd..=0xf) {
            continue;
        }
        pages.insert(entry & ((1 << 52) - 1), data);
        data += PAGE_SIZE;
    }
}

/// The fields of an ELF64 core worth corrupting, as (what, file offset, width in bytes).
#[derive(Debug, Default)]
pub struct ElfLayout {
    pub fields: Vec<(String, u64, usize)>,
    /// Offsets where a truncation cuts something: segment and section starts and ends.
    pub boundaries: Vec<u64>,
    /// Note descriptors: (name, file range).
    pub notes: Vec<(String, std::ops::Range<u64>)>,
}

pub fn walk_elf(b: &[u8]) -> ElfLayout {
    assert!(b.starts_with(b"\x7fELF\x02\x01"), "not a little-endian ELF64 file");
    let mut l = ElfLayout::default();
    for (what, at, width) in [
        ("e_phoff", 0x20, 8),
        ("e_shoff", 0x28, 8),
        ("e_phentsize", 0x36, 2),
        ("e_phnum", 0x38, 2),
        ("e_shentsize", 0x3a, 2),
        ("e_shnum", 0x3c, 2),
        ("e_shstrndx", 0x3e, 2),
    ] {
        l.fields.push((what.into(), at, width));
    }
    l.boundaries.extend([0x10, 0x40]);
    let (phoff, phnum) = (le64(b, 0x20) as usize, le16(b, 0x38) as usize);
    for i in 0..phnum {
        let ph = phoff + i * 56;
        for (what, at, width) in [
            ("p_offset", 8, 8),
            ("p_paddr", 24, 8),
            ("p_filesz", 32, 8),
            ("p_memsz", 40, 8),
        ] {
            l.fields.push((format!("phdr[{i}].{what}"), (ph + at) as u64, width));
        }
        let (offset, size) = (le64(b, ph + 8), le64(b, ph + 32));
        l.boundaries
            .extend([ph as u64, offset, offset + size / 2, offset + size]);
        if le32(b, ph) == 4 {
            walk_notes(b, offset as usize, size as usize, &mut l);
        }
    }
    let (shoff, shnum) = (le64(b, 0x28) as usize, le16(b, 0x3c) as usize);
    for i in 0..shnum {
        let sh = shoff + i * 64;
        for (what, at, width) in [
            ("sh_name", 0, 4),
            ("sh_offset", 24, 8),
            ("sh_size", 32, 8),
            ("sh_entsize", 56, 8),
        ] {
            l.fields.push((format!("shdr[{i}].{what}"), (sh + at) as u64, width));
        }
        let (offset, size) = (le64(b, sh + 24), le64(b, sh + 32));
        l.boundaries
            .extend([sh as u64, offset, offset + size / 2, offset + size]);
        // SHT_NOTE
        if le32(b, sh + 4) == 7 {
            walk_notes(b, offset as usize, size as usize, &mut l);
        }
    }
    l.boundaries.retain(|&o| o > 0 && o < b.len() as u64);
    l.boundaries.sort_unstable();
    l.boundaries.dedup();
    l
}

fn walk_notes(b: &[u8], start: usize, size: usize, l: &mut ElfLayout) {
    let end = (start + size).min(b.len());
    let mut at = start;
    while at + 12 <= end {
        let (namesz, descsz) = (le32(b, at) as usize, le32(b, at + 4) as usize);
        let name_end = (at + 12 + namesz).min(end);
        let name = String::from_utf8_lossy(&b[at + 12..name_end])
            .trim_end_matches('\0')
            .to_owned();
        l.fields.push((format!("note {name} namesz"), at as u64, 4));
        l.fields.push((format!("note {name} descsz"), (at + 4) as u64, 4));
        let desc = at + 12 + namesz.div_ceil(4) * 4;
        let next = desc + descsz.div_ceil(4) * 4;
        if next > end {
            break;
        }
        l.notes.push((name, desc as u64..(desc + descsz) as u64));
        at = next;
    }
}
