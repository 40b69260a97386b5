//! The admin listener: health, readiness and Prometheus metrics, kept off the public listener.

use crate::support::{config, Backend, Wardgate};

#[tokio::test]
async fn health_readiness_and_metrics() {
    let backend = Backend::start().await;
    let proxy = Wardgate::start(&config(backend.addr, ""));
    assert_eq!(
        reqwest::get(proxy.admin_url("/healthz"))
            .await
            .expect("healthz")
            .status(),
        200
    );
    assert_eq!(
        reqwest::get(proxy.admin_url("/readyz"))
            .await
            .expect("readyz")
            .status(),
        200
    );
    let client = proxy.client();
    assert_eq!(
        client
            .get(proxy.url("/pub/a"))
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
    assert_eq!(
        client
            .get(proxy.url("/nope"))
            .send()
            .await
            .expect("send")
            .status(),
        404
    );
    let metrics = reqwest::get(proxy.admin_url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("wardgate_requests_total{route=\"public\",status=\"200\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wardgate_requests_total{route=\"-\",status=\"404\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wardgate_request_duration_seconds_bucket{route=\"public\""),
        "{metrics}"
    );
    assert!(metrics.contains("wardgate_open_connections"), "{metrics}");
    // Admin endpoints are not reachable through the public listener.
    assert_eq!(
        client
            .get(proxy.url("/metrics"))
            .send()
            .await
            .expect("send")
            .status(),
        404
    );
    assert_eq!(
        client
            .get(proxy.url("/healthz"))
            .send()
            .await
            .expect("send")
            .status(),
        404
    );
}
