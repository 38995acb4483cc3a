//! `dormouse isolate` and `dormouse release`: vif firewalling.

use std::io::Write;

use anyhow::{Result, bail};
use clap::{ArgGroup, Args};

use crate::output::Stdout;

#[derive(Args)]
#[command(group(ArgGroup::new("target").required(true).args(["domain", "vifs", "list"])))]
pub(crate) struct IsolateArgs {
    /// The running domain whose vifs to isolate (their names are read from xenstore).
    #[arg(long, value_name = "DOMID")]
    domain: Option<u32>,
    /// Interfaces to isolate, by name; they need not exist yet.
    #[arg(long = "vif", value_name = "IFNAME", num_args = 1..)]
    vifs: Vec<String>,
    /// dom0 endpoint the vifs may talk to: ADDR (anything to and from it) or ADDR:PORT,
    /// [IPV6]:PORT (TCP whose dom0-side port is PORT, either side connecting). Repeatable;
    /// without it nothing passes.
    #[arg(long = "allow", value_name = "ADDR[:PORT]", conflicts_with = "list")]
    allow: Vec<String>,
    /// Show the isolated vifs instead.
    #[arg(long)]
    list: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(group(ArgGroup::new("target").required(true).args(["domain", "vifs", "all"])))]
pub(crate) struct ReleaseArgs {
    /// The domain whose vifs to release (names read from xenstore).
    #[arg(long, value_name = "DOMID")]
    domain: Option<u32>,
    /// Interfaces to release, by name (as `dormouse isolate --list` shows them).
    #[arg(long = "vif", value_name = "IFNAME", num_args = 1..)]
    vifs: Vec<String>,
    /// Every isolated vif: the dormouse nftables tables are deleted.
    #[arg(long)]
    all: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The vifs named on the command line, or those of `--domain` from xenstore.
pub(crate) fn target_vifs(domain: Option<u32>, vifs: Vec<String>) -> Result<Vec<String>> {
    use applier::toolstack::Toolstack;
    let Some(domid) = domain else {
        return Ok(vifs);
    };
    let found = applier::toolstack::XlToolstack.vifs(domid)?;
    if found.is_empty() {
        bail!("domain {domid} has no vif under /local/domain/0/backend/vif/{domid} in xenstore: nothing to do");
    }
    Ok(found)
}

pub(crate) fn isolate(args: IsolateArgs) -> Result<()> {
    crate::privilege::require_root(crate::privilege::NFTABLES)?;
    let mut out = Stdout::lock();
    if args.list {
        let isolated = applier::isolate::list()?;
        if args.json {
            writeln!(out, "{}", serde_json::to_string_pretty(&isolated)?)?;
        } else if isolated.is_empty() {
            writeln!(out, "no vif is isolated")?;
        }
        for v in isolated.iter().filter(|_| !args.json) {
            let allow: Vec<String> = v.allow.iter().map(|a| a.to_string()).collect();
            writeln!(
                out,
                "{}: allows {}; tables {}; {} packets dropped",
                v.vif,
                if allow.is_empty() {
                    "nothing".to_owned()
                } else {
                    allow.join(" ")
                },
                v.families.join("+"),
                v.dropped_packets
            )?;
        }
        return Ok(());
    }
    let allow = args
        .allow
        .iter()
        .map(|a| a.parse::<applier::isolate::Allow>())
        .collect::<Result<Vec<_>, _>>()?;
    let vifs = target_vifs(args.domain, args.vifs)?;
    applier::isolate::isolate(&vifs, &allow)?;
    if args.json {
        writeln!(out, "{}", serde_json::json!({"isolated": vifs, "allow": allow}))?;
    } else {
        let allow: Vec<String> = allow.iter().map(|a| a.to_string()).collect();
        writeln!(
            out,
            "isolated {}; allowed: {}",
            vifs.join(" "),
            if allow.is_empty() {
                "nothing".to_owned()
            } else {
                allow.join(" ")
            }
        )?;
    }
    Ok(())
}

pub(crate) fn release(args: ReleaseArgs) -> Result<()> {
    crate::privilege::require_root(crate::privilege::NFTABLES)?;
    let report = if args.all {
        applier::isolate::Released {
            released: applier::isolate::release_all()?,
            not_isolated: Vec::new(),
        }
    } else {
        applier::isolate::release(&target_vifs(args.domain, args.vifs)?)?
    };
    let mut out = Stdout::lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        for vif in &report.released {
            writeln!(out, "released {vif}")?;
        }
        for vif in &report.not_isolated {
            writeln!(out, "{vif} was not isolated")?;
        }
    }
    Ok(())
}
