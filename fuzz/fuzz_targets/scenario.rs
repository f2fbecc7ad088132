//! The scenario loader on any text: it returns a scenario or errors, never panics or hangs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = harness::scenario::load::parse(std::path::Path::new("fuzz.yaml"), text);
});
