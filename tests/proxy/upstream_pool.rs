//! Upstream connections: kept alive and reused, closed after `pool_idle_timeout`, and a
//! backend that drops its idle connections costs no request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{config, Wardgate};

/// A hand-written HTTP/1.1 backend answering every GET with `ok`; counts the connections it
/// accepted. `close_after_each`: it closes each connection right after its response, without
/// saying so (as a backend whose keep-alive timeout just ran out does).
async fn counting_backend(close_after_each: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                loop {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                    if !head.ends_with(b"\r\n\r\n") {
                        continue;
                    }
                    head.clear();
                    let response = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(response).await.is_err() || close_after_each {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

async fn get_ok(proxy: &Wardgate, client: &reqwest::Client) {
    let response = client.get(proxy.url("/pub/x")).send().await.expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "ok");
}

#[tokio::test]
async fn upstream_connections_are_reused_and_closed_after_pool_idle_timeout() {
    let (addr, accepted) = counting_backend(false).await;
    let toml = config(addr, "").replace(
        "[upstreams.b]",
        "[proxy]\npool_idle_timeout = \"1s\"\n\n[upstreams.b]",
    );
    let proxy = Wardgate::start(&toml);
    let client = proxy.client();
    for _ in 0..10 {
        get_ok(&proxy, &client).await;
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one kept-alive connection"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    get_ok(&proxy, &client).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "the idle one expired");
}

#[tokio::test]
async fn a_backend_that_drops_idle_connections_costs_no_request() {
    let (addr, accepted) = counting_backend(true).await;
    let proxy = Wardgate::start(&config(addr, ""));
    let client = proxy.client();
    for _ in 0..20 {
        get_ok(&proxy, &client).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 20);
    assert!(!proxy.logs().contains("panicked"));
}
