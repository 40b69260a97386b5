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
    /// Find records for an investigation (files from --config's [audit] dir, or PATHs).
    Query {
        /// Config whose `[audit] dir` is searched when no PATH is given.
        #[arg(long, default_value = "config/wardgate.toml")]
        config: PathBuf,
        /// Only this user.
        #[arg(long)]
        user: Option<String>,
        /// Only this patient id.
        #[arg(long)]
        patient: Option<String>,
        /// Only this event type (access, login, denied, break_glass, ...).
        #[arg(long)]
        event: Option<String>,
        /// From this time: RFC 3339 (`2026-11-01T00:00:00Z`) or an age like `24h`.
        #[arg(long)]
        since: Option<String>,
        /// Until this time (same forms).
        #[arg(long)]
        until: Option<String>,
        /// `json` (one record per line) or `table`.
        #[arg(long, default_value = "table")]
        format: String,
        /// Audit files or directories (default: the configured audit dir).
        paths: Vec<PathBuf>,
    },
}

/// Turns `--since`/`--until` into the record timestamp format (RFC 3339, ms, UTC).
fn time_bound(text: &str) -> Result<String, CliError> {
    let when = match crate::config::units::parse_duration(text) {
        Ok(age) => std::time::SystemTime::now() - age,
        Err(_) => humantime::parse_rfc3339_weak(text).map_err(|e| {
            CliError::Runtime(format!("`{text}`: {e} (use RFC 3339 or an age like 24h)"))
        })?,
    };
    Ok(humantime::format_rfc3339_millis(when).to_string())
}

fn query(paths: &[PathBuf], filter: &Filter, json: bool) -> Result<(), CliError> {
    let files = verify::expand(paths).map_err(|e| CliError::Runtime(e.to_string()))?;
    if !json {
        println!(
            "{:<24} {:<14} {:<16} {:<8} {:<24} {:<10} {:<6} REASON",
            "TIME", "EVENT", "USER", "PATIENT", "PATH", "DECISION", "STATUS"
        );
    }
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| CliError::Runtime(format!("{}: {e}", file.display())))?;
        for line in text.lines() {
            let Ok(record) = serde_json::from_str::<crate::audit::AuditRecord>(line) else {
                continue;
            };
            if !filter.matches(&record) {
                continue;
            }
            if json {
                println!("{line}");
            } else {
                let cell = |v: Option<&str>| v.unwrap_or("-").to_string();
                println!(
                    "{:<24} {:<14} {:<16} {:<8} {:<24} {:<10} {:<6} {}",
                    record.ts,
                    record.event,
                    cell(record.user.as_deref()),
                    cell(record.patient_id.as_deref()),
                    cell(record.path.as_deref()),
                    cell(record.decision.as_deref()),
                    record.status.map_or("-".into(), |s| s.to_string()),
                    record.break_glass.as_ref().map_or_else(
                        || cell(record.reason.as_deref()),
                        |b| format!("BREAK-GLASS: {b}")
                    ),
                );
            }
        }
    }
    Ok(())
}

struct Filter {
    user: Option<String>,
    patient: Option<String>,
    event: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

impl Filter {
    fn matches(&self, record: &crate::audit::AuditRecord) -> bool {
        self.user
            .as_ref()
            .is_none_or(|u| record.user.as_deref() == Some(u.as_str()))
            && self
                .patient
                .as_ref()
                .is_none_or(|p| record.patient_id.as_deref() == Some(p.as_str()))
            && self.event.as_ref().is_none_or(|e| record.event == *e)
            && self.since.as_ref().is_none_or(|s| *record.ts >= **s)
            && self.until.as_ref().is_none_or(|u| *record.ts <= **u)
    }
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
        AuditCommand::Query {
            config,
            user,
            patient,
            event,
            since,
            until,
            format,
            paths,
        } => {
            let paths = if paths.is_empty() {
                vec![crate::config::Config::load(&config)?.audit.dir]
            } else {
                paths
            };
            let filter = Filter {
                user,
                patient,
                event,
                since: since.as_deref().map(time_bound).transpose()?,
                until: until.as_deref().map(time_bound).transpose()?,
            };
            match format.as_str() {
                "json" => query(&paths, &filter, true),
                "table" => query(&paths, &filter, false),
                other => Err(CliError::Runtime(format!(
                    "--format `{other}` must be json or table"
                ))),
            }
        }
        AuditCommand::Verify { config, paths } => {
            let key = match config {
                Some(path) => {
                    let audit = crate::config::Config::load(&path)?.audit;
                    Some((public_key(&audit.signing_key)?, audit.checkpoint_every))
                }
                None => None,
            };
            let checkpoints = key.as_ref().map(|(public_key, every)| verify::Checkpoints {
                public_key,
                every: *every,
            });
            // Each directory is one replica's chain; files named one by one form one chain.
            let (dirs, files): (Vec<PathBuf>, Vec<PathBuf>) =
                paths.into_iter().partition(|p| p.is_dir());
            let mut chains = Vec::new();
            for dir in dirs {
                chains.push(verify::expand(&[dir]).map_err(|e| CliError::Runtime(e.to_string()))?);
            }
            if !files.is_empty() {
                chains.push(files);
            }
            chains.retain(|chain| !chain.is_empty());
            if chains.is_empty() {
                return Err(CliError::Runtime("no audit files found".into()));
            }
            let mut total = verify::Report {
                files: 0,
                records: 0,
                checkpoints: 0,
                unsigned_tail: 0,
            };
            let chain_count = chains.len();
            let outcome = chains.iter().try_for_each(|chain| {
                let report = verify::verify(chain, checkpoints)?;
                total.files += report.files;
                total.records += report.records;
                total.checkpoints += report.checkpoints;
                total.unsigned_tail += report.unsigned_tail;
                Ok::<(), verify::Broken>(())
            });
            match outcome.map(|()| total) {
                Ok(report) => {
                    let signatures = if key.is_some() {
                        let tail = match report.unsigned_tail {
                            0 => String::new(),
                            records => format!(
                                "; the last {records} records follow the last checkpoint, so only the hash chain covers them (normal while Wardgate writes this trail; a stop closes it with a checkpoint)"
                            ),
                        };
                        format!(
                            "{} checkpoint signatures verified{tail}",
                            report.checkpoints
                        )
                    } else {
                        "checkpoint signatures not checked (pass --config)".to_string()
                    };
                    println!(
                        "intact: {} records in {} files ({chain_count} chains); {signatures}",
                        report.records, report.files
                    );
                    Ok(())
                }
                Err(broken) => Err(CliError::Runtime(broken.to_string())),
            }
        }
    }
}
