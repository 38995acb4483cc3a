//! `dormouse disk`: a guest disk described without writing to it.

use std::io::Write;

use anyhow::Result;
use emulator::disk::GuestDisk;

use super::tempfile_dir;
use crate::output::Stdout;

pub(crate) fn disk(path: &std::path::Path, json: bool) -> Result<()> {
    crate::privilege::require_root(crate::privilege::DISKS)?;
    let disk = GuestDisk::open(path)?;
    let scratch = tempfile_dir()?;
    let root = disk.find_root(scratch.path())?;
    let fstab = match &root {
        Some((number, _)) => {
            let mount = disk.mount(*number, scratch.path())?;
            let root_fd = mount.open_root()?;
            let bytes = emulator::disk::read_in_root(&root_fd, mount.target(), "etc/fstab", 1 << 20)?;
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        None => None,
    };
    let mut out = Stdout::lock();
    if json {
        let json = serde_json::json!({
            "disk": disk,
            "root": root.as_ref().map(|(n, os)| serde_json::json!({"partition": n, "os_release": os})),
            "fstab": fstab,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{}: {} bytes, partition table: {:?}",
        disk.path.display(),
        disk.size,
        disk.table
    )?;
    for v in &disk.volumes {
        let p = &v.partition;
        let fs = v.filesystem.as_ref().map_or("-".to_owned(), |fs| {
            format!(
                "{} uuid={} label={}",
                fs.fstype,
                fs.uuid.as_deref().unwrap_or("-"),
                fs.label.as_deref().unwrap_or("-")
            )
        });
        writeln!(
            out,
            "  {:>2}  start {:>12}  size {:>12}  type {:<38} {fs}",
            p.number, p.start, p.size, p.type_id
        )?;
    }
    match (&root, &fstab) {
        (Some((number, os)), Some(fstab)) => {
            writeln!(
                out,
                "root filesystem: partition {number} ({})",
                os.pretty_name.as_deref().unwrap_or("unknown OS")
            )?;
            writeln!(out, "its /etc/fstab:")?;
            for line in fstab
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            {
                writeln!(out, "  {line}")?;
            }
        }
        _ => writeln!(
            out,
            "no partition holds a root filesystem (one with /etc/fstab and /etc/os-release)"
        )?,
    }
    Ok(())
}
