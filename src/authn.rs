//! Stage 4, authenticate: who is calling, proved again on every request.
//!
//! Runs after routing. Public routes need no identity. For every other route the request
//! must carry a session token (`Authorization: Bearer` or the `__Host-wardgate` cookie) whose
//! signature, claims and server-side session all verify *now* (see `session.rs`). A POST (or
//! any unsafe method) authenticated by the cookie must also come from Wardgate's own origin,
//! since browsers attach cookies to cross-site requests too (CSRF). Without valid
//! credentials the answer is 401, or a redirect to the login portal for browsers.

use http::{HeaderMap, Method};

use std::sync::Arc;

use crate::app::App;
use crate::config::RouteConfig;
use crate::gate::context::ClientIdentity;
use crate::gate::error::GateError;

pub mod events;
pub mod identity_texts;
pub mod lockout;
pub mod oidc;
pub mod password;
pub mod portal;
pub mod session;
pub mod token;
pub mod totp;
pub mod users;

pub use session::Principal;

/// Name of the session cookie (`__Host-`: Secure, no Domain, Path=/ enforced by browsers).
pub const SESSION_COOKIE: &str = "__Host-wardgate";

/// The proven identity of the caller.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No credentials were needed: the route is public.
    Anonymous,
    /// A user with a valid session (and the client certificate of the connection, if any).
    User(Principal, Option<Arc<ClientIdentity>>),
    /// A service or device identified only by its verified client certificate (mTLS).
    Service(Arc<ClientIdentity>),
}

/// Where the credential came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    /// `Authorization: Bearer`.
    Bearer,
    /// The `__Host-wardgate` cookie (needs the same-origin check on unsafe methods).
    Cookie,
}

/// Finds the session token on a request: the bearer token first, then the cookie.
pub fn credential(headers: &HeaderMap) -> Option<(&str, CredentialSource)> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let text = value.to_str().ok()?;
        let (scheme, token) = text.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then_some((token.trim(), CredentialSource::Bearer));
    }
    cookie(headers, SESSION_COOKIE).map(|token| (token, CredentialSource::Cookie))
}

/// The value of cookie `name` (exact name match; the first one wins).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
}

/// Where a request says it comes from, relative to Wardgate's own origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOrigin {
    /// `Origin` equals `public_url`, or `Sec-Fetch-Site: same-origin`.
    Same,
    /// Another origin, or `Sec-Fetch-Site` says cross-site / same-site.
    Foreign,
    /// Neither header tells (non-browser clients).
    Unknown,
}

/// Reads `Origin` (and, when it is absent, `Sec-Fetch-Site`). `Origin: null` is a browser
/// hiding where the request comes from (a sandboxed frame, a `data:` page, a redirect across
/// origins): not provably Wardgate's own page, so it counts as another origin.
pub fn request_origin(headers: &HeaderMap, public_url: &str) -> RequestOrigin {
    match headers
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    {
        Some(origin) => {
            if origin == public_url {
                RequestOrigin::Same
            } else {
                RequestOrigin::Foreign
            }
        }
        _ => match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
            Some("same-origin") => RequestOrigin::Same,
            Some("cross-site" | "same-site") => RequestOrigin::Foreign,
            _ => RequestOrigin::Unknown,
        },
    }
}

/// Whether a request provably comes from Wardgate's own origin.
pub fn same_origin(headers: &HeaderMap, public_url: &str) -> bool {
    request_origin(headers, public_url) == RequestOrigin::Same
}

/// Returns the caller's identity, or why the request is refused.
pub async fn authenticate(
    app: &App,
    route: &RouteConfig,
    method: &Method,
    headers: &HeaderMap,
    client_cert: Option<&Arc<ClientIdentity>>,
) -> Result<Caller, GateError> {
    if route.public {
        return Ok(Caller::Anonymous);
    }
    let Some((token, source)) = credential(headers) else {
        return match client_cert {
            Some(identity) => Ok(Caller::Service(Arc::clone(identity))),
            None => Err(GateError::Unauthenticated),
        };
    };
    let principal = session::validate(app, token, crate::state::unix_now()).await?;
    // A WebSocket handshake is a GET, but it opens a two-way channel that a page of another
    // origin (same site included, so `SameSite` does not help) could drive with the user's
    // cookie: cross-site WebSocket hijacking. Browsers send `Origin` with every handshake, so
    // it is checked as an unsafe method is.
    let unsafe_method = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        || headers.contains_key(http::header::UPGRADE);
    if source == CredentialSource::Cookie
        && unsafe_method
        && !same_origin(headers, &app.config.listen.public_url)
    {
        return Err(GateError::Forbidden(
            "cross-origin request with session cookie",
        ));
    }
    Ok(Caller::User(principal, client_cert.cloned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_bearer_or_the_exact_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "cookie",
            "__Host-wardgate-pending=p; __Host-wardgate=t1"
                .parse()
                .expect("v"),
        );
        assert_eq!(credential(&headers), Some(("t1", CredentialSource::Cookie)));
        headers.insert("authorization", "Bearer t2".parse().expect("v"));
        assert_eq!(credential(&headers), Some(("t2", CredentialSource::Bearer)));
        headers.insert("authorization", "Basic abc".parse().expect("v"));
        assert_eq!(credential(&headers), None);
        let mut other = HeaderMap::new();
        other.insert(
            "cookie",
            "x__Host-wardgate=t; __Host-wardgatex=u".parse().expect("v"),
        );
        assert_eq!(credential(&other), None);
    }

    /// `Origin: null` (an opaque origin) is never Wardgate's own, whatever `Sec-Fetch-Site`
    /// says; only a request with neither header is of unknown origin.
    #[test]
    fn a_null_origin_is_foreign() {
        let public = "https://portal.example.org";
        let mut headers = HeaderMap::new();
        assert_eq!(request_origin(&headers, public), RequestOrigin::Unknown);
        headers.insert("sec-fetch-site", "same-origin".parse().expect("value"));
        assert_eq!(request_origin(&headers, public), RequestOrigin::Same);
        headers.insert(http::header::ORIGIN, "null".parse().expect("value"));
        assert_eq!(request_origin(&headers, public), RequestOrigin::Foreign);
        headers.insert(http::header::ORIGIN, public.parse().expect("value"));
        assert_eq!(request_origin(&headers, public), RequestOrigin::Same);
    }
}
