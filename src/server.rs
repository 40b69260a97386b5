//! The running server: bind the listeners, serve until a signal, reload on SIGHUP, drain on
//! SIGTERM/SIGINT.
//!
//! Listening sockets are bound once; reload swaps the compiled [`App`] and the TLS
//! configuration behind `ArcSwap`s, so new connections and requests use the new ones while
//! requests in flight finish on the old. A config that fails validation is refused and the old
//! one keeps running.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Semaphore};

use crate::app::App;
use crate::config::state::StateConfig;
use crate::config::Config;
use crate::state::StateStore;

pub mod activity;
pub mod certs;
pub mod listener;
pub mod park;
pub mod redirect;
pub mod tls;
pub mod tls_stream;
pub mod workers;

/// State shared by all listeners and connections.
pub struct Shared {
    /// The live compiled configuration.
    pub app: ArcSwap<App>,
    /// The live TLS configuration.
    pub tls: ArcSwap<ServerConfig>,
    /// Connection cap; each open client connection holds one permit.
    pub connections: Arc<Semaphore>,
    /// False while draining (so `/readyz` says 503).
    pub ready: AtomicBool,
    /// Shared state; survives reloads.
    pub state: Arc<dyn StateStore>,
    /// The audit trail; survives reloads.
    pub audit: Arc<crate::audit::Auditor>,
    /// The address the public listener is bound to.
    pub public_addr: SocketAddr,
}

/// Starts the audit writer (its directory and key are fixed for the life of the process).
fn start_audit(config: &Config) -> Result<crate::audit::Auditor, ServeError> {
    use crate::audit::{checkpoint::CheckpointKey, writer::WriterSettings, Auditor};
    let key = CheckpointKey::load_or_create(&config.audit.signing_key).map_err(ServeError::App)?;
    let settings = WriterSettings {
        dir: config.audit.dir.clone(),
        fsync_interval: config.audit.fsync_interval,
        max_file_size: config.audit.max_file_size,
        checkpoint_every: config.audit.checkpoint_every,
        replica: config.audit.replica.as_str().into(),
        rotate_every: config.audit.rotate_every,
        mirror: config
            .audit
            .mirror
            .clone()
            .map(|target| crate::audit::mirror::start(target, config.audit.replica.clone())),
    };
    let webhook = match &config.webhook {
        Some((url, ca)) => {
            Some(crate::audit::webhook::start(url.clone(), ca.clone()).map_err(ServeError::App)?)
        }
        None => None,
    };
    let alerts = crate::audit::writer::Alerts {
        detector: Some(crate::audit::detect::Detector::new(config.detect.clone())),
        webhook,
    };
    Ok(Auditor::start(settings, key, config.audit.queue, alerts))
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Certificates could not be loaded.
    #[error(transparent)]
    Certs(#[from] certs::CertError),
    /// Upstream clients could not be built.
    #[error("{0}")]
    App(String),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
    /// The serving threads could not be started.
    #[error("cannot start the serving threads: {0}")]
    Workers(std::io::Error),
    /// At shutdown the audit writer could not write everything queued (failing disk).
    #[error("audit trail not closed: records still queued at shutdown were not written")]
    AuditNotClosed,
}

/// The configured state store; Redis connects in the background (not ready until it answers).
fn start_state(config: &StateConfig) -> Result<Arc<dyn StateStore>, ServeError> {
    Ok(match config {
        StateConfig::Memory => crate::state::memory::MemoryStore::start(),
        StateConfig::Redis(redis) => {
            // The Redis client's TLS uses rustls' process-wide provider; make it ring, like ours.
            let _ = rustls::crypto::ring::default_provider().install_default();
            crate::state::redis_store::RedisStore::start(redis).map_err(ServeError::App)?
        }
    })
}

/// How long shutdown waits for the serving threads to drop what is left on them.
const SERVING_THREADS_STOP: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `config` until SIGTERM/SIGINT. `source` is re-read on SIGHUP (none: reload disabled).
pub async fn run(mut config: Config, source: Option<PathBuf>) -> Result<(), ServeError> {
    let metrics = crate::metrics::install();
    crate::metrics::spawn_upkeep(metrics.clone());
    for warning in &config.warnings {
        tracing::warn!("config: {warning}");
    }
    let max_connections = config.limits.max_connections;
    let serve_threads = config.limits.serve_threads;
    let grace = config.limits.shutdown_grace;
    let (admin_addr, redirect_addr) = (config.admin_addr, config.listen.redirect_http);
    let public = bind(config.listen.addr).await?;
    let public_addr = public.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen.addr,
        source,
    })?;
    config.bind_public_url(public_addr);
    let (tls, client_trust) = tls::server_config(&config)?;
    let state = start_state(&config.state)?;
    let audit = Arc::new(start_audit(&config)?);
    // Announce readiness only once the audit chain is open (a large file is re-hashed first):
    // before that every PHI request would be refused.
    let opening = std::time::Instant::now();
    while !audit.is_healthy() && opening.elapsed() < std::time::Duration::from_secs(10) {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    if !audit.is_healthy() {
        tracing::error!("audit trail not open after 10 s: serving, but PHI requests are refused and /readyz is 503 until it opens");
    }
    let app = App::build(
        config,
        Arc::clone(&state),
        Arc::clone(&audit),
        Arc::default(),
        client_trust,
    )
    .map_err(ServeError::App)?;
    let shared = Arc::new(Shared {
        app: ArcSwap::from_pointee(app),
        tls: ArcSwap::new(tls),
        connections: Arc::new(Semaphore::new(max_connections)),
        ready: AtomicBool::new(true),
        state,
        audit,
        public_addr,
    });

    let watcher = Arc::clone(&shared);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            ticker.tick().await;
            let app = watcher.app.load_full();
            revoke_sessions_of(&app, app.users.refresh_if_changed()).await;
        }
    });
    let checker = Arc::clone(&shared);
    let live = Arc::clone(&shared.app.load().live);
    tokio::spawn(crate::live::run(live, move || checker.app.load_full()));
    let admin = bind(admin_addr).await?;
    let redirect = match redirect_addr {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut line = format!(
        "wardgate ready public=https://{} admin=http://{}",
        local(&public),
        local(&admin)
    );
    let workers = Arc::new(workers::Workers::start(serve_threads).map_err(ServeError::Workers)?);
    tracing::info!(serve_threads = workers.count(), "serving threads started");
    tokio::spawn(listener::run(
        public,
        Arc::clone(&shared),
        stop_rx.clone(),
        Arc::clone(&workers),
    ));
    tokio::spawn(crate::admin::run(
        admin,
        Arc::clone(&shared),
        metrics,
        stop_rx.clone(),
    ));
    if let Some(redirect) = redirect {
        line.push_str(&format!(" redirect=http://{}", local(&redirect)));
        tokio::spawn(redirect::run(
            redirect,
            Arc::clone(&shared),
            stop_rx.clone(),
        ));
    }
    println!("{line}");
    tracing::info!("{line}");

    let mut hangup = signal(SignalKind::hangup()).map_err(ServeError::Signal)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(ServeError::Signal)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(ServeError::Signal)?;
    loop {
        tokio::select! {
            _ = hangup.recv() => match &source {
                Some(path) => reload(&shared, path),
                None => tracing::warn!("SIGHUP ignored: this configuration was not loaded from a file"),
            },
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }

    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: draining connections"
    );
    shared.ready.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    // Drained when every slot is free but those WebSocket tunnels hold: a tunnel keeps its
    // connection's slot while it runs, and is cut off below rather than waited for.
    let drained = async {
        loop {
            let tunnels = shared.app.load().live.open_tunnels();
            if shared.connections.available_permits() + tunnels >= max_connections {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    match tokio::time::timeout(grace, drained).await {
        Ok(_) => tracing::info!("all connections drained"),
        Err(_) => tracing::warn!("drain deadline reached; closing remaining connections"),
    }
    // What is still open now is cut off: dropping the serving runtimes completes each open
    // access in the trail ("cut off at shutdown ..."), before `audit_stop`.
    shared.audit.cut_off();
    let stuck = workers.stop(SERVING_THREADS_STOP).await;
    if stuck > 0 {
        tracing::error!(
            stuck,
            "serving threads did not stop; requests still on them have no completion record"
        );
    }
    if let Err(queued) = shared.audit.stop().await {
        tracing::error!(
            queued,
            "audit trail not closed: the writer did not finish in time; records it had not written are lost"
        );
        return Err(ServeError::AuditNotClosed);
    }
    tracing::info!("audit trail closed");
    Ok(())
}

/// Ends, on every replica, the sessions of users a users-file change disabled, removed or
/// re-credentialed (requests already refuse them; this also clears them from the store).
async fn revoke_sessions_of(app: &App, users: Vec<String>) {
    for user in users {
        match app.state.revoke_user(&user).await {
            Ok(count) => {
                tracing::info!(target: "wardgate::security", user, count, "sessions revoked after an account change")
            }
            Err(err) => {
                tracing::error!(user, error = %err, "cannot revoke sessions after an account change")
            }
        }
    }
}

/// Validates the file aside, then swaps it in; on any error the running config stays.
fn reload(shared: &Shared, path: &std::path::Path) {
    let attempt = || -> Result<(), String> {
        let mut config = Config::load(path).map_err(|err| err.to_string())?;
        config.bind_public_url(shared.public_addr);
        let current = shared.app.load();
        if config.listen.addr != current.config.listen.addr
            || config.admin_addr != current.config.admin_addr
        {
            tracing::warn!("listener addresses changed: they take effect after a restart");
        }
        if config.state != current.config.state {
            tracing::warn!("[state] changes take effect after a restart (the running store keeps its settings)");
        }
        if config.limits.serve_threads != current.config.limits.serve_threads {
            tracing::warn!("limits.serve_threads changed: it takes effect after a restart");
        }
        let (tls, client_trust) = tls::server_config(&config).map_err(|err| err.to_string())?;
        // Read once at start by the audit writer, the telemetry, the connection cap and the
        // shutdown: a change would otherwise look applied and not be (a changed
        // `checkpoint_every` also makes `audit verify --config` see the old spacing as tampering).
        let restart_only = [
            ("[audit]", config.audit != current.config.audit),
            ("[detect]", config.detect != current.config.detect),
            ("[detect] webhook", config.webhook != current.config.webhook),
            ("[log]", config.log != current.config.log),
            (
                "limits.max_connections",
                config.limits.max_connections != current.config.limits.max_connections,
            ),
            (
                "limits.shutdown_grace",
                config.limits.shutdown_grace != current.config.limits.shutdown_grace,
            ),
        ];
        for (section, _) in restart_only.iter().filter(|(_, changed)| *changed) {
            tracing::warn!(
                section,
                "changed: takes effect after a restart (the running settings stay)"
            );
        }
        let app = App::build(
            config,
            Arc::clone(&shared.state),
            Arc::clone(&shared.audit),
            Arc::clone(&current.live),
            client_trust,
        )?;
        let ended =
            crate::authn::session::ended_by_account_changes(&current.users.all(), &app.users);
        shared.tls.store(tls);
        let app = Arc::new(app);
        shared.app.store(Arc::clone(&app));
        tokio::spawn(async move { revoke_sessions_of(&app, ended).await });
        Ok(())
    };
    let mut record = crate::audit::AuditRecord::new("config_reload");
    let outcome = attempt();
    record.decision = Some(if outcome.is_ok() { "allow" } else { "deny" }.into());
    record.reason = Some(
        outcome
            .as_ref()
            .err()
            .cloned()
            .unwrap_or_else(|| format!("{} reloaded", path.display()))
            .into(),
    );
    shared.audit.submit_kept(record);
    match outcome {
        Ok(()) => tracing::info!(config = %path.display(), "configuration reloaded"),
        Err(reason) => {
            for line in reason.lines() {
                tracing::error!(config = %path.display(), "reload refused, previous configuration kept: {line}");
            }
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

fn local(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string())
}
