//! The xDS client against the real Contour: a loopback cluster with `controller: contour`, a
//! TLS Service with a hand-made EndpointSlice, an HTTPProxy validating the backend with a CA,
//! and the Envoy client certificate configured. What Contour serves must translate into a
//! virtual host whose cluster speaks TLS with all of that.

use std::sync::Arc;
use std::time::Duration;

use loopback::config::{ControllerKind, SecretName, TlsVersion};
use loopback::dataplane::RouteTable;
use loopback::dataplane::table::{Endpoint, HostRewrite, RouteAction, Transport};
use loopback::xds::translate::Resources;
use loopback::{Loopback, LoopbackConfig};
use serde_json::{Value, json};
use tokio::sync::watch;

mod support;

use support::{client_of, create};

const HOST: &str = "secure.example.com";
const SUBJECT_NAME: &str = "backend.internal";
const ENDPOINT: &str = "127.0.93.7";
/// Contour may take a while to build its first DAG after objects appear.
const LIMIT: Duration = Duration::from_secs(60);

/// Prints what the `Any`s of the dump hide: the listeners' connection managers and the
/// clusters' TLS contexts.
fn dump_embedded(resources: &Resources) {
    use envoy_types::pb::envoy::config::core::v3::transport_socket;
    use envoy_types::pb::envoy::config::listener::v3::filter;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
    use prost::Message;
    for (name, listener) in &resources.listeners {
        for f in listener.filter_chains.iter().flat_map(|c| &c.filters) {
            if let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type
                && let Ok(manager) = HttpConnectionManager::decode(any.value.as_slice())
            {
                println!("listener {name}: route specifier {:#?}", manager.route_specifier);
            }
        }
    }
    for (name, cluster) in &resources.clusters {
        if let Some(transport_socket::ConfigType::TypedConfig(any)) =
            cluster.transport_socket.as_ref().and_then(|t| t.config_type.as_ref())
            && let Ok(context) = UpstreamTlsContext::decode(any.value.as_slice())
        {
            println!("cluster {name}: {context:#?}");
        }
    }
}

fn tls_secret(name: &str, cert: &str, key: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "default"},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": cert, "tls.key": key},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contour_xds_translates_to_a_tls_virtual_host() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    if !loopback::contour::built_for_tests() {
        return;
    }
    let mut config = LoopbackConfig { controller: ControllerKind::Contour, ..Default::default() };
    config.tls.envoy_client_certificate = Some(SecretName { name: "envoy-client".into(), namespace: "default".into() });
    let loopback = match Loopback::start(config).await {
        Ok(loopback) => loopback,
        Err(e) => panic!("loopback with Contour does not start: {e}"),
    };
    let xds_address = loopback.contour_xds_address().expect("Contour's xDS address");
    let kube = client_of(&loopback).await;

    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "xds test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client_cert =
        rcgen::CertificateParams::new(vec!["envoy".to_string()]).unwrap().signed_by(&client_key, &issuer).unwrap();

    create(
        &kube,
        "",
        "v1",
        "Secret",
        "secrets",
        tls_secret("envoy-client", &client_cert.pem(), &client_key.serialize_pem()),
    )
    .await;
    create(
        &kube,
        "",
        "v1",
        "Secret",
        "secrets",
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "backend-ca", "namespace": "default"},
            "type": "Opaque",
            "stringData": {"ca.crt": ca.pem()},
        }),
    )
    .await;
    create(
        &kube,
        "",
        "v1",
        "Service",
        "services",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {
                "name": "backend", "namespace": "default",
                "annotations": {"projectcontour.io/upstream-protocol.tls": "8443"},
            },
            "spec": {
                "selector": {"app": "backend"},
                "ports": [{"name": "https", "port": 8443, "targetPort": 8443, "protocol": "TCP"}],
            },
        }),
    )
    .await;
    create(
        &kube,
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "name": "backend-abc12", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "backend"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ENDPOINT], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": 8443, "protocol": "TCP"}],
        }),
    )
    .await;
    create(
        &kube,
        "projectcontour.io",
        "v1",
        "HTTPProxy",
        "httpproxies",
        json!({
            "apiVersion": "projectcontour.io/v1", "kind": "HTTPProxy",
            "metadata": {"name": "secure", "namespace": "default"},
            "spec": {
                "virtualhost": {"fqdn": HOST},
                "routes": [{
                    "conditions": [{"prefix": "/"}],
                    "requestHeadersPolicy": {"set": [{"name": "Host", "value": SUBJECT_NAME}]},
                    "services": [{
                        "name": "backend", "port": 8443,
                        "validation": {"caSecret": "backend-ca", "subjectName": SUBJECT_NAME},
                    }],
                }],
            },
        }),
    )
    .await;

    // The raw resources, to print what Contour emits when the test runs with --nocapture.
    let (raw_tx, mut raw_rx) = watch::channel(Resources::default());
    let (routes_tx, mut routes_rx) = watch::channel(Arc::new(RouteTable::default()));
    let (stop, shutdown) = watch::channel(false);
    let raw_task = tokio::spawn(loopback::xds::client::subscribe(
        xds_address,
        move |resources| {
            raw_tx.send_replace(resources.clone());
        },
        shutdown.clone(),
    ));
    let run_task = tokio::spawn(loopback::xds::run(xds_address, Vec::new(), routes_tx, shutdown));

    let ready = |table: &Arc<RouteTable>| {
        table.route(HOST, "/").is_some_and(|route| match &route.action {
            RouteAction::Forward(clusters) => clusters.iter().any(|c| {
                !c.endpoints.is_empty()
                    && matches!(&c.transport, Transport::Tls(t) if t.validation.is_some() && t.client_certificate.is_some())
            }),
            _ => false,
        })
    };
    let waited = tokio::time::timeout(LIMIT, routes_rx.wait_for(ready)).await.map(|r| r.is_ok());
    let resources = raw_rx.borrow_and_update().clone();
    if std::env::var_os("XDS_DUMP").is_some() {
        // Secrets carry the client certificate's private key: only their names are shown.
        let shown = Resources { secrets: Default::default(), ..resources.clone() };
        println!("{shown:#?}\nsecrets: {:?}", resources.secrets.keys().collect::<Vec<_>>());
        dump_embedded(&resources);
    }
    if !waited.unwrap_or(false) {
        let log = loopback.contour_log().map(loopback::supervise::log_tail).unwrap_or_default();
        panic!(
            "no TLS virtual host for {HOST} within {LIMIT:?}; table: {:#?}\nlisteners {:?}, routes {:?}, clusters {:?}, \
             endpoints {:?}, secrets {:?}\nContour log:\n{log}",
            routes_rx.borrow(),
            resources.listeners.keys().collect::<Vec<_>>(),
            resources.route_configurations.keys().collect::<Vec<_>>(),
            resources.clusters.keys().collect::<Vec<_>>(),
            resources.load_assignments.keys().collect::<Vec<_>>(),
            resources.secrets.keys().collect::<Vec<_>>(),
        );
    }

    let table = routes_rx.borrow().clone();
    let route = table.route(HOST, "/").unwrap();
    let RouteAction::Forward(clusters) = &route.action else { unreachable!() };
    let cluster = &clusters[0];
    assert!(cluster.name.starts_with("default/backend/8443/"), "{}", cluster.name);
    assert_eq!(cluster.endpoints, [Endpoint::Address(format!("{ENDPOINT}:8443").parse().unwrap())]);
    let Transport::Tls(tls) = &cluster.transport else { unreachable!() };
    assert_eq!(route.host_rewrite, Some(HostRewrite::Literal(SUBJECT_NAME.into())));
    assert_eq!(tls.sni.as_deref(), Some(SUBJECT_NAME), "Contour takes the SNI from the Host rewrite");
    assert_eq!(tls.alpn, [b"http/1.1".to_vec()]);
    assert!(!tls.http2);
    assert_eq!(tls.versions, (TlsVersion::V1_2, TlsVersion::V1_3));
    let validation = tls.validation.as_ref().unwrap();
    assert_eq!(validation.subject_names, [SUBJECT_NAME]);
    assert_eq!(validation.ca_certificates, [ca.der().clone()]);
    let client_certificate = tls.client_certificate.as_ref().unwrap();
    assert_eq!(client_certificate.chain, [client_cert.der().clone()]);

    stop.send_replace(true);
    for task in [raw_task, run_task] {
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("the xDS client stops").unwrap();
    }
    loopback.shutdown().await;
}
