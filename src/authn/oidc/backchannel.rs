//! OpenID Connect Back-Channel Logout 1.0: `POST /.wardgate/oidc/backchannel-logout`.
//!
//! When a user signs out at the hospital's identity provider (or an administrator ends their
//! session there), the provider POSTs a signed `logout_token` to Wardgate. A verified token
//! revokes the matching Wardgate sessions in the state store, so the revocation holds on every
//! replica at once and open WebSockets and streams of those sessions close (continuous
//! validation). The endpoint needs no cookie or Origin: the token's signature is the proof.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::Provider;
use crate::app::App;
use crate::authn::events::{emit, Event};
use crate::body::{self, Body};
use crate::gate::context::RequestCtx;
use crate::gate::error::GateError;
use crate::state::unix_now;

/// The `events` member every logout token carries.
const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// A logout token issued longer ago than this (plus the clock skew) is refused.
const MAX_TOKEN_AGE: u64 = 300;

/// Asymmetric algorithms accepted on logout tokens (the same list as for ID tokens).
const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

#[derive(Debug, Deserialize)]
struct LogoutClaims {
    iat: u64,
    #[serde(default)]
    events: HashMap<String, serde_json::Value>,
    sid: Option<String>,
    sub: Option<String>,
    nonce: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct UnverifiedIssuer {
    iss: Option<String>,
}

/// Receives a logout token; 200 when it verified (even if no session matched), 400 otherwise.
pub async fn receive(
    app: &App,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<Body>, GateError> {
    let ip = ctx.conn.peer_ip.to_string();
    if !crate::authn::portal::has_content_type(&req, "application/x-www-form-urlencoded") {
        return Err(GateError::UnsupportedMediaType);
    }
    let bytes = crate::authn::portal::read_body(req).await?;
    let token = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
        .ok()
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "logout_token"))
        .map(|(_, v)| v);
    let verified = match token {
        None => Err(("-".to_string(), "no logout_token".to_string())),
        Some(token) => verify(app, &token).await,
    };
    let (provider, claims) = match verified {
        Ok(found) => found,
        Err((provider, detail)) => {
            let reason = format!("provider {provider}: logout token refused: {detail}");
            emit(app, Event::SsoFailed, "-", &ip, &reason);
            return Ok(answer(StatusCode::BAD_REQUEST, Some("invalid_request")));
        }
    };
    let sessions = app
        .state
        .list_sessions(None)
        .await
        .map_err(|e| GateError::StateUnavailable(e.to_string()))?;
    let mut ended = Vec::new();
    for record in sessions {
        let Some(sso) = &record.sso else { continue };
        let same_sid = claims.sid.is_some() && sso.provider_sid == claims.sid;
        let same_sub = claims.sub.as_deref() == Some(sso.subject.as_str());
        let matches = sso.provider == provider
            && match (&claims.sid, &claims.sub) {
                (Some(_), Some(_)) => same_sid && same_sub,
                (Some(_), None) => same_sid,
                (None, _) => same_sub,
            };
        if matches {
            app.state
                .revoke_session(&record.id)
                .await
                .map_err(|e| GateError::StateUnavailable(e.to_string()))?;
            ended.push(record.user.to_string());
        }
    }
    ended.dedup();
    let user = ended.first().map_or("-", String::as_str);
    let reason = format!(
        "provider {provider}: {} session(s) ended by {}",
        ended.len(),
        if claims.sid.is_some() { "sid" } else { "sub" }
    );
    emit(app, Event::BackchannelLogout, user, &ip, &reason);
    Ok(answer(StatusCode::OK, None))
}

fn answer(status: StatusCode, error: Option<&str>) -> Response<Body> {
    let text = error.map_or_else(String::new, |e| {
        serde_json::json!({ "error": e }).to_string()
    });
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if error.is_some() {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    response
}

/// Verifies `token` against the provider whose issuer it names. `Err` is (provider, why).
async fn verify(app: &App, token: &str) -> Result<(String, LogoutClaims), (String, String)> {
    let issuer = token
        .split('.')
        .nth(1)
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|json| serde_json::from_slice::<UnverifiedIssuer>(&json).ok())
        .and_then(|claims| claims.iss)
        .ok_or_else(|| ("-".to_string(), "not a JWT with an issuer".to_string()))?;
    let provider = app
        .oidc
        .iter()
        .find(|p| p.config.issuer.trim_end_matches('/') == issuer.trim_end_matches('/'))
        .ok_or_else(|| {
            (
                "-".to_string(),
                "issued by no configured provider".to_string(),
            )
        })?;
    let name = provider.config.name.clone();
    let claims = verify_with(provider, token, &issuer)
        .await
        .map_err(|detail| (name.clone(), detail))?;
    Ok((name, claims))
}

async fn verify_with(
    provider: &Provider,
    token: &str,
    issuer: &str,
) -> Result<LogoutClaims, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| format!("header: {e}"))?;
    if !ALGORITHMS.contains(&header.alg) {
        return Err(format!("algorithm {:?} is not allowed", header.alg));
    }
    if header
        .typ
        .as_deref()
        .is_some_and(|t| !t.eq_ignore_ascii_case("logout+jwt") && !t.eq_ignore_ascii_case("JWT"))
    {
        return Err("typ is not logout+jwt".into());
    }
    let kid = header.kid.clone().ok_or("no kid")?;
    let mut found = provider.discovered().await.map_err(|e| e.to_string())?;
    if found.logout_keys.find(&kid).is_none() {
        found = provider
            .refresh_keys(&found)
            .await
            .ok_or("signed with an unknown key")?;
    }
    let jwk = found
        .logout_keys
        .find(&kid)
        .ok_or("signed with an unknown key")?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid}: {e}"))?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[&provider.config.client_id]);
    validation.leeway = provider.config.clock_skew.as_secs();
    validation.set_required_spec_claims(&["iss", "aud", "iat"]);
    let claims = jsonwebtoken::decode::<LogoutClaims>(token, &key, &validation)
        .map_err(|e| format!("{e}"))?
        .claims;
    if !claims.events.contains_key(LOGOUT_EVENT) {
        return Err("no back-channel logout event".into());
    }
    if claims.nonce.is_some() {
        return Err("a logout token must not carry a nonce".into());
    }
    if claims.sid.is_none() && claims.sub.is_none() {
        return Err("neither sid nor sub".into());
    }
    let now = unix_now();
    let skew = provider.config.clock_skew.as_secs();
    if claims.iat > now + skew {
        return Err("issued in the future: check the clocks of Wardgate and the provider".into());
    }
    if claims.iat + MAX_TOKEN_AGE + skew < now {
        return Err(format!("issued {}s ago", now - claims.iat));
    }
    Ok(claims)
}
