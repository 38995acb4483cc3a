//! Sysctl tables and the per-namespace and per-device network configuration they point into.

use super::{LayoutError, Resolver, TypeInfo};

#[derive(Debug, Clone)]
pub struct CtlTableLayout {
    pub stride: u64,
    pub procname: u64,
    pub data: u64,
    pub maxlen: u64,
    pub proc_handler: u64,
}

impl CtlTableLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "sysctls",
        };
        Ok(Self {
            stride: r.struct_size("ctl_table")?,
            procname: r.off("ctl_table", "procname")?,
            data: r.off("ctl_table", "data")?,
            maxlen: r.off("ctl_table", "maxlen")?,
            proc_handler: r.off("ctl_table", "proc_handler")?,
        })
    }
}

/// Offsets of the per-namespace IPv6 device configuration pointers in `struct net`.
#[derive(Debug, Clone)]
pub struct NetConfLayout {
    pub ipv6_devconf_all: u64,
    pub ipv6_devconf_dflt: u64,
}

impl NetConfLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "IPv6 sysctls",
        };
        Ok(Self {
            ipv6_devconf_all: r.off("net", "ipv6.devconf_all")?,
            ipv6_devconf_dflt: r.off("net", "ipv6.devconf_dflt")?,
        })
    }
}

/// IPv4's per-device configuration (net/ipv4/devinet.c): where each `struct ipv4_devconf`
/// instance is and where the kernel's own table of its sysctls starts.
#[derive(Debug, Clone)]
pub struct DevinetConfLayout {
    /// `net.ipv4.devconf_all` and `devconf_dflt`: pointers to the namespace's copies.
    pub devconf_all: u64,
    pub devconf_dflt: u64,
    /// `in_device.cnf`: an interface's copy, inline.
    pub in_dev_cnf: u64,
    /// `devinet_sysctl_table.devinet_vars`: the `ctl_table` array inside `devinet_sysctl`.
    pub vars: u64,
}

impl DevinetConfLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "IPv4 sysctls",
        };
        Ok(Self {
            devconf_all: r.off("net", "ipv4.devconf_all")?,
            devconf_dflt: r.off("net", "ipv4.devconf_dflt")?,
            in_dev_cnf: r.off("in_device", "cnf")?,
            vars: r.off("devinet_sysctl_table", "devinet_vars")?,
        })
    }
}
