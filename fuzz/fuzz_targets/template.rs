//! `${...}` expansion on any text, with the names a scenario has bound: a value or an error.
#![no_main]

use harness::scenario::template::Bindings;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let mut bindings = Bindings::default();
    bindings.insert("host", "demo.run.upstream-tls.test");
    bindings.insert("pki.ca.cert", "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n");
    bindings.insert("namespace", "demo-run");
    let _ = bindings.expand(text);
});
