//! Stage 5, authorize: may this caller use this route — and the only place a [`Permit`] is made.
//!
//! Forwarding requires a `&Permit`, and a `Permit` can only be built here, so no code path can
//! reach the backend without passing authorization: the type system enforces the pipeline.

use std::sync::Arc;

use crate::authn::Caller;
use crate::config::RouteConfig;
use crate::gate::error::GateError;
use crate::gate::route::RouteMatch;

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

    /// The rule that allowed the request (`ROUTE#INDEX`), if a rule did.
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

/// Grants a permit, or refuses. Default deny: only a public route admits an anonymous caller;
/// a protected route admits a caller with a verified two-factor session.
pub fn authorize(matched: &RouteMatch, caller: Caller) -> Result<Permit, GateError> {
    let (allowed, reason) = match &caller {
        Caller::Anonymous => (matched.route.public, "public route"),
        Caller::User(principal) => (
            principal.amr.iter().any(|m| m == "otp"),
            "signed in with password and TOTP",
        ),
    };
    if !allowed {
        return Err(GateError::Unauthenticated);
    }
    Ok(Permit {
        route: Arc::clone(&matched.route),
        caller,
        rule: None,
        reason,
    })
}
