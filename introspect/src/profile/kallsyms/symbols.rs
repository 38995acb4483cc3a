//! The [`Symbols`] table both kallsyms and System.map end up in: address-sorted, with lookups
//! by name and by address.

use serde::Serialize;

use super::{MAX_NAME_LEN, MAX_NAMES_BYTES, MAX_SYMBOLS, SymbolsError};
use crate::profile::kernel_map::START_KERNEL_MAP;

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
pub(super) struct Builder {
    entries: Vec<Entry>,
    names: String,
}

impl Builder {
    pub(super) fn with_capacity(symbols: usize, name_bytes: usize) -> Builder {
        Builder {
            entries: Vec::with_capacity(symbols),
            names: String::with_capacity(name_bytes),
        }
    }

    /// Adds a symbol; the name must be printable ASCII without spaces, as kernel symbols are.
    pub(super) fn push(&mut self, name: &[u8], address: u64, kind: u8) -> Result<(), String> {
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

    pub(super) fn finish(mut self) -> Symbols {
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
