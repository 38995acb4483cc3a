//! `dormouse check` of an rpm guest against dnf itself: a copy of the rpm test root with
//! version 1 of test packages installed, a repository (built by createrepo_c, with an
//! updateinfo.xml added by modifyrepo_c) offering newer ones over HTTP, and a `.repo` file
//! using `$releasever/$basearch`. `check --refresh` must list exactly what `dnf check-update`
//! lists in a chroot of the same copy, and classify as `security` exactly what
//! `dnf check-update --security` lists; then, from the metadata dnf cached there, the same
//! without `--refresh`.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use dormouse_tests::testbed;

use crate::check::in_chroot;
use crate::dormouse_bin;

/// (name, version, epoch, noarch)
const PACKAGES: [(&str, &str, Option<u32>, bool); 4] = [
    ("dm-app", "1", None, false),
    ("dm-doc", "1", None, true),
    ("dm-epoch", "1", None, false),
    ("dm-same", "1", None, false),
];
/// What the repository offers: newer dm-app and dm-doc, dm-epoch at a lower version but a
/// higher epoch, dm-same unchanged, dm-app's old version too.
const OFFERED: [(&str, &str, Option<u32>, bool); 6] = [
    ("dm-app", "1", None, false),
    ("dm-app", "2", None, false),
    ("dm-app", "1.5", None, false),
    ("dm-doc", "2", None, true),
    ("dm-epoch", "0.5", Some(1), false),
    ("dm-same", "1", None, false),
];

/// dm-app 1.5 fixes a security issue, dm-doc 2 a bug.
const UPDATEINFO: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<updates>
  <update from="test@dormouse" status="stable" type="security" version="2.0">
    <id>DM-2024-0001</id><title>dm-app: security fix</title><severity>Important</severity>
    <issued date="2024-01-01 00:00:00"/>
    <pkglist><collection short="dm"><name>dm</name>
      <package name="dm-app" version="1.5" release="1" epoch="0" arch="ARCH" src="dm-app-1.5-1.src.rpm"><filename>dm-app-1.5-1.ARCH.rpm</filename></package>
    </collection></pkglist>
  </update>
  <update from="test@dormouse" status="stable" type="bugfix" version="2.0">
    <id>DM-2024-0002</id><title>dm-doc: bug fix</title>
    <issued date="2024-01-02 00:00:00"/>
    <pkglist><collection short="dm"><name>dm</name>
      <package name="dm-doc" version="2" release="1" epoch="0" arch="noarch" src="dm-doc-2-1.src.rpm"><filename>dm-doc-2-1.noarch.rpm</filename></package>
    </collection></pkglist>
  </update>
</updates>
"#;

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Builds the packages with rpmbuild into `out`; returns their paths.
fn build(work: &Path, set: &[(&str, &str, Option<u32>, bool)], out: &Path) -> Vec<PathBuf> {
    let top = work.join("rpmbuild");
    fs::create_dir_all(out).unwrap();
    set.iter()
        .map(|&(name, version, epoch, noarch)| {
            let spec = work.join(format!("{name}-{version}.spec"));
            let epoch = epoch.map_or(String::new(), |e| format!("Epoch: {e}\n"));
            let arch = if noarch { "BuildArch: noarch\n" } else { "" };
            fs::write(
                &spec,
                format!(
                    "%global debug_package %{{nil}}\nName: {name}\nVersion: {version}\nRelease: 1\n{epoch}{arch}\
                     Summary: dormouse check test package\nLicense: GPL-3.0-or-later\n%description\nTest.\n%files\n"
                ),
            )
            .unwrap();
            run(
                Command::new("rpmbuild")
                    .args(["-bb", "--define"])
                    .arg(format!("_topdir {}", top.display()))
                    .arg(&spec),
                "rpmbuild (scripts/lib.sh installs rpm)",
            );
            let dir = top.join("RPMS").join(if noarch { "noarch".into() } else { machine() });
            let file = fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| {
                    p.file_name()
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .starts_with(&format!("{name}-{version}-1."))
                })
                .unwrap();
            let dest = out.join(file.file_name().unwrap());
            fs::rename(&file, &dest).unwrap();
            dest
        })
        .collect()
}

fn machine() -> String {
    run(Command::new("uname").arg("-m"), "uname").trim().to_owned()
}

/// Serves `dir` over HTTP on 127.0.0.1 (GET only, one request per connection) for the rest of
/// the test process; returns the port.
fn serve(dir: PathBuf) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            // Skip the headers.
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let file = dir.join(path.trim_start_matches('/'));
            let _ = match (path.contains(".."), fs::read(&file)) {
                (false, Ok(body)) if file.is_file() => stream
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .and_then(|()| stream.write_all(&body)),
                _ => stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            };
        }
    });
    port
}

/// (name.arch, candidate, repo) rows of `dnf check-update` in a chroot of `root`; `security`
/// adds `--security`.
fn dnf_check_update(root: &Path, releasever: &str, security: bool) -> BTreeSet<(String, String, String)> {
    let script = format!(
        "dnf check-update -q --releasever={releasever} --setopt=reposdir=/etc/yum.repos.d {}; \
         rc=$?; [ $rc = 100 ] || [ $rc = 0 ]",
        if security { "--security" } else { "" }
    );
    in_chroot(root, &["sh", "-c", &script])
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() == 3).then(|| (w[0].to_owned(), w[1].to_owned(), w[2].to_owned()))
        })
        .collect()
}

/// `dormouse check --root ROOT --json` rows like dnf's, and those classified `security`.
fn dormouse_check(
    root: &Path,
    db: &Path,
    extra: &[&str],
) -> (BTreeSet<(String, String, String)>, BTreeSet<String>, serde_json::Value) {
    let out = run(
        Command::new(dormouse_bin())
            .args(["check", "--json", "--root"])
            .arg(root)
            .arg("--db")
            .arg(db)
            .args(extra),
        "dormouse check",
    );
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let report = &json["report"];
    let upgrades = report["upgrades"]
        .as_array()
        .unwrap_or_else(|| panic!("no upgrades in {json}"));
    let rows = upgrades
        .iter()
        .map(|u| {
            (
                format!("{}.{}", u["name"].as_str().unwrap(), u["arch"].as_str().unwrap()),
                u["candidate"].as_str().unwrap().to_owned(),
                u["suites"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join(","),
            )
        })
        .collect();
    let security = upgrades
        .iter()
        .filter(|u| u["priority"] == "security")
        .map(|u| u["name"].as_str().unwrap().to_owned())
        .collect();
    (rows, security, report.clone())
}

#[test]
fn rpm_check_matches_dnf_check_update() {
    let test = "rpm_check_matches_dnf_check_update";
    let Some(tb) = testbed(test) else { return };
    let rpm_guest = tb.rpm_guest.unwrap_or_else(|| {
        panic!("{test}: the test bed has no rpm root; build it with `scripts/make-fixtures --only rpmguest`")
    });
    let work = tempfile::tempdir().unwrap();
    let arch = machine();

    // The guest: a copy of the rpm root with version 1 installed.
    let root = work.path().join("root");
    run(
        Command::new("cp").arg("-a").arg(&rpm_guest.root).arg(&root),
        "copy of the rpm root",
    );
    // The tree is Debian's with rpm added; check reports both package managers' updates.
    // Without apt sources, only rpm's side can report any.
    fs::remove_file(root.join("etc/apt/sources.list")).unwrap();
    let installed = build(work.path(), &PACKAGES, &root.join("run/rpms"));
    let names: Vec<String> = installed
        .iter()
        .map(|p| format!("/run/rpms/{}", p.file_name().unwrap().to_str().unwrap()))
        .collect();
    let mut args = vec!["rpm", "-i", "--nodeps"];
    args.extend(names.iter().map(String::as_str));
    in_chroot(&root, &args);
    let releasever = fs::read_to_string(root.join("etc/os-release"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_ID="))
        .unwrap()
        .trim_matches('"')
        .to_owned();

    // The repository, at $releasever/$basearch of the served directory.
    let www = work.path().join("www");
    let repo = www.join(&releasever).join(&arch);
    build(work.path(), &OFFERED, &repo);
    run(
        Command::new("createrepo_c").arg("-q").arg(&repo),
        "createrepo_c (scripts/lib.sh installs createrepo-c)",
    );
    let updateinfo = work.path().join("updateinfo.xml");
    fs::write(&updateinfo, UPDATEINFO.replace("ARCH", &arch)).unwrap();
    run(
        Command::new("modifyrepo_c")
            .arg("--mdtype=updateinfo")
            .arg(&updateinfo)
            .arg(repo.join("repodata")),
        "modifyrepo_c",
    );
    let port = serve(www);
    fs::create_dir_all(root.join("etc/yum.repos.d")).unwrap();
    fs::write(
        root.join("etc/yum.repos.d/dm.repo"),
        format!(
            "[dm-updates]\nname=dormouse test updates\nbaseurl=http://127.0.0.1:{port}/$releasever/$basearch/\n\
             enabled=1\ngpgcheck=0\n\n[dm-off]\nname=disabled\nbaseurl=http://127.0.0.1:1/\nenabled=0\n"
        ),
    )
    .unwrap();

    let db = work.path().join("check.sqlite");
    let (fresh, fresh_security, report) = dormouse_check(&root, &db, &["--refresh"]);
    let truth = dnf_check_update(&root, &releasever, false);
    let truth_security: BTreeSet<String> = dnf_check_update(&root, &releasever, true)
        .into_iter()
        .map(|(na, _, _)| na.rsplit_once('.').unwrap().0.to_owned())
        .collect();
    // The truth itself: newer version, noarch, epoch beats version; nothing for dm-same.
    assert_eq!(
        truth,
        BTreeSet::from([
            (format!("dm-app.{arch}"), "2-1".to_owned(), "dm-updates".to_owned()),
            ("dm-doc.noarch".to_owned(), "2-1".to_owned(), "dm-updates".to_owned()),
            (
                format!("dm-epoch.{arch}"),
                "1:0.5-1".to_owned(),
                "dm-updates".to_owned()
            ),
        ]),
        "dnf check-update"
    );
    assert_eq!(
        truth_security,
        BTreeSet::from(["dm-app".to_owned()]),
        "dnf check-update --security"
    );
    assert_eq!(fresh, truth, "check --refresh vs dnf check-update; report: {report:#}");
    assert_eq!(
        fresh_security, truth_security,
        "security classification; report: {report:#}"
    );
    assert_eq!(report["package_manager"], "dpkg+rpm");
    let repos = report["repositories"].as_array().unwrap();
    assert_eq!(repos.len(), 1, "only the enabled repository: {report:#}");
    assert_eq!(repos[0]["uri"], format!("http://127.0.0.1:{port}/{releasever}/{arch}/"));
    assert_eq!(repos[0]["versions"], OFFERED.len());

    // dnf cached the metadata in the copy (its check-update above): the same from the cache.
    let (cached, cached_security, report) = dormouse_check(&root, &db, &[]);
    assert_eq!(cached, truth, "check from dnf's cache; report: {report:#}");
    assert_eq!(cached_security, truth_security);
    assert!(
        report["repositories"][0]["from"]
            .as_str()
            .unwrap()
            .starts_with("guest cache /var/cache/dnf/dm-updates-"),
        "{report:#}"
    );

    // The same as a CycloneDX SBOM: every package of both databases, the advisory as a
    // vulnerability of dm-app.
    let bom = crate::sbom::cyclonedx(&["--root".as_ref(), root.as_os_str(), "--db".as_ref(), db.as_os_str()]);
    crate::sbom::validate_cyclonedx(&bom);
    let rpms = crate::sbom::packages(&bom, "rpm");
    let rpm_qa = in_chroot(&root, &["rpm", "-qa"]);
    assert_eq!(rpms.len(), rpm_qa.lines().count(), "one component per rpm -qa line");
    let status = fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    assert_eq!(
        crate::sbom::packages(&bom, "deb").len(),
        crate::sbom::dpkg_installed(&status).len()
    );
    let os = fs::read_to_string(root.join("etc/os-release")).unwrap();
    let id = crate::sbom::os_release(&os, "ID");
    let app = rpms.iter().find(|c| c["name"] == "dm-app").unwrap();
    assert_eq!(
        app["purl"],
        format!("pkg:rpm/{id}/dm-app@1-1?arch={arch}&distro={id}-{releasever}")
    );
    assert_eq!(app["licenses"][0]["license"]["name"], "GPL-3.0-or-later");
    assert_eq!(crate::sbom::props(app, "dormouse:update:candidate"), ["2-1"]);
    assert_eq!(crate::sbom::props(app, "dormouse:update:advisory"), ["DM-2024-0001"]);
    let epoch = rpms.iter().find(|c| c["name"] == "dm-epoch").unwrap();
    assert_eq!(crate::sbom::props(epoch, "dormouse:update:candidate"), ["1:0.5-1"]);
    let vulns = bom["vulnerabilities"].as_array().unwrap();
    assert_eq!(vulns.len(), 1, "the bugfix advisory is no vulnerability: {vulns:?}");
    assert_eq!(vulns[0]["id"], "DM-2024-0001");
    assert_eq!(vulns[0]["affects"][0]["ref"], app["bom-ref"]);
}
