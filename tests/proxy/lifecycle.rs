//! Reload on SIGHUP (good and bad config), graceful shutdown, slowloris cut-off, idle
//! keep-alive close (after `keepalive_timeout`, not `header_read_timeout`), parking of idle
//! HTTP/1 connections, and the HTTP→HTTPS redirect listener.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::support::{config, raw, Backend, Wardgate};

const NEW_ROUTE: &str =
    "\n[[routes]]\nname = \"added\"\npath = \"/added\"\nupstream = \"b\"\npublic = true\n";

#[tokio::test]
async fn reload_applies_a_good_config_and_refuses_a_bad_one() {
    let backend = Backend::start().await;
    let proxy = Wardgate::start(&config(backend.addr, ""));
    let client = proxy.client();
    assert_eq!(
        client
            .get(proxy.url("/added"))
            .send()
            .await
            .expect("send")
            .status(),
        404
    );

    // The new route applies; a setting read only at start is reported as waiting for a restart.
    proxy.rewrite_config(
        &config(backend.addr, NEW_ROUTE)
            .replace("[log]", "[limits]\nshutdown_grace = \"7s\"\n\n[log]"),
    );
    proxy.signal("HUP");
    assert!(proxy.wait_for_log("configuration reloaded", Duration::from_secs(5)));
    assert!(
        proxy.logs().contains("section=\"limits.shutdown_grace\"")
            && proxy.logs().contains("takes effect after a restart"),
        "{}",
        proxy.logs()
    );
    assert_eq!(
        client
            .get(proxy.url("/added"))
            .send()
            .await
            .expect("send")
            .status(),
        200
    );

    // A broken file: unknown upstream. The old config (with /added) keeps serving.
    proxy.rewrite_config(&config(backend.addr, NEW_ROUTE).replace(
        "upstream = \"b\"\npublic = true\n\n[[routes]]\nname = \"upload\"",
        "upstream = \"nope\"\npublic = true\n\n[[routes]]\nname = \"upload\"",
    ));
    proxy.signal("HUP");
    assert!(
        proxy.wait_for_log("reload refused", Duration::from_secs(5)),
        "{}",
        proxy.logs()
    );
    assert!(proxy.logs().contains("unknown upstream `nope`"));
    assert_eq!(
        client
            .get(proxy.url("/added"))
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
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

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let backend = Backend::start().await;
    let mut proxy = Wardgate::start(&config(backend.addr, ""));
    let client = proxy.client();
    let url = proxy.url("/pub/slow?ms=1500");
    let in_flight =
        tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(400)).await;
    proxy.signal("TERM");
    // Readiness goes away while draining.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ready = reqwest::get(proxy.admin_url("/readyz"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert!(ready == 503 || ready == 0, "readyz during drain: {ready}");
    assert_eq!(
        in_flight.await.expect("join").expect("in-flight request"),
        200
    );
    assert_eq!(proxy.wait_exit(Duration::from_secs(10)), Some(0));
    // New connections are refused after shutdown.
    assert!(tokio::net::TcpStream::connect(proxy.public).await.is_err());
}

/// A proxy in front of `backend` that allows a request head one second.
fn with_one_second_header_timeout(backend: &Backend) -> Wardgate {
    let toml = config(backend.addr, "")
        .replace("[log]", "[limits]\nheader_read_timeout = \"1s\"\n\n[log]");
    Wardgate::start(&toml)
}

#[tokio::test]
async fn slowloris_connection_is_cut_after_the_header_read_timeout() {
    let backend = Backend::start().await;
    let proxy = with_one_second_header_timeout(&backend);
    let mut stream = raw::connect(
        proxy.public,
        raw::client_config(&proxy.dev_cert(), &[b"http/1.1"]),
    )
    .await
    .expect("tls");
    let started = Instant::now();
    stream
        .write_all(b"GET /pub/x HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
            closed = true;
            break;
        }
        if let Ok(result) =
            tokio::time::timeout(Duration::from_millis(10), stream.read(&mut buf)).await
        {
            if matches!(result, Ok(0) | Err(_)) || String::from_utf8_lossy(&buf).contains("408") {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "slow client was not cut off");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "cut off too late: {:?}",
        started.elapsed()
    );
    assert!(backend.seen().is_empty());
}

#[tokio::test]
async fn idle_keepalive_connection_is_closed() {
    let backend = Backend::start().await;
    let toml =
        config(backend.addr, "").replace("[log]", "[limits]\nkeepalive_timeout = \"1s\"\n\n[log]");
    let proxy = Wardgate::start(&toml);
    let mut stream = http1_connection(&proxy).await;
    get_ok(&mut stream).await;
    let mut buf = vec![0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert_eq!(closed, Ok(true));
}

#[tokio::test]
async fn keepalive_outlives_the_header_read_timeout_but_a_silent_connection_does_not() {
    let backend = Backend::start().await;
    let proxy = with_one_second_header_timeout(&backend);
    let tls = raw::client_config(&proxy.dev_cert(), &[b"http/1.1"]);
    let mut kept = raw::connect(proxy.public, tls.clone()).await.expect("tls");
    let mut silent = raw::connect(proxy.public, tls).await.expect("tls");
    let request = b"GET /pub/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let mut buf = vec![0u8; 4096];
    for round in 0..2 {
        if round == 1 {
            // Idle for well over header_read_timeout, well under keepalive_timeout (60 s).
            tokio::time::sleep(Duration::from_millis(2500)).await;
        }
        kept.write_all(request).await.expect("write");
        let n = kept.read(&mut buf).await.expect("response");
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(head.starts_with("HTTP/1.1 200"), "round {round}: {head}");
    }
    // A connection that never sends a request head is cut after header_read_timeout.
    let closed = tokio::time::timeout(Duration::from_secs(1), silent.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "silent connection still open"
    );
}

/// The `wardgate_parked_connections` gauge, once it reads `want` (or the last value read
/// after five seconds).
async fn parked_connections(proxy: &Wardgate, want: u64) -> u64 {
    let mut parked = u64::MAX;
    for _ in 0..50 {
        parked = proxy.metric("wardgate_parked_connections").await;
        if parked == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    parked
}

/// An HTTP/1.1 connection to `proxy`.
async fn http1_connection(proxy: &Wardgate) -> TlsStream<TcpStream> {
    let tls = raw::client_config(&proxy.dev_cert(), &[b"http/1.1"]);
    raw::connect(proxy.public, tls).await.expect("tls")
}

/// Sends `GET /pub/x` on `stream` and expects 200 (the whole small response in one read).
async fn get_ok(stream: &mut TlsStream<TcpStream>) {
    stream
        .write_all(b"GET /pub/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.expect("response");
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn an_idle_http1_connection_is_parked_and_loses_no_byte() {
    let backend = Backend::start().await;
    let mut proxy = Wardgate::start(&config(backend.addr, ""));
    let mut stream = http1_connection(&proxy).await;
    get_ok(&mut stream).await;

    // Idle after a request: parked, and the next request on the same connection is served.
    assert_eq!(parked_connections(&proxy, 1).await, 1);
    get_ok(&mut stream).await;
    assert_eq!(parked_connections(&proxy, 0).await, 0);

    let mut buf = vec![0u8; 4096];
    // Half a request head, then a pause past the parking delay: the bytes hyper had read are
    // handed to the next hyper connection, so the request arrives whole.
    stream
        .write_all(b"GET /pub/second-half HTTP/1.1\r\nHost: 127.")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stream.write_all(b"0.0.1\r\n\r\n").await.expect("write");
    let n = stream.read(&mut buf).await.expect("response");
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(backend.paths().contains(&"/pub/second-half".to_string()));

    // Shutdown closes a parked connection at once: no drain waits for it.
    assert_eq!(parked_connections(&proxy, 1).await, 1);
    proxy.signal("TERM");
    let closed = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "parked connection still open"
    );
    assert_eq!(proxy.wait_exit(Duration::from_secs(5)), Some(0));
}

#[tokio::test]
async fn a_parked_connection_can_still_become_a_websocket() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let backend = Backend::start().await;
    let proxy = Wardgate::start(&config(backend.addr, ""));
    let mut stream = http1_connection(&proxy).await;
    get_ok(&mut stream).await;
    assert_eq!(parked_connections(&proxy, 1).await, 1);

    // The upgrade arrives on the woken connection, served by a new hyper connection.
    let url = format!("wss://127.0.0.1:{}/ws", proxy.public.port());
    let request = url.into_client_request().expect("request");
    let (mut socket, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("websocket handshake");
    assert_eq!(response.status(), 101);
    crate::continuous::echo(&mut socket, "after a park").await;
}

#[tokio::test]
async fn a_response_streaming_past_the_parking_delay_keeps_its_connection() {
    let backend = Backend::start().await;
    let proxy = Wardgate::start(&config(backend.addr, ""));
    let mut stream = http1_connection(&proxy).await;
    // 25 lines, one every 100 ms: 2.5 s of a response body after the gate has answered.
    stream
        .write_all(b"GET /pub/ticks?count=25 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let mut received = Vec::new();
    let mut buf = vec![0u8; 4096];
    while !received.ends_with(b"0\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("ticks in time")
            .expect("read");
        assert!(n > 0, "closed mid-response");
        received.extend_from_slice(&buf[..n]);
    }
    let response = String::from_utf8_lossy(&received).to_lowercase();
    assert!(response.contains("tick 24"), "{response}");
    assert!(!response.contains("connection: close"), "{response}");
    // Not taken for idle while it streamed: the connection still serves the next request.
    get_ok(&mut stream).await;
}

#[tokio::test]
async fn plain_http_listener_only_redirects() {
    let backend = Backend::start().await;
    let toml = config(backend.addr, "").replace("addr = \"127.0.0.1:0\"\n\n[admin]", "addr = \"127.0.0.1:0\"\nredirect_http = \"127.0.0.1:0\"\npublic_url = \"https://portal.example.org\"\n\n[admin]");
    let proxy = Wardgate::start(&toml);
    let redirect = proxy.redirect.expect("redirect listener");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let response = client
        .get(format!("http://{redirect}/pub/x?y=1"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 308);
    assert_eq!(
        response.headers()["location"],
        "https://portal.example.org/pub/x?y=1"
    );
    assert!(backend.seen().is_empty());
}

#[tokio::test]
async fn a_slow_body_is_cut_after_the_body_read_timeout_with_408() {
    let backend = Backend::start().await;
    let toml =
        config(backend.addr, "").replace("[log]", "[limits]\nbody_read_timeout = \"1s\"\n\n[log]");
    let proxy = Wardgate::start(&toml);
    let mut stream = raw::connect(
        proxy.public,
        raw::client_config(&proxy.dev_cert(), &[b"http/1.1"]),
    )
    .await
    .expect("tls");
    let started = Instant::now();
    stream
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\nfirst bytes",
        )
        .await
        .expect("write");
    // Then nothing: the body stalls.
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(6) {
        match tokio::time::timeout(Duration::from_secs(6), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "cut off too late: {:?}",
        started.elapsed()
    );
}
