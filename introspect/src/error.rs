//! Errors of the memory sources. Every variant names the file (or the live domain); format errors also carry the
//! byte offset and a hint on what to do.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error opening or reading a memory image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused to open, inspect or map the file.
    #[error("{}: cannot {action}: {source}; check that the file exists and is readable", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The file violates its format (truncated, corrupt or hostile).
    #[error("{}: at byte offset {offset:#x}: {problem}; {remedy}", path.display())]
    Malformed {
        path: PathBuf,
        offset: u64,
        problem: String,
        remedy: &'static str,
    },
    /// The file is well-formed but uses a variant this crate does not read.
    #[error("{}: at byte offset {offset:#x}: unsupported {what}; {remedy}", path.display())]
    Unsupported {
        path: PathBuf,
        offset: u64,
        what: String,
        remedy: &'static str,
    },
    /// No known magic at the start of the file.
    #[error(
        "{}: not a recognised memory image (its first bytes, at offset 0: {magic}); expected an `xl save` image or an \
         ELF core (xl dump-core, QEMU dump-guest-memory, kdump); a flat physical memory dump has no \
         magic: open it as raw (dormouse: --format raw, optionally --cr3 ADDR)",
        path.display()
    )]
    UnknownFormat { path: PathBuf, magic: String },
    /// A guest-physical read touched a page the image does not contain.
    #[error(
        "{}: guest-physical address {paddr:#x} (pfn {:#x}) is not present in the image; the page was \
         not saved (ballooned out, not RAM, or outside the dump)",
        path.display(),
        paddr >> crate::PAGE_SHIFT
    )]
    NotPresent { path: PathBuf, paddr: u64 },
    /// A Xen library call failed while attaching to or reading a live domain (feature `xen`).
    #[error("Xen domain {domid}: {call} failed: {source}; {remedy}")]
    XenCall {
        domid: u32,
        /// The libxenctrl/libxenforeignmemory function that failed.
        call: &'static str,
        #[source]
        source: std::io::Error,
        remedy: &'static str,
    },
    /// A live Xen domain cannot be read as it is (running, dying, unsupported guest type, or a
    /// guest-maintained table that does not hold up).
    #[error("Xen domain {domid}: {problem}; {remedy}")]
    XenDomain {
        domid: u32,
        problem: String,
        remedy: &'static str,
    },
}
