//! `dormouse replay`, `dormouse diff` and `dormouse report`: emulation records for researchers.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::emulate::{Drift, RecordWanted, parse_emulate_args, run_emulation};
use crate::output::Stdout;

#[derive(Args)]
pub(crate) struct ReplayArgs {
    /// The emulation record (`emulate --record FILE`, or B.record.json beside a bundle).
    record: PathBuf,
    /// The memory image to replay on, instead of the path the record names.
    #[arg(long, value_name = "IMAGE")]
    image: Option<PathBuf>,
    /// The guest disks to replay on (all of them, in the record's order), instead of the
    /// record's. Repeat for several disks.
    #[arg(long = "disk", value_name = "DISK[:PART]")]
    disks: Vec<String>,
    /// Run even when an input's SHA-256 is not the record's, and show what that changed.
    #[arg(long)]
    allow_drift: bool,
    /// Write the replay's own record to FILE.
    #[arg(long, value_name = "FILE")]
    save_record: Option<PathBuf>,
    /// dormouse's state directory (as for emulate).
    #[arg(long, env = "DORMOUSE_STATE", default_value = emulator::run::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Print the comparison as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct DiffArgs {
    /// The first record (A).
    a: PathBuf,
    /// The second record (B).
    b: PathBuf,
    /// Files and scripts listed per side in the text output (all with --json).
    #[arg(long, default_value_t = 20)]
    limit: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct ReportArgs {
    /// Emulation records (one figure shows them side by side; the online figure needs
    /// records that carry `online` measurements, as scripts/bench-agent writes them).
    #[arg(required = true)]
    records: Vec<PathBuf>,
    /// Where the figures (SVG and PNG) and their CSV files go.
    #[arg(short, long, value_name = "DIR")]
    out: PathBuf,
    #[arg(long)]
    json: bool,
}

/// `dormouse replay`: 0 when the replay did what the record says, `exit::REPLAY_DIFFERS`
/// when it did not.
pub(crate) fn replay(args: ReplayArgs) -> Result<u8> {
    let recorded = record::Record::read(&args.record)?;
    let argv = replay_argv(&recorded, &args);
    let emulate_args = parse_emulate_args(&argv).with_context(|| {
        format!(
            "{}: its options are not `dormouse emulate` options of this version",
            args.record.display()
        )
    })?;
    let want = RecordWanted {
        expected: Some(&recorded.inputs),
        allow_drift: args.allow_drift,
    };
    let emulated = match run_emulation(&emulate_args, Some(want)) {
        Ok(emulated) => emulated,
        Err(e) if e.is::<Drift>() => {
            return Err(e.context(format!("not replaying {}", args.record.display())));
        }
        Err(e) => return Err(e),
    };
    let replayed = emulated.record.with_context(|| {
        format!(
            "the replay of {} ended before its changes could be recorded (exit status {})",
            args.record.display(),
            emulated.code
        )
    })?;
    if let Some(path) = &args.save_record {
        replayed
            .write(path)
            .with_context(|| format!("writing the replay's record {}", path.display()))?;
    }
    let comparison = record::compare::compare(&recorded, &replayed);
    let mut out = Stdout::lock();
    if args.json {
        let json = serde_json::json!({
            "record": args.record,
            "replay_record": args.save_record,
            "identical": comparison.identical,
            "drift": emulated.drift,
            "comparison": comparison,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
    } else {
        print_comparison(&mut out, &args, &emulated.drift, &comparison)?;
    }
    Ok(if comparison.identical {
        crate::exit::SUCCESS
    } else {
        crate::exit::REPLAY_DIFFERS
    })
}

/// The `dormouse emulate` command line the record describes, with the inputs replaced as asked.
fn replay_argv(r: &record::Record, args: &ReplayArgs) -> Vec<String> {
    let o = &r.options;
    let mut argv = vec!["dormouse emulate".to_owned()];
    let image = args
        .image
        .as_ref()
        .map(|p| p.display().to_string())
        .or_else(|| r.inputs.image.as_ref().map(|i| i.path.clone()));
    argv.extend(image);
    let disks: Vec<String> = if args.disks.is_empty() {
        r.inputs.disks.iter().map(|d| d.spec.clone()).collect()
    } else {
        args.disks.clone()
    };
    let mut flag = |name: &str, values: &[String]| {
        for v in values {
            argv.push(format!("--{name}"));
            argv.push(v.clone());
        }
    };
    flag("disk", &disks);
    flag("net", std::slice::from_ref(&o.net));
    flag("allow", &o.allow);
    flag("trace", std::slice::from_ref(&o.trace));
    flag("memory", std::slice::from_ref(&o.memory));
    flag("pids", std::slice::from_ref(&o.pids));
    flag("timeout", std::slice::from_ref(&o.timeout));
    flag("scratch-size", std::slice::from_ref(&o.scratch_size));
    flag("bind", &o.binds);
    flag("env", &o.env);
    for (name, value) in [
        ("release", &o.release),
        ("system-map", &o.system_map),
        ("kernel", &o.kernel),
        ("isf", &o.isf),
    ] {
        flag(name, value.as_slice());
    }
    flag("state-dir", &[args.state_dir.display().to_string()]);
    if o.durable {
        argv.push("--durable".into());
    }
    if args.json {
        // The guest command's output then goes to standard error, away from the JSON.
        argv.push("--json".into());
    }
    argv.push("--".into());
    argv.extend(o.command.iter().cloned());
    argv
}

fn print_comparison(
    out: &mut impl Write,
    args: &ReplayArgs,
    drift: &[record::diff::FieldDiff],
    c: &record::compare::Comparison,
) -> Result<()> {
    writeln!(
        out,
        "{}: the replay {}",
        args.record.display(),
        if c.identical { "did the same" } else { "differs" }
    )?;
    for d in drift {
        writeln!(out, "  input drift (--allow-drift): {}: {} -> {}", d.field, d.a, d.b)?;
    }
    for d in &c.outcome {
        writeln!(out, "  {}: {} -> {}", d.field, d.a, d.b)?;
    }
    writeln!(
        out,
        "  execs: {} recorded, {} replayed, {} differ",
        c.execs.recorded,
        c.execs.replayed,
        c.execs.differences.len()
    )?;
    for d in &c.execs.differences {
        writeln!(
            out,
            "    #{} ({}): {} -> {}",
            d.index,
            d.fields.join(", "),
            d.recorded.as_deref().unwrap_or("-"),
            d.replayed.as_deref().unwrap_or("-")
        )?;
    }
    print_files(out, "upper tree", &c.files)?;
    print_files(out, "repository indices", &c.indices)?;
    for (what, set) in [("removals", &c.removals), ("opaque directories", &c.opaque_dirs)] {
        for p in &set.only_a {
            writeln!(out, "  {what}: only recorded: {p}")?;
        }
        for p in &set.only_b {
            writeln!(out, "  {what}: only replayed: {p}")?;
        }
    }
    for n in c.normalised.iter().filter(|n| !n.paths.is_empty()) {
        writeln!(
            out,
            "  normalised ({}: {}): {}",
            n.pattern,
            n.reason,
            n.paths.join(", ")
        )?;
    }
    Ok(())
}

fn print_files(out: &mut impl Write, what: &str, d: &record::diff::FilesDiff) -> Result<()> {
    writeln!(
        out,
        "  {what}: {} same, {} only recorded, {} only replayed, {} changed",
        d.same,
        d.only_a.len(),
        d.only_b.len(),
        d.changed.len()
    )?;
    for f in &d.only_a {
        writeln!(out, "    - {} ({}, {} bytes)", f.path, f.kind, f.size)?;
    }
    for f in &d.only_b {
        writeln!(out, "    + {} ({}, {} bytes)", f.path, f.kind, f.size)?;
    }
    for f in &d.changed {
        writeln!(out, "    ~ {} ({})", f.path, f.fields.join(", "))?;
    }
    Ok(())
}

/// A record's label in tables and figures: its file name without `.record.json`.
fn label(path: &std::path::Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.strip_suffix(".record.json")
        .or_else(|| name.strip_suffix(".json"))
        .unwrap_or(&name)
        .to_owned()
}

/// An exit status, or `-` when the command never ran.
fn status(code: Option<i32>) -> String {
    code.map_or_else(|| "-".to_owned(), |c| c.to_string())
}

pub(crate) fn diff(args: &DiffArgs) -> Result<()> {
    let (a, b) = (record::Record::read(&args.a)?, record::Record::read(&args.b)?);
    let d = record::diff::diff(&a, &label(&args.a), &b, &label(&args.b));
    let mut out = Stdout::lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&d)?)?;
        return Ok(());
    }
    let mb = |bytes: u64| format!("{:.1} MB", bytes as f64 / 1e6);
    let rows = [
        ("record", d.a.label.clone(), d.b.label.clone()),
        ("kernel", d.a.kernel_release.clone(), d.b.kernel_release.clone()),
        ("command", d.a.command.join(" "), d.b.command.join(" ")),
        ("exit status", status(d.a.exit_code), status(d.b.exit_code)),
        ("scripts", d.a.scripts.to_string(), d.b.scripts.to_string()),
        (
            "files",
            format!("{} ({})", d.a.files, mb(d.a.file_bytes)),
            format!("{} ({})", d.b.files, mb(d.b.file_bytes)),
        ),
        ("removals", d.a.removals.to_string(), d.b.removals.to_string()),
        ("seconds", format!("{:.2}", d.a.seconds), format!("{:.2}", d.b.seconds)),
    ];
    let width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).clamp(8, 60);
    for (name, va, vb) in rows {
        writeln!(out, "{name:<12} {va:<width$}  {vb}")?;
    }
    if !d.settings.is_empty() {
        writeln!(out, "\ninputs and options that differ:")?;
        for s in &d.settings {
            writeln!(out, "  {}: {} | {}", s.field, s.a, s.b)?;
        }
    }
    writeln!(out, "\nphases (seconds)      A         B       B-A")?;
    for p in &d.phases {
        let cell = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
        let delta = match (p.a_seconds, p.b_seconds) {
            (Some(a), Some(b)) => format!("{:+.2}", b - a),
            _ => "-".into(),
        };
        writeln!(
            out,
            "  {:<16} {:>8}  {:>8}  {:>8}",
            p.name,
            cell(p.a_seconds),
            cell(p.b_seconds),
            delta
        )?;
    }
    let n = args.limit;
    writeln!(
        out,
        "\nscripts: {} in both, {} only in A, {} only in B",
        d.scripts.common,
        d.scripts.only_a.len(),
        d.scripts.only_b.len()
    )?;
    for (sign, list) in [("-", &d.scripts.only_a), ("+", &d.scripts.only_b)] {
        for s in list.iter().take(n) {
            writeln!(
                out,
                "  {sign} {} {}{} {}",
                s.package,
                s.script_type,
                if s.triggered { " (triggered)" } else { "" },
                s.args.join(" ")
            )?;
        }
    }
    for (what, f) in [("files", &d.files), ("repository indices", &d.indices)] {
        writeln!(
            out,
            "\n{what}: {} same, {} only in A, {} only in B, {} changed",
            f.same,
            f.only_a.len(),
            f.only_b.len(),
            f.changed.len()
        )?;
        for x in f.only_a.iter().take(n) {
            writeln!(out, "  - {} ({} bytes)", x.path, x.size)?;
        }
        for x in f.only_b.iter().take(n) {
            writeln!(out, "  + {} ({} bytes)", x.path, x.size)?;
        }
        for x in f.changed.iter().take(n) {
            writeln!(
                out,
                "  ~ {} ({}; {} -> {} bytes)",
                x.path,
                x.fields.join(", "),
                x.a_size,
                x.b_size
            )?;
        }
    }
    writeln!(
        out,
        "\nremovals: {} in both, {} only in A, {} only in B",
        d.removals.common,
        d.removals.only_a.len(),
        d.removals.only_b.len()
    )?;
    Ok(())
}

pub(crate) fn report(args: &ReportArgs) -> Result<()> {
    let records = args
        .records
        .iter()
        .map(|p| Ok((p.clone(), record::Record::read(p)?)))
        .collect::<Result<Vec<_>>>()?;
    let summary = record::report::write_report(&records, &args.out)?;
    let mut out = Stdout::lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&summary)?)?;
        return Ok(());
    }
    for f in &summary.figures {
        writeln!(
            out,
            "{}: {}, {} (numbers: {})",
            f.name,
            f.svg.display(),
            f.png.display(),
            f.csv.display()
        )?;
    }
    for c in &summary.csv_only {
        writeln!(out, "{}: {} (header only)", c.name, c.csv.display())?;
    }
    for why in &summary.skipped {
        writeln!(out, "not drawn: {why}")?;
    }
    for note in &summary.notes {
        writeln!(out, "note: {note}")?;
    }
    Ok(())
}
