//! `xl save` images (Xen >= 4.6): 48-byte xl header, optional data carrying the JSON domain
//! configuration, libxl migration stream v2 with the libxc stream v2/v3 inline.
//!
//! Opening walks the record headers once, seeking over page bodies, and indexes PAGE_DATA as
//! pfn -> file offset; pages are then served straight from the read-only mapping.
//!
//! What PV pages contain: the saver *normalises* every page-table page (L1..L4, pinned or
//! not) so that present entries hold guest pfns instead of machine frames, and zeroes the
//! Xen-owned L4 slots; CR3 (`ctrlreg[3]`) is likewise rewritten to `pfn << 12`. A page-table
//! walk over a PV save image therefore works on pfns directly ([`crate::FrameSpace::Physical`]).
//! Not translated: the pages listed in X86_PV_P2M_FRAMES (the guest's own p2m, still holding
//! source-host mfns, which the restorer rewrites) and any other guest data storing mfns.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::bytes::{align_up, be_u16, be_u32, be_u64, le_u16, le_u32, le_u64, slice_at};
use crate::error::{Error, Result};
use crate::source::domain_config::DomainConfig;
use crate::source::memory::{
    Backing, GuestKind, ImageFormat, PAGE_SHIFT, PAGE_SIZE, PageMap, PhysMemory, VcpuState, page_map_error,
};
use crate::source::vcpu_context::{VCPU_CONTEXT_X64_LEN, hvm_vcpu, pv64_vcpu};

/// The 32 magic bytes at the start of every xl save file (`tools/xl/xl.h`).
pub(crate) const XL_MAGIC: &[u8; 32] = b"Xen saved domain, xl format\n \0 \r";
const XL_HEADER_LEN: u64 = 48;
const XL_FLAG_JSON: u32 = 1 << 0;
const XL_FLAG_STREAM_V2: u32 = 1 << 1;
const LIBXL_IDENT: u64 = 0x4c69_6278_6c46_6d74; // "LibxlFmt"
const LIBXC_ID: u32 = 0x5845_4e46; // "XENF"
/// The restorer refuses longer libxc records (`REC_LENGTH_MAX`, xg_sr_common.h).
const REC_LENGTH_MAX: u32 = 128 << 20;
/// Bounds the diagnostic record list against streams made of millions of empty records; a
/// 1 TiB guest needs ~262k PAGE_DATA records.
const MAX_RECORDS: usize = 1 << 22;
/// Bounds the HVM save-entry list (a real context has ~20 entries per vCPU).
const MAX_HVM_ENTRIES: usize = 1 << 16;
const HVM_SAVE_MAGIC: u32 = 0x5438_1286;
const REMEDY: &str = "the save image is truncated or corrupt; check it with Xen's \
                      `verify-stream-v2 --format xl`";

/// Which stream layer a record belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamLayer {
    Libxl,
    Libxc,
}

/// One record of the stream, for diagnostics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StreamRecord {
    pub layer: StreamLayer,
    /// Record type as stored (bit 31 = optional).
    pub rtype: u32,
    /// File offset of the 8-byte record header.
    pub offset: u64,
    /// Body length (without header and padding).
    pub length: u32,
}

impl StreamRecord {
    /// Record name as Xen's specs spell it, `UNKNOWN` for types this reader does not know.
    pub fn name(&self) -> &'static str {
        match self.layer {
            StreamLayer::Libxl => match self.rtype {
                0 => "END",
                1 => "LIBXC_CONTEXT",
                2 => "EMULATOR_XENSTORE_DATA",
                3 => "EMULATOR_CONTEXT",
                4 => "CHECKPOINT_END",
                5 => "CHECKPOINT_STATE",
                _ => "UNKNOWN",
            },
            StreamLayer::Libxc => match self.rtype {
                rec::END => "END",
                rec::PAGE_DATA => "PAGE_DATA",
                rec::X86_PV_INFO => "X86_PV_INFO",
                rec::X86_PV_P2M_FRAMES => "X86_PV_P2M_FRAMES",
                rec::X86_PV_VCPU_BASIC => "X86_PV_VCPU_BASIC",
                0x05 => "X86_PV_VCPU_EXTENDED",
                0x06 => "X86_PV_VCPU_XSAVE",
                rec::SHARED_INFO => "SHARED_INFO",
                0x08 => "X86_TSC_INFO",
                rec::HVM_CONTEXT => "HVM_CONTEXT",
                rec::HVM_PARAMS => "HVM_PARAMS",
                0x0B => "TOOLSTACK",
                0x0C => "X86_PV_VCPU_MSRS",
                0x0D => "VERIFY",
                0x0E => "CHECKPOINT",
                0x0F => "CHECKPOINT_DIRTY_PFN_LIST",
                0x10 => "STATIC_DATA_END",
                0x11 => "X86_CPUID_POLICY",
                0x12 => "X86_MSR_POLICY",
                _ => "UNKNOWN",
            },
        }
    }
}

/// libxc record types this reader interprets.
mod rec {
    pub const END: u32 = 0x00;
    pub const PAGE_DATA: u32 = 0x01;
    pub const X86_PV_INFO: u32 = 0x02;
    pub const X86_PV_P2M_FRAMES: u32 = 0x03;
    pub const X86_PV_VCPU_BASIC: u32 = 0x04;
    pub const SHARED_INFO: u32 = 0x07;
    pub const HVM_CONTEXT: u32 = 0x09;
    pub const HVM_PARAMS: u32 = 0x0A;
    pub const CHECKPOINT: u32 = 0x0E;
    /// Highest type the 4.17 restorer knows; higher mandatory types make it refuse the stream.
    pub const KNOWN_MAX: u32 = 0x12;
}

/// libxc domain type (domain header).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum XenDomainType {
    X86Pv,
    /// HVM, also used for PVH.
    X86Hvm,
}

/// The fixed xl header fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct XlHeader {
    pub mandatory_flags: u32,
    pub optional_flags: u32,
    pub optional_data_len: u32,
}

/// X86_PV_INFO.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PvInfo {
    /// Guest word size in bytes (4 or 8).
    pub guest_width: u8,
    pub pt_levels: u8,
}

/// X86_PV_P2M_FRAMES: the pfns of the pages holding the guest's p2m for `start_pfn..=end_pfn`.
/// Those pages are ordinary PAGE_DATA pages whose contents are *stale source-host mfns*.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct P2mFrames {
    pub start_pfn: u32,
    pub end_pfn: u32,
    pub frames: Vec<u64>,
}

/// One `[hvm_save_descriptor][payload]` entry of HVM_CONTEXT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct HvmSaveEntry {
    /// 1 HEADER, 2 CPU, 3 PIC, ... (`public/arch-x86/hvm/save.h`).
    pub typecode: u16,
    /// vCPU or device instance.
    pub instance: u16,
    /// File offset of the payload.
    pub offset: u64,
    pub length: u32,
}

/// An `xl save` image, indexed and mapped.
pub struct XlSaveImage {
    path: PathBuf,
    data: Backing,
    header: XlHeader,
    config: Option<DomainConfig>,
    libxc_version: u32,
    domain_type: XenDomainType,
    page_shift: u16,
    xen_version: (u32, u32),
    pv_info: Option<PvInfo>,
    p2m_frames: Option<P2mFrames>,
    hvm_entries: Vec<HvmSaveEntry>,
    hvm_params: Vec<(u64, u64)>,
    shared_info: Option<u64>,
    records: Vec<StreamRecord>,
    page_types: [u64; 16],
    pages: PageMap,
    vcpus: Vec<VcpuState>,
}

impl XlSaveImage {
    /// Maps and indexes the save image at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<XlSaveImage> {
        let path = path.as_ref();
        Self::parse(path.to_path_buf(), Backing::map(path)?)
    }

    /// Indexes an image held in memory; `label` stands in for the path in errors.
    pub fn from_bytes(label: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<XlSaveImage> {
        Self::parse(label.into(), Backing::Owned(bytes))
    }

    pub(crate) fn parse(path: PathBuf, data: Backing) -> Result<XlSaveImage> {
        let mut img = XlSaveImage {
            path,
            data,
            header: XlHeader {
                mandatory_flags: 0,
                optional_flags: 0,
                optional_data_len: 0,
            },
            config: None,
            libxc_version: 0,
            domain_type: XenDomainType::X86Pv,
            page_shift: 0,
            xen_version: (0, 0),
            pv_info: None,
            p2m_frames: None,
            hvm_entries: Vec::new(),
            hvm_params: Vec::new(),
            shared_info: None,
            records: Vec::new(),
            page_types: [0; 16],
            pages: PageMap::default(),
            vcpus: Vec::new(),
        };
        let mut scan = Scan::default();
        img.read_xl_header()?;
        let libxl_start = XL_HEADER_LEN + u64::from(img.header.optional_data_len);
        img.read_libxl(libxl_start, &mut scan)?;
        let first_page_record = scan.first_page_record;
        img.pages = PageMap::from_page_entries(scan.page_entries, img.data.len() as u64)
            .map_err(|e| page_map_error(&img.path, first_page_record, e, REMEDY))?;
        img.vcpus = img.decode_vcpus(&scan.pv_vcpus)?;
        Ok(img)
    }

    fn bad(&self, offset: u64, problem: impl Into<String>) -> Error {
        Error::Malformed {
            path: self.path.clone(),
            offset,
            problem: problem.into(),
            remedy: REMEDY,
        }
    }

    fn unsupported(&self, offset: u64, what: impl Into<String>, remedy: &'static str) -> Error {
        Error::Unsupported {
            path: self.path.clone(),
            offset,
            what: what.into(),
            remedy,
        }
    }

    /// Reads a field or fails naming it.
    fn field<T>(&self, v: Option<T>, offset: u64, what: &str) -> Result<T> {
        v.ok_or_else(|| self.bad(offset, format!("file ends inside the {what}")))
    }

    fn read_xl_header(&mut self) -> Result<()> {
        let d = &self.data;
        if slice_at(d, 0, 32) != Some(XL_MAGIC.as_slice()) {
            return Err(self.bad(0, "missing the `xl save` magic"));
        }
        let byteorder = self.field(le_u32(d, 32), 32, "xl header")?;
        if byteorder != 0x0102_0304 {
            return Err(self.unsupported(
                32,
                format!("xl header byte order marker {byteorder:#010x} (not little-endian x86)"),
                "only images saved on little-endian x86 hosts are supported",
            ));
        }
        let mandatory_flags = self.field(le_u32(d, 36), 36, "xl header")?;
        let optional_flags = self.field(le_u32(d, 40), 40, "xl header")?;
        let optional_data_len = self.field(le_u32(d, 44), 44, "xl header")?;
        if mandatory_flags & !(XL_FLAG_JSON | XL_FLAG_STREAM_V2) != 0 {
            return Err(self.unsupported(
                36,
                format!("xl mandatory flags {mandatory_flags:#x} (xl restore would refuse them too)"),
                "the image was written by a newer xl; upgrade dormouse",
            ));
        }
        if mandatory_flags & XL_FLAG_STREAM_V2 == 0 {
            return Err(self.unsupported(
                36,
                "legacy (pre-Xen-4.6) save stream",
                "convert it with Xen's `convert-legacy-stream` first",
            ));
        }
        self.header = XlHeader {
            mandatory_flags,
            optional_flags,
            optional_data_len,
        };
        let opt = self.field(
            slice_at(d, XL_HEADER_LEN, u64::from(optional_data_len)),
            XL_HEADER_LEN,
            "optional data",
        )?;
        if mandatory_flags & XL_FLAG_JSON != 0 && opt.len() >= 4 {
            let config_len = u64::from(self.field(le_u32(opt, 0), XL_HEADER_LEN, "config length")?);
            let text = slice_at(opt, 4, config_len).ok_or_else(|| {
                self.bad(
                    XL_HEADER_LEN,
                    format!("config length {config_len} exceeds the optional data"),
                )
            })?;
            // libxl stores the JSON NUL-terminated and counts the NUL.
            let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
            let raw: Value = serde_json::from_slice(&text[..end]).map_err(|e| {
                self.bad(
                    XL_HEADER_LEN + 4,
                    format!("embedded domain config is not valid JSON: {e}"),
                )
            })?;
            self.config = Some(DomainConfig::from_json(raw));
        }
        Ok(())
    }

    fn push_record(&mut self, layer: StreamLayer, rtype: u32, offset: u64, length: u32) -> Result<()> {
        if self.records.len() >= MAX_RECORDS {
            return Err(self.bad(offset, format!("more than {MAX_RECORDS} stream records")));
        }
        self.records.push(StreamRecord {
            layer,
            rtype,
            offset,
            length,
        });
        Ok(())
    }

    /// Record header at `off`: (type, length, body offset, offset of the next record).
    fn record_header(&self, off: u64, layer: &str) -> Result<(u32, u32, u64, u64)> {
        let d = &self.data;
        let rtype = self.field(le_u32(d, off), off, &format!("{layer} record header"))?;
        let length = self.field(le_u32(d, off + 4), off, &format!("{layer} record header"))?;
        let body = off + 8;
        // Padding is relative to the record (the stream itself starts at an arbitrary offset).
        let next = align_up(u64::from(length), 8)
            .map(|padded| body + padded)
            .filter(|&n| n <= d.len() as u64)
            .ok_or_else(|| {
                self.bad(
                    off,
                    format!("{layer} record type {rtype:#x} of length {length} runs past the end of the file"),
                )
            })?;
        Ok((rtype, length, body, next))
    }

    fn read_libxl(&mut self, start: u64, scan: &mut Scan) -> Result<()> {
        let d = &self.data;
        let ident = self.field(be_u64(d, start), start, "libxl stream header")?;
        if ident != LIBXL_IDENT {
            return Err(self.bad(start, format!("libxl stream ident {ident:#018x} is not \"LibxlFmt\"")));
        }
        let version = self.field(be_u32(d, start + 8), start, "libxl stream header")?;
        let options = self.field(be_u32(d, start + 12), start, "libxl stream header")?;
        if version != 2 {
            return Err(self.unsupported(
                start + 8,
                format!("libxl stream version {version}"),
                "only libxl stream version 2 (Xen >= 4.6) is supported",
            ));
        }
        if options & 1 != 0 {
            return Err(self.unsupported(start + 12, "big-endian libxl stream", "save the domain on an x86 host"));
        }
        let mut off = start + 16;
        let mut seen_libxc = false;
        loop {
            let (rtype, length, body, mut next) = self.record_header(off, "libxl")?;
            self.push_record(StreamLayer::Libxl, rtype, off, length)?;
            if rtype == 0 && length != 0 {
                return Err(self.bad(off, format!("libxl END record has length {length}, expected 0")));
            }
            match rtype {
                0 if seen_libxc => return Ok(()),
                0 => return Err(self.bad(off, "libxl END before any LIBXC_CONTEXT: the image holds no memory")),
                1 => {
                    if seen_libxc {
                        return Err(self.unsupported(
                            off,
                            "second LIBXC_CONTEXT (checkpointed stream)",
                            "Remus/COLO checkpoint streams are not supported; use a plain `xl save` image",
                        ));
                    }
                    if length != 0 {
                        return Err(self.bad(off, format!("LIBXC_CONTEXT record has length {length}, expected 0")));
                    }
                    seen_libxc = true;
                    next = self.read_libxc(body, scan)?;
                }
                2 | 3 => {}
                4 | 5 => {
                    return Err(self.unsupported(
                        off,
                        "libxl checkpoint record",
                        "Remus/COLO checkpoint streams are not supported; use a plain `xl save` image",
                    ));
                }
                t if t & 0x8000_0000 != 0 => {}
                t => {
                    return Err(self.unsupported(
                        off,
                        format!("mandatory libxl record type {t:#x}"),
                        "the image was written by a newer Xen; upgrade dormouse",
                    ));
                }
            }
            off = next;
        }
    }

    /// Walks the libxc stream starting at its image header; returns the offset after END.
    fn read_libxc(&mut self, start: u64, scan: &mut Scan) -> Result<u64> {
        let d = &self.data;
        let marker = self.field(be_u64(d, start), start, "libxc image header")?;
        if marker != u64::MAX {
            return Err(self.unsupported(
                start,
                "legacy libxc stream (no image header marker)",
                "convert it with Xen's `convert-legacy-stream` first",
            ));
        }
        let id = self.field(be_u32(d, start + 8), start, "libxc image header")?;
        let version = self.field(be_u32(d, start + 12), start, "libxc image header")?;
        let options = self.field(be_u16(d, start + 16), start, "libxc image header")?;
        if id != LIBXC_ID {
            return Err(self.bad(start + 8, format!("libxc image id {id:#010x} is not \"XENF\"")));
        }
        if !(2..=3).contains(&version) {
            return Err(self.unsupported(
                start + 12,
                format!("libxc stream version {version}"),
                "only libxc stream versions 2 and 3 are supported",
            ));
        }
        if options & 1 != 0 {
            return Err(self.unsupported(start + 16, "big-endian libxc stream", "save the domain on an x86 host"));
        }
        self.libxc_version = version;
        let dh = start + 24;
        let dtype = self.field(le_u32(d, dh), dh, "libxc domain header")?;
        let page_shift = self.field(le_u16(d, dh + 4), dh, "libxc domain header")?;
        let major = self.field(le_u32(d, dh + 8), dh, "libxc domain header")?;
        let minor = self.field(le_u32(d, dh + 12), dh, "libxc domain header")?;
        self.domain_type = match dtype {
            1 => XenDomainType::X86Pv,
            2 => XenDomainType::X86Hvm,
            t => {
                return Err(self.unsupported(
                    dh,
                    format!("libxc domain type {t}"),
                    "only x86 PV and x86 HVM/PVH images are supported",
                ));
            }
        };
        if u32::from(page_shift) != PAGE_SHIFT {
            return Err(self.bad(dh + 4, format!("page_shift {page_shift}, x86 requires 12")));
        }
        self.page_shift = page_shift;
        self.xen_version = (major, minor);
        let mut off = dh + 16;
        loop {
            let (rtype, length, body, next) = self.record_header(off, "libxc")?;
            self.push_record(StreamLayer::Libxc, rtype, off, length)?;
            if length > REC_LENGTH_MAX {
                return Err(self.bad(off, format!("libxc record length {length} exceeds Xen's 128 MiB limit")));
            }
            match rtype {
                // A misread length upstream lands on zeros that read as END; a real END is empty.
                rec::END if length != 0 => {
                    return Err(self.bad(off, format!("libxc END record has length {length}, expected 0")));
                }
                rec::END => return Ok(next),
                rec::PAGE_DATA => self.read_page_data(off, body, length, scan)?,
                rec::X86_PV_INFO => self.read_pv_info(body, length)?,
                rec::X86_PV_P2M_FRAMES => self.read_p2m_frames(body, length)?,
                rec::X86_PV_VCPU_BASIC if length > 0 => {
                    // Errata: 4.6-4.8 could emit empty vCPU records; those carry nothing.
                    let id = self.field(le_u32(&self.data, body), body, "X86_PV_VCPU_BASIC header")?;
                    scan.pv_vcpus.push((id, body + 8, u64::from(length).saturating_sub(8)));
                }
                rec::SHARED_INFO => {
                    if u64::from(length) != PAGE_SIZE as u64 {
                        return Err(self.bad(off, format!("SHARED_INFO has length {length}, expected 4096")));
                    }
                    self.shared_info = Some(body);
                }
                rec::HVM_CONTEXT => self.read_hvm_context(body, length)?,
                rec::HVM_PARAMS if length > 0 => self.read_hvm_params(off, body, length)?,
                rec::CHECKPOINT => {
                    return Err(self.unsupported(
                        off,
                        "libxc CHECKPOINT record",
                        "Remus/COLO checkpoint streams are not supported; use a plain `xl save` image",
                    ));
                }
                t if t & 0x8000_0000 == 0 && t > rec::KNOWN_MAX => {
                    return Err(self.unsupported(
                        off,
                        format!("mandatory libxc record type {t:#x}"),
                        "the image was written by a newer Xen; upgrade dormouse",
                    ));
                }
                // Policies, TSC info, extended vCPU state, VERIFY re-sends etc. are not needed
                // to read memory; VERIFY's pages are identical re-sends, skipping them is exact.
                _ => {}
            }
            off = next;
        }
    }

    fn read_page_data(&mut self, off: u64, body: u64, length: u32, scan: &mut Scan) -> Result<()> {
        let d = &self.data;
        if scan.page_entries.is_empty() {
            scan.first_page_record = off;
        }
        let count = u64::from(self.field(le_u32(d, body), body, "PAGE_DATA header")?);
        let length = u64::from(length);
        let pfns_len = count * 8;
        if count == 0 || 8 + pfns_len > length {
            return Err(self.bad(off, format!("PAGE_DATA count {count} does not fit its length {length}")));
        }
        let mut page_off = body + 8 + pfns_len;
        let mut with_data = 0u64;
        for i in 0..count {
            let at = body + 8 + i * 8;
            let word = self.field(le_u64(d, at), at, "PAGE_DATA pfn array")?;
            let ptype = (word >> 60) as usize;
            let pfn = word & ((1 << 52) - 1);
            self.page_types[ptype] += 1;
            match ptype {
                // NOTAB and (pinned) L1..L4 page tables carry a page body.
                0x0..=0x4 | 0x9..=0xC => {
                    scan.page_entries.push((pfn, Some(page_off)));
                    page_off += PAGE_SIZE as u64;
                    with_data += 1;
                }
                // BROKEN, XALLOC, XTAB: no body; the pfn reads as absent.
                0xD..=0xF => scan.page_entries.push((pfn, None)),
                _ => {
                    return Err(self.bad(at, format!("PAGE_DATA entry {i} has reserved page type {ptype:#x}")));
                }
            }
        }
        if 8 + pfns_len + with_data * PAGE_SIZE as u64 != length {
            return Err(self.bad(
                off,
                format!("PAGE_DATA length {length} does not match {count} entries with {with_data} page bodies"),
            ));
        }
        Ok(())
    }

    fn read_pv_info(&mut self, body: u64, length: u32) -> Result<()> {
        let d = &self.data;
        if length < 2 {
            return Err(self.bad(body - 8, format!("X86_PV_INFO has length {length}, expected 8")));
        }
        let guest_width = self.field(d.get(body as usize).copied(), body, "X86_PV_INFO")?;
        let pt_levels = self.field(d.get(body as usize + 1).copied(), body, "X86_PV_INFO")?;
        if !matches!(guest_width, 4 | 8) || !matches!(pt_levels, 3 | 4) {
            return Err(self.bad(
                body,
                format!("X86_PV_INFO guest width {guest_width} / {pt_levels} levels is invalid"),
            ));
        }
        self.pv_info = Some(PvInfo { guest_width, pt_levels });
        Ok(())
    }

    fn read_p2m_frames(&mut self, body: u64, length: u32) -> Result<()> {
        let d = &self.data;
        let start_pfn = self.field(le_u32(d, body), body, "X86_PV_P2M_FRAMES header")?;
        let end_pfn = self.field(le_u32(d, body + 4), body, "X86_PV_P2M_FRAMES header")?;
        let n = u64::from(length).saturating_sub(8) / 8;
        let frames = (0..n)
            .map(|i| self.field(le_u64(d, body + 8 + i * 8), body, "X86_PV_P2M_FRAMES list"))
            .collect::<Result<Vec<_>>>()?;
        self.p2m_frames = Some(P2mFrames {
            start_pfn,
            end_pfn,
            frames,
        });
        Ok(())
    }

    fn read_hvm_params(&mut self, off: u64, body: u64, length: u32) -> Result<()> {
        let d = &self.data;
        let count = u64::from(self.field(le_u32(d, body), body, "HVM_PARAMS header")?);
        if 8 + count * 16 != u64::from(length) {
            return Err(self.bad(
                off,
                format!("HVM_PARAMS count {count} does not match its length {length}"),
            ));
        }
        self.hvm_params = (0..count)
            .map(|i| {
                let at = body + 8 + i * 16;
                Ok((
                    self.field(le_u64(d, at), at, "HVM_PARAMS entry")?,
                    self.field(le_u64(d, at + 8), at, "HVM_PARAMS entry")?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(())
    }

    fn read_hvm_context(&mut self, body: u64, length: u32) -> Result<()> {
        let d = &self.data;
        let end = body + u64::from(length);
        let mut off = body;
        let mut entries = Vec::new();
        while off < end {
            let typecode = self.field(le_u16(d, off).filter(|_| off + 8 <= end), off, "HVM save descriptor")?;
            let instance = self.field(le_u16(d, off + 2), off, "HVM save descriptor")?;
            let len = self.field(le_u32(d, off + 4), off, "HVM save descriptor")?;
            let payload = off + 8;
            if payload + u64::from(len) > end {
                return Err(self.bad(
                    off,
                    format!("HVM save entry type {typecode} length {len} overruns HVM_CONTEXT"),
                ));
            }
            if typecode == 0 {
                break;
            }
            if entries.len() >= MAX_HVM_ENTRIES {
                return Err(self.bad(off, format!("more than {MAX_HVM_ENTRIES} HVM save entries")));
            }
            if typecode == 1 {
                let magic = self.field(le_u32(d, payload).filter(|_| len >= 4), payload, "HVM save header")?;
                if magic != HVM_SAVE_MAGIC {
                    return Err(self.bad(
                        payload,
                        format!("HVM save header magic {magic:#x}, expected {HVM_SAVE_MAGIC:#x}"),
                    ));
                }
            }
            entries.push(HvmSaveEntry {
                typecode,
                instance,
                offset: payload,
                length: len,
            });
            off = payload + u64::from(len);
        }
        // Later contexts (there should be one) replace earlier ones, like the restorer.
        self.hvm_entries = entries;
        Ok(())
    }

    fn decode_vcpus(&self, pv_vcpus: &[(u32, u64, u64)]) -> Result<Vec<VcpuState>> {
        // By id: a later context replaces an earlier one, like the restorer, in O(log n) each.
        let mut vcpus: std::collections::BTreeMap<u32, VcpuState> = std::collections::BTreeMap::new();
        match self.domain_type {
            XenDomainType::X86Pv => {
                let width = self.pv_info.map(|i| i.guest_width);
                for &(id, ctx, len) in pv_vcpus {
                    if width != Some(8) {
                        return Err(self.unsupported(
                            ctx,
                            format!("PV vCPU context for guest width {width:?}"),
                            "only 64-bit PV guests are supported (Linux dropped 32-bit PV in 5.9)",
                        ));
                    }
                    if len < VCPU_CONTEXT_X64_LEN {
                        return Err(self.bad(
                            ctx,
                            format!("X86_PV_VCPU_BASIC context of {len} bytes, expected {VCPU_CONTEXT_X64_LEN}"),
                        ));
                    }
                    let v =
                        pv64_vcpu(&self.data, ctx, id, Some).ok_or_else(|| self.bad(ctx, "truncated vCPU context"))?;
                    vcpus.insert(id, v);
                }
            }
            XenDomainType::X86Hvm => {
                for e in self.hvm_entries.iter().filter(|e| e.typecode == 2) {
                    // 1032 bytes in 4.17; 1016 in the older "compat" form without `flags`.
                    if e.length != 1032 && e.length != 1016 {
                        return Err(self.bad(
                            e.offset,
                            format!("hvm_hw_cpu of {} bytes, expected 1032 or 1016", e.length),
                        ));
                    }
                    let v = hvm_vcpu(&self.data, e.offset, u32::from(e.instance))
                        .ok_or_else(|| self.bad(e.offset, "truncated hvm_hw_cpu"))?;
                    vcpus.insert(v.id, v);
                }
            }
        }
        if vcpus.is_empty() {
            // Every save holds its vCPUs' contexts; without them there is no page-table root.
            let end = self.records.last().map_or(0, |r| r.offset);
            let wanted = match self.domain_type {
                XenDomainType::X86Pv => "X86_PV_VCPU_BASIC record",
                XenDomainType::X86Hvm => "CPU entry in HVM_CONTEXT",
            };
            return Err(self.bad(end, format!("the stream ends here without any {wanted}")));
        }
        Ok(vcpus.into_values().collect())
    }

    /// The fixed xl header.
    pub fn header(&self) -> &XlHeader {
        &self.header
    }

    /// The embedded libxl domain configuration, if the image carries one.
    pub fn config(&self) -> Option<&DomainConfig> {
        self.config.as_ref()
    }

    /// libxc stream version (2 or 3).
    pub fn libxc_version(&self) -> u32 {
        self.libxc_version
    }

    pub fn domain_type(&self) -> XenDomainType {
        self.domain_type
    }

    /// PV guest word size in bytes (4 or 8); `None` for HVM.
    pub fn guest_width(&self) -> Option<u8> {
        self.pv_info.map(|i| i.guest_width)
    }

    /// X86_PV_INFO, PV only.
    pub fn pv_info(&self) -> Option<PvInfo> {
        self.pv_info
    }

    pub fn page_shift(&self) -> u16 {
        self.page_shift
    }

    /// Version of the saving Xen (major, minor).
    pub fn xen_version(&self) -> (u32, u32) {
        self.xen_version
    }

    /// Every record of both stream layers, in file order (diagnostics).
    pub fn records(&self) -> &[StreamRecord] {
        &self.records
    }

    /// Counts of PAGE_DATA entries by type nibble (0 normal, 1-4 L1-L4, +8 pinned, 0xF XTAB...).
    pub fn page_type_counts(&self) -> &[u64; 16] {
        &self.page_types
    }

    /// X86_PV_P2M_FRAMES, PV only.
    pub fn p2m_frames(&self) -> Option<&P2mFrames> {
        self.p2m_frames.as_ref()
    }

    /// The entries of HVM_CONTEXT, HVM only.
    pub fn hvm_save_entries(&self) -> &[HvmSaveEntry] {
        &self.hvm_entries
    }

    /// Payload bytes of an HVM save entry.
    pub fn hvm_entry_bytes(&self, e: &HvmSaveEntry) -> Option<&[u8]> {
        slice_at(&self.data, e.offset, u64::from(e.length))
    }

    /// HVM_PARAMS as (index, value), HVM only.
    pub fn hvm_params(&self) -> &[(u64, u64)] {
        &self.hvm_params
    }

    /// The guest's shared_info page (SHARED_INFO record), PV only.
    pub fn shared_info(&self) -> Option<&[u8]> {
        slice_at(&self.data, self.shared_info?, PAGE_SIZE as u64)
    }
}

/// State accumulated while walking the stream.
#[derive(Default)]
struct Scan {
    first_page_record: u64,
    /// (pfn, page body offset or None for XTAB/XALLOC/BROKEN), in stream order.
    page_entries: Vec<(u64, Option<u64>)>,
    /// (vcpu id, context offset, context length) of each X86_PV_VCPU_BASIC.
    pv_vcpus: Vec<(u32, u64, u64)>,
}

impl PhysMemory for XlSaveImage {
    fn path(&self) -> &Path {
        &self.path
    }
    fn format(&self) -> ImageFormat {
        ImageFormat::XlSave
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
    fn domain_config(&self) -> Option<&DomainConfig> {
        self.config.as_ref()
    }
}
