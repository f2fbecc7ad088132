//! Pods as local processes: [`PodRunner`].
//!
//! A pod's volumes are written under its own directory; its one container must run `nginx`,
//! which is started with the container's arguments, with each path under a volume's
//! `mountPath` translated to that volume's directory. Pods share the host network and
//! filesystem, so each pod gets its own 127.x.y.z address and runs a copy of its nginx config
//! confined to the pod ([`super::nginx_conf`]: every listener on that address, files written
//! in the pod's directory, nginx in the foreground). The pod is Ready once every container port
//! accepts connections.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::api::core::v1::{Container, Pod, Volume};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use super::nginx_conf::{self, Confinement};
use crate::api::LOG_FILE_ANNOTATION;
use crate::api::kinds::{CONFIG_MAP, POD, SECRET};
use crate::api::store::{Store, Subresource, now_rfc3339};
use crate::disruption::{Disruption, Disruptions};

/// How long a stopping nginx gets before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How long an nginx that exited waits before it is started again, after `restarts` restarts:
/// at once the first time, then doubling from 1 s up to 10 s. A kubelet's back-off is the same
/// shape, ten times longer (10 s up to five minutes).
fn restart_delay(restarts: u32) -> Duration {
    match restarts {
        0 => Duration::ZERO,
        n => Duration::from_secs(1 << (n - 1).min(4)).min(Duration::from_secs(10)),
    }
}

struct RunningPod {
    uid: String,
    child: Child,
    dir: PathBuf,
    address: Ipv4Addr,
    ports: Vec<u16>,
    ready: bool,
    /// nginx's command line, to start it again after it exits.
    args: Vec<String>,
    /// How many times nginx was started again after exiting.
    restarts: u32,
    /// Set while nginx has exited and waits to be started again: when, and why it exited.
    crashed: Option<(Instant, String)>,
    /// When [`Disruption::BackendCrash`] kills it; cleared once done.
    crash_at: Option<Instant>,
}

impl Drop for RunningPod {
    /// A pod dropped without [`PodRunner::stop`] (loopback dropped without shutting down, as
    /// when a test panics) takes nginx's workers with it, not only the master that
    /// `kill_on_drop` would kill: orphaned workers would keep its address and ports bound.
    fn drop(&mut self) {
        kill_group(&self.child, libc::SIGKILL);
    }
}

/// Starts, probes and stops the processes behind pods.
pub struct PodRunner {
    store: Store,
    root: PathBuf,
    nginx: PathBuf,
    running: HashMap<(String, String), RunningPod>,
    addresses: AddressPool,
    disruptions: Arc<Disruptions>,
    /// When each pod not started yet was first seen, while a pod start delay applies.
    first_seen: HashMap<(String, String), Instant>,
}

impl PodRunner {
    pub fn new(store: Store, root: PathBuf, nginx: PathBuf, disruptions: Arc<Disruptions>) -> Self {
        PodRunner {
            store,
            root,
            nginx,
            running: HashMap::new(),
            addresses: AddressPool::new(),
            disruptions,
            first_seen: HashMap::new(),
        }
    }

    /// An address of the cluster's pod range, with `ports` free, for a program that listens
    /// like a pod but is not one (Envoy): it keeps it for good.
    ///
    /// # Errors
    /// No address of the range has those ports free.
    pub fn reserve_address(&mut self, ports: &[u16]) -> Result<std::net::Ipv4Addr, String> {
        self.addresses.next_free(ports)
    }

    /// One pass: start new pods, probe starting ones, notice exits, stop deleted ones.
    /// Returns whether some pod is still settling (so the caller should come back soon).
    pub async fn sync(&mut self) -> bool {
        let (pods, _) = self.store.list(&POD, None);
        let mut settling = false;
        for value in &pods {
            let meta = &value["metadata"];
            let (Some(ns), Some(name), Some(uid)) =
                (meta["namespace"].as_str(), meta["name"].as_str(), meta["uid"].as_str())
            else {
                continue;
            };
            let (ns, name, uid) = (ns.to_string(), name.to_string(), uid.to_string());
            let key = (ns.clone(), name.clone());
            if meta.get("deletionTimestamp").is_some() {
                self.first_seen.remove(&key);
                self.stop(&key).await;
                self.store.remove(&POD, &ns, &name);
                continue;
            }
            if self.running.get(&key).is_some_and(|r| r.uid != uid) {
                self.stop(&key).await;
            }
            match self.running.get_mut(&key) {
                None => {
                    // A latency profile: the pod waits to be scheduled and its sandbox made.
                    let delay = self.disruptions.pod_start_delay();
                    if !delay.is_zero() {
                        let seen = *self.first_seen.entry(key.clone()).or_insert_with(Instant::now);
                        if seen.elapsed() < delay {
                            settling = true;
                            continue;
                        }
                        self.first_seen.remove(&key);
                    }
                    // Read in full only to start it.
                    let Ok(pod) = Pod::deserialize(&**value) else { continue };
                    match self.start(&pod, &ns, &name, &uid).await {
                        Ok(running) => {
                            self.running.insert(key, running);
                            settling = true;
                        }
                        Err(reason) => {
                            settling = true;
                            self.set_waiting(&ns, &name, &reason);
                        }
                    }
                }
                Some(running) => {
                    let now = Instant::now();
                    if let Some((restart_at, _)) = &running.crashed {
                        settling = true;
                        if now < *restart_at {
                            continue;
                        }
                        match spawn(&self.nginx, &running.args, &running.dir) {
                            Ok(child) => {
                                running.child = child;
                                running.crashed = None;
                                running.restarts += 1;
                                running.ready = false;
                            }
                            Err(message) => {
                                running.crashed = Some((now + restart_delay(running.restarts + 1), message));
                                continue;
                            }
                        }
                    }
                    if running.crash_at.is_some_and(|at| now >= at) {
                        running.crash_at = None;
                        kill_group(&running.child, libc::SIGKILL);
                        let _ = running.child.wait().await;
                        self.disruptions.injected(Disruption::BackendCrash);
                        tracing::debug!(%ns, pod = name, "killed nginx (disruption)");
                    }
                    if let Ok(Some(exit)) = running.child.try_wait() {
                        let message =
                            format!("nginx exited: {exit}; see {}", running.dir.join("container.log").display());
                        running.crashed = Some((now + restart_delay(running.restarts), message.clone()));
                        running.ready = false;
                        settling = true;
                        let (restarts, backing_off) = (running.restarts, running.restarts > 0);
                        self.set_exited(&ns, &name, &message, restarts, backing_off);
                        continue;
                    }
                    settling |= running.crash_at.is_some();
                    if !running.ready {
                        running.ready = ports_open(running.address, &running.ports).await;
                        settling |= !running.ready;
                        if running.ready
                            && running.restarts == 0
                            && let Some(after) = self.disruptions.backend_crash_after()
                        {
                            running.crash_at = Some(now + after);
                            settling = true;
                        }
                        let (address, ready, restarts) = (running.address, running.ready, running.restarts);
                        self.set_running(&ns, &name, address, ready, restarts);
                    }
                }
            }
        }
        // Pods removed from the store without passing through deletion (never in practice,
        // but a process must never outlive its pod).
        let listed: HashSet<(&str, &str)> = pods
            .iter()
            .filter_map(|p| Some((p["metadata"]["namespace"].as_str()?, p["metadata"]["name"].as_str()?)))
            .collect();
        let gone: Vec<_> =
            self.running.keys().filter(|(ns, name)| !listed.contains(&(ns.as_str(), name.as_str()))).cloned().collect();
        for key in gone {
            self.stop(&key).await;
        }
        settling
    }

    /// Stops every process, for shutdown.
    pub async fn stop_all(&mut self) {
        let keys: Vec<_> = self.running.keys().cloned().collect();
        for key in keys {
            self.stop(&key).await;
        }
    }

    async fn start(&mut self, pod: &Pod, ns: &str, name: &str, uid: &str) -> Result<RunningPod, String> {
        let spec = pod.spec.as_ref().ok_or("pod has no spec")?;
        let [container] = spec.containers.as_slice() else {
            return Err("loopback runs pods with exactly one container".into());
        };
        let ports: Vec<u16> =
            container.ports.iter().flatten().filter_map(|p| u16::try_from(p.container_port).ok()).collect();
        let namespace_dir = self.root.join(file_name(ns)?);
        create_dir(&namespace_dir, TRAVERSE_ONLY)?;
        let dir = namespace_dir.join(file_name(name)?);
        create_dir(&dir, TRAVERSE_ONLY)?;
        let volume_dirs = self.write_volumes(&dir, ns, spec.volumes.as_deref().unwrap_or_default())?;
        let mounts = mount_table(container, &volume_dirs)?;
        let address = self.addresses.next_free(&ports)?;
        let args = nginx_args(container, &Confinement { address, pod_dir: &dir, mounts: &mounts });
        let args = args.inspect_err(|_| self.addresses.release(address))?;

        let child = spawn(&self.nginx, &args, &dir).inspect_err(|_| self.addresses.release(address))?;
        let log_file = dir.join("container.log").display().to_string();
        self.store.modify(&POD, ns, name, Subresource::Main, |p| {
            p["metadata"]["annotations"][LOG_FILE_ANNOTATION] = json!(log_file);
        });
        tracing::debug!(%ns, pod = name, %address, "started nginx");
        Ok(RunningPod {
            uid: uid.to_string(),
            child,
            dir,
            address,
            ports,
            ready: false,
            args,
            restarts: 0,
            crashed: None,
            crash_at: None,
        })
    }

    async fn stop(&mut self, key: &(String, String)) {
        let Some(mut running) = self.running.remove(key) else { return };
        kill_group(&running.child, libc::SIGTERM);
        if tokio::time::timeout(STOP_GRACE, running.child.wait()).await.is_err() {
            kill_group(&running.child, libc::SIGKILL);
            let _ = running.child.wait().await;
        }
        self.addresses.release(running.address);
        if let Err(err) = std::fs::remove_dir_all(&running.dir) {
            tracing::warn!("cannot remove {}: {err}", running.dir.display());
        }
    }

    fn write_volumes(&self, dir: &Path, ns: &str, volumes: &[Volume]) -> Result<HashMap<String, PathBuf>, String> {
        let mut out = HashMap::new();
        create_dir(&dir.join("volumes"), TRAVERSE_ONLY)?;
        for volume in volumes {
            let path = dir.join("volumes").join(file_name(&volume.name)?);
            let mut files: Vec<(String, Vec<u8>)> = Vec::new();
            let holds_secrets = volume.secret.is_some()
                || volume.projected.iter().flat_map(|p| p.sources.iter().flatten()).any(|s| s.secret.is_some());
            create_dir(&path, if holds_secrets { OWNER_ONLY } else { 0o755 })?;
            if let Some(cm) = &volume.config_map {
                files.extend(self.config_map_files(ns, &cm.name)?);
            } else if let Some(secret) = &volume.secret {
                files.extend(self.secret_files(ns, secret.secret_name.as_deref().unwrap_or_default())?);
            } else if let Some(projected) = &volume.projected {
                for source in projected.sources.iter().flatten() {
                    if let Some(cm) = &source.config_map {
                        files.extend(self.config_map_files(ns, &cm.name)?);
                    }
                    if let Some(secret) = &source.secret {
                        files.extend(self.secret_files(ns, &secret.name)?);
                    }
                }
            } else if volume.empty_dir.is_some() {
                set_mode(&path, 0o777)?;
            } else {
                return Err(format!(
                    "volume {:?}: loopback supports configMap, secret, projected and emptyDir volumes",
                    volume.name
                ));
            }
            for (file, content) in files {
                let target = path.join(file_name(&file)?);
                write_file(&target, &content, if holds_secrets { 0o600 } else { 0o644 })?;
            }
            out.insert(volume.name.clone(), path);
        }
        Ok(out)
    }

    fn config_map_files(&self, ns: &str, name: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
        let cm = self
            .store
            .get(&CONFIG_MAP, ns, name)
            .ok_or_else(|| format!("MountVolume.SetUp failed: configmap \"{name}\" not found"))?;
        let mut files = Vec::new();
        for (key, value) in cm["data"].as_object().into_iter().flatten() {
            files.push((key.clone(), value.as_str().unwrap_or_default().as_bytes().to_vec()));
        }
        for (key, value) in cm["binaryData"].as_object().into_iter().flatten() {
            files.push((key.clone(), decode(value)?));
        }
        Ok(files)
    }

    fn secret_files(&self, ns: &str, name: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
        let secret = self
            .store
            .get(&SECRET, ns, name)
            .ok_or_else(|| format!("MountVolume.SetUp failed: secret \"{name}\" not found"))?;
        let mut files = Vec::new();
        for (key, value) in secret["data"].as_object().into_iter().flatten() {
            files.push((key.clone(), decode(value)?));
        }
        for (key, value) in secret["stringData"].as_object().into_iter().flatten() {
            files.push((key.clone(), value.as_str().unwrap_or_default().as_bytes().to_vec()));
        }
        Ok(files)
    }

    /// The pod cannot start yet: `Pending`, its container waiting. A volume whose ConfigMap or
    /// Secret does not exist yet is `ContainerCreating` (it may appear); anything else about
    /// the pod that loopback cannot run is `CreateContainerConfigError`, as a kubelet reports
    /// a container it cannot create from its spec.
    fn set_waiting(&self, ns: &str, name: &str, reason: &str) {
        let waiting = if reason.starts_with("MountVolume.SetUp failed") {
            "ContainerCreating"
        } else {
            "CreateContainerConfigError"
        };
        self.store.modify(&POD, ns, name, Subresource::Status, |p| {
            p["status"] = json!({
                "phase": "Pending",
                "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": reason}],
                "containerStatuses": [container_status(p, json!({"waiting": {"reason": waiting, "message": reason}}), false, 0)],
            });
        });
    }

    /// nginx exited and will be started again, as the kubelet restarts the container of a pod
    /// whose restart policy is `Always`. While it waits for that after an earlier restart, the
    /// container waits as `CrashLoopBackOff`; the pod stays `Running`, not Ready.
    fn set_exited(&self, ns: &str, name: &str, message: &str, restarts: u32, backing_off: bool) {
        self.store.modify(&POD, ns, name, Subresource::Status, |p| {
            let state = if backing_off {
                json!({"waiting": {"reason": "CrashLoopBackOff", "message": message}})
            } else {
                json!({"terminated": {"reason": "Error", "message": message}})
            };
            if p["status"]["phase"].as_str().is_none() {
                p["status"]["phase"] = json!("Running");
            }
            p["status"]["conditions"] = json!([{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}]);
            p["status"]["containerStatuses"] = json!([container_status(p, state, false, restarts)]);
        });
    }

    fn set_running(&self, ns: &str, name: &str, address: Ipv4Addr, ready: bool, restarts: u32) {
        let ready_status = if ready { "True" } else { "False" };
        self.store.modify(&POD, ns, name, Subresource::Status, |p| {
            let started = p["status"]["startTime"].as_str().map_or_else(now_rfc3339, str::to_string);
            let running = json!({"running": {"startedAt": now_rfc3339()}});
            p["status"] = json!({
                "phase": "Running",
                "hostIP": "127.0.0.1",
                "podIP": address.to_string(),
                "podIPs": [{"ip": address.to_string()}],
                "startTime": started,
                "conditions": [{"type": "Ready", "status": ready_status}],
                "containerStatuses": [container_status(p, running, ready, restarts)],
            });
        });
    }
}

/// A `containerStatuses` entry for the pod's one container in `state`.
fn container_status(pod: &Value, state: Value, ready: bool, restarts: u32) -> Value {
    let container = &pod["spec"]["containers"][0];
    json!({
        "name": container["name"].as_str().unwrap_or("nginx"),
        "image": container["image"].as_str().unwrap_or_default(),
        "imageID": "",
        "ready": ready,
        "restartCount": restarts,
        "state": state,
    })
}

/// Starts nginx with `args` in the pod directory `dir`, its output appended to the pod's
/// `container.log`, leading a process group of its own.
///
/// nginx is to get SIGTERM if this process dies without stopping it, so that no backend
/// outlives a crashed loopback (`PR_SET_PDEATHSIG`). Through `setpriv --pdeathsig`, when the
/// machine has it, the request is made after the process is spawned without copying this one:
/// a fork of loopback's large address space, and the copy-on-write faults it leaves behind,
/// cost more CPU than nginx's own start. Without `setpriv`, a fork sets it before exec.
fn spawn(nginx: &Path, args: &[String], dir: &Path) -> Result<Child, String> {
    let log_path = dir.join("container.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    let mut command = match setpriv() {
        Some(setpriv) => {
            let mut command = Command::new(setpriv);
            command.args(["--pdeathsig", "TERM", "--"]).arg(nginx);
            command
        }
        None => {
            let mut command = Command::new(nginx);
            // SAFETY: prctl is async-signal-safe and touches no memory of this process.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
            command
        }
    };
    command.args(args).stdin(Stdio::null()).stdout(log).stderr(log_err).process_group(0).kill_on_drop(true);
    // What `cleanup` recognises its own by, should this loopback die without stopping it.
    command.env(crate::cluster::PROCESS_DIR_ENV, dir);
    command.spawn().map_err(|e| format!("cannot start {}: {e}", nginx.display()))
}

/// util-linux's `setpriv`, if this machine has one that can set the parent-death signal.
fn setpriv() -> Option<&'static Path> {
    static SETPRIV: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    SETPRIV
        .get_or_init(|| {
            let path = std::env::var_os("PATH")?;
            let candidate = std::env::split_paths(&path).map(|dir| dir.join("setpriv")).find(|p| p.is_file())?;
            // `--pdeathsig` came with util-linux 2.33; an older one refuses it.
            let works = std::process::Command::new(&candidate)
                .args(["--pdeathsig", "TERM", "--", "true"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            works.then_some(candidate)
        })
        .as_deref()
}

/// Sends `signal` to the process group `child` leads (nginx and its workers), if it still runs.
fn kill_group(child: &Child, signal: i32) {
    // `id` is `None` once the process was reaped, so a stopped pod kills nothing.
    if let Some(pid) = child.id() {
        // SAFETY: plain kill(2) on the process group nginx leads; its workers are in it.
        unsafe {
            libc::kill(-(pid as i32), signal);
        }
    }
}

/// `(mountPath, local directory)` for each of the container's volume mounts, longest first.
fn mount_table(container: &Container, volumes: &HashMap<String, PathBuf>) -> Result<Vec<(String, PathBuf)>, String> {
    let mut table = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let dir = volumes.get(&mount.name).ok_or_else(|| format!("volumeMount {:?} names no volume", mount.name))?;
        table.push((mount.mount_path.trim_end_matches('/').to_string(), dir.clone()));
    }
    table.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
    Ok(table)
}

fn translate(path: &str, mounts: &[(String, PathBuf)]) -> Option<PathBuf> {
    mounts.iter().find_map(|(mount, dir)| {
        let rest = path.strip_prefix(mount.as_str())?;
        if rest.is_empty() || rest.starts_with('/') { Some(dir.join(rest.trim_start_matches('/'))) } else { None }
    })
}

/// The local nginx arguments for a container: paths translated, `-c` pointed at the confined
/// copy of its config ([`nginx_conf::confine`]), `-g` confined the same way with `daemon off;`
/// added, and a prefix and error log in the pod when the container gives none (nginx would
/// otherwise use its host-wide defaults).
fn nginx_args(container: &Container, pod: &Confinement<'_>) -> Result<Vec<String>, String> {
    let mut argv: Vec<String> = container.command.clone().unwrap_or_default();
    argv.extend(container.args.clone().unwrap_or_default());
    let program = argv.first().ok_or("loopback needs the container's command (nginx ...)")?;
    if Path::new(program).file_name().and_then(|n| n.to_str()) != Some("nginx") {
        return Err(format!("loopback runs only nginx containers, not {program:?}"));
    }
    let mut out = Vec::new();
    let (mut config, mut prefix, mut error_log, mut globals) = (false, false, false, String::new());
    let mut args = argv[1..].iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "-g" => globals = nginx_conf::confine_global(value()?, pod)?,
            "-e" => {
                let target = value()?;
                error_log = true;
                out.push(arg.clone());
                if target == "stderr" {
                    out.push(target.clone());
                } else {
                    out.push(local_path(arg, target, pod.mounts)?.display().to_string());
                }
            }
            "-c" | "-p" => {
                let target = value()?;
                let local = local_path(arg, target, pod.mounts)?;
                let local = if arg == "-c" {
                    config = true;
                    write_confined(&local, pod)?
                } else {
                    prefix = true;
                    local
                };
                let mut local = local.display().to_string();
                if arg == "-p" && !local.ends_with('/') {
                    local.push('/');
                }
                out.push(arg.clone());
                out.push(local);
            }
            "-t" | "-T" | "-s" | "-q" | "-v" | "-V" | "-h" | "-?" => {
                return Err(format!("{arg}: loopback runs nginx as a server only"));
            }
            _ => return Err(format!("{arg:?}: an nginx option loopback does not know")),
        }
    }
    if !config {
        return Err("loopback needs -c with a config file under a volume mount".into());
    }
    if !prefix {
        out.extend(["-p".to_string(), format!("{}/", pod.pod_dir.display())]);
    }
    if !error_log {
        out.extend(["-e".to_string(), "stderr".to_string()]);
    }
    out.extend(["-g".to_string(), format!("{globals} daemon off;").trim_start().to_string()]);
    Ok(out)
}

fn local_path(option: &str, path: &str, mounts: &[(String, PathBuf)]) -> Result<PathBuf, String> {
    translate(path, mounts).ok_or_else(|| format!("{option} {path}: path is not under a volume mount"))
}

/// Writes `.<name>.loopback` beside the config: the config confined to the pod.
fn write_confined(config: &Path, pod: &Confinement<'_>) -> Result<PathBuf, String> {
    let text = std::fs::read_to_string(config).map_err(|e| format!("cannot read {}: {e}", config.display()))?;
    let file_name = config.file_name().and_then(|n| n.to_str()).unwrap_or("nginx.conf");
    let confined = nginx_conf::confine(file_name, &text, pod)?;
    let copy = config.with_file_name(format!(".{file_name}.loopback"));
    write_file(&copy, confined.as_bytes(), 0o600)?;
    Ok(copy)
}

async fn ports_open(address: Ipv4Addr, ports: &[u16]) -> bool {
    for port in ports {
        let connect = tokio::net::TcpStream::connect(SocketAddr::from((address, *port)));
        match tokio::time::timeout(Duration::from_millis(500), connect).await {
            Ok(Ok(_)) => {}
            _ => return false,
        }
    }
    true
}

fn decode(value: &Value) -> Result<Vec<u8>, String> {
    BASE64.decode(value.as_str().unwrap_or_default()).map_err(|e| format!("invalid base64 in volume data: {e}"))
}

/// Directories on the way to a pod's files: nginx's workers run as an unprivileged user when
/// loopback runs as root, and must reach the pod's `emptyDir` volumes for their temporary files;
/// nobody else may list them.
const TRAVERSE_ONLY: u32 = 0o711;
/// Directories holding Secret data: only loopback's user, which nginx's master runs as.
const OWNER_ONLY: u32 = 0o700;

/// `name` as one component of a path under a pod's directory. The API server refuses names and
/// data keys that are not, so this only fails if something bypassed it; the kubelet still never
/// writes outside the pod's directory.
fn file_name(name: &str) -> Result<&str, String> {
    let mut components = Path::new(name).components();
    match (components.next(), components.next()) {
        (Some(std::path::Component::Normal(_)), None) if !name.contains('/') => Ok(name),
        _ => Err(format!("{name:?} is not a file name: loopback writes nothing outside the pod's directory")),
    }
}

/// Writes `content` to a new or truncated file created with `mode` (never briefly wider).
fn write_file(path: &Path, content: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write;
    let error = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(path).map_err(error)?;
    file.write_all(content).map_err(error)?;
    // A file that existed keeps its mode through `open`.
    set_mode(path, mode)
}

fn create_dir(path: &Path, mode: u32) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    set_mode(path, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set permissions of {}: {e}", path.display()))
}

/// Pod addresses: 127.B.C.D with B chosen per cluster, so two loopback clusters on one
/// machine rarely meet, and an address is only handed out when its ports are free.
struct AddressPool {
    second_octet: u8,
    next: u32,
    in_use: Vec<Ipv4Addr>,
    /// Held for the pool's lifetime: whoever binds it owns the 127.B.0.0/16 range, so
    /// clusters running at the same time (in one process or several) never share addresses.
    _claim: Option<std::net::TcpListener>,
}

/// The port of the claim socket on 127.B.255.254.
const CLAIM_PORT: u16 = 61_999;

impl AddressPool {
    fn new() -> Self {
        let seed = std::process::id()
            ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        for attempt in 0..180u32 {
            let second_octet = 64 + ((seed + attempt * 37) % 180) as u8;
            let claim = Ipv4Addr::new(127, second_octet, 255, 254);
            if let Ok(listener) = std::net::TcpListener::bind(SocketAddr::from((claim, CLAIM_PORT))) {
                return AddressPool { second_octet, next: 1, in_use: Vec::new(), _claim: Some(listener) };
            }
        }
        // Every range is claimed: share one, relying on the per-address bind check.
        AddressPool { second_octet: 64 + (seed % 180) as u8, next: 1, in_use: Vec::new(), _claim: None }
    }

    fn next_free(&mut self, ports: &[u16]) -> Result<Ipv4Addr, String> {
        for _ in 0..65_000 {
            let n = self.next;
            self.next = if n >= 65_000 { 1 } else { n + 1 };
            let address = Ipv4Addr::new(127, self.second_octet, (n >> 8) as u8, (n & 0xff) as u8);
            if n & 0xff == 0 || self.in_use.contains(&address) {
                continue;
            }
            let free = ports.iter().all(|port| std::net::TcpListener::bind(SocketAddr::from((address, *port))).is_ok());
            if free {
                self.in_use.push(address);
                return Ok(address);
            }
        }
        Err("no free loopback address for the pod".into())
    }

    fn release(&mut self, address: Ipv4Addr) {
        self.in_use.retain(|a| *a != address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_mounts_are_translated_longest_first() {
        let mounts = vec![
            ("/etc/fixture/tls".to_string(), PathBuf::from("/tmp/p/volumes/tls")),
            ("/etc/fixture".to_string(), PathBuf::from("/tmp/p/volumes/conf")),
        ];
        assert_eq!(translate("/etc/fixture/tls/a.crt", &mounts), Some(PathBuf::from("/tmp/p/volumes/tls/a.crt")));
        assert_eq!(
            translate("/etc/fixture/nginx.conf", &mounts),
            Some(PathBuf::from("/tmp/p/volumes/conf/nginx.conf"))
        );
        assert_eq!(translate("/etc/fixturex", &mounts), None);
    }

    #[test]
    fn nothing_is_written_outside_the_pod_directory() {
        for name in ["tls.key", ".hidden", "a..b"] {
            assert_eq!(file_name(name), Ok(name));
        }
        for name in ["../x", "..", ".", "", "a/b", "/etc/passwd", "a/", "./a"] {
            assert!(file_name(name).is_err(), "{name:?} was accepted");
        }
    }

    #[test]
    fn the_container_command_runs_confined_to_the_pod() {
        let dir = std::env::temp_dir().join(format!("loopback-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("nginx.conf"), "daemon on;\nhttp { server { listen 0.0.0.0:8443 ssl; } }\n").unwrap();
        let mounts = vec![("/etc/fixture".to_string(), dir.clone())];
        let pod = Confinement { address: Ipv4Addr::new(127, 70, 0, 1), pod_dir: &dir, mounts: &mounts };
        let container = |args: &[&str]| Container {
            command: Some(vec!["nginx".into()]),
            args: Some(args.iter().map(|a| a.to_string()).collect()),
            ..Container::default()
        };
        let args = nginx_args(&container(&["-c", "/etc/fixture/nginx.conf", "-g", "daemon on;"]), &pod).unwrap();
        let copy = dir.join(".nginx.conf.loopback");
        let expected = [
            "-c".to_string(),
            copy.display().to_string(),
            "-p".into(),
            format!("{}/", dir.display()),
            "-e".into(),
            "stderr".into(),
            "-g".into(),
            "daemon off;".into(),
        ];
        assert_eq!(args, expected);
        let text = std::fs::read_to_string(&copy).unwrap();
        assert!(text.contains("listen 127.70.0.1:8443 ssl;") && !text.contains("daemon on"), "{text}");
        for (args, problem) in [
            (&["-g", "daemon off;"][..], "loopback needs -c with a config file under a volume mount"),
            (&["-c", "/etc/other/nginx.conf"][..], "-c /etc/other/nginx.conf: path is not under a volume mount"),
            (&["-c", "/etc/fixture/nginx.conf", "-s", "stop"][..], "-s: loopback runs nginx as a server only"),
            (&["-c", "/etc/fixture/nginx.conf", "-g"][..], "-g needs a value"),
        ] {
            assert_eq!(nginx_args(&container(args), &pod), Err(problem.to_string()), "{args:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A backend must not outlive the thread that started it: each one gets SIGTERM when its
    /// parent goes, and leads a process group of its own so that stopping it reaches its workers.
    #[test]
    fn a_started_process_leads_its_group_and_dies_with_its_parent() {
        let dir = std::env::temp_dir().join(format!("loopback-spawn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let started = {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let _guard = runtime.enter();
                let child = spawn(Path::new("/bin/sleep"), &["60".to_string()], &dir).unwrap();
                let pid = child.id().unwrap() as i32;
                // The program itself runs under the child's pid, not a wrapper around it.
                let deadline = Instant::now() + Duration::from_secs(10);
                let mut exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
                while !exe.ends_with("sleep") && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                    exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
                }
                // SAFETY: getpgid(2) only reads the process table.
                let group = unsafe { libc::getpgid(pid) };
                // Not dropped: that would kill it, and the point is what happens without a stop.
                std::mem::forget(child);
                (pid, exe, group)
            })
            .join()
            .unwrap()
        };
        let (pid, exe, group) = started;
        assert_eq!(group, pid, "the process does not lead its own group");
        assert!(exe.ends_with("sleep"), "{} runs instead of the program", exe.display());
        let mut status = 0;
        // SAFETY: waitpid(2) on our own child, blocking until it ends.
        let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(reaped, pid);
        // `sleep 60` ends on its own only if nothing signalled it.
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGTERM, "status {status:#x}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
