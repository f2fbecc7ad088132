//! The EndpointSlice controller, as kube-controller-manager runs it: one slice per Service
//! with a selector, listing the ready pods it selects and the ports they serve.
//!
//! Contour learns endpoints only from EndpointSlices, so the real controller needs them; the
//! reference controller reads pods directly and ignores them. Simplified: one slice per
//! Service (named `<service>-loopback`, where Kubernetes generates a suffix), IPv4 only, and
//! only ready pods (Kubernetes also lists the others with `ready: false`, which Contour skips).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::api::kinds::{ENDPOINT_SLICE, POD, SERVICE};
use crate::api::store::{Store, Subresource};
use crate::kubelet::deployments::pod_is_ready;

/// The label tying a slice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// One pass: every Service's slice made current, slices of Services that are gone removed.
pub fn sync(store: &Store) {
    let (services, _) = store.list(&SERVICE, None);
    let (pods, _) = store.list(&POD, None);
    let (slices, _) = store.list(&ENDPOINT_SLICE, None);
    let existing: HashMap<(&str, &str), &Value> = slices
        .iter()
        .filter_map(|s| Some(((s["metadata"]["namespace"].as_str()?, s["metadata"]["name"].as_str()?), &**s)))
        .collect();
    let mut wanted = BTreeSet::new();
    for service in &services {
        let meta = &service["metadata"];
        let (Some(namespace), Some(name)) = (meta["namespace"].as_str(), meta["name"].as_str()) else { continue };
        let Some(slice) = desired_slice(service, &pods) else { continue };
        let slice_name = format!("{name}-loopback");
        wanted.insert((namespace.to_string(), slice_name.clone()));
        let current = existing.get(&(namespace, slice_name.as_str()));
        // Most passes change nothing: the slice is not written then (nor copied to be).
        if current.is_some_and(|c| FIELDS.iter().all(|f| c[*f] == slice[*f])) {
            continue;
        }
        write(store, namespace, &slice_name, slice);
    }
    for slice in &slices {
        let meta = &slice["metadata"];
        let (Some(namespace), Some(name)) = (meta["namespace"].as_str(), meta["name"].as_str()) else { continue };
        let ours = meta["labels"][MANAGED_BY_LABEL].as_str() == Some(MANAGED_BY);
        if ours && !wanted.contains(&(namespace.to_string(), name.to_string())) {
            // Already gone is fine.
            let _ = store.delete(&ENDPOINT_SLICE, namespace, name);
        }
    }
}

/// What the controller writes of a slice.
const FIELDS: [&str; 3] = ["addressType", "endpoints", "ports"];

/// Creates the slice, or replaces its contents when they changed (an unchanged write is not
/// stored, so watchers see no event).
fn write(store: &Store, namespace: &str, name: &str, slice: Value) {
    let updated = store.modify(&ENDPOINT_SLICE, namespace, name, Subresource::Main, |stored| {
        for field in FIELDS {
            stored[field] = slice[field].clone();
        }
    });
    if updated.is_none()
        && let Err(err) = store.create(&ENDPOINT_SLICE, namespace, slice)
    {
        tracing::warn!(%namespace, slice = name, "cannot create EndpointSlice: {err}");
    }
}

/// The slice a Service should have, or `None` for a Service without a selector (its
/// endpoints are someone else's business) or one being deleted.
fn desired_slice(service: &Value, pods: &[Arc<Value>]) -> Option<Value> {
    let meta = &service["metadata"];
    let (namespace, name, uid) = (meta["namespace"].as_str()?, meta["name"].as_str()?, meta["uid"].as_str()?);
    let selector = service["spec"]["selector"].as_object().filter(|s| !s.is_empty())?;
    if meta.get("deletionTimestamp").is_some() {
        return None;
    }
    let selected: Vec<&Value> = pods
        .iter()
        .filter(|pod| pod["metadata"]["namespace"].as_str() == Some(namespace))
        .filter(|pod| pod["metadata"].get("deletionTimestamp").is_none() && pod_is_ready(pod))
        .filter(|pod| selector.iter().all(|(k, v)| pod["metadata"]["labels"].get(k) == Some(v)))
        .filter(|pod| pod["status"]["podIP"].is_string())
        .map(|pod| &**pod)
        .collect();
    let endpoints: Vec<Value> = selected
        .iter()
        .map(|pod| {
            json!({
                "addresses": [pod["status"]["podIP"]],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]},
            })
        })
        .collect();
    let ports: Vec<Value> = service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|port| {
            let number = target_port(port, selected.first().copied())?;
            Some(json!({
                "name": port["name"].as_str().unwrap_or_default(),
                "port": number,
                "protocol": port["protocol"].as_str().unwrap_or("TCP"),
                "appProtocol": port.get("appProtocol"),
            }))
        })
        .map(|mut port| {
            if port["appProtocol"].is_null() {
                port.as_object_mut().map(|p| p.remove("appProtocol"));
            }
            port
        })
        .collect();
    Some(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{name}-loopback"),
            "namespace": namespace,
            "labels": {SERVICE_NAME_LABEL: name, MANAGED_BY_LABEL: MANAGED_BY},
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "Service", "name": name, "uid": uid,
                "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    }))
}

/// The container port a Service port leads to: its number, or a named port of `pod`. A
/// named port no pod serves is left out, as Kubernetes does.
fn target_port(port: &Value, pod: Option<&Value>) -> Option<u64> {
    match &port["targetPort"] {
        Value::Null => port["port"].as_u64(),
        Value::Number(n) => n.as_u64(),
        Value::String(named) => pod?["spec"]["containers"]
            .as_array()?
            .iter()
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .find(|p| p["name"].as_str() == Some(named))
            .and_then(|p| p["containerPort"].as_u64()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::kinds::NAMESPACE;

    fn ready_pod(store: &Store, name: &str, ip: &str, app: &str) {
        let pod = json!({
            "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"containers": [{"name": "c", "ports": [{"name": "tls", "containerPort": 8443}]}]},
        });
        store.create(&POD, "ns", pod).unwrap();
        store.modify(&POD, "ns", name, Subresource::Status, |p| {
            p["status"] = json!({"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]});
        });
    }

    fn slice(store: &Store) -> Option<Value> {
        store.get(&ENDPOINT_SLICE, "ns", "echo-loopback")
    }

    #[test]
    fn a_service_gets_a_slice_of_its_ready_pods_and_loses_it_with_the_service() {
        let store = Store::new();
        store.create(&NAMESPACE, "", json!({"metadata": {"name": "ns"}})).unwrap();
        let service = json!({"metadata": {"name": "echo"}, "spec": {"selector": {"app": "echo"}, "ports": [
            {"name": "https", "port": 443, "targetPort": "tls"},
            {"name": "plain", "port": 80, "targetPort": 8080},
        ]}});
        store.create(&SERVICE, "ns", service).unwrap();
        ready_pod(&store, "echo-1", "127.1.0.2", "echo");
        ready_pod(&store, "other", "127.1.0.3", "other");
        sync(&store);
        let got = slice(&store).expect("a slice for the Service");
        assert_eq!(got["metadata"]["labels"][SERVICE_NAME_LABEL], "echo");
        assert_eq!(got["endpoints"].as_array().unwrap().len(), 1, "only the selected pod: {got}");
        assert_eq!(got["endpoints"][0]["addresses"], json!(["127.1.0.2"]));
        assert_eq!(
            got["ports"],
            json!([
                {"name": "https", "port": 8443, "protocol": "TCP"},
                {"name": "plain", "port": 8080, "protocol": "TCP"},
            ])
        );

        let version = got["metadata"]["resourceVersion"].clone();
        sync(&store);
        assert_eq!(slice(&store).unwrap()["metadata"]["resourceVersion"], version, "no change, no write");

        store.delete(&SERVICE, "ns", "echo").unwrap();
        sync(&store);
        assert!(slice(&store).is_none());
    }
}
