//! End to end: open an image (index it) and extract the whole snapshot, against the cost of
//! reading the file once sequentially. The goal is well under 100 ms for a 256 MiB save image
//! with a warm page cache, growing with the pages touched, not with guest RAM.

// Tests and their helpers fail by panicking, with the message saying what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::io::Read;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use introspect::linux::{ProfileFiles, snapshot};
use introspect::open_memory;

fn inspect_image(c: &mut Criterion, name: &str, path: &Path) {
    let mut g = c.benchmark_group(format!("inspect/{name}"));
    g.sample_size(20);
    g.bench_function("open_index", |b| b.iter(|| black_box(open_memory(path).expect("open"))));
    g.bench_function("open_and_snapshot", |b| {
        b.iter(|| {
            let mem = open_memory(path).expect("open");
            black_box(snapshot(mem.as_ref(), &ProfileFiles::default()).expect("snapshot"))
        })
    });
    let mem = open_memory(path).expect("open");
    g.bench_function("snapshot_only", |b| {
        b.iter(|| black_box(snapshot(mem.as_ref(), &ProfileFiles::default()).expect("snapshot")))
    });
    g.bench_function("read_file_sequentially", |b| {
        let mut buf = vec![0u8; 1 << 20];
        b.iter(|| {
            let mut f = std::fs::File::open(path).expect("open");
            while f.read(&mut buf).expect("read") > 0 {}
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let Some(fx) = common::fixtures() else { return };
    inspect_image(c, "xen-pv-save", &common::decompressed(&fx, "xen-pv-a/domU-A.save"));
    inspect_image(c, "xen-pv-core", &common::decompressed(&fx, "xen-pv-a/domU-A.core"));
    inspect_image(c, "qemu-4level", &common::decompressed(&fx, "qemu-6.1-4level/dump.elf"));
}

criterion_group!(inspect, benches);
criterion_main!(inspect);
