//! What the gate knows about a request before any stage runs: the connection it came on and
//! its request id, plus what stages record for the request log line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderValue;

use crate::config::RouteConfig;

/// Verified client-certificate identity (mTLS), for service callers and devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// Subject distinguished name, e.g. `CN=lab-analyzer-3,O=Clinic`.
    pub subject: String,
    /// DNS, URI and e-mail subject alternative names.
    pub sans: Vec<String>,
}

/// Facts about one client connection, shared by its requests.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Present when the client sent a certificate that verified against `client_ca`.
    pub client_identity: Option<Arc<ClientIdentity>>,
}

/// Per-request state carried through the pipeline.
#[derive(Debug)]
pub struct RequestCtx {
    /// Generated request id, answered as `X-Request-Id` and sent upstream.
    pub request_id: HeaderValue,
    /// The connection.
    pub conn: Arc<ConnInfo>,
    /// When the request arrived.
    pub started: Instant,
    /// The matched route, once routing has run.
    pub route: Option<Arc<RouteConfig>>,
    /// The upstream target used, once forwarding has picked one.
    pub upstream: Option<String>,
}

impl RequestCtx {
    /// A fresh context with a new random request id.
    pub fn new(conn: Arc<ConnInfo>) -> RequestCtx {
        let id = uuid::Uuid::new_v4();
        let mut buffer = uuid::Uuid::encode_buffer();
        let text = id.hyphenated().encode_lower(&mut buffer);
        RequestCtx {
            request_id: HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("-")),
            conn,
            started: Instant::now(),
            route: None,
            upstream: None,
        }
    }

    /// The request id as text.
    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("-")
    }
}
