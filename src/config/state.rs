//! `[state]`: where sessions, TOTP steps, lockouts and rate limits are shared.
//!
//! Kept apart from the other sections because it is the one place a secret (the Redis password)
//! could end up in the config file: the password comes from `password_file`, and a password
//! written into `url` is refused so it cannot leak through `config check` output or a ConfigMap.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::error::IssueSink;
use super::units::HumanDuration;

/// `[state]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    /// `memory` (default) or `redis`.
    pub backend: Option<Spanned<String>>,
    /// `redis://host:port/db` or `rediss://` (TLS).
    pub url: Option<Spanned<String>>,
    /// Redis ACL user.
    pub username: Option<String>,
    /// File holding the Redis password (first line).
    pub password_file: Option<Spanned<String>>,
    /// PEM CA bundle for `rediss://` (default: the system roots).
    pub ca_file: Option<Spanned<String>>,
    /// Prefix of every key and channel (default `wardgate:`).
    pub key_prefix: Option<String>,
    /// Multiplexed connections (default 4).
    pub pool_size: Option<Spanned<usize>>,
    /// Deadline of one Redis command (default 1s).
    pub command_timeout: Option<HumanDuration>,
    /// How long a verified session may be answered from the local cache (default 1s, 0s: off).
    pub session_cache: Option<HumanDuration>,
}

/// `[state]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateConfig {
    /// In-process dashmap: one Wardgate.
    Memory,
    /// Redis shared by every replica.
    Redis(RedisConfig),
}

/// Connection settings of the Redis backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` URL without credentials.
    pub url: String,
    /// ACL user.
    pub username: Option<String>,
    /// Password file.
    pub password_file: Option<PathBuf>,
    /// CA bundle for TLS.
    pub ca_file: Option<PathBuf>,
    /// Key and channel prefix.
    pub key_prefix: String,
    /// Multiplexed connections.
    pub pool_size: usize,
    /// Deadline per command.
    pub command_timeout: Duration,
    /// Local positive-session cache lifetime.
    pub session_cache: Duration,
}

pub(super) fn state(
    file: &StateFile,
    sink: &mut IssueSink<'_>,
    resolve: &impl Fn(&str) -> PathBuf,
) -> StateConfig {
    let backend = file.backend.as_ref();
    match backend.map(|b| b.get_ref().as_str()) {
        None | Some("memory") => {
            if let Some(url) = &file.url {
                sink.warn(
                    url.span(),
                    "state.url",
                    "ignored: the backend is memory (set backend = \"redis\")",
                );
            }
            StateConfig::Memory
        }
        Some("redis") => StateConfig::Redis(redis(file, sink, resolve)),
        Some(other) => {
            let span = backend.map(|b| b.span()).unwrap_or_default();
            sink.span(
                span,
                "state.backend",
                format!("`{other}` must be memory or redis"),
            );
            StateConfig::Memory
        }
    }
}

fn redis(
    file: &StateFile,
    sink: &mut IssueSink<'_>,
    resolve: &impl Fn(&str) -> PathBuf,
) -> RedisConfig {
    let url = match &file.url {
        None => {
            let at = file.backend.as_ref().map(|b| b.span()).unwrap_or_default();
            sink.span(
                at,
                "state.url",
                "the redis backend needs url = \"redis://host:port\"",
            );
            String::new()
        }
        Some(url) => {
            let text = url.get_ref();
            match http::Uri::try_from(text.as_str()) {
                Ok(uri)
                    if matches!(uri.scheme_str(), Some("redis" | "rediss"))
                        && uri.authority().is_some() =>
                {
                    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
                        sink.span(
                            url.span(),
                            "state.url",
                            "must not carry credentials: use username and password_file",
                        );
                    }
                }
                // A URL that does not parse is echoed only when it cannot hold a password
                // (no `@`): this message reaches the log and, on reload, the audit trail.
                _ if text.contains('@') => sink.span(
                    url.span(),
                    "state.url",
                    "must be redis://host:port[/db] or rediss://host:port[/db], without credentials: use username and password_file",
                ),
                _ => sink.span(
                    url.span(),
                    "state.url",
                    format!("`{text}` must be redis://host:port[/db] or rediss://host:port[/db]"),
                ),
            }
            text.clone()
        }
    };
    let password_file = file
        .password_file
        .as_ref()
        .map(|f| super::validate::secret_file(f, "state.password_file", sink, resolve));
    let ca_file = file
        .ca_file
        .as_ref()
        .map(|f| super::validate::existing_file(f, "state.ca_file", sink, resolve));
    if ca_file.is_some() && !url.starts_with("rediss://") {
        if let Some(ca) = &file.ca_file {
            sink.span(ca.span(), "state.ca_file", "only used with a rediss:// url");
        }
    }
    let pool_size = match &file.pool_size {
        None => 4,
        Some(n) if (1..=64).contains(n.get_ref()) => *n.get_ref(),
        Some(n) => {
            sink.span(n.span(), "state.pool_size", "must be between 1 and 64");
            4
        }
    };
    RedisConfig {
        url,
        username: file.username.clone(),
        password_file,
        ca_file,
        key_prefix: file
            .key_prefix
            .clone()
            .unwrap_or_else(|| "wardgate:".into()),
        pool_size,
        command_timeout: match file.command_timeout {
            None => Duration::from_secs(1),
            Some(d) if d.0 <= Duration::from_secs(5) => d.0.max(Duration::from_millis(10)),
            Some(_) => {
                let at = file.url.as_ref().map(|u| u.span()).unwrap_or_default();
                sink.span(
                    at,
                    "state.command_timeout",
                    "must be at most 5s: while Redis does not answer, every request that needs it waits this long",
                );
                Duration::from_secs(1)
            }
        },
        session_cache: match file.session_cache {
            None => Duration::from_secs(1),
            Some(d) if d.0 <= Duration::from_secs(10) => d.0,
            Some(_) => {
                let at = file.url.as_ref().map(|u| u.span()).unwrap_or_default();
                sink.span(
                    at,
                    "state.session_cache",
                    "must be at most 10s: a revocation missed by pub/sub lives that long",
                );
                Duration::from_secs(1)
            }
        },
    }
}
