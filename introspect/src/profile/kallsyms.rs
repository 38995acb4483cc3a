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

use std::ops::Range;

use serde::Serialize;

use crate::arch::virt::{VirtError, VirtualMemory};
use crate::profile::kernel_map::START_KERNEL_MAP;
use crate::profile::vmcoreinfo::VmcoreInfo;
use crate::source::memory::PAGE_SIZE;

/// Most symbols accepted in one table (a 6.1 distribution kernel has ~95 000).
pub const MAX_SYMBOLS: u64 = 1 << 21;
/// Longest accepted symbol name (the kernel's KSYM_NAME_LEN since 6.1), also the cap on one
/// token's length and on a symbol's token count.
pub const MAX_NAME_LEN: usize = 512;
/// Cap on the total bytes of decoded names (real kernels: ~3 MiB).
pub const MAX_NAMES_BYTES: usize = 64 << 20;

/// Most bytes [`carve_kallsyms`] searches: x86-64's largest KERNEL_IMAGE_SIZE.
pub const MAX_CARVE_RANGE: u64 = 1 << 30;

/// Bytes of `kallsyms_names` per 256 symbols that a marker step may span: at least a length
/// byte and one token per symbol, at most a two-byte length and `MAX_NAME_LEN` tokens.
const MARKER_STEP: Range<u64> = 512..256 * (2 + MAX_NAME_LEN as u64) + 1;
/// Single-character tokens for the digits sit at their ASCII codes 0x30..=0x39, an anchor
/// present in every token table (vmlinux-to-elf's signature).
const DIGIT_TOKENS: &[u8; 20] = b"0\x001\x002\x003\x004\x005\x006\x007\x008\x009\x00";
/// How far below the token table the markers and names are looked for when carving:
/// `kallsyms_seqs_of_names` (3 bytes per symbol) plus markers plus names of a large kernel.
const CARVE_BACK_WINDOW: u64 = 24 << 20;
/// Digit-token runs [`carve_kallsyms`] tries before giving up: a kernel has one token table,
/// and each try may read `CARVE_BACK_WINDOW`, so a guest planting runs must not buy unbounded
/// work.
const MAX_CARVE_CANDIDATES: usize = 64;
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

// ---------------------------------------------------------------------------------------------
// The symbol table
// ---------------------------------------------------------------------------------------------

/// One symbol, borrowed from a [`Symbols`] table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Symbol<'a> {
    pub name: &'a str,
    pub address: u64,
    /// The `nm` type letter (`T` text, `D` data, `A` absolute/per-CPU, lower case = local).
    pub kind: char,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    address: u64,
    name_start: u32,
    name_len: u16,
    kind: u8,
}

/// A kernel symbol table: address-sorted (stable, so equal addresses keep source order),
/// with lookup by name and by address. Names share one arena to keep ~10^5 symbols cheap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Symbols {
    entries: Vec<Entry>,
    names: String,
    /// Entry indices sorted by (name, address order).
    by_name: Vec<u32>,
}

impl Symbols {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn symbol(&self, e: &Entry) -> Symbol<'_> {
        let start = e.name_start as usize;
        Symbol {
            name: &self.names[start..start + e.name_len as usize],
            address: e.address,
            kind: char::from(e.kind),
        }
    }

    /// Symbol `i` in address order.
    pub fn get(&self, i: usize) -> Option<Symbol<'_>> {
        self.entries.get(i).map(|e| self.symbol(e))
    }

    /// All symbols in address order.
    pub fn iter(&self) -> impl Iterator<Item = Symbol<'_>> + '_ {
        self.entries.iter().map(|e| self.symbol(e))
    }

    /// Symbols called `name`, lowest address first (kernels have many duplicate static names).
    pub fn lookup_all<'s>(&'s self, name: &str) -> impl Iterator<Item = Symbol<'s>> {
        let start = self.by_name.partition_point(|&i| self.name_of(i) < name);
        self.by_name[start..]
            .iter()
            .map(|&i| self.symbol(&self.entries[i as usize]))
            .take_while(move |s| s.name == name)
    }

    fn name_of(&self, i: u32) -> &str {
        self.symbol(&self.entries[i as usize]).name
    }

    /// The lowest-addressed symbol called `name`.
    pub fn lookup(&self, name: &str) -> Option<Symbol<'_>> {
        self.lookup_all(name).next()
    }

    /// Address of the lowest-addressed symbol called `name`.
    pub fn address_of(&self, name: &str) -> Option<u64> {
        self.lookup(name).map(|s| s.address)
    }

    /// The symbol at or below `address` (the last one when several share it) and the offset
    /// of `address` from it.
    pub fn nearest(&self, address: u64) -> Option<(Symbol<'_>, u64)> {
        let i = self.entries.partition_point(|e| e.address <= address).checked_sub(1)?;
        let e = &self.entries[i];
        Some((self.symbol(e), address - e.address))
    }

    /// Up to `count` names that occur exactly once, spread evenly over the address range,
    /// with `_text` and `_stext` first when present: a cheap fingerprint for
    /// [`compare_symbols`].
    pub fn sample_names(&self, count: usize) -> Vec<&str> {
        let unique: Vec<u32> = self
            .by_name
            .iter()
            .enumerate()
            .filter(|&(k, &i)| {
                let name = self.name_of(i);
                (k == 0 || self.name_of(self.by_name[k - 1]) != name)
                    && self.by_name.get(k + 1).is_none_or(|&j| self.name_of(j) != name)
            })
            .map(|(_, &i)| i)
            .collect();
        let mut by_address = unique;
        by_address.sort_unstable();
        let mut out: Vec<&str> = ["_text", "_stext"]
            .into_iter()
            .filter(|n| self.lookup(n).is_some())
            .collect();
        let step = (by_address.len() / count.max(1)).max(1);
        for &i in by_address.iter().step_by(step) {
            if out.len() >= count {
                break;
            }
            let name = self.name_of(i);
            if !out.contains(&name) {
                out.push(name);
            }
        }
        out.truncate(count);
        out
    }

    /// Parses System.map (`nm -n` output: `<hex address> <type> <name>` per line). Empty
    /// lines are skipped; anything else malformed is an error naming the line.
    pub fn from_system_map(text: &str) -> Result<Symbols, SymbolsError> {
        let mut b = Builder::default();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let bad = |problem: String| SymbolsError::SystemMap { line: line_no, problem };
            if line.trim().is_empty() {
                continue;
            }
            let mut fields = line.split_ascii_whitespace();
            let (Some(addr), Some(kind), Some(name), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(bad(format!("{:?} does not have exactly three fields", truncated(line))));
            };
            let address = u64::from_str_radix(addr, 16).map_err(|_| bad(format!("address {addr:?} is not hex")))?;
            let &[kind] = kind.as_bytes() else {
                return Err(bad(format!("type {kind:?} is not one letter")));
            };
            if !kind.is_ascii_graphic() {
                return Err(bad(format!("type byte {kind:#04x} is not a letter")));
            }
            if b.entries.len() as u64 >= MAX_SYMBOLS {
                return Err(bad(format!("more than {MAX_SYMBOLS} symbols")));
            }
            b.push(name.as_bytes(), address, kind)
                .map_err(|problem| bad(format!("symbol {:?}: {problem}", truncated(name))))?;
        }
        Ok(b.finish())
    }

    /// Builds a table from `(name, address, nm type letter)` triples, for symbol sources that
    /// are neither System.map nor kallsyms (a Volatility ISF). Names are checked as
    /// System.map names are.
    pub fn from_entries<'n>(entries: impl IntoIterator<Item = (&'n str, u64, u8)>) -> Result<Symbols, SymbolsError> {
        let mut b = Builder::default();
        for (name, address, kind) in entries {
            let bad = |problem: String| SymbolsError::Entry {
                name: truncated(name).to_owned(),
                problem,
            };
            if b.entries.len() as u64 >= MAX_SYMBOLS {
                return Err(bad(format!("more than {MAX_SYMBOLS} symbols")));
            }
            b.push(name.as_bytes(), address, kind).map_err(bad)?;
        }
        Ok(b.finish())
    }

    /// This table with every kernel-image address (at or above `__START_KERNEL_map`) moved
    /// so that `_text` lands on `runtime_text`: the KASLR relocation of a link-time
    /// System.map. Per-CPU offsets and other absolute values stay as they are.
    pub fn relocated(&self, runtime_text: u64) -> Result<Symbols, SymbolsError> {
        let link_text = self.address_of("_text").ok_or(SymbolsError::NoText)?;
        let shift = runtime_text.wrapping_sub(link_text);
        let mut out = self.clone();
        for e in &mut out.entries {
            if e.address >= START_KERNEL_MAP {
                let moved = e.address.wrapping_add(shift);
                if moved < START_KERNEL_MAP {
                    return Err(SymbolsError::Relocation {
                        name: self.symbol(e).name.to_owned(),
                        address: e.address,
                        shift,
                        runtime_text,
                    });
                }
                e.address = moved;
            }
        }
        // A uniform shift of the upper group keeps the order; the name index stays valid.
        Ok(out)
    }
}

/// A name whose address differs between two symbol tables (or that only one has).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SymbolMismatch {
    pub name: String,
    pub expected: Option<u64>,
    pub found: Option<u64>,
}

impl std::fmt::Display for SymbolMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |a: Option<u64>| a.map_or_else(|| "absent".to_owned(), |a| format!("{a:#x}"));
        write!(
            f,
            "{}: expected {}, found {}",
            self.name,
            show(self.expected),
            show(self.found)
        )
    }
}

/// Compares the (lowest) address of each of `names` in two tables — e.g. a System.map
/// against the kallsyms decoded from memory — to catch a profile from the wrong kernel or
/// the wrong KASLR relocation. `Ok` carries how many names both tables have (zero means
/// nothing was actually compared); `Err` lists every difference.
pub fn compare_symbols(expected: &Symbols, found: &Symbols, names: &[&str]) -> Result<usize, Vec<SymbolMismatch>> {
    let mut matched = 0;
    let mut mismatches = Vec::new();
    for &name in names {
        let (e, f) = (expected.address_of(name), found.address_of(name));
        if e != f {
            mismatches.push(SymbolMismatch {
                name: name.to_owned(),
                expected: e,
                found: f,
            });
        } else if e.is_some() {
            matched += 1;
        }
    }
    if mismatches.is_empty() {
        Ok(matched)
    } else {
        Err(mismatches)
    }
}

fn truncated(s: &str) -> &str {
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[derive(Default)]
struct Builder {
    entries: Vec<Entry>,
    names: String,
}

impl Builder {
    /// Adds a symbol; the name must be printable ASCII without spaces, as kernel symbols are.
    fn push(&mut self, name: &[u8], address: u64, kind: u8) -> Result<(), String> {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(format!("name length {} is outside 1..={MAX_NAME_LEN}", name.len()));
        }
        if let Some(&b) = name.iter().find(|b| !b.is_ascii_graphic()) {
            return Err(format!("name byte {b:#04x} is not printable ASCII"));
        }
        if self.names.len() + name.len() > MAX_NAMES_BYTES {
            return Err(format!("names exceed {MAX_NAMES_BYTES} bytes in total"));
        }
        let name_start = self.names.len() as u32;
        // Checked above: printable ASCII is valid UTF-8.
        self.names
            .push_str(std::str::from_utf8(name).map_err(|e| e.to_string())?);
        self.entries.push(Entry {
            address,
            name_start,
            name_len: name.len() as u16,
            kind,
        });
        Ok(())
    }

    fn finish(mut self) -> Symbols {
        self.entries.sort_by_key(|e| e.address);
        let mut s = Symbols {
            entries: self.entries,
            names: self.names,
            by_name: Vec::new(),
        };
        // (name, index) pairs are unique, so an unstable sort is still deterministic.
        let mut keyed: Vec<(&str, u32)> = (0..s.entries.len() as u32).map(|i| (s.name_of(i), i)).collect();
        keyed.sort_unstable();
        let by_name = keyed.into_iter().map(|(_, i)| i).collect();
        s.by_name = by_name;
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding kallsyms
// ---------------------------------------------------------------------------------------------

/// How symbol addresses are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AddressTable {
    /// `int kallsyms_offsets[]` plus `unsigned long kallsyms_relative_base` (4.6+).
    Relative { offsets: u64, relative_base: u64 },
    /// `unsigned long kallsyms_addresses[]` (before 4.6, or !KALLSYMS_BASE_RELATIVE until 6.11).
    Absolute { addresses: u64 },
}

/// `kallsyms_markers`: its address and element size (u32 since 4.20, `long` before).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Markers {
    pub vaddr: u64,
    pub entry_size: u8,
}

/// Runtime virtual addresses of the kallsyms tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KallsymsLocation {
    pub num_syms: u64,
    pub names: u64,
    /// Not in VMCOREINFO; when known (carving), decoding checks the names against it.
    pub markers: Option<Markers>,
    pub token_table: u64,
    pub token_index: u64,
    pub addresses: AddressTable,
}

impl KallsymsLocation {
    /// The tables VMCOREINFO names (Linux 6.0+, or backports of "vmcoreinfo: include kallsyms
    /// symbols").
    pub fn from_vmcoreinfo(info: &VmcoreInfo) -> Result<Self, KallsymsError> {
        let sym = |symbol: &'static str| {
            info.symbol(symbol)
                .ok_or(KallsymsError::MissingVmcoreinfoSymbol { symbol })
        };
        let addresses = match (info.symbol("kallsyms_offsets"), info.symbol("kallsyms_addresses")) {
            (Some(offsets), _) => AddressTable::Relative {
                offsets,
                relative_base: sym("kallsyms_relative_base")?,
            },
            (None, Some(addresses)) => AddressTable::Absolute { addresses },
            (None, None) => {
                return Err(KallsymsError::MissingVmcoreinfoSymbol {
                    symbol: "kallsyms_offsets",
                });
            }
        };
        Ok(KallsymsLocation {
            num_syms: sym("kallsyms_num_syms")?,
            names: sym("kallsyms_names")?,
            markers: None,
            token_table: sym("kallsyms_token_table")?,
            token_index: sym("kallsyms_token_index")?,
            addresses,
        })
    }
}

/// What decoding needs to know beyond the table addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KallsymsOptions {
    /// Two-byte name lengths (Linux 6.1+, "kallsyms: support big kernel symbols"). Not
    /// detectable from the tables themselves, so it follows the kernel release.
    pub big_symbols: bool,
    /// Runtime `_stext` (VMCOREINFO `SYMBOL(_stext)`): decides how `kallsyms_offsets` is read.
    pub stext: Option<u64>,
}

impl KallsymsOptions {
    /// Options for the kernel VMCOREINFO describes.
    pub fn from_vmcoreinfo(info: &VmcoreInfo) -> Self {
        KallsymsOptions {
            big_symbols: info.release_version().is_some_and(|v| v >= (6, 1)),
            stext: info.symbol("_stext"),
        }
    }
}

/// How `kallsyms_offsets` entries turned out to be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddressEncoding {
    /// `kallsyms_addresses`: absolute values.
    Absolute,
    /// `relative_base + (u32)offset`.
    Relative,
    /// CONFIG_KALLSYMS_ABSOLUTE_PERCPU (x86-64 SMP until 6.15): non-negative entries are
    /// absolute (per-CPU offsets), negative ones mean `relative_base − 1 − offset`.
    AbsolutePercpu,
}

/// Decoded kallsyms: where the tables were, how addresses were encoded, the symbols.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kallsyms {
    pub location: KallsymsLocation,
    pub encoding: AddressEncoding,
    pub symbols: Symbols,
}

/// Decodes the kallsyms tables VMCOREINFO names, with options following its release and
/// `_stext`.
pub fn kallsyms_from_vmcoreinfo(mem: &dyn VirtualMemory, info: &VmcoreInfo) -> Result<Kallsyms, KallsymsError> {
    let location = KallsymsLocation::from_vmcoreinfo(info)?;
    decode_kallsyms(mem, &location, &KallsymsOptions::from_vmcoreinfo(info))
}

/// Decodes every symbol of the tables at `loc`.
pub fn decode_kallsyms(
    mem: &dyn VirtualMemory,
    loc: &KallsymsLocation,
    opts: &KallsymsOptions,
) -> Result<Kallsyms, KallsymsError> {
    let count = read_u32(mem, loc.num_syms, "kallsyms_num_syms")? as u64;
    if count == 0 || count > MAX_SYMBOLS {
        return Err(KallsymsError::Corrupt {
            what: "kallsyms_num_syms",
            vaddr: loc.num_syms,
            detail: format!("{count} symbols (accepted: 1..={MAX_SYMBOLS})"),
        });
    }
    let count = count as usize;
    let tokens = Tokens::read(mem, loc.token_table, loc.token_index)?;
    let names = decode_names(mem, loc.names, count, &tokens, opts.big_symbols)?;
    if let Some(markers) = loc.markers {
        check_markers(mem, markers, &names.group_starts)?;
    }
    let (addresses, encoding) = read_addresses(mem, &loc.addresses, count, &names, opts.stext)?;
    let mut b = Builder {
        entries: Vec::with_capacity(count),
        names: String::with_capacity(names.arena.len()),
    };
    for (i, (&(start, len), &address)) in names.spans.iter().zip(&addresses).enumerate() {
        let raw = &names.arena[start..start + len];
        // decode_names guarantees at least the type byte and one name byte.
        b.push(&raw[1..], address, raw[0])
            .map_err(|detail| KallsymsError::Corrupt {
                what: "kallsyms_names",
                vaddr: loc.names,
                detail: format!("symbol {i}: {detail}"),
            })?;
    }
    Ok(Kallsyms {
        location: *loc,
        encoding,
        symbols: b.finish(),
    })
}

/// The 256 tokens, as ranges into the bytes of `kallsyms_token_table`.
struct Tokens {
    bytes: Vec<u8>,
    spans: [(u16, u16); 256],
}

impl Tokens {
    fn read(mem: &dyn VirtualMemory, table: u64, index: u64) -> Result<Tokens, KallsymsError> {
        let mut raw = [0u8; 512];
        read_exact(mem, index, &mut raw, "kallsyms_token_index")?;
        let offsets: Vec<u16> = raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        let max = offsets.iter().copied().max().unwrap_or(0) as usize;
        // The longest token ends within MAX_NAME_LEN bytes of the highest offset; reading less
        // is fine when the mapping ends first (the NUL check below catches a short table).
        let (bytes, _) = read_upto(mem, table, max + MAX_NAME_LEN + 1);
        let mut spans = [(0u16, 0u16); 256];
        for (i, &off) in offsets.iter().enumerate() {
            let start = off as usize;
            let tail = bytes.get(start..).unwrap_or(&[]);
            let limit = tail.len().min(MAX_NAME_LEN + 1);
            let len = memchr::memchr(0, &tail[..limit]).ok_or_else(|| KallsymsError::Corrupt {
                what: "kallsyms_token_table",
                vaddr: table.wrapping_add(start as u64),
                detail: format!("token {i} has no terminating NUL within {MAX_NAME_LEN} bytes (or is unreadable)"),
            })?;
            spans[i] = (off, len as u16);
        }
        Ok(Tokens { bytes, spans })
    }

    fn get(&self, i: u8) -> &[u8] {
        let (start, len) = self.spans[i as usize];
        &self.bytes[start as usize..start as usize + len as usize]
    }
}

/// Expanded names (type letter first), and the `kallsyms_names` offset of every 256th symbol.
struct Names {
    arena: Vec<u8>,
    spans: Vec<(usize, usize)>,
    group_starts: Vec<u64>,
    stext: Option<usize>,
}

/// Length prefix of one symbol in `kallsyms_names`: (token count, prefix bytes), or `None`
/// when `bytes` is too short. Since 6.1 a first byte with the top bit set is followed by the
/// high seven bits.
fn symbol_len(bytes: &[u8], big_symbols: bool) -> Option<(usize, usize)> {
    let b0 = *bytes.first()?;
    if big_symbols && b0 & 0x80 != 0 {
        let b1 = *bytes.get(1)?;
        Some(((b0 & 0x7f) as usize | (b1 as usize) << 7, 2))
    } else {
        Some((b0 as usize, 1))
    }
}

fn decode_names(
    mem: &dyn VirtualMemory,
    base: u64,
    count: usize,
    tokens: &Tokens,
    big_symbols: bool,
) -> Result<Names, KallsymsError> {
    let mut r = Reader::new(mem, base, "kallsyms_names");
    let mut names = Names {
        arena: Vec::new(),
        spans: Vec::new(),
        group_starts: Vec::new(),
        stext: None,
    };
    for i in 0..count {
        let offset = r.offset();
        if i % 256 == 0 {
            names.group_starts.push(offset);
        }
        let corrupt = |detail: String| KallsymsError::Corrupt {
            what: "kallsyms_names",
            vaddr: base.wrapping_add(offset),
            detail: format!("symbol {i}: {detail}"),
        };
        let head = r.peek(2)?;
        let (len, prefix) = symbol_len(head, big_symbols).ok_or_else(|| corrupt("truncated length".into()))?;
        if len == 0 || len > MAX_NAME_LEN {
            return Err(corrupt(format!("{len} tokens (accepted: 1..={MAX_NAME_LEN})")));
        }
        r.skip(prefix);
        let start = names.arena.len();
        for &t in r.take(len)? {
            names.arena.extend_from_slice(tokens.get(t));
            if names.arena.len() - start > MAX_NAME_LEN + 1 {
                return Err(corrupt(format!("name expands beyond {MAX_NAME_LEN} characters")));
            }
        }
        let expanded = names.arena.len() - start;
        if expanded < 2 {
            return Err(corrupt(
                "name expands to less than a type letter and one character".into(),
            ));
        }
        // nm type letters are letters; anything else means misaligned or garbled names.
        if !names.arena[start].is_ascii_alphabetic() {
            return Err(corrupt(format!(
                "type {:?} is not a letter",
                char::from(names.arena[start])
            )));
        }
        if names.arena.len() > MAX_NAMES_BYTES {
            return Err(corrupt(format!("names exceed {MAX_NAMES_BYTES} bytes in total")));
        }
        if names.stext.is_none() && &names.arena[start + 1..] == b"_stext" {
            names.stext = Some(i);
        }
        names.spans.push((start, expanded));
    }
    Ok(names)
}

fn check_markers(mem: &dyn VirtualMemory, markers: Markers, expected: &[u64]) -> Result<(), KallsymsError> {
    let size = markers.entry_size as usize;
    let mut raw = vec![0u8; expected.len() * size];
    read_exact(mem, markers.vaddr, &mut raw, "kallsyms_markers")?;
    for (k, (chunk, &want)) in raw.chunks_exact(size).zip(expected).enumerate() {
        let got = le_uint(chunk);
        if got != want {
            return Err(KallsymsError::Corrupt {
                what: "kallsyms_markers",
                vaddr: markers.vaddr.wrapping_add((k * size) as u64),
                detail: format!(
                    "marker {k} says symbol {} starts at names offset {got:#x}, decoding found {want:#x}",
                    k * 256
                ),
            });
        }
    }
    Ok(())
}

fn le_uint(b: &[u8]) -> u64 {
    b.iter().rev().fold(0, |acc, &x| acc << 8 | x as u64)
}

fn read_addresses(
    mem: &dyn VirtualMemory,
    table: &AddressTable,
    count: usize,
    names: &Names,
    stext: Option<u64>,
) -> Result<(Vec<u64>, AddressEncoding), KallsymsError> {
    let sorted = |a: &[u64]| a.windows(2).all(|w| w[0] <= w[1]);
    let expected = stext.map_or_else(|| "any address".to_owned(), |s| format!("{s:#x}"));
    match *table {
        AddressTable::Absolute { addresses } => {
            let mut raw = vec![0u8; count * 8];
            read_exact(mem, addresses, &mut raw, "kallsyms_addresses")?;
            let values: Vec<u64> = raw.chunks_exact(8).map(le_uint).collect();
            let stext_ok = match (stext, names.stext) {
                (Some(s), Some(i)) => values[i] == s,
                (Some(_), None) => false,
                (None, _) => true,
            };
            if sorted(&values) && stext_ok {
                Ok((values, AddressEncoding::Absolute))
            } else {
                Err(KallsymsError::AddressEncoding {
                    vaddr: addresses,
                    relative_base: 0,
                    expected,
                    detail: format!(
                        "absolute: sorted {}, _stext {:?}",
                        sorted(&values),
                        names.stext.map(|i| values[i])
                    ),
                })
            }
        }
        AddressTable::Relative { offsets, relative_base } => {
            let base = read_u64(mem, relative_base, "kallsyms_relative_base")?;
            let mut raw = vec![0u8; count * 4];
            read_exact(mem, offsets, &mut raw, "kallsyms_offsets")?;
            let mut tried = Vec::new();
            for encoding in [AddressEncoding::AbsolutePercpu, AddressEncoding::Relative] {
                let values: Vec<u64> = raw
                    .chunks_exact(4)
                    .map(|c| {
                        let v = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                        match encoding {
                            AddressEncoding::AbsolutePercpu if (v as i32) >= 0 => v as u64,
                            AddressEncoding::AbsolutePercpu => {
                                base.wrapping_sub(1).wrapping_sub(v as i32 as i64 as u64)
                            }
                            _ => base.wrapping_add(v as u64),
                        }
                    })
                    .collect();
                let stext_at = names.stext.map(|i| values[i]);
                // Without an expected _stext, a wrong reading still betrays itself: it is
                // unsorted, or it puts _stext below the relative base (outside the kernel).
                let stext_ok = match (stext, stext_at) {
                    (Some(s), Some(a)) => a == s,
                    (Some(_), None) => false,
                    (None, Some(a)) => a >= base,
                    (None, None) => values.last().is_some_and(|&a| a >= base),
                };
                if sorted(&values) && stext_ok {
                    return Ok((values, encoding));
                }
                tried.push(format!(
                    "{encoding:?}: sorted {}, _stext {}",
                    sorted(&values),
                    stext_at.map_or_else(|| "not among the names".to_owned(), |a| format!("{a:#x}"))
                ));
            }
            Err(KallsymsError::AddressEncoding {
                vaddr: offsets,
                relative_base: base,
                expected,
                detail: tried.join("; "),
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Carving
// ---------------------------------------------------------------------------------------------

/// Finds and decodes the kallsyms tables inside `range` (the kernel image, e.g. `_stext` to
/// `_stext + 64 MiB`) without knowing their addresses, for kernels whose VMCOREINFO lacks the
/// `SYMBOL(kallsyms_*)` lines.
///
/// Anchor: the digit tokens "0".."9" at indices 48..=57 of `kallsyms_token_table`;
/// `kallsyms_token_index` is the 256 increasing u16 offsets right after the table that agree
/// with it. Below the token table sit `kallsyms_markers` (u32 or long, first 0, steps of
/// one name group), optionally `kallsyms_seqs_of_names` (3 bytes per symbol, 6.2+ and
/// backports), and below the markers `kallsyms_names`, preceded by `kallsyms_num_syms`. A
/// candidate is accepted only when all symbols decode exactly onto the markers and end at
/// them; addresses are then tried below `kallsyms_num_syms` (up to 6.3: offsets and relative
/// base, or absolute addresses) and after the token index (6.4+), keeping the first whose
/// addresses are sorted and place `_stext` right. At most [`MAX_CARVE_RANGE`] bytes from
/// `range.start` are searched.
pub fn carve_kallsyms(
    mem: &dyn VirtualMemory,
    range: Range<u64>,
    opts: &KallsymsOptions,
) -> Result<Kallsyms, KallsymsError> {
    let range = range.start..range.end.min(range.start.saturating_add(MAX_CARVE_RANGE));
    let not_found = |detail: String| KallsymsError::NotFound {
        start: range.start,
        end: range.end,
        detail,
    };
    let finder = memchr::memmem::Finder::new(DIGIT_TOKENS);
    let mut last_error = None;
    let mut hits = 0usize;
    let mut chunk_start = range.start;
    while chunk_start < range.end {
        // Overlap chunks so a run crossing a boundary is still seen whole.
        let len = (range.end - chunk_start).min(CHUNK as u64) as usize;
        let read_len = (len + DIGIT_TOKENS.len()).min((range.end - chunk_start) as usize);
        let chunk = read_sparse(mem, chunk_start, read_len);
        for hit in finder.find_iter(&chunk) {
            if hit >= len {
                break;
            }
            hits += 1;
            if hits > MAX_CARVE_CANDIDATES {
                return Err(not_found(format!(
                    "more than {MAX_CARVE_CANDIDATES} digit-token runs, none led to valid tables (the last at \
                     {:#x}); giving up",
                    chunk_start + hit as u64
                )));
            }
            let digits = chunk_start + hit as u64;
            match carve_at(mem, digits, opts) {
                Ok(found) => return Ok(found),
                Err(e) => last_error = Some(e),
            }
        }
        chunk_start += len as u64;
    }
    Err(match last_error {
        Some(e) => not_found(format!("{hits} digit-token runs, none led to valid tables; last: {e}")),
        None => not_found("no token table (the digit tokens \"0\\0\" .. \"9\\0\" never occur)".into()),
    })
}

/// Tries the token table whose token 48 ("0") is at `digits`.
fn carve_at(mem: &dyn VirtualMemory, digits: u64, opts: &KallsymsOptions) -> Result<Kallsyms, KallsymsError> {
    let corrupt = |what, vaddr, detail: &str| KallsymsError::Corrupt {
        what,
        vaddr,
        detail: detail.to_owned(),
    };
    let (token_table, token_index) = find_token_index(mem, digits).ok_or_else(|| {
        corrupt(
            "kallsyms_token_table",
            digits,
            "no matching kallsyms_token_index after it",
        )
    })?;
    let back_start = token_table.saturating_sub(CARVE_BACK_WINDOW);
    let (below, below_start) = read_back(mem, back_start, token_table);
    let mut last = corrupt(
        "kallsyms_markers",
        token_table,
        "no marker array (0, then increasing steps of one name group) below the token table",
    );
    for entry_size in [4usize, 8] {
        for cand in marker_candidates(&below, below_start, token_table, entry_size) {
            for (names, num_syms) in names_candidates(&below, below_start, &cand, opts.big_symbols) {
                let markers = Some(Markers {
                    vaddr: cand.start,
                    entry_size: entry_size as u8,
                });
                for addresses in address_candidates(mem, num_syms, token_index) {
                    let loc = KallsymsLocation {
                        num_syms,
                        names,
                        markers,
                        token_table,
                        token_index,
                        addresses,
                    };
                    match decode_kallsyms(mem, &loc, opts) {
                        Ok(k) => return Ok(k),
                        Err(e) => last = e,
                    }
                }
            }
        }
    }
    Err(last)
}

/// Token table start and token index address for the digit run at `digits`: the index must
/// start with 0, increase, put token 48 at `digits` and tokens 48..=57 two bytes apart, end
/// every token with a NUL, and begin within 8 bytes (alignment) after the table's last token.
fn find_token_index(mem: &dyn VirtualMemory, digits: u64) -> Option<(u64, u64)> {
    // Up to 64 KiB of table before the digits (it may start at the edge of the mapping),
    // then the rest of the table and the index after them.
    let (mut buf, lo) = read_back(mem, digits.saturating_sub(0x10000), digits);
    buf.extend(read_upto(mem, digits, 0x10000 + 520 + DIGIT_TOKENS.len()).0);
    let p = (digits - lo) as usize;
    let u16_at = |o: usize| buf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let mut q = p + DIGIT_TOKENS.len();
    q += q % 2;
    while q + 512 <= buf.len() && q <= p + 0x10000 + 8 {
        if u16_at(q) == Some(0) {
            let idx: Vec<u16> = (0..256).filter_map(|i| u16_at(q + 2 * i)).collect();
            if let Some(table) = token_table_start(&buf, p, q, &idx) {
                return Some((lo + table as u64, lo + q as u64));
            }
        }
        q += 2;
    }
    None
}

/// Start (in `buf`) of the token table that the candidate index `idx` at `q` describes, if
/// it is consistent with the digit tokens at `p` and ends just before `q`.
fn token_table_start(buf: &[u8], p: usize, q: usize, idx: &[u16]) -> Option<usize> {
    if idx.len() != 256 || !idx.windows(2).all(|w| w[0] < w[1]) || idx[57] - idx[48] != 18 {
        return None;
    }
    let table = p.checked_sub(idx[48] as usize)?;
    if !idx[1..].iter().all(|&o| buf.get(table + o as usize - 1) == Some(&0)) {
        return None;
    }
    let last = table + idx[255] as usize;
    let end = last + memchr::memchr(0, buf.get(last..q)?)? + 1;
    (q - end < 8).then_some(table)
}

/// A run of marker-like values: `count` entries starting at `start`, the last one `last`.
struct MarkerRun {
    start: u64,
    count: u64,
    last: u64,
    /// Symbol counts the layout allows (between markers and token table: nothing, or
    /// 3-byte `kallsyms_seqs_of_names`).
    counts: Vec<u64>,
}

/// Marker runs below the token table: a zero, then steps of one name group. The bytes after
/// the real markers may happen to extend the run, so the two shorter runs are offered too.
fn marker_candidates(below: &[u8], below_start: u64, token_table: u64, size: usize) -> Vec<MarkerRun> {
    let value = |o: usize| below.get(o..o + size).map(le_uint);
    let mut out = Vec::new();
    let mut o = below.len() / size * size;
    while o >= size {
        o -= size;
        // Cheap rejection first: most positions are not a zero followed by one group step.
        if value(o) != Some(0) || !value(o + size).is_some_and(|v| MARKER_STEP.contains(&v)) {
            continue;
        }
        let mut values = vec![0u64];
        while let Some(v) = value(o + values.len() * size) {
            if !values
                .last()
                .is_some_and(|&last| MARKER_STEP.contains(&v.wrapping_sub(last)))
            {
                break;
            }
            values.push(v);
        }
        let start = below_start + o as u64;
        for count in (2..=values.len()).rev().take(3) {
            let end = start + (count * size) as u64;
            let gap = token_table.saturating_sub(end);
            let groups = (count as u64 - 1) * 256 + 1..=count as u64 * 256;
            let mut counts: Vec<u64> = if gap < 8 { groups.clone().collect() } else { Vec::new() };
            // seqs_of_names starts at the next 8-byte boundary and is padded to one.
            let seqs = gap.saturating_sub((8 - end % 8) % 8);
            counts.extend((seqs.saturating_sub(7)..=seqs).filter(|b| b % 3 == 0).map(|b| b / 3));
            counts.retain(|n| groups.contains(n));
            if !counts.is_empty() {
                out.push(MarkerRun {
                    start,
                    count: count as u64,
                    last: values[count - 1],
                    counts,
                });
            }
        }
    }
    out
}

/// `(kallsyms_names, kallsyms_num_syms)` candidates below a marker run: 8-aligned starts
/// preceded by an allowed symbol count, whose length prefixes land exactly on every marker
/// and end within alignment of the markers.
fn names_candidates(below: &[u8], below_start: u64, run: &MarkerRun, big_symbols: bool) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let Some(markers_off) = run.start.checked_sub(below_start).map(|o| o as usize) else {
        return out;
    };
    let Some(hi) = markers_off.checked_sub(run.last as usize) else {
        return out;
    };
    let lo = hi.saturating_sub(256 * (2 + MAX_NAME_LEN)).max(8);
    let mut s = hi - (below_start as usize + hi) % 8;
    while s >= lo {
        let n = below
            .get(s - 8..s - 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64);
        if let Some(n) = n.filter(|n| run.counts.contains(n)) {
            if names_fit(&below[s..markers_off], n, run, big_symbols) {
                out.push((below_start + s as u64, below_start + s as u64 - 8));
            }
        }
        s -= 8;
    }
    out
}

/// Whether `n` length-prefixed symbols fill `names` (up to alignment) and hit each marker.
fn names_fit(names: &[u8], n: u64, run: &MarkerRun, big_symbols: bool) -> bool {
    let mut pos = 0usize;
    let mut groups = 0u64;
    for i in 0..n {
        if i % 256 == 0 {
            groups += 1;
            if i == (run.count - 1) * 256 && pos as u64 != run.last {
                return false;
            }
        }
        let Some((len, prefix)) = names.get(pos..).and_then(|b| symbol_len(b, big_symbols)) else {
            return false;
        };
        if len == 0 {
            return false;
        }
        pos += prefix + len;
    }
    groups == run.count && pos <= names.len() && names.len() - pos < 8
}

/// Where the address table may sit relative to `kallsyms_num_syms` and the token index.
fn address_candidates(mem: &dyn VirtualMemory, num_syms: u64, token_index: u64) -> Vec<AddressTable> {
    let Ok(count) = read_u32(mem, num_syms, "kallsyms_num_syms") else {
        return Vec::new();
    };
    let count = count as u64;
    let offsets_len = (4 * count).next_multiple_of(8);
    let relative_base = num_syms.wrapping_sub(8);
    let after_index = (token_index + 512).next_multiple_of(8);
    vec![
        AddressTable::Relative {
            offsets: relative_base.wrapping_sub(offsets_len),
            relative_base,
        },
        AddressTable::Absolute {
            addresses: num_syms.wrapping_sub(8 * count),
        },
        AddressTable::Relative {
            offsets: after_index,
            relative_base: after_index.wrapping_add(offsets_len),
        },
    ]
}

// ---------------------------------------------------------------------------------------------
// Reading helpers
// ---------------------------------------------------------------------------------------------

fn read_exact(mem: &dyn VirtualMemory, vaddr: u64, buf: &mut [u8], what: &'static str) -> Result<(), KallsymsError> {
    mem.read_virt(vaddr, buf)
        .map_err(|source| KallsymsError::Read { what, vaddr, source })
}

fn read_u32(mem: &dyn VirtualMemory, vaddr: u64, what: &'static str) -> Result<u32, KallsymsError> {
    let mut b = [0u8; 4];
    read_exact(mem, vaddr, &mut b, what)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(mem: &dyn VirtualMemory, vaddr: u64, what: &'static str) -> Result<u64, KallsymsError> {
    let mut b = [0u8; 8];
    read_exact(mem, vaddr, &mut b, what)?;
    Ok(u64::from_le_bytes(b))
}

/// Up to `len` bytes at `vaddr`, stopping at the first unreadable page; the error is why it
/// stopped.
fn read_upto(mem: &dyn VirtualMemory, vaddr: u64, len: usize) -> (Vec<u8>, Option<(u64, VirtError)>) {
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
fn read_sparse(mem: &dyn VirtualMemory, vaddr: u64, len: usize) -> Vec<u8> {
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
fn read_back(mem: &dyn VirtualMemory, start: u64, end: u64) -> (Vec<u8>, u64) {
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
struct Reader<'m> {
    mem: &'m dyn VirtualMemory,
    base: u64,
    what: &'static str,
    buf: Vec<u8>,
    /// Table offset of `buf[0]`.
    buf_offset: u64,
    pos: usize,
}

impl<'m> Reader<'m> {
    fn new(mem: &'m dyn VirtualMemory, base: u64, what: &'static str) -> Self {
        Reader {
            mem,
            base,
            what,
            buf: Vec::new(),
            buf_offset: 0,
            pos: 0,
        }
    }

    fn offset(&self) -> u64 {
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
    fn peek(&mut self, n: usize) -> Result<&[u8], KallsymsError> {
        if self.fill(n).is_err() {
            self.fill(1)?;
        }
        let end = (self.pos + n).min(self.buf.len());
        Ok(&self.buf[self.pos..end])
    }

    fn skip(&mut self, n: usize) {
        self.pos += n;
    }

    fn take(&mut self, n: usize) -> Result<&[u8], KallsymsError> {
        self.fill(n)?;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
}
