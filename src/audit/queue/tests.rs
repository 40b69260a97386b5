//! Unit tests of the audit queue: the reserve, the loss report, waiting for room.

use super::*;

fn record(event: &'static str) -> Job {
    Job::Record(Box::new(AuditRecord::new(event)), None)
}

fn queued(queue: &JobQueue) -> usize {
    let mut jobs = Vec::new();
    queue.drain(usize::MAX, &mut jobs);
    jobs.len()
}

#[test]
fn kept_records_use_the_reserve_then_are_counted_and_reported_once_a_second() {
    let queue = JobQueue::new(2);
    assert!(queue.try_push(record("access"), false).is_ok());
    assert!(queue.try_push(record("access"), false).is_ok());
    assert!(matches!(
        queue.try_push(record("access"), false),
        Err(PushError::Full(_))
    ));
    queue.push_kept(record("login"));
    queue.push_kept(record("login"));
    queue.push_kept(record("login_failed"));
    queue.push_kept(record("access"));
    queue.push_kept(record("access"));
    let alert = queue.take_lost(false).expect("an alert");
    assert_eq!(alert.event, "alert");
    assert_eq!(alert.rule.as_deref(), Some("audit_records_lost"));
    let reason = alert.reason.as_deref().unwrap_or_default();
    assert!(
        reason.starts_with("3 audit record(s)") && reason.contains("(access: 2, login_failed: 1)"),
        "{reason}"
    );
    assert_eq!(queued(&queue), 4, "queue and reserve");
    assert!(queue.take_lost(true).is_none(), "nothing new was lost");

    // Within a second of a report, the next loss waits for the following one (or a stop).
    queue.push_kept(record("access"));
    queue.push_kept(record("access"));
    queue.push_kept(record("access"));
    queue.push_kept(record("access"));
    queue.push_kept(record("access"));
    assert!(queue.take_lost(false).is_none());
    let alert = queue.take_lost(true).expect("reported at stop");
    assert!(alert
        .reason
        .as_deref()
        .is_some_and(|r| r.starts_with("1 audit record(s)")));
}

/// A refusal waiting (up to 5 s) for room in `queue`, checked to be waiting.
async fn waiting_refusal(queue: &std::sync::Arc<JobQueue>) -> tokio::task::JoinHandle<()> {
    let waiting = {
        let queue = std::sync::Arc::clone(queue);
        tokio::spawn(async move {
            queue
                .push_when_room(record("access"), Duration::from_secs(5))
                .await;
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "it waits while there is no room");
    waiting
}

/// A queue of one, full, and a refusal waiting for room in it.
async fn full_queue_with_a_waiting_refusal(
) -> (std::sync::Arc<JobQueue>, tokio::task::JoinHandle<()>) {
    let queue = std::sync::Arc::new(JobQueue::new(1));
    assert!(queue.try_push(record("access"), false).is_ok());
    let waiting = waiting_refusal(&queue).await;
    (queue, waiting)
}

/// Drains `count` jobs, which must wake the `waiting` refusal and let it in.
async fn drain_and_see_it_queued(
    queue: &JobQueue,
    count: usize,
    waiting: tokio::task::JoinHandle<()>,
) {
    let mut jobs = Vec::new();
    queue.drain(count, &mut jobs);
    tokio::time::timeout(Duration::from_secs(1), waiting)
        .await
        .expect("room wakes it")
        .expect("task");
}

#[tokio::test]
async fn a_refusal_waits_for_room_and_gives_up_into_the_reserve() {
    let (queue, waiting) = full_queue_with_a_waiting_refusal().await;
    drain_and_see_it_queued(&queue, 1, waiting).await;
    assert_eq!(queued(&queue), 1);

    // Full and no room made in time: the record goes to the reserve instead.
    assert!(queue.try_push(record("access"), false).is_ok());
    queue
        .push_when_room(record("access"), Duration::from_millis(20))
        .await;
    assert_eq!(queued(&queue), 2);
    assert!(queue.take_lost(true).is_none());
}

#[tokio::test]
async fn waiting_refusals_leave_the_upper_half_to_phi_admissions() {
    let queue = std::sync::Arc::new(JobQueue::new(4));
    queue.push_when_room(record("access"), Duration::ZERO).await;
    queue.push_when_room(record("access"), Duration::ZERO).await;
    let waiting = waiting_refusal(&queue).await;
    assert!(queue.try_push(record("access"), false).is_ok());
    assert!(queue.try_push(record("access"), false).is_ok());
    assert!(matches!(
        queue.try_push(record("access"), false),
        Err(PushError::Full(_))
    ));
    drain_and_see_it_queued(&queue, 3, waiting).await;
    assert_eq!(queued(&queue), 2);
}

#[tokio::test]
async fn a_refusal_dropped_while_it_waits_still_leaves_its_record() {
    let (queue, waiting) = full_queue_with_a_waiting_refusal().await;
    assert_eq!(queue.waiting_for_room.load(Ordering::Acquire), 1);
    waiting.abort();
    assert!(waiting.await.is_err_and(|e| e.is_cancelled()));
    assert_eq!(queue.waiting_for_room.load(Ordering::Acquire), 0);
    assert_eq!(
        queued(&queue),
        2,
        "the aborted refusal's record is in the reserve"
    );
}

#[test]
fn nothing_is_left_behind_a_closed_queue() {
    let queue = JobQueue::new(4);
    assert!(queue.try_push(record("access"), false).is_ok());
    assert!(queue.try_push(record("login"), false).is_ok());
    let mut rest = Vec::new();
    queue.close_and_drain(&mut rest);
    assert_eq!(rest.len(), 2);
    assert!(matches!(
        queue.try_push(record("access"), false),
        Err(PushError::Closed(_))
    ));
    queue.push_kept(record("logout"));
    assert_eq!(queued(&queue), 0);
    let alert = queue
        .take_lost(true)
        .expect("the refused record is reported");
    assert!(alert
        .reason
        .as_deref()
        .is_some_and(|r| r.contains("(logout: 1)")));
}
