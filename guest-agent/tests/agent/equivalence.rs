//! The equivalence that proves it all: for each test-bed scenario, the online update in a
//! chroot of a pristine copy of the guest (A) and `dormouse emulate` on the pristine image +
//! `dormouse-agent apply --root` on another pristine copy (B) give the same system, but for a
//! short list of expected differences ([`expected_difference`]).
//!
//! Also the benchmark's figures: A's update time against B's apply, split into the scripts'
//! own time and dormouse's (printed, and written to `$DORMOUSE_AGENT_BENCH` as JSON when set;
//! `scripts/build-agent --bench` runs this with the release agent).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use dormouse_tests::{start_repo, testbed};
use serde_json::{Value, json};

use crate::tree::{Node, snapshot};
use crate::{CHROOT_MOUNTS, agent, copy_guest, dormouse_bin, in_private_ns, text, with_policy_rc_d};

/// `apt-get update` exits 0 even when every source fails; its Err:/W: lines tell.
pub(crate) const UPDATE: &str =
    "apt-get update >/tmp/update.log 2>&1; cat /tmp/update.log; ! grep -qE '^(Err|W):' /tmp/update.log";

/// Directories whose contents are not compared: mount points of the chroot runs.
const SKIP: [&str; 4] = ["/proc", "/dev", "/run", "/tmp"];

/// Whether a difference at `path` between A and B is expected, and why.
fn expected_difference(path: &str, a: Option<&Node>, b: Option<&Node>) -> bool {
    let only_contents = match (a, b) {
        (Some(a), Some(b)) => (a.kind, a.mode, a.uid, a.gid, &a.xattrs) == (b.kind, b.mode, b.uid, b.gid, &b.xattrs),
        _ => false,
    };
    // The agent's own journal, backups and script logs: B only, by design.
    path == "/var/lib/dormouse" || path.starts_with("/var/lib/dormouse/")
        // Downloaded package archives: only needed to unpack, which happened in dom0; left out
        // of bundles (emulator::capture::DEFAULT_EXCLUDES), so B never has them.
        || (path.starts_with("/var/cache/apt/archives/") && (path.ends_with(".deb") || path.starts_with("/var/cache/apt/archives/partial/")))
        // apt's binary caches: excluded from bundles (every apt run rewrites them); apt
        // rebuilds them in B when it finds them stale.
        || (path.starts_with("/var/cache/apt/") && path.ends_with(".bin"))
        // Logs of the runs: the same files, but timestamped lines of two different runs.
        || (only_contents
            && ["/var/log/dpkg.log", "/var/log/alternatives.log", "/var/log/apt/history.log", "/var/log/apt/term.log"]
                .contains(&path))
        // ldconfig's auxiliary cache keys libraries by inode number and ctime, which differ in
        // any two trees (ld.so.cache itself, the one the loader reads, must be identical).
        || (only_contents && path == "/var/cache/ldconfig/aux-cache")
}

fn chroot_output(root: &Path, command: &str) -> String {
    let out = Command::new("chroot")
        .arg(root)
        .args(["sh", "-c", command])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .expect("running chroot");
    assert!(out.status.success(), "{command} in {}: {}", root.display(), text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A: the update the classic way, in a chroot of `root`, with the environment the emulation
/// gives the command. Returns the seconds it took.
fn online(root: &Path, command: &str) -> f64 {
    with_policy_rc_d(root, || {
        let script = format!(
            "{CHROOT_MOUNTS}\nexec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root USER=root LOGNAME=root DEBIAN_FRONTEND=noninteractive TERM=dumb chroot \"$1\" sh -c \"$2\""
        );
        let start = Instant::now();
        let out = in_private_ns(&script, &[root, Path::new(command)], &[]);
        let seconds = start.elapsed().as_secs_f64();
        assert!(out.status.success(), "online {command:?}: {}", text(&out));
        seconds
    })
}

/// `dormouse emulate --out` of `command` on the image: the seconds it took, the bundle and the
/// public key that verifies it (both in `work`).
pub(crate) fn emulated_bundle(image: &Path, dump: &Path, work: &Path, command: &str) -> (f64, PathBuf, PathBuf) {
    let path = |name: &str| work.join(name);
    let keygen = Command::new(dormouse_bin())
        .args(["keygen", "--out"])
        .arg(path("key"))
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{}", text(&keygen));
    let start = Instant::now();
    let emulate = Command::new(dormouse_bin())
        .arg("emulate")
        .arg("--json")
        .arg("--state-dir")
        .arg(path("state"))
        .arg(dump)
        .arg("--disk")
        .arg(image)
        .arg("--out")
        .arg(path("b.dmb"))
        .arg("--sign-key")
        .arg(path("key.key"))
        .args(["--", "sh", "-c", command])
        .output()
        .unwrap();
    let emulate_seconds = start.elapsed().as_secs_f64();
    assert!(emulate.status.success(), "emulate {command:?}: {}", text(&emulate));
    (emulate_seconds, path("b.dmb"), path("key.pub"))
}

/// `dormouse-agent apply --root root` of the bundle, which must apply; the agent's report.
pub(crate) fn applied(root: &Path, bundle: &Path, key: &Path) -> Value {
    let out = with_policy_rc_d(root, || {
        agent(
            &[
                "apply",
                bundle.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
                "--json",
            ],
            Some(root),
            &[],
        )
    });
    assert!(out.status.success(), "apply {}: {}", bundle.display(), text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("the agent's JSON report");
    assert_eq!(report["result"], "applied", "{report:#}");
    report
}

/// B: emulate on the image, apply the bundle to `root`. Returns the emulation's seconds and
/// the agent's report.
fn offline(image: &Path, dump: &Path, work: &Path, root: &Path, command: &str) -> (f64, Value) {
    let (emulate_seconds, bundle, key) = emulated_bundle(image, dump, work, command);
    (emulate_seconds, applied(root, &bundle, &key))
}

#[test]
fn offline_emulation_and_apply_equal_the_online_update() {
    let Some(tb) = testbed("offline_emulation_and_apply_equal_the_online_update") else {
        return;
    };
    start_repo();
    let image = &tb.disks.guest.path;
    let dump = tb.memdump.dir.join("dump.elf");
    let scenarios = [
        ("apt-get update", UPDATE.to_owned()),
        ("install nginx", format!("{UPDATE} && apt-get install -y nginx")),
        (
            "remove nginx",
            format!("{UPDATE} && apt-get install -y nginx && apt-get remove -y nginx"),
        ),
        ("security update", format!("{UPDATE} && apt-get -y upgrade")),
    ];
    let mut figures = Vec::new();
    for (name, command) in scenarios {
        let work = tempfile::tempdir_in("/var/tmp").unwrap();
        let (a, b) = (work.path().join("A"), work.path().join("B"));
        copy_guest(image, &a);
        copy_guest(image, &b);
        let online_seconds = online(&a, &command);
        let (emulate_seconds, report) = offline(image, &dump, work.path(), &b, &command);

        let (ta, tb_) = (snapshot(&a, &SKIP), snapshot(&b, &SKIP));
        let strip = |n: &Node| Node {
            mtime: None,
            ..n.clone()
        };
        let mut differences = Vec::new();
        for path in ta.keys().chain(tb_.keys().filter(|k| !ta.contains_key(*k))) {
            let (x, y) = (ta.get(path).map(strip), tb_.get(path).map(strip));
            if x != y && !expected_difference(path, x.as_ref(), y.as_ref()) {
                differences.push(format!("{path}:\n    A {x:?}\n    B {y:?}"));
            }
        }
        assert!(
            differences.is_empty(),
            "{name}: A and B differ:\n{}",
            differences.join("\n")
        );
        assert_eq!(
            chroot_output(&a, "dpkg -l"),
            chroot_output(&b, "dpkg -l"),
            "{name}: dpkg -l differs"
        );
        assert_eq!(chroot_output(&b, "dpkg --audit"), "", "{name}: dpkg --audit in B");
        if name == "install nginx" {
            assert!(b.join("usr/sbin/nginx").is_file(), "nginx not installed in B");
        }

        let t = &report["timings"];
        let seconds = |v: &Value| v.as_f64().expect("a number of seconds");
        figures.push(json!({
            "scenario": name,
            "online_update_s": online_seconds,
            "emulate_s": emulate_seconds,
            "apply_s": seconds(&t["total"]),
            "scripts_s": seconds(&t["scripts"]),
            "dormouse_own_s": seconds(&t["own"]),
            "own_split_s": {
                "verify": t["verify"], "check": t["check"], "journal": t["journal"], "backup": t["backup"],
                "install": t["install"], "remove": t["remove"], "script_handling": t["script_handling"],
            },
            "apply_over_online": seconds(&t["total"]) / online_seconds,
            "scripts": report["scripts"].as_array().map(Vec::len),
        }));
    }
    let doc = json!({ "agent": crate::agent_bin(), "results": figures });
    eprintln!("{}", serde_json::to_string_pretty(&doc).unwrap());
    if let Some(path) = std::env::var_os("DORMOUSE_AGENT_BENCH") {
        std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    }
}
