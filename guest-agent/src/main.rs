//! `dormouse-agent`: argument parsing and output only; the work is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use guest_agent::apply::{ApplyOptions, DEFAULT_KEY, Report, apply};
use guest_agent::rollback::{rollback, status};
use guest_agent::serve::{DEFAULT_MAX_BUNDLE, DEFAULT_SPOOL, ServeOptions, serve};

#[derive(Parser)]
#[command(
    name = "dormouse-agent",
    version,
    about = "Applies dormouse bundles inside the guest"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify a bundle and apply it: pre scripts, files, removals, post scripts, journaled.
    /// Exit status: 0 applied (or already), 1 failed (journal kept: apply again resumes,
    /// rollback undoes), 3 refused (nothing changed).
    Apply {
        bundle: PathBuf,
        /// Apply to the tree at DIR instead of the running system (scripts run chrooted into
        /// it; the identity checks that concern the running kernel are skipped).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// The signer's public key (minisign format).
        #[arg(long, value_name = "PUB", default_value = DEFAULT_KEY)]
        key: PathBuf,
        #[arg(long)]
        json: bool,
        /// Apply despite identity or base-fingerprint conflicts (they are journaled).
        #[arg(long)]
        force: bool,
    },
    /// Undo an apply (finished or not) from its journal.
    Rollback {
        id: String,
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Receive bundles from dom0 over the agent channel and apply them (as `apply` does),
    /// streaming progress and the report back. Serves one delivery at a time, forever.
    Serve {
        /// Address and port to listen on (the channel's port: dom0 connects from the same
        /// port number).
        #[arg(long, value_name = "ADDR:PORT", env = "DORMOUSE_AGENT_LISTEN")]
        listen: std::net::SocketAddr,
        /// dom0's address (ADDR, or ADDR:PORT to also pin its source port); connections from
        /// anywhere else are closed unread.
        #[arg(long, value_name = "DOM0ADDR[:PORT]", env = "DORMOUSE_AGENT_DOM0")]
        allow_from: String,
        /// The signer's public key (minisign format): only bundles it signed are applied.
        #[arg(long, value_name = "PUB", default_value = DEFAULT_KEY)]
        key: PathBuf,
        /// Apply to the tree at DIR instead of the running system, as `apply --root`.
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Where received bundles are kept until applied (created 0700).
        #[arg(long, value_name = "DIR", default_value = DEFAULT_SPOOL)]
        spool: PathBuf,
        /// Largest bundle accepted, in bytes.
        #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_BUNDLE)]
        max_bundle_size: u64,
        /// Seconds any read or write of the channel may wait.
        #[arg(long, value_name = "S", default_value_t = 60)]
        io_timeout: u64,
    },
    /// List applied, partial and rolled-back bundles.
    Status {
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

fn print_report(report: &Report) {
    let id = report.bundle_id.as_deref().unwrap_or("?");
    if let Some(step) = report.resumed_after {
        println!("resuming bundle {id} after step {step}");
    }
    for check in &report.identity {
        println!("identity {:8} {}", check.status, check.detail);
    }
    for step in &report.steps {
        if step.skipped {
            println!("step {:12} done earlier", step.name);
        } else {
            println!("step {:12} {:8.3} s  {} items", step.name, step.seconds, step.items);
        }
    }
    for s in &report.scripts {
        println!(
            "script {:4} {:4} {} {} -> {} ({:.3} s)",
            s.seq,
            format!("{:?}", s.phase).to_lowercase(),
            s.package,
            s.argv.join(" "),
            s.exit_code,
            s.seconds
        );
    }
    let t = &report.timings;
    println!(
        "{id}: {} in {:.3} s (scripts {:.3} s, dormouse {:.3} s: verify {:.3}, check {:.3}, journal {:.3}, backup {:.3}, install {:.3}, remove {:.3})",
        report.result, t.total, t.scripts, t.own, t.verify, t.check, t.journal, t.backup, t.install, t.remove
    );
    if let Some(error) = &report.error {
        eprintln!("dormouse-agent: {error}");
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dormouse-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    match Cli::parse().command {
        Command::Apply {
            bundle,
            root,
            key,
            json,
            force,
        } => {
            let report = apply(&ApplyOptions {
                bundle,
                root,
                key,
                force,
            });
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_report(&report);
            }
            Ok(match report.result {
                "applied" | "already-applied" => ExitCode::SUCCESS,
                "refused" => ExitCode::from(3),
                _ => ExitCode::FAILURE,
            })
        }
        Command::Serve {
            listen,
            allow_from,
            key,
            root,
            spool,
            max_bundle_size,
            io_timeout,
        } => {
            let (allow_from, allow_port) = match allow_from.parse::<std::net::SocketAddr>() {
                Ok(sa) => (sa.ip(), Some(sa.port())),
                Err(_) => (
                    allow_from
                        .parse()
                        .map_err(|e| anyhow::anyhow!("--allow-from {allow_from}: {e}; expected ADDR or ADDR:PORT"))?,
                    None,
                ),
            };
            serve(&ServeOptions {
                listen,
                allow_from,
                allow_port,
                key,
                root,
                spool,
                max_bundle: max_bundle_size,
                io_timeout: std::time::Duration::from_secs(io_timeout),
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollback { id, root, json } => {
            let report = rollback(&root.unwrap_or_else(|| PathBuf::from("/")), &id)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{}: {} ({} added paths removed, {} restored) in {:.3} s",
                    report.bundle_id, report.result, report.removed, report.restored, report.seconds
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { root, json } => {
            let entries = status(&root.unwrap_or_else(|| PathBuf::from("/")))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                for e in &entries {
                    println!(
                        "{}  {:12} step {:12} {}{}",
                        e.bundle_id,
                        e.status,
                        e.step.unwrap_or("-"),
                        e.bundle,
                        e.error.as_deref().map(|x| format!("  error: {x}")).unwrap_or_default()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
