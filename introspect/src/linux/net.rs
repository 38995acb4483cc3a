//! The network interfaces of the initial namespace and their addresses.

use super::extract::{ExtractError, KernelView};
use super::layout::NetDevLayout;
use super::snapshot::Interface;

type Result<T> = std::result::Result<T, ExtractError>;

impl KernelView<'_> {
    /// Interfaces of the initial network namespace with their addresses.
    pub fn interfaces(&self) -> Result<Vec<Interface>> {
        let l = NetDevLayout::resolve(self.types)?;
        let r = self.reader();
        let head = self.symbol("init_net")?.wrapping_add(l.net_dev_base_head);
        r.list(head, l.dev_list, "init_net.dev_base_head")?
            .into_iter()
            .map(|dev| {
                let name = r.inline_string(dev.wrapping_add(l.name), l.name_len as usize, "net_device.name")?;
                let addr_len = r.bytes(dev.wrapping_add(l.addr_len), 1, "net_device.addr_len")?[0] as usize;
                let dev_addr = r.u64(dev.wrapping_add(l.dev_addr), "net_device.dev_addr")?;
                let mac = if addr_len == 0 || dev_addr == 0 {
                    None
                } else {
                    let b = r.bytes(dev_addr, addr_len.min(32), "net_device.dev_addr")?;
                    Some(b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":"))
                };
                let mut ipv4 = Vec::new();
                let in_dev = r.u64(dev.wrapping_add(l.ip_ptr), "net_device.ip_ptr")?;
                if in_dev != 0 {
                    let first = r.u64(in_dev.wrapping_add(l.in_dev_ifa_list), "in_device.ifa_list")?;
                    for ifa in r.chain(first, l.ifa_next, "in_device.ifa_list")? {
                        let a = r.bytes(ifa.wrapping_add(l.ifa_local), 4, "in_ifaddr.ifa_local")?;
                        let len = r.bytes(ifa.wrapping_add(l.ifa_prefixlen), 1, "in_ifaddr.ifa_prefixlen")?[0];
                        ipv4.push(format!("{}.{}.{}.{}/{len}", a[0], a[1], a[2], a[3]));
                    }
                }
                let mut ipv6 = Vec::new();
                let in6_dev = r.u64(dev.wrapping_add(l.ip6_ptr), "net_device.ip6_ptr")?;
                if in6_dev != 0 {
                    for ifa in r.list(
                        in6_dev.wrapping_add(l.inet6_addr_list),
                        l.ifa6_if_list,
                        "inet6_dev.addr_list",
                    )? {
                        let a = r.bytes(ifa.wrapping_add(l.ifa6_addr), 16, "inet6_ifaddr.addr")?;
                        let len = r.u32(ifa.wrapping_add(l.ifa6_prefix_len), "inet6_ifaddr.prefix_len")?;
                        let addr = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(a.as_slice()).unwrap_or([0; 16]));
                        ipv6.push(format!("{addr}/{len}"));
                    }
                }
                Ok(Interface { name, mac, ipv4, ipv6 })
            })
            .collect()
    }
}
