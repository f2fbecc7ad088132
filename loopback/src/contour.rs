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
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use serde_json::{Value, json};

use crate::api::kinds::{CONTOUR_CONFIGURATION, NAMESPACE};
use crate::api::store::{Store, Subresource};
use crate::config::{
    ContourSettings, ContourSettingsSource, LoopbackConfig, SecretName, TlsVersion, UpstreamTlsConfig,
};
use crate::rebuilds::Rebuilds;

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
/// How long a killed Contour may take to be gone.
const KILL_LIMIT: Duration = Duration::from_secs(5);

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

/// How long an exited Contour's last lines may take to reach its log.
const LOG_COMPLETION_LIMIT: Duration = Duration::from_secs(2);

/// How many times start-up is tried when a port it was given got taken meanwhile.
const START_ATTEMPTS: usize = 3;

/// A running `contour serve`. Dropping it kills the process.
///
/// Contour is started, and waited for, by a thread of its own that lives exactly as long as
/// the process: the kernel's parent-death signal (which stops Contour if loopback dies without
/// stopping it) fires when the *thread* that started a process ends, and the thread that asks
/// for a cluster may end long before the cluster does (a test harness's worker, say).
pub struct ContourProcess {
    pid: i32,
    /// Set once the process has exited, with how.
    exited: watch::Receiver<Option<String>>,
    xds_address: SocketAddr,
    /// Set once Contour's log says it listens for xDS (its own listener, not another
    /// process's that took the port first).
    xds_started: Arc<AtomicBool>,
    log: PathBuf,
    version: String,
}

impl ContourProcess {
    /// Starts Contour against the API server that `kubeconfig` names, with `config`'s
    /// install-wide settings, keeping its files in `dir`.
    ///
    /// # Errors
    /// The binary is missing, a file or port cannot be had, or Contour does not come up.
    pub async fn start(
        config: &LoopbackConfig,
        store: &Store,
        kubeconfig: &Path,
        dir: &Path,
        rebuilds: Arc<Rebuilds>,
    ) -> Result<Self, ContourError> {
        if !config.faults.is_empty() {
            let names: Vec<&str> = config.faults.iter().map(|f| f.name()).collect();
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
            std::fs::write(&config_path, config_file(config)).map_err(files)?;
        }
        let mut attempt = 1;
        loop {
            match Self::start_once(config, store, &binary, kubeconfig, &config_path, dir, &rebuilds).await {
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

    async fn start_once(
        config: &LoopbackConfig,
        store: &Store,
        binary: &Path,
        kubeconfig: &Path,
        config_path: &Path,
        dir: &Path,
        rebuilds: &Arc<Rebuilds>,
    ) -> Result<Self, ContourError> {
        let settings = &config.contour;
        let files = |source| ContourError::Files { dir: dir.to_owned(), source };
        let log = dir.join("contour.log");
        let log_file = std::fs::File::create(&log).map_err(files)?;
        // Contour's output passes through loopback on its way to the log, to see its
        // rebuilds as they begin.
        let (output, output_end) = std::io::pipe().map_err(files)?;
        let output_err = output_end.try_clone().map_err(files)?;
        let [xds_port, health_port, metrics_port, debug_port] = free_ports()?;
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
            }
            ContourSettingsSource::ContourConfiguration => {
                let ports = [xds_port, health_port, metrics_port, debug_port];
                write_contour_configuration(store, contour_configuration(config, ports))
                    .map_err(ContourError::Configuration)?;
                // The object has no client rate limits; the flags set them as the file does.
                command
                    .arg(format!("--contour-config-name={CONTOUR_CONFIGURATION_NAME}"))
                    .args(["--kubernetes-client-qps=200", "--kubernetes-client-burst=400"])
                    .env("CONTOUR_NAMESPACE", CONTOUR_NAMESPACE);
            }
        }
        command.stdin(Stdio::null()).stdout(output_end).stderr(output_err).process_group(0);
        // SAFETY: prctl is async-signal-safe; it makes the kernel stop Contour when the thread
        // below ends, which is only when Contour has exited or this whole process is gone.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (exited_tx, exited) = watch::channel(None);
        let spawn_error = |source| ContourError::Spawn { binary: binary.to_owned(), source };
        let rebuilds = Arc::clone(rebuilds);
        let xds_started = Arc::new(AtomicBool::new(false));
        let said = LogSignals { rebuilds, xds_started: Arc::clone(&xds_started) };
        // Closed when the log is complete: Contour's exit is told only after that, so its
        // last lines are in the log when someone reads why it exited.
        let (log_complete_tx, log_complete) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("contour-log".into())
            .spawn(move || {
                copy_log(output, log_file, &said);
                drop(log_complete_tx);
            })
            .map_err(spawn_error)?;
        std::thread::Builder::new()
            .name("contour".into())
            .spawn(move || {
                let spawned = command.spawn();
                // Contour holds the output's write ends now; the log ends when it exits.
                drop(command);
                let mut child = match spawned {
                    Ok(child) => child,
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                let _ = started_tx.send(Ok(child.id()));
                let status = child.wait().map_or_else(|e| format!("could not be waited for: {e}"), |s| s.to_string());
                let _ = log_complete.recv_timeout(LOG_COMPLETION_LIMIT);
                exited_tx.send_replace(Some(status));
            })
            .map_err(spawn_error)?;
        let pid = match started_rx.await {
            Ok(Ok(pid)) => pid as i32,
            Ok(Err(e)) => return Err(spawn_error(e)),
            Err(_) => return Err(spawn_error(std::io::Error::other("the thread starting Contour ended"))),
        };
        let mut process = ContourProcess {
            pid,
            exited,
            xds_address: SocketAddr::from(([127, 0, 0, 1], xds_port)),
            xds_started,
            log,
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
        &self.log
    }

    /// The release running.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// How Contour exited, if it has.
    pub fn exit_status(&self) -> Option<String> {
        self.exited.borrow().clone()
    }

    /// Waits until Contour answers its health check and serves xDS, or fails.
    async fn wait_healthy(&mut self, health_port: u16) -> Result<(), ContourError> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.exit_status() {
                return Err(ContourError::Exited { status, log: self.log.clone(), tail: log_tail(&self.log) });
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
                return Err(ContourError::NotHealthy {
                    limit: START_LIMIT,
                    log: self.log.clone(),
                    tail: log_tail(&self.log),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` to Contour's process group, unless it has exited.
    fn signal(&self, signal: i32) {
        if self.exit_status().is_none() {
            // SAFETY: plain kill(2) on the process group Contour leads.
            unsafe {
                libc::kill(-self.pid, signal);
            }
        }
    }

    /// Stops Contour: SIGTERM, then SIGKILL after a grace period.
    pub async fn stop(mut self) {
        self.signal(libc::SIGTERM);
        let exited = self.exited.wait_for(Option::is_some);
        if tokio::time::timeout(STOP_GRACE, exited).await.is_err() {
            self.signal(libc::SIGKILL);
            let _ = tokio::time::timeout(KILL_LIMIT, self.exited.wait_for(Option::is_some)).await;
        }
    }
}

impl Drop for ContourProcess {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
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

/// Copies Contour's output to `log` line by line until Contour exits, telling `said` when a
/// line says that a rebuild begins or that Contour listens for xDS.
fn copy_log(output: impl std::io::Read, mut log: std::fs::File, said: &LogSignals) {
    use std::io::{BufRead, Write};
    let mut output = std::io::BufReader::new(output);
    let mut line = Vec::new();
    loop {
        line.clear();
        match output.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(_) => {
                // Never leave Contour writing to a closed pipe (it would die of SIGPIPE):
                // what is left goes to the log as it comes, without looking at it.
                let _ = std::io::copy(&mut output, &mut log);
                return;
            }
        }
        let says = |message: &str| line.windows(message.len()).any(|w| w == message.as_bytes());
        if says(REBUILD_MESSAGE) {
            said.rebuilds.rebuilt(std::time::Instant::now());
        } else if says(XDS_STARTED_MESSAGE) {
            said.xds_started.store(true, Ordering::Release);
        }
        // A log that cannot be written loses lines; Contour must go on all the same.
        let _ = log.write_all(&line);
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
    if binary.is_file() {
        return true;
    }
    let required = std::env::var("UPSTREAM_TLS_REQUIRE_CONTOUR").is_ok_and(|v| v == "1");
    assert!(!required, "Contour is required but not built at {}; run scripts/ensure-contour", binary.display());
    eprintln!("NOT RUN: Contour is not built at {}; run scripts/ensure-contour (needs Go)", binary.display());
    false
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
) -> [ContourSetting; 5] {
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
    ]
}

/// [`contour_settings`] of a loopback config.
fn settings_of(config: &LoopbackConfig) -> [ContourSetting; 5] {
    contour_settings(
        config.tls.envoy_client_certificate.as_ref(),
        &config.cluster.upstream_tls,
        config.enable_external_name_service,
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
/// scenarios run at once.
pub fn config_file(config: &LoopbackConfig) -> String {
    let mut root = json!({"kubernetesClientQPS": 200, "kubernetesClientBurst": 400});
    for setting in settings_of(config) {
        // The root and every mapping on the way are made here: nothing can stand in the way.
        let _ = set_path(&mut root, setting.file_path, setting.value);
    }
    serde_saphyr::to_string(&root).unwrap_or_default()
}

/// The ContourConfiguration object carrying what [`config_file`] carries, plus the addresses
/// and `ports` (xDS, health, metrics, debug) that the file mode gives as flags; Contour takes
/// everything from the object when it is named.
pub fn contour_configuration(config: &LoopbackConfig, ports: [u16; 4]) -> Value {
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

/// Four distinct free ports: the listeners are closed again before Contour binds them.
fn free_ports() -> Result<[u16; 4], ContourError> {
    let listeners: Vec<std::net::TcpListener> = (0..4)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(ContourError::Port)?;
    let mut ports = [0u16; 4];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr().map_err(ContourError::Port)?.port();
    }
    Ok(ports)
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

/// The last lines of Contour's log, for error messages.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SecretName, TlsVersion};

    #[test]
    fn contours_output_reaches_its_log_whole_and_its_rebuilds_and_xds_listener_are_told() {
        // Lines as Contour 1.33 writes them (text format), the last one cut short.
        let output = "time=\"2026-12-04T04:01:02Z\" level=info msg=\"started event handler\" context=contourEventHandler\n\
            time=\"2026-12-04T04:01:02Z\" level=info msg=\"performing delayed update\" context=contourEventHandler last_update=1.2s outstanding=3\n\
            time=\"2026-12-04T04:01:03Z\" level=info msg=\"skipping dag rebuild as cache is not synced\" context=contourEventHandler\n\
            time=\"2026-12-04T04:01:03Z\" level=info msg=\"started xDS server\" address=\"127.0.0.1:44059\" context=xds insecure=true\n\
            {\"level\":\"info\",\"msg\":\"performing delayed update\",\"outstanding\":1}\n\
            time=\"2026-12-04T04:01:04Z\" level=info msg=\"performing delayed";
        let dir = std::env::temp_dir().join(format!("loopback-contour-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("contour.log");
        let said = LogSignals { rebuilds: Rebuilds::new(), xds_started: Arc::default() };
        let before = std::time::Instant::now();
        copy_log(output.as_bytes(), std::fs::File::create(&path).unwrap(), &said);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), output);
        assert!(said.xds_started.load(Ordering::Acquire), "the xDS listener is Contour's own");
        let times = said.rebuilds.rebuild_times();
        assert_eq!(times.len(), 2, "one rebuild in each format, none for the other lines");
        assert!(times.iter().all(|t| *t >= before));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_config_file_carries_the_installation_settings_in_contours_shape() {
        let read = |config: &LoopbackConfig| -> Value { serde_saphyr::from_str(&config_file(config)).unwrap() };
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
        let object = contour_configuration(&config, [1, 2, 3, 4]);
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
        let spec = contour_configuration(&config, [1, 2, 3, 4])["spec"].clone();
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
        let err = ContourProcess::start(&config, &store, Path::new("/nonexistent"), &dir, Rebuilds::new())
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("scripts/ensure-contour v0.0.0-missing"), "{err}");
        assert!(!dir.exists(), "nothing is written before the binary is found");
    }
}
