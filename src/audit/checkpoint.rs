//! Signed checkpoints: an Ed25519 signature over the chain position every so often, so that
//! rewriting history (and recomputing every hash after the edit) also needs the private key.

use std::path::Path;

use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

use super::record::hex;

/// The checkpoint signing key.
pub struct CheckpointKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointKey")
            .field("public", &hex(self.pair.public_key().as_ref()))
            .finish()
    }
}

/// The message a checkpoint signs: its sequence number and the hash it follows.
pub fn message(seq: u64, prev: &str) -> Vec<u8> {
    format!("wardgate-audit-checkpoint:{seq}:{prev}").into_bytes()
}

impl CheckpointKey {
    /// Loads the key (base64 PKCS#8), creating it (mode 0600) with its `.pub` beside it if absent.
    pub fn load_or_create(path: &Path) -> Result<CheckpointKey, String> {
        let describe = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let pair = crate::keys::load_or_create_ed25519(path)?;
        let public = path.with_extension("pub");
        if !public.exists() {
            std::fs::write(&public, format!("{}\n", hex(pair.public_key().as_ref())))
                .map_err(|e| describe(&e))?;
        }
        Ok(CheckpointKey { pair })
    }

    /// Hex signature of the checkpoint at `seq` following `prev`.
    pub fn sign(&self, seq: u64, prev: &str) -> String {
        hex(self.pair.sign(&message(seq, prev)).as_ref())
    }

    /// The public key.
    pub fn public(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }
}

/// Checks a checkpoint signature with a public key.
pub fn verify(public: &[u8], seq: u64, prev: &str, signature_hex: &str) -> bool {
    let Some(signature) = unhex(signature_hex) else {
        return false;
    };
    UnparsedPublicKey::new(&ED25519, public)
        .verify(&message(seq, prev), &signature)
        .is_ok()
}

/// Parses lower- or upper-case hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
