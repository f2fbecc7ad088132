//! The in-memory object store behind the API server: [`Store`].
//!
//! Objects are kept as JSON values, keyed by kind, namespace and name. Every write takes the
//! next resourceVersion from one counter, is appended to a bounded event log and broadcast, so
//! a watch can start from any recent resourceVersion without missing an event. The kubelet and
//! the reference controller run in the same process and read and write through this type, as
//! controllers do through an API server.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::errors::ApiError;
use super::kinds::{self, Kinds, ResourceKind};
use super::openapi;

/// How many past events a watch may resume from.
const EVENT_LOG_LEN: usize = 4096;

/// What happened to an object, as a watch reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to one object.
#[derive(Clone, Debug)]
pub struct WatchEvent {
    pub resource_version: u64,
    pub kind: &'static ResourceKind,
    pub namespace: String,
    pub event_type: EventType,
    pub object: Arc<Value>,
    /// When the store made the change.
    pub at: Instant,
}

/// Which part of an object a write may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    /// Everything but `status` (when the kind has a status subresource).
    Main,
    /// Only `status`.
    Status,
}

/// What [`Changes::next`] yields.
#[derive(Debug)]
pub enum Batch {
    /// Changes to the watched kinds, oldest first; never empty.
    Events(Vec<WatchEvent>),
    /// More changes happened than the store keeps for a slow reader: read everything again.
    Missed,
}

/// A reconciler's view of the store's changes: [`Store::changes`].
pub struct Changes {
    receiver: broadcast::Receiver<WatchEvent>,
    kinds: &'static [&'static ResourceKind],
}

impl Changes {
    /// Waits for a change to one of the watched kinds, then takes every change already
    /// waiting, so that a burst of writes costs one reconcile. `None` once the store is gone.
    pub async fn next(&mut self) -> Option<Batch> {
        let mut events = Vec::new();
        while events.is_empty() {
            match self.receiver.recv().await {
                Ok(event) => events.extend(self.watched(event)),
                Err(RecvError::Lagged(_)) => return Some(Batch::Missed),
                Err(RecvError::Closed) => return None,
            }
        }
        loop {
            match self.receiver.try_recv() {
                Ok(event) => events.extend(self.watched(event)),
                Err(TryRecvError::Lagged(_)) => return Some(Batch::Missed),
                Err(TryRecvError::Empty | TryRecvError::Closed) => return Some(Batch::Events(events)),
            }
        }
    }

    fn watched(&self, event: WatchEvent) -> Option<WatchEvent> {
        self.kinds.contains(&event.kind).then_some(event)
    }
}

type Key = (&'static str, String, String);

#[derive(Default)]
struct Inner {
    resource_version: u64,
    uid_counter: u64,
    objects: BTreeMap<Key, Arc<Value>>,
    log: VecDeque<WatchEvent>,
    /// How long a deleted namespace stays Terminating at the least ([`Store::set_namespace_deletion_delay`]).
    namespace_deletion_delay: Duration,
    /// When each Terminating namespace was deleted.
    terminating_since: HashMap<String, Instant>,
}

/// The shared object store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Mutex<Inner>>,
    events: broadcast::Sender<WatchEvent>,
    kinds: Kinds,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// A store for the built-in kinds.
    pub fn new() -> Self {
        Store::with_kinds(Kinds::built_in())
    }

    /// A store for `kinds`: the built-in ones and those of the cluster's CRDs.
    pub fn with_kinds(kinds: Kinds) -> Self {
        let (events, _) = broadcast::channel(EVENT_LOG_LEN);
        Store { inner: Arc::default(), events, kinds }
    }

    /// The kinds this store keeps, which its API server serves.
    pub fn kinds(&self) -> &Kinds {
        &self.kinds
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the maps consistent (writes are single
        // inserts), so a poisoned lock is still safe to use.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes a deleted namespace stay Terminating for at least `delay`, as namespaces on a
    /// real cluster take seconds to go; [`Store::finish_terminating_namespaces`] then removes
    /// those that are due.
    pub fn set_namespace_deletion_delay(&self, delay: Duration) {
        self.lock().namespace_deletion_delay = delay;
    }

    /// Removes the Terminating namespaces that are empty and whose deletion delay has passed;
    /// returns whether some namespace is still Terminating (so the caller should come back).
    pub fn finish_terminating_namespaces(&self) -> bool {
        let names: Vec<String> = self.lock().terminating_since.keys().cloned().collect();
        for name in &names {
            self.finish_namespace_if_empty(name);
        }
        !self.lock().terminating_since.is_empty()
    }

    /// The latest resourceVersion; increases on every write.
    pub fn resource_version(&self) -> u64 {
        self.lock().resource_version
    }

    /// Changes to objects of `kinds` from now on, for a reconciler that has no reason to wake
    /// for anything else. Subscribe before the first full pass, so nothing falls in between.
    pub fn changes(&self, kinds: &'static [&'static ResourceKind]) -> Changes {
        Changes { receiver: self.events.subscribe(), kinds }
    }

    pub fn get(&self, kind: &'static ResourceKind, namespace: &str, name: &str) -> Option<Value> {
        self.get_shared(kind, namespace, name).map(|v| Value::clone(&v))
    }

    /// The object as stored, shared rather than copied: for readers that only look at it.
    pub fn get_shared(&self, kind: &'static ResourceKind, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.lock().objects.get(&key(kind, namespace, name)).map(Arc::clone)
    }

    /// All objects of a kind, in one namespace or (`None`) in all, with the store's
    /// resourceVersion at the time of listing.
    pub fn list(&self, kind: &'static ResourceKind, namespace: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        let inner = self.lock();
        let from = (kind.plural, namespace.unwrap_or_default().to_string(), String::new());
        let items = inner
            .objects
            .range(from..)
            .take_while(|((plural, ns, _), _)| *plural == kind.plural && namespace.is_none_or(|want| want == ns))
            .map(|(_, v)| Arc::clone(v))
            .collect();
        (items, inner.resource_version)
    }

    /// Creates an object; fills uid, resourceVersion, generation and creationTimestamp.
    ///
    /// # Errors
    /// `AlreadyExists`; `NotFound` when the namespace does not exist; `Forbidden` when it is
    /// being deleted.
    pub fn create(&self, kind: &'static ResourceKind, namespace: &str, mut object: Value) -> Result<Value, ApiError> {
        let name = object_name(&object)?;
        let mut inner = self.lock();
        if kind.namespaced {
            check_namespace_open(&inner, namespace, kind, &name)?;
        }
        let k = key(kind, namespace, &name);
        if inner.objects.contains_key(&k) {
            return Err(ApiError::already_exists(kind, &name));
        }
        inner.uid_counter += 1;
        let uid = format!("10000000-0000-4000-8000-{:012x}", inner.uid_counter);
        let meta = metadata_mut(&mut object);
        meta.insert("uid".into(), json!(uid));
        meta.insert("generation".into(), json!(1));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        if kind.namespaced {
            meta.insert("namespace".into(), json!(namespace));
        } else {
            meta.remove("namespace");
        }
        meta.remove("deletionTimestamp");
        meta.remove("resourceVersion");
        set_type_meta(&mut object, kind);
        if kind.status_subresource && kind != &kinds::NAMESPACE {
            // Clients cannot set status on create when status is a subresource.
            if let Some(map) = object.as_object_mut() {
                map.remove("status");
            }
            // A CRD's default for status shows until a controller writes one (HTTPProxy:
            // `NotReconciled`, "Waiting for controller").
            if let Some(default) = openapi::status_default(kind) {
                object["status"] = default;
            }
        }
        if kind == &kinds::NAMESPACE {
            object["status"] = json!({"phase": "Active"});
        }
        Ok(commit(self, &mut inner, k, object, EventType::Added))
    }

    /// Replaces an object (or its status). A `metadata.resourceVersion` in `object`, when
    /// present, must match the stored one.
    ///
    /// # Errors
    /// `NotFound`, `Conflict` on a stale resourceVersion.
    pub fn update(
        &self,
        kind: &'static ResourceKind,
        namespace: &str,
        name: &str,
        object: Value,
        subresource: Subresource,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let k = key(kind, namespace, name);
        let Some(current) = inner.objects.get(&k).map(|v| Value::clone(v)) else {
            return Err(ApiError::not_found(kind, name));
        };
        if let Some(rv) = object.pointer("/metadata/resourceVersion").and_then(Value::as_str)
            && rv != current["metadata"]["resourceVersion"].as_str().unwrap_or_default()
        {
            return Err(ApiError::conflict(kind, name));
        }
        let next = merge_update(kind, &current, object, subresource);
        if next == current {
            return Ok(current);
        }
        Ok(commit(self, &mut inner, k, next, EventType::Modified))
    }

    /// Reads, changes and writes back an object under one lock, for controllers.
    /// Returns `None` when the object does not exist.
    pub fn modify(
        &self,
        kind: &'static ResourceKind,
        namespace: &str,
        name: &str,
        subresource: Subresource,
        change: impl FnOnce(&mut Value),
    ) -> Option<Value> {
        let mut inner = self.lock();
        let k = key(kind, namespace, name);
        let current = Arc::clone(inner.objects.get(&k)?);
        let mut edited = Value::clone(&current);
        change(&mut edited);
        if edited == *current {
            return Some(edited);
        }
        let next = merge_update(kind, &current, edited, subresource);
        if next == *current {
            return Some(next);
        }
        Some(commit(self, &mut inner, k, next, EventType::Modified))
    }

    /// Deletes an object. A Pod is only marked (deletionTimestamp) until its kubelet calls
    /// [`Store::remove`]; a Namespace is marked Terminating, everything in it is deleted, and
    /// it goes away once its pods have stopped.
    ///
    /// # Errors
    /// `NotFound`.
    pub fn delete(&self, kind: &'static ResourceKind, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let k = key(kind, namespace, name);
        let Some(current) = inner.objects.get(&k).map(|v| Value::clone(v)) else {
            return Err(ApiError::not_found(kind, name));
        };
        if kind == &kinds::POD || kind == &kinds::NAMESPACE {
            if current.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(current);
            }
            let mut marked = current;
            metadata_mut(&mut marked).insert("deletionTimestamp".into(), json!(now_rfc3339()));
            if kind == &kinds::NAMESPACE {
                marked["status"] = json!({"phase": "Terminating"});
            }
            let marked = commit(self, &mut inner, k, marked, EventType::Modified);
            if kind == &kinds::NAMESPACE {
                inner.terminating_since.insert(name.to_string(), Instant::now());
                drop(inner);
                self.empty_namespace(name);
            }
            return Ok(marked);
        }
        inner.objects.remove(&k);
        let mut gone = current;
        bump(&mut inner, &mut gone);
        publish(self, &mut inner, kind, namespace, EventType::Deleted, Arc::new(gone.clone()));
        Ok(gone)
    }

    /// Removes an object for good: a pod whose process has stopped.
    pub fn remove(&self, kind: &'static ResourceKind, namespace: &str, name: &str) {
        let mut inner = self.lock();
        if let Some(gone) = inner.objects.remove(&key(kind, namespace, name)) {
            let mut gone = Value::clone(&gone);
            bump(&mut inner, &mut gone);
            publish(self, &mut inner, kind, namespace, EventType::Deleted, Arc::new(gone));
        }
        drop(inner);
        if kind.namespaced {
            self.finish_namespace_if_empty(namespace);
        }
    }

    fn empty_namespace(&self, namespace: &str) {
        let keys: Vec<Key> = self.lock().objects.keys().filter(|(_, ns, _)| ns == namespace).cloned().collect();
        for (plural, ns, name) in keys {
            let Some(kind) = self.kinds.by_store_plural(plural) else {
                continue;
            };
            // Already-gone objects are fine: the kubelet may have removed a pod meanwhile.
            let _ = self.delete(kind, &ns, &name);
        }
        self.finish_namespace_if_empty(namespace);
    }

    fn finish_namespace_if_empty(&self, namespace: &str) {
        let mut inner = self.lock();
        let ns_key = key(&kinds::NAMESPACE, "", namespace);
        let terminating =
            inner.objects.get(&ns_key).is_some_and(|ns| ns.pointer("/metadata/deletionTimestamp").is_some());
        let empty = !inner.objects.keys().any(|(_, ns, _)| ns == namespace);
        let due = inner
            .terminating_since
            .get(namespace)
            .is_none_or(|since| since.elapsed() >= inner.namespace_deletion_delay);
        if terminating
            && empty
            && due
            && let Some(gone) = inner.objects.remove(&ns_key)
        {
            inner.terminating_since.remove(namespace);
            let mut gone = Value::clone(&gone);
            bump(&mut inner, &mut gone);
            publish(self, &mut inner, &kinds::NAMESPACE, "", EventType::Deleted, Arc::new(gone));
        }
    }

    /// Events after `resource_version` (kept in the log) and a receiver for later ones.
    /// `resource_version` 0 means "from now".
    ///
    /// # Errors
    /// `Gone` (410) when the log no longer reaches back that far.
    pub fn watch_from(
        &self,
        resource_version: u64,
    ) -> Result<(Vec<WatchEvent>, broadcast::Receiver<WatchEvent>), ApiError> {
        let inner = self.lock();
        let receiver = self.events.subscribe();
        if resource_version == 0 || resource_version >= inner.resource_version {
            return Ok((Vec::new(), receiver));
        }
        let oldest = inner.log.front().map_or(inner.resource_version, |e| e.resource_version);
        if resource_version + 1 < oldest {
            return Err(ApiError::gone(resource_version));
        }
        let backlog = inner.log.iter().filter(|e| e.resource_version > resource_version).cloned().collect();
        Ok((backlog, receiver))
    }
}

fn key(kind: &'static ResourceKind, namespace: &str, name: &str) -> Key {
    let ns = if kind.namespaced { namespace.to_string() } else { String::new() };
    (kind.plural, ns, name.to_string())
}

fn check_namespace_open(inner: &Inner, namespace: &str, kind: &ResourceKind, name: &str) -> Result<(), ApiError> {
    match inner.objects.get(&key(&kinds::NAMESPACE, "", namespace)) {
        None => Err(ApiError::namespace_not_found(namespace)),
        Some(ns) if ns.pointer("/metadata/deletionTimestamp").is_some() => {
            Err(ApiError::namespace_terminating(namespace, kind, name))
        }
        Some(_) => Ok(()),
    }
}

fn object_name(object: &Value) -> Result<String, ApiError> {
    match object.pointer("/metadata/name").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => Ok(name.to_string()),
        _ => Err(ApiError::invalid_simple("metadata.name: Required value: name is required")),
    }
}

/// The next stored version of an object after a write of `incoming` to `subresource`.
fn merge_update(kind: &ResourceKind, current: &Value, incoming: Value, subresource: Subresource) -> Value {
    let mut next = match subresource {
        Subresource::Status => {
            let mut next = current.clone();
            next["status"] = incoming.get("status").cloned().unwrap_or(Value::Null);
            if next["status"].is_null()
                && let Some(map) = next.as_object_mut()
            {
                map.remove("status");
            }
            next
        }
        Subresource::Main => {
            let mut next = incoming;
            if kind.status_subresource {
                match current.get("status") {
                    Some(status) => next["status"] = status.clone(),
                    None => {
                        if let Some(map) = next.as_object_mut() {
                            map.remove("status");
                        }
                    }
                }
            }
            // Fields the server owns are kept whatever the client sent.
            let keep = ["uid", "creationTimestamp", "generation", "namespace", "name"];
            let kept: Vec<(String, Value)> =
                keep.iter().filter_map(|f| current["metadata"].get(*f).map(|v| (f.to_string(), v.clone()))).collect();
            let meta = metadata_mut(&mut next);
            for (f, v) in kept {
                meta.insert(f, v);
            }
            if let Some(ts) = current.pointer("/metadata/deletionTimestamp") {
                meta.insert("deletionTimestamp".into(), ts.clone());
            }
            next
        }
    };
    set_type_meta(&mut next, kind);
    if let Some(rv) = current.pointer("/metadata/resourceVersion") {
        metadata_mut(&mut next).insert("resourceVersion".into(), rv.clone());
    }
    if spec_changed(current, &next) {
        let generation = current["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        metadata_mut(&mut next).insert("generation".into(), json!(generation));
    }
    next
}

/// Whether anything outside metadata and status changed: that is what bumps generation.
fn spec_changed(before: &Value, after: &Value) -> bool {
    let (Some(before), Some(after)) = (before.as_object(), after.as_object()) else {
        return before != after;
    };
    fn outside(map: &Map<String, Value>) -> BTreeMap<&String, &Value> {
        map.iter().filter(|(k, _)| *k != "metadata" && *k != "status").collect()
    }
    outside(before) != outside(after)
}

fn commit(store: &Store, inner: &mut Inner, k: Key, mut object: Value, event_type: EventType) -> Value {
    bump(inner, &mut object);
    let kind = store.kinds.by_store_plural(k.0);
    let stored = Arc::new(object);
    inner.objects.insert(k.clone(), Arc::clone(&stored));
    if let Some(kind) = kind {
        publish(store, inner, kind, &k.1, event_type, Arc::clone(&stored));
    }
    Value::clone(&stored)
}

fn bump(inner: &mut Inner, object: &mut Value) {
    inner.resource_version += 1;
    let rv = inner.resource_version.to_string();
    metadata_mut(object).insert("resourceVersion".into(), json!(rv));
}

fn publish(
    store: &Store,
    inner: &mut Inner,
    kind: &'static ResourceKind,
    namespace: &str,
    event_type: EventType,
    object: Arc<Value>,
) {
    let event = WatchEvent {
        resource_version: inner.resource_version,
        kind,
        namespace: namespace.to_string(),
        event_type,
        object,
        at: Instant::now(),
    };
    if inner.log.len() == EVENT_LOG_LEN {
        inner.log.pop_front();
    }
    inner.log.push_back(event.clone());
    // No receiver is fine: nobody is watching.
    let _ = store.events.send(event);
}

fn set_type_meta(object: &mut Value, kind: &ResourceKind) {
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".into(), json!(kind.api_version()));
        map.insert("kind".into(), json!(kind.kind));
    }
}

/// The object's `metadata` map, created when missing.
pub fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = json!({});
    }
    let map = object.as_object_mut().expect("made an object above");
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut().expect("made an object above")
}

/// Now, as Kubernetes writes timestamps (RFC 3339, UTC, whole seconds).
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

fn rfc3339(unix: u64) -> String {
    let days = unix / 86_400;
    let rem = unix % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm), valid for the Unix era.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(store: &Store, name: &str) {
        store.create(&kinds::NAMESPACE, "", json!({"metadata": {"name": name}})).unwrap();
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn create_fills_server_fields_and_rejects_duplicates() {
        let store = Store::new();
        ns(&store, "a");
        let cm = json!({"metadata": {"name": "x"}, "data": {"k": "v"}});
        let made = store.create(&kinds::CONFIG_MAP, "a", cm.clone()).unwrap();
        assert_eq!(made["metadata"]["generation"], 1);
        assert_eq!(made["metadata"]["namespace"], "a");
        assert_eq!(made["kind"], "ConfigMap");
        assert!(made["metadata"]["uid"].is_string());
        let err = store.create(&kinds::CONFIG_MAP, "a", cm).unwrap_err();
        assert_eq!(err.code, 409);
    }

    #[test]
    fn create_in_missing_namespace_is_not_found() {
        let store = Store::new();
        let err = store.create(&kinds::SECRET, "nope", json!({"metadata": {"name": "s"}})).unwrap_err();
        assert_eq!(err.code, 404);
    }

    #[test]
    fn status_writes_leave_spec_and_generation_alone() {
        let store = Store::new();
        ns(&store, "a");
        let proxy = json!({"metadata": {"name": "p"}, "spec": {"a": 1}, "status": {"x": 1}});
        let made = store.create(&kinds::HTTP_PROXY, "a", proxy).unwrap();
        assert_eq!(
            made["status"],
            json!({"currentStatus": "NotReconciled", "description": "Waiting for controller"}),
            "the client's status is dropped on create; the CRD's default shows instead"
        );
        let after = store
            .modify(&kinds::HTTP_PROXY, "a", "p", Subresource::Status, |o| {
                o["status"] = json!({"currentStatus": "valid"});
                o["spec"] = json!({"a": 2});
            })
            .unwrap();
        assert_eq!(after["spec"]["a"], 1);
        assert_eq!(after["status"]["currentStatus"], "valid");
        assert_eq!(after["metadata"]["generation"], 1);
        let changed = store
            .update(
                &kinds::HTTP_PROXY,
                "a",
                "p",
                json!({"metadata": {"name": "p"}, "spec": {"a": 3}}),
                Subresource::Main,
            )
            .unwrap();
        assert_eq!(changed["metadata"]["generation"], 2);
        assert_eq!(changed["status"]["currentStatus"], "valid", "main writes keep status");
    }

    #[test]
    fn stale_resource_version_conflicts() {
        let store = Store::new();
        ns(&store, "a");
        store.create(&kinds::CONFIG_MAP, "a", json!({"metadata": {"name": "x"}})).unwrap();
        let stale = json!({"metadata": {"name": "x", "resourceVersion": "1"}, "data": {}});
        let err = store.update(&kinds::CONFIG_MAP, "a", "x", stale, Subresource::Main).unwrap_err();
        assert_eq!(err.code, 409);
    }

    #[test]
    fn namespace_deletion_waits_for_pods() {
        let store = Store::new();
        ns(&store, "a");
        store.create(&kinds::POD, "a", json!({"metadata": {"name": "p"}})).unwrap();
        store.create(&kinds::SECRET, "a", json!({"metadata": {"name": "s"}})).unwrap();
        store.delete(&kinds::NAMESPACE, "", "a").unwrap();
        assert!(store.get(&kinds::SECRET, "a", "s").is_none());
        let pod = store.get(&kinds::POD, "a", "p").unwrap();
        assert!(pod["metadata"]["deletionTimestamp"].is_string());
        assert_eq!(store.get(&kinds::NAMESPACE, "", "a").unwrap()["status"]["phase"], "Terminating");
        store.remove(&kinds::POD, "a", "p");
        assert!(store.get(&kinds::NAMESPACE, "", "a").is_none());
    }

    #[test]
    fn watch_resumes_from_a_resource_version() {
        let store = Store::new();
        ns(&store, "a");
        let rv = store.resource_version();
        store.create(&kinds::CONFIG_MAP, "a", json!({"metadata": {"name": "x"}})).unwrap();
        let (backlog, _rx) = store.watch_from(rv).unwrap();
        assert_eq!(backlog.len(), 1);
        assert_eq!(backlog[0].event_type, EventType::Added);
    }

    #[test]
    fn list_takes_one_kind_and_namespace() {
        let store = Store::new();
        ns(&store, "a");
        ns(&store, "b");
        for (namespace, name) in [("a", "x"), ("a", "y"), ("b", "x")] {
            store.create(&kinds::CONFIG_MAP, namespace, json!({"metadata": {"name": name}})).unwrap();
            store.create(&kinds::SECRET, namespace, json!({"metadata": {"name": name}})).unwrap();
        }
        let names = |(items, _): (Vec<Arc<Value>>, u64)| -> Vec<String> {
            items.iter().map(|o| format!("{}/{}", o["metadata"]["namespace"], o["metadata"]["name"])).collect()
        };
        assert_eq!(names(store.list(&kinds::SECRET, Some("a"))), [r#""a"/"x""#, r#""a"/"y""#]);
        assert_eq!(names(store.list(&kinds::CONFIG_MAP, None)).len(), 3);
        assert_eq!(names(store.list(&kinds::NAMESPACE, None)), [r#"null/"a""#, r#"null/"b""#]);
        assert!(store.list(&kinds::SECRET, Some("c")).0.is_empty());
    }

    #[tokio::test]
    async fn changes_come_in_batches_of_the_watched_kinds_only() {
        use futures::FutureExt;
        static WATCHED: [&ResourceKind; 1] = [&kinds::SECRET];
        let store = Store::new();
        let mut changes = store.changes(&WATCHED);
        ns(&store, "a");
        store.create(&kinds::SECRET, "a", json!({"metadata": {"name": "s"}})).unwrap();
        store.create(&kinds::CONFIG_MAP, "a", json!({"metadata": {"name": "c"}})).unwrap();
        store.create(&kinds::SECRET, "a", json!({"metadata": {"name": "t"}})).unwrap();
        let Some(Batch::Events(events)) = changes.next().await else { panic!("a batch") };
        let names: Vec<&str> = events.iter().map(|e| e.object["metadata"]["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["s", "t"], "both Secrets at once, not the Namespace or the ConfigMap");
        // Nothing watched since: the next batch waits for the next Secret.
        store.create(&kinds::CONFIG_MAP, "a", json!({"metadata": {"name": "d"}})).unwrap();
        // The ConfigMap's event is already waiting, so one poll would return it.
        assert!(changes.next().now_or_never().is_none(), "woken by a ConfigMap");
        store.delete(&kinds::SECRET, "a", "s").unwrap();
        let Some(Batch::Events(events)) = changes.next().await else { panic!("a batch") };
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, EventType::Deleted);
    }

    #[tokio::test]
    async fn changes_say_when_some_were_missed() {
        static WATCHED: [&ResourceKind; 1] = [&kinds::CONFIG_MAP];
        let store = Store::new();
        let mut changes = store.changes(&WATCHED);
        ns(&store, "a");
        for n in 0..=EVENT_LOG_LEN {
            store.create(&kinds::CONFIG_MAP, "a", json!({"metadata": {"name": format!("c{n}")}})).unwrap();
        }
        assert!(matches!(changes.next().await, Some(Batch::Missed)));
    }
}
