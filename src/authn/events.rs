//! Security events (login, failures, lockout, enrollment, logout): emitted through this one
//! place: each becomes an audit record and a log line on the `wardgate::security` target.
//! Never a password, code or token.

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
    /// The second factor was proved again for a route's `max_auth_age`.
    StepUp,
    /// Signed in through an identity provider.
    SsoLogin,
    /// A single-sign-on login was refused (bad callback, token, or provider down).
    SsoFailed,
    /// An identity provider's back-channel logout ended sessions.
    BackchannelLogout,
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
            Event::StepUp => "step_up",
            Event::SsoLogin => "sso_login",
            Event::SsoFailed => "sso_failed",
            Event::BackchannelLogout => "backchannel_logout",
        }
    }
}

/// Records one security event in the audit trail and the log.
pub fn emit(app: &crate::app::App, event: Event, user: &str, src_ip: &str, reason: &str) {
    let mut record = crate::audit::AuditRecord::new(event.name());
    record.user = (user != "-").then(|| user.into());
    record.src_ip = Some(src_ip.into());
    record.reason = Some(reason.to_string().into());
    app.audit.submit_kept(record);
    match event {
        Event::Login
        | Event::Enroll
        | Event::Logout
        | Event::StepUp
        | Event::SsoLogin
        | Event::BackchannelLogout => {
            tracing::info!(target: "wardgate::security", event = event.name(), user, src_ip, reason, "security event")
        }
        Event::LoginFailed | Event::TotpFailed | Event::Lockout | Event::SsoFailed => {
            tracing::warn!(target: "wardgate::security", event = event.name(), user, src_ip, reason, "security event")
        }
    }
}

/// A session ended by timeout.
pub fn session_expired(app: &crate::app::App, user: &str, reason: &str) {
    let mut record = crate::audit::AuditRecord::new("session_closed");
    record.user = Some(user.into());
    record.reason = Some(reason.to_string().into());
    app.audit.submit_kept(record);
    tracing::info!(target: "wardgate::security", event = "session_closed", user, reason, "security event");
}
