//! Network devices and their IPv4/IPv6 addresses.

use super::{LayoutError, Resolver, TypeInfo};

/// Network devices of the initial namespace and their addresses.
#[derive(Debug, Clone)]
pub struct NetDevLayout {
    pub net_dev_base_head: u64,
    pub dev_list: u64,
    pub name: u64,
    pub name_len: u64,
    pub dev_addr: u64,
    pub addr_len: u64,
    pub ip_ptr: u64,
    pub ip6_ptr: u64,
    pub in_dev_ifa_list: u64,
    pub ifa_next: u64,
    pub ifa_local: u64,
    pub ifa_prefixlen: u64,
    pub inet6_addr_list: u64,
    pub inet6_cnf: u64,
    pub ifa6_if_list: u64,
    pub ifa6_addr: u64,
    pub ifa6_prefix_len: u64,
}

impl NetDevLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "network interfaces",
        };
        Ok(Self {
            net_dev_base_head: r.off("net", "dev_base_head")?,
            dev_list: r.off("net_device", "dev_list")?,
            name: r.off("net_device", "name")?,
            name_len: r.size("net_device", "name")?,
            dev_addr: r.off("net_device", "dev_addr")?,
            addr_len: r.off("net_device", "addr_len")?,
            ip_ptr: r.off("net_device", "ip_ptr")?,
            ip6_ptr: r.off("net_device", "ip6_ptr")?,
            in_dev_ifa_list: r.off("in_device", "ifa_list")?,
            ifa_next: r.off("in_ifaddr", "ifa_next")?,
            ifa_local: r.off("in_ifaddr", "ifa_local")?,
            ifa_prefixlen: r.off("in_ifaddr", "ifa_prefixlen")?,
            inet6_addr_list: r.off("inet6_dev", "addr_list")?,
            inet6_cnf: r.off("inet6_dev", "cnf")?,
            ifa6_if_list: r.off("inet6_ifaddr", "if_list")?,
            ifa6_addr: r.off("inet6_ifaddr", "addr")?,
            ifa6_prefix_len: r.off("inet6_ifaddr", "prefix_len")?,
        })
    }
}
