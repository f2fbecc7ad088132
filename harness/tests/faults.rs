//! The catalog can catch real bugs: scenarios run against loopback with a fault switched on
//! must fail, at the step and for the reason the fault explains.
//!
//! The traffic limit is shortened here: with a fault on, the expectation can never hold, so a
//! shorter wait only makes the (certain) failure arrive sooner.

use std::time::Duration;

use harness::runner::{RunSettings, ScenarioOutcome};
use harness::scenario::load_file;
use harness::suite::default_scenario_dir;
use harness::target::{Environment, LoopbackOptions, TargetConfig};
use loopback::Fault;

async fn run_with_fault(fault: Fault, scenario: &str) -> ScenarioOutcome {
    harness::init_crypto();
    let loaded = load_file(&default_scenario_dir().join(scenario)).expect("catalog scenarios load");
    let settings = RunSettings { traffic_limit: Duration::from_secs(5), ..Default::default() };
    let environment =
        Environment::connect(&TargetConfig::Loopback(LoopbackOptions::with_faults(vec![fault])), settings)
            .await
            .expect("loopback starts (is nginx installed?)");
    let outcome = environment.run(&loaded, &()).await;
    environment.shutdown().await;
    assert!(outcome.cleanup_error.is_none(), "{:?}", outcome.cleanup_error);
    outcome
}

fn failure_text(outcome: &ScenarioOutcome) -> String {
    let failure = outcome.failure.as_ref().unwrap_or_else(|| panic!("{} passed despite the fault", outcome.name));
    failure.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_is_caught_when_the_proxy_skips_ca_verification() {
    let outcome = run_with_fault(Fault::SkipCaVerification, "validation/wrong-ca.yaml").await;
    let text = failure_text(&outcome);
    let failure = outcome.failure.as_ref().unwrap();
    assert_eq!((failure.step, failure.kind), (Some(3), "request"), "{text}");
    assert!(text.contains("expected status 502 or 503, got 200"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_ca_is_caught_when_the_backend_is_not_reached_over_tls() {
    let outcome = run_with_fault(Fault::IgnoreUpstreamProtocolAnnotation, "validation/right-ca.yaml").await;
    let text = failure_text(&outcome);
    let failure = outcome.failure.as_ref().unwrap();
    assert_eq!((failure.step, failure.kind), (Some(3), "request"), "{text}");
    // Plaintext HTTP to nginx's TLS port: nginx itself says what happened.
    assert!(text.contains("got 400"), "{text}");
    assert!(text.contains("plain HTTP request was sent to HTTPS port"), "{text}");
}
