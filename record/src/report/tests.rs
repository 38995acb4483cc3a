use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;
use crate::schema::{
    Category, ExcludedRef, Exec, Inputs, Kernel, Online, Options, Outcome, PhaseTime, Repository, SCHEMA, Upper,
    UpperEntry,
};
use emulator::trace::{Manager, ScriptType};

fn script_type_named(name: &str) -> ScriptType {
    [
        ScriptType::Preinst,
        ScriptType::Postinst,
        ScriptType::Prerm,
        ScriptType::Postrm,
    ]
    .into_iter()
    .find(|t| t.name() == name)
    .unwrap_or(ScriptType::Other)
}

/// A record with the given phases, execs `(package, script_type, triggered)` and upper entries
/// `(path, kind, size, category)`; everything else empty.
fn record(phases: &[(&str, f64)], execs: &[(&str, &str, bool)], entries: &[(&str, &str, u64, Category)]) -> Record {
    Record {
        schema: SCHEMA.to_owned(),
        dormouse_version: "0.1.0".to_owned(),
        created_unix: 0,
        run_id: "run".to_owned(),
        inputs: Inputs {
            image: None,
            disks: Vec::new(),
            profile_files: Vec::new(),
            snapshot: "synthesized".to_owned(),
            kernel: Kernel {
                release: "9.9.9-test".to_owned(),
                banner: None,
            },
        },
        options: Options {
            command: vec!["apt-get".to_owned(), "-y".to_owned(), "upgrade".to_owned()],
            env: Vec::new(),
            net: "host".to_owned(),
            allow: Vec::new(),
            trace: "seccomp".to_owned(),
            memory: "none".to_owned(),
            pids: "none".to_owned(),
            timeout: "none".to_owned(),
            scratch_size: "4G".to_owned(),
            binds: Vec::new(),
            durable: false,
            release: None,
            system_map: None,
            kernel: None,
            isf: None,
        },
        outcome: Outcome {
            exit_code: Some(0),
            timed_out: false,
            interrupted: false,
            execs_allowed: 0,
            execs_refused: 0,
            unames_answered: 0,
            tracer_stops: 0,
            interception_seconds: 0.0,
            processes: 0,
        },
        phases: phases
            .iter()
            .map(|(name, seconds)| PhaseTime {
                name: (*name).to_owned(),
                seconds: *seconds,
            })
            .collect(),
        execs: execs
            .iter()
            .enumerate()
            .map(|(seq, (package, script_type, triggered))| {
                let script_type = script_type_named(script_type);
                Exec {
                    seq: seq as u64,
                    manager: Manager::Dpkg,
                    phase: script_type.phase(),
                    script_type,
                    package: (*package).to_owned(),
                    arch: None,
                    triggered: *triggered,
                    rpm_tag: None,
                    path: format!("/var/lib/dpkg/info/{package}.{}", script_type.name()),
                    argv: Vec::new(),
                    env: Vec::new(),
                    bytes: Vec::new(),
                    sha256: String::new(),
                }
            })
            .collect(),
        upper: Upper {
            entries: entries
                .iter()
                .map(|(path, kind, size, category)| UpperEntry {
                    path: (*path).to_owned(),
                    kind: (*kind).to_owned(),
                    mode: 0o100644,
                    uid: 0,
                    gid: 0,
                    size: *size,
                    sha256: None,
                    target: None,
                    category: *category,
                })
                .collect(),
            removals: Vec::new(),
            opaque_dirs: Vec::new(),
            excluded: Vec::new(),
        },
        repository: Repository {
            sources: Vec::new(),
            indices: Vec::new(),
        },
        bundle: None,
        online: None,
    }
}

fn excluded(path: &str, entries: u64, bytes: u64) -> ExcludedRef {
    ExcludedRef {
        path: path.to_owned(),
        pattern: format!("{path}/**"),
        removal: false,
        entries,
        bytes,
    }
}

fn online(update_seconds: f64, step_seconds: f64) -> Option<Online> {
    Some(Online {
        update_seconds,
        step_seconds,
        measured_by: "test".to_owned(),
    })
}

/// A CSV file as RFC 4180 reads it: the header, then the rows.
fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).expect("csv readable");
    let mut lines: Vec<Vec<String>> = Vec::new();
    let (mut line, mut field) = (Vec::new(), String::new());
    let (mut quoted, mut chars) = (false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => line.push(std::mem::take(&mut field)),
            (false, '\n') => {
                line.push(std::mem::take(&mut field));
                lines.push(std::mem::take(&mut line));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(
        line.is_empty() && field.is_empty() && !quoted,
        "{} does not end in a line end",
        path.display()
    );
    let header = lines.remove(0);
    for row in &lines {
        assert_eq!(row.len(), header.len(), "{}: {row:?}", path.display());
    }
    (header, lines)
}

fn strings(fields: &[&str]) -> Vec<String> {
    fields.iter().map(|f| (*f).to_owned()).collect()
}

fn report(records: Vec<(&str, Record)>) -> (tempfile::TempDir, ReportSummary) {
    let dir = tempfile::tempdir().expect("tempdir");
    let records: Vec<(PathBuf, Record)> = records.into_iter().map(|(p, r)| (PathBuf::from(p), r)).collect();
    let out = dir.path().join("figures");
    let summary = write_report(&records, &out).expect("report written");
    (dir, summary)
}

fn csv_of(summary: &ReportSummary, name: &str) -> PathBuf {
    summary
        .figures
        .iter()
        .find(|f| f.name == name)
        .map(|f| f.csv.clone())
        .or_else(|| summary.csv_only.iter().find(|c| c.name == name).map(|c| c.csv.clone()))
        .unwrap_or_else(|| panic!("{name} not in the summary: {summary:?}"))
}

fn file(path: &str, size: u64, category: Category) -> (&str, &'static str, u64, Category) {
    (path, "file", size, category)
}

#[test]
fn phases_csv_has_each_records_phases_in_first_seen_order() {
    let first = record(&[("snapshot", 1.5), ("command", 20.25), ("teardown", 0.5)], &[], &[]);
    // A phase twice is summed; a name with a comma survives the quoting.
    let second = record(
        &[
            ("snapshot", 2.0),
            ("sandbox setup, part 1", 0.125),
            ("command", 3.0),
            ("command", 4.0),
        ],
        &[],
        &[],
    );
    let (_dir, summary) = report(vec![("a/first.record.json", first), ("second.json", second)]);
    let (header, rows) = read_csv(&csv_of(&summary, "phases"));
    assert_eq!(header, strings(&["record", "phase", "seconds"]));
    let expected = [
        ["first", "snapshot", "1.5"],
        ["first", "command", "20.25"],
        ["first", "teardown", "0.5"],
        ["second", "snapshot", "2"],
        ["second", "command", "7"],
        ["second", "sandbox setup, part 1", "0.125"],
    ];
    assert_eq!(rows, expected.iter().map(|r| strings(r)).collect::<Vec<_>>());
}

#[test]
fn upper_csv_sums_regular_files_by_directory_and_category() {
    let mut first = record(
        &[("command", 1.0)],
        &[],
        &[
            file("/usr/lib/x86_64-linux-gnu/libc.so.6", 100, Category::Payload),
            file("/usr/lib/os-release", 50, Category::Payload),
            file("/usr/lib/x86_64-linux-gnu/ld.so.cache", 7, Category::Generated),
            ("/usr/lib/x86_64-linux-gnu", "dir", 4096, Category::Payload),
            ("/usr/lib/libfoo.so", "symlink", 11, Category::Payload),
            ("/usr/lib/libbar.so", "hardlink", 100, Category::Payload),
            file("/etc/passwd", 10, Category::Generated),
            file("/etc/apt/sources.list", 3, Category::Generated),
            file("/vmlinuz", 9, Category::Payload),
            file("/var/lib/dpkg/status", 30, Category::PackageDb),
            file("/var/lib/dpkg/info/libc6.list", 20, Category::PackageDb),
            file("/var/log/apt/history.log", 5, Category::Log),
        ],
    );
    first.upper.excluded = vec![
        excluded("/var/cache/apt/archives", 3, 1000),
        excluded("/var/lib/apt/lists", 2, 64),
    ];
    let second = record(&[], &[], &[file("/usr/lib/a,b", 1, Category::Cache)]);
    let (_dir, summary) = report(vec![("first.json", first), ("second.json", second)]);
    let (header, rows) = read_csv(&csv_of(&summary, "upper"));
    assert_eq!(header, strings(&["record", "directory", "category", "files", "bytes"]));
    let expected = [
        ["first", "/", "payload", "1", "9"],
        ["first", "/etc", "generated", "1", "10"],
        ["first", "/etc/apt", "generated", "1", "3"],
        ["first", "/usr/lib", "payload", "2", "150"],
        ["first", "/usr/lib", "generated", "1", "7"],
        ["first", "/var/cache", "excluded", "3", "1000"],
        ["first", "/var/lib", "package_db", "2", "50"],
        ["first", "/var/lib", "excluded", "2", "64"],
        ["first", "/var/log", "log", "1", "5"],
        ["second", "/usr/lib", "cache", "1", "1"],
    ];
    assert_eq!(rows, expected.iter().map(|r| strings(r)).collect::<Vec<_>>());
    let figure = summary.figures.iter().find(|f| f.name == "upper").expect("drawn");
    let svg = std::fs::read_to_string(&figure.svg).expect("svg readable");
    for panel in ["first — kernel 9.9.9-test — apt-get -y upgrade", "second — kernel"] {
        assert!(svg.contains(panel), "a panel per record: {panel}");
    }
}

/// Bytes per directory and category computed another way (`Path`, a plain loop) than the
/// report does, over a large record, which must also plot quickly.
#[test]
fn upper_of_a_large_record_matches_independent_sums() {
    let categories = Category::ALL;
    let tops = ["usr/lib", "usr/share", "etc", "var/lib", "opt/vendor", "boot"];
    let paths: Vec<String> = (0..100_000)
        .map(|i| format!("/{}/pkg{}/file{i}", tops[i % tops.len()], i % 997))
        .collect();
    let entries: Vec<(&str, &str, u64, Category)> = paths
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let kind = if i % 10 == 0 { "symlink" } else { "file" };
            (
                path.as_str(),
                kind,
                (i as u64 * 7919) % 100_000,
                categories[i % categories.len()],
            )
        })
        .collect();
    let big = record(&[("command", 1.0)], &[], &entries);

    let mut expected: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for entry in big.upper.entries.iter().filter(|e| e.kind == "file") {
        let parent = Path::new(&entry.path).parent().expect("has a parent");
        let top: PathBuf = parent.components().take(3).collect();
        let sum = expected
            .entry((top.display().to_string(), entry.category.name().to_owned()))
            .or_default();
        sum.0 += 1;
        sum.1 += entry.size;
    }

    let started = std::time::Instant::now();
    let (_dir, summary) = report(vec![("big.record.json", big)]);
    let elapsed = started.elapsed();
    let (_, rows) = read_csv(&csv_of(&summary, "upper"));
    let found: BTreeMap<(String, String), (u64, u64)> = rows
        .iter()
        .map(|r| {
            let number = |s: &str| s.parse::<u64>().expect("a number");
            ((r[1].clone(), r[2].clone()), (number(&r[3]), number(&r[4])))
        })
        .collect();
    assert_eq!(found, expected);
    assert!(elapsed.as_secs() < 60, "report of 100k entries took {elapsed:?}");
}

#[test]
fn scripts_csv_counts_per_package_and_kind() {
    let mut first = record(
        &[],
        &[
            ("libc6", "preinst", false),
            ("libc6", "postinst", false),
            ("man-db", "postinst", true),
            ("man-db", "postinst", true),
            ("man-db", "postinst", false),
            ("odd \"name\", really", "prerm", false),
        ],
        &[],
    );
    // rpm's other scriptlets are named by their tag.
    first.execs[1].manager = Manager::Rpm;
    first.execs[1].script_type = ScriptType::Other;
    first.execs[1].rpm_tag = Some("%pretrans".to_owned());
    let second = record(&[], &[("libc6", "preinst", false)], &[]);
    let (_dir, summary) = report(vec![("first.json", first), ("second.json", second)]);
    let (header, rows) = read_csv(&csv_of(&summary, "scripts"));
    assert_eq!(
        header,
        strings(&["record", "package", "script_type", "triggered", "count"])
    );
    let expected = [
        ["first", "libc6", "%pretrans", "false", "1"],
        ["first", "libc6", "preinst", "false", "1"],
        ["first", "man-db", "postinst", "false", "1"],
        ["first", "man-db", "postinst", "true", "2"],
        ["first", "odd \"name\", really", "prerm", "false", "1"],
        ["second", "libc6", "preinst", "false", "1"],
    ];
    assert_eq!(rows, expected.iter().map(|r| strings(r)).collect::<Vec<_>>());
    let svg = std::fs::read_to_string(&summary.figures.iter().find(|f| f.name == "scripts").expect("drawn").svg)
        .expect("svg readable");
    assert!(svg.contains("postinst (triggered)"), "legend names triggered postinsts");
}

#[test]
fn many_packages_fold_into_other_in_the_figure_but_not_the_csv() {
    let names: Vec<String> = (0..45)
        .map(|i| format!("package-with-a-rather-long-name-number-{i:02}"))
        .collect();
    let execs: Vec<(&str, &str, bool)> = names.iter().map(|n| (n.as_str(), "postinst", false)).collect();
    let (_dir, summary) = report(vec![("many.json", record(&[], &execs, &[]))]);
    let (_, rows) = read_csv(&csv_of(&summary, "scripts"));
    assert_eq!(rows.len(), 45);
    assert!(rows.iter().any(|r| r[1] == names[44]), "full names in the CSV");
    assert!(
        summary
            .notes
            .iter()
            .any(|n| n.starts_with("scripts:") && n.contains("(other)"))
    );
    let figure = summary.figures.iter().find(|f| f.name == "scripts").expect("drawn");
    let svg = std::fs::read_to_string(&figure.svg).expect("svg readable");
    assert!(svg.contains("(other): 15 packages"), "folded row drawn");
    assert!(!svg.contains(&names[0]), "long names are shortened in the figure");
    assert!(svg.contains('…'));
}

#[test]
fn online_is_skipped_without_measurements() {
    let (_dir, summary) = report(vec![("plain.json", record(&[("command", 1.0)], &[], &[]))]);
    assert!(summary.figures.iter().all(|f| f.name != "online"));
    let online = "online: no record carries online measurements (scripts/bench-agent adds them)";
    assert!(summary.skipped.iter().any(|s| s == online), "{:?}", summary.skipped);
    let csv = csv_of(&summary, "online");
    assert_eq!(
        std::fs::read_to_string(&csv).expect("csv"),
        "record,update_seconds,step_seconds,ratio\n"
    );
    assert!(!csv.with_extension("svg").exists() && !csv.with_extension("png").exists());
}

#[test]
fn a_skipped_figure_removes_its_stale_images() {
    let mut measured = record(&[("command", 1.0)], &[], &[]);
    measured.online = online(10.0, 1.0);
    let dir = tempfile::tempdir().expect("tempdir");
    let first = write_report(&[(PathBuf::from("m.json"), measured)], dir.path()).expect("first report");
    let drawn = first.figures.iter().find(|f| f.name == "online").expect("drawn");
    assert!(drawn.svg.exists() && drawn.png.exists());
    let unmeasured = record(&[("command", 1.0)], &[], &[]);
    let second = write_report(&[(PathBuf::from("u.json"), unmeasured)], dir.path()).expect("second report");
    assert!(second.figures.iter().all(|f| f.name != "online"));
    assert!(!drawn.svg.exists() && !drawn.png.exists());
}

#[test]
fn online_ratio_is_step_over_update() {
    let mut fast = record(&[("command", 1.0)], &[], &[]);
    fast.online = online(120.0, 7.5);
    let mut slow = record(&[("command", 1.0)], &[], &[]);
    slow.online = online(33.3, 9.1);
    let mut instant = record(&[("command", 1.0)], &[], &[]);
    instant.online = online(0.0, 1.0);
    let unmeasured = record(&[("command", 1.0)], &[], &[]);
    let (_dir, summary) = report(vec![
        ("fast.json", fast),
        ("unmeasured.json", unmeasured),
        ("slow.json", slow),
        ("instant.json", instant),
    ]);
    assert!(
        !summary.skipped.iter().any(|s| s.starts_with("online")),
        "{:?}",
        summary.skipped
    );
    assert!(summary.figures.iter().any(|f| f.name == "online"));
    let (header, rows) = read_csv(&csv_of(&summary, "online"));
    assert_eq!(header, strings(&["record", "update_seconds", "step_seconds", "ratio"]));
    let labels: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(labels, ["fast", "slow", "instant"]);
    for row in &rows[..2] {
        let number = |s: &str| s.parse::<f64>().expect("a number");
        assert_eq!(number(&row[3]), number(&row[2]) / number(&row[1]), "{row:?}");
    }
    assert_eq!(rows[0][3], "0.0625");
    assert_eq!(rows[2][3], "", "no ratio for an update of 0 s");
    assert!(summary.notes.iter().any(|n| n.starts_with("online:")));
}

#[test]
fn every_listed_figure_is_a_nonempty_svg_and_png() {
    let mut full = record(
        &[("snapshot", 1.0), ("command", 30.0), ("pack", 2.0)],
        &[("libc6", "postinst", false), ("man-db", "postinst", true)],
        &[file("/usr/lib/libc.so.6", 2 << 20, Category::Payload)],
    );
    full.online = online(60.0, 3.0);
    let (dir, summary) = report(vec![("full.record.json", full)]);
    let names: Vec<&str> = summary.figures.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["phases", "upper", "scripts", "online"]);
    assert!(summary.csv_only.is_empty() && summary.skipped.is_empty() && summary.notes.is_empty());
    assert_eq!(summary.records, 1);
    for figure in &summary.figures {
        assert!(figure.svg.starts_with(dir.path()) && figure.csv.exists());
        let svg = std::fs::read_to_string(&figure.svg).expect("svg readable");
        assert!(
            svg.contains("<svg") && svg.contains("<text") && svg.contains("<rect"),
            "{}",
            figure.name
        );
        let png = std::fs::read(&figure.png).expect("png readable");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{}", figure.name);
        assert!(png.len() > 5_000, "{}: {} bytes", figure.name, png.len());
    }
    let svg = std::fs::read_to_string(&summary.figures[0].svg).expect("svg");
    assert!(
        svg.contains("full") && svg.contains("command"),
        "record and phase named"
    );
    let json = serde_json::to_value(&summary).expect("serializes");
    assert_eq!(json["figures"][0]["name"], "phases");
}

#[test]
fn no_records_write_header_only_csvs() {
    let (_dir, summary) = report(Vec::new());
    assert_eq!(summary.records, 0);
    assert!(summary.figures.is_empty());
    let names: Vec<&str> = summary.csv_only.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["phases", "upper", "scripts", "online"]);
    assert_eq!(summary.skipped.len(), 4);
    for csv in &summary.csv_only {
        let (_, rows) = read_csv(&csv.csv);
        assert!(rows.is_empty());
    }
}

#[test]
fn labels_are_file_stems_made_unique() {
    let paths = [
        "a/run.record.json",
        "b/run.record.json",
        "run.json",
        "run#2.json",
        "plain",
        "dir/.json",
        "weird.txt",
    ];
    let labels = record_labels(paths.iter().map(Path::new));
    assert_eq!(
        labels,
        ["run", "run#2", "run#3", "run#2#2", "plain", ".json", "weird.txt"]
    );

    let (_dir, summary) = report(vec![
        ("x/run.record.json", record(&[("command", 1.0)], &[], &[])),
        ("y/run.record.json", record(&[("command", 2.0)], &[], &[])),
    ]);
    let (_, rows) = read_csv(&csv_of(&summary, "phases"));
    let labels: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(labels, ["run", "run#2"]);
}

#[test]
fn unwritable_output_names_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"").expect("write");
    let out = blocker.join("figures");
    let err = write_report(&[], &out).expect_err("a file is in the way");
    assert!(matches!(err, ReportError::CreateDir { .. }), "{err}");
    assert!(err.to_string().contains(&out.display().to_string()), "{err}");
}
