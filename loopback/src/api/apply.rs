//! Server-side apply (`PATCH` with `application/apply-patch+yaml`): [`ApplyRecords`].
//!
//! An apply creates the object when it does not exist. Otherwise the new object is the stored
//! one, minus the fields this field manager set in its previous apply but no longer sets, with
//! the applied configuration deep-merged in. Each manager's last applied configuration is kept
//! per object (and per subresource) in [`ApplyRecords`], tied to the object's uid so that a
//! deleted and recreated object starts afresh.
//!
//! As on a real server, a configuration with fields the kind's schema does not declare is
//! refused whatever `fieldValidation` says (`admission::check_applied_fields`).
//!
//! Simplifications, compared with a real API server:
//! - maps merge recursively; lists and scalars are replaced, including the lists of maps that
//!   Kubernetes merges by key (containers, ports, ...): they are atomic here;
//! - ownership is not tracked field by field, so there are no conflicts between managers and
//!   `force` is accepted but changes nothing; a field two managers set is removed when either
//!   stops setting it;
//! - `metadata.managedFields` holds one entry per applying manager and subresource, with a
//!   `fieldsV1` that lists the fields of its last configuration.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use serde_json::{Map, Value, json};

use super::admission::{Admission, check_applied_fields};
use super::errors::ApiError;
use super::handlers::{check_identity, normalize};
use super::kinds::ResourceKind;
use super::store::{Store, Subresource, metadata_mut, now_rfc3339};

/// How often an apply is recomputed when another write slips in between read and write.
const ATTEMPTS: usize = 5;

/// One apply request, as the URL and query describe it.
#[derive(Debug, Clone, Copy)]
pub struct ApplyRequest<'a> {
    pub kind: &'static ResourceKind,
    /// Empty for cluster-scoped kinds.
    pub namespace: &'a str,
    pub name: &'a str,
    /// The `fieldManager` query parameter.
    pub manager: &'a str,
    pub subresource: Subresource,
    /// `dryRun=All`: compute and validate, store nothing.
    pub dry_run: bool,
    pub admission: Admission,
}

/// What an apply did, with the resulting object.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    Created(Value),
    Updated(Value),
}

/// Each manager's last applied configuration per object: the memory server-side apply needs.
#[derive(Debug, Default)]
pub struct ApplyRecords {
    records: Mutex<HashMap<RecordKey, Record>>,
}

/// `(plural, namespace, name, manager, applied to status)`.
type RecordKey = (&'static str, String, String, String, bool);

#[derive(Debug)]
struct Record {
    uid: String,
    config: Value,
}

impl ApplyRecords {
    fn lock(&self) -> MutexGuard<'_, HashMap<RecordKey, Record>> {
        // Every write is a single insert, so a poisoned map is still consistent.
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `config` (the request body) for `request.manager`.
    ///
    /// # Errors
    /// `BadRequest` when the body's apiVersion, kind, name or namespace do not match the URL;
    /// `NotFound` for an apply to the status of a missing object; admission and store errors.
    pub fn apply(&self, store: &Store, request: &ApplyRequest<'_>, mut config: Value) -> Result<Applied, ApiError> {
        check_config(request, &mut config)?;
        check_applied_fields(request.kind, request.namespace, request.name, &config)?;
        let pinned_version = config.pointer("/metadata/resourceVersion").is_some();
        let mut last_error = None;
        for _ in 0..ATTEMPTS {
            let outcome = match store.get(request.kind, request.namespace, request.name) {
                None => self.create(store, request, &config),
                Some(current) => self.update(store, request, &config, current),
            };
            match outcome {
                Err(e) if !pinned_version && (e.reason == "Conflict" || e.reason == "AlreadyExists") => {
                    last_error = Some(e);
                }
                other => return other,
            }
        }
        Err(last_error.unwrap_or_else(|| ApiError::conflict(request.kind, request.name)))
    }

    fn create(&self, store: &Store, request: &ApplyRequest<'_>, config: &Value) -> Result<Applied, ApiError> {
        if request.subresource == Subresource::Status {
            return Err(ApiError::not_found(request.kind, request.name));
        }
        let mut object = config.clone();
        normalize(request.kind, &mut object);
        set_managed_fields(&mut object, request, config);
        request.admission.admit(request.kind, &object)?;
        if request.dry_run {
            return Ok(Applied::Created(object));
        }
        let created = store.create(request.kind, request.namespace, object)?;
        self.remember(request, &created, config);
        Ok(Applied::Created(created))
    }

    fn update(
        &self,
        store: &Store,
        request: &ApplyRequest<'_>,
        config: &Value,
        current: Value,
    ) -> Result<Applied, ApiError> {
        let uid = current.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
        let previous = self.lock().get(&record_key(request)).filter(|r| r.uid == uid).map(|r| r.config.clone());
        let mut next = current.clone();
        if let Some(previous) = &previous {
            remove_dropped_fields(&mut next, previous, config);
        }
        deep_merge(&mut next, config);
        normalize(request.kind, &mut next);
        if next == current {
            self.remember(request, &current, config);
            return Ok(Applied::Updated(current));
        }
        set_managed_fields(&mut next, request, config);
        if request.subresource == Subresource::Main {
            request.admission.admit(request.kind, &next)?;
        } else {
            request.admission.status_write(request.kind, &mut next);
        }
        if request.dry_run {
            return Ok(Applied::Updated(next));
        }
        let updated = store.update(request.kind, request.namespace, request.name, next, request.subresource)?;
        self.remember(request, &updated, config);
        Ok(Applied::Updated(updated))
    }

    fn remember(&self, request: &ApplyRequest<'_>, object: &Value, config: &Value) {
        if request.dry_run {
            return;
        }
        let uid = object.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
        self.lock().insert(record_key(request), Record { uid: uid.to_string(), config: config.clone() });
    }
}

fn record_key(request: &ApplyRequest<'_>) -> RecordKey {
    (
        request.kind.plural,
        request.namespace.to_string(),
        request.name.to_string(),
        request.manager.to_string(),
        request.subresource == Subresource::Status,
    )
}

/// Checks the applied configuration names the object of the URL, and fills in its namespace.
fn check_config(request: &ApplyRequest<'_>, config: &mut Value) -> Result<(), ApiError> {
    let kind = request.kind;
    if !config.is_object() {
        return Err(ApiError::bad_request("the applied configuration must be an object"));
    }
    let api_version = config.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let body_kind = config.get("kind").and_then(Value::as_str).unwrap_or_default();
    if api_version != kind.api_version() || body_kind != kind.kind {
        return Err(ApiError::bad_request(format!(
            "the apiVersion and kind of the applied configuration ({api_version}, {body_kind}) do not match the request ({}, {})",
            kind.api_version(),
            kind.kind
        )));
    }
    check_identity(kind, request.namespace, Some(request.name), config)?;
    if let Some(meta) = config.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    Ok(())
}

/// Removes from `object` what `previous` set and `config` no longer sets.
fn remove_dropped_fields(object: &mut Value, previous: &Value, config: &Value) {
    let (Some(object), Some(previous)) = (object.as_object_mut(), previous.as_object()) else {
        return;
    };
    for (key, before) in previous {
        match config.get(key) {
            None => {
                object.remove(key);
            }
            Some(now) if before.is_object() && now.is_object() => {
                if let Some(child) = object.get_mut(key) {
                    remove_dropped_fields(child, before, now);
                }
            }
            Some(_) => {}
        }
    }
}

/// Merges `config` into `object`: maps recursively, everything else replaced; `null` removes.
fn deep_merge(object: &mut Value, config: &Value) {
    match (object, config) {
        (Value::Object(object), Value::Object(config)) => {
            for (key, value) in config {
                if value.is_null() {
                    object.remove(key);
                } else if let Some(existing) = object.get_mut(key) {
                    deep_merge(existing, value);
                } else {
                    object.insert(key.clone(), value.clone());
                }
            }
        }
        (object, config) => *object = config.clone(),
    }
}

/// Records `request.manager` in `metadata.managedFields`, replacing its earlier entry.
fn set_managed_fields(object: &mut Value, request: &ApplyRequest<'_>, config: &Value) {
    let status = request.subresource == Subresource::Status;
    let mut entry = json!({
        "manager": request.manager,
        "operation": "Apply",
        "apiVersion": request.kind.api_version(),
        "time": now_rfc3339(),
        "fieldsType": "FieldsV1",
        "fieldsV1": fields_v1(config, true),
    });
    if status {
        entry["subresource"] = json!("status");
    }
    let meta = metadata_mut(object);
    let entries = meta.entry("managedFields").or_insert_with(|| json!([]));
    if !entries.is_array() {
        *entries = json!([]);
    }
    if let Value::Array(entries) = entries {
        entries.retain(|e| {
            e["manager"] != request.manager
                || e["operation"] != "Apply"
                || (e.get("subresource") == Some(&json!("status"))) != status
        });
        entries.push(entry);
    }
}

/// The `FieldsV1` set of a configuration: `{"f:spec": {"f:x": {}}}`; identity fields left out.
fn fields_v1(config: &Value, top: bool) -> Value {
    let Value::Object(map) = config else {
        return json!({});
    };
    let mut out = Map::new();
    for (key, value) in map {
        if top && (key == "apiVersion" || key == "kind") {
            continue;
        }
        let mut child = fields_v1(value, false);
        if top
            && key == "metadata"
            && let Some(child) = child.as_object_mut()
        {
            child.remove("f:name");
            child.remove("f:namespace");
            child.remove("f:resourceVersion");
        }
        out.insert(format!("f:{key}"), child);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::kinds;

    fn store_with_namespace() -> Store {
        let store = Store::new();
        store.create(&kinds::NAMESPACE, "", json!({"metadata": {"name": "a"}})).unwrap();
        store
    }

    fn request<'a>(manager: &'a str) -> ApplyRequest<'a> {
        ApplyRequest {
            kind: &kinds::CONFIG_MAP,
            namespace: "a",
            name: "cm",
            manager,
            subresource: Subresource::Main,
            dry_run: false,
            admission: Admission::default(),
        }
    }

    fn config(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": data})
    }

    #[test]
    fn deep_merge_merges_maps_and_replaces_lists() {
        let mut object = json!({"a": {"b": 1, "c": [1, 2]}, "d": 1});
        deep_merge(&mut object, &json!({"a": {"c": [3], "e": 2}, "d": null}));
        assert_eq!(object, json!({"a": {"b": 1, "c": [3], "e": 2}}));
    }

    #[test]
    fn dropped_fields_are_removed_only_when_this_manager_set_them() {
        let mut object = json!({"spec": {"a": 1, "b": 2, "other": 3}, "keep": 1});
        let previous = json!({"spec": {"a": 1, "b": 2}});
        remove_dropped_fields(&mut object, &previous, &json!({"spec": {"a": 1}}));
        assert_eq!(object, json!({"spec": {"a": 1, "other": 3}, "keep": 1}));
    }

    #[test]
    fn apply_creates_then_updates_and_removes_what_the_manager_dropped() {
        let store = store_with_namespace();
        let records = ApplyRecords::default();
        let made = records.apply(&store, &request("x"), config(json!({"a": "1", "b": "2"}))).unwrap();
        let Applied::Created(made) = made else { panic!("expected a create, got {made:?}") };
        assert_eq!(made["metadata"]["namespace"], "a");
        assert_eq!(made["metadata"]["managedFields"][0]["manager"], "x");
        store.modify(&kinds::CONFIG_MAP, "a", "cm", Subresource::Main, |o| o["data"]["c"] = json!("3")).unwrap();
        let again = records.apply(&store, &request("x"), config(json!({"a": "1"}))).unwrap();
        let Applied::Updated(again) = again else { panic!("expected an update, got {again:?}") };
        assert_eq!(again["data"], json!({"a": "1", "c": "3"}), "b dropped, c kept");
        let rv = store.resource_version();
        let same = records.apply(&store, &request("x"), config(json!({"a": "1"}))).unwrap();
        assert_eq!(same, Applied::Updated(again));
        assert_eq!(store.resource_version(), rv, "a no-op apply writes nothing");
    }

    #[test]
    fn another_manager_does_not_remove_fields_it_never_set() {
        let store = store_with_namespace();
        let records = ApplyRecords::default();
        records.apply(&store, &request("x"), config(json!({"a": "1"}))).unwrap();
        records.apply(&store, &request("y"), config(json!({"b": "2"}))).unwrap();
        let Applied::Updated(object) = records.apply(&store, &request("y"), config(json!({}))).unwrap() else {
            panic!("expected an update")
        };
        assert_eq!(object["data"], json!({"a": "1"}));
        assert_eq!(object["metadata"]["managedFields"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn mismatched_identity_is_a_bad_request() {
        let store = store_with_namespace();
        let records = ApplyRecords::default();
        let wrong_kind = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cm"}});
        assert_eq!(records.apply(&store, &request("x"), wrong_kind).unwrap_err().code, 400);
        let wrong_name = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other"}});
        assert_eq!(records.apply(&store, &request("x"), wrong_name).unwrap_err().code, 400);
        let wrong_ns = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "b"}});
        assert_eq!(records.apply(&store, &request("x"), wrong_ns).unwrap_err().code, 400);
    }

    #[test]
    fn status_apply_to_a_missing_object_is_not_found() {
        let store = store_with_namespace();
        let records = ApplyRecords::default();
        let request = ApplyRequest { subresource: Subresource::Status, ..request("x") };
        assert_eq!(records.apply(&store, &request, config(json!({}))).unwrap_err().code, 404);
    }
}
