//! Processing one HTTPProxy into a virtual host and a status: [`process`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde_json::Value;

use super::protocol::{self, UpstreamProtocol};
use super::status::ProxyStatus;
use super::validation::{self, UpstreamValidation};
use crate::api::Store;
use crate::api::kinds::{POD, SERVICE};
use crate::config::LoopbackConfig;
use crate::dataplane::table::{Cluster, Route, RouteAction, TlsSettings, Transport, VirtualHost};

/// The parts of an HTTPProxy spec the controller reads; everything else is ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpProxySpec {
    pub virtualhost: Option<VirtualHostSpec>,
    pub routes: Vec<RouteSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VirtualHostSpec {
    pub fqdn: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RouteSpec {
    pub conditions: Vec<MatchCondition>,
    pub services: Vec<RouteService>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MatchCondition {
    pub prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RouteService {
    pub name: String,
    pub port: i32,
    pub protocol: Option<String>,
    pub validation: Option<UpstreamValidation>,
}

/// What processing one HTTPProxy yields.
pub struct ProcessedProxy {
    pub status: ProxyStatus,
    /// `(fqdn, routes)` to program; `None` for a proxy that must serve nothing.
    pub virtual_host: Option<(String, VirtualHost)>,
}

/// Processes the HTTPProxy `object` (a root proxy: one with `spec.virtualhost`).
pub fn process(store: &Store, object: &Value, config: &LoopbackConfig) -> ProcessedProxy {
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
    let mut status = ProxyStatus::default();
    let spec: HttpProxySpec = match serde_json::from_value(object["spec"].clone()) {
        Ok(spec) => spec,
        Err(err) => {
            status.error("SpecError", "Invalid", format!("invalid spec: {err}"));
            return ProcessedProxy { status, virtual_host: None };
        }
    };
    let Some(vhost) = spec.virtualhost.as_ref().filter(|v| !v.fqdn.is_empty()) else {
        status.orphaned = true;
        return ProcessedProxy { status, virtual_host: None };
    };
    let mut routes = Vec::new();
    // A broken validation policy withdraws the whole virtual host (CONTRACT S4).
    let mut withdraw = false;
    for route in &spec.routes {
        let prefix = route.conditions.iter().find_map(|c| c.prefix.clone()).unwrap_or_else(|| "/".into());
        let mut clusters = Vec::new();
        let mut unresolved = false;
        for service in &route.services {
            match cluster(store, namespace, service, config) {
                Ok(cluster) => clusters.push(Arc::new(cluster)),
                Err(ClusterError::Unresolved(message)) => {
                    status.error("ServiceError", "ServiceUnresolvedReference", message);
                    unresolved = true;
                }
                Err(ClusterError::Validation(message)) => {
                    status.error("ServiceError", "TLSUpstreamValidation", message);
                    withdraw = true;
                }
            }
        }
        let action = if unresolved || clusters.is_empty() {
            RouteAction::DirectResponse { status: 503 }
        } else {
            RouteAction::Forward(clusters)
        };
        routes.push(Route { prefix, action });
    }
    let virtual_host = (!withdraw).then(|| (vhost.fqdn.to_ascii_lowercase(), VirtualHost { routes }));
    ProcessedProxy { status, virtual_host }
}

enum ClusterError {
    Unresolved(String),
    Validation(String),
}

fn cluster(
    store: &Store,
    namespace: &str,
    route_service: &RouteService,
    config: &LoopbackConfig,
) -> Result<Cluster, ClusterError> {
    let name = &route_service.name;
    let unresolved =
        |detail: String| ClusterError::Unresolved(format!("Spec.Routes unresolved service reference: {detail}"));
    let service: Service = store
        .get(&SERVICE, namespace, name)
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or_else(|| unresolved(format!("service \"{namespace}/{name}\" not found")))?;
    let port = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|ports| ports.iter().find(|p| p.port == route_service.port))
        .ok_or_else(|| {
            unresolved(format!("port \"{}\" on service \"{namespace}/{name}\" not matched", route_service.port))
        })?;
    let protocol = protocol::resolve(route_service.protocol.as_deref(), &service, port, config);
    let transport = match protocol {
        UpstreamProtocol::Tls | UpstreamProtocol::H2 => {
            let validation = match &route_service.validation {
                Some(v) => validation::lookup(store, namespace, v, config).map_err(|detail| {
                    ClusterError::Validation(format!(
                        "Service [{name}:{}] TLS upstream validation policy error: {detail}",
                        route_service.port
                    ))
                })?,
                None => None,
            };
            Transport::Tls(TlsSettings { sni: None, validation })
        }
        // Validation is silently ignored without TLS (CONTRACT V5).
        UpstreamProtocol::Http1 | UpstreamProtocol::H2c => Transport::Plaintext,
    };
    Ok(Cluster {
        name: format!("{namespace}/{name}/{}", route_service.port),
        endpoints: endpoints(store, namespace, &service, port),
        transport,
    })
}

/// Ready pods selected by the Service, at the port's targetPort.
fn endpoints(store: &Store, namespace: &str, service: &Service, port: &ServicePort) -> Vec<SocketAddr> {
    let Some(selector) = service.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return Vec::new();
    };
    let (pods, _) = store.list(&POD, Some(namespace));
    let mut out = Vec::new();
    for value in pods {
        if !crate::kubelet::deployments::pod_is_ready(&value) || value["metadata"].get("deletionTimestamp").is_some() {
            continue;
        }
        let Ok(pod) = serde_json::from_value::<Pod>(value) else { continue };
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        if !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            continue;
        }
        let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.as_ref()).and_then(|ip| ip.parse::<IpAddr>().ok())
        else {
            continue;
        };
        let target = match &port.target_port {
            None => Some(port.port),
            Some(IntOrString::Int(n)) => Some(*n),
            Some(IntOrString::String(named)) => pod
                .spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(named.as_str()))
                .map(|p| p.container_port),
        };
        if let Some(target) = target.and_then(|t| u16::try_from(t).ok()) {
            out.push(SocketAddr::new(ip, target));
        }
    }
    out
}
