//! The implementation config file: who is being tested (for the certification report), where
//! its cluster and proxy are, what its installation has configured install-wide, which
//! features it claims, which scenarios to run, and time limits.
//!
//! [`ImplementationConfig::load`] reads it (unknown keys are errors, with line and column);
//! [`Overrides`] carries flags and environment variables, which win over the file;
//! [`ImplementationConfig::resolve`] turns both into a [`RunPlan`]. `examples/implementation.yaml`
//! shows every key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::install::{Installation, SecretRef, TlsVersion};
use crate::known::KnownFailure;
use crate::runner::RunSettings;
use crate::scenario::load::{LoadError, yaml_error};
use crate::scenario::{Feature, LoadedScenario};
use crate::target::{LoopbackController, LoopbackOptions, TargetConfig, TargetError, env};
use loopback::config::{ContourSettingsSource, ControllerKind, DataPlaneKind};

/// The file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImplementationConfig {
    #[serde(default)]
    pub implementation: Option<Implementation>,
    #[serde(default)]
    pub cluster: ClusterSection,
    #[serde(default)]
    pub loopback: LoopbackSection,
    #[serde(default)]
    pub installation: InstallationSection,
    #[serde(default)]
    pub features: FeatureSection,
    #[serde(default)]
    pub scenarios: ScenarioSection,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Scenarios the implementation is known to fail ([`KnownFailure`]): reported as known
    /// failures, never as passes; one that passes fails the run as stale. Real clusters only
    /// (loopback's real Contour takes its own from `loopback/known-failures.yaml`).
    #[serde(default)]
    pub known_failures: Vec<KnownFailure>,
    /// The file it was read from, for errors found when it is resolved.
    #[serde(skip)]
    path: Option<PathBuf>,
}

/// Who is being tested, as the certification report names it.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Implementation {
    #[serde(default)]
    pub organization: String,
    /// The implementation's name; required when the section is given.
    #[serde(default)]
    pub project: String,
    /// Its home page, an `http://` or `https://` URL.
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub version: String,
    /// People or teams to reach about the report (GitHub handles, e-mail addresses).
    #[serde(default)]
    pub contact: Vec<String>,
    /// The name of the configuration under test, when an implementation certifies several
    /// (default `default`).
    #[serde(default = "default_mode", skip_serializing)]
    pub mode: String,
}

fn default_mode() -> String {
    "default".into()
}

impl Implementation {
    /// An implementation the config file does not describe.
    fn unnamed() -> Self {
        Implementation {
            organization: String::new(),
            project: String::new(),
            url: String::new(),
            version: String::new(),
            contact: Vec::new(),
            mode: default_mode(),
        }
    }

    /// What a run against the built-in loopback cluster certifies: the reference controller,
    /// the real Contour controller with loopback's data plane standing in for Envoy, or
    /// Contour with Envoy.
    fn loopback(controller: &LoopbackController) -> Self {
        let contour = "https://github.com/projectcontour/contour";
        let (organization, project, url, version) = match (controller.contour_release(), controller.envoy_release()) {
            (Some(version), Some(envoy)) => (
                "projectcontour",
                format!("Contour {version} with Envoy {} on loopback", envoy.describe()),
                contour,
                version,
            ),
            (Some(version), None) => (
                "projectcontour",
                "Contour (real controller) on loopback, data plane: loopback's proxy, not Envoy".into(),
                contour,
                version,
            ),
            (None, _) => ("upstream-tls-conformance", "loopback".into(), "", env!("CARGO_PKG_VERSION").to_string()),
        };
        Implementation {
            organization: organization.into(),
            project,
            url: url.into(),
            version,
            contact: Vec::new(),
            mode: default_mode(),
        }
    }
}

/// Where the cluster and the proxy are. Without `proxy`, the built-in loopback cluster runs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterSection {
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default)]
    pub proxy: Option<String>,
    /// Where the proxy serves TLS virtual hosts (Envoy's HTTPS listener), `host:port`.
    #[serde(default)]
    pub tls_proxy: Option<String>,
    #[serde(default)]
    pub image: Option<String>,
}

/// The built-in loopback cluster's controller, when no proxy is given.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoopbackSection {
    /// `reference` (default) or `contour`.
    #[serde(default)]
    pub controller: Option<ControllerKind>,
    /// The Contour release for `controller: contour` (default: the first of
    /// `loopback/contour-versions`).
    #[serde(default)]
    pub contour_version: Option<String>,
    /// Where `controller: contour` reads the installation's settings from: `config-file`
    /// (default) or `contour-configuration` (a ContourConfiguration object).
    #[serde(default)]
    pub contour_settings_from: Option<ContourSettingsSource>,
    /// What serves the traffic: `loopback` (its own proxy, default) or `envoy` (Envoy
    /// programmed by the real Contour; implies `controller: contour`).
    #[serde(default)]
    pub data_plane: Option<DataPlaneKind>,
    /// The Envoy release for `dataPlane: envoy` (default: the one `loopback/contour-versions`
    /// pairs with the Contour release).
    #[serde(default)]
    pub envoy_version: Option<String>,
}

/// The installation's install-wide settings (Contour's config file keys in comments).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InstallationSection {
    /// `NAMESPACE/NAME` (`tls.envoy-client-certificate`); the harness writes this Secret.
    #[serde(default)]
    pub envoy_client_certificate: Option<String>,
    #[serde(default)]
    pub upstream_tls: UpstreamTlsSection,
    /// Whether route services may name ExternalName Services (`enableExternalNameService`).
    #[serde(default)]
    pub enable_external_name_service: bool,
    /// The Gateway the controller reconciles (`gateway.gatewayRef`), for the Gateway API
    /// scenarios; without it they are skipped.
    #[serde(default)]
    pub gateway: Option<GatewaySection>,
}

/// `installation.gateway`: a Gateway the harness makes (with its GatewayClass) when the
/// cluster has none.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewaySection {
    pub namespace: String,
    pub name: String,
    /// The GatewayClass it names (default `contour`).
    #[serde(default)]
    pub class_name: Option<String>,
    /// The class's controllerName, for a class the harness makes (default
    /// `projectcontour.io/gateway-controller`; Contour reconciles the Gateway its
    /// `gatewayRef` names whatever the class says).
    #[serde(default)]
    pub controller_name: Option<String>,
}

impl GatewaySection {
    fn setup(&self) -> crate::install::GatewaySetup {
        let defaults = crate::install::GatewaySetup::loopback();
        crate::install::GatewaySetup {
            gateway: crate::install::GatewayRef { namespace: self.namespace.clone(), name: self.name.clone() },
            class_name: self.class_name.clone().unwrap_or(defaults.class_name),
            controller_name: self.controller_name.clone().unwrap_or(defaults.controller_name),
        }
    }
}

/// `cluster.upstream-tls`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpstreamTlsSection {
    #[serde(default)]
    pub minimum_protocol_version: Option<TlsVersion>,
    #[serde(default)]
    pub maximum_protocol_version: Option<TlsVersion>,
    /// `cipher-suites`: TLS 1.2 suites in order, as OpenSSL names them; Contour's defaults when unset.
    #[serde(default)]
    pub cipher_suites: Option<Vec<String>>,
}

/// The features the implementation claims. Scenarios needing an unclaimed feature are
/// skipped, and the certification report lists the feature as unsupported.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FeatureSection {
    /// Only these (default: all); not empty, and none of them exempt.
    #[serde(default)]
    pub supported: Option<Vec<Feature>>,
    /// Not these.
    #[serde(default)]
    pub exempt: Vec<Feature>,
}

/// Which scenarios to run: entries are a feature name or part of a scenario name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScenarioSection {
    /// Only scenarios matching one of these (default: all).
    #[serde(default)]
    pub run: Vec<String>,
    /// Not scenarios matching one of these.
    #[serde(default)]
    pub skip: Vec<String>,
}

/// A proxy address must be `HOST:PORT` (`[IPv6]:PORT` too), the host ASCII letters, digits,
/// '-', '.' and '_', the port a number from 1 to 65535: checked before anything connects.
///
/// # Errors
/// What is wrong with it.
pub fn check_proxy_address(address: &str) -> Result<(), String> {
    let malformed =
        |why: &str| Err(format!("the proxy address {address:?} {why}; give HOST:PORT, such as 127.0.0.1:9080"));
    if address.contains(char::is_control) {
        return malformed("has a control character");
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        let only_port = !address.is_empty() && address.bytes().all(|b| b.is_ascii_digit());
        return malformed(if only_port { "has no host" } else { "has no port" });
    };
    if !host.is_ascii() {
        return malformed("has a non-ASCII host (write an internationalized name in its xn-- form)");
    }
    // An IPv6 address must be in brackets: `::1:80` could be read two ways.
    let (host, ipv6_ok) = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) => (inner, inner.parse::<std::net::Ipv6Addr>().is_ok()),
        None => (host, !host.contains(':')),
    };
    let name_or_ip = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':');
    if host.is_empty() || !host.chars().all(name_or_ip) || !ipv6_ok {
        return malformed("has no usable host");
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => malformed("has no port from 1 to 65535"),
        Ok(_) => Ok(()),
    }
}

/// An image reference (`cluster.image`, `--image`) is not empty and holds no whitespace or
/// control characters.
///
/// # Errors
/// What is wrong with it.
fn check_image(image: &str) -> Result<(), String> {
    let why = if image.is_empty() {
        " (it is empty)"
    } else if image.contains(char::is_whitespace) {
        " (it holds whitespace)"
    } else if image.contains(char::is_control) {
        " (it holds a control character)"
    } else {
        return Ok(());
    };
    Err(format!("{image:?} is not an image reference{why}; give one such as nginx:1.27"))
}

/// Whether `url` is an `http://` or `https://` URL with a host, and no whitespace or control
/// characters.
fn is_http_url(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")) else { return false };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    !host.is_empty() && !url.contains(|c: char| c.is_whitespace() || c.is_control())
}

/// A lowercase RFC 1123 subdomain, as Kubernetes requires of most names: at most 253
/// characters, parts of lowercase letters, digits and '-' that start and end with a letter
/// or digit, joined by '.'.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// The longest time limit a config may set: an hour, far beyond any wait a scenario has.
pub const MAX_LIMIT_SECONDS: u64 = 3600;

/// The longest run a config may allow: a day.
pub const MAX_RUN_LIMIT_SECONDS: u64 = 86_400;

/// Time limits, in seconds (1 to [`MAX_LIMIT_SECONDS`]; the run's, 1 to
/// [`MAX_RUN_LIMIT_SECONDS`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Timeouts {
    /// For a traffic expectation to hold (default 30).
    #[serde(default)]
    pub traffic_seconds: Option<u64>,
    /// For a status expectation to hold (default 30).
    #[serde(default)]
    pub status_seconds: Option<u64>,
    /// For backends to become available, image pulls included (default 180).
    #[serde(default)]
    pub ready_seconds: Option<u64>,
    /// For the whole run, every repetition included (default 3600). When it is reached the
    /// run stops as on Ctrl-C: it cleans up, reports what finished and exits 124.
    #[serde(default)]
    pub run_seconds: Option<u64>,
}

/// Settings from flags and environment variables; each one given replaces the file's.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub proxy: Option<String>,
    pub tls_proxy: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub image: Option<String>,
    pub client_certificate: Option<SecretRef>,
    pub min_tls_version: Option<TlsVersion>,
    pub max_tls_version: Option<TlsVersion>,
    pub run: Vec<String>,
    pub skip: Vec<String>,
    pub faults: Vec<loopback::Fault>,
    pub disruptions: Vec<loopback::Disruption>,
    pub latency: Option<loopback::LatencyProfile>,
    /// The implementation's version, for the reports, instead of the file's
    /// `implementation.version` (a nightly over several releases with one config file).
    pub implementation_version: Option<String>,
    pub controller: Option<ControllerKind>,
    pub contour_version: Option<String>,
    pub contour_settings_from: Option<ContourSettingsSource>,
    pub data_plane: Option<DataPlaneKind>,
    pub envoy_version: Option<String>,
    pub keep_namespaces: bool,
    /// How many scenarios run at once; `None`: [`crate::suite::default_parallelism`].
    pub parallel: Option<usize>,
}

impl Overrides {
    /// The environment variables of [`env`], for `cargo test --test conformance`.
    ///
    /// # Errors
    /// A value that does not parse, naming the variable.
    pub fn from_env() -> Result<Self, TargetError> {
        fn var(name: &str) -> Option<String> {
            std::env::var(name).ok().filter(|v| !v.trim().is_empty())
        }
        fn parse<T: std::str::FromStr<Err = E>, E: std::fmt::Display>(
            variable: &'static str,
        ) -> Result<Option<T>, TargetError> {
            var(variable)
                .map(|v| v.parse::<T>())
                .transpose()
                .map_err(|e| TargetError::Setting { variable, message: e.to_string() })
        }
        fn list(name: &str) -> Vec<String> {
            var(name).map_or_else(Vec::new, |v| {
                v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
            })
        }
        fn parse_list<T: std::str::FromStr>(variable: &'static str) -> Result<Vec<T>, TargetError>
        where
            T::Err: std::fmt::Display,
        {
            list(variable)
                .iter()
                .map(|v| v.parse().map_err(|e: T::Err| TargetError::Setting { variable, message: e.to_string() }))
                .collect()
        }
        let faults = parse_list(env::FAULTS)?;
        let disruptions = parse_list(env::DISRUPTIONS)?;
        Ok(Overrides {
            proxy: var(env::PROXY),
            tls_proxy: var(env::TLS_PROXY),
            kubeconfig: var(env::KUBECONFIG).map(PathBuf::from),
            context: var(env::CONTEXT),
            image: var(env::IMAGE),
            client_certificate: parse(env::CLIENT_CERT_SECRET)?,
            min_tls_version: parse(env::MIN_TLS_VERSION)?,
            max_tls_version: parse(env::MAX_TLS_VERSION)?,
            run: list(env::RUN),
            skip: list(env::SKIP),
            faults,
            disruptions,
            latency: parse(env::LATENCY)?,
            implementation_version: var(env::IMPLEMENTATION_VERSION),
            controller: parse(env::CONTROLLER)?,
            contour_version: var(env::CONTOUR_VERSION),
            contour_settings_from: parse(env::CONTOUR_SETTINGS_FROM)?,
            data_plane: parse(env::DATA_PLANE)?,
            envoy_version: var(env::ENVOY_VERSION),
            // As clap reads the flag's variable: anything but a falsey word is true.
            keep_namespaces: var(env::KEEP_NAMESPACES)
                .is_some_and(|v| !["0", "n", "no", "f", "false", "off"].contains(&v.trim().to_lowercase().as_str())),
            parallel: var(env::PARALLEL)
                .map(|v| crate::suite::parse_parallelism(&v))
                .transpose()
                .map_err(|message| TargetError::Setting { variable: env::PARALLEL, message })?,
        })
    }
}

/// Everything a run needs, decided.
#[derive(Debug, Clone)]
pub struct RunPlan {
    pub implementation: Implementation,
    pub target: TargetConfig,
    pub settings: RunSettings,
    pub selection: Selection,
    /// How many scenarios run at once, when given.
    pub parallel: Option<usize>,
    /// Settings given that do not apply to the target, for the user to hear about.
    pub warnings: Vec<String>,
}

impl RunPlan {
    /// How many of `scenarios` scenarios run at once: as given, or the target's default.
    pub fn parallelism(&self, scenarios: usize) -> usize {
        self.parallel.unwrap_or_else(|| crate::suite::default_parallelism(&self.target, scenarios))
    }

    /// The plan of `cargo test --test conformance`: the file [`env::CONFIG`] names, if any,
    /// with the other variables of [`env`] on top.
    ///
    /// # Errors
    /// The file or a variable has a problem.
    pub fn from_env() -> Result<RunPlan, String> {
        let overrides = Overrides::from_env().map_err(|e| e.to_string())?;
        let config = match std::env::var_os(env::CONFIG).filter(|v| !v.is_empty()) {
            Some(path) => {
                ImplementationConfig::load(&crate::suite::user_path(path.into())).map_err(|e| e.to_string())?
            }
            None => ImplementationConfig::default(),
        };
        config.resolve(overrides)
    }
}

impl ImplementationConfig {
    /// Reads a config file.
    ///
    /// # Errors
    /// The file cannot be read, or has a problem (with its line and column).
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let text = crate::scenario::load::read_text_file(path).map_err(|e| LoadError {
            path: path.to_owned(),
            position: None,
            message: format!("the implementation config: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Parses config text that came from `path` (named in errors).
    ///
    /// # Errors
    /// The text has a problem (with its line and column when it has one).
    pub fn parse(path: &Path, text: &str) -> Result<Self, LoadError> {
        let config: ImplementationConfig =
            serde_saphyr::from_str(text).map_err(|e| yaml_error(path, text, &e, (0, 0)))?;
        let timeouts = &config.timeouts;
        for (field, value, most) in [
            ("trafficSeconds", timeouts.traffic_seconds, MAX_LIMIT_SECONDS),
            ("statusSeconds", timeouts.status_seconds, MAX_LIMIT_SECONDS),
            ("readySeconds", timeouts.ready_seconds, MAX_LIMIT_SECONDS),
            ("runSeconds", timeouts.run_seconds, MAX_RUN_LIMIT_SECONDS),
        ] {
            if let Some(value) = value
                && !(1..=most).contains(&value)
            {
                return Err(LoadError {
                    path: path.to_owned(),
                    position: None,
                    message: format!("timeouts.{field}: {value} is out of range; give 1 to {most} seconds"),
                });
            }
        }
        if let Some(secret) = &config.installation.envoy_client_certificate {
            secret.parse::<SecretRef>().map_err(|message| LoadError {
                path: path.to_owned(),
                position: None,
                message: format!("installation.envoyClientCertificate: {message}"),
            })?;
        }
        config.check().map_err(|message| LoadError { path: path.to_owned(), position: None, message })?;
        Ok(ImplementationConfig { path: Some(path.to_owned()), ..config })
    }

    /// What is wrong with values the file's types let through, as `field: why`.
    fn check(&self) -> Result<(), String> {
        let cluster = &self.cluster;
        for (field, address) in [("cluster.proxy", &cluster.proxy), ("cluster.tlsProxy", &cluster.tls_proxy)] {
            if let Some(address) = address {
                check_proxy_address(address).map_err(|e| format!("{field}: {e}"))?;
            }
        }
        if let Some(image) = &cluster.image {
            check_image(image).map_err(|e| format!("cluster.image: {e}"))?;
        }
        if let Some(implementation) = &self.implementation {
            if implementation.project.trim().is_empty() {
                return Err("implementation.project is empty; name the implementation the reports certify, \
                            such as contour"
                    .into());
            }
            if implementation.organization.trim().is_empty() {
                return Err("implementation.organization is empty; name who publishes the implementation, such as \
                            projectcontour (the certification report needs it to be submitted)"
                    .into());
            }
            let url = &implementation.url;
            if !url.is_empty() && !is_http_url(url) {
                return Err(format!(
                    "implementation.url: {url:?} is not an http(s) URL; give one such as \
                     https://github.com/projectcontour/contour"
                ));
            }
        }
        if let Some(gateway) = &self.installation.gateway {
            if !crate::scenario::load::is_dns_label(&gateway.namespace) {
                return Err(format!(
                    "installation.gateway.namespace: {:?} is not a namespace name (a lowercase RFC 1123 label: \
                     at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit)",
                    gateway.namespace
                ));
            }
            for (field, name) in [("name", Some(&gateway.name)), ("className", gateway.class_name.as_ref())] {
                if let Some(name) = name.filter(|name| !is_dns_subdomain(name)) {
                    return Err(format!(
                        "installation.gateway.{field}: {name:?} is not a Kubernetes name (a lowercase RFC 1123 \
                         subdomain: at most 253 lowercase letters, digits, '-' and '.', each part starting and \
                         ending with a letter or digit)"
                    ));
                }
            }
        }
        for entry in self.installation.upstream_tls.cipher_suites.iter().flatten() {
            if !loopback::config::valid_cipher_entry(entry) {
                return Err(format!(
                    "installation.upstreamTls.cipherSuites: {entry:?} is not a cipher suite Contour accepts (one of \
                     {}, or a [a|b] group of them)",
                    loopback::config::VALID_CIPHER_SUITES.join(", ")
                ));
            }
        }
        if let Some(supported) = &self.features.supported {
            if supported.is_empty() {
                return Err("features.supported: [] claims no feature, so every scenario would be skipped; list \
                            the features the implementation supports, or leave supported out to claim them all"
                    .into());
            }
            if let Some(both) = supported.iter().find(|f| self.features.exempt.contains(f)) {
                return Err(format!("features: {} is both supported and exempt; list it in one of them", both.name()));
            }
        }
        for (i, entry) in self.known_failures.iter().enumerate() {
            if entry.scenario.trim().is_empty() {
                return Err(format!("knownFailures[{i}].scenario is empty; give the name of the scenario that fails"));
            }
            if entry.reason.trim().is_empty() {
                return Err(format!(
                    "knownFailures[{i}].reason is empty; say in a sentence why {:?} fails",
                    entry.scenario
                ));
            }
            if let Some(first) = self.known_failures[..i].iter().position(|k| k.scenario == entry.scenario) {
                return Err(format!(
                    "knownFailures[{i}]: {:?} is listed already, as knownFailures[{first}]; keep one entry per \
                     scenario",
                    entry.scenario
                ));
            }
        }
        Ok(())
    }

    /// The file's settings with `overrides` on top. Settings that do not apply to the
    /// chosen target (installation settings for loopback, faults for a real cluster) become
    /// warnings in the plan.
    ///
    /// # Errors
    /// A malformed address or image given by a flag, a TLS address without a proxy address,
    /// a minimum TLS version above the maximum.
    pub fn resolve(self, overrides: Overrides) -> Result<RunPlan, String> {
        let cluster = self.cluster;
        // The file's values were checked as it was read; flags' and variables' are checked here.
        let flag = |name: &str, variable: &str, value: &str, check: fn(&str) -> Result<(), String>| {
            check(value).map_err(|e| format!("{name} ({variable}): {e}"))
        };
        if let Some(image) = &overrides.image {
            flag("--image", env::IMAGE, image, check_image)?;
        }
        if let Some(proxy) = &overrides.proxy {
            flag("--proxy", env::PROXY, proxy, check_proxy_address)?;
        }
        if let Some(tls_proxy) = &overrides.tls_proxy {
            flag("--tls-proxy", env::TLS_PROXY, tls_proxy, check_proxy_address)?;
        }
        let proxy = overrides.proxy.or(cluster.proxy);
        let tls_proxy = overrides.tls_proxy.clone().or(cluster.tls_proxy);
        if proxy.is_none() && tls_proxy.is_some() {
            let given = match (&overrides.tls_proxy, &self.path) {
                (Some(_), _) => format!("--tls-proxy ({})", env::TLS_PROXY),
                (None, Some(path)) => format!("{}: cluster.tlsProxy", path.display()),
                (None, None) => "cluster.tlsProxy".to_string(),
            };
            return Err(format!(
                "{given} is given without a proxy address (cluster.proxy or --proxy): without one the built-in \
                 loopback cluster runs and would not use it; give the proxy address too, or drop the TLS address"
            ));
        }
        let mut warnings = Vec::new();
        let mut exempt: Vec<Feature> = self.features.exempt;
        if let Some(supported) = &self.features.supported {
            exempt.extend(Feature::ALL.into_iter().filter(|f| !supported.contains(f)));
        }
        exempt.sort();
        exempt.dedup();
        // Core features are what every implementation must do; the install-wide ones among
        // them are facts of the installation, which the harness reads, not claims.
        let core: Vec<&str> = exempt
            .iter()
            .filter(|f| f.profile() == crate::scenario::Profile::Core && !f.is_install_wide())
            .map(|f| f.name())
            .collect();
        if !core.is_empty() {
            return Err(format!(
                "features: {} would be left out, but core features cannot be exempted; to run fewer scenarios, \
                 use scenarios.run and scenarios.skip (--filter, --skip)",
                core.join(", ")
            ));
        }
        let upstream = self.installation.upstream_tls;
        let client_certificate = overrides
            .client_certificate
            .or_else(|| self.installation.envoy_client_certificate.and_then(|s| s.parse().ok()));
        let minimum = overrides.min_tls_version.or(upstream.minimum_protocol_version);
        let maximum = overrides.max_tls_version.or(upstream.maximum_protocol_version);
        let (implementation, target) = match proxy {
            Some(proxy) => {
                if !overrides.faults.is_empty() {
                    warnings.push("loopback faults are ignored: the target is a real cluster".to_string());
                }
                if !overrides.disruptions.is_empty() {
                    warnings.push("loopback disruptions are ignored: the target is a real cluster".to_string());
                }
                if overrides.latency.is_some() {
                    warnings.push("the loopback latency profile is ignored: the target is a real cluster".to_string());
                }
                let loopback_only = [
                    overrides.contour_settings_from.is_some() || self.loopback.contour_settings_from.is_some(),
                    overrides.data_plane.is_some() || self.loopback.data_plane.is_some(),
                    overrides.envoy_version.is_some() || self.loopback.envoy_version.is_some(),
                ];
                if overrides.controller.is_some() || self.loopback.controller.is_some() || loopback_only.contains(&true)
                {
                    warnings.push("the loopback controller is ignored: the target is a real cluster".to_string());
                }
                let defaults = Installation::default().upstream_tls;
                let installation = Installation {
                    client_certificate,
                    upstream_tls: (minimum.unwrap_or(defaults.0), maximum.unwrap_or(defaults.1)),
                    // An empty list is Contour's defaults, as no list is.
                    cipher_suites: upstream.cipher_suites.clone().filter(|suites| !suites.is_empty()),
                    external_name_services: self.installation.enable_external_name_service,
                    tls_listener: tls_proxy.is_some(),
                    exempt: exempt.clone(),
                    gateway: self.installation.gateway.as_ref().map(GatewaySection::setup),
                };
                if installation.upstream_tls.0 > installation.upstream_tls.1 {
                    let (min, max) = installation.upstream_tls;
                    return Err(format!("the minimum upstream TLS version {min} is above the maximum {max}"));
                }
                let target = TargetConfig::Cluster {
                    kubeconfig: overrides.kubeconfig.or(cluster.kubeconfig.map(|p| home(&p))),
                    context: overrides.context.or(cluster.context),
                    proxy,
                    tls_proxy,
                    installation,
                    known_failures: self.known_failures,
                };
                let mut implementation = self.implementation.unwrap_or_else(Implementation::unnamed);
                if let Some(version) = overrides.implementation_version {
                    implementation.version = version;
                }
                (implementation, target)
            }
            None => {
                let external_names = self.installation.enable_external_name_service;
                let suites = upstream.cipher_suites.is_some();
                if client_certificate.is_some() || minimum.is_some() || maximum.is_some() || external_names || suites {
                    warnings.push(
                        "installation settings are ignored: without a proxy address the built-in loopback \
                         cluster runs, with installations of its own"
                            .to_string(),
                    );
                }
                if self.implementation.is_some() {
                    warnings.push(
                        "the implementation section is ignored: without a proxy address the built-in loopback \
                         cluster is what is tested"
                            .to_string(),
                    );
                }
                if !self.known_failures.is_empty() {
                    warnings.push(
                        "knownFailures is ignored: the built-in loopback cluster's real Contour takes its own from \
                         loopback/known-failures.yaml"
                            .to_string(),
                    );
                }
                let data_plane = overrides.data_plane.or(self.loopback.data_plane).unwrap_or_default();
                // Envoy is programmed by the real Contour: asking for it asks for Contour too.
                let kind = overrides.controller.or(self.loopback.controller).unwrap_or(match data_plane {
                    DataPlaneKind::Envoy => ControllerKind::Contour,
                    DataPlaneKind::Loopback => ControllerKind::Reference,
                });
                let controller = LoopbackController {
                    kind,
                    contour_version: overrides.contour_version.or(self.loopback.contour_version),
                    settings_from: overrides
                        .contour_settings_from
                        .or(self.loopback.contour_settings_from)
                        .unwrap_or_default(),
                    data_plane,
                    envoy_version: overrides.envoy_version.or(self.loopback.envoy_version),
                };
                for (what, version) in [("Contour", &controller.contour_version), ("Envoy", &controller.envoy_version)]
                {
                    if let Some(version) = version.as_deref().filter(|v| !loopback::config::is_release_version(v)) {
                        return Err(format!(
                            "{what} release {:?} is not a release version such as v1.33.6 or 1.38.3",
                            crate::cluster::truncate(version, 80)
                        ));
                    }
                }
                if data_plane == DataPlaneKind::Envoy && kind != ControllerKind::Contour {
                    return Err("the envoy data plane is programmed by the real Contour's xDS: it needs \
                                --controller contour, not the reference controller"
                        .to_string());
                }
                if data_plane != DataPlaneKind::Envoy && controller.envoy_version.is_some() {
                    warnings.push("the Envoy release is ignored: Envoy runs only with --data-plane envoy".to_string());
                }
                if let Some(contour) = controller.contour_release().filter(|_| data_plane == DataPlaneKind::Envoy) {
                    let settings =
                        loopback::config::EnvoySettings { version: controller.envoy_version.clone(), binary: None };
                    settings.version_for(&contour)?;
                }
                if controller.kind != ControllerKind::Contour
                    && controller.settings_from != ContourSettingsSource::default()
                {
                    warnings.push(format!(
                        "the Contour settings source ({}) is ignored: only the real Contour \
                         (--controller contour) reads one",
                        controller.settings_from
                    ));
                }
                if controller.kind == ControllerKind::Contour
                    && let Some(fault) = overrides.faults.iter().find(|f| !f.at_boundary())
                {
                    return Err(format!(
                        "the loopback fault {fault} switches the reference controller; it cannot be used with \
                         --controller contour (only the faults at a boundary can: {})",
                        loopback::Fault::ALL
                            .into_iter()
                            .filter(|f| f.at_boundary())
                            .map(loopback::Fault::name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                if controller.kind != ControllerKind::Contour
                    && let Some(fault) = overrides.faults.iter().find(|f| f.acts_on_xds())
                {
                    return Err(format!(
                        "the loopback fault {fault} changes the real Contour's xDS output; it needs --controller contour"
                    ));
                }
                let implementation = Implementation::loopback(&controller);
                let options = LoopbackOptions {
                    faults: overrides.faults,
                    exempt,
                    controller,
                    disruptions: overrides.disruptions,
                    latency: overrides.latency.unwrap_or_default(),
                };
                (implementation, TargetConfig::Loopback(options))
            }
        };
        let defaults = RunSettings::default();
        let seconds = |value: Option<u64>, default: Duration| value.map_or(default, Duration::from_secs);
        let settings = RunSettings {
            traffic_limit: seconds(self.timeouts.traffic_seconds, defaults.traffic_limit),
            status_limit: seconds(self.timeouts.status_seconds, defaults.status_limit),
            ready_limit: seconds(self.timeouts.ready_seconds, defaults.ready_limit),
            run_limit: seconds(self.timeouts.run_seconds, defaults.run_limit),
            image: overrides.image.or(cluster.image).unwrap_or(defaults.image.clone()),
            keep_namespaces: overrides.keep_namespaces,
            ..defaults
        };
        let pick = |given: Vec<String>, file: Vec<String>| if given.is_empty() { file } else { given };
        let selection =
            Selection { run: pick(overrides.run, self.scenarios.run), skip: pick(overrides.skip, self.scenarios.skip) };
        Ok(RunPlan { implementation, target, settings, selection, parallel: overrides.parallel, warnings })
    }
}

/// `path` with a leading `~/` replaced by the home directory.
fn home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_owned(),
    }
}

/// Which scenarios a run includes: by feature name or by part of the scenario name.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only scenarios matching one of these (empty: all).
    pub run: Vec<String>,
    /// Not scenarios matching one of these.
    pub skip: Vec<String>,
}

impl Selection {
    pub fn includes(&self, scenario: &LoadedScenario) -> bool {
        let matches = |entry: &String| {
            scenario.name().contains(entry.as_str()) || scenario.scenario.features.iter().any(|f| f.name() == entry)
        };
        (self.run.is_empty() || self.run.iter().any(matches)) && !self.skip.iter().any(matches)
    }

    /// Entries that are neither a feature nor part of any scenario's name: likely typos.
    pub fn unknown_entries(&self, scenarios: &[LoadedScenario]) -> Vec<String> {
        self.run
            .iter()
            .chain(&self.skip)
            .filter(|entry| {
                !Feature::ALL.iter().any(|f| f.name() == entry.as_str())
                    && !scenarios.iter().any(|s| s.name().contains(entry.as_str()))
            })
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::load::parse;

    fn config(text: &str) -> Result<ImplementationConfig, LoadError> {
        // Tests run in parallel: each file gets a name of its own.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("utls-config-{}-{n}.yaml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let config = ImplementationConfig::load(&path);
        std::fs::remove_file(&path).unwrap();
        config
    }

    #[test]
    fn proxy_addresses_are_host_and_port() {
        for good in ["127.0.0.1:9080", "localhost:80", "[::1]:8080", "proxy.example.test:443"] {
            assert_eq!(check_proxy_address(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("127.0.0.1", "has no port"),
            (":80", "has no usable host"),
            ("http://proxy:80", "has no usable host"),
            ("::1:80", "has no usable host"),
            ("proxy:0", "has no port from 1 to 65535"),
            ("proxy:99999", "has no port from 1 to 65535"),
            ("proxy:http", "has no port from 1 to 65535"),
            ("9080", "has no host"),
            ("127.0.0.1\r\n:9080", "has a control character"),
            ("proxy\t:80", "has a control character"),
            ("prøxy.test:9080", "has a non-ASCII host"),
            ("pro?xy:80", "has no usable host"),
        ] {
            let error = check_proxy_address(bad).unwrap_err();
            assert!(error.contains(why) && error.contains("give HOST:PORT"), "{bad}: {error}");
        }
        let overrides = Overrides { proxy: Some("nonsense".into()), ..Default::default() };
        let err = ImplementationConfig::default().resolve(overrides).unwrap_err();
        assert!(err.starts_with("--proxy (UPSTREAM_TLS_PROXY): the proxy address \"nonsense\" has no port"), "{err}");
        let overrides = Overrides { tls_proxy: Some("tls:0".into()), ..Default::default() };
        let err = ImplementationConfig::default().resolve(overrides).unwrap_err();
        assert!(err.starts_with("--tls-proxy (UPSTREAM_TLS_TLS_PROXY): the proxy address \"tls:0\""), "{err}");
    }

    #[test]
    fn the_file_s_proxy_addresses_are_named_with_the_file_and_the_field() {
        let err = config("cluster:\n  proxy: 127.0.0.1:0\n").unwrap_err();
        assert!(err.message.starts_with("cluster.proxy: the proxy address \"127.0.0.1:0\" has no port"), "{err}");
        assert!(err.to_string().contains(".yaml: cluster.proxy: "), "{err}");
        let err = config("cluster:\n  proxy: 127.0.0.1:9080\n  tlsProxy: 127.0.0.1\n").unwrap_err();
        assert!(err.message.starts_with("cluster.tlsProxy: the proxy address \"127.0.0.1\" has no port"), "{err}");
        let err = config("cluster:\n  proxy: 9080\n").unwrap_err();
        assert!(err.message.contains("\"9080\" has no host"), "{err}");
    }

    #[test]
    fn a_tls_address_needs_a_proxy_address() {
        let file = "cluster:\n  tlsProxy: 127.0.0.1:9443\n";
        let err = config(file).unwrap().resolve(Overrides::default()).unwrap_err();
        assert!(err.contains(".yaml: cluster.tlsProxy is given without a proxy address"), "{err}");
        let proxy = Overrides { proxy: Some("127.0.0.1:9080".into()), ..Default::default() };
        let plan = config(file).unwrap().resolve(proxy).unwrap();
        let TargetConfig::Cluster { tls_proxy, .. } = &plan.target else { panic!("{:?}", plan.target) };
        assert_eq!(tls_proxy.as_deref(), Some("127.0.0.1:9443"), "a proxy from a flag goes with the file's");
        let flag = Overrides { tls_proxy: Some("127.0.0.1:9443".into()), ..Default::default() };
        let err = ImplementationConfig::default().resolve(flag).unwrap_err();
        assert!(err.starts_with("--tls-proxy (UPSTREAM_TLS_TLS_PROXY) is given without a proxy address"), "{err}");
    }

    #[test]
    fn values_the_types_let_through_are_checked_as_the_file_is_read() {
        let proxy = "cluster:\n  proxy: 127.0.0.1:9080\n";
        let known = |entries: &str| format!("{proxy}knownFailures:\n{entries}");
        for (text, message) in [
            ("cluster:\n  image: \"\"\n".to_string(), "cluster.image: \"\" is not an image reference (it is empty)"),
            ("cluster:\n  image: nginx latest\n".into(), "cluster.image: \"nginx latest\" is not an image reference"),
            (
                "cluster:\n  image: \"nginx\\u0007\"\n".into(),
                "cluster.image: \"nginx\\u{7}\" is not an image reference",
            ),
            (
                "installation:\n  gateway: {namespace: Project_Contour, name: contour}\n".into(),
                "installation.gateway.namespace: \"Project_Contour\" is not a namespace name",
            ),
            (
                format!("installation:\n  gateway: {{namespace: {}, name: contour}}\n", "a".repeat(64)),
                "installation.gateway.namespace: ",
            ),
            ("installation:\n  gateway: {namespace: p, name: \"\"}\n".into(), "installation.gateway.name: \"\" is not"),
            ("installation:\n  gateway: {namespace: p, name: a..b}\n".into(), "installation.gateway.name: \"a..b\""),
            (
                format!("installation:\n  gateway: {{namespace: p, name: {}}}\n", "a".repeat(254)),
                "installation.gateway.name: ",
            ),
            (
                "installation:\n  gateway: {namespace: p, name: c, className: Contour}\n".into(),
                "installation.gateway.className: \"Contour\" is not a Kubernetes name",
            ),
            ("features:\n  supported: []\n".into(), "features.supported: [] claims no feature"),
            (
                "features:\n  supported: [upstream-tls]\n  exempt: [upstream-tls]\n".into(),
                "features: upstream-tls is both supported and exempt",
            ),
            (known("  - {scenario: s, reason: \"\"}\n"), "knownFailures[0].reason is empty"),
            (known("  - {scenario: s, reason: \"  \"}\n"), "knownFailures[0].reason is empty"),
            (known("  - {scenario: \"\", reason: r}\n"), "knownFailures[0].scenario is empty"),
            (
                known("  - {scenario: s, reason: r}\n  - {scenario: t, reason: r}\n  - {scenario: s, reason: q}\n"),
                "knownFailures[2]: \"s\" is listed already, as knownFailures[0]",
            ),
            ("implementation:\n  url: https://example.test\n".into(), "implementation.project is empty"),
            ("implementation:\n  project: p\n".into(), "implementation.organization is empty"),
            (
                "implementation:\n  organization: o\n  project: p\n  url: projectcontour\n".into(),
                "implementation.url: \"projectcontour\" is not an http(s) URL",
            ),
            (
                "implementation:\n  organization: o\n  project: p\n  url: \"https://\"\n".into(),
                "implementation.url: \"https://\"",
            ),
            (
                "installation:\n  upstreamTls:\n    cipherSuites: [TLS_MAGIC]\n".into(),
                "installation.upstreamTls.cipherSuites: \"TLS_MAGIC\" is not a cipher suite Contour accepts",
            ),
            (
                "installation:\n  upstreamTls:\n    cipherSuites: [\"\"]\n".into(),
                "installation.upstreamTls.cipherSuites: \"\" is not a cipher suite",
            ),
        ] {
            let err = config(&text).unwrap_err();
            assert!(err.message.starts_with(message), "{text}: {err}");
            assert!(err.to_string().contains(&format!(".yaml: {message}")), "the file is named: {err}");
        }
        let good = "implementation:\n  organization: o\n  project: p\n  url: http://example.test/p\ncluster:\n  image: \
                    registry.test:5000/nginx@sha256:abc\ninstallation:\n  gateway: {namespace: p-1, name: a.b-c, \
                    className: contour}\n  upstreamTls:\n    cipherSuites: [\"[ECDHE-ECDSA-AES128-GCM-SHA256|\
                    ECDHE-ECDSA-CHACHA20-POLY1305]\", AES256-SHA]\nfeatures:\n  supported: [upstream-tls]\n  \
                    exempt: [ingress]\n";
        config(good).unwrap();
        let image = Overrides { image: Some("nginx latest".into()), ..Default::default() };
        let err = ImplementationConfig::default().resolve(image).unwrap_err();
        assert!(err.starts_with("--image (UPSTREAM_TLS_IMAGE): \"nginx latest\" is not an image reference"), "{err}");
    }

    #[test]
    fn time_limits_must_be_sane() {
        for (value, ok) in [("0", false), ("1", true), ("3600", true), ("3601", false), ("18446744073709551615", false)]
        {
            let text = format!("timeouts:\n  trafficSeconds: {value}\n");
            match config(&text) {
                Ok(_) => assert!(ok, "{value} was accepted"),
                Err(e) => {
                    assert!(!ok, "{value}: {e}");
                    let expected = format!("timeouts.trafficSeconds: {value} is out of range; give 1 to 3600 seconds");
                    assert_eq!(e.message, expected);
                }
            }
        }
    }

    #[test]
    fn the_example_file_loads_and_describes_a_cluster() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/implementation.yaml");
        let plan = ImplementationConfig::load(&path).unwrap().resolve(Overrides::default()).unwrap();
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
        assert_eq!(plan.implementation.project, "contour");
        let TargetConfig::Cluster { proxy, installation, context, .. } = &plan.target else {
            panic!("the example names a proxy: {:?}", plan.target)
        };
        assert_eq!(proxy, "127.0.0.1:9080");
        assert_eq!(context.as_deref(), Some("kind-upstream-tls"));
        let TargetConfig::Cluster { tls_proxy, .. } = &plan.target else { unreachable!() };
        assert_eq!(tls_proxy.as_deref(), Some("127.0.0.1:9443"));
        assert!(installation.tls_listener, "the TLS address makes tcp-proxy scenarios run");
        assert_eq!(installation.client_certificate, Some(SecretRef::default_client_certificate()));
        assert_eq!(plan.settings.ready_limit, Duration::from_secs(300));
    }

    #[test]
    fn flags_and_variables_win_over_the_file() {
        let file = "cluster:\n  proxy: 10.0.0.1:80\n  image: nginx:file\ninstallation:\n  upstreamTls:\n    maximumProtocolVersion: \"1.2\"\nscenarios:\n  skip: [ingress]\n";
        let overrides = Overrides {
            proxy: Some("127.0.0.1:9080".into()),
            max_tls_version: Some(TlsVersion::V1_3),
            skip: vec!["sni".into()],
            ..Default::default()
        };
        let plan = config(file).unwrap().resolve(overrides).unwrap();
        let TargetConfig::Cluster { proxy, installation, .. } = &plan.target else { panic!() };
        assert_eq!(proxy, "127.0.0.1:9080");
        assert_eq!(installation.upstream_tls, (TlsVersion::V1_2, TlsVersion::V1_3));
        assert_eq!(plan.settings.image, "nginx:file", "the file's value stands when nothing overrides it");
        assert_eq!(plan.selection.skip, vec!["sni"]);
    }

    #[test]
    fn the_implementation_version_can_follow_the_release_under_test() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/implementation.yaml");
        let file = ImplementationConfig::load(&path).unwrap();
        let overrides = Overrides { implementation_version: Some("v1.32.1".into()), ..Default::default() };
        let plan = file.resolve(overrides).unwrap();
        assert_eq!(
            (plan.implementation.project.as_str(), plan.implementation.version.as_str()),
            ("contour", "v1.32.1")
        );
    }

    #[test]
    fn the_loopback_controller_comes_from_the_file_or_the_flags() {
        let file = "loopback:\n  controller: contour\n  contourVersion: v1.32.1\n";
        let plan = config(file).unwrap().resolve(Overrides::default()).unwrap();
        let TargetConfig::Loopback(LoopbackOptions { controller, .. }) = &plan.target else { panic!() };
        assert_eq!(controller.contour_release().as_deref(), Some("v1.32.1"));
        assert_eq!(plan.implementation.version, "v1.32.1");
        let project = &plan.implementation.project;
        assert!(project.contains("real controller") && project.contains("not Envoy"), "{project}");
        assert!(plan.target.describe().contains("the real Contour v1.32.1 controller, with loopback's data plane"));

        let flags = Overrides { controller: Some(ControllerKind::Reference), ..Default::default() };
        let plan = config(file).unwrap().resolve(flags).unwrap();
        assert_eq!(plan.implementation.project, "loopback", "the flag wins over the file");

        let faulted = Overrides { faults: vec![loopback::Fault::SkipCaVerification], ..Default::default() };
        let err = config(file).unwrap().resolve(faulted).unwrap_err();
        assert!(err.contains("cannot be used with --controller contour"), "{err}");
        let err = config("loopback:\n  controller: envoy\n").unwrap_err().to_string();
        assert!(err.contains(":2:15:"), "{err}");
    }

    #[test]
    fn the_envoy_data_plane_brings_the_real_contour_and_names_both_in_the_reports() {
        let plan = config("loopback:\n  dataPlane: envoy\n").unwrap().resolve(Overrides::default()).unwrap();
        let TargetConfig::Loopback(LoopbackOptions { controller, .. }) = &plan.target else { panic!() };
        assert_eq!(controller.kind, ControllerKind::Contour, "Envoy needs the real Contour");
        assert_eq!(plan.implementation.project, "Contour v1.33.6 with Envoy 1.38.3 on loopback");
        assert!(plan.target.describe().contains("the real Contour v1.33.6 controller, with Envoy 1.38.3"));

        let nearest = Overrides { contour_version: Some("v1.33.8".into()), ..Default::default() };
        let plan = config("loopback:\n  dataPlane: envoy\n").unwrap().resolve(nearest).unwrap();
        assert!(
            plan.implementation.project.contains("1.38.3, the nearest published patch"),
            "{:?}",
            plan.implementation
        );

        let chosen = Overrides { envoy_version: Some("1.39.3".into()), ..Default::default() };
        let plan = config("loopback:\n  dataPlane: envoy\n").unwrap().resolve(chosen).unwrap();
        assert!(plan.implementation.project.contains("1.39.3, chosen for this run"), "{:?}", plan.implementation);

        let unpaired = Overrides { contour_version: Some("v1.32.1".into()), ..Default::default() };
        let err = config("loopback:\n  dataPlane: envoy\n").unwrap().resolve(unpaired).unwrap_err();
        assert!(
            err.contains("pairs no Envoy release with Contour v1.32.1") && err.contains("--envoy-version"),
            "{err}"
        );

        let reference = Overrides { controller: Some(ControllerKind::Reference), ..Default::default() };
        let err = config("loopback:\n  dataPlane: envoy\n").unwrap().resolve(reference).unwrap_err();
        assert!(err.contains("needs --controller contour"), "{err}");

        let plan = config("loopback:\n  envoyVersion: 1.38.3\n").unwrap().resolve(Overrides::default()).unwrap();
        assert!(plan.warnings.iter().any(|w| w.contains("Envoy release is ignored")), "{:?}", plan.warnings);
        let err = config("loopback:\n  dataPlane: nginx\n").unwrap_err().to_string();
        assert!(err.contains(":2:14:"), "{err}");
    }

    #[test]
    fn supported_features_exempt_the_rest_but_never_a_core_one() {
        let core = "upstream-tls, upstream-validation, upstream-http2";
        let plan = config(&format!("features:\n  supported: [{core}, tcp-proxy]\n  exempt: [ingress]\n"))
            .unwrap()
            .resolve(Overrides::default())
            .unwrap();
        let TargetConfig::Loopback(LoopbackOptions { exempt, .. }) = &plan.target else { panic!() };
        assert!(exempt.contains(&Feature::Ingress) && exempt.contains(&Feature::AppProtocol));
        assert!(!exempt.contains(&Feature::UpstreamTls) && !exempt.contains(&Feature::TcpProxy));
        assert_eq!(plan.implementation.project, "loopback", "no proxy: loopback is what is certified");
        for file in
            ["features:\n  supported: [upstream-tls, upstream-validation]\n", "features:\n  exempt: [upstream-http2]\n"]
        {
            let error = config(file).unwrap().resolve(Overrides::default()).unwrap_err();
            assert!(
                error.starts_with("features: upstream-http2 would be left out, but core features cannot"),
                "{error}"
            );
        }
    }

    #[test]
    fn settings_that_do_not_apply_are_warned_about_and_contradictions_refused() {
        let file = "implementation:\n  organization: o\n  project: p\ninstallation:\n  upstreamTls:\n    maximumProtocolVersion: \"1.2\"\n";
        let plan = config(file).unwrap().resolve(Overrides::default()).unwrap();
        assert_eq!(plan.warnings.len(), 2, "{:?}", plan.warnings);
        assert!(plan.warnings[0].starts_with("installation settings are ignored"), "{:?}", plan.warnings);
        let overrides = Overrides {
            proxy: Some("p:80".into()),
            faults: vec![loopback::Fault::SkipCaVerification],
            min_tls_version: Some(TlsVersion::V1_3),
            ..Default::default()
        };
        let err = config(file).unwrap().resolve(overrides).unwrap_err();
        assert_eq!(err, "the minimum upstream TLS version 1.3 is above the maximum 1.2");
    }

    #[test]
    fn mistakes_are_reported_with_their_position() {
        let err = config("implementation:\n  project: x\n  colour: blue\n").unwrap_err().to_string();
        assert!(err.contains(":3:3:") && err.contains("colour"), "{err}");
        let err = config("features:\n  exempt: [upstream-tsl]\n").unwrap_err().to_string();
        assert!(err.contains(":2:") && err.contains("upstream-tsl"), "{err}");
        let err = config("installation:\n  envoyClientCertificate: just-a-name\n").unwrap_err().to_string();
        assert!(err.contains("installation.envoyClientCertificate") && err.contains("NAMESPACE/NAME"), "{err}");
    }

    #[test]
    fn selection_matches_names_and_features() {
        let text = "name: sni-demo\ndescription: d\ncontract: [N1]\nfeatures: [upstream-sni]\nsteps:\n  - request:\n      expect:\n        status: 200\n";
        let scenario = parse(Path::new("s.yaml"), text).unwrap();
        let selection = |run: &[&str], skip: &[&str]| Selection {
            run: run.iter().map(ToString::to_string).collect(),
            skip: skip.iter().map(ToString::to_string).collect(),
        };
        assert!(selection(&[], &[]).includes(&scenario));
        assert!(selection(&["upstream-sni"], &[]).includes(&scenario));
        assert!(selection(&["demo"], &[]).includes(&scenario));
        assert!(!selection(&["ingress"], &[]).includes(&scenario));
        assert!(!selection(&[], &["upstream-sni"]).includes(&scenario));
        let scenarios = [scenario];
        assert_eq!(
            selection(&["ingress", "upstream-snii"], &["demo"]).unknown_entries(&scenarios),
            vec!["upstream-snii"]
        );
    }
}
