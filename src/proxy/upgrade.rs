//! Upgraded connections (HTTP/1.1 `Upgrade`): WebSocket tunnels for telehealth video
//! signalling, chat and live vitals.
//!
//! A WebSocket is relayed message by message (tungstenite on both sides), not as raw bytes, so
//! Wardgate always knows where a frame ends and can, at any moment, end the socket properly:
//! when the session that opened it ends (see `live.rs`), the client gets close code 1008
//! (policy violation) and the backend a normal close. Idle time counts traffic both ways;
//! whether pings count is `[proxy] websocket_pings_are_activity`. Extensions
//! (`permessage-deflate`) are not negotiated: the upgrade request reaches the backend without
//! `Sec-WebSocket-Extensions`. No other upgrade is tunnelled (`proxy.rs` drops the request's
//! `Upgrade` unless it asks for WebSocket): bytes Wardgate cannot read would let later
//! requests on the connection (`h2c` above all) pass routing, policy and audit.
//!
//! Whole messages are held while they arrive, so one message (and one frame) may be at most
//! `[proxy] websocket_max_message`; a larger one closes the socket with 1009 (too big). A side
//! that stops reading cannot pin a tunnel either: while a message waits to be written, the
//! session's end and the idle deadline are still watched. The tunnel keeps its client
//! connection's slot under `[limits] max_connections` while it runs (hyper's connection task
//! ends at the upgrade).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::audit::open::OpenAccess;
use crate::gate::context::ConnInfo;
use crate::live::LiveGuard;

type Socket = WebSocketStream<TokioIo<Upgraded>>;
type Sink = futures_util::stream::SplitSink<Socket, Message>;
type Source = futures_util::stream::SplitStream<Socket>;

/// How long a closing side may take to answer the close handshake.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Whether a request asks for a protocol upgrade (HTTP/1.1 only).
pub fn is_upgrade<B>(req: &http::Request<B>) -> bool {
    req.version() == http::Version::HTTP_11
        && req.headers().contains_key(http::header::UPGRADE)
        && req
            .headers()
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Whether the upgrade is to WebSocket.
pub fn is_websocket<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// Settings of one tunnel.
#[derive(Debug)]
pub struct Tunnel {
    /// Route name, for logs and metrics.
    pub route: String,
    /// Closed after this long without traffic either way.
    pub idle: Duration,
    /// Whether ping/pong frames count as traffic.
    pub pings_are_activity: bool,
    /// Largest message (and frame) relayed, in bytes.
    pub max_message: usize,
    /// The client connection: holding it keeps the connection's slot under
    /// `[limits] max_connections` for as long as the tunnel runs.
    pub connection: std::sync::Arc<ConnInfo>,
    /// Counts the tunnel as running (for the shutdown drain).
    pub counted: crate::live::TunnelCount,
    /// Registration against the session (absent on public routes).
    pub live: Option<LiveGuard>,
    /// An audited access's completion (`status` 101), written when the tunnel ends with the
    /// bytes relayed to the client and why it ended (by its `Drop` if the task is dropped).
    pub completion: Option<OpenAccess>,
}

/// Why a tunnel ended.
enum End {
    Closed,
    Idle,
    Revoked(String),
    TooBig,
    Failed(&'static str),
}

/// `end` in words, for the log and the audit record.
fn reason(end: &End) -> &str {
    match end {
        End::Closed => "closed",
        End::Idle => "idle timeout",
        End::Revoked(reason) => reason.as_str(),
        End::TooBig => "message too big",
        End::Failed(why) => why,
    }
}

impl Tunnel {
    /// Relays between the upgraded client and upstream connections until one side closes,
    /// the tunnel idles out, or its session ends.
    pub async fn run(mut self, client: OnUpgrade, upstream: OnUpgrade) {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(route = %self.route, error = %err, "upgrade handover failed");
                self.complete(0, "upgrade handover failed");
                return;
            }
        };
        metrics::gauge!("wardgate_open_tunnels", "route" => self.route.clone()).increment(1.0);
        let mut delivered = 0;
        let end = self.websockets(client, upstream, &mut delivered).await;
        metrics::gauge!("wardgate_open_tunnels", "route" => self.route.clone()).decrement(1.0);
        self.complete(delivered, &format!("tunnel {}", reason(&end)));
    }

    /// Writes the completion record, if there is one still to write.
    fn complete(&mut self, delivered: u64, why: &str) {
        if let Some(access) = self.completion.take() {
            access.complete(|record| {
                record.bytes = Some(delivered);
                record.reason = Some(why.to_string().into());
            });
        }
    }

    /// Logs why the tunnel ends (before the close handshake, which may take a moment).
    fn log(&self, end: &End) {
        tracing::info!(route = %self.route, reason = reason(end), "tunnel closed");
    }

    /// Resolves when the session behind the tunnel ends (never for public routes).
    async fn revoked(live: &mut Option<LiveGuard>) -> String {
        let Some(guard) = live else {
            return std::future::pending().await;
        };
        loop {
            if let Some(reason) = guard.closed.borrow_and_update().clone() {
                return reason;
            }
            if guard.closed.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Why the session behind the tunnel ended, if it has.
    fn revocation(&self) -> Option<String> {
        self.live
            .as_ref()
            .and_then(|guard| guard.closed.borrow().clone())
    }

    fn active(&self) {
        if let Some(guard) = &self.live {
            guard.active();
        }
    }

    async fn websockets(
        &mut self,
        client: Upgraded,
        upstream: Upgraded,
        delivered: &mut u64,
    ) -> End {
        let config = Some(
            WebSocketConfig::default()
                .max_message_size(Some(self.max_message))
                .max_frame_size(Some(self.max_message)),
        );
        let client =
            WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, config).await;
        let upstream =
            WebSocketStream::from_raw_socket(TokioIo::new(upstream), Role::Client, config).await;
        let (mut client_tx, mut client_rx) = client.split();
        let (mut upstream_tx, mut upstream_rx) = upstream.split();
        let end = self
            .relay_messages(
                &mut client_tx,
                &mut client_rx,
                &mut upstream_tx,
                &mut upstream_rx,
                delivered,
            )
            .await;
        // End TLS with close_notify toward the client (and TCP toward the backend).
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            if let Ok(mut client) = client_tx.reunite(client_rx) {
                let _ = client.get_mut().shutdown().await;
            }
            if let Ok(mut upstream) = upstream_tx.reunite(upstream_rx) {
                let _ = upstream.get_mut().shutdown().await;
            }
        })
        .await;
        end
    }

    async fn relay_messages(
        &mut self,
        client_tx: &mut Sink,
        client_rx: &mut Source,
        upstream_tx: &mut Sink,
        upstream_rx: &mut Source,
        delivered: &mut u64,
    ) -> End {
        let mut deadline = Instant::now() + self.idle;
        let end = loop {
            let (message, from_client) = tokio::select! {
                message = client_rx.next() => (message, true),
                message = upstream_rx.next() => (message, false),
                reason = Self::revoked(&mut self.live) => break End::Revoked(reason),
                () = sleep_until(deadline) => break End::Idle,
            };
            let message = match message {
                Some(Ok(message)) => message,
                Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => break End::TooBig,
                None | Some(Err(_)) => break End::Failed("connection lost"),
            };
            // A message that arrived with the session's end is not passed on.
            if let Some(reason) = self.revocation() {
                break End::Revoked(reason);
            }
            if matches!(message, Message::Close(_)) {
                // Pass the close on and let the other side answer it; then both are done.
                let end = End::Closed;
                self.log(&end);
                let (origin_tx, tx, rx) = if from_client {
                    (&mut *client_tx, &mut *upstream_tx, &mut *upstream_rx)
                } else {
                    (&mut *upstream_tx, &mut *client_tx, &mut *client_rx)
                };
                let _ = tokio::time::timeout(CLOSE_GRACE, async {
                    // Completes the handshake with the side that closed (tungstenite queued
                    // the answer when the close arrived).
                    let _ = origin_tx.close().await;
                    let _ = tx.send(message).await;
                    while let Some(Ok(reply)) = rx.next().await {
                        if reply.is_close() {
                            break;
                        }
                    }
                })
                .await;
                break end;
            }
            let counts = message.is_text()
                || message.is_binary()
                || (self.pings_are_activity && (message.is_ping() || message.is_pong()));
            if counts {
                deadline = Instant::now() + self.idle;
                self.active();
            }
            if !from_client {
                *delivered += message.len() as u64;
            }
            // A side that stops reading must not hold the tunnel past its session or its
            // idle deadline: both are watched while the message waits to be written.
            let sent = tokio::select! {
                sent = async {
                    if from_client {
                        upstream_tx.send(message).await
                    } else {
                        client_tx.send(message).await
                    }
                } => sent,
                reason = Self::revoked(&mut self.live) => break End::Revoked(reason),
                () = sleep_until(deadline) => break End::Idle,
            };
            if sent.is_err() {
                break End::Failed("write failed");
            }
        };
        let (client_code, client_reason, upstream_code) = match &end {
            End::Revoked(_) => (CloseCode::Policy, "session ended", CloseCode::Normal),
            End::Idle => (CloseCode::Away, "idle timeout", CloseCode::Away),
            End::TooBig => (CloseCode::Size, "message too big", CloseCode::Away),
            End::Closed => return end,
            End::Failed(_) => {
                self.log(&end);
                return end;
            }
        };
        self.log(&end);
        let goodbye = |code, reason: &'static str| {
            Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            }))
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            let _ = client_tx.send(goodbye(client_code, client_reason)).await;
            let _ = upstream_tx
                .send(goodbye(upstream_code, "client session ended"))
                .await;
            // Read both sides until their close answers arrive (tungstenite completes them).
            let _ = tokio::join!(drain(client_rx), drain(upstream_rx));
        })
        .await;
        end
    }
}

async fn drain<S>(stream: &mut S)
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(Ok(_)) = stream.next().await {}
}
