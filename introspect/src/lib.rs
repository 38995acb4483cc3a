//! Guest memory sources and the Linux kernel model.
//!
//! Memory sources turn an image file into guest-physical pages plus saved vCPU state behind
//! one trait, [`PhysMemory`]: `xl save` images ([`XlSaveImage`]), `xl dump-core` cores
//! ([`XenCore`]), physical-address ELF dumps from QEMU or kdump ([`ElfCore`]) and raw memory
//! ([`RawMemory`]), and, behind cargo feature `xen`, a live paused Xen domain (`XenDomain`,
//! `open_live_domain`). [`open_memory`] picks the format by magic. Every parser treats the file
//! as hostile: lengths are checked, loops bounded, and malformed input yields an [`Error`]
//! naming the file and byte offset, never a panic.

// The layers, lowest first: each uses only those listed before it (tests/tests/layers.rs).
mod bytes;
mod error;
pub mod octal_escape;
// Memory sources: image files (and live domains) as guest-physical pages plus vCPU state.
mod source;
// Address translation: page tables over a memory source.
mod arch;
// What the kernel is: symbols and type layouts, from RAM, the disk, or an ISF profile.
mod profile;
// The Linux walkers, over a translated address space with a profile.
pub mod linux;

pub use arch::paging::{
    AddressSpace, DEFAULT_SCAN_BUDGET, DirectMap, KernelRoot, MappedRegion, ModeSource, PageSize, PagingError,
    PagingMode, Regions, Translation, detect_kernel_root,
};
pub use arch::virt::{BufferMemory, VirtError, VirtualMemory};
pub use error::{Error, Result};
pub use profile::btf::{
    ArrayInfo, Btf, BtfError, BtfResult, CarvedBtf, DatasecVar, IntEncoding, Kind as BtfKind, Member, MemberLocation,
    TypeId, find_kernel_btf,
};
pub use profile::isf::{Isf, IsfError, IsfMetadata, MAX_ISF_BYTES, MAX_TYPE_DEPTH, isf_from_btf_and_symbols};
pub use profile::kallsyms::{
    AddressEncoding, AddressTable, Kallsyms, KallsymsError, KallsymsLocation, KallsymsOptions, MAX_CARVE_RANGE,
    MAX_NAME_LEN, MAX_SYMBOLS, Markers, Symbol, SymbolMismatch, Symbols, SymbolsError, carve_kallsyms, compare_symbols,
    decode_kallsyms, kallsyms_from_vmcoreinfo,
};
pub use profile::kernel_image::{Compression, KernelImage, MAX_VMLINUX_LEN, Section};
pub use profile::kernel_map::{DEFAULT_KERNEL_IMAGE_SIZE, KernelImageMap, START_KERNEL_MAP};
pub use profile::vmcoreinfo::{
    LocatedVmcoreinfo, VMCOREINFO_MAX_BYTES, VMCOREINFO_MAX_LINE, VmcoreInfo, VmcoreinfoError, VmcoreinfoSource,
    find_vmcoreinfo_in_ram, load_vmcoreinfo, release_version,
};
pub use source::domain_config::{DiskConfig, DomainConfig, NicConfig};
pub use source::elf::{ElfCore, LoadSegment, XenCore, XenVersion};
pub use source::memory::{FrameSpace, GuestKind, ImageFormat, PAGE_SHIFT, PAGE_SIZE, PhysMemory, VcpuState};
pub use source::open::{detect, open_memory, open_memory_as};
pub use source::raw::RawMemory;
#[cfg(feature = "xen")]
pub use source::xen_live::{CHUNK_FRAMES, P2mSource, XenDomain, XenLiveInfo, open_live_domain};
pub use source::xl_save::{
    HvmSaveEntry, P2mFrames, PvInfo, StreamLayer, StreamRecord, XenDomainType, XlHeader, XlSaveImage,
};
