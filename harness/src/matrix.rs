//! The mutation matrix: the catalog run against loopback once per [`Fault`], to prove that
//! every fault is caught by some scenario and every scenario catches some fault:
//! [`run_matrix`] yields a [`Matrix`], [`render_catalog`] the generated `scenarios/README.md`.
//! [`verify_claims`] checks the catches that page records ([`claimed_catches`]) by running
//! each fault with only the scenarios said to catch it: what `cargo test` does, since the
//! full matrix runs the whole catalog once per fault.
//!
//! A scenario *catches* a fault when, with only that fault switched on, one of its steps
//! fails (set-up failures do not count: they would not say anything about the contract). A
//! baseline run with no fault must pass every scenario, or the matrix means nothing.
//!
//! Scenarios of a front door loopback has no model of (Gateway API, [`on_real_contour`]) run
//! on the real Contour, with loopback's proxy, under the faults at the boundaries every
//! controller speaks through ([`Fault::at_boundary`]: its xDS output, its status writes);
//! the others run on the reference controller under every fault but those acting on xDS. A
//! scenario the real Contour is known to fail fails its baseline as expected: it is recorded
//! as caught by Contour itself ([`Matrix::known_failures`]), and never as catching a fault.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use loopback::Fault;

use crate::runner::{RunSettings, ScenarioOutcome};
use crate::scenario::Feature;
use crate::scenario::LoadedScenario;
use crate::target::{Environment, LoopbackController, LoopbackOptions, TargetConfig, TargetError};
use tokio::sync::Semaphore;

/// How many loopback clusters run at once: one per fault, all of them (there are 77). Each cluster
/// takes one of the 180 ranges of pod addresses (127.64-243.x.x) for itself while it runs.
const CLUSTERS_AT_ONCE: usize = 80;
/// How many scenarios that are expected to pass run at once across all clusters: about four
/// catalogs' worth. Without a cap, clusters starting together overload the machine,
/// scenarios time out, and the matrix would count those as catches (which running them again
/// would not confirm). 640 was no faster. Those expected to catch the fault wait in a queue
/// of their own ([`Slots`]).
const SCENARIOS_AT_ONCE: usize = 320;
/// How many expected catches run at once: [`verify_claims`]'s, and the full matrix's
/// scenarios that the page says catch their cluster's fault.
const CLAIMS_AT_ONCE: usize = 320;

/// Which scenarios caught which faults.
#[derive(Debug, Default)]
pub struct Matrix {
    /// Scenario name -> faults it caught.
    pub catches: BTreeMap<String, BTreeSet<Fault>>,
    /// Scenarios that failed with no fault at all, with why.
    pub baseline_failures: Vec<String>,
    /// Scenarios that failed in set-up under some fault (not counted as catching it).
    pub setup_failures: Vec<String>,
    /// Catches of the full matrix that did not happen again with the scenario run on its own
    /// under the fault (not counted: they depend on what else the cluster runs, or on timing).
    pub unconfirmed: Vec<String>,
    /// Scenarios that the real Contour is known to fail, which fail without any fault: the
    /// defect of Contour is what they catch. Scenario name -> the release and reason.
    pub known_failures: BTreeMap<String, String>,
    /// Scenarios that need the real Contour, when it is not built (a note was printed).
    pub not_run: Vec<String>,
}

impl Matrix {
    /// Faults no scenario caught; without the real Contour ([`Matrix::not_run`]), the faults
    /// at a boundary, which only scenarios run on it can catch, are not counted.
    pub fn uncaught(&self) -> Vec<Fault> {
        Fault::ALL
            .into_iter()
            .filter(|f| self.not_run.is_empty() || !f.at_boundary())
            .filter(|f| !self.catches.values().any(|c| c.contains(f)))
            .collect()
    }

    /// Scenarios that caught no fault, and are neither caught by Contour itself nor not run.
    pub fn idle_scenarios(&self) -> Vec<String> {
        self.catches
            .iter()
            .filter(|(s, c)| c.is_empty() && !self.known_failures.contains_key(*s) && !self.not_run.contains(s))
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// Scenarios that caught `fault`.
    pub fn catchers(&self, fault: Fault) -> Vec<&str> {
        self.catches.iter().filter(|(_, c)| c.contains(&fault)).map(|(s, _)| s.as_str()).collect()
    }
}

/// Runs the baseline and one run of the whole catalog per fault: the full matrix, which
/// finds every catch (what `catalog --write` records). A catch counts only if it happens
/// again when the scenario runs on its own under the fault ([`verify_claims`]), so that
/// what the page records is what `cargo test` can check; the others are listed in
/// [`Matrix::unconfirmed`]. `expected` (the catches the page records now) only decides the
/// order of the work ([`Slots`]).
///
/// # Errors
/// A loopback cluster cannot start.
pub async fn run_matrix(
    scenarios: &[LoadedScenario],
    faults: &[Fault],
    expected: &BTreeMap<String, BTreeSet<Fault>>,
) -> Result<Matrix, TargetError> {
    let mut matrix = run_baseline(scenarios).await?;
    let plan = faults.iter().map(|fault| (*fault, scenarios.iter().collect())).collect();
    run_plan(&mut matrix, plan, CLUSTERS_AT_ONCE, &Slots::new(SCENARIOS_AT_ONCE, CLAIMS_AT_ONCE, expected)).await?;
    let mut confirmed = Matrix::default();
    let slots = Slots::one_queue(CLAIMS_AT_ONCE);
    run_plan(&mut confirmed, claims_plan(scenarios, &matrix.catches), Fault::ALL.len(), &slots).await?;
    for (scenario, caught) in &mut matrix.catches {
        let kept = confirmed.catches.get(scenario).cloned().unwrap_or_default();
        matrix.unconfirmed.extend(caught.difference(&kept).map(|fault| format!("{scenario} under {fault}")));
        *caught = kept;
    }
    Ok(matrix)
}

/// Runs the baseline and, under each fault, only the scenarios `claims` says catch it: a
/// check of every catch the catalog page records, at a fraction of the full matrix's cost.
/// The result holds the catches that were confirmed; a claim that did not hold is missing
/// from it. A catch the page does not record is not looked for.
///
/// # Errors
/// A loopback cluster cannot start.
pub async fn verify_claims(
    scenarios: &[LoadedScenario],
    claims: &BTreeMap<String, BTreeSet<Fault>>,
) -> Result<Matrix, TargetError> {
    let mut matrix = run_baseline(scenarios).await?;
    // A claimed catch spends most of its time waiting for its time limit, asking rarely, so
    // far more of them than of passing scenarios fit on the machine at once; and each
    // cluster runs only a few scenarios, so all clusters start together.
    let slots = Slots::one_queue(CLAIMS_AT_ONCE);
    run_plan(&mut matrix, claims_plan(scenarios, claims), Fault::ALL.len(), &slots).await?;
    Ok(matrix)
}

/// Each fault with the scenarios `claims` says catch it (faults no scenario claims left out).
fn claims_plan<'a>(
    scenarios: &'a [LoadedScenario],
    claims: &BTreeMap<String, BTreeSet<Fault>>,
) -> Vec<(Fault, Vec<&'a LoadedScenario>)> {
    Fault::ALL
        .into_iter()
        .map(|fault| {
            let claimed = scenarios.iter().filter(|s| claims.get(s.name()).is_some_and(|c| c.contains(&fault)));
            (fault, claimed.collect::<Vec<_>>())
        })
        .filter(|(_, claimed)| !claimed.is_empty())
        .collect()
}

/// The catches the catalog page (as [`render_catalog`] writes it) records: scenario name ->
/// faults, for every scenario row of its first table.
///
/// # Errors
/// A row names no scenario, or a fault that does not exist.
pub fn claimed_catches(page: &str) -> Result<BTreeMap<String, BTreeSet<Fault>>, String> {
    let mut claims = BTreeMap::new();
    for (index, line) in page.lines().enumerate() {
        let Some(row) = line.strip_prefix("| [") else { continue };
        let name = row.split_once(']').map(|(name, _)| name).ok_or(format!("line {}: no scenario name", index + 1))?;
        // The last column holds no `|`; earlier ones may (escaped), so it is split off from the end.
        let last = row.trim_end().trim_end_matches('|').rsplit_once('|').map_or("", |(_, last)| last);
        let mut faults = BTreeSet::new();
        for fault in last.split('`').skip(1).step_by(2) {
            faults.insert(fault.parse::<Fault>().map_err(|e| format!("line {}: {e}", index + 1))?);
        }
        claims.insert(name.to_string(), faults);
    }
    Ok(claims)
}

/// A matrix with every scenario and no catch yet, from a run of every scenario with no fault.
async fn run_baseline(scenarios: &[LoadedScenario]) -> Result<Matrix, TargetError> {
    let mut matrix = Matrix::default();
    for scenario in scenarios {
        matrix.catches.insert(scenario.name().to_string(), BTreeSet::new());
    }
    let everything: Vec<&LoadedScenario> = scenarios.iter().collect();
    let (outcomes, not_run) = run_once(&everything, None, &Slots::one_queue(SCENARIOS_AT_ONCE)).await?;
    matrix.not_run = not_run;
    for outcome in outcomes {
        if let Some(known) = &outcome.known_failure {
            let release = LoopbackController::contour().contour_release().unwrap_or_default();
            matrix.known_failures.insert(outcome.name.clone(), format!("Contour {release}: {}", known.reason));
        } else if let Some(failure) = &outcome.failure {
            matrix.baseline_failures.push(format!("{}: {failure}", outcome.name));
        }
    }
    Ok(matrix)
}

/// Where a scenario waits for its turn to run. Those expected to catch the fault on their
/// cluster (the catalog page says so) have turns of their own: they mostly wait out their
/// time limit, asking rarely, and in the same queue they would hold turns back from the
/// scenarios that pass, until the last cluster's catches started last and finished a time
/// limit later. The expectation only orders the work: what is caught is what happens.
struct Slots<'a> {
    passing: Semaphore,
    catching: Semaphore,
    expected: &'a BTreeMap<String, BTreeSet<Fault>>,
}

impl<'a> Slots<'a> {
    fn new(passing: usize, catching: usize, expected: &'a BTreeMap<String, BTreeSet<Fault>>) -> Self {
        Slots { passing: Semaphore::new(passing), catching: Semaphore::new(catching), expected }
    }

    /// One queue of `size` for every scenario.
    fn one_queue(size: usize) -> Slots<'static> {
        static NOTHING_EXPECTED: BTreeMap<String, BTreeSet<Fault>> = BTreeMap::new();
        Slots::new(size, 0, &NOTHING_EXPECTED)
    }

    /// The queue `scenario` waits in under `fault`.
    fn for_scenario(&self, scenario: &LoadedScenario, fault: Option<Fault>) -> &Semaphore {
        let expected = fault.is_some_and(|f| self.expected.get(scenario.name()).is_some_and(|c| c.contains(&f)));
        if expected { &self.catching } else { &self.passing }
    }
}

/// Runs each fault's scenarios on a cluster with that fault, `clusters` clusters at a time
/// and as many scenarios as `slots` allow, adding what they catch to `matrix`.
async fn run_plan(
    matrix: &mut Matrix,
    plan: Vec<(Fault, Vec<&LoadedScenario>)>,
    clusters: usize,
    slots: &Slots<'_>,
) -> Result<(), TargetError> {
    let runs = futures::stream::iter(
        plan.iter().map(|(fault, scenarios)| async move { (*fault, run_once(scenarios, Some(*fault), slots).await) }),
    )
    .buffer_unordered(clusters.max(1))
    .collect::<Vec<_>>()
    .await;
    for (fault, outcomes) in runs {
        let (outcomes, _) = outcomes?;
        // A known failure fails whatever the fault: it says nothing about the fault.
        for outcome in outcomes.into_iter().filter(|o| o.known_failure.is_none()) {
            match &outcome.failure {
                Some(failure) if failure.step.is_some() => {
                    matrix.catches.entry(outcome.name.clone()).or_default().insert(fault);
                }
                Some(failure) => matrix.setup_failures.push(format!("{} under {fault}: {failure}", outcome.name)),
                None => {}
            }
        }
    }
    Ok(())
}

/// Whether `scenario` runs on the real Contour in the matrix: it needs a front door that
/// loopback's reference controller does not model.
pub fn on_real_contour(scenario: &LoadedScenario) -> bool {
    scenario.scenario.features.contains(&Feature::GatewayApiBackendTls)
}

/// Runs `scenarios` under `fault` (none: the baseline), each on the controller it needs, and
/// returns their outcomes, with the names of those that need the real Contour when it is not
/// built. A scenario that cannot meet the fault (a Gateway API scenario under a fault of the
/// reference controller, another under a fault acting on xDS) does not run.
async fn run_once(
    scenarios: &[&LoadedScenario],
    fault: Option<Fault>,
    slots: &Slots<'_>,
) -> Result<(Vec<ScenarioOutcome>, Vec<String>), TargetError> {
    let (contour, reference): (Vec<&LoadedScenario>, Vec<&LoadedScenario>) =
        scenarios.iter().copied().partition(|s| on_real_contour(s));
    let contour = if fault.is_none_or(Fault::at_boundary) { contour } else { Vec::new() };
    let reference = if fault.is_some_and(Fault::acts_on_xds) { Vec::new() } else { reference };
    let mut not_run = Vec::new();
    let mut outcomes = Vec::new();
    if !contour.is_empty() {
        if loopback::contour::built_for_tests() {
            let options = LoopbackOptions {
                faults: fault.into_iter().collect(),
                controller: LoopbackController::contour(),
                ..Default::default()
            };
            outcomes.extend(run_on(&TargetConfig::Loopback(options), &contour, fault, slots).await?);
        } else {
            not_run.extend(contour.iter().map(|s| s.name().to_string()));
        }
    }
    if !reference.is_empty() {
        let config = TargetConfig::Loopback(LoopbackOptions::with_faults(fault.into_iter().collect()));
        outcomes.extend(run_on(&config, &reference, fault, slots).await?);
    }
    Ok((outcomes, not_run))
}

async fn run_on(
    config: &TargetConfig,
    scenarios: &[&LoadedScenario],
    fault: Option<Fault>,
    slots: &Slots<'_>,
) -> Result<Vec<ScenarioOutcome>, TargetError> {
    let environment = Environment::connect(config, RunSettings::default()).await?;
    let shared = &environment;
    let outcomes = futures::stream::iter(scenarios.iter().map(|scenario| async move {
        // Closed never: the semaphore lives as long as the matrix.
        let _slot = slots.for_scenario(scenario, fault).acquire().await.ok();
        shared.run(scenario, &()).await
    }))
    .buffer_unordered(scenarios.len().max(1))
    .collect::<Vec<_>>()
    .await;
    environment.shutdown().await;
    Ok(outcomes)
}

/// The generated catalog page: every scenario with its clauses, features, profile, what it
/// shows and the faults it catches, then every fault with the scenarios that catch it.
pub fn render_catalog(scenarios: &[LoadedScenario], matrix: &Matrix) -> String {
    let mut out = String::from(
        "# The scenario catalog\n\n\
         Generated by `cargo run -p harness -- catalog --write` (and checked by\n\
         `cargo test --test mutation`); do not edit by hand. Each scenario runs against the built-in\n\
         loopback cluster once with no fault and once with each fault switched on; it *catches* a\n\
         fault when one of its steps fails under it, both there and when it runs on its own under\n\
         the fault (`cargo test --test mutation` checks every catch recorded here that way).\n\n\
         Gateway API scenarios (feature `gateway-api-backend-tls`) have no reference model: they run\n\
         on the real Contour with loopback's proxy, under the faults at the boundaries every controller\n\
         speaks through (its xDS output, the API server's admission and status writes). One that\n\
         Contour is known to fail fails with no fault at all: Contour's defect is what it catches.\n\n",
    );
    let faults = Fault::ALL.len();
    let caught = faults - matrix.uncaught().len();
    let catching = matrix.catches.len() - matrix.idle_scenarios().len();
    out.push_str(&format!(
        "{} scenarios, {faults} faults: {caught} of {faults} faults caught, {catching} of {} scenarios catch at least one.\n\n",
        scenarios.len(),
        matrix.catches.len()
    ));
    out.push_str("| scenario | clauses | features | profile | what it shows | faults it catches |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for s in scenarios {
        let features: Vec<&str> = s.scenario.features.iter().map(|f| f.name()).collect();
        let mut catches: Vec<String> =
            matrix.catches.get(s.name()).map(|c| c.iter().map(|f| format!("`{f}`")).collect()).unwrap_or_default();
        if let Some(known) = matrix.known_failures.get(s.name()) {
            let release = known.split(':').next().unwrap_or_default();
            catches.push(format!("fails on {release} without any fault (a known failure of Contour)"));
        }
        let path = s.path.to_string_lossy();
        let relative = path.rsplit_once("scenarios/").map_or(path.as_ref(), |(_, rest)| rest);
        out.push_str(&format!(
            "| [{}]({relative}) | {} | {} | {} | {} | {} |\n",
            s.name(),
            s.scenario.clauses().join(", "),
            features.join(", "),
            s.scenario.profile().name(),
            s.scenario.description.replace('|', "\\|").replace('\n', " "),
            catches.join(", ")
        ));
    }
    out.push_str("\n## Faults and the scenarios that catch them\n\n| fault | clause | what goes wrong | caught by |\n|---|---|---|---|\n");
    for fault in Fault::ALL {
        out.push_str(&format!(
            "| `{fault}` | {} | {} | {} |\n",
            fault.clause(),
            fault.description(),
            matrix.catchers(fault).join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_expected_to_catch_their_clusters_fault_wait_in_their_own_queue() {
        let scenario =
            crate::scenario::load_file(&crate::suite::default_scenario_dir().join("validation/right-ca.yaml"))
                .expect("a catalog scenario loads");
        let expected = BTreeMap::from([(scenario.name().to_string(), BTreeSet::from([Fault::NoAlpnForTls]))]);
        let slots = Slots::new(1, 2, &expected);
        let queue = |fault| slots.for_scenario(&scenario, fault).available_permits();
        assert_eq!(queue(Some(Fault::NoAlpnForTls)), 2, "expected to catch it");
        assert_eq!(queue(Some(Fault::DefaultToTls)), 1, "expected to pass");
        assert_eq!(queue(None), 1, "no fault: expected to pass");
        assert_eq!(Slots::one_queue(3).for_scenario(&scenario, Some(Fault::NoAlpnForTls)).available_permits(), 3);
    }

    #[test]
    fn the_claims_are_read_from_the_last_column_of_each_scenario_row() {
        let page = "# The scenario catalog\n\n| scenario | clauses | features | profile | what it shows | faults it catches |\n\
                    |---|---|---|---|---|---|\n\
                    | [a](x/a.yaml) | V1 | | core | one \\| two | `no-alpn-for-tls`, `default-to-tls` |\n\
                    | [b](x/b.yaml) | V2 | | core | none |  |\n\n\
                    | fault | clause | what goes wrong | caught by |\n|---|---|---|---|\n| `default-to-tls` | P1 | x | a |\n";
        let claims = claimed_catches(page).unwrap();
        assert_eq!(claims.len(), 2);
        assert_eq!(claims["a"], BTreeSet::from([Fault::NoAlpnForTls, Fault::DefaultToTls]));
        assert!(claims["b"].is_empty());
    }

    #[test]
    fn an_unknown_fault_on_the_page_is_an_error_with_its_line() {
        let err = claimed_catches("intro\n| [a](a.yaml) | V1 | | core | x | `no-such-fault` |\n").unwrap_err();
        assert!(err.starts_with("line 2:") && err.contains("no-such-fault"), "{err}");
    }
}
