//! TOTP (RFC 6238) as authenticator apps use it: SHA-1, 6 digits, 30-second steps, ±1 step.
//!
//! A code is accepted at most once per user: the step it belongs to is spent in the state
//! store (atomically, so two replicas cannot both accept it), and any code from that step or
//! an earlier one is refused afterwards.

use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};

use crate::state::{StateError, StateStore};

/// Step length in seconds.
pub const STEP: u64 = 30;

/// The outcome of checking a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpCheck {
    /// Valid and not used before.
    Accepted,
    /// Wrong, malformed, or already used.
    Rejected,
}

fn totp(secret: &[u8], account: &str) -> Option<TOTP> {
    TOTP::new(
        Algorithm::SHA1,
        6,
        1,
        STEP,
        secret.to_vec(),
        Some("Wardgate".to_string()),
        account.replace(':', "_"),
    )
    .ok()
}

/// The code for `secret` at Unix time `time`.
pub fn code_at(secret: &[u8], time: u64) -> String {
    totp(secret, "x")
        .map(|t| t.generate(time))
        .unwrap_or_default()
}

/// A new random 160-bit secret (RFC 4226 recommends 160 bits).
pub fn new_secret() -> Vec<u8> {
    use rand::RngCore;
    let mut secret = vec![0u8; 20];
    rand::thread_rng().fill_bytes(&mut secret);
    secret
}

/// The `otpauth://totp/...` URI authenticator apps scan.
pub fn otpauth_uri(secret: &[u8], account: &str) -> String {
    totp(secret, account)
        .map(|t| t.get_url())
        .unwrap_or_default()
}

/// Base32 form of a secret, for manual entry.
pub fn base32(secret: &[u8]) -> String {
    totp(secret, "x")
        .map(|t| t.get_secret_base32())
        .unwrap_or_default()
}

/// Checks `code` for `user` at `now`, spending its step on success.
pub async fn verify(
    state: &dyn StateStore,
    user: &str,
    secret: &[u8],
    code: &str,
    now: u64,
) -> Result<TotpCheck, StateError> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(TotpCheck::Rejected);
    }
    let current = now / STEP;
    let mut matched = None;
    for step in [current.saturating_sub(1), current, current + 1] {
        let expected = code_at(secret, step * STEP);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            matched = Some(step);
        }
    }
    match matched {
        Some(step) if state.use_totp_step(user, step).await? => Ok(TotpCheck::Accepted),
        _ => Ok(TotpCheck::Rejected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 column (8-digit codes; we compare the last 6 digits, which
    /// is exactly how a 6-digit code is derived from the same HOTP value).
    #[test]
    fn rfc6238_test_vectors() {
        let secret = b"12345678901234567890";
        let vectors = [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ];
        for (time, eight) in vectors {
            assert_eq!(code_at(secret, time), eight[2..], "t={time}");
        }
    }

    #[tokio::test]
    async fn a_code_works_once_and_only_within_one_step() {
        let state = crate::state::memory::MemoryStore::default();
        let secret = b"12345678901234567890";
        let now = 1_111_111_111;
        let code = code_at(secret, now);
        assert_eq!(
            verify(&state, "alice", secret, &code, now)
                .await
                .expect("ok"),
            TotpCheck::Accepted
        );
        assert_eq!(
            verify(&state, "alice", secret, &code, now)
                .await
                .expect("ok"),
            TotpCheck::Rejected
        );
        // The previous step's code is older than the spent step: refused too.
        let previous = code_at(secret, now - STEP);
        assert_eq!(
            verify(&state, "alice", secret, &previous, now)
                .await
                .expect("ok"),
            TotpCheck::Rejected
        );
        // Another user is independent; ±1 step skew accepted, 2 steps refused.
        let next = code_at(secret, now + STEP);
        assert_eq!(
            verify(&state, "bob", secret, &next, now).await.expect("ok"),
            TotpCheck::Accepted
        );
        let far = code_at(secret, now + 3 * STEP);
        assert_eq!(
            verify(&state, "carol", secret, &far, now)
                .await
                .expect("ok"),
            TotpCheck::Rejected
        );
        assert_eq!(
            verify(&state, "dave", secret, "12345x", now)
                .await
                .expect("ok"),
            TotpCheck::Rejected
        );
    }
}
