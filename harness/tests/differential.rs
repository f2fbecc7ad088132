//! Three ways to run the catalog, held against each other: loopback's reference controller with
//! loopback's proxy, the real Contour with loopback's proxy, and the real Contour with the real
//! Envoy. The whole catalog runs under each, and these are compared:
//! - between the two controllers: the HTTPProxy statuses each wrote, whole documents; what each
//!   made the data plane do at the end of the run, for every virtual host (routes, and per
//!   upstream TLS on or off, SNI, ALPN, versions, validation and client certificate,
//!   [`loopback::dataplane::RouteTable::effective_settings`]); and what every request step saw;
//! - between the two data planes under Contour: what every request step saw (status, kind of
//!   body, and what the backend saw: SNI, ALPN, TLS and HTTP versions, Host, client
//!   certificate; [`harness::traffic::observations`]), and the statuses, which must not depend
//!   on the data plane.
//!
//! Every difference must be listed, with the source that explains it, in
//! `docs/divergences.yaml`; a listed difference that no longer occurs must be removed from it.
//! Needs Contour built by `scripts/ensure-contour`, and for the third run Envoy fetched by
//! `scripts/ensure-envoy`; without them the test passes with a loud note, unless
//! `UPSTREAM_TLS_REQUIRE_CONTOUR=1` and `UPSTREAM_TLS_REQUIRE_ENVOY=1` (as CI sets).

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
    /// What differs: the two controllers (default), or the two data planes under Contour.
    #[serde(default)]
    between: Between,
    /// The scenario, or `data plane (installation N)` for effective settings.
    scenario: String,
    /// `namespace/name` of the HTTPProxy, the virtual host, or `step N` for what a request
    /// step saw, with the run id as `RUN`.
    object: String,
    /// Why the two differ, with the Contour or Envoy source lines that show it.
    reason: String,
}

/// The two sides a divergence is between.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Between {
    /// Loopback's reference controller and the real Contour, both with loopback's proxy.
    #[default]
    Controllers,
    /// Loopback's proxy and Envoy, both programmed by the real Contour.
    DataPlanes,
}

fn divergences_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/divergences.yaml")
}

/// Scenario name -> HTTPProxy -> its final status, for one run; and
/// `data plane (installation N)` -> host -> its effective settings.
type Statuses = BTreeMap<String, BTreeMap<String, Value>>;

/// What one run of the catalog left to compare.
struct Record {
    /// Statuses, and effective settings of loopback's proxy (none when Envoy served).
    statuses: Statuses,
    /// Scenario name -> `step N` -> what its answers showed.
    traffic: Statuses,
}

async fn record_under(controller: LoopbackController, only: impl Fn(&LoadedScenario) -> bool) -> Record {
    let mut catalog = load_dir(&default_scenario_dir()).expect("the catalog loads");
    catalog.retain(only);
    let config = TargetConfig::Loopback(LoopbackOptions { controller, ..Default::default() });
    // Namespaces stay, so that every scenario's virtual host is still programmed at the end.
    let settings =
        RunSettings { record_statuses: true, record_traffic: true, keep_namespaces: true, ..RunSettings::default() };
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
        .filter(|(_, hosts)| !hosts.is_empty())
        .collect();
    let known = known_to_fail_on_contour();
    let data_planes = data_planes.into_iter().map(|(installation, mut hosts)| {
        hosts.retain(|host, _| !known.iter().any(|scenario| host.starts_with(&format!("{scenario}."))));
        (installation, hosts)
    });
    environment.shutdown().await;
    let failed: Vec<String> =
        outcomes.iter().filter(|o| !o.passed()).map(|o: &ScenarioOutcome| suite::line(o)).collect();
    assert!(failed.is_empty(), "under {}, scenarios failed:\n{}", config.describe(), failed.join("\n"));
    let traffic: Statuses = outcomes
        .iter()
        .filter(|o| !known.contains(&o.name))
        .map(|o| (o.name.clone(), o.traffic.iter().cloned().collect()))
        .collect();
    let mut statuses: Statuses = outcomes.into_iter().map(|o| (o.name, o.statuses.into_iter().collect())).collect();
    statuses.extend(data_planes);
    Record { statuses, traffic }
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
async fn the_reference_controller_loopbacks_proxy_and_envoy_agree_with_contour() {
    harness::init_crypto();
    if !loopback::contour::built_for_tests() {
        return;
    }
    let text = std::fs::read_to_string(divergences_path()).expect("docs/divergences.yaml is readable");
    let known: Divergences = serde_saphyr::from_str(&text).expect("docs/divergences.yaml parses");

    // Gateway API scenarios have no reference model to compare with.
    let modelled = |s: &LoadedScenario| !harness::matrix::on_real_contour(s);
    let reference = record_under(LoopbackController::default(), modelled).await;
    let contour = record_under(LoopbackController::contour(), modelled).await;
    assert_eq!(
        reference.statuses.keys().collect::<Vec<_>>(),
        contour.statuses.keys().collect::<Vec<_>>(),
        "both runs cover the same scenarios"
    );
    let mut by_controllers = Statuses::new();
    by_controllers.extend(contour.statuses.clone());
    by_controllers.extend(prefixed(&contour.traffic));
    let mut by_reference = reference.statuses.clone();
    by_reference.extend(prefixed(&reference.traffic));
    let (unexplained, mut stale) = compare(&by_controllers, &by_reference, &known, Between::Controllers);
    assert!(
        unexplained.is_empty(),
        "the reference controller and Contour differ; fix the reference controller, or list the difference \
         with Contour's reason in docs/divergences.yaml:\n{}",
        unexplained.join("\n")
    );
    let compared: usize =
        contour.statuses.iter().filter(|(s, _)| !s.starts_with("data plane")).map(|(_, p)| p.len()).sum();
    assert!(compared >= 40, "only {compared} statuses compared: the catalog applies more HTTPProxies than that");
    let hosts: usize = contour.statuses.iter().filter(|(s, _)| s.starts_with("data plane")).map(|(_, h)| h.len()).sum();
    assert!(hosts >= 30, "only {hosts} virtual hosts compared: most scenarios program one");
    let steps: usize = contour.traffic.values().map(BTreeMap::len).sum();
    assert!(steps >= 100, "only {steps} request steps compared: the catalog has more than that");

    if loopback::envoy::installed_for_tests() {
        let envoy = record_under(LoopbackController::contour_with_envoy(), modelled).await;
        let without_data_planes = |statuses: &Statuses| -> Statuses {
            statuses.clone().into_iter().filter(|(s, _)| !s.starts_with("data plane")).collect()
        };
        let mut by_loopback = without_data_planes(&contour.statuses);
        by_loopback.extend(prefixed(&contour.traffic));
        let mut by_envoy = without_data_planes(&envoy.statuses);
        by_envoy.extend(prefixed(&envoy.traffic));
        let (unexplained, stale_data_planes) = compare(&by_envoy, &by_loopback, &known, Between::DataPlanes);
        assert!(
            unexplained.is_empty(),
            "loopback's proxy and Envoy, both programmed by Contour, differ; fix loopback's proxy (or the contract \
             and the scenario, from Envoy's source), or list the difference with Envoy's reason in \
             docs/divergences.yaml (Envoy first, then loopback's proxy):\n{}",
            unexplained.join("\n")
        );
        let steps: usize = envoy.traffic.values().map(BTreeMap::len).sum();
        assert!(steps >= 100, "only {steps} request steps compared through Envoy");
        stale.extend(stale_data_planes);
    } else {
        stale.retain(|entry| !entry.starts_with("[data-planes]"));
    }
    assert!(stale.is_empty(), "listed divergences that no longer occur; remove them:\n{}", stale.join("\n"));
}

/// Traffic records as `traffic: <scenario>` entries, beside the statuses.
fn prefixed(traffic: &Statuses) -> Statuses {
    traffic.iter().map(|(scenario, steps)| (format!("traffic: {scenario}"), steps.clone())).collect()
}

/// The scenarios the real Contour is known to fail (`loopback/known-failures.yaml`): what
/// their virtual hosts are programmed with and what their requests see differ from the
/// reference's by design. Those entries are the divergences, and the conformance runs check
/// that they still fail; the comparison leaves them out.
fn known_to_fail_on_contour() -> Vec<String> {
    harness::known::for_contour_release(loopback::config::contour_versions()[0])
        .into_iter()
        .map(|k| k.scenario)
        .collect()
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
    let file = record_under(LoopbackController::contour(), install_wide).await.statuses;
    let object = LoopbackController {
        settings_from: ContourSettingsSource::ContourConfiguration,
        ..LoopbackController::contour()
    };
    let object = record_under(object, install_wide).await.statuses;
    let scenarios = file.keys().filter(|s| !s.starts_with("data plane")).count();
    assert!(scenarios >= 10, "only {scenarios} scenarios with install-wide features ran");
    let none = Divergences { divergences: Vec::new() };
    let (unexplained, _) = compare(&file, &object, &none, Between::Controllers);
    assert!(
        unexplained.is_empty(),
        "Contour behaved differently configured by its file and by a ContourConfiguration:\n{}",
        unexplained.join("\n")
    );
}

/// The differences between `arbiter` (Contour, or Envoy) and `model` (the reference
/// controller, or loopback's proxy) not listed in `known` for `between`, and the entries for
/// `between` that did not occur (as `[between] scenario: object (reason)`).
fn compare(arbiter: &Statuses, model: &Statuses, known: &Divergences, between: Between) -> (Vec<String>, Vec<String>) {
    let (arbiter_name, model_name) = match between {
        Between::Controllers => ("Contour:  ", "reference:"),
        Between::DataPlanes => ("Envoy:   ", "loopback:"),
    };
    let mut unexplained = Vec::new();
    let mut seen = Vec::new();
    let none = BTreeMap::new();
    let listed = |scenario: &str, name: &str| {
        known.divergences.iter().position(|d| {
            d.between == between
                && d.object == name
                && (d.scenario == scenario || format!("traffic: {}", d.scenario) == scenario)
        })
    };
    let scenarios: std::collections::BTreeSet<&String> = arbiter.keys().chain(model.keys()).collect();
    for scenario in scenarios {
        let (ours, theirs) = (arbiter.get(scenario).unwrap_or(&none), model.get(scenario).unwrap_or(&none));
        let names: std::collections::BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
        for name in names {
            let (want, got) = (ours.get(name), theirs.get(name));
            if want == got {
                continue;
            }
            match listed(scenario, name) {
                Some(index) => seen.push(index),
                None => unexplained.push(format!(
                    "{scenario}: {name}\n  {arbiter_name} {}\n  {model_name} {}",
                    want.map_or("(none)".into(), Value::to_string),
                    got.map_or("(none)".into(), Value::to_string),
                )),
            }
        }
    }
    let tag = match between {
        Between::Controllers => "controllers",
        Between::DataPlanes => "data-planes",
    };
    let stale: Vec<String> = known
        .divergences
        .iter()
        .enumerate()
        .filter(|(index, d)| d.between == between && !seen.contains(index))
        .map(|(_, d)| format!("[{tag}] {}: {} ({})", d.scenario, d.object, d.reason))
        .collect();
    (unexplained, stale)
}

#[test]
fn differences_must_be_listed_and_listings_must_still_occur() {
    let statuses = |message: &str| -> Statuses {
        let proxy = BTreeMap::from([("ns/p".to_string(), serde_json::json!({"currentStatus": message}))]);
        BTreeMap::from([("s".to_string(), proxy)])
    };
    let traffic = |status: u16| -> Statuses {
        let step = BTreeMap::from([("step 3".to_string(), serde_json::json!([{"status": status}]))]);
        prefixed(&BTreeMap::from([("s".to_string(), step)]))
    };
    let none = Divergences { divergences: Vec::new() };
    let controllers = Between::Controllers;
    assert_eq!(compare(&statuses("valid"), &statuses("valid"), &none, controllers), (vec![], vec![]));
    let (unexplained, _) = compare(&statuses("valid"), &statuses("invalid"), &none, controllers);
    assert_eq!(unexplained.len(), 1, "{unexplained:?}");
    assert!(unexplained[0].contains("\"valid\"") && unexplained[0].contains("\"invalid\""), "{unexplained:?}");
    let entry = |between, object: &str| Divergence {
        between,
        scenario: "s".into(),
        object: object.into(),
        reason: "why".into(),
    };
    let listed = Divergences { divergences: vec![entry(controllers, "ns/p")] };
    assert_eq!(compare(&statuses("valid"), &statuses("invalid"), &listed, controllers), (vec![], vec![]));
    let (_, stale) = compare(&statuses("valid"), &statuses("valid"), &listed, controllers);
    assert_eq!(stale, ["[controllers] s: ns/p (why)"]);

    // Traffic between the data planes: an entry for the controllers does not excuse it, nor
    // does it go stale there.
    let (unexplained, stale) = compare(&traffic(503), &traffic(502), &listed, Between::DataPlanes);
    assert_eq!(unexplained.len(), 1, "{unexplained:?}");
    assert!(unexplained[0].starts_with("traffic: s: step 3\n  Envoy:"), "{unexplained:?}");
    assert!(stale.is_empty(), "{stale:?}");
    let listed = Divergences { divergences: vec![entry(Between::DataPlanes, "step 3")] };
    assert_eq!(compare(&traffic(503), &traffic(502), &listed, Between::DataPlanes), (vec![], vec![]));
}
