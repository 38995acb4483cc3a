//! Real images, corrupted (issue 18): header fields and record lengths set to all-ones or zero,
//! bit flips in the kernel's own tables in guest RAM (kallsyms, BTF, tasks, uts), truncation at
//! record, segment and section boundaries. `inspect`, `ps`, `uname` and `proc` run on each under
//! a 1 GiB address-space limit and a time limit, and must end on their own: success, or an
//! error naming the image and where in it (an offset or address) — never a panic, an abort or
//! an allocation the limit refuses.
//!
//! Every case is built from the image's own structure, walked by [`layout`] independently of
//! dormouse's parsers. By default a fixed, evenly spread sample of the cases runs (the suite
//! must stay quick); `DORMOUSE_CORRUPT=full` runs them all, and `DORMOUSE_CORRUPT_BIN` points
//! at another build (e.g. `target/release/dormouse`) for the full sweep.

mod disk;
mod layout;

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dormouse_tests::{FixtureKernel, Rng, decompressed, xen_fixtures};

use crate::dormouse_bin;

const MEMORY_LIMIT: u64 = 1 << 30;
/// Far above a debug build's time on an intact image on a loaded 2-core machine; a loop the
/// bounds miss runs into it.
const TIME_LIMIT: Duration = Duration::from_secs(240);
/// Cases per image in the default sample.
const SAMPLE: usize = 24;
/// Truncations per image in the default sample.
const SAMPLE_TRUNCATIONS: usize = 6;
const FULL_TRUNCATIONS: usize = 300;
/// Start of the kernel's direct mapping of its image (`__START_KERNEL_map`); a PV kernel is
/// not relocated, so its image's pseudo-physical address is the virtual one minus this.
const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;

/// Kernel objects the walk reads first or sizes things by.
const KERNEL_SYMBOLS: &[&str] = &[
    "kallsyms_num_syms",
    "kallsyms_names",
    "kallsyms_markers",
    "kallsyms_token_table",
    "kallsyms_token_index",
    "kallsyms_offsets",
    "kallsyms_relative_base",
    "vmcoreinfo_data",
    "init_task",
    "init_uts_ns",
    "linux_banner",
    "saved_command_line",
    "file_systems",
    "modules",
    "init_net",
    "super_blocks",
];

struct Case {
    what: String,
    /// (file offset, new bytes)
    writes: Vec<(u64, Vec<u8>)>,
}

impl Case {
    fn set(what: impl Into<String>, at: u64, bytes: Vec<u8>) -> Case {
        Case {
            what: what.into(),
            writes: vec![(at, bytes)],
        }
    }
}

/// `count` single-bit flips spread over `range` of the file, read from `bytes`.
fn flips(what: String, bytes: &[u8], range: std::ops::Range<u64>, count: usize, rng: &mut Rng) -> Case {
    let end = range.end.min(bytes.len() as u64);
    let writes = (0..count)
        .map(|_| {
            let at = range.start + rng.below(end.saturating_sub(range.start));
            (at, vec![bytes[at as usize] ^ (1 << rng.below(8))])
        })
        .collect();
    Case { what, writes }
}

fn ones(width: usize) -> Vec<u8> {
    vec![0xff; width]
}

/// Every `len / n`-th element, so a sample spreads over the whole list.
fn spread<T>(items: Vec<T>, n: usize) -> Vec<T> {
    if items.len() <= n {
        return items;
    }
    let step = items.len() as f64 / n as f64;
    let mut picked = Vec::with_capacity(n);
    for (i, item) in items.into_iter().enumerate() {
        if (picked.len() as f64) * step <= i as f64 && picked.len() < n {
            picked.push(item);
        }
    }
    picked
}

fn full_sweep() -> bool {
    std::env::var_os("DORMOUSE_CORRUPT").is_some_and(|v| v == "full")
}

fn binary() -> PathBuf {
    std::env::var_os("DORMOUSE_CORRUPT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(dormouse_bin()))
}

struct Outcome {
    code: Option<i32>,
    signal: Option<i32>,
    stderr: String,
    elapsed: Duration,
    timed_out: bool,
}

/// Runs dormouse with `args` under the memory limit, killing it at the time limit.
fn run_limited(args: &[OsString]) -> Outcome {
    let mut command = Command::new(binary());
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe and touches only the child's own limits.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: MEMORY_LIMIT,
                rlim_max: MEMORY_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = command.spawn().expect("spawn dormouse");
    let mut stderr_pipe = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr_pipe.read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    });
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for dormouse") {
            break status;
        }
        if started.elapsed() > TIME_LIMIT {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait for killed dormouse");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Outcome {
        code: status.code(),
        signal: status.signal(),
        stderr: reader.join().unwrap_or_default(),
        elapsed: started.elapsed(),
        timed_out,
    }
}

/// What is wrong with how dormouse ended on a corrupted `image`, if anything.
fn judge(image: &Path, o: &Outcome) -> Option<String> {
    let last = o.stderr.lines().last().unwrap_or("").to_owned();
    if o.timed_out {
        return Some(format!("still running after {TIME_LIMIT:?}"));
    }
    if let Some(signal) = o.signal {
        return Some(format!(
            "killed by signal {signal} (an abort: an allocation the {MEMORY_LIMIT}-byte limit refused, or a panic while panicking): {last}"
        ));
    }
    if o.code == Some(101) || o.stderr.contains("panicked") {
        return Some(format!("panicked: {}", o.stderr.trim()));
    }
    if o.code == Some(0) {
        return None;
    }
    let name = image.file_name().unwrap().to_string_lossy();
    if !o.stderr.contains(name.as_ref()) {
        return Some(format!("the error does not name the image: {}", o.stderr.trim()));
    }
    let lower = o.stderr.to_lowercase();
    let places = ["offset", "0x", "address", "sector", "partition"];
    if !places.iter().any(|p| lower.contains(p)) {
        return Some(format!("the error names no offset or address: {}", o.stderr.trim()));
    }
    None
}

const COMMANDS: &[&[&str]] = &[&["ps"], &["uname", "-a"], &["proc", "1/status"]];

/// The commands run on case `index` of a memory image: `inspect --json`, and one of the
/// others in turn.
fn memory_commands(index: usize, image: &Path) -> Vec<Vec<OsString>> {
    [&["inspect", "--json"][..], COMMANDS[index % COMMANDS.len()]]
        .iter()
        .map(|args| {
            let mut argv: Vec<OsString> = vec![args[0].into(), image.into()];
            argv.extend(args[1..].iter().map(OsString::from));
            argv
        })
        .collect()
}

/// What a sweep runs on each case: argument lists, given the case's index and the image.
type Commands<'a> = &'a dyn Fn(usize, &Path) -> Vec<Vec<OsString>>;

/// The result of one image's sweep.
#[derive(Default)]
struct Sweep {
    runs: usize,
    failures: usize,
    problems: Vec<String>,
    slowest: (Duration, String),
    errors: std::collections::BTreeMap<String, usize>,
}

impl Sweep {
    /// `inspect --json`, and one of the other commands in turn.
    fn run_case(&mut self, index: usize, what: &str, image: &Path, commands: Commands<'_>) {
        for argv in commands(index, image) {
            let o = run_limited(&argv);
            self.runs += 1;
            if o.elapsed > self.slowest.0 {
                self.slowest = (o.elapsed, what.to_owned());
            }
            if o.code != Some(0) {
                self.failures += 1;
                let last = o.stderr.lines().last().unwrap_or("").to_owned();
                // Group messages by their words, not their numbers or scratch paths.
                let shape: String = last
                    .replace(&image.display().to_string(), "IMAGE")
                    .split(' ')
                    .map(|w| {
                        if w.starts_with(|c: char| c.is_ascii_digit()) {
                            "#"
                        } else {
                            w
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                *self.errors.entry(shape).or_default() += 1;
            }
            if let Some(problem) = judge(image, &o) {
                let shown: Vec<_> = argv.iter().map(|a| a.to_string_lossy()).collect();
                self.problems
                    .push(format!("{what}: `dormouse {}`: {problem}", shown.join(" ")));
            }
        }
    }

    fn finish(self, name: &str) {
        eprintln!(
            "{name}: {} runs, {} ended in an error, slowest {:.1} s ({}); errors by shape:",
            self.runs,
            self.failures,
            self.slowest.0.as_secs_f64(),
            self.slowest.1
        );
        for (shape, n) in &self.errors {
            eprintln!("  {n:4} x {shape}");
        }
        assert!(
            self.problems.is_empty(),
            "{name}: {} of {} runs ended badly:\n{}",
            self.problems.len(),
            self.runs,
            self.problems.join("\n")
        );
    }
}

/// Runs every case on a scratch copy of `pristine` (each change undone after its case), then
/// the truncations, longest first on the same copy.
fn sweep(name: &str, pristine: &Path, cases: Vec<Case>, mut truncations: Vec<u64>, commands: Commands<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join(pristine.file_name().unwrap());
    std::fs::copy(pristine, &image).unwrap();
    let file = File::options().read(true).write(true).open(&image).unwrap();
    let full = full_sweep();
    let cases = if full { cases } else { spread(cases, SAMPLE) };
    truncations.sort_unstable();
    truncations.dedup();
    // Even the full sweep cuts at a few hundred places: a save stream has a record per 4 MiB.
    let truncations = spread(truncations, if full { FULL_TRUNCATIONS } else { SAMPLE_TRUNCATIONS });
    let mut sweep = Sweep::default();
    for (index, case) in cases.iter().enumerate() {
        let saved: Vec<(u64, Vec<u8>)> = case
            .writes
            .iter()
            .map(|(at, bytes)| {
                let mut old = vec![0; bytes.len()];
                file.read_exact_at(&mut old, *at).unwrap();
                (*at, old)
            })
            .collect();
        for (at, bytes) in &case.writes {
            file.write_all_at(bytes, *at).unwrap();
        }
        sweep.run_case(index, &case.what, &image, commands);
        for (at, old) in saved.iter().rev() {
            file.write_all_at(old, *at).unwrap();
        }
    }
    for (index, len) in truncations.iter().rev().enumerate() {
        file.set_len(*len).unwrap();
        sweep.run_case(index, &format!("truncated to {len:#x} bytes"), &image, commands);
    }
    sweep.finish(name);
}

/// Cases for every record header of a save stream (length all-ones, zero, one record too long,
/// type unknown), the first words of each small record's body, the pfn list of the first and
/// last PAGE_DATA, and the xl header.
fn save_record_cases(layout: &layout::SaveLayout) -> (Vec<Case>, Vec<u64>) {
    let mut cases = vec![
        Case::set("xl header optional_data_len = u32::MAX", 44, ones(4)),
        Case::set("xl header mandatory_flags = u32::MAX", 40, ones(4)),
        Case::set(
            "xl header byte order reversed",
            32,
            0x0102_0304u32.to_be_bytes().to_vec(),
        ),
    ];
    let mut truncations = vec![0, 31, 47];
    let page_data: Vec<usize> = (0..layout.records.len())
        .filter(|&i| layout.records[i].layer == "libxc" && layout.records[i].rtype == 1)
        .collect();
    for (i, r) in layout.records.iter().enumerate() {
        let is_page_data = r.layer == "libxc" && r.rtype == 1;
        truncations.extend([r.offset, r.offset + 4, r.offset + 8 + u64::from(r.length) / 2]);
        if is_page_data && page_data.first() != Some(&i) && page_data.last() != Some(&i) {
            continue;
        }
        let at = r.offset;
        let tag = format!("{} record type {} at {at:#x}", r.layer, r.rtype);
        cases.push(Case::set(format!("{tag}: length = u32::MAX"), at + 4, ones(4)));
        cases.push(Case::set(format!("{tag}: length = 0"), at + 4, vec![0; 4]));
        cases.push(Case::set(
            format!("{tag}: length + 8"),
            at + 4,
            (r.length.wrapping_add(8)).to_le_bytes().to_vec(),
        ));
        cases.push(Case::set(
            format!("{tag}: type = 0x7fffffff"),
            at,
            0x7fff_ffffu32.to_le_bytes().to_vec(),
        ));
        let words = (r.length / 4).min(if is_page_data { 3 } else { 8 });
        for w in 0..u64::from(words) {
            cases.push(Case::set(
                format!("{tag}: body word {w} = u32::MAX"),
                at + 8 + 4 * w,
                ones(4),
            ));
        }
    }
    (cases, truncations)
}

/// The file offset of kernel virtual address `vaddr` in a PV save image.
fn pv_kernel_offset(layout: &layout::SaveLayout, vaddr: u64) -> Option<u64> {
    let phys = vaddr.checked_sub(START_KERNEL_MAP)?;
    Some(layout.pages.get(&(phys >> 12))? + (phys & 0xfff))
}

/// Cases in the guest kernel's own data: the objects in [`KERNEL_SYMBOLS`] (words set to
/// all-ones, bit flips) and the .BTF header and types, found by its magic.
fn kernel_data_cases(bytes: &[u8], layout: &layout::SaveLayout, system_map: &str, rng: &mut Rng) -> Vec<Case> {
    let mut cases = Vec::new();
    for line in system_map.lines() {
        let mut parts = line.split_whitespace();
        let (Some(addr), Some(_), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if !KERNEL_SYMBOLS.contains(&name) {
            continue;
        }
        let Some(at) = u64::from_str_radix(addr, 16)
            .ok()
            .and_then(|vaddr| pv_kernel_offset(layout, vaddr))
        else {
            continue;
        };
        for word in [0u64, 8, 16] {
            cases.push(Case::set(format!("{name}+{word}: u64::MAX"), at + word, ones(8)));
        }
        cases.push(flips(
            format!("{name}: 64 bit flips in its first page"),
            bytes,
            at..at + 4096,
            64,
            rng,
        ));
    }
    // The BTF header: magic 0xeb9f, version 1, flags 0, hdr_len 24.
    let magic = [0x9f, 0xeb, 0x01, 0x00, 0x18, 0x00, 0x00, 0x00];
    if let Some(btf) = bytes.windows(8).position(|w| w == magic) {
        let btf = btf as u64;
        for (field, off) in [
            ("hdr_len", 4),
            ("type_off", 8),
            ("type_len", 12),
            ("str_off", 16),
            ("str_len", 20),
        ] {
            cases.push(Case::set(format!("BTF in RAM: {field} = u32::MAX"), btf + off, ones(4)));
        }
        for n in 0..4 {
            cases.push(flips(
                format!("BTF in RAM: 256 bit flips in its types ({n})"),
                bytes,
                btf + 24..btf + 24 + (1 << 20),
                256,
                rng,
            ));
        }
    }
    cases
}

fn elf_cases(bytes: &[u8], rng: &mut Rng) -> (Vec<Case>, Vec<u64>) {
    let layout = layout::walk_elf(bytes);
    let mut cases = Vec::new();
    for (what, at, width) in &layout.fields {
        cases.push(Case::set(format!("{what} = all ones"), *at, ones(*width)));
        cases.push(Case::set(format!("{what} = 0"), *at, vec![0; *width]));
    }
    for (name, range) in &layout.notes {
        cases.push(flips(
            format!("note {name}: 16 bit flips"),
            bytes,
            range.clone(),
            16,
            rng,
        ));
        // VMCOREINFO is text: every value of a few lines made all-`f`.
        if name == "VMCOREINFO" {
            let text = &bytes[range.start as usize..range.end as usize];
            let mut at = range.start;
            for line in text.split(|&b| b == b'\n') {
                if let Some(eq) = line.iter().position(|&b| b == b'=') {
                    let value_len = line.len() - eq - 1;
                    if value_len > 0 && rng.below(4) == 0 {
                        let what = format!("VMCOREINFO {}= all f", String::from_utf8_lossy(&line[..eq]));
                        cases.push(Case::set(what, at + eq as u64 + 1, vec![b'f'; value_len]));
                    }
                }
                at += line.len() as u64 + 1;
            }
        }
    }
    (cases, layout.boundaries)
}

#[test]
fn corrupted_xl_save_images_end_in_errors_that_say_where() {
    let Some(fx) = xen_fixtures("corrupted_xl_save_images_end_in_errors_that_say_where") else {
        return;
    };
    let save = decompressed(&fx, "xen-pv-a/domU-A.save");
    let bytes = std::fs::read(&save).unwrap();
    let layout = layout::walk_save(&bytes);
    let system_map = std::fs::read_to_string(decompressed(&fx, &FixtureKernel::read(&fx).system_map_rel())).unwrap();
    let mut rng = Rng(0x5eed_0001);
    let (mut cases, truncations) = save_record_cases(&layout);
    cases.extend(kernel_data_cases(&bytes, &layout, &system_map, &mut rng));
    drop(bytes);
    sweep("xen-pv-a/domU-A.save", &save, cases, truncations, &memory_commands);
}

#[test]
fn corrupted_hvm_save_images_end_in_errors_that_say_where() {
    let Some(fx) = xen_fixtures("corrupted_hvm_save_images_end_in_errors_that_say_where") else {
        return;
    };
    let save = decompressed(&fx, "xen-hvm-bios/domU-H.save");
    let bytes = std::fs::read(&save).unwrap();
    let layout = layout::walk_save(&bytes);
    let (cases, truncations) = save_record_cases(&layout);
    drop(bytes);
    sweep("xen-hvm-bios/domU-H.save", &save, cases, truncations, &memory_commands);
}

#[test]
fn corrupted_elf_cores_end_in_errors_that_say_where() {
    let Some(fx) = xen_fixtures("corrupted_elf_cores_end_in_errors_that_say_where") else {
        return;
    };
    for rel in ["xen-pv-a/domU-A.core", "qemu-6.1-4level/dump.elf"] {
        let core = decompressed(&fx, rel);
        let bytes = std::fs::read(&core).unwrap();
        let mut rng = Rng(0x5eed_0002);
        let (cases, truncations) = elf_cases(&bytes, &mut rng);
        drop(bytes);
        sweep(rel, &core, cases, truncations, &memory_commands);
    }
}
