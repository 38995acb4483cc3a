//! The Debian archive moves (a new kernel ABI, a point release, a security update) and the test
//! bed is built from it, so nothing in the code, the scripts or the tests may name a Debian
//! kernel release or package version: the test bed's values come from its record
//! (`testbed.json`) or its guest tree, the fixtures' from the fixtures themselves
//! (`dormouse_tests::FixtureKernel`). The one place such literals may appear is a unit test
//! (`#[cfg(test)]` in a crate's `src/`), which feeds synthetic input to a pure function and
//! never reads the test bed.

// Tests and their helpers fail by panicking, with the message saying what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use dormouse_tests::workspace_root;
use regex::Regex;

/// `6.1.0-57-amd64` and the like: Debian's kernel flavours.
const KERNEL_RELEASE: &str = r"\b\d+\.\d+\.\d+-\d+-(?:amd64|arm64|686|686-pae|cloud-amd64|cloud-arm64|rt-amd64|rt-arm64|rt-686-pae|armmp|armmp-lpae|powerpc64le|s390x|loong64|riscv64|mips64r2el|octeon|marvell|rpi)\b";
/// A stable update's or a backport's version (`5.4.1-1+deb12u2`, `1.2~bpo12+1`), or the
/// kernel's build version as its banner shows it (`Debian 6.1.192-3`).
const PACKAGE_VERSION: &str = r"[+~]deb\d+u\d+|~bpo\d+|\bDebian \d+\.\d+\.\d+-\d+\b";

fn patterns() -> [Regex; 2] {
    [
        Regex::new(KERNEL_RELEASE).unwrap(),
        Regex::new(PACKAGE_VERSION).unwrap(),
    ]
}

/// What the guard reads: code and scripts, not prose (README examples show real output).
fn scanned(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if matches!(ext, "rs" | "py" | "sh" | "c" | "toml" | "service" | "json") {
        return !path.ends_with("Cargo.lock");
    }
    // Extension-less scripts.
    let in_scripts = path
        .components()
        .any(|c| matches!(c.as_os_str().to_str(), Some("scripts" | ".ci")));
    in_scripts && ext.is_empty()
}

fn walk(dir: &Path, skip: &[PathBuf], out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        let generated = matches!(name.as_ref(), ".git" | "target" | "corpus" | "artifacts" | "coverage");
        if generated || skip.contains(&path) {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            walk(&path, skip, out);
        } else if meta.is_file() && scanned(&path) {
            out.push(path);
        }
    }
}

/// The literals of one file that name the archive's moving values, as "line: text".
fn violations(path: &Path, text: &str, patterns: &[Regex]) -> Vec<String> {
    let in_src = path.components().any(|c| c.as_os_str() == "src");
    let is_rust = path.extension().is_some_and(|e| e == "rs");
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        // By the workspace's convention the unit tests close a src/ file.
        if in_src && is_rust && line.trim() == "#[cfg(test)]" {
            break;
        }
        // Comments may show an example; only what runs must not depend on the archive's day.
        let comment = if is_rust { "//" } else { "#" };
        if line.trim_start().starts_with(comment) {
            continue;
        }
        for re in patterns {
            if let Some(m) = re.find(line) {
                out.push(format!(
                    "{}:{}: {:?} in {}",
                    path.display(),
                    n + 1,
                    m.as_str(),
                    line.trim()
                ));
            }
        }
    }
    out
}

#[test]
fn nothing_outside_unit_tests_names_a_debian_kernel_release_or_package_version() {
    let root = workspace_root();
    let mut files = Vec::new();
    // A target directory inside the workspace under another name holds generated code.
    let skip: Vec<PathBuf> = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    walk(&root, &skip, &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("scripts/make-fixtures")) && files.len() > 100,
        "the guard reads too little: {} files",
        files.len()
    );
    let patterns = patterns();
    let found: Vec<String> = files
        .iter()
        .filter(|f| !f.ends_with("tests/tests/archive_literals.rs"))
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            violations(f.strip_prefix(&root).unwrap_or(f), &text, &patterns)
        })
        .collect();
    assert!(
        found.is_empty(),
        "these name a value of Debian's moving archive; read it from the test bed's record \
         (dormouse_tests::Testbed::kernel, scenarios) or from the fixtures (FixtureKernel) instead:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_guard_catches_what_broke_the_suite_before() {
    let patterns = patterns();
    // Built at run time, so this file holds no literal of its own.
    let release = format!("{}.{}.{}-{}-{}", 6, 1, 0, 57, "amd64");
    let version = format!("{}+deb{}u{}", "5.4.1-1", 12, 2);
    let banner = format!("#1 SMP PREEMPT_DYNAMIC Debian {}.{}.{}-{}", 6, 1, 192, 3);
    let test = format!(
        "fn t() {{\n    assert_eq!(uname, \"{release}\");\n    let v = \"{version}\";\n    let b = \"{banner}\";\n}}\n"
    );
    let found = violations(Path::new("tests/cli/x.rs"), &test, &patterns);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[0].starts_with("tests/cli/x.rs:2: "), "{found:?}");
    let script = format!("emulate --release {release}\n");
    assert_eq!(violations(Path::new("scripts/demo"), &script, &patterns).len(), 1);
    // A unit test at the end of a src/ file may use synthetic values; code before it may not.
    let unit =
        format!("const R: &str = \"{release}\";\n#[cfg(test)]\nmod tests {{ const R: &str = \"{release}\"; }}\n");
    assert_eq!(
        violations(Path::new("emulator/src/synth.rs"), &unit, &patterns).len(),
        1
    );
    // Comments may give examples.
    assert!(violations(Path::new("src/x.rs"), &format!("/// e.g. `{release}`"), &patterns).is_empty());
    assert!(
        violations(
            Path::new("scripts/x"),
            &format!("  # Depends: linux-image-{release}"),
            &patterns
        )
        .is_empty()
    );
    // Synthetic releases that are no Debian flavour pass.
    assert!(violations(Path::new("tests/cli/x.rs"), "\"6.1.0-fuzz\" \"6.1.0-test\"", &patterns).is_empty());
}
