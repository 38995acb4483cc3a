//! Typed, bounded reads of guest kernel memory.
//!
//! Every pointer the walk follows was written by the guest, so every read may fail, every list
//! may be cyclic and every length may be absurd: reads return errors, list walks stop at a
//! count limit and on revisiting a node, strings stop at a maximum length.

use std::collections::HashSet;

use crate::arch::virt::{VirtError, VirtualMemory};

/// No kernel list dormouse walks is legitimately longer: `pid_max` tops out at 4M (tasks),
/// and mounts, modules and interfaces are far fewer.
pub const MAX_LIST_LEN: usize = 1 << 22;

/// Longest single read: the largest area the walk reads in one piece is a process's
/// environment, which it caps at 2 MiB; no kernel struct or array it reads comes near.
pub const MAX_READ: usize = 4 << 20;

/// Longest string stored inline in a struct: those the walk reads (`comm` 16, utsname fields
/// 65, module names 56, interface names 16, CPU model names 64 bytes) are far below a page, so
/// a bigger size comes from corrupt or hostile type information.
pub const MAX_INLINE_STRING: usize = 4096;

const PAGE: usize = 4096;

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
    #[error(
        "{what} at {vaddr:#x}: {len} bytes is more than the {limit} such a read can be \
         (corrupt or hostile type information or length)"
    )]
    TooLarge {
        what: String,
        vaddr: u64,
        len: usize,
        limit: usize,
    },
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

    /// `len` bytes at `vaddr`, at most [`MAX_READ`]. Read page by page, so memory grows only
    /// with what the image holds, whatever `len` claims.
    pub fn bytes(&self, vaddr: u64, len: usize, what: &str) -> ReadResult<Vec<u8>> {
        at_most(len, MAX_READ, vaddr, what)?;
        let mut buf = Vec::with_capacity(len.min(PAGE));
        let mut addr = vaddr;
        while buf.len() < len {
            let start = buf.len();
            let room = (PAGE - (addr % PAGE as u64) as usize).min(len - start);
            buf.resize(start + room, 0);
            self.vm
                .read_virt(addr, &mut buf[start..])
                .map_err(|source| ReadError::Virt {
                    what: format!("{what} at {vaddr:#x}"),
                    source,
                })?;
            addr = addr.wrapping_add(room as u64);
        }
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
        at_most(len, MAX_INLINE_STRING, vaddr, what)?;
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

/// Refuses a read of `len` bytes longer than `limit`, naming what and where.
fn at_most(len: usize, limit: usize, vaddr: u64, what: &str) -> ReadResult<()> {
    if len > limit {
        return Err(ReadError::TooLarge {
            what: what.to_owned(),
            vaddr,
            len,
            limit,
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A flat buffer mapped at a fixed virtual base, for walks over crafted memory.
    pub type FlatMemory = crate::arch::virt::BufferMemory<Vec<u8>>;

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
    fn reads_are_bounded_by_the_limit_and_the_image() {
        let base = 0xffff_8880_0000_0000;
        let mem = FlatMemory {
            base,
            bytes: (0..8192u32).map(|i| i as u8).collect(),
        };
        let r = KernelReader::new(&mem);
        // Across a page boundary, as one read did.
        assert_eq!(
            r.bytes(base + 4090, 12, "x").unwrap(),
            (4090..4102u32).map(|i| i as u8).collect::<Vec<_>>()
        );
        let err = r.bytes(base, MAX_READ + 1, "x").unwrap_err();
        assert!(
            matches!(err, ReadError::TooLarge { len, .. } if len == MAX_READ + 1),
            "{err}"
        );
        let err = r.inline_string(base, u32::MAX as usize, "module.name").unwrap_err();
        assert!(
            err.to_string()
                .contains("module.name at 0xffff888000000000: 4294967295 bytes"),
            "{err}"
        );
        // Within the limit but past the image: fails at the first unmapped page.
        assert!(matches!(r.bytes(base, MAX_READ, "x"), Err(ReadError::Virt { .. })));
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
