//! Active health checks: a background task per pool that GETs each target's health path.
//!
//! The task holds only a weak reference to its pool, so when a reload replaces the pool the
//! old task ends by itself at its next tick.

use std::sync::{Arc, Weak};

use http::{Request, Uri};

use super::upstream::UpstreamPool;
use crate::body;

/// Starts checking `pool` if it has a health check configured.
pub fn spawn(pool: &Arc<UpstreamPool>) {
    let Some(check) = pool.config.health_check.clone() else {
        return;
    };
    let weak: Weak<UpstreamPool> = Arc::downgrade(pool);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(check.interval);
        loop {
            ticker.tick().await;
            let Some(pool) = weak.upgrade() else { return };
            for target in &pool.targets {
                let uri = format!(
                    "{}{}",
                    target.base.to_string().trim_end_matches('/'),
                    check.path
                );
                let healthy = match uri.parse::<Uri>() {
                    Ok(uri) => probe(&pool, uri, check.timeout).await,
                    Err(_) => false,
                };
                if healthy != target.is_healthy() {
                    tracing::warn!(upstream = %pool.name, target = %target.label, healthy, "upstream health changed");
                }
                target.set_healthy(healthy);
                metrics::gauge!("wardgate_upstream_healthy", "upstream" => pool.name.clone(), "target" => target.label.clone())
                    .set(if healthy { 1.0 } else { 0.0 });
            }
        }
    });
}

async fn probe(pool: &UpstreamPool, uri: Uri, timeout: std::time::Duration) -> bool {
    let Ok(request) = Request::get(uri)
        .header("user-agent", "wardgate-health")
        .body(body::empty())
    else {
        return false;
    };
    match tokio::time::timeout(timeout, pool.client().request(request)).await {
        Ok(Ok(response)) => response.status().is_success() || response.status().is_redirection(),
        _ => false,
    }
}
