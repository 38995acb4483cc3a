//! `struct tty_driver` and its type codes, for `/proc/tty/drivers`.

use super::{LayoutError, Resolver, TypeInfo};

/// `struct tty_driver` as `/proc/tty/drivers` prints it, and the values of its type and
/// subtype codes.
#[derive(Debug, Clone)]
pub struct TtyDriverLayout {
    pub list: u64,
    pub driver_name: u64,
    pub name: u64,
    pub major: u64,
    pub minor_start: u64,
    pub num: u64,
    /// `type` and `subtype` as (offset, size): `short` until the codes became enums (6.16).
    pub kind: (u64, u64),
    pub subtype: (u64, u64),
    /// Codes of `TTY_DRIVER_TYPE_{SYSTEM,CONSOLE,SERIAL,PTY}`, `SYSTEM_TYPE_{TTY,CONSOLE,
    /// SYSCONS}` and `PTY_TYPE_{MASTER,SLAVE}`.
    pub types: [i128; 4],
    pub system_subtypes: [i128; 3],
    pub pty_subtypes: [i128; 2],
}

impl TtyDriverLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "/proc/tty/drivers",
        };
        let f = |m: &str| Ok::<_, LayoutError>((r.off("tty_driver", m)?, r.size("tty_driver", m)?));
        // Enumerators since 6.16 (types then count from 0); before, `#define`s that BTF does
        // not carry, with these values.
        let code = |ty: &str, name: &str, define: i128| types.enum_value(ty, name).unwrap_or(define);
        let t = |name: &str, define: i128| code("tty_driver_type", name, define);
        let st = |name: &str, define: i128| code("tty_driver_subtype", name, define);
        Ok(Self {
            list: r.off("tty_driver", "tty_drivers")?,
            driver_name: r.off("tty_driver", "driver_name")?,
            name: r.off("tty_driver", "name")?,
            major: r.off("tty_driver", "major")?,
            minor_start: r.off("tty_driver", "minor_start")?,
            num: r.off("tty_driver", "num")?,
            kind: f("type")?,
            subtype: f("subtype")?,
            types: [
                t("TTY_DRIVER_TYPE_SYSTEM", 1),
                t("TTY_DRIVER_TYPE_CONSOLE", 2),
                t("TTY_DRIVER_TYPE_SERIAL", 3),
                t("TTY_DRIVER_TYPE_PTY", 4),
            ],
            system_subtypes: [
                st("SYSTEM_TYPE_TTY", 1),
                st("SYSTEM_TYPE_CONSOLE", 2),
                st("SYSTEM_TYPE_SYSCONS", 3),
            ],
            pty_subtypes: [st("PTY_TYPE_MASTER", 1), st("PTY_TYPE_SLAVE", 2)],
        })
    }
}
