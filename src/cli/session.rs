//! `wardgate session list | revoke`: the session inventory of a running proxy, through its
//! admin listener (`[admin] addr`) with the token from `[admin] token_file`.
//!
//! The CLI does not touch the state store itself: going through the proxy means the same
//! code revokes sessions for the CLI, the admin API and every replica.

use std::net::SocketAddr;

use bytes::Bytes;
use clap::Subcommand;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

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
            let body = runtime.block_on(call(addr, &token, Method::GET, &path, None))?;
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
                &token,
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

/// A wildcard listen address is reached on loopback.
fn reachable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

async fn call(
    addr: SocketAddr,
    token: &str,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<String, CliError> {
    let unreachable =
        |e: &dyn std::fmt::Display| CliError::Runtime(format!("admin listener {addr}: {e}"));
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| unreachable(&e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(&e))?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string())
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| CliError::Runtime(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(&e))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| unreachable(&e))?
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if !status.is_success() {
        return Err(CliError::Runtime(format!(
            "admin API answered {status}: {text}"
        )));
    }
    Ok(text)
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
