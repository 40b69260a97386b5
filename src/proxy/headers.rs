//! Header hygiene between client and backend: always strip, then overwrite.
//!
//! Nothing the client sends may speak for Wardgate: client `X-Wardgate-*`, the configured
//! identity headers, `Forwarded`/`X-Forwarded-*` (unless the peer is a trusted proxy), URL and
//! method override headers, and every header whose name holds an underscore are removed before
//! Wardgate writes its own values. CGI, WSGI and Rack servers read `X-Wardgate_User` and
//! `X-Wardgate-User` as the same variable (`HTTP_X_WARDGATE_USER`), so an underscore spelling
//! would slip past the exact names (nginx drops such headers by default for the same reason). Hop-by-hop headers,
//! including any header the client names in `Connection`, never cross the proxy, so a client
//! cannot make Wardgate drop a header it set (`Connection: X-Wardgate-User`).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::{ListenConfig, ProxyConfig};
use crate::gate::context::RequestCtx;
use crate::gate::target::RequestTarget;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Headers some frameworks read as the "real" URL or method; a client could use them to reach
/// a path or a method that policy never saw.
const URL_OVERRIDES: [&str; 6] = [
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-uri",
];

const FORWARDING: [&str; 5] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
];

/// Gives every value the backend sent its own allocation, for an HTTP/2 client.
///
/// hyper parses header values as slices of the upstream connection's read buffer (8 KiB).
/// HPACK keeps the values it indexes in the client connection's dynamic table, so one such
/// slice would keep that whole buffer alive as long as the client's connection stays open:
/// measured, 4 KB more RSS per idle HTTP/2 connection (the buffer is only partly touched).
/// Values HPACK never indexes (sensitive ones, and h2's `skip_value_index` names) are left
/// as they are. The copies cost about 1.5k instructions per HTTP/2 request
/// (`benches/load/instructions`); a per-thread cache of recent values saved 0.6k of them and
/// was not worth its code.
pub fn detach_values(headers: &mut HeaderMap) {
    for (name, value) in headers.iter_mut() {
        let never_indexed = matches!(
            *name,
            header::CONTENT_LENGTH
                | header::AGE
                | header::ETAG
                | header::LOCATION
                | header::SET_COOKIE
        );
        if never_indexed || value.is_sensitive() {
            continue;
        }
        if let Ok(copy) = HeaderValue::from_bytes(value.as_bytes()) {
            *value = copy;
        }
    }
}

/// Removes hop-by-hop headers (and those listed in `Connection`). When `keep_upgrade` is set
/// the `Upgrade` handshake headers survive so WebSockets can pass.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let keep_upgrade = keep_upgrade && headers.contains_key(header::UPGRADE);
    let hop = HopByHop::of(headers, keep_upgrade);
    for name in names_where(headers, |name| hop.drops(name)) {
        headers.remove(&name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Which headers of one message describe the connection rather than the message.
struct HopByHop {
    /// Lower-cased names listed in `Connection` (empty, and unallocated, when there is none).
    listed: Vec<String>,
    keep_upgrade: bool,
}

impl HopByHop {
    fn of(headers: &HeaderMap, keep_upgrade: bool) -> HopByHop {
        let listed = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // `close` names no header and `keep-alive` is always dropped: the usual
            // `Connection: keep-alive` of a backend then costs no allocation.
            .filter(|name| {
                !name.is_empty()
                    && !name.eq_ignore_ascii_case("close")
                    && !name.eq_ignore_ascii_case("keep-alive")
            })
            .map(str::to_ascii_lowercase)
            .collect();
        HopByHop {
            listed,
            keep_upgrade,
        }
    }

    fn drops(&self, name: &HeaderName) -> bool {
        if name == header::UPGRADE {
            return !self.keep_upgrade;
        }
        HOP_BY_HOP.contains(name) || self.listed.iter().any(|listed| listed == name.as_str())
    }
}

/// The names `picked` selects, in one pass: the common message carries none of the headers
/// removed here, and then nothing is hashed, parsed or allocated.
fn names_where(headers: &HeaderMap, picked: impl Fn(&HeaderName) -> bool) -> Vec<HeaderName> {
    headers
        .keys()
        .filter(|name| picked(name))
        .cloned()
        .collect()
}

/// Prepares the headers of a request about to be forwarded.
pub fn prepare_request(
    headers: &mut HeaderMap,
    ctx: &RequestCtx,
    target: &RequestTarget,
    listen: &ListenConfig,
    proxy: &ProxyConfig,
    upgrade: bool,
) {
    // Room for the forwarding, request-id and identity headers written below, so the map
    // grows (and rehashes) once rather than as they are inserted one by one.
    let _ = headers.try_reserve(9);
    let peer = ctx.conn.peer.ip();
    let trusted = listen.trusted_proxies.iter().any(|net| net.contains(&peer));
    let keep_upgrade = upgrade && headers.contains_key(header::UPGRADE);
    let hop = HopByHop::of(headers, keep_upgrade);
    let chain = headers
        .get(X_FORWARDED_FOR)
        .filter(|_| trusted && !hop.drops(&X_FORWARDED_FOR))
        .and_then(|v| v.to_str().ok());
    // The common case (no trusted chain) is the peer alone, made once per connection.
    let forwarded_for = match chain {
        Some(chain) => HeaderValue::from_str(&format!("{chain}, {}", ctx.conn.peer_ip)).ok(),
        None => ctx.conn.forwarded_for.clone(),
    };
    let removed = names_where(headers, |name| {
        let name_str = name.as_str();
        hop.drops(name)
            || name_str.starts_with("x-wardgate-")
            || proxy.strip_headers.contains(name)
            || URL_OVERRIDES.contains(&name_str)
            || (!trusted && FORWARDING.contains(&name_str))
            || name_str.contains('_')
    });
    for name in removed {
        if name.as_str().starts_with("x-wardgate-") {
            tracing::debug!(header = %name, request_id = %ctx.request_id(), "stripped client-sent identity header");
        }
        headers.remove(&name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    // The `Host` the client sent, when it is the target's authority (HTTP/1), is reused as is
    // (a shared slice of the request, no copy); otherwise (HTTP/2's `:authority`, an
    // absolute-form target) the value is made from the authority.
    let host = match headers.get(header::HOST) {
        Some(sent) if sent.as_bytes() == target.authority.as_bytes() => Some(sent.clone()),
        _ => HeaderValue::from_str(&target.authority).ok(),
    };
    if let Some(forwarded_for) = forwarded_for {
        headers.insert(X_FORWARDED_FOR, forwarded_for);
    }
    if !trusted || !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    }
    if let Some(host) = host {
        if !trusted || !headers.contains_key(X_FORWARDED_HOST) {
            headers.insert(X_FORWARDED_HOST, host.clone());
        }
        headers.insert(header::HOST, host);
    }
    headers.insert(X_REQUEST_ID, ctx.request_id.clone());
    headers.insert(X_WARDGATE_REQUEST_ID, ctx.request_id.clone());
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_WARDGATE_REQUEST_ID: HeaderName = HeaderName::from_static("x-wardgate-request-id");
/// The signed identity assertion for the backend.
pub const X_WARDGATE_ASSERTION: HeaderName = HeaderName::from_static("x-wardgate-assertion");
/// Marks a request that rides on a break-glass grant.
pub const X_WARDGATE_BREAK_GLASS: HeaderName = HeaderName::from_static("x-wardgate-break-glass");
const X_WARDGATE_USER: HeaderName = HeaderName::from_static("x-wardgate-user");
const X_WARDGATE_ROLES: HeaderName = HeaderName::from_static("x-wardgate-roles");

/// Removes Wardgate's own credentials from a request about to be forwarded, whoever the caller
/// is: a session token in `Authorization: Bearer` and the `__Host-wardgate*` cookies (session,
/// pending sign-in, single sign-on flow). Backends, public ones included, learn who is calling
/// from Wardgate and never hold a token they could replay. A browser sends the session cookie
/// with every request to the origin, public routes too, so this cannot depend on the route.
/// `signed_in` (the caller was authenticated by a session) removes any `Authorization`.
pub fn remove_credentials(headers: &mut HeaderMap, signed_in: bool) {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.as_bytes().get(..7))
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"bearer "));
    if signed_in || bearer {
        headers.remove(header::AUTHORIZATION);
    }
    let carries_ours = headers.get_all(header::COOKIE).iter().any(|value| {
        value
            .as_bytes()
            .windows(15)
            .any(|w| w == b"__Host-wardgate")
    });
    if !carries_ours {
        return;
    }
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && !pair.starts_with("__Host-wardgate"))
        .map(str::to_string)
        .collect();
    headers.remove(header::COOKIE);
    if let Ok(cookie) = HeaderValue::from_str(&kept.join("; ")) {
        if !kept.is_empty() {
            headers.insert(header::COOKIE, cookie);
        }
    }
}

/// Writes the verified caller's identity for the backend (after all client values were
/// removed, [`remove_credentials`] included).
pub fn set_identity(headers: &mut HeaderMap, principal: &crate::authn::Principal) {
    let texts = principal.user.identity_texts();
    if let Some(user) = &texts.user_header {
        headers.insert(X_WARDGATE_USER, user.clone());
    }
    if let Some(roles) = &texts.roles_header {
        headers.insert(X_WARDGATE_ROLES, roles.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detached_values_no_longer_hold_the_read_buffer() {
        let read_buffer = bytes::Bytes::from(b"application/json; charset=utf-8 12345".to_vec());
        let slice = |from: usize, to: usize| {
            HeaderValue::from_maybe_shared(read_buffer.slice(from..to)).expect("value")
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, slice(0, 31));
        headers.insert("x-custom", slice(0, 16));
        assert!(!read_buffer.is_unique());
        detach_values(&mut headers);
        assert!(
            read_buffer.is_unique(),
            "a value still points into the buffer"
        );
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "application/json; charset=utf-8"
        );
        assert_eq!(headers["x-custom"], "application/json");
        // Values HPACK never indexes are not copied: removing them is what frees the buffer.
        let mut secret = slice(0, 16);
        secret.set_sensitive(true);
        headers.insert("x-secret", secret);
        headers.insert(header::CONTENT_LENGTH, slice(32, 37));
        detach_values(&mut headers);
        assert!(headers["x-secret"].is_sensitive());
        headers.remove("x-secret");
        assert!(!read_buffer.is_unique(), "content-length was copied");
        headers.remove(header::CONTENT_LENGTH);
        assert!(read_buffer.is_unique());
        let mut secret = slice(0, 16);
        secret.set_sensitive(true);
        headers.insert("x-secret", secret);
        detach_values(&mut headers);
        assert!(!read_buffer.is_unique(), "the sensitive value was copied");
    }

    #[test]
    fn connection_listed_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, X-Secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut headers, false);
        assert_eq!(
            headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            vec!["x-kept"]
        );

        // No `Connection` header: the fixed names still go.
        let mut plain = HeaderMap::new();
        for name in ["keep-alive", "proxy-connection", "te", "trailer", "upgrade"] {
            plain.insert(name, HeaderValue::from_static("1"));
        }
        plain.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        plain.insert(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic"),
        );
        plain.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        remove_hop_by_hop(&mut plain, false);
        assert_eq!(
            plain.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            vec!["content-type"]
        );
    }

    #[test]
    fn upgrade_survives_only_when_kept() {
        let upgrade_request = || {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CONNECTION,
                HeaderValue::from_static("Upgrade , X-Other"),
            );
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert("x-other", HeaderValue::from_static("1"));
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
            headers
        };
        let mut kept = upgrade_request();
        remove_hop_by_hop(&mut kept, true);
        assert_eq!(
            kept.get(header::UPGRADE).map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(
            kept.get(header::CONNECTION).map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
        assert_eq!(kept.len(), 2, "{kept:?}");

        let mut dropped = upgrade_request();
        remove_hop_by_hop(&mut dropped, false);
        assert!(dropped.is_empty(), "{dropped:?}");
    }
}
