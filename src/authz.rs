//! Stage 5, authorize: may this caller do this on this route — and the only place a
//! [`Permit`] is made.
//!
//! Forwarding requires a `&Permit`, and a `Permit` can only be built here, so no code path
//! can reach the backend without passing authorization. Public routes admit everyone;
//! protected routes evaluate their compiled policy (default deny, deny wins), then the
//! route's `max_auth_age` (step-up).

use std::sync::Arc;

use crate::authn::Caller;
use crate::config::RouteConfig;
use crate::gate::context::ConnInfo;
use crate::gate::error::GateError;
use crate::gate::route::RouteMatch;

pub mod policy;

use policy::{Decision, Facts, Subject};

/// Proof that authorization allowed this request on this route.
#[derive(Debug)]
pub struct Permit {
    route: Arc<RouteConfig>,
    caller: Caller,
    rule: Option<String>,
    reason: &'static str,
}

impl Permit {
    /// The route the permit is for.
    pub fn route(&self) -> &RouteConfig {
        &self.route
    }

    /// The rule that allowed the request (`ROUTE/allow[INDEX]`), if a rule did.
    pub fn rule(&self) -> Option<&str> {
        self.rule.as_deref()
    }

    /// Why the request was allowed, in words.
    pub fn reason(&self) -> &str {
        self.reason
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

/// Grants a permit, or refuses (403 with the deciding rule kept for the audit record).
pub fn authorize(
    matched: &RouteMatch,
    caller: Caller,
    conn: &ConnInfo,
    method: &http::Method,
    now: u64,
) -> Result<Permit, GateError> {
    let route = &matched.route;
    if route.public {
        return Ok(Permit {
            route: Arc::clone(route),
            caller,
            rule: None,
            reason: "public route",
        });
    }
    if matches!(caller, Caller::Anonymous) {
        return Err(GateError::Unauthenticated);
    }
    let facts = Facts {
        method,
        source: conn.peer.ip(),
        params: &matched.params,
    };
    match route.policy.decide(&subject(&caller), &facts) {
        Decision::Deny { rule, reason } => Err(GateError::Denied { rule, reason }),
        Decision::Allow { rule } => {
            if let (Some(max_age), Caller::User(principal, _)) = (route.max_auth_age, &caller) {
                if now.saturating_sub(principal.auth_time) > max_age.as_secs() {
                    return Err(GateError::StepUpRequired(max_age.as_secs()));
                }
            }
            Ok(Permit {
                route: Arc::clone(route),
                caller,
                rule: Some(rule),
                reason: "allowed by rule",
            })
        }
    }
}
