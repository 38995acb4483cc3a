//! `dormouse isolate` / `release` on real nftables, in network namespaces standing in for a Xen
//! host: a "dom0" namespace whose end of a veth is named like a Xen vif (`vif7.0`), a "guest"
//! namespace on the other end, and an "internet" namespace behind dom0, either on the same
//! bridge as the vif (vif-bridge) or routed by dom0 (vif-route). Every reachability claim is
//! measured with real TCP, UDP and ICMP over IPv4 and IPv6, and checked to hold before
//! isolation too, so a broken lab cannot pass for a working firewall. The namespaces (and with
//! them the rules) are deleted at the end, even on failure; dom0's own ruleset is never touched.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::dormouse_bin;

/// Network namespaces, the responders serving in them and a scratch directory, all removed on
/// drop.
pub(crate) struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    stop: Arc<AtomicBool>,
    responders: Vec<JoinHandle<()>>,
    dir: tempfile::TempDir,
}

impl Lab {
    pub(crate) fn new(tag: &str) -> Lab {
        Lab {
            prefix: format!("dm{}-{tag}", std::process::id()),
            namespaces: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            responders: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A fresh namespace with loopback up and no IPv6 duplicate address detection (its delay
    /// would only slow the test).
    pub(crate) fn netns(&mut self, role: &str) -> String {
        let name = format!("{}-{role}", self.prefix);
        run("ip", &["netns", "add", &name]);
        self.namespaces.push(name.clone());
        self.sh(
            &name,
            "ip link set lo up
             sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0",
        );
        name
    }

    /// Runs a shell script in namespace `ns`; it must succeed.
    pub(crate) fn sh(&self, ns: &str, script: &str) -> String {
        let out = in_ns(ns, &["sh", "-ec", script]);
        assert!(out.status.success(), "in {ns}: {script}\n{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Answers every TCP connection to `addr` in `ns` with `reply`. In-process rather than
    /// `socat ...,fork SYSTEM:echo`: a forking socat loses replies under load (measured: about
    /// 1 in 20 concurrent UDP exchanges on loopback), which made lab failures look like
    /// firewall failures.
    fn serve_tcp(&mut self, ns: &str, addr: SocketAddr, reply: &'static str) {
        let listener =
            in_netns(ns, || TcpListener::bind(addr)).unwrap_or_else(|e| panic!("binding TCP {addr} in {ns}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::clone(&self.stop);
        self.responders.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        std::thread::spawn(move || answer_tcp(stream, reply));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => panic!("accepting on TCP {addr}: {e}"),
                }
            }
        }));
    }

    /// Answers every UDP datagram to `addr` in `ns` with `reply`, sent back to its source.
    fn serve_udp(&mut self, ns: &str, addr: SocketAddr, reply: &'static str) {
        let socket =
            in_netns(ns, || UdpSocket::bind(addr)).unwrap_or_else(|e| panic!("binding UDP {addr} in {ns}: {e}"));
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let stop = Arc::clone(&self.stop);
        self.responders.push(std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::Relaxed) {
                match socket.recv_from(&mut buf) {
                    Ok((_, peer)) => {
                        let _ = socket.send_to(format!("{reply}\n").as_bytes(), peer);
                    }
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                    Err(e) => panic!("receiving on UDP {addr}: {e}"),
                }
            }
        }));
    }

    /// `dormouse ARGS` in namespace `ns`.
    pub(crate) fn dormouse(&self, ns: &str, args: &[&str]) -> Output {
        let mut all = vec![dormouse_bin()];
        all.extend_from_slice(args);
        in_ns(ns, &all)
    }

    fn dormouse_ok(&self, ns: &str, args: &[&str]) -> String {
        let out = self.dormouse(ns, args);
        assert!(out.status.success(), "dormouse {args:?}:\n{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub(crate) fn isolated(&self, ns: &str) -> Vec<Value> {
        let json = self.dormouse_ok(ns, &["isolate", "--list", "--json"]);
        serde_json::from_str::<Value>(&json)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for responder in self.responders.drain(..) {
            let _ = responder.join();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

pub(crate) fn text(out: &Output) -> String {
    format!(
        "status {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}", text(&out));
}

/// Runs `f` on a thread that has entered network namespace `ns`; sockets it creates stay in
/// that namespace whichever thread uses them later.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let handle = std::fs::File::open(format!("/run/netns/{ns}"))
                .unwrap_or_else(|e| panic!("opening /run/netns/{ns}: {e}"));
            nix::sched::setns(handle, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("entering network namespace {ns}: {e}"));
            f()
        })
        .join()
        .unwrap()
    })
}

/// One TCP exchange: the reply, a half-close, then the client's end drained so the close is a
/// FIN (closing with unread data would send a reset that can discard the reply).
fn answer_tcp(mut stream: TcpStream, reply: &str) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.write_all(format!("{reply}\n").as_bytes());
    let _ = stream.shutdown(Shutdown::Write);
    let _ = io::copy(&mut (&stream).take(1 << 20), &mut io::sink());
}

pub(crate) fn in_ns(ns: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running ip netns exec")
}

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

/// A fake xenstore: `xenstore-read` and `xenstore-list` over a directory tree where node
/// /a/b is the directory ROOT/a/b and its value the file ROOT/a/b/.value; relative paths are
/// dom0's (/local/domain/0/...), as with the real tools run in dom0. A node with a `.slow`
/// file makes `xenstore-list` hang after touching ROOT/.listing.
fn fake_xenstore(dir: &Path) -> (PathBuf, PathBuf) {
    let root = dir.join("xenstore");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    let common = format!(
        "#!/bin/sh\nroot={}\np=$1\ncase $p in /*) ;; *) p=/local/domain/0/$p ;; esac\nd=$root$p\n",
        root.display()
    );
    let tools = [
        (
            "xenstore-read",
            "[ -f \"$d/.value\" ] || { echo \"xenstore-read: couldn't read path $1\" >&2; exit 1; }\nprintf '%s\\n' \"$(cat \"$d/.value\")\"\n",
        ),
        (
            "xenstore-list",
            "[ -d \"$d\" ] || { echo \"xenstore-list: couldn't list path $1\" >&2; exit 1; }\nif [ -f \"$d/.slow\" ]; then touch \"$root/.listing\"; sleep 60; fi\nls -1 \"$d\"\n",
        ),
    ];
    for (name, body) in tools {
        let path = bin.join(name);
        std::fs::write(&path, format!("{common}{body}")).unwrap();
        run("chmod", &["+x", path.to_str().unwrap()]);
    }
    (root, bin)
}

fn xs_write(root: &Path, key: &str, value: &str) {
    let dir = root.join(key.trim_start_matches('/'));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".value"), value).unwrap();
}

/// PATH with the fake xenstore tools and the dormouse binary first.
fn fake_path(bin: &Path) -> String {
    let dormouse_dir = Path::new(dormouse_bin()).parent().unwrap();
    format!(
        "{}:{}:{}",
        bin.display(),
        dormouse_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn isolate_domain_reads_its_vif_names_from_xenstore_and_survives_a_killed_dormouse() {
    let mut lab = Lab::new("xs");
    let dom0 = lab.netns("dom0");
    let (root, bin) = fake_xenstore(lab.dir.path());
    xs_write(&root, "/local/domain/0/backend/vif/7/0/mac", "00:16:3e:00:00:07");
    xs_write(&root, "/local/domain/0/backend/vif/7/1/vifname", "web1-eth1");
    xs_write(&root, "/local/domain/0/backend/vif/9/0/mac", "00:16:3e:00:00:09");
    std::fs::write(root.join("local/domain/0/backend/vif/9/.slow"), "").unwrap();
    let path = fake_path(&bin);
    let path_var = format!("PATH={path}");
    let with_path = |args: &[&str]| {
        let mut all = vec!["env", path_var.as_str(), dormouse_bin()];
        all.extend_from_slice(args);
        in_ns(&dom0, &all)
    };

    let out = with_path(&["isolate", "--domain", "7", "--allow", "10.0.0.1:7878"]);
    assert!(out.status.success(), "{}", text(&out));
    let names: Vec<String> = lab
        .isolated(&dom0)
        .iter()
        .map(|v| v["vif"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "vif7.0",
            "vif7.0-emu",
            "vif7.1",
            "vif7.1-emu",
            "web1-eth1",
            "web1-eth1-emu"
        ]
    );

    let out = with_path(&["isolate", "--domain", "8"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("xenstore-list /local/domain/0/backend/vif/8"),
        "{}",
        text(&out)
    );

    // A dormouse killed in the middle of isolating domain 9 (it waits on xenstore) changes
    // nothing: domain 7 stays isolated, domain 9 gets no half-installed rules.
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &dom0,
            "env",
            &path_var,
            dormouse_bin(),
            "isolate",
            "--domain",
            "9",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !root.join(".listing").exists() {
        assert!(Instant::now() < deadline, "dormouse never asked xenstore for domain 9");
        std::thread::sleep(Duration::from_millis(50));
    }
    run("kill", &["-KILL", &child.id().to_string()]);
    let _ = child.wait();
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let after = lab.isolated(&dom0);
    assert_eq!(after.len(), 6, "{after:?}");
    assert!(
        after.iter().all(|v| v["allow"] == serde_json::json!(["10.0.0.1:7878"])),
        "{after:?}"
    );

    let out = with_path(&["release", "--domain", "7", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let released: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(released["released"].as_array().unwrap().len(), 6, "{released}");
    assert!(lab.isolated(&dom0).is_empty());
}

#[test]
fn vif_hook_isolates_pending_domains_before_the_stock_script_runs() {
    let mut lab = Lab::new("hk");
    let dom0 = lab.netns("dom0");
    let (root, bin) = fake_xenstore(lab.dir.path());
    let scripts = lab.dir.path().join("etc-xen-scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    let hook = scripts.join("vif-dormouse");
    std::fs::copy(dormouse_tests::workspace_root().join("scripts/vif-dormouse"), &hook).unwrap();
    std::os::unix::fs::symlink("vif-dormouse", scripts.join("vif-dormouse-route")).unwrap();
    // Stock scripts that record how they were called and what was isolated at that moment.
    let log = lab.dir.path().join("stock.log");
    for stock in ["vif-bridge", "vif-route"] {
        let path = scripts.join(stock);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"$(basename \"$0\") $* script=$script isolated=$(dormouse isolate --list | cut -d: -f1 | tr '\\n' ' ')\" >> {}\n",
                log.display()
            ),
        )
        .unwrap();
        run("chmod", &["+x", path.to_str().unwrap()]);
    }
    let uuid7 = "5f0c6d3a-7a5e-4a53-9d0e-000000000007";
    xs_write(&root, "/local/domain/7/vm", &format!("/vm/{uuid7}"));
    xs_write(
        &root,
        &format!("/dormouse/pending/{uuid7}"),
        "10.77.0.1:7878 [fd77::1]:7878",
    );
    xs_write(&root, "/local/domain/0/backend/vif/7/1/vifname", "web1-eth1");
    xs_write(&root, "/local/domain/8/vm", "/vm/5f0c6d3a-7a5e-4a53-9d0e-000000000008");
    let uuid9 = "5f0c6d3a-7a5e-4a53-9d0e-000000000009";
    xs_write(&root, "/local/domain/9/vm", &format!("/vm/{uuid9}"));
    xs_write(&root, &format!("/dormouse/pending/{uuid9}"), "not-an-address");
    let path = fake_path(&bin);
    let hotplug = |script: &str, env: &[(&str, String)], args: &[&str]| {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &dom0, "env", "-i", &format!("PATH={path}")]);
        for (k, v) in env {
            cmd.arg(format!("{k}={v}"));
        }
        let out = cmd
            .arg(scripts.join(script))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        (out, logged)
    };
    let xl_env = |vif: &'static str, devid: &str| -> Vec<(&'static str, String)> {
        let domid = vif.trim_start_matches("vif").split('.').next().unwrap();
        vec![
            ("XENBUS_PATH", format!("backend/vif/{domid}/{devid}")),
            ("XENBUS_TYPE", "vif".into()),
            ("vif", vif.into()),
            ("script", "/etc/xen/scripts/vif-dormouse".into()),
        ]
    };

    // Pending domain 7: isolated before vif-bridge runs, with the pending key's allowances.
    let env = xl_env("vif7.0", "0");
    let (out, logged) = hotplug("vif-dormouse", &env, &["online", "type_if=vif"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        logged.trim(),
        format!(
            "vif-bridge online type_if=vif script={}/vif-bridge isolated=vif7.0",
            scripts.display()
        )
    );
    let listed = lab.isolated(&dom0);
    assert_eq!(
        listed[0]["allow"],
        serde_json::json!(["10.77.0.1:7878", "[fd77::1]:7878"])
    );
    // Its second vif, renamed by vifname, through the vif-route flavour; both names isolated.
    let env = xl_env("vif7.1", "1");
    let (out, logged) = hotplug("vif-dormouse-route", &env, &["online", "type_if=vif"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(logged.starts_with("vif-route online type_if=vif"), "{logged}");
    assert!(logged.contains("isolated=vif7.0 vif7.1 web1-eth1 "), "{logged}");
    // The HVM emulated twin comes with `add type_if=tap` and INTERFACE.
    let mut env = xl_env("vif7.0", "0");
    env.push(("INTERFACE", "vif7.0-emu".into()));
    let (out, logged) = hotplug("vif-dormouse", &env, &["add", "type_if=tap"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        logged.contains("isolated=vif7.0 vif7.0-emu vif7.1 web1-eth1 "),
        "{logged}"
    );
    // Going offline leaves the isolation: only `dormouse release` lifts it.
    let (out, logged) = hotplug("vif-dormouse", &xl_env("vif7.0", "0"), &["offline", "type_if=vif"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(logged.starts_with("vif-bridge offline type_if=vif"), "{logged}");
    assert_eq!(lab.isolated(&dom0).len(), 4);

    // Domain 8 is not pending: plain vif-bridge, nothing isolated.
    let (out, logged) = hotplug("vif-dormouse", &xl_env("vif8.0", "0"), &["online", "type_if=vif"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(logged.starts_with("vif-bridge online type_if=vif"), "{logged}");
    assert!(!lab.isolated(&dom0).iter().any(|v| v["vif"] == "vif8.0"));

    // Domain 9 is pending but cannot be isolated: the stock script never runs, the hotplug fails.
    let (out, logged) = hotplug("vif-dormouse", &xl_env("vif9.0", "0"), &["online", "type_if=vif"]);
    assert!(!out.status.success());
    assert_eq!(logged, "", "the stock script ran for a vif that could not be isolated");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("could not be isolated; not bringing it up"),
        "{}",
        text(&out)
    );
    // When xenstore cannot tell whether a domain is pending, its vif is isolated with nothing
    // allowed and then brought up: domain 10's pending node is listed but cannot be read,
    // domain 11 has no vm path at all.
    let uuid10 = "5f0c6d3a-7a5e-4a53-9d0e-000000000010";
    xs_write(&root, "/local/domain/10/vm", &format!("/vm/{uuid10}"));
    std::fs::create_dir_all(root.join(format!("dormouse/pending/{uuid10}"))).unwrap();
    for (vif, why) in [
        ("vif10.0", format!("cannot read /dormouse/pending/{uuid10}")),
        ("vif11.0", "cannot read /local/domain/11/vm".to_owned()),
    ] {
        let (out, logged) = hotplug("vif-dormouse", &xl_env(vif, "0"), &["online", "type_if=vif"]);
        assert!(out.status.success(), "{vif}: {}", text(&out));
        let isolated_then = logged.split("isolated=").nth(1).unwrap_or_default();
        assert!(
            isolated_then.split_whitespace().any(|name| name == vif),
            "{vif} was not isolated when the stock script ran: {logged}"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&why),
            "{vif}: {}",
            text(&out)
        );
        let entry = lab
            .isolated(&dom0)
            .into_iter()
            .find(|v| v["vif"] == vif)
            .unwrap_or_else(|| panic!("{vif} is not isolated"));
        assert_eq!(entry["allow"], serde_json::json!([]), "{vif}: {entry}");
    }
}
