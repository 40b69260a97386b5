//! Accesses that stay open after their response head (WebSocket tunnels). Their completion
//! records wait here rather than in the tunnel task alone. At shutdown the serving runtimes are
//! dropped, which drops each tunnel and writes its completion ("still open at shutdown"); a
//! serving thread that does not stop in time never drops its tasks, so [`super::Auditor::stop`]
//! also writes whatever is left here, before `audit_stop`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::{AuditRecord, Auditor};

/// Completion records of open accesses, by id, with when each request began.
#[derive(Debug, Default)]
pub struct OpenAccesses {
    records: Mutex<HashMap<u64, (AuditRecord, Instant)>>,
    next: AtomicU64,
}

impl OpenAccesses {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, (AuditRecord, Instant)>> {
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every record still held, completed as open at shutdown.
    pub(super) fn take_all(&self) -> Vec<AuditRecord> {
        self.lock()
            .drain()
            .map(|(_, (mut record, started))| {
                record.latency_ms = Some(millis(started));
                record.reason = Some("still open at shutdown".into());
                record
            })
            .collect()
    }
}

/// One open access's completion record, held by the auditor until [`OpenAccess::complete`]
/// writes it (or shutdown does, or this handle's `Drop`, saying it was cut off).
#[derive(Debug)]
pub struct OpenAccess {
    auditor: Arc<Auditor>,
    id: u64,
}

impl OpenAccess {
    /// Holds `record` for an access that began at `started`.
    pub fn hold(auditor: &Arc<Auditor>, record: AuditRecord, started: Instant) -> OpenAccess {
        let id = auditor.open.next.fetch_add(1, Ordering::Relaxed);
        auditor.open.lock().insert(id, (record, started));
        OpenAccess {
            auditor: Arc::clone(auditor),
            id,
        }
    }

    /// Writes the completion (latency set), `finish` saying how the access ended. Nothing if
    /// shutdown already wrote it.
    pub fn complete(self, finish: impl FnOnce(&mut AuditRecord)) {
        self.write(finish);
    }

    fn write(&self, finish: impl FnOnce(&mut AuditRecord)) {
        let held = self.auditor.open.lock().remove(&self.id);
        if let Some((mut record, started)) = held {
            record.latency_ms = Some(millis(started));
            finish(&mut record);
            self.auditor.submit_kept(record);
        }
    }
}

impl Drop for OpenAccess {
    fn drop(&mut self) {
        let reason = if self.auditor.is_cutting_off() {
            "still open at shutdown"
        } else {
            "cut off before it ended"
        };
        self.write(|record| record.reason = Some(reason.into()));
    }
}

/// Milliseconds since `started`, to the microsecond.
pub(super) fn millis(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1e6).round() / 1000.0
}
