//! The last step of every request: turn the outcome into the answer the client sees.
//!
//! Errors get a fixed JSON body (`{"error":"…","request_id":"…"}`) and never the detailed
//! cause, which goes only to the log. Every answer, error or not, gets the request id and the
//! configured security headers, and the backend's `Server` banner is removed.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::context::RequestCtx;
use super::error::GateError;
use crate::body::{self, Body};
use crate::config::ResponseHeaders;

/// `X-Request-Id`, as a constant `HeaderName`: inserting by a `&str` name parses it and, for a
/// name outside the standard set, allocates a copy on every response.
pub const REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// Builds the answer for a refused or failed request. A browser navigation that needs to sign
/// in is redirected to the login page instead of getting a bare 401.
pub fn error_response(ctx: &RequestCtx, error: &GateError) -> Response<Body> {
    let payload = serde_json::json!({ "error": error.code(), "request_id": ctx.request_id() });
    let mut response = Response::new(body::full(payload.to_string()));
    let login = match error {
        GateError::Unauthenticated | GateError::InvalidSession(_) => ctx.login_redirect.clone(),
        GateError::StepUpRequired(_) => ctx
            .login_redirect
            .as_ref()
            .and_then(|login| login.to_str().ok())
            .and_then(|login| {
                HeaderValue::from_str(&login.replacen(
                    "/.wardgate/login?",
                    "/.wardgate/step-up?",
                    1,
                ))
                .ok()
            }),
        _ => None,
    };
    *response.status_mut() = if login.is_some() {
        StatusCode::FOUND
    } else {
        error.status()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(location) = login {
        headers.insert(header::LOCATION, location);
    }
    match error {
        GateError::Unauthenticated | GateError::InvalidSession(_) => {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        GateError::StepUpRequired(max_age) => {
            let challenge =
                format!("Bearer error=\"insufficient_user_authentication\", max_age={max_age}");
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                headers.insert(header::WWW_AUTHENTICATE, value);
            }
        }
        GateError::TooManyRequests(seconds) => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(*seconds));
        }
        _ => {}
    }
    response
}

/// Adds the request id and security headers; removes the backend's banner.
pub fn finish(response: &mut Response<Body>, ctx: &RequestCtx, policy: &ResponseHeaders) {
    let phi = ctx.route.as_ref().is_some_and(|route| route.phi);
    let headers = response.headers_mut();
    // Room for the headers below: one growth of the map instead of several.
    let _ = headers.try_reserve(6);
    headers.insert(REQUEST_ID, ctx.request_id.clone());
    if policy.hide_server {
        headers.remove(header::SERVER);
    }
    if let Some(hsts) = &policy.hsts {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    if policy.nosniff {
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    if let Some(frame) = &policy.frame_options {
        headers.insert(header::X_FRAME_OPTIONS, frame.clone());
    }
    if let Some(referrer) = &policy.referrer_policy {
        headers.insert(header::REFERRER_POLICY, referrer.clone());
    }
    if phi {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}
