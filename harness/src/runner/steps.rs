//! One scenario's run, step by step: [`ScenarioRun`]. One method per step kind; the single
//! `match` from the file format to them is in [`ScenarioRun::execute`].

use std::time::Instant;

use serde_json::Value;

use super::{Diagnostics, Event, Failure, Observer, PodLog, StepOutcome, Target, status_is_current};
use crate::cluster::{ClusterError, ObjectRef};
use crate::fixture::{BackendEcho, BackendFixture, ClientCertificateMode, NAME_LABEL, TlsVersion};
use crate::pki::{Material, Pki};
use crate::scenario::load::INSTALL_CLIENT_CA;
use crate::scenario::template::Bindings;
use crate::scenario::{
    BackendExpectation, BackendSpec, ClientCertificateChange, ClientCertificateModeSpec, ExpectStatus, LoadedScenario,
    ObjectSpec, RequestStep, ResponseExpectation, Step, TlsVersionSpec,
};
use crate::status_match::{self, Lists};
use crate::traffic::{self, Answer};

/// A failed step: the message and the answers that show it.
type StepError = (String, Vec<Answer>);

fn plain(error: impl ToString) -> StepError {
    (error.to_string(), Vec::new())
}

fn setup_failure(message: String) -> Failure {
    Failure { step: None, kind: "set-up", message, answers: Vec::new(), breaks: Vec::new() }
}

pub(super) struct ScenarioRun<'a> {
    target: &'a Target,
    loaded: &'a LoadedScenario,
    namespace: String,
    /// Extra namespaces, as `(name in the file, namespace)`.
    extra_namespaces: Vec<(String, String)>,
    bindings: Bindings,
    steps: Vec<StepOutcome>,
    /// Namespaces created so far, to delete at the end.
    created: Vec<String>,
    /// Set once the install-wide client certificate Secret was changed.
    install_changed: bool,
    /// Objects applied so far, for diagnostics.
    applied: Vec<ObjectRef>,
    observer: &'a dyn Observer,
    /// The scenario's certificates, once generated.
    pki: Option<Pki>,
    /// With [`super::RunSettings::record_traffic`]: what each request step's passing answers
    /// showed, by step.
    traffic: std::sync::Mutex<Vec<(String, Value)>>,
}

impl<'a> ScenarioRun<'a> {
    pub(super) fn new(
        target: &'a Target,
        loaded: &'a LoadedScenario,
        namespace: String,
        observer: &'a dyn Observer,
    ) -> Self {
        let extra_namespaces = loaded
            .scenario
            .namespaces
            .iter()
            .map(|n| (n.value.clone(), extra_namespace_name(loaded.name(), &n.value, &target.run_id)))
            .collect();
        ScenarioRun {
            target,
            loaded,
            namespace,
            extra_namespaces,
            bindings: Bindings::default(),
            steps: Vec::new(),
            created: Vec::new(),
            install_changed: false,
            applied: Vec::new(),
            observer,
            pki: None,
            traffic: std::sync::Mutex::default(),
        }
    }

    pub(super) fn into_steps(self) -> Vec<StepOutcome> {
        self.steps
    }

    /// What the request steps that passed observed ([`super::RunSettings::record_traffic`]).
    pub(super) fn traffic(&self) -> Vec<(String, Value)> {
        self.traffic.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(super) async fn execute(&mut self) -> Result<(), Failure> {
        let scenario = &self.loaded.scenario;
        let pki = Pki::build(&scenario.pki).map_err(|e| setup_failure(e.to_string()))?;
        self.bindings.insert("namespace", self.namespace.clone());
        self.bindings.insert("host", format!("{}.{}.upstream-tls.test", scenario.name.value, self.target.run_id));
        for (name, namespace) in &self.extra_namespaces {
            self.bindings.insert(format!("namespaces.{name}"), namespace.clone());
        }
        pki.bind(&mut self.bindings);
        if let Some(install) = &self.target.client_certificate {
            install.bind(&mut self.bindings, install.original());
        }
        if let Some(setup) = &self.target.installation.gateway {
            self.bindings.insert("gateway.name", setup.gateway.name.clone());
            self.bindings.insert("gateway.namespace", setup.gateway.namespace.clone());
        }

        let namespaces: Vec<String> = std::iter::once(self.namespace.clone())
            .chain(self.extra_namespaces.iter().map(|(_, n)| n.clone()))
            .collect();
        for namespace in namespaces {
            self.target
                .cluster
                .create_namespace(&namespace, &self.target.run_id)
                .await
                .map_err(|e| setup_failure(e.to_string()))?;
            self.created.push(namespace);
        }
        self.deploy_backends(&pki).await?;
        self.pki = Some(pki);

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
                    format!("GET {}", request.path.as_ref().map_or("/", |p| p.value.as_str())),
                    self.request(i + 1, request).await,
                ),
                Step::Observe(paths) => {
                    ("observe", format!("observe {}", paths.value.join(", ")), self.observe(i + 1, &paths.value).await)
                }
                Step::Together(requests) => (
                    "together",
                    format!(
                        "GET {} together",
                        requests
                            .value
                            .iter()
                            .map(|r| r.path.as_ref().map_or("/", |p| p.value.as_str()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    self.together(i + 1, &requests.value).await,
                ),
                Step::ApplyRejected(rejected) => (
                    "applyRejected",
                    format!("apply refused with {:?}", rejected.message_contains),
                    self.apply_rejected(&rejected.manifest.value, &rejected.message_contains).await,
                ),
                Step::Delete(object) => {
                    ("delete", format!("delete {} {}", object.kind, object.name), self.delete(object).await)
                }
                Step::EnvoyClientCertificate(change) => (
                    "envoyClientCertificate",
                    match change {
                        ClientCertificateChange::Rotate => "rotate the Envoy client certificate".to_string(),
                        ClientCertificateChange::Delete => "delete the Envoy client certificate".to_string(),
                        ClientCertificateChange::Replace(r) => {
                            format!("replace the Envoy client certificate Secret with a {} one", r.secret_type)
                        }
                    },
                    self.change_client_certificate(change).await,
                ),
            };
            let passed = result.is_ok();
            let step = StepOutcome { index: i + 1, kind, summary, duration: started.elapsed(), passed };
            self.observer.event(Event::StepFinished { scenario: &scenario.name.value, step: &step });
            self.steps.push(step);
            result.map_err(|(message, answers)| {
                let breaks = crate::explain::broken_by(&scenario.clauses(), kind);
                Failure { step: Some(i + 1), kind, message, answers, breaks }
            })?;
        }
        Ok(())
    }

    /// Restores install-wide state and has the namespaces deleted (without waiting for them
    /// to go: [`Environment::await_namespace_deletion`](crate::target::Environment) does, once
    /// for the run); reports the problems.
    pub(super) async fn clean_up(&mut self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.install_changed
            && let Some(install) = &self.target.client_certificate
            && let Err(e) = install.restore(&self.target.cluster, self.target.settings.status_limit).await
        {
            problems.push(format!("cannot restore the Envoy client certificate Secret {}: {e}", install.secret));
        }
        if !self.target.settings.keep_namespaces {
            for namespace in std::mem::take(&mut self.created) {
                if let Err(e) = self.target.cluster.start_namespace_deletion(&namespace).await {
                    problems.push(e.to_string());
                }
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }

    /// Evidence from the cluster, gathered before clean-up when the scenario failed: the
    /// applied objects as they are now (Secret data redacted) and the backends' pod logs.
    pub(super) async fn diagnose(&self) -> Diagnostics {
        let cluster = &self.target.cluster;
        let mut diagnostics = Diagnostics::default();
        for object in &self.applied {
            match cluster.get(object).await {
                Ok(Some(found)) => diagnostics.objects.push(redact_object(found)),
                Ok(None) => diagnostics.problems.push(format!("{object} is gone (deleted by a step?)")),
                Err(e) => diagnostics.problems.push(e.to_string()),
            }
        }
        for backend in &self.loaded.scenario.backends {
            let selector = format!("{NAME_LABEL}={}", backend.name.value);
            match cluster.pod_logs(self.backend_namespace(backend), &selector).await {
                Ok(logs) => {
                    diagnostics.logs.extend(logs.into_iter().map(|(pod, state, text)| PodLog { pod, state, text }));
                }
                Err(e) => diagnostics.problems.push(format!("logs of backend {}: {e}", backend.name.value)),
            }
        }
        if let Some(socket) = &self.target.envoy_admin {
            match loopback::envoy::config_dump(socket).await {
                Ok(dump) => diagnostics.data_plane_config = Some(dump),
                Err(e) => diagnostics.problems.push(e.to_string()),
            }
        }
        diagnostics
    }

    /// The status of every HTTPProxy applied so far, comparable across runs: this run's id
    /// (in namespace and host names) becomes `RUN` and `lastTransitionTime`s are dropped.
    pub(super) async fn proxy_statuses(&self) -> Vec<(String, Value)> {
        let mut statuses = Vec::new();
        for object in self.applied.iter().filter(|o| o.kind == "HTTPProxy") {
            let Ok(Some(found)) = self.target.cluster.get(object).await else { continue };
            let mut status = found["status"].clone();
            for condition in status["conditions"].as_array_mut().into_iter().flatten() {
                if let Some(fields) = condition.as_object_mut() {
                    fields.remove("lastTransitionTime");
                }
            }
            let text = status.to_string().replace(&self.target.run_id, "RUN");
            let name = format!("{}/{}", object.namespace.as_deref().unwrap_or_default(), object.name)
                .replace(&self.target.run_id, "RUN");
            statuses.push((name, serde_json::from_str(&text).unwrap_or(status)));
        }
        statuses
    }

    async fn deploy_backends(&mut self, pki: &Pki) -> Result<(), Failure> {
        let cluster = &self.target.cluster;
        for backend in &self.loaded.scenario.backends {
            let objects = self.fixture(backend, pki)?.objects();
            let namespace = self.backend_namespace(backend).to_string();
            for object in objects {
                let applied = cluster.apply(&object, &namespace).await.map_err(|e| setup_failure(e.to_string()))?;
                self.remember(applied);
            }
        }
        for backend in &self.loaded.scenario.backends {
            cluster
                .wait_deployment_available(
                    self.backend_namespace(backend),
                    &backend.name.value,
                    self.target.settings.ready_limit,
                )
                .await
                .map_err(|e| setup_failure(format!("backend {:?} not ready: {e}", backend.name.value)))?;
        }
        Ok(())
    }

    fn fixture<'p>(&'p self, backend: &'p BackendSpec, pki: &'p Pki) -> Result<BackendFixture<'p>, Failure> {
        let material = |name: &str| -> Result<&'p Material, Failure> {
            if name == INSTALL_CLIENT_CA
                && let Some(install) = &self.target.client_certificate
            {
                return Ok(install.ca());
            }
            pki.get(name).ok_or_else(|| setup_failure(format!("no PKI entry {name:?}")))
        };
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
        let tls_versions = backend.tls_versions.as_ref().map(|versions| {
            versions
                .iter()
                .map(|v| match v {
                    TlsVersionSpec::Tls12 => TlsVersion::Tls12,
                    TlsVersionSpec::Tls13 => TlsVersion::Tls13,
                })
                .collect()
        });
        Ok(BackendFixture {
            name: &backend.name.value,
            namespace: self.backend_namespace(backend),
            certificate: material(&backend.certificate.value)?,
            chain: backend.chain.iter().map(|c| material(&c.value)).collect::<Result<_, _>>()?,
            client_certificate,
            tls_versions,
            tls_ciphers: backend.tls_ciphers.as_ref().map(|c| c.iter().map(|c| c.openssl_name()).collect()),
            http2: backend.http2,
            image: &self.target.settings.image,
        })
    }

    /// The objects of an `apply` block, references filled in.
    fn documents(&self, manifest: &str) -> Result<Vec<Value>, StepError> {
        let text = self.bindings.expand(manifest).map_err(plain)?;
        // Said without quoting the text, which holds whatever the references filled in.
        let documents: Vec<Value> = serde_saphyr::from_str_multiple(&text).map_err(|e| {
            let error = crate::scenario::load::yaml_error(std::path::Path::new(""), &text, &e, (0, 0));
            let at =
                error.position.map_or(String::new(), |(line, column)| format!(" at its line {line}, column {column}"));
            let hint = if text.contains("-----BEGIN") {
                "; PEM text (${pki.NAME.cert}, ${pki.NAME.key}) spans lines: put it in a block scalar (`|`) indented \
                 under its key, or use the Base64 form"
            } else {
                ""
            };
            plain(format!("manifest is not YAML once references are filled in{at}: {}{hint}", error.message))
        })?;
        Ok(documents.into_iter().filter(|d| !d.is_null()).collect())
    }

    /// Applies the documents in order. Before a route object (HTTPProxy, Ingress), it waits
    /// until the Services applied before it that select one of the scenario's backends have
    /// ready endpoints: Contour can lose endpoints that arrive while it rebuilds its routes for
    /// them (it recomputes them on its next rebuild), and a scenario that runs alone may have
    /// no next rebuild.
    async fn apply(&mut self, manifest: &str) -> Result<(), StepError> {
        let mut awaiting_endpoints: Vec<ObjectRef> = Vec::new();
        for document in self.documents(manifest)? {
            let kind = document["kind"].as_str().unwrap_or_default();
            if matches!(kind, "HTTPProxy" | "Ingress") {
                let limit = self.target.settings.status_limit;
                for service in awaiting_endpoints.drain(..) {
                    let namespace = service.namespace.as_deref().unwrap_or(&self.namespace);
                    self.target.cluster.wait_service_endpoints(namespace, &service.name, limit).await.map_err(plain)?;
                }
            }
            let object = self.target.cluster.apply_confined(&document, &self.own_namespaces()).await.map_err(plain)?;
            if kind == "Service" && self.selects_backend(&document) {
                awaiting_endpoints.push(object.clone());
            }
            self.remember(object);
        }
        Ok(())
    }

    /// The namespaces the scenario's objects may go into, its own first.
    fn own_namespaces(&self) -> Vec<&str> {
        std::iter::once(self.namespace.as_str()).chain(self.extra_namespaces.iter().map(|(_, n)| n.as_str())).collect()
    }

    /// Whether a Service selects the pods of one of the scenario's backends, in its namespace.
    fn selects_backend(&self, service: &Value) -> bool {
        let selected = &service["spec"]["selector"]["app.kubernetes.io/name"];
        let namespace = service["metadata"]["namespace"].as_str().unwrap_or(&self.namespace);
        self.loaded
            .scenario
            .backends
            .iter()
            .any(|b| selected == b.name.value.as_str() && self.backend_namespace(b) == namespace)
    }

    /// The namespace a backend runs in: the scenario's, or one of its extra namespaces.
    fn backend_namespace(&self, backend: &BackendSpec) -> &str {
        let Some(declared) = &backend.namespace else { return &self.namespace };
        self.extra_namespaces
            .iter()
            .find(|(name, _)| *name == declared.value)
            .map_or(&self.namespace, |(_, namespace)| namespace.as_str())
    }

    fn remember(&mut self, object: ObjectRef) {
        if !self.applied.contains(&object) {
            self.applied.push(object);
        }
    }

    async fn apply_rejected(&mut self, manifest: &str, message: &str) -> Result<(), StepError> {
        let message = &self.bindings.expand(message).map_err(plain)?;
        let mut refusals = Vec::new();
        for document in self.documents(manifest)? {
            match self.target.cluster.apply_confined(&document, &self.own_namespaces()).await {
                Ok(object) => {
                    refusals.push(format!("{object} was accepted"));
                    self.remember(object);
                }
                // The harness's own refusal is not the cluster's.
                Err(e @ ClusterError::Confined { .. }) => return Err(plain(e)),
                Err(e) if e.to_string().contains(message) => return Ok(()),
                Err(e) => refusals.push(e.to_string()),
            }
        }
        Err(plain(format!("expected a refusal containing {message:?}; got: {}", refusals.join("; "))))
    }

    /// The object a `delete` or `expectStatus` step names, which must be in one of the
    /// scenario's own namespaces: a kind of no namespace is refused, as `apply` refuses it.
    async fn object_ref(
        &self,
        api_version: String,
        kind: String,
        name: &str,
        namespace: Option<&str>,
    ) -> Result<ObjectRef, StepError> {
        if !self.target.cluster.is_namespaced(&api_version, &kind).await.map_err(plain)? {
            return Err(plain(format!(
                "{kind} objects belong to no namespace, and a scenario reaches only its own namespaces"
            )));
        }
        let namespace = match namespace {
            Some(ns) => self.bindings.expand(ns).map_err(plain)?,
            None => self.namespace.clone(),
        };
        // What `check` refuses where it is written, refused again once references are filled in.
        let own = self.own_namespaces();
        if !own.contains(&namespace.as_str()) {
            return Err(plain(format!(
                "{kind} {name} is in namespace {namespace}, not one of the scenario's own ({})",
                own.join(", ")
            )));
        }
        Ok(ObjectRef {
            api_version,
            kind,
            namespace: Some(namespace),
            name: self.bindings.expand(name).map_err(plain)?,
        })
    }

    async fn delete(&self, object: &ObjectSpec) -> Result<(), StepError> {
        if object.kind == "Namespace" {
            return Err(plain("a scenario deletes no Namespace: the harness makes and deletes its namespaces"));
        }
        let object = self
            .object_ref(
                object.api_version.clone(),
                object.kind.clone(),
                &object.name,
                object.namespace.as_ref().map(|n| n.value.as_str()),
            )
            .await?;
        self.target.cluster.delete_and_wait(&object, self.target.settings.status_limit).await.map_err(plain)
    }

    async fn change_client_certificate(&mut self, change: &ClientCertificateChange) -> Result<(), StepError> {
        let install = self
            .target
            .client_certificate
            .as_ref()
            .ok_or_else(|| plain("the installation has no Envoy client certificate"))?;
        self.install_changed = true;
        match change {
            ClientCertificateChange::Rotate => {
                let rotated = install.rotated().map_err(plain)?;
                install.write(&self.target.cluster, &rotated).await.map_err(plain)?;
                install.bind(&mut self.bindings, &rotated);
            }
            ClientCertificateChange::Delete => {
                install.delete(&self.target.cluster, self.target.settings.status_limit).await.map_err(plain)?;
            }
            ClientCertificateChange::Replace(replacement) => {
                let mut data = std::collections::BTreeMap::new();
                for (key, value) in &replacement.data {
                    data.insert(key.clone(), self.bindings.expand(value).map_err(plain)?);
                }
                let limit = self.target.settings.status_limit;
                // A Secret's type cannot change in place: delete it, then write the replacement.
                install.delete(&self.target.cluster, limit).await.map_err(plain)?;
                install.write_raw(&self.target.cluster, &replacement.secret_type, &data).await.map_err(plain)?;
            }
        }
        Ok(())
    }

    async fn expect_status(&self, expect: &ExpectStatus) -> Result<(), StepError> {
        let wanted = self.bindings.expand_json(&expect.status.value).map_err(plain)?;
        let object = self
            .object_ref(
                expect.api_version.clone().unwrap_or_else(|| "projectcontour.io/v1".into()),
                expect.kind.clone().unwrap_or_else(|| "HTTPProxy".into()),
                &expect.name,
                expect.namespace.as_ref().map(|n| n.value.as_str()),
            )
            .await?;
        let limit = self.target.settings.status_limit;
        let lists = if expect.exact_lists { Lists::Exact } else { Lists::Subset };
        let check = wanted.clone();
        let outcome = self
            .target
            .cluster
            .wait_for(&object, limit, move |o| {
                status_is_current(o) && status_match::contains(&o["status"], &check, lists).is_ok()
            })
            .await
            .map_err(plain)?;
        match outcome {
            Ok(_) => Ok(()),
            Err(None) => Err(plain(format!("{object}: not found within {limit:?}"))),
            Err(Some(last)) => {
                let why = if status_is_current(&last) {
                    status_match::contains(&last["status"], &wanted, lists).err().unwrap_or_default()
                } else {
                    format!("status not reconciled for generation {}", last["metadata"]["generation"])
                };
                Err(plain(format!(
                    "{object}: status did not match within {limit:?}: {why}; last status: {}",
                    last["status"]
                )))
            }
        }
    }

    /// A request step's request, expanded and ready to send as often as needed.
    fn prepare(&self, request: &RequestStep) -> Result<Prepared, StepError> {
        let host = request.host.as_ref().map_or("${host}", |h| h.value.as_str());
        let host = self.bindings.expand(host).map_err(plain)?;
        let path = self.bindings.expand(request.path.as_ref().map_or("/", |p| p.value.as_str())).map_err(plain)?;
        let expect = traffic::expand_expectation(&self.bindings, &request.expect).map_err(plain)?;
        let headers: Vec<(String, String)> = request
            .headers
            .iter()
            .map(|(name, value)| self.bindings.expand(&value.value).map(|value| (name.clone(), value)))
            .collect::<Result<_, _>>()
            .map_err(plain)?;
        let client = traffic::client(self.target.proxy);
        let url = match &request.tls {
            None => format!("http://{host}:{}{path}", self.target.proxy.port()),
            Some(_) => format!("https://{host}{path}"),
        };
        let tls = request.tls.as_ref().map(|tls| self.tls_request(tls, &host)).transpose()?;
        Ok(Prepared { host, path, url, headers, client, tls, expect })
    }

    async fn request(&self, step: usize, request: &RequestStep) -> Result<(), StepError> {
        let prepared = self.prepare(request)?;
        let (url, expect) = (&prepared.url, &prepared.expect);
        let settings = &self.target.settings;
        let namespace = &self.namespace;
        let send = |id: String| prepared.send(id);
        let consecutive = request.consecutive.as_ref().map_or(settings.consecutive, |c| c.value as usize);
        let shared: Vec<String> = request.shared_by.iter().map(|name| name.value.clone()).collect();
        let started = Instant::now();
        // A route still changing may answer from one backend for a while: when a round's
        // answers miss a backend that shares the route, ask again in a new round.
        let mut one_sided: Option<Vec<Answer>> = None;
        let mut rounds = 0;
        let alone = |answers: &[Answer], missing: &str| {
            (
                format!(
                    "GET {url}: {consecutive} answers in a row came from {} alone within {:?}; {missing} never answered",
                    traffic::answering_backends(answers).join(" and "),
                    settings.traffic_limit
                ),
                answers[answers.len().saturating_sub(3)..].to_vec(),
            )
        };
        let passed = loop {
            let remaining = settings.traffic_limit.saturating_sub(started.elapsed());
            let round = if let Some(answers) = &one_sided {
                if remaining.is_zero() {
                    return Err(alone(answers, &traffic::missing_shares(&shared, answers).unwrap_or_default()));
                }
                format!("r{rounds}")
            } else {
                String::new()
            };
            // Each round's requests get ids of their own, so access-log checks tell them apart.
            let result = traffic::until_consecutive(
                consecutive,
                settings.consecutive,
                remaining,
                settings.traffic_interval,
                |n| send(format!("{namespace}-s{step}{round}-{n}")),
                |answer| traffic::check(expect, answer).and_then(|()| traffic::check_shared(&shared, answer)),
            )
            .await;
            let passed = match (result, &one_sided) {
                (Ok(passed), _) => passed,
                // The time ran out on a new round that had nothing against it.
                (Err(not), Some(answers)) if not.last_mismatch.is_none() => {
                    return Err(alone(answers, &traffic::missing_shares(&shared, answers).unwrap_or_default()));
                }
                (Err(not), _) => {
                    let why = not.last_mismatch.map(|m| m.0).unwrap_or_default();
                    return Err((
                        format!(
                            "GET {url}: no {consecutive} consecutive matching answers within {:?} ({} attempts); last: {why}",
                            settings.traffic_limit, not.attempts
                        ),
                        not.last_answers,
                    ));
                }
            };
            if traffic::missing_shares(&shared, &passed).is_none() {
                break passed;
            }
            one_sided = Some(passed);
            rounds += 1;
        };
        if traffic::wants_backend(expect) == Some(false) {
            self.check_backends_not_reached(&passed).await?;
        }
        if self.target.settings.record_traffic {
            let seen = traffic::observations(&passed, &self.target.run_id);
            self.traffic.lock().unwrap_or_else(|e| e.into_inner()).push((format!("step {step}"), seen));
        }
        if let Some(mirror) = &request.mirror {
            let mut want = mirror.clone();
            traffic::expand_backend(&self.bindings, &mut want).map_err(plain)?;
            if self.mirror_copies(&passed, &want).await?.is_err() {
                // The mirror may be programmed after the route: ask again until enough
                // answers in a row have their copies.
                let more = |n: usize| send(format!("{namespace}-s{step}-m{n}"));
                self.until_mirrored(more, expect, &want).await?;
            }
        }
        Ok(())
    }

    /// Requests that must match at the same moment: sent in rounds, one of each in turn, until
    /// as many rounds in a row as the consistency window have every answer matching. Where
    /// separate steps could each pass in a different moment of a configuration that keeps
    /// changing (one shared setting flipping between two routes), a round samples all of them
    /// within a few milliseconds.
    async fn together(&self, step: usize, requests: &[RequestStep]) -> Result<(), StepError> {
        let prepared: Vec<Prepared> = requests.iter().map(|r| self.prepare(r)).collect::<Result<_, _>>()?;
        let settings = &self.target.settings;
        let namespace = &self.namespace;
        let round = |n: usize| {
            let prepared = &prepared;
            async move {
                let mut answers = Vec::with_capacity(prepared.len());
                for (index, request) in prepared.iter().enumerate() {
                    answers.push(request.send(format!("{namespace}-s{step}-{n}-{}", index + 1)).await);
                }
                answers
            }
        };
        let check = |answers: &Vec<Answer>| {
            prepared.iter().zip(answers).try_for_each(|(request, answer)| {
                traffic::check(&request.expect, answer)
                    .map_err(|why| traffic::Mismatch(format!("GET {}: {}", request.url, why.0)))
            })
        };
        let consecutive = settings.consecutive;
        let rounds = traffic::until_consecutive(
            consecutive,
            consecutive,
            settings.traffic_limit,
            settings.traffic_interval,
            round,
            check,
        )
        .await
        .map_err(|not| {
            let why = not.last_mismatch.map(|m| m.0).unwrap_or_default();
            (
                format!(
                    "no {consecutive} rounds in a row with every answer matching within {:?} ({} rounds); last: {why}",
                    settings.traffic_limit, not.attempts
                ),
                not.last_answers.into_iter().flatten().collect(),
            )
        })?;
        for (index, request) in prepared.iter().enumerate() {
            let answers: Vec<Answer> = rounds.iter().map(|round| round[index].clone()).collect();
            if traffic::wants_backend(&request.expect) == Some(false) {
                self.check_backends_not_reached(&answers).await?;
            }
            if settings.record_traffic {
                let seen = traffic::observations(&answers, &self.target.run_id);
                self.traffic
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((format!("step {step}.{}", index + 1), seen));
            }
        }
        Ok(())
    }

    /// What a generated case's HTTPProxies and requests settle to, recorded as traffic
    /// (`observe PATH`); the statuses are recorded at the end, as for every scenario. First
    /// every HTTPProxy applied must have a status for its generation; then each path is asked
    /// until `SETTLED` answers in a row show the same, where an answer that only says the
    /// route or its endpoints are not programmed yet (404, no healthy upstream, no answer)
    /// while every HTTPProxy is valid counts only once `PROVISIONAL` has passed. A path that
    /// never settles is recorded with the answers seen last.
    async fn observe(&self, step: usize, paths: &[String]) -> Result<(), StepError> {
        const SETTLED: usize = 20;
        const PROVISIONAL: std::time::Duration = std::time::Duration::from_secs(5);
        let settings = &self.target.settings;
        // An HTTPProxy that is not valid programs nothing: its 404 is final at once.
        let mut all_valid = true;
        for object in self.applied.iter().filter(|o| o.kind == "HTTPProxy") {
            let reconciled = |o: &Value| status_is_current(o) && o["status"]["currentStatus"].is_string();
            match self.target.cluster.wait_for(object, settings.status_limit, reconciled).await.map_err(plain)? {
                Ok(found) => all_valid &= found["status"]["currentStatus"] == "valid",
                Err(_) => {
                    let limit = settings.status_limit;
                    return Err(plain(format!("{object}: no status for its generation within {limit:?}")));
                }
            }
        }
        let host = self.bindings.expand("${host}").map_err(plain)?;
        let client = traffic::client(self.target.proxy);
        for (index, path) in paths.iter().enumerate() {
            let url = format!("http://{host}:{}{path}", self.target.proxy.port());
            let started = Instant::now();
            let (mut streak, mut last) = (Vec::<Answer>::new(), None::<Value>);
            let mut attempts = 0;
            let seen = loop {
                attempts += 1;
                let id = format!("{}-s{step}-{}-{attempts}", self.namespace, index + 1);
                let answer = traffic::send(&client, &url, &[], &id).await;
                let observed = traffic::observations(std::slice::from_ref(&answer), &self.target.run_id);
                if last.as_ref() != Some(&observed) {
                    streak.clear();
                }
                let provisional = all_valid
                    && (matches!(answer.status, None | Some(404)) || answer.body.trim() == "no healthy upstream");
                streak.push(answer);
                last = Some(observed.clone());
                if streak.len() >= SETTLED && (!provisional || started.elapsed() >= PROVISIONAL) {
                    break observed;
                }
                if started.elapsed() >= settings.traffic_limit {
                    break serde_json::json!({ "unsettled": observed });
                }
                tokio::time::sleep(settings.traffic_interval).await;
            };
            if settings.record_traffic {
                self.traffic.lock().unwrap_or_else(|e| e.into_inner()).push((format!("observe {path}"), seen));
            }
        }
        Ok(())
    }

    /// Where and how a request over TLS goes: the target's TLS address, the host as SNI, and
    /// the scenario's CA `tls.trust` as the one trust anchor.
    fn tls_request(&self, tls: &crate::scenario::RequestTls, host: &str) -> Result<traffic::TlsRequest, StepError> {
        let address = self.target.tls_proxy.ok_or_else(|| {
            plain("the target has no TLS proxy address (give it with --tls-proxy or cluster.tlsProxy)".to_string())
        })?;
        let material = self
            .pki
            .as_ref()
            .and_then(|pki| pki.get(&tls.trust.value))
            .ok_or_else(|| plain(format!("no PKI entry {:?}", tls.trust.value)))?;
        let trust = rustls::pki_types::pem::PemObject::from_pem_slice(material.cert_pem.as_bytes())
            .map_err(|e| plain(format!("PKI entry {:?}: {e}", tls.trust.value)))?;
        let certificate_name = match &tls.certificate_name {
            Some(name) => self.bindings.expand(&name.value).map_err(plain)?,
            None => host.to_string(),
        };
        let versions = tls.versions.iter().flatten().map(|version| match version {
            TlsVersionSpec::Tls12 => &rustls::version::TLS12,
            TlsVersionSpec::Tls13 => &rustls::version::TLS13,
        });
        Ok(traffic::TlsRequest {
            address,
            sni: host.to_string(),
            trust,
            certificate_name,
            versions: versions.collect(),
        })
    }

    /// Whether each answer shows up in the access log of a backend other than the one that
    /// answered it, as a copy matching `want`; if not, which request and why.
    async fn mirror_copies(
        &self,
        answers: &[Answer],
        want: &BackendExpectation,
    ) -> Result<Result<(), String>, StepError> {
        let logs = self.backend_logs().await?;
        let echoes: Vec<BackendEcho> = logs
            .iter()
            .flat_map(|(_, _, text)| text.lines())
            .filter_map(|line| serde_json::from_str(line.trim()).ok())
            .collect();
        for answer in answers {
            let answered_by = answer.echo.as_ref().map(|e| e.backend.as_str());
            let copies: Vec<&BackendEcho> = echoes
                .iter()
                .filter(|e| e.request_id == answer.request_id && Some(e.backend.as_str()) != answered_by)
                .collect();
            if copies.iter().any(|copy| traffic::check_echo(want, copy).is_ok()) {
                continue;
            }
            let why = match copies.first() {
                None => "no backend but the one that answered logged it".to_string(),
                Some(copy) => traffic::check_echo(want, copy).err().map(|m| m.0).unwrap_or_default(),
            };
            return Ok(Err(format!("request {}: {why}", answer.request_id)));
        }
        Ok(Ok(()))
    }

    /// Sends requests one at a time until `consecutive` of them in a row pass `expect` and each
    /// has its mirror copy within [`MIRROR_COPY_WAIT`], or the traffic time limit passes.
    async fn until_mirrored<F, Fut>(
        &self,
        send: F,
        expect: &ResponseExpectation,
        want: &BackendExpectation,
    ) -> Result<(), StepError>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = Answer>,
    {
        let settings = &self.target.settings;
        let deadline = Instant::now() + settings.traffic_limit;
        let (mut streak, mut last) = (Vec::new(), String::new());
        for n in 0.. {
            if Instant::now() >= deadline {
                break;
            }
            let answer = send(n).await;
            if let Err(mismatch) = traffic::check(expect, &answer) {
                (streak, last) = (Vec::new(), mismatch.0);
                tokio::time::sleep(settings.traffic_interval).await;
                continue;
            }
            let copy_deadline = Instant::now() + MIRROR_COPY_WAIT;
            let copied = loop {
                match self.mirror_copies(std::slice::from_ref(&answer), want).await? {
                    Ok(()) => break true,
                    Err(why) if Instant::now() >= copy_deadline => {
                        last = why;
                        break false;
                    }
                    Err(_) => tokio::time::sleep(settings.traffic_interval).await,
                }
            };
            if !copied {
                streak.clear();
                continue;
            }
            streak.push(answer);
            if streak.len() >= settings.consecutive {
                return Ok(());
            }
        }
        Err((
            format!(
                "mirror: no {} consecutive answers with their copies within {:?}; last: {last}",
                settings.consecutive, settings.traffic_limit
            ),
            streak,
        ))
    }

    /// The access logs of every backend pod of the scenario: `(pod, state, text)`.
    async fn backend_logs(&self) -> Result<Vec<(String, String, String)>, StepError> {
        let selector = "app.kubernetes.io/part-of=upstream-tls-conformance";
        let mut namespaces: Vec<&str> =
            self.loaded.scenario.backends.iter().map(|b| self.backend_namespace(b)).collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        let mut logs = Vec::new();
        for namespace in namespaces {
            let found = self
                .target
                .cluster
                .pod_logs(namespace, selector)
                .await
                .map_err(|e| plain(format!("cannot read backend logs: {e}")))?;
            logs.extend(found);
        }
        Ok(logs)
    }

    /// The answers said the backend was not reached; its access log must agree.
    async fn check_backends_not_reached(&self, answers: &[Answer]) -> Result<(), StepError> {
        let logs = self.backend_logs().await?;
        for answer in answers {
            if let Some((pod, _, _)) = logs.iter().find(|(_, _, text)| text.contains(&answer.request_id)) {
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

/// How long a mirror's copy of one request may take to show in the mirror's access log.
const MIRROR_COPY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// `utls-<scenario>-<name>-<run id>` within 63 characters, keeping `<name>` and the run id.
pub(super) fn extra_namespace_name(scenario: &str, name: &str, run_id: &str) -> String {
    let mut prefix = format!("utls-{scenario}");
    prefix.truncate(63 - name.len() - run_id.len() - 2);
    format!("{}-{name}-{run_id}", prefix.trim_end_matches('-'))
}

/// `object` without its managed fields, and with every Secret value replaced by its size.
fn redact_object(mut object: Value) -> Value {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
    }
    if object["kind"] == "Secret" {
        for field in ["data", "stringData"] {
            if let Some(values) = object.get_mut(field).and_then(Value::as_object_mut) {
                for value in values.values_mut() {
                    let size = value.as_str().map_or(0, str::len);
                    *value = Value::String(format!("<redacted, {size} characters>"));
                }
            }
        }
    }
    object
}

/// A request step's request, expanded: what to send and what every answer must show.
struct Prepared {
    host: String,
    path: String,
    url: String,
    headers: Vec<(String, String)>,
    client: traffic::Client,
    tls: Option<traffic::TlsRequest>,
    expect: ResponseExpectation,
}

impl Prepared {
    /// Sends the request once, with `id` as its request id.
    async fn send(&self, id: String) -> Answer {
        match &self.tls {
            Some(tls) => traffic::send_tls(tls, &self.host, &self.path, &self.headers, &id).await,
            None => traffic::send(&self.client, &self.url, &self.headers, &id).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extra_namespaces_keep_their_name_and_the_run_id() {
        let name = extra_namespace_name(&"x".repeat(40), "ca-store", "a1b2c3d4");
        assert!(name.len() <= 63, "{name}");
        assert!(name.ends_with("-ca-store-a1b2c3d4"), "{name}");
    }

    #[test]
    fn secrets_lose_their_values_and_objects_their_managed_fields() {
        let secret = json!({"kind": "Secret", "metadata": {"name": "s", "managedFields": [{}]},
            "data": {"tls.key": "TUlJQg=="}, "stringData": {"ca.crt": "x"}});
        let redacted = redact_object(secret);
        assert_eq!(redacted["data"]["tls.key"], "<redacted, 8 characters>");
        assert_eq!(redacted["stringData"]["ca.crt"], "<redacted, 1 characters>");
        assert!(redacted["metadata"].get("managedFields").is_none());
        let service = json!({"kind": "Service", "metadata": {"name": "s"}, "data": {"keep": "me"}});
        assert_eq!(redact_object(service.clone()), service);
    }
}
