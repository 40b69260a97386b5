//! `FileConfig` → `Config`: defaults, path resolution and cross-references.
//!
//! Every check records into one [`IssueSink`] instead of returning early, so an operator sees
//! all problems of a file in one run of `wardgate config check`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{Method, Uri};
use toml::Spanned;

use super::error::{ConfigError, IssueSink};
use super::file::{FileConfig, ListenFile, UpstreamFile};
use super::*;
use crate::gate::route::{HostPattern, PathPattern};

const DEFAULT_ADDR: &str = "127.0.0.1:8443";
const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9090";

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
    let admin_token_file = file
        .admin
        .token_file
        .as_ref()
        .map(|f| secret_file(f, "admin.token_file", &mut sink, &resolve));
    let state = super::state::state(&file.state, &mut sink, &resolve);
    let oidc_providers = super::oidc::providers(&file.oidc, &mut sink, &resolve);
    let log = super::process::log(&file, &mut sink);
    let limits = super::process::limits(&file, &mut sink);
    let proxy = super::sections::proxy(&file.proxy, &mut sink);
    let response_headers =
        super::sections::response_headers(&file.response_headers, text, &mut sink);
    let auth = super::sections::auth(&file, &data_dir, &mut sink, &resolve);
    let audit = super::sections::audit(&file, &data_dir, &resolve, &mut sink);
    let (detect, webhook) = super::sections::detect(&file, &mut sink, &resolve);
    let upstreams = upstreams(&file.upstreams, &mut sink, &resolve);
    let routes = routes(&file, &upstreams, limits.max_body, &mut sink);

    super::rules::warn_phi_overlaps(&file, &routes, &mut sink);
    let warnings = sink.finish()?;
    Ok(Config {
        source: source.to_path_buf(),
        listen,
        admin_addr,
        admin_token_file,
        state,
        oidc_providers,
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

pub(super) fn existing_file(
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

/// Like [`existing_file`] for a file holding a secret: others must not read it (nor its group
/// write it), so a copied config directory or a loose umask cannot leak it. Group read is
/// allowed for Kubernetes Secrets (root:fsGroup, mode 0440).
pub(super) fn secret_file(
    value: &Spanned<String>,
    field: &str,
    sink: &mut IssueSink<'_>,
    resolve: &impl Fn(&str) -> PathBuf,
) -> PathBuf {
    let path = existing_file(value, field, sink, resolve);
    if let Some(why) = crate::keys::loose_permissions(&path) {
        sink.span(value.span(), field, format!("`{}` {why}", path.display()));
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
                // Not echoed: the text may hold a password.
                Ok(uri) if has_userinfo(&uri) => sink.span(
                    target.span(),
                    format!("{field}.targets"),
                    "must not carry user information (`user:password@`): Wardgate never sends it to a backend",
                ),
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
            name: name.into(),
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
                && other.path.spelled_alike(&compiled.path)
                && methods_overlap(&other.methods, &compiled.methods)
        }) {
            sink.span(
                route.path.span(),
                field("path"),
                format!(
                    "ambiguous: route `{}` already matches the same host, path (ignoring letter case and a trailing slash) and methods",
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

/// Whether `uri`'s authority carries user information (`user:password@host`).
pub(super) fn has_userinfo(uri: &Uri) -> bool {
    uri.authority()
        .is_some_and(|authority| authority.as_str().contains('@'))
}
