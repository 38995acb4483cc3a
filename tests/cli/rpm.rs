//! `dormouse emulate` of rpm and dnf in the rpm test root (Debian's rpm 4.18 and dnf over the
//! test-bed guest tree): every scriptlet exec'd is recorded with its package, scriptlet and
//! `$1`/`$2` and never runs; `<lua>` scriptlets, which cannot be stopped, are reported. The
//! truth is what rpm does in a plain chroot of a copy of the same root under strace.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use dormouse_tests::{sha256_file, testbed};
use serde_json::Value;

use crate::emulate::{Uppers, emulate, stderr};

/// Where the shell scriptlets log `<name-version-release> <scriptlet> <args>`, in the guest.
const LOG: &str = "/var/tmp/rpm-scriptlets.log";
/// Bare `-p` programs touch `/var/tmp/rpm-prog-<nvr>-<scriptlet>`.
const PROG_MARKER: &str = "/var/tmp/rpm-prog-";

const SHELL_SPEC: &str = r#"Name: dm-shell
Version: %{ver}
Release: 1
Summary: dormouse test package with shell scriptlets
License: GPL-3.0-or-later
BuildArch: noarch
%description
Logging shell scriptlets; the %%post fails.
%install
mkdir -p %{buildroot}/usr/share/dm-shell
echo %{version} > %{buildroot}/usr/share/dm-shell/version
%files
/usr/share/dm-shell/version
%pre
echo "%{name}-%{version}-%{release} %%pre $*" >> LOG
%post
echo "%{name}-%{version}-%{release} %%post $*" >> LOG
exit 1
%preun
echo "%{name}-%{version}-%{release} %%preun $*" >> LOG
%postun
echo "%{name}-%{version}-%{release} %%postun $*" >> LOG
"#;

const PROG_SPEC: &str = r#"Name: dm-prog
Version: 1
Release: 1
Summary: dormouse test package with a bare program scriptlet and a trigger
License: GPL-3.0-or-later
BuildArch: noarch
%description
Its post scriptlet is a program without body; a trigger on dm-shell.
%files
%post -p "/usr/bin/touch PROG_MARKERdm-prog-1-1-post"
%triggerin -- dm-shell
echo "%{name}-%{version}-%{release} %%triggerin $*" >> LOG
"#;

const LUA_SPEC: &str = r#"Name: dm-lua
Version: 1
Release: 1
Summary: dormouse test package with lua scriptlets
License: GPL-3.0-or-later
BuildArch: noarch
%description
Lua scriptlets run inside rpm.
%files
%post -p <lua>
io.open("/var/tmp/rpm-lua-post", "w"):close()
%postun -p <lua>
io.open("/var/tmp/rpm-lua-postun", "w"):close()
"#;

/// The test root's rpmdb is empty: this stands for the Debian userland, so dnf's dependency
/// check finds what the scriptlets need.
const BASE_SPEC: &str = r#"Name: dm-base
Version: 1
Release: 1
Summary: dormouse test package providing the scriptlets' interpreters
License: GPL-3.0-or-later
BuildArch: noarch
Provides: /bin/sh
Provides: /usr/bin/touch
%description
Provides what the test packages' scriptlets need.
%files
"#;

/// rpm installs, upgrades (1 → 2, `$1` = 2 then 1) and erases (`$1` = 0); then dnf installs.
const COMMANDS: &str = "rpm -i --nodeps /run/rpms/dm-shell-1-1.noarch.rpm /run/rpms/dm-prog-1-1.noarch.rpm \
     /run/rpms/dm-lua-1-1.noarch.rpm && \
     rpm -U --nodeps /run/rpms/dm-shell-2-1.noarch.rpm && \
     rpm -e --nodeps dm-shell dm-prog dm-lua && \
     dnf -y -q --disablerepo='*' --releasever=12 install /run/rpms/dm-base-1-1.noarch.rpm \
     /run/rpms/dm-shell-1-1.noarch.rpm";

/// Builds the test packages with rpmbuild; returns the directory of the .rpm files.
fn build_packages(work: &Path) -> PathBuf {
    let top = work.join("rpmbuild");
    let specs = [
        ("dm-shell-1.spec", SHELL_SPEC, Some("1")),
        ("dm-shell-2.spec", SHELL_SPEC, Some("2")),
        ("dm-prog.spec", PROG_SPEC, None),
        ("dm-lua.spec", LUA_SPEC, None),
        ("dm-base.spec", BASE_SPEC, None),
    ];
    for (name, text, version) in specs {
        let spec = work.join(name);
        fs::write(&spec, text.replace("PROG_MARKER", PROG_MARKER).replace("LOG", LOG)).unwrap();
        let mut cmd = Command::new("rpmbuild");
        cmd.arg("-bb").arg("--define").arg(format!("_topdir {}", top.display()));
        if let Some(v) = version {
            cmd.args(["--define", &format!("ver {v}")]);
        }
        let out = cmd
            .arg(&spec)
            .output()
            .expect("run rpmbuild (scripts/lib.sh installs rpm)");
        assert!(
            out.status.success(),
            "rpmbuild {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    top.join("RPMS/noarch")
}

/// One scriptlet run: package (name-version-release), scriptlet, argv with the temp file as
/// `<tmp>`.
type Run = (String, String, Vec<String>);

fn is_temp(arg: &str) -> bool {
    arg.starts_with("/var/tmp/rpm-tmp.")
}

fn normalized(argv: &[String]) -> Vec<String> {
    argv.iter()
        .map(|a| if is_temp(a) { "<tmp>".to_owned() } else { a.clone() })
        .collect()
}

/// The quoted strings of strace's argv array `["a", "b"]`.
fn strace_argv(line: &str) -> Option<Vec<String>> {
    let start = line.find(", [")? + 3;
    let mut out = Vec::new();
    let mut chars = line[start..].chars();
    loop {
        match chars.next()? {
            '"' => {
                let mut s = String::new();
                loop {
                    match chars.next()? {
                        '\\' => s.push(chars.next()?),
                        '"' => break,
                        c => s.push(c),
                    }
                }
                out.push(s);
            }
            ']' => return Some(out),
            _ => {}
        }
    }
}

/// Runs `script` in a plain chroot of a copy of `root` under `strace -f -e trace=execve`; the
/// scriptlets really run. Their execs in order, named by what each one logged (shell) or
/// touched (bare program), cross-checked against the exec's own arguments.
fn truth(root: &Path, rpms: &Path, work: &Path, script: &str) -> Vec<Run> {
    let copy = work.join("truth-root");
    let status = Command::new("cp").arg("-a").arg(root).arg(&copy).status().unwrap();
    assert!(status.success(), "copy of the rpm test root");
    let status = Command::new("cp")
        .arg("-a")
        .arg(rpms)
        .arg(copy.join("run/rpms"))
        .status()
        .unwrap();
    assert!(status.success());
    let trace = work.join("strace.log");
    let out = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=execve", "-s", "4096", "-o"])
        .arg(&trace)
        .arg("chroot")
        .arg(&copy)
        .args([
            "/usr/bin/env",
            "-i",
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            "sh",
            "-c",
            script,
        ])
        .output()
        .expect("run strace (scripts/lib.sh installs it)");
    assert!(
        out.status.success(),
        "truth run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logged = fs::read_to_string(copy.join(LOG.trim_start_matches('/'))).unwrap();
    let mut logged = logged.lines();
    let mut runs = Vec::new();
    for line in fs::read_to_string(&trace).unwrap().lines() {
        if !line.contains(" execve(") || !line.ends_with("= 0") {
            continue;
        }
        let argv = strace_argv(line).unwrap_or_else(|| panic!("strace line: {line}"));
        if let Some(k) = argv.iter().position(|a| is_temp(a)) {
            let entry = logged.next().expect("a log line for every temp-file scriptlet");
            let mut words = entry.split(' ');
            let (package, tag) = (words.next().unwrap(), words.next().unwrap());
            let args: Vec<&str> = words.filter(|w| !w.is_empty()).collect();
            assert_eq!(args, argv[k + 1..], "logged {entry:?} for exec {argv:?}");
            runs.push((package.to_owned(), tag.to_owned(), normalized(&argv)));
        } else if let Some(name) = argv.get(1).and_then(|a| a.strip_prefix(PROG_MARKER)) {
            let (package, tag) = name.rsplit_once('-').unwrap();
            runs.push((package.to_owned(), format!("%{tag}"), argv.clone()));
        }
    }
    assert_eq!(logged.next(), None, "every logged scriptlet was an exec strace saw");
    runs
}

fn recorded(report: &Value) -> Vec<Run> {
    report["trace"]["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let argv: Vec<String> = s["argv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect();
            (
                s["package"].as_str().unwrap().to_owned(),
                s["rpm_tag"].as_str().unwrap_or("(none)").to_owned(),
                normalized(&argv),
            )
        })
        .collect()
}

/// A scriptlet body as the package header holds it.
fn header_body(rpm: &Path, tag: &str, work: &Path) -> PathBuf {
    let out = Command::new("rpm")
        .args(["-qp", "--qf", &format!("%{{{tag}}}")])
        .arg(rpm)
        .output()
        .unwrap();
    assert!(out.status.success(), "rpm -qp {}", rpm.display());
    let path = work.join(format!("body-{tag}"));
    fs::write(&path, out.stdout).unwrap();
    path
}

#[test]
fn rpm_and_dnf_scriptlets_are_intercepted_with_package_and_arguments() {
    let test = "rpm_and_dnf_scriptlets_are_intercepted_with_package_and_arguments";
    let Some(tb) = testbed(test) else { return };
    let rpm_guest = tb.rpm_guest.unwrap_or_else(|| {
        panic!("{test}: the test bed has no rpm root; build it with `scripts/make-fixtures --only rpmguest`")
    });
    let work = tempfile::tempdir().unwrap();
    let rpms = build_packages(work.path());
    let expected = truth(&rpm_guest.root, &rpms, work.path(), COMMANDS);
    // Sanity of the truth itself: install, upgrade and erase values of $1, a trigger's $1 $2.
    let shell_args: Vec<String> = expected
        .iter()
        .filter(|(p, _, _)| p.starts_with("dm-shell"))
        .map(|(p, t, argv)| format!("{p} {t} {}", argv[2..].join(" ")))
        .collect();
    assert!(shell_args.contains(&"dm-shell-2-1 %pre 2".to_owned()), "{expected:?}");
    assert!(
        shell_args.contains(&"dm-shell-1-1 %postun 1".to_owned()),
        "{expected:?}"
    );
    assert!(shell_args.contains(&"dm-shell-2-1 %preun 0".to_owned()), "{expected:?}");
    assert!(
        expected.iter().any(|(_, t, a)| t == "%triggerin" && a.len() == 4),
        "{expected:?}"
    );

    let bind = format!("{}:/run/rpms", rpms.display());
    let disk = rpm_guest.path.to_str().unwrap();
    let run = |trace: &str, name: &str| {
        let (report, output) = emulate(
            &[
                "--disk",
                disk,
                "--release",
                "6.1.0-rpm-test",
                "--net",
                "none",
                "--bind",
                &bind,
                "--keep",
                work.path().join(format!("keep-{name}")).to_str().unwrap(),
                "--trace",
                trace,
                "--",
                "sh",
                "-c",
                COMMANDS,
            ],
            &work.path().join(format!("state-{name}")),
        );
        let log = stderr(&output);
        let report = report.unwrap_or_else(|| panic!("no report: {log}"));
        (report, log)
    };

    let (report, log) = run("seccomp", "traced");
    assert_eq!(report["exit_code"], 0, "{log}");
    assert_eq!(recorded(&report), expected, "{log}");
    let scripts = report["trace"]["scripts"].as_array().unwrap();
    for s in scripts {
        assert_eq!(s["manager"], "rpm", "{s}");
        let want = match s["rpm_tag"].as_str().unwrap() {
            "%pre" => "preinst",
            "%post" => "postinst",
            "%preun" => "prerm",
            "%postun" => "postrm",
            _ => "other",
        };
        assert_eq!(s["type"], want, "{s}");
        assert_eq!(s["arch"], "noarch", "{s}");
    }
    // The recorded bytes are the header's scriptlet body (the temp file rpm wrote).
    let pre = scripts
        .iter()
        .find(|s| s["package"] == "dm-shell-2-1" && s["rpm_tag"] == "%pre")
        .unwrap();
    let body = header_body(&rpms.join("dm-shell-2-1.noarch.rpm"), "PREIN", work.path());
    assert_eq!(pre["sha256"].as_str().unwrap(), sha256_file(&body));
    let lua: Vec<(String, String)> = report["trace"]["lua_scriptlets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["package"].as_str().unwrap().to_owned(),
                l["tag"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let pair = |p: &str, t: &str| (p.to_owned(), t.to_owned());
    assert_eq!(
        lua,
        [pair("dm-lua-1-1", "%post"), pair("dm-lua-1-1", "%postun")],
        "{log}"
    );
    assert!(
        report["trace"]["warnings"].as_array().unwrap().is_empty(),
        "{}",
        report["trace"]
    );
    let uppers = Uppers::from_report(&report);
    assert!(!uppers.path(LOG).exists(), "a shell scriptlet ran");
    assert!(
        !uppers.path(&format!("{PROG_MARKER}dm-prog-1-1-post")).exists(),
        "the -p program ran"
    );
    // What interception cannot stop: lua ran inside rpm (in the sandbox).
    assert!(uppers.path("/var/tmp/rpm-lua-post").exists());
    // rpm and dnf did their work: dnf's install is in the database.
    assert!(uppers.path("/var/lib/rpm/rpmdb.sqlite").exists());

    // Without interception the same scriptlets run (inside the sandbox): the log is the truth's.
    let (report, log) = run("off", "off");
    assert_eq!(report["exit_code"], 0, "{log}");
    assert!(report["trace"]["scripts"].as_array().is_none_or(|s| s.is_empty()));
    let uppers = Uppers::from_report(&report);
    let logged = fs::read_to_string(uppers.path(LOG)).expect("the scriptlets ran without interception");
    assert_eq!(
        logged.lines().count(),
        expected
            .iter()
            .filter(|(_, _, a)| a.iter().any(|x| x == "<tmp>"))
            .count()
    );
    assert!(uppers.path(&format!("{PROG_MARKER}dm-prog-1-1-post")).exists());
}
