//! `struct new_utsname`: what `uname` and `/proc/sys/kernel/{hostname,...}` show.

use super::{LayoutError, Resolver, TypeInfo};

#[derive(Debug, Clone)]
pub struct UtsLayout {
    pub name: u64,
    pub field_len: u64,
    pub sysname: u64,
    pub nodename: u64,
    pub release: u64,
    pub version: u64,
    pub machine: u64,
    pub domainname: u64,
}

impl UtsLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "uname",
        };
        Ok(Self {
            name: r.off("uts_namespace", "name")?,
            field_len: r.size("new_utsname", "release")?,
            sysname: r.off("new_utsname", "sysname")?,
            nodename: r.off("new_utsname", "nodename")?,
            release: r.off("new_utsname", "release")?,
            version: r.off("new_utsname", "version")?,
            machine: r.off("new_utsname", "machine")?,
            domainname: r.off("new_utsname", "domainname")?,
        })
    }
}
