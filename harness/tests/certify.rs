//! `certify verify` on the certification report of a real run on loopback: accepted as it is
//! written, refused when edited the ways a submission could cheat or go wrong.

use std::path::{Path, PathBuf};
use std::process::Command;

fn cli() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_upstream-tls-conformance"));
    command.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    command
}

fn verify(report: &Path) -> (i32, String) {
    let output = cli().args(["certify", "verify"]).arg(report).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

/// `report` with `from` replaced by `to`, written beside it as `name`.
fn edited(report: &Path, name: &str, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(report).unwrap();
    assert!(text.contains(from), "{from:?} is not in the report:\n{text}");
    let path = report.with_file_name(name);
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    path
}

#[test]
fn a_loopback_run_s_report_verifies_and_edited_ones_do_not() {
    let dir = std::env::temp_dir().join(format!("utls-certify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let reports = dir.join("reports");
    let output = cli().args(["run", "--filter", "validation-wrong-ca", "--reports"]).arg(&reports).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let report = reports.join("certification.yaml");

    let (code, text) = verify(&report);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("a valid certification report"), "{text}");
    // On loopback, the implementation is loopback itself, at the harness's version.
    let version = env!("CARGO_PKG_VERSION");
    assert!(text.contains(&format!("upstream-tls-conformance/loopback {version} (mode default)")), "{text}");
    assert!(text.contains("core: partial"), "one scenario ran, the rest were not selected: {text}");

    let catalog = {
        let text = std::fs::read_to_string(&report).unwrap();
        let sha = text.split("sha256: ").nth(1).unwrap().split_whitespace().next().unwrap().trim_matches(['"', '}']);
        sha.to_string()
    };
    let not_carried = format!("is not the one harness {version} carries");
    let harness_version = format!("harnessVersion: \"{version}\"");
    let cases = [
        (
            edited(&report, "core-exempt.yaml", "unsupportedFeatures: []", "unsupportedFeatures: [upstream-http2]"),
            "the core profile leaves out upstream-http2: core features cannot be exempted",
        ),
        (edited(&report, "catalog.yaml", &catalog, &"0".repeat(64)), not_carried.as_str()),
        (edited(&report, "harness.yaml", &harness_version, "harnessVersion: \"9.9.9\""), "not a released version"),
        (edited(&report, "result.yaml", "result: partial", "result: success"), "does not follow from its statistics"),
        (edited(&report, "reason.yaml", "reason: not selected for this run", "reason: \"\""), "has no reason"),
        (edited(&report, "unknown.yaml", "mode: default", "mode: default\nsigned: true"), "unknown field `signed`"),
        (
            edited(&report, "stranger.yaml", "- name: ca-secret-", "- name: no-such-scenario-"),
            "is not a scenario of this profile in the catalog",
        ),
    ];
    for (path, expected) in cases {
        let (code, text) = verify(&path);
        assert_eq!(code, 1, "{}: {text}", path.display());
        assert!(text.contains(expected), "{}: {text}", path.display());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
