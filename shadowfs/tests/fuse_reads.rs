//! Reads through a real FUSE mount (root) on both read paths: the server answering every
//! read(2) (no passthrough, as on kernels before 6.9), and FUSE passthrough, where the kernel
//! reads immutable files from their backing memfds and the server sees no reads at all.

// Tests and their helpers fail by panicking, with the message saying what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;

use shadowfs::{Kind, ProcTree, ShadowFs};

fn tree() -> Option<ProcTree> {
    let fixtures = dormouse_tests::xen_fixtures("shadowfs fuse_reads")?;
    // The QEMU lab guest: multi-threaded processes, a 7.9 KB command line and environment.
    let image = dormouse_tests::decompressed(&fixtures, "qemu-6.1-4level/dump.elf");
    let mem = introspect::open_memory(&image).expect("open the QEMU dump");
    Some(ProcTree::new(
        introspect::linux::snapshot(mem.as_ref(), &Default::default()).expect("snapshot of the QEMU dump"),
    ))
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Guest files with a fixed rendering (all but the fresh random uuid).
fn immutable_files(tree: &ProcTree) -> Vec<String> {
    tree.paths()
        .filter(|p| tree.attr(p).is_some_and(|a| a.kind == Kind::File) && *p != "sys/kernel/random/uuid")
        .map(str::to_owned)
        .collect()
}

/// Every file read whole equals the renderer's bytes; slices at offsets (within, at and past
/// the end) and concurrent readers too. Returns the number of read(2) calls made.
fn check_reads(tree: &ProcTree, root: &Path) -> u64 {
    let files = immutable_files(tree);
    assert!(files.len() > 500, "only {} files", files.len());
    let mut calls = 0u64;
    for f in &files {
        let want = tree.read(f).expect("rendered");
        let file = std::fs::File::open(root.join(f)).unwrap_or_else(|e| panic!("open {f}: {e}"));
        // Reads of 4 KiB, so that larger files take several requests.
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = file.read_at(&mut buf, got.len() as u64).expect("pread");
            calls += 1;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, want, "{f}");
        for offset in [1, want.len() / 2, want.len(), want.len() + 100] {
            let mut small = [0u8; 7];
            let n = file.read_at(&mut small, offset as u64).expect("pread");
            calls += 1;
            let end = want.len().min(offset + 7);
            assert_eq!(&small[..n], want.get(offset..end).unwrap_or(&[]), "{f} at {offset}");
        }
    }
    let big: Vec<&String> = files
        .iter()
        .filter(|f| tree.read(f).is_ok_and(|b| b.len() > 4096))
        .collect();
    assert!(!big.is_empty(), "no file larger than one read");
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for f in &big {
                    assert_eq!(
                        std::fs::read(root.join(f)).expect("read"),
                        tree.read(f).expect("rendered")
                    );
                }
            });
        }
    });
    calls
}

/// Mounts `tree` (without passthrough unless `passthrough`), checks every read, and returns
/// the read(2) calls made and the read requests the server answered; `None` when skipped.
fn mounted_reads(test: &str, passthrough: bool) -> Option<(u64, u64)> {
    if !is_root() {
        eprintln!("!!! SKIPPED {test}: mounting needs root");
        return None;
    }
    let tree = tree()?;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut fs = ShadowFs::new(ProcTree::new(tree.snapshot().clone()));
    if !passthrough {
        fs = fs.without_passthrough();
    }
    let served = fs.server_reads();
    let _mount = shadowfs::spawn(fs, dir.path()).expect("mount");
    let calls = check_reads(&tree, dir.path());
    Some((calls, served.load(Ordering::Relaxed)))
}

#[test]
fn reads_without_passthrough_are_served_by_the_server() {
    let Some((calls, served)) = mounted_reads("reads_without_passthrough_are_served_by_the_server", false) else {
        return;
    };
    // Every read(2) that reached the file system was one request (direct I/O, size 0); the
    // concurrent whole-file reads add more.
    assert!(
        served >= calls,
        "the server answered {served} reads of at least {calls}"
    );
}

#[test]
fn reads_with_passthrough_never_reach_the_server() {
    let Some((_, served)) = mounted_reads("reads_with_passthrough_never_reach_the_server", true) else {
        return;
    };
    if kernel_has_passthrough() {
        assert_eq!(served, 0, "passthrough: the server answered {served} reads");
    } else {
        assert!(
            served > 0,
            "no passthrough on this kernel, yet the server answered no reads"
        );
    }
}

/// FUSE passthrough exists since Linux 6.9.
fn kernel_has_passthrough() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("dom0's kernel release");
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (6, 9)
}
