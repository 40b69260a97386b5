//! Continuous validation: WebSockets and long streams live only as long as the session (and
//! the policy) that opened them. Logout elsewhere, admin revocation, disabling the user, the
//! absolute lifetime, idle time and a policy reload all close them within a second (WebSocket
//! close 1008, stream reset), each closure audited once.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::support::auth::{add_user, code, get_status, logout, next_code, token};
use crate::support::{config, raw, run_cli, write_config, Backend, Wardgate};

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

pub(crate) const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

/// Opens a WebSocket to `path`, authenticated by `token` if given.
pub(crate) async fn open_ws(proxy: &Wardgate, path: &str, token: Option<&str>) -> Socket {
    let tls = raw::connect(
        proxy.public,
        raw::client_config(&proxy.dev_cert(), &[b"http/1.1"]),
    )
    .await
    .expect("tls");
    let url = format!("wss://127.0.0.1:{}{path}", proxy.public.port());
    let mut request = url.into_client_request().expect("request");
    if let Some(token) = token {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    let (socket, response) = tokio_tungstenite::client_async(request, tls)
        .await
        .expect("websocket handshake");
    assert_eq!(response.status(), 101);
    socket
}

/// Sends `text` and expects it echoed.
pub(crate) async fn echo(socket: &mut Socket, text: &str) {
    socket.send(Message::text(text)).await.expect("send");
    let answer = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("echo in time")
        .expect("socket open")
        .expect("message");
    assert_eq!(answer, Message::text(text));
}

/// Waits for the proxy's close frame; returns its code and how long it took.
pub(crate) async fn closed(socket: &mut Socket, within: Duration) -> (CloseCode, Duration) {
    let start = Instant::now();
    loop {
        let next = tokio::time::timeout(within, socket.next())
            .await
            .expect("socket closed in time");
        match next {
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map_or(CloseCode::Status, |f| f.code);
                eprintln!("socket closed with {code} after {:?}", start.elapsed());
                return (code, start.elapsed());
            }
            Some(Ok(_)) => {}
            other => panic!("socket ended without a close frame: {other:?}"),
        }
    }
}

/// Every audit record of the proxy's audit directory.
pub(crate) fn audit_records(proxy: &Wardgate) -> Vec<serde_json::Value> {
    crate::support::audit_records_in(&proxy.config_path.parent().expect("dir").join("data/audit"))
}

/// `session_closed` records, waiting briefly for the batched writer.
async fn closures(proxy: &Wardgate, count: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let found: Vec<_> = audit_records(proxy)
            .into_iter()
            .filter(|r| r["event"] == "session_closed" && r["route"].is_string())
            .collect();
        if found.len() >= count || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The standard test config plus an admin token file (mode 0600).
pub(crate) fn config_with_admin_token(base: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    // The CLI finds the admin listener through the config, so it needs a real port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let toml = base.replacen(
        "[admin]\naddr = \"127.0.0.1:0\"",
        &format!("[admin]\naddr = \"127.0.0.1:{port}\"\ntoken_file = \"admin.token\""),
        1,
    );
    let (dir, path) = write_config(&toml);
    let token_path = dir.path().join("admin.token");
    std::fs::write(&token_path, format!("{ADMIN_TOKEN}\n")).expect("token");
    std::fs::set_permissions(&token_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    (dir, path)
}

async fn wait_for_backend_close(backend: &Backend, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if backend.websocket_endings().iter().any(|e| e == expected) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "backend endings {:?} lack {expected}",
        backend.websocket_endings()
    );
}

#[tokio::test]
async fn a_websocket_lives_with_its_session_and_logout_elsewhere_closes_it_with_1008() {
    let backend = Backend::start().await;
    let (dir, path) = write_config(&config(backend.addr, ""));
    let alice = add_user(&path, "alice", &[], true);
    let mut proxy = Wardgate::start_in(dir, path);
    let token = token(&proxy, &alice, &code(&alice)).await;

    let mut socket = open_ws(&proxy, "/private/ws", Some(&token)).await;
    echo(&mut socket, "vitals: hr 72").await;
    // The checker has re-validated the session several times meanwhile; it still holds.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    echo(&mut socket, "vitals: hr 74").await;

    logout(&proxy, &token).await;
    let (code, took) = closed(&mut socket, Duration::from_secs(2)).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(took <= Duration::from_secs(1), "closed after {took:?}");
    wait_for_backend_close(&backend, "WS-CLOSE 1000").await;

    let records = closures(&proxy, 1).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["user"], "alice");
    assert_eq!(records[0]["route"], "private");
    assert_eq!(records[0]["reason"], "session ended");
    assert!(records[0]["session"]
        .as_str()
        .is_some_and(|s| s.len() >= 16));
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("wardgate_session_closures_total{reason=\"session_ended\"} 1"),
        "{metrics}"
    );

    proxy.signal("TERM");
    assert_eq!(proxy.exited(Duration::from_secs(10)).await, Some(0));
    let (status, out, err) = run_cli(
        &["audit", "verify", "data/audit"],
        proxy.config_path.parent().expect("dir"),
    );
    assert_eq!(status, 0, "{out}{err}");
}

#[tokio::test]
async fn session_inventory_and_revocation_close_every_socket_of_the_user() {
    let backend = Backend::start().await;
    let (dir, path) = config_with_admin_token(&config(backend.addr, ""));
    let alice = add_user(&path, "alice", &[], true);
    let bob = add_user(&path, "bob", &[], true);
    let proxy = Wardgate::start_in(dir, path.clone());
    let first = token(&proxy, &alice, &code(&alice)).await;
    let second = token(&proxy, &alice, &next_code(&alice)).await;
    let bobs = token(&proxy, &bob, &code(&bob)).await;
    let mut sockets = Vec::new();
    for token in [&first, &second] {
        sockets.push(open_ws(&proxy, "/private/ws", Some(token)).await);
    }
    let mut bob_socket = open_ws(&proxy, "/private/ws", Some(&bobs)).await;

    let config = path.to_str().expect("path");
    let (status, out, err) = run_cli(
        &["session", "list", "--config", config, "--json"],
        std::path::Path::new("."),
    );
    assert_eq!(status, 0, "{out}{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).expect("json");
    let sessions = listed["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 3, "{listed}");
    for session in sessions {
        assert_eq!(session["open_sockets"], 1, "{session}");
        assert_eq!(session["source_ip"], "127.0.0.1");
        assert!(
            !out.contains(&first) && !out.contains(&bobs),
            "a token leaked"
        );
    }
    let (status, table, _) = run_cli(
        &["session", "list", "--config", config, "--user", "bob"],
        std::path::Path::new("."),
    );
    assert_eq!(status, 0);
    assert_eq!(table.lines().count(), 2, "header + bob's session: {table}");
    assert!(table.contains("bob") && !table.contains("alice"), "{table}");

    // The admin API itself refuses requests without the token.
    let client = reqwest::Client::new();
    let anonymous = client
        .post(proxy.admin_url("/sessions/revoke"))
        .json(&serde_json::json!({ "user": "alice" }))
        .send()
        .await
        .expect("revoke");
    assert_eq!(anonymous.status(), 401);
    let wrong = client
        .get(proxy.admin_url("/sessions"))
        .bearer_auth("admin-token-for-tests-0123456788")
        .send()
        .await
        .expect("list");
    assert_eq!(wrong.status(), 401);

    let (status, out, err) = run_cli(
        &["session", "revoke", "--user", "alice", "--config", config],
        std::path::Path::new("."),
    );
    assert_eq!(status, 0, "{out}{err}");
    assert!(out.contains("revoked 2 session(s)"), "{out}");
    for socket in &mut sockets {
        let (code, took) = closed(socket, Duration::from_secs(2)).await;
        assert_eq!(code, CloseCode::Policy);
        assert!(took <= Duration::from_secs(1), "closed after {took:?}");
    }
    echo(&mut bob_socket, "bob is unaffected").await;
    assert_eq!(get_status(&proxy, "/private/chart", &first).await, 401);

    let bob_id = sessions
        .iter()
        .find(|s| s["user"] == "bob")
        .and_then(|s| s["id"].as_str())
        .expect("bob's session id")
        .to_string();
    let (status, out, err) = run_cli(
        &["session", "revoke", "--id", &bob_id, "--config", config],
        std::path::Path::new("."),
    );
    assert_eq!(status, 0, "{out}{err}");
    assert!(out.contains("revoked 1 session(s)"), "{out}");
    assert_eq!(
        closed(&mut bob_socket, Duration::from_secs(2)).await.0,
        CloseCode::Policy
    );
    assert_eq!(closures(&proxy, 3).await.len(), 3);
}

#[tokio::test]
async fn disabling_the_user_and_reloading_closes_the_socket() {
    let backend = Backend::start().await;
    let (dir, path) = write_config(&config(backend.addr, ""));
    let carol = add_user(&path, "carol", &[], true);
    let proxy = Wardgate::start_in(dir, path.clone());
    let token = token(&proxy, &carol, &code(&carol)).await;
    let mut socket = open_ws(&proxy, "/private/ws", Some(&token)).await;
    echo(&mut socket, "chat: hello").await;

    let (status, out, err) = crate::support::auth::cli(&path, &["disable", "carol"], "");
    assert_eq!(status, 0, "{out}{err}");
    proxy.signal("HUP");
    let (code, took) = closed(&mut socket, Duration::from_secs(3)).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(took <= Duration::from_millis(1500), "closed after {took:?}");
    let records = closures(&proxy, 1).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(
        matches!(
            records[0]["reason"].as_str(),
            Some("user disabled" | "session ended")
        ),
        "{records:?}"
    );
}

#[tokio::test]
async fn the_absolute_lifetime_closes_an_active_socket_on_time() {
    let backend = Backend::start().await;
    let toml =
        config(backend.addr, "").replace("[login]", "[session]\nmax_lifetime = \"3s\"\n\n[login]");
    let (dir, path) = write_config(&toml);
    let dave = add_user(&path, "dave", &[], true);
    let proxy = Wardgate::start_in(dir, path);
    let signed_in = Instant::now();
    let token = token(&proxy, &dave, &code(&dave)).await;
    let mut socket = open_ws(&proxy, "/private/ws", Some(&token)).await;
    // Busy the whole time: activity does not extend the absolute lifetime.
    let ended_at = loop {
        socket.send(Message::text("frame")).await.expect("send");
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => {}
            Ok(Some(Ok(Message::Close(frame)))) => {
                assert_eq!(frame.map(|f| f.code), Some(CloseCode::Policy));
                break signed_in.elapsed();
            }
            other => panic!("unexpected: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        ended_at >= Duration::from_millis(2900) && ended_at <= Duration::from_millis(4500),
        "closed {ended_at:?} after sign-in, lifetime 3s"
    );
    let records = closures(&proxy, 1).await;
    assert_eq!(records[0]["reason"], "session lifetime over");
}

#[tokio::test]
async fn socket_traffic_keeps_the_session_alive_and_silence_ends_it() {
    let backend = Backend::start().await;
    let toml =
        config(backend.addr, "").replace("[login]", "[session]\nidle_timeout = \"2s\"\n\n[login]");
    let (dir, path) = write_config(&toml);
    let erin = add_user(&path, "erin", &[], true);
    let proxy = Wardgate::start_in(dir, path);
    let token = token(&proxy, &erin, &code(&erin)).await;
    let mut socket = open_ws(&proxy, "/private/ws", Some(&token)).await;
    for n in 0..9 {
        echo(&mut socket, &format!("heartbeat {n}")).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // 3.6 s after sign-in, longer than the idle timeout: the socket's traffic counted.
    assert_eq!(get_status(&proxy, "/private/chart", &token).await, 200);
    let (code, took) = closed(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(took <= Duration::from_millis(3300), "closed after {took:?}");
    let records = closures(&proxy, 1).await;
    assert_eq!(records[0]["reason"], "idle timeout");
}

#[tokio::test]
async fn a_reload_that_no_longer_grants_the_route_closes_the_socket() {
    let backend = Backend::start().await;
    let toml = config(backend.addr, "");
    let (dir, path) = write_config(&toml);
    let frank = add_user(&path, "frank", &["--role", "clinician"], true);
    let proxy = Wardgate::start_in(dir, path);
    let token = token(&proxy, &frank, &code(&frank)).await;
    let mut socket = open_ws(&proxy, "/patients/7/ws", Some(&token)).await;
    echo(&mut socket, "video: offer").await;

    let narrowed = toml.replace("allow = [{ roles = [\"clinician\"] }, ", "allow = [");
    assert_ne!(narrowed, toml);
    proxy.rewrite_config(&narrowed);
    proxy.signal("HUP");
    let (code, took) = closed(&mut socket, Duration::from_secs(3)).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(took <= Duration::from_millis(1500), "closed after {took:?}");
    let records = closures(&proxy, 1).await;
    assert_eq!(records[0]["reason"], "policy no longer grants the route");
    assert_eq!(records[0]["route"], "patient-records");
}

#[tokio::test]
async fn a_long_response_stream_is_reset_when_its_session_ends() {
    let backend = Backend::start().await;
    let (dir, path) = write_config(&config(backend.addr, ""));
    let gina = add_user(&path, "gina", &[], true);
    let proxy = Wardgate::start_in(dir, path);
    let token = token(&proxy, &gina, &code(&gina)).await;
    let client = proxy.client();
    let mut stream = client
        .get(proxy.url("/private/ticks"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.version(), http::Version::HTTP_2);
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        stream.chunk().await.expect("tick").expect("more ticks");
    }
    logout(&proxy, &token).await;
    let revoked = Instant::now();
    let outcome = loop {
        match tokio::time::timeout(Duration::from_secs(3), stream.chunk()).await {
            Ok(Ok(Some(_))) => continue,
            other => break other,
        }
    };
    assert!(
        matches!(outcome, Ok(Err(_))),
        "stream ended with {outcome:?}"
    );
    assert!(
        revoked.elapsed() <= Duration::from_secs(1),
        "reset after {:?}",
        revoked.elapsed()
    );
    let records = closures(&proxy, 1).await;
    assert_eq!(records[0]["route"], "private");
    assert_eq!(records[0]["reason"], "session ended");
}

/// Cross-site WebSocket hijacking: a handshake authenticated by the session cookie must come
/// from Wardgate's own origin, like any unsafe request (browsers always send `Origin` with it).
#[tokio::test]
async fn a_cookie_websocket_from_another_origin_is_refused() {
    let backend = Backend::start().await;
    let (dir, path) = write_config(&config(backend.addr, ""));
    let alice = add_user(&path, "alice", &[], true);
    let proxy = Wardgate::start_in(dir, path);
    let token = token(&proxy, &alice, &code(&alice)).await;
    let ours = format!("https://127.0.0.1:{}", proxy.public.port());
    let handshake = |origin: &str| {
        format!(
            "GET /private/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: {origin}\r\n\
             Cookie: __Host-wardgate={token}\r\n\r\n"
        )
    };
    let ca = proxy.dev_cert();
    for foreign in ["https://blog.127.0.0.1.nip.io", "https://evil.example"] {
        let response = raw::send(proxy.public, &ca, handshake(foreign).as_bytes()).await;
        assert_eq!(raw::status(&response), 403, "{foreign}: {response}");
    }
    assert!(backend.paths().is_empty(), "{:?}", backend.paths());
    let response = raw::send(proxy.public, &ca, handshake(&ours).as_bytes()).await;
    assert_eq!(raw::status(&response), 101, "{response}");
    assert_eq!(backend.paths(), vec!["/private/ws".to_string()]);
}
