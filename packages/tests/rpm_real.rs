//! The header reader against rpm 4.18 itself: a package built by rpmbuild, recorded in a
//! scratch rpmdb.sqlite (`--justdb`), read back and compared with what `rpm -q` says of it.

// Helpers of these tests, like the tests, fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use packages::rpmdb;
use packages::rpmheader::{Header, TAG_NAME, read_package_header};

const SPEC: &str = "Name: dm-files
Epoch: 3
Version: 1.2
Release: 4
Summary: header test
License: MIT
BuildArch: noarch
%description
Files in two directories, and an epoch.
%install
mkdir -p %{buildroot}/usr/share/dm-files/sub
echo a > %{buildroot}/usr/share/dm-files/a
echo b > %{buildroot}/usr/share/dm-files/sub/b
%files
/usr/share/dm-files
";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run rpm or rpmbuild (scripts/lib.sh installs rpm)");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn build(work: &Path) -> std::path::PathBuf {
    let spec = work.join("dm-files.spec");
    std::fs::write(&spec, SPEC).unwrap();
    let top = work.join("top");
    run(Command::new("rpmbuild")
        .arg("-bb")
        .arg("--define")
        .arg(format!("_topdir {}", top.display()))
        .arg(&spec));
    top.join("RPMS/noarch/dm-files-1.2-4.noarch.rpm")
}

#[test]
fn headers_read_as_rpm_reads_them() {
    let work = tempfile::tempdir().unwrap();
    let package = build(work.path());
    let db = work.path().join("db");
    let rpm = |args: &[&str]| run(Command::new("rpm").arg("--dbpath").arg(&db).args(args));
    rpm(&["-i", "--justdb", "--nodeps", package.to_str().unwrap()]);
    let want = rpm(&["-qa", "--qf", "%{NAME} %{EPOCH}:%{VERSION}-%{RELEASE} %{ARCH}\n"]);
    let want_files: Vec<String> = rpm(&["-ql", "dm-files"]).lines().map(str::to_owned).collect();

    let installed = rpmdb::read_sqlite(&db.join("rpmdb.sqlite"), "rpmdb.sqlite", rpmdb::parse_header).unwrap();
    let got: String = installed
        .iter()
        .map(|p| format!("{} {} {}\n", p.name, p.evr(), p.arch))
        .collect();
    assert_eq!(got, want);
    assert_eq!(installed[0].files, want_files);
    assert_eq!(want_files.len(), 4, "{want_files:?}");

    // The package file holds the same header behind its lead and signature.
    let file = std::fs::File::open(&package).unwrap();
    let (blob, base) = read_package_header(|at, buf| file.read_exact_at(buf, at)).unwrap();
    assert!(base > 96, "after the lead and the signature header");
    assert_eq!(rpmdb::parse_header(&blob).unwrap(), installed[0]);
    let header = Header::parse(&blob, base).unwrap();
    assert_eq!(header.string(TAG_NAME).unwrap().as_deref(), Some("dm-files"));
    let summary = rpm(&["-qp", "--qf", "%{SUMMARY}", package.to_str().unwrap()]);
    assert_eq!(header.strings(1004).unwrap(), [summary], "an i18n string");
}
