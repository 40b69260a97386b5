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
use crate::audit::Text;
use crate::gate::error::GateError;
use crate::state::{SessionRecord, SsoLogin};

/// How long the state store keeps a session record past its lifetime.
const STORE_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// A caller whose session verified on this request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The account.
    pub user: Arc<User>,
    /// Session id.
    pub session_id: Text,
    /// The session as the audit trail names it (`session_hash` of the id, made once per token).
    pub audit_session: Text,
    /// When the factors were proved (Unix seconds).
    pub auth_time: u64,
    /// RFC 8176 methods used.
    pub amr: Arc<[String]>,
    /// When the session ends at the latest.
    pub expires_at: u64,
    /// The identity provider's login, for a single-sign-on session.
    pub sso: Option<Arc<SsoLogin>>,
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
            "provider": self.sso.as_ref().map(|sso| sso.provider.as_str()),
        })
    }
}

/// Random 256-bit identifier, base64url.
pub fn random_id() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `amr` shows two factors: Wardgate's TOTP (`otp`) or an identity provider's
/// multi-factor login (`mfa`).
pub fn two_factor(amr: &[String]) -> bool {
    amr.iter().any(|m| m == "otp" || m == "mfa")
}

/// Creates a session for `user` at `now`, whose factors were proved at `auth_time`, and returns
/// its token and lifetime in seconds. `sso` is the identity provider's login when the session
/// comes from single sign-on.
pub async fn create(
    app: &App,
    user: &User,
    amr: Vec<String>,
    source_ip: String,
    (now, auth_time): (u64, u64),
    sso: Option<Arc<SsoLogin>>,
) -> Result<(String, u64), GateError> {
    let lifetime = app.config.auth.max_lifetime.as_secs();
    let record = SessionRecord {
        id: Text::from(random_id()),
        user: Text::from(user.name.as_str()),
        auth_time,
        created: now,
        auth_ms: crate::state::unix_now_ms(),
        last_seen: now,
        amr: Arc::from(amr.as_slice()),
        source_ip: Text::from(source_ip),
        sso,
    };
    // The store keeps the record a minute past the lifetime, so the lifetime check (not the
    // store's expiry) ends it and live connections learn the precise reason.
    app.state
        .put_session(&record, app.config.auth.max_lifetime + STORE_GRACE)
        .await
        .map_err(|e| GateError::StateUnavailable(e.to_string()))?;
    let claims = SessionClaims {
        iss: app.config.listen.public_url.clone(),
        aud: SESSION_AUDIENCE.to_string(),
        sub: user.name.clone(),
        sid: record.id.to_string(),
        iat: now,
        nbf: now,
        exp: now + lifetime,
        auth_time,
        amr,
    };
    let token = app
        .session_keys
        .sign(&claims)
        .map_err(GateError::Internal)?;
    Ok((token, lifetime))
}

/// Why a session record no longer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Older than `max_lifetime`.
    Lifetime,
    /// No activity for `idle_timeout`.
    Idle,
    /// Opened without the second factor.
    NoSecondFactor,
    /// The account is gone from the users file.
    UserRemoved,
    /// The account is disabled.
    UserDisabled,
    /// Password changed or TOTP reset after the session began.
    CredentialsChanged,
}

impl Ended {
    /// In words, for logs and audit records.
    pub fn reason(self) -> &'static str {
        match self {
            Ended::Lifetime => "session lifetime over",
            Ended::Idle => "idle timeout",
            Ended::NoSecondFactor => "second factor missing",
            Ended::UserRemoved => "user removed",
            Ended::UserDisabled => "user disabled",
            Ended::CredentialsChanged => "credentials changed",
        }
    }
}

/// The checks every request and every live connection repeat on a session record.
/// `last_activity` is the latest traffic seen for the session (at least `last_seen`).
fn check_record(
    app: &App,
    record: &SessionRecord,
    now: u64,
    last_activity: u64,
) -> Result<Arc<User>, Ended> {
    let auth = &app.config.auth;
    // Milliseconds, so a short lifetime ends on time rather than up to a second early.
    let age_ms = crate::state::unix_now_ms().saturating_sub(record.auth_ms);
    if u128::from(age_ms) >= auth.max_lifetime.as_millis() {
        return Err(Ended::Lifetime);
    }
    if now.saturating_sub(last_activity.max(record.last_seen)) >= auth.idle_timeout.as_secs() {
        return Err(Ended::Idle);
    }
    if !two_factor(&record.amr) {
        return Err(Ended::NoSecondFactor);
    }
    let local = app.users.get(&record.user);
    // A single-sign-on user needs no local account, but one of the same name (which holds
    // the TOTP secret of a provider without MFA) can still be disabled or reset.
    if let Some(account) = &local {
        if account.disabled {
            return Err(Ended::UserDisabled);
        }
        if record.auth_ms < account.sessions_valid_after_ms {
            return Err(Ended::CredentialsChanged);
        }
    }
    match &record.sso {
        Some(sso) => Ok(Arc::clone(&sso.identity)),
        None => local.ok_or(Ended::UserRemoved),
    }
}

/// Ends a session whose time is up, on every replica.
async fn expire(app: &App, record: &SessionRecord, ended: Ended) {
    if matches!(ended, Ended::Lifetime | Ended::Idle) {
        let _ = app.state.revoke_session(&record.id).await;
        if ended == Ended::Idle {
            super::events::session_expired(app, &record.user, ended.reason());
        }
    }
}

fn principal(app: &App, user: Arc<User>, record: SessionRecord, audit_session: Text) -> Principal {
    Principal {
        user,
        session_id: record.id,
        audit_session,
        auth_time: record.auth_time,
        amr: record.amr,
        expires_at: record.created + app.config.auth.max_lifetime.as_secs(),
        sso: record.sso,
    }
}

/// Verifies `token` and its session record for this request.
pub async fn validate(app: &App, token: &str, now: u64) -> Result<Principal, GateError> {
    let refuse = |why: &str| GateError::InvalidSession(why.to_string());
    let verified = app
        .session_keys
        .verify(token, &app.config.listen.public_url)
        .map_err(|e| GateError::InvalidSession(e.to_string()))?;
    let claims = &verified.claims;
    let record = app
        .state
        .get_session(&claims.sid)
        .await
        .map_err(|e| GateError::StateUnavailable(e.to_string()))?
        .ok_or_else(|| refuse("session revoked or unknown"))?;
    if *record.user != *claims.sub {
        return Err(refuse("session belongs to another user"));
    }
    let user = match check_record(app, &record, now, record.last_seen) {
        Ok(user) => user,
        Err(ended) => {
            expire(app, &record, ended).await;
            return Err(refuse(ended.reason()));
        }
    };
    if now > record.last_seen {
        app.state
            .touch_session(&record.id, now)
            .await
            .map_err(|e| GateError::StateUnavailable(e.to_string()))?;
    }
    // The record was found under `sid`, so the token's audit name is the record's.
    Ok(principal(app, user, record, verified.audit_session))
}

/// Re-validates session `id` of `user` for a connection that stays open (no token at hand:
/// the connection proved it when it opened). Traffic on the connection up to `activity` (Unix
/// seconds) counts as use of the session, on every replica. `Err` is the reason to close.
pub async fn recheck(app: &App, id: &str, user: &str, activity: u64) -> Result<Principal, String> {
    let now = crate::state::unix_now();
    let record = match app.state.get_session(id).await {
        Err(_) => return Err("state store unavailable".into()),
        Ok(None) => return Err("session ended".into()),
        Ok(Some(record)) if *record.user != *user => return Err("session ended".into()),
        Ok(Some(record)) => record,
    };
    let user = match check_record(app, &record, now, activity) {
        Ok(user) => user,
        Err(ended) => {
            expire(app, &record, ended).await;
            return Err(ended.reason().into());
        }
    };
    if activity > record.last_seen && activity <= now {
        app.state
            .touch_session(&record.id, activity)
            .await
            .map_err(|_| "state store unavailable".to_string())?;
    }
    let audit_session = crate::audit::record::session_hash(&record.id);
    Ok(principal(app, user, record, audit_session))
}

/// Users in `before` whose sessions must end in `after`: removed, disabled, or whose password
/// or TOTP secret changed (`sessions_valid_after_ms` moved forward). Their sessions are then
/// revoked in the state store, so the change holds on every replica and in the inventory.
pub fn ended_by_account_changes(
    before: &[Arc<User>],
    after: &super::users::UserStore,
) -> Vec<String> {
    before
        .iter()
        .filter(|old| match after.get(&old.name) {
            None => true,
            Some(new) => {
                (new.disabled && !old.disabled)
                    || new.sessions_valid_after_ms > old.sessions_valid_after_ms
            }
        })
        .map(|old| old.name.clone())
        .collect()
}
