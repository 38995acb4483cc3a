//! Emulation records on the test bed: `emulate --record` pins the inputs, `replay` runs the
//! same emulation again and finds it identical (three times, for an install and an upgrade),
//! refuses a changed disk and with `--allow-drift` shows what the change did; `diff` and
//! `report` give numbers that are the records' own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dormouse_tests::{Testbed, sha256_file, start_repo, testbed};
use serde_json::Value;

use crate::schemas::assert_valid;
use crate::{output_text as text, run_dormouse};

const UPDATE: &str = "apt-get update 2>&1 | tee /tmp/update.log; ! grep -E '^(Err|W):' /tmp/update.log";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `emulate --record` of `script` on the test bed's dump and disk; the record's path.
fn record(tb: &Testbed, work: &Path, name: &str, script: &str) -> PathBuf {
    let path = work.join(format!("{name}.record.json"));
    let dump = tb.memdump.dir.join("dump.elf");
    let out = run_dormouse(&[
        "emulate",
        "-q",
        "--state-dir",
        s(&work.join("state")),
        s(&dump),
        "--disk",
        s(&tb.disks.guest.path),
        "--record",
        s(&path),
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert!(out.status.success(), "emulate {name}: {}", text(&out));
    path
}

fn read(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn replay(record: &Path, state: &Path, extra: &[&str]) -> (Output, Option<Value>) {
    let mut args = vec!["replay", "-q", "--json", "--state-dir", s(state), s(record)];
    args.extend_from_slice(extra);
    let out = run_dormouse(&args);
    let json = serde_json::from_slice(&out.stdout).ok();
    (out, json)
}

#[test]
fn install_and_upgrade_replay_identically_three_times() {
    let Some(tb) = testbed("install_and_upgrade_replay_identically_three_times") else {
        return;
    };
    start_repo();
    let work = tempfile::tempdir().unwrap();
    let dump = tb.memdump.dir.join("dump.elf");
    let dump_sha = sha256_file(&dump);
    for (name, script) in [
        ("install", format!("{UPDATE} && apt-get install -y nginx")),
        ("upgrade", format!("{UPDATE} && apt-get -y upgrade")),
    ] {
        let path = record(&tb, work.path(), name, &script);
        let r = read(&path);
        assert_valid("records/record-1", &r);
        assert_eq!(r["schema"], "dormouse.record/1");
        // The inputs are pinned by the hashes of what the run read.
        assert_eq!(r["inputs"]["image"]["sha256"], dump_sha.as_str(), "{name}");
        assert_eq!(
            r["inputs"]["disks"][0]["file"]["sha256"],
            tb.disks.guest.sha256.as_str(),
            "{name}"
        );
        assert_eq!(r["inputs"]["kernel"]["release"], tb.kernel.release.as_str(), "{name}");
        assert!(
            r["inputs"]["kernel"]["banner"]
                .as_str()
                .unwrap()
                .contains(&tb.kernel.release),
            "{name}: banner {}",
            r["inputs"]["kernel"]["banner"]
        );
        assert_eq!(r["options"]["command"][2], script.as_str());
        assert_eq!(r["outcome"]["exit_code"], 0);
        // apt's lists after `apt-get update` name the test bed's repository, with its date.
        let indices = r["repository"]["indices"].as_array().unwrap();
        let port = tb.repo["url"].as_str().unwrap().rsplit(':').next().unwrap();
        assert!(
            indices
                .iter()
                .any(|i| i["path"].as_str().unwrap().contains(&format!("_{port}_"))
                    || i["path"].as_str().unwrap().contains(&format!(":{port}_"))),
            "{name}: no index of the test bed's repository: {indices:?}"
        );
        assert!(
            indices.iter().any(|i| i["release_date"].is_string()),
            "{name}: no InRelease date"
        );
        let entries = r["upper"]["entries"].as_array().unwrap();
        assert!(
            entries
                .iter()
                .any(|e| e["path"] == "/var/lib/dpkg/status" && e["category"] == "package_db")
        );
        if name == "install" {
            let nginx = entries
                .iter()
                .find(|e| e["path"] == "/usr/sbin/nginx")
                .expect("nginx captured");
            assert_eq!(
                (nginx["kind"].as_str(), nginx["category"].as_str()),
                (Some("file"), Some("payload"))
            );
            assert!(
                r["execs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["package"] == "nginx-common"),
                "no nginx-common script recorded"
            );
        }
        for attempt in 1..=3 {
            let (out, json) = replay(&path, &work.path().join("state"), &[]);
            let json = json.unwrap_or_else(|| panic!("{name} replay {attempt}: {}", text(&out)));
            assert_valid("replay", &json);
            assert_eq!(
                (out.status.code(), &json["identical"]),
                (Some(0), &Value::Bool(true)),
                "{name} replay {attempt}: {json:#}"
            );
            assert_eq!(json["drift"], Value::Array(vec![]));
            // Only what the normalisation rules name may have differed, and only logs do.
            for rule in json["comparison"]["normalised"].as_array().unwrap() {
                for p in rule["paths"].as_array().unwrap() {
                    assert!(p.as_str().unwrap().starts_with("/var/log/"), "{name}: normalised {p}");
                }
            }
        }
    }
}

/// The guest disk copied, with `content` written at `guest_path` in its first partition.
fn changed_disk(tb: &Testbed, dest: &Path, guest_path: &str, content: &str) {
    let status = Command::new("cp")
        .args(["--sparse=always", s(&tb.disks.guest.path), s(dest)])
        .status()
        .unwrap();
    assert!(status.success());
    let mbr = std::fs::read(dest).unwrap();
    let start = u32::from_le_bytes(mbr[446 + 8..446 + 12].try_into().unwrap()) as u64 * 512;
    let script = r#"
        mnt=$(mktemp -d)
        mount -o loop,offset="$2" "$1" "$mnt"
        mkdir -p "$mnt$(dirname "$3")"
        printf '%s\n' "$4" > "$mnt$3"
        umount "$mnt"
        rmdir "$mnt"
    "#;
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-ec", script, "sh"])
        .args([s(dest), &start.to_string(), guest_path, content])
        .output()
        .unwrap();
    assert!(out.status.success(), "changing the disk copy: {}", text(&out));
}

#[test]
fn a_changed_disk_is_refused_then_shows_what_it_changed() {
    let Some(tb) = testbed("a_changed_disk_is_refused_then_shows_what_it_changed") else {
        return;
    };
    start_repo();
    let work = tempfile::tempdir().unwrap();
    let path = record(
        &tb,
        work.path(),
        "install",
        &format!("{UPDATE} && apt-get install -y nginx"),
    );
    // apt runs this after dpkg: the copy's emulation leaves one more file.
    let copy = work.path().join("changed.img");
    changed_disk(
        &tb,
        &copy,
        "/etc/apt/apt.conf.d/99drift",
        r#"DPkg::Post-Invoke { "touch /var/lib/drift-marker"; };"#,
    );
    let copy_sha = sha256_file(&copy);

    let state = work.path().join("state");
    let (out, json) = replay(&path, &state, &["--disk", s(&copy)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(json.is_none(), "a refused replay printed a comparison");
    assert!(
        err.contains("disk 0")
            && err.contains(&copy_sha)
            && err.contains(&tb.disks.guest.sha256)
            && err.contains("--allow-drift"),
        "the refusal names the disk, both hashes and the way on: {err}"
    );
    let runs = std::fs::read_dir(state.join("runs")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(runs, 0, "a refused replay left a run behind");

    let (out, json) = replay(&path, &state, &["--disk", s(&copy), "--allow-drift"]);
    let json = json.unwrap_or_else(|| panic!("{}", text(&out)));
    assert_valid("replay", &json);
    assert_eq!(out.status.code(), Some(3), "{json:#}");
    assert_eq!(json["identical"], false);
    let drift = json["drift"].as_array().unwrap();
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(
        (drift[0]["a"].as_str(), drift[0]["b"].as_str()),
        (Some(tb.disks.guest.sha256.as_str()), Some(copy_sha.as_str()))
    );
    let files = &json["comparison"]["files"];
    let added: Vec<&str> = files["only_b"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(added, ["/var/lib/drift-marker"], "{files:#}");
    assert_eq!(files["only_a"], Value::Array(vec![]));
}

fn csv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines
        .map(|l| {
            // The test's records have no commas or quotes in the fields read here.
            header.iter().cloned().zip(l.split(',').map(String::from)).collect()
        })
        .collect()
}

#[test]
fn diff_of_two_scenarios_and_a_report_whose_numbers_are_the_records() {
    let Some(tb) = testbed("diff_of_two_scenarios_and_a_report_whose_numbers_are_the_records") else {
        return;
    };
    start_repo();
    let work = tempfile::tempdir().unwrap();
    let install = record(
        &tb,
        work.path(),
        "install",
        &format!("{UPDATE} && apt-get install -y nginx"),
    );
    let upgrade = record(&tb, work.path(), "upgrade", &format!("{UPDATE} && apt-get -y upgrade"));
    let (a, b) = (read(&install), read(&upgrade));

    let out = run_dormouse(&["diff", "--json", s(&install), s(&upgrade)]);
    assert!(out.status.success(), "{}", text(&out));
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_valid("diff", &d);
    let paths = |r: &Value| -> BTreeSet<String> {
        r["upper"]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap().to_owned())
            .collect()
    };
    let (pa, pb) = (paths(&a), paths(&b));
    let listed = |side: &str| -> BTreeSet<String> {
        d["files"][side]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(listed("only_a"), pa.difference(&pb).cloned().collect::<BTreeSet<_>>());
    assert_eq!(listed("only_b"), pb.difference(&pa).cloned().collect::<BTreeSet<_>>());
    assert_eq!(
        d["files"]["same"].as_u64().unwrap() as usize + d["files"]["changed"].as_array().unwrap().len(),
        pa.intersection(&pb).count()
    );
    assert_eq!(d["a"]["scripts"], a["execs"].as_array().unwrap().len());
    assert_eq!(d["b"]["scripts"], b["execs"].as_array().unwrap().len());
    let settings: Vec<&str> = d["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["field"].as_str().unwrap())
        .collect();
    assert_eq!(settings, ["options.command"], "same inputs, another command");
    let text_diff = run_dormouse(&["diff", s(&install), s(&upgrade)]);
    assert!(text_diff.status.success(), "{}", text(&text_diff));
    assert!(String::from_utf8_lossy(&text_diff.stdout).contains("only in A"));

    let dir = work.path().join("report");
    let out = run_dormouse(&["report", "--json", "-o", s(&dir), s(&install), s(&upgrade)]);
    assert!(out.status.success(), "{}", text(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_valid("report", &summary);
    assert_eq!(summary["records"], 2);
    for figure in ["phases", "upper", "scripts"] {
        let svg = std::fs::read_to_string(dir.join(format!("{figure}.svg"))).unwrap();
        assert!(svg.contains("<svg"), "{figure}.svg");
        let png = std::fs::read(dir.join(format!("{figure}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{figure}.png");
    }
    assert!(!dir.join("online.svg").exists(), "no record has online measurements");

    // phases.csv: each record's phase times.
    let records = [("install", &a), ("upgrade", &b)];
    for row in csv(&dir.join("phases.csv")) {
        let r = records.iter().find(|(l, _)| *l == row["record"]).unwrap().1;
        let want: f64 = r["phases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["name"] == row["phase"].as_str())
            .map(|p| p["seconds"].as_f64().unwrap())
            .sum();
        let got: f64 = row["seconds"].parse().unwrap();
        assert!((got - want).abs() < 1e-6, "{row:?}: {want}");
    }
    // upper.csv: bytes and files of regular files per record, directory and category.
    let mut want: BTreeMap<(String, String, String), (u64, u64)> = BTreeMap::new();
    for (label, r) in records {
        for e in r["upper"]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "file")
        {
            let path = e["path"].as_str().unwrap();
            let dir: String = match path.match_indices('/').nth(2) {
                Some((i, _)) => path[..i].to_owned(),
                None if path.matches('/').count() == 1 => "/".to_owned(),
                None => path.rsplit_once('/').unwrap().0.to_owned(),
            };
            let cell = want
                .entry((label.into(), dir, e["category"].as_str().unwrap().into()))
                .or_default();
            cell.0 += 1;
            cell.1 += e["size"].as_u64().unwrap();
        }
    }
    let mut got = BTreeMap::new();
    for row in csv(&dir.join("upper.csv"))
        .into_iter()
        .filter(|r| r["category"] != "excluded")
    {
        got.insert(
            (row["record"].clone(), row["directory"].clone(), row["category"].clone()),
            (
                row["files"].parse::<u64>().unwrap(),
                row["bytes"].parse::<u64>().unwrap(),
            ),
        );
    }
    assert_eq!(got, want);
    // scripts.csv: intercepted scripts per record and package.
    let mut want: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (label, r) in records {
        for e in r["execs"].as_array().unwrap() {
            *want
                .entry((label.into(), e["package"].as_str().unwrap().into()))
                .or_default() += 1;
        }
    }
    let mut got: BTreeMap<(String, String), u64> = BTreeMap::new();
    for row in csv(&dir.join("scripts.csv")) {
        *got.entry((row["record"].clone(), row["package"].clone())).or_default() +=
            row["count"].parse::<u64>().unwrap();
    }
    assert_eq!(got, want);
}
