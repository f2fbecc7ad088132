//! Building the proxy's view of one Service port: [`build_cluster`] (transport, TLS settings,
//! endpoints), shared by HTTPProxy and Ingress processing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;

use super::Context;
use super::client_certificate::{self, ClientCertificateState};
use super::protocol::UpstreamProtocol;
use crate::api::kinds::{POD, SERVICE};
use crate::config::{Fault, TlsVersion};
use crate::dataplane::table::{Cluster, Endpoint, PeerValidation, RouteAction, RouteTable, TlsSettings, Transport};

/// What is known about an upstream before its cluster is built.
pub struct UpstreamRequest<'a> {
    pub namespace: &'a str,
    pub service: &'a Service,
    pub port: &'a ServicePort,
    pub protocol: UpstreamProtocol,
    /// Validation, when the route asks for it and TLS is spoken.
    pub validation: Option<PeerValidation>,
    pub sni: Option<String>,
    /// Replaces the Host header upstream.
    pub host_rewrite: Option<String>,
}

/// Looks up a Service in `namespace` and its port by number (HTTPProxy) or name (Ingress).
///
/// # Errors
/// The text after `Spec.Routes unresolved service reference: `.
pub fn lookup_service(
    ctx: &Context<'_>,
    namespace: &str,
    name: &str,
    port: &PortRef,
) -> Result<(Service, ServicePort), String> {
    let service: Service = ctx
        .store
        .get_shared(&SERVICE, namespace, name)
        .and_then(|v| Service::deserialize(&*v).ok())
        .ok_or_else(|| format!("service \"{namespace}/{name}\" not found"))?;
    let found = service.spec.as_ref().and_then(|s| s.ports.as_ref()).and_then(|ports| {
        ports
            .iter()
            .find(|p| match port {
                PortRef::Number(n) => p.port == *n,
                PortRef::Name(want) => p.name.as_deref() == Some(want.as_str()),
            })
            .cloned()
    });
    let port = found.ok_or_else(|| format!("port \"{port}\" on service \"{namespace}/{name}\" not matched"))?;
    // Contour serves ExternalName Services only when the installation enables them, and never
    // ones that name the local host (docs/contract.md N5).
    if let Some(external) = external_name(&service) {
        let enabled = ctx.config.enable_external_name_service || ctx.config.has(Fault::ExternalNameEnabled);
        if !enabled {
            return Err(format!(
                "{namespace}/{name} is an ExternalName service, these are not currently enabled. See the config.enableExternalNameService config file setting"
            ));
        }
        if LOCALHOST_NAMES.contains(&external) && !ctx.config.has(Fault::ExternalNameLocalhostAllowed) {
            return Err(format!(
                "{namespace}/{name} is an ExternalName service that points to localhost, this is not allowed"
            ));
        }
    }
    Ok((service, port))
}

/// The names Contour refuses as an ExternalName, exactly (internal/dag/accessors.go).
const LOCALHOST_NAMES: [&str; 3] = ["localhost", "localhost.localdomain", "local.projectcontour.io"];

/// The DNS name of an ExternalName Service (Contour ignores the field on other types).
pub fn external_name(service: &Service) -> Option<&str> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() != Some("ExternalName") {
        return None;
    }
    spec.external_name.as_deref().filter(|name| !name.is_empty())
}

/// A Service port named by number or by name.
#[derive(Debug, Clone)]
pub enum PortRef {
    Number(i32),
    Name(String),
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(name) => f.write_str(name),
        }
    }
}

/// The cluster for an upstream.
pub fn build_cluster(ctx: &Context<'_>, upstream: UpstreamRequest<'_>) -> Cluster {
    let name = upstream.service.metadata.name.clone().unwrap_or_default();
    let transport = match upstream.protocol {
        UpstreamProtocol::Http1 => Transport::Plaintext { http2: false },
        UpstreamProtocol::H2c => Transport::Plaintext { http2: true },
        UpstreamProtocol::Tls | UpstreamProtocol::H2 => Transport::Tls(tls_settings(ctx, &upstream)),
    };
    Cluster {
        name: format!("{}/{name}/{}", upstream.namespace, upstream.port.port),
        endpoints: endpoints(ctx, upstream.namespace, upstream.service, upstream.port),
        transport,
        host_rewrite: upstream.host_rewrite,
        pool: Default::default(),
    }
}

/// The fault `clusters-share-validation`: clusters of one Service port whose settings differ
/// only in their trust anchors or in subject names past the first are made one, the first met
/// standing for all, as a cluster identity that leaves those out would (Contour's cluster
/// names hash the CA Secret's name but not its namespace, and the first subject name only:
/// docs/contract.md V7).
pub fn share_clusters_by_first_subject_name(table: &mut RouteTable) {
    fn identity(cluster: &Cluster) -> String {
        match &cluster.transport {
            Transport::Plaintext { http2 } => format!("{} plaintext http2={http2}", cluster.name),
            Transport::Tls(tls) => {
                let first = tls.validation.as_ref().and_then(|v| v.subject_names.first());
                format!("{} tls http2={} sni={:?} first subject={first:?}", cluster.name, tls.http2, tls.sni)
            }
        }
    }
    let mut first_met: std::collections::HashMap<String, Arc<Cluster>> = std::collections::HashMap::new();
    let mut share = |cluster: &mut Arc<Cluster>| {
        let standing = first_met.entry(identity(cluster)).or_insert_with(|| Arc::clone(cluster));
        *cluster = Arc::clone(standing);
    };
    for route in table.virtual_hosts.values_mut().flat_map(|host| host.routes.iter_mut()) {
        if let RouteAction::Forward(clusters) = &mut route.action {
            clusters.iter_mut().for_each(&mut share);
        }
        if let Some(mirror) = &mut route.mirror {
            share(mirror);
        }
    }
}

fn tls_settings(ctx: &Context<'_>, upstream: &UpstreamRequest<'_>) -> TlsSettings {
    let h2 = upstream.protocol == UpstreamProtocol::H2;
    // Contour configures ALPN only for h2; for tls, Envoy's HTTP/1 connection pool offers
    // http/1.1 itself when the cluster configures none (docs/contract.md P5).
    let alpn = match (h2, ctx.config.has(Fault::NoAlpnForTls)) {
        (true, _) if ctx.config.has(Fault::H2FallsBackToHttp1) => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        (true, _) => vec![b"h2".to_vec()],
        (false, false) => vec![b"http/1.1".to_vec()],
        (false, true) => Vec::new(),
    };
    let client_certificate = match ctx.client_certificate {
        ClientCertificateState::Ready(certificate) if !ctx.config.has(Fault::NeverPresentClientCertificate) => {
            Some(certificate.clone())
        }
        ClientCertificateState::NotConfigured if ctx.config.has(Fault::FallbackClientCertificate) => {
            client_certificate::fallback()
        }
        _ => None,
    };
    let mut versions = if ctx.config.has(Fault::IgnoreUpstreamTlsLimits) {
        (TlsVersion::V1_2, TlsVersion::V1_3)
    } else {
        ctx.config.upstream_tls_versions()
    };
    if ctx.config.has(Fault::DefaultMinimumTls13) && ctx.config.cluster.upstream_tls.minimum_protocol_version.is_none()
    {
        versions.0 = TlsVersion::V1_3;
    }
    TlsSettings {
        sni: upstream.sni.clone(),
        alpn,
        http2: h2,
        validation: upstream.validation.clone().or_else(|| {
            // With no trust anchors nothing verifies: every backend certificate is refused.
            ctx.config.has(Fault::VerifyWithoutValidation).then(|| PeerValidation {
                ca_certificates: Vec::new(),
                envoy_refuses: None,
                subject_names: Vec::new(),
                faults: Default::default(),
            })
        }),
        client_certificate,
        versions,
        // Contour always configures the list: its defaults when the installation sets none (N2).
        cipher_suites: if ctx.config.has(Fault::LibraryCipherSuites) {
            Vec::new()
        } else if ctx.config.has(Fault::InstallationCipherSuitesIgnored) {
            crate::config::default_cipher_suites()
        } else {
            ctx.config.upstream_cipher_suites()
        },
        client_config: Default::default(),
    }
}

/// Ready pods selected by the Service, at the port's targetPort; for an ExternalName Service,
/// its name at the Service port, resolved by the proxy (Contour's `STRICT_DNS` cluster).
fn endpoints(ctx: &Context<'_>, namespace: &str, service: &Service, port: &ServicePort) -> Vec<Endpoint> {
    if let Some(host) = external_name(service) {
        return u16::try_from(port.port)
            .map(|port| vec![Endpoint::Name { host: host.to_string(), port }])
            .unwrap_or_default();
    }
    let Some(selector) = service.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return Vec::new();
    };
    let (pods, _) = ctx.store.list(&POD, Some(namespace));
    let mut out = Vec::new();
    for value in pods {
        if !crate::kubelet::deployments::pod_is_ready(&value) || value["metadata"].get("deletionTimestamp").is_some() {
            continue;
        }
        let labels = &value["metadata"]["labels"];
        if !selector.iter().all(|(k, v)| labels[k].as_str() == Some(v)) {
            continue;
        }
        // Read in place: a typed Pod would copy the whole object for two fields, on every
        // rebuild, for every pod of the namespace.
        let Some(ip) = value["status"]["podIP"].as_str().and_then(|ip| ip.parse::<IpAddr>().ok()) else {
            continue;
        };
        let target = match &port.target_port {
            None => Some(port.port),
            Some(IntOrString::Int(n)) => Some(*n),
            Some(IntOrString::String(named)) => value["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                .find(|p| p["name"].as_str() == Some(named.as_str()))
                .and_then(|p| p["containerPort"].as_i64())
                .and_then(|n| i32::try_from(n).ok()),
        };
        if let Some(target) = target.and_then(|t| u16::try_from(t).ok()) {
            out.push(Endpoint::Address(SocketAddr::new(ip, target)));
        }
    }
    out
}
