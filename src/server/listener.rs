//! The public listener: accept, TLS handshake, then HTTP/1.1 or HTTP/2 into the gate.
//!
//! Accepting runs on the main runtime; each accepted connection is handed to one serving
//! thread (`workers.rs`) and lives there until it closes.
//!
//! Each connection holds one permit of the connection cap (more are closed at accept), must
//! finish its TLS handshake in time, and is served by hyper's HTTP/1 or HTTP/2 server (as
//! ALPN chose) with a header-read deadline for HTTP/1 (slowloris; `activity.rs`), a header
//! size cap and HTTP/2 stream limits. One timer per connection, set for when it would have
//! been idle long enough (and set again whenever it turns out to have been busy), parks idle
//! HTTP/1 connections after a second (`park.rs`) and closes keep-alive connections idle for
//! `keepalive_timeout`; the shutdown signal starts a graceful close. The same timer
//! disconnects a client that takes nothing more of a response for `send_timeout`. A busy connection's timer
//! fires about once a second; a parked one waits on its socket and wakes again only at
//! `keepalive_timeout`: 10,000 idle connections cost no steady wake-ups.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::activity::{Activity, AnsweringBody, Http1Stream, StallWatch};
use super::park::serve_http1;
use super::workers::Workers;
use super::{tls, tls_stream, Shared};
use crate::config::Limits;
use crate::gate::{self, context::ConnInfo};

/// Accepts connections until shutdown is signalled, and hands each to a serving thread.
pub async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    workers: Arc<Workers>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Ok(permit) = Arc::clone(&shared.connections).try_acquire_owned() else {
            metrics::counter!("wardgate_rejected_connections_total").increment(1);
            tracing::warn!(%peer, "connection limit reached; connection closed");
            continue;
        };
        // The socket leaves this runtime's reactor and joins the serving thread's.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(%peer, error = %err, "cannot hand the connection over; closed");
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        let shutdown = shutdown.clone();
        workers.spawn(async move {
            let stream = match TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(err) => {
                    tracing::warn!(%peer, error = %err, "cannot serve the connection; closed");
                    return;
                }
            };
            metrics::gauge!("wardgate_open_connections").increment(1.0);
            serve(stream, peer, shared, shutdown, permit).await;
            metrics::gauge!("wardgate_open_connections").decrement(1.0);
        });
    }
}

/// Serves one connection; `slot` (its place under `max_connections`) is held by the
/// connection's `ConnInfo`, so a WebSocket tunnel that outlives the connection task keeps it.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    slot: tokio::sync::OwnedSemaphorePermit,
) {
    let limits = shared.app.load().config.limits.clone();
    let _ = stream.set_nodelay(true);
    // The trust is read before the TLS configuration: a reload swaps the TLS configuration
    // first, so an identity can only ever be recorded under an older trust than it was
    // verified with (then not trusted), never a newer one.
    let trust = shared.app.load().client_trust;
    // Boxed, the handshake and the TLS session (about 1.3 KB, rustls's state inline) take
    // no room in the connection's task, which a parked connection keeps small (`park.rs`).
    let handshake = Box::pin(tls_stream::accept(stream, shared.tls.load_full()));
    let tls_stream = match tokio::time::timeout(limits.handshake_timeout, handshake).await {
        Ok(Ok(tls_stream)) => Box::new(tls_stream),
        Ok(Err(err)) => {
            tracing::debug!(%peer, error = %err, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let client_identity = tls_stream
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| tls::client_identity(cert, trust))
        .map(Arc::new);
    let conn = Arc::new(ConnInfo::new(peer, client_identity).holding(slot));
    let activity = Arc::new(Activity::new());
    // HTTP/2 has no request heads to wait for between requests; its streams have their own
    // limits. Everything else is HTTP/1 (ALPN `http/1.1`, or none).
    let h2 = tls_stream.alpn_protocol() == Some(b"h2".as_slice());
    let service = {
        let activity = Arc::clone(&activity);
        service_fn(move |req| {
            let app = shared.app.load_full();
            let conn = Arc::clone(&conn);
            let in_flight = activity.begin();
            let activity = Arc::clone(&activity);
            // Boxed: hyper keeps room for one request future per connection for as long as
            // the connection lives, and the gate's future is about 6 KB. Boxed, an idle
            // keep-alive connection holds a pointer instead.
            Box::pin(async move {
                let Ok(response) = gate::handle(app, conn, req).await;
                if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                    activity.upgraded();
                }
                Ok::<_, Infallible>(response.map(|body| AnsweringBody::new(body, in_flight)))
            })
        })
    };
    let keepalive = limits.keepalive_timeout;
    // The protocol is settled by ALPN, so each connection holds only its own protocol's state:
    // hyper-util's auto builder keeps room for both (an HTTP/2 connection's state inline in
    // every HTTP/1 connection) and sniffs the first bytes of every connection. Without ALPN,
    // HTTP/1.1 (RFC 9113 §3.2: HTTP/2 over TLS is negotiated by ALPN).
    if h2 {
        let mut tls_stream = tls_stream;
        tls_stream.release_buffers_while_waiting();
        let connection = http2_builder(&limits).serve_connection(TokioIo::new(tls_stream), service);
        let mut connection = Box::pin(connection);
        let graceful = |c: Pin<&mut _>| http2::Connection::graceful_shutdown(c);
        let mut shutdown = shutdown;
        let clocks = Clocks {
            keepalive,
            park_after: None,
            send_timeout: limits.send_timeout,
        };
        drive(
            connection.as_mut(),
            graceful,
            &activity,
            clocks,
            &mut shutdown,
            peer,
        )
        .await;
    } else {
        let limit = limits.header_read_timeout;
        let io = TokioIo::new(Http1Stream::new(tls_stream, Arc::clone(&activity), limit));
        let builder = http1_builder(&limits);
        let clocks = Clocks {
            keepalive,
            park_after: Some(super::park::PARK_AFTER),
            send_timeout: limits.send_timeout,
        };
        serve_http1(io, service, builder, &activity, clocks, shutdown, peer).await;
    }
}

/// How [`drive`] left a connection.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Ended {
    /// The connection is over (closed by either side, or failed).
    Closed,
    /// hyper let go of an idle connection whose stream stays open (`park.rs`).
    Parked,
    /// hyper finished and closed the connection while it was being parked: its shutdown of
    /// the stream was only a flush, and the stream must still be shut down.
    Finished,
}

/// The deadlines [`drive`] keeps for a connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clocks {
    /// Idle this long between requests: closed.
    pub keepalive: Duration,
    /// Idle this long: parked, if hyper can let go of it at once (HTTP/1 only).
    pub park_after: Option<Duration>,
    /// The client takes nothing more of a response for this long, or has not let a closing
    /// connection finish writing in this long: disconnected.
    pub send_timeout: Duration,
}

/// Runs `connection` to its end: closed by the client, gracefully at shutdown, or gracefully
/// once it has been idle for `keepalive` (`graceful_shutdown` asks it to finish what is in
/// flight and close). With `park_after`, a connection idle that long is parked instead, if
/// hyper can let go of it at once (`park.rs`). A client that stops taking a response (or the
/// rest of what a closing connection has to write) for `send_timeout` is disconnected: without
/// this, a client that never reads, or never opens its HTTP/2 flow-control window, would hold
/// its connection and its slot under `max_connections` for ever.
pub(super) async fn drive<C, G>(
    mut connection: Pin<&mut C>,
    graceful_shutdown: G,
    activity: &Activity,
    clocks: Clocks,
    shutdown: &mut watch::Receiver<bool>,
    peer: SocketAddr,
) -> Ended
where
    C: Future<Output = hyper::Result<()>>,
    G: Fn(Pin<&mut C>),
{
    let Clocks {
        keepalive,
        park_after,
        send_timeout,
    } = clocks;
    // Checks come at least this often, so a stall is seen within half a `send_timeout` more.
    let stall_check = (send_timeout / 2).max(Duration::from_millis(100));
    let first_check = park_after.map_or(keepalive, |park| park.min(keepalive));
    let idle_deadline = tokio::time::sleep(first_check.min(stall_check));
    tokio::pin!(idle_deadline);
    // Once closing: by when hyper must have finished what it still has to write.
    let mut closing: Option<tokio::time::Instant> = None;
    let mut stall = StallWatch::new(activity);
    let begun_before = activity.begun();
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%peer, error = %err, "connection ended with error");
                }
                return Ended::Closed;
            }
            _ = shutdown.changed(), if closing.is_none() => {
                graceful_shutdown(connection.as_mut());
                closing = Some(finish_by(idle_deadline.as_mut(), send_timeout));
            }
            _ = &mut idle_deadline => {
                if let Some(by) = closing {
                    if tokio::time::Instant::now() >= by {
                        tracing::warn!(%peer, "client took nothing more for send_timeout while the connection closed; disconnected");
                        return Ended::Closed;
                    }
                    idle_deadline.as_mut().reset(by);
                    continue;
                }
                if stall.stalled_for(activity) >= send_timeout {
                    tracing::warn!(%peer, "client took nothing more of a response for send_timeout; disconnected");
                    return Ended::Closed;
                }
                let idle = activity.idle_for();
                if idle >= keepalive {
                    tracing::debug!(%peer, "closing idle keep-alive connection");
                    graceful_shutdown(connection.as_mut());
                    closing = Some(finish_by(idle_deadline.as_mut(), send_timeout));
                } else if park_after.is_some_and(|park| idle >= park) && activity.may_park(begun_before) {
                    activity.set_parking(true);
                    graceful_shutdown(connection.as_mut());
                    // Idle, hyper closes in this very poll; busy (a response the client stopped
                    // reading), it finishes first and the connection then closes for real.
                    let writes_before = activity.writes();
                    let polled =
                        std::future::poll_fn(|cx| Poll::Ready(connection.as_mut().poll(cx))).await;
                    activity.set_parking(false);
                    match polled {
                        // Idle for certain only if hyper wrote nothing and had not already
                        // begun to close the connection itself.
                        Poll::Ready(Ok(()))
                            if activity.writes() == writes_before && !activity.shutdown_begun() =>
                        {
                            return Ended::Parked
                        }
                        Poll::Ready(Ok(())) => return Ended::Finished,
                        Poll::Ready(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "connection ended with error");
                            return Ended::Closed;
                        }
                        Poll::Pending => {
                            closing = Some(finish_by(idle_deadline.as_mut(), send_timeout));
                        }
                    }
                } else {
                    // Busy meanwhile, or not yet parkable: check again when it could first
                    // have been idle long enough to park (or a park delay later), or to close.
                    let wait = match park_after {
                        Some(park) if idle < park => park - idle,
                        Some(park) => park.min(keepalive - idle),
                        None => keepalive - idle,
                    };
                    let wait = if activity.sending().0 { wait.min(stall_check) } else { wait };
                    idle_deadline.as_mut().reset(tokio::time::Instant::now() + wait);
                }
            }
        }
    }
}

/// Sets the connection's timer to `send_timeout` from now, the time a closing connection has
/// to finish writing; returns that deadline.
fn finish_by(timer: Pin<&mut tokio::time::Sleep>, send_timeout: Duration) -> tokio::time::Instant {
    let by = tokio::time::Instant::now() + send_timeout;
    timer.reset(by);
    by
}

/// The HTTP/1 builder with the proxy's own protections applied.
fn http1_builder(limits: &Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // `Http1Stream` enforces `header_read_timeout`; hyper's own timer would also run on
        // idle keep-alive connections and close them long before `keepalive_timeout`.
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_size.max(8192))
        .keep_alive(true);
    builder
}

/// The HTTP/2 builder with the proxy's own protections applied.
fn http2_builder(limits: &Limits) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(Some(64))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}
