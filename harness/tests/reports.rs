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
    // The failure explains itself: what the backend saw, and the guarantee broken.
    let message = wrong_ca["failure"]["message"].as_str().unwrap();
    assert!(message.contains("expected status 502 or 503, got 200 from backend `echo`: TLSv1."), "{message}");
    let broken: Vec<&str> =
        wrong_ca["failure"]["breaks"].as_array().unwrap().iter().filter_map(|b| b["clause"].as_str()).collect();
    assert_eq!(broken, ["V3", "V6"]);
    assert!(junit.contains("broken guarantee, one of these:"), "{junit}");
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

/// A scenario that puts a generated key in every place a scenario can: a ConfigMap's
/// binaryData and an annotation (check refuses keys anywhere but in objects), and fails, so
/// that the objects it applied go into the reports' diagnostics.
const KEYS_EVERYWHERE: &str = r#"
name: keys-everywhere
description: Private keys placed wherever a scenario can put them.
contract: [S1]
features: [upstream-tls]
pki:
  - name: backend-ca
    ca: true
  - name: backend
    issuer: backend-ca
    dnsNames: [echo.backend.test]
backends:
  - name: echo
    certificate: backend
steps:
  - apply: |
      apiVersion: v1
      kind: ConfigMap
      metadata:
        name: keys
      binaryData:
        tls.key: ${pki.backend.keyBase64}
      ---
      apiVersion: v1
      kind: Service
      metadata:
        name: echo
        annotations:
          projectcontour.io/upstream-protocol.tls: "8443"
          example.test/key: ${pki.backend-ca.keyBase64}
      spec:
        selector:
          app.kubernetes.io/name: echo
        ports:
          - port: 8443
            targetPort: https
            name: https
      ---
      apiVersion: projectcontour.io/v1
      kind: HTTPProxy
      metadata:
        name: proxy
      spec:
        virtualhost:
          fqdn: ${host}
        routes:
          - services:
              - name: echo
                port: 8443
  - request:
      expect:
        status: 599
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_keys_are_redacted_by_value_everywhere() {
    use base64::Engine;
    harness::init_crypto();
    let dir = std::env::temp_dir().join(format!("utls-keys-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("scenarios/keys")).unwrap();
    std::fs::write(dir.join("scenarios/keys/everywhere.yaml"), KEYS_EVERYWHERE).unwrap();
    let scenarios = load_dir(&dir.join("scenarios")).expect("the scenario loads");
    let mut plan = ImplementationConfig::default().resolve(Overrides::default()).unwrap();
    plan.settings = RunSettings { traffic_limit: Duration::from_secs(3), ..plan.settings };

    let started = (Instant::now(), time::OffsetDateTime::now_utc());
    let environment = Environment::connect(&plan.target, plan.settings.clone()).await.expect("loopback starts");
    let outcomes = run_all(&environment, &scenarios, 1, &()).await;
    let info = RunInfo::new(&plan, environment.run_id(), started);
    environment.shutdown().await;

    // The keys, in the forms a reader could recognise them by: the base64 of the PEM, and
    // the PEM's own base64 lines.
    assert!(outcomes[0].failure.is_some(), "the scenario fails, so its objects are reported");
    let raw_objects = serde_json::to_string(&outcomes[0].diagnostics).unwrap();
    assert!(raw_objects.contains("binaryData"), "the ConfigMap is among the diagnostics");
    let encoded = raw_objects
        .split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=')))
        .find(|word| word.starts_with("LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0t"))
        .expect("the objects carry the key before redaction")
        .to_string();
    let pem = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(&encoded).unwrap()).unwrap();
    let mut needles: Vec<String> =
        encoded.as_bytes().chunks(40).map(|c| String::from_utf8(c.to_vec()).unwrap()).collect();
    needles.extend(pem.lines().filter(|l| !l.starts_with("-----") && l.len() > 20).map(str::to_string));

    let report = RunReport::new(info, &scenarios.iter().collect::<Vec<_>>(), &outcomes);
    let files = write_all(&report, &dir.join("reports")).expect("reports are written");
    let mut outputs: Vec<(String, String)> =
        files.iter().map(|f| (f.display().to_string(), std::fs::read_to_string(f).unwrap())).collect();
    outputs.push(("the terminal line".into(), harness::suite::line(&outcomes[0])));
    for (name, text) in &outputs {
        for needle in &needles {
            assert!(!text.contains(needle.as_str()), "{name} carries key material {needle:?}");
        }
    }
    let marked = outputs.iter().filter(|(_, text)| text.contains(harness::redaction::MARKER)).count();
    assert!(marked > 0, "the reports say where a key was");
    std::fs::remove_dir_all(&dir).unwrap();
}
