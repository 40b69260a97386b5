//! The Redis state store: what several Wardgate replicas behind a load balancer share.
//!
//! Key layout (every key starts with `key_prefix`, default `wardgate:`, and has a TTL):
//! ```text
//! s:ID            hash  rec (JSON SessionRecord), last_seen, auth_time   TTL = session lifetime
//! u:USER          set   ids of USER's sessions                           TTL = max lifetime
//! totp:USER       last spent TOTP step                                   TTL = 5 min
//! fail:KEY        hash  count, locked_until                              TTL = 24 h
//! rl:KEY          hits in the current window                             TTL = window
//! grant:ID:ROUTE  break-glass reason                                     TTL = grant duration
//! pending:ID      JSON PendingLogin                                      TTL = login step timeout
//! sso:ID          JSON SsoFlow (taken with GETDEL: one use)              TTL = 10 min
//! revocations     pub/sub channel: `s:ID`, `u:USER`, heartbeat `h`
//! ```
//! Commands run on a small pool of multiplexed, self-reconnecting connections, each under
//! `command_timeout`; any error or timeout is a [`StateError`], which callers turn into 503.
//! Scripts build keys from `ARGV`, so this store targets standalone Redis (optionally behind
//! TLS), not Redis Cluster.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{AsyncCommands, IntoConnectionInfo, RedisResult};

use super::{Failures, LockPolicy, PendingLogin, SessionRecord, SsoFlow, StateError, StateStore};
use crate::config::state::RedisConfig;

mod scripts;
mod watch;

use watch::{Watch, SESSION_PREFIX, USER_PREFIX};

/// How long failure counters are remembered after the last failure.
const FAILURE_MEMORY_SECS: u64 = 24 * 3600;
/// How long a spent TOTP step is remembered (well beyond the ±1 step window).
const TOTP_MEMORY_SECS: u64 = 300;

/// Redis-backed [`StateStore`].
#[derive(Debug)]
pub struct RedisStore {
    pool: Vec<ConnectionManager>,
    next: AtomicUsize,
    prefix: String,
    timeout: Duration,
    watch: Arc<Watch>,
    scripts: scripts::Scripts,
}

impl RedisStore {
    /// Connects lazily (Wardgate starts even while Redis is down, not ready until it answers)
    /// and starts the health and revocation tasks. Fails only on settings that can never work.
    pub fn start(config: &RedisConfig) -> Result<Arc<RedisStore>, String> {
        let client = client(config)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.command_timeout))
            .set_response_timeout(Some(config.command_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let pool = (0..=config.pool_size)
            .map(|_| {
                ConnectionManager::new_lazy_with_config(client.clone(), manager_config.clone())
            })
            .collect::<RedisResult<Vec<_>>>()
            .map_err(|e| format!("state.url: {e}"))?;
        let watch = Arc::new(Watch::new(config.session_cache));
        let channel = format!("{}revocations", config.key_prefix);
        let mut pool = pool;
        let health_conn = pool.pop().ok_or("state.pool_size must be at least 1")?;
        tokio::spawn(watch::health_task(
            Arc::downgrade(&watch),
            health_conn,
            pool.clone(),
            channel.clone(),
            config.command_timeout,
        ));
        tokio::spawn(watch::subscriber_task(
            Arc::downgrade(&watch),
            client,
            channel,
        ));
        metrics::gauge!("wardgate_state_up").set(0.0);
        Ok(Arc::new(RedisStore {
            pool,
            next: AtomicUsize::new(0),
            prefix: config.key_prefix.clone(),
            timeout: config.command_timeout,
            watch,
            scripts: scripts::Scripts::new(),
        }))
    }

    fn conn(&self) -> ConnectionManager {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        self.pool[index].clone()
    }

    fn key(&self, kind: &str, rest: &str) -> String {
        format!("{}{kind}:{rest}", self.prefix)
    }

    fn channel(&self) -> String {
        format!("{}revocations", self.prefix)
    }

    /// Runs one Redis future under the command deadline; failures mark the store down.
    async fn guard<T>(
        &self,
        call: impl std::future::Future<Output = RedisResult<T>>,
    ) -> Result<T, StateError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                self.watch.mark_down(&err.to_string());
                Err(StateError(format!("redis: {err}")))
            }
            Err(_) => {
                self.watch.mark_down("command timed out");
                Err(StateError("redis: command timed out".into()))
            }
        }
    }

    async fn publish(&self, message: String) -> Result<(), StateError> {
        let mut conn = self.conn();
        self.guard(conn.publish::<_, _, i64>(self.channel(), &message))
            .await
            .map(|_| ())
    }

    async fn set_session_field(&self, id: &str, field: &str, value: u64) -> Result<(), StateError> {
        let mut conn = self.conn();
        let mut invocation = self.scripts.set_if_exists.prepare_invoke();
        invocation.key(self.key("s", id)).arg(field).arg(value);
        let call = invocation.invoke_async::<i64>(&mut conn);
        self.guard(call).await.map(|_| ())
    }

    async fn read_session(&self, id: &str) -> Result<Option<SessionRecord>, StateError> {
        let mut conn = self.conn();
        let fields: Vec<Option<String>> = self
            .guard(
                ::redis::cmd("HMGET")
                    .arg(self.key("s", id))
                    .arg(&["rec", "last_seen", "auth_time"])
                    .query_async(&mut conn),
            )
            .await?;
        let [Some(rec), last_seen, auth_time] = fields.as_slice() else {
            return Ok(None);
        };
        let mut record: SessionRecord = serde_json::from_str(rec)
            .map_err(|e| StateError(format!("redis: unreadable session record: {e}")))?;
        if let Some(v) = last_seen.as_deref().and_then(|v| v.parse().ok()) {
            record.last_seen = v;
        }
        if let Some(v) = auth_time.as_deref().and_then(|v| v.parse().ok()) {
            record.auth_time = v;
        }
        Ok(Some(record))
    }
}

fn client(config: &RedisConfig) -> Result<::redis::Client, String> {
    let info = config
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| format!("state.url: {e}"))?;
    let mut settings = info.redis_settings().clone();
    if let Some(user) = &config.username {
        settings = settings.set_username(user);
    }
    if let Some(file) = &config.password_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("state.password_file {}: {e}", file.display()))?;
        let password = text.lines().next().unwrap_or_default().trim();
        if password.is_empty() {
            return Err(format!("state.password_file {} is empty", file.display()));
        }
        settings = settings.set_password(password);
    }
    let info = info.set_redis_settings(settings);
    match &config.ca_file {
        None => ::redis::Client::open(info).map_err(|e| format!("state.url: {e}")),
        Some(ca) => {
            let root_cert =
                std::fs::read(ca).map_err(|e| format!("state.ca_file {}: {e}", ca.display()))?;
            let certs = ::redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            };
            ::redis::Client::build_with_tls(info, certs).map_err(|e| format!("state.url: {e}"))
        }
    }
}

fn secs(ttl: Duration) -> u64 {
    ttl.as_secs().max(1)
}

#[async_trait::async_trait]
impl StateStore for RedisStore {
    fn is_healthy(&self) -> bool {
        self.watch.is_healthy()
    }

    async fn put_session(&self, session: &SessionRecord, ttl: Duration) -> Result<(), StateError> {
        let record = serde_json::to_string(session)
            .map_err(|e| StateError(format!("cannot encode session: {e}")))?;
        let (key, index) = (self.key("s", &session.id), self.key("u", &session.user));
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .hset_multiple(
                &key,
                &[
                    ("rec", record),
                    ("last_seen", session.last_seen.to_string()),
                    ("auth_time", session.auth_time.to_string()),
                ],
            )
            .ignore()
            .expire(&key, secs(ttl) as i64)
            .ignore()
            .sadd(&index, &*session.id)
            .ignore()
            .expire(&index, secs(ttl) as i64)
            .ignore();
        let mut conn = self.conn();
        self.guard(pipe.query_async::<()>(&mut conn)).await
    }

    async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StateError> {
        if let Some(record) = self.watch.cached(id) {
            return Ok(Some(record));
        }
        let before = self.watch.revocations();
        let record = self.read_session(id).await?;
        if let Some(record) = &record {
            self.watch.remember(record, before);
        }
        Ok(record)
    }

    async fn set_auth_time(&self, id: &str, auth_time: u64) -> Result<(), StateError> {
        self.set_session_field(id, "auth_time", auth_time).await?;
        // Other replicas' caches hold the old auth time: drop them like a revocation would.
        self.publish(format!("{SESSION_PREFIX}{id}")).await
    }

    async fn touch_session(&self, id: &str, now: u64) -> Result<(), StateError> {
        self.set_session_field(id, "last_seen", now).await?;
        self.watch.touched(id, now);
        Ok(())
    }

    async fn revoke_session(&self, id: &str) -> Result<bool, StateError> {
        let mut conn = self.conn();
        let removed: i64 = self.guard(conn.del(self.key("s", id))).await?;
        self.watch.apply(&format!("{SESSION_PREFIX}{id}"));
        self.publish(format!("{SESSION_PREFIX}{id}")).await?;
        Ok(removed > 0)
    }

    async fn revoke_user(&self, user: &str) -> Result<usize, StateError> {
        let mut conn = self.conn();
        let mut invocation = self.scripts.revoke_user.prepare_invoke();
        invocation.key(self.key("u", user)).arg(self.key("s", ""));
        let call = invocation.invoke_async::<i64>(&mut conn);
        let revoked = self.guard(call).await?;
        self.watch.apply(&format!("{USER_PREFIX}{user}"));
        self.publish(format!("{USER_PREFIX}{user}")).await?;
        Ok(usize::try_from(revoked).unwrap_or(0))
    }

    async fn list_sessions(&self, user: Option<&str>) -> Result<Vec<SessionRecord>, StateError> {
        let mut conn = self.conn();
        let ids: Vec<String> = match user {
            Some(user) => self.guard(conn.smembers(self.key("u", user))).await?,
            None => {
                let pattern = self.key("s", "*");
                let prefix_len = self.key("s", "").len();
                let mut keys: Vec<String> = Vec::new();
                let mut cursor: u64 = 0;
                loop {
                    let (next, batch): (u64, Vec<String>) = self
                        .guard(
                            ::redis::cmd("SCAN")
                                .arg(cursor)
                                .arg("MATCH")
                                .arg(&pattern)
                                .arg("COUNT")
                                .arg(1000)
                                .query_async(&mut conn),
                        )
                        .await?;
                    keys.extend(batch.into_iter().map(|k| k[prefix_len..].to_string()));
                    if next == 0 {
                        break keys;
                    }
                    cursor = next;
                }
            }
        };
        let mut sessions = Vec::with_capacity(ids.len());
        for id in ids {
            match (self.read_session(&id).await?, user) {
                (Some(record), _) => sessions.push(record),
                (None, Some(user)) => {
                    // An expired session leaves its id in the user's set: tidy it up.
                    let _: i64 = self.guard(conn.srem(self.key("u", user), &id)).await?;
                }
                (None, None) => {}
            }
        }
        Ok(sessions)
    }

    async fn use_totp_step(&self, user: &str, step: u64) -> Result<bool, StateError> {
        let mut conn = self.conn();
        let mut invocation = self.scripts.use_totp_step.prepare_invoke();
        invocation
            .key(self.key("totp", user))
            .arg(step)
            .arg(TOTP_MEMORY_SECS);
        let call = invocation.invoke_async::<i64>(&mut conn);
        Ok(self.guard(call).await? == 1)
    }

    async fn failures(&self, key: &str) -> Result<Failures, StateError> {
        let mut conn = self.conn();
        let fields: Vec<Option<u64>> = self
            .guard(
                ::redis::cmd("HMGET")
                    .arg(self.key("fail", key))
                    .arg(&["count", "locked_until"])
                    .query_async(&mut conn),
            )
            .await?;
        let field = |i: usize| fields.get(i).copied().flatten().unwrap_or(0);
        Ok(Failures {
            count: u32::try_from(field(0)).unwrap_or(u32::MAX),
            locked_until: field(1),
        })
    }

    async fn add_failure(
        &self,
        key: &str,
        now: u64,
        policy: LockPolicy,
    ) -> Result<Failures, StateError> {
        let mut conn = self.conn();
        let mut invocation = self.scripts.add_failure.prepare_invoke();
        invocation
            .key(self.key("fail", key))
            .arg(now)
            .arg(policy.free_failures)
            .arg(policy.base_secs)
            .arg(policy.max_secs)
            .arg(policy.hard_limit)
            .arg(FAILURE_MEMORY_SECS);
        let call = invocation.invoke_async::<(u64, u64)>(&mut conn);
        let (count, locked_until) = self.guard(call).await?;
        Ok(Failures {
            count: u32::try_from(count).unwrap_or(u32::MAX),
            locked_until,
        })
    }

    async fn clear_failures(&self, key: &str) -> Result<(), StateError> {
        let mut conn = self.conn();
        self.guard(conn.del::<_, i64>(self.key("fail", key)))
            .await
            .map(|_| ())
    }

    async fn hit_rate_limit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Result<Result<(), u64>, StateError> {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut conn = self.conn();
        let mut invocation = self.scripts.hit_rate_limit.prepare_invoke();
        invocation.key(self.key("rl", key)).arg(window_ms);
        let call = invocation.invoke_async::<(u64, i64)>(&mut conn);
        let (hits, left_ms) = self.guard(call).await?;
        if hits > u64::from(limit) {
            let retry = u64::try_from(left_ms).unwrap_or(0).div_ceil(1000).max(1);
            return Ok(Err(retry));
        }
        Ok(Ok(()))
    }

    async fn put_grant(
        &self,
        id: &str,
        route: &str,
        reason: &str,
        ttl: Duration,
    ) -> Result<(), StateError> {
        let mut conn = self.conn();
        let key = self.key("grant", &format!("{id}:{route}"));
        self.guard(conn.set_ex::<_, _, ()>(key, reason, secs(ttl)))
            .await
    }

    async fn get_grant(&self, id: &str, route: &str) -> Result<Option<String>, StateError> {
        let mut conn = self.conn();
        let key = self.key("grant", &format!("{id}:{route}"));
        self.guard(conn.get(key)).await
    }

    async fn put_pending(
        &self,
        id: &str,
        pending: &PendingLogin,
        ttl: Duration,
    ) -> Result<(), StateError> {
        let value = serde_json::to_string(pending)
            .map_err(|e| StateError(format!("cannot encode login: {e}")))?;
        let mut conn = self.conn();
        self.guard(conn.set_ex::<_, _, ()>(self.key("pending", id), value, secs(ttl)))
            .await
    }

    async fn get_pending(&self, id: &str) -> Result<Option<PendingLogin>, StateError> {
        let mut conn = self.conn();
        let value: Option<String> = self.guard(conn.get(self.key("pending", id))).await?;
        value
            .map(|v| {
                serde_json::from_str(&v)
                    .map_err(|e| StateError(format!("redis: unreadable login: {e}")))
            })
            .transpose()
    }

    async fn drop_pending(&self, id: &str) -> Result<(), StateError> {
        let mut conn = self.conn();
        self.guard(conn.del::<_, i64>(self.key("pending", id)))
            .await
            .map(|_| ())
    }

    async fn put_sso_flow(
        &self,
        id: &str,
        flow: &SsoFlow,
        ttl: Duration,
    ) -> Result<(), StateError> {
        let value = serde_json::to_string(flow)
            .map_err(|e| StateError(format!("cannot encode sign-on: {e}")))?;
        let mut conn = self.conn();
        self.guard(conn.set_ex::<_, _, ()>(self.key("sso", id), value, secs(ttl)))
            .await
    }

    async fn take_sso_flow(&self, id: &str) -> Result<Option<SsoFlow>, StateError> {
        let mut conn = self.conn();
        // GETDEL: read and spend in one step, so two replicas cannot both use one callback.
        let value: Option<String> = self
            .guard(
                ::redis::cmd("GETDEL")
                    .arg(self.key("sso", id))
                    .query_async(&mut conn),
            )
            .await?;
        value
            .map(|v| {
                serde_json::from_str(&v)
                    .map_err(|e| StateError(format!("redis: unreadable sign-on: {e}")))
            })
            .transpose()
    }
}
