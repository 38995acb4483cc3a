//! Finding the kallsyms tables in the kernel image by signature, for kernels whose VMCOREINFO
//! does not name them.

use std::ops::Range;

use super::decode::{AddressTable, Kallsyms, KallsymsLocation, KallsymsOptions, Markers, decode_kallsyms, symbol_len};
use super::read::{le_uint, read_back, read_sparse, read_u32, read_upto};
use super::{CHUNK, KallsymsError, MAX_CARVE_RANGE, MAX_NAME_LEN};
use crate::arch::virt::VirtualMemory;

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
