//! `--net restricted`: the sandbox gets a network namespace with only loopback, and on that
//! loopback an HTTP proxy served by dom0 that connects only to the hosts of the guest's package
//! sources (apt's `sources.list`/`.sources`, yum/dnf `.repo` files). The command finds it
//! through `http_proxy`/`https_proxy`, which apt, dnf and curl honour; anything that ignores
//! them has no route at all. Plain HTTP is forwarded one request per connection
//! (`Connection: close`); HTTPS goes through `CONNECT` to an allowed host's port only.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use serde::Serialize;

use crate::disk::{open_in_root, read_in_root};
use crate::sandbox::SandboxError;

/// Longest request head accepted from the sandbox.
const MAX_HEAD: usize = 64 << 10;
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;

/// A host and port the sandbox may reach, and how: `tls` endpoints (from `https://` sources)
/// only through `CONNECT`, the others only by forwarded plain HTTP requests, so a guest-listed
/// `http://` source never becomes a raw tunnel.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl Endpoint {
    /// `HOST:PORT` as given to `--allow`: both plain and CONNECT access.
    pub fn parse_allow(text: &str) -> Option<[Endpoint; 2]> {
        let plain = parse_host_port(text, 0, false).filter(|e| e.port != 0)?;
        let tls = Endpoint {
            tls: true,
            ..plain.clone()
        };
        Some([plain, tls])
    }
}

/// The endpoints of every package source configured in the guest tree at `root`.
pub fn allowed_endpoints(root: &Path) -> Result<BTreeSet<Endpoint>, SandboxError> {
    let root_fd: OwnedFd = File::open(root)
        .map_err(|e| SandboxError::io("opening the guest tree", root, e))?
        .into();
    let mut uris = Vec::new();
    let read = |path: &str| {
        read_in_root(&root_fd, root, path, 1 << 20)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    if let Some(text) = read("etc/apt/sources.list") {
        if let Ok(entries) = packages::apt::parse_sources_list(&text, "/etc/apt/sources.list") {
            uris.extend(entries.into_iter().map(|e| e.uri));
        }
    }
    for name in list_dir_in_root(&root_fd, "etc/apt/sources.list.d", 1024) {
        let path = format!("etc/apt/sources.list.d/{name}");
        let Some(text) = read(&path) else { continue };
        let entries = match packages::apt::sources_file_kind(&name) {
            Some(false) => packages::apt::parse_sources_list(&text, &path),
            Some(true) => packages::apt::parse_deb822_sources(&text, &path),
            None => continue,
        };
        uris.extend(entries.into_iter().flatten().map(|e| e.uri));
    }
    for dir in ["etc/yum.repos.d", "etc/dnf/repos.d"] {
        for name in list_dir_in_root(&root_fd, dir, 1024) {
            if !name.ends_with(".repo") {
                continue;
            }
            let path = format!("{dir}/{name}");
            let Some(text) = read(&path) else { continue };
            for repo in packages::yum::parse_repo_file(&text, &path).into_iter().flatten() {
                if repo.enabled {
                    uris.extend(repo.baseurls);
                    uris.extend(repo.mirrorlist);
                    uris.extend(repo.metalink);
                }
            }
        }
    }
    Ok(uris.iter().filter_map(|u| endpoint_of_uri(u)).collect())
}

/// Names in a directory of the guest tree (resolved inside it), at most `limit`.
fn list_dir_in_root(root: &OwnedFd, path: &str, limit: usize) -> Vec<String> {
    let Ok(dir) = open_in_root(root, path, libc::O_RDONLY | libc::O_DIRECTORY) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd())) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .take(limit)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// `http://host[:port]/...` or `https://...`; other schemes (file:, cdrom:) need no network.
fn endpoint_of_uri(uri: &str) -> Option<Endpoint> {
    let (scheme, rest) = uri.split_once("://")?;
    let (default_port, tls) = match scheme.to_ascii_lowercase().as_str() {
        "http" => (80, false),
        "https" => (443, true),
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    parse_host_port(authority, default_port, tls)
}

fn parse_host_port(authority: &str, default_port: u16, tls: bool) -> Option<Endpoint> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => default_port,
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().ok()?),
            None => (authority, default_port),
        }
    };
    if host.is_empty() || host.len() > 253 {
        return None;
    }
    Some(Endpoint {
        host: host.to_ascii_lowercase(),
        port,
        tls,
    })
}

/// What the proxy did, for the run report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProxyLog {
    pub allowed: Vec<Endpoint>,
    /// Requests refused, as `host:port`.
    pub denied: Vec<String>,
    pub forwarded: u64,
}

/// The sandbox's network namespace (bind-mounted at `<run>/netns` so the init can join it) and
/// the proxy serving on its loopback.
pub struct RestrictedNet {
    pub netns: PathBuf,
    pub port: u16,
    log: Arc<Mutex<ProxyLog>>,
}

impl RestrictedNet {
    /// Creates the namespace in a short-lived thread (network namespaces are per thread),
    /// brings up its loopback, binds the proxy there and starts serving from dom0's namespace.
    pub fn start(
        run_dir: &Path,
        from_guest: BTreeSet<Endpoint>,
        operator: BTreeSet<Endpoint>,
    ) -> Result<RestrictedNet, SandboxError> {
        let netns = run_dir.join("netns");
        File::create(&netns).map_err(|e| SandboxError::io("creating the netns mount point", &netns, e))?;
        let target = netns.clone();
        let listener = std::thread::spawn(move || -> Result<TcpListener, SandboxError> {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| SandboxError::io("creating the sandbox's network namespace", &target, e))?;
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| SandboxError::io("pinning the sandbox's network namespace", &target, e))?;
            crate::sandbox::loopback_up()?;
            TcpListener::bind("127.0.0.1:0").map_err(|e| SandboxError::io("binding the proxy", &target, e))
        })
        .join()
        .map_err(|_| SandboxError::Confine("the network namespace thread panicked".into()))??;
        let port = listener
            .local_addr()
            .map_err(|e| SandboxError::io("reading the proxy's address", &netns, e))?
            .port();
        let all: BTreeSet<Endpoint> = from_guest.union(&operator).cloned().collect();
        let log = Arc::new(Mutex::new(ProxyLog {
            allowed: all.iter().cloned().collect(),
            ..Default::default()
        }));
        let allowed = Arc::new(Allowed { all, operator });
        let shared = Arc::clone(&log);
        std::thread::spawn(move || serve(listener, allowed, shared));
        Ok(RestrictedNet { netns, port, log })
    }

    pub fn log(&self) -> ProxyLog {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

struct Allowed {
    /// From the guest's sources and `--allow`.
    all: BTreeSet<Endpoint>,
    /// From `--allow` only: these may be dom0's loopback.
    operator: BTreeSet<Endpoint>,
}

fn serve(listener: TcpListener, allowed: Arc<Allowed>, log: Arc<Mutex<ProxyLog>>) {
    let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        use std::sync::atomic::Ordering;
        if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            let _ = respond(&client, 503, "too many connections through the dormouse proxy");
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (allowed, log, active) = (Arc::clone(&allowed), Arc::clone(&log), Arc::clone(&active));
        std::thread::spawn(move || {
            handle(client, &allowed, &log);
            active.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

fn handle(client: TcpStream, allowed: &Allowed, log: &Mutex<ProxyLog>) {
    let (operator_allowed, allowed) = (&allowed.operator, &allowed.all);
    let _ = client.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(reader_half) = client.try_clone() else { return };
    let mut reader = BufReader::new(reader_half);
    let Some(head) = read_head(&mut reader) else {
        let _ = respond(&client, 400, "malformed or oversized request head");
        return;
    };
    let request_line = head.first().cloned().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (endpoint, forward_head) = if method.eq_ignore_ascii_case("CONNECT") {
        (parse_host_port(target, 443, true), None)
    } else {
        match absolute_target(target) {
            Some((endpoint, path)) => {
                let version = parts.next().unwrap_or("HTTP/1.1");
                let mut lines = vec![format!("{method} {path} {version}")];
                lines.extend(
                    head.iter()
                        .skip(1)
                        .filter(|l| {
                            let name = l.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
                            !matches!(name.as_str(), "connection" | "proxy-connection" | "keep-alive")
                        })
                        .cloned(),
                );
                lines.push("Connection: close".into());
                (Some(endpoint), Some(lines.join("\r\n") + "\r\n\r\n"))
            }
            None => (None, None),
        }
    };
    let Some(endpoint) = endpoint else {
        let _ = respond(
            &client,
            400,
            "the dormouse proxy needs an absolute http:// URI or CONNECT host:port",
        );
        return;
    };
    // Every refusal is logged for the run's report and answered 403 with the reason.
    let deny = |why: &str| {
        let target = format!("{}:{}", endpoint.host, endpoint.port);
        let message = format!("dormouse --net restricted: {target} {why}");
        if let Ok(mut log) = log.lock() {
            log.denied.push(target);
        }
        let _ = respond(&client, 403, &message);
    };
    if !allowed.contains(&endpoint) {
        deny("is not a package source of this guest");
        return;
    }
    let addrs: Vec<SocketAddr> = (endpoint.host.as_str(), endpoint.port)
        .to_socket_addrs()
        .map(Iterator::collect)
        .unwrap_or_default();
    // dom0's own services answer on loopback: a guest-listed source may not lead there.
    if !operator_allowed.contains(&endpoint) && addrs.iter().any(|a| a.ip().is_loopback() || a.ip().is_unspecified()) {
        deny("is dom0's loopback; allow it explicitly with --allow");
        return;
    }
    let upstream = addrs
        .iter()
        .find_map(|a| TcpStream::connect_timeout(a, Duration::from_secs(30)).ok());
    let Some(mut upstream) = upstream else {
        let _ = respond(
            &client,
            502,
            &format!("cannot connect to {}:{}", endpoint.host, endpoint.port),
        );
        return;
    };
    if let Ok(mut log) = log.lock() {
        log.forwarded += 1;
    }
    match forward_head {
        Some(head) => {
            if upstream.write_all(head.as_bytes()).is_err() {
                return;
            }
        }
        None => {
            if (&client)
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .is_err()
            {
                return;
            }
        }
    }
    // Bytes the head reader already buffered belong to the body or the tunnel.
    let buffered = reader.buffer().to_vec();
    if !buffered.is_empty() && upstream.write_all(&buffered).is_err() {
        return;
    }
    let _ = client.set_read_timeout(None);
    relay(reader.into_inner(), client, upstream);
}

/// Copies both directions until each side closes.
fn relay(from_client: TcpStream, to_client: TcpStream, upstream: TcpStream) {
    let Ok(upstream_reader) = upstream.try_clone() else {
        return;
    };
    let mut upstream_writer = upstream;
    let uplink = std::thread::spawn(move || {
        let mut from_client = from_client;
        let _ = std::io::copy(&mut from_client, &mut upstream_writer);
        let _ = upstream_writer.shutdown(Shutdown::Write);
    });
    let mut upstream_reader = upstream_reader;
    let mut to_client = to_client;
    let _ = std::io::copy(&mut upstream_reader, &mut to_client);
    let _ = to_client.shutdown(Shutdown::Both);
    let _ = uplink.join();
}

/// The request line and headers, without line ends; `None` past [`MAX_HEAD`] or on EOF.
fn read_head(reader: &mut impl BufRead) -> Option<Vec<String>> {
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = Vec::new();
        let n = reader
            .by_ref()
            .take((MAX_HEAD - total) as u64 + 1)
            .read_until(b'\n', &mut line)
            .ok()?;
        total += n;
        if n == 0 || total > MAX_HEAD {
            return None;
        }
        let text = String::from_utf8(line).ok()?;
        let text = text.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            return (!lines.is_empty()).then_some(lines);
        }
        lines.push(text.to_owned());
    }
}

/// `http://host[:port]/path` → the endpoint and origin-form path.
fn absolute_target(target: &str) -> Option<(Endpoint, String)> {
    let rest = target.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Some((parse_host_port(authority, 80, false)?, path.to_owned()))
}

fn respond(client: &TcpStream, status: u16, message: &str) -> std::io::Result<()> {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        502 => "Bad Gateway",
        _ => "Service Unavailable",
    };
    let body = format!("{message}\n");
    // One write: a client reading the status line with one read(2) must not see half of it.
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut out = client;
    out.write_all(response.as_bytes())
}

/// Joins the calling process to the namespace pinned at `path` (used by the sandbox init).
pub fn join_netns(path: &Path) -> Result<(), SandboxError> {
    let file = File::open(path).map_err(|e| SandboxError::io("opening the sandbox's network namespace", path, e))?;
    nix::sched::setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
        .map_err(|e| SandboxError::io("joining the sandbox's network namespace", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_of_source_uris() {
        let e = |h: &str, p, tls| {
            Some(Endpoint {
                host: h.into(),
                port: p,
                tls,
            })
        };
        assert_eq!(
            endpoint_of_uri("http://deb.debian.org/debian/"),
            e("deb.debian.org", 80, false)
        );
        assert_eq!(
            endpoint_of_uri("https://Mirror.Example:8443/x"),
            e("mirror.example", 8443, true)
        );
        assert_eq!(
            endpoint_of_uri("http://user:pw@127.0.0.1:8765/debian/"),
            e("127.0.0.1", 8765, false)
        );
        assert_eq!(endpoint_of_uri("http://[::1]:3142/"), e("::1", 3142, false));
        assert_eq!(Endpoint::parse_allow("127.0.0.1"), None);
        assert_eq!(
            Endpoint::parse_allow("127.0.0.1:8765").map(|[p, _]| p),
            e("127.0.0.1", 8765, false)
        );
        assert_eq!(endpoint_of_uri("file:///srv/repo/"), None);
        assert_eq!(endpoint_of_uri("http://host:notaport/"), None);
    }

    #[test]
    fn request_heads_are_bounded() {
        let mut ok = std::io::Cursor::new(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\nBODY".to_vec());
        assert_eq!(read_head(&mut ok).unwrap(), vec!["GET http://a/ HTTP/1.1", "Host: a"]);
        let mut huge = std::io::Cursor::new(vec![b'a'; MAX_HEAD + 10]);
        assert_eq!(read_head(&mut huge), None);
        let mut truncated = std::io::Cursor::new(b"GET / HTTP/1.1\r\n".to_vec());
        assert_eq!(read_head(&mut truncated), None);
        assert_eq!(
            absolute_target("http://127.0.0.1:8765/debian/dists/x"),
            Some((
                Endpoint {
                    host: "127.0.0.1".into(),
                    port: 8765,
                    tls: false
                },
                "/debian/dists/x".into()
            ))
        );
    }
}
