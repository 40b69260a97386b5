//! Parking idle HTTP/1 connections: an idle keep-alive connection gives back hyper's state.
//!
//! hyper keeps, for as long as an HTTP/1 connection lives, an 8 KiB read buffer, a write
//! buffer and its connection state, even while it only waits for the client's next request.
//! So once a connection has served at least one request and then been idle for
//! [`PARK_AFTER`], it is *parked*: hyper is asked to close it gracefully, but [`Parkable`]
//! keeps the TLS stream open instead of shutting it down, and hyper hands back the stream
//! with any bytes it had read and not yet used. A parked connection is the TLS session, the
//! socket and a small task waiting for the socket to turn readable; then a new hyper
//! connection serves it, first reading the bytes handed back, so nothing the client sent is
//! lost. `keepalive_timeout` and shutdown close parked connections as before. Measured with
//! 10,000 idle connections (`benches/load/run`): about 25 KB a connection unparked, 9.5 KB
//! parked, most of it rustls's 4 KiB receive buffer and its session keys.
//!
//! A connection counts as idle when no request is in flight (a response body still streaming
//! keeps its request in flight) and nothing was written to it since the previous check. It is
//! parked only when hyper, asked to close, finishes in that very poll without writing and
//! without having begun a shutdown of its own: then it had nothing left to do. Otherwise hyper
//! finishes what it was doing and the connection closes, as `keepalive_timeout` would have
//! done. Bytes rustls had already decrypted are served at once rather than waited for.
//!
//! HTTP/2 connections are not parked: the h2 crate cannot hand its stream back, and keeps
//! its own buffers (16 KiB to write, 8 KiB to read, 4 KiB for HPACK) while a connection lives.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;

use super::activity::{Activity, AnsweringBody, HeadDeadline};
use super::listener::{drive, Ended};

/// How long an HTTP/1 connection must have been idle (after at least one request) before it
/// is parked. Short enough that idle browser tabs and pooled API clients release their
/// buffers within a second; long enough that a client sending a request every few hundred
/// milliseconds never pays for a new hyper connection.
pub const PARK_AFTER: Duration = Duration::from_secs(1);

/// The client stream of an HTTP/1 connection as hyper sees it.
type ClientIo = TokioIo<HeadDeadline<Parkable<Box<TlsStream<TcpStream>>>>>;

/// Serves an HTTP/1 connection until it closes, parking it whenever it has been idle for
/// [`PARK_AFTER`].
pub async fn serve_http1<S>(
    io: ClientIo,
    service: S,
    builder: http1::Builder,
    activity: &Activity,
    keepalive: Duration,
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
        let park_after = Some(PARK_AFTER);
        let ended = drive(
            connection.as_mut(),
            graceful,
            activity,
            keepalive,
            park_after,
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
        if ended == Ended::Finished {
            // hyper closed the connection for its own reasons; the shutdown it asked for
            // was only a flush.
            let mut io = parts.io;
            let _ = tokio::time::timeout(Duration::from_secs(1), io.inner_mut().shutdown()).await;
            return;
        }
        activity.set_parking(false);
        io = parts.io;
        // hyper's read buffer comes back whole (8 KiB) even when empty: keep only its bytes.
        let unread = Bytes::copy_from_slice(&parts.read_buf);
        drop(parts.read_buf);
        let (tcp, tls) = io.inner().get_ref().get_ref().get_ref();
        // rustls holding decrypted bytes (or the client's close_notify) would never make the
        // socket readable again: like bytes hyper had read, they are served at once.
        let nothing_pending = unread.is_empty() && tls.wants_read();
        let woke = if nothing_pending {
            let _parked = ParkedGauge::count();
            wait_for_client(tcp, activity, keepalive, &mut shutdown).await
        } else {
            true // part of the next request had arrived: serve it at once
        };
        io.inner_mut().get_mut().unread(unread);
        if !woke {
            tracing::debug!(%peer, "closing parked keep-alive connection");
            // Sends TLS close_notify, then FIN; a client that stopped reading is not waited for.
            let _ = tokio::time::timeout(Duration::from_secs(1), io.inner_mut().shutdown()).await;
            return;
        }
    }
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

/// A client stream that, while its connection is being parked, ignores hyper's shutdown (the
/// stream stays open for the next hyper connection), and that first yields the bytes the
/// previous hyper connection had read and not used.
pub struct Parkable<S> {
    inner: S,
    unread: Bytes,
    activity: Arc<Activity>,
}

impl<S> Parkable<S> {
    /// Wraps `inner`; `activity` says when the connection is being parked.
    pub fn new(inner: S, activity: Arc<Activity>) -> Parkable<S> {
        Parkable {
            inner,
            unread: Bytes::new(),
            activity,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Bytes to be read before anything more from the stream.
    fn unread(&mut self, bytes: Bytes) {
        self.unread = bytes;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Parkable<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.unread.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let count = this.unread.len().min(buf.remaining());
        buf.put_slice(&this.unread[..count]);
        this.unread.advance(count);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Parkable<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.activity.wrote();
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.activity.wrote();
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.activity.shutdown_parks() {
            // Flushed, and left open for the next hyper connection.
            return Pin::new(&mut this.inner).poll_flush(cx);
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
