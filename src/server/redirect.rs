//! Optional plain-HTTP listener whose only job is to send browsers to HTTPS (308).
//!
//! It never proxies anything: a request that arrives over plain HTTP is answered with a
//! redirect to the same path on `public_url`, so no credentials or PHI travel unencrypted.

use std::sync::Arc;

use http::{header, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::Shared;
use crate::body;

/// Serves redirects until shutdown.
pub async fn run(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = shutdown.changed() => break,
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let origin = shared.app.load().config.listen.public_url.clone();
                let path = req
                    .uri()
                    .path_and_query()
                    .map_or("/", |pq| pq.as_str())
                    .to_string();
                async move {
                    let location = format!("{origin}{path}");
                    Response::builder()
                        .status(StatusCode::PERMANENT_REDIRECT)
                        .header(header::LOCATION, location)
                        .header(header::CONNECTION, "close")
                        .body(body::empty())
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
