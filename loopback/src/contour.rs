//! The real Contour controller inside loopback: `contour serve`, built from Contour's Go module
//! by `scripts/ensure-contour`, watching loopback's API server through the kubeconfig like any
//! cluster and writing HTTPProxy statuses itself.
//!
//! [`ContourProcess::start`] renders the installation's settings into Contour's own config file
//! ([`config_file`]), or into a ContourConfiguration object in the API
//! ([`contour_configuration`]) when the settings say so, starts Contour on free ports of
//! 127.0.0.1 in its own process group, and waits for its health endpoint. Its output goes to `contour.log` in the work directory.
//! Contour serves xDS on [`ContourProcess::xds_address`] for a data plane to subscribe to.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::api::kinds::{CONTOUR_CONFIGURATION, NAMESPACE};
use crate::api::store::{Store, Subresource};
use crate::config::{
    ContourSettings, ContourSettingsSource, GatewayRef, LoopbackConfig, SecretName, TlsVersion, UpstreamTlsConfig,
};
use crate::envoy::EnvoyListeners;
use crate::rebuilds::Rebuilds;
use crate::supervise::{Supervised, free_ports, says};

/// Where the ContourConfiguration object lives: Contour's namespace (its `CONTOUR_NAMESPACE`).
pub const CONTOUR_NAMESPACE: &str = "projectcontour";
/// The ContourConfiguration object's name (`--contour-config-name`).
pub const CONTOUR_CONFIGURATION_NAME: &str = "loopback";

/// How long Contour may take to answer its health endpoint after starting.
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long a stopping Contour gets before it is killed. A clean stop takes milliseconds, but
/// Contour can hang in stopping: its event handler stops first, and a change that arrives
/// after that blocks the informer handing it over, so Contour's caches never finish stopping
/// (a scenario's namespace deleted as its cluster stops is enough). Waiting out that hang cost
/// a suite run seconds; nothing is lost by killing Contour instead.
const STOP_GRACE: Duration = Duration::from_millis(500);

/// Why Contour could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ContourError {
    #[error(
        "Contour {version} is not built (looked for {path}); build it with `scripts/ensure-contour {version}` \
         (needs Go)"
    )]
    NotBuilt { version: String, path: PathBuf },
    #[error("cannot start Contour ({binary}): {source}")]
    Spawn { binary: PathBuf, source: std::io::Error },
    #[error("cannot write Contour's files in {dir}: {source}")]
    Files { dir: PathBuf, source: std::io::Error },
    #[error("cannot find a free port on 127.0.0.1 for Contour: {0}")]
    Port(std::io::Error),
    #[error("Contour {status} during start-up; the end of its log:\n{tail}")]
    Exited { status: String, log: PathBuf, tail: String },
    #[error("Contour did not answer its health check within {limit:?}; the end of its log:\n{tail}")]
    NotHealthy { limit: Duration, log: PathBuf, tail: String },
    #[error("loopback faults switch the reference controller; the real Contour runs unmodified (faults given: {0})")]
    Faults(String),
    #[error("cannot store the ContourConfiguration Contour is to read: {0}")]
    Configuration(String),
}

/// How many times start-up is tried when a port it was given got taken meanwhile.
const START_ATTEMPTS: usize = 3;

/// What one attempt at starting Contour needs.
#[derive(Clone, Copy)]
struct Launch<'a> {
    config: &'a LoopbackConfig,
    store: &'a Store,
    binary: &'a Path,
    kubeconfig: &'a Path,
    config_path: &'a Path,
    dir: &'a Path,
    rebuilds: &'a Arc<Rebuilds>,
    envoy: Option<&'a EnvoyListeners>,
}

/// A running `contour serve` ([`Supervised`]). Dropping it kills the process.
pub struct ContourProcess {
    process: Supervised,
    xds_address: SocketAddr,
    /// Set once Contour's log says it listens for xDS (its own listener, not another
    /// process's that took the port first).
    xds_started: Arc<AtomicBool>,
    version: String,
}

impl ContourProcess {
    /// Starts Contour against the API server that `kubeconfig` names, with `config`'s
    /// install-wide settings, keeping its files in `dir`. With `envoy`, Contour programs
    /// Envoy's listeners there instead of on its defaults (every address, ports 8080, 8443
    /// and 8002; the admin listener on 127.0.0.1:9001).
    ///
    /// # Errors
    /// The binary is missing, a file or port cannot be had, or Contour does not come up.
    pub async fn start(
        config: &LoopbackConfig,
        store: &Store,
        kubeconfig: &Path,
        dir: &Path,
        rebuilds: Arc<Rebuilds>,
        envoy: Option<&EnvoyListeners>,
    ) -> Result<Self, ContourError> {
        // Faults at a boundary act around Contour (its xDS output, the API server); the
        // others are switches of the reference controller.
        let names: Vec<&str> = config.faults.iter().filter(|f| !f.at_boundary()).map(|f| f.name()).collect();
        if !names.is_empty() {
            return Err(ContourError::Faults(names.join(", ")));
        }
        let settings: &ContourSettings = &config.contour;
        let binary = settings.binary();
        if !binary.is_file() {
            return Err(ContourError::NotBuilt { version: settings.version().to_string(), path: binary });
        }
        let files = |source| ContourError::Files { dir: dir.to_owned(), source };
        std::fs::create_dir_all(dir).map_err(files)?;
        let config_path = dir.join("contour.yaml");
        if config.contour.settings_from == ContourSettingsSource::ConfigFile {
            std::fs::write(&config_path, config_file(config, envoy)).map_err(files)?;
        }
        let launch = Launch {
            config,
            store,
            binary: &binary,
            kubeconfig,
            config_path: &config_path,
            dir,
            rebuilds: &rebuilds,
            envoy,
        };
        let mut attempt = 1;
        loop {
            match Self::start_once(&launch).await {
                // Ports are found free, released, then bound by Contour: another process may
                // take one in between.
                Err(ContourError::Exited { tail, .. })
                    if attempt < START_ATTEMPTS && tail.contains("address already in use") =>
                {
                    tracing::debug!(attempt, "a port given to Contour was taken meanwhile; starting again");
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    async fn start_once(launch: &Launch<'_>) -> Result<Self, ContourError> {
        let Launch { config, store, binary, kubeconfig, config_path, dir, rebuilds, envoy } = *launch;
        let settings = &config.contour;
        let [xds_port, health_port, metrics_port, debug_port] = free_ports().map_err(ContourError::Port)?;
        let mut command = std::process::Command::new(binary);
        command.arg("serve").arg(format!("--kubeconfig={}", kubeconfig.display())).arg("--disable-leader-election");
        match settings.settings_from {
            ContourSettingsSource::ConfigFile => {
                command
                    .arg(format!("--config-path={}", config_path.display()))
                    .args(["--insecure", "--xds-address=127.0.0.1"])
                    .arg(format!("--xds-port={xds_port}"))
                    .args(["--health-address=127.0.0.1", "--http-address=127.0.0.1", "--debug-http-address=127.0.0.1"])
                    .arg(format!("--health-port={health_port}"))
                    .arg(format!("--http-port={metrics_port}"))
                    .arg(format!("--debug-http-port={debug_port}"));
                if let Some(envoy) = envoy {
                    command.args(envoy.serve_flags());
                }
            }
            ContourSettingsSource::ContourConfiguration => {
                let ports = [xds_port, health_port, metrics_port, debug_port];
                write_contour_configuration(store, contour_configuration(config, ports, envoy))
                    .map_err(ContourError::Configuration)?;
                // The object has no client rate limits; the flags set them as the file does.
                command
                    .arg(format!("--contour-config-name={CONTOUR_CONFIGURATION_NAME}"))
                    .args(["--kubernetes-client-qps=200", "--kubernetes-client-burst=400"])
                    .env("CONTOUR_NAMESPACE", CONTOUR_NAMESPACE);
            }
        }
        let xds_started = Arc::new(AtomicBool::new(false));
        let said = LogSignals { rebuilds: Arc::clone(rebuilds), xds_started: Arc::clone(&xds_started) };
        let process = Supervised::start("contour", command, dir.join("contour.log"), move |line| said.read(line))
            .await
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    ContourError::Spawn { binary: binary.to_owned(), source }
                }
                _ => ContourError::Files { dir: dir.to_owned(), source },
            })?;
        let mut process = ContourProcess {
            process,
            xds_address: SocketAddr::from(([127, 0, 0, 1], xds_port)),
            xds_started,
            version: settings.version().to_string(),
        };
        process.wait_healthy(health_port).await?;
        tracing::info!(version = %process.version, xds = %process.xds_address, "Contour started");
        Ok(process)
    }

    /// Where Contour serves xDS (plain gRPC).
    pub fn xds_address(&self) -> SocketAddr {
        self.xds_address
    }

    /// Contour's output so far.
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The release running.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// How Contour exited, if it has.
    pub fn exit_status(&self) -> Option<String> {
        self.process.exit_status()
    }

    /// The process, for the CPU time it used and the sockets it holds.
    pub fn pid(&self) -> i32 {
        self.process.pid()
    }

    /// The CPU time it has used so far (`None` once it has exited).
    pub fn cpu_time(&self) -> Option<Duration> {
        self.process.cpu_time()
    }

    /// Waits until Contour answers its health check and serves xDS, or fails.
    async fn wait_healthy(&mut self, health_port: u16) -> Result<(), ContourError> {
        let started = Instant::now();
        let log = || self.process.log_path().to_owned();
        loop {
            if let Some(status) = self.exit_status() {
                return Err(ContourError::Exited { status, log: log(), tail: self.process.log_tail() });
            }
            // Contour opens its xDS port only once its caches are in sync and the first
            // configuration is built: from then on statuses and xDS follow the API. Its log
            // says so once the port is its own: a port found free can be taken by another
            // process before Contour binds it, and then answers for a Contour that is dying.
            if self.xds_started.load(Ordering::Acquire)
                && healthy(health_port).await
                && tokio::net::TcpStream::connect(self.xds_address).await.is_ok()
            {
                return Ok(());
            }
            if started.elapsed() > START_LIMIT {
                return Err(ContourError::NotHealthy { limit: START_LIMIT, log: log(), tail: self.process.log_tail() });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops Contour: SIGTERM, then SIGKILL after a grace period.
    pub async fn stop(self) {
        self.process.stop(STOP_GRACE).await;
    }
}

/// Contour's log line for a rebuild beginning, in its text and JSON formats alike: its event
/// handler's `performing delayed update`, logged once the hold-off is over.
const REBUILD_MESSAGE: &str = "performing delayed update";

/// Contour's log line once it listens for xDS (logged after the listener is bound).
const XDS_STARTED_MESSAGE: &str = "started xDS server";

/// What Contour's log lines tell loopback.
struct LogSignals {
    /// Each rebuild, as it begins.
    rebuilds: Arc<Rebuilds>,
    /// That Contour listens for xDS.
    xds_started: Arc<AtomicBool>,
}

impl LogSignals {
    /// Tells what `line` of Contour's output says: a rebuild beginning, or its xDS listener.
    fn read(&self, line: &[u8]) {
        if says(line, REBUILD_MESSAGE) {
            self.rebuilds.rebuilt(std::time::Instant::now());
        } else if says(line, XDS_STARTED_MESSAGE) {
            self.xds_started.store(true, Ordering::Release);
        }
    }
}

/// For tests that need the real Contour: whether the default release is built. When it is
/// not, this says so on stderr and returns false, so the test can pass as not run; unless
/// `UPSTREAM_TLS_REQUIRE_CONTOUR=1` (CI sets it), which makes a missing build a failure.
///
/// # Panics
/// Contour is not built and is required.
pub fn built_for_tests() -> bool {
    let binary = ContourSettings::default().binary();
    crate::supervise::present_for_tests(
        "Contour",
        &binary,
        "scripts/ensure-contour (needs Go)",
        "UPSTREAM_TLS_REQUIRE_CONTOUR",
    )
}

/// One install-wide setting as Contour reads it: where it sits in Contour's config file and
/// in a ContourConfiguration's spec, and its value (`None`: unset, Contour's default).
#[derive(Debug, Clone, PartialEq)]
pub struct ContourSetting {
    pub file_path: &'static [&'static str],
    pub object_path: &'static [&'static str],
    pub value: Option<Value>,
}

/// The install-wide settings loopback's installations and the harness's scenarios depend on,
/// as [`ContourSetting`]s: the one table that Contour's config file ([`config_file`], and the
/// harness's `contour-config`) and the ContourConfiguration object
/// ([`contour_configuration`]) are written from, so the two ways cannot drift apart. An empty
/// cipher suite list is unset, as Contour reads it.
pub fn contour_settings(
    client_certificate: Option<&SecretName>,
    upstream_tls: &UpstreamTlsConfig,
    enable_external_name_service: bool,
    gateway: Option<&GatewayRef>,
) -> [ContourSetting; 6] {
    let version = |v: Option<TlsVersion>| v.map(|v| json!(v.name()));
    let suites = upstream_tls.cipher_suites.as_ref().filter(|suites| !suites.is_empty());
    [
        ContourSetting {
            file_path: &["tls", "envoy-client-certificate"],
            object_path: &["envoy", "clientCertificate"],
            value: client_certificate.map(|secret| json!({"name": secret.name, "namespace": secret.namespace})),
        },
        ContourSetting {
            file_path: &["cluster", "upstream-tls", "minimum-protocol-version"],
            object_path: &["envoy", "cluster", "upstreamTLS", "minimumProtocolVersion"],
            value: version(upstream_tls.minimum_protocol_version),
        },
        ContourSetting {
            file_path: &["cluster", "upstream-tls", "maximum-protocol-version"],
            object_path: &["envoy", "cluster", "upstreamTLS", "maximumProtocolVersion"],
            value: version(upstream_tls.maximum_protocol_version),
        },
        ContourSetting {
            file_path: &["cluster", "upstream-tls", "cipher-suites"],
            object_path: &["envoy", "cluster", "upstreamTLS", "cipherSuites"],
            value: suites.map(|suites| json!(suites)),
        },
        ContourSetting {
            file_path: &["enableExternalNameService"],
            object_path: &["enableExternalNameService"],
            value: enable_external_name_service.then_some(json!(true)),
        },
        ContourSetting {
            file_path: &["gateway", "gatewayRef"],
            object_path: &["gateway", "gatewayRef"],
            value: gateway.map(|gateway| json!({"namespace": gateway.namespace, "name": gateway.name})),
        },
    ]
}

/// [`contour_settings`] of a loopback config.
fn settings_of(config: &LoopbackConfig) -> [ContourSetting; 6] {
    contour_settings(
        config.tls.envoy_client_certificate.as_ref(),
        &config.cluster.upstream_tls,
        config.enable_external_name_service,
        config.gateway.as_ref().map(|gateway| &gateway.gateway_ref),
    )
}

/// Sets (or with `None`, removes) the value at `path` in `root`, making the mappings on the
/// way; an empty key (`tls:` with nothing under it, as in Contour's quickstart) counts as an
/// empty mapping, and nothing is made to remove a value that is not there.
///
/// # Errors
/// Something other than a mapping stands on the way, named by its path.
pub fn set_path(root: &mut Value, path: &[&str], value: Option<Value>) -> Result<(), String> {
    fn mapping<'v>(node: &'v mut Value, path: &[&str]) -> Result<&'v mut serde_json::Map<String, Value>, String> {
        node.as_object_mut().ok_or_else(|| {
            let at = if path.is_empty() { "the top level".to_string() } else { format!("`{}`", path.join(".")) };
            format!("no mapping at {at}")
        })
    }
    let Some((last, parents)) = path.split_last() else { return Ok(()) };
    let mut node = root;
    for (depth, key) in parents.iter().enumerate() {
        let map = mapping(node, &parents[..depth])?;
        if value.is_none() && !map.contains_key(*key) {
            return Ok(());
        }
        node = map.entry(key.to_string()).or_insert(Value::Null);
        if node.is_null() {
            if value.is_none() {
                return Ok(());
            }
            *node = json!({});
        }
    }
    let map = mapping(node, parents)?;
    match value {
        Some(value) => {
            map.insert(last.to_string(), value);
        }
        None => {
            map.remove(*last);
        }
    }
    Ok(())
}

/// Contour's config file for `config`: the install-wide settings ([`contour_settings`]), with
/// the Kubernetes client's rate limits raised so that statuses are not throttled when many
/// scenarios run at once. With `envoy`, Envoy's admin listener gets the port loopback chose
/// (`network.admin-port`): Contour puts it on 127.0.0.1 whatever the other listeners' address,
/// and its default, 9001, would be every Envoy's on the machine.
pub fn config_file(config: &LoopbackConfig, envoy: Option<&EnvoyListeners>) -> String {
    let mut root = json!({"kubernetesClientQPS": 200, "kubernetesClientBurst": 400});
    for setting in settings_of(config) {
        // The root and every mapping on the way are made here: nothing can stand in the way.
        let _ = set_path(&mut root, setting.file_path, setting.value);
    }
    if let Some(envoy) = envoy {
        root["network"] = envoy.network_section();
    }
    serde_saphyr::to_string(&root).unwrap_or_default()
}

/// The ContourConfiguration object carrying what [`config_file`] carries, plus the addresses
/// and `ports` (xDS, health, metrics, debug) and Envoy's listeners that the file mode gives
/// as flags; Contour takes everything from the object when it is named.
pub fn contour_configuration(config: &LoopbackConfig, ports: [u16; 4], envoy: Option<&EnvoyListeners>) -> Value {
    let [xds, health, metrics, debug] = ports;
    let at = |port: u16| json!({"address": "127.0.0.1", "port": port});
    let mut spec = json!({
        "xdsServer": {"address": "127.0.0.1", "port": xds, "tls": {"insecure": true}},
        "health": at(health),
        "metrics": at(metrics),
        "debug": at(debug),
    });
    for setting in settings_of(config) {
        let _ = set_path(&mut spec, setting.object_path, setting.value);
    }
    if let Some(envoy) = envoy {
        let _ = set_path(&mut spec, &["envoy", "http"], Some(envoy.http_json()));
        let _ = set_path(&mut spec, &["envoy", "https"], Some(envoy.https_json()));
        let _ = set_path(&mut spec, &["envoy", "metrics"], Some(envoy.stats_json()));
        let _ = set_path(&mut spec, &["envoy", "health"], Some(envoy.stats_json()));
        let _ = set_path(&mut spec, &["envoy", "network", "adminPort"], Some(json!(envoy.admin_port)));
    }
    json!({
        "apiVersion": CONTOUR_CONFIGURATION.api_version(),
        "kind": CONTOUR_CONFIGURATION.kind,
        "metadata": {"name": CONTOUR_CONFIGURATION_NAME, "namespace": CONTOUR_NAMESPACE},
        "spec": spec,
    })
}

/// Puts `object` in the store, with its namespace, replacing an earlier one (a start-up that
/// is tried again gets new ports).
fn write_contour_configuration(store: &Store, object: Value) -> Result<(), String> {
    let _ = store.create(&NAMESPACE, "", json!({"metadata": {"name": CONTOUR_NAMESPACE}}));
    let updated = store.modify(
        &CONTOUR_CONFIGURATION,
        CONTOUR_NAMESPACE,
        CONTOUR_CONFIGURATION_NAME,
        Subresource::Main,
        |stored| stored["spec"] = object["spec"].clone(),
    );
    if updated.is_none() {
        store.create(&CONTOUR_CONFIGURATION, CONTOUR_NAMESPACE, object).map_err(|err| err.to_string())?;
    }
    Ok(())
}

async fn healthy(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return false };
    let request = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer)).await;
    answer.starts_with(b"HTTP/1.1 200")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SecretName, TlsVersion};

    #[test]
    fn contours_rebuilds_and_xds_listener_are_told_from_its_lines() {
        // Lines as Contour 1.33 writes them (text format), the last one cut short.
        let output = "time=\"2026-12-04T04:01:02Z\" level=info msg=\"started event handler\" context=contourEventHandler\n\
            time=\"2026-12-04T04:01:02Z\" level=info msg=\"performing delayed update\" context=contourEventHandler last_update=1.2s outstanding=3\n\
            time=\"2026-12-04T04:01:03Z\" level=info msg=\"skipping dag rebuild as cache is not synced\" context=contourEventHandler\n\
            time=\"2026-12-04T04:01:03Z\" level=info msg=\"started xDS server\" address=\"127.0.0.1:44059\" context=xds insecure=true\n\
            {\"level\":\"info\",\"msg\":\"performing delayed update\",\"outstanding\":1}\n\
            time=\"2026-12-04T04:01:04Z\" level=info msg=\"performing delayed";
        let said = LogSignals { rebuilds: Rebuilds::new(), xds_started: Arc::default() };
        let before = std::time::Instant::now();
        for line in output.split_inclusive('\n') {
            said.read(line.as_bytes());
        }
        assert!(said.xds_started.load(Ordering::Acquire), "the xDS listener is Contour's own");
        let times = said.rebuilds.rebuild_times();
        assert_eq!(times.len(), 2, "one rebuild in each format, none for the other lines");
        assert!(times.iter().all(|t| *t >= before));
    }

    #[test]
    fn the_config_file_carries_the_installation_settings_in_contours_shape() {
        let read = |config: &LoopbackConfig| -> Value { serde_saphyr::from_str(&config_file(config, None)).unwrap() };
        let mut config = LoopbackConfig::default();
        assert_eq!(read(&config), json!({"kubernetesClientQPS": 200, "kubernetesClientBurst": 400}), "nothing set");
        // A name that looks like a number must still read back as a string.
        config.tls.envoy_client_certificate = Some(SecretName { name: "1.2".into(), namespace: "ns".into() });
        config.cluster.upstream_tls.maximum_protocol_version = Some(TlsVersion::V1_2);
        config.cluster.upstream_tls.cipher_suites = Some(Vec::new());
        let file = read(&config);
        assert_eq!(file["tls"], json!({"envoy-client-certificate": {"name": "1.2", "namespace": "ns"}}));
        assert_eq!(
            file["cluster"],
            json!({"upstream-tls": {"maximum-protocol-version": "1.2"}}),
            "an empty list is unset"
        );
        assert!(file.get("enableExternalNameService").is_none(), "off unless enabled");
        config.enable_external_name_service = true;
        assert_eq!(read(&config)["enableExternalNameService"], true);
    }

    #[test]
    fn the_contour_configuration_object_carries_the_same_settings_and_the_ports() {
        let mut config = LoopbackConfig::default();
        let object = contour_configuration(&config, [1, 2, 3, 4], None);
        assert_eq!(object["apiVersion"], "projectcontour.io/v1alpha1");
        assert_eq!(object["metadata"], json!({"name": "loopback", "namespace": "projectcontour"}));
        assert_eq!(object["spec"]["xdsServer"], json!({"address": "127.0.0.1", "port": 1, "tls": {"insecure": true}}));
        assert_eq!(object["spec"]["debug"]["port"], 4);
        assert!(object["spec"].get("envoy").is_none(), "Contour's defaults: nothing set: {object}");
        assert!(object["spec"].get("enableExternalNameService").is_none());
        config.tls.envoy_client_certificate = Some(SecretName { name: "envoy-client".into(), namespace: "ns".into() });
        config.cluster.upstream_tls.maximum_protocol_version = Some(TlsVersion::V1_2);
        config.cluster.upstream_tls.cipher_suites = Some(vec!["ECDHE-ECDSA-CHACHA20-POLY1305".into()]);
        config.enable_external_name_service = true;
        let spec = contour_configuration(&config, [1, 2, 3, 4], None)["spec"].clone();
        assert_eq!(spec["envoy"]["clientCertificate"], json!({"name": "envoy-client", "namespace": "ns"}));
        assert_eq!(
            spec["envoy"]["cluster"]["upstreamTLS"],
            json!({"maximumProtocolVersion": "1.2", "cipherSuites": ["ECDHE-ECDSA-CHACHA20-POLY1305"]})
        );
        assert_eq!(spec["enableExternalNameService"], true);
    }

    #[tokio::test]
    async fn a_missing_binary_names_the_build_command() {
        let mut config = LoopbackConfig::default();
        config.contour.version = Some("v0.0.0-missing".into());
        let dir = std::env::temp_dir().join(format!("contour-missing-{}", std::process::id()));
        let store = Store::new();
        let err = ContourProcess::start(&config, &store, Path::new("/nonexistent"), &dir, Rebuilds::new(), None)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("scripts/ensure-contour v0.0.0-missing"), "{err}");
        assert!(!dir.exists(), "nothing is written before the binary is found");
    }
}
