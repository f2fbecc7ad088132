//! A real run against loopback with one fault switched on produces every report, each saying
//! what happened, and none carries key material: not as PEM, and not base64-encoded as in
//! the Secrets the diagnostics read back from the cluster.
//!
//! The traffic limit is shortened: with the fault on, the failing expectation can never hold.

use std::path::Path;
use std::time::{Duration, Instant};

use harness::config::{ImplementationConfig, Overrides};
use harness::report::{RunInfo, RunReport, write_all};
use harness::runner::RunSettings;
use harness::scenario::{LoadedScenario, load_dir};
use harness::suite::{default_scenario_dir, run_all};
use harness::target::Environment;
use serde_json::Value;

/// `-----BEGIN` in base64, as every PEM block starts inside a Secret's data.
const BASE64_PEM: &str = "LS0tLS1CRUdJTi";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulted_run_writes_every_report_without_key_material() {
    harness::init_crypto();
    let catalog = load_dir(&default_scenario_dir()).expect("the catalog loads");
    let overrides = Overrides {
        faults: vec![loopback::Fault::SkipCaVerification],
        run: vec!["validation-wrong-ca".into(), "validation-right-ca".into()],
        ..Default::default()
    };
    let mut plan = ImplementationConfig::default().resolve(overrides).unwrap();
    plan.settings = RunSettings { traffic_limit: Duration::from_secs(5), ..plan.settings };
    let (selected, others): (Vec<LoadedScenario>, Vec<LoadedScenario>) =
        catalog.into_iter().partition(|s| plan.selection.includes(s));
    assert_eq!(selected.len(), 2);

    let started = (Instant::now(), time::OffsetDateTime::now_utc());
    let environment = Environment::connect(&plan.target, plan.settings.clone()).await.expect("loopback starts");
    let outcomes = run_all(&environment, &selected, 2, &()).await;
    let info = RunInfo::new(&plan, environment.run_id(), started);
    environment.shutdown().await;
    let all: Vec<&LoadedScenario> = selected.iter().chain(&others).collect();
    let report = RunReport::new(info, &all, &outcomes);

    let dir = std::env::temp_dir().join(format!("utls-reports-{}", std::process::id()));
    let files = write_all(&report, &dir).expect("reports are written");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));

    let junit = read("junit.xml");
    assert!(junit.contains("tests=\"2\"") && junit.contains("failures=\"1\""), "{junit}");
    assert!(junit.contains("expected status 502 or 503, got 200"), "{junit}");

    let json: Value = serde_json::from_str(&read("report.json")).unwrap();
    let wrong_ca = json["scenarios"].as_array().unwrap().iter().find(|s| s["name"] == "validation-wrong-ca").unwrap();
    assert_eq!(wrong_ca["verdict"], "failed");
    assert_eq!(wrong_ca["failure"]["answers"][0]["echo"]["scheme"], "https", "the evidence shows TLS was used");
    let kinds: Vec<&str> =
        wrong_ca["diagnostics"]["objects"].as_array().unwrap().iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in ["Secret", "Service", "HTTPProxy", "Deployment"] {
        assert!(kinds.contains(&kind), "{kind} missing from the diagnostics: {kinds:?}");
    }
    let proxy = wrong_ca["diagnostics"]["objects"].as_array().unwrap().iter().find(|o| o["kind"] == "HTTPProxy");
    assert_eq!(proxy.unwrap()["status"]["currentStatus"], "valid", "the final status is captured");
    assert!(!wrong_ca["diagnostics"]["logs"].as_array().unwrap().is_empty(), "backend logs are captured");
    assert_eq!(json["notSelected"].as_array().unwrap().len(), others.len());

    let summary = read("summary.md");
    assert!(summary.contains("**1** passed, **1** failed"), "{summary}");
    let html = read("report.html");
    assert!(html.contains("data-name=\"validation-wrong-ca\"") && html.contains("diagnostics/validation-wrong-ca.md"));
    let certification = read("certification.yaml");
    assert!(certification.contains("result: failure") && certification.contains("- validation-wrong-ca"));
    assert!(certification.contains("reason: not selected for this run"), "{certification}");
    let page = read("diagnostics/validation-wrong-ca.md");
    assert!(page.contains("### HTTPProxy proxy") && page.contains("## Backend logs"), "{page}");
    assert!(page.contains("<redacted, "), "Secret values are replaced: {page}");
    assert!(!Path::new(&dir.join("diagnostics/validation-right-ca.md")).exists(), "passed scenarios have no page");

    assert_eq!(files.len(), 6);
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for needle in ["PRIVATE KEY", BASE64_PEM] {
            assert!(!text.contains(needle), "{} carries {needle:?}", file.display());
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
