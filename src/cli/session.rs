//! `wardgate session list | revoke`: the session inventory of a running proxy, through its
//! admin listener (`[admin] addr`) with the token from `[admin] token_file`.
//!
//! The CLI does not touch the state store itself: going through the proxy means the same
//! code revokes sessions for the CLI, the admin API and every replica.

use clap::Subcommand;
use http::Method;

use super::admin_client::{call, reachable};
use super::CliError;
use crate::config::Config;

/// `session` subcommands.
#[derive(Debug, Subcommand)]
pub(super) enum SessionCommand {
    /// List sessions (id hash, user, source IP, auth time, last seen, open sockets).
    List {
        /// Only this user's sessions.
        #[arg(long)]
        user: Option<String>,
        /// Print the admin API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke every session of a user, or one session by its id hash (from `session list`).
    Revoke {
        /// All sessions of this user.
        #[arg(long, conflicts_with = "id", required_unless_present = "id")]
        user: Option<String>,
        /// One session, by the id shown in `session list`.
        #[arg(long)]
        id: Option<String>,
    },
}

/// Runs one `session` subcommand against the proxy configured in `config`.
pub(super) fn run(config: &std::path::Path, command: SessionCommand) -> Result<(), CliError> {
    let config = Config::load(config)?;
    let Some(token_file) = &config.admin_token_file else {
        return Err(CliError::Runtime(format!(
            "{}: [admin] token_file is not set, so the session API is disabled",
            config.source.display()
        )));
    };
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| CliError::Runtime(format!("{}: {e}", token_file.display())))?
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let addr = reachable(config.admin_addr);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Runtime(e.to_string()))?;
    match command {
        SessionCommand::List { user, json } => {
            let path = match &user {
                Some(user) => format!(
                    "/sessions?{}",
                    serde_urlencoded::to_string([("user", user)]).unwrap_or_default()
                ),
                None => "/sessions".to_string(),
            };
            let body = runtime.block_on(call(addr, Some(&token), Method::GET, &path, None))?;
            if json {
                println!("{body}");
            } else {
                print_table(&body)?;
            }
            Ok(())
        }
        SessionCommand::Revoke { user, id } => {
            let request = match (user, id) {
                (Some(user), _) => serde_json::json!({ "user": user }),
                (None, Some(id)) => serde_json::json!({ "id": id }),
                (None, None) => return Err(CliError::Runtime("give --user or --id".into())),
            };
            let body = runtime.block_on(call(
                addr,
                Some(&token),
                Method::POST,
                "/sessions/revoke",
                Some(request.to_string()),
            ))?;
            let answer: serde_json::Value = serde_json::from_str(&body)
                .map_err(|e| CliError::Runtime(format!("unexpected answer: {e}")))?;
            println!("revoked {} session(s)", answer["revoked"]);
            Ok(())
        }
    }
}

fn print_table(body: &str) -> Result<(), CliError> {
    let answer: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| CliError::Runtime(format!("unexpected answer: {e}")))?;
    let time = |v: &serde_json::Value| {
        v.as_u64().map_or("-".to_string(), |secs| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
            )
            .to_string()
        })
    };
    println!(
        "{:<44} {:<20} {:<16} {:<21} {:<21} SOCKETS",
        "SESSION", "USER", "SOURCE", "AUTH TIME", "LAST SEEN"
    );
    for row in answer["sessions"].as_array().into_iter().flatten() {
        println!(
            "{:<44} {:<20} {:<16} {:<21} {:<21} {}",
            row["id"].as_str().unwrap_or("-"),
            row["user"].as_str().unwrap_or("-"),
            row["source_ip"].as_str().unwrap_or("-"),
            time(&row["auth_time"]),
            time(&row["last_seen"]),
            row["open_sockets"]
        );
    }
    Ok(())
}

/// `wardgate probe`: one GET on the admin listener (container health checks).
pub(super) fn probe(config: &std::path::Path, ready: bool) -> Result<(), CliError> {
    let config = Config::load(config)?;
    let path = if ready { "/readyz" } else { "/healthz" };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Runtime(e.to_string()))?;
    let addr = reachable(config.admin_addr);
    let answer = runtime.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            call(addr, None, Method::GET, path, None),
        )
        .await
        .map_err(|_| CliError::Runtime(format!("admin listener {addr}: no answer in 5 s")))?
    })?;
    println!("{}", answer.trim());
    Ok(())
}
