//! Every reason a request does not reach the backend, and the one place each maps to a status.
//!
//! The exhaustive `match` in [`GateError::status`] (no `_ =>`) means a new denial reason cannot
//! compile until someone decides its status; the table test below pins each mapping.

use http::StatusCode;

use super::normalize::PathError;

/// Who caused a failure; metrics and logs use the same label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The client sent something we refuse (4xx).
    Client,
    /// The backend failed (502/504).
    Upstream,
    /// Wardgate itself failed (500/503).
    Internal,
}

/// Why the gate answered instead of the backend.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// The request is malformed (missing or conflicting Host, bad target form).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The path could be read two ways.
    #[error("ambiguous path: {0}")]
    AmbiguousPath(#[from] PathError),
    /// No route matches host, path and method (default deny).
    #[error("no route")]
    NoRoute,
    /// A method Wardgate never forwards (`CONNECT`, `TRACE`).
    #[error("method not allowed: {0}")]
    MethodNotAllowed(&'static str),
    /// A protected route was requested without credentials.
    #[error("authentication required")]
    Unauthenticated,
    /// Credentials were sent but the token or its session did not verify.
    #[error("invalid session: {0}")]
    InvalidSession(String),
    /// A login attempt failed (any cause: the answer is the same for all).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Refused by a fixed check (CSRF origin check).
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// Refused by the route's policy; the rule and reason go to the audit record only.
    #[error("{reason}")]
    Denied {
        /// The deny rule that matched, if one did.
        rule: Option<crate::audit::Text>,
        /// Why.
        reason: String,
    },
    /// The session is older than the route's `max_auth_age`: re-enter a TOTP code.
    #[error("step-up required (max_age {0}s)")]
    StepUpRequired(u64),
    /// Rate limited or locked out; retry after this many seconds.
    #[error("too many requests (retry after {0}s)")]
    TooManyRequests(u64),
    /// A JSON endpoint was sent something else.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// The request body exceeds the route's `max_body`.
    #[error("request body too large")]
    BodyTooLarge,
    /// The client paused inside its request body for longer than `body_read_timeout`.
    #[error("request body too slow")]
    BodyTimeout,
    /// The upstream could not be reached.
    #[error("upstream unreachable: {0}")]
    UpstreamUnreachable(String),
    /// The upstream did not answer in time.
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// The upstream broke the exchange after it began.
    #[error("upstream failed: {0}")]
    UpstreamFailed(String),
    /// The state store (sessions, counters) cannot answer: fail closed.
    #[error("state store unavailable: {0}")]
    StateUnavailable(String),
    /// The audit trail cannot record a PHI access: fail closed.
    #[error("audit unavailable: {0}")]
    AuditUnavailable(String),
    /// A bug or resource problem inside Wardgate.
    #[error("internal error: {0}")]
    Internal(String),
}

// === impl GateError ===

impl GateError {
    /// The HTTP status answered to the client.
    pub fn status(&self) -> StatusCode {
        match self {
            GateError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GateError::AmbiguousPath(_) => StatusCode::BAD_REQUEST,
            GateError::NoRoute => StatusCode::NOT_FOUND,
            GateError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            GateError::Unauthenticated => StatusCode::UNAUTHORIZED,
            GateError::InvalidSession(_) => StatusCode::UNAUTHORIZED,
            GateError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            GateError::Forbidden(_) => StatusCode::FORBIDDEN,
            GateError::Denied { .. } => StatusCode::FORBIDDEN,
            GateError::StepUpRequired(_) => StatusCode::UNAUTHORIZED,
            GateError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            GateError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GateError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GateError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            GateError::UpstreamUnreachable(_) => StatusCode::BAD_GATEWAY,
            GateError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            GateError::UpstreamFailed(_) => StatusCode::BAD_GATEWAY,
            GateError::StateUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GateError::AuditUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GateError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Who caused it.
    pub fn blame(&self) -> Blame {
        match self.status().as_u16() {
            500 | 503 => Blame::Internal,
            502 | 504 => Blame::Upstream,
            _ => Blame::Client,
        }
    }

    /// The fixed error code in the client-visible JSON body (never the detailed cause).
    pub fn code(&self) -> &'static str {
        if matches!(self, GateError::InvalidCredentials) {
            return "invalid_credentials";
        }
        match self.status().as_u16() {
            400 => "bad_request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            405 => "method_not_allowed",
            408 => "request_timeout",
            413 => "payload_too_large",
            415 => "unsupported_media_type",
            429 => "too_many_requests",
            503 => "unavailable",
            502 => "bad_gateway",
            504 => "gateway_timeout",
            _ => "internal_error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_status_and_blame() {
        let table: Vec<(GateError, u16, Blame)> = vec![
            (GateError::BadRequest("x"), 400, Blame::Client),
            (
                GateError::AmbiguousPath(PathError::EncodedSlash),
                400,
                Blame::Client,
            ),
            (GateError::NoRoute, 404, Blame::Client),
            (GateError::MethodNotAllowed("TRACE"), 405, Blame::Client),
            (GateError::Unauthenticated, 401, Blame::Client),
            (GateError::InvalidSession("x".into()), 401, Blame::Client),
            (GateError::InvalidCredentials, 401, Blame::Client),
            (GateError::Forbidden("x"), 403, Blame::Client),
            (
                GateError::Denied {
                    rule: None,
                    reason: "x".into(),
                },
                403,
                Blame::Client,
            ),
            (GateError::StepUpRequired(60), 401, Blame::Client),
            (GateError::TooManyRequests(3), 429, Blame::Client),
            (GateError::UnsupportedMediaType, 415, Blame::Client),
            (
                GateError::StateUnavailable("x".into()),
                503,
                Blame::Internal,
            ),
            (
                GateError::AuditUnavailable("x".into()),
                503,
                Blame::Internal,
            ),
            (GateError::BodyTooLarge, 413, Blame::Client),
            (GateError::BodyTimeout, 408, Blame::Client),
            (
                GateError::UpstreamUnreachable("x".into()),
                502,
                Blame::Upstream,
            ),
            (GateError::UpstreamTimeout, 504, Blame::Upstream),
            (GateError::UpstreamFailed("x".into()), 502, Blame::Upstream),
            (GateError::Internal("x".into()), 500, Blame::Internal),
        ];
        for (error, status, blame) in table {
            assert_eq!(error.status().as_u16(), status, "{error}");
            assert_eq!(error.blame(), blame, "{error}");
            assert!(!error.code().is_empty());
        }
    }
}
