//! The config file exactly as written: serde structs mirroring the TOML one to one.
//!
//! Every struct denies unknown fields so a misspelt key is an error, not an ignored setting.
//! Values that later checks must point at (paths, upstream names, patterns) are `Spanned` so the
//! error can name their line. Defaults and cross-checks live in `validate.rs`, not here.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::units::{ByteSize, HumanDuration};

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[listen]`: the public TLS listener.
    #[serde(default)]
    pub listen: ListenFile,
    /// `[admin]`: the admin listener.
    #[serde(default)]
    pub admin: AdminFile,
    /// `[data]`: where keys and the development certificate live.
    #[serde(default)]
    pub data: DataFile,
    /// `[log]`: log format and level.
    #[serde(default)]
    pub log: LogFile,
    /// `[limits]`: protection of the proxy itself.
    #[serde(default)]
    pub limits: LimitsFile,
    /// `[proxy]`: forwarding behaviour shared by all routes.
    #[serde(default)]
    pub proxy: ProxyFile,
    /// `[response_headers]`: security headers added to every answer.
    #[serde(default)]
    pub response_headers: ResponseHeadersFile,
    /// `[users]`: the users file and password hashing.
    #[serde(default)]
    pub users: UsersFile,
    /// `[session]`: session lifetimes.
    #[serde(default)]
    pub session: SessionFile,
    /// `[login]`: abuse resistance of the login endpoints.
    #[serde(default)]
    pub login: LoginFile,
    /// `[audit]`: the audit trail.
    #[serde(default)]
    pub audit: AuditFile,
    /// `[detect]`: detection rules on the audit stream.
    #[serde(default)]
    pub detect: DetectFile,
    /// `[break_glass]`: emergency access.
    #[serde(default)]
    pub break_glass: BreakGlassFile,
    /// `[state]`: the shared state store.
    #[serde(default)]
    pub state: super::state::StateFile,
    /// `[oidc]`: single sign-on through hospital identity providers.
    #[serde(default)]
    pub oidc: super::oidc::OidcFile,
    /// `[upstreams.NAME]`: backend pools.
    #[serde(default)]
    pub upstreams: BTreeMap<String, Spanned<UpstreamFile>>,
    /// `[[routes]]`: the route table.
    #[serde(default)]
    pub routes: Vec<Spanned<RouteFile>>,
}

/// `[listen]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenFile {
    /// Socket address of the TLS listener.
    pub addr: Option<Spanned<String>>,
    /// The origin users reach (used for redirects), default `https://` + addr.
    pub public_url: Option<Spanned<String>>,
    /// Certificate and key; absent means a generated development certificate.
    pub tls: Option<Spanned<TlsFile>>,
    /// CA bundle that client certificates must chain to.
    pub client_ca: Option<Spanned<String>>,
    /// `none`, `optional` or `required`.
    pub client_auth: Option<Spanned<String>>,
    /// Plain-HTTP listener that only redirects to HTTPS.
    pub redirect_http: Option<Spanned<String>>,
    /// Peers whose `X-Forwarded-*` headers are believed (CIDR list).
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
}

/// `tls = { cert, key }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// PEM certificate chain.
    pub cert: Spanned<String>,
    /// PEM private key.
    pub key: Spanned<String>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// Socket address of the admin listener.
    pub addr: Option<Spanned<String>>,
    /// File holding the token that mutating admin endpoints require.
    pub token_file: Option<Spanned<String>>,
}

/// `[data]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataFile {
    /// Data directory, default `data/` beside the config.
    pub dir: Option<String>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    /// `text` or `json`.
    pub format: Option<Spanned<String>>,
    /// A tracing filter such as `info` or `info,wardgate=debug`.
    pub level: Option<Spanned<String>>,
}

/// `[limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Concurrent client connections.
    pub max_connections: Option<Spanned<usize>>,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Option<Spanned<HumanDuration>>,
    /// Time allowed to send a complete request head (slowloris defence).
    pub header_read_timeout: Option<Spanned<HumanDuration>>,
    /// Longest pause between two pieces of a request body (slow-body defence).
    pub body_read_timeout: Option<Spanned<HumanDuration>>,
    /// Largest accepted request head.
    pub max_header_size: Option<ByteSize>,
    /// Idle keep-alive connections are closed after this long.
    pub keepalive_timeout: Option<Spanned<HumanDuration>>,
    /// A client that takes no more of a response for this long is disconnected.
    pub send_timeout: Option<Spanned<HumanDuration>>,
    /// HTTP/2 concurrent streams per connection.
    pub h2_max_concurrent_streams: Option<u32>,
    /// Default request body limit for routes without `max_body`.
    pub max_body: Option<ByteSize>,
    /// How long in-flight requests may finish after SIGTERM.
    pub shutdown_grace: Option<HumanDuration>,
    /// Serving threads (0 or absent: one per CPU available to the process).
    pub serve_threads: Option<usize>,
}

/// `[proxy]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyFile {
    /// Client headers removed besides `X-Wardgate-*`.
    pub strip_headers: Option<Vec<Spanned<String>>>,
    /// Upstream TCP (+TLS) connect timeout.
    pub connect_timeout: Option<HumanDuration>,
    /// Time from sending the request to the upstream's response head.
    pub response_timeout: Option<HumanDuration>,
    /// Longest silence of a backend inside its response body.
    pub upstream_idle_timeout: Option<Spanned<HumanDuration>>,
    /// Pooled idle upstream connections are closed after this long.
    pub pool_idle_timeout: Option<HumanDuration>,
    /// A WebSocket tunnel with no traffic either way is closed after this long.
    pub websocket_idle_timeout: Option<HumanDuration>,
    /// Whether WebSocket ping/pong frames count as traffic (default true).
    pub websocket_pings_are_activity: Option<bool>,
    /// Largest WebSocket message (and frame) relayed (default 1 MiB).
    pub websocket_max_message: Option<ByteSize>,
}

/// `[response_headers]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseHeadersFile {
    /// `Strict-Transport-Security` value; `""` disables it.
    pub hsts: Option<String>,
    /// Add `X-Content-Type-Options: nosniff`.
    pub nosniff: Option<bool>,
    /// `X-Frame-Options` value; `""` disables it.
    pub frame_options: Option<String>,
    /// `Referrer-Policy` value; `""` disables it.
    pub referrer_policy: Option<String>,
    /// Remove the backend's `Server` header.
    pub hide_server: Option<bool>,
}

/// `[upstreams.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    /// `http://host:port` or `https://host:port` targets.
    pub targets: Vec<Spanned<String>>,
    /// CA bundle that `https://` targets must chain to.
    pub ca_file: Option<Spanned<String>>,
    /// Active health check.
    pub health_check: Option<HealthCheckFile>,
    /// How long a target that failed to connect is skipped.
    pub eject_for: Option<HumanDuration>,
}

/// `health_check = { path, interval, timeout }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
    /// Path requested with GET; any 2xx/3xx is healthy.
    pub path: Spanned<String>,
    /// Time between checks.
    pub interval: Option<HumanDuration>,
    /// Time allowed per check.
    pub timeout: Option<HumanDuration>,
}

/// `[[routes]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Unique name used in logs, metrics and audit.
    pub name: Spanned<String>,
    /// Exact host or `*.example.org`; absent matches any host.
    pub host: Option<Spanned<String>>,
    /// Path pattern with `{param}` and a trailing `**`.
    pub path: Spanned<String>,
    /// Allowed methods; absent takes every method.
    pub methods: Option<Vec<Spanned<String>>>,
    /// Name of an `[upstreams.NAME]` pool.
    pub upstream: Spanned<String>,
    /// `true` skips authentication; default protected.
    #[serde(default)]
    pub public: bool,
    /// The route serves patient data.
    pub phi: Option<Spanned<bool>>,
    /// Request body limit for this route.
    pub max_body: Option<ByteSize>,
    /// `batched` (default) or `strict`.
    pub audit: Option<Spanned<String>>,
    /// Rules that admit a request (default deny).
    pub allow: Option<Vec<Spanned<RuleFile>>>,
    /// Rules that refuse a request whatever the allow rules say.
    pub deny: Option<Vec<Spanned<RuleFile>>>,
    /// Sessions authenticated longer ago must step up (re-enter a TOTP code).
    pub max_auth_age: Option<HumanDuration>,
    /// Emergency access may be opened on this route.
    #[serde(default)]
    pub break_glass: bool,
}

/// One `allow`/`deny` rule: every condition it names must hold.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// Name used in decisions (default `allow[INDEX]`).
    pub name: Option<String>,
    /// Usernames.
    pub users: Option<Vec<String>>,
    /// Roles.
    pub roles: Option<Vec<String>>,
    /// Groups.
    pub groups: Option<Vec<String>>,
    /// Claims that must have these values.
    pub claims: Option<BTreeMap<String, String>>,
    /// Client-certificate subjects (`CN=...`) or SANs (`DNS:...`, `URI:...`).
    pub client_cert: Option<Vec<String>>,
    /// Any signed-in user.
    pub authenticated: Option<bool>,
    /// Methods.
    pub methods: Option<Vec<String>>,
    /// Source networks (CIDR).
    pub networks: Option<Vec<String>>,
    /// Path parameter = `"claim:NAME"`: the parameter must equal the caller's claim.
    #[serde(rename = "match")]
    pub bindings: Option<BTreeMap<String, String>>,
    /// Require a second factor (default true).
    pub mfa: Option<bool>,
    /// Time-of-day window in UTC, `"HH:MM-HH:MM"` (may wrap past midnight).
    pub hours: Option<String>,
}

/// `[users]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    /// Users file, default `<data dir>/users.toml`.
    pub file: Option<String>,
    /// Key sealing TOTP secrets, default `<data dir>/users.key`.
    pub key_file: Option<String>,
    /// Environment variable holding that key instead (base64, 32 bytes).
    pub key_env: Option<String>,
    /// Minimum password length (never below 8).
    pub min_password_length: Option<Spanned<usize>>,
    /// argon2id memory.
    pub argon2_memory: Option<Spanned<ByteSize>>,
    /// argon2id iterations.
    pub argon2_iterations: Option<Spanned<u32>>,
    /// argon2id lanes.
    pub argon2_parallelism: Option<Spanned<u32>>,
    /// Password hashes computed at once (the rest queue).
    pub max_concurrent_hashes: Option<usize>,
}

/// `[session]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionFile {
    /// Idle sessions end after this long (HIPAA automatic logoff).
    pub idle_timeout: Option<HumanDuration>,
    /// Sessions end this long after login, active or not.
    pub max_lifetime: Option<HumanDuration>,
}

/// `[login]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginFile {
    /// Login, TOTP and enrollment attempts per source IP per minute.
    pub ip_limit: Option<u32>,
    /// Consecutive failures allowed before an account is locked.
    pub lockout_after: Option<Spanned<u32>>,
    /// First lock period; doubles with each further failure.
    pub lockout_base: Option<HumanDuration>,
    /// Longest lock period.
    pub lockout_max: Option<HumanDuration>,
}

/// `[audit]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFile {
    /// Directory, default `<data dir>/audit`.
    pub dir: Option<String>,
    /// Checkpoint signing key, default `<data dir>/audit-signing.key`.
    pub signing_key: Option<String>,
    /// Longest wait for fsync of batched records (default 50ms).
    pub fsync_interval: Option<HumanDuration>,
    /// Rotate at this size (default 100MiB).
    pub max_file_size: Option<ByteSize>,
    /// Records between signed checkpoints (default 1000).
    pub checkpoint_every: Option<u64>,
    /// Queue capacity (default 65536).
    pub queue: Option<usize>,
    /// Replica id (default: the host name).
    pub replica: Option<String>,
    /// Rotate files older than this (default 24h).
    pub rotate_every: Option<HumanDuration>,
    /// Second copy for a SIEM: `stdout` or `syslog+tcp://host:port`.
    pub mirror: Option<Spanned<String>>,
}

/// `[break_glass]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassFile {
    /// Roles that may open emergency access (default `["clinician"]`).
    pub roles: Option<Vec<String>>,
    /// How long a grant lasts (default 1h).
    pub duration: Option<HumanDuration>,
}

/// `[detect]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectFile {
    /// Failed logins per account within `window` that raise an alert (default 5; 0 = off).
    pub failed_logins_per_account: Option<usize>,
    /// Failed logins per source address within `window` (default 20; 0 = off).
    pub failed_logins_per_ip: Option<usize>,
    /// Window for failed logins (default 5m).
    pub window: Option<HumanDuration>,
    /// Distinct patients per user within `patient_window` (default 50; 0 = off).
    pub distinct_patients: Option<usize>,
    /// Window for distinct patients (default 1h).
    pub patient_window: Option<HumanDuration>,
    /// PHI access outside this UTC window raises an alert, e.g. "06:00-20:00".
    pub phi_hours: Option<Spanned<String>>,
    /// POST alerts (JSON) to this URL.
    pub webhook: Option<Spanned<String>>,
    /// CA bundle for an https webhook.
    pub webhook_ca: Option<Spanned<String>>,
}
