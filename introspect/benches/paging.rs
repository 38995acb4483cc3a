//! Page-table walk throughput on real images: random translations into the kernel's direct
//! map (every page a fresh walk) and linear 1 MiB reads through the walker, on the Xen PV save
//! image (4 KiB pages only, as PV requires) and the QEMU 4-level dump (2 MiB direct map).

// Tests and their helpers fail by panicking, with the message saying what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dormouse_tests::Rng;
use introspect::{AddressSpace, PhysMemory, VirtualMemory, open_memory};

/// Deterministic pseudo-random sequence, so runs compare.
fn xorshift(seed: u64) -> impl Iterator<Item = u64> {
    let mut rng = Rng(seed);
    std::iter::repeat_with(move || rng.next_u64())
}

fn walk_image(c: &mut Criterion, name: &str, mem: &dyn PhysMemory) {
    let (space, _) = AddressSpace::kernel(mem).expect("kernel address space");
    let base = space.find_direct_map().expect("direct map").base;
    // Random present pages at random offsets, all mapped (checked once here).
    let pfns: Vec<u64> = mem.present_pfns().collect();
    let vas: Vec<u64> = xorshift(0x9e37_79b9_7f4a_7c15)
        .map(|r| base + (pfns[(r % pfns.len() as u64) as usize] << 12) + (r >> 52))
        .filter(|&va| space.translate(va).is_ok())
        .take(4096)
        .collect();

    let mut g = c.benchmark_group(format!("paging/{name}"));
    g.throughput(Throughput::Elements(vas.len() as u64));
    g.bench_function("translate_random_direct_map", |b| {
        b.iter(|| {
            for &va in &vas {
                black_box(space.translate(black_box(va)).ok());
            }
        })
    });
    // Struct-walking pattern: one 8-byte read per 64 bytes, each a read_virt call of its own.
    let fields: Vec<u64> = (0..1024u64).map(|i| base + (16 << 20) + i * 64).collect();
    g.bench_function("read_virt_8B_fields", |b| {
        b.iter(|| {
            for &va in &fields {
                let mut w = [0u8; 8];
                space.read_virt(black_box(va), &mut w).expect("read");
                black_box(w);
            }
        })
    });
    let mut buf = vec![0u8; 1 << 20];
    let start = base + (16 << 20);
    space.read_virt(start, &mut buf).expect("1 MiB at 16 MiB is mapped");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("read_virt_1MiB_linear", |b| {
        b.iter(|| space.read_virt(black_box(start), &mut buf).expect("read"))
    });
    // The same bytes straight from physical memory: the floor the walker adds to.
    g.bench_function("read_phys_1MiB_linear", |b| {
        b.iter(|| mem.read_phys(black_box(16 << 20), &mut buf).expect("read"))
    });
    g.finish();
}

fn paging(c: &mut Criterion) {
    let Some(fx) = common::fixtures() else { return };
    let save = open_memory(common::decompressed(&fx, "xen-pv-a/domU-A.save")).expect("open save image");
    walk_image(c, "xen-pv-save", save.as_ref());
    let qemu = open_memory(common::decompressed(&fx, "qemu-6.1-4level/dump.elf")).expect("open QEMU dump");
    walk_image(c, "qemu-4level", qemu.as_ref());
}

criterion_group!(benches, paging);
criterion_main!(benches);
