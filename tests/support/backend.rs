//! A real hyper backend on 127.0.0.1:0 that records every request it receives.
//!
//! Routes: `/slow?ms=N` waits then answers; `/stream?bytes=N` streams N bytes; `/stall` sends
//! one line of its body and then nothing, without ending it; `/ws` is a
//! WebSocket echo; `/status?code=N` answers N; everything else echoes the request as JSON
//! after reading (and counting) the whole body.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

type Body = BoxBody<Bytes, Infallible>;

/// One request as the backend saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body_len: usize,
}

#[derive(Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Backend {
    /// How the backend's WebSockets ended: `WS-CLOSE <code>` or `WS-DROP`.
    pub fn websocket_endings(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter(|s| s.method.starts_with("WS-"))
            .map(|s| {
                format!("{} {}", s.method, s.path_and_query)
                    .trim()
                    .to_string()
            })
            .collect()
    }

    /// A plain-HTTP backend.
    pub async fn start() -> Backend {
        Self::start_with(None).await
    }

    /// An HTTPS backend presenting `cert_pem`/`key_pem`.
    pub async fn start_tls(cert_pem: &str, key_pem: &str) -> Backend {
        use rustls::pki_types::pem::PemObject;
        let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("cert");
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let backend = Backend {
            addr,
            seen: Arc::clone(&seen),
        };
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = Arc::clone(&seen);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(req, Arc::clone(&seen)));
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .with_upgrades()
                                .await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .with_upgrades()
                                    .await;
                            }
                        }
                    }
                });
            }
        });
        backend
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    /// Paths received so far.
    pub fn paths(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.path_and_query).collect()
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("backend received nothing")
    }
}

fn query_number(req: &Request<Incoming>, key: &str) -> u64 {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn answer(
    mut req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Body>, Infallible> {
    let mut record = Seen {
        method: req.method().to_string(),
        path_and_query: req
            .uri()
            .path_and_query()
            .map_or("/".into(), |p| p.to_string()),
        headers: req.headers().clone(),
        body_len: 0,
    };
    let path = req.uri().path().to_string();
    if path == "/ws" || path.ends_with("/ws") {
        seen.lock().expect("seen").push(record);
        return Ok(websocket(&mut req, seen));
    }
    let ms = query_number(&req, "ms");
    let bytes = query_number(&req, "bytes");
    let code = query_number(&req, "code");
    let count = query_number(&req, "count");
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => record.body_len += frame.data_ref().map_or(0, |d| d.len()),
            Err(_) => break,
        }
    }
    let echo = serde_json::json!({
        "method": record.method,
        "path": record.path_and_query,
        "body_len": record.body_len,
    })
    .to_string();
    seen.lock().expect("seen").push(record);
    if path.ends_with("/slow") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if path.ends_with("/stall") {
        let first = futures_util::stream::once(async {
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"first line\n")))
        });
        let stalled = first.chain(futures_util::stream::pending());
        return Ok(Response::builder()
            .header("content-type", "text/plain")
            .body(BodyExt::boxed(StreamBody::new(stalled)))
            .expect("response"));
    }
    if path.ends_with("/ticks") {
        // A long-lived stream: one line every 100 ms, `count` lines (default 600: a minute).
        let total = if count == 0 { 600 } else { count };
        let ticks = futures_util::stream::unfold(0u64, move |n| async move {
            if n >= total {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((
                Ok::<_, Infallible>(Frame::data(Bytes::from(format!("tick {n}\n")))),
                n + 1,
            ))
        });
        return Ok(Response::builder()
            .header("content-type", "text/plain")
            .body(BodyExt::boxed(StreamBody::new(ticks)))
            .expect("response"));
    }
    if path.ends_with("/stream") {
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let chunks = bytes / chunk.len() as u64;
        let stream = futures_util::stream::iter(
            (0..chunks).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))),
        );
        return Ok(Response::builder()
            .header("server", "backend/1.0")
            .body(BodyExt::boxed(StreamBody::new(stream)))
            .expect("response"));
    }
    let status = if path.ends_with("/status") {
        StatusCode::from_u16(code as u16).unwrap_or(StatusCode::OK)
    } else {
        StatusCode::OK
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("server", "backend/1.0")
        .header("x-powered-by", "test")
        .header("connection", "x-hop")
        .header("x-hop", "must-not-reach-client")
        .body(Full::new(Bytes::from(echo)).boxed())
        .expect("response"))
}

/// WebSocket echo. How each socket ended is recorded as a `Seen` with method `WS-CLOSE` (and
/// the close code as its path) or `WS-DROP` (no close frame).
fn websocket(req: &mut Request<Incoming>, seen: Arc<Mutex<Vec<Seen>>>) -> Response<Body> {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .cloned()
        .unwrap_or(http::HeaderValue::from_static(""));
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        let mut ending = ("WS-DROP".to_string(), String::new());
        while let Some(Ok(message)) = socket.next().await {
            // A Close is answered by tungstenite itself on the next poll, which then ends the stream.
            if let tokio_tungstenite::tungstenite::Message::Close(frame) = &message {
                let code = frame.as_ref().map_or(1005, |f| u16::from(f.code));
                ending = ("WS-CLOSE".to_string(), code.to_string());
            }
            if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err() {
                break;
            }
        }
        seen.lock().expect("seen").push(Seen {
            method: ending.0,
            path_and_query: ending.1,
            headers: HeaderMap::new(),
            body_len: 0,
        });
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
        .body(Full::new(Bytes::new()).boxed())
        .expect("response")
}
