//! How an environment places scenarios: on loopback, a scenario that changes install-wide
//! state runs on a cluster of its own, so it can run alongside the others without touching
//! the installation they share; on a real cluster it has to run alone.

use harness::install::SecretRef;
use harness::scenario::load_file;
use harness::suite::default_scenario_dir;
use harness::target::{Environment, TargetConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_that_rotates_the_client_certificate_leaves_the_shared_installation_alone() {
    harness::init_crypto();
    let rotated = load_file(&default_scenario_dir().join("client-certificate/rotated.yaml")).expect("it loads");
    assert!(rotated.scenario.exclusive(), "the scenario writes the installation's client certificate");
    let config = TargetConfig::Loopback(Default::default());
    let environment = Environment::connect(&config, Default::default()).await.expect("loopback starts");
    assert!(!environment.needs_alone(&rotated), "loopback gives it a cluster of its own instead");

    let secret = SecretRef::default_client_certificate().object_ref();
    let shared = &environment.targets[0].cluster;
    let version = || async { shared.get(&secret).await.unwrap().unwrap()["metadata"]["resourceVersion"].clone() };
    let before = version().await;
    let outcome = environment.run(&rotated, &()).await;
    let after = version().await;
    environment.shutdown().await;

    assert!(outcome.passed(), "{:?}", outcome.failure.map(|f| f.to_string()));
    assert_eq!(before, after, "the shared installation's client certificate Secret was written");
}

/// A known failure is classified where the environment runs a scenario: one that fails as
/// listed is a known failure, one listed that passes fails as stale. The implementation here
/// is loopback's reference controller reached as a real cluster, with the fault that merges
/// clusters (the defect the scenario's entry describes for Contour) or without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_failures_are_told_apart_from_passes_and_from_stale_entries() {
    use harness::known::KnownFailure;
    use harness::runner::RunSettings;
    harness::init_crypto();
    let scenario =
        load_file(&default_scenario_dir().join("validation/subject-names-kept-apart.yaml")).expect("it loads");
    let known = vec![KnownFailure {
        scenario: scenario.name().to_string(),
        reason: "the cluster name hashes the first subject name only".into(),
        source: None,
        finding: None,
    }];
    let settings = RunSettings { traffic_limit: std::time::Duration::from_secs(3), ..Default::default() };
    for fault in [Some(loopback::Fault::ClustersShareValidation), None] {
        let config = loopback::LoopbackConfig { faults: fault.into_iter().collect(), ..Default::default() };
        let loopback = loopback::Loopback::start(config).await.expect("loopback starts");
        let as_real = TargetConfig::Cluster {
            kubeconfig: Some(loopback.kubeconfig().to_path_buf()),
            context: None,
            proxy: loopback.proxy_address().to_string(),
            tls_proxy: None,
            installation: Default::default(),
            known_failures: known.clone(),
        };
        let environment = Environment::connect(&as_real, settings.clone()).await.expect("it connects");
        let outcome = environment.run(&scenario, &()).await;
        environment.shutdown().await;
        loopback.shutdown().await;
        match fault {
            Some(_) => {
                assert!(outcome.passed() && outcome.known_failure.is_some(), "failing as listed is known");
                assert!(outcome.failure.is_some(), "its evidence is kept");
            }
            None => {
                assert!(!outcome.passed() && outcome.known_failure.is_none(), "a listed pass fails the run");
                let message = outcome.failure.map(|f| f.message).unwrap_or_default();
                assert!(message.contains("but it passed"), "{message}");
            }
        }
    }
}
