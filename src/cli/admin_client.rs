//! A minimal HTTP/1.1 client for the admin listener (session commands, probes).

use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::CliError;

/// A wildcard listen address is reached on loopback.
pub(super) fn reachable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// How long a session command waits for the admin listener (a proxy that hangs must not hang
/// the operator's shell or script).
const ADMIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Sends one request to the admin listener; its answer's body, or an error naming the listener.
pub(super) async fn call(
    addr: SocketAddr,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<String, CliError> {
    tokio::time::timeout(ADMIN_TIMEOUT, exchange(addr, token, method, path, body))
        .await
        .unwrap_or_else(|_| {
            Err(CliError::Runtime(format!(
                "admin listener {addr}: no answer within {}s",
                ADMIN_TIMEOUT.as_secs()
            )))
        })
}

async fn exchange(
    addr: SocketAddr,
    token: Option<&str>,
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
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string())
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
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
