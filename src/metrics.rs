//! Metric names and the Prometheus recorder behind `/metrics`.
//!
//! Names are defined here once so dashboards have one place to look:
//! `wardgate_requests_total{route,status}`, `wardgate_request_duration_seconds{route}`,
//! `wardgate_open_connections`, `wardgate_parked_connections`,
//! `wardgate_rejected_connections_total`, `wardgate_upstream_healthy{upstream,target}`,
//! `wardgate_open_tunnels{route}`.

use std::sync::OnceLock;
use std::time::Duration;

use http::StatusCode;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder once; later calls return the same handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("wardgate_request_duration_seconds".into()),
                    &buckets,
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => handle,
                Err(err) => {
                    tracing::warn!(error = %err, "metrics recorder not installed");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

/// Keeps the recorder's memory bounded: histogram samples accumulate until they are folded
/// into the buckets, which otherwise happens only when `/metrics` is scraped. A proxy nobody
/// scrapes would keep every request's latency sample (8 bytes per request, forever).
pub fn spawn_upkeep(handle: PrometheusHandle) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            handle.run_upkeep();
        }
    });
}

/// Registered handles of one route's request metrics, so counting a request allocates
/// nothing and skips the registry lookup (label strings are built once per route and status).
struct RouteMetrics {
    duration: metrics::Histogram,
    by_status: crate::FastMap<u16, metrics::Counter>,
}

static ROUTES: OnceLock<crate::FastMap<Box<str>, RouteMetrics>> = OnceLock::new();

/// Counts one finished request.
pub fn request(route: &str, status: StatusCode, latency: Duration) {
    let routes = ROUTES.get_or_init(crate::FastMap::default);
    let entry = match routes.get(route) {
        Some(entry) => entry,
        None => {
            let name = route.to_string();
            routes
                .entry(route.into())
                .or_insert_with(|| RouteMetrics {
                    duration: metrics::histogram!("wardgate_request_duration_seconds", "route" => name),
                    by_status: crate::FastMap::default(),
                })
                .downgrade()
        }
    };
    entry.duration.record(latency.as_secs_f64());
    let code = status.as_u16();
    if let Some(counter) = entry.by_status.get(&code) {
        counter.increment(1);
        return;
    }
    let counter = metrics::counter!("wardgate_requests_total", "route" => route.to_string(), "status" => status.as_str().to_string());
    counter.increment(1);
    entry.by_status.insert(code, counter);
}
