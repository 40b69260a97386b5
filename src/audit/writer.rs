//! The audit writer: one dedicated thread, a bounded queue, group commit.
//!
//! Requests hand records to a bounded queue and never touch the disk themselves. The thread
//! takes everything queued, chains it (`seq`, `prev`), writes the batch with one `write`, and
//! makes it durable with one `fdatasync` — at once when a strict-mode record is waiting,
//! otherwise within `fsync_interval`. If a write or sync fails, the file is cut back to its
//! last durable length (what was written since is written again: `writer/chain.rs` says why),
//! the writer reports itself unhealthy (so PHI requests get 503 instead of being forwarded
//! unrecorded) and retries the same batch until the disk accepts it: a record that was
//! accepted is never dropped. Files rotate by size; a new file's first record links
//! to the last line of the one before.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use self::chain::{open_chain, Chain};
use super::checkpoint::CheckpointKey;
use super::record::{line_hash, AuditRecord};

/// Something for the writer thread to do.
pub enum Job {
    /// Append a record; the sender (strict mode) learns when it is durable.
    Record(Box<AuditRecord>, Option<oneshot::Sender<()>>),
    /// Write `audit_stop`, sync, and end; the sender learns when done.
    Stop(oneshot::Sender<()>),
}

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    /// Directory of `*.jsonl` files.
    pub dir: PathBuf,
    /// Longest time a batched record waits for fsync.
    pub fsync_interval: Duration,
    /// Rotate when a file reaches this size.
    pub max_file_size: u64,
    /// Rotate when a file is this old.
    pub rotate_every: Duration,
    /// Copy every written line here too (SIEM), best effort.
    pub mirror: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    /// Write a signed checkpoint after this many records.
    pub checkpoint_every: u64,
    /// Replica id stamped on every record.
    pub replica: super::Text,
}

/// Where alerts raised by the detection rules go besides the audit trail.
pub struct Alerts {
    /// The detection rules (none: detection off).
    pub detector: Option<super::detect::Detector>,
    /// Webhook delivery, if configured.
    pub webhook: Option<tokio::sync::mpsc::Sender<String>>,
}

impl Alerts {
    /// Runs the rules over a committed batch; the alerts are appended to the next batch.
    fn raise(
        &mut self,
        written: &[(AuditRecord, Option<oneshot::Sender<()>>)],
    ) -> Vec<AuditRecord> {
        let Some(detector) = self.detector.as_mut() else {
            return Vec::new();
        };
        let alerts: Vec<AuditRecord> = written
            .iter()
            .flat_map(|(record, _)| detector.observe(record))
            .collect();
        for alert in &alerts {
            let rule = alert.rule.clone().unwrap_or_default();
            tracing::warn!(target: "wardgate::security", rule = %rule, reason = alert.reason.as_deref().unwrap_or(""), "ALERT");
            metrics::counter!("wardgate_alerts_total", "rule" => rule).increment(1);
            if let (Some(webhook), Ok(json)) = (&self.webhook, serde_json::to_string(alert)) {
                if webhook.try_send(json).is_err() {
                    tracing::warn!(
                        "alert webhook queue full; the alert is in the audit trail only"
                    );
                }
            }
        }
        alerts
    }
}

/// Runs the writer until a `Stop` job (or every sender is gone).
pub fn run(
    settings: WriterSettings,
    key: CheckpointKey,
    jobs: Arc<super::queue::JobQueue>,
    healthy: Arc<AtomicBool>,
    mut alerts: Alerts,
) {
    let mut chain = loop {
        match open_chain(&settings.dir) {
            Ok(chain) => break chain,
            Err(err) => {
                healthy.store(false, Ordering::Relaxed);
                tracing::error!(dir = %settings.dir.display(), error = %err, "audit directory unusable; PHI requests refused until it works");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    };
    healthy.store(true, Ordering::Relaxed);
    let mut pending: Vec<(AuditRecord, Option<oneshot::Sender<()>>)> =
        vec![(AuditRecord::new("audit_start"), None)];
    let mut last_sync = Instant::now();
    let mut dirty = false;
    let mut stop: Option<oneshot::Sender<()>> = None;
    // How many of `pending` are alerts raised by the last batch (already run through the rules).
    let mut raised_waiting = 0;
    jobs.attach_writer();
    let mut incoming = Vec::new();
    loop {
        if pending.is_empty() && stop.is_none() {
            if Arc::strong_count(&jobs) == 1 {
                // Every handle is gone: nobody can submit or stop us any more.
                stop = Some(oneshot::channel().0);
            } else {
                jobs.wait(settings.fsync_interval);
            }
        }
        if stop.is_none() {
            jobs.drain(8192usize.saturating_sub(pending.len()), &mut incoming);
            for job in incoming.drain(..) {
                accept(job, &mut pending, &mut stop);
            }
        }
        if stop.is_some() {
            // Nothing may stay queued behind the stop order: close the queue and take the rest.
            jobs.close_and_drain(&mut incoming);
            for job in incoming.drain(..) {
                accept(job, &mut pending, &mut stop);
            }
        }
        // The last records are written (and their alerts raised) before `audit_stop`: the
        // trail is closed only by a batch of nothing but alerts already raised, so an alert the
        // last batch raises is written, not lost with the stop. (Decided before the report of
        // lost records below joins the batch: late submitters, refused once the queue closed,
        // must not keep postponing the close.)
        let closing = stop.is_some() && pending.len() == raised_waiting;
        // Records that found the queue and its reserve full are reported, never silently gone
        // (also while a failing disk is retried: then `pending` grows by one alert a second).
        if let Some(alert) = jobs.take_lost(stop.is_some()) {
            pending.push((alert, None));
        }
        if closing {
            pending.push((AuditRecord::new("audit_stop"), None));
        }
        jobs.set_held(pending.len());
        let strict = pending.iter().any(|(_, ack)| ack.is_some());
        let result = commit(
            &mut chain,
            &settings,
            &key,
            &mut pending,
            strict || stop.is_some() || (dirty && last_sync.elapsed() >= settings.fsync_interval),
        );
        match result {
            Ok(synced) => {
                healthy.store(true, Ordering::Relaxed);
                if synced {
                    last_sync = Instant::now();
                    dirty = false;
                } else if !pending.is_empty() {
                    dirty = true;
                }
                let raised = alerts.raise(&pending);
                for (_, ack) in pending.drain(..) {
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                }
                raised_waiting = raised.len();
                pending.extend(raised.into_iter().map(|alert| (alert, None)));
                jobs.set_held(pending.len());
                if closing {
                    if let Some(done) = stop.take() {
                        let _ = done.send(());
                    }
                    return;
                }
            }
            Err(err) => {
                if healthy.swap(false, Ordering::Relaxed) {
                    tracing::error!(file = %chain.path.display(), error = %err, "audit write failed; PHI requests refused until it recovers");
                }
                if closing {
                    pending.pop();
                }
                std::thread::sleep(Duration::from_millis(200));
                if chain.len >= settings.max_file_size || matches!(err.raw_os_error(), Some(27)) {
                    let _ = chain.move_to_new_file(&settings.dir);
                }
            }
        }
    }
}

fn accept(
    job: Job,
    pending: &mut Vec<(AuditRecord, Option<oneshot::Sender<()>>)>,
    stop: &mut Option<oneshot::Sender<()>>,
) {
    match job {
        Job::Record(record, ack) => pending.push((*record, ack)),
        Job::Stop(done) => *stop = Some(done),
    }
}

/// Chains, writes and (if `sync`) syncs `pending`. On error the chain state is unchanged (see
/// [`Chain::append`]), so the same batch can be retried.
fn commit(
    chain: &mut Chain,
    settings: &WriterSettings,
    key: &CheckpointKey,
    pending: &mut [(AuditRecord, Option<oneshot::Sender<()>>)],
    sync: bool,
) -> std::io::Result<bool> {
    if pending.is_empty() {
        if sync {
            chain.sync()?;
        }
        return Ok(sync);
    }
    let (mut seq, mut prev, mut since) = (chain.seq, chain.prev.clone(), chain.since_checkpoint);
    let mut buffer = Vec::with_capacity(pending.len() * 400);
    let checkpoint = |buffer: &mut Vec<u8>, seq: &mut u64, prev: &mut String| {
        let mut checkpoint = AuditRecord::new("checkpoint");
        checkpoint.signature = Some(key.sign(*seq + 1, prev));
        append(buffer, &mut checkpoint, seq, prev, &settings.replica)
    };
    // The trail closes with a signed checkpoint after `audit_stop`: between two runs, no record
    // is covered by the hash chain alone (which anyone can recompute after an edit).
    let closing = pending
        .iter()
        .any(|(record, _)| record.event == "audit_stop");
    for (record, _) in pending.iter_mut() {
        // A checkpoint still owed (a crash tore off the one that followed the last record)
        // comes first, so no run of records is ever longer than `checkpoint_every`.
        if since >= settings.checkpoint_every {
            checkpoint(&mut buffer, &mut seq, &mut prev)?;
            since = 0;
        }
        append(&mut buffer, record, &mut seq, &mut prev, &settings.replica)?;
        since += 1;
        if since >= settings.checkpoint_every {
            checkpoint(&mut buffer, &mut seq, &mut prev)?;
            since = 0;
        }
    }
    if closing && since > 0 {
        checkpoint(&mut buffer, &mut seq, &mut prev)?;
        since = 0;
    }
    chain.append(&buffer, seq, prev, sync)?;
    chain.since_checkpoint = since;
    if let Some(mirror) = &settings.mirror {
        if mirror.try_send(buffer).is_err() {
            metrics::counter!("wardgate_audit_mirror_dropped_total").increment(1);
        }
    }
    if chain.len >= settings.max_file_size || chain.opened.elapsed() >= settings.rotate_every {
        // The batch is written: a failed rotation must not make it be written again (as a
        // retry of an `Err` would). The file simply grows a little longer; the next batch tries
        // again.
        if let Err(err) = chain.rotate(&settings.dir) {
            tracing::error!(file = %chain.path.display(), error = %err, "audit file rotation failed; staying on the current file");
        }
    }
    Ok(sync)
}

fn append(
    buffer: &mut Vec<u8>,
    record: &mut AuditRecord,
    seq: &mut u64,
    prev: &mut String,
    replica: &super::Text,
) -> std::io::Result<()> {
    *seq += 1;
    record.seq = *seq;
    record.prev = std::mem::take(prev);
    record.replica = Some(std::sync::Arc::clone(replica));
    let start = buffer.len();
    super::line::write(buffer, record);
    *prev = line_hash(&buffer[start..]);
    buffer.push(b'\n');
    Ok(())
}

mod chain;
#[cfg(test)]
mod tests;
