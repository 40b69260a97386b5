//! What the gate knows about a request before any stage runs: the connection it came on and
//! its request id, plus what stages record for the request log line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderValue;

use crate::audit::record::Text;
use crate::authn::identity_texts::IdentityTexts;
use crate::config::RouteConfig;

/// Verified client-certificate identity (mTLS), for service callers and devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// Subject distinguished name, e.g. `CN=lab-analyzer-3,O=Clinic`.
    pub subject: String,
    /// DNS, URI and e-mail subject alternative names.
    pub sans: Vec<String>,
    /// The client-certificate trust (`client_auth` and `client_ca`) it was verified under.
    pub trust: ClientTrust,
}

/// A digest of the client-certificate settings (`client_auth` and the `client_ca` bundle's
/// bytes). A connection keeps the identity verified at its handshake for its whole life, so a
/// reload that changes the trust (a compromised CA removed) must not leave older connections
/// trusted: their identity counts only while the digest is still the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientTrust(pub [u8; 32]);

/// Facts about one client connection, shared by its requests.
#[derive(Debug)]
pub struct ConnInfo {
    /// The TCP peer (an IPv4-mapped IPv6 address as the IPv4 address it is).
    pub peer: SocketAddr,
    /// The peer's address as text (an IPv4-mapped IPv6 address shown as IPv4), formatted once
    /// per connection for the audit records and `X-Forwarded-For` of its requests.
    pub peer_ip: Text,
    /// `peer_ip` as a header value: the `X-Forwarded-For` of every request on the connection
    /// from an untrusted peer, made once.
    pub forwarded_for: Option<HeaderValue>,
    /// Present when the client sent a certificate that verified against `client_ca`.
    pub client_identity: Option<Arc<ClientIdentity>>,
    /// The connection's slot under `[limits] max_connections`, freed when the last holder of
    /// this `ConnInfo` is gone: the connection task, and a WebSocket tunnel that outlives it.
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
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
    pub upstream: Option<Text>,
    /// For a browser navigation (GET/HEAD, `Accept: text/html`, no `Authorization`): where to
    /// send it to sign in, with a same-origin return path. `None` for API clients.
    pub login_redirect: Option<HeaderValue>,
    /// The signed-in user's name, roles and `work_hours` claim, once authentication has run
    /// (for the audit records).
    pub caller: Option<Arc<IdentityTexts>>,
    /// The session as the audit trail names it (a hash: the id itself is never written).
    pub session: Option<Text>,
    /// The `{patient_id}` the route captured, if any.
    pub patient_id: Option<Text>,
    /// Host and canonical path of a request on a PHI route, for its audit records (allowed or
    /// refused), made once and shared by them.
    pub phi_target: Option<(Text, Text)>,
    /// Whether the request looks like a browser navigation.
    pub browser: bool,
    /// The admitted access already has its completion record (forwarding failed): the error
    /// needs no refusal record as well.
    pub access_completed: bool,
}

impl RequestCtx {
    /// A fresh context with a new random request id.
    pub fn new(conn: Arc<ConnInfo>) -> RequestCtx {
        let id = uuid::Uuid::new_v4();
        let mut buffer = uuid::Uuid::encode_buffer();
        let text = id.hyphenated().encode_lower(&mut buffer);
        let mut request_id = HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("-"));
        // Unique to this request, so HTTP/2 should send it as a never-indexed literal: indexed,
        // every response would insert it into the connection's HPACK table, evicting the
        // security headers that repeat and lengthening each lookup of the name. (HTTP/1 and
        // the logs are unaffected: they read the value, not the flag.)
        request_id.set_sensitive(true);
        RequestCtx {
            request_id,
            conn,
            started: Instant::now(),
            route: None,
            upstream: None,
            login_redirect: None,
            caller: None,
            session: None,
            patient_id: None,
            phi_target: None,
            browser: false,
            access_completed: false,
        }
    }

    /// Remembers where a browser should come back to after signing in.
    pub fn set_return_path(&mut self, target: &crate::gate::target::RequestTarget) {
        if self.browser {
            let query =
                serde_urlencoded::to_string([("rd", target.path_and_query())]).unwrap_or_default();
            self.login_redirect = HeaderValue::from_str(&format!("/.wardgate/login?{query}")).ok();
        }
    }

    /// Records what routing found: the bound patient id, and for PHI routes the target.
    pub fn note_route(
        &mut self,
        matched: &crate::gate::route::RouteMatch,
        target: &crate::gate::target::RequestTarget,
    ) {
        self.patient_id = matched
            .params
            .iter()
            .find(|(name, _)| &**name == "patient_id")
            .map(|(_, value)| Arc::clone(value));
        if matched.route.phi {
            self.phi_target = Some((Arc::clone(&target.host), Arc::clone(&target.path)));
        }
    }

    /// Notes the other route a spelling variant of the path reaches (the request is refused):
    /// if it holds PHI, the refusal is logged and audited as a request to it.
    pub fn note_variant_route(
        &mut self,
        other: &crate::gate::route::RouteMatch,
        target: &crate::gate::target::RequestTarget,
    ) {
        if other.route.phi {
            self.route = Some(Arc::clone(&other.route));
            self.note_route(other, target);
        }
    }

    /// Records the authenticated user for the request log.
    pub fn note_caller(&mut self, caller: &crate::authn::Caller) {
        if let crate::authn::Caller::User(principal, _) = caller {
            self.caller = Some(Arc::clone(principal.user.identity_texts()));
            self.session = Some(Arc::clone(&principal.audit_session));
        }
    }

    /// The request id as text.
    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("-")
    }
}

impl ConnInfo {
    /// The client-certificate identity, if it was verified under `current` (the running
    /// configuration's trust); an identity from a CA a reload has since dropped is none.
    pub fn client_identity_under(&self, current: ClientTrust) -> Option<Arc<ClientIdentity>> {
        let identity = self.client_identity.as_ref()?;
        if identity.trust != current {
            tracing::debug!(subject = %identity.subject, "client certificate verified under a previous client_ca; not trusted");
            return None;
        }
        Some(Arc::clone(identity))
    }

    /// Facts of a connection from `peer`.
    pub fn new(peer: SocketAddr, client_identity: Option<Arc<ClientIdentity>>) -> ConnInfo {
        // On a dual-stack listener (`[::]:port`) an IPv4 client arrives as `::ffff:a.b.c.d`,
        // which no IPv4 network contains: policy `networks`, `trusted_proxies` and per-address
        // limits must see the IPv4 address the operator wrote rules for.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let ip = peer.ip().to_string();
        ConnInfo {
            peer,
            forwarded_for: HeaderValue::from_str(&ip).ok(),
            peer_ip: Text::from(ip),
            client_identity,
            slot: None,
        }
    }

    /// The same facts, holding the connection's slot under `[limits] max_connections`.
    pub fn holding(mut self, slot: tokio::sync::OwnedSemaphorePermit) -> ConnInfo {
        self.slot = Some(slot);
        self
    }
}

/// A top-level browser navigation: GET/HEAD, HTML accepted, no `Authorization` header.
/// These are redirected to the login page; everything else gets a plain 401.
pub fn is_browser_navigation<B>(req: &http::Request<B>) -> bool {
    matches!(*req.method(), http::Method::GET | http::Method::HEAD)
        && !req.headers().contains_key(http::header::AUTHORIZATION)
        && req
            .headers()
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dual-stack listener sees IPv4 clients as `::ffff:a.b.c.d`; rules name IPv4 networks.
    #[test]
    fn ipv4_mapped_peers_are_seen_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:203.0.113.5]:4000".parse().expect("addr");
        let conn = ConnInfo::new(mapped, None);
        assert_eq!(
            conn.peer,
            "203.0.113.5:4000".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(&*conn.peer_ip, "203.0.113.5");
        let network: ipnet::IpNet = "203.0.113.0/24".parse().expect("net");
        assert!(network.contains(&conn.peer.ip()));
        let v6: SocketAddr = "[2001:db8::1]:4000".parse().expect("addr");
        assert_eq!(ConnInfo::new(v6, None).peer, v6);
    }
}
