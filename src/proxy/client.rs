//! The HTTP client each upstream pool forwards with: pooled keep-alive connections, a connect
//! timeout, and TLS to `https://` backends verified against the pool's own CA (zero trust
//! toward the backend too: no system roots, no skipping verification).
//!
//! The pool is Wardgate's own, over hyper's connection API, rather than hyper-util's legacy
//! client. Each serving thread has its own client (`upstream.rs`), so its pool is only ever
//! touched by one thread, holds a handful of connections to a handful of origins, and a plain
//! list under an uncontended lock serves it: no hashing of the origin (SipHash over the
//! authority, byte by byte, twice a request), no task spawned per request to wait for the
//! connection to be reusable. Measured on the serving thread: see README, Performance.
//!
//! What the legacy client did that matters is kept: origin-form request targets, a `Host`
//! header when the request has none, a request that a reused connection closed before
//! taking it is sent again on another connection, and connections that upgraded (WebSockets)
//! never return to the pool. A connection idle for `pool_idle_timeout` is closed at the pool's
//! next use, or by a sweep that runs while connections are idle.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::time::Instant;
use tower_service::Service;

use crate::body::Body;

pub use pooled::UpstreamBody;

mod pooled;

/// Idle connections kept per client, over all origins.
const MAX_IDLE: usize = 1024;

/// The forwarding client of one pool (cheap to clone: clones share the pool).
#[derive(Clone)]
pub struct UpstreamClient {
    inner: Arc<Inner>,
}

struct Inner {
    connector: HttpsConnector<HttpConnector>,
    /// Idle connections, the most recently used last.
    idle: Mutex<Vec<Idle>>,
    idle_timeout: Duration,
    /// A sweep task is running (while connections are idle).
    sweeping: AtomicBool,
}

/// A connection waiting for its next request.
struct Idle {
    origin: Origin,
    sender: SendRequest<Body>,
    since: Instant,
}

/// Where a connection goes (scheme and authority): requests are only sent on connections to
/// their own origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    scheme: Scheme,
    authority: Authority,
}

impl Origin {
    /// The origin of an absolute URI; `None` for a URI without scheme or authority.
    pub fn of(uri: &Uri) -> Option<Origin> {
        Some(Origin {
            scheme: uri.scheme()?.clone(),
            authority: uri.authority()?.clone(),
        })
    }
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made (refused, timed out, TLS or HTTP handshake failed).
    #[error("cannot connect to the backend")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The request URI has no scheme or authority.
    #[error("request URI {0} names no backend")]
    NoOrigin(Uri),
    /// The exchange failed once connected (including the request body failing).
    #[error("backend exchange failed")]
    Http(#[source] hyper::Error),
}

impl UpstreamError {
    /// Whether the backend was never reached (the request was not sent).
    pub fn is_connect(&self) -> bool {
        matches!(self, UpstreamError::Connect(_))
    }
}

/// Builds a client; `ca_file` is the only trust anchor for `https://` targets.
pub fn build(
    ca_file: Option<&Path>,
    connect_timeout: Duration,
    pool_idle_timeout: Duration,
) -> Result<UpstreamClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|err| format!("{}: cannot read CA bundle: {err}", path.display()))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!("{}: no usable CA certificate", path.display()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(60)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(UpstreamClient {
        inner: Arc::new(Inner {
            connector,
            idle: Mutex::new(Vec::new()),
            idle_timeout: pool_idle_timeout,
            sweeping: AtomicBool::new(false),
        }),
    })
}

impl UpstreamClient {
    /// Sends `request`, whose URI is absolute, to the origin it names (health checks, the
    /// alert webhook).
    pub async fn request(
        &self,
        mut request: Request<Body>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let Some(origin) = Origin::of(request.uri()) else {
            return Err(UpstreamError::NoOrigin(request.uri().clone()));
        };
        let target = if request.method() == http::Method::CONNECT {
            Uri::from(origin.authority.clone())
        } else {
            request
                .uri()
                .path_and_query()
                .map_or_else(|| Uri::from_static("/"), |path| Uri::from(path.clone()))
        };
        *request.uri_mut() = target;
        self.send(&origin, request).await
    }

    /// Sends `request`, whose URI is the request target as it goes on the wire (the path and
    /// query), to `origin`: on an idle connection to it, or on a new one. The proxy's path,
    /// whose targets know their origin, so no absolute URI is built and taken apart again.
    pub async fn send(
        &self,
        origin: &Origin,
        mut request: Request<Body>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        // hyper's HTTP/1 client writes any version as HTTP/1.1, but sends no body of unknown
        // length for one it does not take for 1.1 (an HTTP/2 request's): 1.1 it is.
        if request.version() != Version::HTTP_10 {
            *request.version_mut() = Version::HTTP_11;
        }
        if !request.headers().contains_key(header::HOST) {
            if let Some(host) = host_header(origin) {
                request.headers_mut().insert(header::HOST, host);
            }
        }
        // Pooled connections were ready for a request when they were pooled; the backend may
        // have closed one since.
        while let Some(mut sender) = self.inner.checkout(origin) {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.inner.keep(response, origin.clone(), sender)),
                Err(mut failed) => match failed.take_message() {
                    // Closed before it took the request: nothing was sent, try another.
                    Some(unsent) => request = unsent,
                    None => return Err(UpstreamError::Http(failed.into_error())),
                },
            }
        }
        // Boxed: connecting is rare, and its future (TCP, TLS and HTTP handshakes) would
        // otherwise make every request's future larger, and every move of it longer.
        let mut sender = Box::pin(self.inner.connect(origin)).await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(UpstreamError::Http)?;
        Ok(self.inner.keep(response, origin.clone(), sender))
    }
}

/// Closes expired idle connections every `every` while there are any, so they go after
/// `pool_idle_timeout` (and at most half as long again) even when no request comes.
async fn sweep(pool: Weak<Inner>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let mut idle = pool.lock();
        pool.expire(&mut idle);
        if idle.is_empty() {
            // Under the lock: a connection checked in after this starts a new sweep.
            pool.sweeping.store(false, Ordering::Release);
            return;
        }
    }
}

/// `Host` for a request that has none: the origin's host, and its port unless it is the
/// scheme's default (never the user information an authority may carry).
fn host_header(origin: &Origin) -> Option<HeaderValue> {
    let host = origin.authority.host();
    let default_port = match origin.scheme.as_str() {
        "https" => 443,
        _ => 80,
    };
    let value = match origin.authority.port_u16() {
        Some(port) if port != default_port => format!("{host}:{port}"),
        _ => host.to_string(),
    };
    HeaderValue::from_str(&value).ok()
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Vec<Idle>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The most recently used idle connection to `origin` that has not expired or closed.
    fn checkout(&self, origin: &Origin) -> Option<SendRequest<Body>> {
        let mut idle = self.lock();
        self.expire(&mut idle);
        let mut index = idle.len();
        while index > 0 {
            index -= 1;
            if idle[index].origin == *origin {
                let conn = idle.remove(index);
                if !conn.sender.is_closed() {
                    return Some(conn.sender);
                }
            }
        }
        None
    }

    /// Puts a connection ready for its next request back in the pool (expired ones go at
    /// checkout and by the sweep). `pool_idle_timeout = "0s"` keeps none.
    fn check_in(self: &Arc<Self>, origin: Origin, sender: SendRequest<Body>) {
        if self.idle_timeout.is_zero() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push(Idle {
            origin,
            sender,
            since: Instant::now(),
        });
        if !self.sweeping.swap(true, Ordering::AcqRel) {
            tokio::spawn(sweep(Arc::downgrade(self), self.idle_timeout / 2));
        }
    }

    /// Closes the connections idle for `idle_timeout`: they are the first ones, as the list
    /// is kept in the order connections came back.
    fn expire(&self, idle: &mut Vec<Idle>) {
        let now = Instant::now();
        let expired = idle
            .iter()
            .take_while(|conn| now.duration_since(conn.since) >= self.idle_timeout)
            .count();
        idle.drain(..expired);
    }

    /// Opens a new connection to `origin`; its connection task runs on the calling runtime.
    async fn connect(&self, origin: &Origin) -> Result<SendRequest<Body>, UpstreamError> {
        let uri = Uri::builder()
            .scheme(origin.scheme.clone())
            .authority(origin.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|err| UpstreamError::Connect(Box::new(err)))?;
        let io = self
            .connector
            .clone()
            .call(uri)
            .await
            .map_err(UpstreamError::Connect)?;
        let (sender, connection) = http1::handshake(io)
            .await
            .map_err(|err| UpstreamError::Connect(Box::new(err)))?;
        tokio::spawn(async move {
            if let Err(err) = connection.with_upgrades().await {
                tracing::debug!(error = %err, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// The response, with its connection returned to the pool when its body ends (at once
    /// when it has none). A connection that switched protocols belongs to its tunnel.
    fn keep(
        self: &Arc<Self>,
        response: Response<hyper::body::Incoming>,
        origin: Origin,
        sender: SendRequest<Body>,
    ) -> Response<UpstreamBody> {
        let home = (response.status() != StatusCode::SWITCHING_PROTOCOLS)
            .then(|| pooled::Home::new(Arc::clone(self), origin, sender));
        response.map(|body| UpstreamBody::new(body, home))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_for(uri: &str) -> Option<HeaderValue> {
        host_header(&Origin::of(&uri.parse().expect("uri")).expect("origin"))
    }

    #[test]
    fn host_names_the_host_and_a_port_that_is_not_the_default_never_the_userinfo() {
        let host = |uri| host_for(uri).expect("host");
        assert_eq!(
            host("https://user:secret@siem.example/hook"),
            "siem.example"
        );
        assert_eq!(host("https://siem.example:443/hook"), "siem.example");
        assert_eq!(host("http://127.0.0.1:80/"), "127.0.0.1");
        assert_eq!(host("http://127.0.0.1:8080/"), "127.0.0.1:8080");
        assert_eq!(host("https://[::1]:8443/"), "[::1]:8443");
    }
}
