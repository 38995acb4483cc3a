//! Reads per second of small files: the pure renderer, and through a real FUSE mount (root).

// Tests and their helpers fail by panicking, with the message saying what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use shadowfs::ProcTree;

fn snapshot() -> Option<introspect::linux::GuestSnapshot> {
    let fixtures = dormouse_tests::xen_fixtures("shadowfs bench")?;
    let image = dormouse_tests::decompressed(&fixtures, "xen-pv-a/domU-A.save");
    let mem = introspect::open_memory(&image).expect("open the xen-pv-a save image");
    Some(introspect::linux::snapshot(mem.as_ref(), &Default::default()).expect("snapshot of xen-pv-a"))
}

const FILES: [&str; 4] = [
    "sys/kernel/osrelease",
    "filesystems",
    "1/stat",
    "sys/net/ipv6/conf/all/accept_ra",
];

fn bench(c: &mut Criterion) {
    let Some(snapshot) = snapshot() else { return };
    let tree = ProcTree::new(snapshot);
    for f in FILES {
        c.bench_function(&format!("render {f}"), |b| b.iter(|| tree.read(f).expect("rendered")));
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("!!! FUSE benchmarks skipped: they mount, which needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let _session = shadowfs::spawn(shadowfs::ShadowFs::new(tree), dir.path()).expect("mount the shadow /proc");
    for f in FILES {
        let path = dir.path().join(f);
        std::fs::read(&path).expect("warm read through FUSE");
        c.bench_function(&format!("fuse read {f}"), |b| {
            b.iter(|| std::fs::read(&path).expect("read"))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
