//! Processing a root HTTPProxy and the HTTPProxies it includes into a virtual host and
//! statuses: [`process_root`].
//!
//! Errors follow Contour (docs/contract.md E1-E2): an unresolved Service is left out of its
//! route, which answers 503 only when no service is left; a validation, delegation or client
//! certificate error stops processing and withdraws every route of the proxy that has it (S4).
//! Either makes that proxy invalid. Includes follow I1-I4: an included proxy resolves its
//! Services and Secrets in its own namespace, its routes sit under the include's prefix, an
//! error in it drops only its routes, and an include that names no usable proxy answers 502.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::client_certificate::ClientCertificateState;
use super::protocol::{self, UpstreamProtocol};
use super::status::ProxyStatus;
use super::upstream::{PortRef, UpstreamRequest, build_cluster, external_name, lookup_service};
use super::validation::{self, UpstreamValidation, ValidationError};
use super::{Context, qualified_name};
use crate::config::{Fault, LoopbackConfig, TlsVersion};
use crate::dataplane::table::{
    Cluster, DownstreamTls, HostRewrite, PathPrefix, Route, RouteAction, SecureHost, ServingTls, Transport,
    VirtualHost, weighted_rotation,
};

/// The parts of an HTTPProxy spec the controller reads; everything else is ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpProxySpec {
    pub virtualhost: Option<VirtualHostSpec>,
    pub routes: Vec<RouteSpec>,
    pub includes: Vec<IncludeSpec>,
    pub tcpproxy: Option<TcpProxySpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VirtualHostSpec {
    pub fqdn: String,
    pub tls: Option<VirtualHostTls>,
}

/// `virtualhost.tls`: the host is served on the HTTPS listener.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VirtualHostTls {
    /// The serving certificate's Secret, `name` or `namespace/name`.
    pub secret_name: String,
    /// Forward the client's TLS unread instead of ending it.
    pub passthrough: bool,
    pub minimum_protocol_version: String,
    pub maximum_protocol_version: String,
}

/// `spec.tcpproxy`: the TLS virtual host's connections go to these services as TCP. Its
/// services have a route service's fields (those a TCP proxy reads).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TcpProxySpec {
    pub services: Vec<RouteService>,
}

/// What a root HTTPProxy programs: plain HTTP routes, a TLS virtual host, or both.
#[derive(Debug, Default)]
pub struct ServedHost {
    pub http: Option<VirtualHost>,
    pub https: Option<SecureHost>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IncludeSpec {
    pub name: String,
    /// Defaults to the including proxy's namespace.
    pub namespace: Option<String>,
    pub conditions: Vec<MatchCondition>,
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
    /// The service's share of the route's requests (docs/contract.md R3); for a mirror, the
    /// share of requests copied to it.
    pub weight: Option<i64>,
    /// The service gets a copy of the route's requests instead of a share of them.
    pub mirror: bool,
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
    /// What a `set` of the Host header asks for, if any: a value holding `%REQ(name)%` takes
    /// the Host from that request header, any other is a fixed name (docs/contract.md N1).
    fn host(policy: Option<&HeadersPolicy>, config: &LoopbackConfig) -> Option<HostRewrite> {
        let value = &policy?.set.iter().find(|h| h.name.eq_ignore_ascii_case("host"))?.value;
        match request_header_reference(value) {
            Some(name) if !config.has(Fault::DynamicHostTakenLiterally) => Some(HostRewrite::FromHeader(name.into())),
            _ => Some(HostRewrite::Literal(value.clone())),
        }
    }
}

/// `name` of the first `%REQ(name)%` in a header value, as Contour finds it (a name of ASCII
/// letters, digits and dashes).
fn request_header_reference(value: &str) -> Option<&str> {
    let mut rest = value;
    while let Some(start) = rest.find("%REQ(") {
        let after = &rest[start + 5..];
        let name_len = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).unwrap_or(after.len());
        if name_len > 0 && after[name_len..].starts_with(")%") {
            return Some(&after[..name_len]);
        }
        rest = after;
    }
    None
}

/// The HTTPProxies of one rebuild that this controller serves, by `namespace/name`.
pub type ProxyIndex<'v> = BTreeMap<String, &'v Value>;

/// Statuses by `namespace/name`: every root gets one, and so does every proxy a root reaches
/// through its includes. A proxy left without one is an orphan (docs/contract.md E3).
pub type Statuses = BTreeMap<String, ProxyStatus>;

/// Processes the root HTTPProxy `object` (one with a `virtualhost`) and every proxy it
/// includes, recording their statuses in `statuses`. `duplicate_of` lists the other roots
/// claiming the same fqdn (`namespace/name`), which makes all of them invalid. Returns the
/// lowercase fqdn and what to program for it, `None` when the root must serve nothing.
pub fn process_root(
    ctx: &Context<'_>,
    index: &ProxyIndex<'_>,
    object: &Value,
    duplicate_of: &[String],
    statuses: &mut Statuses,
) -> Option<(String, ServedHost)> {
    let me = qualified_name(object);
    let status = statuses.entry(me.clone()).or_default();
    let spec = parse(object, status)?;
    let fqdn = spec.virtualhost.as_ref().map(|v| v.fqdn.as_str()).unwrap_or_default();
    if fqdn.trim().is_empty() {
        status.error("VirtualHostError", "FQDNNotSpecified", "Spec.VirtualHost.Fqdn must be specified".into());
        return None;
    }
    if !duplicate_of.is_empty() {
        let mut all: Vec<String> = duplicate_of.to_vec();
        all.push(me);
        all.sort();
        status.error(
            "VirtualHostError",
            "DuplicateVhost",
            format!("fqdn {:?} is used in multiple HTTPProxies: {}", fqdn.to_ascii_lowercase(), all.join(", ")),
        );
        return None;
    }
    if spec.routes.is_empty() && spec.includes.is_empty() && spec.tcpproxy.is_none() {
        status.error(
            "SpecError",
            "NothingDefined",
            "HTTPProxy.Spec must have at least one Route, Include, or a TCPProxy".into(),
        );
        return None;
    }
    let root_namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
    // The TLS virtual host first, then its TCP proxy, then routes, as Contour checks them.
    let tls = match spec.virtualhost.as_ref().and_then(|v| v.tls.as_ref()) {
        Some(tls) => Some(downstream_tls(ctx, root_namespace, tls, status)?),
        None => None,
    };
    let mut walk = Walk { ctx, index, statuses, root_namespace, included_failed: false };
    let mut served = ServedHost::default();
    if let Some(tcpproxy) = &spec.tcpproxy {
        let tls = match tls {
            Some(tls) => tls,
            None if ctx.config.has(Fault::TcpProxyWithoutTlsServed) => DownstreamTls::Passthrough,
            None => {
                let message = "Spec.TCPProxy requires that either Spec.TLS.Passthrough or Spec.TLS.SecretName be set";
                walk.status(&me).error("TCPProxyError", "TLSMustBeConfigured", message.into());
                return None;
            }
        };
        if tcpproxy.services.is_empty() {
            let message = "either services or inclusion must be specified";
            walk.status(&me).error("TCPProxyError", "NothingDefined", message.into());
            return None;
        }
        let tcp_proxy = walk.tcp_proxy(&me, &fqdn.to_ascii_lowercase(), &tcpproxy.services)?;
        let ignored = matches!(tls, DownstreamTls::Passthrough) && ctx.config.has(Fault::TlsPassthroughIgnored);
        if !ignored {
            served.https = Some(SecureHost { tls, tcp_proxy, turn: Default::default() });
        }
    }
    if !spec.routes.is_empty() || !spec.includes.is_empty() {
        let routes = walk.routes(object, &spec, &[], &[])?;
        if walk.included_failed && ctx.config.has(Fault::ChildErrorWithdrawsRoot) {
            return None;
        }
        served.http = Some(VirtualHost { routes });
    }
    Some((fqdn.to_ascii_lowercase(), served))
}

/// What the proxy does with the client's TLS for `virtualhost.tls`, or `None` with Contour's
/// error in `status` (docs/contract.md N4).
fn downstream_tls(
    ctx: &Context<'_>,
    namespace: &str,
    tls: &VirtualHostTls,
    status: &mut ProxyStatus,
) -> Option<DownstreamTls> {
    match (tls.secret_name.trim().is_empty(), tls.passthrough) {
        (false, true) => {
            let message = "Spec.VirtualHost.TLS: both Passthrough and SecretName were specified";
            status.error("TLSError", "TLSConfigNotValid", message.into());
            return None;
        }
        (true, false) => {
            let message = "Spec.VirtualHost.TLS: neither Passthrough nor SecretName were specified";
            status.error("TLSError", "TLSConfigNotValid", message.into());
            return None;
        }
        (true, true) => return Some(DownstreamTls::Passthrough),
        (false, false) => {}
    }
    // `namespace/name`, or a name in the proxy's own namespace (also when the part before
    // the slash is empty), looked up as written.
    let (secret_namespace, name) = match tls.secret_name.split_once('/') {
        Some(("", name)) => (namespace, name),
        Some((secret_namespace, name)) => (secret_namespace, name),
        None => (namespace, tls.secret_name.as_str()),
    };
    let delegation_checked = !ctx.config.has(Fault::ServingSecretDelegationIgnored);
    if secret_namespace != namespace
        && delegation_checked
        && !validation::delegated(ctx, secret_namespace, name, namespace)
    {
        let message = format!("Spec.VirtualHost.TLS Secret {:?} certificate delegation not permitted", tls.secret_name);
        status.error("TLSError", "DelegationNotPermitted", message);
        return None;
    }
    let secret = ctx.secrets.get(secret_namespace, name);
    let certificate = match super::client_certificate::tls_secret(secret.as_deref(), true) {
        Ok(certificate) => certificate,
        Err(detail) => {
            let message = format!("Spec.VirtualHost.TLS Secret {:?} is invalid: {detail}", tls.secret_name);
            status.error("TLSError", "SecretNotValid", message);
            return None;
        }
    };
    // Contour's defaults are 1.2 and 1.3; any other value counts as unset.
    let version = |value: &str, default: TlsVersion| match value {
        "1.2" => TlsVersion::V1_2,
        "1.3" => TlsVersion::V1_3,
        _ => default,
    };
    let versions = (
        version(&tls.minimum_protocol_version, TlsVersion::V1_2),
        version(&tls.maximum_protocol_version, TlsVersion::V1_3),
    );
    if versions.1 < versions.0 {
        let message = "Spec.Virtualhost.TLS the minimum protocol version is greater than the maximum protocol version";
        status.error("TLSError", "TLSConfigNotValid", message.into());
        return None;
    }
    let versions = if ctx.config.has(Fault::VirtualHostTlsVersionsIgnored) {
        (TlsVersion::V1_2, TlsVersion::V1_3)
    } else {
        versions
    };
    Some(DownstreamTls::Terminate(Arc::new(ServingTls {
        certificate: Arc::new(certificate),
        versions,
        server_config: Default::default(),
    })))
}

/// The spec of `object`, or `None` with an error in `status` when it cannot be processed.
fn parse(object: &Value, status: &mut ProxyStatus) -> Option<HttpProxySpec> {
    let spec = match HttpProxySpec::deserialize(&object["spec"]) {
        Ok(spec) => spec,
        Err(err) => {
            status.error("SpecError", "Invalid", format!("invalid spec: {err}"));
            return None;
        }
    };
    if let Some(feature) = unmodelled_feature(&object["spec"]) {
        let message = format!(
            "loopback's reference controller does not model {feature}; run with --controller contour to test it"
        );
        status.error("LoopbackError", "NotModelled", message);
        return None;
    }
    Some(spec)
}

/// One root's walk through its include tree, as Contour computes routes.
struct Walk<'w, 'c, 'v> {
    ctx: &'w Context<'c>,
    index: &'w ProxyIndex<'v>,
    statuses: &'w mut Statuses,
    root_namespace: &'w str,
    /// Set when an included proxy's routes were dropped (read under a fault only).
    included_failed: bool,
}

impl Walk<'_, '_, '_> {
    fn status(&mut self, proxy: &str) -> &mut ProxyStatus {
        self.statuses.entry(proxy.to_string()).or_default()
    }

    /// The routes of `object` and of what it includes, under the path `prefixes` of the
    /// includes that led here; `visited` is that chain of proxies. `None` when an error in
    /// `object` withdraws its routes, included ones too.
    fn routes(
        &mut self,
        object: &Value,
        spec: &HttpProxySpec,
        prefixes: &[String],
        visited: &[String],
    ) -> Option<Vec<Route>> {
        let me = qualified_name(object);
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
        if visited.contains(&me) {
            let path: Vec<&str> = visited.iter().chain([&me]).map(String::as_str).collect();
            let message = format!("include creates an include cycle: {}", path.join(" -> "));
            self.status(&me).error("IncludeError", "IncludeCreatesCycle", message);
            return None;
        }
        let visited: Vec<String> = visited.iter().cloned().chain([me.clone()]).collect();
        let mut routes = Vec::new();
        let mut seen = BTreeSet::new();
        for include in &spec.includes {
            let child_namespace = include.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or(namespace);
            if let Err(e) = self.path_conditions(&include.conditions) {
                self.status(&me).error("IncludeError", "PathMatchConditionsNotValid", format!("include: {e}"));
                continue;
            }
            let own: Vec<String> = include.conditions.iter().filter_map(|c| c.prefix.clone()).collect();
            let include_prefix = merge_prefixes(&own);
            // Contour lets several includes share `/` (or no condition at all).
            let duplicate = include_prefix != "/" && !seen.insert(include_prefix.clone());
            if duplicate && !self.ctx.config.has(Fault::DuplicateIncludesServed) {
                let message = "duplicate conditions defined on an include".to_string();
                self.status(&me).error("IncludeError", "DuplicateMatchConditions", message);
                continue;
            }
            let key = format!("{child_namespace}/{}", include.name);
            let unusable = match self.index.get(&key) {
                None => Some(("IncludeNotFound", format!("include {key} not found"))),
                Some(child) if !child["spec"]["virtualhost"].is_null() => {
                    Some(("RootIncludesRoot", format!("root httpproxy cannot include another root httpproxy ({key})")))
                }
                Some(child) => {
                    let child_prefixes: Vec<String> = if self.ctx.config.has(Fault::IncludePrefixDropped) {
                        prefixes.to_vec()
                    } else {
                        prefixes.iter().chain(&own).cloned().collect()
                    };
                    match self.included(child, &child_prefixes, &visited) {
                        Some(child_routes) => routes.extend(child_routes),
                        None => self.included_failed = true,
                    }
                    None
                }
            };
            if let Some((reason, message)) = unusable {
                self.status(&me).error("IncludeError", reason, message);
                // An include with conditions answers 502 under them (docs/contract.md I4).
                if !include.conditions.is_empty() && !self.ctx.config.has(Fault::MissingIncludeAnswers404) {
                    let action = RouteAction::DirectResponse { status: 502 };
                    routes.push(Route {
                        path: PathPrefix::String(include_prefix),
                        action,
                        host_rewrite: None,
                        mirror: None,
                        turn: Default::default(),
                    });
                }
            }
        }
        let included = routes.len();
        // Errors that withdraw the routes (docs/contract.md S4, E1, I3).
        let mut withdraw = false;
        'routes: for route in &spec.routes {
            if let Err(e) = self.path_conditions(&route.conditions) {
                self.status(&me).error("RouteError", "PathMatchConditionsNotValid", format!("route: {e}"));
                return None;
            }
            let own = route.conditions.iter().filter_map(|c| c.prefix.clone());
            let prefix = merge_prefixes(&prefixes.iter().cloned().chain(own).collect::<Vec<_>>());
            let route_host = HeadersPolicy::host(route.request_headers_policy.as_ref(), self.ctx.config);
            let mut clusters = Vec::new();
            let mut mirror: Option<Arc<Cluster>> = None;
            let mut unresolved = false;
            for service in &route.services {
                let route_literal = route_host.as_ref().and_then(HostRewrite::literal);
                match self.route_cluster(namespace, service, route_literal) {
                    // Checked once the service has passed every other check (E1).
                    Ok(_)
                        if service.mirror && mirror.is_some() && !self.ctx.config.has(Fault::SeveralMirrorsAllowed) =>
                    {
                        let message = "only one service per route may be nominated as mirror".to_string();
                        self.status(&me).error("ServiceError", "OnlyOneMirror", message);
                        withdraw = true;
                        break 'routes;
                    }
                    Ok(cluster) if service.mirror => mirror = Some(Arc::new(cluster)),
                    Ok(cluster) => {
                        let weight = service.weight.and_then(|w| u32::try_from(w).ok()).unwrap_or(0);
                        clusters.push((Arc::new(cluster), weight));
                    }
                    // The service is left out; the route still forwards to the others (E2).
                    Err(RouteServiceError::Unresolved(detail)) => {
                        let message = format!("Spec.Routes unresolved service reference: {detail}");
                        self.status(&me).error("ServiceError", "ServiceUnresolvedReference", message);
                        unresolved = true;
                    }
                    Err(RouteServiceError::Unloadable) => {}
                    // Processing stops at the first such error: it is the last one reported (E1).
                    Err(RouteServiceError::Withdraw { error_type, reason, message }) => {
                        self.status(&me).error(error_type, reason, message);
                        withdraw = true;
                        // Both faults go on: one to report more, the other to serve what is left.
                        let config = self.ctx.config;
                        if !config.has(Fault::ReportEveryError) && !config.has(Fault::KeepRoutesOfInvalidProxy) {
                            break 'routes;
                        }
                    }
                }
            }
            let fail_route = unresolved && self.ctx.config.has(Fault::UnresolvedServiceFailsRoute);
            let action = if clusters.is_empty() || fail_route {
                RouteAction::DirectResponse { status: 503 }
            } else {
                RouteAction::Forward(self.shares(clusters))
            };
            // HTTPProxy prefix conditions are plain string prefixes (docs/contract.md R1).
            let path = if self.ctx.config.has(Fault::SegmentPrefixes) {
                PathPrefix::Segments(prefix)
            } else {
                PathPrefix::String(prefix)
            };
            let mirror = match mirror {
                Some(cluster) if self.ctx.config.has(Fault::MirrorIgnoresUpstreamTls) => {
                    Some(Arc::new(cluster.with_transport(Transport::Plaintext { http2: false })))
                }
                _ if self.ctx.config.has(Fault::MirrorIgnored) => None,
                mirror => mirror,
            };
            routes.push(Route { path, action, host_rewrite: route_host, mirror, turn: Default::default() });
        }
        if withdraw && !self.ctx.config.has(Fault::KeepRoutesOfInvalidProxy) {
            if visited.len() == 1 && self.ctx.config.has(Fault::RootErrorKeepsIncludedRoutes) {
                routes.truncate(included);
                return Some(routes);
            }
            return None;
        }
        Some(routes)
    }

    /// The clusters of a root's `tcpproxy` services in turn by weight, or `None` with the
    /// first error in the root's status: any error makes the whole proxy invalid.
    fn tcp_proxy(&mut self, me: &str, fqdn: &str, services: &[RouteService]) -> Option<Vec<Arc<Cluster>>> {
        let config = self.ctx.config;
        let mut clusters = Vec::new();
        for service in services {
            // A TCP proxy's cluster takes no Host rewrite: its only SNI is an ExternalName's
            // (docs/contract.md N4), whatever header policy the service carries.
            let service = RouteService {
                name: service.name.clone(),
                port: service.port,
                weight: service.weight,
                protocol: service.protocol.clone(),
                validation: service.validation.clone(),
                ..Default::default()
            };
            let service = &service;
            match self.route_cluster(self.root_namespace, service, None) {
                Ok(cluster) => {
                    let weight = service.weight.and_then(|w| u32::try_from(w).ok()).unwrap_or(0);
                    clusters.push((Arc::new(tcp_cluster(cluster, fqdn, config)), weight));
                }
                Err(RouteServiceError::Unresolved(detail)) => {
                    let message = format!("Spec.TCPProxy unresolved service reference: {detail}");
                    self.status(me).error("TCPProxyError", "ServiceUnresolvedReference", message);
                    return None;
                }
                // Envoy refuses the cluster: connections to it are closed.
                Err(RouteServiceError::Unloadable) => {}
                Err(RouteServiceError::Withdraw { error_type, reason, message }) => {
                    self.status(me).error(error_type, reason, message);
                    return None;
                }
            }
        }
        Some(self.shares(clusters))
    }

    /// A condition block's path prefixes checked (docs/contract.md E4).
    fn path_conditions(&self, conditions: &[MatchCondition]) -> Result<(), String> {
        if self.ctx.config.has(Fault::PathConditionsUnchecked) { Ok(()) } else { prefix_conditions(conditions) }
    }

    /// The routes of an included proxy; it is reached, so it gets a status even when valid.
    fn included(&mut self, child: &Value, prefixes: &[String], visited: &[String]) -> Option<Vec<Route>> {
        let key = qualified_name(child);
        let spec = parse(child, self.status(&key))?;
        self.routes(child, &spec, prefixes, visited)
    }

    /// The route's services in turn by weight: with no weight anywhere they share equally; a
    /// service without a weight beside weighted ones gets nothing (docs/contract.md R3). Each
    /// keeps its own transport.
    fn shares(&self, clusters: Vec<(Arc<Cluster>, u32)>) -> Vec<Arc<Cluster>> {
        let config = self.ctx.config;
        let literal_zeros = config.has(Fault::ZeroWeightsTakenLiterally) && clusters.len() > 1;
        let all_zero = clusters.iter().all(|(_, weight)| *weight == 0) && !literal_zeros;
        let unweighted = config.has(Fault::WeightsIgnored) || all_zero;
        let mut clusters: Vec<(Arc<Cluster>, u32)> =
            clusters.into_iter().map(|(cluster, weight)| (cluster, if unweighted { 1 } else { weight })).collect();
        if config.has(Fault::RouteTransportFromFirstService)
            && let Some(first) = clusters.first().map(|(cluster, _)| cluster.transport.clone())
        {
            for (cluster, _) in &mut clusters {
                *cluster = Arc::new(cluster.with_transport(first.clone()));
            }
        }
        weighted_rotation(clusters)
    }

    fn route_cluster(
        &self,
        namespace: &str,
        route_service: &RouteService,
        route_host: Option<&str>,
    ) -> Result<Cluster, RouteServiceError> {
        let ctx = self.ctx;
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
        // Validation only applies when TLS is spoken (docs/contract.md V5). The CA Secret
        // belongs to the proxy that names it, included or not (I1).
        let root_or = |fault: Fault| if ctx.config.has(fault) { self.root_namespace } else { namespace };
        let default_namespace = root_or(Fault::ChildCaSecretInRootNamespace);
        let delegation_namespace = root_or(Fault::DelegationCheckedForRootNamespace);
        let validation = match (&route_service.validation, protocol.is_tls()) {
            (Some(v), true) => validation::lookup(ctx, default_namespace, delegation_namespace, v)
                .map_err(|e| validation_error(name, route_service.port, e))?,
            _ => None,
        };
        // Contour checks header policies next; loopback models none of their errors.
        client_certificate_usable(ctx)?;
        // What Contour accepted, Envoy may still refuse to load.
        if validation.as_ref().is_some_and(|v| !v.loads()) {
            return Err(RouteServiceError::Unloadable);
        }
        // A service's Host from a request header is ignored: Envoy has no per-cluster form.
        let service_host = HeadersPolicy::host(route_service.request_headers_policy.as_ref(), ctx.config)
            .and_then(|h| h.literal().map(str::to_string));
        // The service's Host rewrite, then the route's, is the SNI (docs/contract.md N1).
        let mut sni = if ctx.config.has(Fault::RouteHostBeatsServiceHost) {
            route_host.map(str::to_string).or_else(|| service_host.clone())
        } else {
            service_host.clone().or_else(|| route_host.map(str::to_string))
        };
        // Failing both, an ExternalName Service's name (docs/contract.md N1, N5).
        let external = external_name(&service).filter(|_| !ctx.config.has(Fault::ExternalNameSniIgnored));
        if ctx.config.has(Fault::ExternalNameBeatsHostRewrite) {
            sni = external.map(str::to_string).or(sni);
        } else {
            sni = sni.or_else(|| external.map(str::to_string));
        }
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
}

/// A route service's cluster as a TCP proxy speaks to it: Envoy's TCP pool adds no ALPN of
/// its own, so a `tls` upstream is offered none, and `h2` only what Contour configures
/// (docs/contract.md P5, N4).
fn tcp_cluster(cluster: Cluster, fqdn: &str, config: &LoopbackConfig) -> Cluster {
    let transport = match &cluster.transport {
        _ if config.has(Fault::TcpProxyIgnoresUpstreamTls) => Transport::Plaintext { http2: false },
        Transport::Tls(settings) => {
            let mut settings = settings.clone();
            if !settings.http2 && !config.has(Fault::TcpProxyOffersHttp11) {
                settings.alpn.clear();
            }
            if config.has(Fault::TcpProxySniFromFqdn) {
                settings.sni = Some(fqdn.to_string());
            }
            if config.has(Fault::TcpProxySkipsValidation) {
                settings.validation = None;
            }
            if config.has(Fault::TcpProxyPresentsNoClientCertificate) {
                settings.client_certificate = None;
            }
            settings.client_config = Default::default();
            Transport::Tls(settings)
        }
        transport => transport.clone(),
    };
    cluster.with_transport(transport)
}

/// Checks a condition block's path prefixes as Contour does: at most one, starting with `/`.
fn prefix_conditions(conditions: &[MatchCondition]) -> Result<(), String> {
    let prefixes: Vec<&str> = conditions.iter().filter_map(|c| c.prefix.as_deref()).filter(|p| !p.is_empty()).collect();
    if let Some(bad) = prefixes.iter().find(|p| !p.starts_with('/')) {
        return Err(format!("prefix conditions must start with /, {bad} was supplied"));
    }
    if prefixes.len() > 1 {
        return Err("more than one prefix, exact or regex is not allowed in a condition block".into());
    }
    Ok(())
}

/// The path prefix of a route under includes: the prefixes of the include chain and of the
/// route, concatenated, with each run of slashes made one; `/` when there are none.
pub fn merge_prefixes(prefixes: &[String]) -> String {
    let mut merged = String::new();
    for c in prefixes.concat().chars() {
        if !(c == '/' && merged.ends_with('/')) {
            merged.push(c);
        }
    }
    if merged.is_empty() { "/".into() } else { merged }
}

/// The first HTTPProxy feature in `spec` that the reference controller would otherwise ignore
/// without a word, changing what a scenario proves: such a proxy gets an error of loopback's
/// own instead (the real Contour, `--controller contour`, serves them all).
fn unmodelled_feature(spec: &Value) -> Option<String> {
    let present = |v: &Value| !v.is_null() && v != &Value::Bool(false) && v.as_array().is_none_or(|a| !a.is_empty());
    let unmodelled = [
        ("/tcpproxy/include", "spec.tcpproxy.include"),
        ("/tcpproxy/includes", "spec.tcpproxy.includes"),
        ("/virtualhost/tls/clientValidation", "spec.virtualhost.tls.clientValidation"),
        ("/virtualhost/tls/enableFallbackCertificate", "spec.virtualhost.tls.enableFallbackCertificate"),
        ("/tcpproxy/loadBalancerPolicy", "spec.tcpproxy.loadBalancerPolicy"),
        ("/tcpproxy/healthCheckPolicy", "spec.tcpproxy.healthCheckPolicy"),
    ];
    for (pointer, name) in unmodelled {
        if spec.pointer(pointer).is_some_and(present) {
            return Some(name.to_string());
        }
    }
    // A TLS virtual host's routes are served over HTTPS, and redirected from HTTP.
    let routed = ["/routes", "/includes"].iter().any(|p| spec.pointer(p).is_some_and(present));
    if routed && spec.pointer("/virtualhost/tls").is_some_and(present) {
        return Some("routes on a TLS virtual host (spec.virtualhost.tls with spec.routes or spec.includes)".into());
    }
    // Envoy matches a wildcard server name against SNI; the HTTPS listener's table has exact names.
    let wildcard = spec.pointer("/virtualhost/fqdn").and_then(Value::as_str).is_some_and(|f| f.starts_with("*."));
    if wildcard && spec.pointer("/virtualhost/tls").is_some_and(present) {
        return Some("a wildcard fqdn on a TLS virtual host".into());
    }
    let conditions_of = |v: &Value, at: String| {
        let conditions = v["conditions"].as_array().map(Vec::as_slice).unwrap_or_default();
        conditions.iter().enumerate().find_map(|(c, condition)| {
            let key = condition.as_object().and_then(|o| o.keys().find(|k| *k != "prefix"))?;
            Some(format!("{at}.conditions[{c}].{key}"))
        })
    };
    let includes = spec["includes"].as_array().map(Vec::as_slice).unwrap_or_default();
    for (i, include) in includes.iter().enumerate() {
        if let Some(found) = conditions_of(include, format!("spec.includes[{i}]")) {
            return Some(found);
        }
    }
    let routes = spec["routes"].as_array().map(Vec::as_slice).unwrap_or_default();
    for (r, route) in routes.iter().enumerate() {
        if let Some(found) = conditions_of(route, format!("spec.routes[{r}]")) {
            return Some(found);
        }
        let services = route["services"].as_array().map(Vec::as_slice).unwrap_or_default();
        for (i, service) in services.iter().enumerate() {
            // A mirror copies every request, or a share of them (weight 1-99) the model lacks.
            let share = service["weight"].as_i64().unwrap_or(0);
            if service["mirror"].as_bool() == Some(true) && (1..100).contains(&share) {
                return Some(format!("spec.routes[{r}].services[{i}].weight (a mirror's share)"));
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
