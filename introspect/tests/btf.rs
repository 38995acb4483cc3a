//! BTF: the kernel's `.BTF` from the fixture vmlinuz and carved from real memory images,
//! checked against VMCOREINFO, ground-truth symbols and the guest's own memory; plus hostile
//! blobs and images.

// Tests and their helpers fail by panicking, with the message saying what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::OnceLock;

use dormouse_tests::{FixtureKernel, Rng};
use introspect::linux::TypeInfo;
use introspect::{Btf, BtfError, BtfKind, Compression, KernelImage, PhysMemory, find_kernel_btf, open_memory};

/// Link-time address of `_text` on x86-64 (CONFIG_PHYSICAL_START 16 MiB above the 2 GiB base).
const TEXT_LINK: u64 = 0xffff_ffff_8100_0000;

/// What the tests need from the fixture vmlinuz, decompressed once per test binary.
struct Vmlinuz {
    btf: Btf,
    btf_addr: u64,
    build_id: Vec<u8>,
}

fn vmlinuz(fixtures: &Path) -> &'static Vmlinuz {
    static CELL: OnceLock<Vmlinuz> = OnceLock::new();
    CELL.get_or_init(|| {
        let img = KernelImage::open(FixtureKernel::read(fixtures).vmlinuz()).expect("fixture vmlinuz opens");
        assert_eq!(img.compression(), Some(Compression::Xz));
        let sec = img.section(".BTF").expect(".BTF section");
        Vmlinuz {
            btf: img.btf().expect("the vmlinuz .BTF parses"),
            btf_addr: sec.addr,
            build_id: img.build_id().expect("GNU build id in .notes").to_vec(),
        }
    })
}

fn vmcoreinfo_text(fixtures: &Path, case: &str) -> String {
    let gt = common::json(&fixtures.join(case).join("ground-truth.json"));
    gt["vmcoreinfo_text"].as_str().expect("vmcoreinfo_text").to_string()
}

#[test]
fn vmlinuz_decompresses_to_vmlinux_with_btf_and_build_id() {
    let Some(fx) = common::fixtures() else { return };
    let v = vmlinuz(&fx);
    // The same kernel wrote BUILD-ID into VMCOREINFO.
    let text = vmcoreinfo_text(&fx, "qemu-6.1-4level");
    let build_id = text
        .lines()
        .find_map(|l| l.strip_prefix("BUILD-ID="))
        .expect("BUILD-ID line");
    let hex: String = v.build_id.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, build_id);
    eprintln!(
        "vmlinuz .BTF: {} bytes, {} type ids",
        v.btf.bytes().len(),
        v.btf.type_count()
    );
    assert!(v.btf.type_count() > 50_000, "{} types", v.btf.type_count());
    assert!(v.btf.find_struct("task_struct").is_some());
    assert_eq!(v.btf.bytes()[..8], [0x9f, 0xeb, 0x01, 0x00, 0x18, 0, 0, 0]);
}

/// Carves `.BTF` from `image` and checks it against the vmlinuz and the physical load address.
fn carve_case(image: &str, phys_text: Option<u64>) {
    let Some(fx) = common::fixtures() else { return };
    let v = vmlinuz(&fx);
    let mem = open_memory(common::decompressed(&fx, image)).expect("image opens");
    let carved = find_kernel_btf(mem.as_ref()).expect("kernel BTF found in memory");
    assert!(
        carved.btf.bytes() == v.btf.bytes(),
        "{image}: carved BTF differs from the vmlinuz .BTF"
    );
    let phys_start = carved.paddr - (v.btf_addr - TEXT_LINK);
    eprintln!(
        "{image}: .BTF at paddr {:#x}, kernel text at {phys_start:#x}",
        carved.paddr
    );
    match phys_text {
        Some(p) => assert_eq!(phys_start, p, "{image}: .BTF is not where the kernel image puts it"),
        // CONFIG_PHYSICAL_ALIGN is 2 MiB.
        None => assert_eq!(
            phys_start % 0x20_0000,
            0,
            "{image}: kernel start {phys_start:#x} not 2 MiB aligned"
        ),
    }
    check_init_task(mem.as_ref(), &carved.btf, phys_start, image);
}

/// Reads init_task through the BTF layout: this ties the offsets to the guest's real bytes.
fn check_init_task(mem: &dyn PhysMemory, btf: &Btf, phys_text: u64, image: &str) {
    let fx = common::fixtures().expect("fixtures");
    // Every fixture runs the same kernel, so init_task's link address is the same everywhere.
    let gt = common::json(&fx.join("xen-pv-a/ground-truth.json"));
    let init_task = common::hex(&gt["kallsyms_selected"]["init_task"][0]["addr"]);
    let init_task = phys_text + (init_task - TEXT_LINK);
    let read = |member: &str, len: usize| {
        let loc = btf.member("task_struct", member).expect(member);
        let mut buf = vec![0u8; len];
        mem.read_phys(init_task + loc.offset, &mut buf)
            .expect("init_task is present");
        buf
    };
    let comm = read("comm", 16);
    assert!(comm.starts_with(b"swapper"), "{image}: init_task.comm = {comm:?}");
    assert_eq!(read("pid", 4), [0; 4], "{image}: init_task.pid");
    // tasks.next and mm-less kernel thread: a kernel pointer and NULL.
    let next = u64::from_le_bytes(read("tasks.next", 8).try_into().expect("8 bytes"));
    assert!(
        next >= 0xff00_0000_0000_0000,
        "{image}: init_task.tasks.next = {next:#x}"
    );
    assert_eq!(read("mm", 8), [0; 8], "{image}: init_task.mm");
}

#[test]
fn carve_qemu_4level() {
    let Some(fx) = common::fixtures() else { return };
    let gt = common::json(&fx.join("qemu-6.1-4level/ground-truth.json"));
    carve_case(
        "qemu-6.1-4level/dump.elf",
        Some(common::hex(&gt["kaslr"]["phys_kernel_code_start"])),
    );
}

#[test]
fn carve_qemu_la57() {
    let Some(fx) = common::fixtures() else { return };
    let gt = common::json(&fx.join("qemu-6.1-la57/ground-truth.json"));
    carve_case(
        "qemu-6.1-la57/dump.elf",
        Some(common::hex(&gt["kaslr"]["phys_kernel_code_start"])),
    );
}

#[test]
fn carve_xen_pv_save() {
    carve_case("xen-pv-a/domU-A.save", None);
}

#[test]
fn carve_xen_pv_dump_core() {
    carve_case("xen-pv-a/domU-A.core", None);
}

#[test]
fn no_btf_in_bios_only_hvm_guest() {
    let Some(fx) = common::fixtures() else { return };
    let mem = open_memory(common::decompressed(&fx, "xen-hvm-bios/domU-H.save")).expect("image opens");
    assert!(find_kernel_btf(mem.as_ref()).is_none());
}

/// Every OFFSET/SIZE/LENGTH line of VMCOREINFO, and every NUMBER that names an enumerator,
/// compared with what BTF says. The kernel computed these values with its compiler.
#[test]
fn vmcoreinfo_layouts_equal_btf() {
    let Some(fx) = common::fixtures() else { return };
    let btf = &vmlinuz(&fx).btf;
    for case in ["qemu-6.1-4level", "qemu-6.1-la57"] {
        let text = vmcoreinfo_text(&fx, case);
        let (mut compared, mut skipped, mut wrong) = (Vec::new(), Vec::new(), Vec::new());
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let Some((what, arg)) = key.strip_suffix(')').and_then(|k| k.split_once('(')) else {
                continue;
            };
            if what == "SYMBOL" {
                continue;
            }
            let expected: i128 = value.parse().expect("decimal value");
            let got: Option<i128> = match (what, arg.split_once('.')) {
                ("OFFSET", Some((ty, path))) => btf.member(ty, path).ok().map(|m| m.offset.into()),
                ("SIZE", None) => btf
                    .find_container(arg)
                    .ok()
                    .and_then(|id| btf.size_of(id).ok())
                    .map(i128::from),
                ("LENGTH", Some((ty, path))) => btf
                    .member(ty, path)
                    .ok()
                    .and_then(|m| btf.array(m.resolved).ok())
                    .map(|a| a.count.into()),
                ("NUMBER", None) => btf.enum_value(arg).ok().map(|(_, v)| v),
                _ => None,
            };
            match got {
                Some(g) if g == expected => compared.push(key.to_string()),
                Some(g) => wrong.push(format!("{key}: VMCOREINFO {expected}, BTF {g}")),
                None => skipped.push(key.to_string()),
            }
        }
        eprintln!(
            "{case}: {} equal: {compared:?}\nnot in BTF: {skipped:?}",
            compared.len()
        );
        assert!(wrong.is_empty(), "{case}: layouts differ: {wrong:#?}");
        // Everything a struct layout can answer must be answered.
        let unanswered: Vec<_> = skipped
            .iter()
            .filter(|k| k.starts_with("OFFSET(") || k.starts_with("SIZE("))
            .collect();
        assert!(unanswered.is_empty(), "{case}: BTF could not resolve {unanswered:?}");
        for must in [
            "OFFSET(page.flags)",
            "OFFSET(page.lru)",
            "OFFSET(page.compound_head)",
            "OFFSET(page.compound_order)",
            "OFFSET(list_head.next)",
            "OFFSET(list_head.prev)",
            "OFFSET(uts_namespace.name)",
            "OFFSET(pglist_data.node_id)",
            "OFFSET(atomic_long_t.counter)",
            "SIZE(page)",
            "SIZE(pglist_data)",
            "SIZE(nodemask_t)",
            "LENGTH(zone.free_area)",
            "LENGTH(free_area.free_list)",
            "NUMBER(PG_lru)",
            "NUMBER(PG_hwpoison)",
            "NUMBER(NR_FREE_PAGES)",
        ] {
            assert!(compared.iter().any(|c| c == must), "{case}: {must} was not compared");
        }
    }
}

#[test]
fn task_struct_and_mm_struct_layout() {
    let Some(fx) = common::fixtures() else { return };
    let btf = &vmlinuz(&fx).btf;
    let task = btf.find_struct("task_struct").expect("task_struct");
    let task_size = btf.size_of(task).expect("sizeof task_struct");
    assert!((2000..20_000).contains(&task_size), "sizeof(task_struct) = {task_size}");
    let m = |path: &str| btf.member("task_struct", path).expect(path);
    // CONFIG_THREAD_INFO_IN_TASK: thread_info is the first member.
    assert_eq!(m("thread_info").offset, 0);
    // `pid_t pid; pid_t tgid;` are adjacent ints.
    assert_eq!(btf.size_of(m("pid").type_id).expect("sizeof pid_t"), 4);
    assert_eq!(m("tgid").offset, m("pid").offset + 4);
    let comm = btf.array(m("comm").resolved).expect("comm is an array");
    assert_eq!(comm.count, 16);
    assert_eq!(btf.size_of(comm.elem).expect("sizeof char"), 1);
    let tasks = m("tasks");
    assert_eq!(Some(tasks.resolved), btf.find_struct("list_head"));
    assert_eq!(m("tasks.prev").offset, tasks.offset + 8);
    let pointee_name = |path: &str| {
        let target = btf.pointee(m(path).resolved).expect(path);
        btf.name(btf.resolve(target).expect("resolves"))
            .expect("named")
            .to_string()
    };
    assert_eq!(pointee_name("real_parent"), "task_struct");
    assert_eq!(pointee_name("mm"), "mm_struct");
    assert_eq!(pointee_name("cred"), "cred");
    for path in [
        "pid",
        "tgid",
        "comm",
        "tasks",
        "real_parent",
        "mm",
        "cred",
        "__state",
        "flags",
    ] {
        assert!(m(path).offset < task_size, "{path} beyond sizeof(task_struct)");
    }
    // A bitfield (kind_flag layout): `unsigned sched_reset_on_fork:1` and friends.
    let bf = m("sched_reset_on_fork");
    assert_eq!(bf.bitfield_size, Some(1));
    assert_eq!(bf.offset, bf.bit_offset / 8);

    // mm_struct's members sit in an anonymous struct (6.1: `struct { … } __randomize_layout;`).
    let mm = |path: &str| btf.member("mm_struct", path).expect(path);
    assert_eq!(mm("arg_end").offset, mm("arg_start").offset + 8);
    assert_eq!(mm("env_start").offset, mm("arg_end").offset + 8);
    let anon = btf
        .members(btf.find_struct("mm_struct").expect("mm_struct"))
        .expect("members")
        .any(|m| m.name.is_empty());
    assert!(anon, "mm_struct should have an anonymous member");
    assert!(matches!(
        btf.member("task_struct", "no_such_member"),
        Err(BtfError::Type { .. })
    ));
    assert!(matches!(
        btf.member("no_such_struct", "pid"),
        Err(BtfError::NotFound { .. })
    ));

    // The same answers through the kernel model's TypeInfo trait.
    let types: &dyn TypeInfo = btf;
    assert_eq!(types.member_offset("task_struct", "tasks.next"), Some(tasks.offset));
    assert_eq!(types.member_size("task_struct", "comm"), Some(16));
    assert_eq!(types.struct_size("task_struct"), Some(task_size));
    assert_eq!(types.member_offset("task_struct", "no_such_member"), None);
}

#[test]
fn percpu_current_task_matches_kallsyms() {
    let Some(fx) = common::fixtures() else { return };
    let btf = &vmlinuz(&fx).btf;
    let var = btf
        .datasec_var(".data..percpu", "current_task")
        .expect("current_task is a per-CPU VAR");
    for case in ["qemu-6.1-4level", "qemu-6.1-la57"] {
        let gt = common::json(&fx.join(case).join("ground-truth.json"));
        let want = common::hex(&gt["kaslr"]["runtime_symbols"]["current_task"]);
        assert_eq!(u64::from(var.offset), want, "{case}");
    }
    let gt = common::json(&fx.join("xen-pv-a/ground-truth.json"));
    let want = common::hex(&gt["kallsyms_selected"]["current_task"][0]["addr"]);
    assert_eq!(u64::from(var.offset), want);
    assert_eq!(var.size, 8);
    let target = btf.pointee(var.type_id).expect("current_task is a pointer");
    assert_eq!(btf.name(btf.resolve(target).expect("resolves")), Some("task_struct"));
    assert!(
        btf.datasec_var(".data..percpu", "init_task").is_err(),
        "init_task is not per-CPU"
    );
}

// ---------------------------------------------------------------- hostile input

/// Writes BTF blobs type by type.
struct Builder {
    types: Vec<u8>,
    strs: Vec<u8>,
    next_id: u32,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            types: Vec::new(),
            strs: vec![0],
            next_id: 1,
        }
    }

    fn name(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let off = self.strs.len() as u32;
        self.strs.extend_from_slice(s.as_bytes());
        self.strs.push(0);
        off
    }

    /// Appends a record; `extra` words follow the common 12 bytes.
    fn ty(&mut self, name: &str, kind: u32, kind_flag: bool, vlen: u32, size_or_type: u32, extra: &[u32]) -> u32 {
        let name = self.name(name);
        let info = (u32::from(kind_flag) << 31) | (kind << 24) | vlen;
        for w in [name, info, size_or_type].iter().chain(extra) {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
        self.next_id += 1;
        self.next_id - 1
    }

    fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&[0x9f, 0xeb, 1, 0]);
        let tl = self.types.len() as u32;
        for w in [24, 0, tl, tl, self.strs.len() as u32] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strs);
        out
    }
}

const INT: u32 = 1;
const PTR: u32 = 2;
const ARRAY: u32 = 3;
const STRUCT: u32 = 4;
const UNION: u32 = 5;
const ENUM: u32 = 6;
const TYPEDEF: u32 = 8;
const CONST: u32 = 10;
const VAR: u32 = 14;
const DATASEC: u32 = 15;
const ENUM64: u32 = 19;

/// A small blob touching most kinds, used for flips and as a positive control.
fn sample() -> (Vec<u8>, u32) {
    let mut b = Builder::new();
    let int = b.ty("int", INT, false, 0, 4, &[(1 << 24) | 32]);
    let uint = b.ty("unsigned int", INT, false, 0, 4, &[32]);
    let arr = b.ty("", ARRAY, false, 0, 0, &[int, int, 3]);
    let (a, c) = (b.name("a"), b.name("c"));
    let inner = b.ty("", UNION, false, 2, 12, &[a, int, 0, c, arr, 0]);
    let (x, y, bits) = (b.name("x"), b.name("y"), b.name("bits"));
    // x at byte 0, the anonymous union at 4..16, y at 20, a 3-bit field at bit 192.
    let fields = [x, int, 0, 0, inner, 32, y, int, 160, bits, uint, (3 << 24) | 192];
    let st = b.ty("outer", STRUCT, true, 4, 28, &fields);
    let _ptr = b.ty("", PTR, false, 0, st, &[]);
    let td = b.ty("outer_t", TYPEDEF, false, 0, st, &[]);
    let _cst = b.ty("", CONST, false, 0, td, &[]);
    let (e1, e2) = (b.name("E_ONE"), b.name("E_MINUS"));
    b.ty("e", ENUM, true, 2, 4, &[e1, 1, e2, (-5i32) as u32]);
    let big = b.name("E_BIG");
    b.ty("e64", ENUM64, false, 1, 8, &[big, 2, 1]);
    let var = b.ty("pcpu_thing", VAR, false, 0, int, &[1]);
    b.ty(".data..percpu", DATASEC, false, 1, 64, &[var, 0x40, 4]);
    (b.build(), st)
}

#[test]
fn synthetic_blob_answers_correctly() {
    let (blob, st) = sample();
    let btf = Btf::parse("sample", blob).expect("sample parses");
    assert_eq!(btf.find_struct("outer"), Some(st));
    assert_eq!(btf.kind(st), Some(BtfKind::Struct));
    let c = btf.member("outer", "c").expect("c through the anonymous union");
    assert_eq!((c.offset, c.bitfield_size), (4, None));
    assert_eq!(btf.array(c.type_id).expect("array").count, 3);
    assert_eq!(btf.size_of(c.type_id).expect("size"), 12);
    let bits = btf.member("outer_t", "bits").expect("bitfield via typedef");
    assert_eq!((bits.bit_offset, bits.offset, bits.bitfield_size), (192, 24, Some(3)));
    assert_eq!(btf.member("outer", "y").expect("y").offset, 20);
    assert_eq!(btf.enum_value("E_MINUS").expect("E_MINUS").1, -5);
    assert_eq!(btf.enum_value_in("e64", "E_BIG").expect("E_BIG"), (1 << 32) | 2);
    let v = btf.datasec_var(".data..percpu", "pcpu_thing").expect("var");
    assert_eq!((v.offset, v.size), (0x40, 4));
}

#[test]
fn typedef_cycles_and_self_nesting_error_out() {
    let mut b = Builder::new();
    // ids 1 and 2 refer to each other; 3 is const of 1.
    let a = b.ty("a_t", TYPEDEF, false, 0, 2, &[]);
    let _b = b.ty("b_t", TYPEDEF, false, 0, a, &[]);
    let c = b.ty("", CONST, false, 0, a, &[]);
    // A struct whose anonymous member is itself, and an array of itself.
    let anon = b.ty("selfish", STRUCT, false, 1, 8, &[0, 4, 0]);
    let arr = b.ty("", ARRAY, false, 0, 0, &[5, 1, 1]);
    assert_eq!(arr, 5);
    let btf = Btf::parse("cycle", b.build()).expect("cycles are structurally valid");
    for id in [a, c] {
        assert!(matches!(btf.resolve(id), Err(BtfError::Type { .. })));
        assert!(btf.size_of(id).is_err());
        assert!(btf.member_of(id, "x").is_err());
    }
    assert!(btf.member_of(anon, "missing").is_err());
    assert!(btf.member("a_t", "x").is_err());
    let err = btf.size_of(arr).expect_err("self-referential array");
    assert!(err.to_string().contains("cyclic"), "{err}");
}

#[test]
fn anonymous_fan_out_is_bounded() {
    // 20 levels, each with 8 anonymous members of the next, ending in an empty struct: 8^20
    // paths within the depth limit, so only the step budget stops the search.
    let mut b = Builder::new();
    let levels = 20u32;
    for level in 0..levels {
        let mut extra = Vec::new();
        for _ in 0..8 {
            extra.extend_from_slice(&[0, level + 2, 0]);
        }
        b.ty(&format!("l{level}"), STRUCT, false, 8, 8, &extra);
    }
    b.ty("leaf", STRUCT, false, 0, 0, &[]);
    let btf = Btf::parse("fan-out", b.build()).expect("parses");
    let err = btf.member("l0", "needle").expect_err("budget exhausted");
    assert!(err.to_string().contains("steps"), "{err}");
}

#[test]
fn malformed_headers_and_records_are_rejected() {
    let (good, _) = sample();
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let patch = |at: usize, v: u32| {
        let mut d = good.clone();
        d[at..at + 4].copy_from_slice(&v.to_le_bytes());
        d
    };
    cases.push(("empty", Vec::new()));
    cases.push(("bad magic", patch(0, 0x0001_eb9e)));
    cases.push(("big endian", patch(0, 0x0001_9feb)));
    cases.push(("version 2", patch(0, 0x0002_eb9f)));
    cases.push(("hdr_len huge", patch(4, u32::MAX)));
    cases.push(("type_len huge", patch(12, u32::MAX - 30)));
    cases.push(("str_off huge", patch(16, u32::MAX)));
    cases.push(("str_len 0", patch(20, 0)));
    cases.push(("overlap", patch(16, 0)));
    cases.push(("huge vlen", patch(24 + 4, (STRUCT << 24) | 0xffff)));
    cases.push(("unknown kind", patch(24 + 4, 25 << 24)));
    cases.push(("reserved bits", patch(24 + 4, (1 << 24) | (1 << 20))));
    cases.push(("name beyond strings", patch(24, 0x7fff_ffff)));
    let mut dangling = Builder::new();
    dangling.ty("p", PTR, false, 0, 99, &[]);
    cases.push(("dangling type id", dangling.build()));
    let mut not_utf8 = good.clone();
    let last = not_utf8.len() - 2;
    not_utf8[last] = 0xff;
    cases.push(("name not UTF-8", not_utf8));
    for (what, blob) in cases {
        match Btf::parse("crafted", blob) {
            Err(BtfError::Malformed { .. }) => {}
            other => panic!("{what}: expected Malformed, got {other:?}"),
        }
    }
}

/// Lookups a parsed blob must survive, whatever it contains.
fn exercise(btf: &Btf) {
    for id in 0..btf.type_count().min(64) {
        let _ = (
            btf.resolve(id),
            btf.size_of(id),
            btf.array(id),
            btf.pointee(id),
            btf.name(id),
        );
        if let Ok(members) = btf.members(id) {
            for m in members.take(8) {
                let _ = btf.member_of(id, m.name);
            }
        }
    }
    let _ = (
        btf.member("outer", "c"),
        btf.enum_value("E_BIG"),
        btf.datasec_var(".data..percpu", "pcpu_thing"),
    );
}

#[test]
fn random_flips_and_truncations_never_panic() {
    let (good, _) = sample();
    for cut in 0..good.len() {
        assert!(Btf::parse("truncated", good[..cut].to_vec()).is_err(), "cut at {cut}");
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut accepted = 0;
    for _ in 0..20_000 {
        let mut blob = good.clone();
        for _ in 0..1 + rng.next_u64() % 4 {
            let at = (rng.next_u64() % blob.len() as u64) as usize;
            blob[at] ^= 1 << (rng.next_u64() % 8);
        }
        if let Ok(btf) = Btf::parse("flipped", blob) {
            accepted += 1;
            exercise(&btf);
        }
    }
    eprintln!("{accepted} of 20000 flipped blobs parsed");
}

#[test]
fn real_btf_truncated_or_flipped_never_panics() {
    let Some(fx) = common::fixtures() else { return };
    let good = vmlinuz(&fx).btf.bytes();
    let mut rng = Rng(42);
    // Truncation anywhere breaks either the header bounds or the final NUL.
    for i in 0..24 {
        let cut = if i < 12 {
            i * 2
        } else {
            (rng.next_u64() % good.len() as u64) as usize
        };
        assert!(Btf::parse("truncated", good[..cut].to_vec()).is_err(), "cut at {cut}");
    }
    for _ in 0..6 {
        let mut blob = good.to_vec();
        for _ in 0..64 {
            let at = 24 + (rng.next_u64() % (blob.len() as u64 - 24)) as usize;
            blob[at] = rng.next_u64() as u8;
        }
        if let Ok(btf) = Btf::parse("flipped", blob) {
            exercise(&btf);
            let _ = btf.member("task_struct", "tasks.next");
        }
    }
}

/// A minimal vmlinux: ELF header, the real `.BTF`, `.shstrtab`, section table.
fn tiny_vmlinux(btf: &[u8]) -> Vec<u8> {
    let shstrtab = b"\0.BTF\0.shstrtab\0";
    let btf_at = 64u64;
    let str_at = btf_at + btf.len() as u64;
    let sh_at = (str_at + shstrtab.len() as u64).next_multiple_of(8);
    let mut elf = vec![0u8; 64];
    elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
    elf[0x28..0x30].copy_from_slice(&sh_at.to_le_bytes());
    elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
    elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
    elf[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
    elf.extend_from_slice(btf);
    elf.extend_from_slice(shstrtab);
    elf.resize(sh_at as usize + 64, 0);
    for (name, kind, off, size) in [
        (1u32, 1u32, btf_at, btf.len() as u64),
        (6, 3, str_at, shstrtab.len() as u64),
    ] {
        let mut sh = [0u8; 64];
        sh[..4].copy_from_slice(&name.to_le_bytes());
        sh[4..8].copy_from_slice(&kind.to_le_bytes());
        sh[0x18..0x20].copy_from_slice(&off.to_le_bytes());
        sh[0x20..0x28].copy_from_slice(&size.to_le_bytes());
        elf.extend_from_slice(&sh);
    }
    elf
}

/// A bzImage around `payload` as the kernel build lays it out: one setup sector after the
/// boot sector, payload_offset/length, and the decompressed size appended to the payload.
fn tiny_bzimage(payload: &[u8], size: usize) -> Vec<u8> {
    let mut img = vec![0u8; 1024 + 0x40];
    img[0x1f1] = 1;
    img[0x202..0x206].copy_from_slice(b"HdrS");
    img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    img[0x248..0x24c].copy_from_slice(&0x40u32.to_le_bytes());
    img[0x24c..0x250].copy_from_slice(&(payload.len() as u32 + 4).to_le_bytes());
    img.extend_from_slice(payload);
    img.extend_from_slice(&(size as u32).to_le_bytes());
    img
}

/// Every supported payload compression, produced by the real command-line tools with the
/// kernel build's options, decompresses to the same vmlinux.
#[test]
fn every_payload_compression_decompresses() {
    let Some(fx) = common::fixtures() else { return };
    let btf = vmlinuz(&fx).btf.bytes();
    let elf = tiny_vmlinux(btf);
    let dir = std::env::temp_dir().join(format!("dormouse-btf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let input = dir.join("vmlinux");
    std::fs::write(&input, &elf).expect("write vmlinux");
    let cases: [(Compression, &str, &[&str]); 5] = [
        (Compression::Gzip, "gzip", &["-n", "-9", "-c"]),
        (
            Compression::Xz,
            "xz",
            &["--check=crc32", "--x86", "--lzma2=dict=1MiB", "-c"],
        ),
        (Compression::Zstd, "zstd", &["-19", "-q", "-c"]),
        (Compression::Lz4, "lz4", &["-l", "-9", "-q", "-c"]),
        (Compression::Lzma, "xz", &["--format=lzma", "-9", "-c"]),
    ];
    for (kind, tool, args) in cases {
        let out = std::process::Command::new(tool).args(args).arg(&input).output();
        let Ok(out) = out
            .map(|o| o.stdout)
            .inspect_err(|e| eprintln!("*** SKIPPED {kind:?}: {tool}: {e} ***"))
        else {
            continue;
        };
        let img = KernelImage::from_bytes(format!("tiny-{tool}"), tiny_bzimage(&out, elf.len()))
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(img.compression(), Some(kind));
        assert!(img.vmlinux() == elf.as_slice(), "{kind:?}: vmlinux differs");
        assert!(img.btf().expect("btf").bytes() == btf, "{kind:?}");
        assert_eq!(img.sections().len(), 3);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hostile_kernel_images_are_rejected() {
    let Some(fx) = common::fixtures() else { return };
    let bytes = std::fs::read(FixtureKernel::read(&fx).vmlinuz()).expect("read vmlinuz");
    // Setup header cut, payload cut in the middle, payload offset beyond the file.
    for cut in [0x100, 0x250, bytes.len() / 2] {
        assert!(
            KernelImage::from_bytes("cut", bytes[..cut].to_vec()).is_err(),
            "cut at {cut:#x}"
        );
    }
    let mut far = bytes.clone();
    far[0x248..0x24c].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(KernelImage::from_bytes("far", far).is_err());
    // A corrupt xz stream (bytes flipped inside the compressed data).
    let mut flipped = bytes.clone();
    let mid = bytes.len() / 3;
    for b in &mut flipped[mid..mid + 64] {
        *b ^= 0x5a;
    }
    assert!(KernelImage::from_bytes("flipped", flipped).is_err());
    // ELF with a section table beyond the file, and one with a section beyond the file.
    let mut elf = vec![0u8; 64 + 128];
    elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
    elf[0x28..0x30].copy_from_slice(&64u64.to_le_bytes());
    elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
    elf[0x3c..0x3e].copy_from_slice(&100u16.to_le_bytes());
    assert!(KernelImage::from_bytes("elf", elf.clone()).is_err());
    elf[0x3c..0x3e].copy_from_slice(&2u16.to_le_bytes());
    elf[128 + 4..128 + 8].copy_from_slice(&1u32.to_le_bytes());
    elf[128 + 0x18..128 + 0x20].copy_from_slice(&1u64.to_le_bytes());
    elf[128 + 0x20..128 + 0x28].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(KernelImage::from_bytes("elf", elf.clone()).is_err());
    // The same ELF without the bad section parses, and has no .BTF to offer.
    elf[128 + 0x20..128 + 0x28].copy_from_slice(&0u64.to_le_bytes());
    let img = KernelImage::from_bytes("elf", elf).expect("minimal ELF");
    assert!(matches!(img.btf(), Err(BtfError::NotFound { .. })));
    assert!(KernelImage::from_bytes("junk", b"MZ not a kernel".to_vec()).is_err());
}
