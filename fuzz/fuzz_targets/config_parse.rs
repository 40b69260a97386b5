//! Any config text yields a `Config` or a `ConfigError` whose every issue names a line within
//! the file: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardgate::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = std::env::temp_dir();
    if let Err(error) = Config::from_str(text, &dir.join("fuzz.toml"), &dir) {
        let lines = text.lines().count().max(1);
        for issue in &error.issues {
            assert!(issue.line <= lines + 1, "{issue} (file has {lines} lines)");
        }
    }
});
