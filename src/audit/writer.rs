//! The audit writer: one dedicated thread, a bounded queue, group commit.
//!
//! Requests hand records to a bounded queue and never touch the disk themselves. The thread
//! takes everything queued, chains it (`seq`, `prev`), writes the batch with one `write`, and
//! makes it durable with one `fdatasync` — at once when a strict-mode record is waiting,
//! otherwise within `fsync_interval`. If a write or sync fails, the file is cut back to where
//! the batch began, the writer reports itself unhealthy (so PHI requests get 503 instead of
//! being forwarded unrecorded) and retries the same batch until the disk accepts it: a record
//! that was accepted is never dropped. Files rotate by size; a new file's first record links
//! to the last line of the one before.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::checkpoint::CheckpointKey;
use super::record::{line_hash, AuditRecord, GENESIS};

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

struct Chain {
    file: File,
    path: PathBuf,
    len: u64,
    seq: u64,
    prev: String,
    since_checkpoint: u64,
    opened: Instant,
}

/// Opens the newest file in `dir` (repairing a torn last line) or starts a new one.
fn open_chain(dir: &Path) -> std::io::Result<Chain> {
    std::fs::create_dir_all(dir)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let Some(path) = files.pop() else {
        return new_file(dir, 0, GENESIS.to_string());
    };
    let (good_len, mut last) = read_chain_end(&path)?;
    let file = OpenOptions::new().append(true).open(&path)?;
    if file.metadata()?.len() != good_len {
        tracing::warn!(file = %path.display(), "audit file ends in a torn line from a crash; cutting it off");
        file.set_len(good_len)?;
        file.sync_all()?;
    }
    // A file with no complete record yet (a crash right after a rotation) continues the chain
    // of the file before it, never a new chain from zero.
    while last.is_none() {
        let Some(older) = files.pop() else { break };
        last = read_chain_end(&older)?.1;
    }
    let (seq, prev) = last.unwrap_or((0, GENESIS.to_string()));
    Ok(Chain {
        file,
        path,
        len: good_len,
        seq,
        prev,
        since_checkpoint: 0,
        opened: Instant::now(),
    })
}

/// The length of `path` up to the end of its last complete line, and that line's `seq` and
/// hash. Only a last line without its newline (a write cut short by a crash) is left out: a
/// complete line that is not a record (damage, or a record of a newer version) is an error, so
/// the writer stops (PHI refused, the directory reported unusable) instead of cutting off the
/// records after it.
fn read_chain_end(path: &Path) -> std::io::Result<(u64, Option<(u64, String)>)> {
    let mut good_len = 0u64;
    let mut last = None;
    let handle = File::open(path)?;
    let file_len = handle.metadata()?.len();
    for (number, line) in BufReader::new(handle).split(b'\n').enumerate() {
        let line = line?;
        if good_len + line.len() as u64 + 1 > file_len {
            // A last line without its newline was cut short, even if it happens to parse.
            break;
        }
        let record = serde_json::from_slice::<AuditRecord>(&line).map_err(|err| {
            std::io::Error::other(format!(
                "{}:{}: not an audit record ({err}); move the file aside to continue",
                path.display(),
                number + 1
            ))
        })?;
        good_len += line.len() as u64 + 1;
        last = Some((record.seq, line_hash(&line)));
    }
    Ok((good_len, last))
}

fn new_file(dir: &Path, seq: u64, prev: String) -> std::io::Result<Chain> {
    let stamp = humantime::format_rfc3339_millis(std::time::SystemTime::now())
        .to_string()
        .replace(':', "");
    let path = dir.join(format!("audit-{stamp}-{:012}.jsonl", seq + 1));
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)?;
    File::open(dir)?.sync_all()?;
    Ok(Chain {
        file,
        path,
        len: 0,
        seq,
        prev,
        since_checkpoint: 0,
        opened: Instant::now(),
    })
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
        // Records that found the queue and its reserve full are reported, never silently gone
        // (also while a failing disk is retried: then `pending` grows by one alert a second).
        if let Some(alert) = jobs.take_lost(stop.is_some()) {
            pending.push((alert, None));
        }
        if stop.is_some() {
            pending.push((AuditRecord::new("audit_stop"), None));
        }
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
                pending.extend(raised.into_iter().map(|alert| (alert, None)));
                if let Some(done) = stop.take() {
                    let _ = done.send(());
                    return;
                }
            }
            Err(err) => {
                if healthy.swap(false, Ordering::Relaxed) {
                    tracing::error!(file = %chain.path.display(), error = %err, "audit write failed; PHI requests refused until it recovers");
                }
                if let Some(AuditRecord { event, .. }) = pending.last().map(|(r, _)| r) {
                    if event == "audit_stop" {
                        pending.pop();
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
                if chain.len >= settings.max_file_size || matches!(err.raw_os_error(), Some(27)) {
                    if let Ok(next) = new_file(&settings.dir, chain.seq, chain.prev.clone()) {
                        chain = next;
                    }
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

/// Chains, writes and (if `sync`) syncs `pending`. On error the file is cut back to where the
/// batch began and the chain state is unchanged, so the same batch can be retried.
fn commit(
    chain: &mut Chain,
    settings: &WriterSettings,
    key: &CheckpointKey,
    pending: &mut [(AuditRecord, Option<oneshot::Sender<()>>)],
    sync: bool,
) -> std::io::Result<bool> {
    if pending.is_empty() {
        if sync {
            chain.file.sync_data()?;
        }
        return Ok(sync);
    }
    let (mut seq, mut prev, mut since) = (chain.seq, chain.prev.clone(), chain.since_checkpoint);
    let mut buffer = Vec::with_capacity(pending.len() * 400);
    for (record, _) in pending.iter_mut() {
        append(&mut buffer, record, &mut seq, &mut prev, &settings.replica)?;
        since += 1;
        if since >= settings.checkpoint_every {
            let mut checkpoint = AuditRecord::new("checkpoint");
            checkpoint.signature = Some(key.sign(seq + 1, &prev));
            append(
                &mut buffer,
                &mut checkpoint,
                &mut seq,
                &mut prev,
                &settings.replica,
            )?;
            since = 0;
        }
    }
    let start = chain.len;
    let written =
        chain
            .file
            .write_all(&buffer)
            .and_then(|()| if sync { chain.file.sync_data() } else { Ok(()) });
    if let Err(err) = written {
        let _ = chain.file.set_len(start);
        let _ = chain.file.seek(std::io::SeekFrom::End(0));
        return Err(err);
    }
    chain.len = start + buffer.len() as u64;
    if let Some(mirror) = &settings.mirror {
        if mirror.try_send(buffer.clone()).is_err() {
            metrics::counter!("wardgate_audit_mirror_dropped_total").increment(1);
        }
    }
    chain.seq = seq;
    chain.prev = prev;
    chain.since_checkpoint = since;
    if chain.len >= settings.max_file_size || chain.opened.elapsed() >= settings.rotate_every {
        // The batch is written: a failed rotation must not make it be written again (as a
        // retry of an `Err` would). The file simply grows a little longer; the next batch tries
        // again.
        if let Err(err) = rotate(chain, &settings.dir) {
            tracing::error!(file = %chain.path.display(), error = %err, "audit file rotation failed; staying on the current file");
        }
    }
    Ok(sync)
}

/// Makes the current file durable and continues the chain in a new one.
fn rotate(chain: &mut Chain, dir: &Path) -> std::io::Result<()> {
    chain.file.sync_all()?;
    *chain = new_file(dir, chain.seq, chain.prev.clone())?;
    Ok(())
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

#[cfg(test)]
mod tests;
