//! The bounded queue between requests and the audit writer thread, built to wake it rarely.
//!
//! A channel that wakes the writer for every record costs a futex wake-up and two context
//! switches per PHI request; under load that was the single largest cost of the full path.
//! Here a request only wakes the writer when the writer has said it is going to sleep, or when
//! the record is urgent (strict mode waits for it, or shutdown). Otherwise the writer, after
//! each batch, naps for [`GATHER`] and collects what arrived meanwhile: batched records may
//! wait up to `fsync_interval` for durability anyway, so nothing is promised later than before.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::Thread;
use std::time::Duration;

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
    space: Condvar,
    waiting_for_space: AtomicUsize,
}

impl JobQueue {
    /// A queue holding at most `capacity` jobs.
    pub fn new(capacity: usize) -> Self {
        Self {
            jobs: Mutex::new(VecDeque::with_capacity(capacity.min(65_536))),
            capacity: capacity.max(1),
            writer: OnceLock::new(),
            writer_sleeping: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            space: Condvar::new(),
            waiting_for_space: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Job>> {
        self.jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `job` without blocking. `urgent` wakes the writer at once.
    pub fn try_push(&self, job: Job, urgent: bool) -> Result<(), PushError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PushError::Closed(job));
        }
        {
            let mut jobs = self.lock();
            if jobs.len() >= self.capacity {
                return Err(PushError::Full(job));
            }
            jobs.push_back(job);
        }
        self.nudge(urgent);
        Ok(())
    }

    /// Queues `job`, waiting for space (never drops it). Blocking: call off the async runtime.
    pub fn push_blocking(&self, job: Job) -> Result<(), PushError> {
        let mut jobs = self.lock();
        while jobs.len() >= self.capacity {
            if self.closed.load(Ordering::Acquire) {
                return Err(PushError::Closed(job));
            }
            self.waiting_for_space.fetch_add(1, Ordering::AcqRel);
            jobs = self
                .space
                .wait_timeout(jobs, Duration::from_millis(100))
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
            self.waiting_for_space.fetch_sub(1, Ordering::AcqRel);
        }
        jobs.push_back(job);
        drop(jobs);
        self.nudge(true);
        Ok(())
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
        if take > 0 && self.waiting_for_space.load(Ordering::Acquire) > 0 {
            self.space.notify_all();
        }
    }

    /// Writer side: no more jobs will be taken.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.space.notify_all();
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
