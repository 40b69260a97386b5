//! Health of the Redis connection and the local session cache that depends on it.
//!
//! Looking a session up in Redis on every request costs a round trip, so verified sessions are
//! remembered locally for `session_cache` (1 s by default). A cached session must never outlive
//! its revocation, so the cache is only trusted while this replica *provably* hears the
//! revocation channel: every half second the health task publishes a heartbeat on it, and the
//! cache answers only if that heartbeat came back through the subscription recently. Any
//! doubt — Redis down, subscription lost, heartbeat late — empties the cache and every lookup
//! goes to Redis again (which then fails closed if Redis is down).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
#[cfg(test)]
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures_util::StreamExt;

use crate::state::SessionRecord;

/// How often the health task pings Redis and publishes a heartbeat.
pub(super) const HEARTBEAT: Duration = Duration::from_millis(500);
/// A heartbeat older than this means the subscription cannot be trusted.
const HEARTBEAT_STALE: Duration = Duration::from_millis(1500);
/// Upper bound of cached sessions; beyond it the cache starts over (memory stays bounded).
const CACHE_LIMIT: usize = 100_000;

/// Revocation channel messages.
pub(super) const HEARTBEAT_MESSAGE: &str = "h";
/// Prefix of a one-session revocation message (`s:ID`).
pub(super) const SESSION_PREFIX: &str = "s:";
/// Prefix of a whole-user revocation message (`u:NAME`).
pub(super) const USER_PREFIX: &str = "u:";

/// Shared between the store, its health task and its subscriber task.
#[derive(Debug)]
pub(super) struct Watch {
    started: Instant,
    healthy: AtomicBool,
    /// Milliseconds since `started` when the last heartbeat arrived through the subscription.
    last_heartbeat_ms: AtomicU64,
    cache_for: Duration,
    cache: DashMap<String, (SessionRecord, Instant)>,
    /// Counts revocations applied (and cache flushes): a session read from Redis is remembered
    /// only if none was applied while it was being read, or a revocation that overtook the
    /// read would be undone by caching the record it deleted.
    revocations: AtomicU64,
}

impl Watch {
    pub(super) fn new(cache_for: Duration) -> Self {
        Self {
            started: Instant::now(),
            healthy: AtomicBool::new(false),
            last_heartbeat_ms: AtomicU64::new(0),
            cache_for,
            cache: DashMap::new(),
            revocations: AtomicU64::new(0),
        }
    }

    pub(super) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Records a failed command or ping: fail closed until the next successful ping.
    pub(super) fn mark_down(&self, why: &str) {
        if self.healthy.swap(false, Ordering::AcqRel) {
            tracing::error!(error = %why, "state store unavailable: requests that need it are refused (503) until Redis answers again");
            metrics::gauge!("wardgate_state_up").set(0.0);
        }
        metrics::counter!("wardgate_state_errors_total").increment(1);
        self.revocations.fetch_add(1, Ordering::AcqRel);
        self.cache.clear();
    }

    fn mark_up(&self) {
        if !self.healthy.swap(true, Ordering::AcqRel) {
            tracing::info!("state store reachable");
            metrics::gauge!("wardgate_state_up").set(1.0);
        }
    }

    fn heard_heartbeat(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_heartbeat_ms.store(now, Ordering::Release);
    }

    /// Whether revocations are reaching this replica right now.
    fn subscription_live(&self) -> bool {
        let last = Duration::from_millis(self.last_heartbeat_ms.load(Ordering::Acquire));
        self.is_healthy()
            && last > Duration::ZERO
            && self.started.elapsed().saturating_sub(last) < HEARTBEAT_STALE
    }

    /// A session verified less than `cache_for` ago, if the cache may be trusted.
    pub(super) fn cached(&self, id: &str) -> Option<SessionRecord> {
        if self.cache_for.is_zero() || !self.subscription_live() {
            return None;
        }
        let entry = self.cache.get(id)?;
        (entry.1.elapsed() < self.cache_for).then(|| entry.0.clone())
    }

    /// The revocation count to pass to [`Watch::remember`], taken before reading a session.
    pub(super) fn revocations(&self) -> u64 {
        self.revocations.load(Ordering::Acquire)
    }

    /// Caches a session read from Redis, unless a revocation was applied since `before` (the
    /// count taken before the read).
    pub(super) fn remember(&self, record: &SessionRecord, before: u64) {
        if self.cache_for.is_zero() || !self.subscription_live() {
            return;
        }
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache
            .insert(record.id.to_string(), (record.clone(), Instant::now()));
        // A revocation applied during the read or the insert: drop what was just cached.
        if self.revocations() != before {
            self.cache.remove(&*record.id);
        }
    }

    /// Keeps the cached copy's `last_seen` in step with what this replica wrote.
    pub(super) fn touched(&self, id: &str, now: u64) {
        if let Some(mut entry) = self.cache.get_mut(id) {
            entry.0.last_seen = now;
        }
    }

    /// Applies one revocation message (from this replica or another).
    pub(super) fn apply(&self, message: &str) {
        if message == HEARTBEAT_MESSAGE {
            self.heard_heartbeat();
        } else if let Some(id) = message.strip_prefix(SESSION_PREFIX) {
            self.revocations.fetch_add(1, Ordering::AcqRel);
            self.cache.remove(id);
        } else if let Some(user) = message.strip_prefix(USER_PREFIX) {
            self.revocations.fetch_add(1, Ordering::AcqRel);
            self.cache.retain(|_, (record, _)| *record.user != *user);
        }
    }

    fn forget_all(&self) {
        self.last_heartbeat_ms.store(0, Ordering::Release);
        self.revocations.fetch_add(1, Ordering::AcqRel);
        self.cache.clear();
    }
}

/// Pings Redis (by publishing the heartbeat) every [`HEARTBEAT`] and keeps `watch` current.
/// While the store is down it also pings every pooled connection, so each one has reconnected
/// before the store is declared up again (a command never meets a stale connection first).
pub(super) async fn health_task(
    watch: std::sync::Weak<Watch>,
    mut conn: ::redis::aio::ConnectionManager,
    pool: Vec<::redis::aio::ConnectionManager>,
    channel: String,
    timeout: Duration,
) {
    let mut ticker = tokio::time::interval(HEARTBEAT);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(watch) = watch.upgrade() else { return };
        let mut command = ::redis::cmd("PUBLISH");
        command.arg(&channel).arg(HEARTBEAT_MESSAGE);
        let mut outcome = ping(timeout, command.query_async::<i64>(&mut conn)).await;
        if outcome.is_ok() && !watch.is_healthy() {
            for member in &pool {
                let mut member = member.clone();
                let command = ::redis::cmd("PING");
                let probe = command.query_async::<String>(&mut member);
                outcome = outcome.and(ping(timeout, probe).await);
            }
        }
        match outcome {
            Ok(()) => watch.mark_up(),
            Err(why) => watch.mark_down(&why),
        }
    }
}

async fn ping<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = ::redis::RedisResult<T>>,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("ping timed out".into()),
    }
}

/// Listens on the revocation channel, reconnecting with back-off for as long as `watch` lives.
pub(super) async fn subscriber_task(
    watch: std::sync::Weak<Watch>,
    client: ::redis::Client,
    channel: String,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match subscribe(&watch, &client, &channel).await {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(err) => tracing::debug!(error = %err, "revocation subscription failed"),
        }
        let Some(alive) = watch.upgrade() else { return };
        alive.forget_all();
        drop(alive);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn subscribe(
    watch: &std::sync::Weak<Watch>,
    client: &::redis::Client,
    channel: &str,
) -> Result<(), ::redis::RedisError> {
    let connect = client.get_async_pubsub();
    let mut pubsub = match tokio::time::timeout(Duration::from_secs(2), connect).await {
        Ok(conn) => conn?,
        Err(_) => return Ok(()),
    };
    pubsub.subscribe(channel).await?;
    let mut messages = pubsub.on_message();
    loop {
        let next = tokio::time::timeout(HEARTBEAT_STALE, messages.next()).await;
        let Some(watch) = watch.upgrade() else {
            return Ok(());
        };
        match next {
            Ok(Some(message)) => {
                if let Ok(text) = message.get_payload::<String>() {
                    watch.apply(&text);
                }
            }
            // The stream ended or went quiet although heartbeats are published: reconnect.
            Ok(None) | Err(_) => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> SessionRecord {
        SessionRecord {
            id: id.into(),
            user: "dave".into(),
            auth_time: 0,
            created: 0,
            auth_ms: 0,
            last_seen: 0,
            amr: Arc::from(vec!["pwd".to_string(), "otp".to_string()]),
            source_ip: "127.0.0.1".into(),
            sso: None,
        }
    }

    /// A revocation that arrives while a session is being read from Redis wins: the record
    /// read before it is not cached (it would otherwise serve for up to `session_cache`).
    #[test]
    fn a_revocation_during_the_read_keeps_the_record_out_of_the_cache() {
        let watch = Watch::new(Duration::from_secs(10));
        watch.mark_up();
        // A heartbeat heard at the watch's first millisecond would read as none.
        std::thread::sleep(Duration::from_millis(5));
        watch.heard_heartbeat();
        let before = watch.revocations();
        watch.apply("s:abc");
        watch.remember(&record("abc"), before);
        assert_eq!(watch.cached("abc"), None);
        let before = watch.revocations();
        watch.remember(&record("abc"), before);
        assert_eq!(watch.cached("abc"), Some(record("abc")));
        watch.apply("u:dave");
        assert_eq!(watch.cached("abc"), None);
    }
}
