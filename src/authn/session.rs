//! Sessions: created after password + TOTP, checked again on every request.
//!
//! The token proves *which* session a request claims; the server-side record decides whether
//! that session is still good. So logout, revocation, idle timeout (HIPAA automatic logoff)
//! and the absolute lifetime (AAL2 re-authentication) all take effect on the very next
//! request, whatever the token's own expiry says.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;

use super::token::{SessionClaims, SESSION_AUDIENCE};
use super::users::User;
use crate::app::App;
use crate::gate::error::GateError;
use crate::state::SessionRecord;

/// A caller whose session verified on this request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The account.
    pub user: Arc<User>,
    /// Session id.
    pub session_id: String,
    /// When the factors were proved (Unix seconds).
    pub auth_time: u64,
    /// RFC 8176 methods used.
    pub amr: Vec<String>,
    /// When the session ends at the latest.
    pub expires_at: u64,
}

impl Principal {
    /// The `/.wardgate/session` document.
    pub fn to_json(&self) -> serde_json::Value {
        let claims: BTreeMap<&String, &String> = self.user.claims.iter().collect();
        serde_json::json!({
            "user": self.user.name,
            "display_name": self.user.display_name,
            "roles": self.user.roles,
            "groups": self.user.groups,
            "claims": claims,
            "auth_time": self.auth_time,
            "amr": self.amr,
            "expires_at": self.expires_at,
        })
    }
}

/// Random 256-bit identifier, base64url.
pub fn random_id() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Creates a session for `user` and returns its token and lifetime in seconds.
pub async fn create(
    app: &App,
    user: &User,
    amr: Vec<String>,
    source_ip: String,
    now: u64,
) -> Result<(String, u64), GateError> {
    let lifetime = app.config.auth.max_lifetime.as_secs();
    let record = SessionRecord {
        id: random_id(),
        user: user.name.clone(),
        auth_time: now,
        created: now,
        auth_ms: crate::state::unix_now_ms(),
        last_seen: now,
        amr: amr.clone(),
        source_ip,
    };
    app.state
        .put_session(&record, app.config.auth.max_lifetime)
        .await
        .map_err(|e| GateError::StateUnavailable(e.to_string()))?;
    let claims = SessionClaims {
        iss: app.config.listen.public_url.clone(),
        aud: SESSION_AUDIENCE.to_string(),
        sub: user.name.clone(),
        sid: record.id,
        iat: now,
        nbf: now,
        exp: now + lifetime,
        auth_time: now,
        amr,
    };
    let token = app
        .session_keys
        .sign(&claims)
        .map_err(GateError::Internal)?;
    Ok((token, lifetime))
}

/// Verifies `token` and its session record for this request.
pub async fn validate(app: &App, token: &str, now: u64) -> Result<Principal, GateError> {
    let refuse = |why: &str| GateError::InvalidSession(why.to_string());
    let claims = app
        .session_keys
        .verify(token, &app.config.listen.public_url)
        .map_err(|e| GateError::InvalidSession(e.to_string()))?;
    let record = app
        .state
        .get_session(&claims.sid)
        .await
        .map_err(|e| GateError::StateUnavailable(e.to_string()))?
        .ok_or_else(|| refuse("session revoked or unknown"))?;
    if record.user != claims.sub {
        return Err(refuse("session belongs to another user"));
    }
    let auth = &app.config.auth;
    if now.saturating_sub(record.created) >= auth.max_lifetime.as_secs() {
        let _ = app.state.revoke_session(&record.id).await;
        return Err(refuse("session lifetime over"));
    }
    if now.saturating_sub(record.last_seen) >= auth.idle_timeout.as_secs() {
        let _ = app.state.revoke_session(&record.id).await;
        super::events::session_expired(app, &record.user, "idle timeout");
        return Err(refuse("idle timeout"));
    }
    if !record.amr.iter().any(|m| m == "otp") {
        return Err(refuse("second factor missing"));
    }
    let user = app
        .users
        .get(&record.user)
        .ok_or_else(|| refuse("user removed"))?;
    if user.disabled || record.auth_ms < user.sessions_valid_after_ms {
        return Err(refuse("user disabled or credentials changed"));
    }
    if now > record.last_seen {
        app.state
            .touch_session(&record.id, now)
            .await
            .map_err(|e| GateError::StateUnavailable(e.to_string()))?;
    }
    Ok(Principal {
        user,
        session_id: record.id,
        auth_time: record.auth_time,
        amr: record.amr,
        expires_at: record.created + auth.max_lifetime.as_secs(),
    })
}
