//! The two questions asked again for every live connection: does what admitted it (its
//! session, or its client certificate) still hold, and does the configuration in force still
//! let this caller reach this route?

use crate::app::App;
use crate::authn::{Caller, Principal};
use crate::gate::error::GateError;

use super::Opened;

/// Whether the current routes and policy still grant `opened` to the signed-in user
/// `principal` (whose session the caller has re-validated).
pub(super) async fn user(app: &App, principal: &Principal, opened: &Opened) -> Result<(), String> {
    let caller = Caller::User(
        principal.clone(),
        opened.conn.client_identity_under(app.client_trust),
    );
    route(app, caller, opened).await
}

/// Whether the connection's client certificate is still trusted under the configuration in
/// force, and the current routes and policy still grant `opened` to it.
pub(super) async fn service(app: &App, opened: &Opened) -> Result<(), String> {
    let Some(identity) = opened.conn.client_identity_under(app.client_trust) else {
        return Err("client certificate no longer trusted".into());
    };
    route(app, Caller::Service(identity), opened).await
}

/// Whether the current routes and policy still grant `opened` to `caller`. A step-up
/// requirement is not a reason to cut a call that was opened with fresh factors.
async fn route(app: &App, caller: Caller, opened: &Opened) -> Result<(), String> {
    let Some(matched) = app
        .routes
        .lookup(&opened.host, &opened.path, &opened.method)
    else {
        return Err("route removed".into());
    };
    if *matched.route.name != *opened.route {
        return Err("route changed".into());
    }
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
        "client certificate no longer trusted" => "certificate_untrusted",
        "route removed" | "route changed" | "policy no longer grants the route" => "policy",
        _ => "other",
    }
}
