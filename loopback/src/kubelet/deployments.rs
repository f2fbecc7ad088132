//! The Deployment controller: keeps `spec.replicas` pods of the current template and reports
//! the Deployment's status.
//!
//! Simplified: a template change replaces all pods at once (no surge/unavailable budget) and
//! there are no ReplicaSets; pods are owned by their Deployment directly.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::Hasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use crate::api::kinds::{DEPLOYMENT, POD};
use crate::api::store::{Store, Subresource, now_rfc3339};

/// Label carrying a hash of the pod template a pod was made from.
const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

static POD_SUFFIX: AtomicU64 = AtomicU64::new(0x1_0000);

/// The Deployment controller's memory between passes: each Deployment's template hash, by
/// uid, for the generation it was computed at (the template is part of the spec, so a new
/// template means a new generation). Hashing a template means writing it out as JSON, which
/// every pass would otherwise do for every Deployment of the cluster.
#[derive(Default)]
pub struct Deployments {
    template_hashes: HashMap<String, (i64, String)>,
}

impl Deployments {
    /// One pass over all Deployments and the pods they own.
    pub fn sync(&mut self, store: &Store) {
        let (deployments, _) = store.list(&DEPLOYMENT, None);
        let (pods, _) = store.list(&POD, None);
        let mut owned: HashMap<&str, Vec<&Value>> = HashMap::new();
        for pod in &pods {
            if let Some(uid) = owner_uid(pod) {
                owned.entry(uid).or_default().push(pod);
            }
        }
        for deployment in &deployments {
            let meta = &deployment["metadata"];
            let uid = meta["uid"].as_str().unwrap_or_default();
            let generation = meta["generation"].as_i64().unwrap_or_default();
            let hash = match self.template_hashes.get(uid) {
                Some((known, hash)) if *known == generation => hash.clone(),
                _ => {
                    let hash = template_hash(&deployment["spec"]["template"]);
                    self.template_hashes.insert(uid.to_string(), (generation, hash.clone()));
                    hash
                }
            };
            sync_one(store, deployment, &hash, owned.get(uid).map_or(&[], Vec::as_slice));
        }
        let owners: HashSet<&str> = deployments.iter().filter_map(|d| d["metadata"]["uid"].as_str()).collect();
        self.template_hashes.retain(|uid, _| owners.contains(uid.as_str()));
        collect_orphans(store, &owners, &pods);
    }
}

/// Brings one Deployment's pods (`owned`: those it owns) and status up to date; `hash` is its
/// template's.
fn sync_one(store: &Store, deployment: &Value, hash: &str, owned: &[&Value]) {
    let meta = &deployment["metadata"];
    let (Some(namespace), Some(name), Some(uid)) =
        (meta["namespace"].as_str(), meta["name"].as_str(), meta["uid"].as_str())
    else {
        return;
    };
    if meta.get("deletionTimestamp").is_some() {
        return;
    }
    let desired = deployment["spec"]["replicas"].as_u64().unwrap_or(1) as usize;

    let live: Vec<&Value> =
        owned.iter().copied().filter(|p| p["metadata"].get("deletionTimestamp").is_none()).collect();
    let (current, stale): (Vec<&Value>, Vec<&Value>) =
        live.iter().copied().partition(|p| p["metadata"]["labels"][TEMPLATE_HASH_LABEL].as_str() == Some(hash));

    for pod in stale.iter().chain(current.iter().skip(desired)) {
        if let Some(pod_name) = pod["metadata"]["name"].as_str() {
            // Already gone is fine.
            let _ = store.delete(&POD, namespace, pod_name);
        }
    }
    for _ in current.len()..desired {
        let pod = new_pod(deployment, namespace, name, uid, hash);
        if let Err(err) = store.create(&POD, namespace, pod) {
            tracing::warn!(%namespace, deployment = name, "cannot create pod: {err}");
        }
    }

    let current: Vec<&Value> = current.into_iter().take(desired).collect();
    let ready = current.iter().filter(|p| pod_is_ready(p)).count();
    let status = |previous: &Value| deployment_status(previous, &meta["generation"], current.len(), ready, desired);
    // Most passes change nothing: the Deployment is not written then (nor copied to be).
    if deployment["status"] == status(&deployment["status"]) {
        return;
    }
    store.modify(&DEPLOYMENT, namespace, name, Subresource::Status, |d| d["status"] = status(&d["status"]));
}

/// A Deployment's status for `current` pods of its template, `ready` of them ready, keeping
/// the condition's transition time from `previous` when its status stays the same.
fn deployment_status(previous: &Value, generation: &Value, current: usize, ready: usize, desired: usize) -> Value {
    let previous = &previous["conditions"][0];
    let available = ready >= desired;
    let condition_status = if available { "True" } else { "False" };
    let transition = if previous["status"].as_str() == Some(condition_status) {
        previous["lastTransitionTime"].clone()
    } else {
        json!(now_rfc3339())
    };
    json!({
        "observedGeneration": generation,
        "replicas": current,
        "updatedReplicas": current,
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
    })
}

/// Deletes pods whose owning Deployment is gone, as the garbage collector does.
fn collect_orphans(store: &Store, owners: &HashSet<&str>, pods: &[Arc<Value>]) {
    for pod in pods {
        let Some(owner) = owner_uid(pod) else { continue };
        if owners.contains(owner) {
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
    /// Feeds the template's JSON to the hasher as it is written, with no string in between.
    struct Feed(DefaultHasher);
    impl std::io::Write for Feed {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.write(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut feed = Feed(DefaultHasher::new());
    // Writing JSON to a sink that cannot fail does not fail.
    let _ = serde_json::to_writer(&mut feed, template);
    format!("{:08x}", feed.0.finish() as u32)
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
        let mut deployments = Deployments::default();
        deployments.sync(&store);
        deployments.sync(&store);
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
        let mut deployments = Deployments::default();
        deployments.sync(&store);
        let mut d = store.get(&DEPLOYMENT, "a", "echo").unwrap();
        d["spec"]["template"]["metadata"]["labels"]["v"] = json!("2");
        store.update(&DEPLOYMENT, "a", "echo", d, Subresource::Main).unwrap();
        deployments.sync(&store);
        let (pods, _) = store.list(&POD, Some("a"));
        let live: Vec<_> = pods.iter().filter(|p| p["metadata"].get("deletionTimestamp").is_none()).collect();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0]["metadata"]["labels"]["v"], "2");
        store.delete(&DEPLOYMENT, "a", "echo").unwrap();
        deployments.sync(&store);
        let (pods, _) = store.list(&POD, Some("a"));
        assert!(pods.iter().all(|p| p["metadata"].get("deletionTimestamp").is_some()));
    }
}
