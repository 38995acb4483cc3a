//! `dormouse keygen` and `dormouse bundle show|verify`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Subcommand;

use crate::output::Stdout;
use crate::progress::Steps;

#[derive(Subcommand)]
pub(crate) enum BundleCommand {
    /// What a bundle changes: files added/changed/removed, scripts by type, packages.
    Show {
        bundle: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check a bundle's signature (BUNDLE.minisig) and every member against its manifest.
    /// Same signature check by the standard tool: `minisign -Vm BUNDLE -p KEY`.
    Verify {
        bundle: PathBuf,
        /// The signer's public key (`dormouse keygen`'s PREFIX.pub).
        #[arg(long, value_name = "PUB")]
        key: PathBuf,
        /// Print what was checked as JSON (a bad bundle is an error, exit status 1).
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn keygen(prefix: &Path, json: bool) -> Result<()> {
    let key = applier::pack::generate_key()?;
    let (secret, public) = applier::pack::write_key_pair(&key, prefix)?;
    if json {
        let json = serde_json::json!({
            "secret_key": secret,
            "public_key": public,
            "key_id": key.public().key_id_hex(),
        });
        writeln!(Stdout::lock(), "{}", serde_json::to_string_pretty(&json)?)?;
        return Ok(());
    }
    writeln!(
        Stdout::lock(),
        "secret key {} (keep it in dom0), public key {} (id {})",
        secret.display(),
        public.display(),
        key.public().key_id_hex()
    )?;
    Ok(())
}

pub(crate) fn bundle(command: BundleCommand) -> Result<()> {
    match command {
        BundleCommand::Show { bundle, json } => {
            let bundle = bundle::read::Bundle::open(&bundle)?;
            let summary = bundle::summary::summarize(bundle.manifest());
            let mut out = Stdout::lock();
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&summary)?)?;
            } else {
                writeln!(out, "{summary}")?;
            }
            Ok(())
        }
        BundleCommand::Verify { bundle, key, json } => {
            let public = bundle::sign::PublicKey::read(&key)?;
            let sig_path = bundle::sign::signature_path(&bundle);
            let signature = bundle::sign::read_signature(&sig_path)?;
            let mut steps = Steps::new(json);
            steps.step(format!("checking the signature of {}", bundle.display()));
            let trusted = public.verify_file(&bundle, &signature, &sig_path)?;
            steps.step("checking every member against the manifest");
            let stats = bundle::read::Bundle::open(&bundle)?.verify_payload()?;
            steps.finish_step();
            if json {
                let json = serde_json::json!({
                    "bundle": bundle,
                    "signature": sig_path,
                    "key_id": public.key_id_hex(),
                    "trusted_comment": trusted,
                    "members": stats.members,
                    "bytes": stats.bytes,
                });
                writeln!(Stdout::lock(), "{}", serde_json::to_string_pretty(&json)?)?;
                return Ok(());
            }
            writeln!(
                Stdout::lock(),
                "{}: signature by key {} good ({trusted}); {} members, {} bytes match the manifest",
                bundle.display(),
                public.key_id_hex(),
                stats.members,
                stats.bytes
            )?;
            Ok(())
        }
    }
}
