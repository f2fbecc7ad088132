//! The reference controller, clause by clause and fault by fault: objects go into a store,
//! one rebuild runs, and the programmed route table and the written statuses are checked.

use std::sync::Arc;

use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::Controller;
use crate::api::kinds::{HTTP_PROXY, INGRESS, NAMESPACE, POD, SECRET, SERVICE, TLS_CERTIFICATE_DELEGATION};
use crate::api::store::{Store, Subresource};
use crate::config::{Fault, LoopbackConfig, SecretName, TlsVersion};
use crate::dataplane::RouteTable;
use crate::dataplane::table::{Cluster, Endpoint, HostRewrite, RouteAction, Transport, UpstreamFailureResponse};

const NS: &str = "app";
const HOST: &str = "app.test";

struct Fixture {
    store: Store,
    config: LoopbackConfig,
}

impl Fixture {
    fn new() -> Self {
        let store = Store::new();
        for ns in [NS, "other", "proxy"] {
            store.create(&NAMESPACE, "", json!({"metadata": {"name": ns}})).unwrap();
        }
        let pod = json!({
            "metadata": {"name": "echo-1", "labels": {"app": "echo"}},
            "spec": {"containers": [{"name": "nginx", "ports": [{"name": "https", "containerPort": 8443}]}]},
        });
        store.create(&POD, NS, pod).unwrap();
        store.modify(&POD, NS, "echo-1", Subresource::Status, |p| {
            p["status"] = json!({"podIP": "127.9.0.1", "conditions": [{"type": "Ready", "status": "True"}]});
        });
        Fixture { store, config: LoopbackConfig::default() }
    }

    fn with_fault(mut self, fault: Fault) -> Self {
        self.config.faults.push(fault);
        self
    }

    fn service(&self, annotations: Value, ports: Value) -> &Self {
        let service = json!({
            "metadata": {"name": "echo", "annotations": annotations},
            "spec": {"selector": {"app": "echo"}, "ports": ports},
        });
        self.store.create(&SERVICE, NS, service).unwrap();
        self
    }

    fn tls_service(&self) -> &Self {
        self.service(
            json!({"projectcontour.io/upstream-protocol.tls": "8443"}),
            json!([{"name": "https", "port": 8443, "targetPort": "https"}]),
        )
    }

    /// The echo Service with a TLS port (8443, annotated) and a plaintext one (8080).
    fn tls_and_plain_service(&self) -> &Self {
        self.service(
            json!({"projectcontour.io/upstream-protocol.tls": "8443"}),
            json!([{"name": "https", "port": 8443, "targetPort": "https"}, {"name": "http", "port": 8080, "targetPort": "http"}]),
        )
    }

    fn secret(&self, ns: &str, name: &str, secret_type: &str, data: Value) -> &Self {
        self.store.create(&SECRET, ns, json!({"metadata": {"name": name}, "type": secret_type, "data": data})).unwrap();
        self
    }

    fn ca_secret(&self, ns: &str, name: &str) -> &Self {
        self.secret(ns, name, "Opaque", json!({"ca.crt": b64(&ca_pem())}))
    }

    fn proxy(&self, name: &str, service: Value) -> &Self {
        self.proxy_with_route(name, json!({"services": [service]}))
    }

    fn proxy_with_route(&self, name: &str, route: Value) -> &Self {
        let proxy = json!({"metadata": {"name": name}, "spec": {"virtualhost": {"fqdn": HOST}, "routes": [route]}});
        self.store.create(&HTTP_PROXY, NS, proxy).unwrap();
        self
    }

    /// One rebuild; the programmed table.
    fn reconcile(&self) -> Arc<RouteTable> {
        let (tx, rx) = watch::channel(Arc::new(RouteTable::default()));
        Controller::new(self.store.clone(), Arc::new(self.config.clone()), tx).reconcile();
        rx.borrow().clone()
    }

    fn status(&self, name: &str) -> Value {
        self.store.get(&HTTP_PROXY, NS, name).unwrap()["status"].clone()
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn ca_pem() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

fn validated(ca_secret: &str) -> Value {
    json!({"name": "echo", "port": 8443, "validation": {"caSecret": ca_secret, "subjectName": "echo.test"}})
}

/// The single cluster of the host's single route.
fn cluster(table: &RouteTable) -> &Cluster {
    match &table.virtual_hosts[HOST].routes[0].action {
        RouteAction::Forward(clusters) => &clusters[0],
        other => panic!("expected a forwarding route, got {other:?}"),
    }
}

fn tls(table: &RouteTable) -> &crate::dataplane::table::TlsSettings {
    match &cluster(table).transport {
        Transport::Tls(settings) => settings,
        other => panic!("expected TLS, got {other:?}"),
    }
}

fn first_error(status: &Value) -> (String, String, String) {
    let e = &status["conditions"][0]["errors"][0];
    let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
    (s("type"), s("reason"), s("message"))
}

#[test]
fn p1_annotation_selects_tls_and_endpoints_follow_the_target_port() {
    let f = Fixture::new();
    f.tls_service().proxy("p", json!({"name": "echo", "port": 8443}));
    let table = f.reconcile();
    assert!(tls(&table).validation.is_none(), "V1: no validation unless asked");
    assert_eq!(cluster(&table).endpoints, [Endpoint::Address("127.9.0.1:8443".parse().unwrap())]);
    assert_eq!(f.status("p")["currentStatus"], "valid");
}

#[test]
fn p1_fault_ignoring_the_annotation_speaks_plaintext() {
    let f = Fixture::new().with_fault(Fault::IgnoreUpstreamProtocolAnnotation);
    f.tls_service().proxy("p", json!({"name": "echo", "port": 8443}));
    assert!(matches!(cluster(&f.reconcile()).transport, Transport::Plaintext { http2: false }));
}

#[test]
fn p3_app_protocol_and_p4_field_choose_the_transport() {
    let f = Fixture::new();
    f.service(
        json!({"projectcontour.io/upstream-protocol.tls": "8443"}),
        json!([{"port": 8443, "targetPort": 8443, "appProtocol": "kubernetes.io/h2c"}]),
    )
    .proxy("p", json!({"name": "echo", "port": 8443}));
    assert!(matches!(cluster(&f.reconcile()).transport, Transport::Plaintext { http2: true }));

    let f = Fixture::new();
    f.service(json!({}), json!([{"port": 8443}])).proxy("p", json!({"name": "echo", "port": 8443, "protocol": "h2"}));
    let table = f.reconcile();
    assert_eq!(tls(&table).alpn, vec![b"h2".to_vec()], "P5: h2 offers ALPN h2");
    assert!(tls(&table).http2);
}

#[test]
fn p5_tls_offers_http1_alpn_unless_the_fault_drops_it() {
    let f = Fixture::new();
    f.tls_service().proxy("p", json!({"name": "echo", "port": 8443}));
    assert_eq!(tls(&f.reconcile()).alpn, vec![b"http/1.1".to_vec()], "P5: Envoy's HTTP/1 pool offers http/1.1");
    let f = Fixture::new().with_fault(Fault::NoAlpnForTls);
    f.tls_service().proxy("p", json!({"name": "echo", "port": 8443}));
    assert!(tls(&f.reconcile()).alpn.is_empty());
}

#[test]
fn v5_validation_is_ignored_without_tls_unless_the_fault_forces_it() {
    let f = Fixture::new();
    f.service(json!({}), json!([{"port": 8443}])).proxy("p", validated("missing"));
    assert!(matches!(cluster(&f.reconcile()).transport, Transport::Plaintext { .. }));
    assert_eq!(f.status("p")["currentStatus"], "valid", "V5: the proxy stays valid");

    let f = Fixture::new().with_fault(Fault::ValidateWithoutTls);
    f.ca_secret(NS, "ca").service(json!({}), json!([{"port": 8443}])).proxy("p", validated("ca"));
    assert!(matches!(cluster(&f.reconcile()).transport, Transport::Tls(_)));
}

#[test]
fn v2_to_v4_validation_carries_the_bundle_and_subject_names() {
    let f = Fixture::new();
    f.ca_secret(NS, "ca").tls_service().proxy(
        "p",
        json!({"name": "echo", "port": 8443, "validation": {"caSecret": "ca", "subjectName": "a.test", "subjectNames": ["a.test", "b.test"]}}),
    );
    let v = tls(&f.reconcile()).validation.clone().unwrap();
    assert_eq!(v.subject_names, vec!["a.test", "b.test"]);
    assert_eq!(v.ca_certificates.len(), 1);
    assert!(!v.faults.accept_common_name);

    let f = Fixture::new().with_fault(Fault::FirstSubjectNameOnly).with_fault(Fault::AcceptNameFromCn);
    f.ca_secret(NS, "ca").tls_service().proxy(
        "p",
        json!({"name": "echo", "port": 8443, "validation": {"caSecret": "ca", "subjectName": "a.test", "subjectNames": ["a.test", "b.test"]}}),
    );
    let v = tls(&f.reconcile()).validation.clone().unwrap();
    assert_eq!(v.subject_names, vec!["a.test"]);
    assert!(v.faults.accept_common_name);

    let f = Fixture::new().with_fault(Fault::SkipCaVerification);
    f.ca_secret(NS, "ca").tls_service().proxy("p", validated("ca"));
    assert!(tls(&f.reconcile()).validation.is_none());
}

#[test]
fn s3_s4_missing_ca_secret_invalidates_and_withdraws_the_host() {
    let f = Fixture::new();
    f.tls_service().proxy("p", validated("missing"));
    let table = f.reconcile();
    assert!(!table.virtual_hosts.contains_key(HOST), "S4: no routes for an invalid proxy");
    let status = f.status("p");
    assert_eq!(status["currentStatus"], "invalid");
    assert_eq!(status["description"], "At least one error present, see Errors for details");
    assert_eq!(
        first_error(&status),
        (
            "ServiceError".into(),
            "TLSUpstreamValidation".into(),
            "Service [echo:8443] TLS upstream validation policy error: invalid CA Secret \"app/missing\": Secret not found"
                .into()
        )
    );

    let f = Fixture::new().with_fault(Fault::KeepRoutesOfInvalidProxy);
    f.tls_service().proxy("p", validated("missing"));
    assert!(f.reconcile().virtual_hosts.contains_key(HOST));
    let f = Fixture::new().with_fault(Fault::Pre14StatusMessage);
    f.tls_service().proxy("p", validated("missing"));
    f.reconcile();
    assert!(
        first_error(&f.status("p")).2.ends_with("upstreamValidation requested but secret not found or misconfigured")
    );
}

#[test]
fn s1_secret_types_and_contents() {
    let pem = ca_pem();
    for (secret_type, data, valid) in [
        ("Opaque", json!({"ca.crt": b64(&pem)}), true),
        ("kubernetes.io/tls", json!({"ca.crt": b64(&pem), "tls.crt": b64(&pem), "tls.key": b64("k")}), true),
        ("kubernetes.io/dockerconfigjson", json!({"ca.crt": b64(&pem)}), false),
        ("Opaque", json!({"ca.crt": ""}), false),
        ("Opaque", json!({"ca.crt": b64("not a certificate")}), false),
    ] {
        let f = Fixture::new();
        f.secret(NS, "ca", secret_type, data).tls_service().proxy("p", validated("ca"));
        f.reconcile();
        let expected = if valid { "valid" } else { "invalid" };
        assert_eq!(f.status("p")["currentStatus"], expected, "{secret_type}");
    }
}

#[test]
fn s5_a_later_secret_recovers_unless_the_bundle_is_stale() {
    let f = Fixture::new();
    f.tls_service().proxy("p", validated("ca"));
    f.reconcile();
    assert_eq!(f.status("p")["currentStatus"], "invalid");
    f.ca_secret(NS, "ca");
    assert!(f.reconcile().virtual_hosts.contains_key(HOST));
    assert_eq!(f.status("p")["currentStatus"], "valid");

    let f = Fixture::new().with_fault(Fault::StaleCaBundle);
    f.ca_secret(NS, "ca").tls_service().proxy("p", validated("ca"));
    let (tx, rx) = watch::channel(Arc::new(RouteTable::default()));
    let controller = Controller::new(f.store.clone(), Arc::new(f.config.clone()), tx);
    controller.reconcile();
    let first = tls(&rx.borrow()).validation.clone().unwrap().ca_certificates;
    let mut secret = f.store.get(&SECRET, NS, "ca").unwrap();
    secret["data"]["ca.crt"] = json!(b64(&ca_pem()));
    f.store.update(&SECRET, NS, "ca", secret, Subresource::Main).unwrap();
    controller.reconcile();
    assert_eq!(tls(&rx.borrow()).validation.clone().unwrap().ca_certificates, first, "the fault keeps the old CA");
}

#[test]
fn s6_cross_namespace_ca_needs_a_delegation() {
    let f = Fixture::new();
    f.ca_secret("other", "ca").tls_service().proxy("p", validated("other/ca"));
    f.reconcile();
    assert_eq!(
        first_error(&f.status("p")),
        (
            "TLSError".into(),
            "CACertificateNotDelegated".into(),
            "service.UpstreamValidation.CACertificate Secret \"other/ca\" is not configured for certificate delegation"
                .into()
        )
    );
    let delegation =
        json!({"metadata": {"name": "d"}, "spec": {"delegations": [{"secretName": "ca", "targetNamespaces": [NS]}]}});
    f.store.create(&TLS_CERTIFICATE_DELEGATION, "other", delegation).unwrap();
    f.reconcile();
    assert_eq!(f.status("p")["currentStatus"], "valid");

    let f = Fixture::new().with_fault(Fault::IgnoreDelegation);
    f.ca_secret("other", "ca").tls_service().proxy("p", validated("other/ca"));
    f.reconcile();
    assert_eq!(f.status("p")["currentStatus"], "valid");
}

#[test]
fn v7_each_route_keeps_its_own_validation_unless_the_fault_shares_one() {
    let routes = |f: &Fixture| {
        f.ca_secret(NS, "ca").ca_secret("other", "ca").tls_service();
        let delegation = json!({"metadata": {"name": "d"}, "spec": {"delegations": [{"secretName": "ca", "targetNamespaces": ["*"]}]}});
        f.store.create(&TLS_CERTIFICATE_DELEGATION, "other", delegation).unwrap();
        let route = |prefix: &str, ca: &str, names: Value| {
            json!({"conditions": [{"prefix": prefix}], "services": [{"name": "echo", "port": 8443,
                "validation": {"caSecret": ca, "subjectName": "echo.test", "subjectNames": names}}]})
        };
        let proxy = json!({"metadata": {"name": "p"}, "spec": {"virtualhost": {"fqdn": HOST}, "routes": [
            route("/own", "ca", json!(["echo.test"])),
            route("/other", "other/ca", json!(["echo.test"])),
            route("/more", "ca", json!(["echo.test", "more.test"])),
        ]}});
        f.store.create(&HTTP_PROXY, NS, proxy).unwrap();
        f.reconcile()
    };
    let clusters = |table: &RouteTable| -> Vec<Arc<Cluster>> {
        table.virtual_hosts[HOST]
            .routes
            .iter()
            .map(|route| match &route.action {
                RouteAction::Forward(clusters) => Arc::clone(&clusters[0]),
                other => panic!("expected a forwarding route, got {other:?}"),
            })
            .collect()
    };
    let f = Fixture::new();
    let table = routes(&f);
    assert_eq!(f.status("p")["currentStatus"], "valid");
    let kept = clusters(&table);
    assert_eq!(kept.len(), 3);
    for (i, a) in kept.iter().enumerate() {
        for b in &kept[i + 1..] {
            assert!(!Arc::ptr_eq(a, b), "every route validates with its own settings");
        }
    }

    let f = Fixture::new().with_fault(Fault::ClustersShareValidation);
    let shared = clusters(&routes(&f));
    assert!(Arc::ptr_eq(&shared[0], &shared[1]) && Arc::ptr_eq(&shared[1], &shared[2]), "the fault: one for all");
}

fn with_client_certificate(mut f: Fixture) -> Fixture {
    f.config.tls.envoy_client_certificate = Some(SecretName { name: "client".into(), namespace: "proxy".into() });
    f
}

#[test]
fn c4_missing_client_certificate_invalidates_every_proxy() {
    let f = with_client_certificate(Fixture::new());
    f.service(json!({}), json!([{"port": 8443}])).proxy("p", json!({"name": "echo", "port": 8443}));
    f.reconcile();
    assert_eq!(
        first_error(&f.status("p")),
        (
            "TLSError".into(),
            "SecretNotValid".into(),
            "tls.envoy-client-certificate Secret \"proxy/client\" is invalid: Secret not found".into()
        )
    );
    let f = with_client_certificate(Fixture::new().with_fault(Fault::ClientCertificateSecretOptional));
    f.service(json!({}), json!([{"port": 8443}])).proxy("p", json!({"name": "echo", "port": 8443}));
    f.reconcile();
    assert_eq!(f.status("p")["currentStatus"], "valid");
}

#[test]
fn c3_client_certificate_is_attached_unless_the_fault_drops_it() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["envoy".to_string()]).unwrap().self_signed(&key).unwrap();
    let data = json!({"tls.crt": b64(&cert.pem()), "tls.key": b64(&key.serialize_pem())});
    for (fault, attached) in [(None, true), (Some(Fault::NeverPresentClientCertificate), false)] {
        let mut f = with_client_certificate(Fixture::new());
        f.config.faults.extend(fault);
        f.secret("proxy", "client", "kubernetes.io/tls", data.clone())
            .tls_service()
            .proxy("p", json!({"name": "echo", "port": 8443}));
        assert_eq!(tls(&f.reconcile()).client_certificate.is_some(), attached, "{fault:?}");
    }
}

#[test]
fn n1_sni_comes_from_host_rewrites_only() {
    let f = Fixture::new();
    f.ca_secret(NS, "ca").tls_service().proxy("p", validated("ca"));
    assert_eq!(tls(&f.reconcile()).sni, None, "subjectName is never SNI");

    let f = Fixture::new();
    f.tls_service().proxy_with_route(
        "p",
        json!({"requestHeadersPolicy": {"set": [{"name": "Host", "value": "route.test"}]}, "services": [{"name": "echo", "port": 8443}]}),
    );
    let table = f.reconcile();
    assert_eq!(tls(&table).sni.as_deref(), Some("route.test"));
    assert_eq!(
        table.virtual_hosts[HOST].routes[0].host_rewrite.as_ref().and_then(HostRewrite::literal),
        Some("route.test")
    );

    let f = Fixture::new();
    f.tls_service().proxy_with_route(
        "p",
        json!({"requestHeadersPolicy": {"set": [{"name": "Host", "value": "route.test"}]}, "services": [
            {"name": "echo", "port": 8443, "requestHeadersPolicy": {"set": [{"name": "host", "value": "service.test"}]}}]}),
    );
    assert_eq!(tls(&f.reconcile()).sni.as_deref(), Some("service.test"), "service level wins");

    let f = Fixture::new().with_fault(Fault::SubjectNameAsSni);
    f.ca_secret(NS, "ca").tls_service().proxy("p", validated("ca"));
    assert_eq!(tls(&f.reconcile()).sni.as_deref(), Some("echo.test"));
}

#[test]
fn n2_version_limits_come_from_the_config() {
    let mut f = Fixture::new();
    f.config.cluster.upstream_tls.minimum_protocol_version = Some(TlsVersion::V1_3);
    f.tls_service().proxy("p", json!({"name": "echo", "port": 8443}));
    assert_eq!(tls(&f.reconcile()).versions, (TlsVersion::V1_3, TlsVersion::V1_3));
    let f = Fixture::new().with_fault(Fault::DefaultMinimumTls13);
    f.tls_service().proxy("p", json!({"name": "echo", "port": 8443}));
    assert_eq!(tls(&f.reconcile()).versions, (TlsVersion::V1_3, TlsVersion::V1_3));
    let f = Fixture::new();
    f.tls_service().proxy("p", json!({"name": "echo", "port": 8443}));
    assert_eq!(tls(&f.reconcile()).versions, (TlsVersion::V1_2, TlsVersion::V1_3), "the default allows 1.2");
}

#[test]
fn n2_configured_limits_apply_unless_ignored() {
    for (fault, versions) in [
        (None, (TlsVersion::V1_2, TlsVersion::V1_2)),
        (Some(Fault::IgnoreUpstreamTlsLimits), (TlsVersion::V1_2, TlsVersion::V1_3)),
    ] {
        let mut f = Fixture::new();
        f.config.faults.extend(fault);
        f.config.cluster.upstream_tls.maximum_protocol_version = Some(TlsVersion::V1_2);
        f.tls_service().proxy("p", json!({"name": "echo", "port": 8443}));
        assert_eq!(tls(&f.reconcile()).versions, versions, "{fault:?}");
    }
}

#[test]
fn c5_nothing_is_presented_without_a_configured_certificate() {
    for (fault, attached) in [(None, false), (Some(Fault::FallbackClientCertificate), true)] {
        let mut f = Fixture::new();
        f.config.faults.extend(fault);
        f.tls_service().proxy("p", json!({"name": "echo", "port": 8443}));
        assert_eq!(tls(&f.reconcile()).client_certificate.is_some(), attached, "{fault:?}");
    }
}

#[test]
fn n3_ingress_gets_tls_without_validation_or_sni() {
    for (fault, is_tls) in [(None, true), (Some(Fault::IngressIgnoresUpstreamProtocol), false)] {
        let mut f = Fixture::new();
        f.config.faults.extend(fault);
        f.tls_service();
        let ingress = json!({"metadata": {"name": "i"}, "spec": {"rules": [{"host": HOST, "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "echo", "port": {"name": "https"}}}}]}}]}});
        f.store.create(&INGRESS, NS, ingress).unwrap();
        let table = f.reconcile();
        match &cluster(&table).transport {
            Transport::Tls(settings) => {
                assert!(is_tls);
                assert!(settings.validation.is_none() && settings.sni.is_none());
            }
            Transport::Plaintext { .. } => assert!(!is_tls, "{fault:?}"),
        }
    }
}

/// An installation that enables ExternalName Services, with `external` naming `target`.
fn external_name_fixture(target: &str, faults: &[Fault]) -> Fixture {
    let mut f = Fixture::new();
    f.config.enable_external_name_service = true;
    f.config.faults.extend_from_slice(faults);
    let service = json!({
        "metadata": {"name": "external", "annotations": {"projectcontour.io/upstream-protocol.tls": "8443"}},
        "spec": {"type": "ExternalName", "externalName": target, "ports": [{"name": "https", "port": 8443}]},
    });
    f.store.create(&SERVICE, NS, service).unwrap();
    f
}

#[test]
fn n5_external_names_resolve_by_name_and_are_the_default_sni() {
    let target = "echo.app.svc.cluster.local";
    let f = external_name_fixture(target, &[]);
    f.proxy("p", json!({"name": "external", "port": 8443}));
    let table = f.reconcile();
    assert_eq!(cluster(&table).endpoints, [Endpoint::Name { host: target.into(), port: 8443 }]);
    assert_eq!(tls(&table).sni.as_deref(), Some(target));
    assert_eq!(f.status("p")["currentStatus"], "valid");

    let rewritten = json!({"requestHeadersPolicy": {"set": [{"name": "Host", "value": "route.test"}]},
        "services": [{"name": "external", "port": 8443}]});
    let f = external_name_fixture(target, &[]);
    f.proxy_with_route("p", rewritten.clone());
    assert_eq!(tls(&f.reconcile()).sni.as_deref(), Some("route.test"), "a Host rewrite wins");
    let f = external_name_fixture(target, &[Fault::ExternalNameBeatsHostRewrite]);
    f.proxy_with_route("p", rewritten);
    assert_eq!(tls(&f.reconcile()).sni.as_deref(), Some(target));
    let f = external_name_fixture(target, &[Fault::ExternalNameSniIgnored]);
    f.proxy("p", json!({"name": "external", "port": 8443}));
    assert_eq!(tls(&f.reconcile()).sni, None);

    for localhost in ["localhost", "localhost.localdomain", "local.projectcontour.io"] {
        let f = external_name_fixture(localhost, &[]);
        f.proxy("p", json!({"name": "external", "port": 8443}));
        let table = f.reconcile();
        let action = &table.virtual_hosts[HOST].routes[0].action;
        assert!(matches!(action, RouteAction::DirectResponse { status: 503 }), "E2: {action:?}");
        let (_, reason, message) = first_error(&f.status("p"));
        assert_eq!(reason, "ServiceUnresolvedReference");
        assert!(
            message.ends_with("app/external is an ExternalName service that points to localhost, this is not allowed")
        );
        let f = external_name_fixture(localhost, &[Fault::ExternalNameLocalhostAllowed]);
        f.proxy("p", json!({"name": "external", "port": 8443}));
        assert_eq!(tls(&f.reconcile()).sni.as_deref(), Some(localhost));
        assert_eq!(f.status("p")["currentStatus"], "valid");
    }
}

#[test]
fn n3_n5_ingress_sends_no_sni_to_an_external_name_unless_the_fault_does() {
    for (fault, sni) in [(None, None), (Some(Fault::IngressExternalNameSni), Some("echo.app.svc.cluster.local"))] {
        let f = external_name_fixture("echo.app.svc.cluster.local", &Vec::from_iter(fault));
        let ingress = json!({"metadata": {"name": "i"}, "spec": {"rules": [{"host": HOST, "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "external", "port": {"number": 8443}}}}]}}]}});
        f.store.create(&INGRESS, NS, ingress).unwrap();
        assert_eq!(tls(&f.reconcile()).sni.as_deref(), sni, "{fault:?}");
    }
}

#[test]
fn unresolved_services_get_a_503_route_and_duplicates_are_invalid() {
    let f = Fixture::new();
    f.proxy("p", json!({"name": "nope", "port": 80}));
    let table = f.reconcile();
    assert!(matches!(table.virtual_hosts[HOST].routes[0].action, RouteAction::DirectResponse { status: 503 }));
    assert_eq!(first_error(&f.status("p")).1, "ServiceUnresolvedReference");

    let f = Fixture::new();
    f.tls_service().proxy("a", json!({"name": "echo", "port": 8443})).proxy("b", json!({"name": "echo", "port": 8443}));
    assert!(!f.reconcile().virtual_hosts.contains_key(HOST));
    assert_eq!(first_error(&f.status("a")).1, "DuplicateVhost");
}

#[test]
fn v6_fault_switches_the_failure_response() {
    let f = Fixture::new().with_fault(Fault::Bare502OnHandshakeFailure);
    assert_eq!(f.reconcile().upstream_failure, UpstreamFailureResponse::Bare502);
    assert_eq!(Fixture::new().reconcile().upstream_failure, UpstreamFailureResponse::Envoy);
}

#[test]
fn p4_p6_faults_on_the_field_and_the_default() {
    let f = Fixture::new().with_fault(Fault::IgnoreProtocolField);
    f.service(json!({}), json!([{"port": 8081}])).proxy("p", json!({"name": "echo", "port": 8081, "protocol": "h2c"}));
    assert!(matches!(cluster(&f.reconcile()).transport, Transport::Plaintext { http2: false }));

    let f = Fixture::new().with_fault(Fault::DefaultToTls);
    f.service(json!({}), json!([{"port": 8080}])).proxy("p", json!({"name": "echo", "port": 8080}));
    assert!(matches!(cluster(&f.reconcile()).transport, Transport::Tls(_)));
}

#[test]
fn v1_v3_validation_faults() {
    let f = Fixture::new().with_fault(Fault::VerifyWithoutValidation);
    f.tls_service().proxy("p", json!({"name": "echo", "port": 8443}));
    let v = tls(&f.reconcile()).validation.clone().expect("the fault verifies without validation");
    assert!(v.ca_certificates.is_empty());

    let f = Fixture::new().with_fault(Fault::FirstCaInBundleOnly);
    let two = format!("{}{}", ca_pem(), ca_pem());
    f.secret(NS, "ca", "Opaque", json!({"ca.crt": b64(&two)})).tls_service().proxy("p", validated("ca"));
    assert_eq!(tls(&f.reconcile()).validation.clone().unwrap().ca_certificates.len(), 1);

    let f = Fixture::new().with_fault(Fault::IgnoreCertificateExpiry).with_fault(Fault::IgnoreServedIntermediates);
    f.ca_secret(NS, "ca").tls_service().proxy("p", validated("ca"));
    let faults = tls(&f.reconcile()).validation.clone().unwrap().faults;
    assert!(faults.ignore_expiry && faults.ignore_intermediates && !faults.accept_common_name);
}

#[test]
fn s1_fault_accepts_only_opaque_ca_secrets() {
    let f = Fixture::new().with_fault(Fault::OpaqueCaSecretOnly);
    f.secret(NS, "ca", "kubernetes.io/tls", json!({"ca.crt": b64(&ca_pem())}))
        .tls_service()
        .proxy("p", validated("ca"));
    f.reconcile();
    assert!(first_error(&f.status("p")).2.ends_with("secret type is not \"Opaque\""));
}

#[test]
fn s6_wildcard_delegations_and_their_fault() {
    for (fault, valid) in [(None, "valid"), (Some(Fault::IgnoreWildcardDelegation), "invalid")] {
        let mut f = Fixture::new();
        f.config.faults.extend(fault);
        f.ca_secret("other", "ca").tls_service().proxy("p", validated("other/ca"));
        let delegation = json!({"metadata": {"name": "d"}, "spec": {"delegations": [{"secretName": "ca", "targetNamespaces": ["*"]}]}});
        f.store.create(&TLS_CERTIFICATE_DELEGATION, "other", delegation).unwrap();
        f.reconcile();
        assert_eq!(f.status("p")["currentStatus"], valid, "{fault:?}");
    }
}

#[test]
fn s6_a_star_beside_other_targets_is_no_wildcard_unless_the_fault_makes_it_one() {
    for (fault, valid) in [(None, "invalid"), (Some(Fault::StarAmongTargetsIsWildcard), "valid")] {
        let mut f = Fixture::new();
        f.config.faults.extend(fault);
        f.ca_secret("other", "ca").tls_service().proxy("p", validated("other/ca"));
        let targets = json!(["*", "elsewhere"]);
        let delegation = json!({"metadata": {"name": "d"}, "spec": {"delegations": [{"secretName": "ca", "targetNamespaces": targets}]}});
        f.store.create(&TLS_CERTIFICATE_DELEGATION, "other", delegation).unwrap();
        f.reconcile();
        assert_eq!(f.status("p")["currentStatus"], valid, "{fault:?}");
    }
}

#[test]
fn s5_fault_ignores_secret_events_only() {
    let event = |kind| crate::api::store::WatchEvent {
        resource_version: 1,
        kind,
        namespace: NS.into(),
        event_type: crate::api::store::EventType::Added,
        object: Arc::new(json!({"metadata": {"name": "ca"}, "data": {"ca.crt": "eA=="}})),
        at: std::time::Instant::now(),
    };
    let controller = |f: &Fixture| {
        let (tx, _rx) = watch::channel(Arc::new(RouteTable::default()));
        Controller::new(f.store.clone(), Arc::new(f.config.clone()), tx)
    };
    let plain = controller(&Fixture::new());
    assert!(plain.triggers_rebuild(&event(&SECRET)) && plain.triggers_rebuild(&event(&SERVICE)));
    let faulty = controller(&Fixture::new().with_fault(Fault::IgnoreSecretEvents));
    assert!(!faulty.triggers_rebuild(&event(&SECRET)) && faulty.triggers_rebuild(&event(&SERVICE)));
}

#[test]
fn c2_client_certificate_rotates_unless_stale() {
    let issue = || {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["envoy".to_string()]).unwrap().self_signed(&key).unwrap();
        json!({"tls.crt": b64(&cert.pem()), "tls.key": b64(&key.serialize_pem())})
    };
    for (fault, rotates) in [(None, true), (Some(Fault::StaleClientCertificate), false)] {
        let mut f = with_client_certificate(Fixture::new());
        f.config.faults.extend(fault);
        f.secret("proxy", "client", "kubernetes.io/tls", issue())
            .tls_service()
            .proxy("p", json!({"name": "echo", "port": 8443}));
        let (tx, rx) = watch::channel(Arc::new(RouteTable::default()));
        let controller = Controller::new(f.store.clone(), Arc::new(f.config.clone()), tx);
        controller.reconcile();
        let first = tls(&rx.borrow()).client_certificate.clone().unwrap().chain.clone();
        let mut secret = f.store.get(&SECRET, "proxy", "client").unwrap();
        secret["data"] = issue();
        f.store.update(&SECRET, "proxy", "client", secret, Subresource::Main).unwrap();
        controller.reconcile();
        let second = tls(&rx.borrow()).client_certificate.clone().unwrap().chain.clone();
        assert_eq!(first != second, rotates, "{fault:?}");
    }
}

#[test]
fn s5_fault_sees_secrets_only_after_another_change_in_their_namespace() {
    let f = Fixture::new().with_fault(Fault::IgnoreSecretEvents);
    f.tls_service().proxy("p", validated("ca"));
    let (tx, _rx) = watch::channel(Arc::new(RouteTable::default()));
    let controller = Controller::new(f.store.clone(), Arc::new(f.config.clone()), tx);
    controller.reconcile();
    assert_eq!(f.status("p")["currentStatus"], "invalid");
    f.ca_secret(NS, "ca");
    controller.rebuild();
    assert_eq!(f.status("p")["currentStatus"], "invalid", "the new Secret is not seen");
    controller.refresh_secrets(Some(&std::collections::BTreeSet::from(["other".to_string()])));
    controller.rebuild();
    assert_eq!(f.status("p")["currentStatus"], "invalid", "changes elsewhere do not help");
    controller.refresh_secrets(Some(&std::collections::BTreeSet::from([NS.to_string()])));
    controller.rebuild();
    assert_eq!(f.status("p")["currentStatus"], "valid");
}

#[test]
fn r3_weights_share_a_route_and_each_service_keeps_its_transport() {
    // (TLS port's weight, plaintext port's weight) -> the rotation, as (port, TLS?) pairs.
    let rotation = |weights: (Option<u32>, Option<u32>), fault: Option<Fault>| {
        let f = fault.map_or_else(Fixture::new, |fault| Fixture::new().with_fault(fault));
        f.tls_and_plain_service();
        let service = |port: u16, weight: Option<u32>| match weight {
            Some(w) => json!({"name": "echo", "port": port, "weight": w}),
            None => json!({"name": "echo", "port": port}),
        };
        f.proxy_with_route("p", json!({"services": [service(8443, weights.0), service(8080, weights.1)]}));
        let table = f.reconcile();
        let RouteAction::Forward(clusters) = &table.virtual_hosts[HOST].routes[0].action else {
            panic!("no forward: {:?}", table.virtual_hosts[HOST].routes[0].action)
        };
        clusters
            .iter()
            .map(|c| {
                (c.name.rsplit('/').next().unwrap().parse::<u16>().unwrap(), matches!(c.transport, Transport::Tls(_)))
            })
            .collect::<Vec<_>>()
    };
    let (tls, plain) = ((8443, true), (8080, false));
    assert_eq!(rotation((Some(100), Some(0)), None), [tls]);
    assert_eq!(rotation((Some(0), Some(100)), None), [plain]);
    assert_eq!(rotation((None, None), None), [tls, plain], "no weights: equal shares");
    assert_eq!(rotation((Some(30), Some(10)), None), [tls, tls, tls, plain]);
    assert_eq!(rotation((Some(5), None), None), [tls], "unweighted beside weighted: no share");
    assert_eq!(rotation((Some(100), Some(0)), Some(Fault::WeightsIgnored)), [tls, plain]);
    assert_eq!(
        rotation((Some(0), Some(100)), Some(Fault::RouteTransportFromFirstService)),
        [(8080, true)],
        "the fault speaks TLS to the plaintext port"
    );

    // A single service gets every request, whatever its weight.
    let f = Fixture::new();
    f.tls_service().proxy("p", json!({"name": "echo", "port": 8443, "weight": 0}));
    assert_eq!(cluster(&f.reconcile()).name, "app/echo/8443");
}

#[test]
fn r3_a_mirror_gets_copies_over_its_own_transport_and_only_one_per_route() {
    let build = |services: Value, fault: Option<Fault>| {
        let f = fault.map_or_else(Fixture::new, |fault| Fixture::new().with_fault(fault));
        f.tls_and_plain_service();
        f.proxy_with_route("p", json!({"services": services}));
        (f.reconcile(), f.status("p"))
    };
    let services = json!([{"name": "echo", "port": 8080}, {"name": "echo", "port": 8443, "mirror": true}]);
    let mirror_of = |table: &RouteTable| {
        table.virtual_hosts[HOST].routes[0]
            .mirror
            .as_ref()
            .map(|m| (m.name.clone(), matches!(m.transport, Transport::Tls(_))))
    };
    let (table, status) = build(services.clone(), None);
    assert_eq!(status["currentStatus"], "valid");
    assert_eq!(cluster(&table).name, "app/echo/8080", "the mirror takes no share");
    assert_eq!(mirror_of(&table), Some(("app/echo/8443".to_string(), true)));
    assert_eq!(mirror_of(&build(services.clone(), Some(Fault::MirrorIgnored)).0), None);
    assert_eq!(
        mirror_of(&build(services, Some(Fault::MirrorIgnoresUpstreamTls)).0),
        Some(("app/echo/8443".to_string(), false))
    );

    let two = json!([
        {"name": "echo", "port": 8080},
        {"name": "echo", "port": 8443, "mirror": true},
        {"name": "echo", "port": 8080, "mirror": true},
    ]);
    let (table, _) = build(two.clone(), Some(Fault::SeveralMirrorsAllowed));
    assert_eq!(mirror_of(&table), Some(("app/echo/8080".to_string(), false)), "the fault keeps the last");
    let (table, status) = build(two, None);
    assert_eq!(
        first_error(&status),
        (
            "ServiceError".to_string(),
            "OnlyOneMirror".to_string(),
            "only one service per route may be nominated as mirror".to_string()
        )
    );
    assert!(table.virtual_hosts.is_empty(), "the proxy's routes are withdrawn");
}

#[test]
fn features_the_model_lacks_are_refused_loudly() {
    let cases = [
        (
            json!({"includes": [{"name": "c", "conditions": [{"header": {"name": "x", "present": true}}]}]}),
            "includes[0].conditions[0].header",
        ),
        (json!({"tcpproxy": {"include": {"name": "child"}}}), "spec.tcpproxy.include"),
        (
            json!({"virtualhost": {"fqdn": HOST, "tls": {"secretName": "s", "enableFallbackCertificate": true}}}),
            "spec.virtualhost.tls.enableFallbackCertificate",
        ),
        (
            json!({"virtualhost": {"fqdn": HOST, "tls": {"secretName": "s"}}, "routes": [{"services": []}]}),
            "routes on a TLS virtual host",
        ),
        (json!({"routes": [{"conditions": [{"header": {"name": "x", "present": true}}]}]}), "conditions[0].header"),
        (
            json!({"routes": [{"services": [{"name": "echo", "port": 8443, "mirror": true, "weight": 50}]}]}),
            "services[0].weight (a mirror's share)",
        ),
    ];
    for (i, (spec, feature)) in cases.into_iter().enumerate() {
        let f = Fixture::new();
        let mut spec = spec;
        if spec.get("virtualhost").is_none() {
            spec["virtualhost"] = json!({"fqdn": HOST});
        }
        let name = format!("p{i}");
        f.store.create(&HTTP_PROXY, NS, json!({"metadata": {"name": name}, "spec": spec})).unwrap();
        let table = f.reconcile();
        let (error_type, reason, message) = first_error(&f.status(&name));
        assert_eq!((error_type.as_str(), reason.as_str()), ("LoopbackError", "NotModelled"), "{feature}");
        assert!(message.contains(feature) && message.contains("--controller contour"), "{message}");
        assert!(table.virtual_hosts.is_empty(), "{feature}: nothing is served");
    }
    // Empty lists and plain prefixes are modelled.
    let f = Fixture::new();
    f.tls_service()
        .proxy_with_route("p", json!({"conditions": [{"prefix": "/a"}], "services": [{"name": "echo", "port": 8443}]}));
    f.reconcile();
    assert_eq!(f.status("p")["currentStatus"], "valid");
}

mod includes {
    use super::*;
    use crate::controller::proxy::merge_prefixes;
    use crate::dataplane::table::PathPrefix;

    fn create(f: &Fixture, ns: &str, name: &str, spec: Value) {
        f.store.create(&HTTP_PROXY, ns, json!({"metadata": {"name": name}, "spec": spec})).unwrap();
    }

    fn status_in(f: &Fixture, ns: &str, name: &str) -> Value {
        f.store.get(&HTTP_PROXY, ns, name).unwrap()["status"].clone()
    }

    /// `(prefix, action)` of each route of the test host, as "forward" or the direct status.
    fn routes(table: &RouteTable) -> Vec<(String, String)> {
        let Some(host) = table.virtual_hosts.get(HOST) else { return Vec::new() };
        let mut routes: Vec<(String, String)> = host
            .routes
            .iter()
            .map(|r| {
                let action = match &r.action {
                    RouteAction::Forward(_) => "forward".to_string(),
                    RouteAction::DirectResponse { status } => status.to_string(),
                };
                assert!(matches!(r.path, PathPrefix::String(_)));
                (r.path.as_str().to_string(), action)
            })
            .collect();
        routes.sort();
        routes
    }

    /// A root in NS with a route at `/root`, including `includes`.
    fn root(f: &Fixture, includes: Value) {
        let route = json!({"conditions": [{"prefix": "/root"}], "services": [{"name": "echo", "port": 8443}]});
        create(f, NS, "root", json!({"virtualhost": {"fqdn": HOST}, "includes": includes, "routes": [route]}));
    }

    fn child(f: &Fixture, ns: &str, name: &str, service: Value) {
        let route = json!({"conditions": [{"prefix": "/api"}], "services": [service]});
        create(f, ns, name, json!({"routes": [route]}));
    }

    fn other_namespace_echo(f: &Fixture) {
        let service = json!({
            "metadata": {"name": "echo", "annotations": {"projectcontour.io/upstream-protocol.tls": "8443"}},
            "spec": {"selector": {"app": "echo"}, "ports": [{"name": "https", "port": 8443, "targetPort": "https"}]},
        });
        f.store.create(&SERVICE, "other", service).unwrap();
    }

    fn errors(status: &Value) -> Vec<(String, String)> {
        status["conditions"][0]["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| (e["reason"].as_str().unwrap().to_string(), e["message"].as_str().unwrap().to_string()))
            .collect()
    }

    #[test]
    fn prefixes_concatenate_with_runs_of_slashes_made_one() {
        let cases: [(&[&str], &str); 6] = [
            (&[], "/"),
            (&["/team"], "/team"),
            (&["/team", "/api"], "/team/api"),
            (&["/team/", "/api"], "/team/api"),
            (&["/team", "/"], "/team/"),
            (&["/a", "/b/", "/c"], "/a/b/c"),
        ];
        for (parts, merged) in cases {
            let parts: Vec<String> = parts.iter().map(ToString::to_string).collect();
            assert_eq!(merge_prefixes(&parts), merged, "{parts:?}");
        }
    }

    #[test]
    fn i1_an_included_proxy_resolves_services_and_secrets_in_its_own_namespace() {
        for fault in [None, Some(Fault::ChildCaSecretInRootNamespace), Some(Fault::DelegationCheckedForRootNamespace)] {
            let mut f = Fixture::new();
            if let Some(fault) = fault {
                f = f.with_fault(fault);
            }
            f.tls_service();
            other_namespace_echo(&f);
            f.ca_secret("other", "ca");
            f.ca_secret("proxy", "stored");
            let delegation = json!({
                "metadata": {"name": "d"},
                "spec": {"delegations": [{"secretName": "stored", "targetNamespaces": ["other"]}]},
            });
            f.store.create(&TLS_CERTIFICATE_DELEGATION, "proxy", delegation).unwrap();
            root(&f, json!([{"name": "child", "namespace": "other", "conditions": [{"prefix": "/team"}]}]));
            let route = |prefix: &str, ca: &str| {
                let mut service = validated(ca);
                service["name"] = json!("echo");
                json!({"conditions": [{"prefix": prefix}], "services": [service]})
            };
            let spec = json!({"routes": [route("/api", "ca"), route("/stored", "proxy/stored")]});
            create(&f, "other", "child", spec);
            let table = f.reconcile();
            let child = status_in(&f, "other", "child");
            match fault {
                None => {
                    assert_eq!(f.status("root")["currentStatus"], "valid");
                    assert_eq!(child["currentStatus"], "valid", "{child}");
                    assert_eq!(
                        routes(&table),
                        [("/root", "forward"), ("/team/api", "forward"), ("/team/stored", "forward")]
                            .map(|(p, a)| (p.to_string(), a.to_string()))
                    );
                }
                Some(fault) => {
                    assert_eq!(child["currentStatus"], "invalid", "{fault:?}");
                    assert_eq!(routes(&table), [("/root".to_string(), "forward".to_string())], "{fault:?}");
                }
            }
        }
    }

    #[test]
    fn i3_an_error_in_an_included_proxy_drops_only_its_routes() {
        let f = Fixture::new();
        f.tls_service();
        root(&f, json!([{"name": "child", "conditions": [{"prefix": "/team"}]}]));
        child(&f, NS, "child", validated("missing-ca"));
        let table = f.reconcile();
        assert_eq!(f.status("root")["currentStatus"], "valid");
        assert_eq!(errors(&f.status("child"))[0].0, "TLSUpstreamValidation");
        assert_eq!(routes(&table), [("/root".to_string(), "forward".to_string())]);

        let f = Fixture::new().with_fault(Fault::ChildErrorWithdrawsRoot);
        f.tls_service();
        root(&f, json!([{"name": "child", "conditions": [{"prefix": "/team"}]}]));
        child(&f, NS, "child", validated("missing-ca"));
        assert!(f.reconcile().virtual_hosts.is_empty());
    }

    #[test]
    fn i3_an_error_in_the_root_drops_the_included_routes_too() {
        for fault in [None, Some(Fault::RootErrorKeepsIncludedRoutes)] {
            let mut f = Fixture::new();
            if let Some(fault) = fault {
                f = f.with_fault(fault);
            }
            f.tls_service();
            let route = json!({"conditions": [{"prefix": "/root"}], "services": [validated("missing-ca")]});
            let includes = json!([{"name": "child", "conditions": [{"prefix": "/team"}]}]);
            create(&f, NS, "root", json!({"virtualhost": {"fqdn": HOST}, "includes": includes, "routes": [route]}));
            child(&f, NS, "child", json!({"name": "echo", "port": 8443}));
            let table = f.reconcile();
            assert_eq!(f.status("root")["currentStatus"], "invalid");
            assert_eq!(f.status("child")["currentStatus"], "valid", "the child itself has no error");
            let expected: Vec<(String, String)> = match fault {
                None => Vec::new(),
                Some(_) => vec![("/team/api".into(), "forward".into())],
            };
            assert_eq!(routes(&table), expected, "{fault:?}");
        }
    }

    #[test]
    fn i4_an_include_without_a_usable_proxy_answers_502_for_its_prefix() {
        let f = Fixture::new();
        f.tls_service();
        let includes = json!([
            {"name": "missing", "conditions": [{"prefix": "/missing"}]},
            {"name": "other-root", "conditions": [{"prefix": "/other"}]},
            {"name": "unconditioned"},
            {"name": "empty-condition", "conditions": [{}]},
        ]);
        root(&f, includes);
        create(&f, NS, "other-root", json!({"virtualhost": {"fqdn": "other.test"}, "routes": []}));
        let table = f.reconcile();
        assert_eq!(
            errors(&f.status("root")),
            [
                ("IncludeNotFound", format!("include {NS}/missing not found")),
                ("RootIncludesRoot", format!("root httpproxy cannot include another root httpproxy ({NS}/other-root)")),
                ("IncludeNotFound", format!("include {NS}/unconditioned not found")),
                ("IncludeNotFound", format!("include {NS}/empty-condition not found")),
            ]
            .map(|(r, m)| (r.to_string(), m))
        );
        assert_eq!(
            routes(&table),
            // Conditions, even empty ones, get the 502 route (at `/` when they hold no prefix).
            [("/", "502"), ("/missing", "502"), ("/other", "502"), ("/root", "forward")]
                .map(|(p, a)| (p.to_string(), a.to_string()))
        );
    }

    #[test]
    fn cycles_and_duplicate_conditions_are_include_errors() {
        let f = Fixture::new();
        f.tls_service();
        root(
            &f,
            json!([
                {"name": "a", "conditions": [{"prefix": "/a"}]},
                {"name": "b", "conditions": [{"prefix": "/a"}]},
            ]),
        );
        create(&f, NS, "a", json!({"includes": [{"name": "b", "conditions": [{"prefix": "/b"}]}]}));
        create(
            &f,
            NS,
            "b",
            json!({"includes": [{"name": "a"}], "routes": [{"services": [{"name": "echo", "port": 8443}]}]}),
        );
        let table = f.reconcile();
        assert_eq!(
            errors(&f.status("a")),
            [(
                "IncludeCreatesCycle".to_string(),
                format!("include creates an include cycle: {NS}/root -> {NS}/a -> {NS}/b -> {NS}/a")
            )]
        );
        assert_eq!(f.status("b")["currentStatus"], "valid");
        assert_eq!(errors(&f.status("root"))[0].0, "DuplicateMatchConditions");
        // The cycle drops nothing but the edge that closes it, as in Contour.
        assert_eq!(
            routes(&table),
            [("/a/b", "forward"), ("/root", "forward")].map(|(p, a)| (p.to_string(), a.to_string()))
        );
    }

    #[test]
    fn what_no_root_reaches_is_orphaned() {
        let f = Fixture::new();
        f.tls_service();
        root(&f, json!([{"name": "child", "conditions": [{"prefix": "/team"}]}]));
        child(&f, NS, "child", json!({"name": "echo", "port": 8443}));
        child(&f, NS, "stray", json!({"name": "echo", "port": 8443}));
        f.reconcile();
        assert_eq!(f.status("child")["currentStatus"], "valid");
        assert_eq!(f.status("stray")["currentStatus"], "orphaned");
    }
}

#[test]
fn s5_secret_changes_rebuild_only_when_ca_crt_is_involved_or_the_secret_is_configured() {
    use crate::api::store::{EventType, WatchEvent};
    let mut f = Fixture::new();
    f.config.tls.envoy_client_certificate = Some(SecretName { name: "client".into(), namespace: NS.into() });
    let (tx, _rx) = watch::channel(Arc::new(RouteTable::default()));
    let controller = Controller::new(f.store.clone(), Arc::new(f.config.clone()), tx);
    controller.reconcile();
    let event = |event_type, name: &str, data: Value| WatchEvent {
        resource_version: 1,
        kind: &SECRET,
        namespace: NS.into(),
        event_type,
        object: Arc::new(json!({"metadata": {"name": name}, "data": data})),
        at: std::time::Instant::now(),
    };
    let cases = [
        (EventType::Added, "plain", json!({"tls.crt": "eA=="}), false, "no ca.crt, not configured"),
        (EventType::Added, "ca", json!({"ca.crt": "eA=="}), true, "a CA Secret"),
        (EventType::Modified, "ca", json!({"ca.crt": "eA=="}), false, "data unchanged"),
        (EventType::Modified, "ca", json!({"other": "eA=="}), true, "ca.crt removed: the old Secret had it"),
        (EventType::Modified, "ca", json!({"other": "eQ=="}), false, "no ca.crt before or after"),
        (EventType::Deleted, "ca", json!({"other": "eQ=="}), false, "deleted without ca.crt"),
        (EventType::Added, "empty", json!({"ca.crt": ""}), true, "an empty ca.crt key counts"),
        (EventType::Added, "client", json!({"tls.crt": "eA=="}), true, "the configured client certificate"),
    ];
    for (event_type, name, data, rebuild, why) in cases {
        assert_eq!(controller.triggers_rebuild(&event(event_type, name, data)), rebuild, "{why}");
    }
}

#[test]
fn a_proxy_status_write_calls_for_no_rebuild() {
    use crate::api::store::{EventType, WatchEvent};
    let f = Fixture::new();
    let (tx, _rx) = watch::channel(Arc::new(RouteTable::default()));
    let controller = Controller::new(f.store.clone(), Arc::new(f.config.clone()), tx);
    let event = |event_type, resource_version: &str, generation: u64, annotations: Value, status: &str| WatchEvent {
        resource_version: 1,
        kind: &HTTP_PROXY,
        namespace: NS.into(),
        event_type,
        object: Arc::new(json!({
            "metadata": {"name": "p", "namespace": NS, "resourceVersion": resource_version,
                         "generation": generation, "annotations": annotations},
            "spec": {}, "status": {"currentStatus": status},
        })),
        at: std::time::Instant::now(),
    };
    let cases = [
        (event(EventType::Added, "1", 1, json!({}), "NotReconciled"), true, "new proxy"),
        (event(EventType::Modified, "2", 1, json!({}), "valid"), false, "status written"),
        (event(EventType::Modified, "3", 2, json!({}), "valid"), true, "spec changed"),
        (event(EventType::Modified, "4", 2, json!({"kubernetes.io/ingress.class": "x"}), "valid"), true, "annotation"),
        (event(EventType::Modified, "5", 2, json!({"kubernetes.io/ingress.class": "x"}), "invalid"), false, "status"),
        (event(EventType::Deleted, "6", 2, json!({"kubernetes.io/ingress.class": "x"}), "invalid"), true, "deleted"),
        (event(EventType::Added, "7", 1, json!({}), "NotReconciled"), true, "created again"),
    ];
    for (event, rebuild, why) in cases {
        assert_eq!(controller.triggers_rebuild(&event), rebuild, "{why}");
    }
}

mod tcp_proxy {
    use super::*;
    use crate::dataplane::table::DownstreamTls;

    fn serving_secret(f: &Fixture, ns: &str, name: &str) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![HOST.to_string()]).unwrap().self_signed(&key).unwrap();
        f.secret(
            ns,
            name,
            "kubernetes.io/tls",
            json!({"tls.crt": b64(&cert.pem()), "tls.key": b64(&key.serialize_pem())}),
        );
    }

    fn tcp_proxy(f: &Fixture, tls: Value, services: Value) {
        let proxy = json!({
            "metadata": {"name": "p"},
            "spec": {"virtualhost": {"fqdn": HOST, "tls": tls}, "tcpproxy": {"services": services}},
        });
        f.store.create(&HTTP_PROXY, NS, proxy).unwrap();
    }

    #[test]
    fn a_terminated_tcp_proxy_speaks_tls_upstream_without_alpn_or_sni() {
        let f = Fixture::new();
        f.tls_service();
        serving_secret(&f, NS, "front");
        tcp_proxy(&f, json!({"secretName": "front"}), json!([{"name": "echo", "port": 8443}]));
        let table = f.reconcile();
        assert_eq!(f.status("p")["currentStatus"], "valid", "{}", f.status("p"));
        assert!(table.virtual_hosts.is_empty(), "no routes: nothing on the HTTP listener");
        let host = &table.secure_hosts[HOST];
        let DownstreamTls::Terminate(serving) = &host.tls else { panic!("the proxy ends the client's TLS") };
        assert_eq!(serving.versions, (TlsVersion::V1_2, TlsVersion::V1_3));
        assert!(serving.server_config().is_ok());
        let Transport::Tls(settings) = &host.tcp_proxy[0].transport else { panic!("TLS upstream") };
        assert!(settings.alpn.is_empty(), "{:?}", settings.alpn);
        assert_eq!(settings.sni, None);
    }

    #[test]
    fn passthrough_needs_no_secret_and_faults_change_the_upstream() {
        let f = Fixture::new();
        f.tls_service();
        tcp_proxy(&f, json!({"passthrough": true}), json!([{"name": "echo", "port": 8443}]));
        let table = f.reconcile();
        assert!(matches!(table.secure_hosts[HOST].tls, DownstreamTls::Passthrough));

        let f = Fixture::new().with_fault(Fault::TcpProxyOffersHttp11).with_fault(Fault::TcpProxySniFromFqdn);
        f.tls_service();
        tcp_proxy(&f, json!({"passthrough": true}), json!([{"name": "echo", "port": 8443}]));
        let table = f.reconcile();
        let Transport::Tls(settings) = &table.secure_hosts[HOST].tcp_proxy[0].transport else { panic!() };
        assert_eq!(settings.alpn, vec![b"http/1.1".to_vec()]);
        assert_eq!(settings.sni.as_deref(), Some(HOST));

        let f = Fixture::new().with_fault(Fault::TlsPassthroughIgnored);
        f.tls_service();
        tcp_proxy(&f, json!({"passthrough": true}), json!([{"name": "echo", "port": 8443}]));
        assert!(f.reconcile().secure_hosts.is_empty());
        assert_eq!(f.status("p")["currentStatus"], "valid");
    }

    #[test]
    fn errors_invalidate_the_whole_proxy_in_contour_words() {
        let cases = [
            (json!(null), json!([{"name": "echo", "port": 8443}]), "TLSMustBeConfigured", "Spec.TCPProxy requires"),
            (
                json!({"secretName": "absent"}),
                json!([{"name": "echo", "port": 8443}]),
                "SecretNotValid",
                "Secret \"absent\" is invalid: Secret not found",
            ),
            (
                json!({"secretName": "front", "passthrough": true}),
                json!([{"name": "echo", "port": 8443}]),
                "TLSConfigNotValid",
                "both Passthrough and SecretName",
            ),
            (
                json!({}),
                json!([{"name": "echo", "port": 8443}]),
                "TLSConfigNotValid",
                "neither Passthrough nor SecretName",
            ),
            (
                json!({"secretName": "other/front"}),
                json!([{"name": "echo", "port": 8443}]),
                "DelegationNotPermitted",
                "certificate delegation not permitted",
            ),
            (
                json!({"secretName": "front", "minimumProtocolVersion": "1.3", "maximumProtocolVersion": "1.2"}),
                json!([{"name": "echo", "port": 8443}]),
                "TLSConfigNotValid",
                "minimum protocol version is greater",
            ),
            (
                json!({"secretName": "front"}),
                json!([{"name": "missing", "port": 8443}]),
                "ServiceUnresolvedReference",
                "Spec.TCPProxy unresolved service reference: service \"app/missing\" not found",
            ),
            (
                json!({"secretName": "front"}),
                json!([]),
                "NothingDefined",
                "either services or inclusion must be specified",
            ),
        ];
        for (tls, services, reason, text) in cases {
            let f = Fixture::new();
            f.tls_service();
            serving_secret(&f, NS, "front");
            serving_secret(&f, "other", "front");
            let mut proxy = json!({"metadata": {"name": "p"}, "spec": {"virtualhost": {"fqdn": HOST}, "tcpproxy": {"services": services}}});
            if !tls.is_null() {
                proxy["spec"]["virtualhost"]["tls"] = tls;
            }
            f.store.create(&HTTP_PROXY, NS, proxy).unwrap();
            let table = f.reconcile();
            let (_, actual_reason, message) = first_error(&f.status("p"));
            assert_eq!(actual_reason, reason, "{message}");
            assert!(message.contains(text), "{message}");
            assert!(table.secure_hosts.is_empty() && table.virtual_hosts.is_empty(), "{reason}: nothing served");
        }
    }

    #[test]
    fn a_serving_secret_created_later_triggers_a_rebuild() {
        let f = Fixture::new();
        tcp_proxy(&f, json!({"secretName": "front"}), json!([{"name": "echo", "port": 8443}]));
        let (tx, _rx) = watch::channel(Arc::new(RouteTable::default()));
        let controller = Controller::new(f.store.clone(), Arc::new(f.config.clone()), tx);
        controller.reconcile();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![HOST.to_string()]).unwrap().self_signed(&key).unwrap();
        let secret = json!({
            "metadata": {"name": "front", "namespace": NS},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": b64(&cert.pem()), "tls.key": b64(&key.serialize_pem())},
        });
        let event = crate::api::store::WatchEvent {
            resource_version: 1,
            event_type: crate::api::store::EventType::Added,
            kind: &SECRET,
            namespace: NS.into(),
            object: Arc::new(secret),
            at: std::time::Instant::now(),
        };
        assert!(controller.triggers_rebuild(&event));
    }
}

/// Contour's hold-off (`internal/contour/handler.go`), at its defaults of 100 and 500 ms.
mod hold_off {
    use std::time::{Duration, Instant};

    use super::super::HoldOff;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_change_after_a_quiet_spell_is_acted_on_at_once() {
        let start = Instant::now();
        let mut hold_off = HoldOff::new(ms(100), ms(500), start);
        assert_eq!(hold_off.deadline(), None);
        hold_off.changed(start + ms(600));
        assert_eq!(hold_off.deadline(), Some(start + ms(600)));
        hold_off.rebuilt(start + ms(601));
        assert_eq!(hold_off.deadline(), None);
    }

    #[test]
    fn a_change_soon_after_a_rebuild_waits_and_each_change_restarts_the_wait() {
        let start = Instant::now();
        // Contour counts from its start as from a rebuild.
        let mut hold_off = HoldOff::new(ms(100), ms(500), start);
        hold_off.changed(start + ms(50));
        assert_eq!(hold_off.deadline(), Some(start + ms(150)));
        hold_off.changed(start + ms(120));
        assert_eq!(hold_off.deadline(), Some(start + ms(220)));
    }

    #[test]
    fn a_steady_stream_of_changes_is_acted_on_once_the_longest_hold_off_has_passed() {
        let start = Instant::now();
        let mut hold_off = HoldOff::new(ms(100), ms(500), start);
        hold_off.rebuilt(start + ms(1000));
        for at in (1050..=1500).step_by(50) {
            hold_off.changed(start + ms(at));
            assert_eq!(hold_off.deadline(), Some(start + ms(at + 100)), "change at {at} ms");
        }
        hold_off.changed(start + ms(1550));
        assert_eq!(hold_off.deadline(), Some(start + ms(1550)));
    }
}
