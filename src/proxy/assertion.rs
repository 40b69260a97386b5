//! `X-Wardgate-Assertion`: a short-lived EdDSA JWT that tells the backend who is calling, in
//! a form the backend can verify itself with `/.wardgate/jwks.json` (zero trust toward the
//! network between Wardgate and the backend too).
//!
//! `aud` is the upstream's name, so an assertion taken from one backend is useless at
//! another. Signing costs tens of microseconds, so a signed assertion is cached per session
//! and upstream and reused until shortly before it expires.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use dashmap::DashMap;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::Serialize;

use crate::authn::Principal;

/// Assertion lifetime in seconds.
pub const LIFETIME: u64 = 60;
/// A cached assertion is reused while it has at least this many seconds left.
const REUSE_MARGIN: u64 = 15;

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    auth_time: u64,
    roles: &'a [String],
    groups: &'a [String],
    claims: &'a std::collections::BTreeMap<String, String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    break_glass: bool,
}

/// Signs assertions and publishes the key that verifies them.
pub struct AssertionSigner {
    key: EncodingKey,
    kid: String,
    jwks: String,
    cache: DashMap<(String, String, bool), (String, u64)>,
}

impl std::fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl AssertionSigner {
    /// Loads the Ed25519 key (base64 PKCS#8), creating it (mode 0600) on first start.
    pub fn load_or_create(path: &Path) -> Result<AssertionSigner, String> {
        let pkcs8 = crate::keys::load_or_create_pkcs8(path)?;
        let pair =
            Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| format!("{}: {e}", path.display()))?;
        let public = pair.public_key().as_ref().to_vec();
        let kid = crate::audit::record::line_hash(&public)[..16].to_string();
        let jwks = serde_json::json!({ "keys": [{
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
            "kid": kid, "x": URL_SAFE_NO_PAD.encode(&public),
        }]})
        .to_string();
        Ok(AssertionSigner {
            key: EncodingKey::from_ed_der(&pkcs8),
            kid,
            jwks,
            cache: DashMap::new(),
        })
    }

    /// The JWKS document.
    pub fn jwks(&self) -> &str {
        &self.jwks
    }

    /// The assertion for `principal` calling `upstream` (marked when the request rides on a
    /// break-glass grant), signed or reused from the cache.
    pub fn assertion(
        &self,
        principal: &Principal,
        upstream: &str,
        issuer: &str,
        now: u64,
        break_glass: bool,
    ) -> Option<String> {
        let cache_key = (
            principal.session_id.clone(),
            upstream.to_string(),
            break_glass,
        );
        if let Some(entry) = self.cache.get(&cache_key) {
            if entry.1 >= now + REUSE_MARGIN {
                return Some(entry.0.clone());
            }
        }
        let claims = AssertionClaims {
            iss: issuer,
            sub: &principal.user.name,
            aud: upstream,
            iat: now,
            exp: now + LIFETIME,
            auth_time: principal.auth_time,
            roles: &principal.user.roles,
            groups: &principal.user.groups,
            claims: &principal.user.claims,
            break_glass,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.key).ok()?;
        if self.cache.len() > 50_000 {
            self.cache.retain(|_, (_, exp)| *exp > now);
        }
        self.cache
            .insert(cache_key, (token.clone(), now + LIFETIME));
        Some(token)
    }
}
