//! Choosing and reaching the implementation under test: [`TargetConfig`] says where (a real
//! cluster with its proxy address, or the built-in loopback cluster) and [`Environment`] is
//! the connected result.
//!
//! Loopback is started here and then used exactly like a real cluster: the runner gets a
//! kubeconfig path and a proxy address and nothing else.

use std::net::SocketAddr;
use std::path::PathBuf;

use std::sync::Arc;

use loopback::config::SecretName;
use loopback::{Fault, Loopback, LoopbackConfig};

use crate::cluster::{ClusterClient, ClusterError};
use crate::install::{InstallClientCertificate, SecretRef};
use crate::runner::{RunSettings, Target};
use crate::scenario::Feature;

/// Environment variables the entry points read (documented in the README).
pub mod env {
    /// `host:port` where the implementation's proxy serves plain HTTP. Setting it selects a
    /// real cluster instead of loopback.
    pub const PROXY: &str = "UPSTREAM_TLS_PROXY";
    /// The kubeconfig file for the real cluster (default: `$KUBECONFIG`, `~/.kube/config`).
    pub const KUBECONFIG: &str = "UPSTREAM_TLS_KUBECONFIG";
    /// The kubeconfig context (default: the current one).
    pub const CONTEXT: &str = "UPSTREAM_TLS_CONTEXT";
    /// Backend container image on a real cluster.
    pub const IMAGE: &str = "UPSTREAM_TLS_IMAGE";
    /// Comma-separated loopback faults to switch on.
    pub const FAULTS: &str = "UPSTREAM_TLS_LOOPBACK_FAULTS";
    /// The scenario directory (default: the repository's `scenarios/`).
    pub const SCENARIOS: &str = "UPSTREAM_TLS_SCENARIOS";
    /// Where reports go (default: the repository's `reports/`).
    pub const REPORTS: &str = "UPSTREAM_TLS_REPORTS";
    /// Set to 1 to keep scenario namespaces after the run.
    pub const KEEP_NAMESPACES: &str = "UPSTREAM_TLS_KEEP_NAMESPACES";
    /// `NAMESPACE/NAME` of the Secret the installation reads its Envoy client certificate from
    /// (Contour's `tls.envoy-client-certificate`); the harness writes it. Unset: scenarios
    /// needing a client certificate are skipped on real clusters.
    pub const CLIENT_CERT_SECRET: &str = "UPSTREAM_TLS_CLIENT_CERT_SECRET";
}

/// Where to run.
#[derive(Debug, Clone)]
pub enum TargetConfig {
    /// Start the built-in loopback cluster, with these faults.
    Loopback { faults: Vec<Fault> },
    /// A real cluster reached through a kubeconfig, and its proxy.
    Cluster {
        kubeconfig: Option<PathBuf>,
        context: Option<String>,
        proxy: String,
        /// The Secret the installation's Envoy client certificate comes from, if it has one.
        client_certificate: Option<SecretRef>,
    },
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
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

impl TargetConfig {
    /// Reads the target from the environment: a real cluster when [`env::PROXY`] is set,
    /// loopback otherwise.
    ///
    /// # Errors
    /// A fault name that loopback does not know.
    pub fn from_env() -> Result<Self, TargetError> {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.trim().is_empty());
        if let Some(proxy) = var(env::PROXY) {
            let client_certificate = var(env::CLIENT_CERT_SECRET)
                .map(|s| s.parse::<SecretRef>())
                .transpose()
                .map_err(|message| TargetError::Setting { variable: env::CLIENT_CERT_SECRET, message })?;
            return Ok(TargetConfig::Cluster {
                kubeconfig: var(env::KUBECONFIG).map(PathBuf::from),
                context: var(env::CONTEXT),
                proxy,
                client_certificate,
            });
        }
        let faults = match var(env::FAULTS) {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(|f| {
                    f.parse::<Fault>()
                        .map_err(|e| TargetError::Setting { variable: env::FAULTS, message: e.to_string() })
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(TargetConfig::Loopback { faults })
    }

    /// Why a target of this config cannot run scenarios with `feature`, if it cannot.
    pub fn lacks(&self, feature: Feature) -> Option<String> {
        let has_client_certificate = !matches!(self, TargetConfig::Cluster { client_certificate: None, .. });
        missing(feature, has_client_certificate)
    }

    /// One line for run headers: what is being tested.
    pub fn describe(&self) -> String {
        match self {
            TargetConfig::Loopback { faults } if faults.is_empty() => "built-in loopback cluster".into(),
            TargetConfig::Loopback { faults } => {
                let names: Vec<&str> = faults.iter().map(|f| f.name()).collect();
                format!("built-in loopback cluster with faults: {}", names.join(", "))
            }
            TargetConfig::Cluster { kubeconfig, context, proxy, .. } => format!(
                "cluster from {} (context {}), proxy {proxy}",
                kubeconfig.as_ref().map_or("the default kubeconfig".into(), |p| p.display().to_string()),
                context.as_deref().unwrap_or("current"),
            ),
        }
    }
}

/// A connected target, owning the loopback cluster when there is one.
pub struct Environment {
    pub target: Target,
    loopback: Option<Loopback>,
}

impl Environment {
    /// Starts loopback if asked, connects to the cluster and checks that it answers.
    ///
    /// # Errors
    /// Loopback cannot start, the cluster does not answer, the proxy address does not resolve.
    pub async fn connect(config: &TargetConfig, settings: RunSettings) -> Result<Self, TargetError> {
        let run_id = run_id();
        let (cluster, proxy, secret, loopback) = match config {
            TargetConfig::Loopback { faults } => {
                let secret = SecretRef::default_client_certificate();
                let mut loopback_config = LoopbackConfig { faults: faults.clone(), ..Default::default() };
                loopback_config.tls.envoy_client_certificate =
                    Some(SecretName { name: secret.name.clone(), namespace: secret.namespace.clone() });
                let loopback = Loopback::start(loopback_config).await?;
                let cluster = ClusterClient::connect(Some(loopback.kubeconfig()), None).await?;
                let proxy = loopback.proxy_address();
                (cluster, proxy, Some(secret), Some(loopback))
            }
            TargetConfig::Cluster { kubeconfig, context, proxy, client_certificate } => {
                let cluster = ClusterClient::connect(kubeconfig.as_deref(), context.as_deref()).await?;
                (cluster, resolve(proxy).await?, client_certificate.clone(), None)
            }
        };
        let client_certificate = match secret {
            None => None,
            Some(secret) => {
                let install = InstallClientCertificate::generate(secret)
                    .map_err(|e| TargetError::Setting { variable: env::CLIENT_CERT_SECRET, message: e.to_string() })?;
                install.write(&cluster, install.original()).await?;
                Some(Arc::new(install))
            }
        };
        let target = Target { cluster, proxy, run_id, settings, client_certificate };
        Ok(Environment { target, loopback })
    }

    /// Stops loopback, if this environment started it.
    pub async fn shutdown(self) {
        if let Some(loopback) = self.loopback {
            loopback.shutdown().await;
        }
    }
}

/// Why an installation with (or without) a client certificate cannot run scenarios with
/// `feature`, if it cannot: the one place the install-wide features are decided.
pub fn missing(feature: Feature, has_client_certificate: bool) -> Option<String> {
    match feature {
        Feature::EnvoyClientCertificate if !has_client_certificate => {
            Some(format!("the installation has no Envoy client certificate (set {})", env::CLIENT_CERT_SECRET))
        }
        _ => None,
    }
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
    fn client_certificate_scenarios_need_a_configured_secret() {
        let without = TargetConfig::Cluster { kubeconfig: None, context: None, proxy: "p:80".into(), client_certificate: None };
        let reason = without.lacks(Feature::EnvoyClientCertificate).unwrap();
        assert!(reason.contains(env::CLIENT_CERT_SECRET), "{reason}");
        assert!(without.lacks(Feature::UpstreamTls).is_none());
        let loopback = TargetConfig::Loopback { faults: Vec::new() };
        assert!(loopback.lacks(Feature::EnvoyClientCertificate).is_none(), "loopback always has one");
    }
}
