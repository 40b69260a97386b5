//! Wardgate: a zero-trust authenticating reverse proxy for telehealth.
//!
//! ```text
//! client ──TLS(rustls)──▶ accept ─▶ normalize ─▶ route ─▶ authenticate ─▶ authorize ─▶ audit ─▶ forward ──▶ backend
//! ```
//! Module map: [`server`] accepts connections (TLS, limits, shutdown, reload); [`gate`] runs
//! the pipeline for each request; [`authn`] and [`authz`] decide who may pass and hand out
//! the [`authz::Permit`] that [`proxy`] requires to forward; [`config`] turns the TOML file
//! into a validated [`config::Config`]; [`app`] compiles it; [`admin`] serves health and
//! metrics; [`demo`] is the built-in demo backend.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod audit;
pub mod authn;
pub mod authz;
pub mod body;
pub mod cli;
pub mod config;
pub mod demo;
pub mod gate;
pub mod keys;
pub mod live;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod state;
pub mod telemetry;

/// A concurrent map with a fast seeded hash instead of SipHash, for the maps read on every
/// request whose keys a client cannot choose: entries are only inserted for tokens that
/// verified, sessions the proxy created, and configured route names. (SipHash over a
/// 300-byte session token was over 1 % of a request's instructions.)
pub type FastMap<K, V> = dashmap::DashMap<K, V, foldhash::fast::RandomState>;
