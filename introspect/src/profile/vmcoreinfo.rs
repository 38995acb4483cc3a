//! VMCOREINFO: the `KEY=value` text a Linux kernel built with CONFIG_CRASH_CORE (VMCORE_INFO
//! since 6.9) writes at boot for crash-dump tools. It names the kernel release, the KASLR offset,
//! `phys_base`, the page-table root and (since 6.0) the kallsyms tables, which is everything
//! needed to bootstrap symbol lookup from memory alone.
//!
//! The text comes from the image's own ELF note (QEMU, kdump) or, for images without one (Xen
//! save images and dump-cores), from guest RAM: the kernel keeps it in `vmcoreinfo_note` (an
//! ELF note page) and `vmcoreinfo_data` (a plain text page), both page-allocated.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Serialize;

use crate::source::memory::{PAGE_SIZE, PhysMemory};

/// The kernel's `VMCOREINFO_BYTES`: the text never exceeds one page.
pub const VMCOREINFO_MAX_BYTES: usize = PAGE_SIZE;
/// The kernel formats each line in a 0x50-byte buffer; allow generous slack for other writers
/// (QEMU, patched kernels) while still refusing binary junk that merely lacks newlines.
pub const VMCOREINFO_MAX_LINE: usize = 256;

/// ELF note header (namesz, descsz, type) plus the name "VMCOREINFO\0" padded to 12 bytes.
const NOTE_HEADER_LEN: usize = 24;
const NOTE_NAME: &[u8; 12] = b"VMCOREINFO\0\0";

/// Why VMCOREINFO text could not be parsed or found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VmcoreinfoError {
    #[error("VMCOREINFO text is {len} bytes, more than one page ({VMCOREINFO_MAX_BYTES}); not a kernel's VMCOREINFO")]
    TooLong { len: usize },
    #[error(
        "VMCOREINFO byte {offset}: {byte:#04x} is not printable ASCII; the text is corrupt or this is not VMCOREINFO"
    )]
    NotText { offset: usize, byte: u8 },
    #[error("VMCOREINFO line {line} is {len} bytes long (limit {VMCOREINFO_MAX_LINE}); the text is corrupt")]
    LineTooLong { line: usize, len: usize },
    #[error("VMCOREINFO does not start with OSRELEASE=; the text is corrupt or truncated")]
    NoOsrelease,
    #[error("VMCOREINFO line {line}: {key}={value}: {problem}; the text is corrupt")]
    BadValue {
        line: usize,
        key: String,
        value: String,
        problem: &'static str,
    },
    #[error("VMCOREINFO has no {key}; {remedy}")]
    MissingKey { key: &'static str, remedy: &'static str },
    #[error(
        "{}: no VMCOREINFO in the image's notes or in any of its {pages} present pages; the guest kernel \
         lacks CONFIG_CRASH_CORE/CONFIG_VMCORE_INFO or its pages were not saved: supply a System.map instead",
        path.display()
    )]
    NotFound { path: PathBuf, pages: u64 },
}

/// Parsed VMCOREINFO. Values keep the kernel's meaning: `SYMBOL`s are runtime (KASLR-shifted)
/// virtual addresses, `NUMBER`s are signed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VmcoreInfo {
    /// `OSRELEASE`, e.g. `6.1.0-56-amd64`.
    pub osrelease: String,
    /// `BUILD-ID` (hex); some stable kernels write garbage here, so only compare, never trust.
    pub build_id: Option<String>,
    pub page_size: Option<u64>,
    /// x86-64 `KERNELOFFSET`: the virtual KASLR slide, runtime `_text` − link-time `_text`.
    pub kernel_offset: Option<u64>,
    /// `CRASHTIME`, present only in dumps taken by a crash kernel.
    pub crash_time: Option<i64>,
    /// `SYMBOL(name)`.
    pub symbols: BTreeMap<String, u64>,
    /// `OFFSET(struct.field)`, keyed by `struct.field`.
    pub offsets: BTreeMap<String, u64>,
    /// `SIZE(name)`.
    pub sizes: BTreeMap<String, u64>,
    /// `LENGTH(name)`.
    pub lengths: BTreeMap<String, u64>,
    /// `NUMBER(name)`.
    pub numbers: BTreeMap<String, i64>,
    /// `CONFIG_X=y` lines, as `CONFIG_X`.
    pub configs: BTreeSet<String>,
    /// Lines of other keys, kept verbatim (new kernels add keys; they are not errors).
    pub other: BTreeMap<String, String>,
}

impl VmcoreInfo {
    /// Parses VMCOREINFO text (trailing NULs are ignored). Unknown keys land in
    /// [`Self::other`]; a malformed value of a known key is an error naming the line.
    pub fn parse(text: &str) -> Result<VmcoreInfo, VmcoreinfoError> {
        let text = text.trim_end_matches('\0');
        if text.len() > VMCOREINFO_MAX_BYTES {
            return Err(VmcoreinfoError::TooLong { len: text.len() });
        }
        if let Some((offset, &byte)) = text
            .as_bytes()
            .iter()
            .enumerate()
            .find(|&(_, &b)| !(b == b'\n' || (0x20..0x7f).contains(&b)))
        {
            return Err(VmcoreinfoError::NotText { offset, byte });
        }
        if !text.starts_with("OSRELEASE=") {
            return Err(VmcoreinfoError::NoOsrelease);
        }
        let mut info = VmcoreInfo::default();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            if line.len() > VMCOREINFO_MAX_LINE {
                return Err(VmcoreinfoError::LineTooLong {
                    line: line_no,
                    len: line.len(),
                });
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            info.add(line_no, key, value)?;
        }
        if info.osrelease.is_empty() {
            return Err(VmcoreinfoError::NoOsrelease);
        }
        Ok(info)
    }

    fn add(&mut self, line: usize, key: &str, value: &str) -> Result<(), VmcoreinfoError> {
        let bad = |problem| VmcoreinfoError::BadValue {
            line,
            key: key.to_owned(),
            value: value.to_owned(),
            problem,
        };
        let hex = |v: &str| u64::from_str_radix(v.trim_start_matches("0x"), 16).map_err(|_| bad("not a hex number"));
        let dec = |v: &str| v.parse::<u64>().map_err(|_| bad("not an unsigned decimal number"));
        let bracketed = |prefix: &str| key.strip_prefix(prefix).and_then(|k| k.strip_suffix(')'));
        match key {
            "OSRELEASE" => self.osrelease = value.to_owned(),
            "BUILD-ID" => self.build_id = Some(value.to_owned()),
            "PAGESIZE" => self.page_size = Some(dec(value)?),
            "KERNELOFFSET" => self.kernel_offset = Some(hex(value)?),
            "CRASHTIME" => self.crash_time = Some(value.parse().map_err(|_| bad("not a decimal number"))?),
            _ if key.starts_with("CONFIG_") => {
                if value == "y" {
                    self.configs.insert(key.to_owned());
                } else {
                    self.other.insert(key.to_owned(), value.to_owned());
                }
            }
            _ => {
                if let Some(name) = bracketed("SYMBOL(") {
                    self.symbols.insert(name.to_owned(), hex(value)?);
                } else if let Some(name) = bracketed("OFFSET(") {
                    self.offsets.insert(name.to_owned(), dec(value)?);
                } else if let Some(name) = bracketed("SIZE(") {
                    self.sizes.insert(name.to_owned(), dec(value)?);
                } else if let Some(name) = bracketed("LENGTH(") {
                    self.lengths.insert(name.to_owned(), dec(value)?);
                } else if let Some(name) = bracketed("NUMBER(") {
                    // NUMBER is `%ld`, except NUMBER(VMALLOC_START), which the kernel prints as `0x%lx`.
                    let n = match value.strip_prefix("0x") {
                        Some(h) => u64::from_str_radix(h, 16)
                            .map(|v| v as i64)
                            .map_err(|_| bad("not a hex number"))?,
                        None => value.parse::<i64>().map_err(|_| bad("not a decimal number"))?,
                    };
                    self.numbers.insert(name.to_owned(), n);
                } else {
                    self.other.insert(key.to_owned(), value.to_owned());
                }
            }
        }
        Ok(())
    }

    /// `SYMBOL(name)`: a runtime virtual address.
    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.symbols.get(name).copied()
    }

    /// `NUMBER(name)`.
    pub fn number(&self, name: &str) -> Option<i64> {
        self.numbers.get(name).copied()
    }

    /// `OFFSET(struct.field)`.
    pub fn offset(&self, struct_field: &str) -> Option<u64> {
        self.offsets.get(struct_field).copied()
    }

    /// `SIZE(name)`.
    pub fn size(&self, name: &str) -> Option<u64> {
        self.sizes.get(name).copied()
    }

    /// `LENGTH(name)`.
    pub fn length(&self, name: &str) -> Option<u64> {
        self.lengths.get(name).copied()
    }

    /// x86-64 `NUMBER(phys_base)` as the kernel's `unsigned long`: physical address of the
    /// kernel image minus its link-time offset, wrapping (it is "negative" when KASLR loads
    /// the kernel below its link-time virtual offset from `__START_KERNEL_map`).
    pub fn phys_base(&self) -> Option<u64> {
        self.number("phys_base").map(|n| n as u64)
    }

    /// `(major, minor)` of [`Self::osrelease`], when it starts with `N.M`.
    pub fn release_version(&self) -> Option<(u32, u32)> {
        release_version(&self.osrelease)
    }
}

/// `(major, minor)` of a kernel release string such as `6.1.0-56-amd64`.
pub fn release_version(osrelease: &str) -> Option<(u32, u32)> {
    let mut parts = osrelease.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Where VMCOREINFO text was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum VmcoreinfoSource {
    /// The image's own ELF note (QEMU `dump-guest-memory`, kdump).
    ImageNote,
    /// The kernel's `vmcoreinfo_note` in guest RAM; `paddr` is the note header.
    RamNote { paddr: u64 },
    /// The kernel's `vmcoreinfo_data` text page in guest RAM; `paddr` is the first byte.
    RamData { paddr: u64 },
}

/// VMCOREINFO text, parsed, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocatedVmcoreinfo {
    pub source: VmcoreinfoSource,
    pub text: String,
    pub info: VmcoreInfo,
}

/// VMCOREINFO of an image: its ELF note when it has one, otherwise scanned from RAM
/// ([`find_vmcoreinfo_in_ram`]).
pub fn load_vmcoreinfo(mem: &dyn PhysMemory) -> Result<LocatedVmcoreinfo, VmcoreinfoError> {
    if let Some(text) = mem.vmcoreinfo() {
        let info = VmcoreInfo::parse(text)?;
        let text = text.trim_end_matches('\0').to_owned();
        return Ok(LocatedVmcoreinfo {
            source: VmcoreinfoSource::ImageNote,
            text,
            info,
        });
    }
    find_vmcoreinfo_in_ram(mem)
}

/// Scans guest RAM for the kernel's VMCOREINFO. Both kernel copies are page-allocated, so
/// only page starts are examined first; the note is preferred because its `descsz` gives the
/// exact text length. Only if no page starts with either form (kernels before 4.13 kept the
/// note in .bss) is every page searched for a 4-byte aligned note.
pub fn find_vmcoreinfo_in_ram(mem: &dyn PhysMemory) -> Result<LocatedVmcoreinfo, VmcoreinfoError> {
    let mut data_form = None;
    for pfn in mem.present_pfns() {
        let Some(page) = mem.page(pfn) else { continue };
        let paddr = pfn << crate::PAGE_SHIFT;
        if page.get(12..NOTE_HEADER_LEN) == Some(NOTE_NAME.as_slice()) {
            if let Some(found) = note_at(mem, paddr) {
                return Ok(found);
            }
        } else if data_form.is_none() && page.starts_with(b"OSRELEASE=") {
            data_form = data_at(page, paddr);
        }
    }
    if let Some(found) = data_form {
        return Ok(found);
    }
    let name = memchr::memmem::Finder::new(b"VMCOREINFO\0");
    for pfn in mem.present_pfns() {
        let Some(page) = mem.page(pfn) else { continue };
        let paddr = pfn << crate::PAGE_SHIFT;
        for hit in name.find_iter(page) {
            if hit >= 12 && hit % 4 == 0 {
                if let Some(found) = note_at(mem, paddr + hit as u64 - 12) {
                    return Ok(found);
                }
            }
        }
    }
    Err(VmcoreinfoError::NotFound {
        path: mem.path().to_path_buf(),
        pages: mem.page_count(),
    })
}

/// Validates a VMCOREINFO ELF note whose header starts at `paddr`.
fn note_at(mem: &dyn PhysMemory, paddr: u64) -> Option<LocatedVmcoreinfo> {
    let mut header = [0u8; NOTE_HEADER_LEN];
    mem.read_phys(paddr, &mut header).ok()?;
    let word = |i: usize| {
        header
            .get(i..i + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    let (namesz, descsz, ntype) = (word(0)?, word(4)?, word(8)?);
    let len = usize::try_from(descsz).ok()?;
    if namesz != 11 || ntype != 0 || len > VMCOREINFO_MAX_BYTES || header[12..] != NOTE_NAME[..] {
        return None;
    }
    let mut text = vec![0u8; len];
    mem.read_phys(paddr + NOTE_HEADER_LEN as u64, &mut text).ok()?;
    let text = String::from_utf8(text).ok()?;
    let info = VmcoreInfo::parse(&text).ok()?;
    Some(LocatedVmcoreinfo {
        source: VmcoreinfoSource::RamNote { paddr },
        text: text.trim_end_matches('\0').to_owned(),
        info,
    })
}

/// Validates a `vmcoreinfo_data` page: text up to the first NUL.
fn data_at(page: &[u8], paddr: u64) -> Option<LocatedVmcoreinfo> {
    let end = memchr::memchr(0, page).unwrap_or(page.len());
    let text = std::str::from_utf8(&page[..end]).ok()?;
    let info = VmcoreInfo::parse(text).ok()?;
    Some(LocatedVmcoreinfo {
        source: VmcoreinfoSource::RamData { paddr },
        text: text.to_owned(),
        info,
    })
}
