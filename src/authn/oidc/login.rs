//! The authorization code flow: `/.wardgate/oidc/NAME/start` and `/.wardgate/oidc/callback`.
//!
//! Start stores `state`, `nonce` and the PKCE verifier under a random key and gives the browser
//! that key in a cookie, so only the browser that began a login can finish it, once. The
//! callback spends that record, exchanges the code, validates the ID token (signature with
//! [`super::ALLOWED_ALGS`], `iss`, `aud`, `azp`, `exp`, `iat`, `nonce`), maps the identity, and opens
//! the same kind of Wardgate session a local login does. When the provider's `amr`/`acr` show
//! no second factor, the login continues at Wardgate's own TOTP step instead.

use std::sync::Arc;
use std::time::Duration;

use http::header;
use http::{Response, StatusCode};
use openidconnect::core::{CoreAuthPrompt, CoreAuthenticationFlow};
use openidconnect::{CsrfToken, Nonce, PkceCodeChallenge, Scope};
use subtle::ConstantTimeEq;

use super::{identity, Provider};
use crate::app::App;
use crate::authn::events::{emit, Event};
use crate::authn::portal::{flow, notice, pages, set_cookie, set_lax_cookie, PENDING_COOKIE};
use crate::authn::{cookie, session, SESSION_COOKIE};
use crate::body::Body;
use crate::gate::context::RequestCtx;
use crate::gate::error::GateError;
use crate::gate::target::RequestTarget;
use crate::state::{unix_now, PendingLogin, SsoFlow, SsoLogin};

/// Cookie naming the sign-on in progress. `SameSite=Lax`: the provider's redirect back is a
/// cross-site navigation, on which a `Strict` cookie would not be sent.
pub const FLOW_COOKIE: &str = "__Host-wardgate-sso";
/// How long a user may take at the provider.
const FLOW_TTL: Duration = Duration::from_secs(600);

/// A refused sign-on: the status and message the user sees; the detail goes to the audit.
pub(super) struct Refusal {
    status: StatusCode,
    message: &'static str,
    detail: String,
}

pub(super) fn refuse(
    status: StatusCode,
    message: &'static str,
    detail: impl Into<String>,
) -> Refusal {
    Refusal {
        status,
        message,
        detail: detail.into(),
    }
}

pub(super) const TRY_AGAIN: &str = "Sign-in through your organization failed. Please start again.";

/// `GET /.wardgate/oidc/NAME/start?rd=PATH`.
pub async fn start(
    app: &App,
    ctx: &RequestCtx,
    target: &RequestTarget,
    name: &str,
) -> Result<Response<Body>, GateError> {
    let provider = app.oidc.get(name).ok_or(GateError::NoRoute)?;
    let ip = ctx.conn.peer_ip.to_string();
    crate::authn::lockout::check_ip(app, &ip).await?;
    let found = match provider.discovered().await {
        Ok(found) => found,
        Err(error) => {
            emit(app, Event::SsoFailed, "-", &ip, &error.to_string());
            return Ok(notice::message_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in unavailable",
                &format!(
                    "{} cannot be reached right now, so sign-in through it is unavailable. \
                     Try again in a few minutes; local sign-in still works.",
                    provider.config.display_name
                ),
            ));
        }
    };
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let client = provider.client(&found);
    let mut request = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge);
    for scope in &provider.config.scopes {
        request = request.add_scope(Scope::new(scope.clone()));
    }
    if target.query_param("reauth").as_deref() == Some("1") {
        // Step-up: the provider must authenticate the user now, not reuse its session.
        request = request
            .add_prompt(CoreAuthPrompt::Login)
            .set_max_age(Duration::ZERO);
    }
    let (url, csrf_state, nonce) = request.url();
    let flow_id = session::random_id();
    let record = SsoFlow {
        provider: provider.config.name.clone(),
        csrf_state: csrf_state.secret().clone(),
        nonce: nonce.secret().clone(),
        pkce_verifier: verifier.secret().clone(),
        return_to: flow::return_path(target),
    };
    app.state
        .put_sso_flow(&flow_id, &record, FLOW_TTL)
        .await
        .map_err(|e| GateError::StateUnavailable(e.to_string()))?;
    let mut response = pages::see_other(url.as_str());
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_lax_cookie(FLOW_COOKIE, &flow_id, FLOW_TTL.as_secs()),
    );
    Ok(response)
}

/// `GET /.wardgate/oidc/callback?code=…&state=…`.
pub async fn callback(
    app: &App,
    ctx: &RequestCtx,
    target: &RequestTarget,
    headers: &http::HeaderMap,
) -> Result<Response<Body>, GateError> {
    let ip = ctx.conn.peer_ip.to_string();
    let flow = match cookie(headers, FLOW_COOKIE) {
        Some(id) => app
            .state
            .take_sso_flow(id)
            .await
            .map_err(|e| GateError::StateUnavailable(e.to_string()))?,
        None => None,
    };
    let provider = flow.as_ref().and_then(|f| app.oidc.get(&f.provider));
    let name = flow.as_ref().map_or("-", |f| f.provider.as_str());
    let outcome = match (flow.as_ref(), provider) {
        (Some(flow), Some(provider)) => finish(app, ctx, target, provider, flow).await,
        _ => Err(refuse(
            StatusCode::BAD_REQUEST,
            "This sign-in link has expired or was already used. Please start again.",
            "no sign-on in progress (cookie missing, expired or already used)",
        )),
    };
    let mut response = match outcome {
        Ok(response) => response,
        Err(refusal) => {
            let user = "-";
            let reason = format!("provider {name}: {}", refusal.detail);
            emit(app, Event::SsoFailed, user, &ip, &reason);
            notice::message_page(refusal.status, "Sign-in failed", refusal.message)
        }
    };
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_lax_cookie(FLOW_COOKIE, "", 0));
    Ok(response)
}

async fn finish(
    app: &App,
    ctx: &RequestCtx,
    target: &RequestTarget,
    provider: &Provider,
    flow: &SsoFlow,
) -> Result<Response<Body>, Refusal> {
    if let Some(error) = target.query_param("error") {
        let error: String = error
            .chars()
            .filter(char::is_ascii_graphic)
            .take(64)
            .collect();
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            TRY_AGAIN,
            format!("the provider answered error={error}"),
        ));
    }
    let state = target.query_param("state").unwrap_or_default();
    if !bool::from(state.as_bytes().ct_eq(flow.csrf_state.as_bytes())) {
        return Err(refuse(StatusCode::BAD_REQUEST, TRY_AGAIN, "state mismatch"));
    }
    let code = target
        .query_param("code")
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, TRY_AGAIN, "no code"))?;
    let unavailable = |e: super::ProviderError| {
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "Your organization's sign-in service cannot be reached right now. Please try again.",
            e.to_string(),
        )
    };
    let found = provider.discovered().await.map_err(unavailable)?;
    let tokens = super::verify::exchange(provider, &found, code, flow).await?;
    let claims = super::verify::verified_claims(provider, found, &tokens, flow).await?;
    let mapped = identity::map(&provider.config, &claims)
        .map_err(|detail| refuse(StatusCode::FORBIDDEN, TRY_AGAIN, detail))?;
    open(app, ctx, provider, flow, mapped).await
}

/// Opens the session, or sends the user to Wardgate's TOTP step when the provider showed no
/// second factor.
async fn open(
    app: &App,
    ctx: &RequestCtx,
    provider: &Provider,
    flow: &SsoFlow,
    mapped: identity::Mapped,
) -> Result<Response<Body>, Refusal> {
    let ip = ctx.conn.peer_ip.to_string();
    let name = mapped.user.name.clone();
    let local = app.users.get(&name);
    if local.as_ref().is_some_and(|u| u.disabled) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "Your account is disabled. Please contact your IT service desk.",
            format!("{name}: account disabled in Wardgate"),
        ));
    }
    let sso = Arc::new(SsoLogin {
        provider: provider.config.name.clone(),
        subject: mapped.subject,
        provider_sid: mapped.provider_sid,
        identity: Arc::new(mapped.user),
    });
    let store_error =
        |e: GateError| refuse(StatusCode::SERVICE_UNAVAILABLE, TRY_AGAIN, e.to_string());
    if mapped.second_factor {
        // The provider's `auth_time` (when it last checked the factors), not ours: a route's
        // `max_auth_age` must not be met by a provider session that is hours old.
        let now = unix_now();
        // Without `auth_time` (optional unless `max_age` was asked, and left out by some
        // providers) nothing says when the factors were checked: 0, so a route's step-up asks
        // for a fresh sign-in (sent with `max_age=0`, which makes `auth_time` required).
        let auth_time = mapped.auth_time.filter(|t| *t <= now).unwrap_or(0);
        let (token, lifetime) = session::create(
            app,
            &sso.identity,
            vec!["fed".into(), "mfa".into()],
            ip.clone(),
            (now, auth_time),
            Some(Arc::clone(&sso)),
        )
        .await
        .map_err(store_error)?;
        let reason = format!("provider {}; amr {}", sso.provider, mapped.amr.join(","));
        emit(app, Event::SsoLogin, &name, &ip, &reason);
        let mut response = notice::continue_to(app, &flow.return_to);
        response.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(SESSION_COOKIE, &token, lifetime),
        );
        return Ok(response);
    }
    // Only a secret the account holder confirmed, or one handed out out of band: a secret a
    // local sign-in has just shown (not yet confirmed) must not reach whoever the provider
    // names the same.
    let Some(account) = local.filter(|u| u.totp_secret.is_some() && !u.enrolls_at_sign_in()) else {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "Your organization's sign-in did not confirm a second factor, and you have no \
             Wardgate authenticator set up. Please contact your IT service desk.",
            format!("{name}: no second factor from the provider and no Wardgate TOTP"),
        ));
    };
    let pending_id = session::random_id();
    let pending = PendingLogin {
        user: account.name.clone(),
        return_to: flow.return_to.clone(),
        sso: Some(sso),
    };
    app.state
        .put_pending(&pending_id, &pending, pages::PENDING_TTL)
        .await
        .map_err(|e| store_error(GateError::StateUnavailable(e.to_string())))?;
    let mut response = notice::continue_to(app, "/.wardgate/login/totp");
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(PENDING_COOKIE, &pending_id, pages::PENDING_TTL.as_secs()),
    );
    Ok(response)
}

/// The `end_session_endpoint` to send a single-sign-on user to after Wardgate's own logout
/// (RP-initiated logout), when the provider has one.
pub async fn end_session_url(app: &App, sso: &SsoLogin) -> Option<String> {
    let provider = app.oidc.get(&sso.provider)?;
    let found = provider.discovered().await.ok()?;
    let endpoint = found
        .metadata
        .additional_metadata()
        .end_session_endpoint
        .clone()?;
    let request = openidconnect::LogoutRequest::from(endpoint)
        .set_client_id(openidconnect::ClientId::new(
            provider.config.client_id.clone(),
        ))
        .set_post_logout_redirect_uri(
            openidconnect::PostLogoutRedirectUrl::new(format!(
                "{}/.wardgate/login",
                app.config.listen.public_url
            ))
            .ok()?,
        );
    Some(request.http_get_url().to_string())
}
