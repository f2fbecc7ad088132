//! Running scenarios against a [`Target`]: [`run_scenario`] yields a [`ScenarioOutcome`].
//!
//! One scenario = its own namespace and virtual host, its PKI, its backends, then its steps in
//! order; the first failing step ends it, and the namespace is deleted whatever happened.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{ClusterClient, ObjectRef};
use crate::fixture::{self, BackendFixture, ClientCertificateMode};
use crate::pki::Pki;
use crate::scenario::template::Bindings;
use crate::scenario::{ClientCertificateModeSpec, ExpectStatus, LoadedScenario, RequestStep, Step};
use crate::status_match;
use crate::traffic::{self, Answer};

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
    /// Backend container image.
    pub image: String,
    /// Leave scenario namespaces in place after the run, for debugging.
    pub keep_namespaces: bool,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            consecutive: 3,
            traffic_limit: Duration::from_secs(30),
            traffic_interval: Duration::from_millis(100),
            status_limit: Duration::from_secs(30),
            ready_limit: Duration::from_secs(180),
            image: fixture::DEFAULT_IMAGE.into(),
            keep_namespaces: false,
        }
    }
}

/// Where scenarios run: a cluster and the proxy's address.
pub struct Target {
    pub cluster: ClusterClient,
    pub proxy: SocketAddr,
    /// Distinguishes this run's namespaces and host names from any other run's.
    pub run_id: String,
    pub settings: RunSettings,
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
    /// `None` for set-up (PKI, namespace, backends).
    pub step: Option<usize>,
    pub kind: &'static str,
    pub message: String,
    /// The last answers of a traffic expectation, for evidence.
    pub answers: Vec<Answer>,
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
        Ok(())
    }
}

/// The result of one scenario.
#[derive(Debug, Clone)]
pub struct ScenarioOutcome {
    pub name: String,
    pub path: PathBuf,
    pub namespace: String,
    pub duration: Duration,
    pub steps: Vec<StepOutcome>,
    pub failure: Option<Failure>,
    /// Deleting the namespace failed (reported, but does not fail the scenario).
    pub cleanup_error: Option<String>,
}

impl ScenarioOutcome {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

/// Runs one scenario from set-up to clean-up.
pub async fn run_scenario(target: &Target, loaded: &LoadedScenario) -> ScenarioOutcome {
    let started = Instant::now();
    let name = loaded.name().to_string();
    let namespace = namespace_name(&name, &target.run_id);
    let mut run =
        ScenarioRun { target, loaded, namespace: namespace.clone(), bindings: Bindings::default(), steps: Vec::new() };
    let failure = run.execute().await.err();
    let steps = std::mem::take(&mut run.steps);
    let cleanup_error = if target.settings.keep_namespaces {
        None
    } else {
        target.cluster.delete_namespace(&namespace, Duration::from_secs(120)).await.err().map(|e| e.to_string())
    };
    ScenarioOutcome {
        name,
        path: loaded.path.clone(),
        namespace,
        duration: started.elapsed(),
        steps,
        failure,
        cleanup_error,
    }
}

/// `utls-<scenario>-<run id>`, within the 63 characters of a namespace name.
fn namespace_name(scenario: &str, run_id: &str) -> String {
    let mut name = format!("utls-{scenario}");
    name.truncate(63 - run_id.len() - 1);
    format!("{}-{run_id}", name.trim_end_matches('-'))
}

struct ScenarioRun<'a> {
    target: &'a Target,
    loaded: &'a LoadedScenario,
    namespace: String,
    bindings: Bindings,
    steps: Vec<StepOutcome>,
}

fn setup_failure(message: String) -> Failure {
    Failure { step: None, kind: "set-up", message, answers: Vec::new() }
}

impl ScenarioRun<'_> {
    async fn execute(&mut self) -> Result<(), Failure> {
        let scenario = &self.loaded.scenario;
        let pki = Pki::build(&scenario.pki).map_err(|e| setup_failure(e.to_string()))?;
        self.bindings.insert("namespace", self.namespace.clone());
        self.bindings.insert("host", format!("{}.{}.upstream-tls.test", scenario.name.value, self.target.run_id));
        pki.bind(&mut self.bindings);

        let cluster = &self.target.cluster;
        cluster
            .create_namespace(&self.namespace, &self.target.run_id)
            .await
            .map_err(|e| setup_failure(e.to_string()))?;
        self.deploy_backends(&pki).await?;

        for (i, step) in scenario.steps.iter().enumerate() {
            let started = Instant::now();
            let (kind, summary, result) = match step {
                Step::Apply(manifest) => ("apply", "apply".to_string(), self.apply(&manifest.value).await),
                Step::ExpectStatus(expect) => (
                    "expectStatus",
                    format!("status of {} {}", expect.kind.as_deref().unwrap_or("HTTPProxy"), expect.name),
                    self.expect_status(expect).await,
                ),
                Step::Request(request) => (
                    "request",
                    format!("GET {}", request.path.as_deref().unwrap_or("/")),
                    self.request(i + 1, request).await,
                ),
            };
            let passed = result.is_ok();
            self.steps.push(StepOutcome { index: i + 1, kind, summary, duration: started.elapsed(), passed });
            result.map_err(|(message, answers)| Failure { step: Some(i + 1), kind, message, answers })?;
        }
        Ok(())
    }

    async fn deploy_backends(&self, pki: &Pki) -> Result<(), Failure> {
        let cluster = &self.target.cluster;
        for backend in &self.loaded.scenario.backends {
            let certificate = pki
                .get(&backend.certificate.value)
                .ok_or_else(|| setup_failure(format!("no PKI entry {:?}", backend.certificate.value)))?;
            let material = |name: &str| pki.get(name).ok_or_else(|| setup_failure(format!("no PKI entry {name:?}")));
            let chain = backend.chain.iter().map(|c| material(&c.value)).collect::<Result<Vec<_>, _>>()?;
            let client_certificate = match &backend.client_certificate {
                None => None,
                Some(spec) => {
                    let mode = match spec.mode {
                        ClientCertificateModeSpec::Optional => ClientCertificateMode::Optional,
                        ClientCertificateModeSpec::Require => ClientCertificateMode::Require,
                    };
                    Some((mode, material(&spec.ca.value)?))
                }
            };
            let fixture = BackendFixture {
                name: &backend.name.value,
                namespace: &self.namespace,
                certificate,
                chain,
                client_certificate,
                image: &self.target.settings.image,
            };
            for object in fixture.objects() {
                cluster.apply(&object, &self.namespace).await.map_err(|e| setup_failure(e.to_string()))?;
            }
        }
        for backend in &self.loaded.scenario.backends {
            cluster
                .wait_deployment_available(&self.namespace, &backend.name.value, self.target.settings.ready_limit)
                .await
                .map_err(|e| setup_failure(format!("backend {:?} not ready: {e}", backend.name.value)))?;
        }
        Ok(())
    }

    async fn apply(&self, manifest: &str) -> Result<(), (String, Vec<Answer>)> {
        let text = self.bindings.expand(manifest).map_err(|e| (e.to_string(), Vec::new()))?;
        let documents: Vec<Value> = serde_saphyr::from_str_multiple(&text)
            .map_err(|e| (format!("manifest is not YAML after filling references: {e}"), Vec::new()))?;
        for document in documents.iter().filter(|d| !d.is_null()) {
            self.target.cluster.apply(document, &self.namespace).await.map_err(|e| (e.to_string(), Vec::new()))?;
        }
        Ok(())
    }

    async fn expect_status(&self, expect: &ExpectStatus) -> Result<(), (String, Vec<Answer>)> {
        let wanted = self.bindings.expand_json(&expect.status).map_err(|e| (e.to_string(), Vec::new()))?;
        let object = ObjectRef {
            api_version: expect.api_version.clone().unwrap_or_else(|| "projectcontour.io/v1".into()),
            kind: expect.kind.clone().unwrap_or_else(|| "HTTPProxy".into()),
            namespace: Some(expect.namespace.clone().unwrap_or_else(|| self.namespace.clone())),
            name: expect.name.clone(),
        };
        let limit = self.target.settings.status_limit;
        let check = wanted.clone();
        let outcome = self
            .target
            .cluster
            .wait_for(&object, limit, move |o| {
                status_is_current(o) && status_match::contains(&o["status"], &check).is_ok()
            })
            .await
            .map_err(|e| (e.to_string(), Vec::new()))?;
        match outcome {
            Ok(_) => Ok(()),
            Err(None) => Err((format!("{object}: not found within {limit:?}"), Vec::new())),
            Err(Some(last)) => {
                let why = if status_is_current(&last) {
                    status_match::contains(&last["status"], &wanted).err().unwrap_or_default()
                } else {
                    format!("status not reconciled for generation {}", last["metadata"]["generation"])
                };
                Err((
                    format!("{object}: status did not match within {limit:?}: {why}; last status: {}", last["status"]),
                    Vec::new(),
                ))
            }
        }
    }

    async fn request(&self, step: usize, request: &RequestStep) -> Result<(), (String, Vec<Answer>)> {
        let host = self
            .bindings
            .expand(request.host.as_deref().unwrap_or("${host}"))
            .map_err(|e| (e.to_string(), Vec::new()))?;
        let path = request.path.clone().unwrap_or_else(|| "/".into());
        let expect =
            traffic::expand_expectation(&self.bindings, &request.expect).map_err(|e| (e.to_string(), Vec::new()))?;
        let settings = &self.target.settings;
        let proxy = self.target.proxy;
        let namespace = &self.namespace;
        let passed = traffic::until_consecutive(
            settings.consecutive,
            settings.traffic_limit,
            settings.traffic_interval,
            |n| {
                let (host, path) = (host.clone(), path.clone());
                let id = format!("{namespace}-s{step}-{n}");
                async move { traffic::send(proxy, &host, &path, &id).await }
            },
            |answer| traffic::check(&expect, answer),
        )
        .await
        .map_err(|not| {
            let why = not.last_mismatch.map(|m| m.0).unwrap_or_default();
            (
                format!(
                    "GET http://{host}{path}: no {} consecutive matching answers within {:?} ({} attempts); last: {why}",
                    settings.consecutive, settings.traffic_limit, not.attempts
                ),
                not.last_answers,
            )
        })?;
        if traffic::wants_backend(&expect) == Some(false) {
            self.check_backends_not_reached(&passed).await?;
        }
        Ok(())
    }

    /// The answers said the backend was not reached; its access log must agree.
    async fn check_backends_not_reached(&self, answers: &[Answer]) -> Result<(), (String, Vec<Answer>)> {
        let selector = "app.kubernetes.io/part-of=upstream-tls-conformance";
        let logs = self
            .target
            .cluster
            .pod_logs(&self.namespace, selector)
            .await
            .map_err(|e| (format!("cannot read backend logs: {e}"), Vec::new()))?;
        for answer in answers {
            if let Some((pod, _)) = logs.iter().find(|(_, text)| text.contains(&answer.request_id)) {
                return Err((
                    format!(
                        "request {} reached backend pod {pod} (found in its access log) although the proxy answered {}",
                        answer.request_id,
                        answer.summary()
                    ),
                    answers.to_vec(),
                ));
            }
        }
        Ok(())
    }
}

/// Whether every condition that carries `observedGeneration` is about the current generation.
fn status_is_current(object: &Value) -> bool {
    let generation = &object["metadata"]["generation"];
    object["status"]["conditions"]
        .as_array()
        .is_none_or(|cs| cs.iter().all(|c| c.get("observedGeneration").is_none_or(|g| g == generation)))
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
}
