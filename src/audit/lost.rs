//! Audit records that could not be queued (queue and reserve full, or the writer stopped):
//! counted, logged when the loss begins, and reported in the trail itself by an `alert`
//! record, so a gap in the trail is always explained by the trail.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::record::{AuditRecord, Text};

/// How often, at most, the loss is reported (one alert per window, not one per batch).
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// The tally of lost records since the last report.
#[derive(Default)]
pub struct LostRecords {
    tally: Mutex<Tally>,
}

#[derive(Default)]
struct Tally {
    count: u64,
    since: Option<Text>,
    why: &'static str,
    by_event: BTreeMap<String, u64>,
    reported: Option<Instant>,
}

impl LostRecords {
    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts `record` as lost; `why` the first loss of a report window happened is reported.
    pub fn count(&self, record: &AuditRecord, why: &'static str) {
        let mut tally = self.tally();
        if tally.count == 0 {
            tracing::error!(event = %record.event, why, "audit record lost: {why}; the count will be written to the trail as an alert");
            tally.since = Some(record.ts.clone());
            tally.why = why;
        }
        tally.count += 1;
        *tally.by_event.entry(record.event.to_string()).or_default() += 1;
        metrics::counter!("wardgate_audit_records_lost_total").increment(1);
    }

    /// The `alert` record reporting the records lost since the last report, if any and if the
    /// last report is [`REPORT_EVERY`] old (`now`: whatever its age, as at shutdown).
    pub fn report(&self, now: bool) -> Option<AuditRecord> {
        let mut tally = self.tally();
        let recent = tally.reported.is_some_and(|at| at.elapsed() < REPORT_EVERY);
        if tally.count == 0 || (recent && !now) {
            return None;
        }
        let events: Vec<String> = tally
            .by_event
            .iter()
            .map(|(event, n)| format!("{event}: {n}"))
            .collect();
        let mut alert = AuditRecord::new("alert");
        alert.rule = Some("audit_records_lost".into());
        alert.reason = Some(
            format!(
                "{} audit record(s) could not be queued and are not in the trail ({}), the first at {}: {}",
                tally.count,
                events.join(", "),
                tally.since.as_deref().unwrap_or("?"),
                tally.why,
            )
            .into(),
        );
        tracing::error!(
            lost = tally.count,
            "audit records were lost; an alert is written to the trail"
        );
        *tally = Tally {
            reported: Some(Instant::now()),
            ..Tally::default()
        };
        Some(alert)
    }
}
