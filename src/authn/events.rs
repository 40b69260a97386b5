//! Security events (login, failures, lockout, enrollment, logout): emitted through this one
//! place so the audit trail can take them over without touching the callers. Until then they
//! are log lines on the `wardgate::security` target. Never a password, code or token.

/// Kinds of security event, named as in the audit record's `event` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Password and TOTP accepted, session created.
    Login,
    /// Wrong password, unknown or disabled user.
    LoginFailed,
    /// Wrong, malformed or replayed TOTP code.
    TotpFailed,
    /// Account or source address locked out / rate limited.
    Lockout,
    /// TOTP enrollment started or confirmed.
    Enroll,
    /// Session ended by the user.
    Logout,
}

impl Event {
    /// The audit `event` name.
    pub fn name(self) -> &'static str {
        match self {
            Event::Login => "login",
            Event::LoginFailed => "login_failed",
            Event::TotpFailed => "totp_failed",
            Event::Lockout => "lockout",
            Event::Enroll => "enroll",
            Event::Logout => "logout",
        }
    }
}

/// Records one security event.
pub fn emit(event: Event, user: &str, src_ip: &str, reason: &str) {
    match event {
        Event::Login | Event::Enroll | Event::Logout => {
            tracing::info!(target: "wardgate::security", event = event.name(), user, src_ip, reason, "security event")
        }
        Event::LoginFailed | Event::TotpFailed | Event::Lockout => {
            tracing::warn!(target: "wardgate::security", event = event.name(), user, src_ip, reason, "security event")
        }
    }
}

/// A session ended by timeout.
pub fn session_expired(user: &str, reason: &str) {
    tracing::info!(target: "wardgate::security", event = "session_closed", user, reason, "security event");
}
