//! `run --repeat N` as a user runs it: the suite runs N times, the flake table is printed, and
//! report.json carries each scenario's tally. With a loopback fault the scenario that catches
//! it fails every time; without one nothing fails.

use std::path::Path;
use std::process::Command;

fn run(args: &[&str], reports: &Path) -> (i32, String) {
    let config = reports.with_extension("config.yaml");
    // A failing expectation then costs 3 s, not 30.
    std::fs::write(&config, "timeouts:\n  trafficSeconds: 3\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_upstream-tls-conformance"))
        .args(["run", "--repeat", "3", "--filter", "validation-wrong-ca", "--config"])
        .arg(&config)
        .arg("--reports")
        .arg(reports)
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("the CLI starts");
    std::fs::remove_file(&config).unwrap();
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn repeated_runs_report_each_scenario_s_failures() {
    let reports = std::env::temp_dir().join(format!("utls-repeat-{}", std::process::id()));

    let (code, stdout) = run(&["--loopback-fault", "skip-ca-verification"], &reports);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("run 3 of 3"), "{stdout}");
    assert!(stdout.contains("3 runs of 1 scenarios: 0 flaky, 1 failed every time they ran"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reports.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["repetitions"]["runs"], 3);
    assert_eq!(json["repetitions"]["tallies"][0]["failed"], 3);
    assert_eq!(json["scenarios"][0]["verdict"], "failed");
    let summary = std::fs::read_to_string(reports.join("summary.md")).unwrap();
    assert!(
        summary.contains("The suite ran **3 times**") && summary.contains("| validation-wrong-ca | 0 | 3 | 100% |")
    );

    let (code, stdout) = run(&[], &reports);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("3 runs of 1 scenarios: 0 flaky, 0 failed every time they ran"), "{stdout}");
    std::fs::remove_dir_all(&reports).unwrap();
}
