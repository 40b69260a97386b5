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
    let metrics = proxy.metrics().await;
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

#[tokio::test]
async fn json_request_log_line_carries_request_id_route_status_and_upstream() {
    let backend = Backend::start().await;
    let proxy =
        Wardgate::start(&config(backend.addr, "").replace("[log]\n", "[log]\nformat = \"json\"\n"));
    let response = proxy
        .client()
        .get(proxy.url("/pub/logged"))
        .send()
        .await
        .expect("send");
    let id = response.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_string();
    assert!(proxy.wait_for_log(&id, std::time::Duration::from_secs(2)));
    let line = proxy
        .logs()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|entry| entry["request_id"] == id.as_str())
        .expect("a JSON request line");
    assert_eq!(line["route"], "public");
    assert_eq!(line["status"], 200);
    assert_eq!(line["upstream"], backend.addr.to_string().as_str());
    assert!(line["latency_ms"].as_f64().is_some());
}
