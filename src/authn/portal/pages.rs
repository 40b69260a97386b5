//! The HTML login portal: password, then TOTP (or first-time enrollment with a QR code).
//!
//! Plain forms, no script, no external assets, so it works under a strict Content Security
//! Policy. Between the two steps the login is a short-lived server-side record named by the
//! `__Host-wardgate-pending` cookie; the return path is checked to stay on this origin.

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{flow, has_content_type, read_body, set_cookie, PENDING_COOKIE};
use crate::app::App;
use crate::authn::users::User;
use crate::authn::{cookie, credential, same_origin, session, SESSION_COOKIE};
use crate::body::{self, Body};
use crate::gate::context::RequestCtx;
use crate::gate::error::GateError;
use crate::gate::target::RequestTarget;
use crate::state::{unix_now, PendingLogin};

const LAYOUT: &str = include_str!("../../../assets/portal/layout.html");
const LOGIN: &str = include_str!("../../../assets/portal/login.html");
const TOTP: &str = include_str!("../../../assets/portal/totp.html");
const ENROLL: &str = include_str!("../../../assets/portal/enroll.html");
const HOME: &str = include_str!("../../../assets/portal/home.html");
const CSS: &str = include_str!("../../../assets/portal/portal.css");

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
pub(crate) const PENDING_TTL: Duration = Duration::from_secs(300);

pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

pub(crate) fn page(status: StatusCode, title: &str, content: &str) -> Response<Body> {
    let html = LAYOUT
        .replace("{{title}}", &escape(title))
        .replace("{{content}}", content);
    let mut response = Response::new(body::full(html));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    response
}

pub(super) fn error_note(message: Option<&str>) -> String {
    message.map_or_else(String::new, |m| {
        format!("<p class=\"error\" role=\"alert\">{}</p>", escape(m))
    })
}

pub(crate) fn see_other(location: &str) -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Turns a failed step into the page to show again (or passes other errors on).
pub(super) fn step_failure(
    error: GateError,
    retry_page: impl FnOnce(&str, StatusCode) -> Response<Body>,
) -> Result<Response<Body>, GateError> {
    match error {
        GateError::InvalidCredentials => Ok(retry_page(
            "Sign-in failed. Check your details and try again.",
            StatusCode::UNAUTHORIZED,
        )),
        GateError::TooManyRequests(seconds) => {
            let mut response = retry_page(
                "Too many attempts. Please wait and try again later.",
                StatusCode::TOO_MANY_REQUESTS,
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            Ok(response)
        }
        other => Err(other),
    }
}

pub(super) async fn form(req: Request<Incoming>) -> Result<Vec<(String, String)>, GateError> {
    if !has_content_type(&req, "application/x-www-form-urlencoded") {
        return Err(GateError::UnsupportedMediaType);
    }
    let bytes = read_body(req).await?;
    serde_urlencoded::from_bytes(&bytes).map_err(|_| GateError::BadRequest("malformed form"))
}

pub(super) fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// `GET /.wardgate/login?rd=PATH`.
pub(super) fn login_form(
    app: &App,
    target: &RequestTarget,
    error: Option<&str>,
    status: StatusCode,
) -> Response<Body> {
    let rd = flow::return_path(target);
    render_login(app, &rd, error, status)
}

fn render_login(app: &App, rd: &str, error: Option<&str>, status: StatusCode) -> Response<Body> {
    let content = LOGIN
        .replace("{{error}}", &error_note(error))
        .replace("{{rd}}", &escape(rd))
        .replace("{{providers}}", &super::notice::provider_links(app, rd));
    page(status, "Sign in", &content)
}

/// `POST /.wardgate/login`: the password step.
pub(super) async fn login_submit(
    app: &App,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<Body>, GateError> {
    let fields = form(req).await?;
    let rd = flow::safe_return(field(&fields, "rd"));
    let user = match flow::password_step(
        app,
        ctx,
        field(&fields, "username"),
        field(&fields, "password"),
    )
    .await
    {
        Ok(user) => user,
        Err(error) => {
            return step_failure(error, |message, status| {
                render_login(app, &rd, Some(message), status)
            })
        }
    };
    let pending_id = session::random_id();
    let pending = PendingLogin {
        user: user.name.clone(),
        return_to: rd,
        sso: None,
    };
    app.state
        .put_pending(&pending_id, &pending, PENDING_TTL)
        .await
        .map_err(|e| GateError::StateUnavailable(e.to_string()))?;
    let next = if user.enrolls_at_sign_in() {
        "/.wardgate/enroll"
    } else {
        "/.wardgate/login/totp"
    };
    let mut response = see_other(next);
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(PENDING_COOKIE, &pending_id, PENDING_TTL.as_secs()),
    );
    Ok(response)
}

async fn pending_user(
    app: &App,
    req: &Request<Incoming>,
) -> Result<Option<(String, PendingLogin, std::sync::Arc<User>)>, GateError> {
    let Some(id) = cookie(req.headers(), PENDING_COOKIE) else {
        return Ok(None);
    };
    let pending = app
        .state
        .get_pending(id)
        .await
        .map_err(|e| GateError::StateUnavailable(e.to_string()))?;
    Ok(pending.and_then(|p| app.users.get(&p.user).map(|u| (id.to_string(), p, u))))
}

fn render_code_page(
    app: &App,
    ctx: &RequestCtx,
    user: &User,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response<Body>, GateError> {
    if !user.enrolls_at_sign_in() {
        return Ok(page(
            status,
            "Authentication code",
            &TOTP.replace("{{error}}", &error_note(error)),
        ));
    }
    let (otpauth, secret) = flow::start_enrollment(app, ctx, user)?;
    let qr = qrcode::QrCode::new(otpauth.as_bytes())
        .map(|code| {
            code.render::<qrcode::render::svg::Color<'_>>()
                .min_dimensions(220, 220)
                .build()
        })
        .map_err(|e| GateError::Internal(e.to_string()))?;
    let qr = qr
        .find("<svg")
        .map_or(qr.as_str(), |at| &qr[at..])
        .to_string();
    let content = ENROLL
        .replace("{{error}}", &error_note(error))
        .replace("{{qr}}", &qr)
        .replace("{{secret}}", &escape(&secret));
    Ok(page(status, "Set up your authenticator", &content))
}

/// `GET /.wardgate/login/totp` and `GET /.wardgate/enroll`.
/// The request's own context is passed on: an enrollment it starts is audited with the
/// caller's address.
pub(super) async fn code_form(
    app: &App,
    ctx: &RequestCtx,
    req: &Request<Incoming>,
) -> Result<Response<Body>, GateError> {
    match pending_user(app, req).await? {
        None => Ok(see_other("/.wardgate/login")),
        Some((_, _, user)) => render_code_page(app, ctx, &user, None, StatusCode::OK),
    }
}

/// `POST /.wardgate/login/totp` and `POST /.wardgate/enroll`: the TOTP step, then the session.
pub(super) async fn code_submit(
    app: &App,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<Body>, GateError> {
    let Some((pending_id, pending, user)) = pending_user(app, &req).await? else {
        return Ok(see_other("/.wardgate/login"));
    };
    let fields = form(req).await?;
    if let Err(error) = flow::totp_step(app, ctx, &user, field(&fields, "code")).await {
        let user = app.users.get(&user.name).unwrap_or(user);
        return step_failure(error, |message, status| {
            render_code_page(app, ctx, &user, Some(message), status)
                .unwrap_or_else(|_| render_login(app, "/", Some(message), status))
        });
    }
    let user = app.users.get(&user.name).unwrap_or(user);
    let (token, lifetime) = match pending.sso.clone() {
        Some(sso) => flow::open_sso_session(app, ctx, sso).await?,
        None => flow::open_session(app, ctx, &user).await?,
    };
    app.state
        .drop_pending(&pending_id)
        .await
        .map_err(|e| GateError::StateUnavailable(e.to_string()))?;
    let mut response = see_other(&format!(
        "{}{}",
        app.config.listen.public_url, pending.return_to
    ));
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, &token, lifetime),
    );
    headers.append(header::SET_COOKIE, set_cookie(PENDING_COOKIE, "", 0));
    Ok(response)
}

/// `POST /.wardgate/logout`: revoke the session and go back to the login page.
pub(super) async fn logout(
    app: &App,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<Body>, GateError> {
    if !same_origin(req.headers(), &app.config.listen.public_url) {
        return Err(GateError::Forbidden("logout form from another origin"));
    }
    let mut response = match super::end_session(app, ctx, req.headers()).await? {
        // A page rather than a redirect: the portal's CSP (`form-action 'self'`) rightly
        // stops a form submission from being redirected to another origin.
        Some(provider_logout) => super::notice::leave_for(&provider_logout),
        None => see_other("/.wardgate/login"),
    };
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", 0));
    Ok(response)
}

/// `GET /.wardgate/`: who is signed in, with a sign-out button.
pub(super) async fn home(app: &App, req: &Request<Incoming>) -> Result<Response<Body>, GateError> {
    let Some((token, _)) = credential(req.headers()) else {
        return Ok(see_other("/.wardgate/login"));
    };
    match session::validate(app, token, unix_now()).await {
        Ok(principal) => {
            let content = HOME
                .replace("{{user}}", &escape(&principal.user.name))
                .replace("{{roles}}", &escape(&principal.user.roles.join(", ")));
            Ok(page(StatusCode::OK, "Signed in", &content))
        }
        Err(GateError::StateUnavailable(reason)) => Err(GateError::StateUnavailable(reason)),
        Err(_) => Ok(see_other("/.wardgate/login")),
    }
}

/// `GET /.wardgate/assets/portal.css`.
pub(super) fn stylesheet() -> Response<Body> {
    let mut response = Response::new(body::full(CSS));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    response
}
