//! Translation of hand-built resources shaped like Contour's output.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster as XdsCluster, cluster};
use envoy_types::pb::envoy::config::core::v3::DataSource;
use envoy_types::pb::envoy::config::core::v3::{
    Address, HeaderValue, HeaderValueOption, SocketAddress, TransportSocket, address, data_source, socket_address,
    transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, Route as XdsRoute, RouteAction as XdsRouteAction, RouteConfiguration,
    RouteMatch, VirtualHost as XdsVirtualHost, WeightedCluster, route, route_action, route_match, weighted_cluster,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, Rds, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SdsSecretConfig, Secret, SubjectAltNameMatcher, TlsCertificate,
    TlsParameters, UpstreamTlsContext, common_tls_context, secret, subject_alt_name_matcher, tls_parameters,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{HttpProtocolOptions, http_protocol_options};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::UInt32Value;
use envoy_types::util::pack_any;

use super::*;
use crate::dataplane::table::Endpoint as TableEndpoint;

const CLUSTER: &str = "default/backend/8443/da39a3ee5e";
const SERVICE: &str = "default/backend/https";
const SECRET: &str = "projectcontour/envoy-client/0123456789";

fn listener() -> Listener {
    let manager = HttpConnectionManager {
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            route_config_name: HTTP_LISTENER.into(),
            config_source: None,
        })),
        ..Default::default()
    };
    Listener {
        name: HTTP_LISTENER.into(),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(manager))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn prefix_route(prefix: &str, action: route::Action) -> XdsRoute {
    XdsRoute {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix(prefix.into())),
            ..Default::default()
        }),
        action: Some(action),
        ..Default::default()
    }
}

fn direct(status: u32) -> route::Action {
    route::Action::DirectResponse(DirectResponseAction { status, ..Default::default() })
}

fn to_cluster(name: &str) -> route::Action {
    route::Action::Route(XdsRouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(name.into())),
        ..Default::default()
    })
}

fn route_configuration(routes: Vec<XdsRoute>) -> RouteConfiguration {
    RouteConfiguration {
        name: HTTP_LISTENER.into(),
        virtual_hosts: vec![XdsVirtualHost {
            name: "app.example.com".into(),
            domains: vec!["App.Example.com".into(), "app.example.com:*".into()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn load_assignment(name: &str, addresses: &[(&str, u32, i32)]) -> ClusterLoadAssignment {
    let lb_endpoints = addresses
        .iter()
        .map(|(ip, port, health)| LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: (*ip).into(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(*port)),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            health_status: *health,
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![LocalityLbEndpoints { lb_endpoints, ..Default::default() }],
        ..Default::default()
    }
}

fn inline(bytes: impl Into<Vec<u8>>) -> Option<DataSource> {
    Some(DataSource { specifier: Some(data_source::Specifier::InlineBytes(bytes.into())), ..Default::default() })
}

fn dns_san(name: &str) -> SubjectAltNameMatcher {
    SubjectAltNameMatcher {
        san_type: subject_alt_name_matcher::SanType::Dns as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(name.into())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An EDS cluster like Contour's for a `tls` or `h2` Service port.
fn tls_cluster(context: UpstreamTlsContext, http2: bool) -> XdsCluster {
    let mut options = HashMap::new();
    if http2 {
        let protocol = HttpProtocolOptions {
            upstream_protocol_options: Some(http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(
                        http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                            Default::default(),
                        ),
                    ),
                },
            )),
            ..Default::default()
        };
        options.insert(HTTP_PROTOCOL_OPTIONS.to_string(), pack_any(protocol));
    }
    XdsCluster {
        name: CLUSTER.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(cluster::EdsClusterConfig { service_name: SERVICE.into(), eds_config: None }),
        transport_socket: Some(TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(context))),
        }),
        typed_extension_protocol_options: options,
        ..Default::default()
    }
}

struct Pki {
    ca_pem: String,
    client_chain_pem: String,
    client_key_pem: String,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client =
        rcgen::CertificateParams::new(vec!["envoy".to_string()]).unwrap().signed_by(&client_key, &issuer).unwrap();
    Pki { ca_pem: ca.pem(), client_chain_pem: client.pem(), client_key_pem: client_key.serialize_pem() }
}

/// Contour's shape for a `tls` upstream with validation and the Envoy client certificate.
fn contour_tls_resources(pki: &Pki, http2: bool) -> Resources {
    let context = UpstreamTlsContext {
        sni: "backend.internal".into(),
        common_tls_context: Some(CommonTlsContext {
            tls_params: Some(TlsParameters {
                tls_minimum_protocol_version: tls_parameters::TlsProtocol::TlSv12 as i32,
                tls_maximum_protocol_version: tls_parameters::TlsProtocol::TlSv13 as i32,
                ..Default::default()
            }),
            alpn_protocols: if http2 { vec!["h2".into()] } else { vec![] },
            tls_certificate_sds_secret_configs: vec![SdsSecretConfig { name: SECRET.into(), sds_config: None }],
            validation_context_type: Some(common_tls_context::ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: inline(pki.ca_pem.clone()),
                    match_typed_subject_alt_names: vec![dns_san("backend.internal")],
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    };
    let secret = Secret {
        name: SECRET.into(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(pki.client_chain_pem.clone()),
            private_key: inline(pki.client_key_pem.clone()),
            ..Default::default()
        })),
    };
    let mut resources = Resources::default();
    resources.listeners.insert(HTTP_LISTENER.into(), listener());
    resources
        .route_configurations
        .insert(HTTP_LISTENER.into(), route_configuration(vec![prefix_route("/", to_cluster(CLUSTER))]));
    resources.clusters.insert(CLUSTER.into(), tls_cluster(context, http2));
    resources.load_assignments.insert(SERVICE.into(), load_assignment(SERVICE, &[("127.0.1.5", 8443, 0)]));
    resources.secrets.insert(SECRET.into(), secret);
    resources
}

fn only_cluster(table: &RouteTable, host: &str) -> Arc<Cluster> {
    let route = table.route(host, "/").expect("a route for /");
    match &route.action {
        RouteAction::Forward(clusters) => clusters[0].clone(),
        other => panic!("expected a forward, got {other:?}"),
    }
}

fn tls(cluster: &Cluster) -> &TlsSettings {
    match &cluster.transport {
        Transport::Tls(settings) => settings,
        other => panic!("expected TLS, got {other:?}"),
    }
}

#[test]
fn contour_tls_upstream_with_validation_and_client_certificate() {
    let pki = pki();
    let table = translate(&contour_tls_resources(&pki, false));
    assert_eq!(table.virtual_hosts.keys().collect::<Vec<_>>(), ["app.example.com"]);
    let cluster = only_cluster(&table, "app.example.com");
    assert_eq!(cluster.name, CLUSTER);
    assert_eq!(cluster.endpoints, [TableEndpoint::Address("127.0.1.5:8443".parse().unwrap())]);
    let settings = tls(&cluster);
    assert_eq!(settings.sni.as_deref(), Some("backend.internal"));
    assert_eq!(settings.alpn, [b"http/1.1".to_vec()], "the HTTP/1 pool's fallback");
    assert!(!settings.http2);
    assert_eq!(settings.versions, (TlsVersion::V1_2, TlsVersion::V1_3));
    let validation = settings.validation.as_ref().expect("validation");
    assert_eq!(validation.ca_certificates.len(), 1);
    assert_eq!(validation.subject_names, ["backend.internal"]);
    let client = settings.client_certificate.as_ref().expect("client certificate");
    assert_eq!(client.chain.len(), 1);
}

#[test]
fn h2_upstream_keeps_its_alpn_and_speaks_http2() {
    let table = translate(&contour_tls_resources(&pki(), true));
    let cluster = only_cluster(&table, "app.example.com");
    let settings = tls(&cluster);
    assert_eq!(settings.alpn, [b"h2".to_vec()]);
    assert!(settings.http2);
}

#[test]
fn missing_client_secret_keeps_the_cluster_warming() {
    let mut resources = contour_tls_resources(&pki(), false);
    resources.secrets.clear();
    let table = translate(&resources);
    let route = table.route("app.example.com", "/").unwrap();
    assert!(matches!(route.action, RouteAction::DirectResponse { status: 503 }));
}

#[test]
fn no_tls_params_means_envoy_client_defaults_and_no_validation_without_ca() {
    let context = UpstreamTlsContext { common_tls_context: Some(CommonTlsContext::default()), ..Default::default() };
    let mut resources = contour_tls_resources(&pki(), false);
    resources.clusters.insert(CLUSTER.into(), tls_cluster(context, false));
    let table = translate(&resources);
    let cluster = only_cluster(&table, "app.example.com");
    let settings = tls(&cluster);
    assert_eq!(settings.versions, (TlsVersion::V1_2, TlsVersion::V1_2));
    assert!(settings.sni.is_none());
    assert!(settings.validation.is_none());
    assert!(settings.client_certificate.is_none());
}

#[test]
fn first_matching_route_wins_and_unexpressible_routes_are_left_out() {
    let header_route = XdsRoute {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
            headers: vec![HeaderMatcher { name: "x-canary".into(), ..Default::default() }],
            ..Default::default()
        }),
        action: Some(direct(418)),
        ..Default::default()
    };
    let routes = vec![
        header_route,
        prefix_route("/api", direct(201)),
        prefix_route("/", direct(202)),
        // Shadowed by `/` above: Envoy never reaches it.
        prefix_route("/late", direct(203)),
        // Same prefix again: only the first counts.
        prefix_route("/api", direct(204)),
    ];
    let mut resources = Resources::default();
    resources.listeners.insert(HTTP_LISTENER.into(), listener());
    resources.route_configurations.insert(HTTP_LISTENER.into(), route_configuration(routes));
    let table = translate(&resources);
    let status = |path| match table.route("app.example.com", path).map(|r| &r.action) {
        Some(RouteAction::DirectResponse { status }) => *status,
        _ => 0,
    };
    assert_eq!(status("/api/v1"), 201);
    assert_eq!(status("/late"), 202);
    assert_eq!(status("/"), 202);
}

#[test]
fn missing_cluster_answers_503_and_host_rewrites_are_kept() {
    let mut resources = contour_tls_resources(&pki(), false);
    let rewrite = route::Action::Route(XdsRouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(CLUSTER.into())),
        host_rewrite_specifier: Some(route_action::HostRewriteSpecifier::HostRewriteLiteral("backend.internal".into())),
        ..Default::default()
    });
    let mut by_header = prefix_route("/header", to_cluster(CLUSTER));
    by_header.request_headers_to_add = vec![HeaderValueOption {
        header: Some(HeaderValue { key: "Host".into(), value: "other.internal".into(), ..Default::default() }),
        ..Default::default()
    }];
    let from_request = route::Action::Route(XdsRouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(CLUSTER.into())),
        host_rewrite_specifier: Some(route_action::HostRewriteSpecifier::HostRewriteHeader("X-Upstream-Host".into())),
        ..Default::default()
    });
    let routes = vec![
        by_header,
        prefix_route("/gone", to_cluster("default/missing/80/abc")),
        prefix_route("/dynamic", from_request),
        prefix_route("/", rewrite),
    ];
    resources.route_configurations.insert(HTTP_LISTENER.into(), route_configuration(routes));
    let table = translate(&resources);
    assert!(matches!(
        table.route("app.example.com", "/gone").unwrap().action,
        RouteAction::DirectResponse { status: 503 }
    ));
    assert_eq!(
        table.route("app.example.com", "/").unwrap().host_rewrite.as_ref().and_then(HostRewrite::literal),
        Some("backend.internal")
    );
    assert_eq!(
        table.route("app.example.com", "/header").unwrap().host_rewrite.as_ref().and_then(HostRewrite::literal),
        Some("other.internal")
    );
    assert_eq!(
        table.route("app.example.com", "/dynamic").unwrap().host_rewrite,
        Some(HostRewrite::FromHeader("X-Upstream-Host".into()))
    );
}

#[test]
fn weighted_clusters_rotate_by_weight_and_unhealthy_endpoints_are_skipped() {
    let mut resources = contour_tls_resources(&pki(), false);
    let plain = XdsCluster { name: "default/plain/80/x".into(), ..Default::default() };
    resources.clusters.insert(plain.name.clone(), plain);
    resources.load_assignments.insert(
        "default/plain/80/x".into(),
        load_assignment("default/plain/80/x", &[("127.0.2.1", 80, 1), ("127.0.2.2", 80, 2)]),
    );
    let weight = |name: &str, w: u32, host: Option<&str>| weighted_cluster::ClusterWeight {
        name: name.into(),
        weight: Some(UInt32Value { value: w }),
        host_rewrite_specifier: host
            .map(|h| weighted_cluster::cluster_weight::HostRewriteSpecifier::HostRewriteLiteral(h.into())),
        ..Default::default()
    };
    let action = route::Action::Route(XdsRouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: vec![weight(CLUSTER, 20, None), weight("default/plain/80/x", 40, Some("plain.internal"))],
            ..Default::default()
        })),
        ..Default::default()
    });
    resources.route_configurations.insert(HTTP_LISTENER.into(), route_configuration(vec![prefix_route("/", action)]));
    let table = translate(&resources);
    let RouteAction::Forward(clusters) = &table.route("app.example.com", "/").unwrap().action else {
        panic!("expected a forward");
    };
    let names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, [CLUSTER, "default/plain/80/x", "default/plain/80/x"]);
    assert_eq!(clusters[1].host_rewrite.as_deref(), Some("plain.internal"));
    assert!(Arc::ptr_eq(&clusters[1], &clusters[2]));
    assert_eq!(clusters[1].endpoints, [TableEndpoint::Address("127.0.2.1:80".parse().unwrap())]);
    assert!(matches!(clusters[1].transport, Transport::Plaintext { http2: false }));
}

#[test]
fn a_dns_cluster_keeps_its_name_for_the_data_plane_to_resolve() {
    // Contour's cluster for an ExternalName Service: STRICT_DNS, the name inline.
    let mut resources = contour_tls_resources(&pki(), false);
    let mut cluster = resources.clusters[CLUSTER].clone();
    cluster.eds_cluster_config = None;
    cluster.load_assignment = Some(load_assignment(CLUSTER, &[("echo.ns.svc.cluster.local", 8443, 0)]));
    resources.clusters.insert(CLUSTER.into(), cluster);
    resources.load_assignments.clear();
    let table = translate(&resources);
    let cluster = only_cluster(&table, "app.example.com");
    let expected = TableEndpoint::Name { host: "echo.ns.svc.cluster.local".into(), port: 8443 };
    assert_eq!(cluster.endpoints, [expected]);
    let settings = table.effective_settings();
    let forwarded = &settings["app.example.com"][0]["action"]["forward"][0];
    assert_eq!(forwarded["dnsNames"], serde_json::json!(["echo.ns.svc.cluster.local:8443"]), "{settings}");
}

#[test]
fn wildcard_domains_and_missing_route_configuration() {
    let mut resources = Resources::default();
    resources.listeners.insert(HTTP_LISTENER.into(), listener());
    assert!(translate(&resources).virtual_hosts.is_empty());
    let mut configuration = route_configuration(vec![]);
    configuration.virtual_hosts[0].domains = vec!["*".into(), "*.example.com".into()];
    resources.route_configurations.insert(HTTP_LISTENER.into(), configuration);
    assert!(translate(&resources).virtual_hosts.is_empty());
}

#[test]
fn in_gateway_mode_the_listener_of_the_gateways_http_port_serves() {
    let pki = pki();
    let mut resources = contour_tls_resources(&pki, false);
    let usual = resources.listeners.remove(HTTP_LISTENER).unwrap();
    // Contour names a Gateway listener's Envoy listener by protocol and Gateway port.
    resources.listeners.insert("http-8080".into(), Listener { name: "http-8080".into(), ..Default::default() });
    resources.listeners.insert("http-80".into(), Listener { name: "http-80".into(), ..usual });
    resources.listeners.insert("https-443".into(), Listener { name: "https-443".into(), ..Default::default() });
    let table = translate(&resources);
    assert!(matches!(only_cluster(&table, "app.example.com").transport, Transport::Tls(_)));
}
