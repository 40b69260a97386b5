//! Backend down: 502; backend too slow: 504; clear JSON body, no panic, proxy keeps serving.

use std::time::Duration;

use crate::support::{config, Backend, Wardgate};

#[tokio::test]
async fn unreachable_backend_is_502_with_a_clear_body() {
    // A port nothing listens on: bind, note it, close.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let proxy = Wardgate::start(&config(closed, ""));
    let client = proxy.client();
    for _ in 0..3 {
        let response = client.get(proxy.url("/pub/x")).send().await.expect("send");
        assert_eq!(response.status(), 502);
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["error"], "bad_gateway");
    }
    assert!(!proxy.logs().contains("panicked"));
}

#[tokio::test]
async fn slow_backend_is_504_and_fast_requests_still_pass() {
    let backend = Backend::start().await;
    let toml = config(backend.addr, "").replace(
        "[upstreams.b]",
        "[proxy]\nresponse_timeout = \"500ms\"\n\n[upstreams.b]",
    );
    let proxy = Wardgate::start(&toml);
    let client = proxy.client();
    let started = std::time::Instant::now();
    let response = client
        .get(proxy.url("/pub/slow?ms=3000"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(3));
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["error"], "gateway_timeout");
    assert_eq!(
        client
            .get(proxy.url("/pub/slow?ms=10"))
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
}

#[tokio::test]
async fn round_robin_skips_a_dead_target_after_ejection() {
    let backend = Backend::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let toml = config(backend.addr, "").replace(
        &format!("targets = [\"http://{}\"]", backend.addr),
        &format!(
            "targets = [\"http://{closed}\", \"http://{}\"]\neject_for = \"1m\"",
            backend.addr
        ),
    );
    let proxy = Wardgate::start(&toml);
    let client = proxy.client();
    // Bodyless GETs are retried on the next target after a connect failure, so all succeed.
    for _ in 0..6 {
        assert_eq!(
            client
                .get(proxy.url("/pub/x"))
                .send()
                .await
                .expect("send")
                .status(),
            200
        );
    }
    assert_eq!(backend.seen().len(), 6);
    assert!(proxy.wait_for_log("ejected", Duration::from_secs(2)));
}
