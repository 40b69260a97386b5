//! Ed25519 signing keys kept in the data directory (audit checkpoints, identity assertions).
//!
//! One format for both: base64 of the PKCS#8 document, written once (mode 0600, atomically)
//! on first start and read back on every start after.

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;

use crate::authn::users::write_atomic;

/// Why a file holding a secret is refused, if it is: others may read it or its group may write
/// it (a key copied with a loose umask, a world-readable backup). Group read is allowed,
/// because Kubernetes mounts Secrets as root:fsGroup with mode 0440.
pub fn loose_permissions(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o027 != 0).then(|| {
        format!(
            "holds a secret but others can read it or its group can write it (mode {:o}): chmod 600 (or 640) it",
            mode & 0o777
        )
    })
}

/// Reads a file holding a secret, refusing one with [`loose_permissions`].
pub fn read_secret(path: &Path) -> std::io::Result<String> {
    if let Some(why) = loose_permissions(path) {
        return Err(std::io::Error::other(why));
    }
    std::fs::read_to_string(path)
}

/// Loads the Ed25519 key at `path`, creating it if absent.
pub fn load_or_create_ed25519(path: &Path) -> Result<Ed25519KeyPair, String> {
    Ed25519KeyPair::from_pkcs8(&load_or_create_pkcs8(path)?)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The PKCS#8 bytes of the Ed25519 key at `path`, created if absent.
pub fn load_or_create_pkcs8(path: &Path) -> Result<Vec<u8>, String> {
    let describe = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    match read_secret(path) {
        Ok(text) => STANDARD.decode(text.trim()).map_err(|e| describe(&e)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let generated =
                Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|e| describe(&e))?;
            write_atomic(
                path,
                format!("{}\n", STANDARD.encode(generated.as_ref())).as_bytes(),
            )
            .map_err(|e| describe(&e))?;
            Ok(generated.as_ref().to_vec())
        }
        Err(err) => Err(describe(&err)),
    }
}
