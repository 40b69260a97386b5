//! The login steps shared by the HTML pages and the JSON API: password, TOTP, session.
//!
//! Every failure of a step is the same `InvalidCredentials`, whatever the cause (unknown user,
//! wrong password, disabled account, wrong or replayed code), and an unknown user still costs
//! one argon2 verification against a dummy hash, so neither the answer nor its timing tells
//! an attacker which names exist.

use std::sync::Arc;

use crate::app::App;
use crate::authn::events::{emit, Event};
use crate::authn::totp::{self, TotpCheck};
use crate::authn::users::User;
use crate::authn::{lockout, session};
use crate::gate::context::RequestCtx;
use crate::gate::error::GateError;
use crate::state::unix_now;

/// Longest username accepted at the login endpoints.
const MAX_USERNAME: usize = 128;

fn source_ip(ctx: &RequestCtx) -> String {
    ctx.conn.peer_ip.to_string()
}

/// Step 1: rate limits, lockout, then the password. Returns the account on success.
pub async fn password_step(
    app: &App,
    ctx: &RequestCtx,
    username: &str,
    password: &str,
) -> Result<Arc<User>, GateError> {
    let ip = source_ip(ctx);
    let now = unix_now();
    lockout::check_ip(app, &ip).await?;
    if username.is_empty()
        || username.len() > MAX_USERNAME
        || password.len() > 4 * crate::authn::password::MAX_PASSWORD_LEN
    {
        emit(
            app,
            Event::LoginFailed,
            "-",
            &ip,
            "malformed username or password",
        );
        return Err(GateError::InvalidCredentials);
    }
    lockout::check_account(app, username, now).await?;
    let user = app.users.get(username);
    let phc = user.as_ref().map(|u| u.password.clone());
    let verified = app.passwords.verify(password.to_string(), phc).await;
    match user {
        Some(user) if verified && !user.disabled => Ok(user),
        other => {
            let reason = match other {
                None => "unknown user",
                Some(u) if u.disabled => "account disabled",
                Some(_) => "wrong password",
            };
            lockout::record_failure(app, username, &ip, now).await?;
            emit(app, Event::LoginFailed, username, &ip, reason);
            Err(GateError::InvalidCredentials)
        }
    }
}

/// Step 2: the TOTP code, spent once. Confirms a pending enrollment on success.
pub async fn totp_step(
    app: &App,
    ctx: &RequestCtx,
    user: &User,
    code: &str,
) -> Result<(), GateError> {
    let ip = source_ip(ctx);
    let now = unix_now();
    lockout::check_ip(app, &ip).await?;
    lockout::check_account(app, &user.name, now).await?;
    let secret = app
        .users
        .totp_secret(user)
        .map_err(|e| GateError::Internal(e.to_string()))?;
    let check = match &secret {
        Some(secret) => totp::verify(app.state.as_ref(), &user.name, secret, code, now)
            .await
            .map_err(|e| GateError::StateUnavailable(e.to_string()))?,
        None => TotpCheck::Rejected,
    };
    if check == TotpCheck::Rejected {
        lockout::record_failure(app, &user.name, &ip, now).await?;
        let reason = if secret.is_some() {
            "wrong or reused code"
        } else {
            "not enrolled"
        };
        emit(app, Event::TotpFailed, &user.name, &ip, reason);
        return Err(GateError::InvalidCredentials);
    }
    if !user.totp_confirmed {
        app.users
            .update(&user.name, |u| u.totp_confirmed = true)
            .map_err(|e| GateError::Internal(e.to_string()))?;
        emit(
            app,
            Event::Enroll,
            &user.name,
            &ip,
            "TOTP enrollment confirmed",
        );
    }
    Ok(())
}

/// Step 3: both factors proved: clear failures and open a session. Returns (token, lifetime).
pub async fn open_session(
    app: &App,
    ctx: &RequestCtx,
    user: &User,
) -> Result<(String, u64), GateError> {
    let ip = source_ip(ctx);
    lockout::record_success(app, &user.name).await?;
    let session = session::create(
        app,
        user,
        vec!["pwd".into(), "otp".into()],
        ip.clone(),
        (unix_now(), unix_now()),
        None,
    )
    .await?;
    emit(app, Event::Login, &user.name, &ip, "password and TOTP");
    Ok(session)
}

/// Step 3 of a single-sign-on login whose provider showed no second factor: the provider
/// proved the first factor, Wardgate's TOTP step the second.
pub async fn open_sso_session(
    app: &App,
    ctx: &RequestCtx,
    sso: Arc<crate::state::SsoLogin>,
) -> Result<(String, u64), GateError> {
    let ip = source_ip(ctx);
    lockout::record_success(app, &sso.identity.name).await?;
    let reason = format!("provider {} and Wardgate TOTP", sso.provider);
    let session = session::create(
        app,
        &Arc::clone(&sso.identity),
        vec!["fed".into(), "otp".into()],
        ip.clone(),
        (unix_now(), unix_now()),
        Some(Arc::clone(&sso)),
    )
    .await?;
    emit(app, Event::SsoLogin, &sso.identity.name, &ip, &reason);
    Ok(session)
}

/// Step-up: proves the second factor again and moves the session's authentication time to
/// now, which it returns. A single-sign-on identity holds no TOTP secret: a local account of the
/// same name may (sign-on users can also step up by signing in again at their provider).
pub async fn step_up(
    app: &App,
    ctx: &RequestCtx,
    principal: &crate::authn::Principal,
    code: &str,
) -> Result<u64, GateError> {
    let account = match &principal.sso {
        Some(_) => app.users.get(&principal.user.name),
        None => Some(Arc::clone(&principal.user)),
    };
    let account = account.ok_or(GateError::InvalidCredentials)?;
    totp_step(app, ctx, &account, code).await?;
    let now = unix_now();
    app.state
        .set_auth_time(&principal.session_id, now)
        .await
        .map_err(|e| GateError::StateUnavailable(e.to_string()))?;
    emit(
        app,
        Event::StepUp,
        &principal.user.name,
        &source_ip(ctx),
        "TOTP re-entered",
    );
    Ok(now)
}

/// Gives `user` a new unconfirmed TOTP secret unless one is pending already; returns the
/// otpauth URI and the base32 secret. Refused (401, as a failed login) for a confirmed secret
/// or one given out of band ([`User::enrolls_at_sign_in`]): those are never shown again.
pub fn start_enrollment(
    app: &App,
    ctx: &RequestCtx,
    user: &User,
) -> Result<(String, String), GateError> {
    if !user.enrolls_at_sign_in() {
        return Err(GateError::InvalidCredentials);
    }
    let internal = |e: crate::authn::users::UserError| GateError::Internal(e.to_string());
    let secret = match app.users.totp_secret(user).map_err(internal)? {
        Some(secret) => secret,
        None => {
            let secret = totp::new_secret();
            let sealed = app.users.seal(&user.name, &secret);
            app.users
                .update(&user.name, |u| {
                    u.totp_secret = Some(sealed);
                    u.totp_confirmed = false;
                    u.totp_provisioned = false;
                })
                .map_err(internal)?;
            emit(
                app,
                Event::Enroll,
                &user.name,
                &source_ip(ctx),
                "TOTP enrollment started",
            );
            secret
        }
    };
    Ok((
        totp::otpauth_uri(&secret, &user.name),
        totp::base32(&secret),
    ))
}

/// The request's `rd` parameter as a safe return path (`/` when absent or doubtful).
pub fn return_path(target: &crate::gate::target::RequestTarget) -> String {
    safe_return(&target.query_param("rd").unwrap_or_default())
}

/// A return path that can only lead back to this origin; anything doubtful becomes `/`.
pub fn safe_return(requested: &str) -> String {
    let decoded: String = percent_decode(requested);
    let doubtful = |p: &str| {
        !p.starts_with('/')
            || p.starts_with("//")
            || p.contains('\\')
            || p.chars().any(|c| c.is_control())
            || p.starts_with("/.wardgate/login")
    };
    if requested.len() > 2048
        || doubtful(requested)
        || doubtful(&decoded)
        || requested.parse::<http::uri::PathAndQuery>().is_err()
    {
        return "/".to_string();
    }
    requested.to_string()
}

fn percent_decode(text: &str) -> String {
    let mut current = text.to_string();
    // Decode repeatedly so %252F-style layering cannot hide a second slash.
    for _ in 0..3 {
        let next: String = serde_urlencoded::from_str::<Vec<(String, String)>>(&format!(
            "x={}",
            current.replace('&', "%26").replace('+', "%2B")
        ))
        .ok()
        .and_then(|mut pairs| pairs.pop())
        .map(|(_, value)| value)
        .unwrap_or_default();
        if next == current {
            break;
        }
        current = next;
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_paths_stay_on_this_origin() {
        for good in ["/", "/patients/1/records?x=1", "/a%20b"] {
            assert_eq!(safe_return(good), good);
        }
        for bad in [
            "//evil.example",
            "https://evil.example",
            "https:evil.example",
            "/\\evil.example",
            "\\\\evil",
            "/%2Fevil.example",
            "/%2fevil.example",
            "%2F%2Fevil.example",
            "/%5Cevil.example",
            "/%252F%252Fevil",
            "javascript:alert(1)",
            "/\t/evil",
            "",
            "evil",
            "/.wardgate/login?rd=//evil",
        ] {
            assert_eq!(safe_return(bad), "/", "{bad}");
        }
    }
}
