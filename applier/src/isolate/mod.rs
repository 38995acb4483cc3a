//! Isolation of a domain's vifs with nftables, over netlink (rustables): a vif passes nothing
//! but the agent channel to dom0 until it is released.
//!
//! Layout, the same in two dormouse-owned tables, `bridge dormouse-bridge` and
//! `inet dormouse-inet`:
//! - base chains `from-vifs` (hook prerouting) and `to-vifs` (hook postrouting), policy accept,
//!   holding one rule per isolated vif, `iifname VIF goto from-VIF` / `oifname VIF goto to-VIF`,
//!   commented with the vif's name;
//! - per-vif chains `from-VIF` and `to-VIF`: the allowed exchanges with each dom0 ADDR[:PORT]
//!   (see [`rules`]), then a counted drop.
//!
//! Why both families: on a `vif-bridge` vif, the vif is a bridge port and frames between the
//! guest and other ports never reach the IP stack unless `br_netfilter` is loaded, so only the
//! bridge family (whose prerouting/postrouting hooks see the port as iif/oif) filters them
//! without it; on a `vif-route` vif, packets are routed and only `inet` sees them. Installing
//! both needs no knowledge of how the vif is wired, and with `br_netfilter` the inet rules
//! enforce the same policy again. Rules match interface *names*, so a vif can be isolated before
//! it exists (the toolstack hook, `xl restore -p`) and stays isolated if it is re-created.
//!
//! Every operation is one netlink batch, which the kernel applies atomically. The rules live in
//! the kernel: nothing removes them but [`release`] / [`release_all`] (or a reboot), so a crash
//! of dormouse leaves the guest isolated.

mod netlink;
mod rules;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use rustables::error::QueryError;
use rustables::{Batch, Chain, ChainPolicy, ChainType, Hook, HookClass, MsgType, ProtocolFamily, Rule, Table};
use serde::Serialize;

use rules::Direction;

/// One family's dormouse table and the priorities of its base chains.
struct FamilyTable {
    family: ProtocolFamily,
    label: &'static str,
    table: &'static str,
    from_priority: i32,
    to_priority: i32,
}

/// Bridge filter priority (-200) for both hooks. In inet, -300 sits after defragmentation and
/// before conntrack, so dropped packets never create connection entries, and before any
/// source NAT on the way out.
const TABLES: [FamilyTable; 2] = [
    FamilyTable {
        family: ProtocolFamily::Bridge,
        label: "bridge",
        table: "dormouse-bridge",
        from_priority: -200,
        to_priority: -200,
    },
    FamilyTable {
        family: ProtocolFamily::Inet,
        label: "inet",
        table: "dormouse-inet",
        from_priority: -300,
        to_priority: -300,
    },
];

const FROM_VIFS: &str = "from-vifs";
const TO_VIFS: &str = "to-vifs";
const TABLE_COMMENT: &str = "dormouse: isolated Xen vifs; remove only with `dormouse release`";
/// Linux's IFNAMSIZ minus the terminating NUL.
pub const IFNAME_MAX: usize = 15;

#[derive(Debug, thiserror::Error)]
pub enum IsolateError {
    #[error("vif name {name:?}: {reason}")]
    InvalidVif { name: String, reason: &'static str },
    #[error("--allow {text}: {reason}; expected ADDR, ADDR:PORT or [IPV6]:PORT")]
    InvalidAllow { text: String, reason: String },
    #[error("no vif to isolate")]
    NoVifs,
    #[error("building nftables objects: {0}")]
    Build(String),
    #[error("{what}: {detail}{hint}")]
    Netlink {
        what: String,
        detail: String,
        hint: &'static str,
    },
}

/// The kernel's errno, with what to do about the likely ones.
fn errno_text(errno: i32) -> (String, &'static str) {
    let hint = match errno {
        libc::EPERM => " (nftables needs root, or CAP_NET_ADMIN in this network namespace)",
        libc::EOPNOTSUPP | libc::EAFNOSUPPORT | libc::EBUSY => {
            " (either the kernel lacks nf_tables for a family, CONFIG_NF_TABLES_BRIDGE or \
             CONFIG_NF_TABLES_INET, or the dormouse tables were changed by hand: see \
             `nft list ruleset`; `dormouse release --all` removes them)"
        }
        _ => "",
    };
    (std::io::Error::from_raw_os_error(errno).to_string(), hint)
}

/// A failed query (listing) as an IsolateError.
fn netlink(what: impl Into<String>) -> impl FnOnce(QueryError) -> IsolateError {
    move |source| {
        let (detail, hint) = match &source {
            QueryError::NetlinkError(e) => errno_text(e.error),
            other => (other.to_string(), ""),
        };
        IsolateError::Netlink {
            what: what.into(),
            detail,
            hint,
        }
    }
}

/// Sends one batch; the kernel applies all of it or nothing.
fn send(batch: Batch, what: impl Into<String>) -> Result<(), IsolateError> {
    netlink::send(batch).map_err(|e| {
        let (detail, hint) = match e {
            netlink::SendError::Refused(errno) => errno_text(errno),
            netlink::SendError::Io(e) => (e.to_string(), ""),
        };
        IsolateError::Netlink {
            what: what.into(),
            detail,
            hint,
        }
    })
}

fn is_enoent(e: &QueryError) -> bool {
    matches!(e, QueryError::NetlinkError(err) if err.error == libc::ENOENT)
}

/// A dom0 endpoint an isolated vif may exchange packets with. With a port, only TCP whose
/// dom0-side port is PORT: the guest connecting to ADDR:PORT, or dom0 connecting to the guest
/// *from* source port PORT. Without a port, anything to and from ADDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Allow {
    pub addr: IpAddr,
    pub port: Option<u16>,
}

impl FromStr for Allow {
    type Err = IsolateError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| IsolateError::InvalidAllow {
            text: text.to_owned(),
            reason,
        };
        let allow = if let Ok(addr) = text.parse::<IpAddr>() {
            Allow { addr, port: None }
        } else {
            let sa = text
                .parse::<SocketAddr>()
                .map_err(|e| invalid(format!("not an address: {e}")))?;
            if sa.port() == 0 {
                return Err(invalid("port 0 is not a port".into()));
            }
            Allow {
                addr: sa.ip(),
                port: Some(sa.port()),
            }
        };
        if allow.addr.is_unspecified() || allow.addr.is_multicast() {
            return Err(invalid("a dom0 address must be a unicast address".into()));
        }
        Ok(allow)
    }
}

impl fmt::Display for Allow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}", SocketAddr::new(self.addr, port)),
            None => write!(f, "{}", self.addr),
        }
    }
}

impl Serialize for Allow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A vif found isolated in the kernel's ruleset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IsolatedVif {
    pub vif: String,
    /// What it may exchange, read back from the rules' comments.
    pub allow: Vec<Allow>,
    /// The tables holding its rules (`bridge`, `inet`); both unless someone deleted one.
    pub families: Vec<&'static str>,
    /// Packets dropped so far, both directions, all families.
    pub dropped_packets: u64,
}

/// What [`release`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Released {
    pub released: Vec<String>,
    pub not_isolated: Vec<String>,
}

/// Checks a vif name the way Linux checks interface names.
pub fn validate_vif(name: &str) -> Result<(), IsolateError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > IFNAME_MAX {
        Some("longer than 15 bytes, the kernel's limit for interface names")
    } else if name == "." || name == ".." {
        Some("not an interface name")
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        Some("interface names have no '/', ':', NUL or whitespace")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(IsolateError::InvalidVif {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn chain_name(direction: Direction, vif: &str) -> String {
    match direction {
        Direction::FromGuest => format!("from-{vif}"),
        Direction::ToGuest => format!("to-{vif}"),
    }
}

fn table(ft: &FamilyTable) -> Table {
    Table::new(ft.family).with_name(ft.table)
}

fn named_chain(ft: &FamilyTable, name: &str) -> Chain {
    Chain::new(&table(ft)).with_name(name)
}

fn base_name(direction: Direction) -> &'static str {
    match direction {
        Direction::FromGuest => FROM_VIFS,
        Direction::ToGuest => TO_VIFS,
    }
}

fn base_chain(ft: &FamilyTable, direction: Direction) -> Chain {
    let (class, priority) = match direction {
        Direction::FromGuest => (HookClass::PreRouting, ft.from_priority),
        Direction::ToGuest => (HookClass::PostRouting, ft.to_priority),
    };
    named_chain(ft, base_name(direction))
        .with_hook(Hook::new(class, priority))
        .with_policy(ChainPolicy::Accept)
        .with_type(ChainType::Filter)
}

/// The dispatch rules of a base chain: (vif, rule handle). None when the table is absent.
fn dispatch_rules(ft: &FamilyTable, base: &str) -> Result<Option<Vec<(String, u64)>>, IsolateError> {
    let rules = match rustables::list_rules_for_chain(&named_chain(ft, base)) {
        Ok(rules) => rules,
        Err(e) if is_enoent(&e) => return Ok(None),
        Err(e) => {
            return Err(netlink(format!(
                "listing chain {base} of {} table {}",
                ft.label, ft.table
            ))(e));
        }
    };
    Ok(Some(
        rules
            .iter()
            .filter_map(|r| {
                let vif = rules::read_comment(r.get_userdata()?)?;
                Some((vif, *r.get_handle()?))
            })
            .collect(),
    ))
}

fn unique_vifs(vifs: &[String]) -> Result<Vec<&str>, IsolateError> {
    let mut out: Vec<&str> = Vec::new();
    for vif in vifs {
        validate_vif(vif)?;
        if !out.contains(&vif.as_str()) {
            out.push(vif);
        }
    }
    if out.is_empty() {
        return Err(IsolateError::NoVifs);
    }
    Ok(out)
}

/// Isolates `vifs`: from then on they pass only what `allow` names (an empty `allow` passes
/// nothing). Isolating an isolated vif replaces its allowances. One atomic batch for all vifs
/// and both families.
pub fn isolate(vifs: &[String], allow: &[Allow]) -> Result<(), IsolateError> {
    let vifs = unique_vifs(vifs)?;
    let mut allow = allow.to_vec();
    allow.sort();
    allow.dedup();
    tracing::info!("isolating {vifs:?}, allowing {} endpoint(s)", allow.len());
    let mut batch = Batch::new();
    for ft in &TABLES {
        batch.add(&table(ft).with_userdata(rules::comment(TABLE_COMMENT)), MsgType::Add);
        for direction in [Direction::FromGuest, Direction::ToGuest] {
            let base = base_chain(ft, direction);
            batch.add(&base, MsgType::Add);
            let present = dispatch_rules(ft, base_name(direction))?.unwrap_or_default();
            for vif in &vifs {
                let chain = named_chain(ft, &chain_name(direction, vif));
                batch.add(&chain, MsgType::Add);
                // A rule without handle deleted = the chain flushed, so re-isolating replaces.
                batch.add(
                    &Rule::new(&chain).map_err(|e| IsolateError::Build(e.to_string()))?,
                    MsgType::Del,
                );
                for rule in rules::vif_rules(ft.family, &chain, &allow, direction)? {
                    batch.add(&rule, MsgType::Add);
                }
                if !present.iter().any(|(v, _)| v == vif) {
                    let target = chain_name(direction, vif);
                    batch.add(&rules::dispatch(&base, vif, &target, direction)?, MsgType::Add);
                }
            }
        }
    }
    send(batch, format!("installing the isolation of {}", vifs.join(", ")))
}

/// Releases `vifs`: their rules and chains go in one atomic batch; other vifs stay isolated.
pub fn release(vifs: &[String]) -> Result<Released, IsolateError> {
    let vifs = unique_vifs(vifs)?;
    let mut batch = Batch::new();
    let mut found: Vec<&str> = Vec::new();
    for ft in &TABLES {
        let mut chains = Vec::new();
        for direction in [Direction::FromGuest, Direction::ToGuest] {
            let base = named_chain(ft, base_name(direction));
            for (vif, handle) in dispatch_rules(ft, base_name(direction))?.unwrap_or_default() {
                if let Some(v) = vifs.iter().find(|v| **v == vif) {
                    let rule = Rule::new(&base)
                        .map_err(|e| IsolateError::Build(e.to_string()))?
                        .with_handle(handle);
                    batch.add(&rule, MsgType::Del);
                    let chain = chain_name(direction, v);
                    if !chains.contains(&chain) {
                        chains.push(chain);
                    }
                    if !found.contains(v) {
                        found.push(v);
                    }
                }
            }
        }
        // After the rules jumping to them: a chain still referenced cannot be deleted.
        for chain in &chains {
            batch.add(&named_chain(ft, chain), MsgType::Del);
        }
    }
    let released = Released {
        released: found.iter().map(|v| v.to_string()).collect(),
        not_isolated: vifs
            .iter()
            .filter(|v| !found.contains(v))
            .map(|v| v.to_string())
            .collect(),
    };
    if !found.is_empty() {
        send(batch, format!("releasing {}", found.join(", ")))?;
    }
    Ok(released)
}

/// Releases every vif: both dormouse tables go, in one batch. Returns the vifs that were
/// isolated.
pub fn release_all() -> Result<Vec<String>, IsolateError> {
    let vifs: Vec<String> = list()?.into_iter().map(|v| v.vif).collect();
    let existing = rustables::list_tables().map_err(netlink("listing nftables tables"))?;
    let mut batch = Batch::new();
    let mut any = false;
    for ft in &TABLES {
        // Names are unique per family in practice; deleting one that is absent would fail the
        // batch, so only tables seen are deleted.
        if existing
            .iter()
            .any(|t| t.get_name().map(String::as_str) == Some(ft.table))
        {
            batch.add(&table(ft), MsgType::Del);
            any = true;
        }
    }
    if any {
        send(batch, "deleting the dormouse tables")?;
    }
    Ok(vifs)
}

/// The vifs isolated in the kernel's ruleset, by name.
pub fn list() -> Result<Vec<IsolatedVif>, IsolateError> {
    let mut out: BTreeMap<String, IsolatedVif> = BTreeMap::new();
    for ft in &TABLES {
        let Some(dispatched) = dispatch_rules(ft, FROM_VIFS)? else {
            continue;
        };
        for (vif, _) in dispatched {
            let mut allow = Vec::new();
            let mut dropped = 0;
            for direction in [Direction::FromGuest, Direction::ToGuest] {
                let (a, d) = read_vif_chain(ft, &chain_name(direction, &vif))?;
                if direction == Direction::FromGuest {
                    allow = a;
                }
                dropped += d;
            }
            let entry = out.entry(vif.clone()).or_insert_with(|| IsolatedVif {
                vif,
                allow: allow.clone(),
                families: Vec::new(),
                dropped_packets: 0,
            });
            if !entry.families.contains(&ft.label) {
                entry.families.push(ft.label);
            }
            entry.dropped_packets += dropped;
        }
    }
    Ok(out.into_values().collect())
}

/// The allowances (from the `allow ...` comments) and the drop counter of a per-vif chain.
fn read_vif_chain(ft: &FamilyTable, name: &str) -> Result<(Vec<Allow>, u64), IsolateError> {
    let rules = match rustables::list_rules_for_chain(&named_chain(ft, name)) {
        Ok(rules) => rules,
        Err(e) if is_enoent(&e) => return Ok((Vec::new(), 0)),
        Err(e) => {
            return Err(netlink(format!(
                "listing chain {name} of {} table {}",
                ft.label, ft.table
            ))(e));
        }
    };
    let mut allow = Vec::new();
    let mut dropped = 0;
    for rule in &rules {
        let Some(comment) = rule.get_userdata().and_then(|u| rules::read_comment(u)) else {
            continue;
        };
        if let Some(a) = comment.strip_prefix("allow ").and_then(|t| t.parse::<Allow>().ok()) {
            allow.push(a);
        } else if comment == rules::DROP_COMMENT {
            for expr in rule.get_expressions().into_iter().flat_map(|l| l.iter()) {
                if let Some(rustables::expr::ExpressionVariant::Counter(c)) = expr.get_data() {
                    dropped += c.get_nb_packets().copied().unwrap_or(0);
                }
            }
        }
    }
    Ok((allow, dropped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_parses_addresses_with_and_without_port() {
        let a: Allow = "10.0.0.1:7878".parse().unwrap();
        assert_eq!((a.addr.to_string(), a.port), ("10.0.0.1".to_owned(), Some(7878)));
        let a: Allow = "fd77::1".parse().unwrap();
        assert_eq!((a.addr.to_string(), a.port), ("fd77::1".to_owned(), None));
        let a: Allow = "[fd77::1]:80".parse().unwrap();
        assert_eq!(a.to_string(), "[fd77::1]:80");
        for bad in ["10.0.0.1:0", "0.0.0.0:1", "ff02::1", "host:80", "10.0.0.1:99999", ""] {
            assert!(bad.parse::<Allow>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn vif_names_are_checked_like_the_kernel_does() {
        for good in ["vif7.0", "vif7.0-emu", "web1-eth0"] {
            validate_vif(good).unwrap();
        }
        for bad in ["", "vif123456789.123", "a/b", "a b", "..", "a:1"] {
            assert!(validate_vif(bad).is_err(), "{bad:?} accepted");
        }
    }
}
