//! Two records side by side (`dormouse diff`): the same update on two kernels or two guests,
//! or one emulation and its replay. Scripts are matched by what they are (package, type,
//! arguments), files by path; order matters only to the replay comparison (`compare`).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::schema::{Exec, Record, UpperEntry};

#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    pub a: Summary,
    pub b: Summary,
    /// Inputs and options that differ (`field`, A's value, B's value).
    pub settings: Vec<FieldDiff>,
    /// Every phase either record has, in A's order then B's new ones.
    pub phases: Vec<PhaseRow>,
    pub scripts: ScriptsDiff,
    pub files: FilesDiff,
    pub removals: SetDiff,
    pub indices: FilesDiff,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub label: String,
    pub run_id: String,
    pub kernel_release: String,
    pub command: Vec<String>,
    pub exit_code: Option<i32>,
    pub scripts: usize,
    pub files: usize,
    pub file_bytes: u64,
    pub removals: usize,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldDiff {
    pub field: String,
    pub a: String,
    pub b: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseRow {
    pub name: String,
    pub a_seconds: Option<f64>,
    pub b_seconds: Option<f64>,
}

/// Scripts as a multiset of [`ScriptKey`]s.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScriptsDiff {
    pub common: usize,
    pub only_a: Vec<ScriptKey>,
    pub only_b: Vec<ScriptKey>,
}

/// What makes two intercepted scripts the same script: who ran it, which one, with which
/// arguments, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ScriptKey {
    pub package: String,
    pub script_type: String,
    pub triggered: bool,
    /// argv without argv[0] (the interpreter or the script's path).
    pub args: Vec<String>,
    pub sha256: String,
}

impl ScriptKey {
    pub fn of(e: &Exec) -> ScriptKey {
        ScriptKey {
            package: e.package.clone(),
            script_type: e.script_type.name().to_owned(),
            triggered: e.triggered,
            args: e.argv.iter().skip(1).cloned().collect(),
            sha256: e.sha256.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FilesDiff {
    pub same: usize,
    pub only_a: Vec<FileSide>,
    pub only_b: Vec<FileSide>,
    pub changed: Vec<FileChange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileSide {
    pub path: String,
    pub kind: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileChange {
    pub path: String,
    /// What differs: `kind`, `mode`, `owner`, `size`, `content`, `target`.
    pub fields: Vec<String>,
    pub a_size: u64,
    pub b_size: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SetDiff {
    pub common: usize,
    pub only_a: Vec<String>,
    pub only_b: Vec<String>,
}

pub fn diff(a: &Record, a_label: &str, b: &Record, b_label: &str) -> Diff {
    Diff {
        a: summary(a, a_label),
        b: summary(b, b_label),
        settings: settings(a, b),
        phases: phases(a, b),
        scripts: scripts(&a.execs, &b.execs),
        files: files(&a.upper.entries, &b.upper.entries, |_| false),
        removals: set_diff(&a.upper.removals, &b.upper.removals),
        indices: files(&indices_as_entries(a), &indices_as_entries(b), |_| false),
    }
}

fn summary(r: &Record, label: &str) -> Summary {
    let files = r.upper.entries.iter().filter(|e| e.kind == "file");
    Summary {
        label: label.to_owned(),
        run_id: r.run_id.clone(),
        kernel_release: r.inputs.kernel.release.clone(),
        command: r.options.command.clone(),
        exit_code: r.outcome.exit_code,
        scripts: r.execs.len(),
        files: files.clone().count(),
        file_bytes: files.map(|e| e.size).sum(),
        removals: r.upper.removals.len(),
        seconds: r.phases.iter().map(|p| p.seconds).sum(),
    }
}

/// The inputs and options, flattened to `field = value` pairs, where they differ.
pub fn settings(a: &Record, b: &Record) -> Vec<FieldDiff> {
    let (fa, fb) = (setting_fields(a), setting_fields(b));
    let keys: BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (va, vb) = (
                fa.get(k).cloned().unwrap_or_default(),
                fb.get(k).cloned().unwrap_or_default(),
            );
            (va != vb).then(|| FieldDiff {
                field: k.clone(),
                a: va,
                b: vb,
            })
        })
        .collect()
}

fn setting_fields(r: &Record) -> BTreeMap<String, String> {
    let mut f = BTreeMap::new();
    let i = &r.inputs;
    if let Some(image) = &i.image {
        f.insert("inputs.image.sha256".into(), image.sha256.clone());
    }
    for (n, d) in i.disks.iter().enumerate() {
        f.insert(format!("inputs.disks[{n}].sha256"), d.file.sha256.clone());
    }
    for p in &i.profile_files {
        f.insert(format!("inputs.profile_files[{}].sha256", p.path), p.sha256.clone());
    }
    f.insert("inputs.snapshot".into(), i.snapshot.clone());
    f.insert("inputs.kernel.release".into(), i.kernel.release.clone());
    f.insert(
        "inputs.kernel.banner".into(),
        i.kernel.banner.clone().unwrap_or_default(),
    );
    let o = &r.options;
    f.insert("options.command".into(), o.command.join(" "));
    f.insert("options.env".into(), o.env.join(" "));
    f.insert("options.net".into(), o.net.clone());
    f.insert("options.allow".into(), o.allow.join(" "));
    f.insert("options.trace".into(), o.trace.clone());
    f.insert("options.binds".into(), o.binds.join(" "));
    f.insert("options.durable".into(), o.durable.to_string());
    f.insert("dormouse_version".into(), r.dormouse_version.clone());
    for s in &r.repository.sources {
        f.insert(format!("repository.sources[{}].sha256", s.path), s.sha256.clone());
    }
    f
}

fn phases(a: &Record, b: &Record) -> Vec<PhaseRow> {
    let mut names: Vec<&str> = Vec::new();
    for p in a.phases.iter().chain(&b.phases) {
        if !names.contains(&p.name.as_str()) {
            names.push(&p.name);
        }
    }
    let sum = |r: &Record, name: &str| {
        let mut times = r.phases.iter().filter(|p| p.name == name).map(|p| p.seconds).peekable();
        times.peek().is_some().then(|| times.sum())
    };
    names
        .into_iter()
        .map(|name| PhaseRow {
            name: name.to_owned(),
            a_seconds: sum(a, name),
            b_seconds: sum(b, name),
        })
        .collect()
}

/// Scripts of A and B as multisets.
pub fn scripts(a: &[Exec], b: &[Exec]) -> ScriptsDiff {
    let mut counts: BTreeMap<ScriptKey, i64> = BTreeMap::new();
    for e in a {
        *counts.entry(ScriptKey::of(e)).or_default() += 1;
    }
    for e in b {
        *counts.entry(ScriptKey::of(e)).or_default() -= 1;
    }
    let mut d = ScriptsDiff::default();
    for (key, n) in counts {
        for _ in 0..n.max(0) {
            d.only_a.push(key.clone());
        }
        for _ in 0..(-n).max(0) {
            d.only_b.push(key.clone());
        }
    }
    d.common = a.len() - d.only_a.len();
    d
}

/// Entries of A and B by path; `ignore_content(path)` compares only kind, mode and owner.
pub fn files(a: &[UpperEntry], b: &[UpperEntry], ignore_content: impl Fn(&str) -> bool) -> FilesDiff {
    let by_path = |entries: &[UpperEntry]| -> BTreeMap<String, UpperEntry> {
        entries.iter().map(|e| (e.path.clone(), e.clone())).collect()
    };
    let (ma, mb) = (by_path(a), by_path(b));
    let side = |e: &UpperEntry| FileSide {
        path: e.path.clone(),
        kind: e.kind.clone(),
        size: e.size,
    };
    let mut d = FilesDiff::default();
    for (path, ea) in &ma {
        let Some(eb) = mb.get(path) else {
            d.only_a.push(side(ea));
            continue;
        };
        let mut fields = Vec::new();
        if ea.kind != eb.kind {
            fields.push("kind");
        }
        if ea.mode != eb.mode {
            fields.push("mode");
        }
        if (ea.uid, ea.gid) != (eb.uid, eb.gid) {
            fields.push("owner");
        }
        if !ignore_content(path) {
            if ea.size != eb.size {
                fields.push("size");
            }
            if ea.sha256 != eb.sha256 {
                fields.push("content");
            }
            if ea.target != eb.target {
                fields.push("target");
            }
        }
        if fields.is_empty() {
            d.same += 1;
        } else {
            d.changed.push(FileChange {
                path: path.clone(),
                fields: fields.into_iter().map(String::from).collect(),
                a_size: ea.size,
                b_size: eb.size,
            });
        }
    }
    d.only_b = mb
        .iter()
        .filter(|(p, _)| !ma.contains_key(*p))
        .map(|(_, e)| side(e))
        .collect();
    d
}

pub fn set_diff(a: &[String], b: &[String]) -> SetDiff {
    let (sa, sb): (BTreeSet<&String>, BTreeSet<&String>) = (a.iter().collect(), b.iter().collect());
    SetDiff {
        common: sa.intersection(&sb).count(),
        only_a: sa.difference(&sb).map(|s| (*s).clone()).collect(),
        only_b: sb.difference(&sa).map(|s| (*s).clone()).collect(),
    }
}

/// The repository's index files as file entries, so that they compare like the upper tree.
pub(crate) fn indices_as_entries(r: &Record) -> Vec<UpperEntry> {
    r.repository
        .indices
        .iter()
        .map(|i| UpperEntry {
            path: i.file.path.clone(),
            kind: "file".into(),
            mode: 0,
            uid: 0,
            gid: 0,
            size: i.file.bytes,
            sha256: Some(i.file.sha256.clone()),
            target: None,
            category: crate::schema::Category::Cache,
        })
        .collect()
}

impl FilesDiff {
    pub fn is_empty(&self) -> bool {
        self.only_a.is_empty() && self.only_b.is_empty() && self.changed.is_empty()
    }
}

impl ScriptsDiff {
    pub fn is_empty(&self) -> bool {
        self.only_a.is_empty() && self.only_b.is_empty()
    }
}

impl SetDiff {
    pub fn is_empty(&self) -> bool {
        self.only_a.is_empty() && self.only_b.is_empty()
    }
}
