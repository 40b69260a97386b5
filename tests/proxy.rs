//! End-to-end tests of the hot path: a real `wardgate` process with real TLS in front of a
//! real hyper backend, driven by real clients. One test binary (one link) for all suites.

mod support;

#[path = "proxy/admin.rs"]
mod admin;
#[path = "proxy/audit.rs"]
mod audit;
#[path = "proxy/audit_outcomes.rs"]
mod audit_outcomes;
#[path = "proxy/auth_api.rs"]
mod auth_api;
#[path = "proxy/authz.rs"]
mod authz;
#[path = "proxy/browser.rs"]
mod browser;
#[path = "proxy/config_errors.rs"]
mod config_errors;
#[path = "proxy/continuous.rs"]
mod continuous;
#[path = "proxy/default_deny.rs"]
mod default_deny;
#[path = "proxy/docs.rs"]
mod docs;
#[path = "proxy/forwarding.rs"]
mod forwarding;
#[path = "proxy/lifecycle.rs"]
mod lifecycle;
#[path = "proxy/normalization.rs"]
mod normalization;
#[path = "proxy/policy_table.rs"]
mod policy_table;
#[path = "proxy/replicas.rs"]
mod replicas;
#[path = "proxy/smuggling.rs"]
mod smuggling;
#[path = "proxy/sso.rs"]
mod sso;
#[path = "proxy/tls.rs"]
mod tls;
#[path = "proxy/tokens.rs"]
mod tokens;
#[path = "proxy/upstream_errors.rs"]
mod upstream_errors;
#[path = "proxy/upstream_pool.rs"]
mod upstream_pool;
#[path = "proxy/websocket.rs"]
mod websocket;
