//! Starting and stopping a whole loopback cluster: [`Loopback`].

use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::admission::Admission;
use crate::api::kinds::{self, Kinds};
use crate::api::{self, Store};
use crate::config::{ControllerKind, DataPlaneKind, Fault, LoopbackConfig};
use crate::contour::{ContourError, ContourProcess};
use crate::controller::Controller;
use crate::dataplane::{self, RouteTable};
use crate::disruption::{Disruption, Disruptions};
use crate::envoy::{self, EnvoyError, EnvoyListeners, EnvoyProcess, EnvoyStart};
use crate::kubelet::Kubelet;
use crate::rebuilds::Rebuilds;
#[cfg(feature = "xds")]
use crate::xds;

/// Why a loopback cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "nginx not found (looked for {searched}); install it (Debian: apt-get install -y nginx-light) or set `nginx` in the loopback config"
    )]
    NginxNotFound { searched: String },
    #[error("cannot prepare work directory {path}: {source}")]
    WorkDir { path: PathBuf, source: std::io::Error },
    #[error("cannot listen on 127.0.0.1: {0}")]
    Bind(std::io::Error),
    #[error(transparent)]
    Contour(#[from] ContourError),
    #[error(transparent)]
    Envoy(#[from] EnvoyError),
    #[error("no address for Envoy in the cluster's pod range: {0}")]
    EnvoyAddress(String),
    #[error("invalid loopback config: {0}")]
    Config(String),
    #[error("{0}")]
    Credentials(String),
    #[error(
        "cannot serve the Gateway API from {path}: {message} (scripts/ensure-contour keeps each release's CRDs there; or set gateway.crds)"
    )]
    GatewayCrds { path: PathBuf, message: String },
}

/// The kinds a cluster with `config` serves: the built-in ones, and the Gateway API's when
/// it is configured.
fn served_kinds(config: &LoopbackConfig) -> Result<Kinds, StartError> {
    let Some(path) = config.gateway_crds() else {
        return Ok(Kinds::built_in());
    };
    let error = |message: String| StartError::GatewayCrds { path: path.clone(), message };
    let text = std::fs::read_to_string(&path).map_err(|e| error(e.to_string()))?;
    let extra = api::crds::kinds_from_crds(&text).map_err(error)?;
    Kinds::with(&extra).map_err(error)
}

/// A running loopback cluster. Stop it with [`Loopback::shutdown`]; dropping it also stops
/// its tasks (backends are killed) and removes its work directory, but without waiting for
/// anything.
pub struct Loopback {
    kubeconfig: PathBuf,
    api_address: SocketAddr,
    proxy_address: SocketAddr,
    tls_proxy_address: SocketAddr,
    work_dir: PathBuf,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The real Contour, when it is the controller.
    contour: Option<ContourProcess>,
    /// Envoy, when it is the data plane.
    envoy: Option<EnvoyProcess>,
    /// What the data plane serves from.
    routes: watch::Receiver<Arc<RouteTable>>,
    /// The trouble it makes for clients, and how much it made.
    disruptions: Arc<Disruptions>,
    /// When the controller rebuilt, and the changes it took in.
    rebuilds: Arc<Rebuilds>,
}

impl Loopback {
    /// Starts the API server, kubelet, controller and proxy on 127.0.0.0/8. The controller is
    /// the reference one, or the real Contour when the config says so; the proxy is loopback's
    /// own, or Envoy programmed by the real Contour.
    ///
    /// # Errors
    /// The config is invalid, nginx is missing, the work directory cannot be made, no port can
    /// be bound, or Contour or Envoy is not installed or does not come up.
    pub async fn start(config: LoopbackConfig) -> Result<Self, StartError> {
        config.validate().map_err(StartError::Config)?;
        let kinds = served_kinds(&config)?;
        let nginx = find_nginx(config.nginx.as_deref())?;
        // The cluster's directory is always its own, made fresh: a `work-dir` the user names
        // is where it goes, never changed itself nor left holding anything.
        let root = match &config.work_dir {
            Some(dir) => {
                let error = |source| StartError::WorkDir { path: dir.clone(), source };
                std::fs::create_dir_all(dir).map_err(error)?;
                // Absolute, so that the paths processes are started with name it whole.
                let dir = std::path::absolute(dir).map_err(error)?;
                traversable_by_workers(&dir).map_err(error)?;
                dir
            }
            None => work_roots().swap_remove(0),
        };
        let work_dir = fresh_work_dir(&root).map_err(|source| StartError::WorkDir { path: root, source })?;
        let work_dir_error = |source| StartError::WorkDir { path: work_dir.clone(), source };
        // Secrets are written below: nobody else may list anything. nginx's workers run as an
        // unprivileged user when started as root, and must still reach the pods' emptyDirs.
        std::fs::set_permissions(&work_dir, std::fs::Permissions::from_mode(0o711)).map_err(work_dir_error)?;
        std::fs::DirBuilder::new()
            .mode(0o711)
            .create(work_dir.join("pods"))
            .or_else(|e| if e.kind() == std::io::ErrorKind::AlreadyExists { Ok(()) } else { Err(work_dir_error(e)) })?;

        let api_listener = TcpListener::bind("127.0.0.1:0").await.map_err(StartError::Bind)?;
        let api_address = api_listener.local_addr().map_err(StartError::Bind)?;
        let kubeconfig = work_dir.join("kubeconfig");
        let credentials = Arc::new(api::Credentials::generate().map_err(StartError::Credentials)?);
        api::write_kubeconfig(&kubeconfig, &format!("https://{api_address}"), &credentials)
            .map_err(|source| StartError::WorkDir { path: kubeconfig.clone(), source })?;

        let latency = config.latency.latency();
        let store = Store::with_kinds(kinds);
        store.set_namespace_deletion_delay(latency.namespace_deletion);
        // A fresh store cannot refuse its first namespace.
        let _ = store.create(&kinds::NAMESPACE, "", json!({"metadata": {"name": "default"}}));
        let admission = Admission {
            validate_custom_resources: !config.has(Fault::AdmitInvalidHttpProxy),
            rewrite_gateway_status_messages: config.has(Fault::StatusMessagesRewritten),
        };
        let disruptions = Arc::new(Disruptions::with_latency(&config.disruptions, latency));
        let config = Arc::new(config);
        let (shutdown, stop) = watch::channel(false);
        let (routes_tx, routes_rx) = watch::channel(Arc::new(RouteTable::default()));
        let mut kubelet = Kubelet::new(store.clone(), work_dir.join("pods"), nginx, disruptions.clone());
        // Envoy listens like a pod, on an address of the cluster's own: Contour's default
        // ports there never meet another cluster's.
        let envoy_listeners = match config.data_plane {
            DataPlaneKind::Envoy => Some(EnvoyListeners {
                address: kubelet.reserve_address(&envoy::PORTS).map_err(StartError::EnvoyAddress)?,
                admin_port: crate::supervise::free_ports::<1>().map_err(StartError::Bind)?[0],
            }),
            DataPlaneKind::Loopback => None,
        };
        let rebuilds = Rebuilds::new();
        let tasks = vec![
            tokio::spawn(rebuilds.clone().follow(&store, stop.clone())),
            tokio::spawn(api::serve(
                api_listener,
                store.clone(),
                admission,
                credentials,
                disruptions.clone(),
                stop.clone(),
            )),
            tokio::spawn(kubelet.run(stop.clone())),
        ];
        // Made before the controller starts, so a controller that fails to start can be
        // shut down with everything else.
        let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut loopback = Loopback {
            kubeconfig,
            api_address,
            proxy_address: unbound,
            tls_proxy_address: unbound,
            work_dir,
            shutdown,
            tasks,
            contour: None,
            envoy: None,
            routes: routes_rx.clone(),
            disruptions,
            rebuilds,
        };
        let started = match envoy_listeners {
            None => loopback.start_proxy(&store, routes_rx).await,
            Some(_) => Ok(()),
        };
        let started = match started {
            Ok(()) => loopback.start_controller(&config, &store, routes_tx, envoy_listeners.as_ref()).await,
            Err(e) => Err(e),
        };
        let started = match (started, envoy_listeners) {
            (Ok(()), Some(listeners)) => loopback.start_envoy(&config, &store, listeners).await,
            (started, _) => started,
        };
        if let Err(e) = started {
            loopback.shutdown().await;
            return Err(e);
        }
        tracing::info!(api = %api_address, proxy = %loopback.proxy_address, tls_proxy = %loopback.tls_proxy_address,
            controller = %config.controller, data_plane = %config.data_plane, "loopback cluster started");
        Ok(loopback)
    }

    /// Starts loopback's own proxy, for plain HTTP and TLS virtual hosts, serving `routes`.
    async fn start_proxy(&mut self, store: &Store, routes: watch::Receiver<Arc<RouteTable>>) -> Result<(), StartError> {
        let proxy_listener = TcpListener::bind("127.0.0.1:0").await.map_err(StartError::Bind)?;
        let tls_proxy_listener = TcpListener::bind("127.0.0.1:0").await.map_err(StartError::Bind)?;
        self.proxy_address = proxy_listener.local_addr().map_err(StartError::Bind)?;
        self.tls_proxy_address = tls_proxy_listener.local_addr().map_err(StartError::Bind)?;
        let stop = self.shutdown.subscribe();
        self.tasks.push(tokio::spawn(dataplane::serve(
            proxy_listener,
            routes.clone(),
            dataplane::dns::ClusterDns::new(store.clone()),
            self.disruptions.clone(),
            stop.clone(),
        )));
        self.tasks.push(tokio::spawn(dataplane::secure::serve_tls(
            tls_proxy_listener,
            routes,
            dataplane::dns::ClusterDns::new(store.clone()),
            stop,
        )));
        Ok(())
    }

    /// Starts the controller: the reference one, programming loopback's proxy directly, or the
    /// real Contour, whose xDS loopback's proxy follows, unless Envoy (at `envoy`) does.
    async fn start_controller(
        &mut self,
        config: &Arc<LoopbackConfig>,
        store: &Store,
        routes: watch::Sender<Arc<RouteTable>>,
        envoy: Option<&EnvoyListeners>,
    ) -> Result<(), StartError> {
        let stop = self.shutdown.subscribe();
        match config.controller {
            ControllerKind::Reference => {
                let controller = Controller::new(store.clone(), config.clone(), routes).telling(self.rebuilds.clone());
                self.tasks.push(tokio::spawn(controller.run(stop)));
            }
            ControllerKind::Contour => {
                if envoy.is_some() {
                    // In Contour's first configuration already, so that Envoy's first
                    // listeners are there (see `envoy`).
                    envoy::write_ready_objects(store)?;
                }
                let dir = self.work_dir.join("contour");
                let contour =
                    ContourProcess::start(config, store, &self.kubeconfig, &dir, self.rebuilds.clone(), envoy).await?;
                // Loopback's proxy follows Contour's xDS, as Envoy does (a build without the xDS
                // client refuses this configuration in `LoopbackConfig::validate`).
                #[cfg(feature = "xds")]
                if envoy.is_none() {
                    self.tasks.push(tokio::spawn(xds::run(contour.xds_address(), config.faults.clone(), routes, stop)));
                }
                #[cfg(not(feature = "xds"))]
                let _ = (routes, stop);
                self.contour = Some(contour);
            }
        }
        Ok(())
    }

    /// Starts Envoy on `listeners`, subscribed to the running Contour, with loopback's cluster
    /// DNS as its resolver.
    async fn start_envoy(
        &mut self,
        config: &LoopbackConfig,
        store: &Store,
        listeners: EnvoyListeners,
    ) -> Result<(), StartError> {
        let Some(contour) = &self.contour else {
            return Err(StartError::Config("data-plane envoy needs controller contour".into()));
        };
        let dns_socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.map_err(StartError::Bind)?;
        let dns = dns_socket.local_addr().map_err(StartError::Bind)?;
        let resolver = dataplane::dns::ClusterDns::new(store.clone());
        self.tasks.push(tokio::spawn(dataplane::dns::serve(dns_socket, resolver, self.shutdown.subscribe())));
        let version = config.envoy.version_for(contour.version()).map_err(EnvoyError::Version)?;
        let binary = config.envoy.binary(&version);
        let node = self.work_dir.file_name().map_or_else(|| "loopback".into(), |n| n.to_string_lossy().into_owned());
        let start = EnvoyStart {
            version,
            binary,
            contour_binary: &config.contour.binary(),
            xds: contour.xds_address(),
            listeners,
            dns,
            dir: &self.work_dir.join("envoy"),
            node,
        };
        let envoy = EnvoyProcess::start(start).await?;
        self.proxy_address = listeners.http();
        self.tls_proxy_address = listeners.https();
        self.envoy = Some(envoy);
        Ok(())
    }

    /// The data plane's configuration as it is now, whichever controller made it: for tests
    /// that compare controllers ([`RouteTable::effective_settings`]). Empty when Envoy is the
    /// data plane: loopback's proxy then does not run.
    pub fn route_table(&self) -> Arc<RouteTable> {
        self.routes.borrow().clone()
    }

    /// How many times each disruption switched on was injected so far.
    pub fn disruption_counts(&self) -> Vec<(Disruption, u64)> {
        self.disruptions.counts()
    }

    /// When the controller began each rebuild and the changes it took in, for measuring how
    /// long changes wait for it ([`Rebuilds::held_off`]).
    pub fn rebuilds(&self) -> &Rebuilds {
        &self.rebuilds
    }

    /// The real Contour's log file, when Contour is the controller.
    pub fn contour_log(&self) -> Option<&Path> {
        self.contour.as_ref().map(ContourProcess::log_path)
    }

    /// Envoy, when it is the data plane: its release, log and configuration.
    pub fn envoy(&self) -> Option<&EnvoyProcess> {
        self.envoy.as_ref()
    }

    /// The processes of the outside programs this cluster runs besides its backends (the real
    /// Contour, Envoy), by name.
    pub fn programs(&self) -> Vec<(&'static str, i32)> {
        let contour = self.contour.as_ref().map(|c| ("contour", c.pid()));
        let envoy = self.envoy.as_ref().map(|e| ("envoy", e.pid()));
        contour.into_iter().chain(envoy).collect()
    }

    /// The CPU time each outside program this cluster runs has used so far, by name; read it
    /// before [`Loopback::shutdown`].
    pub fn program_cpu(&self) -> Vec<(&'static str, std::time::Duration)> {
        let contour = self.contour.as_ref().and_then(|c| Some(("contour", c.cpu_time()?)));
        let envoy = self.envoy.as_ref().and_then(|e| Some(("envoy", e.cpu_time()?)));
        contour.into_iter().chain(envoy).collect()
    }

    /// Where the real Contour serves xDS, when it is the controller.
    pub fn contour_xds_address(&self) -> Option<SocketAddr> {
        self.contour.as_ref().map(ContourProcess::xds_address)
    }

    /// The kubeconfig file clients (kube-rs, kubectl) use.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Where the API server listens.
    pub fn api_address(&self) -> SocketAddr {
        self.api_address
    }

    /// Where the proxy (loopback's or Envoy) listens for plain HTTP.
    pub fn proxy_address(&self) -> SocketAddr {
        self.proxy_address
    }

    /// Where the proxy listens for TLS: the virtual hosts with `virtualhost.tls`, by SNI.
    pub fn tls_proxy_address(&self) -> SocketAddr {
        self.tls_proxy_address
    }

    /// Stops everything, waits for backend processes to exit and removes the work directory.
    pub async fn shutdown(mut self) {
        // Envoy first, so that it does not log Contour going away.
        if let Some(envoy) = self.envoy.take() {
            envoy.stop().await;
        }
        if let Some(contour) = self.contour.take() {
            contour.stop().await;
        }
        self.shutdown.send_replace(true);
        for task in self.tasks.drain(..) {
            // A task that panicked has nothing left to clean.
            let _ = task.await;
        }
        if let Err(err) = std::fs::remove_dir_all(&self.work_dir) {
            tracing::warn!("cannot remove {}: {err}", self.work_dir.display());
        }
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        // Tasks left means no shutdown ran (a panicking test): the files must not stay either.
        if !self.tasks.is_empty() {
            let _ = std::fs::remove_dir_all(&self.work_dir);
        }
    }
}

fn find_nginx(configured: Option<&Path>) -> Result<PathBuf, StartError> {
    if let Some(path) = configured {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(StartError::NginxNotFound { searched: path.display().to_string() })
        };
    }
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"].map(PathBuf::from));
    dirs.iter()
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
        .ok_or_else(|| StartError::NginxNotFound { searched: "PATH, /usr/sbin, /usr/local/sbin".into() })
}

/// What [`remove_stale_work_dirs`] found: a work directory of a loopback that no longer runs.
#[derive(Debug)]
pub struct StaleWorkDir {
    pub path: PathBuf,
    /// Backend processes still running from it, which were stopped.
    pub processes: usize,
    /// What became of it: removed, not removable, or left alone because it cannot be shown to
    /// be this user's loopback's.
    pub outcome: StaleOutcome,
}

/// What [`remove_stale_work_dirs`] did with a directory named like a work directory.
#[derive(Debug)]
pub enum StaleOutcome {
    Removed,
    /// It is a loopback's, but removing it failed.
    Failed(std::io::Error),
    /// Left alone: it cannot be shown to be a work directory this user's loopback made.
    Skipped(String),
}

/// Memory-backed directory loopback prefers for its work directories.
const SHARED_MEMORY: &str = "/dev/shm";

/// Free space [`SHARED_MEMORY`] needs for loopback to use it (containers often give it 64 MiB;
/// the mutation test's 77 clusters at once take a few hundred).
const SHARED_MEMORY_FREE: u64 = 1 << 30;

/// Where loopback clusters make their work directories, the one new clusters use first:
/// `$TMPDIR` when it is set (the user's choice); otherwise `/dev/shm` when it is a directory
/// this user can write with at least 1 GiB free, then the system's temporary directory. A
/// run creates and deletes thousands of small files (configurations, certificates, logs of
/// every backend): in memory, a catalog run takes less time and CPU than on a
/// disk filesystem (10-25 % measured on ext4), and private keys are never written to a disk.
pub fn work_roots() -> Vec<PathBuf> {
    let shared = Path::new(SHARED_MEMORY);
    let prefer_shared = std::env::var_os("TMPDIR").is_none() && shared_memory_usable(shared);
    ordered_roots(std::env::temp_dir(), shared, prefer_shared)
}

/// The temporary directory and shared memory, the preferred first, once each.
fn ordered_roots(temp: PathBuf, shared: &Path, prefer_shared: bool) -> Vec<PathBuf> {
    match (prefer_shared, temp == shared) {
        (_, true) => vec![temp],
        (true, false) => vec![shared.to_path_buf(), temp],
        (false, false) => vec![temp, shared.to_path_buf()],
    }
}

/// `dir` is a directory this user may write to, with [`SHARED_MEMORY_FREE`] free.
fn shared_memory_usable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    // SAFETY: `path` is a NUL-terminated string, `stats` a plain struct statvfs fills in.
    unsafe {
        let mut stats: libc::statvfs = std::mem::zeroed();
        libc::access(path.as_ptr(), libc::W_OK | libc::X_OK) == 0
            && libc::statvfs(path.as_ptr(), &mut stats) == 0
            && stats.f_bavail.saturating_mul(stats.f_frsize) >= SHARED_MEMORY_FREE
    }
}

/// Removes the work directories, in `roots` and in [`work_roots`], of loopback clusters whose
/// process is gone, after stopping the backends still running from them. Only what can be
/// shown to be this user's loopback's is touched: a directory (not a link) owned by this user,
/// named after a process that no longer runs, holding the marker file its cluster wrote with
/// that process's id; and processes of this user whose command line names a path in it (with
/// the process group they lead: nginx's workers). Anything else named like a work directory is
/// reported as skipped, with the reason.
pub fn remove_stale_work_dirs(roots: &[PathBuf]) -> Vec<StaleWorkDir> {
    let mut all_roots = roots.to_vec();
    all_roots.extend(work_roots().into_iter().filter(|r| !roots.contains(r)));
    remove_stale_work_dirs_in(&all_roots)
}

/// [`remove_stale_work_dirs`] in `roots` only.
fn remove_stale_work_dirs_in(roots: &[PathBuf]) -> Vec<StaleWorkDir> {
    let entries = roots.iter().filter_map(|root| std::fs::read_dir(root).ok()).flatten();
    let mut found = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = work_dir_owner(&name) else { continue };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = entry.path();
        let outcome = match provably_ours(&path, pid) {
            Err(reason) => StaleOutcome::Skipped(reason),
            Ok(()) => {
                let processes = stop_processes_in(&path);
                let outcome = match std::fs::remove_dir_all(&path) {
                    Ok(()) => StaleOutcome::Removed,
                    Err(e) => StaleOutcome::Failed(e),
                };
                found.push(StaleWorkDir { path, processes, outcome });
                continue;
            }
        };
        found.push(StaleWorkDir { path, processes: 0, outcome });
    }
    found
}

/// The file a cluster writes into its work directory, holding its process id: what makes a
/// directory provably a loopback's.
pub const WORK_DIR_MARKER: &str = ".loopback-work-dir";

/// Whether `dir` is a work directory this user's loopback, process `pid`, made; why not.
fn provably_ours(dir: &Path, pid: u32) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("cannot be read: {e}"))?;
    if !meta.is_dir() {
        return Err("it is not a directory".into());
    }
    // SAFETY: geteuid(2) has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(format!("it belongs to user {}, not to this user ({me})", meta.uid()));
    }
    let marker = dir.join(WORK_DIR_MARKER);
    let marked = std::fs::symlink_metadata(&marker).is_ok_and(|m| m.is_file() && m.uid() == me)
        && std::fs::read_to_string(&marker).is_ok_and(|text| text.trim() == pid.to_string());
    if !marked {
        return Err(format!("it holds no {WORK_DIR_MARKER} file naming process {pid}"));
    }
    Ok(())
}

/// The pid in a work directory's name (`loopback-<pid>-<hex>[-<n>]`), if it is one.
fn work_dir_owner(name: &str) -> Option<u32> {
    let mut parts = name.strip_prefix("loopback-")?.split('-');
    let pid = parts.next()?.parse().ok()?;
    let stamp = parts.next()?;
    let rest: Vec<&str> = parts.collect();
    let is_hex = !stamp.is_empty() && stamp.bytes().all(|b| b.is_ascii_hexdigit());
    let attempt_ok = match rest.as_slice() {
        [] => true,
        [n] => n.parse::<u32>().is_ok(),
        _ => false,
    };
    (is_hex && attempt_ok).then_some(pid)
}

/// The environment variable every process a loopback starts (nginx for pods, Contour, Envoy)
/// carries: the directory it runs from, inside the cluster's work directory. `cleanup` stops
/// only processes that carry it, with a directory of a work directory it removes.
pub const PROCESS_DIR_ENV: &str = "LOOPBACK_PROCESS_DIR";

/// Sends SIGKILL to every process of this user started by the loopback of `dir` (its
/// environment says so: [`PROCESS_DIR_ENV`]), and to the process group it leads, if it leads
/// one (nginx's workers, which may run as another user and do not keep the environment);
/// never to this process or its group. Returns how many processes were found.
fn stop_processes_in(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    let marker = format!("{PROCESS_DIR_ENV}={}", dir.display());
    let inside = format!("{marker}/");
    // SAFETY: geteuid(2), getpid(2) and getpgrp(2) have no preconditions.
    let (me, own_pid, own_group) = unsafe { (libc::geteuid(), libc::getpid(), libc::getpgrp()) };
    let mut stopped = 0;
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        if pid == own_pid || entry.metadata().map_or(true, |m| m.uid() != me) {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        let ours = environ
            .split(|b| *b == 0)
            .map(String::from_utf8_lossy)
            .any(|var| var == marker || var.starts_with(&inside));
        if !ours {
            continue;
        }
        let leads_group = std::fs::read_to_string(entry.path().join("stat")).ok().and_then(|stat| {
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<i32>().ok())
        }) == Some(pid);
        let target = if leads_group && pid != own_group { -pid } else { pid };
        // SAFETY: plain kill(2); the process runs from the work directory of a loopback that is gone.
        unsafe { libc::kill(target, libc::SIGKILL) };
        stopped += 1;
    }
    stopped
}

/// When loopback runs as root, nginx's workers run as an unprivileged user and must reach the
/// pods' directories: every directory on the way to `dir` must let others through (o+x).
fn traversable_by_workers(dir: &Path) -> std::io::Result<()> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    for ancestor in dir.ancestors() {
        let mode = std::fs::metadata(ancestor)?.permissions().mode();
        if mode & 0o001 == 0 {
            return Err(std::io::Error::other(format!(
                "{} does not let others through (mode {:o}, no o+x); nginx's workers run as an unprivileged user \
                 when loopback runs as root, and must reach the pods' directories: choose another work-dir or \
                 chmod o+x it",
                ancestor.display(),
                mode & 0o7777
            )));
        }
    }
    Ok(())
}

/// A new directory under `root`, created by this call (so never one another user prepared),
/// readable by loopback's user only until [`Loopback::start`] opens it for traversal.
fn fresh_work_dir(root: &Path) -> std::io::Result<PathBuf> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut attempt = 0u32;
    loop {
        let dir = root.join(format!("loopback-{}-{nanos:x}-{attempt}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
            Err(e) => return Err(e),
            Ok(()) => {
                std::fs::write(dir.join(WORK_DIR_MARKER), format!("{}\n", std::process::id()))?;
                return Ok(dir);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;

    use super::*;

    #[test]
    fn work_directories_go_to_memory_unless_the_user_chose_a_temporary_directory() {
        let (tmp, shm) = (PathBuf::from("/tmp"), Path::new("/dev/shm"));
        assert_eq!(ordered_roots(tmp.clone(), shm, true), [shm.to_path_buf(), tmp.clone()]);
        assert_eq!(ordered_roots(tmp.clone(), shm, false), [tmp.clone(), shm.to_path_buf()]);
        assert_eq!(ordered_roots(shm.to_path_buf(), shm, false), [shm.to_path_buf()]);
        assert!(!shared_memory_usable(Path::new("/no/such/directory")));
    }

    /// A process id no process has (above the kernel's largest).
    const GONE: u32 = 4_194_305;

    #[test]
    fn cleanup_touches_only_what_a_loopback_of_this_user_left() {
        let root = std::env::temp_dir().join(format!("loopback-cleanup-test-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let dir = |n: u32| root.join(format!("loopback-{GONE}-abc-{n}"));
        let marked = |n: u32| {
            std::fs::create_dir(dir(n)).unwrap();
            std::fs::write(dir(n).join(WORK_DIR_MARKER), format!("{GONE}\n")).unwrap();
        };
        marked(0);
        std::fs::create_dir(dir(1)).unwrap();
        marked(2);
        std::fs::write(dir(2).join(WORK_DIR_MARKER), "1\n").unwrap();
        std::os::unix::fs::symlink(dir(0), dir(3)).unwrap();
        // SAFETY: geteuid(2) has no preconditions.
        let root_user = unsafe { libc::geteuid() } == 0;
        if root_user {
            marked(4);
            std::os::unix::fs::chown(dir(4), Some(65534), Some(65534)).unwrap();
        }
        // A backend of the dead cluster, and a process of the same shape elsewhere.
        std::fs::create_dir(dir(0).join("pods")).unwrap();
        std::fs::write(dir(0).join("pods/x"), "").unwrap();
        let elsewhere = PathBuf::from(format!("{}-not-it", dir(0).display()));
        std::fs::write(&elsewhere, "").unwrap();
        let follow = |file: &Path, dir: &Path| {
            std::process::Command::new("tail").arg("-f").arg(file).env(PROCESS_DIR_ENV, dir).spawn().unwrap()
        };
        let backend_dir = dir(0).join("pods/x");
        // A backend of the dead cluster; a process that only names a file in it (a user's
        // `tail -f` of a log), which is not the cluster's.
        let mut backend = follow(&elsewhere, &backend_dir);
        // `spawn` returns once the exec is past its point of no return, a moment before the
        // kernel records where the new program's environment lies: until then it reads empty.
        let environ = PathBuf::from(format!("/proc/{}/environ", backend.id()));
        let expected = format!("{PROCESS_DIR_ENV}={}", backend_dir.display());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !std::fs::read(&environ).is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == expected.as_bytes())) {
            assert!(std::time::Instant::now() < deadline, "the backend's environment never showed {expected}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // (A shell that waits, its command line naming the file: `tail -f` would end by itself
        // once the file is removed.)
        let mut bystander = std::process::Command::new("sh")
            .args(["-c", "sleep 600; :"])
            .arg(dir(0).join("pods/x"))
            .process_group(0)
            .spawn()
            .unwrap();

        let found = remove_stale_work_dirs_in(std::slice::from_ref(&root));
        let outcome = |n: u32| {
            found.iter().find(|f| f.path == dir(n)).map(|f| match &f.outcome {
                StaleOutcome::Removed => format!("removed, {} stopped", f.processes),
                StaleOutcome::Failed(e) => format!("failed: {e}"),
                StaleOutcome::Skipped(why) => why.clone(),
            })
        };
        assert_eq!(outcome(0).as_deref(), Some("removed, 1 stopped"));
        assert!(!dir(0).exists());
        assert_eq!(outcome(1), Some(format!("it holds no {WORK_DIR_MARKER} file naming process {GONE}")));
        assert_eq!(outcome(2), Some(format!("it holds no {WORK_DIR_MARKER} file naming process {GONE}")));
        assert_eq!(outcome(3).as_deref(), Some("it is not a directory"));
        if root_user {
            assert_eq!(outcome(4).as_deref(), Some("it belongs to user 65534, not to this user (0)"));
            assert!(dir(4).exists());
        }
        assert!(backend.wait().is_ok_and(|s| !s.success()), "the backend was stopped");
        assert!(bystander.try_wait().unwrap().is_none(), "a process that only names a file there is left alone");
        // SAFETY: kill(2) on the process group of our own child, the shell and its sleep.
        unsafe { libc::kill(-(bystander.id() as i32), libc::SIGKILL) };
        let _ = bystander.wait();
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[tokio::test]
    async fn a_work_dir_the_user_names_is_left_as_it_was() {
        let dir = std::env::temp_dir().join(format!("loopback-work-dir-test-{}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o751).create(&dir).unwrap();
        std::fs::write(dir.join("mine"), "").unwrap();
        let config = LoopbackConfig { work_dir: Some(dir.clone()), ..Default::default() };
        let cluster = Loopback::start(config).await.expect("loopback starts");
        let own = cluster.kubeconfig().parent().unwrap().to_path_buf();
        assert_eq!(own.parent(), Some(dir.as_path()), "the cluster makes its directory inside");
        assert!(own.join(WORK_DIR_MARKER).is_file());
        cluster.shutdown().await;
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["mine"], "nothing is left");
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o751, "its mode is kept");
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
            let config = LoopbackConfig { work_dir: Some(dir.clone()), ..Default::default() };
            let error = Loopback::start(config).await.err().expect("refused").to_string();
            assert!(error.contains("does not let others through (mode 750, no o+x)"), "{error}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn work_directory_names_say_whose_they_are() {
        assert_eq!(work_dir_owner("loopback-123-18ed57db0eeb30ae-0"), Some(123));
        assert_eq!(work_dir_owner("loopback-123-18ed57db0eeb30ae"), Some(123));
        for other in ["loopback-api-test-1-2", "loopback-x-1a", "loopback-1-zz", "loopback-1-1a-2-3", "other-1-1a"] {
            assert_eq!(work_dir_owner(other), None, "{other}");
        }
    }
}
