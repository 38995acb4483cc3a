//! Every command's `--json` against its JSON Schema in `docs/schemas/<command>.schema.json`,
//! on real inputs: the test bed's QEMU dump and disks, the shared Xen fixtures, a real
//! emulation and the bundle it writes. `isolate`, `release`, `restore`, `pend` and `deliver`
//! need nftables in a network namespace or a Xen toolstack: their tests (`isolate/`,
//! `restore.rs`) validate what they print with [`assert_valid`], and the documented examples
//! in their schema files are validated here. That every `--json` command has a schema file is
//! checked against clap's command tree by the binary's unit test (`src/json_schemas.rs`).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use dormouse_tests::{Testbed, decompressed, testbed, workspace_root, xen_fixtures};
use serde_json::Value;

use crate::dormouse_bin;

fn schema_dir() -> PathBuf {
    workspace_root().join("docs/schemas")
}

fn schema(name: &str) -> Value {
    let path = schema_dir().join(format!("{name}.schema.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

/// Panics with every violation when `value` does not match `docs/schemas/NAME.schema.json`.
pub(crate) fn assert_valid(name: &str, value: &Value) {
    let schema = schema(name);
    let validator = jsonschema::draft202012::new(&schema)
        .unwrap_or_else(|e| panic!("docs/schemas/{name}.schema.json is not a valid schema: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(value)
        .take(20)
        .map(|e| format!("  at {}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "the output does not match docs/schemas/{name}.schema.json:\n{}",
        errors.join("\n")
    );
}

/// Runs `dormouse ARGS` (which must succeed), validates its standard output against the
/// schema NAME and returns it.
fn valid_json<S: AsRef<OsStr>>(name: &str, args: &[S]) -> Value {
    let out = Command::new(dormouse_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect();
    assert!(
        out.status.success(),
        "dormouse {}: {}\n{}",
        shown.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let value: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("dormouse {}: not JSON ({e})", shown.join(" ")));
    assert_valid(name, &value);
    value
}

fn dump(tb: &Testbed) -> PathBuf {
    tb.memdump.dir.join("dump.elf")
}

/// `inspect`, `ps`, `uname` and `proc` (a file, a directory, a symlink) on one image.
fn introspection_outputs(image: &Path, all: bool) {
    let image = image.as_os_str();
    let snapshot = valid_json("inspect", &[OsStr::new("inspect"), image, OsStr::new("--json")]);
    let ps = valid_json("ps", &[OsStr::new("ps"), image, OsStr::new("--json")]);
    let pids = |v: &Value, key: &str| -> Vec<i64> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["pid"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(pids(&ps, "processes"), pids(&snapshot, "tasks"));
    if !all {
        return;
    }
    let uname = valid_json("uname", &[OsStr::new("uname"), image, OsStr::new("--json")]);
    assert_eq!(uname["release"], snapshot["kernel"]["release"]);
    assert_eq!(uname["nodename"], snapshot["uts"]["nodename"]);
    for (path, kind) in [
        ("/proc/1/stat", "file"),
        ("/proc", "dir"),
        ("1/exe", "symlink"),
        ("sys/kernel/osrelease", "file"),
    ] {
        let node = valid_json(
            "proc",
            &[OsStr::new("proc"), image, OsStr::new(path), OsStr::new("--json")],
        );
        assert_eq!(node["kind"], kind, "{path}: {node}");
    }
}

#[test]
fn introspection_outputs_of_the_test_bed_dump_match_their_schemas() {
    let Some(tb) = testbed("introspection_outputs_of_the_test_bed_dump_match_their_schemas") else {
        return;
    };
    introspection_outputs(&dump(&tb), true);
}

#[test]
fn introspection_outputs_of_the_xen_fixtures_match_their_schemas() {
    let Some(fx) = xen_fixtures("introspection_outputs_of_the_xen_fixtures_match_their_schemas") else {
        return;
    };
    introspection_outputs(&decompressed(&fx, "xen-pv-a/domU-A.save"), true);
    introspection_outputs(&decompressed(&fx, "xen-pv-a/domU-A.core"), false);
    introspection_outputs(&decompressed(&fx, "qemu-6.1-la57/dump.elf"), false);
}

#[test]
fn isf_output_matches_its_schema() {
    let Some(tb) = testbed("isf_output_matches_its_schema") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("linux/tb.json");
    let written = valid_json(
        "isf",
        &[
            OsStr::new("isf"),
            dump(&tb).as_os_str(),
            OsStr::new("-o"),
            out.as_os_str(),
            OsStr::new("--json"),
        ],
    );
    assert_eq!(written["bytes"].as_u64(), Some(std::fs::metadata(&out).unwrap().len()));
}

#[test]
fn disk_outputs_match_their_schema() {
    let Some(tb) = testbed("disk_outputs_match_their_schema") else {
        return;
    };
    for disk in [&tb.disks.guest.path, &tb.disks.guest_split.path] {
        let described = valid_json("disk", &[OsStr::new("disk"), disk.as_os_str(), OsStr::new("--json")]);
        assert!(described["root"].is_object(), "{described}");
    }
}

#[test]
fn check_output_matches_its_schema() {
    let Some(tb) = testbed("check_output_matches_its_schema") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("check.sqlite");
    let args = |extra: &[&OsStr]| -> Vec<std::ffi::OsString> {
        let base = [
            OsStr::new("check"),
            OsStr::new("--json"),
            OsStr::new("--db"),
            db.as_os_str(),
        ];
        base.iter().chain(extra).map(|a| a.to_os_string()).collect()
    };
    let one = valid_json(
        "check",
        &args(&[
            dump(&tb).as_os_str(),
            OsStr::new("--disk"),
            tb.disks.guest.path.as_os_str(),
        ]),
    );
    assert!(one["report"].is_object(), "{one}");
    // --since adds "changes"; --batch makes an array.
    let batch = dir.path().join("vms");
    std::fs::write(&batch, format!("--disk {} --name one\n", tb.disks.guest.path.display())).unwrap();
    let many = valid_json(
        "check",
        &args(&[OsStr::new("--since"), OsStr::new("--batch"), batch.as_os_str()]),
    );
    assert_eq!(many.as_array().map(Vec::len), Some(1), "{many}");
}

/// keygen, a real emulation writing a signed bundle, `bundle show` and `bundle verify` of
/// that bundle, and `cleanup`.
#[test]
fn keygen_emulate_bundle_and_cleanup_outputs_match_their_schemas() {
    let Some(tb) = testbed("keygen_emulate_bundle_and_cleanup_outputs_match_their_schemas") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).into_os_string();
    let key = valid_json(
        "keygen",
        &[OsStr::new("keygen"), OsStr::new("--out"), &p("k"), OsStr::new("--json")],
    );
    let state = p("state");
    let report = valid_json(
        "emulate",
        &[
            OsStr::new("emulate"),
            OsStr::new("--json"),
            OsStr::new("--state-dir"),
            &state,
            dump(&tb).as_os_str(),
            OsStr::new("--disk"),
            tb.disks.guest.path.as_os_str(),
            OsStr::new("--net"),
            OsStr::new("none"),
            OsStr::new("--out"),
            &p("b.dmb"),
            OsStr::new("--sign-key"),
            &p("k.key"),
            OsStr::new("--"),
            OsStr::new("sh"),
            OsStr::new("-c"),
            OsStr::new("echo schema > /etc/dormouse-schema-test"),
        ],
    );
    assert_eq!(report["exit_code"], 0, "{report}");
    assert!(report["bundle"].is_object(), "{report}");
    let show = valid_json(
        "bundle-show",
        &[
            OsStr::new("bundle"),
            OsStr::new("show"),
            OsStr::new("--json"),
            &p("b.dmb"),
        ],
    );
    assert_eq!(show["bundle_id"], report["bundle"]["bundle_id"]);
    let verified = valid_json(
        "bundle-verify",
        &[
            OsStr::new("bundle"),
            OsStr::new("verify"),
            OsStr::new("--json"),
            OsStr::new("--key"),
            &p("k.pub"),
            &p("b.dmb"),
        ],
    );
    assert_eq!(verified["key_id"], key["key_id"]);
    valid_json(
        "cleanup",
        &[
            OsStr::new("cleanup"),
            OsStr::new("--json"),
            OsStr::new("--state-dir"),
            &state,
        ],
    );
}

/// The documented examples of every schema (the only check of the Xen-only outputs here).
#[test]
fn every_schema_is_valid_and_its_examples_match_it() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(schema_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(name) = name.strip_suffix(".schema.json") {
            names.push(name.to_owned());
        }
    }
    names.sort();
    assert!(names.len() >= 17, "{names:?}");
    for name in &names {
        let schema = schema(name);
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{name}: not draft 2020-12"
        );
        // Meta-validation: the schema itself against the draft 2020-12 meta-schema.
        assert!(
            jsonschema::meta::is_valid(&schema),
            "{name}.schema.json is not a valid schema"
        );
        for example in schema["examples"].as_array().into_iter().flatten() {
            assert_valid(name, example);
        }
    }
    // The validator is strict: a missing field, an unknown one and a wrong type all fail.
    let validator = jsonschema::draft202012::new(&schema("uname")).unwrap();
    let uname = serde_json::json!({"schema": "dormouse.uname/1", "sysname": "Linux", "nodename": "a",
        "release": "r", "version": "v", "machine": "x86_64", "domainname": "(none)"});
    assert!(validator.is_valid(&uname));
    for (key, value) in [("release", Value::Null), ("extra", Value::Null), ("machine", 64.into())] {
        let mut broken = uname.clone();
        match value {
            Value::Null if key == "release" => drop(broken.as_object_mut().unwrap().remove(key)),
            value => broken[key] = value,
        }
        assert!(!validator.is_valid(&broken), "{broken}");
    }
    for name in ["isolate", "release", "restore", "pend", "deliver"] {
        assert!(
            schema(name)["examples"].as_array().is_some_and(|e| !e.is_empty()),
            "{name}: its output is validated by example here; document one"
        );
    }
}
