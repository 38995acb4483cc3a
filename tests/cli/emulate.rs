//! `dormouse emulate` on the test bed's guest images and the real Xen domU disk: the guest's
//! own apt runs in the sandbox, its changes land in the upper layer, the disk is never
//! written, nothing stays mounted; and a hostile guest cannot get out (root).

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use dormouse_tests::{Testbed, sha256_file, start_repo, testbed};
use serde_json::Value;

use crate::dormouse_bin;

/// Runs `dormouse emulate` with `--json`, returning the parsed report and the raw output.
pub(crate) fn emulate(args: &[&str], state: &Path) -> (Option<Value>, Output) {
    let output = Command::new(dormouse_bin())
        .arg("emulate")
        .args(["--json", "--state-dir"])
        .arg(state)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running dormouse emulate");
    let report = serde_json::from_slice(&output.stdout).ok();
    if let Some(report) = &report {
        crate::schemas::assert_valid("emulate", report);
    }
    (report, output)
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Mount points and loop devices that mention `needle` (a state dir or image path).
fn leftovers(needle: &Path) -> Vec<String> {
    let needle = needle.to_string_lossy().into_owned();
    let mut found: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(|l| format!("mount: {l}"))
        .collect();
    for entry in fs::read_dir("/sys/block").into_iter().flatten().flatten() {
        let backing = entry.path().join("loop/backing_file");
        if let Ok(file) = fs::read_to_string(&backing) {
            if file.contains(&needle) {
                found.push(format!(
                    "loop device {}: {}",
                    entry.file_name().to_string_lossy(),
                    file.trim()
                ));
            }
        }
    }
    found
}

pub(crate) fn dpkg_status_of(status: &str, package: &str) -> Option<(String, String)> {
    status.split("\n\n").find_map(|para| {
        let field = |name: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .map(str::to_owned)
        };
        (field("Package")? == package).then(|| {
            (
                field("Status").unwrap_or_default(),
                field("Version").unwrap_or_default(),
            )
        })
    })
}

/// Where a guest path's changes are: the upper layer of the guest filesystem it belongs to.
pub(crate) struct Uppers(Vec<(String, PathBuf)>);

impl Uppers {
    pub(crate) fn from_report(report: &Value) -> Uppers {
        let layers = report["upper_layers"].as_array().expect("upper_layers in the report");
        Uppers(
            layers
                .iter()
                .map(|l| {
                    (
                        l["guest_path"].as_str().unwrap().to_owned(),
                        PathBuf::from(l["kept_at"].as_str().expect("kept upper layer")),
                    )
                })
                .collect(),
        )
    }

    /// `/var/lib/dpkg/status` → `<upper of /var>/lib/dpkg/status` when /var is its own filesystem.
    pub(crate) fn path(&self, guest_path: &str) -> PathBuf {
        let (mount, upper) = self
            .0
            .iter()
            .filter(|(m, _)| m == "/" || guest_path == m || guest_path.starts_with(&format!("{m}/")))
            .max_by_key(|(m, _)| m.len())
            .expect("a root upper layer");
        upper.join(guest_path[mount.len()..].trim_start_matches('/'))
    }
}

struct Scenario {
    name: &'static str,
    script: String,
    check: fn(&Testbed, &Uppers),
}

fn scenarios() -> Vec<Scenario> {
    // `apt-get update` exits 0 even when every source fails; its Err:/W: lines tell.
    let update = "apt-get update 2>&1 | tee /tmp/update.log; ! grep -E '^(Err|W):' /tmp/update.log";
    vec![
        Scenario {
            name: "apt-get update",
            script: update.into(),
            check: |_, upper| {
                let lists = upper.path("/var/lib/apt/lists");
                let names: Vec<String> = fs::read_dir(&lists)
                    .unwrap_or_else(|e| panic!("{}: {e}", lists.display()))
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                assert!(
                    names
                        .iter()
                        .any(|n| n.contains("bookworm-security") && n.ends_with("_Packages")),
                    "no refreshed security index in the upper layer: {names:?}"
                );
            },
        },
        Scenario {
            name: "install nginx",
            script: format!("{update} && apt-get install -y nginx"),
            check: |_, upper| {
                assert!(
                    upper.path("/usr/sbin/nginx").is_file(),
                    "nginx binary not in the upper layer"
                );
                let status = fs::read_to_string(upper.path("/var/lib/dpkg/status")).unwrap();
                let (state, _) = dpkg_status_of(&status, "nginx").expect("nginx in dpkg status");
                assert_eq!(state, "install ok installed");
            },
        },
        Scenario {
            name: "remove nginx",
            script: format!("{update} && apt-get install -y nginx && apt-get remove -y nginx"),
            check: |_, upper| {
                assert!(
                    !upper.path("/usr/sbin/nginx").exists(),
                    "nginx binary still there after remove"
                );
                let status = fs::read_to_string(upper.path("/var/lib/dpkg/status")).unwrap();
                // `nginx` has no conffiles, so removing it drops its record; its dependencies
                // stay installed until an autoremove.
                assert_eq!(dpkg_status_of(&status, "nginx"), None, "nginx after apt-get remove");
                let (state, _) = dpkg_status_of(&status, "nginx-common").expect("nginx-common in dpkg status");
                assert_eq!(state, "install ok installed", "nginx-common after apt-get remove");
            },
        },
        Scenario {
            name: "security update",
            script: format!("{update} && apt-get -y upgrade"),
            check: |tb, upper| {
                let security = &tb.scenarios["security_update"];
                let package = security["package"].as_str().unwrap();
                let status = fs::read_to_string(upper.path("/var/lib/dpkg/status")).unwrap();
                let (state, version) = dpkg_status_of(&status, package).expect("upgraded package in dpkg status");
                assert_eq!(state, "install ok installed");
                assert_eq!(version, security["candidate_version"].as_str().unwrap());
            },
        },
    ]
}

/// Runs every scenario on `disk` in a fresh run each, with the upper layers kept, and checks
/// the changes, that the image is unchanged and that nothing stays mounted or attached.
fn run_scenarios(tb: &Testbed, disk: &dormouse_tests::TestbedDisk, snapshot_args: &[&str], layers: usize) {
    start_repo();
    let before = sha256_file(&disk.path);
    assert_eq!(before, disk.sha256, "the test bed image changed since make-fixtures");
    let (_link_dir, image) = dormouse_tests::private_link(&disk.path);
    for scenario in scenarios() {
        let work = tempfile::tempdir().unwrap();
        let (state, keep) = (work.path().join("state"), work.path().join("keep"));
        let mut args: Vec<&str> = snapshot_args.to_vec();
        let script = scenario.script.as_str();
        args.extend(["--disk", image.to_str().unwrap(), "--keep", keep.to_str().unwrap()]);
        args.extend(["--", "sh", "-c", script]);
        let (report, output) = emulate(&args, &state);
        assert!(output.status.success(), "{}: {}", scenario.name, stderr(&output));
        let report = report.expect("JSON report");
        assert_eq!(report["exit_code"], 0, "{}", scenario.name);
        let uppers = Uppers::from_report(&report);
        assert_eq!(
            uppers.0.len(),
            layers,
            "{}: one upper layer per guest filesystem",
            scenario.name
        );
        (scenario.check)(tb, &uppers);
        assert!(
            leftovers(&state).is_empty(),
            "{}: {:?}",
            scenario.name,
            leftovers(&state)
        );
        assert!(
            leftovers(&image).is_empty(),
            "{}: {:?}",
            scenario.name,
            leftovers(&image)
        );
        let runs = state.join("runs");
        assert!(
            !runs.exists() || fs::read_dir(&runs).unwrap().next().is_none(),
            "{}: run directory left behind",
            scenario.name
        );
    }
    assert_eq!(sha256_file(&disk.path), before, "the guest image was written");
}

/// The single-root image, with the test bed's memory dump as the guest's /proc.
#[test]
fn apt_scenarios_on_the_single_root_image() {
    let Some(tb) = testbed("apt_scenarios_on_the_single_root_image") else {
        return;
    };
    let dump = tb.memdump.dir.join("dump.elf");
    run_scenarios(&tb, &tb.disks.guest, &[dump.to_str().unwrap()], 1);
}

/// The GPT image with /var on its own partition, as a stopped VM (no memory image: the
/// snapshot is synthesized; the test bed guest has no kernel, so the release is given: the one
/// the test bed's dump booted).
#[test]
fn apt_scenarios_on_the_split_image_as_a_stopped_vm() {
    let Some(tb) = testbed("apt_scenarios_on_the_split_image_as_a_stopped_vm") else {
        return;
    };
    let release = tb.kernel.release.clone();
    run_scenarios(&tb, &tb.disks.guest_split, &["--release", &release], 2);
}

/// `command` in the sandbox over the test bed's single-root disk, as a stopped VM, no network.
fn emulate_on_the_guest_disk(tb: &Testbed, command: &[&str]) -> (Option<Value>, Output) {
    let state = tempfile::tempdir().unwrap();
    let disk = tb.disks.guest.path.to_str().unwrap();
    let mut args = vec!["--disk", disk, "--release", &tb.kernel.release, "--net", "none", "--"];
    args.extend(command);
    emulate(&args, state.path())
}

/// The guest's command starts as the guest would start it: no signal ignored, none blocked.
/// dormouse's own ignored SIGPIPE (the Rust runtime's) used to reach it (SigIgn bit 13, 0x1000),
/// so the package manager's pipelines saw EPIPE errors instead of ending as on the guest.
#[test]
fn the_command_starts_with_default_signal_actions() {
    let Some(tb) = testbed("the_command_starts_with_default_signal_actions") else {
        return;
    };
    let (_, output) = emulate_on_the_guest_disk(&tb, &["grep", "^Sig[IB]", "/proc/self/status"]);
    // With --json the command's standard output goes to standard error.
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    for field in ["SigIgn", "SigBlk"] {
        assert!(log.contains(&format!("{field}:\t0000000000000000\n")), "{field}: {log}");
    }
}

/// An exec whose arguments the tracer cannot read (argv points at unmapped memory) is refused
/// with EPERM and recorded, not let through unclassified: the tracer used to allow it (the
/// kernel then answered EFAULT here, but a racing thread could make the arguments unreadable
/// to the tracer and valid again for the kernel).
#[test]
fn execs_the_tracer_cannot_read_are_refused_and_recorded() {
    let Some(tb) = testbed("execs_the_tracer_cannot_read_are_refused_and_recorded") else {
        return;
    };
    let execve = format!(
        "my $path = '/bin/true'; syscall({}, $path, 1, 0); print $!+0, qq(\n)",
        nix::libc::SYS_execve
    );
    let (report, output) = emulate_on_the_guest_disk(&tb, &["perl", "-e", &execve]);
    // With --json the command's standard output goes to standard error: perl's errno.
    let log = stderr(&output);
    let report = report.unwrap_or_else(|| panic!("no JSON report: {log}"));
    assert_eq!(log.lines().last(), Some(nix::libc::EPERM.to_string().as_str()), "{log}");
    let refused = report["trace"]["execs_refused"].as_array().cloned().unwrap_or_default();
    assert_eq!(refused.len(), 1, "{:#}", report["trace"]);
    assert!(
        refused[0]["reason"].as_str().unwrap().contains("at 0x1 "),
        "{refused:?}"
    );
}

/// A guest whose `apt-get` is [`tests/data/hostile.c`]: every escape attempt must be blocked,
/// the run must end with the limits reported, and dom0 must be untouched.
#[test]
fn hostile_guest_is_contained() {
    let Some(tb) = testbed("hostile_guest_is_contained") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    for dir in [
        "etc/apt", "usr/bin", "proc", "dev", "sys", "run", "tmp", "var/tmp", "mnt", "root",
    ] {
        fs::create_dir_all(tree.join(dir)).unwrap();
    }
    fs::write(tree.join("etc/fstab"), "LABEL=hostile / ext4 defaults 0 1\n").unwrap();
    fs::write(tree.join("etc/os-release"), "ID=debian\nVERSION_ID=\"12\"\n").unwrap();
    let guest_shadow = "root:GUEST-SHADOW-MARKER:19000:0:99999:7:::";
    fs::write(tree.join("etc/shadow"), format!("{guest_shadow}\n")).unwrap();
    fs::write(
        tree.join("etc/apt/sources.list"),
        "deb http://deb.debian.org/debian bookworm main\n",
    )
    .unwrap();
    let source = dormouse_tests::workspace_root().join("tests/data/hostile.c");
    let built = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(tree.join("usr/bin/apt-get"))
        .arg(&source)
        .status()
        .expect("running gcc (scripts/lib.sh installs it)");
    assert!(built.success(), "gcc -static {}", source.display());
    let image = work.path().join("hostile.img");
    let made = Command::new("mke2fs")
        .args(["-q", "-t", "ext4", "-L", "hostile", "-d"])
        .arg(&tree)
        .arg(&image)
        .arg("64M")
        .status()
        .expect("running mke2fs");
    assert!(made.success());
    let image_sha = sha256_file(&image);
    let dom0_shadow = fs::read("/etc/shadow").unwrap();

    // dom0 things the guest will go after.
    let mut victim = Command::new("sleep").arg("600").spawn().unwrap();
    let marker = work.path().join("dom0-marker");
    let denied = TcpListener::bind("127.0.0.1:0").unwrap();
    denied.set_nonblocking(true).unwrap();
    let denied_port = denied.local_addr().unwrap().port().to_string();

    let state = work.path().join("state");
    let dump = tb.memdump.dir.join("dump.elf");
    let (report, output) = emulate(
        &[
            dump.to_str().unwrap(),
            "--disk",
            image.to_str().unwrap(),
            "--net",
            "restricted",
            "--pids",
            "64",
            "--scratch-size",
            "32M",
            "--memory",
            "512M",
            "--env",
            &format!("DOM0_PID={}", victim.id()),
            "--env",
            &format!("DOM0_MARKER={}", marker.display()),
            "--env",
            "DENIED_HOST=127.0.0.1",
            "--env",
            &format!("DENIED_PORT={denied_port}"),
            "--",
            "apt-get",
            "upgrade",
        ],
        &state,
    );
    let log = stderr(&output);
    let report = report.unwrap_or_else(|| panic!("no JSON report: {log}"));
    assert!(
        log.contains("HOSTILE DONE"),
        "the hostile program did not finish: {log}"
    );
    let escapes: Vec<&str> = log.lines().filter(|l| l.contains("ESCAPED")).collect();
    assert!(escapes.is_empty(), "escapes: {escapes:#?}");
    for attempt in [
        "write-via-proc1-root",
        "chroot",
        "mount-tmpfs",
        "remount-root-ro",
        "umount-proc",
        "new-mount-api",
        "unshare-userns",
        "init_module",
        "finit_module",
        "delete_module",
        "mknod-blockdev",
        "open-dev-sda",
        "open-dev-mem",
        "iopl",
        "ptrace-dom0",
        "kill-dom0",
        "reboot",
        "sethostname",
        "write-sys",
        "connect-denied-address",
        "proxy-connect-elsewhere",
        "proxy-connect-dom0-ssh",
        "proxy-get-elsewhere",
        "proxy-tunnel-plain-source",
        "fork-bomb",
        "fill-disk",
    ] {
        assert!(
            log.lines().any(|l| l.starts_with(&format!("TRY {attempt} blocked"))),
            "attempt {attempt} not reported as blocked:\n{log}"
        );
    }
    // Every shadow file it could read is the guest's own.
    for line in log.lines().filter(|l| l.starts_with("SHADOW ")) {
        assert!(
            line.ends_with(guest_shadow),
            "read something else than the guest's shadow: {line}"
        );
    }
    assert!(log.lines().any(|l| l.starts_with("SHADOW /etc/shadow ")), "{log}");
    // The run ends with the command's failure and the limits it hit.
    assert_eq!(report["exit_code"], 100, "{log}");
    assert_eq!(output.status.code(), Some(100));
    let events = report["limit_events"].to_string();
    assert!(events.contains("pids"), "pids limit not reported: {events}");
    assert!(log.contains("limit reached"), "{log}");

    // dom0 is untouched.
    assert!(!marker.exists(), "the guest created {} in dom0", marker.display());
    assert!(victim.try_wait().unwrap().is_none(), "the dom0 process was killed");
    victim.kill().unwrap();
    let _ = victim.wait();
    assert!(
        denied.accept().is_err(),
        "the guest reached a dom0 port it was not allowed"
    );
    assert_eq!(fs::read("/etc/shadow").unwrap(), dom0_shadow);
    assert_eq!(sha256_file(&image), image_sha, "the guest image was written");
    assert!(leftovers(&state).is_empty(), "{:?}", leftovers(&state));
    assert!(leftovers(&image).is_empty(), "{:?}", leftovers(&image));
}

/// The real Xen PV domU: its save image gives the /proc, its disk the tree, and its own apt
/// talks to its configured Debian mirrors (reachable from CI: they are package registries).
#[test]
fn apt_on_the_real_xen_domu_with_its_save_image() {
    let Some(fx) = dormouse_tests::xen_fixtures("apt_on_the_real_xen_domu_with_its_save_image") else {
        return;
    };
    let save = dormouse_tests::decompressed(&fx, "xen-pv-a/domU-A.save");
    let disk = dormouse_tests::decompressed(&fx, "xen-pv-a/domU-A-disk.img");
    let before = sha256_file(&disk);
    let update = "apt-get update 2>&1 | tee /tmp/update.log; ! grep -E '^(Err|W):' /tmp/update.log";
    let runs = [
        (
            "install and remove nginx",
            format!(
                "test \"$(hostname)\" = dormouse-a && {update} && apt-get install -y nginx && test -x /usr/sbin/nginx \
                 && apt-get remove -y nginx && ! test -e /usr/sbin/nginx"
            ),
        ),
        (
            "security update",
            format!(
                "dpkg-query -W > /root/before && {update} && apt-get -y upgrade \
                 && test \"$(apt-get -s upgrade | grep -c '^Inst')\" = 0 && dpkg-query -W > /root/after"
            ),
        ),
    ];
    for (name, script) in runs {
        let work = tempfile::tempdir().unwrap();
        let (state, keep) = (work.path().join("state"), work.path().join("keep"));
        let args = [
            save.to_str().unwrap(),
            "--disk",
            disk.to_str().unwrap(),
            "--keep",
            keep.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            &script,
        ];
        let (report, output) = emulate(&args, &state);
        assert!(output.status.success(), "{name}: {}", stderr(&output));
        let report = report.expect("JSON report");
        assert_eq!(report["snapshot"], "image");
        let uppers = Uppers::from_report(&report);
        assert!(
            uppers.path("/var/lib/dpkg/status").is_file(),
            "{name}: dpkg status unchanged"
        );
        if name == "security update" {
            // Something was upgraded, and every version that changed went up (checked by dom0's dpkg).
            let versions = |file: &str| -> std::collections::BTreeMap<String, String> {
                fs::read_to_string(uppers.path(file))
                    .unwrap()
                    .lines()
                    .filter_map(|l| l.split_once('\t'))
                    .map(|(p, v)| (p.to_owned(), v.to_owned()))
                    .collect()
            };
            let (old, new) = (versions("/root/before"), versions("/root/after"));
            let changed: Vec<_> = new.iter().filter(|(p, v)| old.get(*p) != Some(v)).collect();
            assert!(!changed.is_empty(), "{name}: nothing was upgraded");
            for (package, version) in changed {
                let previous = old.get(package).map_or("", String::as_str);
                let newer = Command::new("dpkg")
                    .args(["--compare-versions", version, "gt", previous])
                    .status()
                    .unwrap();
                assert!(newer.success(), "{package}: {previous} -> {version} is not an upgrade");
            }
        }
        assert!(leftovers(&state).is_empty(), "{name}: {:?}", leftovers(&state));
        assert!(leftovers(&disk).is_empty(), "{name}: {:?}", leftovers(&disk));
    }
    assert_eq!(sha256_file(&disk), before, "the domU's disk was written");
}

/// Builds `dormouse-marker_1.0_all.deb` in `dir`: every maintainer script leaves a marker in
/// the guest and in dom0 (`dom0_marker` plus the script's name) and the postinst fails, so
/// any script that runs is seen, and a postinst that ran would break the install.
pub(crate) fn marker_deb(dir: &Path, dom0_marker: &Path) -> PathBuf {
    let root = dir.join("pkg");
    fs::create_dir_all(root.join("DEBIAN")).unwrap();
    fs::create_dir_all(root.join("usr/share/dormouse-marker")).unwrap();
    fs::write(root.join("usr/share/dormouse-marker/payload"), "payload\n").unwrap();
    fs::write(
        root.join("DEBIAN/control"),
        "Package: dormouse-marker\nVersion: 1.0\nArchitecture: all\nMaintainer: dormouse tests <t@example.invalid>\n\
         Description: maintainer scripts that must never run in dom0\n",
    )
    .unwrap();
    for script in ["preinst", "postinst", "prerm", "postrm"] {
        let fail = if script == "postinst" { "exit 1\n" } else { "" };
        let body = format!(
            "#!/bin/sh\ntouch /var/tmp/marker-{script}\ntouch {}-{script} 2>/dev/null\n{fail}exit 0\n",
            dom0_marker.display()
        );
        let path = root.join("DEBIAN").join(script);
        fs::write(&path, body).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let deb = dir.join("dormouse-marker_1.0_all.deb");
    let built = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "--build"])
        .arg(&root)
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "dpkg-deb: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    deb
}

/// No maintainer script runs: the failing postinst is intercepted, so dpkg succeeds; every
/// script is recorded with its package, type and argv; no marker appears anywhere; and uname
/// answers with the guest's kernel.
#[test]
fn maintainer_scripts_are_intercepted_and_uname_is_the_guests() {
    let Some(tb) = testbed("maintainer_scripts_are_intercepted_and_uname_is_the_guests") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let dom0_marker = work.path().join("dom0-marker");
    let debs = work.path().join("debs");
    fs::create_dir_all(&debs).unwrap();
    let deb = marker_deb(&debs, &dom0_marker);
    let deb_in_guest = format!("/run/debs/{}", deb.file_name().unwrap().to_string_lossy());
    let dump = tb.memdump.dir.join("dump.elf");
    let truth: Value =
        serde_json::from_str(&fs::read_to_string(tb.memdump.dir.join("ground-truth.json")).unwrap()).unwrap();
    let bind = format!("{}:/run/debs", debs.display());
    let script = format!(
        "uname -a > /root/uname.txt && dpkg -i {deb_in_guest} && dpkg -r dormouse-marker && ls /var/tmp/marker-* 2>/dev/null; true"
    );
    let keep = work.path().join("keep");
    let (report, output) = emulate(
        &[
            dump.to_str().unwrap(),
            "--disk",
            tb.disks.guest.path.to_str().unwrap(),
            "--bind",
            &bind,
            "--keep",
            keep.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            &script,
        ],
        &work.path().join("state"),
    );
    let log = stderr(&output);
    let report = report.unwrap_or_else(|| panic!("no report: {log}"));
    assert_eq!(report["exit_code"], 0, "{log}");
    let recorded: Vec<(String, String, Vec<String>)> = report["trace"]["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let argv = s["argv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_owned());
            (
                s["package"].as_str().unwrap().to_owned(),
                s["type"].as_str().unwrap().to_owned(),
                argv.skip(1).collect(),
            )
        })
        .collect();
    let expect =
        |p: &str, t: &str, args: &[&str]| (p.to_owned(), t.to_owned(), args.iter().map(|a| a.to_string()).collect());
    assert_eq!(
        recorded,
        vec![
            expect("dormouse-marker", "preinst", &["install"]),
            expect("dormouse-marker", "postinst", &["configure", ""]),
            expect("dormouse-marker", "prerm", &["remove"]),
            expect("dormouse-marker", "postrm", &["remove"]),
        ],
        "{log}"
    );
    for s in report["trace"]["scripts"].as_array().unwrap() {
        assert_eq!(s["sha256"].as_str().unwrap().len(), 64);
        assert!(s["env"].to_string().contains("DPKG_MAINTSCRIPT_NAME"), "{s}");
    }
    let uppers = Uppers::from_report(&report);
    for script in ["preinst", "postinst", "prerm", "postrm"] {
        assert!(
            !uppers.path(&format!("/var/tmp/marker-{script}")).exists(),
            "{script} ran in the sandbox"
        );
        assert!(
            !PathBuf::from(format!("{}-{script}", dom0_marker.display())).exists(),
            "{script} ran in dom0"
        );
    }
    // uname answered from the snapshot, not dom0's kernel.
    let uname = fs::read_to_string(uppers.path("/root/uname.txt")).unwrap();
    assert_eq!(uname.trim_end(), truth["uname"]["uname_a"].as_str().unwrap());

    // The same run without interception: the scripts do run (inside the sandbox, never in
    // dom0) and the failing postinst breaks the install — what interception prevented above.
    let keep_off = work.path().join("keep-off");
    let (report, output) = emulate(
        &[
            dump.to_str().unwrap(),
            "--disk",
            tb.disks.guest.path.to_str().unwrap(),
            "--bind",
            &bind,
            "--keep",
            keep_off.to_str().unwrap(),
            "--trace",
            "off",
            "--",
            "dpkg",
            "-i",
            &deb_in_guest,
        ],
        &work.path().join("state-off"),
    );
    let report = report.unwrap_or_else(|| panic!("no report: {}", stderr(&output)));
    assert_ne!(report["exit_code"], 0, "dpkg -i succeeded although its postinst fails");
    let uppers = Uppers::from_report(&report);
    assert!(uppers.path("/var/tmp/marker-preinst").exists());
    assert!(uppers.path("/var/tmp/marker-postinst").exists());
    assert!(
        !PathBuf::from(format!("{}-postinst", dom0_marker.display())).exists(),
        "a script reached dom0"
    );
}

/// Processes whose command line is exactly `argv`.
fn processes_running(argv: &[&str]) -> Vec<i32> {
    let wanted: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted))
        .collect()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed().as_secs() < 60, "timed out waiting until {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// SIGTERM tears a run down cleanly; SIGKILL leaves no mount, loop device or sandbox process
/// behind (private mount namespace, parent-death signals, PID namespace), and `dormouse
/// cleanup` removes the run directory and cgroups it left.
#[test]
fn interrupted_and_killed_runs_leave_nothing_behind() {
    let Some(tb) = testbed("interrupted_and_killed_runs_leave_nothing_behind") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let (_link_dir, disk) = dormouse_tests::private_link(&tb.disks.guest.path);
    let disk = &disk;
    let dump = tb.memdump.dir.join("dump.elf");
    for (signal, seconds) in [("TERM", "3001"), ("KILL", "3002")] {
        let mut child = Command::new(dormouse_bin())
            .arg("emulate")
            .arg("--state-dir")
            .arg(&state)
            .arg(&dump)
            .arg("--disk")
            .arg(disk)
            .args(["--", "sleep", seconds])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_until("the sandboxed sleep runs", || {
            !processes_running(&["sleep", seconds]).is_empty()
        });
        let kill = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let status = child.wait().unwrap();
        wait_until("the sandbox is gone", || {
            processes_running(&["sleep", seconds]).is_empty()
        });
        // The kernel tears the dead namespace's mounts down, and auto-clearing loop devices
        // detach, asynchronously after the last process exits: give it a moment, no more.
        let start = std::time::Instant::now();
        while (!leftovers(&state).is_empty() || !leftovers(disk).is_empty()) && start.elapsed().as_secs() < 10 {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(leftovers(&state).is_empty(), "{signal}: {:?}", leftovers(&state));
        assert!(leftovers(disk).is_empty(), "{signal}: {:?}", leftovers(disk));
        let runs: Vec<_> = fs::read_dir(state.join("runs"))
            .map(|d| d.flatten().collect())
            .unwrap_or_default();
        if signal == "TERM" {
            assert!(!status.success(), "an interrupted run must not report success");
            assert!(runs.is_empty(), "SIGTERM left a run directory");
        } else {
            assert_eq!(runs.len(), 1, "SIGKILL cannot remove the run directory; cleanup must");
            let record: Value = serde_json::from_slice(&fs::read(runs[0].path().join("run.json")).unwrap()).unwrap();
            let cgroups: Vec<PathBuf> = record["cgroups"]["dirs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| PathBuf::from(d.as_str().unwrap()))
                .collect();
            assert!(!cgroups.is_empty() && cgroups.iter().all(|c| c.exists()), "{cgroups:?}");
            let cleanup = Command::new(dormouse_bin())
                .args(["cleanup", "--json", "--state-dir"])
                .arg(&state)
                .output()
                .unwrap();
            assert!(cleanup.status.success(), "{}", stderr(&cleanup));
            let report: Value = serde_json::from_slice(&cleanup.stdout).unwrap();
            assert_eq!(report["removed_runs"].as_array().unwrap().len(), 1, "{report}");
            assert!(!runs[0].path().exists());
            assert!(cgroups.iter().all(|c| !c.exists()), "cgroups left: {cgroups:?}");
        }
    }
}
