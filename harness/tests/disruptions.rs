//! The harness copes with a cluster that makes trouble: the whole catalog passes under each
//! loopback disruption a client should ride out (API errors, slow answers, cut connections,
//! crashing backends, a restarting proxy), fails precisely and in bounded time under one it
//! must report (an API server gone for good), and leaves nothing behind either way.
//!
//! Each disruption is checked to have been injected, so a run that passes did meet it.

use std::time::Duration;

use harness::runner::{RunSettings, ScenarioOutcome};
use harness::scenario::{LoadedScenario, load_dir, load_file};
use harness::suite::{default_parallelism, default_scenario_dir, run_all};
use harness::target::{Environment, LoopbackOptions, TargetConfig};
use loopback::Disruption;

mod support;

use support::leftovers;

/// The tests here look for what loopback clusters of this process left behind, so they run
/// one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Far longer than a run takes; only there so a harness that hangs fails instead.
const RUN_LIMIT: Duration = Duration::from_secs(600);

fn config(disruption: Disruption) -> TargetConfig {
    TargetConfig::Loopback(LoopbackOptions { disruptions: vec![disruption], ..Default::default() })
}

/// Runs `scenarios` under `disruption`; returns the outcomes and how often it was injected.
async fn run_under(
    disruption: Disruption,
    scenarios: &[LoadedScenario],
    settings: RunSettings,
) -> (Vec<ScenarioOutcome>, u64) {
    harness::init_crypto();
    let config = config(disruption);
    let environment = Environment::connect(&config, settings).await.expect("loopback starts (is nginx installed?)");
    let parallelism = default_parallelism(&config, scenarios.len());
    let outcomes = tokio::time::timeout(RUN_LIMIT, run_all(&environment, scenarios, parallelism, &()))
        .await
        .unwrap_or_else(|_| panic!("the run under {disruption} did not end within {RUN_LIMIT:?}"));
    let injected = environment.disruption_counts().iter().map(|(_, n)| n).sum();
    environment.shutdown().await;
    (outcomes, injected)
}

fn failures(outcomes: &[ScenarioOutcome]) -> Vec<String> {
    outcomes
        .iter()
        .filter(|o| !o.passed())
        .map(|o| format!("{}: {}", o.name, o.failure.as_ref().map_or("skipped".into(), ToString::to_string)))
        .collect()
}

/// The transient disruptions run at once, each on a cluster of its own: the runs share nothing
/// but the machine, and the slower scenarios that sharing causes are one more thing a harness
/// must ride out. What was left behind is looked for once all of them have ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_rides_out_every_transient_disruption() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let catalog = load_dir(&default_scenario_dir()).expect("the catalog loads");
    let disruptions: Vec<Disruption> = Disruption::ALL.into_iter().filter(|d| d.transient()).collect();
    let runs = futures::future::join_all(
        disruptions.iter().map(|&disruption| run_under(disruption, &catalog, RunSettings::default())),
    )
    .await;
    let mut problems = Vec::new();
    let mut report = Vec::new();
    for (disruption, (outcomes, injected)) in disruptions.iter().zip(runs) {
        if injected == 0 {
            problems.push(format!("{disruption} was never injected"));
        }
        let failed = failures(&outcomes);
        if !failed.is_empty() {
            problems.push(format!("under {disruption}, {} scenarios failed:\n{}", failed.len(), failed.join("\n")));
        }
        report.push(format!("{disruption}: {} scenarios passed, injected {injected} times", outcomes.len()));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(leftovers(std::process::id()), Vec::<String>::new(), "after the runs under every disruption");
    eprintln!("{}", report.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_gone_for_good_fails_each_scenario_precisely() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let scenarios: Vec<LoadedScenario> = ["validation/right-ca.yaml", "sni/none-by-default.yaml"]
        .iter()
        .map(|path| load_file(&default_scenario_dir().join(path)).expect("catalog scenarios load"))
        .collect();
    let (outcomes, injected) = run_under(Disruption::ApiOutage, &scenarios, RunSettings::default()).await;
    assert!(injected > 0, "the outage never began");
    for outcome in &outcomes {
        let failure = outcome.failure.as_ref().unwrap_or_else(|| panic!("{} passed with no API server", outcome.name));
        let text = failure.to_string();
        // The object, what was being done, that it was tried again, and the answer.
        assert!(text.contains(" @ ") && text.contains("failed after "), "{}: {text}", outcome.name);
        assert!(text.contains("503 the server is currently unable to handle the request"), "{}: {text}", outcome.name);
        assert!(!text.contains("Status {") && !text.contains("ErrorResponse"), "no debug dump: {text}");
    }
    assert_eq!(leftovers(std::process::id()), Vec::<String>::new());
}
