//! `wardgate audit verify`: prove a set of audit files untouched.
//!
//! Walks the files in name order (names sort by time) and checks, line by line, that each
//! record parses, that `seq` goes up by exactly one, that `prev` is the SHA-256 of the line
//! before (across file boundaries too), and that every checkpoint's Ed25519 signature verifies
//! when a public key is given. Editing, deleting, inserting or reordering a record breaks one
//! of these at the first affected line, which is reported as `FILE:LINE: reason`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::checkpoint;
use super::record::{line_hash, AuditRecord, GENESIS};

/// What an intact log contained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Files checked.
    pub files: usize,
    /// Records checked.
    pub records: u64,
    /// Checkpoints whose signature verified.
    pub checkpoints: u64,
    /// Records after the last checkpoint: covered by the hash chain only, which anyone can
    /// recompute after an edit. A running writer has some; a trail closed by a stop has none
    /// (it ends with a checkpoint), so a closed trail with some was cut or edited after it.
    pub unsigned_tail: u64,
}

/// The first broken place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {reason}", file.display())]
pub struct Broken {
    /// File.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Expands directories into their `*.jsonl` files, in chain order.
pub fn expand(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(path)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                .collect();
            super::sort_in_chain_order(&mut inside);
            files.extend(inside);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// What signed checkpoints prove (from `audit verify --config`).
#[derive(Debug, Clone, Copy)]
pub struct Checkpoints<'a> {
    /// The Ed25519 public key every checkpoint's signature must verify with.
    pub public_key: &'a [u8],
    /// The writer signs a checkpoint after at most this many records: a longer run without
    /// one means checkpoints were removed (and the chain rehashed, which needs no key).
    pub every: u64,
}

/// Verifies `files` in order; with `checkpoints`, their signatures and spacing too.
pub fn verify(files: &[PathBuf], checkpoints: Option<Checkpoints<'_>>) -> Result<Report, Broken> {
    let mut report = Report {
        files: 0,
        records: 0,
        checkpoints: 0,
        unsigned_tail: 0,
    };
    let mut position = Position {
        expected_seq: 1,
        prev: GENESIS.to_string(),
        prev_place: None,
        since_checkpoint: 0,
    };
    for file in files {
        report.files += 1;
        verify_file(file, checkpoints, &mut position, &mut report)?;
    }
    report.unsigned_tail = position.since_checkpoint;
    Ok(report)
}

/// Where the walk is: the next expected sequence number, the hash of the last line, and
/// where that line is (so an edited record is reported at its own line).
struct Position {
    expected_seq: u64,
    prev: String,
    prev_place: Option<(PathBuf, usize)>,
    since_checkpoint: u64,
}

fn verify_file(
    file: &Path,
    checkpoints: Option<Checkpoints<'_>>,
    position: &mut Position,
    report: &mut Report,
) -> Result<(), Broken> {
    let Position {
        expected_seq,
        prev,
        prev_place,
        since_checkpoint,
    } = position;
    let broken = |line: usize, reason: String| Broken {
        file: file.to_path_buf(),
        line,
        reason,
    };
    let handle = std::fs::File::open(file).map_err(|e| broken(0, format!("cannot read: {e}")))?;
    let bytes_len = handle.metadata().map(|m| m.len()).unwrap_or(0);
    let mut consumed = 0u64;
    for (index, line) in BufReader::new(handle).split(b'\n').enumerate() {
        let number = index + 1;
        let line = line.map_err(|e| broken(number, format!("cannot read: {e}")))?;
        consumed += line.len() as u64 + 1;
        if consumed > bytes_len {
            return Err(broken(
                number,
                "last line is incomplete (no newline): torn write or truncation".into(),
            ));
        }
        let record: AuditRecord = serde_json::from_slice(&line)
            .map_err(|e| broken(number, format!("not a valid audit record: {e}")))?;
        if record.seq != *expected_seq {
            return Err(broken(
                number,
                format!(
                    "sequence {} where {} was expected (record deleted, inserted or reordered)",
                    record.seq, expected_seq
                ),
            ));
        }
        if record.prev != *prev {
            // The sequence is intact, so nothing was removed or inserted here: the record
            // before this one was altered after it was written.
            return Err(match prev_place.take() {
                Some((file, line)) => Broken {
                    file,
                    line,
                    reason: "record altered: its hash no longer matches the chain".into(),
                },
                None => broken(
                    number,
                    "hash chain broken: the first record does not start a chain".into(),
                ),
            });
        }
        if record.event == "checkpoint" {
            let Some(signature) = record.signature.as_deref() else {
                return Err(broken(number, "checkpoint without signature".into()));
            };
            if let Some(checks) = checkpoints {
                if !checkpoint::verify(checks.public_key, record.seq, &record.prev, signature) {
                    return Err(broken(
                        number,
                        "checkpoint signature does not verify with the configured key".into(),
                    ));
                }
                report.checkpoints += 1;
            }
            *since_checkpoint = 0;
        } else if record.signature.is_some() {
            return Err(broken(
                number,
                "signature on a record that is not a checkpoint".into(),
            ));
        } else {
            *since_checkpoint += 1;
            if let Some(checks) = checkpoints.filter(|c| *since_checkpoint > c.every) {
                return Err(broken(
                    number,
                    format!(
                        "{} records since the last signed checkpoint, more than checkpoint_every = {}: \
                         checkpoints removed and the chain rewritten (or the trail was written with a \
                         larger checkpoint_every: verify it with that config)",
                        since_checkpoint, checks.every
                    ),
                ));
            }
        }
        *prev = line_hash(&line);
        *prev_place = Some((file.to_path_buf(), number));
        *expected_seq += 1;
        report.records += 1;
    }
    Ok(())
}
