//! VMCOREINFO, the kernel image mapping and kallsyms against real kernels: both QEMU
//! fixtures and the test bed's dump (KASLR on, VMCOREINFO note), the Xen PV save and
//! dump-core (no note: VMCOREINFO found in RAM), the kernel's real System.map; plus synthetic
//! and garbled tables that must yield errors, never panics.
//!
//! "Core" symbols are the first `kallsyms_num_syms` lines of /proc/kallsyms: the file goes on
//! with module symbols (`name\t[module]`) and, on other kernels, `[bpf]`, `[__builtin__ftrace]`
//! and `[__builtin__kprobes]` entries, which the kernel serves from other lists and which
//! therefore are not in the tables decoded here.

// Tests and their helpers fail by panicking, with the message saying what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;
mod real;
mod synthetic;
mod system_map;
mod vmcoreinfo;

use std::path::Path;

use introspect::Symbols;

const LINK_TEXT: u64 = 0xffff_ffff_8100_0000;

type Line = (u64, char, String);

/// Core lines of a /proc/kallsyms capture, in file order.
fn core_kallsyms(path: &Path) -> Vec<Line> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    let core: Vec<Line> = lines
        .iter()
        .filter(|l| !l.contains('\t'))
        .map(|l| {
            let mut f = l.split(' ');
            let addr = u64::from_str_radix(f.next().unwrap(), 16).unwrap();
            let kind = f.next().unwrap().chars().next().unwrap();
            (addr, kind, f.next().unwrap().to_owned())
        })
        .collect();
    // Every excluded line is a module or other non-core entry, and they all follow the core.
    assert!(
        lines[core.len()..]
            .iter()
            .all(|l| l.ends_with(']') && l.contains("\t["))
    );
    assert!(
        lines.len() > core.len(),
        "{}: expected module symbols too",
        path.display()
    );
    core
}

fn lines_of(symbols: &Symbols) -> Vec<Line> {
    symbols.iter().map(|s| (s.address, s.kind, s.name.to_owned())).collect()
}
