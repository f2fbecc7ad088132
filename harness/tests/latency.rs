//! The harness at a real cluster's pace (loopback's `kind` latency profile): scenarios do not
//! wait for their namespaces to be deleted, the run waits once for all of them at its end, and
//! scenarios that change install-wide state run alone, as on a real cluster; each scenario's
//! wait for the controller's rebuild hold-off is measured.

use harness::scenario::{LoadedScenario, load_file};
use harness::suite::{default_parallelism, default_scenario_dir, run_all};
use harness::target::{Environment, LoopbackOptions, TargetConfig};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use loopback::LatencyProfile;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_are_deleted_off_the_critical_path_and_awaited_once() {
    harness::init_crypto();
    let scenarios: Vec<LoadedScenario> = ["validation/right-ca.yaml", "sni/none-by-default.yaml"]
        .iter()
        .map(|path| load_file(&default_scenario_dir().join(path)).expect("catalog scenarios load"))
        .collect();
    let rotated = load_file(&default_scenario_dir().join("client-certificate/rotated.yaml")).expect("it loads");
    let config = TargetConfig::Loopback(LoopbackOptions { latency: LatencyProfile::Kind, ..Default::default() });
    let environment = Environment::connect(&config, Default::default()).await.expect("loopback starts");
    assert!(environment.needs_alone(&rotated), "at a real cluster's pace, scheduling is a real cluster's");

    let outcomes = run_all(&environment, &scenarios, default_parallelism(&config, scenarios.len()), &()).await;
    for outcome in &outcomes {
        assert!(outcome.passed(), "{}: {:?}", outcome.name, outcome.failure.as_ref().map(ToString::to_string));
        assert_eq!(outcome.cleanup_error, None);
        // Measured over the scenario's run as its caller saw it: a little longer than its duration.
        let within = |d: std::time::Duration| d <= outcome.duration + std::time::Duration::from_millis(100);
        assert!(outcome.held_off.is_some_and(within), "{}: {:?}", outcome.name, outcome.held_off);
    }
    // A scenario writes its objects one after the other: all but the first come within
    // 500 ms of the rebuild the first one caused, so they wait out the 100 ms hold-off.
    assert!(
        outcomes.iter().any(|o| o.held_off >= Some(std::time::Duration::from_millis(100))),
        "the wait for the controller's hold-off is measured: {:?}",
        outcomes.iter().map(|o| o.held_off).collect::<Vec<_>>()
    );
    // A namespace takes 5 s to go at this pace: the scenarios are over, their namespaces not.
    let namespaces = Api::<Namespace>::all(environment.targets[0].cluster.client().clone());
    let selector = format!("upstream-tls-conformance/run={}", environment.run_id());
    let run_namespaces = || async { namespaces.list(&ListParams::default().labels(&selector)).await.unwrap().items };
    let terminating = run_namespaces().await;
    assert_eq!(terminating.len(), scenarios.len(), "the scenarios' namespaces are still being deleted");
    assert!(terminating.iter().all(|ns| ns.metadata.deletion_timestamp.is_some()), "and they are being deleted");

    let waited = environment.await_namespace_deletion(std::time::Duration::from_secs(120)).await.unwrap();
    assert_eq!(waited.len(), scenarios.len());
    assert!(run_namespaces().await.is_empty(), "the run waited for them once, at its end");
    environment.shutdown().await;
}
