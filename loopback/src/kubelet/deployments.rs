//! The Deployment controller: keeps `spec.replicas` pods of the current template and reports
//! the Deployment's status.
//!
//! Simplified: a template change replaces all pods at once (no surge/unavailable budget) and
//! there are no ReplicaSets; pods are owned by their Deployment directly.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use crate::api::kinds::{DEPLOYMENT, POD};
use crate::api::store::{Store, Subresource, now_rfc3339};

/// Label carrying a hash of the pod template a pod was made from.
const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

static POD_SUFFIX: AtomicU64 = AtomicU64::new(0x1_0000);

/// One pass over all Deployments and the pods they own.
pub fn sync(store: &Store) {
    let (deployments, _) = store.list(&DEPLOYMENT, None);
    let (pods, _) = store.list(&POD, None);
    for deployment in &deployments {
        sync_one(store, deployment, &pods);
    }
    collect_orphans(store, &deployments, &pods);
}

fn sync_one(store: &Store, deployment: &Value, pods: &[Arc<Value>]) {
    let meta = &deployment["metadata"];
    let (Some(namespace), Some(name), Some(uid)) =
        (meta["namespace"].as_str(), meta["name"].as_str(), meta["uid"].as_str())
    else {
        return;
    };
    if meta.get("deletionTimestamp").is_some() {
        return;
    }
    let template = &deployment["spec"]["template"];
    let hash = template_hash(template);
    let desired = deployment["spec"]["replicas"].as_u64().unwrap_or(1) as usize;

    let owned: Vec<&Value> = pods.iter().filter(|p| owner_uid(p) == Some(uid)).map(|p| &**p).collect();
    let live: Vec<&Value> =
        owned.iter().copied().filter(|p| p["metadata"].get("deletionTimestamp").is_none()).collect();
    let (current, stale): (Vec<&Value>, Vec<&Value>) =
        live.iter().copied().partition(|p| p["metadata"]["labels"][TEMPLATE_HASH_LABEL].as_str() == Some(&hash));

    for pod in stale.iter().chain(current.iter().skip(desired)) {
        if let Some(pod_name) = pod["metadata"]["name"].as_str() {
            // Already gone is fine.
            let _ = store.delete(&POD, namespace, pod_name);
        }
    }
    for _ in current.len()..desired {
        let pod = new_pod(deployment, namespace, name, uid, &hash);
        if let Err(err) = store.create(&POD, namespace, pod) {
            tracing::warn!(%namespace, deployment = name, "cannot create pod: {err}");
        }
    }

    let current: Vec<&Value> = current.into_iter().take(desired).collect();
    let ready = current.iter().filter(|p| pod_is_ready(p)).count();
    let generation = meta["generation"].clone();
    let available = ready >= desired;
    store.modify(&DEPLOYMENT, namespace, name, Subresource::Status, |d| {
        let previous = d["status"]["conditions"][0].clone();
        let condition_status = if available { "True" } else { "False" };
        let transition = if previous["status"].as_str() == Some(condition_status) {
            previous["lastTransitionTime"].clone()
        } else {
            json!(now_rfc3339())
        };
        d["status"] = json!({
            "observedGeneration": generation,
            "replicas": current.len(),
            "updatedReplicas": current.len(),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": desired.saturating_sub(ready),
            "conditions": [{
                "type": "Available",
                "status": condition_status,
                "reason": if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                "message": if available {
                    "Deployment has minimum availability."
                } else {
                    "Deployment does not have minimum availability."
                },
                "lastTransitionTime": transition,
            }],
        });
    });
}

/// Deletes pods whose owning Deployment is gone, as the garbage collector does.
fn collect_orphans(store: &Store, deployments: &[Arc<Value>], pods: &[Arc<Value>]) {
    for pod in pods {
        let Some(owner) = owner_uid(pod) else { continue };
        if deployments.iter().any(|d| d["metadata"]["uid"].as_str() == Some(owner)) {
            continue;
        }
        if pod["metadata"].get("deletionTimestamp").is_some() {
            continue;
        }
        let (Some(ns), Some(name)) = (pod["metadata"]["namespace"].as_str(), pod["metadata"]["name"].as_str()) else {
            continue;
        };
        let _ = store.delete(&POD, ns, name);
    }
}

fn new_pod(deployment: &Value, namespace: &str, name: &str, uid: &str, hash: &str) -> Value {
    let template = &deployment["spec"]["template"];
    let suffix = POD_SUFFIX.fetch_add(1, Ordering::Relaxed);
    let mut labels = template["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    labels[TEMPLATE_HASH_LABEL] = json!(hash);
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": format!("{name}-{hash}-{suffix:x}"),
            "namespace": namespace,
            "labels": labels,
            "annotations": template["metadata"]["annotations"].clone(),
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": name,
                "uid": uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": template["spec"].clone(),
        "status": {"phase": "Pending"},
    })
}

fn template_hash(template: &Value) -> String {
    let mut hasher = DefaultHasher::new();
    template.to_string().hash(&mut hasher);
    format!("{:08x}", hasher.finish() as u32)
}

fn owner_uid(pod: &Value) -> Option<&str> {
    pod["metadata"]["ownerReferences"].as_array()?.iter().find(|r| r["kind"] == "Deployment")?["uid"].as_str()
}

/// Whether a pod's `Ready` condition is `True`.
pub fn pod_is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::kinds::NAMESPACE;

    fn setup() -> Store {
        let store = Store::new();
        store.create(&NAMESPACE, "", json!({"metadata": {"name": "a"}})).unwrap();
        let deployment = json!({
            "metadata": {"name": "echo"},
            "spec": {"replicas": 1, "template": {"metadata": {"labels": {"app": "echo"}}, "spec": {"containers": []}}},
        });
        store.create(&DEPLOYMENT, "a", deployment).unwrap();
        store
    }

    #[test]
    fn creates_one_pod_per_replica_and_reports_unavailable() {
        let store = setup();
        sync(&store);
        sync(&store);
        let (pods, _) = store.list(&POD, Some("a"));
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0]["metadata"]["labels"]["app"], "echo");
        let d = store.get(&DEPLOYMENT, "a", "echo").unwrap();
        assert_eq!(d["status"]["conditions"][0]["status"], "False");
        assert_eq!(d["status"]["observedGeneration"], 1);
    }

    #[test]
    fn template_change_replaces_pods_and_orphans_are_collected() {
        let store = setup();
        sync(&store);
        let mut d = store.get(&DEPLOYMENT, "a", "echo").unwrap();
        d["spec"]["template"]["metadata"]["labels"]["v"] = json!("2");
        store.update(&DEPLOYMENT, "a", "echo", d, Subresource::Main).unwrap();
        sync(&store);
        let (pods, _) = store.list(&POD, Some("a"));
        let live: Vec<_> = pods.iter().filter(|p| p["metadata"].get("deletionTimestamp").is_none()).collect();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0]["metadata"]["labels"]["v"], "2");
        store.delete(&DEPLOYMENT, "a", "echo").unwrap();
        sync(&store);
        let (pods, _) = store.list(&POD, Some("a"));
        assert!(pods.iter().all(|p| p["metadata"].get("deletionTimestamp").is_some()));
    }
}
