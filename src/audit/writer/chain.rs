//! The file the chain is being written to: opening it on start, appending batches, making
//! them durable, cutting back after a failure, and rotating.
//!
//! Why the writer keeps every byte written since the last successful sync: when `fdatasync`
//! fails, Linux reports the error once and may drop the dirty pages (they are marked clean,
//! written or not), so a later sync that succeeds proves nothing about them. After any failed
//! write or sync the file is cut back to the last length known durable and those bytes are
//! written again before anything else (PostgreSQL's "fsyncgate" lesson: never retry a sync and
//! trust it).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::super::record::{line_hash, AuditRecord, GENESIS};

/// The chain's current file and where the chain stands.
pub(super) struct Chain {
    pub(super) file: File,
    pub(super) path: PathBuf,
    /// Bytes in the file.
    pub(super) len: u64,
    /// `seq` of the last record written.
    pub(super) seq: u64,
    /// Hash of the last line written.
    pub(super) prev: String,
    pub(super) since_checkpoint: u64,
    pub(super) opened: Instant,
    /// Where the chain stood at the last successful sync: file length, `seq`, `prev`.
    synced: (u64, u64, String),
    /// Everything written after `synced`, to write again if a write or sync fails.
    unsynced: Vec<u8>,
    /// The file was cut back to `synced`: `unsynced` must be written again first.
    rewrite: bool,
    /// Cutting back failed: it must succeed before anything else is written.
    cut_pending: bool,
}

impl Chain {
    fn at(file: File, path: PathBuf, len: u64, seq: u64, prev: String) -> Chain {
        Chain {
            file,
            path,
            len,
            synced: (len, seq, prev.clone()),
            seq,
            prev,
            since_checkpoint: 0,
            opened: Instant::now(),
            unsynced: Vec::new(),
            rewrite: false,
            cut_pending: false,
        }
    }

    /// Appends `batch` (chained up to `seq`/`prev`) and, if `sync`, makes everything written
    /// so far durable. On error the file is cut back to its last durable length and the chain
    /// state is unchanged, so the same batch can be retried.
    pub(super) fn append(
        &mut self,
        batch: &[u8],
        seq: u64,
        prev: String,
        sync: bool,
    ) -> std::io::Result<()> {
        let written = self
            .write_again()
            .and_then(|()| self.file.write_all(batch))
            .and_then(|()| if sync { sync_file(&self.file) } else { Ok(()) });
        if let Err(err) = written {
            self.cut_back();
            return Err(err);
        }
        self.len += batch.len() as u64;
        self.seq = seq;
        self.prev = prev;
        if sync {
            self.synced_now();
        } else {
            self.unsynced.extend_from_slice(batch);
        }
        Ok(())
    }

    /// Makes everything written so far durable.
    pub(super) fn sync(&mut self) -> std::io::Result<()> {
        let synced = self.write_again().and_then(|()| sync_file(&self.file));
        if let Err(err) = synced {
            self.cut_back();
            return Err(err);
        }
        self.synced_now();
        Ok(())
    }

    /// Makes the file durable and continues the chain in a new one.
    pub(super) fn rotate(&mut self, dir: &Path) -> std::io::Result<()> {
        self.sync()?;
        let since_checkpoint = self.since_checkpoint;
        *self = new_file(dir, self.seq, self.prev.clone())?;
        self.since_checkpoint = since_checkpoint;
        Ok(())
    }

    /// After a failure the current file cannot grow (too large): the chain continues in a new
    /// file, from the last durable record, with what was not yet durable written there first.
    pub(super) fn move_to_new_file(&mut self, dir: &Path) -> std::io::Result<()> {
        let (_, seq, prev) = self.synced.clone();
        let mut next = new_file(dir, seq, prev)?;
        next.unsynced = std::mem::take(&mut self.unsynced);
        next.rewrite = !next.unsynced.is_empty();
        (next.seq, next.prev, next.since_checkpoint) =
            (self.seq, self.prev.clone(), self.since_checkpoint);
        *self = next;
        Ok(())
    }

    fn write_again(&mut self) -> std::io::Result<()> {
        if self.cut_pending {
            self.file.set_len(self.synced.0)?;
            self.file.seek(std::io::SeekFrom::End(0))?;
            self.cut_pending = false;
        }
        if self.rewrite {
            self.file.write_all(&self.unsynced)?;
            self.len = self.synced.0 + self.unsynced.len() as u64;
            self.rewrite = false;
        }
        Ok(())
    }

    fn cut_back(&mut self) {
        let durable = self.synced.0;
        // If even this fails, nothing is appended after bytes that should be gone: the next
        // attempt cuts back first (`write_again`).
        self.cut_pending = self
            .file
            .set_len(durable)
            .and_then(|()| self.file.seek(std::io::SeekFrom::End(0)))
            .is_err();
        self.len = durable;
        self.rewrite = !self.unsynced.is_empty();
    }

    fn synced_now(&mut self) {
        self.synced = (self.len, self.seq, self.prev.clone());
        self.unsynced.clear();
        // A burst can leave a large buffer behind; an idle writer should not keep it.
        self.unsynced.shrink_to(1 << 20);
    }
}

/// `fdatasync`, except when a test has injected a failure.
fn sync_file(file: &File) -> std::io::Result<()> {
    #[cfg(test)]
    super::tests::injected_sync_failure(file)?;
    file.sync_data()
}

/// Opens the newest file in `dir` (repairing a torn last line) or starts a new one.
pub(super) fn open_chain(dir: &Path) -> std::io::Result<Chain> {
    std::fs::create_dir_all(dir)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    crate::audit::sort_in_chain_order(&mut files);
    let Some(path) = files.pop() else {
        return new_file(dir, 0, GENESIS.to_string());
    };
    let newest = read_chain_end(&path)?;
    let good_len = newest.len;
    let file = OpenOptions::new().append(true).open(&path)?;
    if file.metadata()?.len() != good_len {
        tracing::warn!(file = %path.display(), "audit file ends in a torn line from a crash; cutting it off");
        file.set_len(good_len)?;
        file.sync_all()?;
    }
    // A file with no complete record yet (a crash right after a rotation) continues the chain
    // of the file before it, never a new chain from zero. The records since the last checkpoint
    // are counted across files too: checkpoints stay at most `checkpoint_every` records apart
    // whatever restarts and rotations happen (`audit verify --config` holds the trail to that).
    let (mut last, mut since_checkpoint, mut checkpointed) =
        (newest.last, newest.since_checkpoint, newest.checkpointed);
    while last.is_none() || !checkpointed {
        let Some(older) = files.pop() else { break };
        let end = read_chain_end(&older)?;
        last = last.or(end.last);
        since_checkpoint += end.since_checkpoint;
        checkpointed = end.checkpointed;
    }
    let (seq, prev) = last.unwrap_or((0, GENESIS.to_string()));
    let mut chain = Chain::at(file, path, good_len, seq, prev);
    chain.since_checkpoint = since_checkpoint;
    Ok(chain)
}

/// What a file ends with (see [`read_chain_end`]).
struct ChainEnd {
    /// Length up to the end of the last complete line.
    len: u64,
    /// `seq` and hash of the last complete line.
    last: Option<(u64, String)>,
    /// Records after the file's last checkpoint (all of them if it has none).
    since_checkpoint: u64,
    /// Whether the file holds a checkpoint.
    checkpointed: bool,
}

/// The length of `path` up to the end of its last complete line, and that line's `seq` and
/// hash. Only a last line without its newline (a write cut short by a crash) is left out: a
/// complete line that is not a record (damage, or a record of a newer version) is an error, so
/// the writer stops (PHI refused, the directory reported unusable) instead of cutting off the
/// records after it.
fn read_chain_end(path: &Path) -> std::io::Result<ChainEnd> {
    let mut good_len = 0u64;
    let mut last = None;
    let (mut since_checkpoint, mut checkpointed) = (0, false);
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
        if record.event == "checkpoint" {
            (since_checkpoint, checkpointed) = (0, true);
        } else {
            since_checkpoint += 1;
        }
    }
    Ok(ChainEnd {
        len: good_len,
        last,
        since_checkpoint,
        checkpointed,
    })
}

/// Starts a new file whose first record will be `seq + 1`, linked to `prev`.
pub(super) fn new_file(dir: &Path, seq: u64, prev: String) -> std::io::Result<Chain> {
    let stamp = humantime::format_rfc3339_millis(std::time::SystemTime::now())
        .to_string()
        .replace(':', "");
    let path = dir.join(format!("audit-{stamp}-{:012}.jsonl", seq + 1));
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)?;
    File::open(dir)?.sync_all()?;
    Ok(Chain::at(file, path, 0, seq, prev))
}
