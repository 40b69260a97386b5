//! Criterion: audit trail throughput in batched mode (records/s through queue, chaining,
//! group commit and fsync) and the latency strict mode adds (one record made durable).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wardgate::audit::checkpoint::CheckpointKey;
use wardgate::audit::writer::{Alerts, WriterSettings};
use wardgate::audit::{AuditRecord, Auditor};

fn auditor(dir: &std::path::Path) -> Auditor {
    let key = CheckpointKey::load_or_create(&dir.join("key")).expect("key");
    let settings = WriterSettings {
        dir: dir.join("audit"),
        fsync_interval: Duration::from_millis(50),
        max_file_size: 1 << 30,
        checkpoint_every: 1000,
        replica: "bench".into(),
        rotate_every: Duration::from_secs(86_400),
        mirror: None,
    };
    Auditor::start(
        settings,
        key,
        65_536,
        Alerts {
            detector: None,
            webhook: None,
        },
    )
}

fn record(i: u64) -> AuditRecord {
    let mut record = AuditRecord::new("access");
    record.request_id = Some(format!("0b5c1d2e-0000-4000-8000-{i:012}").into());
    record.user = Some("dr.alvarez".into());
    record.roles = Some(["clinician".to_string()].into());
    record.session = Some("5f0c6a1b2c3d4e5f60718293a4b5c6d7".into());
    record.src_ip = Some("10.20.0.5".into());
    record.method = Some("GET".into());
    record.host = Some("portal.example.org".into());
    record.path = Some(format!("/api/patients/{}/records", i % 5000).into());
    record.route = Some("patient-records".into());
    record.patient_id = Some(format!("{}", i % 5000).into());
    record.decision = Some("allow".into());
    record.rule = Some("patient-records/allow[0]".into());
    record.reason = Some("allowed by rule".into());
    record
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = runtime.block_on(async { auditor(dir.path()) });
    runtime.block_on(async {
        while !audit.is_healthy() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    const BATCH: u64 = 10_000;
    let mut group = c.benchmark_group("audit");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(10);
    group.bench_function("batched/10k-records-queued-chained-synced", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                // Records are built by the requests that produce them; what is timed here is
                // the trail itself: queue, chain, serialize, hash, write, fsync.
                let records: Vec<AuditRecord> = (0..BATCH).map(record).collect();
                let started = Instant::now();
                for record in records {
                    // The queue (65,536) holds a whole batch, so this never waits for room.
                    audit.submit(record).expect("queue has room");
                }
                // Waiting for one durable record after the batch means all before it are on disk.
                runtime
                    .block_on(audit.submit_durable(record(BATCH)))
                    .expect("durable");
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();
    c.bench_function("audit/strict-one-record-durable", |b| {
        b.iter(|| {
            runtime
                .block_on(audit.submit_durable(record(1)))
                .expect("durable")
        })
    });
}

mod group {
    #![allow(missing_docs)]
    use super::*;
    criterion_group!(benches, bench);
}

criterion_main!(group::benches);
