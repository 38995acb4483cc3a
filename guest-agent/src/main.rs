//! `dormouse-agent`: argument parsing and output only; the work is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use guest_agent::apply::{ApplyOptions, Report, apply};
use guest_agent::cli::{Cli, Command};
use guest_agent::rollback::{rollback, status};
use guest_agent::serve::{ServeOptions, serve};

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
