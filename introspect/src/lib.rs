//! Guest memory sources and the Linux kernel model.
//!
//! Memory sources turn an image file into guest-physical pages plus saved vCPU state behind
//! one trait, [`PhysMemory`]: `xl save` images ([`XlSaveImage`]), `xl dump-core` cores
//! ([`XenCore`]), physical-address ELF dumps from QEMU or kdump ([`ElfCore`]) and raw memory
//! ([`RawMemory`]). [`open_memory`] picks the format by magic. Every parser treats the file
//! as hostile: lengths are checked, loops bounded, and malformed input yields an [`Error`]
//! naming the file and byte offset, never a panic.

mod bytes;
mod elf;
mod error;
mod memory;
mod open;
mod raw;
mod virt;
mod xl_save;

pub use elf::{ElfCore, LoadSegment, XenCore, XenVersion};
pub use error::{Error, Result};
pub use memory::{FrameSpace, GuestKind, ImageFormat, PAGE_SHIFT, PAGE_SIZE, PhysMemory, VcpuState};
pub use open::{detect, open_memory, open_memory_as};
pub use raw::RawMemory;
pub use virt::{VirtError, VirtualMemory};
pub use xl_save::{
    DiskConfig, DomainConfig, HvmSaveEntry, NicConfig, P2mFrames, PvInfo, StreamLayer, StreamRecord, XenDomainType,
    XlHeader, XlSaveImage,
};
