//! `dormouse inspect`, `ps`, `proc`, `uname` and `shadowfs`: what the guest kernel knew.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use introspect::linux::GuestSnapshot;
use introspect::octal_escape::escape;

use super::image::{ImageArgs, snapshot_shown};
use crate::output::Stdout;
use crate::progress::Steps;

pub(crate) fn inspect(image: &ImageArgs, json: bool) -> Result<()> {
    let snapshot = snapshot_shown(image, &mut Steps::new(json))?;
    let mut out = Stdout::lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&snapshot)?)?;
    } else {
        print_summary(&mut out, &snapshot)?;
    }
    Ok(())
}

pub(crate) fn ps(image: &ImageArgs, json: bool) -> Result<()> {
    let snapshot = snapshot_shown(image, &mut Steps::new(json))?;
    let mut out = Stdout::lock();
    if json {
        let processes: Vec<_> = snapshot
            .tasks
            .iter()
            .map(|t| {
                serde_json::json!({
                    "pid": t.pid,
                    "tgid": t.tgid,
                    "ppid": t.ppid,
                    "uid": t.uid,
                    "gid": t.gid,
                    "state": t.state.to_string(),
                    "comm": t.comm,
                    "kernel_thread": t.kernel_thread,
                    "cmdline": t.cmdline,
                    "command": ps_command(t),
                    "threads": t.threads.len(),
                })
            })
            .collect();
        let json = serde_json::json!({
            "schema": "dormouse.ps/1",
            "image": snapshot.source.path,
            "processes": processes,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
        return Ok(());
    }
    Ok(print_ps(&mut out, &snapshot)?)
}

pub(crate) fn proc(image: &ImageArgs, path: &str, json: bool) -> Result<()> {
    let tree = shadowfs::ProcTree::new(snapshot_shown(image, &mut Steps::new(json))?);
    let mut out = Stdout::lock();
    let rendered = tree.render(path)?;
    if json {
        let mut json = serde_json::json!({
            "schema": "dormouse.proc/1",
            "path": format!("/proc/{}", shadowfs::normalize(path)).trim_end_matches('/'),
        });
        match rendered {
            shadowfs::Rendered::File(bytes) => {
                json["kind"] = "file".into();
                // Text when it is UTF-8 (nearly every /proc file), else the bytes in base64.
                match String::from_utf8(bytes) {
                    Ok(text) => json["text"] = text.into(),
                    Err(e) => {
                        use base64::Engine;
                        json["base64"] = base64::engine::general_purpose::STANDARD.encode(e.as_bytes()).into();
                    }
                }
            }
            shadowfs::Rendered::Dir(entries) => {
                json["kind"] = "dir".into();
                json["entries"] = entries
                    .iter()
                    .map(|e| {
                        let kind = match e.kind {
                            shadowfs::Kind::File => "file",
                            shadowfs::Kind::Dir => "dir",
                            shadowfs::Kind::Symlink => "symlink",
                        };
                        serde_json::json!({"name": e.name, "kind": kind})
                    })
                    .collect();
            }
            shadowfs::Rendered::Symlink(target) => {
                json["kind"] = "symlink".into();
                json["target"] = target.into();
            }
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
        return Ok(());
    }
    match rendered {
        shadowfs::Rendered::File(bytes) => out.write_all(&bytes)?,
        shadowfs::Rendered::Dir(entries) => {
            for e in entries {
                writeln!(out, "{}", e.name)?;
            }
        }
        shadowfs::Rendered::Symlink(target) => writeln!(out, "{target}")?,
    }
    Ok(())
}

pub(crate) fn shadowfs(image: &ImageArgs, mountpoint: &Path) -> Result<()> {
    crate::privilege::require_root("it mounts a FUSE filesystem that every user may read (allow_other)")?;
    let tree = shadowfs::ProcTree::new(snapshot_shown(image, &mut Steps::new(false))?);
    shadowfs::serve(tree, mountpoint)?;
    Ok(())
}

pub(crate) fn uname(image: &ImageArgs, all: bool, json: bool) -> Result<()> {
    let u = snapshot_shown(image, &mut Steps::new(json))?.uts;
    let mut out = Stdout::lock();
    if json {
        let json = serde_json::json!({
            "schema": "dormouse.uname/1",
            "sysname": u.sysname,
            "nodename": u.nodename,
            "release": u.release,
            "version": u.version,
            "machine": u.machine,
            "domainname": u.domainname,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
    } else if all {
        writeln!(
            out,
            "{} {} {} {} {} GNU/Linux",
            u.sysname, u.nodename, u.release, u.version, u.machine
        )?;
    } else {
        writeln!(out, "{}", u.sysname)?;
    }
    Ok(())
}

pub(crate) fn print_summary(out: &mut impl Write, s: &GuestSnapshot) -> std::io::Result<()> {
    writeln!(
        out,
        "image:      {} ({}, {}, {} pages)",
        s.source.path, s.source.format, s.source.guest_kind, s.source.pages
    )?;
    if let Some(d) = &s.domain {
        writeln!(
            out,
            "domain:     {} uuid={} type={} memory={} KiB vcpus={}",
            d.name.as_deref().unwrap_or("?"),
            d.uuid.as_deref().unwrap_or("?"),
            d.domain_type.as_deref().unwrap_or("?"),
            d.memory_kib.map_or("?".into(), |m| m.to_string()),
            d.vcpus.map_or("?".into(), |v| v.to_string())
        )?;
    }
    writeln!(out, "kernel:     {} {}", s.kernel.release, s.kernel.version)?;
    writeln!(out, "cmdline:    {}", s.kernel.cmdline.as_deref().unwrap_or("?"))?;
    writeln!(
        out,
        "kaslr:      virtual offset {:#x}, physical offset {}, page_offset_base {}, page tables at {:#x}",
        s.kernel.kaslr_offset,
        s.kernel.kaslr_phys_offset.map_or("?".into(), |o| format!("{o:#x}")),
        s.kernel.page_offset_base.map_or("?".into(), |b| format!("{b:#x}")),
        s.kernel.page_table_root
    )?;
    writeln!(out, "symbols:    {}", s.kernel.profile.symbols)?;
    writeln!(out, "types:      {}", s.kernel.profile.types)?;
    writeln!(out, "hostname:   {}", s.uts.nodename)?;
    writeln!(
        out,
        "boot_id:    {}",
        s.boot_id.as_deref().unwrap_or("(never generated)")
    )?;
    let user = s.tasks.iter().filter(|t| !t.kernel_thread).count();
    writeln!(
        out,
        "tasks:      {} ({} user, {} kernel threads)",
        s.tasks.len(),
        user,
        s.tasks.len() - user
    )?;
    writeln!(
        out,
        "filesystems: {}",
        s.filesystems
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    )?;
    writeln!(
        out,
        "modules:    {}",
        s.modules.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(" ")
    )?;
    for m in &s.mounts {
        writeln!(
            out,
            "mount:      {} on {} type {} ({})",
            escape(&m.device),
            escape(&m.mountpoint),
            m.fstype,
            m.options
        )?;
    }
    for i in &s.interfaces {
        writeln!(
            out,
            "interface:  {} {} {} {}",
            i.name,
            i.mac.as_deref().unwrap_or("-"),
            i.ipv4.join(","),
            i.ipv6.join(",")
        )?;
    }
    writeln!(out, "sysctls:    {} values", s.sysctl.len())?;
    for w in &s.warnings {
        writeln!(out, "warning:    {w}")?;
    }
    Ok(())
}

pub(crate) fn print_ps(out: &mut impl Write, s: &GuestSnapshot) -> std::io::Result<()> {
    writeln!(out, "{:>7} {:>7} {:>6} {:>6} STAT COMMAND", "PID", "PPID", "UID", "GID")?;
    for t in &s.tasks {
        writeln!(
            out,
            "{:>7} {:>7} {:>6} {:>6} {:<4} {}",
            t.pid,
            t.ppid,
            t.uid,
            t.gid,
            t.state,
            ps_command(t)
        )?;
    }
    Ok(())
}

/// The COMMAND column: the arguments, or `[comm]` when there are none (kernel threads,
/// argument pages not in the image).
fn ps_command(t: &introspect::linux::Task) -> String {
    match &t.cmdline {
        // Like procps: control characters in guest-written arguments print as '?'.
        Some(args) if !args.is_empty() => args
            .join(" ")
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect(),
        _ => format!("[{}]", t.comm),
    }
}
