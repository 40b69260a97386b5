//! Continuous validation: connections that outlive their request stay tied to their session.
//!
//! A WebSocket (video signalling, chat, live vitals) or a long response stream is authorized
//! once, when it opens, and may then stay open for an hour. Zero trust means that is not
//! enough: every such connection is registered here against what admitted it (the session of
//! a signed-in user, or the client certificate of a service or device), and a checker
//! re-validates each one and its route four times a second, against the *current* state and
//! configuration. When the session ended for any reason (logout on any replica, admin
//! revocation, user disabled, password or TOTP change, idle timeout, absolute lifetime), the
//! certificate is no longer trusted (a reload withdrew its CA), or the current policy no
//! longer grants the route, the connection is told to close (WebSocket close 1008, stream
//! reset) and one `session_closed` audit record names the holder, the route and the reason.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::watch;

use crate::app::App;
use crate::gate::context::ConnInfo;

mod recheck;
pub mod stream;

/// How often registered sessions are re-validated (closures land within this plus one
/// state-store round trip, well under the 1 s promise).
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// What kind of long-lived connection an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An upgraded WebSocket tunnel.
    WebSocket,
    /// A response body still streaming after its first second.
    Stream,
}

/// What admitted a live connection, and so what is checked again.
#[derive(Debug, Clone)]
pub enum Holder {
    /// A signed-in user: the session must still hold.
    Session {
        /// Session that opened the connection.
        session_id: String,
        /// Its user.
        user: String,
    },
    /// A service or device admitted by its client certificate alone: the certificate must
    /// still be trusted (the connection's `ConnInfo` holds it) and still match a rule.
    Service {
        /// Subject of the certificate, for the closure record.
        subject: String,
    },
}

/// What is needed to re-run authentication and authorization for a connection.
#[derive(Debug, Clone)]
pub struct Opened {
    /// Who opened the connection.
    pub holder: Holder,
    /// Route name at opening time.
    pub route: String,
    /// Request method, host and canonical path (to match the route again after a reload).
    pub method: http::Method,
    /// Host.
    pub host: String,
    /// Canonical path.
    pub path: String,
    /// The client connection (source network rules, client certificate).
    pub conn: Arc<ConnInfo>,
    /// WebSocket or stream.
    pub kind: Kind,
}

#[derive(Debug)]
struct Entry {
    opened: Opened,
    /// Unix seconds of the last traffic that counts as activity.
    activity: Arc<AtomicU64>,
    closing: AtomicBool,
    close: watch::Sender<Option<String>>,
}

/// Every long-lived connection of this replica; outlives config reloads.
#[derive(Debug, Default)]
pub struct LiveConnections {
    next_id: AtomicU64,
    entries: DashMap<u64, Entry>,
    /// WebSocket tunnels running (public ones included, which are not registered).
    tunnels: AtomicUsize,
}

/// Counts one running tunnel until dropped. A tunnel keeps its client connection's slot under
/// `max_connections`, so the shutdown drain, which waits for in-flight requests only, must
/// know how many of the slots still taken are tunnels (those are cut off afterwards).
#[derive(Debug)]
pub struct TunnelCount(Arc<LiveConnections>);

impl Drop for TunnelCount {
    fn drop(&mut self) {
        self.0.tunnels.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Held by the connection; dropping it unregisters the connection.
#[derive(Debug)]
pub struct LiveGuard {
    id: u64,
    registry: Arc<LiveConnections>,
    /// Becomes `Some(reason)` when the connection must close.
    pub closed: watch::Receiver<Option<String>>,
    activity: Arc<AtomicU64>,
}

impl LiveGuard {
    /// Records traffic that counts toward the session's idle timeout.
    pub fn active(&self) {
        self.activity
            .store(crate::state::unix_now(), Ordering::Relaxed);
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if let Some((_, entry)) = self.registry.entries.remove(&self.id) {
            metrics::gauge!("wardgate_open_sockets", "route" => entry.opened.route).decrement(1.0);
        }
    }
}

impl LiveConnections {
    /// Counts a WebSocket tunnel for as long as the returned guard lives.
    pub fn tunnel_opened(self: &Arc<Self>) -> TunnelCount {
        self.tunnels.fetch_add(1, Ordering::Relaxed);
        TunnelCount(Arc::clone(self))
    }

    /// WebSocket tunnels running now.
    pub fn open_tunnels(&self) -> usize {
        self.tunnels.load(Ordering::Relaxed)
    }

    /// Registers a connection opened under a verified session.
    pub fn register(self: &Arc<Self>, opened: Opened) -> LiveGuard {
        self.register_with(opened, Arc::new(AtomicU64::new(crate::state::unix_now())))
    }

    /// Registers a connection whose traffic is recorded into `activity` by its owner.
    pub fn register_with(self: &Arc<Self>, opened: Opened, activity: Arc<AtomicU64>) -> LiveGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (close, closed) = watch::channel(None);
        metrics::gauge!("wardgate_open_sockets", "route" => opened.route.clone()).increment(1.0);
        self.entries.insert(
            id,
            Entry {
                opened,
                activity: Arc::clone(&activity),
                closing: AtomicBool::new(false),
                close,
            },
        );
        LiveGuard {
            id,
            registry: Arc::clone(self),
            closed,
            activity,
        }
    }

    /// Open connections per session id (for the session inventory).
    pub fn count_by_session(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for entry in &self.entries {
            if let Holder::Session { session_id, .. } = &entry.opened.holder {
                *counts.entry(session_id.clone()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Re-validates every registered connection once and closes those no longer allowed.
    pub async fn check(&self, app: &App) {
        // One state-store question per session, however many sockets it holds.
        let mut by_session: HashMap<(String, String), Vec<u64>> = HashMap::new();
        let mut services = Vec::new();
        for entry in &self.entries {
            if entry.closing.load(Ordering::Relaxed) {
                continue;
            }
            match &entry.opened.holder {
                Holder::Session { session_id, user } => by_session
                    .entry((session_id.clone(), user.clone()))
                    .or_default()
                    .push(*entry.key()),
                Holder::Service { .. } => services.push(*entry.key()),
            }
        }
        for id in services {
            let Some(entry) = self.entries.get(&id) else {
                continue;
            };
            if let Err(reason) = recheck::service(app, &entry.opened).await {
                close(app, &entry, reason);
            }
        }
        for ((session_id, user), ids) in by_session {
            let activity = ids
                .iter()
                .filter_map(|id| self.entries.get(id))
                .map(|e| e.activity.load(Ordering::Relaxed))
                .max()
                .unwrap_or(0);
            let verdict = crate::authn::session::recheck(app, &session_id, &user, activity).await;
            for id in ids {
                let Some(entry) = self.entries.get(&id) else {
                    continue;
                };
                let reason = match &verdict {
                    Err(reason) => Some(reason.clone()),
                    Ok(principal) => recheck::user(app, principal, &entry.opened).await.err(),
                };
                if let Some(reason) = reason {
                    close(app, &entry, reason);
                }
            }
        }
    }
}

/// Tells one connection to close and writes its `session_closed` record (once).
fn close(app: &App, entry: &Entry, reason: String) {
    if entry.closing.swap(true, Ordering::AcqRel) {
        return;
    }
    let opened = &entry.opened;
    let mut record = crate::audit::AuditRecord::new("session_closed");
    let holder = match &opened.holder {
        Holder::Session { session_id, user } => {
            record.user = Some(user.as_str().into());
            record.session = Some(crate::audit::record::session_hash(session_id));
            user
        }
        Holder::Service { subject } => {
            record.client_cert = Some(subject.as_str().into());
            subject
        }
    };
    record.route = Some(opened.route.as_str().into());
    record.method = Some(opened.method.as_str().into());
    record.host = Some(opened.host.as_str().into());
    record.path = Some(opened.path.as_str().into());
    record.src_ip = Some(std::sync::Arc::clone(&opened.conn.peer_ip));
    record.reason = Some(reason.clone().into());
    app.audit.submit_kept(record);
    let kind = match opened.kind {
        Kind::WebSocket => "websocket",
        Kind::Stream => "stream",
    };
    metrics::counter!("wardgate_session_closures_total", "reason" => recheck::reason_label(&reason))
        .increment(1);
    tracing::info!(target: "wardgate::security", event = "session_closed", holder = %holder, route = %opened.route, kind, %reason, "closing connection: its session no longer holds");
    let _ = entry.close.send(Some(reason));
}

/// Runs the checker until the process ends; `current` yields the App in force.
pub async fn run(live: Arc<LiveConnections>, current: impl Fn() -> Arc<App>) {
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if live.entries.is_empty() {
            continue;
        }
        live.check(&current()).await;
    }
}
