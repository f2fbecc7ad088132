//! `run --provision k3s`: a throwaway single-node k3s cluster in Docker, with Contour
//! installed on it by `scripts/install-contour` (as `scripts/kind-up` installs it) and the
//! backend image preloaded, for a run against the real Contour and Envoy on a machine that
//! has a Docker engine with network access but no cluster. The container is removed when the
//! run ends, after a first Ctrl-C or SIGTERM too (while it is being made, or during the run);
//! a run killed outright leaves it to `docker ps --filter label=org.testcontainers`.
//!
//! What needs no Docker is plain code here and tested as such: the checks for the tools, the
//! kubeconfig rewrite, the settings the run gets. Starting the container needs the `k3s`
//! cargo feature ([`k3s`]), which brings in the testcontainers crates.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The k3s image: a Kubernetes release that Contour's pinned releases support (the minor of
/// the kind node image `kind-config/node-images` pins for the default one).
pub const K3S_IMAGE: &str = "rancher/k3s";
pub const K3S_TAG: &str = "v1.34.1-k3s1";
/// k3s's own ingress controller (traefik) and load balancer would compete with Contour for
/// the node ports and the Ingress objects of the run.
pub const K3S_COMMAND: [&str; 4] = ["server", "--snapshotter=native", "--disable=traefik", "--disable=servicelb"];
/// The API server's port inside the container.
pub const API_PORT: u16 = 6443;
/// Envoy's HTTP and HTTPS listeners, as `scripts/install-contour` exposes them.
pub const HTTP_NODE_PORT: u16 = 30080;
pub const HTTPS_NODE_PORT: u16 = 30443;
/// Where k3s imports image archives from when it starts.
pub const IMAGES_DIR: &str = "/var/lib/rancher/k3s/agent/images/";
/// The context of the kubeconfig k3s writes.
pub const CONTEXT: &str = "default";

/// Why no cluster could be provisioned; each is exit 3 (the environment), before any scenario.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(
        "`--provision k3s` needs a Docker engine, and none answers: {0}. Start Docker (or set DOCKER_HOST to \
         one that runs), or run against the built-in loopback cluster or an existing cluster (--proxy)"
    )]
    NoDocker(String),
    #[error("`--provision k3s` needs {0} on PATH (it installs Contour with scripts/install-contour)")]
    MissingTool(&'static str),
    #[error("cannot preload the backend image {image} into k3s: {message}")]
    Image { image: String, message: String },
    #[error("the k3s container ({K3S_IMAGE}:{K3S_TAG}) did not start: {0}")]
    Start(String),
    #[error("installing Contour on the k3s cluster failed: {0} (its commands and output are above)")]
    Contour(String),
    #[error("{0}")]
    Files(String),
}

/// The kubeconfig k3s writes, whose server is the API port inside the container, pointed at
/// `api_port` of this host instead.
///
/// # Errors
/// The text has no `server:` line to rewrite.
pub fn host_kubeconfig(k3s_yaml: &str, api_port: u16) -> Result<String, String> {
    let mut rewritten = 0;
    let lines: Vec<String> = k3s_yaml
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("server:") {
                rewritten += 1;
                let indent = &line[..line.len() - trimmed.len()];
                format!("{indent}server: https://127.0.0.1:{api_port}")
            } else {
                line.to_string()
            }
        })
        .collect();
    if rewritten == 0 {
        return Err("the kubeconfig k3s wrote names no server".into());
    }
    Ok(lines.join("\n") + "\n")
}

/// Where `tool` is on `path` (a PATH value), if it is.
fn find(tool: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    std::env::split_paths(path).map(|dir| dir.join(tool)).find(|candidate| candidate.is_file())
}

/// Checks that a Docker engine answers the `docker` command, and that kubectl is there.
///
/// # Errors
/// No `docker` command, no engine behind it (with Docker's own words), or no kubectl.
pub fn check_tools() -> Result<(), ProvisionError> {
    check_tools_on(&std::env::var_os("PATH").unwrap_or_default())
}

fn check_tools_on(path: &std::ffi::OsStr) -> Result<(), ProvisionError> {
    let docker =
        find("docker", path).ok_or_else(|| ProvisionError::NoDocker("the docker command is not on PATH".into()))?;
    let output = Command::new(docker)
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .map_err(|e| ProvisionError::NoDocker(format!("docker does not run: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reason = stderr.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("docker version failed");
        return Err(ProvisionError::NoDocker(reason.to_string()));
    }
    if find("kubectl", path).is_none() {
        return Err(ProvisionError::MissingTool("kubectl"));
    }
    Ok(())
}

/// Three distinct ports of 127.0.0.1 that are free now, for Docker to map the container's
/// ports to (held together while chosen, so they differ).
///
/// # Errors
/// No port can be bound.
pub fn free_ports() -> Result<HostPorts, ProvisionError> {
    let bind = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| ProvisionError::Files(format!("no free port on 127.0.0.1: {e}")))
    };
    let held = [bind()?, bind()?, bind()?];
    let port = |i: usize| {
        held[i]
            .local_addr()
            .map(|a| a.port())
            .map_err(|e| ProvisionError::Files(format!("no free port on 127.0.0.1: {e}")))
    };
    Ok(HostPorts { api: port(0)?, http: port(1)?, https: port(2)? })
}

/// The host ports the container's ports are mapped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPorts {
    pub api: u16,
    pub http: u16,
    pub https: u16,
}

/// What a run against the provisioned cluster is given in place of flags: the kubeconfig, its
/// context and the proxy's two addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub kubeconfig: PathBuf,
    pub context: String,
    pub proxy: String,
    pub tls_proxy: String,
}

impl ClusterSettings {
    pub fn new(kubeconfig: &Path, ports: HostPorts) -> Self {
        ClusterSettings {
            kubeconfig: kubeconfig.to_path_buf(),
            context: CONTEXT.to_string(),
            proxy: format!("127.0.0.1:{}", ports.http),
            tls_proxy: format!("127.0.0.1:{}", ports.https),
        }
    }
}

/// The backend image a provisioned cluster preloads: the one the run will use, `--image`'s,
/// else the config's `cluster.image`, else the default.
///
/// # Errors
/// The config cannot be read.
pub fn backend_image(flag: Option<&str>, config: &Path) -> Result<String, crate::scenario::load::LoadError> {
    if let Some(image) = flag {
        return Ok(image.to_string());
    }
    let configured = crate::config::ImplementationConfig::load(config)?.cluster.image;
    Ok(configured.unwrap_or_else(|| crate::fixture::DEFAULT_IMAGE.to_string()))
}

/// The repository's `scripts/install-contour`, which the provisioned cluster is set up with.
pub fn install_script() -> PathBuf {
    loopback::config::repository_root().join("scripts/install-contour")
}

/// The throwaway cluster itself (cargo feature `k3s`).
#[cfg(feature = "k3s")]
pub mod k3s {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    use std::path::{Path, PathBuf};

    use testcontainers::core::{ContainerPort, Mount};
    use testcontainers::runners::AsyncRunner;
    use testcontainers::{ContainerAsync, ContainerRequest, ImageExt};
    use testcontainers_modules::k3s::K3s;

    use super::*;

    /// How long k3s may take to start: often more than a minute on a loaded machine.
    pub const STARTUP_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

    /// The container: privileged (k3s runs containerd and manages networking), the host's
    /// user namespace, k3s's own ingress and load balancer off, its kubeconfig written into
    /// `conf_dir`, the image archives of `images_dir` imported at start, and the API and
    /// Envoy's node ports mapped to `ports` on 127.0.0.1 only ([`host_config`]).
    pub fn container_request(conf_dir: &Path, images_dir: &Path, ports: HostPorts) -> ContainerRequest<K3s> {
        K3s::default()
            .with_conf_mount(conf_dir)
            .with_startup_timeout(STARTUP_LIMIT)
            .with_host_config_modifier(host_config)
            .with_tag(K3S_TAG)
            .with_cmd(K3S_COMMAND)
            .with_privileged(true)
            .with_userns_mode("host")
            .with_mount(Mount::bind_mount(images_dir.to_string_lossy(), IMAGES_DIR))
            .with_mapped_port(ports.api, ContainerPort::Tcp(API_PORT))
            .with_mapped_port(ports.http, ContainerPort::Tcp(HTTP_NODE_PORT))
            .with_mapped_port(ports.https, ContainerPort::Tcp(HTTPS_NODE_PORT))
    }

    /// What testcontainers cannot say itself: every mapped port bound on 127.0.0.1 (it binds
    /// all addresses), and `/run` and `/var/run` in memory, as k3s in Docker wants them.
    pub fn host_config(config: &mut testcontainers::bollard::models::HostConfig) {
        for bindings in config.port_bindings.iter_mut().flat_map(|ports| ports.values_mut()).flatten() {
            for binding in bindings.iter_mut() {
                binding.host_ip = Some("127.0.0.1".into());
            }
        }
        let tmpfs = config.tmpfs.get_or_insert_with(Default::default);
        for dir in ["/run", "/var/run"] {
            tmpfs.insert(dir.into(), String::new());
        }
    }

    /// A running k3s cluster with Contour; [`Provisioned::remove`] removes it (dropping it
    /// does too, without waiting).
    pub struct Provisioned {
        container: ContainerAsync<K3s>,
        dir: PathBuf,
        pub settings: ClusterSettings,
    }

    impl Provisioned {
        /// Stops and removes the container and the files made for it.
        pub async fn remove(self) {
            if let Err(e) = self.container.rm().await {
                eprintln!("warning: cannot remove the k3s container: {e}; `docker ps -a` lists it");
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Starts k3s with `backend_image` preloaded and installs Contour `contour_version`
    /// configured from the implementation config `config`, as `scripts/install-contour` does.
    ///
    /// # Errors
    /// No Docker engine or kubectl, the image cannot be had, k3s does not start, Contour's
    /// installation fails.
    pub async fn provision(
        backend_image: &str,
        config: &Path,
        contour_version: &str,
    ) -> Result<Provisioned, ProvisionError> {
        check_tools()?;
        let files = |e: std::io::Error| ProvisionError::Files(format!("cannot prepare the k3s files: {e}"));
        let dir = std::env::temp_dir().join(format!("upstream-tls-k3s-{}", std::process::id()));
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(files)?;
        let (conf_dir, images_dir) = (dir.join("conf"), dir.join("images"));
        for sub in [&conf_dir, &images_dir] {
            std::fs::create_dir_all(sub).map_err(files)?;
        }
        let result = start(backend_image, config, contour_version, &dir, &conf_dir, &images_dir).await;
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        result
    }

    async fn start(
        backend_image: &str,
        config: &Path,
        contour_version: &str,
        dir: &Path,
        conf_dir: &Path,
        images_dir: &Path,
    ) -> Result<Provisioned, ProvisionError> {
        save_image(backend_image, &images_dir.join("backend-image.tar")).await?;
        let ports = free_ports()?;
        eprintln!("starting k3s ({K3S_IMAGE}:{K3S_TAG}) in Docker...");
        let container = container_request(conf_dir, images_dir, ports)
            .start()
            .await
            .map_err(|e| ProvisionError::Start(e.to_string()))?;
        let k3s_yaml = std::fs::read_to_string(conf_dir.join("k3s.yaml"))
            .map_err(|e| ProvisionError::Start(format!("k3s wrote no kubeconfig: {e}")))?;
        let kubeconfig = dir.join("kubeconfig");
        let text = host_kubeconfig(&k3s_yaml, ports.api).map_err(ProvisionError::Start)?;
        std::fs::write(&kubeconfig, text)
            .and_then(|()| std::fs::set_permissions(&kubeconfig, std::fs::Permissions::from_mode(0o600)))
            .map_err(|e| ProvisionError::Files(format!("cannot write the kubeconfig: {e}")))?;
        let settings = ClusterSettings::new(&kubeconfig, ports);
        let provisioned = Provisioned { container, dir: dir.to_path_buf(), settings };
        if let Err(e) = install_contour(&provisioned.settings, config, contour_version).await {
            provisioned.remove().await;
            return Err(e);
        }
        Ok(provisioned)
    }

    /// Pulls `image` unless Docker has it, and saves it as an archive k3s imports.
    async fn save_image(image: &str, archive: &Path) -> Result<(), ProvisionError> {
        let docker = |args: &[&str]| {
            let mut command = tokio::process::Command::new("docker");
            command.args(args);
            command
        };
        let failed = |message: String| ProvisionError::Image { image: image.to_string(), message };
        let present = docker(&["image", "inspect", image]).output().await.is_ok_and(|o| o.status.success());
        if !present {
            eprintln!("pulling {image}...");
            let output = docker(&["pull", image]).output().await.map_err(|e| failed(e.to_string()))?;
            if !output.status.success() {
                return Err(failed(String::from_utf8_lossy(&output.stderr).trim().to_string()));
            }
        }
        let archive = archive.to_string_lossy();
        let output = docker(&["save", "-o", &archive, image]).output().await.map_err(|e| failed(e.to_string()))?;
        if !output.status.success() {
            return Err(failed(String::from_utf8_lossy(&output.stderr).trim().to_string()));
        }
        Ok(())
    }

    /// Runs `scripts/install-contour` against the cluster, with this binary writing Contour's
    /// config from `config`.
    async fn install_contour(
        settings: &ClusterSettings,
        config: &Path,
        contour_version: &str,
    ) -> Result<(), ProvisionError> {
        let script = install_script();
        let harness = std::env::current_exe().map_err(|e| ProvisionError::Contour(e.to_string()))?;
        let status = tokio::process::Command::new(&script)
            .env("KUBECONFIG", &settings.kubeconfig)
            .env("KUBE_CONTEXT", &settings.context)
            .env("CONTOUR_VERSION", contour_version)
            .env("CONFIG", config)
            .env("HARNESS_BIN", harness)
            // Interrupted while installing: the installer goes with the container.
            .kill_on_drop(true)
            .status()
            .await
            .map_err(|e| ProvisionError::Contour(format!("{} does not run: {e}", script.display())))?;
        if !status.success() {
            return Err(ProvisionError::Contour(format!("{} exited with {status}", script.display())));
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_container_is_k3s_without_its_ingress_with_the_ports_contour_needs() {
            let ports = HostPorts { api: 40001, http: 40002, https: 40003 };
            let request = container_request(Path::new("/tmp/conf"), Path::new("/tmp/images"), ports);
            assert_eq!(request.descriptor(), format!("{K3S_IMAGE}:{K3S_TAG}"));
            let command: Vec<String> = request.cmd().map(|c| c.to_string()).collect();
            assert_eq!(command, K3S_COMMAND.map(String::from));
            assert!(request.privileged());
            assert_eq!(request.userns_mode(), Some("host"));
            let mounts: Vec<(Option<&str>, Option<&str>)> =
                request.mounts().map(|m| (m.source(), m.target())).collect();
            assert!(mounts.contains(&(Some("/tmp/conf"), Some("/etc/rancher/k3s/"))), "{mounts:?}");
            assert!(mounts.contains(&(Some("/tmp/images"), Some(IMAGES_DIR))), "{mounts:?}");
            let mapped: Vec<(u16, ContainerPort)> =
                request.ports().into_iter().flatten().map(|p| (p.host_port(), p.container_port())).collect();
            for (host, container) in [(40001, API_PORT), (40002, HTTP_NODE_PORT), (40003, HTTPS_NODE_PORT)] {
                assert!(mapped.contains(&(host, ContainerPort::Tcp(container))), "{mapped:?}");
            }
            assert_eq!(request.startup_timeout(), Some(STARTUP_LIMIT));
            // The ports as testcontainers binds them (every address), then as the request leaves them.
            use testcontainers::bollard::models::{HostConfig, PortBinding};
            let everywhere = PortBinding { host_ip: None, host_port: Some("40002".into()) };
            let mut config = HostConfig {
                port_bindings: Some([("30080/tcp".to_string(), Some(vec![everywhere]))].into()),
                ..Default::default()
            };
            (request.host_config_modifier().expect("the host config is adjusted"))(&mut config);
            let binding = &config.port_bindings.unwrap()["30080/tcp"].clone().unwrap()[0];
            assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
            let tmpfs = config.tmpfs.unwrap();
            assert!(tmpfs.contains_key("/run") && tmpfs.contains_key("/var/run"), "{tmpfs:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory holding executable scripts named `tools`, each running `body`.
    fn tools(name: &str, tools: &[(&str, &str)]) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("upstream-tls-tools-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (tool, body) in tools {
            let file = dir.join(tool);
            std::fs::write(&file, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        dir
    }

    #[test]
    fn no_docker_engine_is_an_environment_error_in_dockers_own_words() {
        let none = tools("none", &[]);
        let error = check_tools_on(none.as_os_str()).unwrap_err();
        assert!(matches!(error, ProvisionError::NoDocker(_)), "{error}");
        let message = error.to_string();
        assert!(
            message.contains("needs a Docker engine, and none answers: the docker command is not on PATH"),
            "{message}"
        );
        assert!(message.contains("Start Docker"), "{message}");

        let daemon =
            "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?";
        let down = tools("down", &[("docker", &format!("echo '{daemon}' >&2; exit 1")), ("kubectl", "exit 0")]);
        let message = check_tools_on(down.as_os_str()).unwrap_err().to_string();
        assert!(message.contains(daemon), "{message}");

        let no_kubectl = tools("no-kubectl", &[("docker", "echo 28.0.0")]);
        let error = check_tools_on(no_kubectl.as_os_str()).unwrap_err();
        assert!(matches!(error, ProvisionError::MissingTool("kubectl")), "{error}");

        let ready = tools("ready", &[("docker", "echo 28.0.0"), ("kubectl", "exit 0")]);
        check_tools_on(ready.as_os_str()).expect("Docker answers and kubectl is there");
        for dir in [none, down, no_kubectl, ready] {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    #[test]
    fn the_kubeconfig_points_at_the_mapped_api_port() {
        let k3s_yaml = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: AAAA\n    server: https://127.0.0.1:6443\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\n";
        let rewritten = host_kubeconfig(k3s_yaml, 41234).unwrap();
        assert!(rewritten.contains("\n    server: https://127.0.0.1:41234\n"), "{rewritten}");
        assert!(!rewritten.contains("6443"), "{rewritten}");
        assert_eq!(rewritten.lines().count(), k3s_yaml.lines().count());
        assert!(host_kubeconfig("apiVersion: v1\n", 1).unwrap_err().contains("names no server"));
    }

    #[test]
    fn the_backend_image_preloaded_is_the_one_the_run_uses() {
        let dir = std::env::temp_dir().join(format!("utls-provision-image-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (with, without) = (dir.join("with.yaml"), dir.join("without.yaml"));
        std::fs::write(&with, "cluster:\n  image: registry.test/nginx:1.27\n").unwrap();
        std::fs::write(&without, "timeouts:\n  trafficSeconds: 30\n").unwrap();
        assert_eq!(backend_image(Some("mine:1"), &with).unwrap(), "mine:1");
        assert_eq!(backend_image(None, &with).unwrap(), "registry.test/nginx:1.27");
        assert_eq!(backend_image(None, &without).unwrap(), crate::fixture::DEFAULT_IMAGE);
        assert!(backend_image(None, &dir.join("missing.yaml")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_mapped_ports_differ() {
        let ports = free_ports().unwrap();
        assert!(ports.api != ports.http && ports.http != ports.https && ports.api != ports.https, "{ports:?}");
    }

    #[test]
    fn the_run_gets_the_cluster_and_both_proxy_addresses() {
        let ports = HostPorts { api: 1, http: 2, https: 3 };
        let settings = ClusterSettings::new(Path::new("/k/kubeconfig"), ports);
        assert_eq!(settings.proxy, "127.0.0.1:2");
        assert_eq!(settings.tls_proxy, "127.0.0.1:3");
        assert_eq!(settings.context, "default");
        assert_eq!(settings.kubeconfig, Path::new("/k/kubeconfig"));
        assert!(install_script().is_file(), "scripts/install-contour is in the repository");
    }

    #[test]
    fn the_k3s_release_is_the_kubernetes_minor_kind_runs_for_the_default_contour() {
        let pinned = include_str!("../../kind-config/node-images");
        let default = loopback::config::contour_versions()[0];
        let image = pinned.lines().find_map(|l| l.strip_prefix(&format!("{default} "))).unwrap();
        let kind_minor = image.split(':').nth(1).unwrap().split('.').take(2).collect::<Vec<_>>().join(".");
        let k3s_minor = K3S_TAG.split('.').take(2).collect::<Vec<_>>().join(".");
        assert_eq!(k3s_minor, kind_minor, "{K3S_TAG} against {image}");
    }
}
