//! The bad-input corpus (`harness/tests/bad-input/`): broken scenario files and implementation
//! configs, each in a directory with `expected.txt`, the exact exit code and output the CLI
//! must give. Every case must be refused as invalid input (exit 2) before anything runs.
//!
//! - `scenarios/<case>/`: `upstream-tls-conformance check --scenarios <case>`.
//! - `configs/<case>/config.yaml`: `upstream-tls-conformance run --config <it>` with a filter
//!   that selects nothing, so that a config that wrongly passes cannot start a run.
//!
//! After a deliberate change of wording, `UPDATE_GOLDEN=1 cargo test --test bad_input`
//! rewrites the expected files; review the diff.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

fn cases(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new("harness/tests/bad-input").join(kind);
    let mut cases: Vec<PathBuf> =
        std::fs::read_dir(repository().join(&dir)).unwrap().map(|e| dir.join(e.unwrap().file_name())).collect();
    cases.sort();
    cases
}

/// Runs the CLI from the repository root with no `UPSTREAM_TLS_*` variables, and renders
/// what it did as `expected.txt` holds it.
fn outcome(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_upstream-tls-conformance"))
        .args(args)
        .current_dir(repository())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .output()
        .expect("the CLI starts");
    let code = output.status.code().unwrap_or(-1);
    let mut text = format!("exit: {code}\n");
    for (name, bytes) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        if !bytes.is_empty() {
            text.push_str(&format!("--- {name}\n{}", String::from_utf8_lossy(bytes)));
        }
    }
    (code, text)
}

#[test]
fn every_bad_input_gets_its_exact_diagnostic_and_nothing_runs() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut runs: Vec<(PathBuf, (i32, String))> = Vec::new();
    for case in cases("scenarios") {
        runs.push((case.clone(), outcome(&["check", "--scenarios", case.to_str().unwrap()])));
    }
    for case in cases("configs") {
        let config = case.join("config.yaml");
        let args = ["run", "--config", config.to_str().unwrap(), "--filter", "a-name-no-scenario-has"];
        runs.push((case.clone(), outcome(&args)));
    }
    assert!(runs.len() >= 250, "the corpus has {} cases", runs.len());
    let mut problems = Vec::new();
    for (case, (code, text)) in &runs {
        let expected_file = repository().join(case).join("expected.txt");
        if code != &2 {
            problems.push(format!("{}: exit {code}, not 2 (invalid input)\n{text}", case.display()));
        }
        if text.contains("panicked") || text.contains("RUST_BACKTRACE") {
            problems.push(format!("{}: the CLI panicked\n{text}", case.display()));
        }
        if update {
            std::fs::write(&expected_file, text).unwrap();
            continue;
        }
        match std::fs::read_to_string(&expected_file) {
            Ok(expected) if &expected == text => {}
            Ok(expected) => {
                problems.push(format!("{}: output differs\n--- expected\n{expected}--- actual\n{text}", case.display()))
            }
            Err(e) => problems.push(format!("{}: {e} (UPDATE_GOLDEN=1 writes it)", expected_file.display())),
        }
    }
    assert!(problems.is_empty(), "{} of {} cases:\n\n{}", problems.len(), runs.len(), problems.join("\n\n"));
}

#[test]
fn provisioning_is_refused_beside_a_cluster_and_in_a_build_without_the_feature() {
    let (code, text) = outcome(&["run", "--provision", "k3s", "--proxy", "127.0.0.1:9080"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("--provision k3s makes its own cluster: give no --proxy"), "{text}");
    if !cfg!(feature = "k3s") {
        let (code, text) = outcome(&["run", "--provision", "k3s", "--filter", "a-name-no-scenario-has"]);
        assert_eq!(code, 2, "{text}");
        assert!(text.contains("built without the k3s feature") && text.contains("--features k3s"), "{text}");
    }
}

/// A kubeconfig that is no regular file, or no YAML a kubeconfig can be read from, is refused
/// as invalid input with its path, by `run` and `cleanup --cluster` alike, and never read
/// without end: a FIFO would wait for a writer forever, `/dev/zero` never ends, and a file of
/// nested aliases expands without limit.
#[test]
fn a_kubeconfig_that_cannot_be_one_is_refused_with_its_path() {
    let dir = std::env::temp_dir().join(format!("utls-bad-kubeconfig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let bomb = dir.join("alias-bomb");
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for level in 1..8 {
        let previous = format!("*a{}", level - 1);
        text.push_str(&format!("a{level}: &a{level} [{}]\n", vec![previous; 10].join(", ")));
    }
    std::fs::write(&bomb, text).unwrap();
    let cases = [
        (fifo.to_str().unwrap(), "it is not a regular file"),
        ("/dev/zero", "it is not a regular file"),
        (bomb.to_str().unwrap(), "it is not YAML a kubeconfig can be read from at line"),
    ];
    for (path, reason) in cases {
        let expected = format!("error: cannot read kubeconfig {path}: {reason}");
        let reports = dir.join("reports");
        let commands = [
            vec!["run", "--kubeconfig", path, "--proxy", "127.0.0.1:9", "--reports", reports.to_str().unwrap()],
            vec!["cleanup", "--cluster", "--kubeconfig", path],
        ];
        for args in commands {
            let mut child = Command::new(env!("CARGO_BIN_EXE_upstream-tls-conformance"))
                .args(&args)
                .current_dir(repository())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            // A generous limit: only a read that never ends comes near it.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while child.try_wait().unwrap().is_none() {
                if std::time::Instant::now() > deadline {
                    child.kill().unwrap();
                    panic!("{args:?} still reading after a minute");
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let output = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.lines().any(|l| l.starts_with(&expected)), "{args:?}: {stderr}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A binary run away from the repository it was built from finds the repository's caches,
/// scripts and examples through UPSTREAM_TLS_HOME, and says where it looked.
#[test]
fn upstream_tls_home_says_where_the_repository_is() {
    let reports = std::env::temp_dir().join(format!("utls-home-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_upstream-tls-conformance"))
        .args(["run", "--controller", "contour", "--filter", "ca-secret-empty-namespace-reference", "--reports"])
        .arg(&reports)
        .env("UPSTREAM_TLS_HOME", "/nonexistent-upstream-tls-home")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("/nonexistent-upstream-tls-home/.cache/contour/"), "{stderr}");
    let _ = std::fs::remove_dir_all(&reports);
}

/// An empty UPSTREAM_TLS_* variable means the same as one not set: it is not taken for a flag
/// given without its value.
#[test]
fn an_empty_setting_is_no_setting() {
    let output = Command::new(env!("CARGO_BIN_EXE_upstream-tls-conformance"))
        .args(["list", "--filter", "validation-wrong-ca"])
        .current_dir(repository())
        .env("UPSTREAM_TLS_SCENARIOS", "")
        .env("UPSTREAM_TLS_KUBECONFIG", "")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("validation-wrong-ca"), "{stderr}");
}

/// A baseline that cannot be read stops the run before anything happens; one that can, even
/// the reports directory's own report.json, makes the run say what changed since.
#[test]
fn a_baseline_is_read_before_anything_runs_and_the_run_says_what_changed() {
    let reports = std::env::temp_dir().join(format!("utls-baseline-{}", std::process::id()));
    let reports_arg = reports.to_str().unwrap();
    let quick = "ca-secret-empty-namespace-reference";
    let (code, text) =
        outcome(&["run", "--filter", quick, "--reports", reports_arg, "--baseline", "/nonexistent/report.json"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("error: cannot read the baseline /nonexistent/report.json: "), "{text}");
    assert!(text.contains("; nothing was run"), "{text}");
    assert!(!reports.exists(), "the reports directory was not touched");
    let (code, text) = outcome(&["run", "--filter", quick, "--baseline", "Cargo.toml"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("the baseline Cargo.toml is not a report.json of this harness: not JSON (line 1"), "{text}");

    let (code, text) = outcome(&["run", "--filter", quick, "--reports", reports_arg]);
    assert_eq!(code, 0, "{text}");
    let previous = reports.join("report.json");
    let (code, text) =
        outcome(&["run", "--filter", quick, "--reports", reports_arg, "--baseline", previous.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    let headline = format!("since the baseline ({}, run ", previous.display());
    assert!(text.contains(&headline), "{text}");
    assert!(text.contains("): no change\n"), "{text}");
    let summary = std::fs::read_to_string(reports.join("summary.md")).unwrap();
    assert!(summary.contains("## Since the last run"), "{summary}");
    std::fs::remove_dir_all(&reports).unwrap();
}
