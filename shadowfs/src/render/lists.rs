//! The files listing kernel objects one per line: `/proc/modules`, `/proc/mounts` and
//! `/proc/tty/drivers`.

use std::fmt::Write as _;

use introspect::linux::{GuestSnapshot, Module, Mount, TtyDrivers};
use introspect::octal_escape::escape;

/// `/proc/modules` (kernel/module/procfs.c `m_show`) as root reads it (`kptr_restrict` hides
/// the address only from readers without CAP_SYSLOG). Unformed modules are skipped.
pub(super) fn modules(s: &GuestSnapshot) -> String {
    s.modules
        .iter()
        .filter(|m| m.state != "Unformed")
        .map(module_line)
        .collect()
}

/// One module's line: name, size, `print_unload_info()`, state, text base, `module_flags()`.
pub(super) fn module_line(m: &Module) -> String {
    let mut out = format!("{} {}", m.name, m.size);
    match m.refcount {
        // Users each followed by ',' (so userspace can tell the format from the old one),
        // "-" for none.
        Some(r) => {
            let _ = write!(out, " {r} ");
            for user in &m.used_by {
                let _ = write!(out, "{user},");
            }
            if m.permanent {
                out.push_str("[permanent],");
            }
            if m.used_by.is_empty() && !m.permanent {
                out.push('-');
            }
        }
        // Without CONFIG_MODULE_UNLOAD the kernel prints " - -".
        None => out.push_str(" - -"),
    }
    let _ = write!(out, " {} 0x{:016x}", m.state, m.address);
    // The taint letters, then '-' while unloading or '+' while loading; nothing untainted.
    if !m.taints.is_empty() {
        let transition = match m.state.as_str() {
            "Unloading" => "-",
            "Loading" => "+",
            _ => "",
        };
        let _ = write!(out, " ({}{transition})", m.taints);
    }
    out.push('\n');
    out
}

/// `/proc/mounts` (fs/proc_namespace.c `show_vfsmnt`).
pub(super) fn mounts(s: &GuestSnapshot) -> String {
    s.mounts.iter().map(mount_line).collect()
}

/// One mount's line; every name escaped once, as `mangle()` and `seq_path()` do.
pub(super) fn mount_line(m: &Mount) -> String {
    format!(
        "{} {} {} {} 0 0\n",
        escape(&m.device),
        escape(&m.mountpoint),
        escape(&m.fstype),
        escape(&m.options)
    )
}

/// `/proc/tty/drivers` (fs/proc/proc_tty.c `show_tty_driver`): the fixed pseudo-drivers
/// before the first driver, then each driver's device range, one line per major it spans.
pub(super) fn tty_drivers(tty: Option<&TtyDrivers>) -> String {
    const MINORBITS: u32 = 20;
    let mut out = String::new();
    let Some(tty) = tty else { return out };
    // "%-20s /dev/%-8s %3d " then the minors: "%7d" for a single device, "%d-%d" for more.
    let mut line = |driver: &str, name: &str, major: u32, minors: &str, kind: &str| {
        let _ = writeln!(out, "{driver:<20} /dev/{name:<8} {major:>3} {minors} {kind}");
    };
    let single = |minor: u32| format!("{minor:>7}");
    if !tty.drivers.is_empty() {
        line("/dev/tty", "tty", 5, &single(0), "system:/dev/tty");
        line("/dev/console", "console", 5, &single(1), "system:console");
        if tty.unix98_ptys {
            line("/dev/ptmx", "ptmx", 5, &single(2), "system");
        }
        if tty.vt {
            line("/dev/vc/0", "vc/0", 4, &single(0), "system:vtmaster");
        }
    }
    for d in &tty.drivers {
        let driver = d.driver_name.as_deref().unwrap_or("unknown");
        // dev_t arithmetic as the kernel does it, in 32 bits.
        let mut from = (d.major << MINORBITS).wrapping_add(d.minor_start);
        let to = from.wrapping_add(d.num);
        let minor = |dev: u32| dev & ((1 << MINORBITS) - 1);
        let mut range = |from: u32, num: u32| {
            let minors = if d.num > 1 {
                format!("{}-{}", minor(from), minor(from).wrapping_add(num).wrapping_sub(1))
            } else {
                single(minor(from))
            };
            line(driver, &d.name, from >> MINORBITS, &minors, &d.kind);
        };
        // At most 4096 majors exist (12 bits): a corrupt range cannot loop longer.
        while from >> MINORBITS < to >> MINORBITS {
            let next = ((from >> MINORBITS) + 1) << MINORBITS;
            range(from, next.wrapping_sub(from));
            from = next;
        }
        if from != to {
            range(from, to.wrapping_sub(from));
        }
    }
    out
}
