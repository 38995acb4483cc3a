//! ELF cores: `xl dump-core` (sections, no program headers) and physical-address ELF dumps
//! (QEMU `dump-guest-memory`, kdump `/proc/vmcore` copies) with PT_LOAD segments and notes.
//! ELF64 little-endian only, which covers every x86 producer of these formats.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::bytes::{le_u16, le_u32, le_u64, slice_at};
use crate::error::{Error, Result};
use crate::source::memory::{
    Backing, FRAME_MASK, FrameSpace, GuestKind, ImageFormat, PAGE_SHIFT, PAGE_SIZE, PageMap, PhysMemory, Run, RunData,
    VcpuState, page_map_error,
};
use crate::source::vcpu_context::{VCPU_CONTEXT_X64_LEN, pv64_vcpu};
use crate::source::xl_save::XenDomainType;

pub(crate) const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const REMEDY: &str = "the core file is truncated or corrupt; inspect it with `readelf -a`";
const ET_CORE: u16 = 4;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const SHT_NOTE: u32 = 7;
/// Bounds on header tables: far above any real dump, low enough that a hostile count cannot
/// make us allocate much.
const MAX_PHDRS: u64 = 1 << 16;
const MAX_SHDRS: u64 = 1 << 12;
const MAX_NOTES: usize = 1 << 14;
/// Pages assembled from unaligned segment edges (at most three per segment).
const MAX_PARTIAL_PAGES: usize = 1 << 12;
/// Highest physical address x86-64 can express (MAXPHYADDR 52).
const MAX_PADDR: u64 = 1 << 52;
const PAGE: u64 = PAGE_SIZE as u64;

fn bad(path: &Path, offset: u64, problem: impl Into<String>) -> Error {
    Error::Malformed {
        path: path.to_path_buf(),
        offset,
        problem: problem.into(),
        remedy: REMEDY,
    }
}

fn need<T>(path: &Path, v: Option<T>, offset: u64, what: &str) -> Result<T> {
    v.ok_or_else(|| bad(path, offset, format!("file ends inside the {what}")))
}

struct Phdr {
    p_type: u32,
    /// Offset of the program header itself (for errors).
    at: u64,
    offset: u64,
    vaddr: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

struct Shdr {
    name: Vec<u8>,
    sh_type: u32,
    at: u64,
    offset: u64,
    size: u64,
    entsize: u64,
}

/// A parsed ELF note; `desc` is a file offset.
struct Note {
    name: Vec<u8>,
    ntype: u32,
    desc: u64,
    desc_len: u64,
}

/// The header tables of an ELF64 LE core.
pub(crate) struct ElfHeaders {
    machine: u16,
    phdrs: Vec<Phdr>,
    shdrs: Vec<Shdr>,
}

impl ElfHeaders {
    pub(crate) fn parse(path: &Path, d: &[u8]) -> Result<ElfHeaders> {
        if slice_at(d, 0, 4) != Some(ELF_MAGIC.as_slice()) {
            return Err(bad(path, 0, "missing the ELF magic"));
        }
        let class = need(path, d.get(4).copied(), 4, "ELF header")?;
        let data = need(path, d.get(5).copied(), 5, "ELF header")?;
        if class != 2 || data != 1 {
            return Err(Error::Unsupported {
                path: path.to_path_buf(),
                offset: 4,
                what: format!("ELF class {class} / data encoding {data}"),
                remedy: "only 64-bit little-endian ELF cores (x86-64 guests) are supported",
            });
        }
        let h = |o| need(path, le_u16(d, o), o, "ELF header");
        let e_type = h(16)?;
        let machine = h(18)?;
        if e_type != ET_CORE {
            return Err(bad(
                path,
                16,
                format!("ELF type {e_type} is not ET_CORE (4): not a memory dump"),
            ));
        }
        let phoff = need(path, le_u64(d, 32), 32, "ELF header")?;
        let shoff = need(path, le_u64(d, 40), 40, "ELF header")?;
        let phentsize = u64::from(h(54)?);
        let mut phnum = u64::from(h(56)?);
        let shentsize = u64::from(h(58)?);
        let shnum = u64::from(h(60)?);
        let shstrndx = u64::from(h(62)?);
        if shnum > 0 && shentsize < 64 {
            return Err(bad(path, 58, format!("section header size {shentsize} < 64")));
        }
        if phnum > 0 && phentsize < 56 {
            return Err(bad(path, 54, format!("program header size {phentsize} < 56")));
        }
        // PN_XNUM: the real program header count sits in section header 0's sh_info.
        if phnum == 0xffff && shnum > 0 {
            phnum = u64::from(need(
                path,
                le_u32(d, shoff.saturating_add(44)),
                shoff,
                "section header 0",
            )?);
        }
        if phnum > MAX_PHDRS || shnum > MAX_SHDRS {
            return Err(bad(
                path,
                56,
                format!("{phnum} program / {shnum} section headers exceed the supported maximum"),
            ));
        }
        let mut phdrs = Vec::with_capacity(phnum as usize);
        for i in 0..phnum {
            let at = phoff
                .checked_add(i * phentsize)
                .ok_or_else(|| bad(path, 32, "program header table offset overflows"))?;
            let q = |o: u64| need(path, le_u64(d, at.saturating_add(o)), at, "program header table");
            phdrs.push(Phdr {
                p_type: need(path, le_u32(d, at), at, "program header table")?,
                at,
                offset: q(8)?,
                vaddr: q(16)?,
                paddr: q(24)?,
                filesz: q(32)?,
                memsz: q(40)?,
            });
        }
        let mut raw = Vec::with_capacity(shnum as usize);
        for i in 0..shnum {
            let at = shoff
                .checked_add(i * shentsize)
                .ok_or_else(|| bad(path, 40, "section header table offset overflows"))?;
            let q = |o: u64| need(path, le_u64(d, at.saturating_add(o)), at, "section header table");
            let w = |o: u64| need(path, le_u32(d, at.saturating_add(o)), at, "section header table");
            raw.push((w(0)?, w(4)?, at, q(24)?, q(32)?, q(56)?));
        }
        // Section names live in the string table section `shstrndx`.
        let strtab = match raw.get(shstrndx as usize) {
            Some(&(_, _, at, off, size, _)) if shnum > 0 => {
                need(path, slice_at(d, off, size), at, "section name string table")?
            }
            _ => &[][..],
        };
        let shdrs = raw
            .into_iter()
            .map(|(name, sh_type, at, offset, size, entsize)| {
                let name = strtab
                    .get(name as usize..)
                    .map(|s| s.split(|&b| b == 0).next().unwrap_or_default().to_vec())
                    .unwrap_or_default();
                Shdr {
                    name,
                    sh_type,
                    at,
                    offset,
                    size,
                    entsize,
                }
            })
            .collect();
        Ok(ElfHeaders { machine, phdrs, shdrs })
    }

    fn section(&self, name: &str) -> Option<&Shdr> {
        self.shdrs.iter().find(|s| s.name == name.as_bytes())
    }

    /// Whether this is an `xl dump-core` (it has `.xen_pages`).
    pub(crate) fn is_xen_core(&self) -> bool {
        self.section(".xen_pages").is_some()
    }
}

/// Parses the notes in `off..off+len`.
fn parse_notes(path: &Path, d: &[u8], off: u64, len: u64, out: &mut Vec<Note>) -> Result<()> {
    need(path, slice_at(d, off, len), off, "note area")?;
    let end = off + len;
    let mut at = off;
    while at + 12 <= end {
        if out.len() >= MAX_NOTES {
            return Err(bad(path, at, format!("more than {MAX_NOTES} ELF notes")));
        }
        let namesz = u64::from(need(path, le_u32(d, at), at, "note header")?);
        let descsz = u64::from(need(path, le_u32(d, at + 4), at, "note header")?);
        let ntype = need(path, le_u32(d, at + 8), at, "note header")?;
        let name_at = at + 12;
        let desc = name_at + namesz.next_multiple_of(4);
        let next = desc + descsz.next_multiple_of(4);
        if desc + descsz > end {
            return Err(bad(
                path,
                at,
                format!("note of {namesz}+{descsz} bytes overruns its note area"),
            ));
        }
        let name = need(path, slice_at(d, name_at, namesz), at, "note name")?;
        let name = name.split(|&b| b == 0).next().unwrap_or_default().to_vec();
        out.push(Note {
            name,
            ntype,
            desc,
            desc_len: descsz,
        });
        at = next;
    }
    Ok(())
}

/// Xen's `xl dump-core` image.
pub struct XenCore {
    path: PathBuf,
    data: Backing,
    domain_type: XenDomainType,
    xen_version: Option<XenVersion>,
    pages: PageMap,
    /// (mfn, pfn) sorted by mfn; PV only.
    m2p: Vec<(u64, u64)>,
    /// (pfn, mfn) in `.xen_p2m` order (pfn-ascending); PV only.
    p2m: Vec<(u64, u64)>,
    vcpus: Vec<VcpuState>,
    shared_info: Option<(u64, u64)>,
}

/// The XEN_VERSION note of a dump-core.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct XenVersion {
    pub major: u64,
    pub minor: u64,
    /// e.g. ".7"
    pub extra: String,
}

const XEN_ELFNOTE_DUMPCORE_HEADER: u32 = 0x200_0001;
const XEN_ELFNOTE_DUMPCORE_XEN_VERSION: u32 = 0x200_0002;
const XC_CORE_MAGIC: u64 = 0xF00F_EBED;
const XC_CORE_MAGIC_HVM: u64 = 0xF00F_EBEE;

impl XenCore {
    /// Maps and indexes the dump-core at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<XenCore> {
        let path = path.as_ref();
        Self::parse(path.to_path_buf(), Backing::map(path)?)
    }

    /// Indexes a dump-core held in memory; `label` stands in for the path in errors.
    pub fn from_bytes(label: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<XenCore> {
        Self::parse(label.into(), Backing::Owned(bytes))
    }

    pub(crate) fn parse(path: PathBuf, data: Backing) -> Result<XenCore> {
        let p = path.as_path();
        let d: &[u8] = &data;
        let elf = ElfHeaders::parse(p, d)?;
        let note_sec = elf
            .section(".note.Xen")
            .ok_or_else(|| bad(p, 0, "dump-core without the mandatory .note.Xen section"))?;
        let mut notes = Vec::new();
        parse_notes(p, d, note_sec.offset, note_sec.size, &mut notes)?;
        let header = notes
            .iter()
            .find(|n| n.name == b"Xen" && n.ntype == XEN_ELFNOTE_DUMPCORE_HEADER && n.desc_len >= 32)
            .ok_or_else(|| bad(p, note_sec.at, ".note.Xen has no dump-core HEADER note"))?;
        let hq = |o| need(p, le_u64(d, header.desc + o), header.desc, "HEADER note");
        let (magic, nr_vcpus, nr_pages, page_size) = (hq(0)?, hq(8)?, hq(16)?, hq(24)?);
        let domain_type = match magic {
            XC_CORE_MAGIC => XenDomainType::X86Pv,
            XC_CORE_MAGIC_HVM => XenDomainType::X86Hvm,
            m => {
                return Err(bad(
                    p,
                    header.desc,
                    format!("dump-core magic {m:#x} is neither PV nor HVM"),
                ));
            }
        };
        if page_size != PAGE {
            return Err(bad(
                p,
                header.desc + 24,
                format!("page size {page_size}, x86 requires 4096"),
            ));
        }
        let xen_version = notes
            .iter()
            .find(|n| n.name == b"Xen" && n.ntype == XEN_ELFNOTE_DUMPCORE_XEN_VERSION && n.desc_len >= 32)
            .and_then(|n| {
                let extra = slice_at(d, n.desc + 16, 16)?;
                let extra = extra.split(|&b| b == 0).next().unwrap_or_default();
                Some(XenVersion {
                    major: le_u64(d, n.desc)?,
                    minor: le_u64(d, n.desc + 8)?,
                    extra: String::from_utf8_lossy(extra).into_owned(),
                })
            });

        let pages_sec = elf
            .section(".xen_pages")
            .ok_or_else(|| bad(p, 0, "dump-core without .xen_pages"))?;
        let pages_len = nr_pages
            .checked_mul(PAGE)
            .filter(|&l| l <= pages_sec.size)
            .ok_or_else(|| {
                bad(
                    p,
                    pages_sec.at,
                    format!(".xen_pages is smaller than nr_pages {nr_pages} pages"),
                )
            })?;
        need(p, slice_at(d, pages_sec.offset, pages_len), pages_sec.at, ".xen_pages")?;

        let mut entries = Vec::new();
        let mut p2m = Vec::new();
        let (table, entry) = match domain_type {
            XenDomainType::X86Pv => (".xen_p2m", 16),
            XenDomainType::X86Hvm => (".xen_pfn", 8),
        };
        let sec = elf
            .section(table)
            .ok_or_else(|| bad(p, 0, format!("dump-core without {table}")))?;
        let tbl = slice_at(d, sec.offset, nr_pages.saturating_mul(entry))
            .filter(|_| sec.size >= nr_pages.saturating_mul(entry))
            .ok_or_else(|| bad(p, sec.at, format!("{table} is shorter than {nr_pages} entries")))?;
        for i in 0..nr_pages {
            let pfn = need(p, le_u64(tbl, i * entry), sec.offset, table)?;
            // All-ones marks an unused slot (its page is zero); such slots may trail.
            if pfn == u64::MAX {
                continue;
            }
            if pfn >= MAX_PADDR >> PAGE_SHIFT {
                return Err(bad(
                    p,
                    sec.offset + i * entry,
                    format!("{table} entry {i} has impossible pfn {pfn:#x}"),
                ));
            }
            entries.push((pfn, Some(pages_sec.offset + i * PAGE)));
            if entry == 16 {
                p2m.push((pfn, need(p, le_u64(tbl, i * entry + 8), sec.offset, table)?));
            }
        }
        let pages = PageMap::from_page_entries(entries, d.len() as u64)
            .map_err(|e| page_map_error(p, sec.offset, e, REMEDY))?;
        let mut m2p: Vec<(u64, u64)> = p2m.iter().map(|&(pfn, mfn)| (mfn, pfn)).collect();
        m2p.sort_by_key(|e| e.0);
        m2p.dedup_by_key(|e| e.0);

        let mut vcpus = Vec::new();
        let prstatus = elf.section(".xen_prstatus");
        if prstatus.is_none() && nr_vcpus > 0 {
            // Without it no vCPU state, no page-table root: say so here, not as "no kernel".
            return Err(bad(
                p,
                0,
                format!("dump-core header says {nr_vcpus} vCPUs, but there is no .xen_prstatus section"),
            ));
        }
        if let Some(pr) = prstatus {
            if elf.machine == EM_386 {
                return Err(Error::Unsupported {
                    path,
                    offset: pr.at,
                    what: "32-bit PV guest vCPU contexts".into(),
                    remedy: "only 64-bit guests are supported (Linux dropped 32-bit PV in 5.9)",
                });
            }
            let size = if pr.entsize != 0 {
                pr.entsize
            } else {
                VCPU_CONTEXT_X64_LEN
            };
            if size < VCPU_CONTEXT_X64_LEN || nr_vcpus.saturating_mul(size) > pr.size {
                return Err(bad(
                    p,
                    pr.at,
                    format!(
                        ".xen_prstatus ({} bytes) cannot hold {nr_vcpus} contexts of {size} bytes",
                        pr.size
                    ),
                ));
            }
            for i in 0..nr_vcpus {
                let ctx = pr.offset + i * size;
                let id = u32::try_from(i).map_err(|_| bad(p, pr.at, "too many vCPUs"))?;
                let v = match domain_type {
                    XenDomainType::X86Pv => pv64_vcpu(d, ctx, id, |mfn| m2p_lookup(&m2p, mfn)),
                    // HVM contexts hold the guest's CR3, a physical address (low bits PCID).
                    XenDomainType::X86Hvm => {
                        pv64_vcpu(d, ctx, id, |f| Some(f & (FRAME_MASK >> PAGE_SHIFT))).map(|mut v| {
                            if v.paging_enabled() == Some(false) {
                                v.root_table_pfn = None;
                            }
                            v.user_root_table_pfn = None;
                            v
                        })
                    }
                };
                vcpus.push(v.ok_or_else(|| bad(p, ctx, "truncated vCPU context in .xen_prstatus"))?);
            }
        }
        let shared_info = elf.section(".xen_shared_info").map(|s| (s.offset, s.size));
        Ok(XenCore {
            path,
            data,
            domain_type,
            xen_version,
            pages,
            m2p,
            p2m,
            vcpus,
            shared_info,
        })
    }

    pub fn domain_type(&self) -> XenDomainType {
        self.domain_type
    }

    /// Hypervisor version from the XEN_VERSION note.
    pub fn xen_version(&self) -> Option<&XenVersion> {
        self.xen_version.as_ref()
    }

    /// The guest's p2m as dumped, (pfn, mfn) in pfn order; empty for HVM.
    pub fn p2m(&self) -> &[(u64, u64)] {
        &self.p2m
    }

    /// Machine frame of guest pfn `pfn` (PV only).
    pub fn phys_to_machine(&self, pfn: u64) -> Option<u64> {
        let i = self.p2m.binary_search_by_key(&pfn, |e| e.0).ok()?;
        Some(self.p2m[i].1)
    }

    /// The `.xen_shared_info` page, if dumped.
    pub fn shared_info(&self) -> Option<&[u8]> {
        let (off, len) = self.shared_info?;
        slice_at(&self.data, off, len)
    }
}

impl PhysMemory for XenCore {
    fn path(&self) -> &Path {
        &self.path
    }
    fn format(&self) -> ImageFormat {
        ImageFormat::XenCore
    }
    fn guest_kind(&self) -> GuestKind {
        match self.domain_type {
            XenDomainType::X86Pv => GuestKind::XenPv,
            XenDomainType::X86Hvm => GuestKind::XenHvm,
        }
    }
    fn page(&self, pfn: u64) -> Option<&[u8]> {
        self.pages.page(&self.data, pfn)
    }
    fn present_ranges(&self) -> Box<dyn Iterator<Item = Range<u64>> + '_> {
        Box::new(self.pages.ranges())
    }
    fn vcpus(&self) -> &[VcpuState] {
        &self.vcpus
    }
    fn frame_space(&self) -> FrameSpace {
        // A PV dump-core is not normalised: page tables and CR3 hold machine frames.
        match self.domain_type {
            XenDomainType::X86Pv => FrameSpace::Machine,
            XenDomainType::X86Hvm => FrameSpace::Physical,
        }
    }
    fn machine_to_phys(&self, mfn: u64) -> Option<u64> {
        m2p_lookup(&self.m2p, mfn)
    }
}

/// Guest pfn of `mfn` in an mfn-sorted (mfn, pfn) table.
fn m2p_lookup(m2p: &[(u64, u64)], mfn: u64) -> Option<u64> {
    let i = m2p.binary_search_by_key(&mfn, |e| e.0).ok()?;
    Some(m2p[i].1)
}

/// A PT_LOAD segment of a physical-address ELF dump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LoadSegment {
    pub paddr: u64,
    pub vaddr: u64,
    pub offset: u64,
    pub filesz: u64,
    pub memsz: u64,
}

/// A physical-address ELF core: QEMU `dump-guest-memory` (without paging) or kdump.
pub struct ElfCore {
    path: PathBuf,
    data: Backing,
    segments: Vec<LoadSegment>,
    pages: PageMap,
    vmcoreinfo: Option<String>,
    vcpus: Vec<VcpuState>,
}

const NT_PRSTATUS: u32 = 1;
/// `struct elf_prstatus` on x86-64: registers start at 112, 27 u64s.
const PRSTATUS_REGS: u64 = 112;
const PRSTATUS_LEN: u64 = 336;
/// QEMU's `QEMUCPUState` (target/i386/arch_dump.c), version 1.
const QEMU_CPUSTATE_LEN: u64 = 440;

impl ElfCore {
    /// Maps and indexes the ELF core at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<ElfCore> {
        let path = path.as_ref();
        Self::parse(path.to_path_buf(), Backing::map(path)?)
    }

    /// Indexes an ELF core held in memory; `label` stands in for the path in errors.
    pub fn from_bytes(label: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<ElfCore> {
        Self::parse(label.into(), Backing::Owned(bytes))
    }

    pub(crate) fn parse(path: PathBuf, data: Backing) -> Result<ElfCore> {
        let p = path.as_path();
        let d: &[u8] = &data;
        let elf = ElfHeaders::parse(p, d)?;
        if elf.machine != EM_X86_64 {
            return Err(Error::Unsupported {
                path: path.clone(),
                offset: 18,
                what: format!("ELF machine {}", elf.machine),
                remedy: "only x86-64 memory dumps are supported",
            });
        }
        let mut segments = Vec::new();
        let mut runs = Vec::new();
        let mut partial: BTreeMap<u64, Box<[u8]>> = BTreeMap::new();
        let mut notes = Vec::new();
        for ph in &elf.phdrs {
            match ph.p_type {
                PT_NOTE => parse_notes(p, d, ph.offset, ph.filesz, &mut notes)?,
                PT_LOAD => {
                    load_segment(p, d, ph, &mut runs, &mut partial)?;
                    segments.push(LoadSegment {
                        paddr: ph.paddr,
                        vaddr: ph.vaddr,
                        offset: ph.offset,
                        filesz: ph.filesz,
                        memsz: ph.memsz,
                    });
                }
                _ => {}
            }
        }
        // Some producers put notes in sections instead of a PT_NOTE segment.
        if !elf.phdrs.iter().any(|ph| ph.p_type == PT_NOTE) {
            for s in elf.shdrs.iter().filter(|s| s.sh_type == SHT_NOTE) {
                parse_notes(p, d, s.offset, s.size, &mut notes)?;
            }
        }
        if segments.is_empty() {
            return Err(bad(p, 32, "ELF core has no PT_LOAD segment: it holds no memory"));
        }
        runs.extend(partial.into_iter().map(|(pfn, buf)| Run {
            start: pfn,
            count: 1,
            data: RunData::Owned(buf),
        }));
        let pages = PageMap::new(runs, d.len() as u64).map_err(|e| page_map_error(p, 32, e, REMEDY))?;

        let vmcoreinfo = notes.iter().find(|n| n.name == b"VMCOREINFO").and_then(|n| {
            let text = slice_at(d, n.desc, n.desc_len)?;
            let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
            Some(String::from_utf8_lossy(&text[..end]).into_owned())
        });
        let vcpus = decode_cpu_notes(d, &notes);
        if vcpus.is_empty() {
            // QEMU and kdump write a CPU note per vCPU; without one there is no page-table root.
            let at = elf
                .phdrs
                .iter()
                .find(|ph| ph.p_type == PT_NOTE)
                .map_or(32, |ph| ph.offset);
            return Err(bad(
                p,
                at,
                format!(
                    "no CPU state: none of the {} notes is a QEMU CPU note or an NT_PRSTATUS",
                    notes.len()
                ),
            ));
        }
        Ok(ElfCore {
            path,
            data,
            segments,
            pages,
            vmcoreinfo,
            vcpus,
        })
    }

    /// PT_LOAD segments in program-header order.
    pub fn segments(&self) -> &[LoadSegment] {
        &self.segments
    }
}

/// Adds the pages of one PT_LOAD segment: whole file-backed pages as a file run, whole
/// pages beyond `p_filesz` as zero pages, and pages the segment only partly covers copied
/// into `partial` (merged with neighbouring segments covering the rest).
fn load_segment(
    p: &Path,
    d: &[u8],
    ph: &Phdr,
    runs: &mut Vec<Run>,
    partial: &mut BTreeMap<u64, Box<[u8]>>,
) -> Result<()> {
    if ph.filesz > ph.memsz {
        return Err(bad(
            p,
            ph.at,
            format!("PT_LOAD p_filesz {:#x} exceeds p_memsz {:#x}", ph.filesz, ph.memsz),
        ));
    }
    need(p, slice_at(d, ph.offset, ph.filesz), ph.at, "PT_LOAD segment data")?;
    let start = ph.paddr;
    let file_end = start.checked_add(ph.filesz);
    let end = start.checked_add(ph.memsz).filter(|&e| e <= MAX_PADDR);
    let (Some(file_end), Some(end)) = (file_end, end) else {
        return Err(bad(
            p,
            ph.at,
            format!(
                "PT_LOAD at {start:#x} + {:#x} exceeds the physical address space",
                ph.memsz
            ),
        ));
    };
    if start == end {
        return Ok(());
    }
    // Whole pages backed by the file.
    let first = start.div_ceil(PAGE);
    let file_last = file_end / PAGE;
    if first < file_last {
        runs.push(Run {
            start: first,
            count: file_last - first,
            data: RunData::File(ph.offset + (first * PAGE - start)),
        });
    }
    // Whole pages of the zero tail.
    let zero_first = file_end.div_ceil(PAGE).max(first);
    let zero_last = end / PAGE;
    if zero_first < zero_last {
        runs.push(Run {
            start: zero_first,
            count: zero_last - zero_first,
            data: RunData::Zero,
        });
    }
    // Pages touched but not wholly covered by one of the two runs above.
    let mut edge = vec![start / PAGE, file_end / PAGE, (end - 1) / PAGE];
    edge.dedup();
    for pfn in edge {
        let (lo, hi) = (pfn * PAGE, pfn * PAGE + PAGE);
        let whole_file = lo >= start && hi <= file_end;
        let whole_zero = lo >= file_end && hi <= end;
        if whole_file || whole_zero || hi <= start || lo >= end {
            continue;
        }
        if !partial.contains_key(&pfn) && partial.len() >= MAX_PARTIAL_PAGES {
            return Err(bad(
                p,
                ph.at,
                format!("more than {MAX_PARTIAL_PAGES} pages only partly covered by PT_LOAD segments"),
            ));
        }
        let buf = partial
            .entry(pfn)
            .or_insert_with(|| vec![0; PAGE_SIZE].into_boxed_slice());
        let (a, b) = (lo.max(start), hi.min(file_end));
        if a < b {
            let src = need(
                p,
                slice_at(d, ph.offset + (a - start), b - a),
                ph.at,
                "PT_LOAD segment data",
            )?;
            let at = (a - lo) as usize;
            buf[at..at + src.len()].copy_from_slice(src);
        }
    }
    Ok(())
}

/// vCPU states from QEMU's per-CPU "QEMU" notes (which carry control registers) or, failing
/// those, from NT_PRSTATUS (general registers only, as kdump writes them).
fn decode_cpu_notes(d: &[u8], notes: &[Note]) -> Vec<VcpuState> {
    let qemu: Vec<VcpuState> = notes
        .iter()
        .filter(|n| n.name == b"QEMU" && n.ntype == 0 && n.desc_len >= QEMU_CPUSTATE_LEN)
        .filter(|n| le_u32(d, n.desc) == Some(1))
        .enumerate()
        .filter_map(|(i, n)| {
            let q = |o: u64| le_u64(d, n.desc + o);
            let cr0 = q(392)?;
            let cr3 = q(416)?;
            Some(VcpuState {
                id: u32::try_from(i).ok()?,
                cr0: Some(cr0),
                cr2: q(408),
                cr3: Some(cr3),
                cr4: q(424),
                efer: None,
                rip: q(136),
                rsp: q(56),
                // Segment bases: 10 descriptors of 24 bytes from 152, base at +16.
                fs_base: q(152 + 3 * 24 + 16),
                gs_base: q(152 + 4 * 24 + 16),
                kernel_gs_base: q(432),
                root_table_pfn: (cr0 & (1 << 31) != 0).then_some((cr3 & FRAME_MASK) >> PAGE_SHIFT),
                user_root_table_pfn: None,
            })
        })
        .collect();
    if !qemu.is_empty() {
        return qemu;
    }
    notes
        .iter()
        .filter(|n| n.name == b"CORE" && n.ntype == NT_PRSTATUS && n.desc_len >= PRSTATUS_LEN)
        .enumerate()
        .filter_map(|(i, n)| {
            let r = |idx: u64| le_u64(d, n.desc + PRSTATUS_REGS + idx * 8);
            Some(VcpuState {
                id: u32::try_from(i).ok()?,
                rip: r(16),
                rsp: r(19),
                fs_base: r(21),
                gs_base: r(22),
                ..VcpuState::default()
            })
        })
        .collect()
}

impl PhysMemory for ElfCore {
    fn path(&self) -> &Path {
        &self.path
    }
    fn format(&self) -> ImageFormat {
        ImageFormat::ElfCore
    }
    fn guest_kind(&self) -> GuestKind {
        GuestKind::Unspecified
    }
    fn page(&self, pfn: u64) -> Option<&[u8]> {
        self.pages.page(&self.data, pfn)
    }
    fn present_ranges(&self) -> Box<dyn Iterator<Item = Range<u64>> + '_> {
        Box::new(self.pages.ranges())
    }
    fn vcpus(&self) -> &[VcpuState] {
        &self.vcpus
    }
    fn vmcoreinfo(&self) -> Option<&str> {
        self.vmcoreinfo.as_deref()
    }
}
