//! The audit verifier never panics on any file content, and accepts nothing that is not a
//! chain starting from the genesis hash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardgate::audit::verify::verify;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("fuzz.jsonl");
    std::fs::write(&file, data).expect("write");
    if let Ok(report) = verify(&[file], None) {
        // Only an empty file or a genuine chain can pass.
        assert!(report.records == 0 || data.windows(6).any(|w| w == b"\"prev\""));
    }
});
