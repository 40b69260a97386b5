//! The step-up page: a route's `max_auth_age` asks for the second factor again.
//!
//! Local accounts re-enter a TOTP code. A single-sign-on session can do the same with the TOTP
//! secret of a local account of the same name, or sign in again at its identity provider with
//! `prompt=login` and `max_age=0`, which makes the provider authenticate the user afresh.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::flow;
use super::pages::{error_note, escape, field, form, page, see_other, step_failure};
use crate::app::App;
use crate::authn::{credential, same_origin, session};
use crate::body::Body;
use crate::gate::context::RequestCtx;
use crate::gate::error::GateError;
use crate::gate::target::RequestTarget;
use crate::state::unix_now;

const STEP_UP: &str = include_str!("../../../assets/portal/stepup.html");

fn render_step_up(
    rd: &str,
    sso: Option<&crate::state::SsoLogin>,
    error: Option<&str>,
    status: StatusCode,
) -> Response<Body> {
    let reauth = sso.map_or_else(String::new, |sso| {
        let query = serde_urlencoded::to_string([("reauth", "1"), ("rd", rd)]).unwrap_or_default();
        format!(
            "<p><a class=\"sso\" id=\"sso-reauth\" href=\"/.wardgate/oidc/{}/start?{}\">Or sign in again with your organization</a></p>",
            escape(&sso.provider),
            escape(&query)
        )
    });
    let content = STEP_UP
        .replace("{{error}}", &error_note(error))
        .replace("{{rd}}", &escape(rd))
        .replace("{{reauth}}", &reauth);
    page(status, "Confirm it is you", &content)
}

/// `GET /.wardgate/step-up?rd=PATH`: re-enter a TOTP code for a route's `max_auth_age`.
pub(super) async fn step_up_form(
    app: &App,
    target: &RequestTarget,
    req: &Request<Incoming>,
) -> Result<Response<Body>, GateError> {
    let Some((token, _)) = credential(req.headers()) else {
        return Ok(see_other("/.wardgate/login"));
    };
    let Ok(principal) = session::validate(app, token, unix_now()).await else {
        return Ok(see_other("/.wardgate/login"));
    };
    let rd = flow::return_path(target);
    Ok(render_step_up(
        &rd,
        principal.sso.as_deref(),
        None,
        StatusCode::OK,
    ))
}

/// `POST /.wardgate/step-up`: check the code, refresh the session's authentication time.
pub(super) async fn step_up_submit(
    app: &App,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<Body>, GateError> {
    if !same_origin(req.headers(), &app.config.listen.public_url) {
        return Err(GateError::Forbidden("step-up form from another origin"));
    }
    let Some((token, _)) = credential(req.headers()) else {
        return Ok(see_other("/.wardgate/login"));
    };
    let Ok(principal) = session::validate(app, token, unix_now()).await else {
        return Ok(see_other("/.wardgate/login"));
    };
    let fields = form(req).await?;
    let rd = flow::safe_return(field(&fields, "rd"));
    if let Err(error) = flow::step_up(app, ctx, &principal, field(&fields, "code")).await {
        return step_failure(error, |message, status| {
            render_step_up(&rd, principal.sso.as_deref(), Some(message), status)
        });
    }
    Ok(see_other(&format!(
        "{}{}",
        app.config.listen.public_url, rd
    )))
}
