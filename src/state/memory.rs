//! The in-memory state store (dashmap): the embedded default for a single Wardgate.
//!
//! Every entry carries an expiry and a sweeper task removes expired entries once a minute, so
//! memory stays bounded however many names an attacker submits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::{Failures, LockPolicy, PendingLogin, SessionRecord, SsoFlow, StateError, StateStore};

/// How long failure counters are remembered after the last failure.
const FAILURE_MEMORY: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug)]
struct Expiring<T> {
    value: T,
    until: Instant,
}

/// dashmap-backed [`StateStore`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    sessions: crate::FastMap<String, Expiring<SessionRecord>>,
    totp_steps: DashMap<String, Expiring<u64>>,
    failures: DashMap<String, Expiring<Failures>>,
    windows: DashMap<String, Expiring<u32>>,
    pending: DashMap<String, Expiring<PendingLogin>>,
    sso_flows: DashMap<String, Expiring<SsoFlow>>,
    grants: DashMap<(String, String), Expiring<String>>,
}

fn live<T>(entry: &Expiring<T>) -> bool {
    entry.until > Instant::now()
}

impl MemoryStore {
    /// A store with its sweeper task running (must be called inside the runtime).
    pub fn start() -> Arc<MemoryStore> {
        let store = Arc::new(MemoryStore::default());
        let weak = Arc::downgrade(&store);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(60));
            loop {
                ticker.tick().await;
                let Some(store) = weak.upgrade() else { return };
                store.sweep();
            }
        });
        store
    }

    fn sweep(&self) {
        self.sessions.retain(|_, e| live(e));
        self.totp_steps.retain(|_, e| live(e));
        self.failures.retain(|_, e| live(e));
        self.windows.retain(|_, e| live(e));
        self.pending.retain(|_, e| live(e));
        self.sso_flows.retain(|_, e| live(e));
        self.grants.retain(|_, e| live(e));
    }
}

#[async_trait::async_trait]
impl StateStore for MemoryStore {
    async fn put_session(&self, session: &SessionRecord, ttl: Duration) -> Result<(), StateError> {
        let until = Instant::now() + ttl;
        self.sessions.insert(
            session.id.to_string(),
            Expiring {
                value: session.clone(),
                until,
            },
        );
        Ok(())
    }

    async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StateError> {
        Ok(self
            .sessions
            .get(id)
            .filter(|e| live(e))
            .map(|e| e.value.clone()))
    }

    async fn touch_session(&self, id: &str, now: u64) -> Result<(), StateError> {
        if let Some(mut entry) = self.sessions.get_mut(id) {
            entry.value.last_seen = now;
        }
        Ok(())
    }

    async fn set_auth_time(&self, id: &str, auth_time: u64) -> Result<(), StateError> {
        if let Some(mut entry) = self.sessions.get_mut(id) {
            entry.value.auth_time = auth_time;
        }
        Ok(())
    }

    async fn revoke_session(&self, id: &str) -> Result<bool, StateError> {
        Ok(self.sessions.remove(id).is_some())
    }

    async fn revoke_user(&self, user: &str) -> Result<usize, StateError> {
        let before = self.sessions.len();
        self.sessions.retain(|_, e| *e.value.user != *user);
        Ok(before.saturating_sub(self.sessions.len()))
    }

    async fn list_sessions(&self, user: Option<&str>) -> Result<Vec<SessionRecord>, StateError> {
        Ok(self
            .sessions
            .iter()
            .filter(|e| live(e.value()) && user.is_none_or(|u| *e.value().value.user == *u))
            .map(|e| e.value().value.clone())
            .collect())
    }

    async fn use_totp_step(&self, user: &str, step: u64) -> Result<bool, StateError> {
        let until = Instant::now() + Duration::from_secs(300);
        let mut entry = self
            .totp_steps
            .entry(user.to_string())
            .or_insert(Expiring { value: 0, until });
        if live(&entry) && entry.value >= step {
            return Ok(false);
        }
        *entry = Expiring { value: step, until };
        Ok(true)
    }

    async fn failures(&self, key: &str) -> Result<Failures, StateError> {
        Ok(self
            .failures
            .get(key)
            .filter(|e| live(e))
            .map(|e| e.value)
            .unwrap_or_default())
    }

    async fn add_failure(
        &self,
        key: &str,
        now: u64,
        policy: LockPolicy,
    ) -> Result<Failures, StateError> {
        let until = Instant::now() + FAILURE_MEMORY;
        let mut entry = self.failures.entry(key.to_string()).or_insert(Expiring {
            value: Failures::default(),
            until,
        });
        if !live(&entry) {
            entry.value = Failures::default();
        }
        entry.until = until;
        entry.value.count = entry.value.count.saturating_add(1);
        let lock = policy.lock_for(entry.value.count);
        if lock > 0 {
            entry.value.locked_until = now.saturating_add(lock);
        }
        Ok(entry.value)
    }

    async fn clear_failures(&self, key: &str) -> Result<(), StateError> {
        self.failures.remove(key);
        Ok(())
    }

    async fn hit_rate_limit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Result<Result<(), u64>, StateError> {
        let now = Instant::now();
        let mut entry = self.windows.entry(key.to_string()).or_insert(Expiring {
            value: 0,
            until: now + window,
        });
        if !live(&entry) {
            *entry = Expiring {
                value: 0,
                until: now + window,
            };
        }
        entry.value = entry.value.saturating_add(1);
        if entry.value > limit {
            let retry = entry.until.saturating_duration_since(now).as_secs().max(1);
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
        let until = Instant::now() + ttl;
        self.grants.insert(
            (id.to_string(), route.to_string()),
            Expiring {
                value: reason.to_string(),
                until,
            },
        );
        Ok(())
    }

    async fn get_grant(&self, id: &str, route: &str) -> Result<Option<String>, StateError> {
        Ok(self
            .grants
            .get(&(id.to_string(), route.to_string()))
            .filter(|e| live(e))
            .map(|e| e.value.clone()))
    }

    async fn put_pending(
        &self,
        id: &str,
        pending: &PendingLogin,
        ttl: Duration,
    ) -> Result<(), StateError> {
        let until = Instant::now() + ttl;
        self.pending.insert(
            id.to_string(),
            Expiring {
                value: pending.clone(),
                until,
            },
        );
        Ok(())
    }

    async fn get_pending(&self, id: &str) -> Result<Option<PendingLogin>, StateError> {
        Ok(self
            .pending
            .get(id)
            .filter(|e| live(e))
            .map(|e| e.value.clone()))
    }

    async fn drop_pending(&self, id: &str) -> Result<(), StateError> {
        self.pending.remove(id);
        Ok(())
    }

    async fn put_sso_flow(
        &self,
        id: &str,
        flow: &SsoFlow,
        ttl: Duration,
    ) -> Result<(), StateError> {
        let until = Instant::now() + ttl;
        self.sso_flows.insert(
            id.to_string(),
            Expiring {
                value: flow.clone(),
                until,
            },
        );
        Ok(())
    }

    async fn take_sso_flow(&self, id: &str) -> Result<Option<SsoFlow>, StateError> {
        Ok(self
            .sso_flows
            .remove(id)
            .map(|(_, e)| e)
            .filter(live)
            .map(|e| e.value))
    }
}
