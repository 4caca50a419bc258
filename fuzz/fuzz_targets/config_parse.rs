//! Arbitrary text into the config parser and validator: every input must
//! give a config or a list of problems, never a panic, and the problems'
//! text (with its line:column positions) must format.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    // A base dir that does not exist: relative `secret_file`s fail to read
    // instead of touching whatever is in the fuzzer's working directory.
    let base = Path::new("/nonexistent/bbctl-fuzz");
    match bbctl::config::parse_str(text, "fuzz.toml", base) {
        // A config with nothing in it is valid: a master with no builders.
        Ok(config) => drop(config),
        Err(e) => {
            assert!(!e.problems.is_empty(), "an error without problems");
            for p in &e.problems {
                assert!(p.line >= 1 && p.column >= 1, "position {p}");
            }
            let _ = e.to_string();
        }
    }
});
