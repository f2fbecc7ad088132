//! Choosing and reaching the implementation under test: [`TargetConfig`] says where (a real
//! cluster with its proxy address, or the built-in loopback cluster) and [`Environment`] is
//! the connected result: one [`Target`] per installation.
//!
//! Loopback is started here and then used exactly like a real cluster: the runner gets a
//! kubeconfig path and a proxy address and nothing else. It runs two installations, so that
//! scenarios needing opposite install-wide settings all run: [`loopback_installations`]. A
//! scenario that changes install-wide state gets a loopback cluster of its own, so it runs
//! alongside the others; on a real cluster it has to run alone ([`Environment::needs_alone`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loopback::config::{
    ContourSettings, ContourSettingsSource, ControllerKind, DataPlaneKind, EnvoySettings, GatewayConfig, Pairing,
    SecretName, release_pairs,
};
use loopback::{Disruption, Fault, LatencyProfile, Loopback, LoopbackConfig};

use crate::cluster::{ClusterClient, ClusterError, ObjectRef, RUN_LABEL};
use crate::install::{GatewaySetup, InstallClientCertificate, Installation, SecretRef, SkipReason, TlsVersion};
use crate::known::{self, KnownFailure};
use crate::report::DiagnosticFile;
use crate::runner::{Event, Observer, RunSettings, ScenarioOutcome, Target, run_scenario, scenario_namespaces};
use crate::scenario::{Feature, LoadedScenario};

/// Environment variables the entry points read (documented in book/src/real-cluster.md).
pub mod env {
    /// `host:port` where the implementation's proxy serves plain HTTP. Setting it selects a
    /// real cluster instead of loopback.
    pub const PROXY: &str = "UPSTREAM_TLS_PROXY";
    /// `host:port` where the implementation's proxy serves TLS virtual hosts (Envoy's HTTPS
    /// listener); without it, scenarios with feature `tcp-proxy` are skipped on real clusters.
    pub const TLS_PROXY: &str = "UPSTREAM_TLS_TLS_PROXY";
    /// The kubeconfig file for the real cluster (default: `$KUBECONFIG`, `~/.kube/config`).
    pub const KUBECONFIG: &str = "UPSTREAM_TLS_KUBECONFIG";
    /// The kubeconfig context (default: the current one).
    pub const CONTEXT: &str = "UPSTREAM_TLS_CONTEXT";
    /// Backend container image on a real cluster.
    pub const IMAGE: &str = "UPSTREAM_TLS_IMAGE";
    /// Comma-separated loopback faults to switch on.
    pub const FAULTS: &str = "UPSTREAM_TLS_LOOPBACK_FAULTS";
    /// Comma-separated loopback disruptions (API errors, crashing backends...) to run under.
    pub const DISRUPTIONS: &str = "UPSTREAM_TLS_LOOPBACK_DISRUPTIONS";
    /// The loopback latency profile: `none` (default) or `kind`, a real cluster's pace.
    pub const LATENCY: &str = "UPSTREAM_TLS_LOOPBACK_LATENCY";
    /// The implementation's version, for the reports, instead of the config file's.
    pub const IMPLEMENTATION_VERSION: &str = "UPSTREAM_TLS_IMPLEMENTATION_VERSION";
    /// The scenario directory (default: the repository's `scenarios/`).
    pub const SCENARIOS: &str = "UPSTREAM_TLS_SCENARIOS";
    /// Where reports go (default: the repository's `reports/`).
    pub const REPORTS: &str = "UPSTREAM_TLS_REPORTS";
    /// The `report.json` of an earlier run to compare this one with.
    pub const BASELINE: &str = "UPSTREAM_TLS_BASELINE";
    /// Set to 1 to keep scenario namespaces after the run.
    pub const KEEP_NAMESPACES: &str = "UPSTREAM_TLS_KEEP_NAMESPACES";
    /// `NAMESPACE/NAME` of the Secret the installation reads its Envoy client certificate from
    /// (Contour's `tls.envoy-client-certificate`); the harness writes it. Unset: scenarios
    /// needing a client certificate are skipped on real clusters.
    pub const CLIENT_CERT_SECRET: &str = "UPSTREAM_TLS_CLIENT_CERT_SECRET";
    /// The installation's `cluster.upstream-tls.minimum-protocol-version` (default 1.2).
    pub const MIN_TLS_VERSION: &str = "UPSTREAM_TLS_MIN_TLS_VERSION";
    /// The installation's `cluster.upstream-tls.maximum-protocol-version` (default 1.3).
    pub const MAX_TLS_VERSION: &str = "UPSTREAM_TLS_MAX_TLS_VERSION";
    /// The controller loopback runs: `reference` (default) or `contour` (the real Contour,
    /// built by `scripts/ensure-contour`).
    pub const CONTROLLER: &str = "UPSTREAM_TLS_CONTROLLER";
    /// The Contour release loopback runs with the `contour` controller (default: the first
    /// line of `loopback/contour-versions`).
    pub const CONTOUR_VERSION: &str = "UPSTREAM_TLS_CONTOUR_VERSION";
    /// Where the real Contour in loopback reads the installation's settings from:
    /// `config-file` (default) or `contour-configuration`.
    pub const CONTOUR_SETTINGS_FROM: &str = "UPSTREAM_TLS_CONTOUR_SETTINGS_FROM";
    /// What serves loopback's traffic: `loopback` (its own proxy, default) or `envoy` (Envoy
    /// programmed by the real Contour, fetched by `scripts/ensure-envoy`).
    pub const DATA_PLANE: &str = "UPSTREAM_TLS_DATA_PLANE";
    /// The Envoy release loopback runs with the `envoy` data plane (default: the one
    /// `loopback/contour-versions` pairs with the Contour release).
    pub const ENVOY_VERSION: &str = "UPSTREAM_TLS_ENVOY_VERSION";
    /// The implementation config file (see `examples/implementation.yaml`).
    pub const CONFIG: &str = "UPSTREAM_TLS_CONFIG";
    /// Comma-separated: run only scenarios with one of these features or name parts.
    pub const RUN: &str = "UPSTREAM_TLS_RUN";
    /// Comma-separated: skip scenarios with one of these features or name parts.
    pub const SKIP: &str = "UPSTREAM_TLS_SKIP";
    /// How many scenarios run at once (default: all of them on loopback, 16 on a real cluster).
    pub const PARALLEL: &str = "UPSTREAM_TLS_PARALLEL";
}

/// The installations loopback runs side by side: Contour's defaults with a client
/// certificate, and one without a client certificate whose upstream TLS stops at 1.2, with
/// cipher suites of its own, and which has enabled ExternalName Services.
pub fn loopback_installations() -> [Installation; 2] {
    [
        Installation {
            client_certificate: Some(SecretRef::default_client_certificate()),
            tls_listener: true,
            ..Default::default()
        },
        Installation {
            upstream_tls: (TlsVersion::V1_2, TlsVersion::V1_2),
            cipher_suites: Some(crate::install::CUSTOM_CIPHER_SUITES.map(String::from).into()),
            external_name_services: true,
            tls_listener: true,
            ..Default::default()
        },
    ]
}

/// The installation loopback adds when the real Contour runs: Contour's defaults, reconciling
/// the Gateway of [`GatewaySetup::loopback`], for the Gateway API scenarios.
pub fn gateway_installation() -> Installation {
    Installation { tls_listener: true, gateway: Some(GatewaySetup::loopback()), ..Default::default() }
}

/// Where to run.
#[derive(Debug, Clone)]
pub enum TargetConfig {
    /// Start the built-in loopback cluster, as these options say.
    Loopback(LoopbackOptions),
    /// A real cluster reached through a kubeconfig, and its proxy.
    Cluster {
        kubeconfig: Option<PathBuf>,
        context: Option<String>,
        proxy: String,
        /// Where the proxy serves TLS virtual hosts (`host:port`), if given.
        tls_proxy: Option<String>,
        /// The installation's install-wide settings, as declared.
        installation: Installation,
        /// The scenarios the implementation is known to fail, as declared.
        known_failures: Vec<KnownFailure>,
    },
}

/// How the built-in loopback cluster is started and what runs on it.
#[derive(Debug, Clone, Default)]
pub struct LoopbackOptions {
    /// Faults switched on: the catalog should then fail.
    pub faults: Vec<Fault>,
    /// Features the implementation does not claim: their scenarios are skipped.
    pub exempt: Vec<Feature>,
    pub controller: LoopbackController,
    /// Trouble the harness must ride out or report.
    pub disruptions: Vec<Disruption>,
    /// How slow the cluster is (`kind`: a real cluster's pace).
    pub latency: LatencyProfile,
}

impl LoopbackOptions {
    /// Loopback as it comes, with `faults` switched on.
    pub fn with_faults(faults: Vec<Fault>) -> Self {
        LoopbackOptions { faults, ..Default::default() }
    }
}

/// The controller a loopback cluster runs, for the real Contour which release, and the data
/// plane it programs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoopbackController {
    pub kind: ControllerKind,
    /// The Contour release (`v1.33.6`); default: the first of `loopback/contour-versions`.
    pub contour_version: Option<String>,
    /// Where the real Contour reads the installation's settings from.
    pub settings_from: ContourSettingsSource,
    /// Loopback's proxy, or Envoy (with the real Contour only).
    pub data_plane: DataPlaneKind,
    /// The Envoy release; default: the one `loopback/contour-versions` pairs with Contour's.
    pub envoy_version: Option<String>,
}

impl LoopbackController {
    /// The real Contour, at its default release, with loopback's proxy.
    pub fn contour() -> Self {
        LoopbackController { kind: ControllerKind::Contour, ..Default::default() }
    }

    /// The real Contour and Envoy, at their default releases.
    pub fn contour_with_envoy() -> Self {
        LoopbackController { data_plane: DataPlaneKind::Envoy, ..LoopbackController::contour() }
    }

    /// The Contour release run, when it is the real Contour.
    pub fn contour_release(&self) -> Option<String> {
        (self.kind == ControllerKind::Contour).then(|| self.settings().version().to_string())
    }

    /// The Envoy release run, when Envoy is the data plane, with how it pairs with the
    /// Contour release (exact, nearest published patch, or chosen by the user); `None` when
    /// no release is paired with that Contour release and none was named.
    pub fn envoy_release(&self) -> Option<EnvoyRelease> {
        let contour = self.contour_release().filter(|_| self.data_plane == DataPlaneKind::Envoy)?;
        let settings = EnvoySettings { version: self.envoy_version.clone(), binary: None };
        let version = settings.version_for(&contour).ok()?;
        let pair = release_pairs().into_iter().find(|pair| pair.contour == contour);
        let pairing = match pair {
            Some(pair) if pair.envoy == Some(version.as_str()) => pair.pairing,
            _ => Pairing::None,
        };
        Some(EnvoyRelease { version, pairing })
    }

    fn settings(&self) -> ContourSettings {
        ContourSettings { version: self.contour_version.clone(), binary: None, settings_from: self.settings_from }
    }

    /// How reports name what runs: which controller, and which data plane.
    pub fn describe(&self) -> String {
        let Some(version) = self.contour_release() else {
            return "loopback's reference controller and data plane".into();
        };
        let configured = match self.settings_from {
            ContourSettingsSource::ContourConfiguration => ", configured by a ContourConfiguration object",
            ContourSettingsSource::ConfigFile => "",
        };
        let data_plane = match self.envoy_release() {
            Some(envoy) => format!("Envoy {}", envoy.describe()),
            None if self.data_plane == DataPlaneKind::Envoy => "Envoy (no release paired)".into(),
            None => "loopback's data plane".into(),
        };
        format!("the real Contour {version} controller{configured}, with {data_plane}")
    }
}

/// The Envoy release a loopback cluster runs, and how it pairs with the Contour release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvoyRelease {
    pub version: String,
    pub pairing: Pairing,
}

impl EnvoyRelease {
    /// `1.38.3`, with a note unless it is the one Contour's own manifests pin.
    pub fn describe(&self) -> String {
        match self.pairing {
            Pairing::Exact => self.version.clone(),
            Pairing::Nearest => format!("{}, the nearest published patch to the one Contour pins", self.version),
            Pairing::None => format!("{}, chosen for this run rather than the one Contour pins", self.version),
        }
    }
}

/// A target setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{variable}: {message}")]
    Setting { variable: &'static str, message: String },
    #[error("cannot start the loopback cluster: {0}")]
    Loopback(#[from] loopback::StartError),
    #[error("cannot resolve proxy address {address:?}: {message}")]
    ProxyAddress { address: String, message: String },
    #[error("the cluster is not ready for the suite: {0}")]
    Preflight(String),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("cannot generate the Envoy client certificate for {secret}: {message}")]
    ClientCertificate { secret: SecretRef, message: String },
}

impl TargetError {
    /// Whether the user's input is at fault (a kubeconfig that is no file, or no YAML), not the
    /// environment.
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, TargetError::Cluster(e) if e.is_invalid_input())
    }
}

impl TargetConfig {
    /// The installations this config tests.
    pub fn installations(&self) -> Vec<Installation> {
        match self {
            TargetConfig::Loopback(options) => {
                let mut installations: Vec<Installation> = loopback_installations().into();
                // The Gateway API front door has no reference model: it runs with the real
                // Contour only, on a cluster of its own so the others keep Contour's usual
                // listeners.
                if options.controller.kind == ControllerKind::Contour {
                    installations.push(gateway_installation());
                }
                installations
                    .into_iter()
                    .map(|installation| Installation { exempt: options.exempt.clone(), ..installation })
                    .collect()
            }
            TargetConfig::Cluster { installation, .. } => vec![installation.clone()],
        }
    }

    /// The scenarios the implementation under test is known to fail ([`crate::known`]): as the
    /// config file declares them on a real cluster, those of the real Contour release on
    /// loopback, none for loopback's reference controller.
    pub fn known_failures(&self) -> Vec<KnownFailure> {
        match self {
            TargetConfig::Loopback(options) => options
                .controller
                .contour_release()
                .map(|release| known::for_contour_release(&release))
                .unwrap_or_default(),
            TargetConfig::Cluster { known_failures, .. } => known_failures.clone(),
        }
    }

    /// Why no installation of this config can run a scenario with `features`, if none can.
    pub fn lacks(&self, features: &[Feature]) -> Option<SkipReason> {
        choose(self.installations().iter(), features).err()
    }

    /// The Gateway API release and channel the cluster serves, when the harness knows it: on
    /// loopback with the real Contour, the bundle that release ships.
    pub fn gateway_api_bundle(&self) -> Option<crate::report::GatewayApiBundle> {
        let TargetConfig::Loopback(options) = self else { return None };
        options.controller.contour_release()?;
        let crds = loopback_config(&gateway_installation(), options).gateway_crds()?;
        let text = std::fs::read_to_string(crds).ok()?;
        let (version, channel) = loopback::config::gateway_api_bundle(&text)?;
        Some(crate::report::GatewayApiBundle { version, channel })
    }

    /// The loopback faults switched on (none on a real cluster).
    pub fn faults(&self) -> &[Fault] {
        match self {
            TargetConfig::Loopback(options) => &options.faults,
            TargetConfig::Cluster { .. } => &[],
        }
    }

    /// Whether scenarios that change install-wide state get a loopback cluster of their own
    /// (so they run alongside the others): on loopback, unless it runs at a real cluster's
    /// pace, where the harness schedules as on a real cluster so that this can be measured.
    pub fn clusters_of_their_own(&self) -> bool {
        matches!(self, TargetConfig::Loopback(options) if options.latency == LatencyProfile::None)
    }

    /// One line for run headers: what is being tested.
    pub fn describe(&self) -> String {
        match self {
            TargetConfig::Loopback(options) => {
                let mut text = format!("built-in loopback cluster ({})", options.controller.describe());
                if !options.faults.is_empty() {
                    let names: Vec<&str> = options.faults.iter().map(|f| f.name()).collect();
                    text.push_str(&format!(" with faults: {}", names.join(", ")));
                }
                if !options.disruptions.is_empty() {
                    let names: Vec<&str> = options.disruptions.iter().map(|d| d.name()).collect();
                    text.push_str(&format!(" under disruptions: {}", names.join(", ")));
                }
                if options.latency != LatencyProfile::None {
                    text.push_str(&format!(" at the {} latency profile's pace", options.latency));
                }
                text
            }
            TargetConfig::Cluster { kubeconfig, context, proxy, tls_proxy, installation, .. } => format!(
                "cluster from {} (context {}), proxy {proxy}{}; {}",
                kubeconfig.as_ref().map_or("the default kubeconfig".into(), |p| p.display().to_string()),
                context.as_deref().unwrap_or("current"),
                tls_proxy.as_ref().map(|a| format!(", TLS proxy {a}")).unwrap_or_default(),
                installation.describe(),
            ),
        }
    }
}

/// A connected target: one [`Target`] per installation, owning the loopback clusters when
/// there are some.
pub struct Environment {
    /// In the order of [`TargetConfig::installations`].
    pub targets: Vec<Target>,
    loopbacks: Vec<Loopback>,
    /// What it was started from, to start more loopback clusters like it.
    config: TargetConfig,
    /// The real Contour's and Envoy's logs from clusters started for one scenario, kept after
    /// they stop.
    own_cluster_logs: Mutex<Vec<DiagnosticFile>>,
    /// The disruptions clusters started for one scenario injected, kept after they stop.
    own_cluster_disruptions: Mutex<Vec<(Disruption, u64)>>,
    /// The CPU time the outside programs of clusters started for one scenario used, by
    /// program, kept after they stop.
    own_cluster_cpu: Mutex<Vec<(&'static str, Duration)>>,
    /// What the implementation is known to fail ([`TargetConfig::known_failures`]).
    known_failures: Vec<KnownFailure>,
}

impl Environment {
    /// Starts loopback if asked, connects to the cluster and checks that it answers, and
    /// writes the installation's client certificate Secret when it has one.
    ///
    /// # Errors
    /// Loopback cannot start, the cluster does not answer, the proxy address does not resolve.
    pub async fn connect(config: &TargetConfig, settings: RunSettings) -> Result<Self, TargetError> {
        let run_id = run_id();
        let mut environment = Environment {
            targets: Vec::new(),
            loopbacks: Vec::new(),
            config: config.clone(),
            own_cluster_logs: Mutex::default(),
            own_cluster_disruptions: Mutex::default(),
            own_cluster_cpu: Mutex::default(),
            known_failures: config.known_failures(),
        };
        for installation in config.installations() {
            match start_target(config, installation, &run_id, &settings).await {
                Ok((target, loopback)) => {
                    environment.targets.push(target);
                    environment.loopbacks.extend(loopback);
                }
                Err(e) => {
                    // The installations started before this one leave nothing behind either.
                    if let Err(cleanup) = environment.remove_installation_state(FAILED_START_CLEANUP_LIMIT).await {
                        tracing::warn!("cannot remove the installation's client certificate: {cleanup}");
                    }
                    environment.shutdown().await;
                    return Err(e);
                }
            }
        }
        Ok(environment)
    }

    /// The loopback clusters this environment started, in the order of its targets (none on a
    /// real cluster). For tests that look inside loopback; the runner never does.
    pub fn loopbacks(&self) -> &[Loopback] {
        &self.loopbacks
    }

    /// The logs of the real Contour controllers this environment runs on loopback (one per
    /// installation, then one per scenario that had a cluster of its own), so far; read
    /// before [`Environment::shutdown`], which removes the running ones.
    pub fn diagnostic_files(&self) -> Vec<DiagnosticFile> {
        let running = self
            .loopbacks
            .iter()
            .enumerate()
            .flat_map(|(index, loopback)| program_logs(loopback, &format!("installation-{}", index + 1)));
        let stopped = self.own_cluster_logs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        running.chain(stopped).collect()
    }

    /// The CPU time the outside programs of every loopback cluster of this environment (the
    /// real Contour, Envoy) used so far, summed by program; read before
    /// [`Environment::shutdown`]. Empty on a real cluster.
    pub fn program_cpu(&self) -> Vec<(&'static str, Duration)> {
        let stopped = self.own_cluster_cpu.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut totals: Vec<(&'static str, Duration)> = Vec::new();
        for (program, cpu) in self.loopbacks.iter().flat_map(Loopback::program_cpu).chain(stopped) {
            match totals.iter_mut().find(|(p, _)| *p == program) {
                Some(total) => total.1 += cpu,
                None => totals.push((program, cpu)),
            }
        }
        totals
    }

    /// How many times each loopback disruption switched on was injected so far, over every
    /// cluster this environment started (none on a real cluster).
    pub fn disruption_counts(&self) -> Vec<(Disruption, u64)> {
        let TargetConfig::Loopback(LoopbackOptions { disruptions, .. }) = &self.config else { return Vec::new() };
        let stopped = self.own_cluster_disruptions.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let counts = self.loopbacks.iter().flat_map(Loopback::disruption_counts).chain(stopped);
        let mut totals: Vec<(Disruption, u64)> = disruptions.iter().map(|d| (*d, 0)).collect();
        for (disruption, count) in counts {
            if let Some(total) = totals.iter_mut().find(|(d, _)| *d == disruption) {
                total.1 += count;
            }
        }
        totals
    }

    /// Distinguishes this run's namespaces and host names from any other run's.
    pub fn run_id(&self) -> &str {
        self.targets.first().map_or("", |t| t.run_id.as_str())
    }

    /// Whether `scenario` must run while no other scenario does: it changes install-wide
    /// state, and it gets no cluster of its own ([`TargetConfig::clusters_of_their_own`]).
    pub fn needs_alone(&self, scenario: &LoadedScenario) -> bool {
        scenario.scenario.exclusive() && !self.config.clusters_of_their_own()
    }

    fn is_loopback(&self) -> bool {
        matches!(self.config, TargetConfig::Loopback(_))
    }

    /// Runs `scenario` on the first installation that has every feature it needs; with none,
    /// it is skipped with the first installation's reason. On loopback, a scenario that
    /// changes install-wide state runs on a new cluster with that installation's settings. A
    /// scenario the implementation is known to fail is classified so ([`known::classify`]).
    pub async fn run(&self, scenario: &LoadedScenario, observer: &dyn Observer) -> ScenarioOutcome {
        let outcome = known::classify(self.run_unclassified(scenario, observer).await, &self.known_failures);
        observer.event(Event::ScenarioFinished { outcome: &outcome });
        outcome
    }

    async fn run_unclassified(&self, scenario: &LoadedScenario, observer: &dyn Observer) -> ScenarioOutcome {
        let installations = self.targets.iter().map(|t| &t.installation);
        let index = choose(installations, &scenario.scenario.features).unwrap_or(0);
        let target = &self.targets[index];
        let runs = target.installation.lacks_any(&scenario.scenario.features).is_none();
        if runs && scenario.scenario.exclusive() && self.config.clusters_of_their_own() {
            return self.run_on_own_cluster(target, scenario, observer).await;
        }
        let from = Instant::now();
        let mut outcome = run_scenario(target, scenario, observer).await;
        if let Some(loopback) = self.loopbacks.get(index) {
            outcome.held_off = held_off(loopback, &outcome, scenario, &target.run_id, from);
        }
        if runs && scenario.scenario.disturbs_others() && !target.settings.keep_namespaces {
            // What it applied must be gone before the next scenario starts: the wait is the
            // scenario's own time (the benchmark's critical path counts it).
            let deleting = Instant::now();
            for namespace in scenario_namespaces(scenario, &target.run_id) {
                if let Err(e) = target.cluster.delete_namespace(&namespace, DISTURBING_DELETION_LIMIT).await {
                    outcome.cleanup_error.get_or_insert_with(|| e.to_string());
                }
            }
            outcome.duration += deleting.elapsed();
        }
        outcome
    }

    /// The outcome's duration includes starting the cluster.
    async fn run_on_own_cluster(
        &self,
        like: &Target,
        scenario: &LoadedScenario,
        observer: &dyn Observer,
    ) -> ScenarioOutcome {
        let clock = Instant::now();
        let started = start_target(&self.config, like.installation.clone(), &like.run_id, &like.settings).await;
        let (target, loopback) = match started {
            Ok(started) => started,
            Err(e) => {
                let message = format!("cannot start a loopback cluster of its own: {e}");
                return ScenarioOutcome::set_up_failed(scenario, like.installation.describe(), message);
            }
        };
        let starting = clock.elapsed();
        let from = Instant::now();
        let mut outcome = run_scenario(&target, scenario, observer).await;
        outcome.duration += starting;
        if let Some(loopback) = loopback {
            outcome.held_off = held_off(&loopback, &outcome, scenario, &target.run_id, from);
            let logs = program_logs(&loopback, scenario.name());
            self.own_cluster_logs.lock().unwrap_or_else(|e| e.into_inner()).extend(logs);
            let counts = loopback.disruption_counts();
            self.own_cluster_disruptions.lock().unwrap_or_else(|e| e.into_inner()).extend(counts);
            self.own_cluster_cpu.lock().unwrap_or_else(|e| e.into_inner()).extend(loopback.program_cpu());
            loopback.shutdown().await;
        }
        outcome
    }

    /// Deletes the namespaces of this run that scenarios left behind (a stopped run abandons
    /// the scenarios it was running), waiting up to `limit`. On loopback there is nothing to
    /// do: shutting it down removes everything. Returns the namespaces deleted.
    ///
    /// # Errors
    /// As [`ClusterClient::delete_namespaces_labelled`].
    pub async fn delete_run(&self, limit: Duration) -> Result<Vec<String>, ClusterError> {
        if self.is_loopback() {
            return Ok(Vec::new());
        }
        let Some(target) = self.targets.first() else { return Ok(Vec::new()) };
        let selector = format!("{RUN_LABEL}={}", target.run_id);
        target.cluster.delete_namespaces_labelled(&selector, None, limit).await
    }

    /// Waits until every namespace this run created is gone, on every cluster of the
    /// environment, up to `limit` in all: scenarios have their namespaces deleted without
    /// waiting, so that deletion (seconds on a real cluster) is off the run's critical path
    /// and paid once, here. Nothing to wait for when namespaces are kept. Returns the
    /// namespaces waited for.
    ///
    /// # Errors
    /// Listing fails, or some namespace is still there after `limit`.
    pub async fn await_namespace_deletion(&self, limit: Duration) -> Result<Vec<String>, ClusterError> {
        let waits = self.targets.iter().filter(|t| !t.settings.keep_namespaces).map(|target| {
            let selector = format!("{RUN_LABEL}={}", target.run_id);
            async move { target.cluster.delete_namespaces_labelled(&selector, None, limit).await }
        });
        let mut waited = Vec::new();
        for result in futures::future::join_all(waits).await {
            waited.extend(result?);
        }
        Ok(waited)
    }

    /// On a real cluster, removes what the run wrote for the installation (the Envoy client
    /// certificate Secret, and its namespace when the run created it; the Gateway, its class
    /// and namespace when the run made them), unless namespaces are kept; on loopback,
    /// shutting down removes everything. Returns what was removed.
    ///
    /// # Errors
    /// A deletion is refused or outlasts `limit`.
    pub async fn remove_installation_state(&self, limit: Duration) -> Result<Vec<String>, ClusterError> {
        let mut removed = Vec::new();
        if self.is_loopback() {
            return Ok(removed);
        }
        for target in self.targets.iter().filter(|t| !t.settings.keep_namespaces) {
            removed.extend(remove_target_state(target, limit).await?);
        }
        Ok(removed)
    }

    /// Stops loopback, if this environment started it.
    pub async fn shutdown(self) {
        for loopback in self.loopbacks {
            loopback.shutdown().await;
        }
    }
}

/// What the run wrote into a real cluster for one installation (see
/// [`Environment::remove_installation_state`]), removed; returns what was.
async fn remove_target_state(target: &Target, limit: Duration) -> Result<Vec<String>, ClusterError> {
    let mut removed = Vec::new();
    if let Some(install) = &target.client_certificate {
        install.remove(&target.cluster, limit).await?;
        removed.push(format!("Secret {}", install.secret));
        if install.namespace_created {
            removed.push(format!("namespace {}", install.secret.namespace));
        }
    }
    for object in target.gateway_made.iter().rev() {
        target.cluster.delete_and_wait(object, limit).await?;
        removed.push(format!("{} {}", object.kind, object.name));
    }
    Ok(removed)
}

/// How long removing an installation's state may take when the run stops before it started.
const FAILED_START_CLEANUP_LIMIT: Duration = Duration::from_secs(120);

/// Connects to one installation, starting its loopback cluster first when the config says
/// loopback, and writes the installation's client certificate Secret when it has one.
async fn start_target(
    config: &TargetConfig,
    installation: Installation,
    run_id: &str,
    settings: &RunSettings,
) -> Result<(Target, Option<Loopback>), TargetError> {
    match config {
        TargetConfig::Loopback(options) => {
            let loopback_config = loopback_config(&installation, options);
            let loopback = Loopback::start(loopback_config).await?;
            let connected = match ClusterClient::connect(Some(loopback.kubeconfig()), None).await {
                Ok(cluster) => {
                    let proxies = (loopback.proxy_address(), Some(loopback.tls_proxy_address()));
                    let envoy_admin = loopback.envoy().map(|envoy| envoy.admin_socket().to_owned());
                    match finish_target(cluster, proxies, installation, run_id, settings).await {
                        // Envoy holds the client certificate before the first scenario, as an
                        // Envoy serving other TLS upstreams does (loopback::envoy).
                        Ok(target) => match (loopback.envoy(), &target.client_certificate) {
                            (Some(envoy), Some(client)) => envoy
                                .wait_for_secret(&client.secret.namespace, &client.secret.name, ENVOY_SECRET_LIMIT)
                                .await
                                .map(|()| Target { envoy_admin, ..target })
                                .map_err(|e| TargetError::Preflight(e.to_string())),
                            _ => Ok(Target { envoy_admin, ..target }),
                        },
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e.into()),
            };
            match connected {
                Ok(target) => Ok((target, Some(loopback))),
                Err(e) => {
                    loopback.shutdown().await;
                    Err(e)
                }
            }
        }
        TargetConfig::Cluster { kubeconfig, context, proxy, tls_proxy, .. } => {
            let cluster = ClusterClient::connect(kubeconfig.as_deref(), context.as_deref()).await?;
            let address = resolve(proxy).await?;
            let refused = preflight(&cluster, proxy, address, &installation.exempt).await?;
            let tls_address = match tls_proxy {
                Some(tls_proxy) => Some(resolve(tls_proxy).await?),
                None => None,
            };
            let target = finish_target(cluster, (address, tls_address), installation, run_id, settings).await?;
            if let Err(e) = canary(&target, refused.as_deref()).await {
                // Nothing runs after a failed canary: what the run wrote goes now (the
                // canary's namespace goes with the run's, by its label).
                if !settings.keep_namespaces
                    && let Err(cleanup) = remove_target_state(&target, FAILED_START_CLEANUP_LIMIT).await
                {
                    tracing::warn!("cannot remove the installation's client certificate: {cleanup}");
                }
                return Err(e);
            }
            Ok((target, None))
        }
    }
}

async fn finish_target(
    cluster: ClusterClient,
    (proxy, tls_proxy): (SocketAddr, Option<SocketAddr>),
    installation: Installation,
    run_id: &str,
    settings: &RunSettings,
) -> Result<Target, TargetError> {
    let gateway_made = match &installation.gateway {
        Some(setup) => setup.ensure(&cluster, GATEWAY_LIMIT).await.map_err(TargetError::Preflight)?,
        None => Vec::new(),
    };
    let client_certificate = match &installation.client_certificate {
        None => None,
        Some(secret) => {
            let mut install = InstallClientCertificate::generate(secret.clone())
                .map_err(|e| TargetError::ClientCertificate { secret: secret.clone(), message: e.to_string() })?;
            let namespace = ObjectRef {
                api_version: "v1".into(),
                kind: "Namespace".into(),
                namespace: None,
                name: secret.namespace.clone(),
            };
            install.namespace_created = cluster.get(&namespace).await?.is_none();
            install.write(&cluster, install.original()).await?;
            Some(Arc::new(install))
        }
    };
    Ok(Target {
        cluster,
        proxy,
        tls_proxy,
        run_id: run_id.to_string(),
        settings: settings.clone(),
        installation,
        client_certificate,
        envoy_admin: None,
        gateway_made,
    })
}

/// The logs of the outside programs `loopback` runs (the real Contour, Envoy), as
/// `contour-<suffix>.log` and `envoy-<suffix>.log`.
fn program_logs(loopback: &Loopback, suffix: &str) -> Vec<DiagnosticFile> {
    let logs = [("contour", loopback.contour_log()), ("envoy", loopback.envoy().map(|e| e.log_path()))];
    logs.into_iter()
        .filter_map(|(program, path)| {
            let text = std::fs::read_to_string(path?).ok()?;
            Some(DiagnosticFile { file_name: format!("{program}-{suffix}.log"), text })
        })
        .collect()
}

/// How long the changes of a scenario that ran from `from` until now waited for `loopback`'s
/// controller to rebuild; `None` for a skipped scenario, or when loopback missed changes.
fn held_off(
    loopback: &Loopback,
    outcome: &ScenarioOutcome,
    scenario: &LoadedScenario,
    run_id: &str,
    from: Instant,
) -> Option<Duration> {
    if outcome.skipped.is_some() {
        return None;
    }
    loopback.rebuilds().held_off(&scenario_namespaces(scenario, run_id), from, Instant::now())
}

/// The index of the first installation that can run a scenario with `features`, or why the
/// first cannot.
fn choose<'a>(
    installations: impl Iterator<Item = &'a Installation> + Clone,
    features: &[Feature],
) -> Result<usize, SkipReason> {
    installations.clone().position(|i| i.lacks_any(features).is_none()).ok_or_else(|| {
        let first = installations.clone().next().and_then(|i| i.lacks_any(features));
        first.unwrap_or(SkipReason { text: "no installation to run on".into(), not_applicable: false })
    })
}

fn loopback_config(installation: &Installation, options: &LoopbackOptions) -> LoopbackConfig {
    let mut config = LoopbackConfig {
        faults: options.faults.clone(),
        disruptions: options.disruptions.clone(),
        latency: options.latency,
        controller: options.controller.kind,
        contour: options.controller.settings(),
        data_plane: options.controller.data_plane,
        envoy: EnvoySettings { version: options.controller.envoy_version.clone(), binary: None },
        ..Default::default()
    };
    config.tls.envoy_client_certificate = installation
        .client_certificate
        .as_ref()
        .map(|secret| SecretName { name: secret.name.clone(), namespace: secret.namespace.clone() });
    // Like Contour's shipped config, an installation at the defaults sets no limits at all.
    let (minimum, maximum) = installation.upstream_tls;
    let defaults = Installation::default().upstream_tls;
    let limits = &mut config.cluster.upstream_tls;
    limits.minimum_protocol_version = (minimum != defaults.0).then_some(minimum);
    limits.maximum_protocol_version = (maximum != defaults.1).then_some(maximum);
    limits.cipher_suites = installation.cipher_suites.clone();
    config.enable_external_name_service = installation.external_name_services;
    config.gateway =
        installation.gateway.as_ref().map(|setup| GatewayConfig { gateway_ref: setup.gateway.clone(), crds: None });
    config
}

/// How long the installation's Gateway may take to be Programmed.
const GATEWAY_LIMIT: Duration = Duration::from_secs(60);

/// How long the namespaces of a scenario that disturbs others may take to go.
const DISTURBING_DELETION_LIMIT: Duration = Duration::from_secs(180);

/// The kinds the cluster must serve, and the feature that needs each (none: every scenario).
const REQUIRED_KINDS: [(&str, &str, Option<Feature>); 2] = [
    ("projectcontour.io/v1", "HTTPProxy", None),
    ("projectcontour.io/v1", "TLSCertificateDelegation", Some(Feature::TlsCertificateDelegation)),
];

/// The kinds the cluster must serve for an implementation exempt from `exempt`.
fn required_kinds(exempt: &[Feature]) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
    REQUIRED_KINDS
        .into_iter()
        .filter(|(_, _, feature)| !feature.is_some_and(|f| exempt.contains(&f)))
        .map(|(api_version, kind, _)| (api_version, kind))
}

/// How long the proxy address gets to accept a connection.
const PROXY_CONNECT_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Before any scenario on a real cluster: the CRDs are served and the proxy address accepts
/// connections, so a cluster that is not ready fails in seconds, saying what to check, rather
/// than as every scenario failing after its time limits.
///
/// Contour adds Envoy's HTTP listener only once some virtual host exists, so a fresh
/// installation refuses connections at a right proxy address. A refusal fails here only when
/// some HTTPProxy is a valid root already; otherwise the canary, whose HTTPProxy makes the
/// listener appear, decides, and the refusal (returned) goes into its message if it fails.
async fn preflight(
    cluster: &ClusterClient,
    proxy: &str,
    address: SocketAddr,
    exempt: &[Feature],
) -> Result<Option<String>, TargetError> {
    for (api_version, kind) in required_kinds(exempt) {
        if cluster.serves(api_version, kind).await.is_err() {
            return Err(TargetError::Preflight(format!(
                "it does not serve {api_version} {kind}; install the implementation's CRDs (for Contour, its \
                 quickstart manifest) and check `kubectl api-resources --api-group=projectcontour.io`"
            )));
        }
    }
    match tokio::time::timeout(PROXY_CONNECT_LIMIT, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_)) => Ok(None),
        Ok(Err(e))
            if e.kind() == std::io::ErrorKind::ConnectionRefused
                && cluster.has_valid_root_proxy().await.is_ok_and(|valid| !valid) =>
        {
            Ok(Some(format!("{proxy} ({address}) refused connections before the canary ({e})")))
        }
        Ok(Err(e)) => Err(TargetError::Preflight(format!(
            "nothing accepts connections at the proxy address {proxy} ({address}): {e}; check that the proxy \
             (Envoy's HTTP listener) is exposed there (with kind, the port mapping of the node)"
        ))),
        Err(_) => Err(TargetError::Preflight(format!(
            "the proxy address {proxy} ({address}) did not accept a connection within {}s",
            PROXY_CONNECT_LIMIT.as_secs()
        ))),
    }
}

/// How long loopback's Envoy may take to receive the installation's client certificate.
const ENVOY_SECRET_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The built-in canary scenario.
const CANARY: &str = include_str!("canary.yaml");

/// Runs the canary ([`CANARY`]): one TLS backend behind one HTTPProxy must answer through the
/// proxy. A cluster where that fails would fail every scenario for the same reason, so the
/// run stops here, saying what to check, and that the proxy address `refused` connections
/// before, when it did.
///
/// # Errors
/// The canary failed.
async fn canary(target: &Target, refused: Option<&str>) -> Result<(), TargetError> {
    let loaded = crate::scenario::load::parse(Path::new("built-in canary"), CANARY)
        .map_err(|errors| TargetError::Preflight(format!("the built-in canary does not load: {errors:?}")))?;
    let outcome = run_scenario(target, &loaded, &()).await;
    let Some(failure) = outcome.failure else { return Ok(()) };
    let pods: Vec<String> =
        outcome.diagnostics.iter().flat_map(|d| &d.logs).map(|log| format!("pod {}: {}", log.pod, log.state)).collect();
    let pods = if pods.is_empty() { String::new() } else { format!(" ({})", pods.join("; ")) };
    let step = failure.step.map_or(String::new(), |n| format!(" at step {n} ({})", failure.kind));
    let answers: String =
        failure.answers.iter().map(|a| format!("\n    answer {}: {}", a.request_id, a.summary())).collect();
    let refused = refused.map_or(String::new(), |refused| {
        format!(
            " The proxy address {refused}: with no virtual host yet Contour has given Envoy no HTTP listener, but \
             the canary's did not make one answer either, so check that the address is Envoy's HTTP listener \
             (with kind, the port mapping of the node)."
        )
    });
    Err(TargetError::Preflight(format!(
        "the canary (one TLS backend behind one HTTPProxy, answering through the proxy) failed{step}: {}{pods}. \
         Check that the controller runs and programs the proxy (for Contour: kubectl -n projectcontour logs \
         deployment/contour) and that backend pods can start.{refused}{answers}",
        failure.message
    )))
}

async fn resolve(address: &str) -> Result<SocketAddr, TargetError> {
    let error = |message: String| TargetError::ProxyAddress { address: address.to_string(), message };
    tokio::net::lookup_host(address)
        .await
        .map_err(|e| error(e.to_string()))?
        .next()
        .ok_or_else(|| error("no address found".into()))
}

/// Eight random hex digits.
fn run_id() -> String {
    let mut bytes = [0u8; 4];
    // Without randomness, a time-based id still keeps concurrent runs apart.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        bytes = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            .to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_implementation_exempt_from_delegation_need_not_serve_its_crd() {
        let kinds = |exempt: &[Feature]| required_kinds(exempt).map(|(_, kind)| kind).collect::<Vec<_>>();
        assert_eq!(kinds(&[]), ["HTTPProxy", "TLSCertificateDelegation"]);
        assert_eq!(kinds(&[Feature::TlsCertificateDelegation, Feature::Ingress]), ["HTTPProxy"]);
    }

    #[test]
    fn loopback_configs_set_only_the_limits_that_differ_from_the_defaults() {
        let [standard, restricted] = loopback_installations();
        let config = loopback_config(&standard, &LoopbackOptions::default());
        assert!(config.cluster.upstream_tls.minimum_protocol_version.is_none());
        assert!(config.cluster.upstream_tls.maximum_protocol_version.is_none());
        assert!(config.tls.envoy_client_certificate.is_some());
        let options = LoopbackOptions {
            faults: vec![Fault::SkipCaVerification],
            controller: LoopbackController::contour(),
            ..Default::default()
        };
        let config = loopback_config(&restricted, &options);
        assert_eq!(config.controller, ControllerKind::Contour);
        assert!(config.cluster.upstream_tls.minimum_protocol_version.is_none());
        assert_eq!(config.cluster.upstream_tls.maximum_protocol_version, Some(TlsVersion::V1_2));
        assert!(config.tls.envoy_client_certificate.is_none());
        assert_eq!(config.faults, vec![Fault::SkipCaVerification]);
    }

    #[test]
    fn scenarios_go_to_the_first_installation_that_can_run_them() {
        let loopback = TargetConfig::Loopback(LoopbackOptions::default());
        let installations = loopback.installations();
        assert_eq!(choose(installations.iter(), &[Feature::UpstreamTls]), Ok(0));
        assert_eq!(choose(installations.iter(), &[Feature::EnvoyClientCertificate]), Ok(0));
        assert_eq!(choose(installations.iter(), &[Feature::NoEnvoyClientCertificate]), Ok(1));
        assert_eq!(choose(installations.iter(), &[Feature::UpstreamTlsMaximum12]), Ok(1));
        let impossible = [Feature::EnvoyClientCertificate, Feature::UpstreamTlsMaximum12];
        let reason = choose(installations.iter(), &impossible).unwrap_err();
        assert_eq!(reason.text, "the installation's upstream TLS maximum is 1.3, not 1.2");
        assert!(
            loopback.lacks(&[Feature::NoEnvoyClientCertificate]).is_none(),
            "loopback runs every install-wide feature"
        );

        let cluster = TargetConfig::Cluster {
            kubeconfig: None,
            context: None,
            proxy: "p:80".into(),
            tls_proxy: None,
            installation: Installation::default(),
            known_failures: Vec::new(),
        };
        let reason = cluster.lacks(&[Feature::EnvoyClientCertificate]).unwrap().text;
        assert!(reason.starts_with("the installation has no Envoy client certificate"), "{reason}");
        assert!(cluster.lacks(&[Feature::UpstreamTls, Feature::UpstreamTlsDefaultVersions]).is_none());
        let reason = cluster.lacks(&[Feature::TcpProxy]).unwrap().text;
        assert!(reason.contains("TLS address is not given (--tls-proxy"), "{reason}");
        assert!(loopback.lacks(&[Feature::TcpProxy]).is_none(), "loopback has a TLS listener");
    }
}
