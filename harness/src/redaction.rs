//! Private keys never reach a report, a log line or the terminal: [`redact`].
//!
//! Two rules, applied to every text the harness writes out:
//! - A PEM block whose label says `PRIVATE KEY`, whoever made it (a block cut short is
//!   redacted up to the first line that is not base64).
//! - Any key the run generated, matched by value: [`register_private_key`] records windows of
//!   its base64 encodings (of the PEM text at every byte alignment, so a key inside a longer
//!   value that was base64-encoded as a whole is found too, and of the DER, which is what the
//!   PEM's own lines are), and a run of base64 text, line breaks and `\n` escapes included,
//!   that contains one of them is replaced. Windows that also occur in the key's certificate
//!   (which carries the key's public half) are left out, so certificates stay readable.
//!
//! The registry is process-wide because a key can surface anywhere a scenario puts it (a
//! Secret, an annotation, a request header, a failure message built deep in a check).

use std::collections::HashSet;
use std::sync::{LazyLock, RwLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// What a redacted key is replaced by.
pub const MARKER: &str = "[private key redacted]";

/// Characters compared per window: 18 bytes of key material, far beyond chance.
const WINDOW: usize = 24;
/// Only windows starting every `STRIDE` characters of an encoding are kept, which keeps the
/// registry small; a run of text then needs `WINDOW + STRIDE - 1` characters of a key to be
/// sure to hold a kept window, far fewer than any key encoding has.
const STRIDE: usize = 8;

/// Hashes of the kept windows of every registered key.
static REGISTRY: LazyLock<RwLock<HashSet<u64>>> = LazyLock::new(RwLock::default);

/// Key bytes a window must carry to be kept: bytes that are not in the certificate too.
const SECRET_BYTES: usize = 8;
/// Bytes of the key found in its certificate at this length or longer are public.
const SHARED_RUN: usize = 6;

/// Remembers a generated private key (PEM) so that [`redact`] finds it in any base64 form.
/// `certificate` is its certificate (PEM): key bytes found there too (the public key, the
/// algorithm's identifiers) are public, and only windows carrying secret bytes are kept, so no
/// certificate, in any encoding, is ever taken for a key.
pub fn register_private_key(key: &str, certificate: &str) {
    let (Some(key_der), Some(cert_der)) = (pem_body(key).and_then(decode), pem_body(certificate).and_then(decode))
    else {
        return;
    };
    let in_certificate: HashSet<&[u8]> = cert_der.windows(SHARED_RUN).collect();
    let mut secret = vec![true; key_der.len()];
    for (start, run) in key_der.windows(SHARED_RUN).enumerate() {
        if in_certificate.contains(run) {
            secret[start..start + SHARED_RUN].fill(false);
        }
    }
    let mut kept = Vec::new();
    for (encoding, carried) in encodings(key) {
        let windows = encoding.as_bytes().windows(WINDOW).zip(carried.windows(WINDOW));
        for (window, bytes) in windows.step_by(STRIDE) {
            // A padding character (`=`) carries no byte: its index is past the DER's end.
            let is_secret = |&b: &usize| secret.get(b).copied().unwrap_or(false);
            let mut secret_bytes: Vec<usize> = bytes.iter().flatten().copied().filter(is_secret).collect();
            secret_bytes.dedup();
            if secret_bytes.len() >= SECRET_BYTES {
                kept.push(hash_window(window));
            }
        }
    }
    REGISTRY.write().unwrap_or_else(std::sync::PoisonError::into_inner).extend(kept);
}

/// The PEM's base64 lines between its markers, joined: the DER's base64.
fn pem_body(pem: &str) -> Option<String> {
    let body: String = pem.lines().filter(|line| !line.starts_with("-----")).map(str::trim).collect();
    (!body.is_empty()).then_some(body)
}

fn decode(base64: String) -> Option<Vec<u8>> {
    STANDARD.decode(base64).ok()
}

/// The base64 encodings of a key (PEM) a text can hold, each with the DER byte every character
/// carries (`None` for the PEM's markers and line breaks): the DER's own base64 (the PEM's
/// lines), and the PEM text at the three byte alignments, without the first and last characters
/// of a shifted one, which depend on what surrounds it.
fn encodings(pem: &str) -> Vec<(String, Vec<Option<usize>>)> {
    // For each byte of the PEM text, the DER byte its base64 character carries.
    let mut pem_carries = Vec::with_capacity(pem.len());
    let mut body_chars = 0usize;
    for line in pem.split_inclusive('\n') {
        let is_marker = line.starts_with("-----");
        for byte in line.bytes() {
            if is_marker || byte.is_ascii_whitespace() {
                pem_carries.push(None);
            } else {
                pem_carries.push(Some(body_chars * 6 / 8));
                body_chars += 1;
            }
        }
    }
    let mut out = Vec::new();
    if let Some(body) = pem_body(pem) {
        let carried = (0..body.len()).map(|c| Some(c * 6 / 8)).collect();
        out.push((body, carried));
    }
    for shift in 0..3 {
        let mut shifted = vec![0u8; shift];
        shifted.extend_from_slice(pem.as_bytes());
        let encoded = STANDARD.encode(&shifted);
        let (start, end) = (if shift == 0 { 0 } else { 4 }, encoded.len().saturating_sub(4));
        let carried = (start..end)
            .map(|k| (k * 6 / 8).checked_sub(shift).and_then(|byte| pem_carries.get(byte).copied().flatten()))
            .collect();
        out.push((encoded[start..end].to_string(), carried));
    }
    out
}

fn hash_window(window: &[u8]) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(window)
}

/// `text` with every private key replaced by [`MARKER`]: PEM key blocks, then any run of base64
/// holding a registered key.
pub fn redact(text: &str) -> String {
    let text = redact_pem_blocks(text);
    let registry = REGISTRY.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    if registry.is_empty() {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = rest.find(is_base64) {
        out.push_str(&rest[..start]);
        let run = base64_run(&rest[start..]);
        if run.len() >= WINDOW && compact(run).windows(WINDOW).any(|w| registry.contains(&hash_window(w))) {
            out.push_str(MARKER);
        } else {
            out.push_str(run);
        }
        rest = &rest[start + run.len()..];
    }
    out.push_str(rest);
    out
}

fn is_base64(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '-' | '_' | '=')
}

/// The longest prefix of `text` made of base64 characters, line breaks and `\n`/`\r` escapes
/// (as in JSON strings), not ending in a break.
fn base64_run(text: &str) -> &str {
    let mut end = 0;
    let mut rest = text;
    loop {
        let breaks = ["\r\n", "\n", "\\r\\n", "\\n", "\\r"].iter().find_map(|b| rest.strip_prefix(b));
        let after_break = breaks.unwrap_or(rest);
        match after_break.chars().next() {
            Some(c) if is_base64(c) => {
                let consumed = rest.len() - after_break.len() + c.len_utf8();
                end += consumed;
                rest = &rest[consumed..];
            }
            _ => return &text[..end],
        }
    }
}

/// `run` without its line breaks and escapes: the base64 characters alone, URL-safe ones read
/// as their standard counterparts.
fn compact(run: &str) -> Vec<u8> {
    run.replace("\\r", "")
        .replace("\\n", "")
        .bytes()
        .filter(|b| !matches!(b, b'\r' | b'\n'))
        .map(|b| match b {
            b'-' => b'+',
            b'_' => b'/',
            other => other,
        })
        .collect()
}

/// `text` with every PEM private key block replaced (a block cut short, with no end marker:
/// up to the first line that is not base64; the tail of a block whose start was cut off:
/// from the first line that is not base64 before its end marker).
fn redact_pem_blocks(text: &str) -> String {
    redact_key_tails(&redact_key_heads(text))
}

fn redact_key_heads(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let Some(label_len) = after.find("-----") else { break };
        let label = &after[..label_len];
        if !label.contains("PRIVATE KEY") {
            out.push_str(&rest[..start + "-----BEGIN ".len()]);
            rest = after;
            continue;
        }
        out.push_str(&rest[..start]);
        out.push_str(MARKER);
        let end_marker = format!("-----END {label}-----");
        rest = match after.find(&end_marker) {
            Some(end) => &after[end + end_marker.len()..],
            None => after_key_lines(&after[label_len + "-----".len()..]),
        };
    }
    out.push_str(rest);
    out
}

/// `text` with the end of every private key block whose start is not there (an error message
/// that quotes the last lines of a document) replaced, with the key lines before it.
fn redact_key_tails(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("-----END ") {
        let after = &rest[start + "-----END ".len()..];
        let Some(label_len) = after.find("-----") else { break };
        if !after[..label_len].contains("PRIVATE KEY") {
            out.push_str(&rest[..start + "-----END ".len()]);
            rest = after;
            continue;
        }
        out.push_str(before_key_lines(&rest[..start]));
        out.push_str(MARKER);
        rest = &after[label_len + "-----".len()..];
    }
    out.push_str(rest);
    out
}

/// `text` without the key material it ends with: whole lines of base64 (indented, as in
/// YAML; broken by line breaks or `\n`/`\r` escapes), then the base64 that ends the line
/// before them, back to the first other character.
fn before_key_lines(text: &str) -> &str {
    let is_key = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
    let mut rest = without_break(text.trim_end_matches([' ', '\t']));
    loop {
        let line_start = ["\n", "\\n", "\r", "\\r"].iter().filter_map(|b| rest.rfind(b).map(|i| i + b.len())).max();
        let line = rest[line_start.unwrap_or(0)..].trim_matches([' ', '\t']);
        match line_start {
            Some(start) if !line.is_empty() && line.chars().all(is_key) => rest = without_break(&rest[..start]),
            _ => return rest.trim_end_matches(is_key).trim_end_matches([' ', '\t']),
        }
    }
}

/// `text` without the one line break (or `\n`/`\r` escape) it may end with.
fn without_break(text: &str) -> &str {
    ["\r\n", "\n", "\r", "\\r\\n", "\\n", "\\r"].iter().find_map(|b| text.strip_suffix(b)).unwrap_or(text)
}

/// `text` after the key material a truncated key block starts with: base64, across line
/// breaks and `\n`/`\r` escapes (as in JSON strings), up to the first other character. That
/// may take the first word of the text after a cut-short key: better than leaking a line.
fn after_key_lines(text: &str) -> &str {
    let is_key = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '\n' | '\r');
    let mut rest = text;
    while let Some(next) =
        rest.strip_prefix("\\n").or_else(|| rest.strip_prefix("\\r")).or_else(|| rest.strip_prefix(is_key))
    {
        rest = next;
    }
    rest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_cut_short_is_redacted_up_to_the_text_after_it() {
        let text = "got 400 -----BEGIN PRIVATE KEY-----\nMIIB\nAAAA==\n| next | row |\n";
        assert_eq!(redact(text), "got 400 [private key redacted]| next | row |\n");
        let text = "<pre>-----BEGIN PRIVATE KEY-----\nMIIB\nAAAA...</pre>";
        assert_eq!(redact(text), "<pre>[private key redacted]...</pre>", "the last, partial line goes too");
        let text = r#""-----BEGIN PRIVATE KEY-----\r\nMIIB\r\nAAAA" next"#;
        assert_eq!(redact(text), r#""[private key redacted]" next"#);
        let text = r#"body "-----BEGIN PRIVATE KEY-----\nMIIB\nAAAA..." and more"#;
        assert_eq!(redact(text), r#"body "[private key redacted]..." and more"#);
    }

    #[test]
    fn the_end_of_a_key_whose_start_was_cut_off_is_redacted() {
        let text = "line 40: did not find expected key: \"    AAAA+/==\n    -----END PRIVATE KEY-----\n  kind\"";
        assert_eq!(redact(text), "line 40: did not find expected key: \"[private key redacted]\n  kind\"");
        let text = r#"quoted "abc\nQUJD\n-----END EC PRIVATE KEY-----" rest"#;
        assert_eq!(redact(text), r#"quoted "[private key redacted]" rest"#);
        let text = "got (\nMIIBVQIBADAN  \nBgkqhkiG9w0B\t\n-----END PRIVATE KEY-----";
        assert_eq!(redact(text), "got ([private key redacted]", "key lines with trailing blanks go too");
        let text = "-----END CERTIFICATE----- stays";
        assert_eq!(redact(text), text);
    }

    #[test]
    fn redaction_keeps_certificates() {
        let text = "a -----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE----- b -----BEGIN EC PRIVATE KEY-----\nY\n-----END EC PRIVATE KEY----- c";
        assert_eq!(
            redact(text),
            "a -----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE----- b [private key redacted] c"
        );
    }

    /// A key and its certificate, registered as the PKI registers them.
    fn generated() -> (String, String) {
        generated_with(&rcgen::PKCS_ECDSA_P256_SHA256)
    }

    fn generated_with(algorithm: &'static rcgen::SignatureAlgorithm) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(algorithm).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.test".into()]).unwrap().self_signed(&key).unwrap();
        let (key, cert) = (key.serialize_pem(), cert.pem());
        register_private_key(&key, &cert);
        (key, cert)
    }

    #[test]
    fn registered_keys_are_found_in_every_base64_form() {
        registered_key_found_in_every_base64_form(generated());
        // RSA keys' DER lengths vary and are seldom a multiple of 3: then their base64 ends in
        // padding, which carries no byte of the key.
        let padded = (0..20)
            .map(|_| generated_with(&rcgen::PKCS_RSA_SHA256))
            .find(|(key, _)| key.lines().any(|line| line.ends_with('=')))
            .expect("an RSA key whose base64 ends in padding");
        registered_key_found_in_every_base64_form(padded);
    }

    fn registered_key_found_in_every_base64_form((key, cert): (String, String)) {
        use base64::engine::general_purpose::URL_SAFE;
        let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = STANDARD.decode(body).unwrap();
        let single = STANDARD.encode(&key);
        let wrapped: Vec<String> =
            single.as_bytes().chunks(76).map(|c| String::from_utf8(c.to_vec()).unwrap()).collect();
        let mut embedded = b"prefix bytes: ".to_vec();
        embedded.extend_from_slice(key.as_bytes());
        let forms = [
            single.clone(),
            wrapped.join("\n"),
            wrapped.join("\r\n"),
            wrapped.join("\\n"),
            STANDARD.encode(&der),
            URL_SAFE.encode(&der),
            STANDARD.encode(&embedded),
            STANDARD.encode([b"x".as_slice(), &embedded].concat()),
            // The PEM body with its header taken off: the DER's base64, line-wrapped.
            key.lines().filter(|l| !l.starts_with("-----")).collect::<Vec<_>>().join("\n"),
        ];
        for form in forms {
            let text = format!("{{\"annotation\": \"{form}\", \"next\": 1}}");
            let redacted = redact(&text);
            assert_eq!(redacted, format!("{{\"annotation\": \"{MARKER}\", \"next\": 1}}"), "{form}");
        }
        // Certificates share bytes with keys (the public key, the algorithm identifiers, at any
        // alignment): none of many, in any form, is taken for one.
        let mut certificates = vec![cert];
        certificates.extend((0..24).map(|_| generated().1));
        for cert in &certificates {
            let body: String = cert.lines().filter(|l| !l.starts_with("-----")).collect();
            let mut texts = vec![cert.clone(), body];
            for prefix in ["", "a", "ab"] {
                texts.push(STANDARD.encode(format!("{prefix}{cert}")));
            }
            for text in texts {
                assert_eq!(redact(&text), text, "certificates stay");
            }
        }
        let plain = "ordinary words, a sha1 0123456789abcdef0123456789abcdef01234567 and a path /a/b/c";
        assert_eq!(redact(plain), plain);
    }
}
