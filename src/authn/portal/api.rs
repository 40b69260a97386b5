//! The JSON API for non-browser clients: login, enroll, logout, whoami.

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::flow;
use super::{has_content_type, json_response, read_body, set_cookie};
use crate::app::App;
use crate::authn::{credential, same_origin, session, CredentialSource, SESSION_COOKIE};
use crate::body::{self, Body};
use crate::gate::context::RequestCtx;
use crate::gate::error::GateError;
use crate::state::unix_now;

#[derive(Deserialize)]
struct LoginRequest {
    username: String,
    password: String,
    #[serde(default)]
    totp: String,
}

async fn read_json<T: for<'de> Deserialize<'de>>(req: Request<Incoming>) -> Result<T, GateError> {
    if !has_content_type(&req, "application/json") {
        return Err(GateError::UnsupportedMediaType);
    }
    let bytes = read_body(req).await?;
    serde_json::from_slice(&bytes).map_err(|_| GateError::BadRequest("malformed JSON body"))
}

/// `POST /.wardgate/api/login` `{"username","password","totp"}` → `{"token","expires_in"}`.
pub(super) async fn login(
    app: &App,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<Body>, GateError> {
    let input: LoginRequest = read_json(req).await?;
    let user = flow::password_step(app, ctx, &input.username, &input.password).await?;
    flow::totp_step(app, ctx, &user, &input.totp).await?;
    let (token, lifetime) = flow::open_session(app, ctx, &user).await?;
    let mut response = json_response(
        StatusCode::OK,
        &serde_json::json!({ "token": token, "expires_in": lifetime }),
    );
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, &token, lifetime),
    );
    Ok(response)
}

/// `POST /.wardgate/api/enroll` `{"username","password"}` → `{"otpauth"}` for a user without
/// a confirmed TOTP secret.
pub(super) async fn enroll(
    app: &App,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<Body>, GateError> {
    let input: LoginRequest = read_json(req).await?;
    let user = flow::password_step(app, ctx, &input.username, &input.password).await?;
    // A confirmed secret, or one given out of band, is refused there (401).
    let (otpauth, _) = flow::start_enrollment(app, ctx, &user)?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "otpauth": otpauth }),
    ))
}

/// `POST /.wardgate/api/logout` → 204; the session is revoked.
pub(super) async fn logout(
    app: &App,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<Body>, GateError> {
    if let Some((_, CredentialSource::Cookie)) = credential(req.headers()) {
        if !same_origin(req.headers(), &app.config.listen.public_url) {
            return Err(GateError::Forbidden(
                "logout with cookie from another origin",
            ));
        }
    }
    let provider_logout = super::end_session(app, ctx, req.headers()).await?;
    let mut response = match provider_logout {
        // A single-sign-on session: tell the client where to end the provider's session too.
        Some(url) => json_response(
            StatusCode::OK,
            &serde_json::json!({ "end_session_url": url }),
        ),
        None => {
            let mut response = Response::new(body::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
    };
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", 0));
    Ok(response)
}

/// `GET /.wardgate/session` → who is signed in, or 401.
pub(super) async fn session(
    app: &App,
    req: &Request<Incoming>,
) -> Result<Response<Body>, GateError> {
    let (token, _) = credential(req.headers()).ok_or(GateError::Unauthenticated)?;
    let principal = session::validate(app, token, unix_now()).await?;
    let mut response = json_response(StatusCode::OK, &principal.to_json());
    response.headers_mut().insert(
        header::VARY,
        HeaderValue::from_static("Cookie, Authorization"),
    );
    Ok(response)
}

#[derive(Deserialize)]
struct StepUpRequest {
    totp: String,
}

/// `POST /.wardgate/api/step-up` `{"totp"}` → 200; the session's authentication time is now.
pub(super) async fn step_up(
    app: &App,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<Body>, GateError> {
    let principal = super::session_for_post(app, req.headers()).await?;
    let input: StepUpRequest = read_json(req).await?;
    let now = flow::step_up(app, ctx, &principal, &input.totp).await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "auth_time": now }),
    ))
}

#[derive(Deserialize)]
struct BreakGlassRequest {
    route: String,
    reason: String,
}

/// `POST /.wardgate/api/break-glass` `{"route","reason"}` → 200 `{"expires_at"}` or 403.
///
/// HIPAA's emergency access procedure: a user with a break-glass role states why, and gets a
/// time-boxed grant bound to this session on a route marked `break_glass = true`. The grant
/// raises an `alert` in the audit trail; every request under it is marked.
pub(super) async fn break_glass(
    app: &App,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<Body>, GateError> {
    let principal = super::session_for_post(app, req.headers()).await?;
    let input: BreakGlassRequest = read_json(req).await?;
    let reason = input.reason.trim();
    let route = app.config.routes.iter().find(|r| *r.name == *input.route);
    let allowed_role = principal
        .user
        .roles
        .iter()
        .any(|r| app.config.break_glass_roles.contains(r));
    let refusal = match route {
        None => Some("no such route"),
        Some(route) if !route.break_glass => Some("route does not allow break-glass"),
        Some(_) if !allowed_role => Some("user has no break-glass role"),
        Some(_) if reason.chars().count() < 10 || reason.len() > 1000 => {
            Some("a reason of 10 to 1000 characters is required")
        }
        Some(_) => None,
    };
    let mut record = crate::audit::AuditRecord::new("break_glass");
    record.user = Some(principal.user.name.as_str().into());
    record.roles = Some(principal.user.roles.as_slice().into());
    record.session = Some(std::sync::Arc::clone(&principal.audit_session));
    record.src_ip = Some(std::sync::Arc::clone(&ctx.conn.peer_ip));
    record.route = Some(input.route.as_str().into());
    record.break_glass = Some(reason.into());
    if let Some(refused) = refusal {
        record.decision = Some("deny".into());
        record.reason = Some(refused.to_string().into());
        app.audit.submit_kept(record);
        return Err(GateError::Denied {
            rule: None,
            reason: refused.to_string(),
        });
    }
    let duration = app.config.break_glass_duration;
    app.state
        .put_grant(&principal.session_id, &input.route, reason, duration)
        .await
        .map_err(|e| GateError::StateUnavailable(e.to_string()))?;
    let expires_at = unix_now() + duration.as_secs();
    record.decision = Some("allow".into());
    record.reason = Some(format!("emergency access granted until {expires_at}").into());
    app.audit.submit_kept(record.clone());
    record.event = "alert".into();
    record.reason = Some(
        format!(
            "break-glass opened on route {} by {}",
            input.route, principal.user.name
        )
        .into(),
    );
    app.audit.submit_kept(record);
    tracing::warn!(target: "wardgate::security", event = "break_glass", user = %principal.user.name, route = %input.route, src_ip = %ctx.conn.peer_ip, "ALERT: break-glass emergency access opened");
    metrics::counter!("wardgate_break_glass_total", "route" => input.route.clone()).increment(1);
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "expires_at": expires_at }),
    ))
}
