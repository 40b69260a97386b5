//! Compiles a route's `allow`/`deny` lists into a [`Policy`], checking each rule at load.

use http::Method;
use toml::Spanned;

use super::error::IssueSink;
use super::file::{RouteFile, RuleFile};
use crate::authz::policy::{Policy, Rule};
use crate::gate::route::PathPattern;

/// Compiles and checks the rules of route `index`.
pub(super) fn compile(
    route: &RouteFile,
    index: usize,
    path: &PathPattern,
    sink: &mut IssueSink<'_>,
) -> Policy {
    let name = route.name.get_ref();
    let field = |key: &str| format!("routes[{index}].{key}");
    let has_rules = route.allow.as_ref().is_some_and(|r| !r.is_empty())
        || route.deny.as_ref().is_some_and(|r| !r.is_empty());
    if route.public {
        if has_rules {
            sink.span(
                route.name.span(),
                field("allow"),
                "a public route admits everyone; allow/deny rules need a protected route",
            );
        }
        return Policy::default();
    }
    if route.allow.as_ref().is_none_or(|r| r.is_empty()) {
        sink.span(
            route.name.span(),
            field("allow"),
            format!("protected route `{name}` has no allow rule, so nobody could use it (e.g. allow = [{{ roles = [\"clinician\"] }}] or [{{ authenticated = true }}])"),
        );
    }
    let mut compile_list = |list: &Option<Vec<Spanned<RuleFile>>>, kind: &str| -> Vec<Rule> {
        list.iter()
            .flatten()
            .enumerate()
            .map(|(i, rule)| {
                one(
                    rule,
                    &format!("{name}/{kind}[{i}]"),
                    &format!("routes[{index}].{kind}[{i}]"),
                    path,
                    sink,
                )
            })
            .collect()
    };
    let policy = Policy {
        allow: compile_list(&route.allow, "allow"),
        deny: compile_list(&route.deny, "deny"),
    };
    for (i, allow) in policy.allow.iter().enumerate() {
        if let Some(deny) = policy.deny.iter().find(|deny| covers(deny, allow)) {
            let span = route
                .allow
                .as_ref()
                .and_then(|a| a.get(i))
                .map_or(route.name.span(), |r| r.span());
            sink.warn(
                span,
                format!("routes[{index}].allow[{i}]"),
                format!("can never apply: {} refuses everyone it admits", deny.id),
            );
        }
    }
    policy
}

/// Whether `deny` matches every request `allow` matches (so `allow` is dead).
fn covers(deny: &Rule, allow: &Rule) -> bool {
    fn list<T: PartialEq>(deny: &[T], allow: &[T]) -> bool {
        deny.is_empty() || (!allow.is_empty() && allow.iter().all(|a| deny.contains(a)))
    }
    let names = |r: &Rule| {
        r.authenticated
            || !r.users.is_empty()
            || !r.roles.is_empty()
            || !r.groups.is_empty()
            || !r.claims.is_empty()
            || !r.bindings.is_empty()
    };
    list(&deny.users, &allow.users)
        && list(&deny.roles, &allow.roles)
        && list(&deny.groups, &allow.groups)
        && list(&deny.client_certs, &allow.client_certs)
        && list(&deny.methods, &allow.methods)
        && (deny.networks.is_empty()
            || (!allow.networks.is_empty()
                && allow
                    .networks
                    .iter()
                    .all(|a| deny.networks.iter().any(|d| d.contains(a)))))
        && deny
            .claims
            .iter()
            .all(|(k, v)| allow.claims.get(k) == Some(v))
        && deny
            .bindings
            .iter()
            .all(|(k, v)| allow.bindings.get(k) == Some(v))
        && (deny.hours.is_none() || deny.hours == allow.hours)
        && (!names(deny) || names(allow))
        && (!deny.mfa || allow.mfa)
}

/// Warns when a request a PHI route would serve is taken by a non-PHI route for some method
/// (most specific wins), so it would reach the backend without the PHI protections.
pub(super) fn warn_phi_overlaps(
    file: &super::file::FileConfig,
    routes: &[crate::config::RouteConfig],
    sink: &mut IssueSink<'_>,
) {
    use crate::gate::route::{HostPattern, RouteTable};
    let table = RouteTable::new(routes);
    for phi in routes.iter().filter(|r| r.phi) {
        let host = match &phi.host {
            HostPattern::Exact(name) => name.clone(),
            HostPattern::Suffix(suffix) => format!("x{suffix}"),
            HostPattern::Any => "any.example".to_string(),
        };
        let sample = phi.path.sample();
        for method in [
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            let Some(winner) = table.lookup(&host, &sample, &method) else {
                continue;
            };
            if !winner.route.phi {
                let index = routes
                    .iter()
                    .position(|r| r.name == winner.route.name)
                    .unwrap_or(0);
                let span = file.routes.get(index).map_or(0..0, |r| r.span());
                sink.warn(span, format!("routes[{index}].phi"), format!("serves {method} {sample}, a path of PHI route `{}`, without PHI protections (audit, no-store)", phi.name));
                break;
            }
        }
    }
}

fn one(
    spanned: &Spanned<RuleFile>,
    default_id: &str,
    field: &str,
    path: &PathPattern,
    sink: &mut IssueSink<'_>,
) -> Rule {
    let file = spanned.get_ref();
    let span = spanned.span();
    let id = match &file.name {
        Some(name) => format!(
            "{}/{name}",
            default_id.split('/').next().unwrap_or_default()
        ),
        None => default_id.to_string(),
    };
    let mut rule = Rule {
        id: id.into(),
        users: file.users.clone().unwrap_or_default(),
        roles: file.roles.clone().unwrap_or_default(),
        groups: file.groups.clone().unwrap_or_default(),
        claims: file.claims.clone().unwrap_or_default(),
        client_certs: file.client_cert.clone().unwrap_or_default(),
        authenticated: file.authenticated.unwrap_or(false),
        mfa: file.mfa.unwrap_or(true),
        ..Rule::default()
    };
    for method in file.methods.iter().flatten() {
        match Method::from_bytes(method.to_ascii_uppercase().as_bytes()) {
            Ok(m) => rule.methods.push(m),
            Err(_) => sink.span(
                span.clone(),
                format!("{field}.methods"),
                format!("`{method}` is not an HTTP method"),
            ),
        }
    }
    for network in file.networks.iter().flatten() {
        match network
            .parse::<ipnet::IpNet>()
            .or_else(|_| network.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        {
            Ok(net) => rule.networks.push(net),
            Err(_) => sink.span(
                span.clone(),
                format!("{field}.networks"),
                format!("`{network}` is not an IP or CIDR"),
            ),
        }
    }
    if let Some(hours) = &file.hours {
        rule.hours = crate::authz::policy::parse_hours(hours);
        if rule.hours.is_none() {
            sink.span(
                span.clone(),
                format!("{field}.hours"),
                format!("`{hours}` must be a UTC window like \"08:00-18:00\""),
            );
        }
    }
    for (param, source) in file.bindings.iter().flatten() {
        if !path.params().any(|p| p == param) {
            sink.span(
                span.clone(),
                format!("{field}.match"),
                format!("the route path has no {{{param}}} parameter"),
            );
        }
        match source.strip_prefix("claim:") {
            Some(claim) if !claim.is_empty() => {
                rule.bindings.insert(param.clone(), claim.to_string());
            }
            _ => sink.span(
                span.clone(),
                format!("{field}.match"),
                format!("`{source}` must be \"claim:NAME\""),
            ),
        }
    }
    let names_someone = rule.authenticated
        || !rule.users.is_empty()
        || !rule.roles.is_empty()
        || !rule.groups.is_empty()
        || !rule.claims.is_empty()
        || !rule.client_certs.is_empty()
        || !rule.bindings.is_empty();
    if !names_someone {
        sink.span(span, field.to_string(), "a rule must name who it is for (users, roles, groups, claims, client_cert, match, or authenticated = true)");
    }
    rule
}
