//! Loopback reads PEM as Go's encoding/pem does, because the real Contour decides with it
//! whether a CA bundle, a certificate or a key is valid (docs/design.md, "Parsing as Contour
//! and Envoy parse"). Thousands of generated texts, PEM blocks bent the ways Secret values get
//! bent (CRLF, indentation, stray spaces and tabs, header lines, wrong END lines, missing
//! padding, text around and after), go through `x509::go_pem_decode` and through Go's
//! `pem.Decode` (tests/go-pem, built with the Go on this machine); every block found, its
//! bytes, whether it had header lines and what is left after it must be the same.
//!
//! Needs Go; without it the test passes with a note, unless `UPSTREAM_TLS_REQUIRE_CONTOUR=1`
//! (as CI sets, since Contour is built with that Go).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

#[derive(Debug, Deserialize, PartialEq, Eq)]
struct Found {
    r#type: String,
    bytes: String,
    headers: bool,
    left: usize,
}

/// SplitMix64: the same texts on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One PEM block, bent or not.
fn block(rng: &mut Rng) -> String {
    let labels = ["CERTIFICATE", "PRIVATE KEY", "X509 CRL", "TRUST NOTE"];
    let label = labels[rng.below(labels.len())];
    let bytes: Vec<u8> = (0..rng.below(48)).map(|_| rng.next() as u8).collect();
    let mut body = base64(&bytes);
    if rng.chance(10) {
        body = body.trim_end_matches('=').to_string();
    }
    if rng.chance(5) && !body.is_empty() {
        body.replace_range(0..1, "!");
    }
    let width = [64, 76, 16, 1000][rng.below(4)];
    let mut lines: Vec<String> =
        body.as_bytes().chunks(width).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
    if rng.chance(10) {
        lines.insert(0, "Proc-Type: 4,ENCRYPTED".to_string());
        if rng.chance(50) {
            lines.insert(1, String::new());
        }
    }
    if rng.chance(10) && !lines.is_empty() {
        let at = rng.below(lines.len());
        let position = rng.below(lines[at].len() + 1);
        lines[at].insert(position, [' ', '\t'][rng.below(2)]);
    }
    let end_label = if rng.chance(8) { labels[rng.below(labels.len())] } else { label };
    let mut end = format!("-----END {end_label}-----");
    if rng.chance(10) {
        end.push_str([" ", "\t", "  x", "-"][rng.below(4)]);
    }
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in lines {
        text.push_str(&line);
        text.push('\n');
    }
    text.push_str(&end);
    text
}

/// A Secret value: blocks and text, then bent as a whole.
fn text(rng: &mut Rng) -> String {
    let junk = ["Trusted CAs:", "", "# comment", "-----", "-----BEGIN", "text -----BEGIN X-----", "  "];
    let mut parts = Vec::new();
    for _ in 0..1 + rng.below(3) {
        if rng.chance(30) {
            parts.push(junk[rng.below(junk.len())].to_string());
        }
        parts.push(block(rng));
    }
    if rng.chance(30) {
        parts.push(junk[rng.below(junk.len())].to_string());
    }
    let mut text = parts.join("\n");
    if rng.chance(70) {
        text.push('\n');
    }
    if rng.chance(15) {
        text = text.replace('\n', "\r\n");
    }
    if rng.chance(10) {
        let indent = ["  ", "\t"][rng.below(2)];
        text = text.lines().map(|l| format!("{indent}{l}")).collect::<Vec<_>>().join("\n");
    }
    if rng.chance(10) {
        let at = rng.below(text.len() + 1);
        if text.is_char_boundary(at) {
            text.insert(at, ['\n', '\r', ' '][rng.below(3)]);
        }
    }
    text
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What loopback finds, in the oracle's terms.
fn loopback_reads(text: &str) -> Vec<Found> {
    let mut rest = text.as_bytes();
    let mut found = Vec::new();
    while let Some((block, after)) = loopback::x509::go_pem_decode(rest) {
        found.push(Found {
            r#type: block.label,
            bytes: hex(&block.der),
            headers: block.has_headers,
            left: after.len(),
        });
        rest = after;
    }
    found
}

/// Builds the oracle with the Go on PATH, or says why not.
fn oracle(dir: &Path) -> Result<PathBuf, String> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go-pem");
    let binary = dir.join("go-pem");
    let output = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&binary)
        .arg(".")
        .current_dir(&source)
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .output()
        .map_err(|e| format!("cannot run go: {e}"))?;
    if !output.status.success() {
        return Err(format!("go build failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    Ok(binary)
}

#[test]
fn pem_is_read_as_go_reads_it() {
    let dir = std::env::temp_dir().join(format!("utls-go-pem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let binary = match oracle(&dir) {
        Ok(binary) => binary,
        Err(why) if std::env::var("UPSTREAM_TLS_REQUIRE_CONTOUR").as_deref() != Ok("1") => {
            eprintln!("note: PEM not checked against Go ({why})");
            return;
        }
        Err(why) => panic!("{why}, and UPSTREAM_TLS_REQUIRE_CONTOUR=1"),
    };
    let mut rng = Rng(2026);
    let texts: Vec<String> = (0..3000).map(|_| text(&mut rng)).collect();
    let mut child = Command::new(&binary).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    serde_json::to_writer(child.stdin.take().unwrap(), &texts).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the oracle failed");
    let go: Vec<Vec<Found>> = serde_json::from_slice(&output.stdout).unwrap();
    let _ = std::fs::remove_dir_all(&dir);

    let mut differing = Vec::new();
    let mut blocks = 0;
    for (text, go) in texts.iter().zip(&go) {
        blocks += go.len();
        let ours = loopback_reads(text);
        if &ours != go {
            differing.push(format!("{text:?}\n  Go:       {go:?}\n  loopback: {ours:?}"));
        }
    }
    assert!(
        differing.is_empty(),
        "{} of {} texts read differently:\n{}",
        differing.len(),
        texts.len(),
        differing[..differing.len().min(5)].join("\n")
    );
    // The texts are bent, but not so much that Go finds nothing: the comparison has blocks
    // to compare, and texts where it finds none.
    assert!(blocks > texts.len(), "only {blocks} blocks in {} texts", texts.len());
    assert!(go.iter().filter(|found| found.is_empty()).count() > 100);
}
