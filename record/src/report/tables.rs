//! The numbers behind each figure, aggregated from the records once (a record may list 100k
//! upper entries; figures and CSVs only ever see these tables).

use std::collections::{BTreeMap, HashMap};

use crate::schema::{Category, Exec, Record};

/// A record with the short name the figures and CSVs call it by.
pub(super) struct Labelled<'a> {
    pub label: &'a str,
    pub record: &'a Record,
}

/// Seconds per record and phase.
pub(super) struct PhaseTable {
    /// Phase names in the order first seen over the records.
    pub names: Vec<String>,
    /// `[record][phase]`, summed when a record names a phase twice; `None` where a record has
    /// no such phase.
    pub seconds: Vec<Vec<Option<f64>>>,
}

impl PhaseTable {
    pub const HEADER: [&'static str; 3] = ["record", "phase", "seconds"];

    pub fn new(records: &[Labelled]) -> Self {
        let mut names: Vec<String> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for labelled in records {
            for phase in &labelled.record.phases {
                index.entry(&phase.name).or_insert_with(|| {
                    names.push(phase.name.clone());
                    names.len() - 1
                });
            }
        }
        let seconds = records
            .iter()
            .map(|labelled| {
                let mut row = vec![None; names.len()];
                for phase in &labelled.record.phases {
                    let slot: &mut Option<f64> = &mut row[index[phase.name.as_str()]];
                    *slot = Some(slot.unwrap_or(0.0) + phase.seconds);
                }
                row
            })
            .collect();
        PhaseTable { names, seconds }
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Per record, its phases in the table's order.
    pub fn rows<'a>(&'a self, records: &'a [Labelled]) -> impl Iterator<Item = [String; 3]> + 'a {
        records.iter().zip(&self.seconds).flat_map(move |(labelled, row)| {
            self.names.iter().zip(row).filter_map(move |(name, seconds)| {
                seconds.map(|s| [labelled.label.to_owned(), name.clone(), s.to_string()])
            })
        })
    }
}

/// The upper layer's categories, then `excluded` for what capture left out.
pub(super) const SHARES: usize = Category::ALL.len() + 1;
pub(super) const EXCLUDED: usize = Category::ALL.len();

pub(super) fn share_name(share: usize) -> &'static str {
    Category::ALL.get(share).map_or("excluded", |c| c.name())
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Tally {
    /// Regular files; for `excluded`, the entries capture left out.
    pub files: u64,
    pub bytes: u64,
}

/// Per record: directory → share → tally (`None` where nothing fell into it).
pub(super) struct UpperTable {
    pub directories: Vec<BTreeMap<String, [Option<Tally>; SHARES]>>,
}

impl UpperTable {
    pub const HEADER: [&'static str; 5] = ["record", "directory", "category", "files", "bytes"];

    pub fn new(records: &[Labelled]) -> Self {
        let directories = records
            .iter()
            .map(|labelled| {
                let upper = &labelled.record.upper;
                let mut by_directory: BTreeMap<String, [Option<Tally>; SHARES]> = BTreeMap::new();
                let mut add = |path: &str, share: usize, files: u64, bytes: u64| {
                    let slot = &mut by_directory.entry(top_directory(path)).or_default()[share];
                    let tally = slot.get_or_insert_with(Tally::default);
                    tally.files += files;
                    tally.bytes += bytes;
                };
                for entry in upper.entries.iter().filter(|e| e.kind == "file") {
                    add(&entry.path, entry.category as usize, 1, entry.size);
                }
                for excluded in &upper.excluded {
                    add(&excluded.path, EXCLUDED, excluded.entries, excluded.bytes);
                }
                by_directory
            })
            .collect();
        UpperTable { directories }
    }

    pub fn is_empty(&self) -> bool {
        self.directories.iter().all(BTreeMap::is_empty)
    }

    /// Per record, directories by name, shares in `SHARES` order.
    pub fn rows<'a>(&'a self, records: &'a [Labelled]) -> impl Iterator<Item = [String; 5]> + 'a {
        records
            .iter()
            .zip(&self.directories)
            .flat_map(|(labelled, directories)| {
                directories.iter().flat_map(move |(directory, shares)| {
                    shares.iter().enumerate().filter_map(move |(share, tally)| {
                        tally.map(|t| {
                            [
                                labelled.label.to_owned(),
                                directory.clone(),
                                share_name(share).to_owned(),
                                t.files.to_string(),
                                t.bytes.to_string(),
                            ]
                        })
                    })
                })
            })
    }
}

/// The first two components of the directory holding `path` (`/usr/lib/x/libc.so` →
/// `/usr/lib`, `/etc/passwd` → `/etc`, `/vmlinuz` → `/`).
pub(super) fn top_directory(path: &str) -> String {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let parent = &components[..components.len().saturating_sub(1)];
    format!("/{}", parent[..parent.len().min(2)].join("/"))
}

/// A script's role as the figures and CSVs name it: the script type, or rpm's tag for its
/// other scriptlets (`%pretrans`), and whether dpkg ran it for a trigger.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct ScriptKind {
    pub script_type: String,
    pub triggered: bool,
}

impl ScriptKind {
    fn of(exec: &Exec) -> Self {
        let script_type = match (exec.script_type.name(), &exec.rpm_tag) {
            ("other", Some(tag)) => tag.clone(),
            (script_type, _) => script_type.to_owned(),
        };
        ScriptKind {
            script_type,
            triggered: exec.triggered,
        }
    }

    /// `postinst (triggered)`; rpm's trigger scriptlets already say so in their tag.
    pub fn label(&self) -> String {
        if self.triggered && !self.script_type.contains("trigger") {
            format!("{} (triggered)", self.script_type)
        } else {
            self.script_type.clone()
        }
    }

    /// Legend order: dpkg's four in the order they run in an upgrade's life, the rest by name.
    pub fn legend_order(&self) -> (usize, &str, bool) {
        const KNOWN: [&str; 4] = ["preinst", "postinst", "prerm", "postrm"];
        let known = KNOWN.iter().position(|k| *k == self.script_type).unwrap_or(KNOWN.len());
        (known, &self.script_type, self.triggered)
    }
}

/// Per record: (package, kind) → scripts.
pub(super) struct ScriptTable {
    pub counts: Vec<BTreeMap<(String, ScriptKind), u64>>,
}

impl ScriptTable {
    pub const HEADER: [&'static str; 5] = ["record", "package", "script_type", "triggered", "count"];

    pub fn new(records: &[Labelled]) -> Self {
        let counts = records
            .iter()
            .map(|labelled| {
                let mut counts = BTreeMap::new();
                for exec in &labelled.record.execs {
                    *counts.entry((exec.package.clone(), ScriptKind::of(exec))).or_insert(0) += 1;
                }
                counts
            })
            .collect();
        ScriptTable { counts }
    }

    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(BTreeMap::is_empty)
    }

    pub fn rows<'a>(&'a self, records: &'a [Labelled]) -> impl Iterator<Item = [String; 5]> + 'a {
        records.iter().zip(&self.counts).flat_map(|(labelled, counts)| {
            counts.iter().map(|((package, kind), count)| {
                [
                    labelled.label.to_owned(),
                    package.clone(),
                    kind.script_type.clone(),
                    kind.triggered.to_string(),
                    count.to_string(),
                ]
            })
        })
    }
}

pub(super) struct Measured {
    /// Index into the records.
    pub record: usize,
    pub update_seconds: f64,
    pub step_seconds: f64,
}

impl Measured {
    /// `step / update`; `None` for an update measured as taking no time.
    pub fn ratio(&self) -> Option<f64> {
        (self.update_seconds > 0.0).then(|| self.step_seconds / self.update_seconds)
    }
}

/// The records that carry online measurements.
pub(super) struct OnlineTable {
    pub measured: Vec<Measured>,
}

impl OnlineTable {
    pub const HEADER: [&'static str; 4] = ["record", "update_seconds", "step_seconds", "ratio"];

    pub fn new(records: &[Labelled]) -> Self {
        let measured = records
            .iter()
            .enumerate()
            .filter_map(|(record, labelled)| {
                labelled.record.online.as_ref().map(|online| Measured {
                    record,
                    update_seconds: online.update_seconds,
                    step_seconds: online.step_seconds,
                })
            })
            .collect();
        OnlineTable { measured }
    }

    pub fn is_empty(&self) -> bool {
        self.measured.is_empty()
    }

    /// The ratio is empty where the update took no measurable time.
    pub fn rows<'a>(&'a self, records: &'a [Labelled]) -> impl Iterator<Item = [String; 4]> + 'a {
        self.measured.iter().map(|m| {
            [
                records[m.record].label.to_owned(),
                m.update_seconds.to_string(),
                m.step_seconds.to_string(),
                m.ratio().map(|r| r.to_string()).unwrap_or_default(),
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_directories() {
        assert_eq!(top_directory("/usr/lib/x86_64-linux-gnu/libc.so.6"), "/usr/lib");
        assert_eq!(top_directory("/usr/lib/os-release"), "/usr/lib");
        assert_eq!(top_directory("/etc/passwd"), "/etc");
        assert_eq!(top_directory("/etc/apt/sources.list"), "/etc/apt");
        assert_eq!(top_directory("/vmlinuz"), "/");
        assert_eq!(top_directory("relative/dir/file"), "/relative/dir");
        assert_eq!(top_directory("//var//lib/dpkg/status"), "/var/lib");
    }

    #[test]
    fn shares_follow_the_categories() {
        for (i, category) in Category::ALL.iter().enumerate() {
            assert_eq!(*category as usize, i);
            assert_eq!(share_name(i), category.name());
        }
        assert_eq!(share_name(EXCLUDED), "excluded");
    }
}
