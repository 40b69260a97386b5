//! `FileConfig` → `Config`: defaults, path resolution and cross-references.
//!
//! Every check records into one [`IssueSink`] instead of returning early, so an operator sees
//! all problems of a file in one run of `wardgate config check`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, Uri};
use toml::Spanned;

use super::error::{ConfigError, IssueSink};
use super::file::{FileConfig, ListenFile, ProxyFile, ResponseHeadersFile, UpstreamFile};
use super::*;
use crate::gate::route::{HostPattern, PathPattern};

const DEFAULT_ADDR: &str = "127.0.0.1:8443";
const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9090";
const DEFAULT_STRIP: [&str; 5] = [
    "x-remote-user",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-auth-request-user",
    "remote-user",
];

pub(super) fn validate(
    file: FileConfig,
    text: &str,
    source: &Path,
    base_dir: &Path,
) -> Result<Config, ConfigError> {
    let mut sink = IssueSink::new(source, text);
    let resolve = |p: &str| -> PathBuf { base_dir.join(p) };

    let data_dir = resolve(file.data.dir.as_deref().unwrap_or("data"));
    let listen = listen(&file.listen, &mut sink, &resolve);
    let admin_addr = socket_addr(
        file.admin.addr.as_ref(),
        DEFAULT_ADMIN_ADDR,
        "admin.addr",
        &mut sink,
    );
    let log = log(&file, &mut sink);
    let limits = limits(&file);
    let proxy = proxy(&file.proxy, &mut sink);
    let response_headers = response_headers(&file.response_headers, text, &mut sink);
    let auth = auth(&file, &data_dir, &mut sink, &resolve);
    let audit = audit(&file, &data_dir, &resolve, &mut sink);
    let (detect, webhook) = detect(&file, &mut sink, &resolve);
    let upstreams = upstreams(&file.upstreams, &mut sink, &resolve);
    let routes = routes(&file, &upstreams, limits.max_body, &mut sink);

    super::rules::warn_phi_overlaps(&file, &routes, &mut sink);
    let warnings = sink.finish()?;
    Ok(Config {
        source: source.to_path_buf(),
        listen,
        admin_addr,
        data_dir,
        log,
        limits,
        proxy,
        response_headers,
        auth,
        audit,
        detect,
        webhook,
        break_glass_roles: file
            .break_glass
            .roles
            .clone()
            .unwrap_or_else(|| vec!["clinician".into()]),
        break_glass_duration: file
            .break_glass
            .duration
            .map_or(Duration::from_secs(3600), |d| d.0),
        upstreams,
        routes,
        warnings,
    })
}

fn socket_addr(
    value: Option<&Spanned<String>>,
    default: &str,
    field: &str,
    sink: &mut IssueSink<'_>,
) -> SocketAddr {
    let fallback = || {
        default
            .parse()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
    };
    match value {
        None => fallback(),
        Some(text) => text.get_ref().parse().unwrap_or_else(|_| {
            sink.span(
                text.span(),
                field,
                format!("`{}` is not an address like 127.0.0.1:8443", text.get_ref()),
            );
            fallback()
        }),
    }
}

fn existing_file(
    value: &Spanned<String>,
    field: &str,
    sink: &mut IssueSink<'_>,
    resolve: &impl Fn(&str) -> PathBuf,
) -> PathBuf {
    let path = resolve(value.get_ref());
    if !path.is_file() {
        sink.span(
            value.span(),
            field,
            format!("file `{}` does not exist", path.display()),
        );
    }
    path
}

fn listen(
    file: &ListenFile,
    sink: &mut IssueSink<'_>,
    resolve: &impl Fn(&str) -> PathBuf,
) -> ListenConfig {
    let addr = socket_addr(file.addr.as_ref(), DEFAULT_ADDR, "listen.addr", sink);
    let public_url = match &file.public_url {
        None => format!("https://{addr}"),
        Some(url) => match url.get_ref().parse::<Uri>() {
            Ok(uri)
                if uri.scheme_str() == Some("https")
                    && uri.authority().is_some()
                    && uri.path() == "/" =>
            {
                format!(
                    "https://{}",
                    uri.authority().map(|a| a.as_str()).unwrap_or_default()
                )
            }
            _ => {
                sink.span(
                    url.span(),
                    "listen.public_url",
                    "must be an origin like https://portal.example.org",
                );
                format!("https://{addr}")
            }
        },
    };
    let tls = match &file.tls {
        None => TlsSource::DevCert,
        Some(tls) => TlsSource::Files {
            cert: existing_file(&tls.get_ref().cert, "listen.tls.cert", sink, resolve),
            key: existing_file(&tls.get_ref().key, "listen.tls.key", sink, resolve),
        },
    };
    let ca = file
        .client_ca
        .as_ref()
        .map(|ca| existing_file(ca, "listen.client_ca", sink, resolve));
    let client_auth = match (file.client_auth.as_ref(), ca) {
        (None, None) => ClientAuth::None,
        (Some(mode), ca) => match (mode.get_ref().as_str(), ca) {
            ("none", _) => ClientAuth::None,
            ("optional", Some(ca)) => ClientAuth::Optional { ca },
            ("required", Some(ca)) => ClientAuth::Required { ca },
            ("optional" | "required", None) => {
                sink.span(
                    mode.span(),
                    "listen.client_auth",
                    "needs `client_ca` to verify client certificates against",
                );
                ClientAuth::None
            }
            (other, _) => {
                sink.span(
                    mode.span(),
                    "listen.client_auth",
                    format!("`{other}` must be none, optional or required"),
                );
                ClientAuth::None
            }
        },
        (None, Some(ca)) => ClientAuth::Required { ca },
    };
    let redirect_http = file
        .redirect_http
        .as_ref()
        .map(|a| socket_addr(Some(a), "", "listen.redirect_http", sink));
    let trusted_proxies = file
        .trusted_proxies
        .iter()
        .flatten()
        .filter_map(|net| {
            let text = net.get_ref();
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    sink.span(
                        net.span(),
                        "listen.trusted_proxies",
                        format!("`{text}` is not an IP or CIDR"),
                    )
                })
                .ok()
        })
        .collect();
    ListenConfig {
        addr,
        public_url,
        public_url_explicit: file.public_url.is_some(),
        tls,
        client_auth,
        redirect_http,
        trusted_proxies,
    }
}

fn auth(
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
        max_concurrent_hashes: users.max_concurrent_hashes.unwrap_or(2).max(1),
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

fn audit(
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

fn detect(
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
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.authority().is_some() =>
            {
                let ca = d
                    .webhook_ca
                    .as_ref()
                    .map(|ca| existing_file(ca, "detect.webhook_ca", sink, resolve));
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

fn log(file: &FileConfig, sink: &mut IssueSink<'_>) -> LogConfig {
    let format = match file.log.format.as_ref() {
        None => LogFormat::Text,
        Some(f) => match f.get_ref().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                sink.span(
                    f.span(),
                    "log.format",
                    format!("`{other}` must be text or json"),
                );
                LogFormat::Text
            }
        },
    };
    let level = file.log.level.clone().unwrap_or_else(|| "info".into());
    LogConfig { format, level }
}

fn limits(file: &FileConfig) -> Limits {
    let l = &file.limits;
    let d = |v: Option<units::HumanDuration>, default: u64| {
        v.map_or(Duration::from_secs(default), |v| v.0)
    };
    Limits {
        max_connections: l.max_connections.unwrap_or(10_000),
        handshake_timeout: d(l.handshake_timeout, 10),
        header_read_timeout: d(l.header_read_timeout, 10),
        max_header_size: l.max_header_size.map_or(64 * 1024, |s| s.0 as usize),
        keepalive_timeout: d(l.keepalive_timeout, 60),
        h2_max_concurrent_streams: l.h2_max_concurrent_streams.unwrap_or(100),
        max_body: l.max_body.map_or(10 * 1024 * 1024, |s| s.0),
        shutdown_grace: d(l.shutdown_grace, 30),
    }
}

fn proxy(file: &ProxyFile, sink: &mut IssueSink<'_>) -> ProxyConfig {
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
        pool_idle_timeout: d(file.pool_idle_timeout, 90),
        websocket_idle_timeout: d(file.websocket_idle_timeout, 300),
    }
}

fn response_headers(
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

fn upstreams(
    file: &BTreeMap<String, Spanned<UpstreamFile>>,
    sink: &mut IssueSink<'_>,
    resolve: &impl Fn(&str) -> PathBuf,
) -> BTreeMap<String, UpstreamConfig> {
    let mut out = BTreeMap::new();
    for (name, spanned) in file {
        let upstream = spanned.get_ref();
        let field = format!("upstreams.{name}");
        if upstream.targets.is_empty() {
            sink.span(
                spanned.span(),
                format!("{field}.targets"),
                "needs at least one target",
            );
        }
        let ca_file = upstream
            .ca_file
            .as_ref()
            .map(|ca| existing_file(ca, &format!("{field}.ca_file"), sink, resolve));
        let mut targets = Vec::new();
        for target in &upstream.targets {
            match target.get_ref().parse::<Uri>() {
                Ok(uri)
                    if matches!(uri.scheme_str(), Some("http" | "https"))
                        && uri.authority().is_some()
                        && matches!(uri.path(), "" | "/")
                        && uri.query().is_none() =>
                {
                    if uri.scheme_str() == Some("https") && ca_file.is_none() {
                        sink.span(target.span(), format!("{field}.targets"), "https targets need `ca_file` (the CA the backend's certificate chains to)");
                    }
                    targets.push(uri);
                }
                _ => sink.span(
                    target.span(),
                    format!("{field}.targets"),
                    format!(
                        "`{}` must be http://host:port or https://host:port",
                        target.get_ref()
                    ),
                ),
            }
        }
        let health_check = upstream.health_check.as_ref().map(|hc| {
            if !hc.path.get_ref().starts_with('/') {
                sink.span(
                    hc.path.span(),
                    format!("{field}.health_check.path"),
                    "must start with /",
                );
            }
            HealthCheck {
                path: hc.path.get_ref().clone(),
                interval: hc.interval.map_or(Duration::from_secs(5), |d| d.0),
                timeout: hc.timeout.map_or(Duration::from_secs(2), |d| d.0),
            }
        });
        out.insert(
            name.clone(),
            UpstreamConfig {
                targets,
                ca_file,
                health_check,
                eject_for: upstream.eject_for.map_or(Duration::from_secs(10), |d| d.0),
            },
        );
    }
    out
}

fn routes(
    file: &FileConfig,
    upstreams: &BTreeMap<String, UpstreamConfig>,
    default_max_body: u64,
    sink: &mut IssueSink<'_>,
) -> Vec<RouteConfig> {
    let mut names = BTreeSet::new();
    let mut out: Vec<RouteConfig> = Vec::new();
    for (index, spanned) in file.routes.iter().enumerate() {
        let route = spanned.get_ref();
        let field = |key: &str| format!("routes[{index}].{key}");
        let name = route.name.get_ref().clone();
        if name.is_empty() || !names.insert(name.clone()) {
            sink.span(
                route.name.span(),
                field("name"),
                format!("route name `{name}` must be non-empty and unique"),
            );
        }
        let host = match &route.host {
            None => HostPattern::Any,
            Some(host) => HostPattern::parse(host.get_ref()).unwrap_or_else(|msg| {
                sink.span(host.span(), field("host"), msg);
                HostPattern::Any
            }),
        };
        if route.path.get_ref().starts_with("/.wardgate") {
            sink.span(
                route.path.span(),
                field("path"),
                "/.wardgate/ is reserved for Wardgate's own portal",
            );
        }
        let path = PathPattern::parse(route.path.get_ref()).unwrap_or_else(|msg| {
            sink.span(route.path.span(), field("path"), msg);
            PathPattern::root()
        });
        let methods = route.methods.as_ref().map(|list| {
            list.iter()
                .filter_map(|m| {
                    match Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()) {
                        Ok(method) => Some(method),
                        Err(_) => {
                            sink.span(
                                m.span(),
                                field("methods"),
                                format!("`{}` is not an HTTP method", m.get_ref()),
                            );
                            None
                        }
                    }
                })
                .collect::<Vec<_>>()
        });
        if !upstreams.contains_key(route.upstream.get_ref()) {
            sink.span(
                route.upstream.span(),
                field("upstream"),
                format!(
                    "unknown upstream `{}` (no [upstreams.{}] table)",
                    route.upstream.get_ref(),
                    route.upstream.get_ref()
                ),
            );
        }
        let policy = super::rules::compile(route, index, &path, sink);
        let phi = route.phi.as_ref().is_some_and(|p| *p.get_ref());
        if phi && route.public {
            let at = route.phi.as_ref().map_or(spanned.span(), |p| p.span());
            sink.span(
                at,
                field("phi"),
                "a route serving patient data cannot be public",
            );
        }
        let compiled = RouteConfig {
            name,
            host,
            path,
            methods,
            upstream: route.upstream.get_ref().clone(),
            public: route.public,
            phi,
            max_body: route.max_body.map_or(default_max_body, |s| s.0),
            policy,
            max_auth_age: route.max_auth_age.map(|d| d.0),
            break_glass: route.break_glass,
            audit: match route
                .audit
                .as_ref()
                .map(|m| (m.get_ref().as_str(), m.span()))
            {
                None | Some(("batched", _)) => AuditMode::Batched,
                Some(("strict", _)) => AuditMode::Strict,
                Some((other, span)) => {
                    sink.span(
                        span,
                        field("audit"),
                        format!("`{other}` must be batched or strict"),
                    );
                    AuditMode::Batched
                }
            },
        };
        if let Some(twin) = out.iter().find(|other| {
            other.host == compiled.host
                && other.path == compiled.path
                && methods_overlap(&other.methods, &compiled.methods)
        }) {
            sink.span(
                route.path.span(),
                field("path"),
                format!(
                    "ambiguous: route `{}` already matches the same host, path and methods",
                    twin.name
                ),
            );
        }
        out.push(compiled);
    }
    out
}

fn methods_overlap(a: &Option<Vec<Method>>, b: &Option<Vec<Method>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
        _ => true,
    }
}
