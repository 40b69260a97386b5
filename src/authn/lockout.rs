//! Abuse resistance for the login endpoints: per-source-IP rate limit and per-account lockout
//! with exponential back-off.
//!
//! Counters are keyed by the *submitted* username, whether or not such a user exists, so an
//! unknown name locks exactly like a real one and lockout reveals nothing. Back-off: the first
//! [`FREE_FAILURES`] failures cost nothing; then each failure locks the account for 30 s,
//! doubling up to one hour; at 100 consecutive failures (the NIST SP 800-63B ceiling) the
//! account stays locked for a day.

use std::time::Duration;

use crate::app::App;
use crate::gate::error::GateError;

/// Failures allowed before back-off starts.
pub const FREE_FAILURES: u32 = 5;
/// Consecutive failures after which the account is locked for a day.
pub const HARD_LIMIT: u32 = 100;

/// Lock duration in seconds after `count` consecutive failures.
pub fn lock_for(count: u32) -> u64 {
    if count >= HARD_LIMIT {
        return 24 * 3600;
    }
    if count < FREE_FAILURES {
        return 0;
    }
    let doublings = (count - FREE_FAILURES).min(7);
    (30u64 << doublings).min(3600)
}

fn account_key(name: &str) -> String {
    format!("acct:{}", name.to_lowercase())
}

fn state_error(err: crate::state::StateError) -> GateError {
    GateError::StateUnavailable(err.to_string())
}

/// Counts a login-endpoint hit from `ip`; 429 once over `[login] ip_limit` per minute.
pub async fn check_ip(app: &App, ip: &str) -> Result<(), GateError> {
    let limit = app.config.auth.ip_limit;
    match app
        .state
        .hit_rate_limit(&format!("ip:{ip}"), limit, Duration::from_secs(60))
        .await
        .map_err(state_error)?
    {
        Ok(()) => Ok(()),
        Err(retry_after) => {
            super::events::emit(
                super::events::Event::Lockout,
                "-",
                ip,
                "source address rate limited",
            );
            Err(GateError::TooManyRequests(retry_after))
        }
    }
}

/// 429 while the account is locked.
pub async fn check_account(app: &App, name: &str, now: u64) -> Result<(), GateError> {
    let failures = app
        .state
        .failures(&account_key(name))
        .await
        .map_err(state_error)?;
    if failures.locked_until > now {
        return Err(GateError::TooManyRequests(failures.locked_until - now));
    }
    Ok(())
}

/// Counts a failure against `name`.
pub async fn record_failure(app: &App, name: &str, ip: &str, now: u64) -> Result<(), GateError> {
    let failures = app
        .state
        .add_failure(&account_key(name), now, lock_for)
        .await
        .map_err(state_error)?;
    if failures.locked_until > now && failures.count >= FREE_FAILURES {
        super::events::emit(
            super::events::Event::Lockout,
            name,
            ip,
            &format!("{} consecutive failures", failures.count),
        );
    }
    Ok(())
}

/// Clears the failures of `name` after a full login.
pub async fn record_success(app: &App, name: &str) -> Result<(), GateError> {
    app.state
        .clear_failures(&account_key(name))
        .await
        .map_err(state_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_caps_and_hard_stops_at_100() {
        assert_eq!((1..FREE_FAILURES).map(lock_for).sum::<u64>(), 0);
        assert_eq!(lock_for(5), 30);
        assert_eq!(lock_for(6), 60);
        assert_eq!(lock_for(10), 960);
        assert_eq!(lock_for(20), 3600);
        assert_eq!(lock_for(99), 3600);
        assert_eq!(lock_for(100), 86_400);
    }
}
