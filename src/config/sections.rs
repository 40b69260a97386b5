//! Validation of the operational sections: logging, limits, proxy behaviour, response
//! headers, sign-in, audit and detection. Each function reads one `[section]` of the file
//! and returns its runtime form, recording problems in the shared sink.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};
use toml::Spanned;

use super::error::IssueSink;
use super::file::{FileConfig, ProxyFile, ResponseHeadersFile};
use super::*;

const DEFAULT_STRIP: [&str; 5] = [
    "x-remote-user",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-auth-request-user",
    "remote-user",
];

pub(super) fn proxy(file: &ProxyFile, sink: &mut IssueSink<'_>) -> ProxyConfig {
    let d = |v: Option<units::HumanDuration>, default: u64| {
        v.map_or(Duration::from_secs(default), |v| v.0)
    };
    let strip_headers = match &file.strip_headers {
        None => DEFAULT_STRIP
            .iter()
            .map(|h| HeaderName::from_static(h))
            .collect(),
        Some(list) => list
            .iter()
            .filter_map(|name| {
                HeaderName::from_bytes(name.get_ref().as_bytes())
                    .map_err(|_| {
                        sink.span(
                            name.span(),
                            "proxy.strip_headers",
                            format!("`{}` is not a header name", name.get_ref()),
                        )
                    })
                    .ok()
            })
            .collect(),
    };
    ProxyConfig {
        strip_headers,
        connect_timeout: d(file.connect_timeout, 5),
        response_timeout: d(file.response_timeout, 60),
        upstream_idle_timeout: super::process::deadline(
            &file.upstream_idle_timeout,
            "proxy.upstream_idle_timeout",
            300,
            sink,
        ),
        pool_idle_timeout: d(file.pool_idle_timeout, 90),
        websocket_idle_timeout: d(file.websocket_idle_timeout, 300),
        websocket_pings_are_activity: file.websocket_pings_are_activity.unwrap_or(true),
        websocket_max_message: file.websocket_max_message.map_or(1024 * 1024, |size| {
            usize::try_from(size.0).unwrap_or(usize::MAX)
        }),
    }
}

pub(super) fn response_headers(
    file: &ResponseHeadersFile,
    text: &str,
    sink: &mut IssueSink<'_>,
) -> ResponseHeaders {
    let mut value = |given: &Option<String>, default: &str, field: &str| -> Option<HeaderValue> {
        let chosen = given.as_deref().unwrap_or(default);
        if chosen.is_empty() {
            return None;
        }
        HeaderValue::from_str(chosen)
            .map_err(|_| {
                let offset = text
                    .find(field.rsplit('.').next().unwrap_or(field))
                    .unwrap_or(0);
                sink.at(offset, field, "is not a valid header value")
            })
            .ok()
    };
    ResponseHeaders {
        hsts: value(
            &file.hsts,
            "max-age=63072000; includeSubDomains",
            "response_headers.hsts",
        ),
        nosniff: file.nosniff.unwrap_or(true),
        frame_options: value(
            &file.frame_options,
            "DENY",
            "response_headers.frame_options",
        ),
        referrer_policy: value(
            &file.referrer_policy,
            "same-origin",
            "response_headers.referrer_policy",
        ),
        hide_server: file.hide_server.unwrap_or(true),
    }
}

pub(super) fn auth(
    file: &FileConfig,
    data_dir: &Path,
    sink: &mut IssueSink<'_>,
    resolve: &impl Fn(&str) -> PathBuf,
) -> AuthConfig {
    let users = &file.users;
    let defaults = crate::authn::password::HashParams::default();
    let mut at_least =
        |value: &Option<Spanned<u32>>, minimum: u32, field: &str, what: &str| -> u32 {
            match value {
                None => minimum,
                Some(v) if *v.get_ref() >= minimum => *v.get_ref(),
                Some(v) => {
                    sink.span(
                        v.span(),
                        field,
                        format!("must be at least {minimum} ({what})"),
                    );
                    minimum
                }
            }
        };
    let iterations = at_least(
        &users.argon2_iterations,
        defaults.iterations,
        "users.argon2_iterations",
        "OWASP minimum",
    );
    let parallelism = at_least(
        &users.argon2_parallelism,
        defaults.parallelism,
        "users.argon2_parallelism",
        "at least one lane",
    );
    let memory_kib = match &users.argon2_memory {
        None => defaults.memory_kib,
        Some(m) if m.get_ref().0 >= u64::from(defaults.memory_kib) * 1024 => {
            u32::try_from(m.get_ref().0 / 1024).unwrap_or(u32::MAX)
        }
        Some(m) => {
            sink.span(
                m.span(),
                "users.argon2_memory",
                "must be at least 19MiB (OWASP minimum)",
            );
            defaults.memory_kib
        }
    };
    let min_password_length = match &users.min_password_length {
        None => 12,
        Some(n)
            if *n.get_ref() >= 8 && *n.get_ref() <= crate::authn::password::MAX_PASSWORD_LEN =>
        {
            *n.get_ref()
        }
        Some(n) => {
            sink.span(
                n.span(),
                "users.min_password_length",
                "must be between 8 (NIST SP 800-63B) and 256",
            );
            12
        }
    };
    let free_failures = match &file.login.lockout_after {
        None => 5,
        Some(n) if (1..=100).contains(n.get_ref()) => *n.get_ref(),
        Some(n) => {
            sink.span(
                n.span(),
                "login.lockout_after",
                "must be between 1 and 100 (NIST SP 800-63B)",
            );
            5
        }
    };
    let in_data = |given: &Option<String>, default: &str| {
        given
            .as_deref()
            .map_or_else(|| data_dir.join(default), resolve)
    };
    AuthConfig {
        users_file: in_data(&users.file, "users.toml"),
        key_file: in_data(&users.key_file, "users.key"),
        key_env: users.key_env.clone(),
        session_keys_file: data_dir.join("session-keys.toml"),
        min_password_length,
        hash: crate::authn::password::HashParams {
            memory_kib,
            iterations,
            parallelism,
        },
        // Half the cores by default: a login storm queues on its half and proxied clinical
        // traffic keeps the other.
        max_concurrent_hashes: users
            .max_concurrent_hashes
            .unwrap_or_else(|| super::process::cpus() / 2)
            .max(1),
        idle_timeout: file
            .session
            .idle_timeout
            .map_or(Duration::from_secs(15 * 60), |d| d.0),
        max_lifetime: file
            .session
            .max_lifetime
            .map_or(Duration::from_secs(12 * 3600), |d| d.0),
        ip_limit: file.login.ip_limit.unwrap_or(30).max(1),
        lock_policy: crate::state::LockPolicy {
            free_failures,
            base_secs: file.login.lockout_base.map_or(30, |d| d.0.as_secs().max(1)),
            max_secs: file
                .login
                .lockout_max
                .map_or(3600, |d| d.0.as_secs().max(1)),
            hard_limit: 100,
        },
    }
}

pub(super) fn audit(
    file: &FileConfig,
    data_dir: &Path,
    resolve: &impl Fn(&str) -> PathBuf,
    sink: &mut IssueSink<'_>,
) -> AuditConfig {
    let audit = &file.audit;
    let replica = audit.replica.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "wardgate".into())
    });
    AuditConfig {
        dir: audit
            .dir
            .as_deref()
            .map_or_else(|| data_dir.join("audit"), resolve),
        signing_key: audit
            .signing_key
            .as_deref()
            .map_or_else(|| data_dir.join("audit-signing.key"), resolve),
        fsync_interval: audit
            .fsync_interval
            .map_or(Duration::from_millis(50), |d| d.0),
        max_file_size: audit
            .max_file_size
            .map_or(100 * 1024 * 1024, |s| s.0.max(4096)),
        checkpoint_every: audit.checkpoint_every.unwrap_or(1000).max(1),
        queue: audit.queue.unwrap_or(65_536).max(1),
        replica,
        rotate_every: audit.rotate_every.map_or(Duration::from_secs(86_400), |d| {
            d.0.max(Duration::from_secs(1))
        }),
        mirror: audit.mirror.as_ref().and_then(|m| {
            let target = crate::audit::mirror::MirrorTarget::parse(m.get_ref());
            if target.is_none() {
                sink.span(
                    m.span(),
                    "audit.mirror",
                    format!("`{}` must be stdout or syslog+tcp://host:port", m.get_ref()),
                );
            }
            target
        }),
    }
}

pub(super) fn detect(
    file: &FileConfig,
    sink: &mut IssueSink<'_>,
    resolve: &impl Fn(&str) -> PathBuf,
) -> (
    crate::audit::detect::DetectConfig,
    Option<(Uri, Option<PathBuf>)>,
) {
    let d = &file.detect;
    let off_is_max = |n: usize| if n == 0 { usize::MAX } else { n };
    let phi_hours = d.phi_hours.as_ref().and_then(|h| {
        let parsed = crate::authz::policy::parse_hours(h.get_ref());
        if parsed.is_none() {
            sink.span(
                h.span(),
                "detect.phi_hours",
                format!(
                    "`{}` must be a UTC window like \"06:00-20:00\"",
                    h.get_ref()
                ),
            );
        }
        parsed
    });
    let webhook = d
        .webhook
        .as_ref()
        .and_then(|url| match url.get_ref().parse::<Uri>() {
            Ok(uri) if super::validate::has_userinfo(&uri) => {
                sink.span(
                    url.span(),
                    "detect.webhook",
                    "must not carry user information (`user:password@`): it would not be sent",
                );
                None
            }
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.authority().is_some() =>
            {
                let ca = d.webhook_ca.as_ref().map(|ca| {
                    super::validate::existing_file(ca, "detect.webhook_ca", sink, resolve)
                });
                Some((uri, ca))
            }
            _ => {
                sink.span(
                    url.span(),
                    "detect.webhook",
                    "must be an http:// or https:// URL",
                );
                None
            }
        });
    let config = crate::audit::detect::DetectConfig {
        failed_logins_per_account: off_is_max(d.failed_logins_per_account.unwrap_or(5)),
        failed_logins_per_ip: off_is_max(d.failed_logins_per_ip.unwrap_or(20)),
        window: d.window.map_or(Duration::from_secs(300), |w| w.0),
        distinct_patients: off_is_max(d.distinct_patients.unwrap_or(50)),
        patient_window: d.patient_window.map_or(Duration::from_secs(3600), |w| w.0),
        phi_hours,
    };
    (config, webhook)
}
