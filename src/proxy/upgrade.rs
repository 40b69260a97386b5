//! WebSocket (HTTP/1.1 `Upgrade`) tunnels: telehealth video signalling.
//!
//! After the backend answers 101, both connections are handed over by hyper and bytes are
//! copied both ways. A tunnel with no traffic in either direction for the idle timeout is
//! closed; when one side closes its half, the close is passed on and the other direction may
//! finish, so WebSocket close frames and the TCP close reach both ends cleanly.

use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{sleep_until, Instant};

/// Whether a request asks for a protocol upgrade (HTTP/1.1 only).
pub fn is_upgrade<B>(req: &http::Request<B>) -> bool {
    req.version() == http::Version::HTTP_11
        && req.headers().contains_key(http::header::UPGRADE)
        && req
            .headers()
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Copies bytes between the upgraded client and upstream connections until both are done or
/// the tunnel is idle for `idle`.
pub async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, idle: Duration, route: String) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(err) => {
            tracing::warn!(%route, error = %err, "upgrade handover failed");
            return;
        }
    };
    let (mut client_read, mut client_write) = tokio::io::split(TokioIo::new(client));
    let (mut upstream_read, mut upstream_write) = tokio::io::split(TokioIo::new(upstream));
    let mut client_buf = vec![0u8; 16 * 1024];
    let mut upstream_buf = vec![0u8; 16 * 1024];
    let (mut client_open, mut upstream_open) = (true, true);
    let mut deadline = Instant::now() + idle;
    metrics::gauge!("wardgate_open_tunnels", "route" => route.clone()).increment(1.0);
    let reason = loop {
        if !client_open && !upstream_open {
            break "closed";
        }
        tokio::select! {
            read = client_read.read(&mut client_buf), if client_open => match read {
                Ok(0) | Err(_) => { client_open = false; let _ = upstream_write.shutdown().await; }
                Ok(n) => if relay(&mut upstream_write, &client_buf[..n]).await.is_err() { break "upstream write failed" },
            },
            read = upstream_read.read(&mut upstream_buf), if upstream_open => match read {
                Ok(0) | Err(_) => { upstream_open = false; let _ = client_write.shutdown().await; }
                Ok(n) => if relay(&mut client_write, &upstream_buf[..n]).await.is_err() { break "client write failed" },
            },
            () = sleep_until(deadline) => break "idle timeout",
        }
        deadline = Instant::now() + idle;
    };
    let _ = client_write.shutdown().await;
    let _ = upstream_write.shutdown().await;
    metrics::gauge!("wardgate_open_tunnels", "route" => route.clone()).decrement(1.0);
    tracing::info!(%route, reason, "tunnel closed");
}

/// Writes and flushes, so a frame is not left in a TLS buffer while the tunnel waits.
async fn relay<W: tokio::io::AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    writer.write_all(bytes).await?;
    writer.flush().await
}
