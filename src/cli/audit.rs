//! `wardgate audit verify [--config FILE] PATH...`: exit 0 only when the log is intact,
//! otherwise exit 1 printing `FILE:LINE: reason` for the first broken record.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::CliError;
use crate::audit::checkpoint::{unhex, CheckpointKey};
use crate::audit::verify;

/// `audit` subcommands.
#[derive(Debug, Subcommand)]
pub(super) enum AuditCommand {
    /// Check the hash chain, sequence, file linkage and (with --config) checkpoint signatures.
    Verify {
        /// Config whose `[audit] signing_key` checks checkpoint signatures.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Audit files, or directories of `*.jsonl` files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

fn public_key(key_path: &Path) -> Result<Vec<u8>, CliError> {
    let public = key_path.with_extension("pub");
    if let Ok(text) = std::fs::read_to_string(&public) {
        return unhex(text.trim()).ok_or_else(|| {
            CliError::Runtime(format!("{}: not a hex public key", public.display()))
        });
    }
    if key_path.exists() {
        return CheckpointKey::load_or_create(key_path)
            .map(|k| k.public())
            .map_err(CliError::Runtime);
    }
    Err(CliError::Runtime(format!(
        "{}: no audit signing key (or .pub) to check checkpoints with",
        key_path.display()
    )))
}

pub(super) fn run(command: AuditCommand) -> Result<(), CliError> {
    match command {
        AuditCommand::Verify { config, paths } => {
            let key = match config {
                Some(path) => Some(public_key(
                    &crate::config::Config::load(&path)?.audit.signing_key,
                )?),
                None => None,
            };
            let files = verify::expand(&paths).map_err(|e| CliError::Runtime(e.to_string()))?;
            if files.is_empty() {
                return Err(CliError::Runtime("no audit files found".into()));
            }
            match verify::verify(&files, key.as_deref()) {
                Ok(report) => {
                    let signatures = if key.is_some() {
                        format!("{} checkpoint signatures verified", report.checkpoints)
                    } else {
                        "checkpoint signatures not checked (pass --config)".to_string()
                    };
                    println!(
                        "intact: {} records in {} files; {signatures}",
                        report.records, report.files
                    );
                    Ok(())
                }
                Err(broken) => Err(CliError::Runtime(broken.to_string())),
            }
        }
    }
}
