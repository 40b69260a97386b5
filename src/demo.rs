//! The built-in demo telehealth backend behind `wardgate demo`.
//!
//! It lets a clinic try the whole product with one command: a tiny clinic web app with a
//! public home page and opening hours, patient records (a protected PHI route), and a
//! WebSocket waiting-room echo standing in for video-call signalling.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use crate::body::{self, Body};

/// Where the demo backend listens (matches `config/wardgate.toml`).
pub const DEMO_BACKEND: &str = "127.0.0.1:9000";

/// Binds the demo backend and serves it in the background.
pub async fn spawn(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service =
                    service_fn(|req| async move { Ok::<_, std::convert::Infallible>(answer(req)) });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Ok(local)
}

fn answer(mut req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        [""] => reply(StatusCode::OK, "text/html; charset=utf-8", HOME_PAGE.to_string()),
        ["healthz"] => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        ["api", "clinic", "hours"] => reply(
            StatusCode::OK,
            "application/json",
            r#"{"clinic":"Wardgate Demo Clinic","hours":"Mon-Fri 08:00-18:00","telehealth":true}"#.into(),
        ),
        ["api", "patients", id, "records"] => reply(
            StatusCode::OK,
            "application/json",
            serde_json::json!({
                "patient_id": id,
                "records": [{"date": "2026-10-02", "type": "visit", "note": "Demo record: annual check-up"}],
                "seen_by": req.headers().get("x-wardgate-user").and_then(|v| v.to_str().ok()),
            })
            .to_string(),
        ),
                ["api", "me"] => reply(
            StatusCode::OK,
            "application/json",
            serde_json::json!({
                "note": "identity as Wardgate asserted it to the backend",
                "user": req.headers().get("x-wardgate-user").and_then(|v| v.to_str().ok()),
                "roles": req.headers().get("x-wardgate-roles").and_then(|v| v.to_str().ok()),
            })
            .to_string(),
        ),
        ["ws", "lobby"] => websocket_echo(&mut req),_ => reply(StatusCode::NOT_FOUND, "application/json", r#"{"error":"not found"}"#.into()),
    }
}

fn reply(status: StatusCode, content_type: &'static str, text: String) -> Response<Body> {
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

fn websocket_echo(req: &mut Request<Incoming>) -> Response<Body> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "websocket upgrade required\n".into(),
        );
    };
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(message)) = socket.next().await {
            // A Close is answered by tungstenite itself on the next poll, which then ends the stream.
            if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err() {
                break;
            }
        }
    });
    let mut response = reply(StatusCode::SWITCHING_PROTOCOLS, "text/plain", String::new());
    let headers = response.headers_mut();
    headers.remove(header::CONTENT_TYPE);
    headers.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("upgrade"),
    );
    if let Ok(accept) = header::HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert("sec-websocket-accept", accept);
    }
    response
}

const HOME_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Wardgate Demo Clinic</title></head>
<body>
<h1>Wardgate Demo Clinic</h1>
<p>This page is served by the demo backend through Wardgate.</p>
<ul>
<li><a href="/api/clinic/hours">Opening hours</a> (public route)</li>
<li><a href="/api/patients/1001/records">Patient 1001 records</a> (protected PHI route: refused without a session)</li>
</ul>
</body></html>
"#;
