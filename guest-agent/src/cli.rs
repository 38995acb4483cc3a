//! `dormouse-agent`'s command line: what it takes. `main.rs` parses it and runs the library;
//! `dormouse generate-docs` renders its man page and completions from this same definition.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::apply::DEFAULT_KEY;
use crate::serve::{DEFAULT_MAX_BUNDLE, DEFAULT_SPOOL};

#[derive(Parser)]
#[command(
    name = "dormouse-agent",
    version,
    about = "Applies dormouse bundles inside the guest"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
