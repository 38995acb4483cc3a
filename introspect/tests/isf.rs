//! Volatility 3 ISF profiles: an ISF generated from the fixture kernel's BTF and real
//! System.map gives the same snapshot as the image alone on every fixture image; ISFs of
//! another kernel are refused; hostile ISFs are errors, never panics or hangs.

// Tests and their helpers fail by panicking, with the message saying what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use dormouse_tests::FixtureKernel;
use introspect::linux::{GuestSnapshot, InspectError, ProfileFiles, TypeInfo, snapshot};
use introspect::{
    Btf, BtfKind, Isf, IsfError, KernelImage, MAX_TYPE_DEPTH, Symbols, isf_from_btf_and_symbols, open_memory,
};
use serde_json::{Value, json};

fn images(fx: &Path) -> Vec<(String, PathBuf)> {
    [
        "xen-pv-a/domU-A.save",
        "xen-pv-a/domU-A.core",
        "qemu-6.1-4level/dump.elf",
        "qemu-6.1-la57/dump.elf",
    ]
    .into_iter()
    .map(|rel| (rel.to_owned(), common::decompressed(fx, rel)))
    .collect()
}

/// The banner of the fixture kernel, as the guests' `/proc/version` showed it.
fn banner(fx: &Path) -> String {
    let truth = common::json(&fx.join("xen-pv-a/ground-truth.json"));
    truth["proc_files"]["/proc/version"]
        .as_str()
        .expect("/proc/version")
        .trim_end()
        .to_owned()
}

/// A file in the temporary directory, removed when dropped (also when a test fails).
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, bytes: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!("dormouse-isf-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

struct Generated {
    btf: Btf,
    doc: Value,
    json: Vec<u8>,
    xz: Vec<u8>,
}

/// The ISF of the fixture kernel, generated once per test binary, as JSON and as JSON.xz
/// (compressed by the xz tool, as users compress ISFs).
fn generated(fx: &Path) -> &'static Generated {
    static GENERATED: OnceLock<Generated> = OnceLock::new();
    GENERATED.get_or_init(|| {
        let kernel = FixtureKernel::read(fx);
        let btf = KernelImage::open(kernel.vmlinuz()).unwrap().btf().unwrap();
        let map = common::decompressed(fx, &kernel.system_map_rel());
        let symbols = Symbols::from_system_map(&std::fs::read_to_string(map).unwrap()).unwrap();
        let started = Instant::now();
        let doc = isf_from_btf_and_symbols(&btf, &symbols, Some(&banner(fx)));
        let json = serde_json::to_vec(&doc).unwrap();
        let generated_in = started.elapsed();
        let plain = TempFile::new("for-xz.json", &json);
        let out = Command::new("xz")
            .args(["-c", "-T1", "-2"])
            .arg(&plain.0)
            .output()
            .expect("run xz (install xz-utils)");
        assert!(out.status.success(), "xz: {}", String::from_utf8_lossy(&out.stderr));
        let _ = std::io::Write::write_fmt(
            &mut std::io::stderr(),
            format_args!(
                "ISF: {} bytes JSON, {} bytes xz, generated in {generated_in:?}\n",
                json.len(),
                out.stdout.len()
            ),
        );
        Generated {
            btf,
            doc,
            json,
            xz: out.stdout,
        }
    })
}

fn load(path: &Path) -> Isf {
    let started = Instant::now();
    let isf = Isf::open(path).unwrap_or_else(|e| panic!("{e}"));
    let _ = std::io::Write::write_fmt(
        &mut std::io::stderr(),
        format_args!("loaded {} in {:?}\n", path.display(), started.elapsed()),
    );
    isf
}

fn with_isf(label: &str, isf: Isf) -> ProfileFiles {
    ProfileFiles {
        isf: Some((label.to_owned(), isf)),
        ..ProfileFiles::default()
    }
}

fn take(image: &Path, files: &ProfileFiles) -> Result<GuestSnapshot, InspectError> {
    let mem = open_memory(image).unwrap_or_else(|e| panic!("{}: {e}", image.display()));
    snapshot(mem.as_ref(), files)
}

/// Everything the snapshot read from the kernel (not which profile it used).
fn assert_same_kernel_state(name: &str, got: &GuestSnapshot, want: &GuestSnapshot) {
    assert_eq!(got.uts, want.uts, "{name}: uts");
    assert_eq!(got.kernel.banner, want.kernel.banner, "{name}: banner");
    assert_eq!(got.kernel.cmdline, want.kernel.cmdline, "{name}: cmdline");
    assert_eq!(got.kernel.kaslr_offset, want.kernel.kaslr_offset, "{name}: KASLR");
    assert_eq!(got.boot_id, want.boot_id, "{name}: boot_id");
    assert_eq!(got.tasks, want.tasks, "{name}: tasks");
    assert_eq!(got.sysctl, want.sysctl, "{name}: sysctl");
    assert_eq!(got.modules, want.modules, "{name}: modules");
    assert_eq!(got.mounts, want.mounts, "{name}: mounts");
    assert_eq!(got.filesystems, want.filesystems, "{name}: filesystems");
    assert_eq!(got.interfaces, want.interfaces, "{name}: interfaces");
}

#[test]
fn generated_isf_gives_the_image_alones_snapshot_on_every_fixture() {
    let Some(fx) = common::fixtures() else { return };
    let g = generated(&fx);
    let files: Vec<(String, ProfileFiles)> = [("linux.json", &g.json), ("linux.json.xz", &g.xz)]
        .into_iter()
        .map(|(name, bytes)| {
            let file = TempFile::new(name, bytes);
            let label = file.0.display().to_string();
            (label.clone(), with_isf(&label, load(&file.0)))
        })
        .collect();
    for (name, image) in images(&fx) {
        let alone = take(&image, &ProfileFiles::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(alone.tasks.len() > 20, "{name}: {} tasks", alone.tasks.len());
        for (label, files) in &files {
            let s = take(&image, files).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                s.kernel
                    .profile
                    .types
                    .starts_with(&format!("ISF {label} (layouts agree with the .BTF in RAM")),
                "{name}: {}",
                s.kernel.profile.types
            );
            assert!(
                s.kernel
                    .profile
                    .symbols
                    .starts_with(&format!("ISF {label} (relocated by ")),
                "{name}: {}",
                s.kernel.profile.symbols
            );
            assert_same_kernel_state(&name, &s, &alone);
        }
    }
}

#[test]
fn generated_isf_answers_every_layout_question_as_the_btf_does() {
    let Some(fx) = common::fixtures() else { return };
    let g = generated(&fx);
    let file = TempFile::new("layouts.json", &g.json);
    let isf = load(&file.0);
    assert_eq!(isf.banner(), Some(banner(&fx).as_str()));
    assert_eq!(isf.metadata().format, "6.2.0");
    assert_eq!(
        isf.metadata().producer.as_deref(),
        Some(concat!("dormouse ", env!("CARGO_PKG_VERSION")))
    );
    assert!(isf.symbols().len() > 80_000, "{} symbols", isf.symbols().len());
    assert!(isf.symbols().address_of("init_task").is_some());

    // Every named struct/union of the BTF (first by id, as the BTF lookups pick), every
    // named member, and every member reachable through one level of anonymous members.
    let btf = &g.btf;
    let (mut structs, mut members) = (0, 0);
    for id in 1..btf.type_count() {
        let (Some(BtfKind::Struct | BtfKind::Union), Some(ty)) = (btf.kind(id), btf.name(id)) else {
            continue;
        };
        if ty.is_empty() || btf.find_struct(ty) != Some(id) {
            continue;
        }
        structs += 1;
        assert_eq!(isf.struct_size(ty), btf.struct_size(ty), "sizeof {ty}");
        let mut paths = Vec::new();
        for m in btf.members(id).unwrap() {
            if !m.name.is_empty() {
                paths.push(m.name.to_owned());
                continue;
            }
            let inner = btf.resolve(m.type_id).unwrap();
            if let Ok(inner_members) = btf.members(inner) {
                paths.extend(inner_members.filter(|m| !m.name.is_empty()).map(|m| m.name.to_owned()));
            }
        }
        for path in paths {
            members += 1;
            assert_eq!(
                isf.member_offset(ty, &path),
                btf.member_offset(ty, &path),
                "{ty}.{path}"
            );
            if let Some(size) = btf.member_size(ty, &path) {
                assert_eq!(isf.member_size(ty, &path), Some(size), "sizeof {ty}.{path}");
            }
        }
    }
    assert!(
        structs > 5000 && members > 50_000,
        "{structs} structs, {members} members compared"
    );
    // Dotted paths through named nested structs, and the names dormouse actually asks for.
    for (ty, path) in [
        ("net", "ipv6.devconf_all"),
        ("dentry", "d_name.name"),
        ("task_struct", "comm"),
        ("mm_struct", "pgd"),
        ("mm_struct", "arg_start"),
        ("module", "list"),
    ] {
        assert!(isf.member_offset(ty, path).is_some(), "{ty}.{path}");
        assert_eq!(isf.member_offset(ty, path), btf.member_offset(ty, path), "{ty}.{path}");
    }
    assert_eq!(isf.member_size("task_struct", "comm"), Some(16));
    assert_eq!(isf.member_offset("task_struct", "no_such_member"), None);
    assert_eq!(isf.member_offset("task_struct", "comm.x"), None, "comm is an array");
}

/// The generated ISF with `edit` applied, written to a file and loaded, as profile files.
fn edited(fx: &Path, what: &str, edit: impl FnOnce(&mut Value)) -> ProfileFiles {
    let mut doc = generated(fx).doc.clone();
    edit(&mut doc);
    let file = TempFile::new(&format!("{what}.json"), &serde_json::to_vec(&doc).unwrap());
    with_isf(&format!("{what}.json"), load(&file.0))
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize])
            } else {
                '='
            });
        }
    }
    out
}

#[test]
fn an_isf_for_another_kernel_banner_is_refused_naming_both_banners() {
    let Some(fx) = common::fixtures() else { return };
    // The fixtures' banner with the release and build changed, as the next kernel ABI has it.
    let fixture = FixtureKernel::read(&fx);
    let other = banner(&fx)
        .replace(&fixture.release, &format!("{}-next", fixture.release))
        .replace(&fixture.version, "#1 SMP PREEMPT_DYNAMIC (another build)");
    let other = other.trim_end();
    let files = edited(&fx, "other-banner", |doc| {
        doc["symbols"]["linux_banner"]["constant_data"] = json!(base64(format!("{other}\n\0").as_bytes()));
    });
    for (name, image) in images(&fx) {
        match take(&image, &files) {
            Err(e @ InspectError::ProfileMismatch { what: "ISF", .. }) => {
                let text = e.to_string();
                assert!(text.contains(other), "{name}: {text}");
                assert!(text.contains(&banner(&fx)), "{name}: {text}");
            }
            other => panic!(
                "{name}: ISF of another kernel accepted: {:?}",
                other.map(|s| s.kernel.profile)
            ),
        }
    }
}

#[test]
fn an_isf_with_moved_offsets_or_symbols_is_refused() {
    let Some(fx) = common::fixtures() else { return };
    let moved_pid = edited(&fx, "moved-pid", |doc| {
        let offset = &mut doc["user_types"]["task_struct"]["fields"]["pid"]["offset"];
        *offset = json!(offset.as_u64().unwrap() + 8);
    });
    // Another build of the same kernel: the same banner, code moved by 0x40.
    let moved_symbols = edited(&fx, "moved-symbols", |doc| {
        for (_, sym) in doc["symbols"].as_object_mut().unwrap() {
            let a = sym["address"].as_u64().unwrap();
            if a > 0xffff_ffff_8200_0000 {
                sym["address"] = json!(a + 0x40);
            }
        }
    });
    // A field init_task's check never reads: only the comparison with the kernel's BTF sees it.
    let moved_next = edited(&fx, "moved-next", |doc| {
        let offset = &mut doc["user_types"]["file_system_type"]["fields"]["next"]["offset"];
        *offset = json!(offset.as_u64().unwrap() + 8);
    });
    for (name, image) in images(&fx) {
        for (files, field) in [(&moved_pid, "task_struct.pid"), (&moved_next, "file_system_type.next")] {
            match take(&image, files) {
                Err(InspectError::ProfileMismatch { what, detail, .. }) => {
                    assert_eq!(what, "ISF", "{name}: {detail}");
                    assert!(detail.contains(&format!("{field}: offset")), "{name}: {detail}");
                }
                other => panic!("{name}: moved {field} accepted: {:?}", other.map(|s| s.kernel.profile)),
            }
        }
        match take(&image, &moved_symbols) {
            Err(InspectError::ProfileMismatch { what, detail, .. }) => {
                assert_eq!(what, "ISF", "{name}: {detail}");
                assert!(
                    detail.contains("differ from the kernel's own kallsyms"),
                    "{name}: {detail}"
                );
            }
            other => panic!("{name}: moved symbols accepted: {:?}", other.map(|s| s.kernel.profile)),
        }
    }
}

// ------------------------------------------------------------------- dwarf2json conventions

/// An ISF in the shape dwarf2json 0.9.0 writes for Linux (format 6.2.0): anonymous members as
/// `unnamed_field_<n>` with `anonymous: true` pointing at `unnamed_<hash>` user types (LibVMI's
/// ISF reader quotes this very `mm_struct` shape), a typedef of an anonymous struct stored under
/// the typedef's name, bitfields, pointers to functions, enums, and `linux_banner` with its
/// constant data. No dwarf2json output for a Linux kernel is in the public repositories this
/// project could consult, so the sample is written by hand from dwarf2json's source.
fn dwarf2json_style() -> Value {
    json!({
        "metadata": {
            "linux": {"symbols": [{"kind": "dwarf", "name": "vmlinux-5.15.0-91-generic", "hash_type": "sha256", "hash_value": "00ff"}],
                      "types": [{"kind": "dwarf", "name": "vmlinux-5.15.0-91-generic"}]},
            "producer": {"version": "0.9.0", "name": "dwarf2json"},
            "format": "6.2.0"
        },
        "base_types": {
            "void": {"size": 0, "signed": false, "kind": "void", "endian": "little"},
            "pointer": {"size": 8, "signed": false, "kind": "int", "endian": "little"},
            "int": {"size": 4, "signed": true, "kind": "int", "endian": "little"},
            "long unsigned int": {"size": 8, "signed": false, "kind": "int", "endian": "little"},
            "char": {"size": 1, "signed": true, "kind": "char", "endian": "little"},
            "unsigned int": {"size": 4, "signed": false, "kind": "int", "endian": "little"}
        },
        "user_types": {
            "mm_struct": {"size": 1032, "kind": "struct", "fields": {
                "unnamed_field_0": {"type": {"kind": "struct", "name": "unnamed_8216149fbf604e93"}, "offset": 0, "anonymous": true},
                "cpu_bitmap": {"type": {"kind": "array", "count": 0, "subtype": {"kind": "base", "name": "long unsigned int"}}, "offset": 1032}
            }},
            "unnamed_8216149fbf604e93": {"size": 1032, "kind": "struct", "fields": {
                "mmap": {"type": {"kind": "pointer", "subtype": {"kind": "struct", "name": "vm_area_struct"}}, "offset": 0},
                "get_unmapped_area": {"type": {"kind": "pointer", "subtype": {"kind": "function"}}, "offset": 24},
                "pgd": {"type": {"kind": "pointer", "subtype": {"kind": "struct", "name": "unnamed_1d0b0a9c7f66a1e1"}}, "offset": 80},
                "unnamed_field_0": {"type": {"kind": "union", "name": "unnamed_5e1f2a3b4c5d6e7f"}, "offset": 96, "anonymous": true},
                "arg_start": {"type": {"kind": "base", "name": "long unsigned int"}, "offset": 304},
                "mm_users": {"type": {"kind": "struct", "name": "atomic_t"}, "offset": 88}
            }},
            "unnamed_5e1f2a3b4c5d6e7f": {"size": 8, "kind": "union", "fields": {
                "owner": {"type": {"kind": "pointer", "subtype": {"kind": "struct", "name": "task_struct"}}, "offset": 0}
            }},
            "atomic_t": {"size": 4, "kind": "struct", "fields": {
                "counter": {"type": {"kind": "base", "name": "int"}, "offset": 0}
            }},
            "task_struct": {"size": 9600, "kind": "struct", "fields": {
                "__state": {"type": {"kind": "base", "name": "unsigned int"}, "offset": 24},
                "sched_reset_on_fork": {"type": {"kind": "bitfield", "bit_position": 1, "bit_length": 1,
                                                 "type": {"kind": "base", "name": "unsigned int"}}, "offset": 1476},
                "policy": {"type": {"kind": "enum", "name": "sched_policy"}, "offset": 1480},
                "comm": {"type": {"kind": "array", "count": 16, "subtype": {"kind": "base", "name": "char"}}, "offset": 3000}
            }}
        },
        "enums": {
            "sched_policy": {"size": 4, "base": "unsigned int", "constants": {"SCHED_NORMAL": 0, "SCHED_FIFO": 1}}
        },
        "symbols": {
            "linux_banner": {"type": {"kind": "array", "count": 0, "subtype": {"kind": "base", "name": "char"}},
                             "address": 0xffff_ffff_8220_0100u64,
                             "constant_data": base64(b"Linux version 5.15.0-91-generic (buildd@lcy02) #101-Ubuntu SMP\n\0")},
            "init_task": {"type": {"kind": "struct", "name": "task_struct"}, "address": 0xffff_ffff_8261_5940u64},
            "_text": {"type": {"kind": "base", "name": "void"}, "address": 0xffff_ffff_8100_0000u64},
            "unlocated_variable": {"type": {"kind": "base", "name": "int"}, "address": 0}
        }
    })
}

fn parse(doc: &Value) -> Result<Isf, IsfError> {
    Isf::parse("test.json", &serde_json::to_vec(doc).unwrap())
}

#[test]
fn dwarf2json_conventions_are_understood() {
    let isf = parse(&dwarf2json_style()).unwrap();
    assert_eq!(isf.metadata().producer.as_deref(), Some("dwarf2json 0.9.0"));
    assert_eq!(
        isf.metadata().sources,
        ["dwarf vmlinux-5.15.0-91-generic", "dwarf vmlinux-5.15.0-91-generic"]
    );
    assert_eq!(
        isf.banner(),
        Some("Linux version 5.15.0-91-generic (buildd@lcy02) #101-Ubuntu SMP")
    );
    assert_eq!(isf.member_offset("mm_struct", "pgd"), Some(80));
    assert_eq!(isf.member_size("mm_struct", "pgd"), Some(8));
    assert_eq!(
        isf.member_offset("mm_struct", "owner"),
        Some(96),
        "two anonymous levels"
    );
    assert_eq!(isf.member_offset("mm_struct", "mm_users.counter"), Some(88));
    assert_eq!(isf.member_offset("mm_struct", "unnamed_field_0"), Some(0));
    assert_eq!(isf.member_offset("mm_struct", "cpu_bitmap"), Some(1032));
    assert_eq!(isf.member_size("mm_struct", "cpu_bitmap"), Some(0), "flexible array");
    assert_eq!(isf.member_size("mm_struct", "get_unmapped_area"), Some(8));
    assert_eq!(isf.member_size("task_struct", "comm"), Some(16));
    assert_eq!(isf.member_size("task_struct", "policy"), Some(4), "enum");
    assert_eq!(isf.member_offset("task_struct", "sched_reset_on_fork"), Some(1476));
    assert_eq!(isf.member_size("task_struct", "sched_reset_on_fork"), Some(4));
    assert_eq!(isf.struct_size("atomic_t"), Some(4));
    assert_eq!(isf.member_offset("mm_struct", "pgd.x"), None, "pgd is a pointer");
    let syms = isf.symbols();
    assert_eq!(syms.address_of("init_task"), Some(0xffff_ffff_8261_5940));
    // dwarf2json's "no location" and a per-CPU offset of 0 look alike; both are kept.
    assert_eq!(syms.address_of("unlocated_variable"), Some(0));
    let moved = syms.relocated(0xffff_ffff_9000_0000).unwrap();
    assert_eq!(moved.address_of("init_task"), Some(0xffff_ffff_9161_5940));

    // Before format 6.2 dwarf2json did not flag anonymous members; the names tell.
    let mut old = dwarf2json_style();
    old["metadata"] = json!({"producer": {"version": "0.6.0", "name": "dwarf2json"}, "format": "4.1.0"});
    old["user_types"]["mm_struct"]["fields"]["unnamed_field_0"]
        .as_object_mut()
        .unwrap()
        .remove("anonymous");
    let isf = parse(&old).unwrap();
    assert_eq!(isf.member_offset("mm_struct", "pgd"), Some(80));
    assert_eq!(
        isf.banner(),
        Some("Linux version 5.15.0-91-generic (buildd@lcy02) #101-Ubuntu SMP")
    );
}

// ------------------------------------------------------------------------------ hostile

/// A change to a JSON document.
type Edit = dyn Fn(&mut Value);

#[test]
fn malformed_documents_are_errors_naming_the_problem() {
    let good = serde_json::to_vec(&dwarf2json_style()).unwrap();
    for cut in [0, 1, good.len() / 3, good.len() / 2, good.len() - 1] {
        let err = Isf::parse("cut.json", &good[..cut]).expect_err("truncated");
        assert!(matches!(err, IsfError::Json { .. }), "{err}");
        assert!(err.to_string().starts_with("cut.json: not ISF JSON"), "{err}");
    }
    for garbage in [
        &b"\xff\xfe\x00garbage"[..],
        b"[]",
        b"{}",
        b"null",
        b"\xfd7zXZ\0not really xz",
    ] {
        assert!(Isf::parse("garbage", garbage).is_err());
    }

    let cases: Vec<(&str, Box<Edit>, &str)> = vec![
        (
            "format",
            Box::new(|d| d["metadata"]["format"] = json!("9.0.0")),
            "metadata.format",
        ),
        (
            "kind",
            Box::new(|d| d["user_types"]["atomic_t"]["kind"] = json!("enum")),
            "user_types.atomic_t.kind",
        ),
        (
            "offset",
            Box::new(|d| d["user_types"]["atomic_t"]["fields"]["counter"]["offset"] = json!(5)),
            "user_types.atomic_t.fields.counter.offset",
        ),
        (
            "size",
            Box::new(|d| d["user_types"]["atomic_t"]["size"] = json!(1u64 << 40)),
            "user_types.atomic_t.size",
        ),
        (
            "count",
            Box::new(|d| d["user_types"]["task_struct"]["fields"]["comm"]["type"]["count"] = json!(u64::MAX)),
            "user_types.task_struct.fields.comm.type.count",
        ),
        (
            "type kind",
            Box::new(|d| {
                d["user_types"]["task_struct"]["fields"]["comm"]["type"]["subtype"]["kind"] = json!("typedef")
            }),
            "user_types.task_struct.fields.comm.type.subtype.kind",
        ),
        (
            "no name",
            Box::new(|d| {
                d["user_types"]["atomic_t"]["fields"]["counter"]["type"]
                    .as_object_mut()
                    .unwrap()
                    .remove("name");
            }),
            "user_types.atomic_t.fields.counter.type.name",
        ),
        (
            "banner",
            Box::new(|d| d["symbols"]["linux_banner"]["constant_data"] = json!("***")),
            "symbols.linux_banner.constant_data",
        ),
        (
            "symbol name",
            Box::new(|d| d["symbols"]["bad name"] = json!({"address": 0xffff_ffff_8100_0010u64})),
            "symbols.bad name",
        ),
    ];
    for (what, edit, path) in cases {
        let mut doc = dwarf2json_style();
        edit(&mut doc);
        match parse(&doc) {
            Err(e @ IsfError::Invalid { .. }) => {
                assert!(e.to_string().contains(&format!("test.json: {path}: ")), "{what}: {e}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    // Numbers of the wrong type are the JSON reader's to report.
    let mut doc = dwarf2json_style();
    doc["symbols"]["init_task"]["address"] = json!(-1);
    assert!(matches!(parse(&doc), Err(IsfError::Json { .. })));
}

#[test]
fn deep_and_cyclic_types_are_bounded() {
    // Descriptors nested past the limit: an error, not a stack overflow, however deep. (The
    // text is spliced in: a serde_json::Value that deep would itself recurse to drop.)
    let mut doc = dwarf2json_style();
    doc["user_types"]["atomic_t"]["fields"]["counter"]["type"] = json!("HERE");
    let text = serde_json::to_string(&doc).unwrap();
    for depth in [MAX_TYPE_DEPTH + 1, 100, 100_000] {
        let deep = format!(
            "{}{{\"kind\":\"base\",\"name\":\"int\"}}{}",
            "{\"kind\":\"pointer\",\"subtype\":".repeat(depth),
            "}".repeat(depth)
        );
        let err = Isf::parse("deep.json", text.replace("\"HERE\"", &deep).as_bytes()).expect_err("too deep");
        assert!(matches!(err, IsfError::Json { .. } | IsfError::Invalid { .. }), "{err}");
    }
    let mut ty = json!({"kind": "base", "name": "int"});
    for _ in 0..MAX_TYPE_DEPTH - 1 {
        ty = json!({"kind": "pointer", "subtype": ty});
    }
    let mut doc = dwarf2json_style();
    doc["user_types"]["atomic_t"]["fields"]["counter"]["type"] = ty;
    assert_eq!(parse(&doc).unwrap().member_size("atomic_t", "counter"), Some(8));

    // A struct that is its own anonymous member, and a fan-out of anonymous members 8 wide
    // and 20 deep (8^20 paths): lookups end, and find nothing.
    let mut doc = dwarf2json_style();
    let types = doc["user_types"].as_object_mut().unwrap();
    types.insert(
        "selfish".into(),
        json!({"kind": "struct", "size": 8, "fields": {
            "unnamed_field_0": {"type": {"kind": "struct", "name": "selfish"}, "offset": 0, "anonymous": true},
            "x": {"type": {"kind": "array", "count": 2, "subtype": {"kind": "struct", "name": "selfish"}}, "offset": 0}
        }}),
    );
    for level in 0..20 {
        let fields: serde_json::Map<String, Value> = (0..8)
            .map(|i| {
                (
                    format!("unnamed_field_{i}"),
                    json!({"type": {"kind": "struct", "name": format!("l{}", level + 1)}, "offset": 0, "anonymous": true}),
                )
            })
            .collect();
        types.insert(
            format!("l{level}"),
            json!({"kind": "struct", "size": 8, "fields": fields}),
        );
    }
    types.insert("l20".into(), json!({"kind": "struct", "size": 8, "fields": {}}));
    let isf = parse(&doc).unwrap();
    let started = Instant::now();
    assert_eq!(isf.member_offset("selfish", "needle"), None);
    assert_eq!(isf.member_offset("selfish", "x"), Some(0));
    assert_eq!(isf.member_size("selfish", "x"), Some(16));
    assert_eq!(isf.member_offset("l0", "needle"), None);
    assert!(
        started.elapsed().as_secs() < 5,
        "bounded search took {:?}",
        started.elapsed()
    );

    // Sizes that overflow: an array of 2^32 arrays of 2^32 structs of 2^32 bytes.
    let mut doc = dwarf2json_style();
    doc["user_types"]["huge"] = json!({"kind": "struct", "size": 1u64 << 32, "fields": {}});
    let elem = json!({"kind": "array", "count": 1u64 << 32, "subtype": {"kind": "struct", "name": "huge"}});
    doc["user_types"]["atomic_t"]["fields"]["counter"]["type"] =
        json!({"kind": "array", "count": 1u64 << 32, "subtype": elem});
    assert_eq!(parse(&doc).unwrap().member_size("atomic_t", "counter"), None);
}

// BTF records for a crafted blob (see tests/btf.rs for the format).
fn btf_blob(records: &[(u32, u32, u32, &[u32])], strings: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    for &(name, info, size_or_type, extra) in records {
        for w in [name, info, size_or_type].iter().chain(extra) {
            types.extend_from_slice(&w.to_le_bytes());
        }
    }
    let mut out = vec![0x9f, 0xeb, 1, 0];
    let tl = types.len() as u32;
    for w in [24, 0, tl, tl, strings.len() as u32] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(&types);
    out.extend_from_slice(strings);
    out
}

#[test]
fn generating_from_cyclic_btf_terminates() {
    const TYPEDEF: u32 = 8 << 24;
    const PTR: u32 = 2 << 24;
    const STRUCT: u32 = 4 << 24;
    // Strings: "", "a_t" at 1, "s" at 5, "f" at 7, "g" at 9.
    let strings = b"\0a_t\0s\0f\0g\0";
    // 1: typedef a_t -> 2; 2: ptr -> 1 (a cycle through a pointer); 3: typedef -> 3 (itself);
    // 4: struct s { a_t f; <3> g; }.
    let blob = btf_blob(
        &[
            (1, TYPEDEF, 2, &[]),
            (0, PTR, 1, &[]),
            (1, TYPEDEF, 3, &[]),
            (5, STRUCT | 2, 16, &[7, 1, 0, 9, 3, 64]),
        ],
        strings,
    );
    let btf = Btf::parse("cyclic", blob).unwrap();
    let doc = isf_from_btf_and_symbols(&btf, &Symbols::default(), None);
    let fields = doc["user_types"]["s"]["fields"].as_object().unwrap();
    assert!(fields.is_empty(), "members with endless types are left out: {fields:?}");
    let isf = parse(&doc).unwrap();
    assert_eq!(isf.struct_size("s"), Some(16));
    assert_eq!(isf.banner(), None);
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let big = vec![b' '; introspect::MAX_ISF_BYTES + 1];
    assert!(matches!(Isf::parse("big.json", &big), Err(IsfError::TooLarge { .. })));
    let err = Isf::open("/nonexistent/isf.json").unwrap_err();
    assert!(
        err.to_string().starts_with("/nonexistent/isf.json: cannot read"),
        "{err}"
    );
}
