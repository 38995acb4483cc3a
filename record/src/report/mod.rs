//! Figures for researchers from one or more records (`dormouse report`): for each figure an
//! SVG, a PNG and the CSV of the numbers behind it.
//!
//! - `phases`: wall time per phase, one stacked bar per record.
//! - `upper`: the upper layer's bytes by top-level directory and category, one panel per
//!   record.
//! - `scripts`: intercepted maintainer scripts per package, stacked by script type.
//! - `online`: the guest agent's online step against the online update it replaces.
//!
//! The CSVs hold every row, also those a figure folds into `(other)` or leaves out to stay
//! readable; labels are shortened with an ellipsis in the figures only. A figure with nothing to
//! draw gets a header-only CSV and no SVG/PNG (`ReportSummary::csv_only`, reason in `skipped`).
//!
//! Layers: `tables` (records → rows, written by `csv`) → `figures` (rows → what to draw) →
//! `draw` (plotters), with `font` registering the text font that both backends measure with.

mod csv;
mod draw;
mod figures;
mod font;
mod tables;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::schema::Record;

pub use font::{DEFAULT_FONTS, FONT_ENV};

/// What `write_report` wrote (printed by `dormouse report --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportSummary {
    /// How many records the figures cover.
    pub records: usize,
    /// Figures written as SVG, PNG and CSV.
    pub figures: Vec<Figure>,
    /// Figures with nothing to draw: only their CSV (a header line) was written.
    pub csv_only: Vec<CsvOnly>,
    /// Why each `csv_only` figure was not drawn, `NAME: reason`.
    pub skipped: Vec<String>,
    /// What a drawn figure leaves out to stay readable (the CSV still has it).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Figure {
    pub name: String,
    pub svg: PathBuf,
    pub png: PathBuf,
    pub csv: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CsvOnly {
    pub name: String,
    pub csv: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(
        "no font for the figures' text: {FONT_ENV} is unset and none of {} exists; install fonts-dejavu-core or set {FONT_ENV} to a .ttf file",
        tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NoFont { tried: Vec<PathBuf> },
    #[error("reading the font {path}: {source}")]
    FontRead { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a TrueType/OpenType font (set {FONT_ENV} to a .ttf file)")]
    FontInvalid { path: PathBuf },
    #[error("creating the report directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("removing the stale figure {path}: {source}")]
    Remove { path: PathBuf, source: std::io::Error },
    #[error("drawing {path}: {message}")]
    Plot { path: PathBuf, message: String },
}

/// Writes the figures for `records` (each with the file it was read from, which names it in
/// the figures) into `out_dir`, created if needed. Existing files of the same names are
/// replaced.
pub fn write_report(records: &[(PathBuf, Record)], out_dir: &Path) -> Result<ReportSummary, ReportError> {
    std::fs::create_dir_all(out_dir).map_err(|source| ReportError::CreateDir {
        path: out_dir.to_owned(),
        source,
    })?;
    let labels = record_labels(records.iter().map(|(path, _)| path.as_path()));
    let labelled: Vec<tables::Labelled> = labels
        .iter()
        .zip(records)
        .map(|(label, (_, record))| tables::Labelled { label, record })
        .collect();
    let mut summary = ReportSummary {
        records: records.len(),
        figures: Vec::new(),
        csv_only: Vec::new(),
        skipped: Vec::new(),
        notes: Vec::new(),
    };

    let phases = tables::PhaseTable::new(&labelled);
    let csv_path = out_dir.join("phases.csv");
    csv::write(&csv_path, tables::PhaseTable::HEADER, phases.rows(&labelled))?;
    let figure = (!phases.is_empty()).then(|| figures::phases(&phases, &labelled));
    finish(
        &mut summary,
        out_dir,
        "phases",
        csv_path,
        figure,
        "no record has phase times",
    )?;

    let upper = tables::UpperTable::new(&labelled);
    let csv_path = out_dir.join("upper.csv");
    csv::write(&csv_path, tables::UpperTable::HEADER, upper.rows(&labelled))?;
    let figure = (!upper.is_empty()).then(|| figures::upper(&upper, &labelled));
    let reason = "no record has regular files or exclusions in its upper layer";
    finish(&mut summary, out_dir, "upper", csv_path, figure, reason)?;

    let scripts = tables::ScriptTable::new(&labelled);
    let csv_path = out_dir.join("scripts.csv");
    csv::write(&csv_path, tables::ScriptTable::HEADER, scripts.rows(&labelled))?;
    let figure = (!scripts.is_empty()).then(|| figures::scripts(&scripts, &labelled));
    let reason = "no record has intercepted maintainer scripts";
    finish(&mut summary, out_dir, "scripts", csv_path, figure, reason)?;

    let online = tables::OnlineTable::new(&labelled);
    let csv_path = out_dir.join("online.csv");
    csv::write(&csv_path, tables::OnlineTable::HEADER, online.rows(&labelled))?;
    let figure = (!online.is_empty()).then(|| figures::online(&online, &labelled));
    let reason = "no record carries online measurements (scripts/bench-agent adds them)";
    finish(&mut summary, out_dir, "online", csv_path, figure, reason)?;

    Ok(summary)
}

/// Draws `figure` (when there is one) beside its CSV and lists the outcome in `summary`.
fn finish(
    summary: &mut ReportSummary,
    out_dir: &Path,
    name: &str,
    csv: PathBuf,
    figure: Option<figures::Built>,
    reason_when_empty: &str,
) -> Result<(), ReportError> {
    let svg = out_dir.join(format!("{name}.svg"));
    let png = out_dir.join(format!("{name}.png"));
    let Some(built) = figure else {
        // A figure from an earlier report into the same directory would contradict the CSV.
        for stale in [&svg, &png] {
            match std::fs::remove_file(stale) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(ReportError::Remove {
                        path: stale.clone(),
                        source: e,
                    });
                }
                _ => {}
            }
        }
        summary.skipped.push(format!("{name}: {reason_when_empty}"));
        summary.csv_only.push(CsvOnly {
            name: name.to_owned(),
            csv,
        });
        return Ok(());
    };
    draw::render(&built.figure, &svg, &png)?;
    summary
        .notes
        .extend(built.notes.into_iter().map(|note| format!("{name}: {note}")));
    summary.figures.push(Figure {
        name: name.to_owned(),
        svg,
        png,
        csv,
    });
    Ok(())
}

/// Short names for the records: the file name without `.record.json`/`.json`, with `#2`,
/// `#3`, ... appended where names would repeat.
fn record_labels<'a>(paths: impl Iterator<Item = &'a Path>) -> Vec<String> {
    let mut taken = std::collections::HashSet::new();
    let mut labels = Vec::new();
    for path in paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = [".record.json", ".json"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|stem| !stem.is_empty()))
            .unwrap_or(&name);
        let stem = if stem.is_empty() { "record" } else { stem };
        let mut label = stem.to_owned();
        let mut n = 2;
        while !taken.insert(label.clone()) {
            label = format!("{stem}#{n}");
            n += 1;
        }
        labels.push(label);
    }
    labels
}

#[cfg(test)]
mod tests;
