//! The whole kernel model against ground truth captured inside the guests: with nothing but
//! the image, and with System.map / vmlinuz given; wrong profiles are refused.

// Tests and their helpers fail by panicking, with the message saying what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use dormouse_tests::FixtureKernel;
use introspect::linux::{GuestSnapshot, InspectError, ProfileFiles, snapshot};
use introspect::octal_escape::escape;
use introspect::{Btf, KernelImage, Symbols, open_memory};
use serde_json::Value;

struct Case {
    name: String,
    image: PathBuf,
    truth: Value,
    /// Xen PV save images are taken after the guest froze its user tasks and the process that
    /// wrote the ground truth (pid 1) was running while it did: see the fixture notes.
    frozen_for_save: bool,
}

fn fixture_cases() -> Vec<Case> {
    let Some(fx) = common::fixtures() else {
        return Vec::new();
    };
    let mut cases = Vec::new();
    for (file, frozen) in [("domU-A.save", true), ("domU-A.core", false)] {
        cases.push(Case {
            name: format!("xen-pv-a/{file}"),
            image: common::decompressed(&fx, &format!("xen-pv-a/{file}")),
            truth: common::json(&fx.join("xen-pv-a/ground-truth.json")),
            frozen_for_save: frozen,
        });
    }
    for dir in ["qemu-6.1-4level", "qemu-6.1-la57"] {
        cases.push(Case {
            name: dir.to_owned(),
            image: common::decompressed(&fx, &format!("{dir}/dump.elf")),
            truth: common::json(&fx.join(format!("{dir}/ground-truth.json"))),
            frozen_for_save: false,
        });
    }
    cases
}

fn testbed_case(test: &str) -> Option<Case> {
    let dir = common::testbed_memdump(test)?;
    Some(Case {
        name: "test bed".into(),
        image: dir.join("dump.elf"),
        truth: common::json(&dir.join("ground-truth.json")),
        frozen_for_save: false,
    })
}

fn take(case: &Case, files: &ProfileFiles) -> GuestSnapshot {
    let mem = open_memory(&case.image).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    snapshot(mem.as_ref(), files).unwrap_or_else(|e| panic!("{}: {e}", case.name))
}

fn proc_file<'a>(case: &'a Case, path: &str) -> &'a str {
    case.truth["proc_files"][path]
        .as_str()
        .unwrap_or_else(|| panic!("{}: ground truth lacks {path}", case.name))
}

fn is_worker(comm: &str) -> bool {
    comm.starts_with("kworker/")
}

/// Every check the acceptance criteria name, against one case's ground truth.
fn check(case: &Case, s: &GuestSnapshot) {
    let name = &case.name;
    let uname = &case.truth["uname"];
    for (field, got) in [
        ("sysname", &s.uts.sysname),
        ("nodename", &s.uts.nodename),
        ("release", &s.uts.release),
        ("version", &s.uts.version),
        ("machine", &s.uts.machine),
    ] {
        assert_eq!(got, uname[field].as_str().unwrap(), "{name}: uname {field}");
    }
    assert_eq!(
        format!("{}\n", s.kernel.banner),
        proc_file(case, "/proc/version"),
        "{name}: banner"
    );
    assert_eq!(
        s.kernel.cmdline.as_deref().map(|c| format!("{c}\n")).as_deref(),
        Some(proc_file(case, "/proc/cmdline")),
        "{name}: cmdline"
    );
    assert_eq!(
        s.boot_id.as_deref(),
        Some(proc_file(case, "/proc/sys/kernel/random/boot_id").trim()),
        "{name}: boot_id"
    );
    assert_eq!(
        s.sysctl.get("kernel.ngroups_max").map(String::as_str),
        Some(proc_file(case, "/proc/sys/kernel/ngroups_max").trim()),
        "{name}: ngroups_max"
    );
    assert_eq!(
        s.sysctl.get("kernel.pid_max").map(String::as_str),
        Some(proc_file(case, "/proc/sys/kernel/pid_max").trim()),
        "{name}: pid_max"
    );

    let filesystems: Vec<(bool, &str)> = proc_file(case, "/proc/filesystems")
        .lines()
        .map(|l| {
            let (flag, fs) = l.split_once('\t').expect("filesystems line");
            (flag == "nodev", fs)
        })
        .collect();
    let got: Vec<(bool, &str)> = s.filesystems.iter().map(|f| (f.nodev, f.name.as_str())).collect();
    assert_eq!(got, filesystems, "{name}: /proc/filesystems");

    let modules: Vec<(&str, u64)> = proc_file(case, "/proc/modules")
        .lines()
        .map(|l| {
            let mut w = l.split_whitespace();
            (w.next().unwrap(), w.next().unwrap().parse().unwrap())
        })
        .collect();
    let got: Vec<(&str, u64)> = s.modules.iter().map(|m| (m.name.as_str(), m.size)).collect();
    assert_eq!(got, modules, "{name}: /proc/modules");

    let ipv6 = case.truth["ipv6_conf_all"].as_object().expect("ipv6_conf_all");
    let mut compared = 0;
    for (key, value) in ipv6 {
        let got = s.sysctl.get(&format!("net.ipv6.conf.all.{key}"));
        if value == "<read error>" {
            assert_eq!(
                got, None,
                "{name}: {key} reads an error in the guest, so it has no value"
            );
            continue;
        }
        assert_eq!(
            got.map(String::as_str),
            value.as_str(),
            "{name}: net.ipv6.conf.all.{key}"
        );
        compared += 1;
    }
    assert!(compared > 40, "{name}: only {compared} ipv6 sysctls compared");

    // IPv4: no ground truth captured these, and every guest is freshly booted without sysctl
    // settings, so they must hold the kernel's defaults (net/ipv4/devinet.c `ipv4_devconf`
    // for `all`, `ipv4_devconf_dflt` for `default` and new interfaces; loopback_dev_init
    // turns on NOXFRM and NOPOLICY for lo).
    let ipv4 = |key: &str| s.sysctl.get(&format!("net.ipv4.{key}")).map(String::as_str);
    assert_eq!(ipv4("ip_forward"), Some("0"), "{name}: net.ipv4.ip_forward");
    let ifaces: BTreeSet<String> = match case.truth["commands"]["ip-link"].as_str() {
        // "2: dummy0: <...>": the interface names the guest listed.
        Some(text) => text
            .lines()
            .filter(|l| !l.starts_with(' '))
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .collect(),
        None => s.interfaces.iter().map(|i| i.name.clone()).collect(),
    };
    // sysctl spells a dot in an interface name as a slash.
    let mut ifaces: BTreeSet<String> = ifaces.into_iter().map(|n| n.replace('.', "/")).collect();
    ifaces.extend(["all".to_owned(), "default".to_owned()]);
    let confs: BTreeSet<String> = s
        .sysctl
        .keys()
        .filter_map(|k| k.strip_prefix("net.ipv4.conf."))
        .filter_map(|k| k.rsplit_once('.').map(|(dev, _)| dev.to_owned()))
        .collect();
    assert_eq!(confs, ifaces, "{name}: net.ipv4.conf directories");
    for dev in &confs {
        let settings = s
            .sysctl
            .keys()
            .filter(|k| k.starts_with(&format!("net.ipv4.conf.{dev}.")))
            .count();
        // Linux 6.1 has 33 per-device IPv4 settings.
        assert_eq!(settings, 33, "{name}: net.ipv4.conf.{dev}.*");
        let lo = dev == "lo";
        for (key, value) in [
            ("forwarding", "0"),
            ("mc_forwarding", "0"),
            ("accept_redirects", "1"),
            ("secure_redirects", "1"),
            ("send_redirects", "1"),
            ("shared_media", "1"),
            ("accept_source_route", if dev == "all" { "0" } else { "1" }),
            ("rp_filter", "0"),
            ("arp_ignore", "0"),
            ("arp_evict_nocarrier", "1"),
            ("igmpv2_unsolicited_report_interval", "10000"),
            ("igmpv3_unsolicited_report_interval", "1000"),
            ("disable_xfrm", if lo { "1" } else { "0" }),
            ("disable_policy", if lo { "1" } else { "0" }),
        ] {
            assert_eq!(
                ipv4(&format!("conf.{dev}.{key}")),
                Some(value),
                "{name}: net.ipv4.conf.{dev}.{key}"
            );
        }
    }

    // Mounts: device, mountpoint and type exactly; our options are the generic subset.
    let mounts: Vec<Vec<&str>> = proc_file(case, "/proc/mounts")
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(s.mounts.len(), mounts.len(), "{name}: mount count: {:?}", s.mounts);
    for (got, want) in s.mounts.iter().zip(&mounts) {
        assert_eq!(
            (
                escape(&got.device).as_str(),
                escape(&got.mountpoint).as_str(),
                got.fstype.as_str()
            ),
            (want[0], want[1], want[2]),
            "{name}: mount"
        );
        let want_opts: Vec<&str> = want[3].split(',').collect();
        for opt in got.options.split(',') {
            assert!(
                want_opts.contains(&opt),
                "{name}: {} has option {opt} the guest did not show ({})",
                got.mountpoint,
                want[3]
            );
        }
    }

    check_tasks(case, s);
}

fn check_tasks(case: &Case, s: &GuestSnapshot) {
    let name = &case.name;
    let truth = case.truth["processes"].as_array().expect("processes");
    let got: BTreeMap<i32, _> = s.tasks.iter().map(|t| (t.pid, t)).collect();
    let mut compared = 0;
    for p in truth {
        let comm = p["comm"].as_str().unwrap();
        let pid = p["pid"].as_i64().unwrap() as i32;
        let Some(t) = got.get(&pid) else {
            assert!(is_worker(comm), "{name}: pid {pid} ({comm}) missing from the snapshot");
            continue;
        };
        if is_worker(comm) {
            continue; // a worker's pid may now belong to another worker
        }
        assert_eq!(t.comm, comm, "{name}: pid {pid} comm");
        assert_eq!(t.ppid as i64, p["ppid"].as_i64().unwrap(), "{name}: pid {pid} ppid");
        assert_eq!(t.uid as i64, p["uid"].as_i64().unwrap(), "{name}: pid {pid} uid");
        assert_eq!(t.gid as i64, p["gid"].as_i64().unwrap(), "{name}: pid {pid} gid");
        let args: Vec<String> = p["cmdline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(t.cmdline.as_ref(), Some(&args), "{name}: pid {pid} cmdline");
        let mut state = p["state"].as_str().unwrap().chars().next().unwrap();
        if pid == 1 && state == 'R' {
            state = 'S'; // pid 1 wrote the ground truth, then went back to waiting
        }
        if case.frozen_for_save && (comm == "xenwatch" || comm.starts_with("migration/")) {
            // These carry out the suspend: xenwatch handles the toolstack's request and the
            // stopper thread runs the final hypercall, so both are running in the image.
            state = 'R';
        }
        assert_eq!(t.state, state, "{name}: pid {pid} ({comm}) state");
        compared += 1;
    }
    let known: std::collections::BTreeSet<i64> = truth.iter().map(|p| p["pid"].as_i64().unwrap()).collect();
    for t in &s.tasks {
        assert!(
            known.contains(&(t.pid as i64)) || is_worker(&t.comm),
            "{name}: pid {} ({}) is not in the ground truth",
            t.pid,
            t.comm
        );
        assert!(
            t.kernel_thread || t.cmdline.is_some(),
            "{name}: pid {} has no cmdline",
            t.pid
        );
    }
    assert!(compared >= 20, "{name}: only {compared} tasks compared");
}

#[test]
fn fixtures_from_the_image_alone() {
    for case in fixture_cases() {
        let s = take(&case, &ProfileFiles::default());
        assert_eq!(s.schema, "dormouse.snapshot/1");
        assert!(
            s.kernel.profile.symbols.contains("kallsyms in RAM"),
            "{}",
            s.kernel.profile.symbols
        );
        assert!(
            s.kernel.profile.types.contains(".BTF in RAM at __start_BTF"),
            "{}",
            s.kernel.profile.types
        );
        check(&case, &s);
        if case.name.starts_with("xen-pv") {
            assert_eq!(
                s.kernel.kaslr_phys_offset,
                Some(0),
                "{}: PV kernels load at 16 MiB",
                case.name
            );
        }
        if let Some(kaslr) = case.truth.get("kaslr") {
            let text = common::hex(&kaslr["runtime_symbols"]["_text"]);
            assert_eq!(
                s.kernel.kaslr_offset,
                text - 0xffff_ffff_8100_0000,
                "{}: KASLR offset",
                case.name
            );
            let phys_shift = common::hex(&kaslr["phys_load_offset_from_default"]);
            assert_eq!(
                s.kernel.kaslr_phys_offset,
                Some(phys_shift as i64),
                "{}: physical KASLR offset",
                case.name
            );
        }
    }
}

#[test]
fn testbed_dump_from_the_image_alone() {
    let Some(case) = testbed_case("testbed_dump_from_the_image_alone") else {
        return;
    };
    let s = take(&case, &ProfileFiles::default());
    check(&case, &s);
    assert_eq!(s.uts.nodename, "dormouse-testbed");
}

fn system_map(fx: &Path) -> (String, Symbols) {
    let path = common::decompressed(fx, &FixtureKernel::read(fx).system_map_rel());
    let text = std::fs::read_to_string(&path).unwrap();
    (path.display().to_string(), Symbols::from_system_map(&text).unwrap())
}

fn vmlinuz_btf(fx: &Path) -> (String, Btf) {
    let path = FixtureKernel::read(fx).vmlinuz();
    (
        path.display().to_string(),
        KernelImage::open(&path).unwrap().btf().unwrap(),
    )
}

#[test]
fn fixtures_with_system_map_and_kernel_given_agree_with_the_image_alone() {
    let Some(fx) = common::fixtures() else { return };
    for case in fixture_cases() {
        let alone = take(&case, &ProfileFiles::default());
        let files = ProfileFiles {
            system_map: Some(system_map(&fx)),
            btf: Some(vmlinuz_btf(&fx)),
            isf: None,
        };
        let given = take(&case, &files);
        assert!(
            given.kernel.profile.symbols.contains("System.map"),
            "{}",
            given.kernel.profile.symbols
        );
        assert!(
            given.kernel.profile.types.contains("vmlinuz"),
            "{}",
            given.kernel.profile.types
        );
        check(&case, &given);
        assert_eq!(given.tasks, alone.tasks, "{}", case.name);
        assert_eq!(given.sysctl, alone.sysctl, "{}", case.name);
    }
}

#[test]
fn a_system_map_of_another_build_is_refused() {
    let Some(fx) = common::fixtures() else { return };
    let path = common::decompressed(&fx, &FixtureKernel::read(&fx).system_map_rel());
    let text = std::fs::read_to_string(&path).unwrap();
    // Another build of the same release: everything after the first third moves by 0x40.
    let cut = text.len() / 3;
    let cut = cut + text[cut..].find('\n').unwrap() + 1;
    let mut moved = text[..cut].to_owned();
    for line in text[cut..].lines() {
        let (addr, rest) = line.split_once(' ').unwrap();
        let a = u64::from_str_radix(addr, 16).unwrap();
        let a = if a > 0xffff_ffff_8000_0000 { a + 0x40 } else { a };
        moved.push_str(&format!("{a:016x} {rest}\n"));
    }
    let files = ProfileFiles {
        system_map: Some(("other-build.map".into(), Symbols::from_system_map(&moved).unwrap())),
        btf: None,
        isf: None,
    };
    for case in fixture_cases() {
        let mem = open_memory(&case.image).unwrap();
        match snapshot(mem.as_ref(), &files) {
            Err(InspectError::ProfileMismatch { what, detail, .. }) => {
                assert_eq!(what, "System.map");
                assert!(detail.contains("differ"), "{detail}");
            }
            other => panic!(
                "{}: a wrong System.map was accepted: {:?}",
                case.name,
                other.map(|s| s.kernel.profile)
            ),
        }
    }
}

#[test]
fn btf_that_differs_from_the_kernels_own_is_refused() {
    let Some(fx) = common::fixtures() else { return };
    let (_, btf) = vmlinuz_btf(&fx);
    let mut bytes = btf.bytes().to_vec();
    // Rename one member ("tgid" -> "tgiD"): still valid BTF, but not this kernel's.
    let at = memchr::memmem::find(&bytes, b"\0tgid\0").expect("the string table has tgid") + 4;
    bytes[at] = b'D';
    let files = ProfileFiles {
        system_map: None,
        btf: Some(("edited.btf".into(), Btf::parse("edited.btf", bytes).unwrap())),
        isf: None,
    };
    for case in fixture_cases() {
        let mem = open_memory(&case.image).unwrap();
        assert!(
            matches!(
                snapshot(mem.as_ref(), &files),
                Err(InspectError::ProfileMismatch { .. })
            ),
            "{}: edited BTF accepted",
            case.name
        );
    }
}

#[test]
fn hvm_image_without_linux_is_reported_cleanly() {
    let Some(fx) = common::fixtures() else { return };
    let mem = open_memory(common::decompressed(&fx, "xen-hvm-bios/domU-H.save")).unwrap();
    let err = snapshot(mem.as_ref(), &ProfileFiles::default()).unwrap_err();
    assert!(matches!(err, InspectError::NoKernel { .. }), "{err}");
    assert!(err.to_string().contains("no Linux kernel found"), "{err}");
}
