//! `X-Wardgate-Assertion`: a short-lived EdDSA JWT that tells the backend who is calling, in
//! a form the backend can verify itself with `/.wardgate/jwks.json` (zero trust toward the
//! network between Wardgate and the backend too).
//!
//! `aud` is the upstream's name, so an assertion taken from one backend is useless at
//! another. Signing costs tens of microseconds, so a signed assertion is cached per session
//! and upstream and reused until shortly before it expires. The cache holds the finished header
//! value, found by the session id alone, so a reuse costs no allocation and no re-validation of
//! the token's bytes.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::HeaderValue;
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
    cache: crate::FastMap<crate::audit::Text, Vec<Cached>>,
}

/// A signed assertion of one session, for one upstream.
struct Cached {
    /// The account as it was signed: after a users-file change (roles, groups, claims) the
    /// next request is signed anew rather than told old roles.
    user: std::sync::Arc<crate::authn::users::User>,
    upstream: String,
    break_glass: bool,
    value: HeaderValue,
    exp: u64,
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
            cache: crate::FastMap::default(),
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
    ) -> Option<HeaderValue> {
        if let Some(signed) = self.cache.get(&*principal.session_id) {
            let reusable = signed.iter().find(|c| {
                c.upstream == upstream
                    && c.break_glass == break_glass
                    && same_identity(&c.user, &principal.user)
                    && c.exp >= now + REUSE_MARGIN
            });
            if let Some(cached) = reusable {
                return Some(cached.value.clone());
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
        let value = HeaderValue::from_maybe_shared(bytes::Bytes::from(token)).ok()?;
        if self.cache.len() > 50_000 {
            self.cache.retain(|_, signed| {
                signed.retain(|c| c.exp > now);
                !signed.is_empty()
            });
        }
        let mut signed = self
            .cache
            .entry(std::sync::Arc::clone(&principal.session_id))
            .or_default();
        // One entry per upstream and mark: a re-signed assertion replaces the one before.
        signed.retain(|c| {
            c.exp >= now + REUSE_MARGIN && (c.upstream != upstream || c.break_glass != break_glass)
        });
        signed.push(Cached {
            user: std::sync::Arc::clone(&principal.user),
            upstream: upstream.to_string(),
            break_glass,
            value: value.clone(),
            exp: now + LIFETIME,
        });
        Some(value)
    }
}

/// Whether an assertion signed for `signed` still says the truth about `now`: the same account
/// (most often the very same `Arc`; single sign-on identities are rebuilt from the session
/// record, so their contents are compared).
fn same_identity(signed: &crate::authn::users::User, now: &crate::authn::users::User) -> bool {
    std::ptr::eq(signed, now)
        || (signed.name == now.name
            && signed.roles == now.roles
            && signed.groups == now.groups
            && signed.claims == now.claims)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::authn::users::User;

    fn principal(session_id: &str) -> Principal {
        Principal {
            user: Arc::new(User {
                name: "dr.grey".into(),
                roles: vec!["clinician".into()],
                ..User::default()
            }),
            session_id: session_id.into(),
            audit_session: crate::audit::record::session_hash(session_id),
            auth_time: 1_000,
            amr: Arc::from(["pwd".to_string(), "otp".to_string()]),
            expires_at: 10_000,
            sso: None,
        }
    }

    fn audience(value: &HeaderValue) -> serde_json::Value {
        let text = value.to_str().expect("ascii");
        let payload = text.split('.').nth(1).expect("payload");
        let json = URL_SAFE_NO_PAD.decode(payload).expect("base64");
        let claims: serde_json::Value = serde_json::from_slice(&json).expect("json");
        serde_json::json!([claims["aud"], claims["break_glass"], claims["exp"]])
    }

    /// The cache is found by session id alone, so it must still tell upstreams, the
    /// break-glass mark and expiry apart.
    #[test]
    fn cache_keeps_upstreams_and_break_glass_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let signer =
            AssertionSigner::load_or_create(&dir.path().join("assertion.key")).expect("signer");
        let me = principal("session-a");
        let iss = "https://wardgate.test";
        let ehr = signer
            .assertion(&me, "ehr", iss, 2_000, false)
            .expect("ehr");
        let lab = signer
            .assertion(&me, "lab", iss, 2_000, false)
            .expect("lab");
        let glass = signer
            .assertion(&me, "ehr", iss, 2_000, true)
            .expect("glass");
        assert_eq!(audience(&ehr), serde_json::json!(["ehr", null, 2_060]));
        assert_eq!(audience(&lab), serde_json::json!(["lab", null, 2_060]));
        assert_eq!(audience(&glass), serde_json::json!(["ehr", true, 2_060]));
        // Reused while at least REUSE_MARGIN seconds are left, then signed anew.
        let reused = signer
            .assertion(&me, "ehr", iss, 2_040, false)
            .expect("reuse");
        assert_eq!(reused, ehr);
        let renewed = signer
            .assertion(&me, "ehr", iss, 2_050, false)
            .expect("renew");
        assert_eq!(audience(&renewed), serde_json::json!(["ehr", null, 2_110]));
        // Another session never gets this one's assertion.
        let other = signer.assertion(&principal("session-b"), "ehr", iss, 2_040, false);
        assert_ne!(other.expect("other"), ehr);
        // The same account rebuilt (single sign-on identities are, from the session record)
        // reuses it.
        let rebuilt = signer
            .assertion(&principal("session-a"), "ehr", iss, 2_051, false)
            .expect("rebuilt");
        assert_eq!(rebuilt, renewed);
        // A users-file change (here: a role removed) is signed anew at once, not served from
        // the cache for the rest of its life.
        let mut demoted = principal("session-a");
        demoted.user = Arc::new(User {
            name: "dr.grey".into(),
            roles: vec!["nurse".into()],
            ..User::default()
        });
        let now_nurse = signer
            .assertion(&demoted, "ehr", iss, 2_051, false)
            .expect("re-signed");
        assert_ne!(now_nurse, renewed);
        let text = now_nurse.to_str().expect("ascii");
        let payload = URL_SAFE_NO_PAD
            .decode(text.split('.').nth(1).expect("payload"))
            .expect("base64");
        let claims: serde_json::Value = serde_json::from_slice(&payload).expect("json");
        assert_eq!(claims["roles"], serde_json::json!(["nurse"]));
    }
}
