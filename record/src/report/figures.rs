//! From the tables to what each figure draws: ranking, folding into `(other)`, shortening
//! labels, so that a figure stays readable whatever the records hold.

use std::collections::BTreeMap;

use super::draw::{Drawing, Online, OnlinePoint, PALETTE, Panel, Row, Stacked, Unit, colour, ellipsize};
use super::tables::{
    EXCLUDED, Labelled, OnlineTable, PhaseTable, SHARES, ScriptKind, ScriptTable, Tally, UpperTable, share_name,
};

/// A figure to draw and what it leaves out (for `ReportSummary::notes`).
pub(super) struct Built {
    pub figure: Drawing,
    pub notes: Vec<String>,
}

const RECORD_LABEL_CHARS: usize = 28;
const PACKAGE_LABEL_CHARS: usize = 32;
const CAPTION_CHARS: usize = 110;
/// Bars (records) in `phases`, panels (records) in `upper`: beyond these the PNG would grow
/// past what a viewer shows usefully.
const PHASE_BARS: usize = 200;
const UPPER_PANELS: usize = 12;
const UPPER_DIRECTORIES: usize = 12;
const SCRIPT_PACKAGES: usize = 30;
const OTHER: &str = "(other)";

pub(super) fn phases(table: &PhaseTable, records: &[Labelled]) -> Built {
    let rows = records
        .iter()
        .zip(&table.seconds)
        .take(PHASE_BARS)
        .map(|(labelled, seconds)| Row {
            label: ellipsize(labelled.label, RECORD_LABEL_CHARS),
            values: seconds.iter().map(|s| s.unwrap_or(0.0).max(0.0)).collect(),
        })
        .collect();
    let series = table
        .names
        .iter()
        .enumerate()
        .map(|(i, name)| (name.clone(), colour(i)))
        .collect();
    Built {
        figure: Drawing::Stacked(Stacked {
            title: "Wall time per phase".to_owned(),
            unit: Unit::Seconds,
            series,
            panels: vec![Panel { caption: None, rows }],
        }),
        notes: first_records_note(PHASE_BARS, records.len()).into_iter().collect(),
    }
}

pub(super) fn upper(table: &UpperTable, records: &[Labelled]) -> Built {
    let mut directory_bytes: BTreeMap<&str, u64> = BTreeMap::new();
    for directories in &table.directories {
        for (directory, shares) in directories {
            *directory_bytes.entry(directory).or_default() += shares.iter().flatten().map(|t| t.bytes).sum::<u64>();
        }
    }
    let directories = directory_bytes.len();
    // The same directories in the same order (largest over all records first) in every panel.
    let shown = largest(directory_bytes, UPPER_DIRECTORIES);
    let mut notes: Vec<String> = first_records_note(UPPER_PANELS, records.len()).into_iter().collect();
    if directories > shown.len() {
        notes.push(format!(
            "directories beyond the {UPPER_DIRECTORIES} largest are summed as {OTHER}"
        ));
    }

    let panels = records
        .iter()
        .zip(&table.directories)
        .take(UPPER_PANELS)
        .map(|(labelled, by_directory)| {
            let mut shown_sums: BTreeMap<&str, DirectorySum> =
                shown.iter().map(|d| (*d, DirectorySum::default())).collect();
            let mut other: Option<DirectorySum> = None;
            for (directory, shares) in by_directory {
                let sum = match shown_sums.get_mut(directory.as_str()) {
                    Some(sum) => sum,
                    None => other.get_or_insert_with(DirectorySum::default),
                };
                sum.add(shares);
            }
            let mut rows: Vec<Row> = shown
                .iter()
                .filter_map(|directory| shown_sums.get(directory).map(|sum| sum.row(directory)))
                .collect();
            rows.extend(other.map(|sum| sum.row(OTHER)));
            let record = labelled.record;
            let caption = format!(
                "{} — kernel {} — {}",
                labelled.label,
                record.inputs.kernel.release,
                record.options.command.join(" ")
            );
            Panel {
                caption: Some(ellipsize(&caption, CAPTION_CHARS)),
                rows,
            }
        })
        .collect();
    let series = (0..SHARES)
        .map(|share| {
            // Grey for what capture left out, apart from the categories' colours.
            let colour = if share == EXCLUDED { PALETTE[7] } else { colour(share) };
            (share_name(share).to_owned(), colour)
        })
        .collect();
    Built {
        figure: Drawing::Stacked(Stacked {
            title: "Upper layer by directory and category (regular files; excluded: left out by capture)".to_owned(),
            unit: Unit::Bytes,
            series,
            panels,
        }),
        notes,
    }
}

/// One panel row: a directory's bytes per share and its regular files.
#[derive(Default)]
struct DirectorySum {
    bytes: [f64; SHARES],
    files: u64,
}

impl DirectorySum {
    fn add(&mut self, shares: &[Option<Tally>; SHARES]) {
        for (share, tally) in shares.iter().enumerate() {
            if let Some(tally) = tally {
                self.bytes[share] += tally.bytes as f64;
                // Excluded entries are not all regular files; the label counts files.
                if share != EXCLUDED {
                    self.files += tally.files;
                }
            }
        }
    }

    fn row(&self, directory: &str) -> Row {
        let plural = if self.files == 1 { "" } else { "s" };
        Row {
            label: format!("{directory} ({} file{plural})", self.files),
            values: self.bytes.to_vec(),
        }
    }
}

pub(super) fn scripts(table: &ScriptTable, records: &[Labelled]) -> Built {
    let mut by_package: BTreeMap<&str, BTreeMap<&ScriptKind, u64>> = BTreeMap::new();
    for counts in &table.counts {
        for ((package, kind), count) in counts {
            *by_package.entry(package).or_default().entry(kind).or_default() += count;
        }
    }
    let mut kinds: Vec<&ScriptKind> = by_package.values().flat_map(|k| k.keys().copied()).collect();
    kinds.sort_by(|a, b| a.legend_order().cmp(&b.legend_order()));
    kinds.dedup();
    let package_totals = by_package
        .iter()
        .map(|(package, kinds)| (*package, kinds.values().sum::<u64>()));
    let shown = largest(package_totals.collect(), SCRIPT_PACKAGES);

    let values = |counts: &BTreeMap<&ScriptKind, u64>| -> Vec<f64> {
        kinds
            .iter()
            .map(|kind| counts.get(kind).copied().unwrap_or(0) as f64)
            .collect()
    };
    let mut rows: Vec<Row> = shown
        .iter()
        .filter_map(|package| by_package.get(package).map(|counts| (package, counts)))
        .map(|(package, counts)| Row {
            label: ellipsize(package, PACKAGE_LABEL_CHARS),
            values: values(counts),
        })
        .collect();
    let mut notes = Vec::new();
    if by_package.len() > shown.len() {
        let mut other: BTreeMap<&ScriptKind, u64> = BTreeMap::new();
        for (_, counts) in by_package.iter().filter(|(package, _)| !shown.contains(package)) {
            for (kind, count) in counts {
                *other.entry(kind).or_default() += count;
            }
        }
        rows.push(Row {
            label: format!("{OTHER}: {} packages", by_package.len() - shown.len()),
            values: values(&other),
        });
        notes.push(format!(
            "packages beyond the {SCRIPT_PACKAGES} with most scripts are summed as {OTHER}"
        ));
    }
    let scripts: u64 = table.counts.iter().flat_map(|c| c.values()).sum();
    let over = if records.len() > 1 {
        format!(" over {} records", records.len())
    } else {
        String::new()
    };
    let series = kinds
        .iter()
        .enumerate()
        .map(|(i, kind)| (kind.label(), colour(i)))
        .collect();
    Built {
        figure: Drawing::Stacked(Stacked {
            title: format!("Intercepted maintainer scripts by package ({scripts} scripts{over})"),
            unit: Unit::Count,
            series,
            panels: vec![Panel { caption: None, rows }],
        }),
        notes,
    }
}

pub(super) fn online(table: &OnlineTable, records: &[Labelled]) -> Built {
    let points: Vec<OnlinePoint> = table
        .measured
        .iter()
        .map(|m| OnlinePoint {
            label: records[m.record].label.to_owned(),
            update_seconds: m.update_seconds,
            step_seconds: m.step_seconds,
            ratio: m.ratio(),
        })
        .collect();
    let mut ratios: Vec<f64> = points.iter().filter_map(|p| p.ratio).collect();
    ratios.sort_by(f64::total_cmp);
    let median = match ratios.len() {
        0 => None,
        n if n % 2 == 1 => Some(ratios[n / 2]),
        n => Some((ratios[n / 2 - 1] + ratios[n / 2]) / 2.0),
    };
    let median = median.map_or(String::new(), |m| format!(", median step/update {:.1} %", m * 100.0));
    let mut notes = Vec::new();
    let unmeasurable = points.len() - ratios.len();
    if unmeasurable > 0 {
        notes.push(format!(
            "{unmeasurable} record(s) with an update of 0 seconds have no ratio and are only in the scatter"
        ));
    }
    Built {
        figure: Drawing::Online(Online {
            title: format!(
                "Online step against the online update it replaces ({} records{median})",
                points.len()
            ),
            points,
        }),
        notes,
    }
}

/// The `n` keys with the largest values, largest first (ties by key, for the same figure every
/// time).
fn largest(values: BTreeMap<&str, u64>, n: usize) -> Vec<&str> {
    let mut ranked: Vec<(&str, u64)> = values.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    ranked.into_iter().take(n).map(|(key, _)| key).collect()
}

fn first_records_note(shown: usize, records: usize) -> Option<String> {
    (records > shown).then(|| format!("shows the first {shown} of {records} records"))
}
