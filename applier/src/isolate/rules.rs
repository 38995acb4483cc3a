//! The nftables objects of one isolated vif: what its two chains hold, built as netlink
//! expressions (no `nft` syntax involved).
//!
//! Both families get the same policy. In the `bridge` family the protocol is told by the
//! Ethernet type field and ARP is filtered too; in `inet` by `meta nfproto` (ARP never reaches
//! `inet`, and on a routed vif it does not leave the link anyway). The rules are stateless:
//! conntrack is absent from the bridge family without `nf_conntrack_bridge`, and the policy does
//! not need it, because pinning the *dom0-side* port pins both directions: from the guest only
//! segments *to* ADDR:PORT pass, towards the guest only segments *from* ADDR:PORT, so the guest
//! reaches no other dom0 service whatever source port it picks.
//!
//! Address resolution passes for the allowed addresses, and with an IPv6 allowance also
//! neighbour solicitations and advertisements between link-local addresses at hop limit 255:
//! the kernel's reachability probes leave from the link-local address, and such packets cannot
//! be routed off the link.

use std::net::{IpAddr, Ipv6Addr};

use rustables::expr::{
    Bitwise, Cmp, CmpOp, Counter, HighLevelPayload, ICMPv6HeaderField, IPv4HeaderField, IPv6HeaderField, Immediate,
    LLHeaderField, Meta, MetaType, NetworkHeaderField, Payload, Register, TCPHeaderField, TransportHeaderField,
    VerdictKind,
};
use rustables::{Chain, ProtocolFamily, Rule};

use super::{Allow, IsolateError};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_ICMPV6: u8 = 58;
const ND_NEIGHBOR_SOLICIT: u8 = 135;
const ND_NEIGHBOR_ADVERT: u8 = 136;
/// ARP header of Ethernet/IPv4 (htype 1, ptype 0x0800, hlen 6, plen 4): only then do the
/// address offsets below hold.
const ARP_ETHER_IPV4: [u8; 6] = [0, 1, 8, 0, 6, 4];
const ARP_SENDER_IP: u32 = 14;
const ARP_TARGET_IP: u32 = 24;
/// Offsets in the IPv6 header.
const IPV6_HOP_LIMIT: u32 = 7;
const IPV6_SADDR: u32 = 8;
const IPV6_DADDR: u32 = 24;
/// The target address of a neighbour solicitation, after type, code, checksum and reserved.
const ND_TARGET: u32 = 8;

/// Direction of a per-vif chain, seen from the guest.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    /// Everything the guest sends (ingress on the vif).
    FromGuest,
    /// Everything sent to the guest (egress on the vif).
    ToGuest,
}

/// nftables' rule comment (libnftnl's user data TLV, type 0, NUL-terminated), so that
/// `nft list ruleset` shows it and `isolate --list` reads it back.
pub(super) fn comment(text: &str) -> Vec<u8> {
    // nft limits comments to 128 bytes with the NUL.
    let bytes = &text.as_bytes()[..text.len().min(127)];
    let mut data = vec![0u8, (bytes.len() + 1) as u8];
    data.extend_from_slice(bytes);
    data.push(0);
    data
}

/// The comment of a rule's or chain's user data, if it carries one.
pub(super) fn read_comment(userdata: &[u8]) -> Option<String> {
    let mut rest = userdata;
    // TLVs: type, length, value; bounded by the data itself.
    while let [kind, len, tail @ ..] = rest {
        let len = usize::from(*len);
        let value = tail.get(..len)?;
        if *kind == 0 {
            let text = value.strip_suffix(&[0]).unwrap_or(value);
            return String::from_utf8(text.to_vec()).ok();
        }
        rest = &tail[len..];
    }
    None
}

/// `iifname VIF goto CHAIN` (from the guest) or `oifname VIF goto CHAIN`, commented with the
/// vif's name.
pub(super) fn dispatch(base: &Chain, vif: &str, target: &str, direction: Direction) -> Result<Rule, IsolateError> {
    let mut name = vif.as_bytes().to_vec();
    name.push(0);
    let key = match direction {
        Direction::FromGuest => MetaType::IifName,
        Direction::ToGuest => MetaType::OifName,
    };
    Ok(new_rule(base)?
        .with_expr(Meta::new(key))
        .with_expr(Cmp::new(CmpOp::Eq, name))
        .with_expr(Immediate::new_verdict(VerdictKind::Goto {
            chain: target.to_owned(),
        }))
        .with_userdata(comment(vif)))
}

/// The rules of one per-vif chain: the allowed exchanges with each ADDR[:PORT], then a counted
/// drop of everything else.
pub(super) fn vif_rules(
    family: ProtocolFamily,
    chain: &Chain,
    allow: &[Allow],
    direction: Direction,
) -> Result<Vec<Rule>, IsolateError> {
    let bridge = family == ProtocolFamily::Bridge;
    let r = |addr: IpAddr| -> Result<Rule, IsolateError> { Ok(ip_version(new_rule(chain)?, addr, bridge)) };
    // The peer address: destination of what the guest sends, source of what it receives.
    let (addr_field, port_field) = match direction {
        Direction::FromGuest => (AddrField::Daddr, TCPHeaderField::Dport),
        Direction::ToGuest => (AddrField::Saddr, TCPHeaderField::Sport),
    };
    let mut rules = Vec::new();
    for a in allow {
        let mut channel = match_addr(r(a.addr)?, a.addr, addr_field);
        if let Some(port) = a.port {
            channel = match_l4proto(channel, IPPROTO_TCP)
                .with_expr(HighLevelPayload::Transport(TransportHeaderField::Tcp(port_field)).build())
                .with_expr(Cmp::new(CmpOp::Eq, port.to_be_bytes()));
        }
        rules.push(accept(channel, &format!("allow {a}")));
    }

    // Address resolution, once per address.
    let mut addrs: Vec<IpAddr> = allow.iter().map(|a| a.addr).collect();
    addrs.sort();
    addrs.dedup();
    for addr in addrs {
        match addr {
            IpAddr::V4(v4) if bridge => {
                // ARP resolving ADDR (from the guest) or sent by ADDR (to the guest).
                let offset = match direction {
                    Direction::FromGuest => ARP_TARGET_IP,
                    Direction::ToGuest => ARP_SENDER_IP,
                };
                let arp = new_rule(chain)?
                    .with_expr(HighLevelPayload::LinkLayer(LLHeaderField::EtherType).build())
                    .with_expr(Cmp::new(CmpOp::Eq, ETH_P_ARP.to_be_bytes()))
                    .with_expr(network_payload(0, 6))
                    .with_expr(Cmp::new(CmpOp::Eq, ARP_ETHER_IPV4))
                    .with_expr(network_payload(offset, 4))
                    .with_expr(Cmp::new(CmpOp::Eq, v4.octets()));
                rules.push(accept(arp, &format!("arp for {v4}")));
            }
            IpAddr::V6(v6) => {
                // Neighbour discovery with ADDR, unless a port-less allowance already passes all.
                if !allow.iter().any(|a| a.addr == addr && a.port.is_none()) {
                    let nd = neighbour_discovery(match_addr(r(addr)?, addr, addr_field));
                    rules.push(accept(nd, &format!("nd with {v6}")));
                }
                if direction == Direction::FromGuest {
                    // The guest's solicitation for ADDR goes to ADDR's solicited-node group.
                    let group = IpAddr::V6(solicited_node(v6));
                    let solicit = match_l4proto(match_addr(r(addr)?, group, addr_field), IPPROTO_ICMPV6)
                        .with_expr(icmpv6_type())
                        .with_expr(Cmp::new(CmpOp::Eq, [ND_NEIGHBOR_SOLICIT]))
                        .with_expr(transport_payload(ND_TARGET, 16))
                        .with_expr(Cmp::new(CmpOp::Eq, v6.octets()));
                    rules.push(accept(solicit, &format!("nd solicitation for {v6}")));
                }
            }
            IpAddr::V4(_) => {}
        }
    }
    if let Some(v6) = allow.iter().map(|a| a.addr).find(IpAddr::is_ipv6) {
        // Neighbour unreachability probes leave from the link-local address (the kernel picks a
        // routable source only when a queued packet supplies one), so without this every aging
        // neighbour entry on either end of the channel fails. Hop limit 255 and a link-local
        // peer keep it on the link: no router forwards such packets, and receivers drop ND
        // whose hop limit is not 255 (RFC 4861 7.1).
        let offset = match direction {
            Direction::FromGuest => IPV6_DADDR,
            Direction::ToGuest => IPV6_SADDR,
        };
        let on_link = r(v6)?
            .with_expr(network_payload(IPV6_HOP_LIMIT, 1))
            .with_expr(Cmp::new(CmpOp::Eq, [255u8]))
            .with_expr(network_payload(offset, 2))
            .with_expr(Bitwise::new([0xffu8, 0xc0], [0u8, 0]).map_err(|e| IsolateError::Build(format!("{e:?}")))?)
            .with_expr(Cmp::new(CmpOp::Eq, [0xfeu8, 0x80]));
        rules.push(accept(neighbour_discovery(on_link), "nd with link-local addresses"));
    }
    let drop = new_rule(chain)?
        .with_expr(Counter::default().with_nb_bytes(0u64).with_nb_packets(0u64))
        .with_expr(Immediate::new_verdict(VerdictKind::Drop))
        .with_userdata(comment(DROP_COMMENT));
    rules.push(drop);
    Ok(rules)
}

/// Comment of the final rule of every per-vif chain, whose counter `--list` reports.
pub(super) const DROP_COMMENT: &str = "drop everything else";

#[derive(Clone, Copy)]
enum AddrField {
    Saddr,
    Daddr,
}

fn new_rule(chain: &Chain) -> Result<Rule, IsolateError> {
    Rule::new(chain).map_err(|e| IsolateError::Build(e.to_string()))
}

fn accept(rule: Rule, why: &str) -> Rule {
    rule.with_expr(Immediate::new_verdict(VerdictKind::Accept))
        .with_userdata(comment(why))
}

/// Only packets of ADDR's IP version: the Ethernet type in the bridge family (VLAN-tagged frames
/// thus never match), `meta nfproto` in inet.
fn ip_version(rule: Rule, addr: IpAddr, bridge: bool) -> Rule {
    if bridge {
        let ethertype = if addr.is_ipv4() { ETH_P_IP } else { ETH_P_IPV6 };
        rule.with_expr(HighLevelPayload::LinkLayer(LLHeaderField::EtherType).build())
            .with_expr(Cmp::new(CmpOp::Eq, ethertype.to_be_bytes()))
    } else {
        let nfproto = if addr.is_ipv4() { NFPROTO_IPV4 } else { NFPROTO_IPV6 };
        rule.with_expr(Meta::new(MetaType::NfProto))
            .with_expr(Cmp::new(CmpOp::Eq, [nfproto]))
    }
}

fn match_addr(rule: Rule, addr: IpAddr, field: AddrField) -> Rule {
    let (payload, bytes) = match (addr, field) {
        (IpAddr::V4(a), AddrField::Saddr) => (NetworkHeaderField::IPv4(IPv4HeaderField::Saddr), a.octets().to_vec()),
        (IpAddr::V4(a), AddrField::Daddr) => (NetworkHeaderField::IPv4(IPv4HeaderField::Daddr), a.octets().to_vec()),
        (IpAddr::V6(a), AddrField::Saddr) => (NetworkHeaderField::IPv6(IPv6HeaderField::Saddr), a.octets().to_vec()),
        (IpAddr::V6(a), AddrField::Daddr) => (NetworkHeaderField::IPv6(IPv6HeaderField::Daddr), a.octets().to_vec()),
    };
    rule.with_expr(HighLevelPayload::Network(payload).build())
        .with_expr(Cmp::new(CmpOp::Eq, bytes))
}

fn match_l4proto(rule: Rule, proto: u8) -> Rule {
    rule.with_expr(Meta::new(MetaType::L4Proto))
        .with_expr(Cmp::new(CmpOp::Eq, [proto]))
}

/// ICMPv6 neighbour solicitation or advertisement.
fn neighbour_discovery(rule: Rule) -> Rule {
    match_l4proto(rule, IPPROTO_ICMPV6)
        .with_expr(icmpv6_type())
        .with_expr(Cmp::new(CmpOp::Gte, [ND_NEIGHBOR_SOLICIT]))
        .with_expr(Cmp::new(CmpOp::Lte, [ND_NEIGHBOR_ADVERT]))
}

fn icmpv6_type() -> Payload {
    HighLevelPayload::Transport(TransportHeaderField::ICMPv6(ICMPv6HeaderField::Type)).build()
}

fn network_payload(offset: u32, len: u32) -> Payload {
    raw_payload(rustables::sys::NFT_PAYLOAD_NETWORK_HEADER, offset, len)
}

fn transport_payload(offset: u32, len: u32) -> Payload {
    raw_payload(rustables::sys::NFT_PAYLOAD_TRANSPORT_HEADER, offset, len)
}

fn raw_payload(base: u32, offset: u32, len: u32) -> Payload {
    Payload::default()
        .with_base(base)
        .with_offset(offset)
        .with_len(len)
        .with_dreg(Register::Reg1)
}

/// ff02::1:ffXX:XXXX, the multicast group a solicitation for `addr` is sent to (RFC 4291 2.7.1).
fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    let mut group = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, 0, 0, 0];
    group[13..].copy_from_slice(&o[13..]);
    Ipv6Addr::from(group)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_round_trips_and_truncates() {
        assert_eq!(read_comment(&comment("vif7.0")).as_deref(), Some("vif7.0"));
        let long = "x".repeat(300);
        assert_eq!(read_comment(&comment(&long)).map(|c| c.len()), Some(127));
        // A TLV claiming more bytes than there are is refused, not read past its end.
        assert_eq!(read_comment(&[0, 9, b'a']), None);
        // Other TLV types are skipped.
        assert_eq!(read_comment(&[1, 1, 7, 0, 2, b'a', 0]).as_deref(), Some("a"));
    }

    #[test]
    fn solicited_node_group() {
        let a: Ipv6Addr = "fd77::1:2:3344:5566".parse().unwrap();
        assert_eq!(solicited_node(a), "ff02::1:ff44:5566".parse::<Ipv6Addr>().unwrap());
    }
}
