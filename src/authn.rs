//! Stage 4, authenticate: who is calling.
//!
//! Runs after routing, for every request. Public routes need no identity. For protected
//! routes this is where sessions and tokens are verified; until that lands, every request to
//! a protected route is refused with 401 here, so nothing unauthenticated can be forwarded
//! (fail closed).

use crate::config::RouteConfig;
use crate::gate::error::GateError;

/// The proven identity of the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No credentials were needed: the route is public.
    Anonymous,
}

/// Returns the caller's identity, or `Unauthenticated` (401) for a protected route that the
/// request did not prove itself for.
pub fn authenticate(route: &RouteConfig) -> Result<Caller, GateError> {
    if route.public {
        Ok(Caller::Anonymous)
    } else {
        Err(GateError::Unauthenticated)
    }
}
