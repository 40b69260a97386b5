//! Stage 5, authorize: may this caller do this on this route — and the only place a
//! [`Permit`] is made.
//!
//! Forwarding requires a `&Permit`, and a `Permit` can only be built here, so no code path
//! can reach the backend without passing authorization. Public routes admit everyone;
//! protected routes evaluate their compiled policy (default deny, deny wins), then the
//! route's `max_auth_age` (step-up). On a `break_glass = true` route, a live emergency grant
//! of the caller's session admits a request no allow rule covers — never one a deny rule
//! refuses — and marks it for the audit trail.

use std::sync::Arc;

use crate::app::App;
use crate::audit::Text;
use crate::authn::Caller;
use crate::config::RouteConfig;
use crate::gate::context::ConnInfo;
use crate::gate::error::GateError;
use crate::gate::route::RouteMatch;

pub mod policy;
#[cfg(test)]
mod properties;

use policy::{Decision, Facts, Subject};

/// Proof that authorization allowed this request on this route.
#[derive(Debug)]
pub struct Permit {
    route: Arc<RouteConfig>,
    caller: Caller,
    rule: Option<Text>,
    reason: &'static str,
    break_glass: Option<String>,
}

impl Permit {
    /// The route the permit is for.
    pub fn route(&self) -> &RouteConfig {
        &self.route
    }

    /// The rule that allowed the request (`ROUTE/allow[INDEX]`, or `ROUTE/break-glass`).
    pub fn rule(&self) -> Option<&Text> {
        self.rule.as_ref()
    }

    /// Why the request was allowed, in words.
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The stated reason when the request rides on a break-glass grant.
    pub fn break_glass(&self) -> Option<&str> {
        self.break_glass.as_deref()
    }

    /// Who the permit was granted to.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }
}

/// The policy view of a caller.
pub fn subject(caller: &Caller) -> Subject<'_> {
    match caller {
        Caller::Anonymous => Subject::default(),
        Caller::Service(identity) => Subject {
            client_cert: Some(identity),
            ..Subject::default()
        },
        Caller::User(principal, identity) => Subject {
            user: Some(&principal.user.name),
            roles: &principal.user.roles,
            groups: &principal.user.groups,
            claims: Some(&principal.user.claims),
            amr: &principal.amr,
            client_cert: identity.as_deref(),
        },
    }
}

/// The reason of a live break-glass grant that `caller` may use on `route`, if any. Looked up
/// only on `break_glass = true` routes, so other routes pay nothing.
pub async fn grant_for(
    app: &App,
    route: &RouteConfig,
    caller: &Caller,
) -> Result<Option<String>, GateError> {
    let Caller::User(principal, _) = caller else {
        return Ok(None);
    };
    if !route.break_glass
        || !principal
            .user
            .roles
            .iter()
            .any(|r| app.config.break_glass_roles.contains(r))
    {
        return Ok(None);
    }
    app.state
        .get_grant(&principal.session_id, &route.name)
        .await
        .map_err(|e| GateError::StateUnavailable(e.to_string()))
}

/// Grants a permit, or refuses (403 with the deciding rule kept for the audit record).
pub fn authorize(
    matched: &RouteMatch,
    caller: Caller,
    conn: &ConnInfo,
    method: &http::Method,
    now: u64,
    grant: Option<String>,
) -> Result<Permit, GateError> {
    let route = &matched.route;
    let permit = |caller, rule: Option<Text>, reason, break_glass| Permit {
        route: Arc::clone(route),
        caller,
        rule,
        reason,
        break_glass,
    };
    if route.public {
        return Ok(permit(caller, None, "public route", None));
    }
    if matches!(caller, Caller::Anonymous) {
        return Err(GateError::Unauthenticated);
    }
    let facts = Facts {
        method,
        source: conn.peer.ip(),
        params: &matched.params,
        minute_of_day: Facts::minute_at(now),
    };
    let (rule, break_glass) = match route.policy.decide(&subject(&caller), &facts) {
        Decision::Allow { rule } => (rule, None),
        Decision::Deny { rule: None, .. } if grant.is_some() => {
            (Text::from(format!("{}/break-glass", route.name)), grant)
        }
        Decision::Deny { rule, reason } => return Err(GateError::Denied { rule, reason }),
    };
    if let (Some(max_age), Caller::User(principal, _)) = (route.max_auth_age, &caller) {
        if now.saturating_sub(principal.auth_time) > max_age.as_secs() {
            return Err(GateError::StepUpRequired(max_age.as_secs()));
        }
    }
    let reason = if break_glass.is_some() {
        "break-glass emergency access"
    } else {
        "allowed by rule"
    };
    Ok(permit(caller, Some(rule), reason, break_glass))
}
