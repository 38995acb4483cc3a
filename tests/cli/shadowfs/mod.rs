//! The shadow /proc against the ground truth captured inside each guest: the pure renderer,
//! `dormouse proc`, and a real FUSE mount served by `dormouse shadowfs` (root).

mod compare;
mod guest_programs;
mod mount;
mod renderer;

use std::path::{Path, PathBuf};

use dormouse_tests::{FixtureKernel, decompressed, testbed, xen_fixtures};
use introspect::linux::GuestSnapshot;
use serde_json::Value;

struct Case {
    name: &'static str,
    image: PathBuf,
    truth: Value,
    /// The `.config` of the kernel the image ran: the fixtures' `kernel-<release>/` for their
    /// images, the test bed's own kernel package for its dump.
    kernel_config: PathBuf,
}

fn load_truth(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every memory image with ground truth: the Xen PV save and core, both QEMU dumps, the test
/// bed's dump.
fn cases(test: &str) -> Vec<Case> {
    let mut out = Vec::new();
    if let Some(fx) = &xen_fixtures(test) {
        let kernel_config = FixtureKernel::read(fx).config();
        let xen = load_truth(&fx.join("xen-pv-a/ground-truth.json"));
        for (name, rel) in [
            ("xen-pv-a save", "xen-pv-a/domU-A.save"),
            ("xen-pv-a core", "xen-pv-a/domU-A.core"),
        ] {
            out.push(Case {
                name,
                image: decompressed(fx, rel),
                truth: xen.clone(),
                kernel_config: kernel_config.clone(),
            });
        }
        for (name, dir) in [("qemu 4-level", "qemu-6.1-4level"), ("qemu la57", "qemu-6.1-la57")] {
            out.push(Case {
                name,
                image: decompressed(fx, &format!("{dir}/dump.elf")),
                truth: load_truth(&fx.join(dir).join("ground-truth.json")),
                kernel_config: kernel_config.clone(),
            });
        }
    }
    if let Some(tb) = testbed(test) {
        out.push(Case {
            name: "test-bed dump",
            image: tb.memdump.dir.join("dump.elf"),
            truth: load_truth(&tb.memdump.dir.join("ground-truth.json")),
            kernel_config: tb.kernel.config,
        });
    }
    out
}

fn snapshot(image: &Path) -> GuestSnapshot {
    let mem = introspect::open_memory(image).unwrap_or_else(|e| panic!("{}: {e}", image.display()));
    introspect::linux::snapshot(mem.as_ref(), &Default::default())
        .unwrap_or_else(|e| panic!("{}: {e}", image.display()))
}

/// A stat line's fields, `(comm)` (which may hold spaces) as one.
fn stat_fields(s: &str) -> Vec<String> {
    let open = s.find('(').expect("(comm)");
    let close = s.rfind(')').expect("(comm)");
    let mut out = vec![s[..open].trim().to_owned(), s[open..=close].to_owned()];
    out.extend(s[close + 1..].split_whitespace().map(str::to_owned));
    out
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn mounted(dir: &Path) -> bool {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dir = dir.to_string_lossy();
    text.lines().any(|l| l.split(' ').nth(4) == Some(dir.as_ref()))
}
