//! Reads of guest virtual memory with the errors and partial-read rules the decoders need.

use super::{CHUNK, KallsymsError};
use crate::arch::virt::{VirtError, VirtualMemory};
use crate::source::memory::PAGE_SIZE;

/// A little-endian unsigned table entry of 4 or 8 bytes.
pub(super) fn le_uint(b: &[u8]) -> u64 {
    b.iter().rev().fold(0, |acc, &x| acc << 8 | x as u64)
}

pub(super) fn read_exact(
    mem: &dyn VirtualMemory,
    vaddr: u64,
    buf: &mut [u8],
    what: &'static str,
) -> Result<(), KallsymsError> {
    mem.read_virt(vaddr, buf)
        .map_err(|source| KallsymsError::Read { what, vaddr, source })
}

pub(super) fn read_u32(mem: &dyn VirtualMemory, vaddr: u64, what: &'static str) -> Result<u32, KallsymsError> {
    let mut b = [0u8; 4];
    read_exact(mem, vaddr, &mut b, what)?;
    Ok(u32::from_le_bytes(b))
}

pub(super) fn read_u64(mem: &dyn VirtualMemory, vaddr: u64, what: &'static str) -> Result<u64, KallsymsError> {
    let mut b = [0u8; 8];
    read_exact(mem, vaddr, &mut b, what)?;
    Ok(u64::from_le_bytes(b))
}

/// Up to `len` bytes at `vaddr`, stopping at the first unreadable page; the error is why it
/// stopped.
pub(super) fn read_upto(mem: &dyn VirtualMemory, vaddr: u64, len: usize) -> (Vec<u8>, Option<(u64, VirtError)>) {
    let mut buf = vec![0u8; len];
    if mem.read_virt(vaddr, &mut buf).is_ok() {
        return (buf, None);
    }
    let mut done = 0usize;
    while done < len {
        let va = vaddr.wrapping_add(done as u64);
        let n = (PAGE_SIZE - (va % PAGE_SIZE as u64) as usize).min(len - done);
        if let Err(e) = mem.read_virt(va, &mut buf[done..done + n]) {
            buf.truncate(done);
            return (buf, Some((va, e)));
        }
        done += n;
    }
    (buf, None)
}

/// `len` bytes at `vaddr` with unreadable pages left zero (for signature scans).
pub(super) fn read_sparse(mem: &dyn VirtualMemory, vaddr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    if mem.read_virt(vaddr, &mut buf).is_err() {
        let mut done = 0usize;
        while done < len {
            let va = vaddr.wrapping_add(done as u64);
            let n = (PAGE_SIZE - (va % PAGE_SIZE as u64) as usize).min(len - done);
            if mem.read_virt(va, &mut buf[done..done + n]).is_err() {
                buf[done..done + n].fill(0);
            }
            done += n;
        }
    }
    buf
}

/// The readable bytes just below `end`, at most back to `start`: returns them and the
/// address of the first.
pub(super) fn read_back(mem: &dyn VirtualMemory, start: u64, end: u64) -> (Vec<u8>, u64) {
    let len = (end - start) as usize;
    let mut buf = vec![0u8; len];
    if mem.read_virt(start, &mut buf).is_ok() {
        return (buf, start);
    }
    let mut from = end;
    while from > start {
        let page_start = (from - 1) & !(PAGE_SIZE as u64 - 1);
        let lo = page_start.max(start);
        let at = (lo - start) as usize;
        if mem.read_virt(lo, &mut buf[at..(from - start) as usize]).is_err() {
            break;
        }
        from = lo;
    }
    let skip = (from - start) as usize;
    buf.drain(..skip);
    (buf, from)
}

/// Sequential reader over a table of unknown length, in chunks.
pub(super) struct Reader<'m> {
    mem: &'m dyn VirtualMemory,
    base: u64,
    what: &'static str,
    buf: Vec<u8>,
    /// Table offset of `buf[0]`.
    buf_offset: u64,
    pos: usize,
}

impl<'m> Reader<'m> {
    pub(super) fn new(mem: &'m dyn VirtualMemory, base: u64, what: &'static str) -> Self {
        Reader {
            mem,
            base,
            what,
            buf: Vec::new(),
            buf_offset: 0,
            pos: 0,
        }
    }

    pub(super) fn offset(&self) -> u64 {
        self.buf_offset + self.pos as u64
    }

    /// Ensures `n` bytes are buffered at the cursor, reading further chunks as needed.
    fn fill(&mut self, n: usize) -> Result<(), KallsymsError> {
        if self.pos + n <= self.buf.len() {
            return Ok(());
        }
        self.buf.drain(..self.pos);
        self.buf_offset += self.pos as u64;
        self.pos = 0;
        let at = self.base.wrapping_add(self.buf_offset + self.buf.len() as u64);
        let (more, err) = read_upto(self.mem, at, CHUNK.max(n));
        self.buf.extend_from_slice(&more);
        if self.buf.len() < n {
            let (vaddr, source) = err.unwrap_or((at, VirtError::NotMapped { vaddr: at, level: 0 }));
            return Err(KallsymsError::Read {
                what: self.what,
                vaddr,
                source,
            });
        }
        Ok(())
    }

    /// Up to `n` bytes at the cursor without consuming them (fewer only at a mapping's end).
    pub(super) fn peek(&mut self, n: usize) -> Result<&[u8], KallsymsError> {
        if self.fill(n).is_err() {
            self.fill(1)?;
        }
        let end = (self.pos + n).min(self.buf.len());
        Ok(&self.buf[self.pos..end])
    }

    pub(super) fn skip(&mut self, n: usize) {
        self.pos += n;
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&[u8], KallsymsError> {
        self.fill(n)?;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
}
