//! Decoding kallsyms tables at known addresses: the token table, the compressed names (checked
//! against the markers when known) and the address table in its three encodings.

use serde::Serialize;

use super::read::{Reader, le_uint, read_exact, read_u32, read_u64, read_upto};
use super::symbols::{Builder, Symbols};
use super::{KallsymsError, MAX_NAME_LEN, MAX_NAMES_BYTES, MAX_SYMBOLS};
use crate::arch::virt::VirtualMemory;
use crate::profile::vmcoreinfo::VmcoreInfo;

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
    let mut b = Builder::with_capacity(count, names.arena.len());
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
pub(super) fn symbol_len(bytes: &[u8], big_symbols: bool) -> Option<(usize, usize)> {
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
