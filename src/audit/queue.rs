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

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use super::lost::LostRecords;
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

/// Jobs waiting for the writer thread.
pub struct JobQueue {
    jobs: Mutex<VecDeque<Job>>,
    capacity: usize,
    writer: OnceLock<Thread>,
    writer_sleeping: AtomicBool,
    closed: AtomicBool,
    room: tokio::sync::Notify,
    waiting_for_room: AtomicUsize,
    lost: LostRecords,
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
            lost: LostRecords::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Job>> {
        self.jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `job` if fewer than `limit` jobs wait. `urgent` wakes the writer at once.
    fn push_below(&self, job: Job, limit: usize, urgent: bool) -> Result<(), PushError> {
        {
            let mut jobs = self.lock();
            // Checked under the lock: `close_and_drain` leaves nothing behind it.
            if self.closed.load(Ordering::Acquire) {
                return Err(PushError::Closed(job));
            }
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
    /// Cancel-safe: a request dropped while it waits (client reset, shutdown) still leaves its
    /// record in the reserve.
    pub async fn push_when_room(&self, job: Job, wait: Duration) {
        let job = match self.try_push(job, false) {
            Ok(()) => return,
            Err(PushError::Full(job)) if !wait.is_zero() => job,
            Err(PushError::Full(job) | PushError::Closed(job)) => return self.push_kept(job),
        };
        let deadline = tokio::time::Instant::now() + wait;
        let mut waiter = Waiter {
            queue: self,
            job: Some(job),
            counted: false,
        };
        loop {
            // Registered before the attempt, so room made in between is not missed.
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            waiter.count(true);
            let Some(job) = waiter.job.take() else {
                return;
            };
            match self.try_push(job, false) {
                Ok(()) => return,
                Err(PushError::Full(job)) => waiter.job = Some(job),
                Err(PushError::Closed(job)) => {
                    waiter.job = Some(job);
                    return;
                }
            }
            let room_made = tokio::time::timeout_at(deadline, room).await.is_ok();
            waiter.count(false);
            if !room_made {
                return;
            }
        }
    }

    /// Queues the writer's stop order whatever the queue holds: it ends the writer.
    pub fn push_stop(&self, job: Job) -> Result<(), PushError> {
        {
            let mut jobs = self.lock();
            if self.closed.load(Ordering::Acquire) {
                return Err(PushError::Closed(job));
            }
            jobs.push_back(job);
        }
        self.nudge(true);
        Ok(())
    }

    fn lose(&self, job: &Job, why: &'static str) {
        if let Job::Record(record, _) = job {
            self.lost.count(record, why);
        }
    }

    /// Writer side: the `alert` record reporting records lost since the last report, if any
    /// (see [`LostRecords::report`]).
    pub fn take_lost(&self, now: bool) -> Option<AuditRecord> {
        self.lost.report(now)
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
        let room = self.capacity.saturating_sub(jobs.len());
        drop(jobs);
        // One wake-up per place within `capacity` (while the reserve is in use there is none),
        // not every waiter for every batch.
        let waiting = self.waiting_for_room.load(Ordering::Acquire);
        for _ in 0..room.min(waiting) {
            self.room.notify_one();
        }
    }

    /// Writer side, on its stop order: refuses every later job (they are counted as lost) and
    /// moves everything still queued into `into`, so nothing is left unread behind the stop.
    pub fn close_and_drain(&self, into: &mut Vec<Job>) {
        let mut jobs = self.lock();
        self.closed.store(true, Ordering::Release);
        into.extend(jobs.drain(..));
        drop(jobs);
        self.room.notify_waiters();
    }
}

/// A refusal's job while it waits for room (see [`JobQueue::push_when_room`]). Dropping it,
/// on any way out including the request's future being dropped, gives back its place in the
/// waiter count and puts a job it still holds into the reserve.
struct Waiter<'a> {
    queue: &'a JobQueue,
    job: Option<Job>,
    counted: bool,
}

impl Waiter<'_> {
    fn count(&mut self, waiting: bool) {
        if waiting != self.counted {
            if waiting {
                self.queue.waiting_for_room.fetch_add(1, Ordering::AcqRel);
            } else {
                self.queue.waiting_for_room.fetch_sub(1, Ordering::AcqRel);
            }
            self.counted = waiting;
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.count(false);
        if let Some(job) = self.job.take() {
            self.queue.push_kept(job);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(event: &'static str) -> Job {
        Job::Record(Box::new(AuditRecord::new(event)), None)
    }

    fn queued(queue: &JobQueue) -> usize {
        let mut jobs = Vec::new();
        queue.drain(usize::MAX, &mut jobs);
        jobs.len()
    }

    #[test]
    fn kept_records_use_the_reserve_then_are_counted_and_reported_once_a_second() {
        let queue = JobQueue::new(2);
        assert!(queue.try_push(record("access"), false).is_ok());
        assert!(queue.try_push(record("access"), false).is_ok());
        assert!(matches!(
            queue.try_push(record("access"), false),
            Err(PushError::Full(_))
        ));
        queue.push_kept(record("login"));
        queue.push_kept(record("login"));
        queue.push_kept(record("login_failed"));
        queue.push_kept(record("access"));
        queue.push_kept(record("access"));
        let alert = queue.take_lost(false).expect("an alert");
        assert_eq!(alert.event, "alert");
        assert_eq!(alert.rule.as_deref(), Some("audit_records_lost"));
        let reason = alert.reason.as_deref().unwrap_or_default();
        assert!(
            reason.starts_with("3 audit record(s)")
                && reason.contains("(access: 2, login_failed: 1)"),
            "{reason}"
        );
        assert_eq!(queued(&queue), 4, "queue and reserve");
        assert!(queue.take_lost(true).is_none(), "nothing new was lost");

        // Within a second of a report, the next loss waits for the following one (or a stop).
        queue.push_kept(record("access"));
        queue.push_kept(record("access"));
        queue.push_kept(record("access"));
        queue.push_kept(record("access"));
        queue.push_kept(record("access"));
        assert!(queue.take_lost(false).is_none());
        let alert = queue.take_lost(true).expect("reported at stop");
        assert!(alert
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("1 audit record(s)")));
    }

    /// A queue of one, full, and a refusal waiting for room in it.
    async fn full_queue_with_a_waiting_refusal(
    ) -> (std::sync::Arc<JobQueue>, tokio::task::JoinHandle<()>) {
        let queue = std::sync::Arc::new(JobQueue::new(1));
        assert!(queue.try_push(record("access"), false).is_ok());
        let waiting = {
            let queue = std::sync::Arc::clone(&queue);
            tokio::spawn(async move {
                queue
                    .push_when_room(record("access"), Duration::from_secs(5))
                    .await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "it waits while the queue is full");
        (queue, waiting)
    }

    #[tokio::test]
    async fn a_refusal_waits_for_room_and_gives_up_into_the_reserve() {
        let (queue, waiting) = full_queue_with_a_waiting_refusal().await;
        let mut jobs = Vec::new();
        queue.drain(1, &mut jobs);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("room wakes it")
            .expect("task");
        assert_eq!(queued(&queue), 1);

        // Full and no room made in time: the record goes to the reserve instead.
        assert!(queue.try_push(record("access"), false).is_ok());
        queue
            .push_when_room(record("access"), Duration::from_millis(20))
            .await;
        assert_eq!(queued(&queue), 2);
        assert!(queue.take_lost(true).is_none());
    }

    #[tokio::test]
    async fn a_refusal_dropped_while_it_waits_still_leaves_its_record() {
        let (queue, waiting) = full_queue_with_a_waiting_refusal().await;
        assert_eq!(queue.waiting_for_room.load(Ordering::Acquire), 1);
        waiting.abort();
        assert!(waiting.await.is_err_and(|e| e.is_cancelled()));
        assert_eq!(queue.waiting_for_room.load(Ordering::Acquire), 0);
        assert_eq!(
            queued(&queue),
            2,
            "the aborted refusal's record is in the reserve"
        );
    }

    #[test]
    fn nothing_is_left_behind_a_closed_queue() {
        let queue = JobQueue::new(4);
        assert!(queue.try_push(record("access"), false).is_ok());
        assert!(queue.try_push(record("login"), false).is_ok());
        let mut rest = Vec::new();
        queue.close_and_drain(&mut rest);
        assert_eq!(rest.len(), 2);
        assert!(matches!(
            queue.try_push(record("access"), false),
            Err(PushError::Closed(_))
        ));
        queue.push_kept(record("logout"));
        assert_eq!(queued(&queue), 0);
        let alert = queue
            .take_lost(true)
            .expect("the refused record is reported");
        assert!(alert
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("(logout: 1)")));
    }
}
