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
    // Every refusal naming a target is logged for the run's report; all carry the reason.
    let refuse = |refused: Refused| {
        if let (Some(target), Ok(mut log)) = (refused.target, log.lock()) {
            log.denied.push(target);
        }
        let _ = respond(&client, refused.status, &refused.why);
    };
    let request = match requested(&head) {
        Ok(request) => request,
        Err(refused) => return refuse(refused),
    };
    let endpoint = match &request {
        Requested::Tunnel(endpoint) | Requested::Forward { endpoint, .. } => endpoint,
    };
    let deny = |why: &str| refuse(Refused::forbidden(authority(endpoint), why));
    if !allowed.contains(endpoint) {
        return deny("is not a package source of this guest");
    }
    let addrs: Vec<SocketAddr> = (endpoint.host.as_str(), endpoint.port)
        .to_socket_addrs()
        .map(Iterator::collect)
        .unwrap_or_default();
    // dom0's own services answer on loopback: a guest-listed source may not lead there.
    if !operator_allowed.contains(endpoint) && addrs.iter().any(|a| a.ip().is_loopback() || a.ip().is_unspecified()) {
        return deny("is dom0's loopback; allow it explicitly with --allow");
    }
    let upstream = addrs
        .iter()
        .find_map(|a| TcpStream::connect_timeout(a, Duration::from_secs(30)).ok());
    let Some(mut upstream) = upstream else {
        let _ = respond(&client, 502, &format!("cannot connect to {}", authority(endpoint)));
        return;
    };
    if let Ok(mut log) = log.lock() {
        log.forwarded += 1;
    }
    match request {
        Requested::Forward { head, body, .. } => {
            // Only the checked request and its declared body go upstream: anything after it
            // (a pipelined request naming another host) is never read.
            let sent = upstream
                .write_all(head.as_bytes())
                .and_then(|()| std::io::copy(&mut (&mut reader).take(body), &mut upstream));
            if sent.is_err() {
                return;
            }
            let _ = std::io::copy(&mut upstream, &mut &client);
            // Closing with the client's unread bytes pending would reset the connection and
            // could lose the answer: end our side, then discard what it still sends, briefly.
            let _ = client.shutdown(Shutdown::Write);
            let _ = client.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = std::io::copy(&mut reader.take(MAX_HEAD as u64), &mut std::io::sink());
        }
        Requested::Tunnel(_) => {
            if (&client)
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .is_err()
            {
                return;
            }
            // Bytes the head reader already buffered belong to the tunnel.
            let buffered = reader.buffer().to_vec();
            if !buffered.is_empty() && upstream.write_all(&buffered).is_err() {
                return;
            }
            let _ = client.set_read_timeout(None);
            relay(reader.into_inner(), client, upstream);
        }
    }
}

/// What a request head asks the proxy for, before the allow-list is consulted.
#[derive(Debug, PartialEq)]
enum Requested {
    /// `CONNECT`: a tunnel to this endpoint.
    Tunnel(Endpoint),
    /// Plain HTTP: `head` (origin-form, `Connection: close`) and then `body` bytes go to
    /// `endpoint`.
    Forward {
        endpoint: Endpoint,
        head: String,
        body: u64,
    },
}

/// Why a request is refused: the status, the message for the client and, for a 403, the
/// target to log as denied.
#[derive(Debug, PartialEq)]
struct Refused {
    status: u16,
    target: Option<String>,
    why: String,
}

impl Refused {
    fn bad(why: &str) -> Refused {
        Refused {
            status: 400,
            target: None,
            why: format!("dormouse proxy: {why}"),
        }
    }

    fn forbidden(target: String, why: &str) -> Refused {
        Refused {
            status: 403,
            why: format!("dormouse --net restricted: {target} {why}"),
            target: Some(target),
        }
    }
}

/// Checks that every name the upstream could act on (the request target and the Host header)
/// is one endpoint, so the allow-list decision covers what is actually requested: otherwise a
/// guest allowed one mirror reaches any virtual host behind the same address.
fn requested(head: &[String]) -> Result<Requested, Refused> {
    let request_line = head.first().map_or("", String::as_str);
    let mut parts = request_line.split(' ');
    let (method, target, version) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("HTTP/1.1"),
    );
    let mut hosts = Vec::new();
    let mut body = None;
    let mut forwarded = Vec::new();
    for line in head.iter().skip(1) {
        // Servers disagree on folded lines and on spaces before the colon (one reads
        // `Host : x` as Host, another ignores it), so neither is forwarded (RFC 9112 §5).
        let Some((name, value)) = line
            .split_once(':')
            .filter(|(n, _)| !n.is_empty() && !n.contains([' ', '\t']))
        else {
            return Err(Refused::bad(&format!("malformed header line {line:?}")));
        };
        let value = value.trim_matches([' ', '\t']);
        match name.to_ascii_lowercase().as_str() {
            "connection" | "proxy-connection" | "keep-alive" => continue,
            "host" => hosts.push(value),
            "content-length" => {
                let length = value.parse::<u64>().ok().filter(|_| body.is_none());
                body = Some(length.ok_or_else(|| Refused::bad("missing, repeated or invalid Content-Length"))?);
            }
            // The body's end is not parsed here: a chunked body could hide another request.
            "transfer-encoding" => return Err(Refused::bad("request bodies with Transfer-Encoding are not forwarded")),
            _ => {}
        }
        forwarded.push(line.as_str());
    }
    if hosts.len() > 1 {
        return Err(Refused::bad("more than one Host header"));
    }
    let tunnel = method.eq_ignore_ascii_case("CONNECT");
    let endpoint = if tunnel {
        parse_host_port(target, 443, true)
    } else {
        absolute_target(target).map(|(endpoint, _)| endpoint)
    };
    let Some(endpoint) = endpoint else {
        return Err(Refused::bad("it needs an absolute http:// URI or CONNECT host:port"));
    };
    if let Some(host) = hosts.first() {
        if parse_host_port(host, if endpoint.tls { 443 } else { 80 }, endpoint.tls).as_ref() != Some(&endpoint) {
            let why = format!("is requested with Host: {host}; a request may name only one host");
            return Err(Refused::forbidden(authority(&endpoint), &why));
        }
    }
    if tunnel {
        return Ok(Requested::Tunnel(endpoint));
    }
    let path = absolute_target(target).map(|(_, path)| path).unwrap_or_default();
    let mut lines = vec![format!("{method} {path} {version}")];
    lines.extend(forwarded.into_iter().map(str::to_owned));
    // Without Host the upstream would pick its default virtual host: name the checked one.
    if hosts.is_empty() {
        lines.push(format!("Host: {}", authority(&endpoint)));
    }
    lines.push("Connection: close".into());
    Ok(Requested::Forward {
        head: lines.join("\r\n") + "\r\n\r\n",
        endpoint,
        body: body.unwrap_or(0),
    })
}

/// `host:port`, with an IPv6 address in brackets.
fn authority(endpoint: &Endpoint) -> String {
    if endpoint.host.contains(':') {
        format!("[{}]:{}", endpoint.host, endpoint.port)
    } else {
        format!("{}:{}", endpoint.host, endpoint.port)
    }
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

    #[test]
    fn a_request_names_one_host() {
        let check = |head: &str| requested(&head.split("\r\n").map(str::to_owned).collect::<Vec<_>>());
        let endpoint = |host: &str, port, tls| Endpoint {
            host: host.into(),
            port,
            tls,
        };
        let status = |head: &str| check(head).err().map(|r| r.status);
        assert_eq!(
            check("GET http://a.example/d HTTP/1.1\r\nHost: A.example:80\r\nConnection: keep-alive\r\nX: y"),
            Ok(Requested::Forward {
                endpoint: endpoint("a.example", 80, false),
                head: "GET /d HTTP/1.1\r\nHost: A.example:80\r\nX: y\r\nConnection: close\r\n\r\n".into(),
                body: 0,
            })
        );
        let fronted = check("GET http://a.example/ HTTP/1.1\r\nHost: b.example").unwrap_err();
        assert_eq!((fronted.status, fronted.target.as_deref()), (403, Some("a.example:80")));
        assert!(fronted.why.contains("Host: b.example"), "{}", fronted.why);
        assert_eq!(
            status("GET http://a.example/ HTTP/1.1\r\nHost: a.example:8080"),
            Some(403)
        );
        assert_eq!(
            status("GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\nHost: b.example"),
            Some(400)
        );
        assert_eq!(status("GET http://a.example/ HTTP/1.1\r\nHost : b.example"), Some(400));
        assert_eq!(
            status("GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n b.example"),
            Some(400)
        );
        assert_eq!(
            status("GET http://a.example/ HTTP/1.1\r\nTransfer-Encoding: chunked"),
            Some(400)
        );
        assert_eq!(
            status("GET http://a.example/ HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1"),
            Some(400)
        );
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a.example"), Some(400));
        assert_eq!(
            check("POST http://[::1]:3142/ HTTP/1.0\r\nContent-Length: 5"),
            Ok(Requested::Forward {
                endpoint: endpoint("::1", 3142, false),
                head: "POST / HTTP/1.0\r\nContent-Length: 5\r\nHost: [::1]:3142\r\nConnection: close\r\n\r\n".into(),
                body: 5,
            })
        );
        let tunnel = Ok(Requested::Tunnel(endpoint("a.example", 443, true)));
        assert_eq!(check("CONNECT a.example:443 HTTP/1.1\r\nHost: a.example"), tunnel);
        assert_eq!(check("CONNECT a.example:443 HTTP/1.1"), tunnel);
        assert_eq!(
            status("CONNECT a.example:443 HTTP/1.1\r\nHost: b.example:443"),
            Some(403)
        );
    }

    /// Serves the proxy on dom0's loopback (no namespace needed) allowing `allow` as the
    /// operator would; returns its port.
    fn spawn_proxy(allow: &str) -> u16 {
        let operator: BTreeSet<Endpoint> = Endpoint::parse_allow(allow).unwrap().into_iter().collect();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let allowed = Arc::new(Allowed {
            all: operator.clone(),
            operator,
        });
        std::thread::spawn(move || serve(listener, allowed, Arc::default()));
        port
    }

    /// Sends `request` to the proxy and returns everything it answers until it closes (or is
    /// silent for 3 s).
    fn exchange(proxy: u16, request: &str) -> String {
        let mut client = TcpStream::connect(("127.0.0.1", proxy)).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        client.write_all(request.as_bytes()).unwrap();
        let mut reply = Vec::new();
        let _ = client.read_to_end(&mut reply);
        String::from_utf8_lossy(&reply).into_owned()
    }

    /// What reached `upstream` within 2 s, if anything connected to it: read until 1 s of
    /// silence, then answer 204 and close.
    fn upstream_saw(upstream: &TcpListener) -> Option<String> {
        upstream.set_nonblocking(true).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let mut conn = loop {
            match upstream.accept() {
                Ok((conn, _)) => break conn,
                Err(_) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => return None,
            }
        };
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut seen = Vec::new();
        let _ = conn.read_to_end(&mut seen);
        let _ = conn.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        Some(String::from_utf8_lossy(&seen).into_owned())
    }

    #[test]
    fn a_host_header_naming_another_host_is_refused_before_connecting() {
        let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = upstream.local_addr().unwrap().port();
        let proxy = spawn_proxy(&format!("127.0.0.1:{port}"));
        let reply = exchange(
            proxy,
            &format!("GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: other.example\r\n\r\n"),
        );
        let saw = upstream_saw(&upstream);
        assert!(
            reply.starts_with("HTTP/1.1 403 ") && reply.contains("other.example") && saw.is_none(),
            "the proxy answered {reply:?}; the upstream saw {saw:?}"
        );
    }

    #[test]
    fn only_the_checked_request_reaches_the_upstream() {
        let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = upstream.local_addr().unwrap().port();
        let proxy = spawn_proxy(&format!("127.0.0.1:{port}"));
        // A second request pipelined behind an allowed one names another virtual host.
        let request = format!(
            "GET http://127.0.0.1:{port}/a HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n\
             GET http://other.example/b HTTP/1.1\r\nHost: other.example\r\n\r\n"
        );
        let client = std::thread::spawn(move || exchange(proxy, &request));
        let saw = upstream_saw(&upstream).unwrap_or_default();
        let reply = client.join().unwrap();
        assert!(reply.starts_with("HTTP/1.1 204 "), "the proxy answered {reply:?}");
        assert_eq!(
            saw,
            format!("GET /a HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
            "the upstream saw more than the checked request"
        );
    }
}
