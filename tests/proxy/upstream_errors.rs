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

#[tokio::test]
async fn https_upstream_is_verified_against_its_configured_ca_only() {
    let backend_ca = crate::support::certs::TestCa::new("Backend CA");
    let other_ca = crate::support::certs::TestCa::new("Other CA");
    let leaf = backend_ca.leaf("ehr-backend", &["127.0.0.1"], false);
    let backend = Backend::start_tls(&leaf.cert_pem, &leaf.key_pem).await;
    for (ca, expected) in [(&backend_ca, 200), (&other_ca, 502)] {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("backend-ca.pem"), &ca.cert_pem).expect("write");
        let toml = config(backend.addr, "").replace(
            &format!("targets = [\"http://{}\"]", backend.addr),
            &format!(
                "targets = [\"https://{}\"]\nca_file = \"backend-ca.pem\"",
                backend.addr
            ),
        );
        let path = dir.path().join("wardgate.toml");
        std::fs::write(&path, toml).expect("write");
        let proxy = Wardgate::start_in(dir, path);
        let response = proxy
            .client()
            .get(proxy.url("/pub/tls"))
            .send()
            .await
            .expect("send");
        assert_eq!(
            response.status(),
            expected,
            "CA {}",
            if expected == 200 { "right" } else { "wrong" }
        );
    }
    assert_eq!(
        backend.seen().len(),
        1,
        "only the correctly verified connection may carry a request"
    );
}

#[tokio::test]
async fn oversized_request_head_is_refused() {
    let backend = Backend::start().await;
    let toml =
        config(backend.addr, "").replace("[log]", "[limits]\nmax_header_size = \"16KiB\"\n\n[log]");
    let proxy = Wardgate::start(&toml);
    let client = proxy.client_builder().http1_only().build().expect("client");
    let big = "a".repeat(32 * 1024);
    let status = client
        .get(proxy.url("/pub/x"))
        .header("x-big", &big)
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert!(matches!(status, Ok(431) | Ok(400) | Err(_)), "{status:?}");
    let h2 = proxy
        .client()
        .get(proxy.url("/pub/x"))
        .header("x-big", &big)
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert!(matches!(h2, Ok(431) | Ok(400) | Err(_)), "{h2:?}");
    assert!(backend.seen().is_empty());
    assert_eq!(
        proxy
            .client()
            .get(proxy.url("/pub/x"))
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_accept() {
    let backend = Backend::start().await;
    let toml = config(backend.addr, "").replace("[log]", "[limits]\nmax_connections = 2\n\n[log]");
    let proxy = Wardgate::start(&toml);
    let ca = proxy.dev_cert();
    let first = crate::support::raw::connect(
        proxy.public,
        crate::support::raw::client_config(&ca, &[b"http/1.1"]),
    )
    .await;
    let second = crate::support::raw::connect(
        proxy.public,
        crate::support::raw::client_config(&ca, &[b"http/1.1"]),
    )
    .await;
    assert!(first.is_ok() && second.is_ok());
    let third = crate::support::raw::connect(
        proxy.public,
        crate::support::raw::client_config(&ca, &[b"http/1.1"]),
    )
    .await;
    assert!(third.is_err(), "third connection was accepted");
    assert!(proxy.wait_for_log("connection limit reached", Duration::from_secs(2)));
    drop((first, second));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        proxy
            .client()
            .get(proxy.url("/pub/x"))
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
}

/// A client that stops reading a response is disconnected after `send_timeout` instead of
/// holding its connection (and its slot under `max_connections`) for ever.
#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_after_send_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = Backend::start().await;
    let toml = config(backend.addr, "").replace(
        "[log]",
        "[limits]\nsend_timeout = \"2s\"\nmax_connections = 1\n\n[log]",
    );
    let proxy = Wardgate::start(&toml);
    let ca = proxy.dev_cert();
    let mut stalled = crate::support::raw::connect(
        proxy.public,
        crate::support::raw::client_config(&ca, &[b"http/1.1"]),
    )
    .await
    .expect("tls");
    // 256 MiB that the client never reads: the socket buffers fill and hyper stops asking.
    stalled
        .write_all(b"GET /pub/stream?bytes=268435456 HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("request");
    // Waited for without blocking this runtime, which also runs the backend.
    let mut disconnected = false;
    for _ in 0..150 {
        if proxy.logs().contains("took nothing more of a response") {
            disconnected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(disconnected, "{}", proxy.logs());
    // The connection was closed: reading what was buffered ends well short of the body.
    let mut received = 0usize;
    let mut buffer = vec![0u8; 1 << 16];
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stalled.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n,
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the stalled connection was not closed");
    assert!(received < 268_435_456, "{received} bytes");
    // Its slot is free again.
    let mut fresh = None;
    for _ in 0..40 {
        if let Ok(stream) = crate::support::raw::connect(
            proxy.public,
            crate::support::raw::client_config(&ca, &[b"http/1.1"]),
        )
        .await
        {
            fresh = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(fresh.is_some(), "the slot was not freed");
}

/// A backend that hangs in the middle of a response body does not hold the client for ever:
/// after `upstream_idle_timeout` of silence the response fails (the connection is closed).
#[tokio::test]
async fn a_backend_that_stalls_mid_response_is_cut_off() {
    let backend = Backend::start().await;
    let toml = config(backend.addr, "").replace(
        "[upstreams.b]",
        "[proxy]\nupstream_idle_timeout = \"1s\"\n\n[upstreams.b]",
    );
    let proxy = Wardgate::start(&toml);
    let mut response = proxy
        .client()
        .get(proxy.url("/pub/stall"))
        .send()
        .await
        .expect("head");
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.expect("first chunk").expect("data");
    assert_eq!(&first[..], b"first line\n");
    let started = std::time::Instant::now();
    let ending = tokio::time::timeout(Duration::from_secs(10), response.chunk()).await;
    assert!(
        matches!(ending, Ok(Err(_))),
        "the stalled body did not fail: {ending:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
