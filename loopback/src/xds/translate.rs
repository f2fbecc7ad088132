//! From xDS resources to a [`RouteTable`]: what Envoy would serve on its plaintext HTTP
//! listener, restricted to what the loopback data plane can express.
//!
//! The table cannot hold everything Envoy can: routes with header or query conditions,
//! regex or exact paths, redirects, wildcard domains and catch-all (`*`) virtual hosts have no
//! counterpart. Those are left out (with a debug log) rather than approximated, so that the
//! loopback proxy answers 404 where it cannot answer like Envoy instead of misrouting.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster as XdsCluster;
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, HeaderValueOption, HealthStatus, address, data_source, socket_address, transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    Route as XdsRoute, RouteAction as XdsRouteAction, RouteConfiguration, WeightedCluster, route, route_action,
    route_match, weighted_cluster,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, Secret, UpstreamTlsContext,
    certificate_validation_context, common_tls_context, secret, subject_alt_name_matcher, tls_parameters,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{HttpProtocolOptions, http_protocol_options};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsVersion;
use crate::dataplane::table::{
    CertifiedChain, Cluster, DownstreamTls, Endpoint, HostRewrite, PathPrefix, PeerValidation, Route, RouteAction,
    RouteTable, SecureHost, ServingTls, TlsSettings, Transport, VirtualHost, weighted_rotation,
};

/// The listener Contour gives plaintext HTTP virtual hosts.
pub const HTTP_LISTENER: &str = "ingress_http";

/// The listener Contour gives TLS virtual hosts, one filter chain per server name.
pub const HTTPS_LISTENER: &str = "ingress_https";

/// The listener of `kind` (`http` or `https`): Contour's usual one ([`HTTP_LISTENER`],
/// [`HTTPS_LISTENER`]), or in Gateway mode, where those exist only until the Gateway does, the
/// one it makes for the Gateway's listener port (`http-80`, `https-443`; the lowest port when
/// the Gateway has several).
fn listener<'r>(resources: &'r Resources, usual: &str, kind: &str) -> Option<&'r Listener> {
    let prefix = format!("{kind}-");
    resources.listeners.get(usual).or_else(|| {
        resources
            .listeners
            .iter()
            .filter_map(|(name, listener)| Some((name.strip_prefix(&prefix)?.parse::<u16>().ok()?, listener)))
            .min_by_key(|(port, _)| *port)
            .map(|(_, listener)| listener)
    })
}

/// The key of `Cluster.typed_extension_protocol_options` that selects the upstream HTTP version.
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Everything last received from the management server, one map per resource type, by name.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    pub listeners: BTreeMap<String, Listener>,
    pub route_configurations: BTreeMap<String, RouteConfiguration>,
    pub clusters: BTreeMap<String, XdsCluster>,
    pub load_assignments: BTreeMap<String, ClusterLoadAssignment>,
    pub secrets: BTreeMap<String, Secret>,
}

/// The table Envoy's `ingress_http` listener amounts to (an empty one until it and its route
/// configuration have arrived), with the TCP proxies of its `ingress_https` listener.
pub fn translate(resources: &Resources) -> RouteTable {
    let mut table = RouteTable::default();
    // One table entry per xDS cluster, so its rustls configuration is built once.
    let mut clusters = ClusterCache { resources, built: HashMap::new() };
    table.secure_hosts = secure_hosts(resources, &mut clusters);
    let Some(route_configuration) = http_route_configuration(resources) else {
        return table;
    };
    for virtual_host in &route_configuration.virtual_hosts {
        let routes = translate_routes(&virtual_host.routes, &mut clusters);
        for domain in &virtual_host.domains {
            let Some(host) = exact_domain(domain) else {
                tracing::debug!(vhost = %virtual_host.name, %domain, "domain not expressible in the route table");
                continue;
            };
            // Envoy refuses a route configuration naming one domain twice; keep the first.
            if table.virtual_hosts.contains_key(&host) {
                continue;
            }
            let routes = routes.iter().map(share_route).collect();
            table.virtual_hosts.insert(host, VirtualHost { routes });
        }
    }
    table
}

/// The TCP proxies of the HTTPS listener, by server name. A filter chain that ends TLS names
/// its certificate by SDS; one without a transport socket passes the client's TLS through.
/// Chains the table cannot express (an HTTP connection manager: HTTPS routes) are left out.
fn secure_hosts(resources: &Resources, clusters: &mut ClusterCache<'_>) -> BTreeMap<String, SecureHost> {
    let mut hosts = BTreeMap::new();
    let Some(listener) = listener(resources, HTTPS_LISTENER, "https") else { return hosts };
    for chain in &listener.filter_chains {
        let Some(tcp_proxy) = chain.filters.iter().find_map(|f| match &f.config_type {
            Some(filter::ConfigType::TypedConfig(any)) => decode::<TcpProxy>(any),
            _ => None,
        }) else {
            continue;
        };
        let tls = match &chain.transport_socket {
            None => DownstreamTls::Passthrough,
            Some(socket) => match &socket.config_type {
                Some(transport_socket::ConfigType::TypedConfig(any)) => {
                    // A certificate that has not arrived keeps the chain warming: nothing is served.
                    let Some(serving) = decode::<DownstreamTlsContext>(any).and_then(|c| serving_tls(&c, resources))
                    else {
                        continue;
                    };
                    DownstreamTls::Terminate(Arc::new(serving))
                }
                _ => continue,
            },
        };
        let weighted: Vec<(Arc<Cluster>, u32)> = match &tcp_proxy.cluster_specifier {
            Some(tcp_proxy::ClusterSpecifier::Cluster(name)) => {
                clusters.get_tcp(name).map(|c| (c, 1)).into_iter().collect()
            }
            Some(tcp_proxy::ClusterSpecifier::WeightedClusters(weighted)) => weighted
                .clusters
                .iter()
                .filter_map(|entry| clusters.get_tcp(&entry.name).map(|c| (c, entry.weight)))
                .collect(),
            None => Vec::new(),
        };
        let tcp_proxy = weighted_rotation(weighted);
        let names = chain.filter_chain_match.as_ref().map(|m| m.server_names.as_slice()).unwrap_or_default();
        for name in names {
            if name.contains('*') {
                tracing::debug!(%name, "wildcard server name not expressible in the route table");
                continue;
            }
            let host = SecureHost {
                tls: match &tls {
                    DownstreamTls::Passthrough => DownstreamTls::Passthrough,
                    DownstreamTls::Terminate(serving) => DownstreamTls::Terminate(serving.clone()),
                },
                tcp_proxy: tcp_proxy.clone(),
                turn: Default::default(),
            };
            hosts.entry(name.to_ascii_lowercase()).or_insert(host);
        }
    }
    hosts
}

/// The certificate and versions a `DownstreamTlsContext` serves; `None` while its SDS secret
/// has not arrived.
fn serving_tls(context: &DownstreamTlsContext, resources: &Resources) -> Option<ServingTls> {
    let common = context.common_tls_context.clone().unwrap_or_default();
    let certificate = client_certificate(&common, resources)??;
    let (minimum, maximum) = versions(&common);
    // Envoy's server defaults are TLS 1.2 to 1.3 where the client's are 1.2 to 1.2.
    let maximum = if common.tls_params.as_ref().is_none_or(|p| p.tls_maximum_protocol_version == 0) {
        TlsVersion::V1_3
    } else {
        maximum
    };
    Some(ServingTls { certificate, versions: (minimum, maximum), server_config: Default::default() })
}

/// The route configuration of the plaintext HTTP listener: by RDS name or inline.
fn http_route_configuration(resources: &Resources) -> Option<std::borrow::Cow<'_, RouteConfiguration>> {
    let listener = listener(resources, HTTP_LISTENER, "http")?;
    let manager = listener
        .filter_chains
        .iter()
        .filter(|chain| chain.transport_socket.is_none())
        .flat_map(|chain| &chain.filters)
        .find_map(|f| match &f.config_type {
            Some(filter::ConfigType::TypedConfig(any)) => decode::<HttpConnectionManager>(any),
            _ => None,
        })?;
    match manager.route_specifier? {
        http_connection_manager::RouteSpecifier::Rds(rds) => {
            resources.route_configurations.get(&rds.route_config_name).map(std::borrow::Cow::Borrowed)
        }
        http_connection_manager::RouteSpecifier::RouteConfig(inline) => Some(std::borrow::Cow::Owned(inline)),
        http_connection_manager::RouteSpecifier::ScopedRoutes(_) => None,
    }
}

/// The lowercase host a domain entry stands for, when it names exactly one. `host:*` is the
/// same host with any port: the data plane matches hosts with the port already stripped.
fn exact_domain(domain: &str) -> Option<String> {
    let host = domain.strip_suffix(":*").unwrap_or(domain);
    if host.is_empty() || host.contains('*') {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

/// The same route for another domain of the virtual host (clusters are shared).
fn share_route(route: &Route) -> Route {
    let action = match &route.action {
        RouteAction::Forward(clusters) => RouteAction::Forward(clusters.clone()),
        RouteAction::DirectResponse { status } => RouteAction::DirectResponse { status: *status },
    };
    Route {
        path: route.path.clone(),
        action,
        host_rewrite: route.host_rewrite.clone(),
        mirror: route.mirror.clone(),
        turn: Default::default(),
    }
}

/// Envoy takes the first route that matches; the table takes the longest matching prefix.
/// The two agree once every route that an earlier one shadows is dropped (Contour orders
/// longer prefixes first, so with its output nothing is dropped but exact duplicates).
fn translate_routes(routes: &[XdsRoute], clusters: &mut ClusterCache<'_>) -> Vec<Route> {
    let mut kept: Vec<PathPrefix> = Vec::new();
    let mut out = Vec::new();
    for xds_route in routes {
        let Some(path) = path_match(xds_route) else {
            tracing::debug!(route = %xds_route.name, "route match not expressible in the route table");
            continue;
        };
        // Every path this route matches starts with its prefix: if an earlier route matches
        // the prefix itself, Envoy would always take that one.
        if kept.iter().any(|earlier| earlier.matches(path.as_str())) {
            continue;
        }
        let Some((action, host_rewrite)) = route_action(xds_route, clusters) else {
            tracing::debug!(route = %xds_route.name, "route action not expressible in the route table");
            continue;
        };
        let mirror = match &xds_route.action {
            Some(route::Action::Route(action)) => {
                action.request_mirror_policies.first().and_then(|policy| clusters.get(&policy.cluster, None))
            }
            _ => None,
        };
        kept.push(path.clone());
        out.push(Route { path, action, host_rewrite, mirror, turn: Default::default() });
    }
    out
}

/// The path condition of a route without header, query or other conditions the table lacks.
fn path_match(xds_route: &XdsRoute) -> Option<PathPrefix> {
    let matcher = xds_route.r#match.as_ref()?;
    let case_insensitive = matcher.case_sensitive.as_ref().is_some_and(|b| !b.value);
    if !matcher.headers.is_empty()
        || !matcher.query_parameters.is_empty()
        || matcher.runtime_fraction.is_some()
        || matcher.grpc.is_some()
        || matcher.tls_context.is_some()
        || !matcher.dynamic_metadata.is_empty()
        || case_insensitive
    {
        return None;
    }
    match matcher.path_specifier.as_ref()? {
        route_match::PathSpecifier::Prefix(p) => Some(PathPrefix::String(p.clone())),
        route_match::PathSpecifier::PathSeparatedPrefix(p) => Some(PathPrefix::Segments(p.clone())),
        _ => None,
    }
}

/// The table action and route-level host rewrite of an xDS route.
fn route_action(xds_route: &XdsRoute, clusters: &mut ClusterCache<'_>) -> Option<(RouteAction, Option<HostRewrite>)> {
    match xds_route.action.as_ref()? {
        route::Action::DirectResponse(direct) => {
            let status = u16::try_from(direct.status).ok()?;
            Some((RouteAction::DirectResponse { status }, None))
        }
        route::Action::Route(action) => {
            let host_rewrite = route_host_rewrite(action, &xds_route.request_headers_to_add);
            let forward = match action.cluster_specifier.as_ref()? {
                route_action::ClusterSpecifier::Cluster(name) => clusters.get(name, None).map(|c| vec![c]),
                route_action::ClusterSpecifier::WeightedClusters(weighted) => weighted_clusters(weighted, clusters),
                _ => return None,
            };
            // A cluster Envoy does not have (or has not warmed) answers 503.
            let action = match forward {
                Some(list) if !list.is_empty() => RouteAction::Forward(list),
                _ => RouteAction::DirectResponse { status: 503 },
            };
            Some((action, host_rewrite))
        }
        _ => None,
    }
}

/// `host_rewrite_literal` or `host_rewrite_header`, or a static `Host` set through
/// `request_headers_to_add`.
fn route_host_rewrite(action: &XdsRouteAction, headers: &[HeaderValueOption]) -> Option<HostRewrite> {
    match &action.host_rewrite_specifier {
        Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(host)) if !host.is_empty() => {
            Some(HostRewrite::Literal(host.clone()))
        }
        Some(route_action::HostRewriteSpecifier::HostRewriteHeader(name)) if !name.is_empty() => {
            Some(HostRewrite::FromHeader(name.clone()))
        }
        _ => static_host_header(headers).map(HostRewrite::Literal),
    }
}

/// The value of a `Host` (or `:authority`) header added verbatim, without Envoy's `%…%`
/// substitutions that depend on the request.
fn static_host_header(headers: &[HeaderValueOption]) -> Option<String> {
    headers
        .iter()
        .filter_map(|option| option.header.as_ref())
        .filter(|h| h.key.eq_ignore_ascii_case("host") || h.key.eq_ignore_ascii_case(":authority"))
        .map(|h| if h.value.is_empty() { String::from_utf8_lossy(&h.raw_value).into_owned() } else { h.value.clone() })
        .rfind(|value| !value.is_empty() && !value.contains('%'))
}

/// The clusters of `weighted_clusters` in turn, by weight. `None` when any named cluster is
/// missing, as Envoy would then fail the request.
fn weighted_clusters(weighted: &WeightedCluster, clusters: &mut ClusterCache<'_>) -> Option<Vec<Arc<Cluster>>> {
    let mut entries = Vec::new();
    for entry in &weighted.clusters {
        let weight = entry.weight.as_ref().map_or(0, |w| w.value);
        if weight == 0 {
            continue;
        }
        let rewrite = match &entry.host_rewrite_specifier {
            Some(weighted_cluster::cluster_weight::HostRewriteSpecifier::HostRewriteLiteral(host))
                if !host.is_empty() =>
            {
                Some(host.clone())
            }
            _ => static_host_header(&entry.request_headers_to_add),
        };
        entries.push((clusters.get(&entry.name, rewrite)?, weight));
    }
    Some(weighted_rotation(entries))
}

/// Table clusters made on demand, at most once per (name, host rewrite).
struct ClusterCache<'a> {
    resources: &'a Resources,
    built: HashMap<(String, Option<String>), Option<Arc<Cluster>>>,
}

impl ClusterCache<'_> {
    /// A cluster as a TCP proxy uses it: Envoy's TCP pool offers only the ALPN the cluster
    /// configures, where its HTTP pools add their own protocol.
    fn get_tcp(&mut self, name: &str) -> Option<Arc<Cluster>> {
        let xds = self.resources.clusters.get(name)?;
        let mut cluster = translate_cluster(xds, self.resources, None)?;
        if let (Transport::Tls(settings), Some(context)) = (&mut cluster.transport, upstream_tls_context(xds)) {
            settings.alpn = context
                .common_tls_context
                .map(|common| common.alpn_protocols.iter().map(|p| p.as_bytes().to_vec()).collect())
                .unwrap_or_default();
        }
        Some(Arc::new(cluster))
    }

    fn get(&mut self, name: &str, host_rewrite: Option<String>) -> Option<Arc<Cluster>> {
        let key = (name.to_string(), host_rewrite);
        if let Some(cluster) = self.built.get(&key) {
            return cluster.clone();
        }
        let cluster = self
            .resources
            .clusters
            .get(name)
            .and_then(|xds| translate_cluster(xds, self.resources, key.1.clone()))
            .map(Arc::new);
        self.built.insert(key, cluster.clone());
        cluster
    }
}

/// A table cluster, or `None` while Envoy would keep the cluster warming (a secret it needs
/// has not arrived) or could not use it at all.
fn translate_cluster(xds: &XdsCluster, resources: &Resources, host_rewrite: Option<String>) -> Option<Cluster> {
    let http2 = is_http2(xds);
    let transport = match upstream_tls_context(xds) {
        Some(context) => Transport::Tls(tls_settings(&context, http2, resources)?),
        // raw_buffer and anything unknown: plain TCP.
        None => Transport::Plaintext { http2 },
    };
    Some(Cluster {
        name: xds.name.clone(),
        endpoints: endpoints(xds, resources),
        transport,
        host_rewrite,
        pool: Default::default(),
    })
}

/// The cluster's `UpstreamTlsContext`, when its transport socket is TLS.
fn upstream_tls_context(xds: &XdsCluster) -> Option<UpstreamTlsContext> {
    match &xds.transport_socket.as_ref()?.config_type {
        Some(transport_socket::ConfigType::TypedConfig(any)) => decode::<UpstreamTlsContext>(any),
        _ => None,
    }
}

/// Whether the cluster speaks HTTP/2 upstream: explicit HTTP/2 in the protocol options (or
/// the deprecated `http2_protocol_options`). Envoy's default is HTTP/1.1.
fn is_http2(xds: &XdsCluster) -> bool {
    #[allow(deprecated)]
    let legacy = xds.http2_protocol_options.is_some();
    let explicit = xds
        .typed_extension_protocol_options
        .get(HTTP_PROTOCOL_OPTIONS)
        .and_then(decode::<HttpProtocolOptions>)
        .and_then(|options| options.upstream_protocol_options)
        .map(|options| match options {
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(explicit) => matches!(
                explicit.protocol_config,
                Some(http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(_))
            ),
            // The table cannot follow the downstream protocol or negotiate per connection.
            _ => false,
        });
    explicit.unwrap_or(legacy)
}

/// The usable endpoints: the cluster's inline assignment (static and DNS clusters) or the EDS
/// one named by `eds_cluster_config.service_name` (the cluster name when empty). Only the
/// highest-priority (lowest number) group with endpoints counts, and unhealthy, draining or
/// timed-out hosts are skipped, as Envoy's load balancer would. An address that is not an IP
/// is a DNS name (Contour's `STRICT_DNS` clusters for ExternalName Services), resolved by the
/// data plane when it needs an endpoint.
fn endpoints(xds: &XdsCluster, resources: &Resources) -> Vec<Endpoint> {
    let assignment = match &xds.load_assignment {
        Some(inline) if !inline.endpoints.is_empty() => Some(inline),
        _ => resources.load_assignments.get(endpoint_service_name(xds)),
    };
    let Some(assignment) = assignment else { return Vec::new() };
    let mut by_priority: BTreeMap<u32, Vec<Endpoint>> = BTreeMap::new();
    for locality in &assignment.endpoints {
        for lb_endpoint in &locality.lb_endpoints {
            let usable = matches!(
                HealthStatus::try_from(lb_endpoint.health_status),
                Ok(HealthStatus::Unknown | HealthStatus::Healthy | HealthStatus::Degraded)
            );
            let Some(lb_endpoint::HostIdentifier::Endpoint(endpoint)) = &lb_endpoint.host_identifier else {
                continue;
            };
            let Some(address::Address::SocketAddress(socket)) =
                endpoint.address.as_ref().and_then(|a| a.address.as_ref())
            else {
                continue;
            };
            let Some(socket_address::PortSpecifier::PortValue(port)) = socket.port_specifier else { continue };
            let Ok(port) = u16::try_from(port) else { continue };
            let endpoint = match socket.address.parse::<IpAddr>() {
                Ok(ip) => Endpoint::Address(SocketAddr::new(ip, port)),
                Err(_) if !socket.address.is_empty() => Endpoint::Name { host: socket.address.clone(), port },
                Err(_) => continue,
            };
            if usable {
                by_priority.entry(locality.priority).or_default().push(endpoint);
            }
        }
    }
    by_priority.into_values().next().unwrap_or_default()
}

/// The name of the endpoints resource a cluster takes its endpoints from:
/// `eds_cluster_config.service_name`, or the cluster's own name when that is empty.
pub(crate) fn endpoint_service_name(xds: &XdsCluster) -> &str {
    xds.eds_cluster_config.as_ref().map(|eds| eds.service_name.as_str()).filter(|s| !s.is_empty()).unwrap_or(&xds.name)
}

/// The data plane's TLS settings for an `UpstreamTlsContext`; `None` while a secret it names
/// is missing (Envoy keeps such a cluster warming) or when it cannot be used.
fn tls_settings(context: &UpstreamTlsContext, http2: bool, resources: &Resources) -> Option<TlsSettings> {
    let common = context.common_tls_context.clone().unwrap_or_default();
    let mut alpn: Vec<Vec<u8>> = common.alpn_protocols.iter().map(|p| p.as_bytes().to_vec()).collect();
    if alpn.is_empty() {
        // With no ALPN configured, Envoy's connection pool offers its own protocol: `http/1.1`
        // from the HTTP/1 pool (what Contour's `tls` protocol relies on), `h2` from the HTTP/2 one.
        alpn.push(if http2 { b"h2".to_vec() } else { b"http/1.1".to_vec() });
    }
    Some(TlsSettings {
        sni: Some(context.sni.clone()).filter(|s| !s.is_empty()),
        alpn,
        http2,
        validation: validation(&common, resources)?,
        client_certificate: client_certificate(&common, resources)?,
        versions: versions(&common),
        cipher_suites: common.tls_params.as_ref().map(|p| p.cipher_suites.clone()).unwrap_or_default(),
        client_config: Default::default(),
    })
}

/// `(minimum, maximum)` from `tls_params`. Envoy's client defaults are TLS 1.2 for both; TLS
/// 1.0 and 1.1 are raised to 1.2, the lowest the data plane speaks.
fn versions(common: &CommonTlsContext) -> (TlsVersion, TlsVersion) {
    use tls_parameters::TlsProtocol;
    let convert = |value: i32| match TlsProtocol::try_from(value) {
        Ok(TlsProtocol::TlSv13) => Some(TlsVersion::V1_3),
        Ok(TlsProtocol::TlSv10 | TlsProtocol::TlSv11 | TlsProtocol::TlSv12) => Some(TlsVersion::V1_2),
        _ => None,
    };
    let params = common.tls_params.as_ref();
    let minimum = params.and_then(|p| convert(p.tls_minimum_protocol_version)).unwrap_or(TlsVersion::V1_2);
    let maximum = params.and_then(|p| convert(p.tls_maximum_protocol_version)).unwrap_or(TlsVersion::V1_2);
    (minimum, maximum.max(minimum))
}

/// Peer validation: `Some(None)` when the backend certificate is not checked, `None` while
/// the SDS validation context has not arrived.
fn validation(common: &CommonTlsContext, resources: &Resources) -> Option<Option<PeerValidation>> {
    let sds = |name: &str| match resources.secrets.get(name)?.r#type.as_ref()? {
        secret::Type::ValidationContext(context) => Some(context.clone()),
        _ => None,
    };
    let context = match &common.validation_context_type {
        None => return Some(None),
        Some(common_tls_context::ValidationContextType::ValidationContext(inline)) => inline.clone(),
        Some(common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(config)) => sds(&config.name)?,
        Some(common_tls_context::ValidationContextType::CombinedValidationContext(combined)) => {
            let dynamic = sds(&combined.validation_context_sds_secret_config.as_ref()?.name)?;
            merge(combined.default_validation_context.clone().unwrap_or_default(), dynamic)
        }
        // Certificate provider plugins have no counterpart here: the cluster is unusable.
        Some(_) => return None,
    };
    if context.trust_chain_verification
        == certificate_validation_context::TrustChainVerification::AcceptUntrusted as i32
    {
        return Some(None);
    }
    // Without trust anchors Envoy checks nothing (and refuses SAN matching altogether).
    let Some(ca_pem) = context.trusted_ca.as_ref().and_then(data_source_bytes).filter(|b| !b.is_empty()) else {
        return Some(None);
    };
    // Envoy refuses a cluster whose trusted CA does not load.
    let ca_certificates = crate::x509::envoy_ca_bundle(&ca_pem).ok()?.into_iter().map(CertificateDer::from).collect();
    let mut subject_names: Vec<String> = context
        .match_typed_subject_alt_names
        .iter()
        .filter(|m| m.san_type == subject_alt_name_matcher::SanType::Dns as i32)
        .filter_map(|m| exact(m.matcher.as_ref()?))
        .collect();
    #[allow(deprecated)]
    subject_names.extend(context.match_subject_alt_names.iter().filter_map(exact));
    Some(Some(PeerValidation { ca_certificates, envoy_refuses: None, subject_names, faults: Default::default() }))
}

/// A combined validation context: the dynamic (SDS) one's fields over the default's.
fn merge(
    mut default: CertificateValidationContext,
    dynamic: CertificateValidationContext,
) -> CertificateValidationContext {
    if dynamic.trusted_ca.is_some() {
        default.trusted_ca = dynamic.trusted_ca;
    }
    default.match_typed_subject_alt_names.extend(dynamic.match_typed_subject_alt_names);
    if dynamic.trust_chain_verification != 0 {
        default.trust_chain_verification = dynamic.trust_chain_verification;
    }
    default
}

/// The string an exact matcher accepts; other matchers have no counterpart in the table.
fn exact(matcher: &StringMatcher) -> Option<String> {
    match matcher.match_pattern.as_ref()? {
        string_matcher::MatchPattern::Exact(name) if !name.is_empty() => Some(name.clone()),
        _ => {
            tracing::debug!(?matcher, "subject name matcher not expressible in the route table");
            None
        }
    }
}

/// The client certificate: the first SDS secret named, else the first inline one.
/// `Some(None)` when none is configured, `None` while the secret has not arrived.
fn client_certificate(common: &CommonTlsContext, resources: &Resources) -> Option<Option<Arc<CertifiedChain>>> {
    let certificate = if let Some(config) = common.tls_certificate_sds_secret_configs.first() {
        match resources.secrets.get(&config.name)?.r#type.as_ref()? {
            secret::Type::TlsCertificate(certificate) => certificate.clone(),
            _ => return None,
        }
    } else if let Some(inline) = common.tls_certificates.first() {
        inline.clone()
    } else {
        return Some(None);
    };
    let chain_pem = certificate.certificate_chain.as_ref().and_then(data_source_bytes)?;
    let key_pem = certificate.private_key.as_ref().and_then(data_source_bytes)?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&chain_pem).filter_map(Result::ok).collect();
    let key = PrivateKeyDer::from_pem_slice(&key_pem).ok()?;
    if chain.is_empty() {
        return None;
    }
    Some(Some(Arc::new(CertifiedChain { chain, key })))
}

/// The bytes of a data source: inline, or a file on this machine.
fn data_source_bytes(source: &DataSource) -> Option<Vec<u8>> {
    match source.specifier.as_ref()? {
        data_source::Specifier::InlineBytes(bytes) => Some(bytes.clone()),
        data_source::Specifier::InlineString(text) => Some(text.clone().into_bytes()),
        data_source::Specifier::Filename(path) => std::fs::read(path).ok(),
        data_source::Specifier::EnvironmentVariable(name) => std::env::var(name).ok().map(String::into_bytes),
    }
}

/// Decodes an `Any` holding a `T`; `None` for another type or bad bytes.
pub(crate) fn decode<T: Message + Name + Default>(any: &Any) -> Option<T> {
    if any.type_url != T::type_url() {
        return None;
    }
    T::decode(any.value.as_slice()).ok()
}

#[cfg(test)]
mod tests;
