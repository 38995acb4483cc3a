//! kallsyms and VMCOREINFO on the real fixtures: full decode of the 6.1 kernel's 94 266
//! symbols through VMCOREINFO and by signature carving (QEMU 4-level dump), System.map
//! parsing, and the VMCOREINFO RAM scan of the 256 MiB Xen PV save image (no ELF note there).

// Tests and their helpers fail by panicking, with the message saying what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use introspect::{
    KallsymsOptions, KernelImageMap, Symbols, carve_kallsyms, find_vmcoreinfo_in_ram, kallsyms_from_vmcoreinfo,
    load_vmcoreinfo, open_memory,
};

fn kallsyms(c: &mut Criterion) {
    let Some(fx) = common::fixtures() else { return };
    let mem = open_memory(common::decompressed(&fx, "qemu-6.1-4level/dump.elf")).expect("dump opens");
    let info = load_vmcoreinfo(mem.as_ref()).expect("VMCOREINFO note").info;
    let map = KernelImageMap::from_vmcoreinfo(mem.as_ref(), &info).expect("phys_base");
    c.bench_function("kallsyms_decode_vmcoreinfo_6.1", |b| {
        b.iter(|| kallsyms_from_vmcoreinfo(&map, &info).expect("decodes"))
    });
    let stext = info.symbol("_stext").expect("_stext");
    let options = KallsymsOptions::from_vmcoreinfo(&info);
    let mut slow = c.benchmark_group("slow");
    slow.sample_size(10);
    slow.bench_function("kallsyms_carve_and_decode_64MiB_6.1", |b| {
        b.iter(|| carve_kallsyms(&map, stext..stext + (64 << 20), &options).expect("carves"))
    });
    let text = std::fs::read_to_string(common::decompressed(
        &fx,
        &dormouse_tests::FixtureKernel::read(&fx).system_map_rel(),
    ))
    .expect("System.map");
    slow.bench_function("system_map_parse_6.1", |b| {
        b.iter(|| Symbols::from_system_map(&text).expect("parses"))
    });
    let save = open_memory(common::decompressed(&fx, "xen-pv-a/domU-A.save")).expect("save image opens");
    slow.bench_function("vmcoreinfo_ram_scan_pv_save_256MiB", |b| {
        b.iter(|| find_vmcoreinfo_in_ram(save.as_ref()).expect("found"))
    });
    slow.finish();
}

criterion_group!(benches, kallsyms);
criterion_main!(benches);
