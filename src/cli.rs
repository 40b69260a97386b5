//! Command line: parse with clap, dispatch, and map failures to exit codes
//! (0 success, 1 runtime failure, 2 usage or config error).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::ConfigError;

mod admin_client;
mod audit;
mod policy;
mod serve;
mod session;
mod user;

/// Wardgate: zero-trust authenticating reverse proxy for telehealth.
#[derive(Debug, Parser)]
#[command(name = "wardgate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// Config file.
        #[arg(long, default_value = "config/wardgate.toml")]
        config: PathBuf,
        /// Run as root on a non-loopback address anyway (not recommended: use a dedicated
        /// user with CAP_NET_BIND_SERVICE).
        #[arg(long)]
        allow_root: bool,
    },
    /// Run the proxy on the default config in front of the built-in demo telehealth backend.
    Demo {
        /// Config file (default: config/wardgate.toml, or the embedded copy if absent).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Manage users (the users file named in the config).
    User {
        /// Config file.
        #[arg(long, default_value = "config/wardgate.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: user::UserCommand,
    },
    /// Session signing keys.
    Keys {
        /// Config file.
        #[arg(long, default_value = "config/wardgate.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Dry-run authorization decisions.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Health probe for containers without curl: GET /healthz (or /readyz) on the admin
    /// listener; exit 0 when it answers 200, 1 otherwise.
    Probe {
        /// Config file (for the admin address).
        #[arg(long, default_value = "config/wardgate.toml")]
        config: PathBuf,
        /// Probe /readyz instead of /healthz.
        #[arg(long)]
        ready: bool,
    },
    /// Sessions of the running proxy: list them, revoke a user's or one (via the admin API).
    Session {
        /// Config file (for the admin address and token).
        #[arg(long, default_value = "config/wardgate.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: session::SessionCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a config file: exit 0, or exit 2 printing every error as FILE:LINE: FIELD: message.
    Check {
        /// Config file.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Add a new session signing key; it signs new sessions after the proxy reloads, and the
    /// old keys keep verifying existing sessions until you remove them.
    Rotate,
}

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The config is invalid (exit 2).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// Something failed at run time (exit 1).
    #[error("{0}")]
    Runtime(String),
    /// A refused invocation (exit 2), such as root on a public port.
    #[error("{0}")]
    Usage(String),
    /// The answer was already printed; exit with this code.
    #[error("")]
    Quiet(u8),
}

impl CliError {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) => 2,
            CliError::Runtime(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Quiet(code) => *code,
        }
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve { config, allow_root } => serve::serve(&config, allow_root),
        Command::Demo { config } => serve::demo(config),
        Command::User { config, command } => user::run(&config, command),
        Command::Audit { command } => audit::run(command),
        Command::Policy { command } => policy::run(command),
        Command::Session { config, command } => session::run(&config, command),
        Command::Probe { config, ready } => session::probe(&config, ready),
        Command::Keys {
            config,
            command: KeysCommand::Rotate,
        } => {
            let config = crate::config::Config::load(&config)?;
            let kid = crate::authn::token::SessionKeys::rotate(&config.auth.session_keys_file)
                .map_err(CliError::Runtime)?;
            println!(
                "new session key {kid} added to {}; send SIGHUP to the proxy to start using it",
                config.auth.session_keys_file.display()
            );
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            let config = crate::config::Config::load(&file)?;
            for warning in &config.warnings {
                eprintln!("warning: {warning}");
            }
            // What `serve` checks beyond the file itself, so a config that passes here also
            // starts: the certificate and key files and the client CA bundle (a development
            // certificate is not made here), and the admin token.
            let mut problems = Vec::new();
            if matches!(config.listen.tls, crate::config::TlsSource::Files { .. }) {
                if let Err(err) = crate::server::tls::server_config(&config) {
                    problems.push(err.to_string());
                }
            }
            if let Some(path) = &config.admin_token_file {
                if let Err(err) = crate::app::read_token(path) {
                    problems.push(err);
                }
            }
            if !problems.is_empty() {
                for problem in &problems {
                    eprintln!("{}: {problem}", file.display());
                }
                return Err(CliError::Quiet(2));
            }
            println!(
                "{}: ok ({} routes, {} upstreams)",
                file.display(),
                config.routes.len(),
                config.upstreams.len()
            );
            Ok(())
        }
    }
}
