//! Vifs named on the command line, on a bridge (vif-bridge) and routed by dom0 (vif-route):
//! what the guest reaches before isolation, while isolated and after release, probed with real
//! traffic; and a batch the kernel refuses installs nothing.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::{Lab, in_ns, text};

/// One reachability probe from a namespace, with a 2 s budget.
#[derive(Clone, Copy, Debug)]
enum Probe<'a> {
    /// TCP to ADDR:PORT whose server answers `marker`; `from_port` binds the source port.
    Tcp(&'a str, u16, &'a str, Option<u16>),
    Udp(&'a str, u16, &'a str),
    Ping(&'a str),
}

fn socat_addr(addr: &str) -> String {
    if addr.contains(':') {
        format!("[{addr}]")
    } else {
        addr.to_owned()
    }
}

fn reaches(ns: &str, probe: Probe) -> bool {
    match probe {
        Probe::Tcp(addr, port, marker, from_port) => {
            let mut target = format!("TCP:{}:{port},connect-timeout=2", socat_addr(addr));
            if let Some(p) = from_port {
                target.push_str(&format!(",sourceport={p},reuseaddr"));
            }
            let out = in_ns(ns, &["socat", "-T2", "-t2", "-", &target]);
            String::from_utf8_lossy(&out.stdout).contains(marker)
        }
        Probe::Udp(addr, port, marker) => {
            let target = format!("UDP:{}:{port}", socat_addr(addr));
            let script = format!("echo probe | socat -T2 -t2 - {target}");
            let out = in_ns(ns, &["sh", "-c", &script]);
            String::from_utf8_lossy(&out.stdout).contains(marker)
        }
        Probe::Ping(addr) => in_ns(ns, &["ping", "-c1", "-W2", addr]).status.success(),
    }
}

/// Runs the probes in parallel and asserts each one's outcome. A probe expected to pass gets
/// three tries (the first packets of a flow can be lost while neighbour resolution settles after
/// a change); one expected to be blocked must fail its only try.
fn expect(ns: &str, expected: bool, probes: &[Probe], when: &str) {
    let tries = if expected { 3 } else { 1 };
    let results: Vec<(Probe, bool)> = std::thread::scope(|s| {
        let handles: Vec<_> = probes
            .iter()
            .map(|p| (*p, s.spawn(move || (0..tries).any(|_| reaches(ns, *p)))))
            .collect();
        handles.into_iter().map(|(p, h)| (p, h.join().unwrap())).collect()
    });
    let wrong: Vec<_> = results.iter().filter(|(_, ok)| *ok != expected).collect();
    assert!(
        wrong.is_empty(),
        "{when}: from {ns}, expected every probe to {}, but: {wrong:?}",
        if expected { "pass" } else { "be blocked" }
    );
}

/// The internet's services: TCP, UDP and ICMP over IPv4 and IPv6.
fn internet_probes<'a>(v4: &'a str, v6: &'a str) -> Vec<Probe<'a>> {
    vec![
        Probe::Tcp(v4, 80, "inet-tcp", None),
        Probe::Tcp(v6, 80, "inet-tcp", None),
        Probe::Udp(v4, 53, "inet-udp"),
        Probe::Udp(v6, 53, "inet-udp"),
        Probe::Ping(v4),
        Probe::Ping(v6),
    ]
}

/// Serves the internet's end of those probes on ADDR4 and ADDR6: TCP port 80 and UDP port 53.
fn serve_internet(lab: &mut Lab, ns: &str, v4: &str, v6: &str) {
    for addr in [v4, v6] {
        let ip: IpAddr = addr.parse().unwrap();
        lab.serve_tcp(ns, SocketAddr::new(ip, 80), "inet-tcp");
        lab.serve_udp(ns, SocketAddr::new(ip, 53), "inet-udp");
    }
}

/// The agent channel's dom0 end on ADDR:7878, plus another dom0 service on port 22 the guest
/// must never reach.
fn serve_dom0(lab: &mut Lab, ns: &str, v4: &str, v6: &str) {
    for addr in [v4, v6] {
        let ip: IpAddr = addr.parse().unwrap();
        lab.serve_tcp(ns, SocketAddr::new(ip, 7878), "agent-channel");
        lab.serve_tcp(ns, SocketAddr::new(ip, 22), "dom0-ssh");
    }
}

/// Forces `ns`'s neighbour entry for ADDR (reached over DEV, link-layer address of the peer's
/// PEER_DEV in PEER) into PROBE and asserts the peer confirms it. The kernel sends those unicast
/// solicitations from its link-local address, as it does whenever an entry ages during a long
/// apply; were they dropped, the entry would go FAILED.
fn assert_neighbour_probe_confirmed(lab: &Lab, ns: &str, dev: &str, addr: &str, peer: &str, peer_dev: &str) {
    let lladdr = lab.sh(peer, &format!("cat /sys/class/net/{peer_dev}/address"));
    lab.sh(
        ns,
        &format!(
            "ip -6 neigh replace {addr} lladdr {} dev {dev} nud probe",
            lladdr.trim()
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let state = lab.sh(ns, &format!("ip -6 neigh show {addr} dev {dev}"));
        if state.contains("REACHABLE") {
            return;
        }
        assert!(
            !state.contains("FAILED") && Instant::now() < deadline,
            "in {ns}, the neighbour probe of {addr} on {dev} was not answered: {state}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the listeners accept.
fn wait_listening(ns: &str, probe: Probe) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reaches(ns, probe) {
        assert!(
            Instant::now() < deadline,
            "{probe:?} from {ns} never answered: lab setup broken"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A guest namespace on the far end of the veth `vif` in `dom0`.
fn add_guest(lab: &mut Lab, dom0: &str, role: &str, vif: &str, setup: &str) -> String {
    let guest = lab.netns(role);
    lab.sh(
        dom0,
        &format!("ip link add {vif} type veth peer name eth0 netns {guest}"),
    );
    lab.sh(&guest, &format!("ip link set eth0 up\n{setup}"));
    guest
}

#[test]
fn bridged_vifs_pass_only_the_agent_channel_until_released() {
    let mut lab = Lab::new("br");
    let dom0 = lab.netns("dom0");
    lab.sh(
        &dom0,
        "ip link add br0 type bridge forward_delay 0 stp_state 0
         ip addr add 10.77.0.1/24 dev br0
         ip addr add fd77::1/64 dev br0 nodad
         ip link set br0 up",
    );
    let guest = add_guest(
        &mut lab,
        &dom0,
        "guest",
        "vif7.0",
        "ip addr add 10.77.0.7/24 dev eth0; ip addr add fd77::7/64 dev eth0 nodad",
    );
    let guest2 = add_guest(
        &mut lab,
        &dom0,
        "guest2",
        "vif8.0",
        "ip addr add 10.77.0.8/24 dev eth0; ip addr add fd77::8/64 dev eth0 nodad",
    );
    let internet = add_guest(
        &mut lab,
        &dom0,
        "inet",
        "uplink0",
        "ip addr add 10.77.0.100/24 dev eth0; ip addr add fd77::100/64 dev eth0 nodad",
    );
    lab.sh(
        &dom0,
        "for i in vif7.0 vif8.0 uplink0; do ip link set $i master br0 up; done",
    );
    serve_internet(&mut lab, &internet, "10.77.0.100", "fd77::100");
    serve_dom0(&mut lab, &dom0, "10.77.0.1", "fd77::1");
    // The guest's agent, which dom0 reaches from source port 7878.
    lab.serve_tcp(&guest, "10.77.0.7:9000".parse().unwrap(), "guest-agent");

    let internet_probes = internet_probes("10.77.0.100", "fd77::100");
    let channel = [
        Probe::Tcp("10.77.0.1", 7878, "agent-channel", None),
        Probe::Tcp("fd77::1", 7878, "agent-channel", None),
    ];
    let dom0_other = [
        Probe::Tcp("10.77.0.1", 22, "dom0-ssh", None),
        // The dom0-side port is what the rules pin: the guest's source port buys nothing.
        Probe::Tcp("10.77.0.1", 22, "dom0-ssh", Some(7878)),
        Probe::Tcp("fd77::1", 22, "dom0-ssh", Some(7878)),
        Probe::Ping("10.77.0.1"),
    ];
    for probe in internet_probes.iter().chain(&dom0_other[..1]) {
        wait_listening(&guest, *probe);
    }
    wait_listening(&dom0, Probe::Tcp("10.77.0.7", 9000, "guest-agent", None));
    expect(&guest, true, &internet_probes, "before isolation");
    expect(&guest, true, &dom0_other[..1], "before isolation");
    expect(&guest2, true, &internet_probes[..2], "before isolation");

    let out = lab.dormouse_ok(
        &dom0,
        &[
            "isolate",
            "--vif",
            "vif7.0",
            "vif8.0",
            "--allow",
            "10.77.0.1:7878",
            "--allow",
            "[fd77::1]:7878",
            // dom0 may also reach the guest's agent from source port 7879 (7878 is listened on).
            "--allow",
            "10.77.0.1:7879",
        ],
    );
    assert!(out.contains("isolated vif7.0 vif8.0"), "{out}");
    // From here on no dormouse process runs: what isolates is the kernel's ruleset alone.
    expect(&guest, false, &internet_probes, "isolated");
    expect(&guest, false, &dom0_other, "isolated");
    expect(&guest, true, &channel, "isolated");
    assert_neighbour_probe_confirmed(&lab, &dom0, "br0", "fd77::7", &guest, "eth0");
    assert_neighbour_probe_confirmed(&lab, &guest, "eth0", "fd77::1", &dom0, "br0");
    expect(&guest2, false, &internet_probes, "isolated");
    expect(&guest2, true, &channel[..1], "isolated");
    // dom0 → agent: only from the pinned source port.
    expect(
        &dom0,
        true,
        &[Probe::Tcp("10.77.0.7", 9000, "guest-agent", Some(7879))],
        "isolated",
    );
    expect(
        &dom0,
        false,
        &[Probe::Tcp("10.77.0.7", 9000, "guest-agent", None)],
        "isolated",
    );
    // The internet cannot reach into the guest either.
    expect(
        &internet,
        false,
        &[Probe::Ping("10.77.0.7"), Probe::Ping("fd77::7")],
        "isolated",
    );

    let ruleset = lab.sh(&dom0, "nft list ruleset");
    for needle in [
        "table bridge dormouse-bridge",
        "table inet dormouse-inet",
        "type filter hook prerouting priority filter; policy accept;",
        "iifname \"vif7.0\" goto from-vif7.0",
        "oifname \"vif7.0\" goto to-vif7.0",
        "iifname \"vif8.0\" goto from-vif8.0",
        "ip daddr 10.77.0.1 tcp dport 7878 accept",
        "ip saddr 10.77.0.1 tcp sport 7878 accept",
        "ip6 daddr fd77::1 tcp dport 7878 accept",
        "arp daddr ip 10.77.0.1 accept",
        "arp saddr ip 10.77.0.1 accept",
        "drop comment \"drop everything else\"",
    ] {
        assert!(
            ruleset.contains(needle),
            "`{needle}` missing from nft list ruleset:\n{ruleset}"
        );
    }
    // Each per-vif chain: the channel, ARP/ND for it (ND also with link-local addresses, hop
    // limit 255: never forwarded), and a final drop; nothing else accepts.
    let chain = lab.sh(&dom0, "nft list chain bridge dormouse-bridge from-vif7.0");
    assert_eq!(chain.matches(" accept").count(), 7, "{chain}");
    assert!(
        chain.contains("ip6 hoplimit 255 @nh,192,16 & 0xffc0 == 0xfe80 icmpv6 type 135-136 accept"),
        "{chain}"
    );
    let last = chain.lines().rfind(|l| l.contains("comment")).unwrap();
    assert!(last.contains("counter") && last.contains("drop"), "{chain}");

    let listed = lab.isolated(&dom0);
    let names: Vec<&str> = listed.iter().map(|v| v["vif"].as_str().unwrap()).collect();
    assert_eq!(names, ["vif7.0", "vif8.0"]);
    assert_eq!(
        listed[0]["allow"],
        serde_json::json!(["10.77.0.1:7878", "10.77.0.1:7879", "[fd77::1]:7878"])
    );
    assert_eq!(listed[0]["families"], serde_json::json!(["bridge", "inet"]));
    assert!(listed[0]["dropped_packets"].as_u64().unwrap() > 0, "{listed:?}");

    let out = lab.dormouse_ok(&dom0, &["release", "--vif", "vif7.0"]);
    assert_eq!(out.trim(), "released vif7.0");
    expect(&guest, true, &internet_probes, "after releasing vif7.0");
    expect(&guest, true, &dom0_other[..1], "after releasing vif7.0");
    expect(&guest2, false, &internet_probes, "vif8.0 while vif7.0 is released");
    let names: Vec<String> = lab
        .isolated(&dom0)
        .iter()
        .map(|v| v["vif"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["vif8.0"]);

    let out = lab.dormouse_ok(&dom0, &["release", "--all"]);
    assert_eq!(out.trim(), "released vif8.0");
    expect(&guest2, true, &internet_probes, "after release --all");
    let ruleset = lab.sh(&dom0, "nft list ruleset");
    assert!(!ruleset.contains("dormouse"), "{ruleset}");
}

#[test]
fn routed_vif_passes_only_the_agent_channel_until_released() {
    let mut lab = Lab::new("rt");
    let dom0 = lab.netns("dom0");
    lab.sh(&dom0, "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1");
    let guest = add_guest(
        &mut lab,
        &dom0,
        "guest",
        "vif7.0",
        "ip addr add 10.78.0.7/24 dev eth0; ip addr add fd78::7/64 dev eth0 nodad
         ip route add default via 10.78.0.1; ip -6 route add default via fd78::1",
    );
    let internet = add_guest(
        &mut lab,
        &dom0,
        "inet",
        "uplink0",
        "ip addr add 10.79.0.100/24 dev eth0; ip addr add fd79::100/64 dev eth0 nodad
         ip route add default via 10.79.0.1; ip -6 route add default via fd79::1",
    );
    // What vif-route does: dom0's address on the vif, the guest reached through it.
    lab.sh(
        &dom0,
        "ip addr add 10.78.0.1/24 dev vif7.0; ip addr add fd78::1/64 dev vif7.0 nodad; ip link set vif7.0 up
         ip addr add 10.79.0.1/24 dev uplink0; ip addr add fd79::1/64 dev uplink0 nodad; ip link set uplink0 up",
    );
    serve_internet(&mut lab, &internet, "10.79.0.100", "fd79::100");
    serve_dom0(&mut lab, &dom0, "10.78.0.1", "fd78::1");
    let internet_probes = internet_probes("10.79.0.100", "fd79::100");
    let channel = [
        Probe::Tcp("10.78.0.1", 7878, "agent-channel", None),
        Probe::Tcp("fd78::1", 7878, "agent-channel", None),
    ];
    for probe in internet_probes.iter().chain(&channel) {
        wait_listening(&guest, *probe);
    }
    expect(&guest, true, &internet_probes, "before isolation");

    lab.dormouse_ok(
        &dom0,
        &[
            "isolate",
            "--vif",
            "vif7.0",
            "--allow",
            "10.78.0.1:7878",
            "--allow",
            "[fd78::1]:7878",
        ],
    );
    expect(&guest, false, &internet_probes, "isolated");
    expect(
        &guest,
        false,
        &[Probe::Tcp("10.78.0.1", 22, "dom0-ssh", Some(7878))],
        "isolated",
    );
    expect(&guest, true, &channel, "isolated");
    assert_neighbour_probe_confirmed(&lab, &dom0, "vif7.0", "fd78::7", &guest, "eth0");
    assert_neighbour_probe_confirmed(&lab, &guest, "eth0", "fd78::1", &dom0, "vif7.0");
    expect(
        &internet,
        false,
        &[Probe::Ping("10.78.0.7"), Probe::Ping("fd78::7")],
        "isolated",
    );
    let chain = lab.sh(&dom0, "nft list chain inet dormouse-inet from-vif7.0");
    assert!(chain.contains("ip daddr 10.78.0.1 tcp dport 7878 accept"), "{chain}");

    let out = lab.dormouse_ok(&dom0, &["release", "--vif", "vif7.0", "vif9.0"]);
    assert_eq!(out, "released vif7.0\nvif9.0 was not isolated\n");
    expect(&guest, true, &internet_probes, "after release");
}

#[test]
fn a_refused_batch_installs_nothing() {
    let mut lab = Lab::new("at");
    let dom0 = lab.netns("dom0");
    // A base chain of dormouse's name at another priority: the kernel refuses to re-hook it.
    lab.sh(
        &dom0,
        "nft add table bridge dormouse-bridge
         nft add chain bridge dormouse-bridge from-vifs '{ type filter hook prerouting priority 10; }'",
    );
    let out = lab.dormouse(&dom0, &["isolate", "--vif", "vif7.0"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("installing the isolation of vif7.0"),
        "{}",
        text(&out)
    );
    // Not even the inet table, which the batch created before the refused message, remains.
    let ruleset = lab.sh(&dom0, "nft list ruleset");
    assert!(
        !ruleset.contains("dormouse-inet") && !ruleset.contains("vif7.0"),
        "{ruleset}"
    );
    lab.dormouse_ok(&dom0, &["release", "--all"]);
    lab.dormouse_ok(&dom0, &["isolate", "--vif", "vif7.0"]);
    assert_eq!(lab.isolated(&dom0).len(), 1);
}
