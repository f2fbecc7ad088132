//! The real Contour controller inside loopback: it starts against loopback's API server,
//! writes HTTPProxy statuses itself, and stops with the cluster.
//!
//! Needs Contour built by `scripts/ensure-contour`. Without it these tests pass with a loud
//! note, unless `UPSTREAM_TLS_REQUIRE_CONTOUR=1` (as CI sets), which makes that a failure.

use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Config};
use loopback::config::ControllerKind;
use loopback::{Loopback, LoopbackConfig};
use serde_json::{Value, json};

mod support;

/// Far longer than Contour takes; only there so a bug fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(60);

async fn client(loopback: &Loopback) -> Client {
    let kubeconfig = Kubeconfig::read_from(loopback.kubeconfig()).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    Client::try_from(config).unwrap()
}

fn api(client: &Client, group: &str, version: &str, kind: &str, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    Api::namespaced_with(client.clone(), namespace, &resource)
}

async fn apply(api: &Api<DynamicObject>, object: Value) {
    let name = object["metadata"]["name"].as_str().unwrap().to_string();
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    api.patch(&name, &PatchParams::apply("test").force(), &Patch::Apply(&object)).await.unwrap();
}

/// The Contour processes serving this cluster (found by its kubeconfig on their command line,
/// so Contours other tests start at the same time do not count).
fn contour_pids(kubeconfig: &std::path::Path) -> Vec<String> {
    let pattern = format!("contour serve --kubeconfig={}", kubeconfig.display());
    let output = std::process::Command::new("pgrep").args(["-f", &pattern]).output();
    output
        .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contour_writes_its_own_status_for_a_missing_ca_secret_and_stops_with_the_cluster() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    if !loopback::contour::built_for_tests() {
        return;
    }
    let config = LoopbackConfig { controller: ControllerKind::Contour, ..Default::default() };
    let loopback = Loopback::start(config).await.expect("loopback starts with Contour");
    assert!(loopback.contour_log().is_some_and(|log| log.is_file()), "Contour's log is kept");
    let client = client(&loopback).await;
    let services = api(&client, "", "v1", "Service", "default");
    apply(
        &services,
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "echo", "annotations": {"projectcontour.io/upstream-protocol.tls": "8443"}},
            "spec": {"selector": {"app": "echo"}, "ports": [{"name": "https", "port": 8443}]},
        }),
    )
    .await;
    let proxies = api(&client, "projectcontour.io", "v1", "HTTPProxy", "default");
    apply(
        &proxies,
        json!({
            "apiVersion": "projectcontour.io/v1", "kind": "HTTPProxy",
            "metadata": {"name": "p"},
            "spec": {
                "virtualhost": {"fqdn": "p.test"},
                "routes": [{"services": [{
                    "name": "echo", "port": 8443,
                    "validation": {"caSecret": "missing-ca", "subjectName": "echo.test"},
                }]}],
            },
        }),
    )
    .await;
    let invalid = |object: Option<&DynamicObject>| {
        object.is_some_and(|o| o.data["status"]["currentStatus"].as_str() == Some("invalid"))
    };
    let proxy = tokio::time::timeout(LIMIT, support::until(&proxies, "p", invalid))
        .await
        .expect("Contour writes a status in time")
        .unwrap();
    let condition = &proxy.data["status"]["conditions"][0];
    assert_eq!(condition["reason"], "ErrorPresent", "{condition}");
    let error = &condition["errors"][0];
    assert_eq!(error["reason"], "TLSUpstreamValidation", "{condition}");
    assert_eq!(
        error["message"],
        "Service [echo:8443] TLS upstream validation policy error: invalid CA Secret \"default/missing-ca\": Secret not found",
        "docs/contract.md S3, in Contour's own words"
    );

    let kubeconfig = loopback.kubeconfig().to_owned();
    let running = contour_pids(&kubeconfig);
    assert_eq!(running.len(), 1, "the process check sees this cluster's Contour while it runs: {running:?}");
    loopback.shutdown().await;
    let left = contour_pids(&kubeconfig);
    assert!(left.is_empty(), "Contour processes left after shutdown: {left:?}");
}

/// The thread that asks for a cluster may end long before the cluster does (libtest-mimic's
/// workers do): Contour must outlive it.
#[test]
fn contour_outlives_the_thread_that_started_the_cluster() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    if !loopback::contour::built_for_tests() {
        return;
    }
    let runtime = std::sync::Arc::new(tokio::runtime::Runtime::new().unwrap());
    let starter = runtime.clone();
    let loopback = std::thread::spawn(move || {
        let config = LoopbackConfig { controller: ControllerKind::Contour, ..Default::default() };
        starter.block_on(Loopback::start(config)).expect("loopback starts with Contour")
    })
    .join()
    .unwrap();
    runtime.block_on(async {
        // Time for a parent-death signal to arrive, had the starting thread's end sent one.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let client = client(&loopback).await;
        let proxies = api(&client, "projectcontour.io", "v1", "HTTPProxy", "default");
        apply(
            &proxies,
            json!({
                "apiVersion": "projectcontour.io/v1", "kind": "HTTPProxy",
                "metadata": {"name": "later"},
                "spec": {"virtualhost": {"fqdn": "later.test"}, "routes": [{"services": [{"name": "none", "port": 80}]}]},
            }),
        )
        .await;
        let reconciled = |object: Option<&DynamicObject>| {
            object.is_some_and(|o| o.data["status"]["currentStatus"].as_str().is_some_and(|s| s != "NotReconciled"))
        };
        tokio::time::timeout(LIMIT, support::until(&proxies, "later", reconciled))
            .await
            .expect("Contour, still running, writes the status");
        loopback.shutdown().await;
    });
}

#[tokio::test]
async fn a_contour_release_that_is_not_built_is_named_with_the_command_that_builds_it() {
    let mut config = LoopbackConfig { controller: ControllerKind::Contour, ..Default::default() };
    config.contour.version = Some("v1.0.0-never-built".into());
    let err = Loopback::start(config).await.err().expect("no such build").to_string();
    assert!(err.contains("Contour v1.0.0-never-built is not built"), "{err}");
    assert!(err.contains("scripts/ensure-contour v1.0.0-never-built"), "{err}");
}

/// Contour's output reaches its log through loopback: when Contour dies at start-up, its
/// last words (here without a final newline) are in the error, whole.
#[tokio::test]
async fn a_contour_that_dies_at_start_up_is_reported_with_its_last_words() {
    let dir = std::env::temp_dir().join(format!("loopback-dying-contour-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let binary = dir.join("contour");
    let lines: String = (1..=2000).map(|n| format!("echo 'starting, line {n}'\n")).collect();
    let script = format!("#!/bin/sh\n{lines}printf 'fatal: the last words' >&2\nexit 7\n");
    std::fs::write(&binary, script).unwrap();
    std::fs::set_permissions(&binary, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut config = LoopbackConfig { controller: ControllerKind::Contour, ..Default::default() };
    config.contour.binary = Some(binary);
    let err = Loopback::start(config).await.err().expect("Contour exits").to_string();
    assert!(err.contains("exit status: 7"), "{err}");
    assert!(err.ends_with("fatal: the last words"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
