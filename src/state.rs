//! Shared state: what must hold across requests (and, with Redis, across replicas).
//!
//! Sessions and their revocation, the last TOTP step each user spent, failure counters and
//! lockouts, rate-limit windows, and half-finished logins. One trait, so the in-memory store of
//! a single clinic proxy and the Redis store of a hospital deployment are interchangeable. Every
//! method can fail with [`StateError`]; callers treat that as "deny" (fail closed).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::audit::Text;

pub mod memory;
pub mod redis_store;

/// The state store is unreachable or broken.
#[derive(Debug, Clone, thiserror::Error)]
#[error("state store unavailable: {0}")]
pub struct StateError(pub String);

/// A server-side session: the signed token is only a reference to this record.
///
/// Its text fields are shared (`Arc`): every request clones the record out of the store, and
/// a clone is then a few reference counts instead of one allocation per field.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionRecord {
    /// Random session id (the token's `sid`).
    pub id: Text,
    /// Username.
    pub user: Text,
    /// When the user proved the factors (seconds since the Unix epoch).
    pub auth_time: u64,
    /// When the session was created.
    pub created: u64,
    /// Login time in milliseconds, compared with `User::sessions_valid_after_ms`.
    pub auth_ms: u64,
    /// Last request seen.
    pub last_seen: u64,
    /// Authentication methods (RFC 8176): `pwd`, `otp`.
    pub amr: Arc<[String]>,
    /// Source IP at login.
    pub source_ip: Text,
    /// Set when the session was opened through an identity provider (single sign-on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sso: Option<std::sync::Arc<SsoLogin>>,
}

/// What an identity provider asserted for a single-sign-on session. The identity (roles,
/// groups, claims mapped from the provider's ID token) is what policies see; the provider's
/// `sub` and `sid` let a back-channel logout find the session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SsoLogin {
    /// `[[oidc.providers]] name`.
    pub provider: String,
    /// The provider's `sub`.
    pub subject: String,
    /// The provider's session id (`sid`), when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_sid: Option<String>,
    /// The account as the provider describes it (no password, no TOTP secret).
    pub identity: std::sync::Arc<crate::authn::users::User>,
}

/// A single-sign-on login between the redirect to the provider and its callback. Bound to the
/// browser by a cookie holding the key it is stored under; spent on first use.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SsoFlow {
    /// Provider name.
    pub provider: String,
    /// The `state` sent to the provider.
    pub csrf_state: String,
    /// The `nonce` the ID token must carry.
    pub nonce: String,
    /// PKCE verifier (S256).
    pub pkce_verifier: String,
    /// Same-origin path to return to.
    pub return_to: String,
}

/// A login that passed the password step and waits for its TOTP code (browser flow).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingLogin {
    /// Username.
    pub user: String,
    /// Same-origin path to return to after login.
    pub return_to: String,
    /// A single-sign-on login whose provider showed no second factor: Wardgate's TOTP step
    /// completes it with this identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sso: Option<std::sync::Arc<SsoLogin>>,
}

/// Failure counter of one key (an account name or a source address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Failures {
    /// Consecutive failures.
    pub count: u32,
    /// Locked until this time (seconds since the Unix epoch), 0 if not locked.
    pub locked_until: u64,
}

/// Exponential back-off after repeated failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockPolicy {
    /// Failures allowed before back-off starts.
    pub free_failures: u32,
    /// First lock, in seconds; doubles with each further failure.
    pub base_secs: u64,
    /// Longest back-off lock, in seconds.
    pub max_secs: u64,
    /// Consecutive failures after which the account is locked for a day (NIST: at most 100).
    pub hard_limit: u32,
}

impl LockPolicy {
    /// Lock duration in seconds after `count` consecutive failures.
    pub fn lock_for(&self, count: u32) -> u64 {
        if count >= self.hard_limit {
            return 24 * 3600;
        }
        if count < self.free_failures {
            return 0;
        }
        let doublings = (count - self.free_failures).min(20);
        self.base_secs
            .saturating_mul(1u64 << doublings)
            .min(self.max_secs)
    }
}

/// The shared-state operations Wardgate needs. Implementations must make
/// `use_totp_step`, `add_failure` and `hit_rate_limit` atomic.
#[async_trait::async_trait]
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// Whether the store answered its last health check (`/readyz` reports it).
    fn is_healthy(&self) -> bool {
        true
    }
    /// Stores a new session that lives at most `ttl`.
    async fn put_session(&self, session: &SessionRecord, ttl: Duration) -> Result<(), StateError>;
    /// Looks a session up; `None` if it never existed, expired or was revoked.
    async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StateError>;
    /// Step-up: records that the factors were proved again at `auth_time`.
    async fn set_auth_time(&self, id: &str, auth_time: u64) -> Result<(), StateError>;
    /// Records activity on a session.
    async fn touch_session(&self, id: &str, now: u64) -> Result<(), StateError>;
    /// Revokes one session. Returns whether it existed.
    async fn revoke_session(&self, id: &str) -> Result<bool, StateError>;
    /// Revokes every session of `user`; returns how many.
    async fn revoke_user(&self, user: &str) -> Result<usize, StateError>;
    /// Lists sessions, optionally of one user.
    async fn list_sessions(&self, user: Option<&str>) -> Result<Vec<SessionRecord>, StateError>;
    /// Spends TOTP time step `step` for `user`: true only if it is later than any step spent
    /// before (so each code works once).
    async fn use_totp_step(&self, user: &str, step: u64) -> Result<bool, StateError>;
    /// Current failures of `key`.
    async fn failures(&self, key: &str) -> Result<Failures, StateError>;
    /// Counts one failure and applies `policy`'s lock for the new count; returns the new state.
    async fn add_failure(
        &self,
        key: &str,
        now: u64,
        policy: LockPolicy,
    ) -> Result<Failures, StateError>;
    /// Clears the failures of `key` (after a success).
    async fn clear_failures(&self, key: &str) -> Result<(), StateError>;
    /// Counts a hit in the fixed window of `key`; `Err(retry_after)` in seconds when over `limit`.
    async fn hit_rate_limit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Result<Result<(), u64>, StateError>;
    /// Grants break-glass access to `route` for session `id` until `ttl` passes.
    async fn put_grant(
        &self,
        id: &str,
        route: &str,
        reason: &str,
        ttl: Duration,
    ) -> Result<(), StateError>;
    /// The reason of a live break-glass grant, if any.
    async fn get_grant(&self, id: &str, route: &str) -> Result<Option<String>, StateError>;
    /// Stores a half-finished login for `ttl`.
    async fn put_pending(
        &self,
        id: &str,
        pending: &PendingLogin,
        ttl: Duration,
    ) -> Result<(), StateError>;
    /// Reads a half-finished login.
    async fn get_pending(&self, id: &str) -> Result<Option<PendingLogin>, StateError>;
    /// Removes a half-finished login.
    async fn drop_pending(&self, id: &str) -> Result<(), StateError>;
    /// Stores a single-sign-on login waiting for the provider's callback, for `ttl`.
    async fn put_sso_flow(&self, id: &str, flow: &SsoFlow, ttl: Duration)
        -> Result<(), StateError>;
    /// Reads and removes a single-sign-on login (each is used once: a replayed callback
    /// finds nothing).
    async fn take_sso_flow(&self, id: &str) -> Result<Option<SsoFlow>, StateError>;
}

/// Milliseconds since the Unix epoch.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
