//! The path normalizer never panics, and what it accepts is canonical: normalizing it again
//! gives the same path, with no dot segments, empty segments or encoded separators left.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardgate::gate::normalize::normalize;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(path) = normalize(raw) {
        let again = normalize(&path).expect("a normalized path normalizes again");
        assert_eq!(again, path, "normalization is idempotent");
        assert!(path.starts_with('/'));
        assert!(!path.split('/').any(|s| s == "." || s == ".."), "{path}");
        assert!(!path.contains("//"), "{path}");
        let lower = path.to_ascii_lowercase();
        assert!(!lower.contains("%2f") && !lower.contains("%5c"), "{path}");
    }
});
