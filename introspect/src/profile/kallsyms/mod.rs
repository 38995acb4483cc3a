//! Kernel symbols: the kernel's own compressed kallsyms tables decoded from memory, and
//! System.map files, both into one [`Symbols`] table.
//!
//! kallsyms layout (scripts/kallsyms.c): `kallsyms_names` holds, per symbol, a length prefix
//! (one byte; since 6.1 two bytes when the first has its top bit set) followed by that many
//! indices into the 256-entry `kallsyms_token_table` (NUL-terminated strings located through
//! the u16 offsets of `kallsyms_token_index`); the first expanded character is the `nm` type
//! letter. `kallsyms_markers` gives the offset into `kallsyms_names` of every 256th symbol.
//! Addresses are `kallsyms_offsets` relative to `kallsyms_relative_base` (4.6+) or absolute
//! `kallsyms_addresses` (older, or !KALLSYMS_BASE_RELATIVE).
//!
//! The tables are located from VMCOREINFO `SYMBOL(kallsyms_*)` lines (6.0+) or carved by
//! signature from the kernel image ([`carve_kallsyms`]). Every count, length and offset comes
//! from the guest and is bounded before use.

mod carve;
mod decode;
mod read;
mod symbols;

pub use carve::carve_kallsyms;
pub use decode::{
    AddressEncoding, AddressTable, Kallsyms, KallsymsLocation, KallsymsOptions, Markers, decode_kallsyms,
    kallsyms_from_vmcoreinfo,
};
pub use symbols::{Symbol, SymbolMismatch, Symbols, compare_symbols};

use crate::arch::virt::VirtError;

/// Most symbols accepted in one table (a 6.1 distribution kernel has ~95 000).
pub const MAX_SYMBOLS: u64 = 1 << 21;
/// Longest accepted symbol name (the kernel's KSYM_NAME_LEN since 6.1), also the cap on one
/// token's length and on a symbol's token count.
pub const MAX_NAME_LEN: usize = 512;
/// Cap on the total bytes of decoded names (real kernels: ~3 MiB).
pub const MAX_NAMES_BYTES: usize = 64 << 20;

/// Most bytes [`carve_kallsyms`] searches: x86-64's largest KERNEL_IMAGE_SIZE.
pub const MAX_CARVE_RANGE: u64 = 1 << 30;

/// Chunk size for sequential reads and for the signature scan.
const CHUNK: usize = 1 << 20;

/// Why kallsyms tables could not be decoded or found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KallsymsError {
    #[error(
        "cannot read {what} at virtual address {vaddr:#x}: {source}; the table address is wrong or \
         that part of the kernel image is not in the memory image"
    )]
    Read {
        what: &'static str,
        vaddr: u64,
        #[source]
        source: VirtError,
    },
    #[error(
        "VMCOREINFO has no SYMBOL({symbol}); kernels before 6.0 do not export the kallsyms tables there: \
         carve them from the kernel image (carve_kallsyms) or supply a System.map"
    )]
    MissingVmcoreinfoSymbol { symbol: &'static str },
    #[error(
        "{what} at virtual address {vaddr:#x} is implausible: {detail}; the table address or the \
         kernel-version assumption (two-byte name lengths since 6.1) is wrong, or the image is corrupt"
    )]
    Corrupt {
        what: &'static str,
        vaddr: u64,
        detail: String,
    },
    #[error(
        "no reading of kallsyms_offsets at {vaddr:#x} (relative base {relative_base:#x}) gives sorted \
         addresses that place _stext at {expected}: {detail}; check that the tables and _stext belong to \
         the same kernel"
    )]
    AddressEncoding {
        vaddr: u64,
        relative_base: u64,
        expected: String,
        detail: String,
    },
    #[error(
        "no kallsyms tables found in virtual range {start:#x}..{end:#x}: {detail}; scan the whole kernel \
         image (from _text to _end), or supply a System.map"
    )]
    NotFound { start: u64, end: u64, detail: String },
}

/// Why a System.map could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SymbolsError {
    #[error(
        "System.map line {line}: {problem}; expected `<hex address> <type> <name>` lines (Debian's \
         /boot/System.map is a placeholder: the real one is in the linux-image-*-dbg package)"
    )]
    SystemMap { line: usize, problem: String },
    #[error("symbol {name:?}: {problem}; kernel symbol names are 1..=512 printable ASCII characters")]
    Entry { name: String, problem: String },
    #[error("the symbol table has no _text, so it cannot be relocated; use the kernel's real System.map")]
    NoText,
    #[error(
        "relocating {name} ({address:#x}) by {shift:#x} leaves the kernel image mapping; the runtime \
         _text {runtime_text:#x} does not belong to this kernel"
    )]
    Relocation {
        name: String,
        address: u64,
        shift: u64,
        runtime_text: u64,
    },
}
