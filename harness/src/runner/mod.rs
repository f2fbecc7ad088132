//! Running scenarios against a [`Target`]: [`run_scenario`] yields a [`ScenarioOutcome`],
//! telling an [`Observer`] what happens as it happens ([`Event`]: progress output listens;
//! reports are rendered from the outcomes afterwards).
//!
//! One scenario = its own namespaces and virtual host, its PKI, its backends, then its steps
//! in order ([`steps`]); the first failing step ends it, install-wide state it changed is
//! restored and its namespaces are deleted whatever happened. A scenario needing an
//! install-wide feature the target lacks is skipped, with the reason.

mod steps;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::ClusterClient;
use crate::fixture;
use crate::install::{InstallClientCertificate, Installation, SkipReason};
use crate::scenario::LoadedScenario;
use crate::traffic::Answer;

/// Limits and knobs of a run.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Consecutive matching answers a traffic expectation needs.
    pub consecutive: usize,
    /// How long a traffic expectation may take to hold.
    pub traffic_limit: Duration,
    /// Pause between requests.
    pub traffic_interval: Duration,
    /// How long a status expectation may take to hold.
    pub status_limit: Duration,
    /// How long backends may take to become available (image pulls on real clusters).
    pub ready_limit: Duration,
    /// How long the whole run may take; then it stops as if interrupted
    /// ([`Signal::RunLimit`](crate::suite::Signal::RunLimit)).
    pub run_limit: Duration,
    /// Backend container image.
    pub image: String,
    /// Leave scenario namespaces in place after the run, for debugging.
    pub keep_namespaces: bool,
    /// Record the final status of every HTTPProxy a scenario applied (for comparing
    /// controllers), in [`ScenarioOutcome::statuses`].
    pub record_statuses: bool,
    /// Record what each request step's passing answers showed (for comparing data planes),
    /// in [`ScenarioOutcome::traffic`].
    pub record_traffic: bool,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            consecutive: 3,
            traffic_limit: Duration::from_secs(30),
            traffic_interval: Duration::from_millis(100),
            status_limit: Duration::from_secs(30),
            ready_limit: Duration::from_secs(180),
            run_limit: Duration::from_secs(3600),
            image: fixture::DEFAULT_IMAGE.into(),
            keep_namespaces: false,
            record_statuses: false,
            record_traffic: false,
        }
    }
}

/// Where scenarios run: a cluster, the proxy's address, and install-wide state.
pub struct Target {
    pub cluster: ClusterClient,
    pub proxy: SocketAddr,
    /// Where the proxy serves TLS virtual hosts, when known.
    pub tls_proxy: Option<SocketAddr>,
    /// Distinguishes this run's namespaces and host names from any other run's.
    pub run_id: String,
    pub settings: RunSettings,
    /// Its install-wide settings.
    pub installation: Installation,
    /// The installation's Envoy client certificate, when it has one.
    pub client_certificate: Option<Arc<InstallClientCertificate>>,
    /// Envoy's admin socket, when the harness can reach it (Envoy in loopback): a failed
    /// scenario's diagnostics then carry Envoy's configuration.
    pub envoy_admin: Option<PathBuf>,
    /// What the run made for the installation's Gateway (namespace, GatewayClass, Gateway, in
    /// that order; none when the cluster had it), removed at the end of the run.
    pub gateway_made: Vec<crate::cluster::ObjectRef>,
}

/// How one step went.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    /// 1-based, as in the file.
    pub index: usize,
    pub kind: &'static str,
    pub summary: String,
    pub duration: Duration,
    pub passed: bool,
}

/// Why a scenario failed: at which step, and the message with expected and actual.
#[derive(Debug, Clone)]
pub struct Failure {
    /// `None` for set-up (PKI, namespaces, backends).
    pub step: Option<usize>,
    pub kind: &'static str,
    pub message: String,
    /// The last answers of a traffic expectation, for evidence.
    pub answers: Vec<Answer>,
    /// The contract clauses the failed step shows broken ([`crate::explain::broken_by`]); none
    /// for set-up, which proves nothing about the implementation.
    pub breaks: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.step {
            Some(step) => write!(f, "step {step} ({}): {}", self.kind, self.message)?,
            None => write!(f, "{}: {}", self.kind, self.message)?,
        }
        for answer in &self.answers {
            write!(f, "\n    answer {}: {}", answer.request_id, answer.summary())?;
        }
        for line in crate::explain::broken_lines(&self.breaks) {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}

/// Evidence gathered from the cluster when a scenario failed, before its namespaces went.
#[derive(Debug, Clone, Default, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Diagnostics {
    /// The objects the scenario applied, as the cluster had them (Secret values redacted,
    /// managed fields removed).
    pub objects: Vec<Value>,
    /// The backends' pod logs: one line per request they saw.
    pub logs: Vec<PodLog>,
    /// What could not be gathered.
    pub problems: Vec<String>,
    /// Envoy's configuration dump, when [`Target::envoy_admin`] is known: written to a file
    /// of its own beside the diagnostics, not into report.json.
    #[serde(skip)]
    #[schemars(skip)]
    pub data_plane_config: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct PodLog {
    pub pod: String,
    /// Phase, readiness, restarts and why it is not running, when it is not.
    pub state: String,
    pub text: String,
}

/// The result of one scenario.
#[derive(Debug, Clone)]
pub struct ScenarioOutcome {
    pub name: String,
    pub path: PathBuf,
    pub namespace: String,
    /// The installation it ran on (or was skipped by), as [`Installation::describe`] says.
    pub installation: String,
    pub duration: Duration,
    pub steps: Vec<StepOutcome>,
    pub failure: Option<Failure>,
    /// Why the scenario did not run.
    pub skipped: Option<SkipReason>,
    /// Cleaning up failed (reported, but does not fail the scenario).
    pub cleanup_error: Option<String>,
    /// Gathered when the scenario failed.
    pub diagnostics: Option<Diagnostics>,
    /// With [`RunSettings::record_statuses`]: each HTTPProxy the scenario applied, as
    /// `namespace/name`, and its status after the last step, with the run's own names
    /// (namespaces, host names) replaced by stable ones and transition times removed, so that
    /// runs can be compared.
    pub statuses: Vec<(String, Value)>,
    /// Set when the scenario failed as the implementation is known to fail it
    /// ([`crate::known::classify`]); `failure` then holds the evidence.
    pub known_failure: Option<crate::known::KnownFailure>,
    /// With [`RunSettings::record_traffic`]: for each request step that passed (`step N`),
    /// what its answers showed ([`crate::traffic::observations`]), comparable across runs.
    pub traffic: Vec<(String, Value)>,
    /// On loopback: how long the scenario's changes waited, while it ran, for the controller
    /// to begin the rebuild that took them in ([`loopback::Rebuilds::held_off`]); the
    /// benchmark reports it. `None` on a real cluster, for a skipped scenario, and when
    /// loopback could not record every change.
    pub held_off: Option<Duration>,
}

impl ScenarioOutcome {
    /// A scenario that does not run, for `reason`.
    pub fn skipped(loaded: &LoadedScenario, reason: SkipReason) -> Self {
        ScenarioOutcome { skipped: Some(reason), ..ScenarioOutcome::new(loaded) }
    }

    /// A scenario the run was stopped before it finished (Ctrl-C, SIGTERM): skipped, and
    /// saying so.
    pub fn interrupted(loaded: &LoadedScenario) -> Self {
        let reason = SkipReason { text: INTERRUPTED.into(), not_applicable: false };
        ScenarioOutcome::skipped(loaded, reason)
    }

    /// A scenario whose target could not be set up: failed in set-up, with `message`.
    pub fn set_up_failed(loaded: &LoadedScenario, installation: String, message: String) -> Self {
        ScenarioOutcome {
            installation,
            failure: Some(Failure { step: None, kind: "set-up", message, answers: Vec::new(), breaks: Vec::new() }),
            ..ScenarioOutcome::new(loaded)
        }
    }

    /// Nothing happened yet.
    fn new(loaded: &LoadedScenario) -> Self {
        ScenarioOutcome {
            name: loaded.name().to_string(),
            path: loaded.path.clone(),
            namespace: String::new(),
            installation: String::new(),
            duration: Duration::ZERO,
            steps: Vec::new(),
            failure: None,
            skipped: None,
            cleanup_error: None,
            diagnostics: None,
            statuses: Vec::new(),
            known_failure: None,
            traffic: Vec::new(),
            held_off: None,
        }
    }

    /// Passed, skipped, or failed as the implementation is known to ([`crate::known`]):
    /// nothing that fails the run.
    pub fn passed(&self) -> bool {
        self.failure.is_none() || self.known_failure.is_some()
    }
}

/// The skip reason of a scenario a stopped run did not finish.
pub const INTERRUPTED: &str = "the run was interrupted before this scenario finished";

/// What happens during a run, as it happens.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    ScenarioStarted { scenario: &'a str },
    StepFinished { scenario: &'a str, step: &'a StepOutcome },
    ScenarioFinished { outcome: &'a ScenarioOutcome },
}

/// Listens to [`Event`]s; called from concurrently running scenarios.
pub trait Observer: Sync {
    fn event(&self, event: Event<'_>);
}

/// An observer that ignores everything.
impl Observer for () {
    fn event(&self, _: Event<'_>) {}
}

/// Runs one scenario from set-up to clean-up.
pub async fn run_scenario(target: &Target, loaded: &LoadedScenario, observer: &dyn Observer) -> ScenarioOutcome {
    let started = Instant::now();
    let mut outcome = ScenarioOutcome {
        namespace: namespace_name(loaded.name(), &target.run_id),
        installation: target.installation.describe(),
        skipped: target.installation.lacks_any(&loaded.scenario.features),
        ..ScenarioOutcome::new(loaded)
    };
    if outcome.skipped.is_none() {
        observer.event(Event::ScenarioStarted { scenario: &outcome.name });
        run(target, loaded, observer, &mut outcome).await;
        outcome.duration = started.elapsed();
    }
    outcome
}

async fn run(target: &Target, loaded: &LoadedScenario, observer: &dyn Observer, outcome: &mut ScenarioOutcome) {
    let mut run = steps::ScenarioRun::new(target, loaded, outcome.namespace.clone(), observer);
    outcome.failure = run.execute().await.err();
    if target.settings.record_statuses {
        outcome.statuses = run.proxy_statuses().await;
    }
    outcome.traffic = run.traffic();
    if outcome.failure.is_some() {
        outcome.diagnostics = Some(run.diagnose().await);
    }
    outcome.cleanup_error = run.clean_up().await.err();
    outcome.steps = run.into_steps();
}

/// Every namespace a scenario makes in the run `run_id`: its own, then those its file names.
pub fn scenario_namespaces(loaded: &LoadedScenario, run_id: &str) -> Vec<String> {
    let extra = loaded.scenario.namespaces.iter().map(|n| steps::extra_namespace_name(loaded.name(), &n.value, run_id));
    std::iter::once(namespace_name(loaded.name(), run_id)).chain(extra).collect()
}

/// `utls-<scenario>-<run id>`, within the 63 characters of a namespace name.
fn namespace_name(scenario: &str, run_id: &str) -> String {
    let mut name = format!("utls-{scenario}");
    name.truncate(63 - run_id.len() - 1);
    format!("{}-{run_id}", name.trim_end_matches('-'))
}

/// Whether every condition that carries `observedGeneration` is about the current generation.
fn status_is_current(object: &Value) -> bool {
    let generation = &object["metadata"]["generation"];
    let status = &object["status"];
    // Gateway API keeps conditions per parent (routes), per ancestor (policies) and per
    // listener (Gateways), besides the object's own.
    let nested = ["parents", "ancestors", "listeners"]
        .into_iter()
        .flat_map(|list| status[list].as_array().into_iter().flatten())
        .map(|entry| &entry["conditions"]);
    std::iter::once(&status["conditions"]).chain(nested).all(|conditions| {
        conditions
            .as_array()
            .is_none_or(|cs| cs.iter().all(|c| c.get("observedGeneration").is_none_or(|g| g == generation)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn namespace_names_fit_and_carry_the_run_id() {
        let name = namespace_name(&"x".repeat(40), "a1b2c3d4");
        assert!(name.len() <= 63, "{name}");
        assert!(name.ends_with("-a1b2c3d4"));
        assert_eq!(namespace_name("demo", "r1"), "utls-demo-r1");
    }

    #[test]
    fn stale_statuses_are_not_current() {
        let object = json!({"metadata": {"generation": 2}, "status": {"conditions": [{"observedGeneration": 1}]}});
        assert!(!status_is_current(&object));
        let object = json!({"metadata": {"generation": 2}, "status": {"conditions": [{"observedGeneration": 2}]}});
        assert!(status_is_current(&object));
    }

    #[test]
    fn gateway_api_conditions_per_ancestor_must_be_current_too() {
        let policy = |observed: u64| {
            json!({"metadata": {"generation": 3}, "status": {"ancestors": [
                {"conditions": [{"type": "Accepted", "observedGeneration": 3}]},
                {"conditions": [{"type": "Accepted", "observedGeneration": observed}]},
            ]}})
        };
        assert!(status_is_current(&policy(3)));
        assert!(!status_is_current(&policy(2)));
        let route = json!({"metadata": {"generation": 2}, "status": {"parents": [{"conditions": [{"observedGeneration": 1}]}]}});
        assert!(!status_is_current(&route));
    }
}
