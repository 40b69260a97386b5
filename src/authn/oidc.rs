//! Single sign-on through hospital identity providers (OpenID Connect), one [`Provider`] per
//! `[[oidc.providers]]` entry.
//!
//! ```text
//! GET /.wardgate/oidc/NAME/start ──302──▶ provider login ──302──▶ GET /.wardgate/oidc/callback
//!   (login.rs: state, nonce, PKCE)                                (login.rs: code → ID token →
//!                                                                  identity → Wardgate session)
//! POST /.wardgate/oidc/backchannel-logout (backchannel.rs: logout_token → revoke sessions)
//! ```
//! Protocol work (discovery, authorization URL, PKCE, code exchange, ID token validation) is
//! the `openidconnect` crate's; this module keeps each provider's discovered metadata and keys,
//! and refreshes them when a token names a key it does not know (the provider rotated keys).
//! A provider that cannot be reached never stops Wardgate: its logins answer 503 until it
//! answers again, and local logins keep working.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreRevocableToken, CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, ClientId, ClientSecret, EmptyExtraTokenFields, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IdTokenFields, IssuerUrl, ProviderMetadataWithLogout, RedirectUrl,
    StandardErrorResponse, StandardTokenResponse,
};
use serde::{Deserialize, Serialize};

use crate::config::oidc::ProviderConfig;
use crate::telemetry::error_chain;

pub mod backchannel;
pub mod identity;
pub mod login;
mod verify;

/// Signature algorithms accepted on ID and logout tokens: asymmetric only (never `none`, never
/// an HMAC keyed with the client secret).
pub const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];
/// Shortest time between two key-set fetches caused by unknown `kid`s (a flood of forged
/// tokens must not turn into a flood of requests to the provider).
const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// Shortest time between two discovery attempts of an unreachable provider.
const DISCOVERY_RETRY: Duration = Duration::from_secs(2);
/// Metadata and keys are fetched again this often even when nothing fails.
const REDISCOVER_EVERY: Duration = Duration::from_secs(3600);
/// Deadline of one request to the provider.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

/// Every claim of the ID token beyond the standard ones (roles, groups, custom claims).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExtraClaims {
    /// Claim name → value, as the provider sent it.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}
impl AdditionalClaims for ExtraClaims {}

type IdFields = IdTokenFields<
    ExtraClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
/// The token endpoint's answer.
pub type TokenResponse = StandardTokenResponse<IdFields, CoreTokenType>;
/// A client built from discovered metadata (authorization URL set, token URL maybe).
pub type OidcClient = openidconnect::Client<
    ExtraClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// What discovery found: metadata with the current key set, in both forms the two token kinds
/// are checked with (ID tokens by `openidconnect`, logout tokens by `jsonwebtoken`).
#[derive(Debug)]
pub struct Discovered {
    /// Provider metadata, its `jwks` replaced on refresh.
    pub metadata: ProviderMetadataWithLogout,
    /// The same keys for `jsonwebtoken`.
    pub logout_keys: jsonwebtoken::jwk::JwkSet,
    /// When the keys were fetched.
    pub keys_fetched: Instant,
    /// When the metadata was fetched.
    pub discovered: Instant,
}

impl Discovered {
    /// `metadata` (with its key set) as found at `discovered`; the keys were fetched now.
    fn new(metadata: ProviderMetadataWithLogout, discovered: Instant) -> Discovered {
        // The same keys for logout tokens. Keys `jsonwebtoken` cannot use (unusual types) are
        // skipped rather than making the whole provider unusable.
        let logout_keys = jsonwebtoken::jwk::JwkSet {
            keys: serde_json::to_value(metadata.jwks())
                .ok()
                .and_then(|set| set.get("keys").and_then(|k| k.as_array()).cloned())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|key| serde_json::from_value(key).ok())
                .collect(),
        };
        Discovered {
            metadata,
            logout_keys,
            keys_fetched: Instant::now(),
            discovered,
        }
    }
}

/// Why a provider cannot be used right now.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Discovery or key fetch failed: the provider is down or misconfigured.
    #[error("identity provider {name} is unavailable: {detail}")]
    Unavailable {
        /// Provider name.
        name: String,
        /// What failed.
        detail: String,
    },
}

/// One configured identity provider.
#[derive(Debug)]
pub struct Provider {
    /// Its configuration.
    pub config: ProviderConfig,
    secret: ClientSecret,
    http: reqwest::Client,
    redirect_url: RedirectUrl,
    discovered: ArcSwapOption<Discovered>,
    last_attempt: Mutex<Option<Instant>>,
    /// Why the last discovery failed, repeated while attempts are rate-limited.
    last_error: Mutex<String>,
    refresh: tokio::sync::Mutex<()>,
}

impl Provider {
    fn new(config: ProviderConfig, public_url: &str) -> Result<Provider, String> {
        let name = &config.name;
        let secret = std::fs::read_to_string(&config.client_secret_file)
            .map_err(|e| format!("oidc provider {name}: client_secret_file: {e}"))?
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        if secret.is_empty() {
            return Err(format!(
                "oidc provider {name}: client_secret_file {} is empty",
                config.client_secret_file.display()
            ));
        }
        let mut http = reqwest::Client::builder()
            // Never follow redirects: a provider endpoint that redirects is refused (SSRF).
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PROVIDER_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .https_only(true);
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("oidc provider {name}: ca_file {}: {e}", ca.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("oidc provider {name}: ca_file {}: {e}", ca.display()))?
            {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http
            .build()
            .map_err(|e| format!("oidc provider {name}: HTTP client: {e}"))?;
        let redirect_url = RedirectUrl::new(format!("{public_url}/.wardgate/oidc/callback"))
            .map_err(|e| format!("oidc provider {name}: redirect URL: {e}"))?;
        Ok(Provider {
            config,
            secret: ClientSecret::new(secret),
            http,
            redirect_url,
            discovered: ArcSwapOption::empty(),
            last_attempt: Mutex::new(None),
            last_error: Mutex::new(String::new()),
            refresh: tokio::sync::Mutex::new(()),
        })
    }

    /// The provider's metadata and keys, discovering them first if needed (at most one attempt
    /// per `DISCOVERY_RETRY` while it is unreachable).
    pub async fn discovered(&self) -> Result<Arc<Discovered>, ProviderError> {
        if let Some(found) = self.discovered.load_full() {
            if found.discovered.elapsed() < REDISCOVER_EVERY {
                return Ok(found);
            }
        }
        let _one_at_a_time = self.refresh.lock().await;
        if let Some(found) = self.discovered.load_full() {
            if found.discovered.elapsed() < REDISCOVER_EVERY {
                return Ok(found);
            }
        }
        let recent = self
            .last_attempt
            .lock()
            .map(|mut last| {
                let recent = last.is_some_and(|at| at.elapsed() < DISCOVERY_RETRY);
                if !recent {
                    *last = Some(Instant::now());
                }
                recent
            })
            .unwrap_or(false);
        if recent {
            // Keep using what we have (stale but signed by the provider) or report the outage.
            return self.discovered.load_full().ok_or_else(|| {
                let cause = self
                    .last_error
                    .lock()
                    .map(|e| e.clone())
                    .unwrap_or_default();
                self.unavailable(format!("{cause} (retrying shortly)"))
            });
        }
        match self.discover().await {
            Ok(found) => {
                let found = Arc::new(found);
                self.discovered.store(Some(Arc::clone(&found)));
                tracing::info!(provider = %self.config.name, "identity provider discovered");
                Ok(found)
            }
            Err(error) => {
                tracing::error!(provider = %self.config.name, %error, "identity provider unavailable");
                if let (Ok(mut last), ProviderError::Unavailable { detail, .. }) =
                    (self.last_error.lock(), &error)
                {
                    last.clone_from(detail);
                }
                self.discovered.load_full().ok_or(error)
            }
        }
    }

    async fn discover(&self) -> Result<Discovered, ProviderError> {
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| self.unavailable(format!("issuer: {e}")))?;
        // Discovery also fetches the key set (`jwks_uri`).
        let metadata = ProviderMetadataWithLogout::discover_async(issuer, &self.http)
            .await
            .map_err(|e| self.unavailable(format!("discovery: {}", error_chain(&e))))?;
        Ok(Discovered::new(metadata, Instant::now()))
    }

    /// Fetches the key set again after a token named an unknown key. Returns the new
    /// discovery, or `None` when the keys were fetched too recently to try again.
    pub async fn refresh_keys(&self, seen: &Discovered) -> Option<Arc<Discovered>> {
        let _one_at_a_time = self.refresh.lock().await;
        let current = self.discovered.load_full()?;
        if current.keys_fetched > seen.keys_fetched {
            return Some(current); // another request refreshed meanwhile
        }
        if current.keys_fetched.elapsed() < JWKS_REFRESH_INTERVAL {
            return None;
        }
        let fetched = CoreJsonWebKeySet::fetch_async(current.metadata.jwks_uri(), &self.http).await;
        match fetched {
            Ok(keys) => {
                let fresh = Arc::new(Discovered::new(
                    current.metadata.clone().set_jwks(keys),
                    current.discovered,
                ));
                self.discovered.store(Some(Arc::clone(&fresh)));
                tracing::info!(provider = %self.config.name, "identity provider keys refreshed");
                Some(fresh)
            }
            Err(error) => {
                let error = error_chain(&error);
                tracing::error!(provider = %self.config.name, %error, "key refresh failed");
                None
            }
        }
    }

    /// A protocol client over `found`.
    pub fn client(&self, found: &Discovered) -> OidcClient {
        OidcClient::from_provider_metadata(
            found.metadata.clone(),
            ClientId::new(self.config.client_id.clone()),
            Some(self.secret.clone()),
        )
        .set_redirect_uri(self.redirect_url.clone())
    }

    /// The HTTP client that talks to this provider (no redirects, provider CA).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn unavailable(&self, detail: String) -> ProviderError {
        ProviderError::Unavailable {
            name: self.config.name.clone(),
            detail,
        }
    }
}

/// Every configured provider, by name.
#[derive(Debug, Default)]
pub struct OidcProviders {
    by_name: BTreeMap<String, Arc<Provider>>,
}

impl OidcProviders {
    /// Builds the providers of `configs` and starts discovering each in the background (an
    /// unreachable provider is logged, not fatal). Must run inside the runtime.
    pub fn start(configs: &[ProviderConfig], public_url: &str) -> Result<OidcProviders, String> {
        let mut by_name = BTreeMap::new();
        for config in configs {
            let provider = Arc::new(Provider::new(config.clone(), public_url)?);
            let weak = Arc::downgrade(&provider);
            tokio::spawn(async move {
                if let Some(provider) = weak.upgrade() {
                    let _ = provider.discovered().await;
                }
            });
            by_name.insert(config.name.clone(), provider);
        }
        Ok(OidcProviders { by_name })
    }

    /// The provider called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Provider>> {
        self.by_name.get(name)
    }

    /// All providers in name order (for the login page).
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Provider>> {
        self.by_name.values()
    }
}
