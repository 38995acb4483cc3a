//! The kernel's real System.map: what kallsyms leaves out, relocation to a KASLR boot, and
//! mismatches (wrong relocation, corrupted or placeholder maps) caught.

use std::path::Path;

use dormouse_tests::FixtureKernel;

use introspect::{START_KERNEL_MAP, Symbols, SymbolsError, compare_symbols};

use crate::{LINK_TEXT, common, core_kallsyms, lines_of};

/// System.map symbols that scripts/kallsyms leaves out of the tables: absolute link-time
/// constants, the kallsyms tables themselves (they do not exist yet when the table is
/// computed) and the `init_per_cpu__*` aliases of the boot CPU's per-CPU areas.
const NOT_IN_KALLSYMS: &[&str] = &[
    "kexec_control_code_size",
    "text_size",
    "phys_startup_64",
    "kallsyms_offsets",
    "kallsyms_relative_base",
    "kallsyms_num_syms",
    "kallsyms_names",
    "kallsyms_markers",
    "kallsyms_seqs_of_names",
    "kallsyms_token_table",
    "kallsyms_token_index",
    "init_per_cpu__fixed_percpu_data",
    "init_per_cpu__irq_stack_backing_store",
    "init_per_cpu__gdt_page",
];

/// The real System.map of the fixtures' kernel (from its -dbg package).
pub(crate) fn system_map(fx: &Path) -> Symbols {
    let path = common::decompressed(fx, &FixtureKernel::read(fx).system_map_rel());
    Symbols::from_system_map(&std::fs::read_to_string(path).unwrap()).expect("parse the real System.map")
}

/// Every symbol of `kallsyms` appears in `map` with the same name and address, and the
/// System.map's surplus is exactly [`NOT_IN_KALLSYMS`].
pub(crate) fn assert_system_map_covers(map: &Symbols, kallsyms: &Symbols) {
    use std::collections::HashMap;
    let mut in_map: HashMap<(&str, u64), Vec<char>> = HashMap::new();
    for s in map.iter() {
        in_map.entry((s.name, s.address)).or_default().push(s.kind);
    }
    for s in kallsyms.iter() {
        let kinds = in_map
            .get_mut(&(s.name, s.address))
            .unwrap_or_else(|| panic!("{} at {:#x} not in System.map", s.name, s.address));
        let kind = kinds.pop().unwrap_or_else(|| panic!("{} listed too often", s.name));
        if s.kind == 'A' && s.address < START_KERNEL_MAP {
            assert!(matches!(kind, 'A' | 'D' | 'd'), "{}: {kind}", s.name);
        } else {
            assert_eq!(kind, s.kind, "{}", s.name);
        }
        if kinds.is_empty() {
            in_map.remove(&(s.name, s.address));
        }
    }
    let mut surplus: Vec<&str> = in_map.keys().map(|k| k.0).collect();
    surplus.sort_unstable();
    let mut expected = NOT_IN_KALLSYMS.to_vec();
    expected.sort_unstable();
    assert_eq!(surplus, expected);
}

#[test]
fn system_map_relocation_and_mismatch_detection() {
    let Some(fx) = common::fixtures() else { return };
    let sm_text =
        std::fs::read_to_string(common::decompressed(&fx, &FixtureKernel::read(&fx).system_map_rel())).unwrap();
    let sm = Symbols::from_system_map(&sm_text).unwrap();
    assert_eq!(sm.len(), 94280);
    let gt4 = common::json(&fx.join("qemu-6.1-4level/ground-truth.json"));
    let gt57 = common::json(&fx.join("qemu-6.1-la57/ground-truth.json"));
    let text4 = common::hex(&gt4["kaslr"]["text_runtime"]);
    let text57 = common::hex(&gt57["kaslr"]["text_runtime"]);

    // System.map + the runtime _text = the guest's /proc/kallsyms (core symbols).
    let relocated = sm.relocated(text4).unwrap();
    let core = core_kallsyms(&common::decompressed(&fx, "qemu-6.1-4level/kallsyms.txt"));
    let mut kallsyms = String::new();
    for (addr, kind, name) in &core {
        kallsyms.push_str(&format!("{addr:016x} {kind} {name}\n"));
    }
    let kallsyms = Symbols::from_system_map(&kallsyms).unwrap();
    assert_eq!(lines_of(&kallsyms), core);
    assert_system_map_covers(&relocated, &kallsyms);
    // Per-CPU offsets are not relocated.
    assert_eq!(relocated.address_of("fixed_percpu_data"), Some(0));
    assert_eq!(relocated.address_of("_text"), Some(text4));
    let sample = kallsyms.sample_names(500);
    assert_eq!(compare_symbols(&kallsyms, &relocated, &sample), Ok(500));

    // The wrong relocation (unrelocated, or another boot's) is caught on every kernel symbol.
    let Err(unrelocated) = compare_symbols(&kallsyms, &sm, &sample) else {
        panic!("an unrelocated System.map must not match a KASLR kernel")
    };
    assert!(
        unrelocated
            .iter()
            .any(|m| m.name == "_text" && m.found == Some(LINK_TEXT))
    );
    let Err(other_boot) = compare_symbols(&kallsyms, &sm.relocated(text57).unwrap(), &sample) else {
        panic!("another boot's relocation must not match")
    };
    assert!(other_boot.len() > 450, "{} mismatches", other_boot.len());
    assert!(other_boot[0].to_string().contains("expected 0x"));

    // A corrupted System.map: two addresses changed, one symbol renamed.
    let mut corrupted = String::new();
    for line in sm_text.lines() {
        let line = match line {
            l if l.ends_with(" init_task") => l.replacen("ffffffff82a1aa40", "ffffffff82a1aa80", 1),
            l if l.ends_with(" linux_banner") => l.replacen("ffffffff82161900", "ffffffff82161000", 1),
            l if l.ends_with(" init_mm") => l.replace("init_mm", "init_mn"),
            l => l.to_owned(),
        };
        corrupted.push_str(&line);
        corrupted.push('\n');
    }
    let corrupted = Symbols::from_system_map(&corrupted).unwrap().relocated(text4).unwrap();
    let names = ["_text", "init_task", "linux_banner", "init_mm", "init_top_pgt"];
    let mismatches = compare_symbols(&kallsyms, &corrupted, &names).unwrap_err();
    let found: Vec<(&str, bool)> = mismatches
        .iter()
        .map(|m| (m.name.as_str(), m.found.is_some()))
        .collect();
    assert_eq!(found, [("init_task", true), ("linux_banner", true), ("init_mm", false)]);

    // Debian's placeholder System.map and garbage are refused with the line.
    let placeholder = format!(
        "ffffffffffffffff B The real System.map is in the linux-image-{}-dbg package\n",
        FixtureKernel::read(&fx).release
    );
    assert!(matches!(
        Symbols::from_system_map(&placeholder),
        Err(SymbolsError::SystemMap { line: 1, .. })
    ));
    let garbage = "ffffffff81000000 T _text\nzz T x\n";
    let err = Symbols::from_system_map(garbage).unwrap_err();
    assert!(err.to_string().contains("System.map line 2"), "{err}");
    assert_eq!(
        Symbols::from_system_map("0000000000000000 D x\n")
            .unwrap()
            .relocated(text4),
        Err(SymbolsError::NoText)
    );
}
