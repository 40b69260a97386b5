//! `App`: everything built from one validated `Config`, shared by requests behind an `Arc`.
//!
//! Reload builds a whole new `App` aside and swaps it in; requests in flight keep the `App`
//! they started with, so a reload never changes the rules halfway through a request.

use std::collections::HashMap;
use std::sync::Arc;

use crate::authn::password::PasswordWorker;
use crate::authn::token::SessionKeys;
use crate::authn::users::UserStore;
use crate::config::Config;
use crate::gate::route::RouteTable;
use crate::proxy::health;
use crate::proxy::upstream::UpstreamPool;
use crate::state::StateStore;

/// The running configuration in compiled form.
#[derive(Debug)]
pub struct App {
    /// The validated config this was built from.
    pub config: Arc<Config>,
    /// Routes in precedence order.
    pub routes: RouteTable,
    /// Shared state (sessions, counters); outlives reloads.
    pub state: Arc<dyn StateStore>,
    /// The audit trail; outlives reloads.
    pub audit: Arc<crate::audit::Auditor>,
    /// Accounts from the users file.
    pub users: UserStore,
    /// Session token keys.
    pub session_keys: SessionKeys,
    /// Password hashing on the blocking pool.
    pub passwords: PasswordWorker,
    /// Signs `X-Wardgate-Assertion` and publishes the JWKS.
    pub assertions: crate::proxy::assertion::AssertionSigner,
    /// Token of the admin session API (`[admin] token_file`), if configured.
    pub admin_token: Option<String>,
    /// Long-lived connections under continuous validation; outlives reloads.
    pub live: Arc<crate::live::LiveConnections>,
    /// Identity providers for single sign-on.
    pub oidc: crate::authn::oidc::OidcProviders,
    /// The client-certificate trust now in force (see `ClientTrust`), from the TLS
    /// configuration built with this app.
    pub client_trust: crate::gate::context::ClientTrust,
    pools: HashMap<String, Arc<UpstreamPool>>,
}

impl App {
    /// Builds the route table and upstream pools (starting their health checks).
    /// Must run inside the tokio runtime.
    pub fn build(
        config: Config,
        state: Arc<dyn StateStore>,
        audit: Arc<crate::audit::Auditor>,
        live: Arc<crate::live::LiveConnections>,
        client_trust: crate::gate::context::ClientTrust,
    ) -> Result<App, String> {
        let auth = &config.auth;
        let users = UserStore::open(&auth.users_file, &auth.key_file, auth.key_env.as_deref())
            .map_err(|e| e.to_string())?;
        let session_keys = SessionKeys::load_or_create(&auth.session_keys_file)?;
        let passwords = PasswordWorker::new(auth.hash, auth.max_concurrent_hashes)?;
        let assertions = crate::proxy::assertion::AssertionSigner::load_or_create(
            &config.data_dir.join("assertion-signing.key"),
        )?;
        let admin_token = match &config.admin_token_file {
            None => None,
            Some(path) => Some(read_token(path)?),
        };
        let oidc = crate::authn::oidc::OidcProviders::start(
            &config.oidc_providers,
            &config.listen.public_url,
        )?;
        let mut pools = HashMap::new();
        for (name, upstream) in &config.upstreams {
            let pool = Arc::new(UpstreamPool::new(
                name,
                upstream,
                &config.proxy,
                config.limits.serve_threads,
            )?);
            health::spawn(&pool);
            pools.insert(name.clone(), pool);
        }
        Ok(App {
            routes: RouteTable::new(&config.routes),
            state,
            audit,
            users,
            session_keys,
            passwords,
            assertions,
            admin_token,
            live,
            oidc,
            pools,
            client_trust,
            config: Arc::new(config),
        })
    }

    /// The pool a route forwards to.
    pub fn pool(&self, name: &str) -> Option<&Arc<UpstreamPool>> {
        self.pools.get(name)
    }
}

/// Reads the admin token: the file's first line, at least 16 characters.
pub(crate) fn read_token(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("admin.token_file {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or_default().trim().to_string();
    if token.len() < 16 {
        return Err(format!(
            "admin.token_file {}: the token must be at least 16 characters",
            path.display()
        ));
    }
    Ok(token)
}
