//! `dormouse restore`, `pend` and `deliver`: a saved domain back, isolated until patched.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use introspect::linux::GuestSnapshot;

use super::image::{ImageArgs, snapshot_and_config};
use crate::output::Stdout;
use crate::progress::Steps;

/// The bundle and the agent channel, as `restore`, `pend` and `deliver` take them.
#[derive(Args)]
pub(crate) struct ChannelArgs {
    /// The bundle made from IMAGE by `emulate --out` (its signature B.minisig beside it).
    #[arg(long, value_name = "B")]
    bundle: PathBuf,
    /// The signer's public key, the one the guests trust (/etc/dormouse/trusted.pub there):
    /// the signature and every member are checked before the domain is touched.
    #[arg(long, value_name = "PUB")]
    key: PathBuf,
    /// dom0's address on the guest's network (default: the one routing picks towards the agent).
    #[arg(long, value_name = "ADDR")]
    dom0_addr: Option<std::net::IpAddr>,
    /// The agent channel's port: the agent listens on it, dom0 connects from it.
    #[arg(long, value_name = "N", default_value_t = applier::transport::DEFAULT_PORT)]
    port: u16,
    /// A program implementing the toolstack operations (see applier::toolstack::CommandToolstack)
    /// instead of `xl` and the xenstore tools.
    #[arg(long, value_name = "PROGRAM", env = "DORMOUSE_TOOLSTACK")]
    toolstack: Option<PathBuf>,
}

impl ChannelArgs {
    fn toolstack(&self) -> Box<dyn applier::toolstack::Toolstack> {
        match &self.toolstack {
            Some(program) => Box::new(applier::toolstack::CommandToolstack {
                program: program.clone(),
            }),
            None => Box::new(applier::toolstack::XlToolstack),
        }
    }

    fn delivery(&self, agent: std::net::IpAddr, timeout: u64) -> Result<applier::restore::DeliveryOptions> {
        let dom0 = match self.dom0_addr {
            Some(addr) => addr,
            None => applier::restore::dom0_address_towards(agent)
                .with_context(|| format!("finding dom0's address towards {agent}; pass --dom0-addr ADDR"))?,
        };
        Ok(applier::restore::DeliveryOptions {
            bundle: self.bundle.clone(),
            key: bundle::sign::PublicKey::read(&self.key)?,
            key_path: self.key.clone(),
            agent,
            dom0,
            port: self.port,
            timeout: std::time::Duration::from_secs(timeout),
        })
    }
}

#[derive(Args)]
pub(crate) struct RestoreArgs {
    #[command(flatten)]
    image: ImageArgs,
    #[command(flatten)]
    channel: ChannelArgs,
    /// The guest's address for the agent channel (default: the first address of the guest's
    /// interfaces in the snapshot, IPv4 first).
    #[arg(long, value_name = "ADDR")]
    agent: Option<std::net::IpAddr>,
    /// Seconds from unpausing the domain until the agent's final report.
    #[arg(long, value_name = "S", default_value_t = 900)]
    timeout: u64,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct PendArgs {
    #[command(flatten)]
    image: ImageArgs,
    #[command(flatten)]
    channel: ChannelArgs,
    /// The guest's address for the agent channel (default: as `restore`), for the `deliver`
    /// command printed at the end.
    #[arg(long, value_name = "ADDR")]
    agent: Option<std::net::IpAddr>,
    /// Print the key written and `deliver`'s arguments as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct DeliverArgs {
    /// The restored domain (`xl list` ID).
    #[arg(long, value_name = "DOMID")]
    domain: u32,
    #[command(flatten)]
    channel: ChannelArgs,
    /// The guest's address for the agent channel.
    #[arg(long, value_name = "ADDR")]
    agent: std::net::IpAddr,
    /// Seconds until the agent's final report.
    #[arg(long, value_name = "S", default_value_t = 900)]
    timeout: u64,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

/// The agent's address: given, or the guest's first in the snapshot.
pub(crate) fn agent_of(
    given: Option<std::net::IpAddr>,
    snapshot: &GuestSnapshot,
    image: &ImageArgs,
) -> Result<std::net::IpAddr> {
    match given {
        Some(addr) => Ok(addr),
        None => applier::restore::agent_address(snapshot).with_context(|| {
            format!(
                "{}: the guest's interfaces have no usable address; pass --agent ADDR",
                image.source()
            )
        }),
    }
}

pub(crate) fn restore_options(
    image: &ImageArgs,
    channel: &ChannelArgs,
    agent: Option<std::net::IpAddr>,
    timeout: u64,
) -> Result<applier::restore::RestoreOptions> {
    let (snapshot, _) = snapshot_and_config(image)?;
    let agent = agent_of(agent, &snapshot, image)?;
    Ok(applier::restore::RestoreOptions {
        image: image.image_file()?.clone(),
        image_identity: applier::pack::guest_identity(&snapshot),
        delivery: channel.delivery(agent, timeout)?,
    })
}

/// How `restore` and `deliver` report what happens, on stderr: a spinner per phase on a
/// terminal, else the lines scripts and logs read.
pub(crate) fn print_progress<'s>(
    agent: std::net::IpAddr,
    first: &str,
    steps: &'s mut Steps,
) -> impl FnMut(applier::restore::Progress) + 's {
    use applier::restore::Progress;
    use applier::transport::Message;
    steps.step(first);
    move |p: Progress| match p {
        Progress::PendingKey { path } => steps.detail(&format!("marked pending: {path}")),
        Progress::Restored { domid, seconds } => {
            steps.detail(&format!("restored paused as domain {domid} ({seconds:.2} s)"));
            steps.step(format!("isolating domain {domid}"));
        }
        Progress::Isolated { vifs, allow } => {
            steps.detail(&format!("isolated {} (allowed: {allow})", vifs.join(" ")));
            steps.step("unpausing");
        }
        Progress::Unpaused => {
            steps.detail("unpaused");
            steps.step(format!("reaching the agent at {agent}"));
        }
        Progress::Connected { attempts, seconds } => {
            steps.detail(&format!(
                "agent at {agent} reached after {seconds:.2} s ({attempts} attempts)"
            ));
            steps.step("the agent applies the bundle");
        }
        Progress::Agent(Message::Progress { stage, detail, seconds }) => {
            let of = applier::transport::APPLY_STEPS.iter().position(|s| *s == stage);
            let count = of.map_or(String::new(), |k| {
                format!(" [{}/{}]", k + 1, applier::transport::APPLY_STEPS.len())
            });
            steps.detail(&format!("agent: {stage} ({detail}) at {seconds:.2} s{count}"));
        }
        Progress::Agent(_) => {}
        Progress::Released { vifs } => {
            steps.detail(&format!("released {}", vifs.join(" ")));
            steps.finish_step();
        }
    }
}

/// Prints a delivery's outcome; a stranded domain is an error after its JSON.
pub(crate) fn report_delivery(
    result: Result<applier::restore::Outcome, applier::restore::RestoreError>,
    json: bool,
) -> Result<()> {
    use applier::restore::RestoreError;
    let mut out = Stdout::lock();
    match result {
        Ok(outcome) => {
            for warning in &outcome.warnings {
                eprintln!("dormouse: warning: {warning}");
            }
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&outcome)?)?;
            } else {
                writeln!(
                    out,
                    "domain {} ({}): bundle {} {}; isolation lifted {:.2} s after unpausing (agent apply {:.2} s)",
                    outcome.domid,
                    outcome.domain_uuid,
                    outcome.bundle_id,
                    outcome.report["result"].as_str().unwrap_or("?"),
                    outcome.timings.unpause_to_released_s,
                    outcome.timings.apply_s
                )?;
                print_restarts(&mut out, &outcome.report["restarts"])?;
            }
            Ok(())
        }
        Err(RestoreError::Stranded(stranded)) => {
            if json {
                let json = serde_json::json!({
                    "domid": stranded.domid,
                    "vifs": stranded.vifs,
                    "isolated": true,
                    "pending_key": stranded.pending_key,
                    "bundle_id": stranded.bundle_id,
                    "error": stranded.failure,
                    "report": stranded.report,
                    "deliver_again": stranded.deliver_again,
                });
                writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
            }
            bail!("{stranded}")
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn restore(args: RestoreArgs) -> Result<()> {
    crate::privilege::require_root(
        "it restores the domain with the toolstack (xl, xenstore) and isolates its vifs with nftables",
    )?;
    let options = restore_options(&args.image, &args.channel, args.agent, args.timeout)?;
    let toolstack = args.channel.toolstack();
    let mut steps = Steps::new(args.json);
    let mut progress = print_progress(
        options.delivery.agent,
        "checking the bundle and restoring the domain paused",
        &mut steps,
    );
    report_delivery(
        applier::restore::restore(toolstack.as_ref(), &options, &mut progress),
        args.json,
    )
}

pub(crate) fn pend(args: PendArgs) -> Result<()> {
    if args.channel.toolstack.is_none() {
        crate::privilege::require_root("it writes the pending key to xenstore")?;
    }
    // The timeout only matters to `deliver`, which takes its own.
    let options = restore_options(&args.image, &args.channel, args.agent, 0)?;
    let key = applier::restore::pend(args.channel.toolstack().as_ref(), &options)?;
    let deliver_args = options.delivery.deliver_args();
    let mut out = Stdout::lock();
    if args.json {
        let json = serde_json::json!({
            "pending_key": key,
            "domain_uuid": options.image_identity.domain_uuid,
            "deliver_args": deliver_args,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
    } else {
        writeln!(
            out,
            "{key} written: the next restore of this domain brings its vifs up isolated (the vif-dormouse hook)"
        )?;
        writeln!(
            out,
            "once it runs: dormouse deliver --domain DOMID {}",
            deliver_args.join(" ")
        )?;
    }
    Ok(())
}

pub(crate) fn deliver(args: DeliverArgs) -> Result<()> {
    crate::privilege::require_root("it isolates the domain's vifs with nftables until the agent has applied")?;
    let options = args.channel.delivery(args.agent, args.timeout)?;
    let toolstack = args.channel.toolstack();
    let mut steps = Steps::new(args.json);
    let mut progress = print_progress(
        options.agent,
        "checking the bundle and isolating the domain",
        &mut steps,
    );
    report_delivery(
        applier::restore::deliver(toolstack.as_ref(), args.domain, &options, &mut progress),
        args.json,
    )
}

/// What the agent restarted after its apply, what it left running on replaced files, and
/// whether the guest must reboot (absent from agents older than the restarts).
fn print_restarts(out: &mut impl Write, restarts: &serde_json::Value) -> Result<()> {
    let restarted: Vec<&str> = restarts["restarted"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    if !restarted.is_empty() {
        writeln!(out, "  restarted after the update: {}", restarted.join(", "))?;
    }
    for failed in restarts["failed"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  restart FAILED: {}: {}",
            failed["unit"].as_str().unwrap_or("?"),
            failed["error"].as_str().unwrap_or("?")
        )?;
    }
    for left in restarts["not_restarted"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  still running replaced files: pid {} ({}): {}",
            left["pid"],
            left["comm"].as_str().unwrap_or("?"),
            left["reason"].as_str().unwrap_or("?")
        )?;
    }
    if let Some(reboot) = restarts["reboot_needed"].as_str() {
        writeln!(out, "  reboot needed: {reboot}")?;
    }
    Ok(())
}
