//! Kernel image files: an x86 bzImage (`/boot/vmlinuz-*`) is decompressed to the vmlinux ELF
//! inside it; a vmlinux is taken as it is. Sections are then available by name, notably
//! `.BTF` (types) and `.notes` (GNU build id, which VMCOREINFO's `BUILD-ID` also carries).
//!
//! The file comes from a guest disk and is hostile: every header field is bounds-checked and
//! decompression stops at [`MAX_VMLINUX_LEN`].

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::bytes::{le_u16, le_u32, le_u64, slice_at};
use crate::error::{Error, Result};
use crate::profile::btf::{Btf, BtfError};

/// Largest vmlinux accepted (decompressed); distribution kernels are 50–100 MiB.
pub const MAX_VMLINUX_LEN: usize = 512 << 20;
/// Largest section table read.
const MAX_SECTIONS: u64 = 1 << 16;
/// Dictionary memory the LZMA decoders may allocate, in KiB: no kernel needs more than its
/// own decompressed size, so the same cap applies.
const LZMA_MEM_LIMIT_KB: u32 = (MAX_VMLINUX_LEN >> 10) as u32;
/// LZ4 legacy frames (`lz4 -l`, the kernel's format) hold blocks of at most 8 MiB.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;
const REMEDY: &str = "pass the guest's /boot/vmlinuz-<release> or a vmlinux ELF; the file may be truncated";

/// Compression of a bzImage payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Xz,
    Zstd,
    Lz4,
    Lzma,
}

/// One ELF section header of the vmlinux.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    /// `sh_type` (1 PROGBITS, 7 NOTE, 8 NOBITS, …).
    pub kind: u32,
    pub addr: u64,
    pub offset: u64,
    pub size: u64,
    pub align: u64,
}

const SHT_NOBITS: u32 = 8;

/// A kernel image: the vmlinux ELF and its section table.
#[derive(Debug)]
pub struct KernelImage {
    path: PathBuf,
    compression: Option<Compression>,
    elf: Vec<u8>,
    sections: Vec<Section>,
}

fn bad(path: &Path, offset: u64, problem: impl Into<String>) -> Error {
    Error::Malformed {
        path: path.to_path_buf(),
        offset,
        problem: problem.into(),
        remedy: REMEDY,
    }
}

impl KernelImage {
    /// Reads a bzImage or vmlinux file.
    pub fn open(path: impl AsRef<Path>) -> Result<KernelImage> {
        let path = path.as_ref();
        let io = |action, source| Error::Io {
            path: path.to_path_buf(),
            action,
            source,
        };
        let file = std::fs::File::open(path).map_err(|e| io("open", e))?;
        let mut bytes = Vec::new();
        // One byte more than the cap tells "too large" from "exactly the cap".
        file.take(MAX_VMLINUX_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| io("read", e))?;
        if bytes.len() > MAX_VMLINUX_LEN {
            return Err(bad(path, 0, format!("file is larger than {MAX_VMLINUX_LEN} bytes")));
        }
        KernelImage::from_bytes(path, bytes)
    }

    /// Parses a bzImage or vmlinux held in memory; `path` is used in error messages.
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<KernelImage> {
        let path = path.into();
        let (compression, elf) = if bytes.starts_with(b"\x7fELF") {
            (None, bytes)
        } else if slice_at(&bytes, 0x202, 4) == Some(b"HdrS") {
            let (c, elf) = decompress_bzimage(&path, &bytes)?;
            (Some(c), elf)
        } else {
            return Err(Error::Unsupported {
                path,
                offset: 0,
                what: "file type (neither an x86 bzImage with a `HdrS` setup header nor an ELF vmlinux)".into(),
                remedy: REMEDY,
            });
        };
        let sections = parse_sections(&path, &elf)?;
        Ok(KernelImage {
            path,
            compression,
            elf,
            sections,
        })
    }

    /// File the image was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How the bzImage payload was compressed; `None` for a plain vmlinux.
    pub fn compression(&self) -> Option<Compression> {
        self.compression
    }

    /// The vmlinux ELF bytes.
    pub fn vmlinux(&self) -> &[u8] {
        &self.elf
    }

    /// Section headers in table order.
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// The first section called `name`.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// File contents of section `name` (`None` for absent and NOBITS sections).
    pub fn section_data(&self, name: &str) -> Option<&[u8]> {
        let s = self.section(name).filter(|s| s.kind != SHT_NOBITS)?;
        slice_at(&self.elf, s.offset, s.size)
    }

    /// GNU build id from `.notes` (the kernel's `BUILD-ID` in VMCOREINFO).
    pub fn build_id(&self) -> Option<&[u8]> {
        let notes = self.section_data(".notes")?;
        let mut off = 0u64;
        // Each note: namesz, descsz, type, then name and desc each padded to 4 bytes.
        while off + 12 <= notes.len() as u64 {
            let (namesz, descsz, kind) = (le_u32(notes, off)?, le_u32(notes, off + 4)?, le_u32(notes, off + 8)?);
            let name_at = off + 12;
            let desc_at = name_at + u64::from(namesz).next_multiple_of(4);
            if kind == 3 && slice_at(notes, name_at, u64::from(namesz)) == Some(b"GNU\0") {
                return slice_at(notes, desc_at, u64::from(descsz));
            }
            off = desc_at + u64::from(descsz).next_multiple_of(4);
        }
        None
    }

    /// Parses the `.BTF` section.
    pub fn btf(&self) -> std::result::Result<Btf, BtfError> {
        let data = self.section_data(".BTF").ok_or_else(|| BtfError::NotFound {
            origin: self.path.display().to_string(),
            what: "section (kernel built without CONFIG_DEBUG_INFO_BTF?)",
            name: ".BTF".into(),
        })?;
        Btf::parse(format!("{} section .BTF", self.path.display()), data.to_vec())
    }
}

/// Finds and decompresses the payload of a bzImage (boot protocol ≥ 2.08 for
/// `payload_offset`/`payload_length`).
fn decompress_bzimage(path: &Path, img: &[u8]) -> Result<(Compression, Vec<u8>)> {
    let version = le_u16(img, 0x206).ok_or_else(|| bad(path, 0x206, "file ends in the setup header"))?;
    if version < 0x208 {
        return Err(Error::Unsupported {
            path: path.to_path_buf(),
            offset: 0x206,
            what: format!(
                "boot protocol {}.{:02} (payload fields need 2.08)",
                version >> 8,
                version & 0xff
            ),
            remedy: "extract the vmlinux with the kernel's scripts/extract-vmlinux and pass that",
        });
    }
    let setup_sects = match img.get(0x1f1) {
        Some(0) => 4, // the boot protocol's historical meaning of 0
        Some(&n) => u64::from(n),
        None => return Err(bad(path, 0x1f1, "file ends in the setup header")),
    };
    let (Some(p_off), Some(p_len)) = (le_u32(img, 0x248), le_u32(img, 0x24c)) else {
        return Err(bad(path, 0x248, "file ends in the setup header"));
    };
    let start = (setup_sects + 1) * 512 + u64::from(p_off);
    let payload = slice_at(img, start, u64::from(p_len)).ok_or_else(|| {
        bad(
            path,
            0x248,
            format!("payload ({p_len} bytes at {start:#x}) lies beyond the file"),
        )
    })?;
    let too_big = || {
        bad(
            path,
            start,
            format!("payload decompresses to more than {MAX_VMLINUX_LEN} bytes"),
        )
    };
    let failed = |what: &str, e: &dyn std::fmt::Display| bad(path, start, format!("{what} payload is corrupt: {e}"));
    // Streams are read through `take` so that a hostile payload cannot exceed the cap.
    let read_capped = |what: &str, r: &mut dyn Read| -> Result<Vec<u8>> {
        let mut out = Vec::new();
        r.take(MAX_VMLINUX_LEN as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| failed(what, &e))?;
        if out.len() > MAX_VMLINUX_LEN {
            return Err(too_big());
        }
        Ok(out)
    };
    // The build appends the decompressed size as 4 bytes after the stream; every decoder
    // below stops at the end of its stream, so the trailer is ignored.
    if payload.starts_with(&[0x1f, 0x8b]) {
        let out = read_capped("gzip", &mut flate2::read::GzDecoder::new(payload))?;
        Ok((Compression::Gzip, out))
    } else if payload.starts_with(b"\xfd7zXZ\0") {
        let mut r = lzma_rust2::XzReader::new_mem_limit(payload, false, LZMA_MEM_LIMIT_KB);
        Ok((Compression::Xz, read_capped("xz", &mut r)?))
    } else if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let mut r = ruzstd::decoding::StreamingDecoder::new(payload).map_err(|e| failed("zstd", &e))?;
        Ok((Compression::Zstd, read_capped("zstd", &mut r)?))
    } else if payload.starts_with(&[0x5d, 0x00, 0x00]) {
        let mut r =
            lzma_rust2::LzmaReader::new_mem_limit(payload, LZMA_MEM_LIMIT_KB, None).map_err(|e| failed("lzma", &e))?;
        Ok((Compression::Lzma, read_capped("lzma", &mut r)?))
    } else if payload.starts_with(&LZ4_LEGACY_MAGIC.to_le_bytes()) {
        Ok((Compression::Lz4, lz4_legacy(path, start, payload)?))
    } else {
        let what = if payload.starts_with(b"BZh") {
            "bzip2-compressed payload".to_string()
        } else if payload.starts_with(b"\x89LZO") {
            "LZO-compressed payload".to_string()
        } else {
            format!(
                "payload compression (first bytes {:02x?})",
                payload.get(..6).unwrap_or(payload)
            )
        };
        Err(Error::Unsupported {
            path: path.to_path_buf(),
            offset: start,
            what,
            remedy: "extract the vmlinux with the kernel's scripts/extract-vmlinux and pass that",
        })
    }
}

/// The LZ4 legacy frame: magic, then (u32 compressed length, block) pairs; a repeated magic
/// starts a new frame. The kernel's 4-byte size trailer is what is left at the end.
fn lz4_legacy(path: &Path, start: u64, payload: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut block = vec![0u8; LZ4_LEGACY_BLOCK];
    let mut off = 4u64;
    while off + 4 < payload.len() as u64 {
        let Some(len) = le_u32(payload, off) else { break };
        off += 4;
        if len == LZ4_LEGACY_MAGIC {
            continue;
        }
        let src = slice_at(payload, off, u64::from(len)).ok_or_else(|| {
            bad(
                path,
                start + off,
                format!("lz4 block of {len} bytes runs past the payload"),
            )
        })?;
        let n = lz4_flex::block::decompress_into(src, &mut block)
            .map_err(|e| bad(path, start + off, format!("lz4 block is corrupt: {e}")))?;
        if out.len() + n > MAX_VMLINUX_LEN {
            return Err(bad(
                path,
                start,
                format!("payload decompresses to more than {MAX_VMLINUX_LEN} bytes"),
            ));
        }
        out.extend_from_slice(&block[..n]);
        off += u64::from(len);
    }
    Ok(out)
}

/// Section headers of a little-endian ELF64 file, names resolved through `e_shstrndx`.
fn parse_sections(path: &Path, elf: &[u8]) -> Result<Vec<Section>> {
    let need = |v: Option<u64>, off: u64| v.ok_or_else(|| bad(path, off, "file ends inside the ELF header"));
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err(Error::Unsupported {
            path: path.to_path_buf(),
            offset: 4,
            what: "ELF class/byte order (need 64-bit little-endian, x86-64)".into(),
            remedy: REMEDY,
        });
    }
    let shoff = need(le_u64(elf, 0x28), 0x28)?;
    let shentsize = need(le_u16(elf, 0x3a).map(u64::from), 0x3a)?;
    let mut shnum = need(le_u16(elf, 0x3c).map(u64::from), 0x3c)?;
    let mut shstrndx = need(le_u16(elf, 0x3e).map(u64::from), 0x3e)?;
    if shoff == 0 {
        return Ok(Vec::new());
    }
    if shentsize != 64 {
        return Err(bad(path, 0x3a, format!("section header size {shentsize} is not 64")));
    }
    // Extended numbering: counts that do not fit 16 bits live in section header 0. `shoff` is
    // the file's word: near u64::MAX, `shoff + 0x28` wraps.
    let header0 = |field: u64| shoff.checked_add(field);
    if shnum == 0 {
        shnum = need(header0(0x20).and_then(|at| le_u64(elf, at)), shoff)?;
    }
    if shstrndx == 0xffff {
        shstrndx = need(header0(0x28).and_then(|at| le_u32(elf, at)).map(u64::from), shoff)?;
    }
    if shnum > MAX_SECTIONS {
        return Err(bad(path, 0x3c, format!("{shnum} sections (more than {MAX_SECTIONS})")));
    }
    let table = slice_at(elf, shoff, shnum * 64).ok_or_else(|| {
        bad(
            path,
            shoff,
            format!("section table ({shnum} entries) lies beyond the file"),
        )
    })?;
    let hdr = |i: u64| -> Option<(u32, u32, u64, u64, u64, u64)> {
        let at = i * 64;
        Some((
            le_u32(table, at)?,
            le_u32(table, at + 4)?,
            le_u64(table, at + 0x10)?,
            le_u64(table, at + 0x18)?,
            le_u64(table, at + 0x20)?,
            le_u64(table, at + 0x30)?,
        ))
    };
    let strtab = hdr(shstrndx).and_then(|(_, _, _, off, size, _)| slice_at(elf, off, size));
    let mut out = Vec::with_capacity(shnum as usize);
    for i in 0..shnum {
        let at = shoff + i * 64;
        let (name_off, kind, addr, offset, size, align) =
            hdr(i).ok_or_else(|| bad(path, at, "section header is truncated"))?;
        if kind != SHT_NOBITS && slice_at(elf, offset, size).is_none() {
            return Err(bad(
                path,
                at,
                format!("section {i} ({size} bytes at {offset:#x}) lies beyond the file"),
            ));
        }
        let name = strtab
            .and_then(|t| t.get(name_off as usize..))
            .and_then(|t| t.get(..memchr::memchr(0, t)?))
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
        out.push(Section {
            name,
            kind,
            addr,
            offset,
            size,
            align,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64-byte ELF header (64-bit, little-endian) with the section-table fields given.
    fn elf_header(shoff: u64, shnum: u16, shstrndx: u16) -> Vec<u8> {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&shnum.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&shstrndx.to_le_bytes());
        elf
    }

    #[test]
    fn extended_section_numbering_at_the_end_of_the_address_space_is_an_error() {
        for (shnum, shstrndx) in [(0, 0), (1, 0xffff)] {
            let elf = elf_header(u64::MAX - 8, shnum, shstrndx);
            let err = KernelImage::from_bytes("vmlinux", elf).unwrap_err().to_string();
            assert!(
                err.contains("vmlinux") && err.contains(&format!("{:#x}", u64::MAX - 8)),
                "{err}"
            );
        }
    }
}
