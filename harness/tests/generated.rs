//! The differential runs' generated cases find a model bug that nobody wrote a scenario for:
//! loopback's reference controller with a fault planted, held against the reference without
//! it, disagrees on some generated case; the disagreement shrinks to the one dimension that
//! causes it, and the scenario file written for it passes on the arbiter and fails under the
//! fault, as a catalog scenario must.

use harness::differential::{Plan, Stack, run};
use harness::runner::RunSettings;
use harness::scenario::load::load_file;
use harness::suite;
use harness::target::{Environment, LoopbackOptions, TargetConfig};
use loopback::Fault;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_fault_is_found_shrunk_to_its_cause_and_written_as_a_scenario() {
    harness::init_crypto();
    let findings = std::env::temp_dir().join(format!("utls-generated-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&findings);
    let planted =
        Stack { name: "planted".into(), options: LoopbackOptions::with_faults(vec![Fault::SkipCaVerification]) };
    let plan = Plan {
        seed: 1,
        cases: 40,
        batch: 40,
        parallel: 40,
        stacks: vec![planted, Stack::reference()],
        shrink_budget: 1,
        findings_dir: Some(findings.clone()),
    };
    let summary = run(&plan, &|_| {}).await.expect("the stacks start");
    assert_eq!(summary.cases, 40);
    assert!(summary.agreed > 0, "most cases do not depend on the fault: {summary:?}");
    // The cases observed something of each kind.
    for kind in ["served over TLS", "upstream failed", "not routed"] {
        assert!(summary.arbiter_outcomes.get(kind).is_some_and(|n| *n > 0), "no case {kind}: {summary:?}");
    }
    assert_eq!(summary.arbiter_outcomes.get("not observed"), None, "{summary:?}");
    let finding = summary.findings.first().unwrap_or_else(|| panic!("the planted fault went unnoticed: {summary:?}"));

    // Shrunk to its cause: one dimension away from the plainest case, every choice at most
    // the generated case's.
    let departures = finding.shrunk.choices.iter().filter(|c| **c != 0).count();
    assert_eq!(departures, 1, "shrunk to {}", finding.shrunk.describe());
    assert!(finding.shrunk.choices.iter().zip(&finding.original.choices).all(|(shrunk, original)| shrunk <= original));
    assert!(finding.differences.iter().any(|d| d.starts_with("traffic observe /")), "{:?}", finding.differences);

    // The file asserts what the arbiter did: it passes there and fails under the fault.
    let file = finding.file.as_ref().expect("the finding is written");
    let loaded = load_file(file).unwrap_or_else(|e| panic!("{} does not load: {e:?}", file.display()));
    for (options, should_pass) in [(LoopbackOptions::default(), true), (plan.stacks[0].options.clone(), false)] {
        let environment = Environment::connect(&TargetConfig::Loopback(options), RunSettings::default())
            .await
            .expect("loopback starts");
        let outcomes = suite::run_all(&environment, std::slice::from_ref(&loaded), 1, &()).await;
        environment.shutdown().await;
        assert_eq!(outcomes[0].passed(), should_pass, "{}", suite::line(&outcomes[0]));
    }
    let _ = std::fs::remove_dir_all(&findings);
}
