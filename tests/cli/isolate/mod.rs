//! `dormouse isolate` / `release` on real nftables, in network namespaces standing in for a Xen
//! host: a "dom0" namespace whose end of a veth is named like a Xen vif (`vif7.0`), a "guest"
//! namespace on the other end, and an "internet" namespace behind dom0, either on the same
//! bridge as the vif (vif-bridge) or routed by dom0 (vif-route). Every reachability claim is
//! measured with real TCP, UDP and ICMP over IPv4 and IPv6, and checked to hold before
//! isolation too, so a broken lab cannot pass for a working firewall. The namespaces (and with
//! them the rules) are deleted at the end, even on failure; dom0's own ruleset is never touched.

mod vifs;
mod xenstore;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

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
        let json = serde_json::from_str::<Value>(&json).unwrap();
        crate::schemas::assert_valid("isolate", &json);
        json.as_array().unwrap().clone()
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

pub(crate) use crate::output_text as text;

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
