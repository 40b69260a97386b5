//! The public listener: accept, TLS handshake, then HTTP/1.1 or HTTP/2 into the gate.
//!
//! Accepting runs on the main runtime; each accepted connection is handed to one serving
//! thread (`workers.rs`) and lives there until it closes.
//!
//! Each connection holds one permit of the connection cap (more are closed at accept), must
//! finish its TLS handshake in time, and is served by hyper-util's auto builder with a
//! header-read deadline for HTTP/1 (slowloris; `activity.rs`), a header size cap and HTTP/2
//! stream limits. One timer per connection, set for when it would have been idle for
//! `keepalive_timeout` (and set again whenever it turns out to have been busy), closes idle
//! keep-alive connections; the shutdown signal starts a graceful close. The timer wakes a connection about once per
//! `keepalive_timeout`, not every second: 10,000 idle connections cost no steady wake-ups.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::activity::{Activity, HeadDeadline};
use super::workers::Workers;
use super::{tls, Shared};
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
            serve(stream, peer, shared, shutdown).await;
            metrics::gauge!("wardgate_open_connections").decrement(1.0);
            drop(permit);
        });
    }
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = shared.app.load().config.limits.clone();
    let _ = stream.set_nodelay(true);
    let acceptor = TlsAcceptor::from(shared.tls.load_full());
    let tls_stream =
        match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls_stream)) => tls_stream,
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
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(tls::client_identity)
        .map(Arc::new);
    let conn = Arc::new(ConnInfo::new(peer, client_identity));
    let activity = Arc::new(Activity::new());
    // HTTP/2 has no request heads to wait for between requests; its streams have their own
    // limits. Everything else is HTTP/1 (ALPN `http/1.1`, or none).
    let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let head_limit = (!h2).then_some(limits.header_read_timeout);
    let stream = HeadDeadline::new(tls_stream, Arc::clone(&activity), head_limit);
    let service = {
        let activity = Arc::clone(&activity);
        service_fn(move |req| {
            let app = shared.app.load_full();
            let conn = Arc::clone(&conn);
            let activity = Arc::clone(&activity);
            activity.begin();
            // Boxed: hyper keeps room for one request future per connection for as long as
            // the connection lives, and the gate's future is about 6 KB. Boxed, an idle
            // keep-alive connection holds a pointer instead.
            let request = Box::pin(gate::handle(app, conn, req));
            async move {
                let response = request.await;
                if response
                    .as_ref()
                    .is_ok_and(|r| r.status() == http::StatusCode::SWITCHING_PROTOCOLS)
                {
                    activity.upgraded();
                }
                activity.end();
                response
            }
        })
    };
    let builder = http_builder(&limits);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let keepalive = limits.keepalive_timeout;
    let idle_deadline = tokio::time::sleep(keepalive);
    tokio::pin!(idle_deadline);
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%peer, error = %err, "connection ended with error");
                }
                break;
            }
            _ = shutdown.changed(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = &mut idle_deadline, if !closing => {
                let idle = activity.idle_for();
                if idle >= keepalive {
                    tracing::debug!(%peer, "closing idle keep-alive connection");
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                } else {
                    // Busy meanwhile: check again when it could first have been idle long enough.
                    idle_deadline
                        .as_mut()
                        .reset(tokio::time::Instant::now() + (keepalive - idle));
                }
            }
        }
    }
}

/// hyper-util builder with the proxy's own protections applied.
fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // `HeadDeadline` enforces `header_read_timeout`; hyper's own timer would also run on
        // idle keep-alive connections and close them long before `keepalive_timeout`.
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_size.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(Some(64))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}
