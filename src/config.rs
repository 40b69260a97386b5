//! Configuration: the validated runtime [`Config`] and how to load it.
//!
//! ```text
//! wardgate.toml ──toml+serde──▶ FileConfig (file.rs, 1:1 with the TOML, Spanned)
//!               ──validate.rs──▶ Config (defaults applied, paths resolved, cross-references checked)
//! ```
//! Loading either yields a complete `Config` or a [`ConfigError`] listing every problem as
//! `FILE:LINE: FIELD: message`; there is no half-configured state. Reload (`reload.rs`) reuses the
//! same path, so a bad file on SIGHUP is refused exactly as it would be at start.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;
use ipnet::IpNet;

use crate::gate::route::{HostPattern, PathPattern};

pub mod error;
pub mod file;
pub mod oidc;
mod process;
mod rules;
mod sections;
pub mod state;
pub mod units;
mod validate;

pub use error::{ConfigError, ConfigIssue};

/// The validated configuration everything else is built from.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from (for reload and error messages).
    pub source: PathBuf,
    /// Public TLS listener.
    pub listen: ListenConfig,
    /// Admin listener address.
    pub admin_addr: SocketAddr,
    /// Token file of the admin API (`None`: session endpoints are disabled).
    pub admin_token_file: Option<PathBuf>,
    /// The shared state store.
    pub state: state::StateConfig,
    /// Identity providers for single sign-on (`[[oidc.providers]]`).
    pub oidc_providers: Vec<oidc::ProviderConfig>,
    /// Data directory (dev certificate, later keys and state).
    pub data_dir: PathBuf,
    /// Logging.
    pub log: LogConfig,
    /// Protection of the proxy itself.
    pub limits: Limits,
    /// Forwarding behaviour.
    pub proxy: ProxyConfig,
    /// Security headers on answers.
    pub response_headers: ResponseHeaders,
    /// Users, passwords and sessions.
    pub auth: AuthConfig,
    /// The audit trail.
    pub audit: AuditConfig,
    /// Detection rules.
    pub detect: crate::audit::detect::DetectConfig,
    /// Alert webhook and its CA.
    pub webhook: Option<(http::Uri, Option<PathBuf>)>,
    /// Roles that may open break-glass access.
    pub break_glass_roles: Vec<String>,
    /// How long a break-glass grant lasts.
    pub break_glass_duration: Duration,
    /// Upstream pools by name.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Routes in file order.
    pub routes: Vec<RouteConfig>,
    /// Probable mistakes that do not make the config invalid (`FILE:LINE: FIELD: message`).
    pub warnings: Vec<ConfigIssue>,
}

/// `[listen]`, validated.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// TLS listener address.
    pub addr: SocketAddr,
    /// Origin users reach, without a trailing slash (e.g. `https://portal.example.org`).
    pub public_url: String,
    /// Whether `public_url` was configured (otherwise it follows the bound address).
    pub public_url_explicit: bool,
    /// Where the server certificate comes from.
    pub tls: TlsSource,
    /// Client-certificate verification.
    pub client_auth: ClientAuth,
    /// Plain-HTTP redirect listener.
    pub redirect_http: Option<SocketAddr>,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
}

/// `[users]`, `[session]` and `[login]`, validated.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Users file.
    pub users_file: PathBuf,
    /// Key file sealing TOTP secrets.
    pub key_file: PathBuf,
    /// Environment variable that overrides `key_file`.
    pub key_env: Option<String>,
    /// Session token key ring.
    pub session_keys_file: PathBuf,
    /// Minimum password length.
    pub min_password_length: usize,
    /// argon2id parameters.
    pub hash: crate::authn::password::HashParams,
    /// Concurrent password hashes.
    pub max_concurrent_hashes: usize,
    /// Session idle timeout.
    pub idle_timeout: Duration,
    /// Session absolute lifetime.
    pub max_lifetime: Duration,
    /// Login attempts per source IP per minute.
    pub ip_limit: u32,
    /// Account lockout back-off.
    pub lock_policy: crate::state::LockPolicy,
}

/// `[audit]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditConfig {
    /// Directory of `*.jsonl` files.
    pub dir: PathBuf,
    /// Ed25519 checkpoint key (PKCS#8, base64).
    pub signing_key: PathBuf,
    /// Longest time a batched record waits for fsync.
    pub fsync_interval: Duration,
    /// Rotate files at this size.
    pub max_file_size: u64,
    /// A signed checkpoint after this many records.
    pub checkpoint_every: u64,
    /// Queue capacity between requests and the writer.
    pub queue: usize,
    /// Replica id on every record.
    pub replica: String,
    /// Rotate files older than this.
    pub rotate_every: Duration,
    /// Second copy of the stream.
    pub mirror: Option<crate::audit::mirror::MirrorTarget>,
}

/// How a PHI route waits for its access record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditMode {
    /// Forward once the record is queued; durable within `fsync_interval`.
    Batched,
    /// Forward only once the record is durable on disk.
    Strict,
}

/// Source of the server certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// PEM files configured by the operator.
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
    /// A self-signed development certificate kept in the data directory.
    DevCert,
}

/// Client-certificate (mTLS) policy of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificates are requested.
    None,
    /// A certificate is requested and verified if sent; callers without one still connect.
    Optional {
        /// CA bundle client certificates must chain to.
        ca: PathBuf,
    },
    /// Every connection must present a certificate that chains to the CA.
    Required {
        /// CA bundle client certificates must chain to.
        ca: PathBuf,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// tracing filter directive.
    pub level: String,
}

/// `[limits]`, validated.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Concurrent client connections; more are closed at accept.
    pub max_connections: usize,
    /// TLS handshake deadline.
    pub handshake_timeout: Duration,
    /// Deadline for a complete HTTP/1 request head, from its first byte (or from the handshake,
    /// for a connection's first request); idle keep-alive time does not count.
    pub header_read_timeout: Duration,
    /// Longest pause inside a request body.
    pub body_read_timeout: Duration,
    /// Largest request head in bytes.
    pub max_header_size: usize,
    /// Idle keep-alive deadline.
    pub keepalive_timeout: Duration,
    /// How long a client may take no more of a response (or of what is left to write when a
    /// connection closes) before it is disconnected.
    pub send_timeout: Duration,
    /// HTTP/2 streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// Default body limit.
    pub max_body: u64,
    /// Drain deadline on shutdown.
    pub shutdown_grace: Duration,
    /// Serving threads, each a single-threaded runtime with its own upstream connections.
    pub serve_threads: usize,
}

/// `[proxy]`, validated.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Lower-case client header names removed besides `x-wardgate-*`.
    pub strip_headers: Vec<http::HeaderName>,
    /// Upstream connect deadline.
    pub connect_timeout: Duration,
    /// Deadline for the upstream's response head.
    pub response_timeout: Duration,
    /// Longest silence of a backend inside its response body (the stream then fails).
    pub upstream_idle_timeout: Duration,
    /// Pooled idle upstream connection lifetime.
    pub pool_idle_timeout: Duration,
    /// WebSocket tunnel idle deadline.
    pub websocket_idle_timeout: Duration,
    /// Whether ping/pong frames keep a WebSocket (and its session) active.
    pub websocket_pings_are_activity: bool,
    /// Largest WebSocket message (and frame) relayed, in bytes.
    pub websocket_max_message: usize,
}

/// `[response_headers]`, validated; `None` means the header is not added.
#[derive(Debug, Clone)]
pub struct ResponseHeaders {
    /// `Strict-Transport-Security`.
    pub hsts: Option<http::HeaderValue>,
    /// `X-Content-Type-Options: nosniff`.
    pub nosniff: bool,
    /// `X-Frame-Options`.
    pub frame_options: Option<http::HeaderValue>,
    /// `Referrer-Policy`.
    pub referrer_policy: Option<http::HeaderValue>,
    /// Remove the backend's `Server` header.
    pub hide_server: bool,
}

/// One upstream pool, validated.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Targets as `scheme://host:port` URIs.
    pub targets: Vec<http::Uri>,
    /// CA bundle for `https://` targets (absent: https targets are refused at load).
    pub ca_file: Option<PathBuf>,
    /// Active health check.
    pub health_check: Option<HealthCheck>,
    /// Passive ejection period after a connect failure.
    pub eject_for: Duration,
}

/// Active health check of an upstream pool.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// Path requested with GET.
    pub path: String,
    /// Time between checks.
    pub interval: Duration,
    /// Deadline per check.
    pub timeout: Duration,
}

/// One route, validated.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Unique name (shared text: every audit record of the route names it).
    pub name: crate::audit::Text,
    /// Host pattern.
    pub host: HostPattern,
    /// Path pattern.
    pub path: PathPattern,
    /// Allowed methods (`None`: all).
    pub methods: Option<Vec<Method>>,
    /// Upstream pool name (checked to exist).
    pub upstream: String,
    /// Skips authentication.
    pub public: bool,
    /// Serves patient data.
    pub phi: bool,
    /// Request body limit in bytes.
    pub max_body: u64,
    /// How PHI accesses wait for their audit record.
    pub audit: AuditMode,
    /// Compiled `allow`/`deny` rules.
    pub policy: crate::authz::policy::Policy,
    /// Step-up: longest time since the factors were proved.
    pub max_auth_age: Option<Duration>,
    /// Break-glass may be opened on this route.
    pub break_glass: bool,
}

// === impl Config ===

impl Config {
    /// Once the public listener is bound: a `public_url` that was not configured follows the
    /// real address (which matters when the configured port is 0).
    pub fn bind_public_url(&mut self, bound: SocketAddr) {
        if !self.listen.public_url_explicit {
            self.listen.public_url = format!("https://{bound}");
        }
    }

    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
            issues: vec![ConfigIssue {
                file: path.to_path_buf(),
                line: 0,
                field: "(file)".into(),
                message: format!("cannot read config file: {err}"),
            }],
        })?;
        let base_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Self::from_str(&text, path, &base_dir)
    }

    /// Validates config `text` as if read from `source`, resolving relative paths against
    /// `base_dir`. Tests and `demo` use this to load text that is not on disk.
    pub fn from_str(text: &str, source: &Path, base_dir: &Path) -> Result<Config, ConfigError> {
        let parsed: file::FileConfig = toml::from_str(text).map_err(|err| ConfigError {
            issues: vec![error::from_toml_error(source, text, &err)],
        })?;
        validate::validate(parsed, text, source, base_dir)
    }
}
