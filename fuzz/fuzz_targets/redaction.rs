//! Redaction on any text, with a registered key: never panics, and a registered key placed
//! in the text (base64 of its PEM) never survives.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

static KEY: LazyLock<String> = LazyLock::new(|| {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["a.test".into()]).unwrap().self_signed(&key).unwrap();
    harness::redaction::register_private_key(&key.serialize_pem(), &cert.pem());
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(key.serialize_pem())
});

fuzz_target!(|text: &str| {
    let _ = harness::redaction::redact(text);
    let split = text.len() / 2;
    let split = (0..=split).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
    let with_key = format!("{} {} {}", &text[..split], *KEY, &text[split..]);
    let redacted = harness::redaction::redact(&with_key);
    assert!(!redacted.contains(&KEY[40..80]), "the key survived in {redacted:?}");
});
