//! The implementation config on any text, then resolved with no flags: a plan or an error.
#![no_main]

use harness::config::{ImplementationConfig, Overrides};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(config) = ImplementationConfig::parse(std::path::Path::new("fuzz.yaml"), text) {
        let _ = config.resolve(Overrides::default());
    }
});
