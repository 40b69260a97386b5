//! The bounded queue between requests and the audit writer thread, built to wake it rarely
//! and to stay bounded when records arrive faster than the disk takes them.
//!
//! A channel that wakes the writer for every record costs a futex wake-up and two context
//! switches per PHI request; under load that was the single largest cost of the full path.
//! Here a request only wakes the writer when the writer has said it is going to sleep, or when
//! the record is urgent (strict mode waits for it, or shutdown). Otherwise the writer, after
//! each batch, naps for [`GATHER`] and collects what arrived meanwhile: batched records may
//! wait up to `fsync_interval` for durability anyway, so nothing is promised later than before.
//!
//! Memory stays bounded whatever the load (the model is Linux auditd's backlog limit and
//! backlog wait time). Records enter in one of three ways:
//! - [`JobQueue::try_push`]: while fewer than `capacity` jobs wait (a PHI access is admitted
//!   only then; otherwise it is refused with 503);
//! - [`JobQueue::push_when_room`]: a refusal waits, asynchronously, up to a bound for room, so
//!   a flood of refused requests is slowed to the pace of the disk instead of piling up;
//! - [`JobQueue::push_kept`]: records that cannot wait (a response's completion, security
//!   events) may use a reserve of another `capacity` jobs.
//!
//! A record that finds even the reserve full is not queued: it is counted, the loss is logged
//! at once and counted in `wardgate_audit_records_lost_total`, and the writer writes an
//! `alert` record saying how many records of which events were lost (never silently).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use super::record::AuditRecord;
use super::writer::Job;

/// How long the busy writer waits to gather the next batch before it drains again.
const GATHER: Duration = Duration::from_millis(1);

/// Why a job was not queued (the job comes back).
pub enum PushError {
    /// At capacity.
    Full(Job),
    /// The writer has stopped.
    Closed(Job),
}

/// How often, at most, the writer reports lost records (one alert per window, not per batch).
const LOST_REPORT_EVERY: Duration = Duration::from_secs(1);

/// Records that could not be queued, until the writer reports them.
#[derive(Default)]
struct Lost {
    count: u64,
    since: Option<super::Text>,
    by_event: BTreeMap<String, u64>,
    reported: Option<std::time::Instant>,
}

/// Jobs waiting for the writer thread.
pub struct JobQueue {
    jobs: Mutex<VecDeque<Job>>,
    capacity: usize,
    writer: OnceLock<Thread>,
    writer_sleeping: AtomicBool,
    closed: AtomicBool,
    room: tokio::sync::Notify,
    waiting_for_room: AtomicUsize,
    lost: Mutex<Lost>,
}

impl JobQueue {
    /// A queue holding `capacity` jobs, and as many again for records that cannot wait.
    pub fn new(capacity: usize) -> Self {
        Self {
            jobs: Mutex::new(VecDeque::with_capacity(capacity.min(65_536))),
            capacity: capacity.max(1),
            writer: OnceLock::new(),
            writer_sleeping: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            room: tokio::sync::Notify::new(),
            waiting_for_room: AtomicUsize::new(0),
            lost: Mutex::new(Lost::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Job>> {
        self.jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `job` if fewer than `limit` jobs wait. `urgent` wakes the writer at once.
    fn push_below(&self, job: Job, limit: usize, urgent: bool) -> Result<(), PushError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PushError::Closed(job));
        }
        {
            let mut jobs = self.lock();
            if jobs.len() >= limit {
                return Err(PushError::Full(job));
            }
            jobs.push_back(job);
        }
        self.nudge(urgent);
        Ok(())
    }

    /// Queues `job` without blocking, within `capacity`. `urgent` wakes the writer at once.
    pub fn try_push(&self, job: Job, urgent: bool) -> Result<(), PushError> {
        self.push_below(job, self.capacity, urgent)
    }

    /// Queues a record that cannot wait, using the reserve if needed; beyond it the record is
    /// counted as lost (see the module doc).
    pub fn push_kept(&self, job: Job) {
        match self.push_below(job, self.capacity.saturating_mul(2), false) {
            Ok(()) => {}
            Err(PushError::Full(job)) => self.lose(&job, "the audit queue is full"),
            Err(PushError::Closed(job)) => self.lose(&job, "the audit writer has stopped"),
        }
    }

    /// Queues `job` once there is room within `capacity`, waiting up to `wait` for the writer
    /// to make some (`wait` zero: not at all); then it is kept as by [`Self::push_kept`].
    pub async fn push_when_room(&self, job: Job, wait: Duration) {
        let mut job = match self.try_push(job, false) {
            Ok(()) => return,
            Err(PushError::Full(job)) if !wait.is_zero() => job,
            Err(PushError::Full(job) | PushError::Closed(job)) => return self.push_kept(job),
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the attempt, so room made in between is not missed.
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            self.waiting_for_room.fetch_add(1, Ordering::AcqRel);
            let attempt = self.try_push(job, false);
            let waited = match &attempt {
                Err(PushError::Full(_)) => tokio::time::timeout_at(deadline, room).await.is_ok(),
                _ => false,
            };
            self.waiting_for_room.fetch_sub(1, Ordering::AcqRel);
            match attempt {
                Ok(()) => return,
                Err(PushError::Full(back)) if waited => job = back,
                Err(PushError::Full(back) | PushError::Closed(back)) => {
                    return self.push_kept(back)
                }
            }
        }
    }

    /// Queues the writer's stop order whatever the queue holds: it ends the writer.
    pub fn push_stop(&self, job: Job) -> Result<(), PushError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PushError::Closed(job));
        }
        self.lock().push_back(job);
        self.nudge(true);
        Ok(())
    }

    fn lose(&self, job: &Job, why: &str) {
        let Job::Record(record, _) = job else {
            return;
        };
        let event = record.event.to_string();
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        if lost.count == 0 {
            tracing::error!(event = %event, why, "audit record lost: {why}; the count will be written to the trail as an alert");
            lost.since = Some(record.ts.clone());
        }
        lost.count += 1;
        *lost.by_event.entry(event).or_default() += 1;
        metrics::counter!("wardgate_audit_records_lost_total").increment(1);
    }

    /// Writer side: the `alert` record reporting the records lost since the last report, if
    /// any and if the last report is [`LOST_REPORT_EVERY`] old (`now`: whatever its age).
    pub fn take_lost(&self, now: bool) -> Option<AuditRecord> {
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        let recent = lost
            .reported
            .is_some_and(|at| at.elapsed() < LOST_REPORT_EVERY);
        if lost.count == 0 || (recent && !now) {
            return None;
        }
        let events: Vec<String> = lost
            .by_event
            .iter()
            .map(|(event, n)| format!("{event}: {n}"))
            .collect();
        let mut alert = AuditRecord::new("alert");
        alert.rule = Some("audit_records_lost".into());
        alert.reason = Some(
            format!(
                "{} audit record(s) could not be queued and are not in the trail ({}), the first at {}: the audit queue was full",
                lost.count,
                events.join(", "),
                lost.since.as_deref().unwrap_or("?"),
            )
            .into(),
        );
        tracing::error!(
            lost = lost.count,
            "audit records were lost; an alert is written to the trail"
        );
        *lost = Lost {
            reported: Some(std::time::Instant::now()),
            ..Lost::default()
        };
        Some(alert)
    }

    fn nudge(&self, urgent: bool) {
        if urgent || self.writer_sleeping.swap(false, Ordering::AcqRel) {
            if let Some(writer) = self.writer.get() {
                writer.unpark();
            }
        }
    }

    /// Writer side: registers the calling thread as the one to wake.
    pub fn attach_writer(&self) {
        let _ = self.writer.set(std::thread::current());
    }

    /// Writer side: returns when jobs are queued, or after about `idle` without any.
    pub fn wait(&self, idle: Duration) {
        if !self.lock().is_empty() {
            return;
        }
        std::thread::park_timeout(GATHER);
        if !self.lock().is_empty() {
            return;
        }
        // Say we are going to sleep, then look once more: a job queued before the flag was
        // set is seen here, one queued after it finds the flag and unparks us.
        self.writer_sleeping.store(true, Ordering::Release);
        if self.lock().is_empty() {
            std::thread::park_timeout(idle);
        }
        self.writer_sleeping.store(false, Ordering::Release);
    }

    /// Writer side: moves up to `max` jobs into `into`.
    pub fn drain(&self, max: usize, into: &mut Vec<Job>) {
        let mut jobs = self.lock();
        let take = jobs.len().min(max);
        into.extend(jobs.drain(..take));
        drop(jobs);
        // One wake-up per freed place, in arrival order (not every waiter for every batch).
        let waiting = self.waiting_for_room.load(Ordering::Acquire);
        for _ in 0..take.min(waiting) {
            self.room.notify_one();
        }
    }

    /// Writer side: no more jobs will be taken.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.room.notify_waiters();
    }
}

impl std::fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobQueue")
            .field("capacity", &self.capacity)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}
