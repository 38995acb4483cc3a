//! `dormouse restore`, `pend` and `deliver`: bring a suspended domain back with its network
//! isolated, deliver the bundle made offline to its agent, and open the network only once the
//! agent reports the bundle applied.
//!
//! [`restore`], each step through the [`Toolstack`]: the bundle is verified and its guest
//! identity checked against the image's; `/dormouse/pending/<uuid>` is written (so the
//! `vif-dormouse` hook isolates any vif of the domain that comes up, ours or another tool's);
//! the domain is restored paused; then [`deliver`]'s steps: its vifs are isolated, passing only
//! the agent channel (dom0 ADDR:PORT, see [`crate::transport`]); it is unpaused; the bundle is
//! delivered and the agent's progress streamed; on success the isolation is released and the
//! pending key removed. On any failure after the isolation the domain stays isolated and the
//! error says how to inspect, finish ([`deliver`] again) or release it.
//!
//! [`pend`] only verifies and writes the pending key: whoever restores the domain afterwards
//! (a plain `xl restore`, xendomains at boot) brings it up isolated by the hook, and
//! [`deliver`] finishes the job on the running domain. [`deliver`] is also the recovery after a
//! `restore` that died half-way: the agent resumes, or reports the bundle already applied.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use introspect::linux::GuestSnapshot;
use serde::Serialize;

use crate::isolate::{self, Allow};
use crate::toolstack::{Toolstack, ToolstackError};
use crate::transport::{self, Message};
use bundle::BundleError;
use bundle::manifest::GuestIdentity;
use bundle::read::Bundle;
use bundle::sign::{PublicKey, read_signature, signature_path};

/// Where the pending keys live in xenstore (see `scripts/vif-dormouse`).
pub const PENDING_ROOT: &str = "/dormouse/pending";
/// Where the agent journals a bundle in the guest.
const AGENT_JOURNAL: &str = "/var/lib/dormouse";

/// What a delivery needs: the bundle, the key it must be signed with, and both ends of the
/// agent channel.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    pub bundle: PathBuf,
    /// The signer's key, the one the guests trust: the bundle's signature and every member
    /// are checked with it before the domain is touched.
    pub key: PublicKey,
    /// Where the key was read from, for the commands the errors suggest.
    pub key_path: PathBuf,
    /// The agent's address in the guest.
    pub agent: IpAddr,
    /// dom0's end of the agent channel.
    pub dom0: IpAddr,
    pub port: u16,
    /// From unpausing (or from the start, on a running domain) until the agent's final report.
    pub timeout: Duration,
}

impl DeliveryOptions {
    fn allow(&self) -> Allow {
        Allow {
            addr: self.dom0,
            port: Some(self.port),
        }
    }

    /// `dormouse deliver`'s arguments for these options, after `--domain D`.
    pub fn deliver_args(&self) -> Vec<String> {
        [
            ("--bundle", self.bundle.display().to_string()),
            ("--key", self.key_path.display().to_string()),
            ("--agent", self.agent.to_string()),
            ("--dom0-addr", self.dom0.to_string()),
            ("--port", self.port.to_string()),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_owned(), value])
        .collect()
    }
}

/// An error about domain `domid` before its vifs were isolated: restored paused (it must not
/// be unpaused as it is), or running and left as it was.
fn before_isolation(domid: u32, paused: bool, what: &str, detail: String) -> RestoreError {
    let what = what.to_owned();
    if paused {
        RestoreError::Paused { domid, what, detail }
    } else {
        RestoreError::Untouched { domid, what, detail }
    }
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub image: PathBuf,
    /// The guest the image holds (from its snapshot: [`crate::pack::guest_identity`]).
    pub image_identity: GuestIdentity,
    pub delivery: DeliveryOptions,
}

/// What happens, as it happens.
#[derive(Debug)]
pub enum Progress<'a> {
    PendingKey { path: &'a str },
    Restored { domid: u32, seconds: f64 },
    Isolated { vifs: &'a [String], allow: &'a Allow },
    Unpaused,
    Connected { attempts: u32, seconds: f64 },
    Agent(&'a Message),
    Released { vifs: &'a [String] },
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub restore_s: f64,
    pub isolate_s: f64,
    pub unpause_to_connected_s: f64,
    pub send_s: f64,
    /// The agent's own apply time (its report's `timings.total`).
    pub apply_s: f64,
    /// The guest's time on the network with only the agent channel: unpause to isolation
    /// lifted.
    pub unpause_to_released_s: f64,
    pub total_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub domid: u32,
    pub domain_uuid: String,
    pub vifs: Vec<String>,
    pub bundle_id: String,
    pub bundle_bytes: u64,
    /// The agent's apply report.
    pub report: serde_json::Value,
    pub timings: Timings,
    /// Problems after the isolation was lifted (the pending key could not be removed).
    pub warnings: Vec<String>,
}

/// A failure after the domain was isolated: it stays isolated.
#[derive(Debug)]
pub struct Stranded {
    pub domid: u32,
    pub vifs: Vec<String>,
    pub pending_key: Option<String>,
    pub bundle_id: String,
    pub failure: String,
    /// The agent's report, when it sent one.
    pub report: Option<serde_json::Value>,
    /// The command that delivers the bundle again (the agent resumes an interrupted apply, or
    /// reports it applied) and releases the domain when it succeeds.
    pub deliver_again: String,
}

impl std::fmt::Display for Stranded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = &self.bundle_id;
        writeln!(f, "{}", self.failure)?;
        writeln!(
            f,
            "domain {} stays isolated (vifs {}: only the agent channel passes). To inspect and release it:",
            self.domid,
            self.vifs.join(" ")
        )?;
        writeln!(
            f,
            "  dormouse isolate --list                 # what is isolated, packets dropped"
        )?;
        writeln!(
            f,
            "  in the guest (xl console {}): dormouse-agent status; journal {AGENT_JOURNAL}/{id}/journal.json, script logs {AGENT_JOURNAL}/{id}/scripts/",
            self.domid
        )?;
        writeln!(
            f,
            "  {}   # deliver again: the agent resumes or reports it applied, then the domain is released",
            self.deliver_again
        )?;
        match self.report.as_ref().and_then(|r| r["rollback"]["result"].as_str()) {
            Some(result @ ("rolled-back" | "already-rolled-back")) => writeln!(
                f,
                "  the agent undid the partial apply ({result}); in the guest, `dormouse-agent status` shows it"
            )?,
            _ => writeln!(
                f,
                "  in the guest, to undo a partial apply: dormouse-agent rollback {id}"
            )?,
        }
        writeln!(f, "  dormouse release --domain {}", self.domid)?;
        if let Some(key) = &self.pending_key {
            writeln!(
                f,
                "  xenstore-rm {key}                       # so re-created vifs are no longer isolated"
            )?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "{bundle}: {source}; nothing was restored (check the bundle with `dormouse bundle verify {bundle} --key PUB`, and make it again if it was altered)"
    )]
    Bundle {
        bundle: String,
        #[source]
        source: BundleError,
    },
    #[error("{bundle} was not made from {image}: {}; nothing was restored", mismatches.join("; "))]
    Identity {
        bundle: String,
        image: String,
        mismatches: Vec<String>,
    },
    #[error("{what}: {source}; nothing was restored")]
    Before {
        what: String,
        #[source]
        source: ToolstackError,
    },
    #[error("{}", ambiguous_message(command, domids, pending.as_deref()))]
    Ambiguous {
        command: String,
        domids: Vec<u32>,
        pending: Option<String>,
    },
    #[error(
        "{what}: {detail}; domain {domid} is restored but paused, and isolated only if the vif hook (vif-dormouse) \
         isolated it: `xl destroy {domid}`, or isolate it (`dormouse isolate --domain {domid} --allow ...`) before \
         `xl unpause {domid}`"
    )]
    Paused { domid: u32, what: String, detail: String },
    #[error("{what}: {detail}; domain {domid} was left as it was (is it isolated? `dormouse isolate --list`)")]
    Untouched { domid: u32, what: String, detail: String },
    #[error(
        "{image} does not name its domain's UUID, which the hook keys pending domains by; use `dormouse restore`, which reads it from the restored domain"
    )]
    NoUuid { image: String },
    #[error("{0}")]
    Stranded(Box<Stranded>),
}

fn ambiguous_message(command: &str, domids: &[u32], pending: Option<&str>) -> String {
    let found = match domids {
        [] => "no new domain appeared".to_owned(),
        _ => format!("{} new domains appeared ({domids:?})", domids.len()),
    };
    let hook = pending.map_or(String::new(), |k| {
        format!("; {k} stays, so the vif hook keeps isolating this image's domain")
    });
    format!(
        "`{command}` succeeded, but {found} where one was expected, so dormouse cannot tell which \
         domain is this image's{hook}. Find it by name with `xl list` (restored domains stay paused), \
         then `dormouse deliver --domain D ...` it or `xl destroy` it; never `xl unpause` it unpatched"
    )
}

/// What differs between the guest a bundle was made for and the image's. The kernel release
/// and hostname always count; boot_id, domain UUID and name whenever the bundle records them.
pub fn identity_mismatches(bundle: &GuestIdentity, image: &GuestIdentity) -> Vec<String> {
    let mut out = Vec::new();
    let mut compare = |what: &str, b: Option<&String>, i: Option<&String>| {
        if let Some(b) = b {
            if Some(b) != i {
                out.push(format!(
                    "{what}: bundle {b}, image {}",
                    i.map_or("(none)", String::as_str)
                ));
            }
        }
    };
    compare(
        "kernel release",
        Some(&bundle.kernel_release),
        Some(&image.kernel_release),
    );
    compare("hostname", Some(&bundle.hostname), Some(&image.hostname));
    compare("boot_id", bundle.boot_id.as_ref(), image.boot_id.as_ref());
    compare("domain UUID", bundle.domain_uuid.as_ref(), image.domain_uuid.as_ref());
    compare("domain name", bundle.domain_name.as_ref(), image.domain_name.as_ref());
    out
}

/// The guest's address for the agent channel, from the snapshot's interfaces: the first
/// IPv4 address (the channel through the isolation that needs no neighbour discovery), else
/// the first non-link-local IPv6 one.
pub fn agent_address(snapshot: &GuestSnapshot) -> Option<IpAddr> {
    let addrs = || {
        snapshot
            .interfaces
            .iter()
            .filter(|i| i.name != "lo")
            .flat_map(|i| i.ipv4.iter().chain(&i.ipv6))
            .filter_map(|a| a.split('/').next()?.parse::<IpAddr>().ok())
            .filter(|a| {
                !a.is_loopback()
                    && !a.is_unspecified()
                    && !matches!(a, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
            })
    };
    addrs().find(IpAddr::is_ipv4).or_else(|| addrs().next())
}

/// dom0's address towards `agent`, as routing would pick it (no packet is sent).
pub fn dom0_address_towards(agent: IpAddr) -> std::io::Result<IpAddr> {
    let any: SocketAddr = match agent {
        IpAddr::V4(_) => "0.0.0.0:0".parse(),
        IpAddr::V6(_) => "[::]:0".parse(),
    }
    .map_err(std::io::Error::other)?;
    let socket = UdpSocket::bind(any)?;
    socket.connect(SocketAddr::new(agent, transport::DEFAULT_PORT))?;
    Ok(socket.local_addr()?.ip())
}

fn seconds_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// The bundle's id and the guest it was made for, once its signature and every member are
/// checked.
fn verified(options: &DeliveryOptions) -> Result<(String, GuestIdentity), RestoreError> {
    let bundle_error = |source| RestoreError::Bundle {
        bundle: options.bundle.display().to_string(),
        source,
    };
    let sig_path = signature_path(&options.bundle);
    let signature = read_signature(&sig_path).map_err(bundle_error)?;
    options
        .key
        .verify_file(&options.bundle, &signature, &sig_path)
        .map_err(bundle_error)?;
    let bundle = Bundle::open(&options.bundle).map_err(bundle_error)?;
    bundle.verify_payload().map_err(bundle_error)?;
    let manifest = bundle.manifest();
    Ok((manifest.bundle_id.clone(), manifest.guest.clone()))
}

/// Verifies the bundle and that it was made from the image; returns the bundle id.
fn verified_for_image(options: &RestoreOptions) -> Result<String, RestoreError> {
    let (bundle_id, guest) = verified(&options.delivery)?;
    let mismatches = identity_mismatches(&guest, &options.image_identity);
    if !mismatches.is_empty() {
        return Err(RestoreError::Identity {
            bundle: options.delivery.bundle.display().to_string(),
            image: options.image.display().to_string(),
            mismatches,
        });
    }
    Ok(bundle_id)
}

fn pending_key(uuid: &str) -> String {
    format!("{PENDING_ROOT}/{uuid}")
}

/// Marks the image's domain pending: whatever restores it next brings it up with its vifs
/// isolated by the hook (`scripts/vif-dormouse`). Returns the key written.
pub fn pend(toolstack: &dyn Toolstack, options: &RestoreOptions) -> Result<String, RestoreError> {
    verified_for_image(options)?;
    let uuid = options
        .image_identity
        .domain_uuid
        .as_ref()
        .ok_or_else(|| RestoreError::NoUuid {
            image: options.image.display().to_string(),
        })?;
    let key = pending_key(uuid);
    toolstack
        .xenstore_write(&key, &options.delivery.allow().to_string())
        .map_err(|source| RestoreError::Before {
            what: format!("writing {key}"),
            source,
        })?;
    Ok(key)
}

/// `xl restore -p`. When it fails, nothing was restored and the pending key goes. When it
/// succeeded but the new domain cannot be told apart, domains exist that may be ours: the
/// pending key stays (the hook keeps isolating whatever vif comes up for that UUID) and the
/// error names them.
fn restore_paused(toolstack: &dyn Toolstack, image: &Path, pending: Option<&str>) -> Result<u32, RestoreError> {
    match toolstack.restore_paused(image) {
        Ok(domid) => Ok(domid),
        Err(ToolstackError::NewDomain { command, domids, .. }) => Err(RestoreError::Ambiguous {
            command,
            domids,
            pending: pending.map(str::to_owned),
        }),
        Err(source) => {
            if let Some(key) = pending {
                // Best effort: the error that matters is the restore's.
                let _ = toolstack.xenstore_remove(key);
            }
            Err(RestoreError::Before {
                what: format!("restoring {} paused", image.display()),
                source,
            })
        }
    }
}

/// Restores, delivers and releases; see the module documentation.
pub fn restore(
    toolstack: &dyn Toolstack,
    options: &RestoreOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Outcome, RestoreError> {
    let started = Instant::now();
    // Everything dom0 can check is checked before the domain exists: a bad bundle leaves the
    // save image untouched and no domain behind.
    let bundle_id = verified_for_image(options)?;
    let pending_value = options.delivery.allow().to_string();

    // Before the domain exists when the image names its UUID, so the hook sees it.
    let mut pending = None;
    if let Some(uuid) = &options.image_identity.domain_uuid {
        let key = pending_key(uuid);
        toolstack
            .xenstore_write(&key, &pending_value)
            .map_err(|source| RestoreError::Before {
                what: format!("writing {key}"),
                source,
            })?;
        progress(Progress::PendingKey { path: &key });
        pending = Some(key);
    }

    let t = Instant::now();
    let domid = restore_paused(toolstack, &options.image, pending.as_deref())?;
    let restore_s = seconds_since(t);
    progress(Progress::Restored {
        domid,
        seconds: restore_s,
    });
    let paused = |what: &str, detail: String| before_isolation(domid, true, what, detail);
    let domain_uuid = toolstack
        .domain_uuid(domid)
        .map_err(|e| paused("reading the restored domain's UUID", e.to_string()))?;
    if pending.is_none() {
        let key = pending_key(&domain_uuid);
        toolstack
            .xenstore_write(&key, &pending_value)
            .map_err(|e| paused(&format!("writing {key}"), e.to_string()))?;
        progress(Progress::PendingKey { path: &key });
        pending = Some(key);
    }
    let domain = Domain {
        domid,
        uuid: domain_uuid,
        paused: true,
        pending,
        bundle_id,
    };
    let mut outcome = isolate_and_deliver(toolstack, domain, &options.delivery, progress)?;
    outcome.timings.restore_s = restore_s;
    outcome.timings.total_s = seconds_since(started);
    Ok(outcome)
}

/// Delivers the bundle to running (or paused) domain `domid` and releases it once applied:
/// for a domain a plain `xl restore` brought up isolated by the hook, or one a `restore` left
/// isolated. Its vifs are (re)isolated first, so the domain never gets more than the channel.
pub fn deliver(
    toolstack: &dyn Toolstack,
    domid: u32,
    options: &DeliveryOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Outcome, RestoreError> {
    let started = Instant::now();
    let (bundle_id, guest) = verified(options)?;
    let untouched = |what: &str, detail: String| before_isolation(domid, false, what, detail);
    let uuid = toolstack
        .domain_uuid(domid)
        .map_err(|e| untouched("reading the domain's UUID", e.to_string()))?;
    if let Some(made_for) = &guest.domain_uuid {
        if *made_for != uuid {
            return Err(untouched(
                "checking the domain",
                format!(
                    "{} was made for domain UUID {made_for}, domain {domid} is {uuid}",
                    options.bundle.display()
                ),
            ));
        }
    }
    let paused = toolstack
        .paused(domid)
        .map_err(|e| untouched("reading the domain's state", e.to_string()))?;
    let domain = Domain {
        domid,
        pending: Some(pending_key(&uuid)),
        uuid,
        paused,
        bundle_id,
    };
    let mut outcome = isolate_and_deliver(toolstack, domain, options, progress)?;
    outcome.timings.total_s = seconds_since(started);
    Ok(outcome)
}

/// The domain [`isolate_and_deliver`] works on.
struct Domain {
    domid: u32,
    uuid: String,
    paused: bool,
    /// The pending key to remove once released.
    pending: Option<String>,
    bundle_id: String,
}

/// Isolates the domain's vifs, unpauses it when paused, delivers, and releases on success.
fn isolate_and_deliver(
    toolstack: &dyn Toolstack,
    domain: Domain,
    options: &DeliveryOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Outcome, RestoreError> {
    let Domain {
        domid,
        uuid: domain_uuid,
        paused,
        pending,
        bundle_id,
    } = domain;
    let before_isolation = |what: &str, detail: String| before_isolation(domid, paused, what, detail);
    let allow = options.allow();
    let t = Instant::now();
    let vifs = toolstack
        .vifs(domid)
        .map_err(|e| before_isolation("listing the domain's vifs", e.to_string()))?;
    if vifs.is_empty() {
        return Err(before_isolation(
            "the domain has no vif",
            "the agent is unreachable without a network interface".into(),
        ));
    }
    isolate::isolate(&vifs, &[allow]).map_err(|e| before_isolation("isolating the domain's vifs", e.to_string()))?;
    let isolate_s = seconds_since(t);
    progress(Progress::Isolated {
        vifs: &vifs,
        allow: &allow,
    });

    let deliver_again = format!("dormouse deliver --domain {domid} {}", options.deliver_args().join(" "));
    let stranded = |failure: String, report: Option<serde_json::Value>| {
        RestoreError::Stranded(Box::new(Stranded {
            domid,
            vifs: vifs.clone(),
            pending_key: pending.clone(),
            bundle_id: bundle_id.clone(),
            failure,
            report,
            deliver_again: deliver_again.clone(),
        }))
    };
    if paused {
        toolstack
            .unpause(domid)
            .map_err(|e| stranded(format!("unpausing domain {domid}: {e}"), None))?;
        progress(Progress::Unpaused);
    }
    let unpaused = Instant::now();
    let deadline = unpaused + options.timeout;

    let local = SocketAddr::new(options.dom0, options.port);
    let remote = SocketAddr::new(options.agent, options.port);
    let (stream, attempts) = transport::connect_from(local, remote, deadline)
        .map_err(|e| stranded(format!("reaching the agent: {e}"), None))?;
    let unpause_to_connected_s = seconds_since(unpaused);
    progress(Progress::Connected {
        attempts,
        seconds: unpause_to_connected_s,
    });
    let delivery = transport::deliver(stream, &options.bundle, deadline, &mut |m| progress(Progress::Agent(m)))
        .map_err(|e| stranded(format!("delivering {}: {e}", options.bundle.display()), None))?;
    let report = match delivery.outcome {
        Ok(report) => report,
        Err(message) => return Err(stranded(format!("the agent refused the bundle: {message}"), None)),
    };
    let result = report["result"].as_str().unwrap_or("?");
    if result != "applied" && result != "already-applied" {
        let error = report["error"].as_str().unwrap_or("no error given");
        return Err(stranded(
            format!("the agent's apply of bundle {bundle_id}: {result}: {error}"),
            Some(report.clone()),
        ));
    }

    isolate::release(&vifs).map_err(|e| stranded(format!("releasing the isolation: {e}"), Some(report.clone())))?;
    let unpause_to_released_s = seconds_since(unpaused);
    progress(Progress::Released { vifs: &vifs });
    let mut warnings = Vec::new();
    if let Some(key) = &pending {
        if let Err(e) = toolstack.xenstore_remove(key) {
            warnings.push(format!(
                "removing {key}: {e}; remove it by hand (xenstore-rm {key}) or re-created vifs of the domain come up isolated"
            ));
        }
    }
    Ok(Outcome {
        domid,
        domain_uuid,
        vifs,
        bundle_id,
        bundle_bytes: delivery.bundle_bytes,
        timings: Timings {
            restore_s: 0.0,
            isolate_s,
            unpause_to_connected_s,
            send_s: delivery.send_seconds,
            apply_s: report["timings"]["total"].as_f64().unwrap_or_default(),
            unpause_to_released_s,
            total_s: 0.0,
        },
        report,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toolstack whose `xl restore -p` ends as `restore` says, recording xenstore removals.
    struct FakeRestore {
        restore: fn() -> Result<u32, ToolstackError>,
        removed: std::cell::RefCell<Vec<String>>,
    }

    impl Toolstack for FakeRestore {
        fn vifs(&self, _: u32) -> Result<Vec<String>, ToolstackError> {
            unreachable!("restore_paused looks at no vif")
        }
        fn restore_paused(&self, _: &Path) -> Result<u32, ToolstackError> {
            (self.restore)()
        }
        fn unpause(&self, _: u32) -> Result<(), ToolstackError> {
            unreachable!("restore_paused unpauses nothing")
        }
        fn paused(&self, _: u32) -> Result<bool, ToolstackError> {
            Ok(true)
        }
        fn domain_uuid(&self, _: u32) -> Result<String, ToolstackError> {
            unreachable!()
        }
        fn xenstore_write(&self, _: &str, _: &str) -> Result<(), ToolstackError> {
            Ok(())
        }
        fn xenstore_remove(&self, path: &str) -> Result<(), ToolstackError> {
            self.removed.borrow_mut().push(path.to_owned());
            Ok(())
        }
    }

    #[test]
    fn a_restore_whose_domain_cannot_be_told_apart_keeps_the_pending_key_and_says_so() {
        let ts = FakeRestore {
            restore: || {
                Err(ToolstackError::NewDomain {
                    command: "xl restore -p web1.save".into(),
                    found: 2,
                    domids: vec![5, 6],
                })
            },
            removed: Default::default(),
        };
        let key = "/dormouse/pending/0f8e2c1a-0000-4000-8000-000000000001";
        let err = restore_paused(&ts, Path::new("web1.save"), Some(key)).unwrap_err();
        assert!(
            matches!(&err, RestoreError::Ambiguous { domids, .. } if domids == &[5, 6]),
            "{err:?}"
        );
        assert!(
            ts.removed.borrow().is_empty(),
            "the pending key went: {:?}",
            ts.removed.borrow()
        );
        let text = err.to_string();
        assert!(!text.contains("nothing was restored"), "{text}");
        assert!(
            text.contains("[5, 6]") && text.contains(key) && text.contains("xl destroy"),
            "{text}"
        );
    }

    #[test]
    fn a_failed_restore_removes_the_pending_key() {
        let ts = FakeRestore {
            restore: || {
                Err(ToolstackError::Output {
                    command: "xl restore -p web1.save".into(),
                    output: String::new(),
                    expected: "a domain id",
                })
            },
            removed: Default::default(),
        };
        let err = restore_paused(&ts, Path::new("web1.save"), Some("/dormouse/pending/x")).unwrap_err();
        assert!(err.to_string().contains("nothing was restored"), "{err}");
        assert_eq!(*ts.removed.borrow(), ["/dormouse/pending/x"]);
    }

    fn identity() -> GuestIdentity {
        GuestIdentity {
            domain_name: Some("web1".into()),
            domain_uuid: Some("00112233-4455-6677-8899-aabbccddeeff".into()),
            kernel_release: "6.1.0-18-amd64".into(),
            boot_id: Some("b1".into()),
            hostname: "web1".into(),
        }
    }

    #[test]
    fn identity_differences_are_listed_and_absent_bundle_fields_do_not_count() {
        assert!(identity_mismatches(&identity(), &identity()).is_empty());
        let mut image = identity();
        image.boot_id = Some("b2".into());
        image.kernel_release = "6.1.0-20-amd64".into();
        image.domain_uuid = None;
        let m = identity_mismatches(&identity(), &image);
        assert_eq!(
            m,
            [
                "kernel release: bundle 6.1.0-18-amd64, image 6.1.0-20-amd64",
                "boot_id: bundle b1, image b2",
                "domain UUID: bundle 00112233-4455-6677-8899-aabbccddeeff, image (none)",
            ]
        );
        let mut bundle = identity();
        bundle.domain_name = None;
        bundle.boot_id = None;
        let mut image = identity();
        image.domain_name = Some("other".into());
        assert!(identity_mismatches(&bundle, &image).is_empty());
    }
}
