//! Wardgate's own endpoints under `/.wardgate/`: the login portal and its JSON API.
//!
//! A plain match on method and path. Every POST is refused (403) when its `Origin` is not
//! Wardgate's own, JSON endpoints accept only `application/json`, and bodies are small and
//! bounded. Answers are never cached.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::app::App;
use crate::authn::oidc;
use crate::body::{self, Body};
use crate::gate::context::RequestCtx;
use crate::gate::error::GateError;
use crate::gate::target::RequestTarget;

mod api;
pub mod flow;
pub(crate) mod notice;
pub(crate) mod pages;
mod stepup;

/// Largest body accepted by a portal endpoint.
const MAX_PORTAL_BODY: usize = 16 * 1024;
/// Cookie carrying a login between the password and the TOTP step.
pub const PENDING_COOKIE: &str = "__Host-wardgate-pending";

/// Whether `path` belongs to the portal.
pub fn owns(path: &str) -> bool {
    path == "/.wardgate" || path.starts_with("/.wardgate/")
}

/// Answers a portal request.
pub async fn handle(
    app: &App,
    ctx: &mut RequestCtx,
    target: &RequestTarget,
    req: Request<Incoming>,
) -> Result<Response<Body>, GateError> {
    ctx.login_redirect = None;
    let method = req.method().clone();
    let origin = crate::authn::request_origin(req.headers(), &app.config.listen.public_url);
    // The back-channel logout is a server-to-server POST proven by its signed logout token.
    let backchannel = &*target.path == "/.wardgate/oidc/backchannel-logout";
    if method == Method::POST && origin == crate::authn::RequestOrigin::Foreign && !backchannel {
        return Err(GateError::Forbidden("cross-origin POST to the portal"));
    }
    let mut response = match (method, &*target.path) {
        (Method::GET, "/.wardgate" | "/.wardgate/") => pages::home(app, &req).await,
        (Method::GET, "/.wardgate/login") => {
            Ok(pages::login_form(app, target, None, StatusCode::OK))
        }
        (Method::POST, "/.wardgate/login") => pages::login_submit(app, ctx, req).await,
        (Method::GET, "/.wardgate/login/totp" | "/.wardgate/enroll") => {
            pages::code_form(app, ctx, &req).await
        }
        (Method::POST, "/.wardgate/login/totp" | "/.wardgate/enroll") => {
            pages::code_submit(app, ctx, req).await
        }
        (Method::POST, "/.wardgate/logout") => pages::logout(app, ctx, req).await,
        (Method::GET, "/.wardgate/step-up") => stepup::step_up_form(app, target, &req).await,
        (Method::POST, "/.wardgate/step-up") => stepup::step_up_submit(app, ctx, req).await,
        (Method::GET, "/.wardgate/assets/portal.css") => Ok(pages::stylesheet()),
        (Method::GET, "/.wardgate/session") => api::session(app, &req).await,
        (Method::GET, "/.wardgate/jwks.json") => Ok(jwks(app)),
        (Method::POST, "/.wardgate/api/login") => api::login(app, ctx, req).await,
        (Method::POST, "/.wardgate/api/enroll") => api::enroll(app, ctx, req).await,
        (Method::POST, "/.wardgate/api/logout") => api::logout(app, ctx, req).await,
        (Method::POST, "/.wardgate/api/step-up") => api::step_up(app, ctx, req).await,
        (Method::POST, "/.wardgate/api/break-glass") => api::break_glass(app, ctx, req).await,
        (Method::GET, "/.wardgate/oidc/callback") => {
            oidc::login::callback(app, ctx, target, req.headers()).await
        }
        (Method::POST, "/.wardgate/oidc/backchannel-logout") => {
            oidc::backchannel::receive(app, ctx, req).await
        }
        (Method::GET, path) if oidc_start(path).is_some() => {
            let name = oidc_start(path).unwrap_or_default();
            oidc::login::start(app, ctx, target, name).await
        }
        _ => Err(GateError::NoRoute),
    }?;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The provider name in `/.wardgate/oidc/NAME/start`.
fn oidc_start(path: &str) -> Option<&str> {
    path.strip_prefix("/.wardgate/oidc/")?
        .strip_suffix("/start")
        .filter(|name| !name.contains('/'))
}

/// Reads a small body, refusing anything over [`MAX_PORTAL_BODY`].
pub(crate) async fn read_body(req: Request<Incoming>) -> Result<Bytes, GateError> {
    Limited::new(req.into_body(), MAX_PORTAL_BODY)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|_| GateError::BodyTooLarge)
}

pub(crate) fn has_content_type<B>(req: &Request<B>, expected: &str) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected))
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(body::full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `Set-Cookie` for a `__Host-` cookie (Secure, HttpOnly, SameSite=Strict, Path=/).
pub(crate) fn set_cookie(name: &str, value: &str, max_age: u64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}={value}; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}"
    ))
    .unwrap_or(HeaderValue::from_static(
        "__Host-wardgate=; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
    ))
}

/// Like [`set_cookie`] with `SameSite=Lax`, for the one cookie that must come back on the
/// identity provider's cross-site redirect (the single-sign-on flow key).
pub(crate) fn set_lax_cookie(name: &str, value: &str, max_age: u64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}={value}; Secure; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age}"
    ))
    .unwrap_or(HeaderValue::from_static(
        "__Host-wardgate-sso=; Secure; HttpOnly; SameSite=Lax; Path=/; Max-Age=0",
    ))
}

/// `GET /.wardgate/jwks.json`: the public key that verifies `X-Wardgate-Assertion`.
fn jwks(app: &App) -> Response<Body> {
    let mut response = Response::new(body::full(app.assertions.jwks().to_string()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    response
}

/// The session behind a state-changing portal request (step-up, break-glass). A session carried
/// by the cookie must come from Wardgate's own origin (CSRF); a bearer token needs no such check.
async fn session_for_post(
    app: &App,
    headers: &http::HeaderMap,
) -> Result<crate::authn::Principal, GateError> {
    let (token, source) = crate::authn::credential(headers).ok_or(GateError::Unauthenticated)?;
    if source == crate::authn::CredentialSource::Cookie
        && !crate::authn::same_origin(headers, &app.config.listen.public_url)
    {
        return Err(GateError::Forbidden(
            "cookie-authenticated POST from another origin",
        ));
    }
    crate::authn::session::validate(app, token, crate::state::unix_now()).await
}

/// Ends the session a logout request carries, if it is still valid (logging out twice is fine).
/// For a single-sign-on session, returns the provider's logout URL (RP-initiated logout).
async fn end_session(
    app: &App,
    ctx: &RequestCtx,
    headers: &http::HeaderMap,
) -> Result<Option<String>, GateError> {
    let Some((token, _)) = crate::authn::credential(headers) else {
        return Ok(None);
    };
    // A store that cannot answer must not turn into a logout that did nothing but say 204:
    // the session would live on. Only a session that is already invalid is "logged out".
    let validated = crate::authn::session::validate(app, token, crate::state::unix_now()).await;
    if let Err(GateError::StateUnavailable(reason)) = validated {
        return Err(GateError::StateUnavailable(reason));
    }
    if let Ok(principal) = validated {
        app.state
            .revoke_session(&principal.session_id)
            .await
            .map_err(|e| GateError::StateUnavailable(e.to_string()))?;
        let ip = ctx.conn.peer_ip.to_string();
        crate::authn::events::emit(
            app,
            crate::authn::events::Event::Logout,
            &principal.user.name,
            &ip,
            "user logout",
        );
        if let Some(sso) = &principal.sso {
            return Ok(oidc::login::end_session_url(app, sso).await);
        }
    }
    Ok(None)
}
