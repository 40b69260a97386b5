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

/// One HPACK literal header field without indexing (new name, no Huffman): enough to send
/// headers a conforming HTTP/2 client library refuses to send.
fn hpack_literal(block: &mut Vec<u8>, name: &str, value: &str) {
    assert!(name.len() < 127 && value.len() < 127);
    block.push(0x00);
    block.push(name.len() as u8);
    block.extend_from_slice(name.as_bytes());
    block.push(value.len() as u8);
    block.extend_from_slice(value.as_bytes());
}

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Sends one HTTP/2 GET for `path` with `extra` headers; returns the frame types the server
/// answered on the stream (1 = HEADERS, 3 = RST_STREAM, 7 = GOAWAY) and whether a HEADERS
/// frame carried `:status 200`.
async fn h2_request(proxy: &Wardgate, path: &str, extra: &[(&str, &str)]) -> (Vec<u8>, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = raw::connect(
        proxy.public,
        raw::client_config(&proxy.dev_cert(), &[b"h2"]),
    )
    .await
    .expect("tls");
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "127.0.0.1"),
        (":path", path),
    ]
    .iter()
    .chain(extra)
    {
        hpack_literal(&mut block, name, value);
    }
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[])); // SETTINGS
    out.extend(h2_frame(0x1, 0x5, 1, &block)); // HEADERS, END_STREAM | END_HEADERS
    tls.write_all(&out).await.expect("write");
    let mut read = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let (mut kinds, mut ok) = (Vec::new(), false);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    'reading: loop {
        let n = match tokio::time::timeout_at(deadline, tls.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        read.extend_from_slice(&buf[..n]);
        while read.len() >= 9 {
            let len =
                (usize::from(read[0]) << 16) | (usize::from(read[1]) << 8) | usize::from(read[2]);
            if read.len() < 9 + len {
                break;
            }
            let (kind, stream) = (
                read[3],
                u32::from_be_bytes([read[5], read[6], read[7], read[8]]) & 0x7fff_ffff,
            );
            if kind == 0x4 && read[4] & 1 == 0 {
                tls.write_all(&h2_frame(0x4, 0x1, 0, &[]))
                    .await
                    .expect("ack");
            }
            if stream == 1 || kind == 0x7 {
                kinds.push(kind);
                // `:status 200` is static-table entry 8 (0x88).
                ok |= kind == 0x1 && read.get(9) == Some(&0x88);
                if matches!(kind, 0x1 | 0x3 | 0x7) {
                    break 'reading;
                }
            }
            read.drain(..9 + len);
        }
    }
    (kinds, ok)
}

#[tokio::test]
async fn h2_requests_with_connection_specific_headers_are_refused_not_downgraded() {
    let backend = Backend::start().await;
    let proxy = Wardgate::start(&config(backend.addr, ""));
    // Sanity: the hand-made request is understood when it is well-formed.
    let (kinds, ok) = h2_request(&proxy, "/pub/well-formed", &[]).await;
    assert!(ok, "a well-formed h2 request must work: {kinds:?}");
    let attacks: [(&str, &[(&str, &str)]); 7] = [
        ("/pub/te", &[("transfer-encoding", "chunked")]),
        ("/pub/conn", &[("connection", "x-wardgate-user")]),
        ("/pub/keepalive", &[("keep-alive", "timeout=5")]),
        ("/pub/upgrade", &[("upgrade", "websocket")]),
        ("/pub/proxyconn", &[("proxy-connection", "keep-alive")]),
        ("/pub/tegzip", &[("te", "gzip")]),
        ("/pub/upper", &[("X-Wardgate-User", "admin")]),
    ];
    for (path, headers) in attacks {
        let (kinds, ok) = h2_request(&proxy, path, headers).await;
        assert!(
            !ok,
            "{path}: a malformed h2 request was answered 200 ({kinds:?})"
        );
        assert!(
            kinds.iter().any(|k| matches!(k, 0x1 | 0x3 | 0x7)),
            "{path}: no answer at all ({kinds:?})"
        );
    }
    let paths = backend.paths();
    assert_eq!(
        paths,
        vec!["/pub/well-formed".to_string()],
        "forwarded: {paths:?}"
    );
}

/// Only WebSocket upgrades are tunnelled. An `h2c` upgrade would turn the connection into a
/// tunnel to the backend, and every request after it would skip routing, policy and audit:
/// it reaches the backend as a plain request without `Upgrade`, and a backend that switches
/// protocols anyway gets a 502, not a tunnel.
#[tokio::test]
async fn h2c_upgrades_are_not_tunnelled() {
    let backend = Backend::start().await;
    let proxy = Wardgate::start(&config(backend.addr, ""));
    let ca = proxy.dev_cert();
    // The h2c request as RFC 7540 §3.2 has it, except that `HTTP2-Settings` is not listed in
    // `Connection` (as a smuggler would send it; without `Upgrade` it means nothing to the
    // backend). `/ws` on the test backend switches protocols whatever is asked.
    let h2c = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\
               HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";
    let response = raw::send(proxy.public, &ca, h2c.as_bytes()).await;
    assert_eq!(raw::status(&response), 502, "{response}");
    let seen = backend.last();
    assert_eq!(seen.path_and_query, "/ws");
    assert!(
        seen.headers.get("upgrade").is_none() && seen.headers.get("connection").is_none(),
        "the h2c upgrade reached the backend: {:?}",
        seen.headers
    );
    // On a path that does not switch, the request is simply answered as HTTP/1.1.
    let plain = "GET /pub/h2c HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, close\r\n\
                 Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";
    let response = raw::send(proxy.public, &ca, plain.as_bytes()).await;
    assert_eq!(raw::status(&response), 200, "{response}");
    assert!(backend.last().headers.get("upgrade").is_none());
}

/// Route and policy method lists are upper case; a lower-case method (`delete`), which some
/// backend frameworks upper-case, must not slip past a rule written for `DELETE`. Likewise a
/// `Host` must be a host and a port, nothing more: it is forwarded whole.
#[tokio::test]
async fn lower_case_methods_and_junk_after_the_host_are_refused() {
    let backend = Backend::start().await;
    let proxy = Wardgate::start(&config(backend.addr, ""));
    let ca = proxy.dev_cert();
    for request in [
        "delete /pub/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        "Get /pub/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        "GET /pub/x HTTP/1.1\r\nHost: 127.0.0.1:x/evil\r\nConnection: close\r\n\r\n",
        "GET /pub/x HTTP/1.1\r\nHost: 127.0.0.1:443:1\r\nConnection: close\r\n\r\n",
    ] {
        let response = raw::send(proxy.public, &ca, request.as_bytes()).await;
        assert_eq!(raw::status(&response), 400, "{request:?}: {response}");
    }
    assert!(backend.paths().is_empty(), "{:?}", backend.paths());
    let response = raw::send(proxy.public, &ca, &raw::get("/pub/x")).await;
    assert_eq!(raw::status(&response), 200, "{response}");
}
