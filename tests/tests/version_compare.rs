//! Version ordering agrees with the real tools on real versions: `dpkg --compare-versions`
//! and rpm's own `rpm.vercmp` over pairs of versions taken from the host's Debian indices.

// Tests and their helpers fail by panicking, with the message saying what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};

const PAIRS: usize = 12_000;

/// Versions of real packages, per package name, from every Packages index apt downloaded on
/// this host (`/var/lib/apt/lists`, compressed however apt keeps them: apt-helper reads them).
fn host_versions() -> BTreeMap<String, BTreeSet<String>> {
    let mut by_name: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in std::fs::read_dir("/var/lib/apt/lists").expect("/var/lib/apt/lists") {
        let path = entry.unwrap().path();
        if !path.file_name().unwrap().to_string_lossy().contains("_Packages") {
            continue;
        }
        let out = Command::new("/usr/lib/apt/apt-helper")
            .arg("cat-file")
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "apt-helper cat-file {}", path.display());
        let text = String::from_utf8_lossy(&out.stdout);
        for e in packages::apt::parse_packages(&text, &path.display().to_string()).unwrap() {
            by_name.entry(e.name).or_default().insert(e.version.to_string());
        }
    }
    let total: usize = by_name.values().map(BTreeSet::len).sum();
    assert!(
        total >= PAIRS,
        "only {total} versions in the host's apt lists; run `apt-get update` (Debian's main index has ~60,000)"
    );
    by_name
}

/// Real pairs that exercise the ordering: every two versions of one package (across
/// suites), neighbours in byte order (long shared prefixes: epochs, `~`, `+b1`, revisions),
/// and deterministic pseudo-random pairs.
fn pairs() -> Vec<(String, String)> {
    let by_name = host_versions();
    let mut out = Vec::new();
    for versions in by_name.values() {
        let v: Vec<&String> = versions.iter().collect();
        for w in v.windows(2) {
            out.push((w[0].clone(), w[1].clone()));
        }
    }
    let all: Vec<&String> = by_name
        .values()
        .flatten()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    for w in all.windows(2).step_by(7) {
        out.push((w[0].clone(), w[1].clone()));
    }
    // Equal under dpkg's rules though spelled differently: an explicit zero epoch.
    for v in all.iter().filter(|v| !v.contains(':')).step_by(50) {
        out.push(((*v).clone(), format!("0:{v}")));
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while out.len() < PAIRS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (a, b) = (
            all[(x % all.len() as u64) as usize],
            all[((x >> 32) % all.len() as u64) as usize],
        );
        out.push((a.clone(), b.clone()));
    }
    out
}

/// dpkg's answer for each pair, several shells in parallel (one dpkg per comparison).
fn dpkg_orderings(pairs: &[(String, String)]) -> Vec<Ordering> {
    let chunks: Vec<&[(String, String)]> = pairs.chunks(pairs.len().div_ceil(4)).collect();
    let children: Vec<_> = chunks
        .iter()
        .map(|chunk| {
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(
                    r#"while read -r a b; do
                         if dpkg --compare-versions "$a" lt "$b"; then echo lt;
                         elif dpkg --compare-versions "$a" gt "$b"; then echo gt; else echo eq; fi
                       done"#,
                )
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut input = String::new();
            for (a, b) in *chunk {
                input.push_str(&format!("{a} {b}\n"));
            }
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
            child
        })
        .collect();
    let mut out = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        out.extend(String::from_utf8(output.stdout).unwrap().lines().map(|l| match l {
            "lt" => Ordering::Less,
            "gt" => Ordering::Greater,
            _ => Ordering::Equal,
        }));
    }
    assert_eq!(out.len(), pairs.len(), "dpkg answered every pair");
    out
}

/// Every pair ordered as the tool ordered it; the failure lists the pairs that differ.
fn assert_agrees(tool: &str, pairs: &[(String, String)], expected: &[Ordering], ours: impl Fn(&str, &str) -> Ordering) {
    assert_eq!(expected.len(), pairs.len(), "{tool} answered every pair");
    let disagreements: Vec<String> = pairs
        .iter()
        .zip(expected)
        .filter_map(|((a, b), want)| {
            let got = ours(a, b);
            (got != *want).then(|| format!("{a} vs {b}: {tool} {want:?}, dormouse {got:?}"))
        })
        .collect();
    let kinds: BTreeSet<_> = expected.iter().collect();
    assert_eq!(kinds.len(), 3, "the pairs cover less, equal and greater");
    assert!(
        disagreements.is_empty(),
        "{} of {} pairs:\n{}",
        disagreements.len(),
        pairs.len(),
        disagreements.join("\n")
    );
}

#[test]
fn debian_ordering_agrees_with_dpkg_on_real_versions() {
    let pairs = pairs();
    let expected = dpkg_orderings(&pairs);
    assert_agrees("dpkg", &pairs, &expected, |a, b| {
        packages::debversion::compare(a, b).unwrap()
    });
}

/// rpm answers all pairs in one process: a Lua loop over a file of pairs.
#[test]
fn rpm_ordering_agrees_with_rpm_on_real_versions() {
    let mut pairs = pairs();
    // rpm's own separators: `^` (post-release snapshots) on top of Debian's `~`.
    let extra: Vec<(String, String)> = pairs
        .iter()
        .take(2_000)
        .map(|(a, b)| (a.replacen('+', "^", 1), b.replacen('.', "^", 1)))
        .collect();
    pairs.extend(extra);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pairs");
    let text: String = pairs.iter().map(|(a, b)| format!("{a}\t{b}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let lua = format!(
        r#"%{{lua: for line in io.lines("{}") do local a, b = line:match("^(.-)\t(.*)$"); io.write(rpm.vercmp(a, b), "\n") end}}"#,
        file.display()
    );
    let out = Command::new("rpm")
        .arg("--eval")
        .arg(lua)
        .output()
        .expect("run rpm (Debian package rpm, in scripts/lib.sh HOST_PACKAGES)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answers: Vec<Ordering> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.trim().parse::<i32>().unwrap().cmp(&0))
        .collect();
    assert_agrees("rpm", &pairs, &answers, packages::rpmversion::compare_evr);
}
