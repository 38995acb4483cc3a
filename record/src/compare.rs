//! The replay comparison: did running the same inputs again do the same thing? Execs must
//! match in order, the upper tree by path, mode, owner and content, removals as sets. What
//! is inherently variable between two runs is normalised by the rules in [`NORMALISED`], and
//! the comparison lists every path a rule excused.

use serde::Serialize;

use crate::diff::{FieldDiff, FilesDiff, SetDiff, files, indices_as_entries, set_diff};
use crate::schema::{Exec, Inputs, Record};

/// A path pattern (`emulator::capture::glob_match`) whose content may differ between two
/// runs of the same inputs, with the reason. Kind, mode and owner are still compared.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Normalisation {
    pub pattern: &'static str,
    pub reason: &'static str,
}

pub const NORMALISED: &[Normalisation] = &[Normalisation {
    pattern: "/var/log/**",
    reason: "dpkg, apt and update-alternatives stamp every log line with the wall-clock time of the run",
}];

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub identical: bool,
    /// Exit status, kernel and other outcome fields that differ.
    pub outcome: Vec<FieldDiff>,
    pub execs: ExecsComparison,
    pub files: FilesDiff,
    pub removals: SetDiff,
    pub opaque_dirs: SetDiff,
    /// The package manager's index files after the run (a moved mirror shows here first).
    pub indices: FilesDiff,
    /// The normalisation rules and the paths each excused in this comparison.
    pub normalised: Vec<NormalisedUse>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExecsComparison {
    pub recorded: usize,
    pub replayed: usize,
    /// Position by position, the first [`MAX_LISTED`] that differ.
    pub differences: Vec<ExecDifference>,
}

/// Differences listed in full per kind; counts stay exact.
pub const MAX_LISTED: usize = 100;

#[derive(Debug, Clone, Serialize)]
pub struct ExecDifference {
    pub index: usize,
    pub recorded: Option<String>,
    pub replayed: Option<String>,
    /// `package`, `script_type`, `triggered`, `argv`, `env`, `path`, `script` (its bytes),
    /// or `missing` when one side has no exec at this position.
    pub fields: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NormalisedUse {
    pub pattern: &'static str,
    pub reason: &'static str,
    pub paths: Vec<String>,
}

/// Compares a replay with the record it replays.
pub fn compare(recorded: &Record, replayed: &Record) -> Comparison {
    let normalised_rule = |path: &str| {
        NORMALISED
            .iter()
            .find(|n| emulator::capture::glob_match(n.pattern, path))
    };
    let strict = files(&recorded.upper.entries, &replayed.upper.entries, |_| false);
    let mut normalised: Vec<NormalisedUse> = NORMALISED
        .iter()
        .map(|n| NormalisedUse {
            pattern: n.pattern,
            reason: n.reason,
            paths: Vec::new(),
        })
        .collect();
    for change in &strict.changed {
        if let Some(rule) = normalised_rule(&change.path)
            && let Some(use_) = normalised.iter_mut().find(|u| u.pattern == rule.pattern)
        {
            use_.paths.push(change.path.clone());
        }
    }
    let files = files(&recorded.upper.entries, &replayed.upper.entries, |p| {
        normalised_rule(p).is_some()
    });
    let execs = execs(&recorded.execs, &replayed.execs);
    let outcome = outcome(recorded, replayed);
    let removals = set_diff(&recorded.upper.removals, &replayed.upper.removals);
    let opaque_dirs = set_diff(&recorded.upper.opaque_dirs, &replayed.upper.opaque_dirs);
    let indices = crate::diff::files(&indices_as_entries(recorded), &indices_as_entries(replayed), |_| false);
    let identical = outcome.is_empty()
        && execs.differences.is_empty()
        && files.is_empty()
        && removals.is_empty()
        && opaque_dirs.is_empty()
        && indices.is_empty();
    Comparison {
        identical,
        outcome,
        execs,
        files: limit_files(files),
        removals,
        opaque_dirs,
        indices: limit_files(indices),
        normalised,
    }
}

fn limit_files(mut d: FilesDiff) -> FilesDiff {
    d.only_a.truncate(MAX_LISTED);
    d.only_b.truncate(MAX_LISTED);
    d.changed.truncate(MAX_LISTED);
    d
}

fn outcome(a: &Record, b: &Record) -> Vec<FieldDiff> {
    let fields = |r: &Record| {
        [
            ("outcome.exit_code", format!("{:?}", r.outcome.exit_code)),
            ("outcome.timed_out", r.outcome.timed_out.to_string()),
            ("outcome.interrupted", r.outcome.interrupted.to_string()),
            ("outcome.execs_refused", r.outcome.execs_refused.to_string()),
            ("inputs.kernel.release", r.inputs.kernel.release.clone()),
            (
                "inputs.kernel.banner",
                r.inputs.kernel.banner.clone().unwrap_or_default(),
            ),
        ]
    };
    fields(a)
        .into_iter()
        .zip(fields(b))
        .filter(|((_, va), (_, vb))| va != vb)
        .map(|((field, va), (_, vb))| FieldDiff {
            field: field.into(),
            a: va,
            b: vb,
        })
        .collect()
}

fn execs(recorded: &[Exec], replayed: &[Exec]) -> ExecsComparison {
    let label = |e: &Exec| {
        format!(
            "{} {} {}",
            e.package,
            e.script_type.name(),
            e.argv.iter().skip(1).cloned().collect::<Vec<_>>().join(" ")
        )
    };
    let mut differences = Vec::new();
    for index in 0..recorded.len().max(replayed.len()) {
        let (a, b) = (recorded.get(index), replayed.get(index));
        let fields: Vec<&str> = match (a, b) {
            (Some(a), Some(b)) => [
                ("package", a.package != b.package),
                ("script_type", a.script_type != b.script_type),
                ("triggered", a.triggered != b.triggered),
                ("argv", a.argv != b.argv),
                ("env", a.env != b.env),
                ("path", a.path != b.path),
                ("script", a.sha256 != b.sha256),
            ]
            .into_iter()
            .filter_map(|(name, differs)| differs.then_some(name))
            .collect(),
            _ => vec!["missing"],
        };
        if !fields.is_empty() && differences.len() < MAX_LISTED {
            differences.push(ExecDifference {
                index,
                recorded: a.map(label),
                replayed: b.map(label),
                fields: fields.into_iter().map(String::from).collect(),
            });
        }
    }
    ExecsComparison {
        recorded: recorded.len(),
        replayed: replayed.len(),
        differences,
    }
}

/// Inputs of a replay whose hashes are not the record's: the replay would answer a different
/// question. Profile files are matched by position, disks by position.
pub fn input_drift(recorded: &Inputs, now: &Inputs) -> Vec<FieldDiff> {
    let mut drift = Vec::new();
    let mut check = |field: String, a: Option<&str>, b: Option<&str>| {
        if a != b {
            drift.push(FieldDiff {
                field,
                a: a.unwrap_or("(none)").to_owned(),
                b: b.unwrap_or("(none)").to_owned(),
            });
        }
    };
    check(
        "image".into(),
        recorded.image.as_ref().map(|i| i.sha256.as_str()),
        now.image.as_ref().map(|i| i.sha256.as_str()),
    );
    for n in 0..recorded.disks.len().max(now.disks.len()) {
        let (a, b) = (recorded.disks.get(n), now.disks.get(n));
        let name = a.or(b).map(|d| d.spec.clone()).unwrap_or_default();
        check(
            format!("disk {n} ({name})"),
            a.map(|d| d.file.sha256.as_str()),
            b.map(|d| d.file.sha256.as_str()),
        );
    }
    for n in 0..recorded.profile_files.len().max(now.profile_files.len()) {
        let (a, b) = (recorded.profile_files.get(n), now.profile_files.get(n));
        let name = a.or(b).map(|d| d.path.clone()).unwrap_or_default();
        check(
            format!("profile file {n} ({name})"),
            a.map(|d| d.sha256.as_str()),
            b.map(|d| d.sha256.as_str()),
        );
    }
    drift
}
