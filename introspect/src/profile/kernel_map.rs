//! The x86-64 kernel image mapping as a fixed linear map: every kernel text/data/bss address
//! `v` in `[__START_KERNEL_map, __START_KERNEL_map + KERNEL_IMAGE_SIZE)` lives at physical
//! `v − __START_KERNEL_map + phys_base` (the kernel's own `__pa_symbol`). This reads kernel
//! symbols before any page table is known, which is how the page-table root itself is found.
//!
//! `phys_base` absorbs both KASLR slides: with a virtual slide `KERNELOFFSET` and a physical
//! load address `P` of `_text`, `phys_base = P − (0x1000000 + KERNELOFFSET)` for the default
//! link address `_text = 0xffffffff81000000`, which wraps "negative" when the kernel was placed
//! lower in physical memory than its virtual slide. A Xen PV guest has no KASLR and
//! `phys_base = 0` (its pseudo-physical frames start where the image was linked).

use std::ops::Range;

use crate::arch::virt::{VirtError, VirtualMemory};
use crate::profile::vmcoreinfo::{VmcoreInfo, VmcoreinfoError};
use crate::source::memory::{PAGE_SIZE, PhysMemory};

/// `__START_KERNEL_map`: base of the kernel image mapping on x86-64.
pub const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
/// `KERNEL_IMAGE_SIZE` with CONFIG_RANDOMIZE_BASE (1 GiB), used when VMCOREINFO omits it.
pub const DEFAULT_KERNEL_IMAGE_SIZE: u64 = 1 << 30;

/// The kernel image mapping of one guest, over its physical memory.
#[derive(Clone, Copy)]
pub struct KernelImageMap<'a> {
    mem: &'a dyn PhysMemory,
    phys_base: u64,
    image_size: u64,
}

impl std::fmt::Debug for KernelImageMap<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelImageMap")
            .field("image", &self.mem.path())
            .field("phys_base", &format_args!("{:#x}", self.phys_base))
            .field("image_size", &format_args!("{:#x}", self.image_size))
            .finish()
    }
}

impl<'a> KernelImageMap<'a> {
    /// A mapping with an explicit `phys_base` (wrapping, as the kernel stores it) and size
    /// (capped at the 2 GiB the mapping can span below the top of the address space).
    pub fn new(mem: &'a dyn PhysMemory, phys_base: u64, image_size: u64) -> Self {
        KernelImageMap {
            mem,
            phys_base,
            image_size: image_size.min(0u64.wrapping_sub(START_KERNEL_MAP)),
        }
    }

    /// The mapping VMCOREINFO describes: `NUMBER(phys_base)` and `NUMBER(KERNEL_IMAGE_SIZE)`.
    pub fn from_vmcoreinfo(mem: &'a dyn PhysMemory, info: &VmcoreInfo) -> Result<Self, VmcoreinfoError> {
        let phys_base = info.phys_base().ok_or(VmcoreinfoError::MissingKey {
            key: "NUMBER(phys_base)",
            remedy: "kernels before 4.10 (or non-x86-64 ones) do not export it: find phys_base another way \
                     (e.g. from the physical address of a known page) and use KernelImageMap::new",
        })?;
        let size = info
            .number("KERNEL_IMAGE_SIZE")
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(DEFAULT_KERNEL_IMAGE_SIZE);
        Ok(Self::new(mem, phys_base, size))
    }

    /// `phys_base` as the kernel stores it (wrapping).
    pub fn phys_base(&self) -> u64 {
        self.phys_base
    }

    /// The virtual range this mapping covers.
    pub fn range(&self) -> Range<u64> {
        START_KERNEL_MAP..START_KERNEL_MAP.wrapping_add(self.image_size)
    }
}

impl VirtualMemory for KernelImageMap<'_> {
    /// Outside the image mapping this reports `NotMapped` at level 0: no page table was
    /// consulted, the address is simply not a kernel image address.
    fn translate(&self, vaddr: u64) -> Result<u64, VirtError> {
        // Below the map the wrapped offset is huge, so one comparison covers both ends.
        let offset = vaddr.wrapping_sub(START_KERNEL_MAP);
        if offset >= self.image_size {
            return Err(VirtError::NotMapped { vaddr, level: 0 });
        }
        Ok(offset.wrapping_add(self.phys_base))
    }

    fn read_virt(&self, vaddr: u64, buf: &mut [u8]) -> Result<(), VirtError> {
        let mut done = 0usize;
        while done < buf.len() {
            let va = vaddr.wrapping_add(done as u64);
            let paddr = self.translate(va)?;
            let in_page = (paddr % PAGE_SIZE as u64) as usize;
            let n = (PAGE_SIZE - in_page).min(buf.len() - done);
            let page = self
                .mem
                .page(paddr >> crate::PAGE_SHIFT)
                .ok_or(VirtError::NotInImage { vaddr: va, paddr })?;
            let src = page
                .get(in_page..in_page + n)
                .ok_or(VirtError::NotInImage { vaddr: va, paddr })?;
            buf[done..done + n].copy_from_slice(src);
            done += n;
        }
        Ok(())
    }
}
