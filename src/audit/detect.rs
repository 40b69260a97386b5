//! Detection rules on the audit record stream: the "detection tools" of the telehealth
//! security guidance.
//!
//! Runs on the writer thread, so it sees every record in order without locks. Each rule fires
//! exactly when its threshold is reached within its window (not again until the window has
//! emptied): a burst of failed logins per account and per source address, a lockout, one
//! user touching more distinct patients than expected (snooping), and PHI access outside
//! the configured hours. An alert becomes an `alert` audit record, a warning log line, a
//! metric, and optionally a JSON POST to a webhook (sent by its own task, retried, never
//! blocking the writer or any request).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::record::{AuditRecord, Text};

/// `[detect]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectConfig {
    /// Failed logins of one account within `window` that raise an alert.
    pub failed_logins_per_account: usize,
    /// Failed logins from one address within `window` that raise an alert.
    pub failed_logins_per_ip: usize,
    /// Window for failed logins.
    pub window: Duration,
    /// Distinct patients one user may touch within `patient_window` before an alert.
    pub distinct_patients: usize,
    /// Window for distinct patients.
    pub patient_window: Duration,
    /// PHI access outside this UTC window raises an alert (a user's `work_hours` claim, if
    /// set, is used for that user instead).
    pub phi_hours: Option<(u16, u16)>,
}

/// Rule state.
#[derive(Debug)]
pub struct Detector {
    config: DetectConfig,
    by_account: HashMap<String, VecDeque<Instant>>,
    by_ip: HashMap<Text, VecDeque<Instant>>,
    /// user → patient → last access; only patients inside the window are kept, so memory
    /// stays proportional to distinct patients per user, not to request volume.
    patients: HashMap<Text, HashMap<Text, Instant>>,
    after_hours_alerted: HashMap<Text, Instant>,
    seen: u64,
}

fn alert(rule: &str, about: &AuditRecord, reason: String) -> AuditRecord {
    let mut record = AuditRecord::new("alert");
    record.rule = Some(rule.into());
    record.user = about.user.clone();
    record.src_ip = about.src_ip.clone();
    record.route = about.route.clone();
    record.patient_id = about.patient_id.clone();
    record.request_id = about.request_id.clone();
    record.reason = Some(reason.into());
    record
}

/// Pushes `now` and returns the count within `window`.
fn count(entries: &mut VecDeque<Instant>, now: Instant, window: Duration) -> usize {
    while entries
        .front()
        .is_some_and(|t| now.duration_since(*t) > window)
    {
        entries.pop_front();
    }
    entries.push_back(now);
    entries.len()
}

impl Detector {
    /// A detector with empty state.
    pub fn new(config: DetectConfig) -> Detector {
        Detector {
            config,
            by_account: HashMap::new(),
            by_ip: HashMap::new(),
            patients: HashMap::new(),
            after_hours_alerted: HashMap::new(),
            seen: 0,
        }
    }

    /// Looks at one written record; returns the alerts it raises.
    pub fn observe(&mut self, record: &AuditRecord) -> Vec<AuditRecord> {
        let now = Instant::now();
        self.seen += 1;
        if self.seen.is_multiple_of(10_000) {
            self.prune(now);
        }
        let mut alerts = Vec::new();
        match &*record.event {
            "login_failed" | "totp_failed" => {
                if let Some(user) = &record.user {
                    let n = count(
                        self.by_account.entry(user.to_lowercase()).or_default(),
                        now,
                        self.config.window,
                    );
                    if n == self.config.failed_logins_per_account {
                        alerts.push(alert(
                            "failed_logins_account",
                            record,
                            format!(
                                "{n} failed logins for account {user} within {}s",
                                self.config.window.as_secs()
                            ),
                        ));
                    }
                }
                if let Some(ip) = &record.src_ip {
                    let n = count(
                        self.by_ip.entry(ip.clone()).or_default(),
                        now,
                        self.config.window,
                    );
                    if n == self.config.failed_logins_per_ip {
                        alerts.push(alert(
                            "failed_logins_ip",
                            record,
                            format!(
                                "{n} failed logins from {ip} within {}s",
                                self.config.window.as_secs()
                            ),
                        ));
                    }
                }
            }
            "lockout" => alerts.push(alert(
                "lockout",
                record,
                format!("lockout: {}", record.reason.clone().unwrap_or_default()),
            )),
            "access" if record.decision.as_deref() == Some("allow") && record.status.is_none() => {
                if let (Some(user), Some(patient)) = (&record.user, &record.patient_id) {
                    let window = self.config.patient_window;
                    let seen = self.patients.entry(user.clone()).or_default();
                    seen.retain(|_, last| now.duration_since(*last) <= window);
                    let new_patient = seen.insert(patient.clone(), now).is_none();
                    let distinct = seen.len();
                    if new_patient && distinct == self.config.distinct_patients {
                        alerts.push(alert(
                            "distinct_patients",
                            record,
                            format!(
                                "{user} accessed {distinct} distinct patients within {}s",
                                window.as_secs()
                            ),
                        ));
                    }
                }
                let own_hours = record
                    .work_hours
                    .as_deref()
                    .and_then(crate::authz::policy::parse_hours);
                if let (Some((start, end)), Some(user)) =
                    (own_hours.or(self.config.phi_hours), &record.user)
                {
                    let minute = crate::authz::policy::Facts::minute_at(crate::state::unix_now());
                    let inside = if start < end {
                        (start..end).contains(&minute)
                    } else {
                        minute >= start || minute < end
                    };
                    let recently = self
                        .after_hours_alerted
                        .get(&**user)
                        .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(3600));
                    if !inside && !recently {
                        self.after_hours_alerted.insert(user.clone(), now);
                        alerts.push(alert(
                            "phi_outside_hours",
                            record,
                            format!("{user} accessed patient data outside the configured hours"),
                        ));
                    }
                }
            }
            _ => {}
        }
        alerts
    }

    fn prune(&mut self, now: Instant) {
        let window = self.config.window;
        self.by_account
            .retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) <= window));
        self.by_ip
            .retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) <= window));
        let patient_window = self.config.patient_window;
        self.patients.retain(|_, seen| {
            seen.retain(|_, last| now.duration_since(*last) <= patient_window);
            !seen.is_empty()
        });
        self.after_hours_alerted
            .retain(|_, t| now.duration_since(*t) < Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DetectConfig {
        DetectConfig {
            failed_logins_per_account: 3,
            failed_logins_per_ip: 5,
            window: Duration::from_secs(60),
            distinct_patients: 3,
            patient_window: Duration::from_secs(60),
            phi_hours: None,
        }
    }

    fn event(kind: &'static str, user: &str, ip: &str) -> AuditRecord {
        let mut record = AuditRecord::new(kind);
        record.user = Some(user.into());
        record.src_ip = Some(ip.into());
        record
    }

    #[test]
    fn rules_fire_exactly_at_their_thresholds() {
        let mut detector = Detector::new(config());
        let fired: Vec<usize> = (0..6)
            .map(|_| {
                detector
                    .observe(&event("login_failed", "alice", "10.0.0.1"))
                    .len()
            })
            .collect();
        assert_eq!(fired, vec![0, 0, 1, 0, 1, 0], "account at 3, address at 5");
        let mut access = |patient: &str| {
            let mut record = event("access", "doc", "10.0.0.2");
            record.decision = Some("allow".into());
            record.patient_id = Some(patient.into());
            detector.observe(&record)
        };
        assert!(access("1").is_empty());
        assert!(access("1").is_empty(), "the same patient again is not new");
        assert!(access("2").is_empty());
        let alerts = access("3");
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].rule.as_deref(), Some("distinct_patients"));
        assert!(access("4").is_empty(), "fires once, at the threshold");
    }

    #[test]
    fn memory_follows_distinct_patients_not_request_volume() {
        let mut detector = Detector::new(config());
        let mut record = event("access", "doc", "10.0.0.2");
        record.decision = Some("allow".into());
        record.patient_id = Some("1".into());
        for _ in 0..10_000 {
            detector.observe(&record);
        }
        assert_eq!(detector.patients.get("doc").map(HashMap::len), Some(1));
    }

    #[test]
    fn a_users_own_work_hours_decide_what_is_out_of_hours() {
        let mut detector = Detector::new(DetectConfig {
            phi_hours: None,
            ..config()
        });
        let minute = crate::authz::policy::Facts::minute_at(crate::state::unix_now());
        let window = |from: u16, to: u16| {
            format!(
                "{:02}:{:02}-{:02}:{:02}",
                (from / 60) % 24,
                from % 60,
                (to / 60) % 24,
                to % 60
            )
        };
        let mut access = |user: &str, hours: String| {
            let mut record = event("access", user, "10.0.0.3");
            record.decision = Some("allow".into());
            record.work_hours = Some(hours.into());
            detector.observe(&record)
        };
        assert!(
            access("day", window(minute + 1440 - 30, minute + 30)).is_empty(),
            "inside their hours"
        );
        let alerts = access("night", window(minute + 60, minute + 120));
        assert_eq!(
            alerts.first().and_then(|a| a.rule.as_deref()),
            Some("phi_outside_hours")
        );
        let written = serde_json::to_string(&alerts[0]).expect("json");
        assert!(
            !written.contains("work_hours"),
            "the claim is never written to the log"
        );
    }
}
