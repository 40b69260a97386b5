//! Passwords: the NIST SP 800-63B policy, and argon2id hashing off the async runtime.
//!
//! Hashing is deliberately slow (at least OWASP's m=19 MiB, t=2, p=1), so it runs on the
//! blocking pool behind a semaphore: a storm of logins queues for a few hashing slots instead
//! of occupying the threads that move proxied traffic.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

const COMMON: &str = include_str!("../../assets/common-passwords.txt");

/// Longest accepted password (NIST: at least 64 must be allowed).
pub const MAX_PASSWORD_LEN: usize = 256;

/// Why a new password is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Shorter than the configured minimum.
    #[error("password must have at least {0} characters")]
    TooShort(usize),
    /// Longer than [`MAX_PASSWORD_LEN`].
    #[error("password must have at most {MAX_PASSWORD_LEN} characters")]
    TooLong,
    /// On the shipped list of common or breached passwords.
    #[error("password is on the list of common or breached passwords")]
    Common,
    /// Equal to (or contains) the username.
    #[error("password must not be the username")]
    Username,
}

/// Checks a new password against the policy (length only, no composition rules).
pub fn check_policy(password: &str, username: &str, min_len: usize) -> Result<(), PolicyError> {
    let length = password.chars().count();
    if length < min_len {
        return Err(PolicyError::TooShort(min_len));
    }
    if length > MAX_PASSWORD_LEN {
        return Err(PolicyError::TooLong);
    }
    let lower = password.to_lowercase();
    let name = username.to_lowercase();
    if lower == name || (name.chars().count() >= 3 && lower.contains(&name)) {
        return Err(PolicyError::Username);
    }
    if COMMON
        .lines()
        .filter(|l| !l.starts_with('#'))
        .any(|common| common == lower)
    {
        return Err(PolicyError::Common);
    }
    Ok(())
}

/// argon2id parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Iterations.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        HashParams {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl HashParams {
    fn argon2(&self) -> Result<Argon2<'static>, String> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| e.to_string())?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// Hashes synchronously (CLI use).
    pub fn hash_blocking(&self, password: &str) -> Result<String, String> {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        self.argon2()?
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| e.to_string())
    }
}

/// Verifies a password against a PHC string (constant-time inside argon2); false on any error.
pub fn verify_blocking(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Hashing and verification on the blocking pool, at most `slots` at a time.
#[derive(Debug, Clone)]
pub struct PasswordWorker {
    params: HashParams,
    slots: Arc<Semaphore>,
    dummy: Arc<String>,
}

impl PasswordWorker {
    /// A worker with `slots` concurrent hashes; computes the dummy hash used for unknown users.
    pub fn new(params: HashParams, slots: usize) -> Result<PasswordWorker, String> {
        let dummy = params.hash_blocking("wardgate dummy password for timing equality")?;
        Ok(PasswordWorker {
            params,
            slots: Arc::new(Semaphore::new(slots.max(1))),
            dummy: Arc::new(dummy),
        })
    }

    /// Verifies `password` against `phc`, or against a dummy hash when there is no user, so
    /// unknown and known names take the same time.
    pub async fn verify(&self, password: String, phc: Option<String>) -> bool {
        let Ok(_permit) = self.slots.acquire().await else {
            return false;
        };
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.dummy.as_ref().clone());
        let verified = tokio::task::spawn_blocking(move || verify_blocking(&password, &phc)).await;
        known && verified.unwrap_or(false)
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: String) -> Result<String, String> {
        let _permit = self.slots.acquire().await.map_err(|e| e.to_string())?;
        let params = self.params;
        tokio::task::spawn_blocking(move || params.hash_blocking(&password))
            .await
            .map_err(|e| e.to_string())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_is_length_list_and_username_only() {
        assert_eq!(
            check_policy("short", "a", 12),
            Err(PolicyError::TooShort(12))
        );
        assert_eq!(
            check_policy("Password123!", "a", 12),
            Err(PolicyError::Common)
        );
        assert_eq!(
            check_policy("alice-in-wonderland", "alice", 12),
            Err(PolicyError::Username)
        );
        assert_eq!(
            check_policy(&"x".repeat(300), "a", 12),
            Err(PolicyError::TooLong)
        );
        assert_eq!(check_policy("tidal marble lantern", "alice", 12), Ok(()));
        assert_eq!(check_policy(&"é".repeat(64), "alice", 12), Ok(()));
    }

    #[test]
    fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let phc = HashParams::default()
            .hash_blocking("tidal marble lantern")
            .expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_blocking("tidal marble lantern", &phc));
        assert!(!verify_blocking("tidal marble lanterN", &phc));
        assert!(!verify_blocking("x", "not a hash"));
    }
}
