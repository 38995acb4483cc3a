//! `dormouse emulate --out` on the test bed: the bundle of `apt-get install nginx` verifies
//! (with dormouse and with the real `minisign`), carries nginx with its metadata and no
//! overlayfs bookkeeping, reports the excluded apt caches, and a flipped byte is caught.

use std::fs;
use std::process::Command;

use bundle::manifest::EntryType;
use bundle::read::{Bundle, Member};
use dormouse_tests::{sha256_file, start_repo, testbed};
use serde_json::Value;

use crate::emulate::dpkg_status_of;
use crate::{output_text as text, run_dormouse};

#[test]
fn nginx_install_bundle_verifies_and_carries_nginx() {
    let Some(tb) = testbed("nginx_install_bundle_verifies_and_carries_nginx") else {
        return;
    };
    start_repo();
    let work = tempfile::tempdir().unwrap();
    let path = |name: &str| work.path().join(name).to_str().unwrap().to_owned();
    let keygen = run_dormouse(&["keygen", "--out", &path("k")]);
    assert!(keygen.status.success(), "{}", text(&keygen));

    let image = tb.disks.guest.path.to_str().unwrap();
    let dump = tb.memdump.dir.join("dump.elf");
    let emulate = run_dormouse(&[
        "emulate",
        "--json",
        "--state-dir",
        &path("state"),
        dump.to_str().unwrap(),
        "--disk",
        image,
        "--keep",
        &path("keep"),
        "--out",
        &path("b.dmb"),
        "--sign-key",
        &path("k.key"),
        "--",
        "sh",
        "-c",
        "apt-get update && apt-get install -y nginx",
    ]);
    assert!(emulate.status.success(), "{}", text(&emulate));
    let report: Value = serde_json::from_slice(&emulate.stdout).expect("JSON report");
    let outcome = &report["bundle"];
    assert!(outcome["write"]["bundle_bytes"].as_u64().unwrap() > 0, "{outcome}");
    assert!(work.path().join("b.record.json").is_file(), "no emulation record");
    assert_eq!(
        sha256_file(&tb.disks.guest.path),
        tb.disks.guest.sha256,
        "the guest image was written"
    );

    let verify = run_dormouse(&["bundle", "verify", &path("b.dmb"), "--key", &path("k.pub")]);
    assert!(verify.status.success(), "{}", text(&verify));
    let minisign = Command::new("minisign")
        .args(["-V", "-m", &path("b.dmb"), "-p", &path("k.pub")])
        .output()
        .expect("running minisign (scripts/lib.sh installs it)");
    assert!(minisign.status.success(), "minisign -V: {}", text(&minisign));

    // Ground truth from the run's own dpkg database, kept with --keep.
    let upper = work.path().join("keep/upper/0");
    let status = fs::read_to_string(upper.join("var/lib/dpkg/status")).unwrap();
    let (_, nginx_version) = dpkg_status_of(&status, "nginx").expect("nginx in the emulated dpkg status");
    let bundle = Bundle::open(work.path().join("b.dmb").as_path()).unwrap();
    let manifest = bundle.manifest();
    let nginx = manifest
        .packages
        .iter()
        .find(|p| p.name == "nginx")
        .expect("nginx among the package changes");
    assert_eq!(
        (nginx.old_version.as_deref(), nginx.new_version.as_deref()),
        (None, Some(nginx_version.as_str()))
    );
    // The guest identity is the memory image's, as `dormouse uname -a` prints it.
    let uname = run_dormouse(&["uname", "-a", dump.to_str().unwrap()]);
    let uname = String::from_utf8_lossy(&uname.stdout).into_owned();
    let fields: Vec<&str> = uname.split_whitespace().collect();
    assert_eq!(
        (
            Some(manifest.guest.hostname.as_str()),
            Some(manifest.guest.kernel_release.as_str())
        ),
        (fields.get(1).copied(), fields.get(2).copied()),
        "guest identity"
    );
    // The tracer's records became scripts/ members (checked against their digests below).
    assert!(
        manifest
            .scripts
            .iter()
            .any(|s| s.package == "nginx" && s.script_type == bundle::manifest::ScriptType::Postinst),
        "no nginx postinst among {:?}",
        manifest.scripts.iter().map(|s| &s.file).collect::<Vec<_>>()
    );

    // The payload: every member checked against the manifest, nginx with its metadata, and
    // no overlayfs xattr anywhere.
    let mut nginx_header = None;
    let mut overlay_xattrs = Vec::new();
    bundle
        .for_each_member(|member, header, _| {
            if let Member::File(entry) = member {
                if entry.path == "/usr/sbin/nginx" {
                    nginx_header = Some((entry.clone(), header.clone()));
                }
            }
            overlay_xattrs.extend(
                header
                    .xattrs
                    .iter()
                    .filter(|(name, _)| name.starts_with("trusted.overlay."))
                    .map(|(name, _)| format!("{}: {name}", header.path)),
            );
            Ok(())
        })
        .expect("members match the manifest");
    assert!(overlay_xattrs.is_empty(), "{overlay_xattrs:?}");
    let (entry, header) = nginx_header.expect("/usr/sbin/nginx in the bundle");
    assert_eq!(entry.entry_type, EntryType::File);
    assert_eq!((header.mode, header.uid, header.gid), (0o755, 0, 0));
    assert_eq!(
        entry.sha256.as_deref(),
        Some(sha256_file(&upper.join("usr/sbin/nginx")).as_str())
    );

    // Apt's caches are left out, and said so with their sizes.
    let excluded = |pattern: &str| {
        manifest
            .excluded
            .iter()
            .filter(|e| e.pattern == pattern)
            .map(|e| e.bytes)
            .sum::<u64>()
    };
    assert!(excluded("/var/cache/apt/*.bin") > 1 << 20, "{:#?}", manifest.excluded);
    assert!(
        excluded("/var/cache/apt/archives/*.deb") > 100 << 10,
        "{:#?}",
        manifest.excluded
    );
    assert!(
        !manifest
            .files
            .iter()
            .any(|f| f.path.starts_with("/var/cache/apt/archives/nginx")),
        "a downloaded archive in the payload"
    );

    // A standard tar reads it too, manifest first.
    let listing = Command::new("sh")
        .arg("-c")
        .arg(format!("zstd -dc {} | tar -t", path("b.dmb")))
        .output()
        .unwrap();
    assert!(listing.status.success(), "{}", text(&listing));
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert_eq!(listing.lines().next(), Some("manifest.json"));
    assert!(listing.lines().any(|l| l == "files/usr/sbin/nginx"), "{listing}");

    // `show` reports nginx as installed.
    let show = run_dormouse(&["bundle", "show", "--json", &path("b.dmb")]);
    assert!(show.status.success(), "{}", text(&show));
    let summary: Value = serde_json::from_slice(&show.stdout).unwrap();
    crate::schemas::assert_valid("bundle-show", &summary);
    let installed = summary["packages_installed"].to_string();
    assert!(installed.contains(&format!("nginx {nginx_version}")), "{installed}");

    // One flipped byte: dormouse and minisign both refuse.
    let mut bytes = fs::read(work.path().join("b.dmb")).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(work.path().join("b.dmb"), &bytes).unwrap();
    let verify = run_dormouse(&["bundle", "verify", &path("b.dmb"), "--key", &path("k.pub")]);
    assert!(!verify.status.success(), "a damaged bundle verified: {}", text(&verify));
    assert!(
        text(&verify).contains("does not match its signature"),
        "{}",
        text(&verify)
    );
    let minisign = Command::new("minisign")
        .args(["-V", "-m", &path("b.dmb"), "-p", &path("k.pub")])
        .output()
        .unwrap();
    assert!(!minisign.status.success());
}
