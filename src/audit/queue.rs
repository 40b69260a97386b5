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
//! - [`JobQueue::push_when_room`]: a refusal waits, asynchronously, up to a bound for room in
//!   the lower half of the queue, so a flood of refused requests is slowed to the pace of the
//!   disk instead of piling up, and cannot take the upper half from admitted PHI accesses;
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
    held_by_writer: AtomicUsize,
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
            held_by_writer: AtomicUsize::new(0),
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

    /// How many jobs may wait before refusals wait too: half the queue, so a flood of refused
    /// requests leaves the other half to admitted PHI accesses.
    fn refusal_limit(&self) -> usize {
        (self.capacity / 2).max(1)
    }

    /// Queues `job` once there is room in the lower half of the queue, waiting up to `wait`
    /// for the writer to make some (`wait` zero: not at all); then it is kept as by
    /// [`Self::push_kept`]. Cancel-safe: a request dropped while it waits (client reset,
    /// shutdown) still leaves its record in the reserve.
    pub async fn push_when_room(&self, job: Job, wait: Duration) {
        let job = match self.push_below(job, self.refusal_limit(), false) {
            Ok(()) => return,
            Err(PushError::Full(job)) if !wait.is_zero() => job,
            Err(PushError::Full(job) | PushError::Closed(job)) => return self.push_kept(job),
        };
        let deadline = tokio::time::Instant::now() + wait;
        let mut waiter = Waiter::new(self, job);
        loop {
            // Registered before the attempt, so room made in between is not missed.
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let Some(job) = waiter.job.take() else {
                return;
            };
            match self.push_below(job, self.refusal_limit(), false) {
                Ok(()) => return,
                Err(PushError::Full(job)) => waiter.job = Some(job),
                Err(PushError::Closed(job)) => {
                    waiter.job = Some(job);
                    return;
                }
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return;
            }
        }
    }

    /// Queues the writer's stop order whatever the queue holds: it ends the writer.
    pub fn push_stop(&self, job: Job) -> Result<(), PushError> {
        self.push_below(job, usize::MAX, true)
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
        let room = self.refusal_limit().saturating_sub(jobs.len());
        drop(jobs);
        // One wake-up per place a waiting refusal may take (none while the queue is still over
        // half full), not every waiter for every batch.
        let waiting = self.waiting_for_room.load(Ordering::Acquire);
        for _ in 0..room.min(waiting) {
            self.room.notify_one();
        }
    }

    /// After the writer failed: closes the queue (admissions then fail closed) and counts
    /// every record still in it as lost (strict callers see their acknowledgement dropped).
    pub fn abandon(&self, why: &'static str) -> usize {
        let mut left = Vec::new();
        self.close_and_drain(&mut left);
        for job in &left {
            self.lose(job, why);
        }
        left.len()
    }

    /// How many records are not written yet: those queued, and those the writer holds (a
    /// batch it is retrying on a failing disk).
    pub fn unwritten(&self) -> usize {
        let queued = self
            .lock()
            .iter()
            .filter(|job| matches!(job, Job::Record(..)))
            .count();
        queued + self.held_by_writer.load(Ordering::Relaxed)
    }

    /// Writer side: how many records it holds and has not written yet.
    pub fn set_held(&self, records: usize) {
        self.held_by_writer.store(records, Ordering::Relaxed);
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

/// A refusal's job while it waits for room (see [`JobQueue::push_when_room`]), counted among
/// the waiters. Dropping it, on any way out including the request's future being dropped,
/// leaves the count and puts a job it still holds into the reserve.
struct Waiter<'a> {
    queue: &'a JobQueue,
    job: Option<Job>,
}

impl<'a> Waiter<'a> {
    fn new(queue: &'a JobQueue, job: Job) -> Waiter<'a> {
        queue.waiting_for_room.fetch_add(1, Ordering::AcqRel);
        Waiter {
            queue,
            job: Some(job),
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.queue.waiting_for_room.fetch_sub(1, Ordering::AcqRel);
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
mod tests;
