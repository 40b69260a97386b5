//! The completion record of an access that stays open after its response head (a WebSocket
//! tunnel), held by the tunnel and written when it ends. If the tunnel task is dropped first
//! (its connection gone, or shutdown dropping the serving runtimes, `server/workers.rs`), the
//! `Drop` here writes it, saying so.

use std::sync::Arc;
use std::time::Instant;

use super::{AuditRecord, Auditor};

/// One open access's completion record, written by [`OpenAccess::complete`] or, failing that,
/// by `Drop`.
#[derive(Debug)]
pub struct OpenAccess {
    auditor: Arc<Auditor>,
    held: Option<(AuditRecord, Instant)>,
}

impl OpenAccess {
    /// Holds `record` for an access that began at `started`.
    pub fn hold(auditor: &Arc<Auditor>, record: AuditRecord, started: Instant) -> OpenAccess {
        OpenAccess {
            auditor: Arc::clone(auditor),
            held: Some((record, started)),
        }
    }

    /// Writes the completion (latency set), `finish` saying how the access ended.
    pub fn complete(mut self, finish: impl FnOnce(&mut AuditRecord)) {
        self.write(finish);
    }

    fn write(&mut self, finish: impl FnOnce(&mut AuditRecord)) {
        if let Some((mut record, started)) = self.held.take() {
            record.latency_ms = Some(millis(started));
            finish(&mut record);
            self.auditor.submit_kept(record);
        }
    }
}

impl Drop for OpenAccess {
    fn drop(&mut self) {
        let reason = self
            .auditor
            .ended_early("cut off before it ended", "still open at shutdown");
        self.write(|record| record.reason = Some(reason.into()));
    }
}

/// Milliseconds since `started`, to the microsecond.
pub(crate) fn millis(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1e6).round() / 1000.0
}
