//! Guest memory sources and the Linux kernel model.
//!
//! Memory sources turn an image file into guest-physical pages plus saved vCPU state behind
//! one trait, [`PhysMemory`]: `xl save` images ([`XlSaveImage`]), `xl dump-core` cores
//! ([`XenCore`]), physical-address ELF dumps from QEMU or kdump ([`ElfCore`]) and raw memory
//! ([`RawMemory`]), and, behind cargo feature `xen`, a live paused Xen domain (`XenDomain`,
//! `open_live_domain`). [`open_memory`] picks the format by magic. Every parser treats the file
//! as hostile: lengths are checked, loops bounded, and malformed input yields an [`Error`]
//! naming the file and byte offset, never a panic.

mod btf;
mod bytes;
mod domain_config;
mod elf;
mod error;
mod isf;
mod kallsyms;
mod kernel_image;
mod kernel_map;
pub mod linux;
mod memory;
pub mod octal_escape;
mod open;
mod paging;
mod raw;
mod virt;
mod vmcoreinfo;
#[cfg(feature = "xen")]
mod xen_live;
mod xl_save;

pub use btf::{
    ArrayInfo, Btf, BtfError, BtfResult, CarvedBtf, DatasecVar, IntEncoding, Kind as BtfKind, Member, MemberLocation,
    TypeId, find_kernel_btf,
};
pub use domain_config::{DiskConfig, DomainConfig, NicConfig};
pub use elf::{ElfCore, LoadSegment, XenCore, XenVersion};
pub use error::{Error, Result};
pub use isf::{Isf, IsfError, IsfMetadata, MAX_ISF_BYTES, MAX_TYPE_DEPTH, isf_from_btf_and_symbols};
pub use kallsyms::{
    AddressEncoding, AddressTable, Kallsyms, KallsymsError, KallsymsLocation, KallsymsOptions, MAX_CARVE_RANGE,
    MAX_NAME_LEN, MAX_SYMBOLS, Markers, Symbol, SymbolMismatch, Symbols, SymbolsError, carve_kallsyms, compare_symbols,
    decode_kallsyms, kallsyms_from_vmcoreinfo,
};
pub use kernel_image::{Compression, KernelImage, MAX_VMLINUX_LEN, Section};
pub use kernel_map::{DEFAULT_KERNEL_IMAGE_SIZE, KernelImageMap, START_KERNEL_MAP};
pub use memory::{FrameSpace, GuestKind, ImageFormat, PAGE_SHIFT, PAGE_SIZE, PhysMemory, VcpuState};
pub use open::{detect, open_memory, open_memory_as};
pub use paging::{
    AddressSpace, DEFAULT_SCAN_BUDGET, DirectMap, KernelRoot, MappedRegion, ModeSource, PageSize, PagingError,
    PagingMode, Regions, Translation, detect_kernel_root,
};
pub use raw::RawMemory;
pub use virt::{BufferMemory, VirtError, VirtualMemory};
pub use vmcoreinfo::{
    LocatedVmcoreinfo, VMCOREINFO_MAX_BYTES, VMCOREINFO_MAX_LINE, VmcoreInfo, VmcoreinfoError, VmcoreinfoSource,
    find_vmcoreinfo_in_ram, load_vmcoreinfo, release_version,
};
#[cfg(feature = "xen")]
pub use xen_live::{CHUNK_FRAMES, P2mSource, XenDomain, XenLiveInfo, open_live_domain};
pub use xl_save::{HvmSaveEntry, P2mFrames, PvInfo, StreamLayer, StreamRecord, XenDomainType, XlHeader, XlSaveImage};
