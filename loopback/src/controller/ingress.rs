//! Ingress (networking.k8s.io/v1) to annotated Services (docs/contract.md N3): [`routes`].
//!
//! An Ingress backend gets TLS from the Service annotation or appProtocol like an HTTPProxy
//! service, and the client certificate, but never validation or SNI. With the client
//! certificate Secret missing its rules are silently skipped (C4). Ingress has no status here.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use serde::Deserialize;
use serde_json::Value;

use super::Context;
use super::client_certificate::ClientCertificateState;
use super::protocol::{self, UpstreamProtocol};
use super::upstream::{PortRef, UpstreamRequest, build_cluster, external_name, lookup_service};
use crate::config::Fault;
use crate::dataplane::table::{PathPrefix, Route, RouteAction};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct IngressSpec {
    rules: Vec<IngressRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct IngressRule {
    host: Option<String>,
    http: Option<HttpRuleValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct HttpRuleValue {
    paths: Vec<HttpPath>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct HttpPath {
    path: Option<String>,
    path_type: String,
    backend: IngressBackend,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct IngressBackend {
    service: Option<ServiceBackend>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ServiceBackend {
    name: String,
    port: ServiceBackendPort,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ServiceBackendPort {
    number: Option<i32>,
    name: Option<String>,
}

/// The `(host, route)` pairs an Ingress programs.
pub fn routes(ctx: &Context<'_>, object: &Value) -> Vec<(String, Route)> {
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
    let Ok(spec) = IngressSpec::deserialize(&object["spec"]) else { return Vec::new() };
    if let ClientCertificateState::Invalid(_) = ctx.client_certificate
        && !ctx.config.has(Fault::ClientCertificateSecretOptional)
    {
        return Vec::new();
    }
    let mut out = Vec::new();
    for rule in &spec.rules {
        let (Some(host), Some(http)) = (&rule.host, &rule.http) else { continue };
        for path in &http.paths {
            let Some(backend) = &path.backend.service else { continue };
            let port = match (&backend.port.number, &backend.port.name) {
                (Some(n), _) => PortRef::Number(*n),
                (None, Some(name)) => PortRef::Name(name.clone()),
                (None, None) => continue,
            };
            // Contour gives Envoy `Prefix` paths as whole segments, `/` and
            // `ImplementationSpecific` ones as plain string prefixes.
            let prefix = path.path.clone().unwrap_or_else(|| "/".into());
            let path = match path.path_type.as_str() {
                "Prefix" if prefix != "/" && !ctx.config.has(Fault::IngressStringPrefixes) => {
                    PathPrefix::Segments(prefix.trim_end_matches('/').to_string())
                }
                _ => PathPrefix::String(prefix),
            };
            let action = match lookup_service(ctx, namespace, &backend.name, &port) {
                Ok((service, service_port)) => forward(ctx, namespace, &service, &service_port),
                Err(_) if ctx.config.has(Fault::IngressUnresolvedServiceAnswers503) => {
                    RouteAction::DirectResponse { status: 503 }
                }
                // Contour leaves out a path whose Service or port it cannot resolve (N3): a
                // request for it falls to a shorter path of the host, if there is one.
                Err(_) => continue,
            };
            out.push((
                host.to_ascii_lowercase(),
                Route { path, action, host_rewrite: None, mirror: None, turn: Default::default() },
            ));
        }
    }
    out
}

/// The action of a path to a resolved Service: its cluster, with the Service's protocol, no
/// validation and no SNI.
fn forward(ctx: &Context<'_>, namespace: &str, service: &Service, port: &ServicePort) -> RouteAction {
    let protocol = if ctx.config.has(Fault::IngressIgnoresUpstreamProtocol) {
        UpstreamProtocol::Http1
    } else {
        protocol::resolve(None, service, port, ctx.config)
    };
    let upstream = UpstreamRequest {
        namespace,
        service,
        port,
        protocol,
        validation: None,
        // Contour sets no SNI for Ingress backends, ExternalName or not (N3).
        sni: external_name(service).filter(|_| ctx.config.has(Fault::IngressExternalNameSni)).map(str::to_string),
        host_rewrite: None,
    };
    RouteAction::Forward(vec![Arc::new(build_cluster(ctx, upstream))])
}
