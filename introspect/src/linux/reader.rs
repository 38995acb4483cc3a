//! Typed, bounded reads of guest kernel memory.
//!
//! Every pointer the walk follows was written by the guest, so every read may fail, every list
//! may be cyclic and every length may be absurd: reads return errors, list walks stop at a
//! count limit and on revisiting a node, strings stop at a maximum length.

use std::collections::HashSet;

use crate::virt::{VirtError, VirtualMemory};

/// No kernel list dormouse walks is legitimately longer: `pid_max` tops out at 4M (tasks),
/// and mounts, modules and interfaces are far fewer.
pub const MAX_LIST_LEN: usize = 1 << 22;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("reading {what}: {source}")]
    Virt {
        what: String,
        #[source]
        source: VirtError,
    },
    #[error("{what}: the list at {head:#x} revisits node {node:#x} after {steps} entries (corrupt or hostile list)")]
    Cycle {
        what: String,
        head: u64,
        node: u64,
        steps: usize,
    },
    #[error("{what}: the list at {head:#x} has more than {limit} entries (corrupt or hostile list)")]
    TooLong { what: String, head: u64, limit: usize },
}

pub type ReadResult<T> = Result<T, ReadError>;

/// Reads through the kernel's address space with context for error messages.
pub struct KernelReader<'a> {
    vm: &'a dyn VirtualMemory,
}

impl<'a> KernelReader<'a> {
    pub fn new(vm: &'a dyn VirtualMemory) -> Self {
        Self { vm }
    }

    pub fn vm(&self) -> &'a dyn VirtualMemory {
        self.vm
    }

    pub fn bytes(&self, vaddr: u64, len: usize, what: &str) -> ReadResult<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.vm.read_virt(vaddr, &mut buf).map_err(|source| ReadError::Virt {
            what: format!("{what} at {vaddr:#x}"),
            source,
        })?;
        Ok(buf)
    }

    pub fn u64(&self, vaddr: u64, what: &str) -> ReadResult<u64> {
        let b = self.bytes(vaddr, 8, what)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }

    pub fn u32(&self, vaddr: u64, what: &str) -> ReadResult<u32> {
        let b = self.bytes(vaddr, 4, what)?;
        Ok(u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
    }

    pub fn i32(&self, vaddr: u64, what: &str) -> ReadResult<i32> {
        Ok(self.u32(vaddr, what)? as i32)
    }

    /// A NUL-terminated string of at most `max` bytes, read page by page so a string near an
    /// unmapped page still reads. Invalid UTF-8 is replaced, never trusted.
    pub fn c_string(&self, vaddr: u64, max: usize, what: &str) -> ReadResult<String> {
        let mut out = Vec::new();
        let mut addr = vaddr;
        while out.len() < max {
            let room = (4096 - (addr % 4096) as usize).min(max - out.len());
            let chunk = self.bytes(addr, room, what)?;
            if let Some(nul) = chunk.iter().position(|b| *b == 0) {
                out.extend_from_slice(&chunk[..nul]);
                return Ok(String::from_utf8_lossy(&out).into_owned());
            }
            out.extend_from_slice(&chunk);
            addr = addr.wrapping_add(room as u64);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// A string stored inline in a fixed-size array (e.g. `comm[16]`, `utsname.release`).
    pub fn inline_string(&self, vaddr: u64, len: usize, what: &str) -> ReadResult<String> {
        let b = self.bytes(vaddr, len, what)?;
        let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
        Ok(String::from_utf8_lossy(&b[..end]).into_owned())
    }

    /// The container addresses of a circular `struct list_head` list whose head is at
    /// `head` and whose link sits `link_offset` bytes into each container.
    pub fn list(&self, head: u64, link_offset: u64, what: &str) -> ReadResult<Vec<u64>> {
        let mut nodes = Vec::new();
        let mut seen = HashSet::new();
        let mut node = self.u64(head, what)?;
        while node != head {
            if !seen.insert(node) {
                return Err(ReadError::Cycle {
                    what: what.to_owned(),
                    head,
                    node,
                    steps: nodes.len(),
                });
            }
            if nodes.len() >= MAX_LIST_LEN {
                return Err(ReadError::TooLong {
                    what: what.to_owned(),
                    head,
                    limit: MAX_LIST_LEN,
                });
            }
            nodes.push(node.wrapping_sub(link_offset));
            node = self.u64(node, what)?;
        }
        Ok(nodes)
    }

    /// A NULL-terminated singly linked list: `first` is the first node's address (0 = empty)
    /// and each node's next pointer sits at `next_offset`.
    pub fn chain(&self, first: u64, next_offset: u64, what: &str) -> ReadResult<Vec<u64>> {
        let mut nodes = Vec::new();
        let mut seen = HashSet::new();
        let mut node = first;
        while node != 0 {
            if !seen.insert(node) {
                return Err(ReadError::Cycle {
                    what: what.to_owned(),
                    head: first,
                    node,
                    steps: nodes.len(),
                });
            }
            if nodes.len() >= MAX_LIST_LEN {
                return Err(ReadError::TooLong {
                    what: what.to_owned(),
                    head: first,
                    limit: MAX_LIST_LEN,
                });
            }
            nodes.push(node);
            node = self.u64(node.wrapping_add(next_offset), what)?;
        }
        Ok(nodes)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A flat buffer mapped at a fixed virtual base, for walks over crafted memory.
    pub type FlatMemory = crate::virt::BufferMemory<Vec<u8>>;

    impl FlatMemory {
        pub fn put_u64(&mut self, vaddr: u64, v: u64) {
            let off = (vaddr - self.base) as usize;
            self.bytes[off..off + 8].copy_from_slice(&v.to_le_bytes());
        }
    }

    #[test]
    fn cyclic_list_is_an_error_not_a_hang() {
        let base = 0xffff_8880_0000_0000;
        let mut mem = FlatMemory {
            base,
            bytes: vec![0; 4096],
        };
        // head -> a -> b -> a (never back to head)
        let (head, a, b) = (base, base + 0x100, base + 0x200);
        mem.put_u64(head, a);
        mem.put_u64(a, b);
        mem.put_u64(b, a);
        let err = KernelReader::new(&mem).list(head, 0, "test list").unwrap_err();
        assert!(matches!(err, ReadError::Cycle { node, .. } if node == a), "{err}");
    }

    #[test]
    fn well_formed_list_and_chain() {
        let base = 0xffff_8880_0000_0000;
        let mut mem = FlatMemory {
            base,
            bytes: vec![0; 4096],
        };
        let (head, a, b) = (base, base + 0x100, base + 0x200);
        mem.put_u64(head, a + 8);
        mem.put_u64(a + 8, b + 8);
        mem.put_u64(b + 8, head);
        let r = KernelReader::new(&mem);
        assert_eq!(r.list(head, 8, "l").unwrap(), vec![a, b]);
        mem.put_u64(a + 16, b);
        mem.put_u64(b + 16, 0);
        let r = KernelReader::new(&mem);
        assert_eq!(r.chain(a, 16, "c").unwrap(), vec![a, b]);
    }

    #[test]
    fn strings_are_bounded_and_stop_at_unmapped_memory() {
        let base = 0xffff_8880_0000_0000;
        let mem = FlatMemory {
            base,
            bytes: vec![b'A'; 8192],
        };
        let r = KernelReader::new(&mem);
        assert_eq!(r.c_string(base, 100, "s").unwrap().len(), 100);
        assert!(r.c_string(base + 8000, 4096, "s").is_err());
    }
}
