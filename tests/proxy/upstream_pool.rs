//! Upstream connections: kept alive and reused, closed after `pool_idle_timeout`, and a
//! backend that drops its idle connections costs no request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{config, Wardgate};

/// How the hand-written backend answers.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Answer {
    /// `ok`, keeping the connection.
    KeepAlive,
    /// `ok`, then it closes the connection without saying so (as a backend whose keep-alive
    /// timeout just ran out does).
    CloseAfterEach,
    /// `ok` in a chunked body ending in trailers, keeping the connection.
    Trailers,
}

/// A hand-written HTTP/1.1 backend answering every request head as `answer` says; counts the
/// connections it accepted, and those the proxy closed.
pub(crate) async fn counting_backend(answer: Answer) -> (SocketAddr, Counts) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let counts = Counts::default();
    let counter = counts.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.accepted.fetch_add(1, Ordering::SeqCst);
            let closed = Arc::clone(&counter.closed);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                loop {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        closed.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    head.push(byte[0]);
                    if !head.ends_with(b"\r\n\r\n") {
                        continue;
                    }
                    head.clear();
                    let response: &[u8] = match answer {
                        Answer::Trailers => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx-checksum: 1\r\n\r\n",
                        _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                    };
                    if stream.write_all(response).await.is_err() || answer == Answer::CloseAfterEach
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, counts)
}

/// What the hand-written backend counted.
#[derive(Clone, Default)]
pub(crate) struct Counts {
    pub(crate) accepted: Arc<AtomicUsize>,
    pub(crate) closed: Arc<AtomicUsize>,
}

/// The test config in front of `backend`, with `[proxy] pool_idle_timeout = timeout`.
fn with_pool_idle_timeout(backend: SocketAddr, timeout: &str) -> String {
    config(backend, "").replace(
        "[upstreams.b]",
        &format!("[proxy]\npool_idle_timeout = \"{timeout}\"\n\n[upstreams.b]"),
    )
}

/// `times` requests through `proxy`, one after the other, each answered `ok`.
async fn get_ok(proxy: &Wardgate, client: &reqwest::Client, times: usize) {
    for _ in 0..times {
        let response = client.get(proxy.url("/pub/x")).send().await.expect("send");
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.expect("body"), "ok");
    }
}

/// Starts a proxy on `toml` and sends it `times` requests; the backend connections opened.
async fn connections_for(toml: &str, counts: &Counts, times: usize) -> usize {
    let proxy = Wardgate::start(toml);
    get_ok(&proxy, &proxy.client(), times).await;
    assert!(!proxy.logs().contains("panicked"));
    counts.accepted.load(Ordering::SeqCst)
}

#[tokio::test]
async fn upstream_connections_are_reused_and_closed_after_pool_idle_timeout() {
    let (addr, counts) = counting_backend(Answer::KeepAlive).await;
    let proxy = Wardgate::start(&with_pool_idle_timeout(addr, "1s"));
    let client = proxy.client();
    get_ok(&proxy, &client, 10).await;
    assert_eq!(
        counts.accepted.load(Ordering::SeqCst),
        1,
        "one kept-alive connection"
    );
    assert_eq!(counts.closed.load(Ordering::SeqCst), 0);
    // Closed by the proxy within 1.5 x pool_idle_timeout, with no request to notice it.
    for _ in 0..100 {
        if counts.closed.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        counts.closed.load(Ordering::SeqCst),
        1,
        "the idle one expired"
    );
    get_ok(&proxy, &client, 1).await;
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_backend_that_drops_idle_connections_costs_no_request() {
    let (addr, counts) = counting_backend(Answer::CloseAfterEach).await;
    assert_eq!(connections_for(&config(addr, ""), &counts, 20).await, 20);
}

#[tokio::test]
async fn a_response_ending_in_trailers_gives_its_connection_back() {
    let (addr, counts) = counting_backend(Answer::Trailers).await;
    assert_eq!(connections_for(&config(addr, ""), &counts, 5).await, 1);
}

#[tokio::test]
async fn a_zero_pool_idle_timeout_keeps_no_connection() {
    let (addr, counts) = counting_backend(Answer::KeepAlive).await;
    let toml = with_pool_idle_timeout(addr, "0s");
    assert_eq!(connections_for(&toml, &counts, 3).await, 3);
}
