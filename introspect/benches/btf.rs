//! BTF throughput on the real fixtures: decompressing the 6.1 vmlinuz, parsing its `.BTF`,
//! member lookups, and carving `.BTF` out of the 256 MiB Xen PV save image (found after
//! 37 MiB) and scanning a 256 MiB image without a kernel.

// Tests and their helpers fail by panicking, with the message saying what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use introspect::{Btf, KernelImage, find_kernel_btf, open_memory};

fn btf(c: &mut Criterion) {
    let Some(fx) = common::fixtures() else { return };
    let vmlinuz = dormouse_tests::FixtureKernel::read(&fx).vmlinuz();
    let img = KernelImage::open(&vmlinuz).expect("vmlinuz opens");
    let blob = img.section_data(".BTF").expect(".BTF").to_vec();
    drop(img);

    let mut slow = c.benchmark_group("slow");
    slow.sample_size(10);
    slow.bench_function("vmlinuz_xz_decompress_and_sections", |b| {
        b.iter(|| KernelImage::open(&vmlinuz).expect("vmlinuz opens"))
    });
    slow.finish();

    c.bench_function("btf_parse_6.1", |b| {
        b.iter_batched(
            || blob.clone(),
            |data| Btf::parse("bench", data).expect("parses"),
            BatchSize::LargeInput,
        )
    });

    let parsed = Btf::parse("bench", blob).expect("parses");
    c.bench_function("btf_member_task_struct_tasks_next", |b| {
        b.iter(|| parsed.member("task_struct", "tasks.next").expect("member"))
    });
    c.bench_function("btf_member_mm_struct_arg_start", |b| {
        b.iter(|| parsed.member("mm_struct", "arg_start").expect("member"))
    });

    let mem = open_memory(common::decompressed(&fx, "xen-pv-a/domU-A.save")).expect("save image opens");
    let mut carve = c.benchmark_group("carve");
    carve.sample_size(10);
    carve.bench_function("find_kernel_btf_pv_save_256MiB", |b| {
        b.iter(|| find_kernel_btf(mem.as_ref()).expect("found"))
    });
    // No kernel in the BIOS-only HVM guest: every one of its pages is searched.
    let bios = open_memory(common::decompressed(&fx, "xen-hvm-bios/domU-H.save")).expect("save image opens");
    carve.bench_function("find_kernel_btf_full_scan_hvm_256MiB", |b| {
        b.iter(|| assert!(find_kernel_btf(bios.as_ref()).is_none()))
    });
    carve.finish();
}

criterion_group!(benches, btf);
criterion_main!(benches);
