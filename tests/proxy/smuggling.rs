//! Request smuggling: conflicting framing never lets a second, unchecked request reach the
//! backend, and the proxy keeps serving clean requests afterwards (attack, exact rejection,
//! then a legitimate request).

use crate::support::{config, raw, Backend, Wardgate};

#[tokio::test]
async fn conflicting_framing_never_smuggles_a_request_past_the_gate() {
    let backend = Backend::start().await;
    let proxy = Wardgate::start(&config(backend.addr, ""));
    let ca = proxy.dev_cert();
    let smuggled = "GET /private/admin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    // hyper lets Transfer-Encoding win over Content-Length (RFC 9112 6.3) and drops the length,
    // so the smuggled bytes become a second request on the connection, which goes through the
    // whole gate (401 here) like any other; the rest are refused outright.
    let attacks = [
        format!("POST /pub/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("POST /pub/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\n{smuggled}"),
        format!("POST /pub/x HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("POST /pub/x HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("POST /pub/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n{smuggled}"),
        format!("POST /pub/x HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding:\tchunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n{smuggled}"),
    ];
    let expected = [200, 400, 400, 400, 400, 200];
    for (attack, want) in attacks.iter().zip(expected) {
        let response = raw::send(proxy.public, &ca, attack.as_bytes()).await;
        assert_eq!(raw::status(&response), want, "{attack:?}: {response}");
        assert!(
            !response.contains("\"path\":\"/private/admin\""),
            "smuggled request answered by the backend: {response}"
        );
    }
    assert!(
        backend.paths().iter().all(|p| !p.starts_with("/private")),
        "a smuggled request reached the backend: {:?}",
        backend.paths()
    );
    // Each request the backend did get had one unambiguous framing chosen by Wardgate.
    for seen in backend.seen() {
        let te = seen.headers.get("transfer-encoding").is_some();
        let cl = seen.headers.get("content-length").is_some();
        assert!(
            !(te && cl),
            "backend got both Transfer-Encoding and Content-Length"
        );
    }
    let clean = raw::send(proxy.public, &ca, &raw::get("/pub/after")).await;
    assert_eq!(raw::status(&clean), 200);
}

#[tokio::test]
async fn hop_by_hop_abuse_cannot_remove_wardgate_headers() {
    let backend = Backend::start().await;
    let proxy = Wardgate::start(&config(backend.addr, ""));
    let ca = proxy.dev_cert();
    let request = "GET /pub/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close, X-Forwarded-For, X-Request-Id, X-Wardgate-Request-Id\r\n\r\n";
    let response = raw::send(proxy.public, &ca, request.as_bytes()).await;
    assert_eq!(raw::status(&response), 200);
    let seen = backend.last();
    for name in [
        "x-forwarded-for",
        "x-request-id",
        "x-wardgate-request-id",
        "x-forwarded-proto",
    ] {
        assert!(
            seen.headers.get(name).is_some(),
            "{name} was dropped by a client Connection header"
        );
    }
}
