//! `dormouse restore` end to end (root): a "dom0" network namespace with a bridge, a "guest"
//! namespace joined to it by a veth whose dom0 end is `vif7.0`, and a test toolstack (the
//! `--toolstack PROGRAM` seam, `applier::toolstack::CommandToolstack`) that "restores" by
//! plugging the veth in and "unpauses" by booting the guest: `dormouse-agent serve` in the
//! guest namespace, applying to a copy of the test bed's guest root. Nothing runs in the guest
//! before the unpause, as with `xl restore -p`.
//!
//! The bundles are made by `dormouse emulate --out` from the test bed's image and memory dump;
//! `restore` is given the same image, so the identity check is the real one.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use bundle::sign::signature_path;
use dormouse_tests::{Testbed, copy_guest_root, start_repo, testbed};
use serde_json::Value;

use crate::dormouse_bin;
use crate::emulate::{dpkg_status_of, marker_deb};
use crate::isolate::{Lab, in_ns, text};

const UPDATE: &str =
    "apt-get update >/tmp/update.log 2>&1; cat /tmp/update.log; ! grep -qE '^(Err|W):' /tmp/update.log";
const GUEST_UUID: &str = "5d0c35a5-70d4-4a4e-9a55-00000000d007";
/// What a chroot of the guest needs mounted to run package scripts, `$1` being the root.
const CHROOT_MOUNTS: &str = r#"mount -t proc proc "$1/proc"
mount --rbind /dev "$1/dev"
mount -t tmpfs tmpfs "$1/run"
mount -t tmpfs tmpfs "$1/tmp""#;

/// The agent binary of this workspace, built into the target directory `dormouse` is in.
fn agent_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin_dir = Path::new(dormouse_bin())
            .parent()
            .expect("dormouse is in <target>/<profile>/");
        let target = bin_dir.parent().expect("<target>/<profile>/");
        let release = bin_dir.file_name().is_some_and(|p| p == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args([
            "build",
            "--quiet",
            "-p",
            "guest-agent",
            "--bin",
            "dormouse-agent",
            "--target-dir",
        ]);
        build.arg(target).current_dir(dormouse_tests::workspace_root());
        if release {
            build.arg("--release");
        }
        assert!(
            build.status().expect("running cargo build").success(),
            "building dormouse-agent"
        );
        bin_dir.join("dormouse-agent")
    })
}

fn sh(script: &str, args: &[&Path]) -> Output {
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-ec", script, "sh"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running unshare")
}

/// `dormouse keygen --out BASE`: BASE.key and BASE.pub.
fn keygen(base: &Path) {
    let out = Command::new(dormouse_bin())
        .args(["keygen", "--out"])
        .arg(base)
        .output()
        .unwrap();
    assert!(out.status.success(), "keygen: {}", text(&out));
}

/// `dormouse emulate --out` on the test bed's image: the signed bundle.
fn make_bundle(tb: &Testbed, work: &Path, name: &str, extra: &[&str], command: &str) -> PathBuf {
    let key = work.join("key");
    if !key.with_extension("key").exists() {
        keygen(&key);
    }
    let bundle = work.join(format!("{name}.dmb"));
    let out = Command::new(dormouse_bin())
        .arg("emulate")
        .arg("--state-dir")
        .arg(work.join("state"))
        .arg(tb.memdump.dir.join("dump.elf"))
        .arg("--disk")
        .arg(&tb.disks.guest.path)
        .args(extra)
        .arg("--out")
        .arg(&bundle)
        .arg("--sign-key")
        .arg(key.with_extension("key"))
        .args(["--", "sh", "-c", command])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "emulate {command:?}: {}", text(&out));
    bundle
}

/// The update the classic way, in a chroot of a copy of the guest: seconds it took.
fn online_seconds(root: &Path, command: &str) -> f64 {
    let script = format!(
        "{CHROOT_MOUNTS}\nexec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root DEBIAN_FRONTEND=noninteractive TERM=dumb chroot \"$1\" sh -c \"$2\""
    );
    let start = Instant::now();
    let out = sh(&script, &[root, Path::new(command)]);
    let seconds = start.elapsed().as_secs_f64();
    assert!(out.status.success(), "online {command:?}: {}", text(&out));
    seconds
}

/// The guest's agent, killed when the test ends (its namespace's deletion would not).
struct AgentProcess(PathBuf);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Ok(pid) = fs::read_to_string(&self.0) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

/// One restore lab: dom0 with bridge br0 (10.77.0.1), an empty guest namespace, the guest's
/// root at `root` and the test toolstack program.
struct RestoreLab {
    lab: Lab,
    dom0: String,
    guest: String,
    dir: PathBuf,
    toolstack: PathBuf,
    /// The signer's public key, as dom0 has it.
    key: PathBuf,
    _agent: AgentProcess,
}

impl RestoreLab {
    fn new(tag: &str, dir: &Path, root: &Path, key: &Path) -> RestoreLab {
        let mut lab = Lab::new(tag);
        let dom0 = lab.netns("dom0");
        let guest = lab.netns("guest");
        lab.sh(
            &dom0,
            "ip link add br0 type bridge forward_delay 0 stp_state 0
             ip addr add 10.77.0.1/24 dev br0
             ip link set br0 up",
        );
        fs::create_dir_all(dir.join("xenstore")).unwrap();
        // The guest boots: a ping sent at once says whether it can reach dom0 outside the agent
        // channel (it must not: the vif is isolated before the unpause); it waits for its
        // answer in the background, so the agent starts without delay.
        let boot = dir.join("guest-boot");
        fs::write(
            &boot,
            format!(
                "#!/bin/sh\nset -e\nset -- {root}\n{CHROOT_MOUNTS}\n\
                 (if ping -c1 -W1 10.77.0.1 >/dev/null 2>&1; then echo reachable; else echo blocked; fi > {dir}/probe.tmp; mv {dir}/probe.tmp {dir}/probe) &\n\
                 exec {agent} serve --listen 10.77.0.7:7878 --allow-from 10.77.0.1:7878 --key {key} --root {root} --spool {dir}/spool\n",
                root = root.display(),
                dir = dir.display(),
                agent = agent_bin().display(),
                key = key.display(),
            ),
        )
        .unwrap();
        let toolstack = dir.join("toolstack");
        fs::write(
            &toolstack,
            format!(
                r#"#!/bin/sh
set -e
dir={dir}
echo "$*" >> "$dir/toolstack.log"
case $1 in
restore-paused)
    ip link add vif7.0 type veth peer name eth0 netns {guest}
    ip -n {guest} link set eth0 up
    ip -n {guest} addr add 10.77.0.7/24 dev eth0
    ip link set vif7.0 master br0 up
    touch "$dir/paused"
    echo 7 ;;
unpause)
    [ "$2" = 7 ] && [ -f "$dir/paused" ]
    rm "$dir/paused"
    ip netns exec {guest} unshare -m --propagation private "$dir/guest-boot" >"$dir/agent.log" 2>&1 </dev/null &
    echo $! > "$dir/agent.pid" ;;
vifs) [ "$2" = 7 ]; echo vif7.0 ;;
paused) [ "$2" = 7 ]; if [ -f "$dir/paused" ]; then echo yes; else echo no; fi ;;
domain-uuid) [ "$2" = 7 ]; echo {GUEST_UUID} ;;
xenstore-write) mkdir -p "$dir/xenstore$2"; printf %s "$3" > "$dir/xenstore$2/.value" ;;
xenstore-rm) rm -rf "$dir/xenstore$2" ;;
*) echo "unknown operation $1" >&2; exit 2 ;;
esac
"#,
                dir = dir.display(),
            ),
        )
        .unwrap();
        for program in [&boot, &toolstack] {
            let status = Command::new("chmod").arg("+x").arg(program).status().unwrap();
            assert!(status.success());
        }
        RestoreLab {
            lab,
            dom0,
            guest,
            dir: dir.to_owned(),
            toolstack,
            key: key.to_owned(),
            _agent: AgentProcess(dir.join("agent.pid")),
        }
    }

    /// `dormouse restore` of the test bed's image in dom0: the output and the JSON on standard
    /// output.
    fn restore(&self, tb: &Testbed, bundle: &Path) -> (Output, Value) {
        let dump = tb.memdump.dir.join("dump.elf");
        let out = self.restore_image(&["--disk", tb.disks.guest.path.to_str().unwrap()], &dump, bundle);
        let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("no JSON: {}", text(&out)));
        crate::schemas::assert_valid("restore", &json);
        (out, json)
    }

    fn restore_image(&self, image_args: &[&str], image: &Path, bundle: &Path) -> Output {
        self.restore_signed_by(image_args, image, bundle, &self.key)
    }

    fn restore_signed_by(&self, image_args: &[&str], image: &Path, bundle: &Path, key: &Path) -> Output {
        let mut args = vec!["restore", image.to_str().unwrap()];
        args.extend(image_args);
        args.extend([
            "--bundle",
            bundle.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--agent",
            "10.77.0.7",
            "--timeout",
            "300",
            "--toolstack",
            self.toolstack.to_str().unwrap(),
            "--json",
        ]);
        self.lab.dormouse(&self.dom0, &args)
    }

    /// `dormouse deliver` to domain 7: the output and the JSON on standard output.
    fn deliver(&self, bundle: &Path) -> (Output, Value) {
        let out = self.lab.dormouse(
            &self.dom0,
            &[
                "deliver",
                "--domain",
                "7",
                "--bundle",
                bundle.to_str().unwrap(),
                "--key",
                self.key.to_str().unwrap(),
                "--agent",
                "10.77.0.7",
                "--dom0-addr",
                "10.77.0.1",
                "--timeout",
                "300",
                "--toolstack",
                self.toolstack.to_str().unwrap(),
                "--json",
            ],
        );
        let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("no JSON: {}", text(&out)));
        crate::schemas::assert_valid("deliver", &json);
        (out, json)
    }

    fn toolstack_log(&self) -> Vec<String> {
        let log = fs::read_to_string(self.dir.join("toolstack.log")).unwrap();
        log.lines().map(|l| l.split(' ').next().unwrap().to_owned()).collect()
    }

    fn pending_key(&self) -> Option<String> {
        fs::read_to_string(self.dir.join(format!("xenstore/dormouse/pending/{GUEST_UUID}/.value"))).ok()
    }

    /// Whether the guest's pings reach dom0 within `tries` attempts of 2 s: a reachability claim
    /// gets three (the first packets after a change can be lost to neighbour resolution), a
    /// blocked claim only one.
    fn guest_reaches_dom0(&self, tries: usize) -> bool {
        (0..tries).any(|_| {
            in_ns(&self.guest, &["ping", "-c1", "-W2", "10.77.0.1"])
                .status
                .success()
        })
    }

    /// The guest at `root` has the security update installed; it was isolated from before it
    /// ran until the agent reported, and is open afterwards.
    fn assert_updated_then_opened(&self, root: &Path, tb: &Testbed) {
        let security = &tb.scenarios["security_update"];
        let package = security["package"].as_str().unwrap();
        let status = fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
        let (state, version) =
            dpkg_status_of(&status, package).expect("the updated package in the guest's dpkg status");
        assert_eq!(state, "install ok installed");
        assert_eq!(version, security["candidate_version"].as_str().unwrap());
        assert_eq!(
            self.probe(),
            "blocked",
            "the guest reached dom0 outside the agent channel"
        );
        assert!(self.lab.isolated(&self.dom0).is_empty(), "still isolated after success");
        assert!(self.guest_reaches_dom0(3), "the isolation was not lifted");
    }

    /// The boot-time probe's result, once it is in.
    fn probe(&self) -> String {
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Ok(result) = fs::read_to_string(self.dir.join("probe")) {
                return result.trim().to_owned();
            }
            assert!(Instant::now() < deadline, "the guest's boot probe never finished");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

#[test]
fn restore_delivers_the_bundle_and_opens_the_network_only_when_applied() {
    let Some(tb) = testbed("restore_delivers_the_bundle_and_opens_the_network_only_when_applied") else {
        return;
    };
    start_repo();
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let w = work.path();
    let command = format!("{UPDATE} && apt-get -y upgrade");
    let bundle = make_bundle(&tb, w, "security", &[], &command);
    let key = w.join("key.pub");

    // The online update of the same scenario, for comparison.
    let online_root = w.join("online");
    copy_guest_root(&tb.disks.guest.path, &online_root);
    let online_s = online_seconds(&online_root, &command);

    let root = w.join("guest");
    copy_guest_root(&tb.disks.guest.path, &root);
    let lab = RestoreLab::new("rs", &w.join("lab"), &root, &key);
    let started = Instant::now();
    let (out, outcome) = lab.restore(&tb, &bundle);
    let wall_s = started.elapsed().as_secs_f64();
    assert!(out.status.success(), "restore: {}", text(&out));
    assert_eq!(outcome["report"]["result"], "applied", "{outcome:#}");
    assert_eq!(outcome["domid"], 7);
    assert_eq!(outcome["domain_uuid"], GUEST_UUID);
    assert_eq!(outcome["vifs"], serde_json::json!(["vif7.0"]));

    lab.assert_updated_then_opened(&root, &tb);
    assert_eq!(
        lab.toolstack_log(),
        [
            "restore-paused",
            "domain-uuid",
            "xenstore-write",
            "vifs",
            "unpause",
            "xenstore-rm"
        ]
    );
    let log = fs::read_to_string(lab.dir.join("toolstack.log")).unwrap();
    assert!(
        log.contains(&format!("xenstore-write /dormouse/pending/{GUEST_UUID} 10.77.0.1:7878")),
        "{log}"
    );
    assert_eq!(lab.pending_key(), None, "pending key left after success");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for stage in ["received", "post-scripts", "released vif7.0"] {
        assert!(stderr.contains(stage), "no {stage:?} in the progress:\n{stderr}");
    }

    let t = &outcome["timings"];
    let secs = |v: &Value| v.as_f64().unwrap();
    assert!(secs(&t["unpause_to_released_s"]) >= secs(&t["apply_s"]), "{t}");
    eprintln!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "scenario": "security update",
            "online_update_s": online_s,
            "restore": t,
            "restore_command_wall_s": wall_s,
            "unpause_to_released_over_online": secs(&t["unpause_to_released_s"]) / online_s,
        }))
        .unwrap()
    );
    if let Some(path) = std::env::var_os("DORMOUSE_RESTORE_BENCH") {
        fs::write(path, serde_json::to_string_pretty(t).unwrap()).unwrap();
    }
}

#[test]
fn restore_with_a_failing_postinst_leaves_the_guest_isolated_and_says_how_to_release() {
    let Some(tb) = testbed("restore_with_a_failing_postinst_leaves_the_guest_isolated_and_says_how_to_release") else {
        return;
    };
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let w = work.path();
    let debs = w.join("debs");
    fs::create_dir_all(&debs).unwrap();
    let deb = marker_deb(&debs, &w.join("dom0-marker"));
    let bind = format!("{}:/run/debs", debs.display());
    let command = format!("dpkg -i /run/debs/{}", deb.file_name().unwrap().to_string_lossy());
    let bundle = make_bundle(&tb, w, "marker", &["--bind", &bind], &command);
    let key = w.join("key.pub");
    let root = w.join("guest");
    copy_guest_root(&tb.disks.guest.path, &root);
    let lab = RestoreLab::new("rf", &w.join("lab"), &root, &key);

    // Another guest's image (the real Xen domU's save): refused before anything is restored.
    if let Some(fx) = dormouse_tests::xen_fixtures("restore refuses a bundle of another guest") {
        let save = dormouse_tests::decompressed(&fx, "xen-pv-a/domU-A.save");
        let out = lab.restore_image(&[], &save, &bundle);
        assert!(!out.status.success(), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let truth: Value =
            serde_json::from_str(&fs::read_to_string(tb.memdump.dir.join("ground-truth.json")).unwrap()).unwrap();
        let nodename = truth["uname"]["nodename"].as_str().unwrap();
        let hostname = format!("hostname: bundle {nodename}, image dormouse-a");
        for needle in ["was not made from", &hostname, "nothing was restored"] {
            assert!(stderr.contains(needle), "{needle:?} missing:\n{stderr}");
        }
        assert!(!lab.dir.join("toolstack.log").exists(), "the toolstack was used");
    }

    // A bundle altered after signing, and one checked against another signer's key: refused
    // before the domain exists, saying what to do.
    let disk = ["--disk", tb.disks.guest.path.to_str().unwrap()];
    let dump = tb.memdump.dir.join("dump.elf");
    let tampered = w.join("tampered.dmb");
    let mut bytes = fs::read(&bundle).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&tampered, &bytes).unwrap();
    fs::copy(signature_path(&bundle), signature_path(&tampered)).unwrap();
    let other = w.join("other");
    keygen(&other);
    for (what, bundle, key) in [
        ("a tampered bundle", &tampered, key.clone()),
        ("another signer's key", &bundle, other.with_extension("pub")),
    ] {
        let out = lab.restore_signed_by(&disk, &dump, bundle, &key);
        assert!(!out.status.success(), "{what}: restored: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        for needle in ["nothing was restored", "dormouse bundle verify"] {
            assert!(stderr.contains(needle), "{what}: {needle:?} missing:\n{stderr}");
        }
        assert!(
            !lab.dir.join("toolstack.log").exists(),
            "{what}: the toolstack was used"
        );
    }

    let (out, outcome) = lab.restore(&tb, &bundle);
    assert!(!out.status.success(), "restore succeeded: {}", text(&out));
    assert_eq!(outcome["isolated"], true, "{outcome:#}");
    assert_eq!(outcome["report"]["result"], "failed", "{outcome:#}");
    let postinst = outcome["report"]["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["type"] == "postinst")
        .unwrap_or_else(|| panic!("no postinst in the report: {outcome:#}"));
    assert_eq!(postinst["exit_code"], 1);
    assert!(
        root.join("var/tmp/marker-postinst").exists(),
        "the postinst did not run in the guest"
    );

    let id = outcome["bundle_id"].as_str().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "domain 7 stays isolated".to_owned(),
        "dormouse isolate --list".to_owned(),
        "dormouse release --domain 7".to_owned(),
        "the agent undid the partial apply (rolled-back)".to_owned(),
        format!("/var/lib/dormouse/{id}/journal.json"),
        format!("xenstore-rm /dormouse/pending/{GUEST_UUID}"),
    ] {
        assert!(stderr.contains(&needle), "{needle:?} missing:\n{stderr}");
    }
    assert!(
        root.join(format!("var/lib/dormouse/{id}/journal.json")).is_file(),
        "no journal in the guest"
    );
    // Rolled back in the guest: the marker package is not installed, its files are gone.
    assert_eq!(outcome["report"]["rollback"]["result"], "rolled-back", "{outcome:#}");
    let status = Command::new("chroot")
        .arg(&root)
        .args(["dpkg-query", "-W", "-f", "${Status}", "dormouse-marker"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&status.stdout).contains("installed"),
        "the failed package is still installed after the rollback: {}",
        text(&status)
    );
    assert!(
        !root.join("usr/share/dormouse-marker/payload").exists(),
        "the failed package's files are still there after the rollback"
    );

    let isolated = lab.lab.isolated(&lab.dom0);
    assert_eq!(isolated.len(), 1, "{isolated:?}");
    assert_eq!(isolated[0]["vif"], "vif7.0");
    assert_eq!(isolated[0]["allow"], serde_json::json!(["10.77.0.1:7878"]));
    assert!(!lab.guest_reaches_dom0(1), "the guest left isolated reaches dom0");
    assert_eq!(lab.pending_key().as_deref(), Some("10.77.0.1:7878"));
    assert_eq!(lab.probe(), "blocked");
}

#[test]
fn deliver_finishes_a_domain_restored_by_another_tool_and_a_second_delivery_finds_it_applied() {
    let Some(tb) = testbed("deliver_finishes_a_domain_restored_by_another_tool_and_a_second_delivery_finds_it_applied")
    else {
        return;
    };
    start_repo();
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let w = work.path();
    let bundle = make_bundle(&tb, w, "security", &[], &format!("{UPDATE} && apt-get -y upgrade"));
    let key = w.join("key.pub");
    let root = w.join("guest");
    copy_guest_root(&tb.disks.guest.path, &root);
    let lab = RestoreLab::new("rd", &w.join("lab"), &root, &key);

    // Another tool restores the domain paused (as `xl restore -p` or xendomains would).
    let restored = lab
        .lab
        .sh(&lab.dom0, &format!("{} restore-paused image", lab.toolstack.display()));
    assert_eq!(restored.trim(), "7");
    let (out, outcome) = lab.deliver(&bundle);
    assert!(out.status.success(), "deliver: {}", text(&out));
    assert_eq!(outcome["report"]["result"], "applied", "{outcome:#}");
    lab.assert_updated_then_opened(&root, &tb);
    assert_eq!(
        lab.toolstack_log(),
        [
            "restore-paused",
            "domain-uuid",
            "paused",
            "vifs",
            "unpause",
            "xenstore-rm"
        ]
    );

    // Delivering again to the running domain (the recovery after an interrupted restore):
    // isolated meanwhile, not unpaused, and the agent reports the bundle already applied.
    fs::remove_file(lab.dir.join("toolstack.log")).unwrap();
    let (out, outcome) = lab.deliver(&bundle);
    assert!(out.status.success(), "second deliver: {}", text(&out));
    assert_eq!(outcome["report"]["result"], "already-applied", "{outcome:#}");
    assert_eq!(lab.toolstack_log(), ["domain-uuid", "paused", "vifs", "xenstore-rm"]);
    assert!(
        lab.lab.isolated(&lab.dom0).is_empty(),
        "still isolated after the second delivery"
    );
}
