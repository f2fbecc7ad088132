//! Processing one HTTPProxy into a virtual host and a status: [`process`].
//!
//! Errors follow Contour (docs/contract.md E1-E2): an unresolved Service is left out of its
//! route, which answers 503 only when no service is left; a validation, delegation or client
//! certificate error stops processing and withdraws every route of the proxy (S4). Either makes
//! the proxy invalid.

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
use crate::dataplane::table::{Cluster, PathPrefix, Route, RouteAction, VirtualHost};

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
    if let Some(feature) = unmodelled_feature(&object["spec"]) {
        let message = format!(
            "loopback's reference controller does not model {feature}; run with --controller contour to test it"
        );
        status.error("LoopbackError", "NotModelled", message);
        return ProcessedProxy { status, virtual_host: None };
    }
    let Some(vhost) = spec.virtualhost.as_ref().filter(|v| !v.fqdn.is_empty()) else {
        if ctx.config.has(Fault::OrphanedWithoutErrorEntry) {
            status.orphaned_without_error_entry = true;
        } else {
            status.orphan();
        }
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
    // Errors that withdraw the whole virtual host (docs/contract.md S4, E1).
    let mut withdraw = false;
    'routes: for route in &spec.routes {
        let prefix = route.conditions.iter().find_map(|c| c.prefix.clone()).unwrap_or_else(|| "/".into());
        let route_host = HeadersPolicy::host(route.request_headers_policy.as_ref());
        let mut clusters = Vec::new();
        let mut unresolved = false;
        for service in &route.services {
            match route_cluster(ctx, namespace, service, route_host.as_deref()) {
                Ok(cluster) => clusters.push(Arc::new(cluster)),
                // The service is left out; the route still forwards to the others (E2).
                Err(RouteServiceError::Unresolved(detail)) => {
                    let message = format!("Spec.Routes unresolved service reference: {detail}");
                    status.error("ServiceError", "ServiceUnresolvedReference", message);
                    unresolved = true;
                }
                Err(RouteServiceError::Unloadable) => {}
                // Processing stops at the first such error: it is the last one reported (E1).
                Err(RouteServiceError::Withdraw { error_type, reason, message }) => {
                    status.error(error_type, reason, message);
                    withdraw = true;
                    // Both faults go on: one to report more, the other to serve what is left.
                    if !ctx.config.has(Fault::ReportEveryError) && !ctx.config.has(Fault::KeepRoutesOfInvalidProxy) {
                        break 'routes;
                    }
                }
            }
        }
        let fail_route = unresolved && ctx.config.has(Fault::UnresolvedServiceFailsRoute);
        let action = if clusters.is_empty() || fail_route {
            RouteAction::DirectResponse { status: 503 }
        } else {
            RouteAction::Forward(clusters)
        };
        // HTTPProxy prefix conditions are plain string prefixes (docs/contract.md R1).
        let path = if ctx.config.has(Fault::SegmentPrefixes) {
            PathPrefix::Segments(prefix)
        } else {
            PathPrefix::String(prefix)
        };
        routes.push(Route { path, action, host_rewrite: route_host });
    }
    let keep = !withdraw || ctx.config.has(Fault::KeepRoutesOfInvalidProxy);
    let virtual_host = keep.then(|| (vhost.fqdn.to_ascii_lowercase(), VirtualHost { routes }));
    ProcessedProxy { status, virtual_host }
}

/// The first HTTPProxy feature in `spec` that the reference controller would otherwise ignore
/// without a word, changing what a scenario proves: such a proxy gets an error of loopback's
/// own instead (the real Contour, `--controller contour`, serves them all).
fn unmodelled_feature(spec: &Value) -> Option<String> {
    let present = |v: &Value| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty());
    for (pointer, name) in [
        ("/includes", "spec.includes (delegation to other HTTPProxies)"),
        ("/tcpproxy", "spec.tcpproxy"),
        ("/virtualhost/tls", "spec.virtualhost.tls"),
    ] {
        if spec.pointer(pointer).is_some_and(present) {
            return Some(name.to_string());
        }
    }
    let routes = spec["routes"].as_array().map(Vec::as_slice).unwrap_or_default();
    for (r, route) in routes.iter().enumerate() {
        let conditions = route["conditions"].as_array().map(Vec::as_slice).unwrap_or_default();
        for (c, condition) in conditions.iter().enumerate() {
            if let Some(key) = condition.as_object().and_then(|o| o.keys().find(|k| *k != "prefix")) {
                return Some(format!("spec.routes[{r}].conditions[{c}].{key}"));
            }
        }
        let services = route["services"].as_array().map(Vec::as_slice).unwrap_or_default();
        for (i, service) in services.iter().enumerate() {
            for key in ["weight", "mirror"] {
                if service.get(key).is_some() {
                    return Some(format!("spec.routes[{r}].services[{i}].{key}"));
                }
            }
        }
    }
    None
}

enum RouteServiceError {
    Unresolved(String),
    /// Valid in status, but the proxy cannot load it: Envoy refuses such a cluster, and routes
    /// to it answer 503 (docs/contract.md S1).
    Unloadable,
    Withdraw {
        error_type: &'static str,
        reason: &'static str,
        message: String,
    },
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
    if ctx.config.has(Fault::ClientCertificateCheckedFirst) {
        client_certificate_usable(ctx)?;
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
    // Contour checks header policies next; loopback models none of their errors.
    client_certificate_usable(ctx)?;
    // What Contour accepted, Envoy may still refuse to load.
    if validation.as_ref().is_some_and(|v| !v.loads()) {
        return Err(RouteServiceError::Unloadable);
    }
    let service_host = HeadersPolicy::host(route_service.request_headers_policy.as_ref());
    // The service's Host rewrite, then the route's, is the SNI (docs/contract.md N1).
    let mut sni = if ctx.config.has(Fault::RouteHostBeatsServiceHost) {
        route_host.map(str::to_string).or_else(|| service_host.clone())
    } else {
        service_host.clone().or_else(|| route_host.map(str::to_string))
    };
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

/// The install-wide client certificate, checked for every route service (docs/contract.md C4).
fn client_certificate_usable(ctx: &Context<'_>) -> Result<(), RouteServiceError> {
    match ctx.client_certificate {
        ClientCertificateState::Invalid(message) if !ctx.config.has(Fault::ClientCertificateSecretOptional) => {
            Err(RouteServiceError::Withdraw {
                error_type: "TLSError",
                reason: "SecretNotValid",
                message: message.clone(),
            })
        }
        _ => Ok(()),
    }
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
