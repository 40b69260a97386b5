//! The two questions asked again for every live connection: does its session still hold, and
//! does the configuration in force still let this user reach this route?

use crate::app::App;
use crate::authn::{Caller, Principal};
use crate::gate::error::GateError;

use super::Opened;

/// Whether the current routes and policy still grant `opened` to `principal`. A step-up
/// requirement is not a reason to cut a call that was opened with fresh factors.
pub(super) async fn route(app: &App, principal: &Principal, opened: &Opened) -> Result<(), String> {
    let Some(matched) = app
        .routes
        .lookup(&opened.host, &opened.path, &opened.method)
    else {
        return Err("route removed".into());
    };
    if *matched.route.name != *opened.route {
        return Err("route changed".into());
    }
    let caller = Caller::User(
        principal.clone(),
        opened.conn.client_identity_under(app.client_trust),
    );
    let grant = crate::authz::grant_for(app, &matched.route, &caller)
        .await
        .map_err(|_| "state store unavailable".to_string())?;
    let now = crate::state::unix_now();
    match crate::authz::authorize(&matched, caller, &opened.conn, &opened.method, now, grant) {
        Ok(_) | Err(GateError::StepUpRequired(_)) => Ok(()),
        Err(_) => Err("policy no longer grants the route".into()),
    }
}

/// A bounded label for the closures metric.
pub(super) fn reason_label(reason: &str) -> &'static str {
    match reason {
        "session ended" => "session_ended",
        "idle timeout" => "idle_timeout",
        "session lifetime over" => "lifetime",
        "user disabled" | "user removed" => "user_disabled",
        "credentials changed" => "credentials_changed",
        "state store unavailable" => "state_unavailable",
        "route removed" | "route changed" | "policy no longer grants the route" => "policy",
        _ => "other",
    }
}
