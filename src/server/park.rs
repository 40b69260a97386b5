//! Parking idle HTTP/1 connections: an idle keep-alive connection gives back hyper's state.
//!
//! hyper keeps, for as long as an HTTP/1 connection lives, an 8 KiB read buffer, a write
//! buffer and its connection state, even while it only waits for the client's next request.
//! So once a connection has served at least one request and then been idle for
//! [`PARK_AFTER`], it is *parked*: hyper is asked to close it gracefully, but the client
//! stream (`activity.rs`) keeps the TLS stream open instead of shutting it down, and hyper
//! hands back the stream with any bytes it had read and not yet used. The TLS stream then
//! gives back its own buffers too (`tls_stream.rs`). A parked connection is the TLS session
//! (rustls's state and traffic keys), the socket and a small task waiting for the socket to
//! turn readable; then a new hyper connection serves it, first reading the bytes handed back,
//! so nothing the client sent is lost. `keepalive_timeout` and shutdown close parked
//! connections as before. Measured with 10,000 idle connections (`benches/load/run`): about
//! 25 KB a connection unparked; parked, 12 KB while the TLS stream kept rustls's 4 KiB
//! receive buffer, 8 KB since it gives its buffers back.
//!
//! A connection counts as idle when no request is in flight (a response body still streaming
//! keeps its request in flight), and a woken connection only once its new hyper connection has
//! served a request (until then hyper counts it busy). It is parked only when hyper, asked to
//! close, finishes in that very poll without writing and without having begun a shutdown of
//! its own: then it had nothing left to do. Otherwise hyper finishes what it was doing and the
//! connection closes, as `keepalive_timeout` would have done. Bytes the TLS stream still
//! holds (decrypted or not) are served at once rather than waited for.
//!
//! HTTP/2 connections are not parked: the h2 crate cannot hand its stream back, and keeps
//! its own buffers (16 KiB to write, 8 KiB to read, 4 KiB for HPACK) while a connection lives.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::activity::{Activity, AnsweringBody, Http1Stream};
use super::listener::{drive, Clocks, Ended};
use super::tls_stream::TlsStream;

/// How long an HTTP/1 connection must have been idle (after at least one request) before it
/// is parked. Short enough that idle browser tabs and pooled API clients release their
/// buffers within a second; long enough that a client sending a request every few hundred
/// milliseconds never pays for a new hyper connection.
pub const PARK_AFTER: Duration = Duration::from_secs(1);

/// The client stream of an HTTP/1 connection as hyper sees it.
type ClientIo = TokioIo<Http1Stream<Box<TlsStream>>>;

/// Serves an HTTP/1 connection until it closes, parking it whenever it has been idle for
/// [`PARK_AFTER`].
pub(super) async fn serve_http1<S>(
    io: ClientIo,
    service: S,
    builder: http1::Builder,
    activity: &Activity,
    clocks: Clocks,
    mut shutdown: watch::Receiver<bool>,
    peer: std::net::SocketAddr,
) where
    S: HttpService<Incoming, ResBody = AnsweringBody<crate::body::Body>>
        + Clone
        + Unpin
        + Send
        + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send + 'static,
{
    let mut io = io;
    loop {
        // Boxed, so that a parked connection's task holds no room for hyper's state.
        let mut connection = Box::pin(
            builder
                .serve_connection(io, service.clone())
                .with_upgrades(),
        );
        let graceful = |c: Pin<&mut _>| http1::UpgradeableConnection::graceful_shutdown(c);
        let ended = drive(
            connection.as_mut(),
            graceful,
            activity,
            clocks,
            &mut shutdown,
            peer,
        )
        .await;
        if ended == Ended::Closed {
            return;
        }
        let Some(parts) = Pin::into_inner(connection).into_parts() else {
            return; // upgraded meanwhile: the upgrade owns the stream now
        };
        io = parts.io;
        if ended == Ended::Finished {
            // hyper closed the connection for its own reasons; the shutdown it asked for
            // was only a flush.
            return close(io).await;
        }
        // hyper's read buffer comes back whole (8 KiB) even when empty: keep only its bytes.
        let unread = Bytes::copy_from_slice(&parts.read_buf);
        drop(parts.read_buf);
        // Bytes the TLS stream holds (decrypted, or records not yet processed, or the
        // client's close_notify) would never make the socket readable again: like bytes
        // hyper had read, they are served at once.
        let nothing_pending =
            unread.is_empty() && io.inner_mut().get_mut().release_buffers_if_idle();
        let woke = if nothing_pending {
            let _parked = ParkedGauge::count();
            let tls = io.inner().get_ref();
            wait_for_client(tls.tcp(), activity, clocks.keepalive, &mut shutdown).await
        } else {
            true // part of the next request had arrived: serve it at once
        };
        io.inner_mut().unread(unread);
        if !woke {
            tracing::debug!(%peer, "closing parked keep-alive connection");
            return close(io).await;
        }
    }
}

/// Shuts the stream down: TLS close_notify, then FIN. A client that stopped reading is not
/// waited for.
async fn close(mut io: ClientIo) {
    let _ = tokio::time::timeout(Duration::from_secs(1), io.inner_mut().shutdown()).await;
}

/// Counts a connection in `wardgate_parked_connections` while it is parked (dropped with
/// the task too, should the runtime stop meanwhile).
struct ParkedGauge;

impl ParkedGauge {
    fn count() -> ParkedGauge {
        metrics::gauge!("wardgate_parked_connections").increment(1.0);
        ParkedGauge
    }
}

impl Drop for ParkedGauge {
    fn drop(&mut self) {
        metrics::gauge!("wardgate_parked_connections").decrement(1.0);
    }
}

/// Waits until the client sends something (true), or until the connection has been idle for
/// `keepalive` or shutdown begins (false: close it).
async fn wait_for_client(
    tcp: &TcpStream,
    activity: &Activity,
    keepalive: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let idle = activity.idle_for();
    if idle >= keepalive || *shutdown.borrow() {
        return false;
    }
    tokio::select! {
        ready = tcp.readable() => ready.is_ok(),
        _ = tokio::time::sleep(keepalive - idle) => false,
        _ = shutdown.changed() => false,
    }
}
