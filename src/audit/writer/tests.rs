//! Restart: where the writer takes up the chain, and what it refuses to cut off.

use super::*;

/// Writes `count` chained records starting after (`seq`, `prev`) to `path`; returns the new
/// (`seq`, `prev`).
fn write_records(path: &Path, count: usize, mut seq: u64, mut prev: String) -> (u64, String) {
    let mut buffer = Vec::new();
    let replica = super::super::Text::from("test");
    for _ in 0..count {
        let mut record = AuditRecord::new("access");
        append(&mut buffer, &mut record, &mut seq, &mut prev, &replica).expect("append");
    }
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
