//! The tracer against the truth: the same command in a plain chroot over the same kind of
//! overlay (scripts/bench-emulate's `plain_mount`), under `strace -f -e trace=execve`. Every
//! maintainer script dpkg really executes there must be exactly what `dormouse emulate`
//! recorded, in the same order, with the same argv.

use std::fs;
use std::path::Path;
use std::process::Command;

use dormouse_tests::{start_repo, testbed, workspace_root};
use serde_json::Value;

use crate::dormouse_bin;

/// (package, script type, argv after argv[0]) of one maintainer-script exec.
type Exec = (String, String, Vec<String>);

/// Parses the C string literal at the start of `s` (after its opening quote was consumed),
/// returning it and the rest of the line.
fn c_string(s: &str) -> Option<(String, &str)> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return Some((String::from_utf8_lossy(&out).into_owned(), &s[i + 1..])),
            b'\\' => {
                let next = *bytes.get(i + 1)?;
                i += 2;
                match next {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'v' => out.push(0x0b),
                    b'f' => out.push(0x0c),
                    b'x' => {
                        let hex = s.get(i..i + 2)?;
                        out.push(u8::from_str_radix(hex, 16).ok()?);
                        i += 2;
                    }
                    b'0'..=b'7' => {
                        let mut value = (next - b'0') as u32;
                        let mut digits = 1;
                        while digits < 3 && bytes.get(i).is_some_and(|b| (b'0'..=b'7').contains(b)) {
                            value = value * 8 + (bytes[i] - b'0') as u32;
                            i += 1;
                            digits += 1;
                        }
                        out.push(value as u8);
                    }
                    other => out.push(other),
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    None
}

/// `["a", "b"]` at the start of `s`.
fn c_string_array(s: &str) -> Option<(Vec<String>, &str)> {
    let mut rest = s.strip_prefix('[')?;
    let mut items = Vec::new();
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix(']') {
            return Some((items, after));
        }
        let (item, after) = c_string(rest.strip_prefix('"')?)?;
        items.push(item);
        rest = after;
    }
}

/// The maintainer-script execs in an `strace -f -v -s 65536 -e trace=execve -o FILE` log.
fn scripts_in_strace(log: &str) -> Vec<Exec> {
    let mut out = Vec::new();
    for line in log.lines() {
        let Some(call) = line.split_once(" execve(\"").map(|(_, c)| c) else {
            continue;
        };
        let Some((path, rest)) = c_string(call) else { continue };
        let Some((argv, rest)) = c_string_array(rest.trim_start_matches([',', ' '])) else {
            continue;
        };
        let Some((env, _)) = c_string_array(rest.trim_start_matches([',', ' '])) else {
            continue;
        };
        let (dir, file) = path.rsplit_once('/').unwrap_or(("", &path));
        let script_type = match dir {
            "/var/lib/dpkg/info" => file.rsplit_once('.').map(|(_, t)| t),
            "/var/lib/dpkg/tmp.ci" => Some(file),
            _ => None,
        };
        let Some(script_type) = script_type.filter(|t| ["preinst", "postinst", "prerm", "postrm"].contains(t)) else {
            continue;
        };
        // A script that sources debconf's confmodule re-executes itself under debconf's frontend
        // (`exec /usr/share/debconf/frontend "$0" "$@"`, which runs it again with
        // DEBIAN_HAS_FRONTEND set): that second exec is the script's own doing, not dpkg's.
        if env.iter().any(|e| e.starts_with("DEBIAN_HAS_FRONTEND=")) {
            continue;
        }
        let package = env
            .iter()
            .find_map(|e| e.strip_prefix("DPKG_MAINTSCRIPT_PACKAGE="))
            .expect("dpkg sets DPKG_MAINTSCRIPT_PACKAGE")
            .to_owned();
        out.push((package, script_type.to_owned(), argv.into_iter().skip(1).collect()));
    }
    out
}

/// Runs `command` in a plain chroot of `image` (partition 1) under strace; returns the log.
fn plain_chroot_strace(image: &Path, command: &str, work: &Path) -> String {
    let log = work.join("strace.log");
    let dir = work.join("plain");
    let script = r#"
        . "$1/scripts/bench-emulate"
        PLAIN_WRAPPER=(strace -f -qq -v -s 65536 -e trace=execve -o "$4")
        plain_mount "$2" 1 tmpfs "$5"
        status=0
        plain_chroot "$5" "$3" >/dev/null 2>&1 || status=$?
        plain_teardown "$5"
        exit $status
    "#;
    let status = Command::new("bash")
        .args(["-c", script, "truth"])
        .arg(workspace_root())
        .arg(image)
        .arg(command)
        .arg(&log)
        .arg(&dir)
        .status()
        .expect("running bash");
    assert!(status.success(), "the plain chroot run of {command:?} failed");
    fs::read_to_string(&log).expect("strace log")
}

fn recorded_scripts(image: &Path, dump: &Path, command: &str, work: &Path) -> Vec<Exec> {
    let output = Command::new(dormouse_bin())
        .arg("emulate")
        .arg("--json")
        .arg("--state-dir")
        .arg(work.join("state"))
        .arg(dump)
        .arg("--disk")
        .arg(image)
        .args(["--", "sh", "-c", command])
        .output()
        .expect("running dormouse emulate");
    assert!(
        output.status.success(),
        "emulate {command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    report["trace"]["scripts"]
        .as_array()
        .expect("trace.scripts")
        .iter()
        .map(|s| {
            let argv = s["argv"].as_array().unwrap().iter().skip(1);
            (
                s["package"].as_str().unwrap().to_owned(),
                s["type"].as_str().unwrap().to_owned(),
                argv.map(|a| a.as_str().unwrap().to_owned()).collect(),
            )
        })
        .collect()
}

#[test]
fn recorded_scripts_equal_what_a_plain_chroot_executes() {
    let Some(tb) = testbed("recorded_scripts_equal_what_a_plain_chroot_executes") else {
        return;
    };
    start_repo();
    let image = &tb.disks.guest.path;
    let dump = tb.memdump.dir.join("dump.elf");
    let update = "apt-get update >/dev/null";
    for (name, command) in [
        ("apt-get update", update.to_owned()),
        ("install nginx", format!("{update} && apt-get install -y nginx")),
        (
            "remove nginx",
            format!("{update} && apt-get install -y nginx && apt-get remove -y nginx"),
        ),
        ("security update", format!("{update} && apt-get -y upgrade")),
    ] {
        let work = tempfile::tempdir().unwrap();
        let truth = scripts_in_strace(&plain_chroot_strace(image, &command, work.path()));
        let recorded = recorded_scripts(image, &dump, &command, work.path());
        if name != "apt-get update" {
            assert!(!truth.is_empty(), "{name}: the plain run executed no maintainer script");
        }
        assert_eq!(
            recorded, truth,
            "{name}: recorded scripts differ from the plain chroot's"
        );
    }
}

#[test]
fn strace_lines_parse() {
    let log = concat!(
        "41 execve(\"/var/lib/dpkg/info/libc-bin.postinst\", [\"/var/lib/dpkg/info/libc-bin.postinst\", ",
        "\"triggered\", \"ldconfig\"], [\"DPKG_MAINTSCRIPT_PACKAGE=libc-bin\", \"X=a\\\"b\\\\c\\303\\251\"]) = 0\n",
        "42 execve(\"/usr/bin/dpkg\", [\"dpkg\"], []) = 0\n",
        "43 execve(\"/var/lib/dpkg/tmp.ci/preinst\", [\"/var/lib/dpkg/tmp.ci/preinst\", \"install\"], ",
        "[\"DPKG_MAINTSCRIPT_PACKAGE=nginx\"] <unfinished ...>\n",
    );
    assert_eq!(
        scripts_in_strace(log),
        vec![
            (
                "libc-bin".into(),
                "postinst".into(),
                vec!["triggered".into(), "ldconfig".into()]
            ),
            ("nginx".into(), "preinst".into(), vec!["install".into()]),
        ]
    );
    assert_eq!(
        c_string("a\\\"b\\\\c\\303\\251\" rest"),
        Some(("a\"b\\cé".into(), " rest"))
    );
}

/// Non-directory entries of an overlay upper dir: guest path → SHA-256 for files, `link:`
/// target for symlinks, `whiteout` for removals, `other` for the rest.
fn upper_entries(upper: &Path) -> std::collections::BTreeMap<String, String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![upper.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let guest = format!("/{}", path.strip_prefix(upper).unwrap().display());
            let kind = meta.file_type();
            let value = if kind.is_dir() {
                stack.push(path);
                continue;
            } else if kind.is_file() {
                dormouse_tests::sha256_file(&path)
            } else if kind.is_symlink() {
                format!("link:{}", fs::read_link(&path).unwrap().display())
            } else if kind.is_char_device() && meta.rdev() == 0 {
                "whiteout".into()
            } else {
                "other".into()
            };
            out.insert(guest, value);
        }
    }
    out
}

/// The bundle carries exactly what the plain run changed, except what scripts made (they run
/// in the guest later) and the documented exclusions; files shipped by packages are identical.
#[test]
fn bundle_file_set_equals_the_plain_runs_changes() {
    let Some(tb) = testbed("bundle_file_set_equals_the_plain_runs_changes") else {
        return;
    };
    start_repo();
    let image = &tb.disks.guest.path;
    let dump = tb.memdump.dir.join("dump.elf");
    let update = "apt-get update >/dev/null";
    for (name, command) in [
        ("install nginx", format!("{update} && apt-get install -y nginx")),
        ("security update", format!("{update} && apt-get -y upgrade")),
    ] {
        let work = tempfile::tempdir_in("/var/tmp").unwrap();
        let dir = work.path().join("plain");
        let shipped_file = work.path().join("shipped");
        let script = r#"
            . "$1/scripts/bench-emulate"
            plain_mount "$2" 1 disk "$4"
            status=0
            plain_chroot "$4" "$3" >/dev/null 2>&1 || status=$?
            cat "$4"/merged/var/lib/dpkg/info/*.list > "$5"
            plain_teardown "$4"
            exit $status
        "#;
        let status = Command::new("bash")
            .args(["-c", script, "truth"])
            .arg(workspace_root())
            .arg(image)
            .arg(&command)
            .arg(&dir)
            .arg(&shipped_file)
            .status()
            .unwrap();
        assert!(status.success(), "{name}: plain chroot run failed");
        let plain = upper_entries(&dir.join("upper/upper"));
        let shipped: std::collections::BTreeSet<String> = fs::read_to_string(&shipped_file)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();

        let key = work.path().join("key");
        let keygen = Command::new(dormouse_bin())
            .arg("keygen")
            .arg("--out")
            .arg(&key)
            .output()
            .unwrap();
        assert!(keygen.status.success(), "{}", String::from_utf8_lossy(&keygen.stderr));
        let bundle_path = work.path().join("b.dmb");
        let output = Command::new(dormouse_bin())
            .arg("emulate")
            .arg("--state-dir")
            .arg(work.path().join("state"))
            .arg(&dump)
            .arg("--disk")
            .arg(image)
            .arg("--out")
            .arg(&bundle_path)
            .arg("--sign-key")
            .arg(key.with_extension("key"))
            .args(["--", "sh", "-c", &command])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let bundle = bundle::read::Bundle::open(&bundle_path).unwrap();
        let manifest = bundle.manifest();
        let excluded = |path: &str| {
            manifest
                .excluded
                .iter()
                .any(|e| path == e.path || path.starts_with(&format!("{}/", e.path.trim_end_matches('/'))))
        };
        let ours: std::collections::BTreeMap<String, Option<String>> = manifest
            .files
            .iter()
            .filter(|f| f.entry_type != bundle::manifest::EntryType::Dir)
            .map(|f| (f.path.clone(), f.sha256.clone()))
            .collect();
        // Everything the bundle carries, the plain run changed too, with the same bytes when a
        // package ships the file.
        for (path, sha) in &ours {
            let theirs = plain
                .get(path)
                .unwrap_or_else(|| panic!("{name}: {path} in the bundle, unchanged in the plain run"));
            if shipped.contains(path) {
                if let Some(sha) = sha {
                    assert_eq!(theirs, sha, "{name}: {path} differs from the plain run's");
                }
            }
        }
        for removal in &manifest.removals {
            assert_eq!(
                plain.get(removal).map(String::as_str),
                Some("whiteout"),
                "{name}: {removal}"
            );
        }
        // What the plain run changed beyond the bundle: only script output (never a path a
        // package ships) and the documented exclusions.
        let extra: Vec<&String> = plain
            .keys()
            .filter(|p| !ours.contains_key(*p) && !manifest.removals.contains(p) && !excluded(p))
            .collect();
        let shipped_extra: Vec<&&String> = extra.iter().filter(|p| shipped.contains(**p)).collect();
        assert!(
            shipped_extra.is_empty(),
            "{name}: package files missing from the bundle: {shipped_extra:?}"
        );
        eprintln!(
            "{name}: {} paths in the bundle; made only by scripts in the plain run: {extra:?}",
            ours.len()
        );
    }
}
