//! The reference controller against the real Contour: the whole catalog runs on loopback under
//! each controller, and the HTTPProxy statuses each wrote are compared, whole documents, and so
//! is what each made the data plane do at the end of the run, for every virtual host: routes,
//! and per upstream TLS on or off, SNI, ALPN, versions, validation and client certificate
//! ([`loopback::dataplane::RouteTable::effective_settings`]).
//!
//! Every difference must be listed, with the Contour source that explains it, in
//! `docs/divergences.yaml`; a listed difference that no longer occurs must be removed from it.
//! Needs Contour built by `scripts/ensure-contour`; without it this test passes with a loud
//! note, unless `UPSTREAM_TLS_REQUIRE_CONTOUR=1` (as CI sets).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use harness::runner::{RunSettings, ScenarioOutcome};
use harness::scenario::{LoadedScenario, load_dir};
use harness::suite::{self, default_scenario_dir};
use harness::target::{Environment, LoopbackController, LoopbackOptions, TargetConfig};
use loopback::config::ContourSettingsSource;
use serde::Deserialize;
use serde_json::Value;

/// The committed list of known differences.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Divergences {
    divergences: Vec<Divergence>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Divergence {
    /// The scenario, or `data plane (installation N)` for effective settings.
    scenario: String,
    /// `namespace/name` of the HTTPProxy, or the virtual host, with the run id as `RUN`.
    object: String,
    /// Why the two differ, with the Contour source lines that show it.
    reason: String,
}

fn divergences_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/divergences.yaml")
}

/// Scenario name -> HTTPProxy -> its final status, for one controller; and
/// `data plane (installation N)` -> host -> its effective settings.
type Statuses = BTreeMap<String, BTreeMap<String, Value>>;

async fn statuses_under(controller: LoopbackController, only: impl Fn(&LoadedScenario) -> bool) -> Statuses {
    let mut catalog = load_dir(&default_scenario_dir()).expect("the catalog loads");
    catalog.retain(only);
    let config = TargetConfig::Loopback(LoopbackOptions { controller, ..Default::default() });
    // Namespaces stay, so that every scenario's virtual host is still programmed at the end.
    let settings = RunSettings { record_statuses: true, keep_namespaces: true, ..RunSettings::default() };
    let environment = Environment::connect(&config, settings).await.expect("loopback starts");
    let outcomes = suite::run_all(&environment, &catalog, 8, &()).await;
    let run_id = environment.run_id().to_string();
    let data_planes: Vec<(String, BTreeMap<String, Value>)> = settled_data_planes(&environment)
        .await
        .into_iter()
        .enumerate()
        .map(|(index, settings)| {
            let text = settings.to_string().replace(&run_id, "RUN");
            let hosts: BTreeMap<String, Value> = serde_json::from_str(&text).expect("JSON reads back");
            (format!("data plane (installation {})", index + 1), hosts)
        })
        .collect();
    environment.shutdown().await;
    let failed: Vec<String> =
        outcomes.iter().filter(|o| !o.passed()).map(|o: &ScenarioOutcome| suite::line(o)).collect();
    assert!(failed.is_empty(), "under {}, scenarios failed:\n{}", config.describe(), failed.join("\n"));
    let mut statuses: Statuses = outcomes.into_iter().map(|o| (o.name, o.statuses.into_iter().collect())).collect();
    statuses.extend(data_planes);
    statuses
}

/// The effective settings of each data plane once they have stopped changing. The last
/// scenario may have restored install-wide state (the client certificate Secret) that the
/// controller is still reprogramming when the run ends; Contour rebuilds within half a second
/// of an event, so settings unchanged for several seconds are the settled ones.
async fn settled_data_planes(environment: &Environment) -> Vec<Value> {
    const QUIET: Duration = Duration::from_secs(3);
    const LIMIT: Duration = Duration::from_secs(60);
    let snapshot =
        || -> Vec<Value> { environment.loopbacks().iter().map(|l| l.route_table().effective_settings()).collect() };
    let started = Instant::now();
    let mut last = snapshot();
    let mut unchanged_since = Instant::now();
    while unchanged_since.elapsed() < QUIET {
        assert!(started.elapsed() < LIMIT, "the data planes were still changing after {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = snapshot();
        if now != last {
            last = now;
            unchanged_since = Instant::now();
        }
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_controller_writes_the_statuses_contour_writes() {
    harness::init_crypto();
    if !loopback::contour::built_for_tests() {
        return;
    }
    let text = std::fs::read_to_string(divergences_path()).expect("docs/divergences.yaml is readable");
    let known: Divergences = serde_saphyr::from_str(&text).expect("docs/divergences.yaml parses");

    let reference = statuses_under(LoopbackController::default(), |_| true).await;
    let contour = statuses_under(LoopbackController::contour(), |_| true).await;
    assert_eq!(
        reference.keys().collect::<Vec<_>>(),
        contour.keys().collect::<Vec<_>>(),
        "both runs cover the same scenarios"
    );

    let (unexplained, stale) = compare(&contour, &reference, &known);
    assert!(
        unexplained.is_empty(),
        "the reference controller and Contour wrote different statuses; fix the reference controller, or list \
         the difference with Contour's reason in docs/divergences.yaml:\n{}",
        unexplained.join("\n")
    );
    assert!(stale.is_empty(), "listed divergences that no longer occur; remove them:\n{}", stale.join("\n"));
    let compared: usize = contour.iter().filter(|(s, _)| !s.starts_with("data plane")).map(|(_, p)| p.len()).sum();
    assert!(compared >= 40, "only {compared} statuses compared: the catalog applies more HTTPProxies than that");
    let hosts: usize = contour.iter().filter(|(s, _)| s.starts_with("data plane")).map(|(_, h)| h.len()).sum();
    assert!(hosts >= 30, "only {hosts} virtual hosts compared: most scenarios program one");
}

/// Contour configured by a ContourConfiguration object takes the same install-wide settings
/// as from its config file: every scenario with an install-wide feature passes either way
/// (those of the client certificate, the TLS 1.2 maximum, the custom cipher suites and
/// ExternalName Services fail at Contour's defaults), with the same statuses and the same
/// data planes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contour_takes_the_same_settings_from_a_contour_configuration_object() {
    harness::init_crypto();
    if !loopback::contour::built_for_tests() {
        return;
    }
    let install_wide = |s: &LoadedScenario| s.scenario.features.iter().any(|f| f.is_install_wide());
    let file = statuses_under(LoopbackController::contour(), install_wide).await;
    let object = LoopbackController {
        settings_from: ContourSettingsSource::ContourConfiguration,
        ..LoopbackController::contour()
    };
    let object = statuses_under(object, install_wide).await;
    let scenarios = file.keys().filter(|s| !s.starts_with("data plane")).count();
    assert!(scenarios >= 10, "only {scenarios} scenarios with install-wide features ran");
    let (unexplained, _) = compare(&file, &object, &Divergences { divergences: Vec::new() });
    assert!(
        unexplained.is_empty(),
        "Contour behaved differently configured by its file and by a ContourConfiguration:\n{}",
        unexplained.join("\n")
    );
}

/// The differences not listed in `known`, and the listed ones that did not occur.
fn compare(contour: &Statuses, reference: &Statuses, known: &Divergences) -> (Vec<String>, Vec<String>) {
    let mut unexplained = Vec::new();
    let mut seen = Vec::new();
    let none = BTreeMap::new();
    for (scenario, proxies) in contour {
        let theirs = reference.get(scenario).unwrap_or(&none);
        let names: std::collections::BTreeSet<&String> = proxies.keys().chain(theirs.keys()).collect();
        for name in names {
            let (want, got) = (proxies.get(name), theirs.get(name));
            if want == got {
                continue;
            }
            match known.divergences.iter().position(|d| &d.scenario == scenario && &d.object == name) {
                Some(index) => seen.push(index),
                None => unexplained.push(format!(
                    "{scenario}: {name}\n  Contour:   {}\n  reference: {}",
                    want.map_or("(none)".into(), Value::to_string),
                    got.map_or("(none)".into(), Value::to_string),
                )),
            }
        }
    }
    let stale: Vec<String> = known
        .divergences
        .iter()
        .enumerate()
        .filter(|(index, _)| !seen.contains(index))
        .map(|(_, d)| format!("{}: {} ({})", d.scenario, d.object, d.reason))
        .collect();
    (unexplained, stale)
}

#[test]
fn differences_must_be_listed_and_listings_must_still_occur() {
    let statuses = |message: &str| -> Statuses {
        let proxy = BTreeMap::from([("ns/p".to_string(), serde_json::json!({"currentStatus": message}))]);
        BTreeMap::from([("s".to_string(), proxy)])
    };
    let none = Divergences { divergences: Vec::new() };
    assert_eq!(compare(&statuses("valid"), &statuses("valid"), &none), (vec![], vec![]));
    let (unexplained, _) = compare(&statuses("valid"), &statuses("invalid"), &none);
    assert_eq!(unexplained.len(), 1, "{unexplained:?}");
    assert!(unexplained[0].contains("\"valid\"") && unexplained[0].contains("\"invalid\""), "{unexplained:?}");
    let listed = Divergences {
        divergences: vec![Divergence { scenario: "s".into(), object: "ns/p".into(), reason: "why".into() }],
    };
    assert_eq!(compare(&statuses("valid"), &statuses("invalid"), &listed), (vec![], vec![]));
    let (_, stale) = compare(&statuses("valid"), &statuses("valid"), &listed);
    assert_eq!(stale, ["s: ns/p (why)"]);
}
