//! `wardgate policy check`: what would the proxy decide for this user and request?
//!
//! Runs stages 2–5 (normalize, route, authorize) on the real config and users file without
//! starting the proxy. First line: `allow ROUTE RULE` or `deny ROUTE REASON` (`-` for no
//! route); exit 0 for allow, 1 for deny.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use clap::Subcommand;
use http::{Method, Uri};

use super::CliError;
use crate::authn::users::UserStore;
use crate::authz::policy::{Decision, Facts, Subject};
use crate::config::Config;
use crate::gate::normalize::normalize;
use crate::gate::route::RouteTable;

/// `policy` subcommands.
#[derive(Debug, Subcommand)]
pub(super) enum PolicyCommand {
    /// Decide one request for one user.
    Check {
        /// Config file.
        #[arg(long, default_value = "config/wardgate.toml")]
        config: PathBuf,
        /// User from the users file.
        #[arg(long)]
        user: String,
        /// Extra or overriding claim KEY=VALUE (repeatable).
        #[arg(long = "claim")]
        claims: Vec<String>,
        /// Source address for `networks` conditions.
        #[arg(long, default_value = "127.0.0.1")]
        source: IpAddr,
        /// HTTP method.
        method: String,
        /// `https://host/path` or a bare path.
        url: String,
    },
    /// List who can do what on a route.
    Explain {
        /// Config file.
        #[arg(long, default_value = "config/wardgate.toml")]
        config: PathBuf,
        /// Route name.
        route: String,
    },
}

fn describe(rule: &crate::authz::policy::Rule) -> String {
    let mut parts = Vec::new();
    let list = |name: &str, values: &[String]| {
        (!values.is_empty()).then(|| format!("{name} {}", values.join(" or ")))
    };
    parts.extend(list("users", &rule.users));
    parts.extend(list("roles", &rule.roles));
    parts.extend(list("groups", &rule.groups));
    parts.extend(list("client certificate", &rule.client_certs));
    if rule.authenticated {
        parts.push("any signed-in user".into());
    }
    for (key, value) in &rule.claims {
        parts.push(format!("claim {key} = {value}"));
    }
    for (param, claim) in &rule.bindings {
        parts.push(format!("only where {{{param}}} equals their claim {claim}"));
    }
    if !rule.methods.is_empty() {
        parts.push(format!(
            "methods {}",
            rule.methods
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !rule.networks.is_empty() {
        parts.push(format!(
            "from {}",
            rule.networks
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some((start, end)) = rule.hours {
        parts.push(format!(
            "between {:02}:{:02} and {:02}:{:02} UTC",
            start / 60,
            start % 60,
            end / 60,
            end % 60
        ));
    }
    if !rule.mfa {
        parts.push("second factor not required".into());
    }
    format!("{}: {}", rule.id, parts.join("; "))
}

fn explain(config: &Config, name: &str) -> Result<(), CliError> {
    let route = config
        .routes
        .iter()
        .find(|r| *r.name == *name)
        .ok_or_else(|| CliError::Runtime(format!("no route `{name}`")))?;
    let methods = route
        .methods
        .as_ref()
        .map_or("any method".to_string(), |m| {
            m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")
        });
    println!(
        "route {} ({methods}) -> upstream {}",
        route.name, route.upstream
    );
    if route.public {
        println!("public: everyone, no sign-in");
        return Ok(());
    }
    println!(
        "protected{}{}{}",
        if route.phi {
            format!("; patient data, audit {:?}", route.audit).to_lowercase()
        } else {
            String::new()
        },
        route.max_auth_age.map_or(String::new(), |a| format!(
            "; step-up after {}s",
            a.as_secs()
        )),
        if route.break_glass {
            format!(
                "; break-glass for roles {}",
                config.break_glass_roles.join(", ")
            )
        } else {
            String::new()
        },
    );
    for rule in &route.policy.deny {
        println!("deny  {}", describe(rule));
    }
    for rule in &route.policy.allow {
        println!("allow {}", describe(rule));
    }
    println!("everyone else: denied");
    Ok(())
}

pub(super) fn run(command: PolicyCommand) -> Result<(), CliError> {
    let (config, user, claims, source, method, url) = match command {
        PolicyCommand::Explain { config, route } => {
            return explain(&Config::load(&config)?, &route)
        }
        PolicyCommand::Check {
            config,
            user,
            claims,
            source,
            method,
            url,
        } => (config, user, claims, source, method, url),
    };
    let config = Config::load(&config)?;
    let users = UserStore::open(
        &config.auth.users_file,
        &config.auth.key_file,
        config.auth.key_env.as_deref(),
    )
    .map_err(|e| CliError::Runtime(e.to_string()))?;
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| CliError::Runtime(format!("`{method}` is not an HTTP method")))?;
    let (host, raw_path) = match url.parse::<Uri>() {
        Ok(uri) if uri.scheme().is_some() => (
            uri.host().unwrap_or_default().to_ascii_lowercase(),
            uri.path().to_string(),
        ),
        _ => {
            let public = config.listen.public_url.trim_start_matches("https://");
            let host = public
                .rsplit_once(':')
                .map_or(public, |(h, _)| h)
                .to_ascii_lowercase();
            (host, url.split('?').next().unwrap_or("/").to_string())
        }
    };
    let decide = |line: String, allowed: bool| -> Result<(), CliError> {
        println!("{line}");
        if allowed {
            Ok(())
        } else {
            Err(CliError::Quiet(1))
        }
    };
    let path = match normalize(&raw_path) {
        Ok(path) => path.into_owned(),
        Err(err) => return decide(format!("deny - ambiguous path ({err})"), false),
    };
    let routes = RouteTable::new(&config.routes);
    let Some(matched) = routes.lookup(&host, &path, &method) else {
        return decide("deny - no route".to_string(), false);
    };
    let route = &matched.route;
    if route.public {
        return decide(format!("allow {} public", route.name), true);
    }
    let Some(account) = users.get(&user) else {
        return decide(format!("deny {} unknown user {user}", route.name), false);
    };
    if account.disabled {
        return decide(
            format!("deny {} user {user} is disabled", route.name),
            false,
        );
    }
    let mut all_claims: BTreeMap<String, String> = account.claims.clone();
    for claim in claims {
        let (key, value) = claim
            .split_once('=')
            .ok_or_else(|| CliError::Runtime(format!("claim `{claim}` must be KEY=VALUE")))?;
        all_claims.insert(key.to_string(), value.to_string());
    }
    let amr = vec!["pwd".to_string(), "otp".to_string()];
    let subject = Subject {
        user: Some(&account.name),
        roles: &account.roles,
        groups: &account.groups,
        claims: Some(&all_claims),
        amr: &amr,
        client_cert: None,
    };
    let facts = Facts {
        method: &method,
        source,
        params: &matched.params,
        minute_of_day: Facts::minute_at(crate::state::unix_now()),
    };
    match route.policy.decide(&subject, &facts) {
        Decision::Allow { rule } => decide(format!("allow {} {rule}", route.name), true),
        Decision::Deny { reason, .. } => decide(format!("deny {} {reason}", route.name), false),
    }
}
