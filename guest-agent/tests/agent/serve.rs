//! `dormouse-agent serve` on loopback, driven by dom0's client (`bundle::transport`): the
//! peer address and source port are enforced before anything is read, and every refusal
//! (protocol version, size, signature, not a bundle) is reported to dom0 with nothing spooled
//! and nothing applied. The delivery that applies is tested end to end by the `dormouse`
//! package's `restore` tests.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use applier::pack::{generate_key, write_key_pair};
use applier::transport::{connect_from, deliver};
use bundle::sign::signature_path;
use bundle::transport::{self, Message};

use crate::agent_bin;

/// The agent serving on 127.0.0.2:PORT for dom0 127.0.0.1:PORT; killed on drop.
struct Served {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    fn start(work: &Path, key: &Path, max_bundle: u64) -> Served {
        let port = TcpListener::bind("127.0.0.2:0").unwrap().local_addr().unwrap().port();
        let log = work.join("agent.log");
        let child = Command::new(agent_bin())
            .arg("serve")
            .args(["--listen", &format!("127.0.0.2:{port}")])
            .args(["--allow-from", &format!("127.0.0.1:{port}")])
            .arg("--key")
            .arg(key)
            .arg("--root")
            .arg(work.join("root"))
            .arg("--spool")
            .arg(work.join("spool"))
            .args(["--max-bundle-size", &max_bundle.to_string(), "--io-timeout", "5"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let served = Served { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !served.log().contains("listening on") {
            assert!(Instant::now() < deadline, "the agent never listened: {}", served.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        served
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn agent(&self) -> SocketAddr {
        SocketAddr::new([127, 0, 0, 2].into(), self.port)
    }

    fn connect_from(&self, addr: [u8; 4], port: u16) -> TcpStream {
        let deadline = Instant::now() + Duration::from_secs(10);
        connect_from(SocketAddr::new(addr.into(), port), self.agent(), deadline)
            .unwrap()
            .0
    }

    /// Delivers `bundle` from dom0's pinned address: the agent's answer.
    fn deliver(&self, bundle: &Path) -> Result<serde_json::Value, String> {
        let stream = self.connect_from([127, 0, 0, 1], self.port);
        let deadline = Instant::now() + Duration::from_secs(30);
        deliver(stream, bundle, deadline, &mut |_| {}).unwrap().outcome
    }
}

/// `bytes` signed with `key` (a `generate_key` secret) as `name` and `name.minisig`.
fn signed(work: &Path, name: &str, bytes: &[u8], key: &bundle::sign::SecretKey) -> PathBuf {
    let path = work.join(name);
    fs::write(&path, bytes).unwrap();
    let sig = key.sign_file(&path, "test").unwrap();
    fs::write(signature_path(&path), sig).unwrap();
    path
}

/// Reads what the agent sends until it closes (bounded by a timeout). Closing with our data
/// unread is a reset, which ends the stream too.
fn read_all(mut stream: TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    match stream.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("reading from the agent: {e}"),
    }
    got
}

#[test]
fn serve_accepts_only_dom0_and_refuses_what_it_cannot_apply() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    fs::create_dir(w.join("root")).unwrap();
    let trusted = generate_key().unwrap();
    let (_, public) = write_key_pair(&trusted, &w.join("trusted")).unwrap();
    let agent = Served::start(w, &public, 100_000);

    // Another address, or dom0's address from another port: closed unread, nothing sent.
    assert!(read_all(agent.connect_from([127, 0, 0, 3], agent.port)).is_empty());
    let mut other_port = TcpStream::connect(agent.agent()).unwrap();
    let _ = other_port.write_all(b"DMAGENT\0\0\x01");
    assert!(read_all(other_port).is_empty());
    let log = agent.log();
    assert_eq!(log.matches("refused a connection from").count(), 2, "{log}");

    // Another protocol version: the agent's preamble, then an error naming the versions.
    let mut stream = agent.connect_from([127, 0, 0, 1], agent.port);
    stream.write_all(b"DMAGENT\0\0\x02").unwrap();
    let answer = read_all(stream);
    let mut r = &answer[..];
    transport::read_preamble(&mut r).unwrap();
    let Message::Error { message } = transport::read_message(&mut r).unwrap() else {
        panic!("not an error: {answer:?}");
    };
    assert!(message.contains("version 2"), "{message}");

    // Over --max-bundle-size (more than the socket buffers hold: the agent stops reading and
    // closes while dom0 still sends); signed by another key; signed right but not a bundle.
    let big = signed(w, "big.dmb", &vec![0u8; 16 << 20], &trusted);
    let error = agent.deliver(&big).unwrap_err();
    assert!(error.contains("more than the 100000"), "{error}");
    let other = generate_key().unwrap();
    let forged = signed(w, "forged.dmb", b"echo pwned", &other);
    let error = agent.deliver(&forged).unwrap_err();
    assert!(error.contains("not with the given key"), "{error}");
    let junk = signed(w, "junk.dmb", b"not a bundle at all", &trusted);
    let error = agent.deliver(&junk).unwrap_err();
    assert!(!error.is_empty());

    let spooled: Vec<_> = fs::read_dir(w.join("spool")).unwrap().collect();
    assert!(spooled.is_empty(), "left in the spool: {spooled:?}");
    assert!(!w.join("root/var").exists(), "a refused bundle got a journal");
    let mode = std::os::unix::fs::MetadataExt::mode(&fs::metadata(w.join("spool")).unwrap());
    assert_eq!(mode & 0o777, 0o700);
}
