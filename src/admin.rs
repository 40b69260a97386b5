//! The admin listener: `/healthz`, `/readyz`, `/metrics`, never on the public listener.
//!
//! It binds to loopback by default because metrics reveal route names and traffic shape.
//! `/readyz` answers 503 while the audit trail cannot write (PHI requests are being refused)
//! and while the server drains on shutdown, so a load balancer stops
//! sending new requests before connections close.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{header, Method, Request, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::{self, Body};

pub mod sessions;
use crate::server::Shared;

/// Serves the admin endpoints until shutdown.
pub async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    metrics: PrometheusHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
            _ = shutdown.changed() => break,
        };
        let caller = match stream.local_addr() {
            Ok(local) => sessions::Caller::of(peer, local),
            Err(_) => sessions::Caller::Remote(peer),
        };
        let shared = Arc::clone(&shared);
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let shared = Arc::clone(&shared);
                let metrics = metrics.clone();
                async move {
                    let response = if sessions::handles(req.uri().path()) {
                        sessions::answer(req, &shared.app.load_full(), caller).await
                    } else {
                        answer(&req, &shared, &metrics)
                    };
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(
    req: &Request<hyper::body::Incoming>,
    shared: &Shared,
    metrics: &PrometheusHandle,
) -> Response<Body> {
    let text = |status: StatusCode, body: String, content_type: &'static str| {
        let mut response = Response::new(body::full(body));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        response
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
            "text/plain",
        );
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into(), "text/plain"),
        "/readyz" if !shared.audit.is_healthy() => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: audit trail unavailable\n".into(),
            "text/plain",
        ),
        "/readyz" if !shared.state.is_healthy() => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: state store unavailable\n".into(),
            "text/plain",
        ),
        "/readyz" if shared.ready.load(Ordering::Relaxed) => {
            text(StatusCode::OK, "ready\n".into(), "text/plain")
        }
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: draining\n".into(),
            "text/plain",
        ),
        "/metrics" => text(
            StatusCode::OK,
            metrics.render(),
            "text/plain; version=0.0.4",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
    }
}
