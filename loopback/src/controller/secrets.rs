//! How the controller reads Secrets: [`Secrets`]. Normally live from the store; under the
//! `ignore-secret-events` fault from a [`SecretSnapshot`] of each namespace, refreshed only
//! when something other than a Secret changes there — the bug of a controller that does not
//! watch Secrets.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::api::Store;
use crate::api::kinds::SECRET;

/// Where the controller reads Secrets from during one rebuild.
#[derive(Clone, Copy)]
pub enum Secrets<'a> {
    Live(&'a Store),
    Snapshot(&'a SecretSnapshot),
}

impl Secrets<'_> {
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Value>> {
        match self {
            Secrets::Live(store) => store.get_shared(&SECRET, namespace, name),
            Secrets::Snapshot(snapshot) => snapshot.get(namespace, name),
        }
    }
}

/// Secrets by namespace, as last refreshed.
#[derive(Default)]
pub struct SecretSnapshot {
    namespaces: Mutex<HashMap<String, HashMap<String, Arc<Value>>>>,
}

impl SecretSnapshot {
    /// Re-reads the Secrets of `namespaces`, or of every namespace when `None`.
    pub fn refresh(&self, store: &Store, namespaces: Option<&BTreeSet<String>>) {
        let (secrets, _) = store.list(&SECRET, None);
        let mut by_namespace: HashMap<String, HashMap<String, Arc<Value>>> = HashMap::new();
        for secret in secrets {
            let meta = &secret["metadata"];
            let (Some(ns), Some(name)) = (meta["namespace"].as_str(), meta["name"].as_str()) else { continue };
            by_namespace.entry(ns.to_string()).or_default().insert(name.to_string(), secret);
        }
        let mut snapshot = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        match namespaces {
            None => *snapshot = by_namespace,
            Some(list) => {
                for ns in list {
                    snapshot.insert(ns.clone(), by_namespace.remove(ns).unwrap_or_default());
                }
            }
        }
    }

    fn get(&self, namespace: &str, name: &str) -> Option<Arc<Value>> {
        let snapshot = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        snapshot.get(namespace)?.get(name).cloned()
    }
}
