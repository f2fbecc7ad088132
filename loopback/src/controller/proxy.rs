//! Processing one HTTPProxy into a virtual host and a status: [`process`].
//!
//! Errors follow Contour: an unresolved Service turns its route into a 503 direct response;
//! a validation, delegation or client certificate error withdraws every route of the proxy
//! (docs/contract.md S4). Either makes the proxy invalid.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::Context;
use super::client_certificate::ClientCertificateState;
use super::protocol::{self, UpstreamProtocol};
use super::status::ProxyStatus;
use super::upstream::{PortRef, UpstreamRequest, build_cluster, lookup_service};
use super::validation::{self, UpstreamValidation, ValidationError};
use crate::config::Fault;
use crate::dataplane::table::{Cluster, Route, RouteAction, VirtualHost};

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
    pub request_headers_policy: Option<HeadersPolicy>,
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
    pub request_headers_policy: Option<HeadersPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HeadersPolicy {
    pub set: Vec<HeaderValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HeaderValue {
    pub name: String,
    pub value: String,
}

impl HeadersPolicy {
    /// The static value a `set` gives the Host header, if any.
    fn host(policy: Option<&HeadersPolicy>) -> Option<String> {
        policy?.set.iter().find(|h| h.name.eq_ignore_ascii_case("host")).map(|h| h.value.clone())
    }
}

/// What processing one HTTPProxy yields.
pub struct ProcessedProxy {
    pub status: ProxyStatus,
    /// `(fqdn, routes)` to program; `None` for a proxy that must serve nothing.
    pub virtual_host: Option<(String, VirtualHost)>,
}

/// Processes the HTTPProxy `object`. `duplicate_of` lists the other proxies claiming the
/// same fqdn (`namespace/name`), which makes all of them invalid.
pub fn process(ctx: &Context<'_>, object: &Value, duplicate_of: &[String]) -> ProcessedProxy {
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
    if !duplicate_of.is_empty() {
        let mut all: Vec<String> = duplicate_of.to_vec();
        all.push(format!("{namespace}/{}", object["metadata"]["name"].as_str().unwrap_or_default()));
        all.sort();
        status.error(
            "VirtualHostError",
            "DuplicateVhost",
            format!("fqdn {:?} is used in multiple HTTPProxies: {}", vhost.fqdn, all.join(", ")),
        );
        return ProcessedProxy { status, virtual_host: None };
    }
    let mut routes = Vec::new();
    // Errors that withdraw the whole virtual host (docs/contract.md S4).
    let mut withdraw = false;
    for route in &spec.routes {
        let prefix = route.conditions.iter().find_map(|c| c.prefix.clone()).unwrap_or_else(|| "/".into());
        let route_host = HeadersPolicy::host(route.request_headers_policy.as_ref());
        let mut clusters = Vec::new();
        let mut unresolved = false;
        for service in &route.services {
            match route_cluster(ctx, namespace, service, route_host.as_deref()) {
                Ok(cluster) => clusters.push(Arc::new(cluster)),
                Err(RouteServiceError::Unresolved(detail)) => {
                    let message = format!("Spec.Routes unresolved service reference: {detail}");
                    status.error("ServiceError", "ServiceUnresolvedReference", message);
                    unresolved = true;
                }
                Err(RouteServiceError::Withdraw { error_type, reason, message }) => {
                    status.error(error_type, reason, message);
                    withdraw = true;
                }
            }
        }
        let action = if unresolved || clusters.is_empty() {
            RouteAction::DirectResponse { status: 503 }
        } else {
            RouteAction::Forward(clusters)
        };
        routes.push(Route { prefix, action, host_rewrite: route_host });
    }
    let keep = !withdraw || ctx.config.has(Fault::KeepRoutesOfInvalidProxy);
    let virtual_host = keep.then(|| (vhost.fqdn.to_ascii_lowercase(), VirtualHost { routes }));
    ProcessedProxy { status, virtual_host }
}

enum RouteServiceError {
    Unresolved(String),
    Withdraw { error_type: &'static str, reason: &'static str, message: String },
}

fn route_cluster(
    ctx: &Context<'_>,
    namespace: &str,
    route_service: &RouteService,
    route_host: Option<&str>,
) -> Result<Cluster, RouteServiceError> {
    let name = &route_service.name;
    let (service, port) = lookup_service(ctx, namespace, name, &PortRef::Number(route_service.port))
        .map_err(RouteServiceError::Unresolved)?;
    if let ClientCertificateState::Invalid(message) = ctx.client_certificate
        && !ctx.config.has(Fault::ClientCertificateSecretOptional)
    {
        return Err(RouteServiceError::Withdraw {
            error_type: "TLSError",
            reason: "SecretNotValid",
            message: message.clone(),
        });
    }
    let mut protocol = protocol::resolve(route_service.protocol.as_deref(), &service, &port, ctx.config);
    if protocol == UpstreamProtocol::Http1
        && route_service.validation.is_some()
        && ctx.config.has(Fault::ValidateWithoutTls)
    {
        protocol = UpstreamProtocol::Tls;
    }
    // Validation only applies when TLS is spoken (docs/contract.md V5).
    let validation = match (&route_service.validation, protocol.is_tls()) {
        (Some(v), true) => {
            validation::lookup(ctx, namespace, v).map_err(|e| validation_error(name, route_service.port, e))?
        }
        _ => None,
    };
    let service_host = HeadersPolicy::host(route_service.request_headers_policy.as_ref());
    let mut sni = service_host.clone().or_else(|| route_host.map(str::to_string));
    if ctx.config.has(Fault::SubjectNameAsSni)
        && let Some(v) = &route_service.validation
    {
        sni = Some(v.subject_name.clone());
    }
    let upstream = UpstreamRequest {
        namespace,
        service: &service,
        port: &port,
        protocol,
        validation,
        sni,
        host_rewrite: service_host,
    };
    Ok(build_cluster(ctx, upstream))
}

fn validation_error(service: &str, port: i32, error: ValidationError) -> RouteServiceError {
    match error {
        ValidationError::NotDelegated { namespace, name } => RouteServiceError::Withdraw {
            error_type: "TLSError",
            reason: "CACertificateNotDelegated",
            message: format!(
                "service.UpstreamValidation.CACertificate Secret \"{namespace}/{name}\" is not configured for certificate delegation"
            ),
        },
        ValidationError::InvalidSecret(detail) => RouteServiceError::Withdraw {
            error_type: "ServiceError",
            reason: "TLSUpstreamValidation",
            message: format!("Service [{service}:{port}] TLS upstream validation policy error: {detail}"),
        },
    }
}
