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
