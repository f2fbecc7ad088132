//! Connecting to a cluster that cannot be used: each failure names the server and says why in
//! a few words (refused, a name that does not resolve, an untrusted certificate, rejected
//! credentials), checked against a loopback cluster, which serves HTTPS with a token like a
//! real one.

use std::path::Path;

use harness::cluster::ClusterClient;

/// `kubeconfig` with `from` replaced by `to`, written beside it.
fn variant(kubeconfig: &Path, name: &str, from: &str, to: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    assert!(text.contains(from), "{from} is not in the kubeconfig");
    let path = kubeconfig.with_file_name(name);
    std::fs::write(&path, text.replace(from, to)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_cluster_is_named_with_the_reason() {
    harness::init_crypto();
    let loopback = loopback::Loopback::start(Default::default()).await.expect("loopback starts");
    let kubeconfig = loopback.kubeconfig();
    ClusterClient::connect(Some(kubeconfig), None).await.expect("the kubeconfig as written works");
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let token = text.lines().find_map(|l| l.trim().strip_prefix("token: ")).unwrap().to_string();
    let ca = text.lines().find_map(|l| l.trim().strip_prefix("certificate-authority-data: ")).unwrap().to_string();
    let server = format!("https://{}", loopback.api_address());

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let cases = [
        (
            variant(kubeconfig, "wrong-token", &token, "\"not-the-token\""),
            "unauthorized: the kubeconfig's credentials are not accepted",
        ),
        (
            variant(
                kubeconfig,
                "no-ca",
                &format!("certificate-authority-data: {ca}"),
                "insecure-skip-tls-verify: false",
            ),
            "its TLS certificate is not accepted",
        ),
        (variant(kubeconfig, "closed", &server, &format!("https://{closed}")), "connection refused"),
        (
            variant(kubeconfig, "unresolvable", &server, "https://no-such-host.invalid:6443"),
            "the host name does not resolve",
        ),
    ];
    for (path, reason) in &cases {
        let error = ClusterClient::connect(Some(path), None).await.err().expect("connecting fails").to_string();
        assert!(error.starts_with("cannot reach the cluster at https://"), "{error}");
        assert!(error.contains(reason), "{}: {error}", path.display());
        assert!(!error.contains("Error {") && !error.contains("ErrorResponse"), "no debug dump: {error}");
    }
    loopback.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_is_not_ready_fails_before_any_scenario() {
    use harness::target::{Environment, TargetConfig, TargetError};
    harness::init_crypto();
    let loopback = loopback::Loopback::start(Default::default()).await.expect("loopback starts");
    let as_real = |proxy: String| TargetConfig::Cluster {
        kubeconfig: Some(loopback.kubeconfig().to_path_buf()),
        context: None,
        proxy,
        tls_proxy: None,
        installation: Default::default(),
        known_failures: Vec::new(),
    };

    // With no virtual host anywhere, Contour has given Envoy no HTTP listener yet: a refused
    // proxy address is no fault until the canary, which makes one, fails too.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let quick = harness::runner::RunSettings { traffic_limit: std::time::Duration::from_secs(2), ..Default::default() };
    let error = Environment::connect(&as_real(closed.to_string()), quick).await.err().unwrap();
    let message = error.to_string();
    assert!(message.contains("the canary (one TLS backend"), "{message}");
    assert!(message.contains(&format!("{closed} ({closed}) refused connections before the canary")), "{message}");

    // Once some HTTPProxy is a valid root, Envoy has its listener: a refusal fails at once.
    let cluster = ClusterClient::connect(Some(loopback.kubeconfig()), None).await.unwrap();
    let root = serde_json::json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "default"},
        "spec": {"ports": [{"port": 80}]},
    });
    cluster.apply(&root, "default").await.unwrap();
    let proxy = serde_json::json!({
        "apiVersion": "projectcontour.io/v1", "kind": "HTTPProxy", "metadata": {"name": "root", "namespace": "default"},
        "spec": {"virtualhost": {"fqdn": "root.example.test"}, "routes": [{"services": [{"name": "s", "port": 80}]}]},
    });
    let proxy = cluster.apply(&proxy, "default").await.unwrap();
    let valid = |object: &serde_json::Value| object["status"]["currentStatus"] == "valid";
    let seen = cluster.wait_for(&proxy, std::time::Duration::from_secs(30), valid).await.unwrap();
    assert!(seen.is_ok(), "the root is valid: {seen:?}");
    let started = std::time::Instant::now();
    let error = Environment::connect(&as_real(closed.to_string()), Default::default()).await.err().unwrap();
    assert!(matches!(error, TargetError::Preflight(_)), "{error}");
    let message = error.to_string();
    assert!(message.contains(&format!("nothing accepts connections at the proxy address {closed}")), "{message}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "it fails in seconds");

    let cluster = ClusterClient::connect(Some(loopback.kubeconfig()), None).await.unwrap();
    cluster.serves("projectcontour.io/v1", "HTTPProxy").await.expect("loopback serves the CRD");
    assert!(cluster.serves("example.test/v1", "Nothing").await.is_err(), "a kind nobody serves");

    let ready = Environment::connect(&as_real(loopback.proxy_address().to_string()), Default::default()).await;
    ready.expect("a ready cluster passes the preflight").shutdown().await;
    loopback.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_whose_proxy_does_not_work_fails_the_canary_before_any_scenario() {
    use harness::runner::RunSettings;
    use harness::target::{Environment, TargetConfig, TargetError};
    harness::init_crypto();
    // The controller ignores the TLS annotation: the proxy speaks plain HTTP to a TLS port.
    let config = loopback::LoopbackConfig {
        faults: vec![loopback::Fault::IgnoreUpstreamProtocolAnnotation],
        ..Default::default()
    };
    let loopback = loopback::Loopback::start(config).await.expect("loopback starts");
    let secret: harness::install::SecretRef = "upstream-tls-conformance/envoy-client".parse().unwrap();
    let as_real = TargetConfig::Cluster {
        kubeconfig: Some(loopback.kubeconfig().to_path_buf()),
        context: None,
        proxy: loopback.proxy_address().to_string(),
        tls_proxy: None,
        installation: harness::install::Installation { client_certificate: Some(secret.clone()), ..Default::default() },
        known_failures: Vec::new(),
    };
    let settings = RunSettings { traffic_limit: std::time::Duration::from_secs(3), ..Default::default() };
    let error = Environment::connect(&as_real, settings).await.err().expect("the canary fails");
    // What the run wrote before the canary is gone with it: the Secret and the namespace it made.
    let cluster = ClusterClient::connect(Some(loopback.kubeconfig()), None).await.unwrap();
    assert!(cluster.get(&secret.object_ref()).await.unwrap().is_none(), "{secret} is removed");
    let namespace = harness::cluster::ObjectRef {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        namespace: None,
        name: secret.namespace.clone(),
    };
    assert!(cluster.get(&namespace).await.unwrap().is_none(), "its namespace, made by the run, is removed");
    assert!(matches!(error, TargetError::Preflight(_)), "{error}");
    let message = error.to_string();
    assert!(message.contains("the canary (one TLS backend behind one HTTPProxy"), "{message}");
    assert!(message.contains("expected status 200, got 400"), "{message}");
    assert!(message.contains("pod echo-") && message.contains("Running, ready"), "{message}");
    assert!(message.contains("kubectl -n projectcontour logs deployment/contour"), "{message}");
    loopback.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_cluster_run_removes_the_client_certificate_it_wrote_and_only_its_own_namespace() {
    use harness::install::{Installation, SecretRef};
    use harness::target::{Environment, TargetConfig};
    harness::init_crypto();
    let loopback = loopback::Loopback::start(Default::default()).await.expect("loopback starts");
    let cluster = ClusterClient::connect(Some(loopback.kubeconfig()), None).await.unwrap();
    // One namespace exists before the run (as `projectcontour` would), one does not.
    cluster.create_namespace("theirs", "not-a-run").await.unwrap();
    let namespace = |name: &str| harness::cluster::ObjectRef {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        namespace: None,
        name: name.into(),
    };
    for (secret, namespace_is_ours) in [("upstream-tls-conformance/envoy-client", true), ("theirs/envoy-client", false)]
    {
        let secret: SecretRef = secret.parse().unwrap();
        let as_real = TargetConfig::Cluster {
            kubeconfig: Some(loopback.kubeconfig().to_path_buf()),
            context: None,
            proxy: loopback.proxy_address().to_string(),
            tls_proxy: None,
            installation: Installation { client_certificate: Some(secret.clone()), ..Default::default() },
            known_failures: Vec::new(),
        };
        let environment = Environment::connect(&as_real, Default::default()).await.expect("it connects");
        assert!(cluster.get(&secret.object_ref()).await.unwrap().is_some(), "the run wrote the Secret");
        let removed = environment.remove_installation_state(std::time::Duration::from_secs(60)).await.unwrap();
        environment.shutdown().await;
        assert!(cluster.get(&secret.object_ref()).await.unwrap().is_none(), "{secret} is removed");
        let left = cluster.get(&namespace(&secret.namespace)).await.unwrap();
        assert_eq!(left.is_none(), namespace_is_ours, "{removed:?}");
    }
    loopback.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_cluster_run_makes_the_gateway_it_needs_waits_for_it_and_removes_it() {
    use harness::install::{GatewaySetup, Installation};
    use harness::target::{Environment, TargetConfig};
    use loopback::config::{ControllerKind, GatewayConfig};
    harness::init_crypto();
    if !loopback::contour::built_for_tests() {
        return;
    }
    let setup = GatewaySetup::loopback();
    let config = loopback::LoopbackConfig {
        controller: ControllerKind::Contour,
        gateway: Some(GatewayConfig { gateway_ref: setup.gateway.clone(), crds: None }),
        ..Default::default()
    };
    let loopback = loopback::Loopback::start(config).await.expect("loopback in Gateway mode starts");
    let cluster = ClusterClient::connect(Some(loopback.kubeconfig()), None).await.unwrap();
    // The Gateway's namespace exists before the run, as an installation's would.
    cluster.create_namespace(&setup.gateway.namespace, "not-a-run").await.unwrap();
    let object = |kind: &str, namespace: Option<&str>, name: &str| harness::cluster::ObjectRef {
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: kind.into(),
        namespace: namespace.map(str::to_string),
        name: name.into(),
    };
    let gateway = object("Gateway", Some(&setup.gateway.namespace), &setup.gateway.name);
    let class = object("GatewayClass", None, &setup.class_name);
    let as_real = TargetConfig::Cluster {
        kubeconfig: Some(loopback.kubeconfig().to_path_buf()),
        context: None,
        proxy: loopback.proxy_address().to_string(),
        tls_proxy: None,
        installation: Installation { gateway: Some(setup.clone()), ..Default::default() },
        known_failures: Vec::new(),
    };
    let environment = Environment::connect(&as_real, Default::default()).await.expect("it connects");
    let made = cluster.get(&gateway).await.unwrap().expect("the run made the Gateway");
    let programmed = made["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Programmed" && c["status"] == "True");
    assert!(programmed, "the run waited until Contour programmed it: {made}");
    assert!(cluster.get(&class).await.unwrap().is_some(), "and its class");
    let removed = environment.remove_installation_state(std::time::Duration::from_secs(60)).await.unwrap();
    environment.shutdown().await;
    assert!(cluster.get(&gateway).await.unwrap().is_none(), "the Gateway is removed: {removed:?}");
    assert!(cluster.get(&class).await.unwrap().is_none(), "the class is removed: {removed:?}");
    let namespace = harness::cluster::ObjectRef {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        namespace: None,
        name: setup.gateway.namespace.clone(),
    };
    assert!(cluster.get(&namespace).await.unwrap().is_some(), "a namespace it did not make stays: {removed:?}");
    loopback.shutdown().await;
}

/// A scenario's objects go only into its own namespaces: anything else (another namespace, a
/// Namespace, any object of no namespace) is refused by the harness before the cluster sees
/// it, so that nothing is left where a real cluster's clean-up would not reach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_outside_a_scenario_s_own_namespaces_are_not_applied() {
    harness::init_crypto();
    let loopback = loopback::Loopback::start(Default::default()).await.expect("loopback starts");
    let cluster = ClusterClient::connect(Some(loopback.kubeconfig()), None).await.unwrap();
    for ns in ["own", "extra"] {
        cluster.create_namespace(ns, "test-run").await.unwrap();
    }
    let secret = |namespace: Option<&str>| {
        let mut object = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}});
        if let Some(namespace) = namespace {
            object["metadata"]["namespace"] = namespace.into();
        }
        object
    };
    let own = ["own", "extra"];
    let applied = cluster.apply_confined(&secret(None), &own).await.unwrap();
    assert_eq!(applied.namespace.as_deref(), Some("own"), "the first is the default");
    cluster.apply_confined(&secret(Some("extra")), &own).await.unwrap();

    let namespace = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "stray"}});
    let refusals = [
        (
            secret(Some("default")),
            "v1/Secret @ default/s: not applied: namespace default is not one of the scenario's own (own, extra)",
        ),
        (namespace, "v1/Namespace @ stray: not applied: Namespace objects belong to no namespace"),
    ];
    for (object, expected) in refusals {
        let error = cluster.apply_confined(&object, &own).await.expect_err("refused").to_string();
        assert!(error.starts_with(expected), "{error}");
        let reference = harness::cluster::object_ref(&object).unwrap();
        assert!(cluster.get(&reference).await.unwrap().is_none(), "{reference} was not made");
    }
    loopback.shutdown().await;
}
