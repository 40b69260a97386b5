//! Upstream pools: round robin over targets, skipping those that are down.
//!
//! A target is skipped while an active health check says it is unhealthy, or for `eject_for`
//! after a connection to it failed (passive ejection). When every target is down the pool
//! still tries one in turn rather than refusing outright, so a backend that has just come back
//! is found without waiting out the ejection period.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::Uri;

use super::client::{self, UpstreamClient};
use crate::config::{ProxyConfig, UpstreamConfig};

/// One backend address in a pool.
#[derive(Debug)]
pub struct Target {
    /// `scheme://host:port`.
    pub base: Uri,
    /// Where requests to this target go (`base`'s scheme and authority).
    pub origin: client::Origin,
    /// Label for logs and metrics (`host:port`).
    pub label: crate::audit::record::Text,
    healthy: AtomicBool,
    ejected_until_ms: AtomicU64,
}

/// A named set of targets with its forwarding client.
pub struct UpstreamPool {
    /// Pool name from the config.
    pub name: String,
    /// The targets in config order.
    pub targets: Vec<Target>,
    /// One client (with its own connection pool) per serving thread: an upstream connection
    /// is then driven by the thread whose requests use it.
    serving_clients: Vec<UpstreamClient>,
    /// The client of every other thread (health checks).
    other_client: UpstreamClient,
    /// Health-check settings, if any.
    pub config: UpstreamConfig,
    next: AtomicUsize,
    epoch: Instant,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("name", &self.name)
            .field("targets", &self.targets)
            .finish()
    }
}

// === impl Target ===

impl Target {
    /// Whether the last active health check passed (true until the first check).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Records an active health-check result.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }
}

// === impl UpstreamPool ===

impl UpstreamPool {
    /// Builds the pool and a client for each of `serve_threads` serving threads and one more
    /// for the other threads.
    pub fn new(
        name: &str,
        config: &UpstreamConfig,
        proxy: &ProxyConfig,
        serve_threads: usize,
    ) -> Result<UpstreamPool, String> {
        let build = || {
            client::build(
                config.ca_file.as_deref(),
                proxy.connect_timeout,
                proxy.pool_idle_timeout,
            )
            .map_err(|err| format!("upstream `{name}`: {err}"))
        };
        let serving_clients = (0..serve_threads)
            .map(|_| build())
            .collect::<Result<Vec<_>, _>>()?;
        let other_client = build()?;
        let targets = config
            .targets
            .iter()
            .map(|uri| {
                // The config accepts only http(s) targets with a host.
                let origin = client::Origin::of(uri)
                    .ok_or_else(|| format!("upstream `{name}`: target {uri} names no origin"))?;
                Ok(Target {
                    base: uri.clone(),
                    origin,
                    label: uri.authority().map_or("", |a| a.as_str()).into(),
                    healthy: AtomicBool::new(true),
                    ejected_until_ms: AtomicU64::new(0),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(UpstreamPool {
            name: name.to_string(),
            targets,
            serving_clients,
            other_client,
            config: config.clone(),
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
        })
    }

    /// The client of the calling thread (see `server/workers.rs`).
    pub fn client(&self) -> &UpstreamClient {
        crate::server::workers::index()
            .checked_sub(1)
            .and_then(|serving| self.serving_clients.get(serving))
            .unwrap_or(&self.other_client)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The next target in round-robin order that is neither unhealthy nor ejected; if all
    /// are down, the next one regardless. `None` only for an empty pool.
    pub fn pick(&self) -> Option<&Target> {
        let count = self.targets.len();
        if count == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        (0..count)
            .map(|offset| &self.targets[(start + offset) % count])
            .find(|t| t.is_healthy() && t.ejected_until_ms.load(Ordering::Relaxed) <= now)
            .or_else(|| self.targets.get(start % count))
    }

    /// Passive ejection after a failed connection.
    pub fn eject(&self, target: &Target) {
        let until = self
            .now_ms()
            .saturating_add(duration_ms(self.config.eject_for));
        target.ejected_until_ms.store(until, Ordering::Relaxed);
        tracing::warn!(upstream = %self.name, target = %target.label, "upstream target ejected after connect failure");
    }

    /// Clears ejection after a successful exchange.
    pub fn restore(&self, target: &Target) {
        if target.ejected_until_ms.load(Ordering::Relaxed) != 0 {
            target.ejected_until_ms.store(0, Ordering::Relaxed);
        }
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
