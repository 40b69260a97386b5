//! Logging: the tracing subscriber and the one line written per request.
//!
//! The request line carries request id, route, status, latency and upstream so an operator can
//! follow one request across Wardgate and the backend by its id. Credentials never appear:
//! headers are not logged here at all.

use http::{Method, StatusCode};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};
use crate::gate::context::RequestCtx;
use crate::gate::error::{Blame, GateError};

/// Lines that may wait for the log writer before a request thread has to wait for it.
const LOG_QUEUE_LINES: usize = 64 * 1024;

/// Keeps the log writer thread; dropping it writes out every queued line.
#[must_use = "logs queued at exit are written when the guard drops"]
pub struct LogGuard(#[allow(dead_code)] tracing_appender::non_blocking::WorkerGuard);

/// Installs the global subscriber (stderr). `RUST_LOG` overrides the configured level.
///
/// Lines go through a queue to a writer thread, which writes them in batches (flushing when
/// the queue is empty), so a request never waits on a write to stderr or a slow log pipe. The
/// queue does not drop lines: when it is full, the logging thread waits.
pub fn init(log: &LogConfig) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("wardgate-log")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    let result = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Err(err) = result {
        eprintln!("wardgate: logging already initialised: {err}");
    }
    LogGuard(guard)
}

/// Writes the request log line and updates request metrics.
pub fn request_done(
    ctx: &RequestCtx,
    method: &Method,
    path: &str,
    status: StatusCode,
    error: Option<&GateError>,
) {
    let latency = ctx.started.elapsed();
    let route = ctx.route.as_ref().map_or("-", |r| &*r.name);
    let upstream = ctx.upstream.as_deref().unwrap_or("-");
    let latency_ms = latency.as_secs_f64() * 1000.0;
    let client_cert = ctx
        .conn
        .client_identity
        .as_ref()
        .map_or("-", |id| id.subject.as_str());
    match error {
        None => {
            tracing::info!(request_id = ctx.request_id(), %method, path, route, status = status.as_u16(), latency_ms, upstream, peer = %ctx.conn.peer, client_cert, "request")
        }
        Some(error) => {
            let blame = match error.blame() {
                Blame::Client => "client",
                Blame::Upstream => "upstream",
                Blame::Internal => "internal",
            };
            tracing::info!(request_id = ctx.request_id(), %method, path, route, status = status.as_u16(), latency_ms, upstream, peer = %ctx.conn.peer, client_cert, blame, reason = %error, "request refused");
        }
    }
    crate::metrics::request(route, status, latency);
}

/// An error with its causes (`a: b: c`), so "error sending request" says *why* (refused, TLS,
/// timeout) in logs and audit reasons.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
