//! Session token verification never panics, and no input that was not signed with the key
//! ring ever verifies.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wardgate::authn::token::SessionKeys;

fn keys() -> &'static SessionKeys {
    static KEYS: OnceLock<SessionKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        SessionKeys::load_or_create(&dir.join("session-keys.toml")).expect("keys")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    assert!(
        keys().verify(token, "https://fuzz.example").is_err(),
        "an unsigned token verified"
    );
});
