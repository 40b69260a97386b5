//! Restart: where the writer takes up the chain, and what it refuses to cut off; a failed
//! sync: what was written since the last good one is written again.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use super::chain::{new_file, open_chain};
use super::*;
use crate::audit::record::GENESIS;

thread_local! {
    /// When set, the next sync on this thread fails after cutting the file to this length,
    /// as Linux may lose the pages a failed `fdatasync` had to write.
    static FAIL_NEXT_SYNC: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Called by every sync (tests only): fails the one a test asked to fail.
pub(super) fn injected_sync_failure(file: &File) -> std::io::Result<()> {
    match FAIL_NEXT_SYNC.with(Cell::take) {
        Some(lost_to) => {
            file.set_len(lost_to)?;
            Err(std::io::Error::other("injected fdatasync failure"))
        }
        None => Ok(()),
    }
}

/// Writer settings for a test directory.
fn settings(dir: &Path, checkpoint_every: u64) -> WriterSettings {
    WriterSettings {
        dir: dir.to_path_buf(),
        fsync_interval: Duration::from_secs(1),
        max_file_size: u64::MAX,
        rotate_every: Duration::from_secs(3600),
        mirror: None,
        checkpoint_every,
        replica: super::super::Text::from("test"),
    }
}

/// The `event` of every record in an audit file, in order.
fn events_in(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .map(|line| {
            serde_json::from_str::<AuditRecord>(line)
                .expect("record")
                .event
                .to_string()
        })
        .collect()
}

/// One batch of `count` records chained after `seq`/`prev`.
fn batch(count: usize, seq: &mut u64, prev: &mut String) -> Vec<u8> {
    let mut buffer = Vec::new();
    let replica = super::super::Text::from("test");
    for _ in 0..count {
        let mut record = AuditRecord::new("access");
        append(&mut buffer, &mut record, seq, prev, &replica).expect("append");
    }
    buffer
}

/// Writes `count` chained records starting after (`seq`, `prev`) to `path`; returns the new
/// (`seq`, `prev`).
fn write_records(path: &Path, count: usize, mut seq: u64, mut prev: String) -> (u64, String) {
    let buffer = batch(count, &mut seq, &mut prev);
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open");
    file.write_all(&buffer).expect("write");
    (seq, prev)
}

#[test]
fn an_empty_newest_file_continues_the_chain_of_the_one_before() {
    let dir = tempfile::tempdir().expect("dir");
    let first = dir.path().join("audit-a-000000000001.jsonl");
    let (seq, prev) = write_records(&first, 3, 0, GENESIS.to_string());
    let second = dir.path().join("audit-b-000000000004.jsonl");
    File::create(&second).expect("empty file");
    let chain = open_chain(dir.path()).expect("open");
    assert_eq!(chain.path, second);
    assert_eq!((chain.seq, chain.prev), (3, prev));
    assert_eq!(seq, 3);
}

#[test]
fn only_a_torn_last_line_is_cut_off() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("audit-a-000000000001.jsonl");
    let (_, prev) = write_records(&path, 2, 0, GENESIS.to_string());
    let whole = std::fs::metadata(&path).expect("meta").len();
    let mut file = OpenOptions::new().append(true).open(&path).expect("open");
    file.write_all(b"{\"ts\":\"2026-").expect("torn");
    let chain = open_chain(dir.path()).expect("open");
    assert_eq!((chain.seq, chain.prev, chain.len), (2, prev, whole));
    assert_eq!(std::fs::metadata(&path).expect("meta").len(), whole);
}

#[test]
fn a_complete_line_that_is_not_a_record_stops_the_writer_and_cuts_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("audit-a-000000000001.jsonl");
    let (seq, prev) = write_records(&path, 1, 0, GENESIS.to_string());
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(b"{\"ts\":\"damaged\"}\n"))
        .expect("damage");
    write_records(&path, 2, seq, prev);
    let before = std::fs::read(&path).expect("read");
    let err = open_chain(dir.path()).err().expect("refused");
    assert!(err.to_string().contains(":2: not an audit record"), "{err}");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        before,
        "records were cut off"
    );
}

/// A failed sync may have lost everything written since the last good one (simulated: the
/// file is cut to that length). The retry writes it all again, so the file holds every record,
/// in order, chained.
#[test]
fn a_failed_sync_writes_again_what_it_may_have_lost() {
    let dir = tempfile::tempdir().expect("dir");
    let mut chain = new_file(dir.path(), 0, GENESIS.to_string()).expect("file");
    let (mut seq, mut prev) = (0, GENESIS.to_string());
    let durable = batch(2, &mut seq, &mut prev);
    chain
        .append(&durable, seq, prev.clone(), true)
        .expect("synced");
    let durable_len = chain.len;
    let unsynced = batch(3, &mut seq, &mut prev);
    chain
        .append(&unsynced, seq, prev.clone(), false)
        .expect("written");
    let (before_seq, before_prev) = (seq, prev.clone());
    let strict = batch(1, &mut seq, &mut prev);
    FAIL_NEXT_SYNC.with(|fail| fail.set(Some(durable_len)));
    assert!(chain.append(&strict, seq, prev.clone(), true).is_err());
    assert_eq!(
        (chain.seq, &chain.prev),
        (before_seq, &before_prev),
        "state unchanged"
    );
    chain
        .append(&strict, seq, prev.clone(), true)
        .expect("retried");
    let written = std::fs::read(&chain.path).expect("read");
    assert_eq!(written, [durable, unsynced, strict].concat());
    let seqs: Vec<u64> = written
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            serde_json::from_slice::<AuditRecord>(line)
                .expect("record")
                .seq
        })
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
}

/// Files are taken in chain order (the number their name ends with), not by the time in their
/// name: a clock stepped back across a rotation must not make the writer reopen an older file.
#[test]
fn files_are_taken_in_chain_order_whatever_their_time() {
    let dir = tempfile::tempdir().expect("dir");
    let older = dir
        .path()
        .join("audit-2026-12-07T100000.000Z-000000000001.jsonl");
    let (seq, prev) = write_records(&older, 2, 0, GENESIS.to_string());
    // The clock went back an hour before this rotation.
    let newer = dir
        .path()
        .join("audit-2026-12-07T090000.000Z-000000000003.jsonl");
    let (seq, prev) = write_records(&newer, 1, seq, prev);
    let chain = open_chain(dir.path()).expect("open");
    assert_eq!(chain.path, newer);
    assert_eq!((chain.seq, chain.prev), (seq, prev));
    let mut names = vec![
        newer.clone(),
        dir.path().join("copied.jsonl"),
        older.clone(),
    ];
    crate::audit::sort_in_chain_order(&mut names);
    assert_eq!(names, vec![dir.path().join("copied.jsonl"), older, newer]);
}

/// After a restart the records since the last checkpoint are counted across files, so
/// checkpoints stay at most `checkpoint_every` records apart (what `audit verify` holds).
#[test]
fn a_restart_counts_the_records_since_the_last_checkpoint() {
    let dir = tempfile::tempdir().expect("dir");
    let older = dir.path().join("audit-a-000000000001.jsonl");
    let (mut seq, mut prev) = write_records(&older, 2, 0, GENESIS.to_string());
    let replica = super::super::Text::from("test");
    let mut buffer = Vec::new();
    let mut checkpoint = AuditRecord::new("checkpoint");
    checkpoint.signature = Some("00".into());
    append(&mut buffer, &mut checkpoint, &mut seq, &mut prev, &replica).expect("append");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&older)
        .and_then(|mut f| f.write_all(&buffer))
        .expect("checkpoint");
    let (seq, prev) = write_records(&older, 1, seq, prev);
    let newer = dir.path().join("audit-b-000000000005.jsonl");
    write_records(&newer, 2, seq, prev);
    assert_eq!(open_chain(dir.path()).expect("open").since_checkpoint, 3);
}

/// A crash can tear off the checkpoint that followed the last record. The checkpoint still owed
/// comes before the next record, so no run of records is longer than `checkpoint_every`.
#[test]
fn a_checkpoint_torn_off_by_a_crash_comes_first_after_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("audit-a-000000000001.jsonl");
    write_records(&path, 3, 0, GENESIS.to_string());
    let mut chain = open_chain(dir.path()).expect("open");
    assert_eq!(chain.since_checkpoint, 3);
    let settings = settings(dir.path(), 3);
    let key = CheckpointKey::load_or_create(&dir.path().join("signing.key")).expect("key");
    let mut pending = vec![(AuditRecord::new("audit_start"), None)];
    commit(&mut chain, &settings, &key, &mut pending, true).expect("commit");
    let events = events_in(&path);
    assert_eq!(
        events,
        ["access", "access", "access", "checkpoint", "audit_start"]
    );
}

/// When the chain has to move to a new file after a failure (the old one cannot grow), what
/// was not yet durable is written there first, and the new file is named after it.
#[test]
fn a_chain_moved_after_a_failure_writes_what_was_not_durable_in_the_new_file() {
    let dir = tempfile::tempdir().expect("dir");
    let mut chain = new_file(dir.path(), 0, GENESIS.to_string()).expect("file");
    let (mut seq, mut prev) = (0, GENESIS.to_string());
    let durable = batch(1, &mut seq, &mut prev);
    chain
        .append(&durable, seq, prev.clone(), true)
        .expect("synced");
    let unsynced = batch(2, &mut seq, &mut prev);
    chain
        .append(&unsynced, seq, prev.clone(), false)
        .expect("written");
    let next = batch(1, &mut seq, &mut prev);
    FAIL_NEXT_SYNC.with(|fail| fail.set(Some(durable.len() as u64)));
    assert!(chain.append(&next, seq, prev.clone(), true).is_err());
    let old = chain.path.clone();
    chain.move_to_new_file(dir.path()).expect("moved");
    assert!(chain
        .path
        .to_string_lossy()
        .ends_with("-000000000002.jsonl"));
    chain.append(&next, seq, prev, true).expect("written");
    assert_eq!(std::fs::read(&old).expect("old"), durable);
    assert_eq!(
        std::fs::read(&chain.path).expect("new"),
        [unsynced, next].concat()
    );
    // Rotation carries the count of records since the last checkpoint.
    chain.since_checkpoint = 2;
    chain.rotate(dir.path()).expect("rotated");
    assert_eq!(chain.since_checkpoint, 2);
}

/// An alert raised by the last records before a stop is written before `audit_stop`, not lost
/// with the stop: here the failed login that reaches the threshold arrives with the stop order.
#[test]
fn an_alert_raised_by_the_last_batch_is_written_before_audit_stop() {
    let dir = tempfile::tempdir().expect("dir");
    let settings = settings(dir.path(), 1000);
    let key = CheckpointKey::load_or_create(&dir.path().join("signing.key")).expect("key");
    let public_key = key.public();
    let jobs = Arc::new(crate::audit::queue::JobQueue::new(16));
    for _ in 0..3 {
        let mut failed = AuditRecord::new("login_failed");
        failed.user = Some("alice".into());
        jobs.push_kept(Job::Record(Box::new(failed), None));
    }
    let (done, stopped) = oneshot::channel();
    assert!(jobs.push_stop(Job::Stop(done)).is_ok());
    let detector = crate::audit::detect::Detector::new(crate::audit::detect::DetectConfig {
        failed_logins_per_account: 3,
        failed_logins_per_ip: 100,
        window: Duration::from_secs(60),
        distinct_patients: 100,
        patient_window: Duration::from_secs(60),
        phi_hours: None,
    });
    let alerts = Alerts {
        detector: Some(detector),
        webhook: None,
    };
    run(
        settings,
        key,
        jobs,
        Arc::new(AtomicBool::new(false)),
        alerts,
    );
    assert_eq!(stopped.blocking_recv(), Ok(()));
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    assert_eq!(files.len(), 1);
    // The stop closes the trail with a signed checkpoint: no record is left covered by the
    // hash chain alone.
    let checks = crate::audit::verify::Checkpoints {
        public_key: &public_key,
        every: 1000,
    };
    let report = crate::audit::verify::verify(&files, Some(checks)).expect("intact");
    assert_eq!((report.checkpoints, report.unsigned_tail), (1, 0));
    let events = events_in(&files.remove(0));
    assert_eq!(
        events,
        [
            "audit_start",
            "login_failed",
            "login_failed",
            "login_failed",
            "alert",
            "audit_stop",
            "checkpoint"
        ]
    );
}
