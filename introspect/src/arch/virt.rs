//! Guest-virtual memory: what the kernel model reads through. Implemented by the x86-64
//! page-table walker; kept as a narrow trait so decoders (kallsyms, BTF users, the task walk)
//! can be tested over any mapping.

/// Why a virtual read failed; the kernel model turns these into warnings or errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VirtError {
    #[error("virtual address {vaddr:#x} is not mapped (no present entry at page-table level {level})")]
    NotMapped { vaddr: u64, level: u8 },
    #[error("virtual address {vaddr:#x} maps to physical {paddr:#x}, which the image does not contain")]
    NotInImage { vaddr: u64, paddr: u64 },
    #[error("virtual address {vaddr:#x} is not canonical")]
    NonCanonical { vaddr: u64 },
    #[error("page table at physical {paddr:#x} for virtual {vaddr:#x}: {reason}")]
    BadTable { vaddr: u64, paddr: u64, reason: String },
}

/// A guest-virtual address space (one set of page tables, or a fixed linear mapping).
pub trait VirtualMemory {
    /// Guest-physical address backing `vaddr`.
    fn translate(&self, vaddr: u64) -> Result<u64, VirtError>;

    /// Copies `buf.len()` bytes at `vaddr`, crossing pages (each translated on its own).
    fn read_virt(&self, vaddr: u64, buf: &mut [u8]) -> Result<(), VirtError>;
}

/// A byte buffer mapped linearly at virtual address `base`: for crafted kernel memory in
/// tests and fuzzers, where page tables would only get in the way.
#[derive(Debug, Clone)]
pub struct BufferMemory<B> {
    pub base: u64,
    pub bytes: B,
}

impl<B: AsRef<[u8]>> VirtualMemory for BufferMemory<B> {
    fn translate(&self, vaddr: u64) -> Result<u64, VirtError> {
        let off = vaddr.wrapping_sub(self.base);
        if off < self.bytes.as_ref().len() as u64 {
            Ok(off)
        } else {
            Err(VirtError::NotMapped { vaddr, level: 0 })
        }
    }

    fn read_virt(&self, vaddr: u64, buf: &mut [u8]) -> Result<(), VirtError> {
        let off = self.translate(vaddr)? as usize;
        let src = off
            .checked_add(buf.len())
            .and_then(|end| self.bytes.as_ref().get(off..end))
            .ok_or(VirtError::NotMapped { vaddr, level: 0 })?;
        buf.copy_from_slice(src);
        Ok(())
    }
}
