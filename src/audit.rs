//! Stage 6, audit: every access to patient data is recorded before it is forwarded.
//!
//! [`Auditor`] is the handle requests use; the writing happens on one dedicated thread
//! (`writer.rs`) behind a bounded queue. A PHI request gets its `access` record queued
//! (`audit = "batched"`, durable within `fsync_interval`) or made durable (`audit = "strict"`)
//! before a byte goes to the backend; when the queue is full or the disk fails, PHI requests
//! are refused with 503 (fail closed) while other traffic continues. When the response ends a
//! second `access` record with the same `request_id` adds status, bytes and latency.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::authz::Permit;
use crate::config::AuditMode;
use crate::gate::context::RequestCtx;
use crate::gate::error::GateError;
use crate::gate::target::RequestTarget;

pub mod checkpoint;
pub mod detect;
pub mod line;
pub mod lost;
pub mod mirror;
pub mod open;
pub mod queue;
pub mod record;
pub mod verify;
pub mod webhook;
pub mod writer;

pub use record::{AuditRecord, Text};

/// How long a strict-mode request waits for its record to become durable.
const STRICT_WAIT: Duration = Duration::from_secs(5);

/// How long a refusal waits for room in a full queue before its record uses the reserve.
const ROOM_WAIT: Duration = Duration::from_secs(5);

/// The audit trail, shared by every request and surviving reloads.
#[derive(Debug)]
pub struct Auditor {
    jobs: Arc<queue::JobQueue>,
    healthy: Arc<AtomicBool>,
    /// Set when the drain deadline has passed: what is dropped from then on was cut off by
    /// shutdown, not by its client, and its completion says so.
    cutting_off: AtomicBool,
}

/// Proof that an allowed request was recorded, handed from admission to forwarding. For an
/// audited access it carries the completion record, already filled with the request's fields
/// (built once: the session hash and the address are not computed twice per request).
///
/// A ticket dropped while it still holds its completion means the request was cancelled
/// after admission and before a response (the client reset the stream or went away, or
/// shutdown cut it off): the backend may have acted, so the completion is written then,
/// saying so. A forwarding error completes it with the error's status ([`AuditTicket::fail`]).
#[derive(Debug)]
pub struct AuditTicket {
    completion: Option<(AuditRecord, Arc<Auditor>)>,
}

impl AuditTicket {
    /// Takes the completion record to write when the response ends (`None`: not an audited
    /// access, or already taken).
    pub fn take_completion(&mut self) -> Option<AuditRecord> {
        self.completion.take().map(|(record, _)| record)
    }

    /// Writes the completion of an access whose forwarding failed (502, 504, 413, ...): it was
    /// allowed, and ended with `status` because of `error`. Returns whether there was one to
    /// write (then the request needs no refusal record as well).
    pub fn fail(&mut self, status: http::StatusCode, error: &GateError, started: Instant) -> bool {
        let Some((mut record, auditor)) = self.completion.take() else {
            return false;
        };
        record.status = Some(status.as_u16());
        record.reason = Some(error.to_string().into());
        record.latency_ms = Some(open::millis(started));
        auditor.submit_kept(record);
        true
    }
}

impl Drop for AuditTicket {
    fn drop(&mut self) {
        if let Some((mut record, auditor)) = self.completion.take() {
            let reason = auditor.ended_early(
                "cancelled before the backend answered",
                "cut off at shutdown before the backend answered",
            );
            record.reason = Some(reason.into());
            auditor.submit_kept(record);
        }
    }
}

impl std::fmt::Debug for writer::Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl Auditor {
    /// Starts the writer thread.
    pub fn start(
        settings: writer::WriterSettings,
        key: checkpoint::CheckpointKey,
        queue: usize,
        alerts: writer::Alerts,
    ) -> Auditor {
        let jobs = Arc::new(queue::JobQueue::new(queue));
        let healthy = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&healthy);
        let writer_jobs = Arc::clone(&jobs);
        let spawned = std::thread::Builder::new()
            .name("wardgate-audit".into())
            .spawn(move || {
                // The writer holds the only other strong handle, so it can tell when every
                // `Auditor` is gone (and then closes the trail); the panic path needs a weak one.
                let queue = Arc::downgrade(&writer_jobs);
                let run = std::panic::AssertUnwindSafe(|| {
                    writer::run(settings, key, writer_jobs, Arc::clone(&flag), alerts);
                });
                if std::panic::catch_unwind(run).is_err() {
                    // Fail closed: with no writer, nothing may be admitted as if recorded.
                    flag.store(false, Ordering::Relaxed);
                    let lost = queue
                        .upgrade()
                        .map_or(0, |jobs| jobs.abandon("the audit writer failed"));
                    tracing::error!(
                        lost,
                        "the audit writer failed; PHI requests are refused until Wardgate restarts"
                    );
                }
            });
        if let Err(err) = spawned {
            tracing::error!(error = %err, "cannot start the audit writer; PHI requests will be refused");
        }
        Auditor {
            jobs,
            healthy,
            cutting_off: AtomicBool::new(false),
        }
    }

    /// Marks the drain deadline as passed: requests, streams and tunnels dropped from now on
    /// are completed as cut off by shutdown (the serving runtimes are dropped next).
    pub fn cut_off(&self) {
        self.cutting_off.store(true, Ordering::Relaxed);
    }

    /// Why an access dropped before it ended did so: `otherwise` (its client went away), or
    /// `at_shutdown` once shutdown is cutting off what is left (see [`Auditor::cut_off`]).
    pub fn ended_early(&self, otherwise: &'static str, at_shutdown: &'static str) -> &'static str {
        if self.cutting_off.load(Ordering::Relaxed) {
            at_shutdown
        } else {
            otherwise
        }
    }

    /// Whether records are being written (for `/readyz` and admission).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Queues a record without waiting; `Err` if the queue is full or the writer is gone.
    pub fn submit(&self, record: AuditRecord) -> Result<(), GateError> {
        match self
            .jobs
            .try_push(writer::Job::Record(Box::new(record), None), false)
        {
            Ok(()) => Ok(()),
            Err(queue::PushError::Full(_)) => {
                metrics::counter!("wardgate_audit_queue_full_total").increment(1);
                Err(GateError::AuditUnavailable("audit queue full".into()))
            }
            Err(queue::PushError::Closed(_)) => {
                Err(GateError::AuditUnavailable("audit writer stopped".into()))
            }
        }
    }

    /// Queues a record that cannot wait for room (security events, a response's completion),
    /// using the queue's reserve when it is full. Never blocks (see `queue.rs`).
    pub fn submit_kept(&self, record: AuditRecord) {
        self.jobs
            .push_kept(writer::Job::Record(Box::new(record), None));
    }

    /// Queues a refusal's record, waiting (asynchronously) for room while the writer is
    /// healthy but behind: a flood of refused requests is answered at the pace of the disk.
    pub async fn submit_when_room(&self, record: AuditRecord) {
        let wait = if self.is_healthy() {
            ROOM_WAIT
        } else {
            Duration::ZERO
        };
        self.jobs
            .push_when_room(writer::Job::Record(Box::new(record), None), wait)
            .await;
    }

    /// Queues a record and waits until it is durable on disk.
    pub async fn submit_durable(&self, record: AuditRecord) -> Result<(), GateError> {
        let (ack, durable) = oneshot::channel();
        if self
            .jobs
            .try_push(writer::Job::Record(Box::new(record), Some(ack)), true)
            .is_err()
        {
            return Err(GateError::AuditUnavailable("audit queue full".into()));
        }
        match tokio::time::timeout(STRICT_WAIT, durable).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(GateError::AuditUnavailable(
                "audit record not durable in time".into(),
            )),
        }
    }

    /// Writes `audit_stop` and waits (up to 10 s) for everything queued to be on disk. `Err`
    /// carries how many records were not written when the wait ended (failing disk): they are
    /// lost with the process.
    pub async fn stop(&self) -> Result<(), usize> {
        let (done, finished) = oneshot::channel();
        let _ = self.jobs.push_stop(writer::Job::Stop(done));
        match tokio::time::timeout(Duration::from_secs(10), finished).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(self.jobs.unwritten()),
        }
    }
}

/// Sorts audit files into chain order: by the position of their first record, which every
/// file name ends with (`audit-<time>-<seq>.jsonl`), not by the time in the name: a clock
/// stepped back across a rotation must not put a newer file before an older one. Names without
/// that number (copied in by hand) sort first, by name, so the writer never appends to one.
pub fn sort_in_chain_order(files: &mut [std::path::PathBuf]) {
    let position = |path: &std::path::PathBuf| {
        path.file_stem()
            .and_then(|stem| stem.to_str())
            .and_then(|stem| stem.rsplit_once('-'))
            .and_then(|(_, seq)| seq.parse::<u64>().ok())
    };
    files.sort_by(|a, b| match (position(a), position(b)) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
        (Some(_), None) => std::cmp::Ordering::Greater,
        (None, Some(_)) => std::cmp::Ordering::Less,
        (None, None) => a.cmp(b),
    });
}

/// The fields every request record shares.
pub fn request_record(
    ctx: &RequestCtx,
    target: Option<&RequestTarget>,
    method: &http::Method,
) -> AuditRecord {
    let mut record = AuditRecord::new("access");
    record.request_id = Some(Text::from(ctx.request_id()));
    record.src_ip = Some(Arc::clone(&ctx.conn.peer_ip));
    record.client_cert = ctx
        .conn
        .client_identity
        .as_ref()
        .map(|id| Text::from(id.subject.as_str()));
    record.method = Some(method_text(method));
    if let Some((host, path)) = &ctx.phi_target {
        record.host = Some(Arc::clone(host));
        record.path = Some(Arc::clone(path));
    } else if let Some(target) = target {
        record.host = Some(Arc::clone(&target.host));
        record.path = Some(Arc::clone(&target.path));
    }
    record.route = ctx.route.as_ref().map(|r| Arc::clone(&r.name));
    record.patient_id = ctx.patient_id.clone();
    if let Some(caller) = &ctx.caller {
        record.user = Some(Arc::clone(&caller.name));
        record.roles = Some(Arc::clone(&caller.roles));
        record.work_hours = caller.work_hours.clone();
    }
    record.session = ctx.session.clone();
    record
}

/// The method as shared text: the common ones are made once, not once per record.
fn method_text(method: &http::Method) -> Text {
    static COMMON: std::sync::LazyLock<[Text; 4]> =
        std::sync::LazyLock::new(|| ["GET", "POST", "PUT", "DELETE"].map(Text::from));
    COMMON
        .iter()
        .find(|common| &***common == method.as_str())
        .map_or_else(|| Text::from(method.as_str()), Arc::clone)
}

/// Records an allowed access before forwarding: queued (batched) or durable (strict).
pub async fn admit(
    app: &crate::app::App,
    ctx: &RequestCtx,
    permit: &Permit,
    target: &RequestTarget,
    method: &http::Method,
) -> Result<AuditTicket, GateError> {
    let route = permit.route();
    if !route.phi && permit.break_glass().is_none() {
        return Ok(AuditTicket { completion: None });
    }
    if !app.audit.is_healthy() {
        return Err(GateError::AuditUnavailable("audit writer unhealthy".into()));
    }
    let mut completion = request_record(ctx, Some(target), method);
    completion.decision = Some("allow".into());
    completion.break_glass = permit.break_glass().map(Text::from);
    let mut record = completion.clone();
    record.rule = permit.rule().cloned();
    record.reason = Some(permit.reason().into());

    match route.audit {
        AuditMode::Batched => app.audit.submit(record)?,
        AuditMode::Strict => app.audit.submit_durable(record).await?,
    }
    Ok(AuditTicket {
        completion: Some((completion, Arc::clone(&app.audit))),
    })
}

/// Records a refused request: every refusal on a PHI route (`access`, `deny`), and a policy
/// denial (403) on any route (`denied`).
pub async fn refused(
    app: &crate::app::App,
    ctx: &RequestCtx,
    method: &http::Method,
    error: &GateError,
    status: http::StatusCode,
) {
    if ctx.access_completed {
        return;
    }
    let phi = ctx.route.as_ref().is_some_and(|r| r.phi);
    let forbidden = matches!(error, GateError::Forbidden(_) | GateError::Denied { .. });
    if !phi && !forbidden {
        return;
    }
    let mut record = request_record(ctx, None, method);
    if !phi {
        record.event = "denied".into();
    }
    record.decision = Some("deny".into());
    if let GateError::Denied { rule, .. } = error {
        record.rule = rule.clone();
    }
    record.reason = Some(error.to_string().into());
    record.status = Some(status.as_u16());
    app.audit.submit_when_room(record).await;
}
