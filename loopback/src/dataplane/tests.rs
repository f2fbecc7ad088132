//! The data plane against in-process backends that report what they saw of each connection
//! (SNI, ALPN, TLS version, HTTP version, client certificate): validation, client
//! certificates, SNI, versions, HTTP/2 and failure responses.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::table::{
    CertifiedChain, Cluster, Endpoint, PathPrefix, PeerValidation, Route, RouteAction, RouteTable, TlsSettings,
    Transport, UpstreamFailureResponse, VirtualHost,
};
use crate::config::TlsVersion;

const HOST: &str = "app.test";

/// A certificate with its key, and the issuer that signed it (for chains).
struct Issued {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    issuer: Option<rcgen::Issuer<'static, rcgen::KeyPair>>,
}

impl Issued {
    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }
}

fn ca(name: &str) -> Issued {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    let issuer_key = rcgen::KeyPair::from_pem(&key.serialize_pem()).unwrap();
    Issued { cert, key, issuer: Some(rcgen::Issuer::new(params, issuer_key)) }
}

fn leaf(issuer: &Issued, sans: &[&str], common_name: &str, is_ca: bool) -> Issued {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
    if is_ca {
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    let cert = params.signed_by(&key, issuer.issuer.as_ref().unwrap()).unwrap();
    let issuer_key = rcgen::KeyPair::from_pem(&key.serialize_pem()).unwrap();
    Issued { cert, key, issuer: is_ca.then(|| rcgen::Issuer::new(params, issuer_key)) }
}

fn key_der(issued: &Issued) -> PrivateKeyDer<'static> {
    PrivateKeyDer::try_from(issued.key.serialize_der()).unwrap()
}

/// How a test backend serves.
struct BackendOptions {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// Ask for a client certificate from this CA; required or optional.
    client_ca: Option<(CertificateDer<'static>, bool)>,
    max_version: TlsVersion,
}

/// What the backend saw of each request.
type Seen = Arc<Mutex<Vec<Value>>>;

async fn tls_backend(options: BackendOptions) -> (SocketAddr, Seen) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match options.max_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS12, &rustls::version::TLS13],
    };
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(versions).unwrap();
    let builder = match &options.client_ca {
        None => builder.with_no_client_auth(),
        Some((ca, required)) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.clone()).unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
            let verifier = if *required { verifier } else { verifier.allow_unauthenticated() };
            builder.with_client_cert_verifier(verifier.build().unwrap())
        }
    };
    let mut config = builder.with_single_cert(options.chain, options.key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        for number in 1.. {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            let record = record.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let (_, connection) = tls.get_ref();
                let facts = json!({
                    "connection": number,
                    "tls": true,
                    "sni": connection.server_name(),
                    "alpn": connection.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()),
                    "version": connection.protocol_version().map(|v| format!("{v:?}")),
                    "clientCertificate": connection.peer_certificates().is_some_and(|c| !c.is_empty()),
                });
                serve_http(TokioIo::new(tls), facts, record).await;
            });
        }
    });
    (address, seen)
}

async fn plain_backend() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            tokio::spawn(serve_http(TokioIo::new(tcp), json!({"tls": false}), record.clone()));
        }
    });
    (address, seen)
}

async fn serve_http<I>(io: I, facts: Value, record: Seen)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let mut facts = facts.clone();
        facts["httpVersion"] = json!(format!("{:?}", request.version()));
        facts["host"] = json!(request.headers().get("host").and_then(|h| h.to_str().ok()).or(request.uri().host()));
        record.lock().unwrap().push(facts.clone());
        async move { Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(facts.to_string())))) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let _ = builder.serve_connection(io, service).await;
}

/// A table with one host routed to one cluster.
fn one_route(endpoint: SocketAddr, transport: Transport) -> RouteTable {
    let cluster = Cluster {
        name: "test".into(),
        endpoints: vec![Endpoint::Address(endpoint)],
        transport,
        host_rewrite: None,
        pool: Default::default(),
    };
    let route = Route {
        path: PathPrefix::String("/".into()),
        action: RouteAction::Forward(vec![Arc::new(cluster)]),
        host_rewrite: None,
        mirror: None,
        turn: Default::default(),
    };
    let mut table = RouteTable::default();
    table.virtual_hosts.insert(HOST.into(), VirtualHost { routes: vec![route] });
    table
}

/// A proxy programmed with one host routed to one cluster.
async fn proxy(endpoint: SocketAddr, transport: Transport, upstream_failure: UpstreamFailureResponse) -> SocketAddr {
    let table = RouteTable { upstream_failure, ..one_route(endpoint, transport) };
    let (routes_tx, routes) = watch::channel(Arc::new(table));
    serving(routes_tx, routes).await
}

/// A proxy serving what `routes` holds, for as long as the test runs.
async fn serving(_routes_tx: watch::Sender<Arc<RouteTable>>, routes: watch::Receiver<Arc<RouteTable>>) -> SocketAddr {
    let (shutdown_tx, shutdown) = watch::channel(false);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        // Keep both senders alive as long as the proxy runs.
        let _keep = (_routes_tx, shutdown_tx);
        super::serve(listener, routes, Default::default(), Default::default(), shutdown).await;
    });
    address
}

/// `GET /` with a Host header; `(status, body)`.
async fn get(proxy: SocketAddr, host: &str) -> (u16, String) {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(connection);
    let request = Request::builder().uri("/").header("host", host).body(Empty::<Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn tls_transport(validation: Option<PeerValidation>) -> TlsSettings {
    TlsSettings {
        cipher_suites: Vec::new(),
        sni: None,
        alpn: vec![b"http/1.1".to_vec()],
        http2: false,
        validation,
        client_certificate: None,
        versions: (TlsVersion::V1_2, TlsVersion::V1_3),
        client_config: Default::default(),
    }
}

fn validation(ca: &Issued, names: &[&str]) -> PeerValidation {
    PeerValidation {
        ca_certificates: vec![ca.der()],
        envoy_refuses: None,
        subject_names: names.iter().map(|n| n.to_string()).collect(),
        faults: Default::default(),
    }
}

fn backend_options(server: &Issued) -> BackendOptions {
    BackendOptions { chain: vec![server.der()], key: key_der(server), client_ca: None, max_version: TlsVersion::V1_3 }
}

/// Runs one request through a fresh proxy to a fresh TLS backend.
async fn through(options: BackendOptions, settings: TlsSettings) -> ((u16, String), Vec<Value>) {
    let (backend, seen) = tls_backend(options).await;
    let proxy = proxy(backend, Transport::Tls(settings), UpstreamFailureResponse::Envoy).await;
    let answer = get(proxy, HOST).await;
    let seen = seen.lock().unwrap().clone();
    (answer, seen)
}

fn assert_upstream_failure(answer: &(u16, String), seen: &[Value], reason: &str) {
    assert_eq!(answer.0, 503, "{answer:?}");
    assert!(answer.1.starts_with(super::UPSTREAM_FAILURE_PREFIX), "{answer:?}");
    assert!(answer.1.contains(reason), "{answer:?}");
    assert!(seen.is_empty(), "the backend must not see the request: {seen:?}");
}

#[tokio::test]
async fn v1_without_validation_any_certificate_is_accepted() {
    let stranger = ca("stranger");
    let server = leaf(&stranger, &["whatever.test"], "whatever", false);
    let ((status, _), seen) = through(backend_options(&server), tls_transport(None)).await;
    assert_eq!(status, 200);
    assert_eq!(seen[0]["tls"], true);
    assert_eq!(seen[0]["sni"], Value::Null, "N1: no SNI by default");
    assert_eq!(seen[0]["alpn"], "http/1.1", "P5: tls offers http/1.1, and the backend picks it");
    assert_eq!(seen[0]["httpVersion"], "HTTP/1.1");
}

#[tokio::test]
async fn v3_v6_a_certificate_from_another_ca_fails_with_envoys_503() {
    let (trusted, other) = (ca("trusted"), ca("other"));
    let server = leaf(&other, &["echo.test"], "echo", false);
    let (answer, seen) =
        through(backend_options(&server), tls_transport(Some(validation(&trusted, &["echo.test"])))).await;
    assert_upstream_failure(&answer, &seen, "CERTIFICATE_VERIFY_FAILED");
}

#[tokio::test]
async fn v3_an_intermediate_served_by_the_backend_chains_to_the_root() {
    let root = ca("root");
    let intermediate = leaf(&root, &[], "intermediate", true);
    let server = leaf(&intermediate, &["echo.test"], "echo", false);
    let options = BackendOptions { chain: vec![server.der(), intermediate.der()], ..backend_options(&server) };
    let ((status, body), _) = through(options, tls_transport(Some(validation(&root, &["echo.test"])))).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn v4_names_match_dns_sans_only() {
    let authority = ca("ca");
    let server = leaf(&authority, &["a.test"], "cn.test", false);
    let (answer, seen) =
        through(backend_options(&server), tls_transport(Some(validation(&authority, &["b.test"])))).await;
    assert_upstream_failure(&answer, &seen, "CERTIFICATE_VERIFY_FAILED");
    let (answer, _) =
        through(backend_options(&server), tls_transport(Some(validation(&authority, &["b.test", "a.test"])))).await;
    assert_eq!(answer.0, 200, "any of subjectNames");
    let (answer, seen) =
        through(backend_options(&server), tls_transport(Some(validation(&authority, &["cn.test"])))).await;
    assert_upstream_failure(&answer, &seen, "CERTIFICATE_VERIFY_FAILED");

    let mut cn_fault = validation(&authority, &["cn.test"]);
    cn_fault.faults.accept_common_name = true;
    let (answer, _) = through(backend_options(&server), tls_transport(Some(cn_fault))).await;
    assert_eq!(answer.0, 200, "the accept-name-from-cn fault takes the CN");
}

#[tokio::test]
async fn v3_expired_certificates_and_dropped_intermediates_fail_unless_faulted() {
    let authority = ca("ca");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["echo.test".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = params.signed_by(&key, authority.issuer.as_ref().unwrap()).unwrap();
    let expired = Issued { cert, key, issuer: None };
    let (answer, seen) =
        through(backend_options(&expired), tls_transport(Some(validation(&authority, &["echo.test"])))).await;
    assert_upstream_failure(&answer, &seen, "CERTIFICATE_VERIFY_FAILED");
    let mut lenient = validation(&authority, &["echo.test"]);
    lenient.faults.ignore_expiry = true;
    assert_eq!(through(backend_options(&expired), tls_transport(Some(lenient))).await.0.0, 200);

    let intermediate = leaf(&authority, &[], "intermediate", true);
    let server = leaf(&intermediate, &["echo.test"], "echo", false);
    let chained = || BackendOptions { chain: vec![server.der(), intermediate.der()], ..backend_options(&server) };
    let mut no_intermediates = validation(&authority, &["echo.test"]);
    no_intermediates.faults.ignore_intermediates = true;
    let (answer, seen) = through(chained(), tls_transport(Some(no_intermediates))).await;
    assert_upstream_failure(&answer, &seen, "CERTIFICATE_VERIFY_FAILED");
}

fn client_certificate(issuer: &Issued) -> Arc<CertifiedChain> {
    let client = leaf(issuer, &["envoy.test"], "envoy", false);
    Arc::new(CertifiedChain { chain: vec![client.der()], key: key_der(&client) })
}

#[tokio::test]
async fn c3_c5_the_client_certificate_goes_only_to_backends_that_ask() {
    let authority = ca("ca");
    let server = leaf(&authority, &["echo.test"], "echo", false);
    let with_cert = TlsSettings { client_certificate: Some(client_certificate(&authority)), ..tls_transport(None) };

    let (answer, seen) = through(backend_options(&server), with_cert.clone()).await;
    assert_eq!((answer.0, &seen[0]["clientCertificate"]), (200, &json!(false)), "not asked, not sent");

    let asking = BackendOptions { client_ca: Some((authority.der(), true)), ..backend_options(&server) };
    let (answer, seen) = through(asking, with_cert).await;
    assert_eq!((answer.0, &seen[0]["clientCertificate"]), (200, &json!(true)), "asked, sent");

    let requiring = BackendOptions { client_ca: Some((authority.der(), true)), ..backend_options(&server) };
    let (answer, seen) = through(requiring, tls_transport(None)).await;
    assert_eq!(answer.0, 503, "C5: required but none configured");
    assert!(answer.1.starts_with(super::UPSTREAM_FAILURE_PREFIX) && seen.is_empty(), "{answer:?}");
}

#[tokio::test]
async fn n1_n2_sni_is_sent_when_set_and_versions_are_limited() {
    let authority = ca("ca");
    let server = leaf(&authority, &["echo.test"], "echo", false);
    let with_sni = TlsSettings { sni: Some("sni.test".into()), ..tls_transport(None) };
    let (_, seen) = through(backend_options(&server), with_sni).await;
    assert_eq!(seen[0]["sni"], "sni.test");

    let tls12_backend = BackendOptions { max_version: TlsVersion::V1_2, ..backend_options(&server) };
    let only_13 = TlsSettings { versions: (TlsVersion::V1_3, TlsVersion::V1_3), ..tls_transport(None) };
    let (answer, seen) = through(tls12_backend, only_13).await;
    assert_eq!(answer.0, 503);
    assert!(seen.is_empty());
    let tls12_backend = BackendOptions { max_version: TlsVersion::V1_2, ..backend_options(&server) };
    let (_, seen) = through(tls12_backend, tls_transport(None)).await;
    assert_eq!(seen[0]["version"], "TLSv1_2");
}

#[tokio::test]
async fn p5_h2_speaks_http2_with_alpn_and_h2c_speaks_it_in_plaintext() {
    let authority = ca("ca");
    let server = leaf(&authority, &["echo.test"], "echo", false);
    let h2 = TlsSettings { alpn: vec![b"h2".to_vec()], http2: true, ..tls_transport(None) };
    let ((status, _), seen) = through(backend_options(&server), h2).await;
    assert_eq!(status, 200);
    assert_eq!((&seen[0]["alpn"], &seen[0]["httpVersion"]), (&json!("h2"), &json!("HTTP/2.0")));
    assert_eq!(seen[0]["host"], HOST, ":authority carries the host");

    let (backend, seen) = plain_backend().await;
    let proxy = proxy(backend, Transport::Plaintext { http2: true }, UpstreamFailureResponse::Envoy).await;
    assert_eq!(get(proxy, HOST).await.0, 200);
    assert_eq!(seen.lock().unwrap()[0]["httpVersion"], "HTTP/2.0");
}

#[tokio::test]
async fn unknown_hosts_get_404_and_the_fault_answers_a_bare_502() {
    let (backend, _) = plain_backend().await;
    let proxy_address = proxy(backend, Transport::Plaintext { http2: false }, UpstreamFailureResponse::Envoy).await;
    assert_eq!(get(proxy_address, "other.test").await, (404, String::new()));
    assert_eq!(get(proxy_address, "APP.test:8080").await.0, 200, "host matching ignores case and port");

    let (trusted, other) = (ca("trusted"), ca("other"));
    let server = leaf(&other, &["echo.test"], "echo", false);
    let (backend, _) = tls_backend(backend_options(&server)).await;
    let settings = tls_transport(Some(validation(&trusted, &["echo.test"])));
    let proxy_address = proxy(backend, Transport::Tls(settings), UpstreamFailureResponse::Bare502).await;
    assert_eq!(get(proxy_address, HOST).await, (502, String::new()));
}

/// The backend connection each of `n` sequential requests arrived on. After each response it
/// waits for the connection to be back in the pool of the table's cluster.
async fn connections_of(proxy: SocketAddr, routes: &watch::Sender<Arc<RouteTable>>, seen: &Seen, n: usize) -> Vec<u64> {
    let before = seen.lock().unwrap().len();
    for _ in 0..n {
        assert_eq!(get(proxy, HOST).await.0, 200);
        let pool = routes.borrow().clusters().next().unwrap().pool.get().clone();
        let back = async {
            while pool.idle() == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), back).await.expect("the connection goes back");
    }
    seen.lock().unwrap()[before..].iter().map(|facts| facts["connection"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn c2_connections_are_reused_until_the_clusters_tls_settings_change() {
    let authority = ca("ca");
    let server = leaf(&authority, &["echo.test"], "echo", false);
    let asking = BackendOptions { client_ca: Some((authority.der(), true)), ..backend_options(&server) };
    let (backend, seen) = tls_backend(asking).await;
    let settings = |certificate| TlsSettings { client_certificate: Some(certificate), ..tls_transport(None) };
    let first = client_certificate(&authority);
    let (routes_tx, routes) = watch::channel(Arc::new(RouteTable::default()));
    super::publish(&routes_tx, one_route(backend, Transport::Tls(settings(first.clone()))));
    let proxy = serving(routes_tx.clone(), routes).await;

    let reused = connections_of(proxy, &routes_tx, &seen, 3).await;
    assert_eq!(reused, [1, 1, 1], "sequential requests share one upstream connection");

    super::publish(&routes_tx, one_route(backend, Transport::Tls(settings(first))));
    let unchanged = connections_of(proxy, &routes_tx, &seen, 2).await;
    assert_eq!(unchanged, [1, 1], "an unchanged cluster keeps its connections");

    let second = client_certificate(&authority);
    super::publish(&routes_tx, one_route(backend, Transport::Tls(settings(second))));
    let changed = connections_of(proxy, &routes_tx, &seen, 2).await;
    assert_eq!(changed, [2, 2], "a new client certificate needs new connections");

    let third = client_certificate(&authority);
    let faulty =
        RouteTable { keep_connections_across_changes: true, ..one_route(backend, Transport::Tls(settings(third))) };
    super::publish(&routes_tx, faulty);
    let kept = connections_of(proxy, &routes_tx, &seen, 2).await;
    assert_eq!(kept, [2, 2], "the fault keeps the old connection");
}

#[test]
fn n1_the_routes_host_rewrite_wins_over_the_services_for_the_host_header() {
    let cluster = |rewrite: Option<&str>| Cluster {
        name: "test".into(),
        endpoints: Vec::new(),
        transport: Transport::Plaintext { http2: false },
        host_rewrite: rewrite.map(str::to_string),
        pool: Default::default(),
    };
    let table = RouteTable::default();
    let service = cluster(Some("service.backend.test"));
    let host = |table: &RouteTable, cluster: &Cluster, route: Option<&str>| {
        super::upstream_host(table, cluster, route, "client.test")
    };
    assert_eq!(host(&table, &service, Some("route.backend.test")), "route.backend.test");
    assert_eq!(host(&table, &service, None), "service.backend.test");
    assert_eq!(host(&table, &cluster(None), Some("route.backend.test")), "route.backend.test");
    assert_eq!(host(&table, &cluster(None), None), "client.test");
    let faulty = RouteTable { cluster_host_wins: true, ..RouteTable::default() };
    assert_eq!(host(&faulty, &service, Some("route.backend.test")), "service.backend.test", "the fault");
    assert_eq!(host(&faulty, &cluster(None), Some("route.backend.test")), "route.backend.test");
}

#[test]
fn host_header_loses_port_and_case() {
    let request = |host: &str| Request::builder().header("host", host).body(()).unwrap();
    assert_eq!(super::request_host(&request("Echo.Example:8080")), "echo.example");
    assert_eq!(super::request_host(&request("echo.example")), "echo.example");
}

#[test]
fn c2_fault_keeps_a_changed_clusters_connections_but_never_mixes_siblings() {
    // Two clusters of one name with different settings (as two routes to one Service with
    // different validation), published twice unchanged, then with one of them changed.
    let table = |http2_first: bool, keep: bool| {
        let mut table = one_route(([127, 0, 0, 1], 9).into(), Transport::Plaintext { http2: http2_first });
        let sibling = Cluster {
            name: "test".into(),
            endpoints: Vec::new(),
            transport: Transport::Tls(tls_transport(None)),
            host_rewrite: None,
            pool: Default::default(),
        };
        let routes = &mut table.virtual_hosts.get_mut(HOST).unwrap().routes;
        routes.push(Route {
            path: PathPrefix::String("/other".into()),
            action: RouteAction::Forward(vec![Arc::new(sibling)]),
            host_rewrite: None,
            mirror: None,
            turn: Default::default(),
        });
        table.keep_connections_across_changes = keep;
        table
    };
    let pools = |routes: &watch::Sender<Arc<RouteTable>>| -> Vec<Arc<super::pool::ConnectionPool>> {
        routes.borrow().clusters().map(|c| c.pool.get().clone()).collect()
    };
    let (routes, _) = watch::channel(Arc::new(RouteTable::default()));
    super::publish(&routes, table(false, true));
    let first = pools(&routes);
    assert!(!Arc::ptr_eq(&first[0], &first[1]), "siblings with other settings have pools of their own");

    super::publish(&routes, table(false, true));
    let unchanged = pools(&routes);
    assert!(Arc::ptr_eq(&unchanged[0], &first[0]) && Arc::ptr_eq(&unchanged[1], &first[1]), "each keeps its own");

    super::publish(&routes, table(true, true));
    let changed = pools(&routes);
    assert!(Arc::ptr_eq(&changed[1], &first[1]), "the unchanged sibling keeps its own");
    assert!(Arc::ptr_eq(&changed[0], &first[0]), "the fault keeps the changed cluster's old connections");

    super::publish(&routes, table(false, false));
    let healthy = pools(&routes);
    assert!(!Arc::ptr_eq(&healthy[0], &changed[0]), "without the fault, changed settings start afresh");
}
