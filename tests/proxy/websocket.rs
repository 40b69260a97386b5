//! WebSocket echo through the proxy (telehealth signalling), clean close and idle timeout.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{config, Backend, Wardgate};

async fn open(proxy: &Wardgate) -> crate::continuous::Socket {
    crate::continuous::open_ws(proxy, "/ws", None).await
}

#[tokio::test]
async fn websocket_echo_and_clean_close() {
    let backend = Backend::start().await;
    let proxy = Wardgate::start(&config(backend.addr, ""));
    let mut socket = open(&proxy).await;
    for text in ["offer: sdp-1", "candidate: 1 udp", "answer: sdp-2"] {
        socket.send(Message::text(text)).await.expect("send");
        let echoed = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("echo in time");
        assert_eq!(echoed.expect("message").expect("ok"), Message::text(text));
    }
    socket
        .send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("send binary");
    let echoed = socket.next().await.expect("message").expect("ok");
    assert_eq!(echoed, Message::binary(vec![1u8, 2, 3]));
    socket.close(None).await.expect("close");
    // The close handshake completes: the stream ends without an error.
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(message) = socket.next().await {
            if let Err(err) = message {
                eprintln!("client saw: {err:?}");
                return false;
            }
        }
        true
    })
    .await
    .expect("closed in time");
    assert!(
        rest,
        "close was not clean: {}",
        proxy
            .logs()
            .lines()
            .filter(|l| l.contains("tunnel") || l.contains("upgrade"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The upgrade request reached the backend with the handshake headers, without client identity headers.
    let seen = backend
        .seen()
        .into_iter()
        .find(|s| s.path_and_query == "/ws")
        .expect("upgrade request");
    assert_eq!(seen.headers["upgrade"], "websocket");
    // The socket ended with the client's close, passed on to the backend.
    assert!(
        backend
            .websocket_endings()
            .iter()
            .any(|e| e == "WS-CLOSE 1005"),
        "{:?}",
        backend.websocket_endings()
    );
}

#[tokio::test]
async fn idle_websocket_is_closed_after_the_idle_timeout() {
    let backend = Backend::start().await;
    let extra = "";
    let toml = config(backend.addr, extra).replace(
        "[upstreams.b]",
        "[proxy]\nwebsocket_idle_timeout = \"1s\"\n\n[upstreams.b]",
    );
    let proxy = Wardgate::start(&toml);
    let mut socket = open(&proxy).await;
    socket.send(Message::text("hello")).await.expect("send");
    assert_eq!(
        socket.next().await.expect("echo").expect("ok"),
        Message::text("hello")
    );
    // Silence: the proxy closes the tunnel after ~1 s.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) => return true,
                Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert_eq!(ended, Ok(true), "idle tunnel was not closed");
    assert!(proxy.wait_for_log("idle timeout", Duration::from_secs(2)));
}

/// A tunnel outlives hyper's connection task, but keeps its connection's slot under
/// `max_connections`; a message over `websocket_max_message` closes it with 1009, and the slot
/// is free again once it has ended.
#[tokio::test]
async fn a_tunnel_holds_its_connection_slot_and_a_message_too_big_closes_it() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let backend = Backend::start().await;
    let toml = config(backend.addr, "")
        .replace("[log]", "[limits]\nmax_connections = 1\n\n[log]")
        .replace(
            "[upstreams.b]",
            "[proxy]\nwebsocket_max_message = \"64KiB\"\n\n[upstreams.b]",
        );
    let proxy = Wardgate::start(&toml);
    let connect = || {
        crate::support::raw::connect(
            proxy.public,
            crate::support::raw::client_config(&proxy.dev_cert(), &[b"http/1.1"]),
        )
    };
    let mut socket = open(&proxy).await;
    crate::continuous::echo(&mut socket, "vitals: 72 bpm").await;
    assert!(
        connect().await.is_err(),
        "a second connection was accepted while the tunnel held the only slot"
    );

    socket
        .send(Message::binary(vec![7u8; 100 * 1024]))
        .await
        .expect("send");
    let (code, _) = crate::continuous::closed(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(code, CloseCode::Size);
    assert!(proxy.wait_for_log("message too big", Duration::from_secs(2)));
    drop(socket);
    let mut freed = false;
    for _ in 0..40 {
        if connect().await.is_ok() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(freed, "the slot was not freed when the tunnel ended");
}

/// A client that stops reading cannot pin a tunnel: while the relay waits to write to it, the
/// idle deadline still runs, and the tunnel ends (the backend's socket too).
#[tokio::test]
async fn a_client_that_stops_reading_does_not_pin_the_tunnel() {
    let backend = Backend::start().await;
    let toml = config(backend.addr, "").replace(
        "[upstreams.b]",
        "[proxy]\nwebsocket_idle_timeout = \"1s\"\n\n[upstreams.b]",
    );
    let proxy = Wardgate::start(&toml);
    let socket = open(&proxy).await;
    let (mut sink, _never_read) = socket.split();
    // The echo backend sends everything back; the client reads none of it, so the relay's
    // writes to the client block once the socket buffers are full.
    let writer = tokio::spawn(async move {
        let message = Message::binary(vec![5u8; 512 * 1024]);
        for _ in 0..200 {
            if sink.send(message.clone()).await.is_err() {
                break;
            }
        }
    });
    let mut ended = false;
    for _ in 0..100 {
        if proxy.logs().contains("reason=\"idle timeout\"") {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    writer.abort();
    assert!(ended, "the tunnel was not closed: {}", proxy.logs());
}
