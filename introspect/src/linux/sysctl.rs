//! `/proc/sys`: the sysctls maintainer scripts read, decoded the way each entry's handler
//! prints them.

use std::collections::BTreeMap;

use super::extract::{ExtractError, KernelView};
use super::layout::{CtlTableLayout, DevinetConfLayout, NetConfLayout, NetDevLayout};
use super::reader::{KernelReader, ReadError};

type Result<T> = std::result::Result<T, ExtractError>;

impl KernelView<'_> {
    /// The sysctls a package manager and maintainer scripts read: the kernel's own tables
    /// (`kern_table`, `vm_table`, ...), `net.ipv4.ip_forward` and IPv4's and IPv6's
    /// `all`/`default`/per-interface device configuration, decoded by each entry's handler exactly as `/proc/sys` prints it.
    pub fn sysctls(&self) -> Result<(BTreeMap<String, String>, Vec<String>)> {
        let ctl = CtlTableLayout::resolve(self.types)?;
        let hz = self.hz();
        let mut out = BTreeMap::new();
        let mut warnings = Vec::new();
        for (table, prefix) in [("kern_table", "kernel"), ("vm_table", "vm"), ("fs_table", "fs")] {
            let Some(addr) = self.symbols.address(table) else {
                continue;
            };
            match self.ctl_table(&ctl, addr, None, hz) {
                Ok(entries) => out.extend(entries.into_iter().map(|(k, v)| (format!("{prefix}.{k}"), v))),
                Err(e) => warnings.push(format!("{table}: {e}")),
            }
        }
        match self.ipv6_conf(&ctl, hz) {
            Ok(entries) => out.extend(entries),
            Err(e) => warnings.push(format!("net.ipv6.conf: {e}")),
        }
        match self.ipv4_conf(&ctl, hz) {
            Ok(entries) => out.extend(entries),
            Err(e) => warnings.push(format!("net.ipv4.conf: {e}")),
        }
        if hz.is_none() {
            warnings.push("HZ unknown (no tick_nsec): time-valued sysctls left out".into());
        }
        Ok((out, warnings))
    }

    fn ipv6_conf(&self, ctl: &CtlTableLayout, hz: Option<u64>) -> Result<Vec<(String, String)>> {
        let net = NetConfLayout::resolve(self.types)?;
        let r = self.reader();
        let table = self.symbol("addrconf_sysctl")?;
        // The table's data pointers aim into the template `ipv6_devconf`; each namespace's
        // copies have the same layout, so rebase them.
        let template = self.symbol("ipv6_devconf")?;
        let init_net = self.symbol("init_net")?;
        let mut out = Vec::new();
        let mut instances = vec![
            (
                "all".to_owned(),
                r.u64(init_net.wrapping_add(net.ipv6_devconf_all), "init_net.ipv6.devconf_all")?,
            ),
            (
                "default".to_owned(),
                r.u64(
                    init_net.wrapping_add(net.ipv6_devconf_dflt),
                    "init_net.ipv6.devconf_dflt",
                )?,
            ),
        ];
        // Each interface with IPv6 carries its own copy inline in its inet6_dev.
        if let Ok(dev) = NetDevLayout::resolve(self.types) {
            let head = init_net.wrapping_add(dev.net_dev_base_head);
            for nd in r.list(head, dev.dev_list, "init_net.dev_base_head")? {
                let in6 = r.u64(nd.wrapping_add(dev.ip6_ptr), "net_device.ip6_ptr")?;
                if in6 != 0 {
                    let name = r.inline_string(nd.wrapping_add(dev.name), dev.name_len as usize, "net_device.name")?;
                    // sysctl(8) spells a dot inside an interface name as a slash.
                    instances.push((name.replace('.', "/"), in6.wrapping_add(dev.inet6_cnf)));
                }
            }
        }
        for (which, instance) in instances {
            for (k, v) in self.ctl_table(ctl, table, Some((template, instance)), hz)? {
                out.push((format!("net.ipv6.conf.{which}.{k}"), v));
            }
        }
        Ok(out)
    }

    /// `net.ipv4.ip_forward` and `net.ipv4.conf.{all,default,<if>}.*` of the initial namespace.
    /// `devinet_sysctl.devinet_vars` and `ctl_forward_entry` are the templates the kernel
    /// copies per instance: their data pointers aim into `ipv4_devconf` and are rebased onto
    /// each copy (`__devinet_sysctl_register()`, `devinet_init_net()`); ip_forward is the
    /// `all` copy's `forwarding`.
    fn ipv4_conf(&self, ctl: &CtlTableLayout, hz: Option<u64>) -> Result<Vec<(String, String)>> {
        let l = DevinetConfLayout::resolve(self.types)?;
        let r = self.reader();
        let table = self.symbol("devinet_sysctl")?.wrapping_add(l.vars);
        let template = self.symbol("ipv4_devconf")?;
        let init_net = self.symbol("init_net")?;
        let all = r.u64(init_net.wrapping_add(l.devconf_all), "init_net.ipv4.devconf_all")?;
        let dflt = r.u64(init_net.wrapping_add(l.devconf_dflt), "init_net.ipv4.devconf_dflt")?;
        let mut out = Vec::new();
        for (k, v) in self.ctl_table(ctl, self.symbol("ctl_forward_entry")?, Some((template, all)), hz)? {
            out.push((format!("net.ipv4.{k}"), v));
        }
        let mut instances = vec![("all".to_owned(), all), ("default".to_owned(), dflt)];
        // Each interface with IPv4 carries its own copy inline in its in_device.
        if let Ok(dev) = NetDevLayout::resolve(self.types) {
            let head = init_net.wrapping_add(dev.net_dev_base_head);
            for nd in r.list(head, dev.dev_list, "init_net.dev_base_head")? {
                let in_dev = r.u64(nd.wrapping_add(dev.ip_ptr), "net_device.ip_ptr")?;
                if in_dev != 0 {
                    let name = r.inline_string(nd.wrapping_add(dev.name), dev.name_len as usize, "net_device.name")?;
                    // sysctl(8) spells a dot inside an interface name as a slash.
                    instances.push((name.replace('.', "/"), in_dev.wrapping_add(l.in_dev_cnf)));
                }
            }
        }
        for (which, instance) in instances {
            for (k, v) in self.ctl_table(ctl, table, Some((template, instance)), hz)? {
                out.push((format!("net.ipv4.conf.{which}.{k}"), v));
            }
        }
        Ok(out)
    }

    /// Reads one `struct ctl_table` array. Arrays end with an empty entry (≤ 6.10) or at the
    /// end of the object (6.11+, no sentinel), whichever the symbol table bounds first.
    fn ctl_table(
        &self,
        l: &CtlTableLayout,
        table: u64,
        rebase: Option<(u64, u64)>,
        hz: Option<u64>,
    ) -> Result<Vec<(String, String)>> {
        const MAX_ENTRIES: u64 = 1024;
        let r = self.reader();
        if l.stride == 0 {
            return Err(ExtractError::Invalid("struct ctl_table has size 0".into()));
        }
        let end = self
            .symbols
            .next_after(table)
            .unwrap_or(table.saturating_add(MAX_ENTRIES.saturating_mul(l.stride)));
        let mut out = Vec::new();
        let mut entry = table;
        while entry.checked_add(l.stride).is_some_and(|next| next <= end) && (entry - table) / l.stride < MAX_ENTRIES {
            let procname = r.u64(entry.wrapping_add(l.procname), "ctl_table.procname")?;
            if procname == 0 {
                break;
            }
            let name = r.c_string(procname, 128, "ctl_table.procname")?;
            let mut data = r.u64(entry.wrapping_add(l.data), "ctl_table.data")?;
            let maxlen = r.i32(entry.wrapping_add(l.maxlen), "ctl_table.maxlen")?;
            let handler = r.u64(entry.wrapping_add(l.proc_handler), "ctl_table.proc_handler")?;
            entry += l.stride;
            if let Some((template, instance)) = rebase {
                match data.checked_sub(template) {
                    Some(off) if off < 4096 => data = instance.wrapping_add(off),
                    _ => continue,
                }
            }
            if data == 0 || maxlen <= 0 {
                continue;
            }
            let handler = self.symbols.name_at(handler).unwrap_or_default();
            if let Some(value) = sysctl_value(&r, &handler, data, maxlen as u64, hz) {
                out.push((name, value?));
            }
        }
        Ok(out)
    }
}

/// Decodes a sysctl's value the way its handler would print it; `None` for handlers whose
/// output is not a plain function of the data (those are left out rather than guessed).
fn sysctl_value(
    r: &KernelReader,
    handler: &str,
    data: u64,
    maxlen: u64,
    hz: Option<u64>,
) -> Option<std::result::Result<String, ReadError>> {
    let maxlen = maxlen.min(4096);
    let ints = |size: u64, signed: bool| -> std::result::Result<Vec<i128>, ReadError> {
        let bytes = r.bytes(data, maxlen as usize, "sysctl data")?;
        Ok(bytes
            .chunks_exact(size as usize)
            .map(|c| match (size, signed) {
                (1, _) => c[0] as i128,
                (4, true) => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i128,
                (4, false) => u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i128,
                (_, true) => i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as i128,
                (_, false) => u64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as i128,
            })
            .collect())
    };
    let join = |v: Vec<i128>| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("\t");
    let scaled = |num: i128, den: i128| -> Option<std::result::Result<String, ReadError>> {
        Some(ints(4, true).map(|v| join(v.into_iter().map(|j| j * num / den).collect())))
    };
    match handler {
        "proc_dostring" => Some(r.c_string(data, maxlen as usize, "sysctl string")),
        "proc_dou8vec_minmax" => Some(ints(1, false).map(join)),
        "proc_douintvec" | "proc_douintvec_minmax" => Some(ints(4, false).map(join)),
        "proc_doulongvec_minmax" => Some(ints(8, false).map(join)),
        "proc_dointvec_jiffies" => hz.and_then(|hz| scaled(1, hz as i128)),
        "proc_dointvec_userhz_jiffies" => hz.and_then(|hz| scaled(100, hz as i128)),
        "proc_dointvec_ms_jiffies" => hz.and_then(|hz| scaled(1000, hz as i128)),
        // Reads EIO until a secret is set; /proc/sys shows no value.
        "addrconf_sysctl_stable_secret" => None,
        // IPv4's device handlers act on writes; reading is proc_dointvec().
        "devinet_conf_proc" | "devinet_sysctl_forward" | "ipv4_doint_and_flush" => Some(ints(4, true).map(join)),
        h if h.starts_with("proc_dointvec") || h.starts_with("addrconf_sysctl_") => Some(ints(4, true).map(join)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::linux::extract::tests::{BASE, view};
    use crate::linux::reader::tests::FlatMemory;

    /// A type source claiming `struct ctl_table` has size 0 divided by zero.
    #[test]
    fn zero_sized_ctl_table_is_an_error() {
        let mem = FlatMemory {
            base: BASE,
            bytes: vec![0; 0x1000],
        };
        let (_, warnings) = view(&mem, &|_| None).sysctls().unwrap();
        assert!(warnings.iter().any(|w| w.contains("size 0")), "{warnings:?}");
    }
}
