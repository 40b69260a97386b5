//! `[[oidc.providers]]`: hospital identity providers staff sign in through (OpenID Connect).
//!
//! Kept apart because each provider brings a secret (the client secret, read from a file and
//! never written in the config) and a mapping from the provider's claims to Wardgate's roles,
//! groups and claims, which policies then use exactly as they use local accounts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::error::IssueSink;
use super::units::HumanDuration;

/// `[oidc]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcFile {
    /// `[[oidc.providers]]`.
    #[serde(default)]
    pub providers: Vec<Spanned<ProviderFile>>,
}

/// One `[[oidc.providers]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderFile {
    /// Short name used in URLs (`/.wardgate/oidc/NAME/start`) and audit records.
    pub name: Spanned<String>,
    /// Label on the login page (default: the name).
    pub display_name: Option<String>,
    /// Issuer URL; discovery reads `ISSUER/.well-known/openid-configuration`.
    pub issuer: Spanned<String>,
    /// Client id registered at the provider.
    pub client_id: Spanned<String>,
    /// File holding the client secret (first line).
    pub client_secret_file: Spanned<String>,
    /// PEM bundle trusted for the provider's TLS (default: the system roots).
    pub ca_file: Option<Spanned<String>>,
    /// Scopes requested besides `openid` (default `["profile", "email"]`).
    pub scopes: Option<Vec<String>>,
    /// Wardgate attribute → provider claim: `roles`, `groups`, `display_name`, or a custom claim.
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
    /// `amr` values that show a second factor (default `["mfa"]`).
    pub mfa_amr: Option<Vec<String>>,
    /// `acr` values that show a second factor (default none).
    #[serde(default)]
    pub mfa_acr: Vec<String>,
    /// Claim holding the Wardgate user name (default `preferred_username`).
    pub username_claim: Option<String>,
    /// Clock difference tolerated with the provider (default 60s).
    pub clock_skew: Option<HumanDuration>,
}

/// One provider, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// URL-safe name.
    pub name: String,
    /// Label on the login page.
    pub display_name: String,
    /// Issuer URL exactly as the provider writes it in `iss`.
    pub issuer: String,
    /// Client id.
    pub client_id: String,
    /// Client secret file.
    pub client_secret_file: PathBuf,
    /// Extra CA bundle.
    pub ca_file: Option<PathBuf>,
    /// Scopes besides `openid`.
    pub scopes: Vec<String>,
    /// Wardgate attribute → provider claim.
    pub claims: BTreeMap<String, String>,
    /// `amr` values counted as a second factor.
    pub mfa_amr: Vec<String>,
    /// `acr` values counted as a second factor.
    pub mfa_acr: Vec<String>,
    /// Claim holding the user name.
    pub username_claim: String,
    /// Tolerated clock difference.
    pub clock_skew: Duration,
}

pub(super) fn providers(
    file: &OidcFile,
    sink: &mut IssueSink<'_>,
    resolve: &impl Fn(&str) -> PathBuf,
) -> Vec<ProviderConfig> {
    let mut seen = std::collections::BTreeSet::new();
    file.providers
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let field = |name: &str| format!("oidc.providers[{index}].{name}");
            let p = entry.get_ref();
            let name = p.name.get_ref().clone();
            let url_safe = !name.is_empty()
                && name.len() <= 32
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !url_safe {
                sink.span(
                    p.name.span(),
                    field("name"),
                    "use 1-32 letters, digits, `-` or `_` (it appears in URLs)",
                );
            } else if !seen.insert(name.clone()) {
                sink.span(
                    p.name.span(),
                    field("name"),
                    format!("`{name}` is used twice"),
                );
            }
            let issuer = p.issuer.get_ref().clone();
            match issuer.parse::<http::Uri>() {
                Ok(uri)
                    if uri.scheme_str() == Some("https")
                        && uri.authority().is_some()
                        && uri.query().is_none() => {}
                _ => sink.span(
                    p.issuer.span(),
                    field("issuer"),
                    format!(
                        "`{}` must be an https:// URL without a query",
                        p.issuer.get_ref()
                    ),
                ),
            }
            if p.client_id.get_ref().trim().is_empty() {
                sink.span(p.client_id.span(), field("client_id"), "must not be empty");
            }
            let client_secret_file = super::validate::secret_file(
                &p.client_secret_file,
                &field("client_secret_file"),
                sink,
                resolve,
            );
            let ca_file = p
                .ca_file
                .as_ref()
                .map(|f| super::validate::existing_file(f, &field("ca_file"), sink, resolve));
            for key in p.claims.keys() {
                if key.is_empty() || key == "user" {
                    sink.span(
                        entry.span(),
                        field("claims"),
                        format!("`{key}` cannot be mapped (use username_claim for the name)"),
                    );
                }
            }
            let mut scopes = p
                .scopes
                .clone()
                .unwrap_or_else(|| vec!["profile".into(), "email".into()]);
            scopes.retain(|s| s != "openid");
            ProviderConfig {
                display_name: p.display_name.clone().unwrap_or_else(|| name.clone()),
                name,
                issuer,
                client_id: p.client_id.get_ref().clone(),
                client_secret_file,
                ca_file,
                scopes,
                claims: p.claims.clone(),
                mfa_amr: p.mfa_amr.clone().unwrap_or_else(|| vec!["mfa".into()]),
                mfa_acr: p.mfa_acr.clone(),
                username_claim: p
                    .username_claim
                    .clone()
                    .unwrap_or_else(|| "preferred_username".into()),
                clock_skew: p.clock_skew.map_or(Duration::from_secs(60), |d| d.0),
            }
        })
        .collect()
}
