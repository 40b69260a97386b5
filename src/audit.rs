//! Stage 6, audit: a PHI access is forwarded only once it can be recorded.
//!
//! The tamper-evident audit writer is its own issue. Until a sink exists, `admit` refuses
//! every PHI request with 503 (fail closed: never forward a PHI access unrecorded), while
//! non-PHI traffic passes.

use crate::authz::Permit;
use crate::gate::error::GateError;

/// Proof that the access was recorded (or needs no record).
#[derive(Debug)]
pub struct AuditTicket(());

/// Records the access under `permit`, or refuses it.
pub fn admit(permit: &Permit) -> Result<AuditTicket, GateError> {
    if permit.route().phi {
        return Err(GateError::AuditUnavailable(
            "no audit sink configured".into(),
        ));
    }
    Ok(AuditTicket(()))
}
