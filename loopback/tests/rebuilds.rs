//! What loopback measures of the controller's hold-off ([`loopback::Rebuilds`]), held against
//! the rule both controllers follow: a change that comes within the longest hold-off (500 ms)
//! of the last rebuild waits at least the hold-off delay (100 ms) for the next one.
//!
//! The real Contour's part needs Contour built by `scripts/ensure-contour` (see
//! `tests/contour.rs` for what happens without it).

use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Config};
use loopback::config::ControllerKind;
use loopback::{LatencyProfile, Loopback, LoopbackConfig, Rebuilds};
use serde_json::json;

mod support;

/// Far longer than either controller takes; only there so a bug fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(60);
/// Contour's `HoldoffDelay` and `HoldoffMaxDelay`, which loopback's `kind` profile copies.
const HOLD_OFF: Duration = Duration::from_millis(100);
const LONGEST_HOLD_OFF: Duration = Duration::from_millis(500);

async fn proxies(loopback: &Loopback) -> Api<DynamicObject> {
    let kubeconfig = Kubeconfig::read_from(loopback.kubeconfig()).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    let client = Client::try_from(config).unwrap();
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("projectcontour.io", "v1", "HTTPProxy"));
    Api::namespaced_with(client, "default", &resource)
}

/// Writes a proxy named `name` and waits until the controller has written its status.
async fn write_and_await_status(proxies: &Api<DynamicObject>, name: &str) {
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "projectcontour.io/v1", "kind": "HTTPProxy",
        "metadata": {"name": name},
        "spec": {"virtualhost": {"fqdn": format!("{name}.test")}, "routes": [{"services": [{"name": "none", "port": 80}]}]},
    }))
    .unwrap();
    proxies.patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&object)).await.unwrap();
    let reconciled = |object: Option<&DynamicObject>| {
        object.is_some_and(|o| o.data["status"]["currentStatus"].as_str().is_some_and(|s| s != "NotReconciled"))
    };
    tokio::time::timeout(LIMIT, support::until(proxies, name, reconciled))
        .await
        .expect("the controller writes a status in time");
}

/// Waits until `rebuilds` has recorded a change written at or after `after`, and a rebuild
/// that began at or after that change (the recording follows the store, and the real
/// Contour's log, a moment behind); returns when the change was written.
async fn recorded(rebuilds: &Rebuilds, after: Instant) -> Instant {
    let both = async {
        loop {
            let written = rebuilds.writes().into_iter().find(|w| w.at >= after).map(|w| w.at);
            if let Some(written) = written
                && rebuilds.rebuild_times().iter().any(|r| *r >= written)
            {
                return written;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(LIMIT, both).await.expect("the change and the rebuild that took it in are recorded")
}

/// Writes a proxy, then another as soon as the first has its status (so, nearly always,
/// within the longest hold-off of the rebuild that took the first in), and checks what
/// loopback measured of the second against the rule.
async fn a_change_soon_after_a_rebuild_is_measured_waiting_the_hold_off(config: LoopbackConfig) {
    let loopback = Loopback::start(config).await.expect("loopback starts");
    let proxies = proxies(&loopback).await;
    write_and_await_status(&proxies, "first").await;
    let before_second = Instant::now();
    write_and_await_status(&proxies, "second").await;
    let rebuilds = loopback.rebuilds();
    let written = recorded(rebuilds, before_second).await;
    let namespaces = ["default".to_string()];
    let held_off = rebuilds.held_off(&namespaces, before_second, Instant::now()).expect("no change was missed");
    let times = rebuilds.rebuild_times();
    let last_rebuild = times.iter().rev().find(|r| **r < written).expect("the first proxy's rebuild is recorded");
    if written - *last_rebuild <= LONGEST_HOLD_OFF {
        assert!(
            held_off >= HOLD_OFF,
            "written {:?} after a rebuild, yet measured waiting {held_off:?}",
            written - *last_rebuild
        );
    } else {
        // Only on a machine so loaded that writing took longer than the longest hold-off.
        eprintln!("the second proxy came {:?} after the last rebuild: acted on at once", written - *last_rebuild);
    }
    assert!(held_off < LIMIT);
    loopback.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_controller_at_kinds_pace_is_measured_holding_off() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config = LoopbackConfig { latency: LatencyProfile::Kind, ..Default::default() };
    a_change_soon_after_a_rebuild_is_measured_waiting_the_hold_off(config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_contour_is_measured_holding_off_from_its_log() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    if !loopback::contour::built_for_tests() {
        return;
    }
    let config = LoopbackConfig { controller: ControllerKind::Contour, ..Default::default() };
    a_change_soon_after_a_rebuild_is_measured_waiting_the_hold_off(config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_hold_off_every_change_is_rebuilt_after_it_is_written() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let loopback = Loopback::start(LoopbackConfig::default()).await.expect("loopback starts");
    let proxies = proxies(&loopback).await;
    let before = Instant::now();
    write_and_await_status(&proxies, "only").await;
    // A rebuild follows the change, and it is recorded.
    recorded(loopback.rebuilds(), before).await;
    loopback.shutdown().await;
}
