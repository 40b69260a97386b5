//! The users file: who may sign in, with which roles, groups and claims.
//!
//! One TOML file (`[users] file`), always written whole to a temporary file and renamed into
//! place with mode 0600, so a crash never leaves half a file and other local users cannot read
//! hashes. Password hashes are argon2id PHC strings. TOTP secrets are sealed with
//! ChaCha20-Poly1305 under a key kept outside the file (`[users] key_file` or `key_env`), with
//! the username as associated data so a secret cannot be moved to another account.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// One account.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Login name (unique).
    pub name: String,
    /// Name shown in the portal.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    /// Roles, e.g. `clinician`, `patient`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Groups, e.g. departments.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Custom claims, e.g. `patient_id`.
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
    /// argon2id PHC string.
    pub password: String,
    /// Sealed TOTP secret (`v1:` + base64 of nonce and ciphertext), absent before enrollment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp_secret: Option<String>,
    /// Whether a code from `totp_secret` has been accepted once (enrollment confirmed).
    #[serde(default)]
    pub totp_confirmed: bool,
    /// The secret was handed to the user out of band (`wardgate user enroll`): sign-in asks
    /// for a code from it and never shows it, so knowing the password is not enough to get it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub totp_provisioned: bool,
    /// Disabled accounts cannot sign in and their sessions stop working.
    #[serde(default)]
    pub disabled: bool,
    /// Sessions authenticated before this time (Unix milliseconds) are no longer valid: set
    /// by password change, TOTP reset, enrollment and disable.
    #[serde(default)]
    pub sessions_valid_after_ms: u64,
    /// Name, roles and header values shared by this account's requests (not account data).
    #[serde(skip)]
    pub identity_cache: super::identity_texts::IdentityCache,
}

impl User {
    /// Whether the next sign-in shows a new authenticator secret (first use, trust on first
    /// use) rather than asking for a code: no confirmed secret, and none given out of band.
    pub fn enrolls_at_sign_in(&self) -> bool {
        !self.totp_confirmed && !self.totp_provisioned
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<User>,
}

/// Why the users file or its key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// Reading, parsing or writing a file failed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A sealed secret could not be opened (wrong key, or moved between accounts).
    #[error("TOTP secret of `{0}` cannot be decrypted with the configured key")]
    Sealed(String),
    /// No such user.
    #[error("no user `{0}`")]
    Unknown(String),
    /// A user of that name exists.
    #[error("user `{0}` already exists")]
    Exists(String),
}

fn file_error(path: &Path, message: impl ToString) -> UserError {
    UserError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// The users file plus the key that seals TOTP secrets.
pub struct UserStore {
    path: PathBuf,
    cipher: ChaCha20Poly1305,
    users: ArcSwap<BTreeMap<String, Arc<User>>>,
    seen_modified: std::sync::Mutex<Option<std::time::SystemTime>>,
}

impl std::fmt::Debug for UserStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl UserStore {
    /// Opens the users file (absent means no users yet) with the sealing key from `key_env`
    /// (if set in the environment) or `key_file` (created with a random key if absent).
    pub fn open(
        path: &Path,
        key_file: &Path,
        key_env: Option<&str>,
    ) -> Result<UserStore, UserError> {
        let key = load_key(key_file, key_env, || holds_sealed_secrets(path))?;
        let store = UserStore {
            path: path.to_path_buf(),
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
            users: ArcSwap::from_pointee(BTreeMap::new()),
            seen_modified: std::sync::Mutex::new(None),
        };
        let modified = store.modified();
        store.users.store(Arc::new(store.read()?));
        store.remember(modified);
        Ok(store)
    }

    fn modified(&self) -> Option<std::time::SystemTime> {
        std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok()
    }

    fn remember(&self, modified: Option<std::time::SystemTime>) {
        if let Ok(mut seen) = self.seen_modified.lock() {
            *seen = modified;
        }
    }

    /// Re-reads the file if it changed on disk (e.g. by `wardgate user ...`). A file that no
    /// longer parses is refused and the users already loaded stay in force.
    /// Returns the users whose sessions the change ended (see
    /// [`super::session::ended_by_account_changes`]).
    pub fn refresh_if_changed(&self) -> Vec<String> {
        let modified = self.modified();
        let changed = self
            .seen_modified
            .lock()
            .map(|seen| *seen != modified)
            .unwrap_or(false);
        if !changed {
            return Vec::new();
        }
        let before = self.all();
        let ended = match self.read() {
            Ok(users) => {
                self.users.store(Arc::new(users));
                tracing::info!(file = %self.path.display(), "users file reloaded");
                super::session::ended_by_account_changes(&before, self)
            }
            Err(err) => {
                tracing::error!("users file refused, previous users kept: {err}");
                Vec::new()
            }
        };
        self.remember(modified);
        ended
    }

    fn read(&self) -> Result<BTreeMap<String, Arc<User>>, UserError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(err) => return Err(file_error(&self.path, err)),
        };
        let file: UsersFile = toml::from_str(&text).map_err(|err| {
            let issue = crate::config::error::from_toml_error(&self.path, &text, &err);
            file_error(
                &self.path,
                format!("line {}: {}: {}", issue.line, issue.field, issue.message),
            )
        })?;
        let mut users = BTreeMap::new();
        for user in file.users {
            if users.contains_key(&user.name) {
                return Err(file_error(
                    &self.path,
                    format!("user `{}` appears twice", user.name),
                ));
            }
            users.insert(user.name.clone(), Arc::new(user));
        }
        Ok(users)
    }

    /// The user called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<User>> {
        self.users.load().get(name).cloned()
    }

    /// All users, by name.
    pub fn all(&self) -> Vec<Arc<User>> {
        self.users.load().values().cloned().collect()
    }

    /// Takes the users file's lock (`.NAME.lock` beside it) for one read-modify-write, held
    /// until the returned file is dropped. Every writer takes it (the CLI, and the proxy when
    /// it records a confirmed TOTP), so two changes made at once both land: without it the
    /// later write put back what it had read, undoing the other (a disabled user enabled
    /// again, a changed password reverted, a confirmed TOTP unconfirmed, which reopens
    /// enrollment at sign-in).
    fn exclusive(&self) -> Result<std::fs::File, UserError> {
        use std::os::unix::fs::OpenOptionsExt;
        let (dir, name) = dir_and_name(&self.path);
        let lock_path = dir.join(format!(".{name}.lock"));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|err| file_error(&lock_path, err))?;
        lock.lock().map_err(|err| file_error(&lock_path, err))?;
        Ok(lock)
    }

    /// Adds a user; fails if the name is taken.
    pub fn add(&self, user: User) -> Result<(), UserError> {
        let _lock = self.exclusive()?;
        let mut users = self.read()?;
        if users.contains_key(&user.name) {
            return Err(UserError::Exists(user.name));
        }
        users.insert(user.name.clone(), Arc::new(user));
        self.write(users)
    }

    /// Re-reads the file, applies `change` to `name`, and writes the file atomically.
    pub fn update(
        &self,
        name: &str,
        change: impl FnOnce(&mut User),
    ) -> Result<Arc<User>, UserError> {
        let _lock = self.exclusive()?;
        let mut users = self.read()?;
        let current = users
            .get(name)
            .ok_or_else(|| UserError::Unknown(name.to_string()))?;
        let mut updated = User::clone(current);
        change(&mut updated);
        let updated = Arc::new(updated);
        users.insert(name.to_string(), Arc::clone(&updated));
        self.write(users)?;
        Ok(updated)
    }

    fn write(&self, users: BTreeMap<String, Arc<User>>) -> Result<(), UserError> {
        let file = UsersFile {
            users: users.values().map(|u| User::clone(u)).collect(),
        };
        let text = toml::to_string_pretty(&file).map_err(|err| file_error(&self.path, err))?;
        write_atomic(&self.path, text.as_bytes()).map_err(|err| file_error(&self.path, err))?;
        self.users.store(Arc::new(users));
        self.remember(self.modified());
        Ok(())
    }

    /// Seals a TOTP secret for `user`.
    pub fn seal(&self, user: &str, secret: &[u8]) -> String {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: user.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!("v1:{}", STANDARD.encode(bytes))
    }

    /// Opens the TOTP secret of `user`, if any.
    pub fn totp_secret(&self, user: &User) -> Result<Option<Vec<u8>>, UserError> {
        let Some(sealed) = &user.totp_secret else {
            return Ok(None);
        };
        let bytes = sealed
            .strip_prefix("v1:")
            .and_then(|b| STANDARD.decode(b).ok())
            .filter(|b| b.len() > 12)
            .ok_or_else(|| UserError::Sealed(user.name.clone()))?;
        let (nonce, ciphertext) = bytes.split_at(12);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: user.name.as_bytes(),
                },
            )
            .map(Some)
            .map_err(|_| UserError::Sealed(user.name.clone()))
    }
}

/// Whether the users file at `path` holds a sealed TOTP secret (or cannot be read to tell: then
/// it is assumed to, so no new key is made over secrets sealed with the old one).
fn holds_sealed_secrets(path: &Path) -> bool {
    match std::fs::read_to_string(path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => false,
        Err(_) => true,
        Ok(text) => toml::from_str::<UsersFile>(&text).map_or(true, |file| {
            file.users.iter().any(|u| u.totp_secret.is_some())
        }),
    }
}

/// The key sealing TOTP secrets: from `key_env` when that variable is set, else `key_file`.
/// A new random key is made only on a first start: never when `key_env` names the key's
/// source (a shell or unit that lost the variable would otherwise seal with a stray key), and
/// never when users already hold secrets sealed with a key that has gone missing (every one of
/// them would fail to sign in).
fn load_key(
    key_file: &Path,
    key_env: Option<&str>,
    sealed_secrets_exist: impl FnOnce() -> bool,
) -> Result<Vec<u8>, UserError> {
    let decode = |text: &str, origin: &Path| -> Result<Vec<u8>, UserError> {
        STANDARD
            .decode(text.trim())
            .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim()))
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| file_error(origin, "key must be 32 bytes, base64-encoded"))
    };
    if let Some(var) = key_env {
        if let Ok(text) = std::env::var(var) {
            return decode(&text, Path::new(var));
        }
    }
    match crate::keys::read_secret(key_file) {
        Ok(text) => decode(&text, key_file),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            if let Some(var) = key_env {
                return Err(file_error(
                    key_file,
                    format!("no such file, and the environment variable `{var}` (users.key_env) is not set: set it (as the proxy's service does) or restore the key file"),
                ));
            }
            if sealed_secrets_exist() {
                return Err(file_error(
                    key_file,
                    "no such file, but the users file holds TOTP secrets sealed with it: restore it from its backup (a new key cannot open them)",
                ));
            }
            let mut key = vec![0u8; 32];
            rand::thread_rng().fill_bytes(&mut key);
            if let Some(dir) = key_file.parent() {
                std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
            }
            write_atomic(key_file, format!("{}\n", STANDARD.encode(&key)).as_bytes())
                .map_err(|e| file_error(key_file, e))?;
            tracing::warn!(key = %key_file.display(), "generated a new key for sealing TOTP secrets: back it up with the users file");
            Ok(key)
        }
        Err(err) => Err(file_error(key_file, err)),
    }
}

/// The directory of `path` (`.` for a bare name) and its file name: where the files that go
/// with it (its temporary copy, its lock) are made.
fn dir_and_name(path: &Path) -> (&Path, String) {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (dir, name)
}

/// Writes `bytes` to `path` via a temporary file and rename, mode 0600, fsynced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let (dir, file_name) = dir_and_name(path);
    std::fs::create_dir_all(dir)?;
    let mut suffix = [0u8; 6];
    rand::thread_rng().fill_bytes(&mut suffix);
    let temp = dir.join(format!(
        ".{file_name}.{}.tmp",
        URL_SAFE_NO_PAD.encode(suffix)
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| {
            drop(file);
            std::fs::rename(&temp, path)
        });
    if let Err(err) = written {
        // A full disk must not leave a half-written secret behind under another name.
        let _ = std::fs::remove_file(&temp);
        return Err(err);
    }
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
