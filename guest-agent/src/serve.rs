//! `dormouse-agent serve`: receives bundles from dom0 over the agent channel and applies them
//! with the same code as `apply` (see `bundle::transport` for the protocol).
//!
//! Trust: the bundle's signature by the pinned key is what authorizes running it, exactly as
//! with `apply`; the connection itself is only accepted from the configured dom0 address (and
//! source port), so nothing else on the network can make the agent spool data. One connection
//! is served at a time, every read and write has a timeout, the bundle's size is bounded, and
//! it is spooled in a root-owned 0700 directory before it is verified and applied.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bundle::read::Bundle;
use bundle::sign::{PublicKey, signature_path};
use bundle::transport::{self, MAX_SIGNATURE, Message, TransportError};

use crate::apply::{ApplyOptions, apply};
use crate::journal::check_id;
use crate::rollback::{rollback, status};

/// Where received bundles wait, outside the journals' `/var/lib/dormouse`.
pub const DEFAULT_SPOOL: &str = "/var/spool/dormouse-agent";
/// Largest bundle accepted.
pub const DEFAULT_MAX_BUNDLE: u64 = 4 << 30;
/// How often the journal is looked at for progress to report.
const POLL: Duration = Duration::from_millis(200);
const INCOMING: &str = "incoming.dmb";

pub struct ServeOptions {
    pub listen: SocketAddr,
    /// dom0's address, and the source port it connects from when given.
    pub allow_from: IpAddr,
    pub allow_port: Option<u16>,
    pub key: PathBuf,
    pub root: Option<PathBuf>,
    pub spool: PathBuf,
    pub max_bundle: u64,
    /// Bound on every read and write of the channel (not on the apply itself).
    pub io_timeout: Duration,
}

/// Serves connections one after the other, forever.
pub fn serve(options: &ServeOptions) -> Result<()> {
    open_spool(&options.spool)?;
    // Read now so a missing key fails the service at start, not at the first delivery.
    PublicKey::read(&options.key)?;
    let listener = TcpListener::bind(options.listen).with_context(|| format!("listening on {}", options.listen))?;
    eprintln!(
        "dormouse-agent: listening on {}, accepting {}",
        options.listen,
        match options.allow_port {
            Some(port) => SocketAddr::new(options.allow_from, port).to_string(),
            None => options.allow_from.to_string(),
        }
    );
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(stream) => stream,
            Err(e) => {
                eprintln!("dormouse-agent: accept: {e}");
                continue;
            }
        };
        let Ok(peer) = stream.peer_addr() else { continue };
        // An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d.
        let allowed = peer.ip().to_canonical() == options.allow_from.to_canonical()
            && options.allow_port.is_none_or(|p| p == peer.port());
        if !allowed {
            eprintln!("dormouse-agent: refused a connection from {peer}: not the configured dom0");
            continue;
        }
        match handle(&stream, options) {
            Ok(result) => eprintln!("dormouse-agent: {peer}: {result}"),
            Err(e) => eprintln!("dormouse-agent: {peer}: {e:#}"),
        }
        // Closing first leaves TIME_WAIT here, so dom0 can reuse its fixed source port.
        drop(stream);
    }
    Ok(())
}

/// Creates the spool directory (0700) or checks an existing one is ours and private.
fn open_spool(dir: &Path) -> Result<()> {
    if let Err(e) = fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        bail!("creating the spool directory {}: {e}", dir.display());
    }
    let meta = fs::symlink_metadata(dir).with_context(|| format!("spool directory {}", dir.display()))?;
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        bail!(
            "spool directory {} must be a directory owned by uid {uid} with mode 0700 (it is {:o}, uid {}); fix it or pass --spool",
            dir.display(),
            meta.mode(),
            meta.uid()
        );
    }
    Ok(())
}

/// Writes a new private file in the spool, replacing what had that name.
fn spool_file(path: &Path) -> Result<File> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            bail!("removing the old {}: {e}", path.display())
        }
        _ => {}
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// The channel's sending half; after the peer went away, messages are dropped (an apply
/// under way is never interrupted for it).
struct Sender<'a> {
    writer: BufWriter<&'a TcpStream>,
    gone: bool,
}

impl Sender<'_> {
    fn send(&mut self, message: &Message) {
        if self.gone {
            return;
        }
        if let Err(e) = transport::write_message(&mut self.writer, message) {
            eprintln!("dormouse-agent: dom0 went away ({e}); carrying on");
            self.gone = true;
        }
    }
}

/// One delivery: returns the apply's result word.
fn handle(stream: &TcpStream, options: &ServeOptions) -> Result<&'static str> {
    stream.set_read_timeout(Some(options.io_timeout))?;
    stream.set_write_timeout(Some(options.io_timeout))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut tx = Sender {
        writer: BufWriter::new(stream),
        gone: false,
    };
    let greeting = transport::read_preamble(&mut reader);
    transport::write_preamble(&mut tx.writer)?;
    if let Err(e) = greeting {
        // The preamble went out: a client of another version can tell what we speak.
        if matches!(e, TransportError::Version { .. }) {
            tx.send(&Message::Error { message: e.to_string() });
        }
        return Err(e.into());
    }
    let started = Instant::now();
    match receive(&mut reader, options) {
        Ok(bundle) => {
            tx.send(&Message::Progress {
                stage: "received".into(),
                detail: bundle.display().to_string(),
                seconds: started.elapsed().as_secs_f64(),
            });
            let result = apply_reporting(&bundle, options, &mut tx, started)?;
            Ok(result)
        }
        Err(e) => {
            tx.send(&Message::Error {
                message: format!("{e:#}"),
            });
            Err(e)
        }
    }
}

/// Receives an offer into the spool and checks its signature; returns the bundle's path
/// there, named after its id.
fn receive(reader: &mut BufReader<TcpStream>, options: &ServeOptions) -> Result<PathBuf> {
    let Message::Offer {
        bundle_bytes,
        bundle_sha256,
        signature,
    } = transport::read_message(reader)?
    else {
        bail!("expected an offer");
    };
    if bundle_bytes > options.max_bundle {
        bail!(
            "bundle of {bundle_bytes} bytes offered, more than the {} this agent accepts (--max-bundle-size)",
            options.max_bundle
        );
    }
    if signature.len() > MAX_SIGNATURE {
        bail!("signature of {} bytes, more than {MAX_SIGNATURE}", signature.len());
    }
    open_spool(&options.spool)?;
    let incoming = options.spool.join(INCOMING);
    let incoming_sig = signature_path(&incoming);
    let result = (|| {
        let mut file = spool_file(&incoming)?;
        transport::receive_bundle(reader, &mut BufWriter::new(&mut file), bundle_bytes, &bundle_sha256)?;
        file.sync_all().context("syncing the received bundle")?;
        spool_file(&incoming_sig)?
            .write_all(signature.as_bytes())
            .context("writing the received signature")?;
        // Authorized before anything of it is parsed.
        PublicKey::read(&options.key)?.verify_file(&incoming, &signature, &incoming_sig)?;
        let id = Bundle::open(&incoming)?.manifest().bundle_id.clone();
        check_id(&id).map_err(anyhow::Error::msg)?;
        let bundle = options.spool.join(format!("{id}.dmb"));
        fs::rename(&incoming_sig, signature_path(&bundle)).context("naming the spooled signature")?;
        fs::rename(&incoming, &bundle).context("naming the spooled bundle")?;
        Ok(bundle)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&incoming);
        let _ = fs::remove_file(&incoming_sig);
    }
    result
}

/// Applies the spooled bundle (the library's `apply`, as `dormouse-agent apply` runs it),
/// sending each journaled step as progress, then the report. A bundle that applied leaves the
/// spool. One whose apply failed was rolled back by `apply` and is not applied again; only an
/// apply cut short (the agent killed) stays journaled for a later delivery to resume.
fn apply_reporting(bundle: &Path, options: &ServeOptions, tx: &mut Sender, started: Instant) -> Result<&'static str> {
    let apply_options = ApplyOptions {
        bundle: bundle.to_owned(),
        root: options.root.clone(),
        key: options.key.clone(),
        force: false,
    };
    let id = bundle
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let root = options.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    tx.send(&Message::Progress {
        stage: "applying".into(),
        detail: id.clone(),
        seconds: started.elapsed().as_secs_f64(),
    });
    let report = std::thread::scope(|s| {
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        let apply_options = &apply_options;
        let worker = s.spawn(move || {
            let report = apply(apply_options);
            // Ends the wait below at once (a panic ends it too, by dropping the sender).
            let _ = done_tx.send(());
            report
        });
        // The journal is rewritten atomically, so a read sees a whole state; a step shorter
        // than POLL may go unreported, the last one never is.
        let mut last = None;
        let mut report_step = |tx: &mut Sender| {
            let Some(entry) = status(&root)
                .ok()
                .and_then(|entries| entries.into_iter().find(|e| e.bundle_id == id))
            else {
                return;
            };
            let now = (entry.status, entry.step);
            if last != Some(now) {
                last = Some(now);
                tx.send(&Message::Progress {
                    stage: entry.step.unwrap_or("started").into(),
                    detail: format!("journal: {}", entry.status),
                    seconds: started.elapsed().as_secs_f64(),
                });
            }
        };
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(POLL) {
            report_step(tx);
        }
        report_step(tx);
        worker.join()
    });
    let Ok(report) = report else {
        bail!(
            "the apply of {} panicked; its journal says how far it got",
            bundle.display()
        );
    };
    let mut value = serde_json::to_value(&report)?;
    // Served from dom0, a failed apply is undone at once: the guest goes back to the state its
    // services ran with before the restore (nobody is at its console to decide), and dom0 keeps
    // it isolated. The journal stays, with the rollback recorded.
    if report.result == "failed" {
        tx.send(&Message::Progress {
            stage: "rolling-back".into(),
            detail: id.clone(),
            seconds: started.elapsed().as_secs_f64(),
        });
        let rollback = match rollback(&root, &id) {
            Ok(done) => serde_json::to_value(&done)?,
            Err(e) => serde_json::json!({ "bundle_id": id, "result": "rollback-failed", "error": format!("{e:#}") }),
        };
        if let Some(object) = value.as_object_mut() {
            object.insert("rollback".into(), rollback);
        }
    }
    tx.send(&Message::Report { report: value });
    if report.result == "applied" || report.result == "already-applied" {
        let _ = fs::remove_file(signature_path(bundle));
        let _ = fs::remove_file(bundle);
    }
    Ok(report.result)
}
