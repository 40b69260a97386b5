//! GET/POST through the proxy, large streamed bodies both ways, header hygiene.

use futures_util::StreamExt;

use crate::support::{config, Backend, Wardgate};

#[tokio::test]
async fn get_is_forwarded_over_h2_and_http1_with_request_id_and_forwarding_headers() {
    let backend = Backend::start().await;
    let proxy = Wardgate::start(&config(backend.addr, ""));
    for client in [
        proxy.client(),
        proxy.client_builder().http1_only().build().expect("h1"),
    ] {
        let response = client
            .get(proxy.url("/pub/hello?x=1"))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 200);
        let request_id = response.headers()["x-request-id"]
            .to_str()
            .expect("id")
            .to_string();
        assert_eq!(request_id.len(), 36);
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["path"], "/pub/hello?x=1");
        let seen = backend.last();
        assert_eq!(seen.headers["x-request-id"], request_id.as_str());
        assert_eq!(seen.headers["x-wardgate-request-id"], request_id.as_str());
        assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(seen.headers["x-forwarded-proto"], "https");
        let authority = format!("127.0.0.1:{}", proxy.public.port());
        assert_eq!(seen.headers["x-forwarded-host"], authority.as_str());
        // Host is the authority the client addressed (HTTP/1: its `Host`, reused; h2: the
        // `:authority`), not the backend's address.
        assert_eq!(seen.headers["host"], authority.as_str());
    }
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let backend = Backend::start().await;
    let proxy = Wardgate::start(&config(backend.addr, ""));
    let client = proxy.client();

    // 32 MiB upload, sent as a stream of chunks (no Content-Length).
    let chunk = bytes::Bytes::from(vec![b'a'; 256 * 1024]);
    let stream =
        futures_util::stream::iter((0..128).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let response = client
        .post(proxy.url("/big-upload"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["body_len"], 32 * 1024 * 1024);

    // 48 MiB download, counted chunk by chunk.
    let response = client
        .get(proxy.url("/pub/stream?bytes=50331648"))
        .send()
        .await
        .expect("download");
    assert_eq!(response.status(), 200);
    let mut total = 0usize;
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        total += chunk.expect("chunk").len();
    }
    assert_eq!(total, 48 * 1024 * 1024);
}

#[tokio::test]
async fn bodies_over_the_route_limit_get_413_and_do_not_reach_the_backend_whole() {
    let backend = Backend::start().await;
    let proxy = Wardgate::start(&config(backend.addr, ""));
    let client = proxy.client();
    // Declared too large: refused before contacting the backend.
    let response = client
        .post(proxy.url("/upload"))
        .body(vec![0u8; 2 * 1024 * 1024])
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 413);
    assert!(backend.seen().is_empty());
    // Streamed without a length: cut at the limit.
    let chunk = bytes::Bytes::from(vec![b'a'; 64 * 1024]);
    let stream =
        futures_util::stream::iter((0..64).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let response = client
        .post(proxy.url("/upload"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 413);
    assert!(backend.seen().iter().all(|s| s.body_len <= 1024 * 1024));
    // Within the limit: fine.
    let response = client
        .post(proxy.url("/upload"))
        .body(vec![0u8; 1000])
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn client_identity_and_forwarding_headers_never_reach_the_backend() {
    let backend = Backend::start().await;
    let proxy = Wardgate::start(&config(backend.addr, ""));
    let response = proxy
        .client_builder()
        .http1_only()
        .build()
        .expect("client")
        .get(proxy.url("/pub/x"))
        .header("X-Wardgate-User", "admin")
        .header("X-Wardgate-Roles", "clinician")
        .header("X-Forwarded-For", "10.9.9.9")
        .header("X-Forwarded-Host", "evil.example")
        .header("X-Forwarded-Proto", "http")
        .header("Forwarded", "for=10.9.9.9")
        .header("X-Remote-User", "admin")
        .header("X-Original-URL", "/private/admin")
        .header("X-Rewrite-URL", "/private/admin")
        .header("X-HTTP-Method", "DELETE")
        .header("X-Method-Override", "DELETE")
        // CGI, WSGI and Rack read these as X-Wardgate-User and X-Forwarded-For.
        .header("X-Wardgate_User", "admin")
        .header("X_Forwarded_For", "10.9.9.9")
        .header("Connection", "X-Keep")
        .header("X-Keep", "hop")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    // Backend banner, hop-by-hop headers and headers it named in Connection do not reach us.
    assert!(response.headers().get("server").is_none());
    assert!(response.headers().get("x-hop").is_none());
    assert_eq!(
        response.headers()["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let seen = backend.last();
    for name in [
        "x-wardgate-user",
        "x-wardgate-roles",
        "forwarded",
        "x-remote-user",
        "x-original-url",
        "x-rewrite-url",
        "x-http-method",
        "x-method-override",
        "x-wardgate_user",
        "x_forwarded_for",
        "x-keep",
    ] {
        assert!(
            seen.headers.get(name).is_none(),
            "{name} reached the backend"
        );
    }
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_ne!(seen.headers["x-forwarded-host"], "evil.example");

    // TRACE would echo the identity headers and assertion back; it is never forwarded.
    let forwarded = backend.seen().len();
    let trace = proxy
        .client()
        .request(http::Method::TRACE, proxy.url("/pub/x"))
        .send()
        .await
        .expect("send");
    assert_eq!(trace.status(), 405);
    assert_eq!(backend.seen().len(), forwarded);
}

#[tokio::test]
async fn trusted_proxy_forwarding_headers_are_extended_not_replaced() {
    let backend = Backend::start().await;
    let toml = config(backend.addr, "").replace(
        "addr = \"127.0.0.1:0\"\n\n[admin]",
        "addr = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n\n[admin]",
    );
    let proxy = Wardgate::start(&toml);
    let response = proxy
        .client()
        .get(proxy.url("/pub/x"))
        .header("X-Forwarded-For", "203.0.113.7")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(
        backend.last().headers["x-forwarded-for"],
        "203.0.113.7, 127.0.0.1"
    );
}
