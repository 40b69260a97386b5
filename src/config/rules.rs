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
    Policy {
        allow: compile_list(&route.allow, "allow"),
        deny: compile_list(&route.deny, "deny"),
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
        id,
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
