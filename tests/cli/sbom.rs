//! `dormouse check --format cyclonedx`: the SBOM of the test-bed guest, validated against the
//! official CycloneDX 1.5 JSON schema (vendored in `tests/schemas/cyclonedx/`, see its
//! README), and compared with what the guest's own dpkg database and the test bed say.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use dormouse_tests::{testbed, workspace_root};
use emulator::disk::GuestDisk;
use serde_json::Value;

use crate::check::start_mirror;
use crate::dormouse_bin;

fn schema_file(name: &str) -> Value {
    let path = workspace_root().join("tests/schemas/cyclonedx").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Panics with every schema violation of `bom`.
pub(crate) fn validate_cyclonedx(bom: &Value) {
    let errors = cyclonedx_errors(bom);
    assert!(
        errors.is_empty(),
        "not a valid CycloneDX 1.5 BOM:\n{}",
        errors.join("\n")
    );
}

/// The schema violations of `bom`. The schema's `$ref`s to spdx.schema.json and
/// jsf-0.82.schema.json resolve to the vendored copies under their `$id`s; nothing is fetched.
fn cyclonedx_errors(bom: &Value) -> Vec<String> {
    let bom_schema = schema_file("bom-1.5.schema.json");
    let registry = jsonschema::Registry::new()
        .add(
            "http://cyclonedx.org/schema/spdx.schema.json",
            schema_file("spdx.schema.json"),
        )
        .unwrap()
        .add(
            "http://cyclonedx.org/schema/jsf-0.82.schema.json",
            schema_file("jsf-0.82.schema.json"),
        )
        .unwrap()
        .prepare()
        .unwrap();
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .should_validate_formats(true)
        .offline()
        .with_registry(&registry)
        .build(&bom_schema)
        .unwrap();
    validator
        .iter_errors(bom)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// `dormouse check ARGS --format cyclonedx`, parsed.
pub(crate) fn cyclonedx(args: &[&std::ffi::OsStr]) -> Value {
    let out = Command::new(dormouse_bin())
        .arg("check")
        .args(args)
        .args(["--format", "cyclonedx"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dormouse check --format cyclonedx: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The values of the properties `name` of a component (or of the metadata).
pub(crate) fn props<'a>(c: &'a Value, name: &str) -> Vec<&'a str> {
    c["properties"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|p| p["name"] == name)
                .map(|p| p["value"].as_str().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

/// The package components (those with a purl) by purl type.
pub(crate) fn packages<'a>(bom: &'a Value, kind: &str) -> Vec<&'a Value> {
    bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["purl"]
                .as_str()
                .is_some_and(|p| p.starts_with(&format!("pkg:{kind}/")))
        })
        .collect()
}

/// `Package` → (`Version`, `Architecture`) of the packages dpkg's status file says are
/// installed, by a plain reading of it.
pub(crate) fn dpkg_installed(status: &str) -> BTreeMap<String, (String, String)> {
    status
        .split("\n\n")
        .filter_map(|para| {
            let field = |name: &str| {
                para.lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                    .map(str::to_owned)
            };
            let status = field("Status")?;
            (status.ends_with(" installed")).then(|| {
                (
                    field("Package").unwrap(),
                    (field("Version").unwrap(), field("Architecture").unwrap()),
                )
            })
        })
        .collect()
}

/// An os-release field.
pub(crate) fn os_release(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap()
        .trim_matches('"')
        .to_owned()
}

/// A Debian package name or version as a purl writes it (`+` is the one reserved character
/// they use).
pub(crate) fn purl_encoded(v: &str) -> String {
    assert!(
        v.chars().all(|c| c.is_ascii_alphanumeric() || ".:~+-".contains(c)),
        "{v}"
    );
    v.replace('+', "%2B")
}

/// Files of a test-bed disk's root filesystem, read from a read-only mount of it.
fn read_from_disk(disk: &Path, paths: &[&str]) -> Vec<String> {
    let guest = GuestDisk::open(disk).unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let (root, _) = guest.find_root(mnt.path()).unwrap().expect("a root filesystem");
    let mount = guest.mount(root, mnt.path()).unwrap();
    paths
        .iter()
        .map(|p| std::fs::read_to_string(mount.target().join(p.trim_start_matches('/'))).unwrap())
        .collect()
}

#[test]
fn check_cyclonedx_of_the_test_bed_guest() {
    let Some(bed) = testbed("check_cyclonedx_of_the_test_bed_guest") else {
        return;
    };
    start_mirror();
    let disk = &bed.disks.guest.path;
    let [status, os] =
        <[String; 2]>::try_from(read_from_disk(disk, &["/var/lib/dpkg/status", "/etc/os-release"])).unwrap();
    let installed = dpkg_installed(&status);
    let distro = format!("{}-{}", os_release(&os, "ID"), os_release(&os, "VERSION_ID"));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("check.sqlite");
    let dump = bed.memdump.dir.join("dump.elf");
    let bom = cyclonedx(&[
        dump.as_os_str(),
        "--disk".as_ref(),
        disk.as_os_str(),
        "--refresh".as_ref(),
        "--name".as_ref(),
        "testbed-guest".as_ref(),
        "--db".as_ref(),
        db.as_os_str(),
    ]);
    validate_cyclonedx(&bom);
    // The validation has teeth, through the referenced SPDX schema too.
    let mut bad = bom.clone();
    bad["components"][2]["licenses"] = serde_json::json!([{ "license": { "id": "not-an-SPDX-id" } }]);
    bad["metadata"]["component"]["type"] = "virtual-machine".into();
    assert_eq!(cyclonedx_errors(&bad).len(), 2, "{:?}", cyclonedx_errors(&bad));

    assert_eq!(bom["bomFormat"], "CycloneDX");
    assert_eq!(bom["specVersion"], "1.5");
    assert!(bom["serialNumber"].as_str().unwrap().starts_with("urn:uuid:"));
    assert_eq!(bom["metadata"]["component"]["name"], "testbed-guest");
    assert_eq!(bom["metadata"]["tools"]["components"][0]["name"], "dormouse");

    // Every installed package, once, with its purl.
    let debs = packages(&bom, "deb");
    assert_eq!(debs.len(), installed.len(), "one component per installed package");
    assert!(packages(&bom, "rpm").is_empty());
    for c in &debs {
        let name = c["name"].as_str().unwrap();
        let (version, arch) = &installed[name];
        assert_eq!(c["version"], *version, "{c}");
        assert_eq!(
            c["purl"],
            format!(
                "pkg:deb/{}/{}@{}?arch={arch}&distro={distro}",
                os_release(&os, "ID"),
                purl_encoded(name),
                purl_encoded(version)
            ),
            "{c}"
        );
    }

    // The security update the test bed published, on its package.
    let scenario = &bed.scenarios["security_update"];
    let package = scenario["package"].as_str().unwrap();
    let outdated = debs.iter().find(|c| c["name"] == package).unwrap();
    assert_eq!(outdated["version"], scenario["installed_version"]);
    assert_eq!(
        props(outdated, "dormouse:update:candidate"),
        [scenario["candidate_version"].as_str().unwrap()]
    );
    assert_eq!(props(outdated, "dormouse:update:security"), ["true"]);
    assert!(props(outdated, "dormouse:update:suite").contains(&"bookworm-security"));
    // apt's indices name no advisory: no vulnerabilities, only properties.
    assert!(bom.get("vulnerabilities").is_none());
    // Packages without an update carry no update property.
    let up_to_date = debs
        .iter()
        .filter(|c| props(c, "dormouse:update:candidate").is_empty())
        .count();
    assert!(up_to_date > 0);

    // The kernel the memory dump runs.
    let kernel = bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["bom-ref"] == "kernel")
        .unwrap_or_else(|| panic!("no kernel component: {bom:#}"));
    assert_eq!(kernel["type"], "operating-system");
    assert_eq!(kernel["version"], bed.kernel.release);
    assert_eq!(props(kernel, "dormouse:kernel:release"), [bed.kernel.release.as_str()]);
    assert_eq!(props(kernel, "dormouse:kernel:banner"), [bed.kernel.banner.trim_end()]);
    assert_eq!(props(kernel, "dormouse:kernel:package"), [bed.kernel.package.as_str()]);
    assert_eq!(
        props(kernel, "dormouse:kernel:package-installed"),
        [installed.contains_key(&bed.kernel.package).to_string().as_str()]
    );
    assert_eq!(
        props(&bom["metadata"], "dormouse:check:processes"),
        ["from the memory image"]
    );
    let os_component = bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["bom-ref"] == "os")
        .unwrap();
    assert_eq!(os_component["version"], os_release(&os, "VERSION_ID"));
}

#[test]
fn check_cyclonedx_refuses_batch_and_json_stays_an_alias() {
    let out = Command::new(dormouse_bin())
        .args(["check", "--batch", "/nonexistent", "--format", "cyclonedx"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("one VM"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(dormouse_bin())
        .args(["check", "--json", "--format", "text", "--root", "/nonexistent"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "--json and --format conflict");
}
