//! Abuse resistance for the login endpoints: per-source-IP rate limit and per-account lockout
//! with exponential back-off.
//!
//! Counters are keyed by the *submitted* username, whether or not such a user exists, so an
//! unknown name locks exactly like a real one and lockout reveals nothing. Back-off (defaults,
//! `[login]`): the first 5 failures cost nothing; then each failure locks the account for 30 s,
//! doubling up to one hour; at 100 consecutive failures (the NIST SP 800-63B ceiling) the
//! account stays locked for a day.

use std::time::Duration;

use crate::app::App;
use crate::gate::error::GateError;

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
                app,
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
        .add_failure(&account_key(name), now, app.config.auth.lock_policy)
        .await
        .map_err(state_error)?;
    if failures.locked_until > now {
        super::events::emit(
            app,
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
    use crate::state::LockPolicy;

    #[test]
    fn back_off_doubles_caps_and_hard_stops_at_100() {
        let policy = LockPolicy {
            free_failures: 5,
            base_secs: 30,
            max_secs: 3600,
            hard_limit: 100,
        };
        assert_eq!((1..5).map(|n| policy.lock_for(n)).sum::<u64>(), 0);
        assert_eq!(policy.lock_for(5), 30);
        assert_eq!(policy.lock_for(6), 60);
        assert_eq!(policy.lock_for(10), 960);
        assert_eq!(policy.lock_for(20), 3600);
        assert_eq!(policy.lock_for(99), 3600);
        assert_eq!(policy.lock_for(100), 86_400);
    }
}
