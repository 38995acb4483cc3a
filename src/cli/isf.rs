//! `dormouse isf`: a Volatility 3 symbol table of the guest kernel, from its RAM alone.

use std::fs::Permissions;
use std::io::{BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use super::image::{ImageArgs, profile_files};
use crate::output::Stdout;
use crate::progress::Steps;

#[derive(Args)]
pub(crate) struct IsfArgs {
    #[command(flatten)]
    image: ImageArgs,
    /// Where to write the ISF: `NAME.json`, or `NAME.json.xz` for xz (as Volatility ships
    /// its own). Put it under `DIR/linux/` and give Volatility `-s DIR`.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Print what was written as JSON.
    #[arg(long)]
    json: bool,
}

/// What `dormouse isf --json` prints.
#[derive(Serialize)]
struct Written<'a> {
    path: &'a Path,
    bytes: u64,
    release: &'a str,
    banner: &'a str,
    symbols_from: &'a str,
    types_from: &'a str,
    kaslr_offset: String,
    symbols: usize,
    user_types: usize,
    warnings: &'a [String],
}

pub(crate) fn isf(args: &IsfArgs) -> Result<()> {
    let mut steps = Steps::new(args.json);
    steps.step(format!(
        "finding the kernel's symbols and types in {}",
        args.image.source()
    ));
    let mem = args.image.open()?;
    let disks: Vec<_> = args
        .image
        .disks
        .iter()
        .map(|d| emulator::disk::DiskSpec::parse(d))
        .collect();
    let files = profile_files(&args.image, mem.as_ref(), &disks)?;
    let profile = introspect::linux::volatility_profile(mem.as_ref(), &files)?;
    steps.step(format!("writing {}", args.output.display()));
    let bytes = write_isf(&args.output, &profile.isf)?;
    steps.finish_step();
    let count = |key: &str| profile.isf[key].as_object().map_or(0, |o| o.len());
    let written = Written {
        path: &args.output,
        bytes,
        release: &profile.release,
        banner: &profile.banner,
        symbols_from: &profile.symbols_from,
        types_from: &profile.types_from,
        kaslr_offset: format!("{:#x}", profile.kaslr_offset),
        symbols: count("symbols"),
        user_types: count("user_types"),
        warnings: &profile.warnings,
    };
    let mut out = Stdout::lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&written)?)?;
    } else {
        for w in &profile.warnings {
            steps.note(&format!("warning: {w}"));
        }
        writeln!(
            out,
            "{}: ISF for {} ({} symbols from {}, {} types from {}), {} bytes",
            args.output.display(),
            profile.release,
            written.symbols,
            profile.symbols_from,
            written.user_types,
            profile.types_from,
            bytes
        )?;
    }
    Ok(())
}

/// Writes the ISF through a temporary file renamed into place, so that Volatility never
/// finds half a profile; returns its size.
fn write_isf(path: &Path, isf: &serde_json::Value) -> Result<u64> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {} for {}", dir.display(), path.display()))?;
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {} for {}", dir.display(), path.display()))?;
    let file = BufWriter::new(tmp.as_file());
    let xz = path.extension().is_some_and(|e| e == "xz");
    let writing = || format!("writing {}", path.display());
    if xz {
        let mut w = lzma_rust2::XzWriter::new(file, lzma_rust2::XzOptions::with_preset(6)).with_context(writing)?;
        serde_json::to_writer(&mut w, isf).with_context(writing)?;
        w.finish().with_context(writing)?.flush().with_context(writing)?;
    } else {
        let mut w = file;
        serde_json::to_writer(&mut w, isf).with_context(writing)?;
        w.flush().with_context(writing)?;
    }
    let file = tmp.as_file();
    let bytes = file.metadata().with_context(writing)?.len();
    // A profile is no secret; NamedTempFile makes files only its owner can read.
    file.set_permissions(Permissions::from_mode(0o644))
        .with_context(writing)?;
    file.sync_all().with_context(writing)?;
    tmp.persist(path).with_context(writing)?;
    Ok(bytes)
}
