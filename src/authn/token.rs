//! Session tokens: HS256 JWTs that point at a server-side session record.
//!
//! Only Wardgate ever verifies these tokens, so a symmetric MAC is the right tool: verifying
//! costs about a microsecond on the hot path, and "signed with the public key" confusion is
//! impossible because there is no public key. The algorithm is pinned (HS256 only; `none` and
//! every asymmetric algorithm are refused), the key is chosen by `kid` from Wardgate's own key
//! ring (unknown `kid` refused), and `iss`, `aud`, `exp` and `nbf` are required and checked.
//! Keys live in `<data dir>/session-keys.toml` (mode 0600); the newest signs, all verify, so a
//! key is rotated by adding a new one and removing the old after the session lifetime.

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::users::write_atomic;

/// The audience of session tokens (assertions to backends use the upstream name instead).
pub const SESSION_AUDIENCE: &str = "wardgate-session";

/// Claims of a session token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionClaims {
    /// Issuer: Wardgate's public URL.
    pub iss: String,
    /// Audience: [`SESSION_AUDIENCE`].
    pub aud: String,
    /// Username.
    pub sub: String,
    /// Session id (key of the server-side record).
    pub sid: String,
    /// Issued at.
    pub iat: u64,
    /// Not before.
    pub nbf: u64,
    /// Expiry (the session's absolute lifetime).
    pub exp: u64,
    /// When the factors were proved.
    pub auth_time: u64,
    /// RFC 8176 methods.
    pub amr: Vec<String>,
}

/// Why a token is refused (detail for logs only; clients just get 401).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url segments, bad JSON, or missing claims.
    #[error("malformed token")]
    Malformed,
    /// `alg` is not HS256.
    #[error("algorithm not allowed")]
    Algorithm,
    /// `kid` missing or not in the key ring.
    #[error("unknown key id")]
    UnknownKey,
    /// Signature, expiry, not-before, issuer or audience check failed.
    #[error("invalid token: {0}")]
    Invalid(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct KeyFile {
    keys: Vec<KeyEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyEntry {
    kid: String,
    secret: String,
}

/// The session key ring.
pub struct SessionKeys {
    signing_kid: String,
    encoding: EncodingKey,
    decoding: Vec<(String, DecodingKey)>,
    /// Tokens that verified, by their exact text: every request of a session carries the same
    /// token, and re-checking base64, JSON and the HMAC each time was the largest part of
    /// session validation. Only the signature check is skipped; the session record is still
    /// consulted on every request, and an entry is never used past the token's `exp`.
    verified: crate::FastMap<Box<str>, VerifiedToken>,
}

struct VerifiedToken {
    session: VerifiedSession,
    issuer: Box<str>,
}

/// A session token that verified (cheap to clone: two shared pointers).
#[derive(Debug, Clone)]
pub struct VerifiedSession {
    /// What the token says.
    pub claims: std::sync::Arc<SessionClaims>,
    /// The session as the audit trail names it (`session_hash` of `sid`): a SHA-256 made once
    /// per token instead of once per audited request.
    pub audit_session: crate::audit::record::Text,
}

/// Largest number of remembered verified tokens (the cache starts over beyond it).
const VERIFIED_LIMIT: usize = 65_536;

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("signing_kid", &self.signing_kid)
            .finish_non_exhaustive()
    }
}

/// Why the key ring at `path` does not parse, naming the line but never quoting it: TOML's own
/// message shows the offending line, which here may be a signing secret, and this message goes
/// to the log and, on reload, into the hash-chained `config_reload` record.
fn unreadable_ring(path: &Path, text: &str, error: &toml::de::Error) -> String {
    let at = error
        .span()
        .map(|span| format!(":{}", crate::config::error::line_of(text, span.start)))
        .unwrap_or_default();
    format!(
        "{}{at}: not a valid session key ring (expected [[keys]] entries with a kid and a quoted base64 secret)",
        path.display()
    )
}

impl SessionKeys {
    /// Loads the key ring, creating it with one random 256-bit key on first start.
    pub fn load_or_create(path: &Path) -> Result<SessionKeys, String> {
        let file: KeyFile = match crate::keys::read_secret(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| unreadable_ring(path, &text, &e))?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let file = KeyFile {
                    keys: vec![new_key()],
                };
                let text = toml::to_string(&file).map_err(|e| e.to_string())?;
                write_atomic(path, text.as_bytes())
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                file
            }
            Err(err) => return Err(format!("{}: {err}", path.display())),
        };
        let mut decoding = Vec::new();
        let mut last = None;
        for entry in &file.keys {
            let secret = STANDARD
                .decode(&entry.secret)
                .ok()
                .filter(|s| s.len() >= 32)
                .ok_or_else(|| {
                    format!(
                        "{}: key `{}` must be at least 32 bytes, base64",
                        path.display(),
                        entry.kid
                    )
                })?;
            decoding.push((entry.kid.clone(), DecodingKey::from_secret(&secret)));
            last = Some((entry.kid.clone(), secret));
        }
        let (signing_kid, secret) = last.ok_or_else(|| format!("{}: no keys", path.display()))?;
        Ok(SessionKeys {
            signing_kid,
            encoding: EncodingKey::from_secret(&secret),
            decoding,
            verified: crate::FastMap::default(),
        })
    }

    /// Appends a new key (which then signs); old keys keep verifying.
    pub fn rotate(path: &Path) -> Result<String, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut file: KeyFile =
            toml::from_str(&text).map_err(|e| unreadable_ring(path, &text, &e))?;
        let entry = new_key();
        let kid = entry.kid.clone();
        file.keys.push(entry);
        let text = toml::to_string(&file).map_err(|e| e.to_string())?;
        write_atomic(path, text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(kid)
    }

    /// Signs claims with the newest key.
    pub fn sign(&self, claims: &SessionClaims) -> Result<String, String> {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.signing_kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| e.to_string())
    }

    /// Verifies a token issued by `issuer` (shared, so a repeat costs no allocation).
    pub fn verify(&self, token: &str, issuer: &str) -> Result<VerifiedSession, TokenError> {
        let now = crate::state::unix_now();
        if let Some(hit) = self.verified.get(token) {
            if &*hit.issuer == issuer && now < hit.session.claims.exp {
                return Ok(hit.session.clone());
            }
        }
        let claims = self.verify_signed(token, issuer)?;
        let session = VerifiedSession {
            audit_session: crate::audit::record::session_hash(&claims.sid),
            claims: std::sync::Arc::new(claims),
        };
        if self.verified.len() >= VERIFIED_LIMIT {
            self.verified.clear();
        }
        self.verified.insert(
            token.into(),
            VerifiedToken {
                session: session.clone(),
                issuer: issuer.into(),
            },
        );
        Ok(session)
    }

    fn verify_signed(&self, token: &str, issuer: &str) -> Result<SessionClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::HS256 {
            return Err(TokenError::Algorithm);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = self
            .decoding
            .iter()
            .find(|(id, _)| *id == kid)
            .map(|(_, key)| key)
            .ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[SESSION_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        jsonwebtoken::decode::<SessionClaims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|err| match err.kind() {
                jsonwebtoken::errors::ErrorKind::Json(_)
                | jsonwebtoken::errors::ErrorKind::Base64(_) => TokenError::Malformed,
                _ => TokenError::Invalid(err.to_string()),
            })
    }
}

fn new_key() -> KeyEntry {
    let mut secret = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    KeyEntry {
        kid: format!(
            "s{}-{:04x}",
            crate::state::unix_now(),
            rand::random::<u16>()
        ),
        secret: STANDARD.encode(secret),
    }
}

#[cfg(test)]
mod tests {
    use super::SessionKeys;

    #[test]
    fn a_malformed_key_ring_is_reported_without_quoting_its_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("session-keys.toml");
        let secret = "c2VjcmV0LXNpZ25pbmcta2V5LW5vdC1xdW90ZWQtMTIzNDU2Nzg5MA==";
        std::fs::write(
            &path,
            format!("[[keys]]\nkid = \"k1\"\nsecret = {secret}\n"),
        )
        .expect("write");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let error = SessionKeys::load_or_create(&path).expect_err("unquoted secret");
        assert!(!error.contains("c2VjcmV0"), "{error}");
        assert!(error.contains("session-keys.toml:3:"), "{error}");
    }
}
