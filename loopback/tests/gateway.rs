//! The Gateway API front door: a loopback cluster configured with `gateway` serves the kinds
//! of the Contour release's Gateway API CRDs (defaulted and validated from their schemas,
//! generation bumped on spec changes only), the real Contour reconciles the named Gateway,
//! and Envoy listens where the Gateway's HTTP listener says (port 80 → 8080, the address
//! the harness already sends to).
//!
//! Without Contour (no Go) or Envoy (no wheel) this test passes with a loud note, unless
//! `UPSTREAM_TLS_REQUIRE_CONTOUR=1` and `UPSTREAM_TLS_REQUIRE_ENVOY=1` (as CI sets).

use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use loopback::config::{ControllerKind, DataPlaneKind, GatewayConfig, GatewayRef};
use loopback::{Loopback, LoopbackConfig};
use serde_json::{Value, json};

mod support;

use support::client_of;

/// Contour may take a while to build its first DAG after objects appear.
const LIMIT: Duration = Duration::from_secs(60);

const GROUP: &str = "gateway.networking.k8s.io";

fn resource(version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: version.into(),
        api_version: format!("{GROUP}/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// Polls `object` until `done` holds of it, or fails the test after [`LIMIT`] with the last one.
async fn wait_for(api: &Api<DynamicObject>, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let object = serde_json::to_value(api.get(name).await.unwrap()).unwrap();
        if done(&object) {
            return object;
        }
        assert!(started.elapsed() < LIMIT, "{what} never came: {object:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn condition<'v>(conditions: &'v Value, kind: &str) -> Option<&'v Value> {
    conditions.as_array()?.iter().find(|c| c["type"] == kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contour_reconciles_the_named_gateway_and_envoy_listens_for_it() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    if !loopback::contour::built_for_tests() || !loopback::envoy::installed_for_tests() {
        return;
    }
    let gateway_ref = GatewayRef { namespace: "projectcontour".into(), name: "contour".into() };
    let config = LoopbackConfig {
        controller: ControllerKind::Contour,
        data_plane: DataPlaneKind::Envoy,
        gateway: Some(GatewayConfig { gateway_ref: gateway_ref.clone(), crds: None }),
        ..Default::default()
    };
    let loopback = match Loopback::start(config).await {
        Ok(loopback) => loopback,
        Err(e) => panic!("loopback in Gateway mode does not start: {e}"),
    };
    let kube = client_of(&loopback).await;

    // Every group version Contour watches is discovered (it exits at start-up otherwise).
    let groups = kube::discovery::Discovery::new(kube.clone()).run().await.unwrap();
    let gateway_group = groups.groups().find(|g| g.name() == GROUP).expect("the Gateway API group is served");
    let mut versions: Vec<&str> = gateway_group.versions().collect();
    versions.sort_unstable();
    for version in ["v1", "v1alpha2", "v1alpha3", "v1beta1"] {
        assert!(versions.contains(&version), "{GROUP}/{version} is served: {versions:?}");
    }

    let classes: Api<DynamicObject> = Api::all_with(kube.clone(), &resource("v1", "GatewayClass", "gatewayclasses"));
    let class = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": "contour"},
        "spec": {"controllerName": "projectcontour.io/gateway-controller"},
    });
    classes.patch("contour", &PatchParams::apply("gateway-test"), &Patch::Apply(&class)).await.unwrap();
    let gateways: Api<DynamicObject> =
        Api::namespaced_with(kube.clone(), &gateway_ref.namespace, &resource("v1", "Gateway", "gateways"));
    let gateway = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": gateway_ref.name, "namespace": gateway_ref.namespace},
        "spec": {"gatewayClassName": "contour", "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]},
    });
    let applied = gateways
        .patch(&gateway_ref.name, &PatchParams::apply("gateway-test"), &Patch::Apply(&gateway))
        .await
        .expect("the Gateway is admitted");
    let applied = serde_json::to_value(applied).unwrap();
    // The CRD's defaults are filled in: Contour dereferences allowedRoutes unchecked.
    assert_eq!(applied["spec"]["listeners"][0]["allowedRoutes"], json!({"namespaces": {"from": "Same"}}));
    assert_eq!(applied["metadata"]["generation"], 1);

    // Refused as the CRD refuses it: a listener port out of range.
    let mut bad = gateway.clone();
    bad["metadata"]["name"] = json!("bad");
    bad["spec"]["listeners"][0]["port"] = json!(70000);
    let err = gateways.patch("bad", &PatchParams::apply("gateway-test"), &Patch::Apply(&bad)).await.unwrap_err();
    assert!(err.to_string().contains("spec.listeners[0].port"), "{err}");

    let gateway = wait_for(&gateways, &gateway_ref.name, "Gateway Programmed", |gateway| {
        condition(&gateway["status"]["conditions"], "Programmed").is_some_and(|c| c["status"] == "True")
    })
    .await;
    let programmed = condition(&gateway["status"]["conditions"], "Programmed").unwrap();
    assert_eq!(programmed["message"], "Valid Gateway", "{gateway:#}");
    assert_eq!(gateway["metadata"]["generation"], 1, "a status write bumps no generation: {gateway:#}");

    // An HTTPRoute to a Service with no endpoints: Envoy answers 503 on the Gateway's
    // listener, where no route would be 404.
    let services: Api<DynamicObject> = Api::namespaced_with(
        kube.clone(),
        &gateway_ref.namespace,
        &ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&()),
    );
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "nowhere", "namespace": gateway_ref.namespace},
        "spec": {"selector": {"app": "nowhere"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    });
    services.patch("nowhere", &PatchParams::apply("gateway-test"), &Patch::Apply(&service)).await.unwrap();
    let routes: Api<DynamicObject> =
        Api::namespaced_with(kube.clone(), &gateway_ref.namespace, &resource("v1", "HTTPRoute", "httproutes"));
    let route = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "nowhere", "namespace": gateway_ref.namespace},
        "spec": {
            "parentRefs": [{"name": gateway_ref.name}],
            "hostnames": ["nowhere.example.com"],
            "rules": [{"backendRefs": [{"name": "nowhere", "port": 80}]}],
        },
    });
    let applied = routes.patch("nowhere", &PatchParams::apply("gateway-test"), &Patch::Apply(&route)).await.unwrap();
    let applied = serde_json::to_value(applied).unwrap();
    assert_eq!(applied["spec"]["rules"][0]["backendRefs"][0]["kind"], "Service", "{applied:#}");
    assert_eq!(applied["spec"]["rules"][0]["matches"][0]["path"], json!({"type": "PathPrefix", "value": "/"}));
    let route = wait_for(&routes, "nowhere", "HTTPRoute Accepted", |route| {
        condition(&route["status"]["parents"][0]["conditions"], "Accepted").is_some_and(|c| c["status"] == "True")
    })
    .await;
    assert_eq!(route["status"]["parents"][0]["controllerName"], "projectcontour.io/gateway-controller");

    let started = Instant::now();
    let proxy = loopback.proxy_address();
    loop {
        let status = http_status(proxy, "nowhere.example.com").await;
        if status == Some(503) {
            break;
        }
        assert!(started.elapsed() < LIMIT, "Envoy at {proxy} never routed the HTTPRoute: last answer {status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    loopback.shutdown().await;
}

/// The status code of `GET /` with `host` at `address`, if anything answers.
async fn http_status(address: std::net::SocketAddr, host: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.ok()?;
    let line = String::from_utf8_lossy(&answer);
    line.split_whitespace().nth(1)?.parse().ok()
}
