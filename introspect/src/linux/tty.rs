//! `/proc/tty/drivers`: the kernel's registered tty drivers (`tty_drivers` of
//! drivers/tty/tty_io.c), as fs/proc/proc_tty.c `show_tty_range()` describes each.

use super::extract::{ExtractError, KernelView};
use super::layout::TtyDriverLayout;
use super::snapshot::{TtyDriver, TtyDrivers};

/// `UNIX98_PTY_MASTER_MAJOR` and `UNIX98_PTY_MAJOR_COUNT`: the majors of the Unix98 pty
/// master driver (`ptm`), which exists exactly when the kernel has CONFIG_UNIX98_PTYS.
const UNIX98_PTY_MASTER_MAJORS: std::ops::Range<u32> = 128..136;
/// `TTY_MAJOR`: the virtual terminals' driver (`console_driver` of drivers/tty/vt/vt.c, the
/// only console-type driver on it) exists exactly when the kernel has CONFIG_VT.
const TTY_MAJOR: u32 = 4;

impl KernelView<'_> {
    /// The registered tty drivers, newest first like `/proc/tty/drivers`. Whether the kernel
    /// was built with Unix98 ptys and virtual terminals (which add fixed lines to the file)
    /// is told by the drivers those options register.
    pub fn tty_drivers(&self) -> Result<TtyDrivers, ExtractError> {
        let l = TtyDriverLayout::resolve(self.types)?;
        let r = self.reader();
        let head = self.symbol("tty_drivers")?;
        let mut drivers = Vec::new();
        let (mut unix98_ptys, mut vt) = (false, false);
        for d in r.list(head, l.list, "tty_drivers")? {
            let at = |off: u64| d.wrapping_add(off);
            let string = |off: u64, what: &str| -> Result<Option<String>, ExtractError> {
                match r.u64(at(off), what)? {
                    0 => Ok(None),
                    p => Ok(Some(r.c_string(p, 256, what)?)),
                }
            };
            let code = |(off, size): (u64, u64), what: &str| -> Result<i128, ExtractError> {
                Ok(match size {
                    2 => {
                        let b = r.bytes(at(off), 2, what)?;
                        i16::from_le_bytes([b[0], b[1]]) as i128
                    }
                    _ => r.i32(at(off), what)? as i128,
                })
            };
            let kind = code(l.kind, "tty_driver.type")?;
            let subtype = code(l.subtype, "tty_driver.subtype")?;
            let major = r.u32(at(l.major), "tty_driver.major")?;
            let [system, console, serial, pty] = l.types;
            let kind = if kind == system {
                let [tty, vtmaster, syscons] = l.system_subtypes;
                match subtype {
                    s if s == tty => "system:/dev/tty",
                    s if s == syscons => "system:console",
                    s if s == vtmaster => "system:vtmaster",
                    _ => "system",
                }
                .to_owned()
            } else if kind == console {
                vt |= major == TTY_MAJOR;
                "console".to_owned()
            } else if kind == serial {
                "serial".to_owned()
            } else if kind == pty {
                let [master, slave] = l.pty_subtypes;
                match subtype {
                    s if s == master => {
                        unix98_ptys |= UNIX98_PTY_MASTER_MAJORS.contains(&major);
                        "pty:master"
                    }
                    s if s == slave => "pty:slave",
                    _ => "pty",
                }
                .to_owned()
            } else {
                format!("type:{kind}.{subtype}")
            };
            drivers.push(TtyDriver {
                driver_name: string(l.driver_name, "tty_driver.driver_name")?,
                // seq_printf("%s") of NULL prints "(null)".
                name: string(l.name, "tty_driver.name")?.unwrap_or_else(|| "(null)".to_owned()),
                major,
                minor_start: r.u32(at(l.minor_start), "tty_driver.minor_start")?,
                num: r.u32(at(l.num), "tty_driver.num")?,
                kind,
            });
        }
        Ok(TtyDrivers {
            drivers,
            unix98_ptys,
            vt,
        })
    }
}
